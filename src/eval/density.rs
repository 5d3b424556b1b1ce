//! The map under a 2-D model's samples, as the page draws it and `cdl export` ships it: log p̂(x)
//! from the ITD estimator (math.md §2.2) or the noise classifier's logit f̂(x) at a shift ζ
//! (math.md §3.2), on a square grid over the fixed view of the standardized plane. One function
//! for both, so a shipped map and the page's own are the same picture of the same weights.

use super::nll::pointwise;
use crate::diffusion::likelihood::RefGaussian;
use crate::diffusion::logistic::TruncLogistic;
use crate::diffusion::sampler::BatchDenoiser;
use crate::diffusion::Result;

/// Half-width of the standardized plane shown (both axes span [−VIEW, VIEW]).
pub const VIEW: f64 = 2.8;
/// Cells per side of the map.
pub const GRID: usize = 128;
/// α points of the estimator (common to every cell, so the map is smooth).
pub const POINTS: usize = 64;
/// A log p̂ map spans this many nats below its maximum: the shape of the density, not its far tails.
pub const LOGP_RANGE: f64 = 8.0;
/// Seed of the estimator's common α and ε draws.
pub const SEED: u64 = 7;

/// What a map shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MapKind {
    /// log p̂(x), floored at `LOGP_RANGE` nats below its maximum.
    LogP,
    /// The CDL logit f̂(x) = log p̂(x) − log p̂_ζ(x) at shift ζ.
    Logit(f64),
}

/// Cell centres of a g × g grid over the view, row-major from the top row (y = VIEW) down,
/// each row from x = −VIEW rightwards: (g², 2) as x, y pairs.
pub fn cell_centres(g: usize) -> Vec<f64> {
    let at = |i: usize| ((i as f64 + 0.5) / g as f64 * 2.0 - 1.0) * VIEW;
    (0..g).flat_map(|r| (0..g).flat_map(move |c| [at(c), -at(r)])).collect()
}

/// The map of `den` on a g × g grid of `cell_centres` (row-major, top row first), with the
/// estimator's level distribution and Gaussian reference set from the data's per-coordinate
/// `variances` (math.md §1.5, §2.2), `points` α points and the fixed `SEED`.
pub async fn map(
    den: &mut dyn BatchDenoiser,
    variances: &[f64],
    g: usize,
    points: usize,
    kind: MapKind,
) -> Result<Vec<f64>> {
    let q = TruncLogistic::cdl_toy(variances)?;
    let reference = RefGaussian::from_variances(variances)?;
    let zeta = match kind {
        MapKind::LogP => None,
        MapKind::Logit(z) => Some(z),
    };
    let v = pointwise(den, &cell_centres(g), &q, &reference, points, zeta, SEED).await?;
    Ok(match kind {
        MapKind::LogP => {
            let top = v.iter().map(|nlp| -nlp).fold(f64::NEG_INFINITY, f64::max);
            v.into_iter().map(|nlp| (-nlp).max(top - LOGP_RANGE)).collect()
        }
        MapKind::Logit(_) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_centres_run_from_the_top_left_corner() {
        let c = cell_centres(4);
        assert_eq!(c.len(), 32);
        // First cell: left column, top row; second: one column right; fifth: one row down.
        assert_eq!((c[0], c[1]), (-0.75 * VIEW, 0.75 * VIEW));
        assert_eq!((c[2], c[3]), (-0.25 * VIEW, 0.75 * VIEW));
        assert_eq!((c[8], c[9]), (-0.75 * VIEW, 0.25 * VIEW));
        assert_eq!((c[30], c[31]), (0.75 * VIEW, -0.75 * VIEW));
    }
}
