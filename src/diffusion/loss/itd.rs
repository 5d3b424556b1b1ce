//! The ITD loss (math.md §4.2, §2.2), the official CDL L_std: α ~ the truncated logistic q with
//! importance weight w(α), row weight w/(2B). With a reference Gaussian G the value also carries
//! h_G and −mmse_G(α), so that L_std estimates the batch's −log p(x) in nats; gradients unchanged.

use super::standard::{self, Draw};
use super::Row;
use crate::diffusion::likelihood::RefGaussian;
use crate::diffusion::logistic::TruncLogistic;
use crate::diffusion::Result;

/// The B rows of one step; offsets mmse_G(α) with a reference.
pub(super) fn rows(
    q: &TruncLogistic,
    reference: Option<&RefGaussian>,
    batch: usize,
    seed: u64,
    step: u32,
) -> Result<Vec<Row>> {
    q.validate()?;
    let bf = batch as f64;
    standard::rows(batch, seed, step, |rng| {
        let (alpha, w) = q.sample(rng.next_uniform());
        Ok(Draw { alpha, weight: w / (2.0 * bf), offset: reference.map_or(0.0, |r| r.mmse_g(alpha)) })
    })
}

/// The constant part of L_std: h_G with a reference, else 0.
pub(super) fn constant(reference: Option<&RefGaussian>) -> f64 {
    reference.map_or(0.0, RefGaussian::h_g)
}
