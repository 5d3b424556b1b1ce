//! Kernel Inception Distance: the unbiased MMD² with the cubic polynomial kernel, averaged over
//! random subsets (Bińkowski et al. 2018; torch-fidelity's estimator and defaults), so it suits
//! small sample counts. Subsets come from `HostRng`, not numpy's `RandomState(2020)`: per-subset
//! values differ from torch-fidelity's while the estimator is the same.

use super::linalg::{matmul_abt, matmul_abt_symmetric};
use super::{check_points, EvalError};
use crate::diffusion::rng::HostRng;

/// Stream tag of the subset draws ("KID").
const TAG_KID: u32 = 0x4B49_4400;
/// Kernel matrices over all points are cached when they hold at most this many entries (128 MiB
/// of f64, n = m ≈ 2,360); larger sets compute each subset's kernels on their own.
const CACHE_ENTRIES: usize = 1 << 24;

/// Subsets and their size (torch-fidelity's `kid_subsets`, `kid_subset_size`, `rng_seed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KidConfig {
    pub subsets: usize,
    /// Points per subset from each set; min(subset_size, n, m) is used.
    pub subset_size: usize,
    pub seed: u64,
}

impl Default for KidConfig {
    fn default() -> Self {
        Self { subsets: 100, subset_size: 1000, seed: 2020 }
    }
}

/// KID over the subsets: mean and population standard deviation of the per-subset MMD².
#[derive(Clone, Debug, PartialEq)]
pub struct Kid {
    pub mean: f64,
    pub std: f64,
    pub subsets: usize,
    pub subset_size: usize,
}

/// KID between x: (n, dim) and y: (m, dim); n, m ≥ 2.
///
/// With k(x, y) = (x·y/d + 1)³ and subsets of m points from each set ("Demystifying MMD GANs",
/// §4 and App. D; torch-fidelity's `kid_features_to_metric`, `polynomial_kernel` and
/// `mmd2(mmd_est="unbiased")`):
///
/// ```text
/// MMD² = Σ_{i≠j} k(x_i, x_j)/(m(m−1)) + Σ_{i≠j} k(y_i, y_j)/(m(m−1)) − 2·Σ_{i,j} k(x_i, y_j)/m²
/// ```
///
/// reported as the mean and the population standard deviation (`np.std`) over the subsets. It is
/// unbiased at any m.
pub fn kid(x: &[f64], y: &[f64], dim: usize, cfg: KidConfig) -> Result<Kid, EvalError> {
    let n = check_points("x", x, dim, 2)?;
    let m = check_points("y", y, dim, 2)?;
    if cfg.subsets == 0 || cfg.subset_size < 2 {
        return Err(EvalError::Invalid(format!(
            "KID needs at least 1 subset of at least 2 points, got {} of {}",
            cfg.subsets, cfg.subset_size
        )));
    }
    let s = cfg.subset_size.min(n).min(m);
    let cached =
        n.saturating_mul(n).saturating_add(m.saturating_mul(m)).saturating_add(n.saturating_mul(m)) <= CACHE_ENTRIES;
    let kernels = cached.then(|| {
        (
            polynomial_kernel(x, x, n, n, dim, true),
            polynomial_kernel(y, y, m, m, dim, true),
            polynomial_kernel(x, y, n, m, dim, false),
        )
    });
    let mut mmds = Vec::with_capacity(cfg.subsets);
    for j in 0..cfg.subsets {
        let ix = subset_indices(n, s, cfg.seed, j, 0);
        let iy = subset_indices(m, s, cfg.seed, j, 1);
        let (kxx, kyy, kxy) = match &kernels {
            Some((kxx, kyy, kxy)) => {
                (off_diagonal_sum(kxx, n, &ix), off_diagonal_sum(kyy, m, &iy), cross_sum(kxy, m, &ix, &iy))
            }
            None => {
                let (xs, ys) = (gather(x, dim, &ix), gather(y, dim, &iy));
                let all: Vec<usize> = (0..s).collect();
                let kxx = polynomial_kernel(&xs, &xs, s, s, dim, true);
                let kyy = polynomial_kernel(&ys, &ys, s, s, dim, true);
                let kxy = polynomial_kernel(&xs, &ys, s, s, dim, false);
                (off_diagonal_sum(&kxx, s, &all), off_diagonal_sum(&kyy, s, &all), cross_sum(&kxy, s, &all, &all))
            }
        };
        let sf = s as f64;
        mmds.push((kxx + kyy) / (sf * (sf - 1.0)) - 2.0 * kxy / (sf * sf));
    }
    let mean = mmds.iter().sum::<f64>() / mmds.len() as f64;
    let var = mmds.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / mmds.len() as f64;
    Ok(Kid { mean, std: var.sqrt(), subsets: cfg.subsets, subset_size: s })
}

/// The unbiased MMD² of all of x: (n, dim) against all of y: (m, dim) with the KID kernel (one
/// subset of everything); for n ≠ m the cross term is divided by n·m and the within terms by
/// n(n−1) and m(m−1).
pub fn mmd2_polynomial(x: &[f64], y: &[f64], dim: usize) -> Result<f64, EvalError> {
    let n = check_points("x", x, dim, 2)?;
    let m = check_points("y", y, dim, 2)?;
    let (ix, iy): (Vec<usize>, Vec<usize>) = ((0..n).collect(), (0..m).collect());
    let kxx = off_diagonal_sum(&polynomial_kernel(x, x, n, n, dim, true), n, &ix);
    let kyy = off_diagonal_sum(&polynomial_kernel(y, y, m, m, dim, true), m, &iy);
    let kxy = cross_sum(&polynomial_kernel(x, y, n, m, dim, false), m, &ix, &iy);
    let (nf, mf) = (n as f64, m as f64);
    Ok(kxx / (nf * (nf - 1.0)) + kyy / (mf * (mf - 1.0)) - 2.0 * kxy / (nf * mf))
}

/// The indices of subset `subset` of set `which` (0 = x, 1 = y): `size` distinct indices below
/// `n`, by a partial Fisher-Yates shuffle with uniforms of `HostRng::new(seed, [TAG_KID, subset,
/// which])`. The same for every target and thread count.
pub fn subset_indices(n: usize, size: usize, seed: u64, subset: usize, which: u32) -> Vec<usize> {
    let rng = HostRng::new(seed, [TAG_KID, subset as u32, which]);
    let mut idx: Vec<usize> = (0..n).collect();
    let size = size.min(n);
    for i in 0..size {
        let span = n - i;
        let j = i + ((rng.uniform_at(i as u64) * span as f64) as usize).min(span - 1);
        idx.swap(i, j);
    }
    idx.truncate(size);
    idx
}

/// (a_i · b_j / d + 1)³ for the rows of a: (n, d) and b: (m, d). (n, m)
fn polynomial_kernel(a: &[f64], b: &[f64], n: usize, m: usize, d: usize, symmetric: bool) -> Vec<f64> {
    let mut k = if symmetric { matmul_abt_symmetric(a, b, n, d) } else { matmul_abt(a, b, n, m, d) };
    let gamma = 1.0 / d as f64;
    k.iter_mut().for_each(|v| *v = (*v * gamma + 1.0).powi(3));
    k
}

/// Σ_{i≠j} K[idx_i][idx_j] for the square K with `cols` columns.
fn off_diagonal_sum(k: &[f64], cols: usize, idx: &[usize]) -> f64 {
    let mut total = 0.0;
    for (a, &i) in idx.iter().enumerate() {
        let row = &k[i * cols..(i + 1) * cols];
        let s: f64 = idx.iter().enumerate().filter(|&(b, _)| b != a).map(|(_, &j)| row[j]).sum();
        total += s;
    }
    total
}

/// Σ_{i,j} K[ix_i][iy_j] for K with `cols` columns.
fn cross_sum(k: &[f64], cols: usize, ix: &[usize], iy: &[usize]) -> f64 {
    ix.iter().map(|&i| iy.iter().map(|&j| k[i * cols + j]).sum::<f64>()).sum()
}

/// The rows `idx` of x: (n, d), in order. (idx.len(), d)
fn gather(x: &[f64], d: usize, idx: &[usize]) -> Vec<f64> {
    idx.iter().flat_map(|&i| x[i * d..(i + 1) * d].iter().copied()).collect()
}
