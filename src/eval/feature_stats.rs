//! Mean and covariance of feature vectors, streamed: rows arrive in batches of any size, totals
//! are kept in f64, and the result is numpy's `np.mean(x, 0)` and `np.cov(x, rowvar=False)`
//! (unbiased), what pytorch-fid stores as (mu, sigma). Not here: a feature extractor.

use super::linalg::matmul_abt_symmetric;
use super::EvalError;

/// Rows buffered before they are folded into the totals: the scatter of a batch is one (d, d)
/// product with k = 256, large enough to run at the product's speed.
const BATCH_ROWS: usize = 256;

/// The Gaussian summary of a feature set: what a pytorch-fid `.npz` holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    pub dim: usize,
    /// Mean. (d,)
    pub mu: Vec<f64>,
    /// Unbiased covariance, row-major and symmetric. (d, d)
    pub sigma: Vec<f64>,
}

/// Streaming accumulator of the mean and covariance of d-dimensional rows.
///
/// Each batch is centred at its own mean and merged with the running totals by Chan, Golub &
/// LeVeque's pairwise update (1979; "Updating formulae and a pairwise algorithm for computing
/// sample variances"): M2 = M2_a + M2_b + δδᵀ·n_a·n_b/n, δ = mean_b − mean_a. No sum of raw squares
/// is formed, so features with a large common offset lose no precision.
#[derive(Clone, Debug)]
pub struct FeatureStats {
    dim: usize,
    /// Rows folded into `mean` and `m2`.
    n: u64,
    /// Running mean. (d,)
    mean: Vec<f64>,
    /// Running scatter Σ (x − mean)(x − mean)ᵀ, full row-major. (d, d)
    m2: Vec<f64>,
    /// Rows waiting to be folded in. (≤ BATCH_ROWS, d)
    pending: Vec<f64>,
}

impl FeatureStats {
    /// An empty accumulator for rows of `dim` values.
    pub fn new(dim: usize) -> Result<Self, EvalError> {
        if dim == 0 {
            return Err(EvalError::Shape("dimension 0".into()));
        }
        Ok(Self { dim, n: 0, mean: vec![0.0; dim], m2: vec![0.0; dim * dim], pending: Vec::new() })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows pushed so far.
    pub fn count(&self) -> u64 {
        self.n + (self.pending.len() / self.dim) as u64
    }

    /// Adds the rows of `x` (n, d), f32 as networks produce them (widened exactly to f64).
    pub fn push(&mut self, x: &[f32]) -> Result<(), EvalError> {
        self.check(x.len(), x.iter().position(|v| !v.is_finite()).map(|i| (i, f64::from(x[i]))))?;
        self.extend(x.iter().map(|&v| f64::from(v)));
        Ok(())
    }

    /// Adds the rows of `x` (n, d) given in f64.
    pub fn push_f64(&mut self, x: &[f64]) -> Result<(), EvalError> {
        self.check(x.len(), x.iter().position(|v| !v.is_finite()).map(|i| (i, x[i])))?;
        self.extend(x.iter().copied());
        Ok(())
    }

    /// Folds in another accumulator of the same dimension (statistics of the union of both sets).
    pub fn merge(&mut self, mut other: FeatureStats) -> Result<(), EvalError> {
        if other.dim != self.dim {
            return Err(EvalError::Shape(format!("merging {}-d statistics into {}-d ones", other.dim, self.dim)));
        }
        other.flush();
        self.flush();
        self.combine(other.n, &other.mean, &other.m2);
        Ok(())
    }

    /// The mean and unbiased covariance of every row pushed so far; needs at least 2 rows.
    pub fn moments(&self) -> Result<Moments, EvalError> {
        let count = self.count();
        if count < 2 {
            return Err(EvalError::TooFew { what: "features", n: count as usize, need: 2 });
        }
        let mut done = self.clone();
        done.flush();
        let norm = 1.0 / (done.n - 1) as f64;
        Ok(Moments { dim: self.dim, mu: done.mean, sigma: done.m2.iter().map(|v| v * norm).collect() })
    }

    fn check(&self, len: usize, bad: Option<(usize, f64)>) -> Result<(), EvalError> {
        if !len.is_multiple_of(self.dim) {
            return Err(EvalError::Shape(format!("{len} feature values, not a multiple of dimension {}", self.dim)));
        }
        if let Some((index, value)) = bad {
            return Err(EvalError::NonFinite { what: "features", index, value });
        }
        Ok(())
    }

    fn extend(&mut self, values: impl Iterator<Item = f64>) {
        for v in values {
            self.pending.push(v);
            if self.pending.len() == BATCH_ROWS * self.dim {
                self.flush();
            }
        }
    }

    /// Folds the pending rows in: their mean, their centred scatter (one symmetric product), the
    /// pairwise merge.
    fn flush(&mut self) {
        let d = self.dim;
        let b = self.pending.len() / d;
        if b == 0 {
            return;
        }
        let mut mean = vec![0.0; d];
        for row in self.pending.chunks_exact(d) {
            mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
        }
        mean.iter_mut().for_each(|m| *m /= b as f64);
        // Centred rows, transposed (d, b), so that the scatter is Yᵀ·Y = (Yᵀ)(Yᵀ)ᵀ.
        let mut yt = vec![0.0; d * b];
        for (r, row) in self.pending.chunks_exact(d).enumerate() {
            for (i, (v, m)) in row.iter().zip(&mean).enumerate() {
                yt[i * b + r] = v - m;
            }
        }
        let scatter = matmul_abt_symmetric(&yt, &yt, d, b);
        self.pending.clear();
        self.combine(b as u64, &mean, &scatter);
    }

    /// Chan et al.'s merge of (n_b, mean_b, M2_b) into the running totals.
    fn combine(&mut self, nb: u64, mean_b: &[f64], m2_b: &[f64]) {
        if nb == 0 {
            return;
        }
        let d = self.dim;
        let na = self.n;
        let n = na + nb;
        let delta: Vec<f64> = mean_b.iter().zip(&self.mean).map(|(b, a)| b - a).collect();
        let w = na as f64 * nb as f64 / n as f64;
        for i in 0..d {
            let di = delta[i] * w;
            let (row, row_b) = (&mut self.m2[i * d..(i + 1) * d], &m2_b[i * d..(i + 1) * d]);
            for ((m, mb), dj) in row.iter_mut().zip(row_b).zip(&delta) {
                *m += mb + di * dj;
            }
        }
        let f = nb as f64 / n as f64;
        self.mean.iter_mut().zip(&delta).for_each(|(m, dl)| *m += dl * f);
        self.n = n;
    }
}
