//! DDPM's loss (math.md §4.1) [Ho et al. 2020]: t ~ U{0..T−1} of Ho's linear schedule, α = α_t,
//! weight 1/B (sum over coordinates, mean over the batch, as the authors' code).

use super::standard::{self, Draw};
use super::Row;
use crate::diffusion::schedule::DdpmSchedule;
use crate::diffusion::{DiffusionError, Result};

/// The lowest and highest α_t of Ho's schedule.
pub(super) fn alpha_range() -> (f64, f64) {
    let l = DdpmSchedule::ho().logsnr;
    (l.iter().copied().fold(f64::INFINITY, f64::min), l.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

/// The B rows of one step.
pub(super) fn rows(batch: usize, seed: u64, step: u32) -> Result<Vec<Row>> {
    // α_t of Ho's schedule. (T,)
    let logsnr = DdpmSchedule::ho().logsnr;
    let weight = 1.0 / batch as f64;
    standard::rows(batch, seed, step, |rng| {
        // t ~ U{0..T−1}: floor(u·T) with u in (0, 1).
        let n_t = logsnr.len();
        let t = ((rng.next_uniform() * n_t as f64) as usize).min(n_t.saturating_sub(1));
        let alpha = logsnr.get(t).copied().ok_or_else(|| DiffusionError::Config("DDPM schedule is empty".into()))?;
        Ok(Draw { alpha, weight, offset: 0.0 })
    })
}
