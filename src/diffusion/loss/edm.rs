//! EDM's loss weighting (math.md §4.3) [Karras et al. 2022, `EDMLoss`] on the ε-error: row weight
//! (1 + e^{−α}/σ_d²)/B (λ(σ)·σ² of EDM's weight on D), with ln σ ~ N(P_mean, P_std²) (`rows`) or
//! σ log-uniform over Song's VE range (`ve_rows`, the paper's "VE" baseline).

use super::standard::{self, Draw, NORMAL_RANGE_Z};
use super::Row;
use crate::diffusion::schedule::{alpha_of_sigma, EdmPrecond, VeSchedule};
use crate::diffusion::{finite, DiffusionError, Result};

/// The central 99.9 % of α = −2 ln σ, ln σ ~ N(p_mean, p_std²): the high end of ln σ is the low
/// end of α.
pub(super) fn alpha_range(p_mean: f64, p_std: f64) -> (f64, f64) {
    (-2.0 * (p_mean + NORMAL_RANGE_Z * p_std), -2.0 * (p_mean - NORMAL_RANGE_Z * p_std))
}

/// The B rows of one step of `EDMLoss`: ln σ ~ N(p_mean, p_std²), α = −2 ln σ.
pub(super) fn rows(
    p_mean: f64,
    p_std: f64,
    precond: &EdmPrecond,
    batch: usize,
    seed: u64,
    step: u32,
) -> Result<Vec<Row>> {
    finite("edm p_mean", p_mean)?;
    if !(p_std.is_finite() && p_std > 0.0 && precond.sigma_data > 0.0) {
        return Err(DiffusionError::Config("EDM p_std and sigma_data must be > 0".into()));
    }
    let bf = batch as f64;
    standard::rows(batch, seed, step, |rng| {
        let ln_sigma = p_mean + p_std * rng.next_normal();
        let alpha = -2.0 * ln_sigma;
        Ok(Draw { alpha, weight: precond.eps_weight(alpha) / bf, offset: 0.0 })
    })
}

/// The B rows of one step of EDM's weighting over the VE range: σ = σ_min(σ_max/σ_min)^u.
pub(super) fn ve_rows(ve: &VeSchedule, precond: &EdmPrecond, batch: usize, seed: u64, step: u32) -> Result<Vec<Row>> {
    ve.validate()?;
    if !(precond.sigma_data.is_finite() && precond.sigma_data > 0.0) {
        return Err(DiffusionError::Config("EDM sigma_data must be > 0".into()));
    }
    let bf = batch as f64;
    standard::rows(batch, seed, step, |rng| {
        let alpha = alpha_of_sigma(ve.sigma(rng.next_uniform()));
        Ok(Draw { alpha, weight: precond.eps_weight(alpha) / bf, offset: 0.0 })
    })
}
