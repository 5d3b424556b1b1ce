//! The 2-D toy problem of the closed-form tests: Gaussian data N((0.3, −0.2), diag(1.6, 0.5)),
//! for which the optimal denoiser, −log p and the CDL logit are exact (src/diffusion/gaussian.rs);
//! draws from it, and the mean and sample std of Monte-Carlo estimates.

use cdl::diffusion::gaussian::GaussianData;
use cdl::diffusion::likelihood::RefGaussian;
use cdl::diffusion::logistic::TruncLogistic;
use cdl::diffusion::loss::{CdlConfig, CdlNorm, LossConfig, StdLoss, ZetaDist};
use cdl::diffusion::rng::HostRng;

pub fn data() -> GaussianData {
    GaussianData::new(vec![0.3, -0.2], vec![1.6, 0.5]).unwrap()
}

/// The data, the reference Gaussian with its variances (ITD's h_G and mmse_G), and the noise-level
/// distribution of the CDL toy runs.
pub fn problem() -> (GaussianData, RefGaussian, TruncLogistic) {
    let g = data();
    let r = RefGaussian::from_variances(&g.var).unwrap();
    let q = TruncLogistic::cdl_toy(&g.var).unwrap();
    (g, r, q)
}

/// A loss on the toy problem: `std` (λ 1) and `cdl` (λ `lambda_cdl`), with the reference Gaussian
/// of the data's variances (ITD's mmse_G offsets).
pub fn toy_loss(std: StdLoss, cdl: Option<CdlConfig>, lambda_cdl: f64) -> LossConfig {
    let reference = RefGaussian::from_variances(&data().var).unwrap();
    LossConfig { std, lambda_std: 1.0, cdl, lambda_cdl, reference: Some(reference) }
}

/// CDL on the toy problem: `anchors` anchors of `points` points, noise levels from `problem`'s q,
/// ζ ~ `zeta`, paired draws or independent ones, summed over the batch.
pub fn toy_cdl(anchors: usize, points: usize, zeta: ZetaDist, paired: bool) -> CdlConfig {
    let q = problem().2;
    CdlConfig { anchors, points, q, zeta, paired_draws: paired, norm: CdlNorm::SumOverBatch }
}

/// `n` points of `g`, flattened (x0, y0, x1, y1, ...), from the Philox stream (seed, [0, 0, 0]).
pub fn draws(g: &GaussianData, n: usize, seed: u64) -> Vec<f64> {
    let mut rng = HostRng::new(seed, [0, 0, 0]);
    (0..n)
        .flat_map(|_| g.mean.iter().zip(&g.var).map(|(m, v)| m + v.sqrt() * rng.next_normal()).collect::<Vec<_>>())
        .collect()
}

/// Mean and sample standard deviation (n − 1 in the denominator).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The std of the CDL logit estimate at M = 64 with paired draws against independent ones, in the
/// ballpark of math.md §3.2's table (0.022 vs 1.60 nats, another 2-D Gaussian): paired ≪ 0.05,
/// independent ~1–3.
pub fn assert_paired_far_below_independent(sp: f64, si: f64) {
    assert!(sp < 0.05, "paired std {sp}");
    assert!(si > 0.8, "independent std {si}");
    assert!(si / sp > 20.0, "ratio {}", si / sp);
}
