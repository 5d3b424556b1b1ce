//! Likelihood from a trained denoiser, batched (math.md §2): the ITD test-set protocol in nats and
//! bits/dim (§2.2, §9 pitfall 10), −log p̂(x) maps and the noise classifier's logit (§3.2): the
//! estimators of `diffusion::likelihood` with one `BatchDenoiser` call per chunk of (point, α)
//! rows, so a GPU network sees large batches. Not here: the training loss, image dequantisation.

use crate::diffusion::likelihood::{bits_per_dim, clamped_nll, RefGaussian, TestNll};
use crate::diffusion::logistic::TruncLogistic;
use crate::diffusion::logsnr::{shifted_level, vp_coefs};
use crate::diffusion::rng::HostRng;
use crate::diffusion::sampler::BatchDenoiser;
use crate::diffusion::{DiffusionError, Result};

/// Rows per denoiser call (bounded host memory: rows × d f64 each for z, ε and ε̂).
pub const ROWS_PER_CALL: usize = 1 << 16;
/// Stream tag of the α points and ε draws of this module.
const TAG_NLL: u32 = 0x40;

fn shape(d: usize, x: &[f64]) -> Result<usize> {
    if d == 0 || x.is_empty() || !x.len().is_multiple_of(d) {
        return Err(DiffusionError::Shape(format!("{} values are not a positive multiple of d = {d}", x.len())));
    }
    Ok(x.len() / d)
}

/// Sorted α_m ~ q and their weights w(α_m), drawn once from `seed`.
fn alpha_points(q: &TruncLogistic, m: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = HostRng::new(seed, [0, TAG_NLL, 0]);
    let mut a: Vec<f64> = (0..m).map(|_| q.sample(rng.next_uniform()).0).collect();
    a.sort_by(f64::total_cmp);
    let w = a.iter().map(|&x| q.weight(x)).collect();
    (a, w)
}

/// The ITD test protocol (math.md §2.2): M α points drawn once and sorted; at each, every point of
/// `data` is noised with a fresh ε and the squared ε-error is averaged over the data; the gap to
/// mmse_G is clamped at 0 after averaging. data: (N, d) in the model's units.
pub async fn test_nll(
    den: &mut dyn BatchDenoiser,
    data: &[f64],
    q: &TruncLogistic,
    reference: &RefGaussian,
    points: usize,
    seed: u64,
) -> Result<TestNll> {
    let d = den.dim();
    let n = shape(d, data)?;
    if reference.dim() != d || points == 0 {
        return Err(DiffusionError::Config(format!("test_nll: reference d = {}, points = {points}", reference.dim())));
    }
    q.validate()?;
    let (alpha, weight) = alpha_points(q, points, seed);
    let per_call = (ROWS_PER_CALL / n).max(1);
    let mut mean_mse = Vec::with_capacity(points);
    for (c, chunk) in alpha.chunks(per_call).enumerate() {
        let rows = chunk.len() * n;
        let (mut z, mut eps, mut a) = (vec![0.0; rows * d], vec![0.0; rows * d], Vec::with_capacity(rows));
        for (k, &al) in chunk.iter().enumerate() {
            let v = vp_coefs(al);
            // A fresh ε per (α point, example): stream (seed, [point, TAG, 1]).
            let mut rng = HostRng::new(seed, [(c * per_call + k) as u32, TAG_NLL, 1]);
            for (i, x) in data.chunks_exact(d).enumerate() {
                let at = (k * n + i) * d;
                rng.fill_normal(&mut eps[at..at + d]);
                for j in 0..d {
                    z[at + j] = v.a * x[j] + v.b * eps[at + j];
                }
                a.push(al);
            }
        }
        let mut out = vec![0.0; rows * d];
        den.eps_batch(&z, &a, &mut out).await?;
        for k in 0..chunk.len() {
            let span = k * n * d..(k + 1) * n * d;
            let sse: f64 = eps[span.clone()].iter().zip(&out[span]).map(|(e, o)| (e - o) * (e - o)).sum();
            mean_mse.push(sse / n as f64);
        }
    }
    let nats = clamped_nll(&alpha, &weight, &mean_mse, reference)?;
    let raw: f64 = (0..points).map(|i| weight[i] * (mean_mse[i] - reference.mmse_g(alpha[i]))).sum();
    let nats_unclamped = reference.h_g() + raw / (2.0 * points as f64);
    Ok(TestNll { bpd: bits_per_dim(nats, d), alpha, weight, mean_mse, nats, nats_unclamped })
}

/// Per point of `xs`, the M-point ITD estimate −log p̂(x) (math.md §2.2) or, with `zeta`, the CDL
/// logit f̂(x) = log p̂(x) − log p̂_ζ(x) with paired draws (math.md §3.2); common α_m, ε_m for all
/// points, so the map is smooth and differences between points are not Monte-Carlo noise.
/// xs: (P, d); returns (P,).
pub async fn pointwise(
    den: &mut dyn BatchDenoiser,
    xs: &[f64],
    q: &TruncLogistic,
    reference: &RefGaussian,
    m: usize,
    zeta: Option<f64>,
    seed: u64,
) -> Result<Vec<f64>> {
    let d = den.dim();
    let p = shape(d, xs)?;
    if m == 0 || reference.dim() != d {
        return Err(DiffusionError::Config(format!("pointwise: M = {m}, reference d = {}", reference.dim())));
    }
    q.validate()?;
    let (alpha, weight) = alpha_points(q, m, seed);
    let mut eps = vec![0.0; m * d];
    HostRng::new(seed, [0, TAG_NLL, 2]).fill_normal(&mut eps);
    // Each (point, α) row is evaluated at α, and with ζ also at α′ with output scale c.
    let levels: Vec<(f64, f64)> = match zeta {
        None => alpha.iter().map(|&a| (a, 1.0)).collect(),
        Some(z) => alpha
            .iter()
            .map(|&a| (a, 1.0))
            .chain(alpha.iter().map(|&a| (shifted_level(a, z).alpha_prime, shifted_level(a, z).c)))
            .collect(),
    };
    let lv = levels.len();
    let mut acc = vec![0.0; p];
    let per_call = (ROWS_PER_CALL / lv).max(1);
    for (c, chunk) in xs.chunks(per_call * d).enumerate() {
        let pc = chunk.len() / d;
        let rows = pc * lv;
        let (mut z, mut a) = (vec![0.0; rows * d], Vec::with_capacity(rows));
        for (i, x) in chunk.chunks_exact(d).enumerate() {
            for (l, &(level, _)) in levels.iter().enumerate() {
                let k = l % m;
                let v = vp_coefs(alpha[k]);
                let at = (i * lv + l) * d;
                for j in 0..d {
                    z[at + j] = v.a * x[j] + v.b * eps[k * d + j];
                }
                a.push(level);
            }
        }
        let mut out = vec![0.0; rows * d];
        den.eps_batch(&z, &a, &mut out).await?;
        for i in 0..pc {
            let mut s = 0.0;
            for (l, &(_, scale)) in levels.iter().enumerate() {
                let k = l % m;
                let at = (i * lv + l) * d;
                let err: f64 = (0..d).map(|j| (eps[k * d + j] - scale * out[at + j]).powi(2)).sum();
                s += match zeta {
                    // −log p̂: h_G + (1/2M) Σ w (err − mmse_G)
                    None => weight[k] * (err - reference.mmse_g(alpha[k])),
                    // f̂: (1/2M) Σ w (err_q − err_p)
                    Some(_) if l < m => -weight[k] * err,
                    Some(_) => weight[k] * err,
                };
            }
            let base = if zeta.is_none() { reference.h_g() } else { 0.0 };
            acc[c * per_call + i] = base + s / (2.0 * m as f64);
        }
    }
    Ok(acc)
}
