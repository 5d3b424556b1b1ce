//! The Fréchet distance between two sets of feature vectors, and the pixel-space features
//! `cdl bench quality` uses for images until an Inception network exists.
//!
//! What it is: FD = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2·tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}, the squared
//! 2-Wasserstein distance between the Gaussians with the sets' means and covariances (the formula
//! of FID, with tr (Σ₁Σ₂)^{1/2} written through the symmetric product so that only symmetric
//! eigenproblems appear). Moments in f64 with the unbiased covariance (divisor n − 1, as numpy's
//! `np.cov` in pytorch-fid); eigenvalues of the positive semi-definite matrices are clamped at 0,
//! which absorbs the rounding that makes a rank-deficient covariance (n ≤ d) slightly indefinite.
//! `pool_features` averages each channel over k×k blocks of the image (8×8 for 16-pixel
//! images at k = 2): a pixel-space Fréchet distance that compares colour and layout statistics,
//! not perceptual quality.
//!
//! What it is not: not FID (no Inception features); the eigen-solver is cyclic Jacobi, O(d³) per
//! sweep, meant for d up to a few hundred (pixel features), not FID's 2,048.

use super::{check_points, EvalError};

/// Jacobi sweeps before giving up; convergence is quadratic and takes well under 20 in practice.
const MAX_SWEEPS: usize = 60;
/// Off-diagonal mass, relative to the whole matrix, at which Jacobi stops.
const JACOBI_TOL: f64 = 1e-24;

/// Per-channel k×k average pooling of images (n, c, s, s), row-major: (n, c·(s/k)²).
pub fn pool_features(x: &[f64], channels: usize, size: usize, k: usize) -> Result<Vec<f64>, EvalError> {
    if channels == 0 || size == 0 || k == 0 || !size.is_multiple_of(k) {
        return Err(EvalError::Shape(format!("{size}-pixel images do not pool by {k}")));
    }
    let d = channels * size * size;
    let n = check_points("images", x, d, 1)?;
    let t = size / k;
    let mut out = vec![0.0; n * channels * t * t];
    let norm = 1.0 / (k * k) as f64;
    for (img, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(channels * t * t)) {
        for c in 0..channels {
            for (p, v) in o[c * t * t..(c + 1) * t * t].iter_mut().enumerate() {
                let (by, bx) = (p / t, p % t);
                let mut acc = 0.0;
                for y in by * k..(by + 1) * k {
                    for xx in bx * k..(bx + 1) * k {
                        acc += img[c * size * size + y * size + xx];
                    }
                }
                *v = acc * norm;
            }
        }
    }
    Ok(out)
}

/// Mean (d,) and unbiased covariance (d, d) of `x`: (n, d), n ≥ 2.
pub fn moments(x: &[f64], dim: usize) -> Result<(Vec<f64>, Vec<f64>), EvalError> {
    let n = check_points("features", x, dim, 2)?;
    let mut mean = vec![0.0; dim];
    for row in x.chunks_exact(dim) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0.0; dim * dim];
    let mut c = vec![0.0; dim];
    for row in x.chunks_exact(dim) {
        for ((ci, v), m) in c.iter_mut().zip(row).zip(&mean) {
            *ci = v - m;
        }
        for i in 0..dim {
            let ci = c[i];
            for j in i..dim {
                cov[i * dim + j] += ci * c[j];
            }
        }
    }
    for i in 0..dim {
        for j in i..dim {
            let v = cov[i * dim + j] / (n - 1) as f64;
            cov[i * dim + j] = v;
            cov[j * dim + i] = v;
        }
    }
    Ok((mean, cov))
}

/// Eigenvalues and eigenvectors (columns of the returned (d, d) matrix) of the symmetric `a`.
pub fn symmetric_eigen(a: &[f64], d: usize) -> Result<(Vec<f64>, Vec<f64>), EvalError> {
    if a.len() != d * d {
        return Err(EvalError::Shape(format!("{} values for a {d}×{d} matrix", a.len())));
    }
    let mut a = a.to_vec();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _ in 0..MAX_SWEEPS {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        if off <= JACOBI_TOL * total {
            let vals = (0..d).map(|i| a[i * d + i]).collect();
            return Ok((vals, v));
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub & Van Loan, the symmetric Schur pair).
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    Err(EvalError::Invalid(format!("the Jacobi eigen-solver did not converge in {MAX_SWEEPS} sweeps")))
}

/// The symmetric square root of the positive semi-definite `a` (negative eigenvalues clamped to 0).
fn sqrt_psd(a: &[f64], d: usize) -> Result<Vec<f64>, EvalError> {
    let (vals, v) = symmetric_eigen(a, d)?;
    let mut out = vec![0.0; d * d];
    for (k, &l) in vals.iter().enumerate() {
        let r = l.max(0.0).sqrt();
        for i in 0..d {
            let vik = v[i * d + k] * r;
            for j in 0..d {
                out[i * d + j] += vik * v[j * d + k];
            }
        }
    }
    Ok(out)
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            for j in 0..d {
                out[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    out
}

/// FD between two Gaussians given by their means (d,) and covariances (d, d).
pub fn frechet(mu1: &[f64], s1: &[f64], mu2: &[f64], s2: &[f64]) -> Result<f64, EvalError> {
    let d = mu1.len();
    if mu2.len() != d || s1.len() != d * d || s2.len() != d * d {
        return Err(EvalError::Shape("means and covariances of different dimensions".into()));
    }
    let r = sqrt_psd(s1, d)?;
    let mut m = matmul(&matmul(&r, s2, d), &r, d);
    // Symmetrise the rounding of the product before the eigen-solver.
    for i in 0..d {
        for j in i + 1..d {
            let v = 0.5 * (m[i * d + j] + m[j * d + i]);
            m[i * d + j] = v;
            m[j * d + i] = v;
        }
    }
    let (vals, _) = symmetric_eigen(&m, d)?;
    let tr_sqrt: f64 = vals.iter().map(|l| l.max(0.0).sqrt()).sum();
    let dist: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum();
    let tr = |s: &[f64]| (0..d).map(|i| s[i * d + i]).sum::<f64>();
    Ok(dist + tr(s1) + tr(s2) - 2.0 * tr_sqrt)
}

/// FD between the feature sets `x` (n, d) and `y` (m, d).
pub fn frechet_distance(x: &[f64], y: &[f64], dim: usize) -> Result<f64, EvalError> {
    let (m1, s1) = moments(x, dim)?;
    let (m2, s2) = moments(y, dim)?;
    frechet(&m1, &s1, &m2, &s2)
}
