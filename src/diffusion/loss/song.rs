//! Song et al.'s VP and VE losses (math.md §4.3; EDM's `VPLoss`, `VELoss`): plain ε-MSE, row
//! weight 1/B (EDM's 1/σ² weight on D), with t ~ U(eps_t, 1), α = α_VP(t) (`vp_rows`) or σ
//! log-uniform on [σ_min, σ_max] (`ve_rows`).

use super::standard::{self, Draw};
use super::Row;
use crate::diffusion::schedule::{alpha_of_sigma, VeSchedule, VpSde};
use crate::diffusion::Result;

/// α_VP over t ∈ [eps_t, 1]: lowest at t = 1.
pub(super) fn vp_alpha_range(vp: &VpSde) -> (f64, f64) {
    (vp.alpha(1.0), vp.alpha(vp.eps_t))
}

/// The B rows of one step of `VPLoss`.
pub(super) fn vp_rows(vp: &VpSde, batch: usize, seed: u64, step: u32) -> Result<Vec<Row>> {
    vp.validate()?;
    let weight = 1.0 / batch as f64;
    standard::rows(batch, seed, step, |rng| {
        let t = vp.eps_t + (1.0 - vp.eps_t) * rng.next_uniform();
        Ok(Draw { alpha: vp.alpha(t), weight, offset: 0.0 })
    })
}

/// The B rows of one step of `VELoss`.
pub(super) fn ve_rows(ve: &VeSchedule, batch: usize, seed: u64, step: u32) -> Result<Vec<Row>> {
    ve.validate()?;
    let weight = 1.0 / batch as f64;
    standard::rows(batch, seed, step, |rng| {
        Ok(Draw { alpha: alpha_of_sigma(ve.sigma(rng.next_uniform())), weight, offset: 0.0 })
    })
}
