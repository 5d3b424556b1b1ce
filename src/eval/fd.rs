//! The Fréchet distance between two Gaussians fitted to feature sets (the formula of FID,
//! math.md §7.1), with pytorch-fid's handling of near-singular products (on `frechet`), and the
//! pixel-space features `cdl bench quality` uses for images until an Inception network exists.
//! Not FID by itself: no Inception features (`feature_stats` and `npz` take them).

use super::feature_stats::{FeatureStats, Moments};
use super::linalg::{eigh, eigvalsh, matmul_abt, matmul_abt_symmetric};
use super::{check_points, EvalError};

/// pytorch-fid's `eps`: the offset added to both covariances' diagonals when the root of the
/// product is not finite.
pub const PYTORCH_FID_EPS: f64 = 1e-6;
/// The largest imaginary part pytorch-fid accepts on the diagonal of the root (`atol=1e-3`); an
/// eigenvalue λ < 0 of the product puts i·sqrt(−λ) there, so eigenvalues down to −(1e-3)² pass.
const IMAGINARY_ATOL: f64 = 1e-3;
/// Rounding of a backward-stable eigen-solver: |δλ| ≤ ROUNDING·d·ε·‖A‖ counts as rounding
/// whatever the scale of the features.
const ROUNDING: f64 = 16.0;

/// Per-channel k×k average pooling of images (n, c, s, s), row-major: (n, c·(s/k)²). A
/// pixel-space distance on these measures colour and layout, not perceptual quality.
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
    check_points("features", x, dim, 2)?;
    let mut stats = FeatureStats::new(dim)?;
    stats.push_f64(x)?;
    let m = stats.moments()?;
    Ok((m.mu, m.sigma))
}

/// Eigenvalues (ascending) and eigenvectors (columns of the returned (d, d) matrix) of the
/// symmetric `a`: `linalg::eigh` with its vectors transposed.
pub fn symmetric_eigen(a: &[f64], d: usize) -> Result<(Vec<f64>, Vec<f64>), EvalError> {
    let e = eigh(a, d)?;
    let mut columns = vec![0.0; d * d];
    for k in 0..d {
        for i in 0..d {
            columns[i * d + k] = e.vectors[k * d + i];
        }
    }
    Ok((e.values, columns))
}

/// FD between two Gaussians given by their means (d,) and covariances (d, d).
///
/// FD = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2·tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}, the squared
/// 2-Wasserstein distance between the two Gaussians (Dowson & Landau 1982; FID, Heusel et al.
/// 2017, eq. 6). pytorch-fid takes tr sqrtm(Σ₁Σ₂) of the non-symmetric product;
/// Σ₁^{1/2}Σ₂Σ₁^{1/2} has the same eigenvalues and is symmetric positive semi-definite, so two
/// symmetric eigenproblems give the trace (`linalg::eigh`, `linalg::eigvalsh`). Moments come in
/// f64 with the unbiased covariance (`feature_stats`, numpy's `np.cov` in pytorch-fid).
///
/// Near-singular products, as pytorch-fid handles them: negative eigenvalues of the PSD matrices
/// are set to 0, and so are Σ₁'s within rounding of 0 (|λ| ≤ 16·d·ε·λ_max), where sqrtm returns
/// roots of rounding (~1e-8 each) and tiny imaginary parts that pytorch-fid drops; rank-deficient
/// covariances (n ≤ d) give the same trace both ways up to those roots. A negative eigenvalue
/// beyond rounding and below −(1e-3)² is an error, as pytorch-fid raises when an imaginary part on
/// the diagonal of the root exceeds 1e-3. When the root is not finite (here: an eigen-solve that
/// fails) the trace is recomputed with ε·I, ε = 1e-6, added to both covariances, the traces
/// tr Σ₁ + tr Σ₂ keeping the covariances as given (`frechet_offset`).
pub fn frechet(mu1: &[f64], s1: &[f64], mu2: &[f64], s2: &[f64]) -> Result<f64, EvalError> {
    let d = check_gaussians(mu1, s1, mu2, s2)?;
    let tr_root = match trace_root(s1, s2, d, 0.0) {
        Ok(t) => t,
        Err(RootFailure::NotFinite) => return frechet_offset(mu1, s1, mu2, s2, PYTORCH_FID_EPS),
        Err(RootFailure::Eval(e)) => return Err(e),
    };
    Ok(assemble(mu1, s1, mu2, s2, tr_root))
}

/// FD with `eps`·I added to both covariances inside the root only: pytorch-fid's second branch
/// (`offset = np.eye(d) * eps`), which `frechet` takes when the root is not finite.
pub fn frechet_offset(mu1: &[f64], s1: &[f64], mu2: &[f64], s2: &[f64], eps: f64) -> Result<f64, EvalError> {
    let d = check_gaussians(mu1, s1, mu2, s2)?;
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(EvalError::Invalid(format!("offset eps = {eps}, must be finite and ≥ 0")));
    }
    match trace_root(s1, s2, d, eps) {
        Ok(t) => Ok(assemble(mu1, s1, mu2, s2, t)),
        Err(RootFailure::Eval(e)) => Err(e),
        Err(RootFailure::NotFinite) => {
            Err(EvalError::Invalid(format!("the square root of Σ₁Σ₂ is not finite even with {eps}·I added")))
        }
    }
}

/// FD between two feature summaries (for example a `.npz` of reference statistics).
pub fn frechet_moments(a: &Moments, b: &Moments) -> Result<f64, EvalError> {
    frechet(&a.mu, &a.sigma, &b.mu, &b.sigma)
}

/// FD between the feature sets `x` (n, d) and `y` (m, d).
pub fn frechet_distance(x: &[f64], y: &[f64], dim: usize) -> Result<f64, EvalError> {
    let (m1, s1) = moments(x, dim)?;
    let (m2, s2) = moments(y, dim)?;
    frechet(&m1, &s1, &m2, &s2)
}

// ---------------------------------------------------------------------------------------------

fn check_gaussians(mu1: &[f64], s1: &[f64], mu2: &[f64], s2: &[f64]) -> Result<usize, EvalError> {
    let d = mu1.len();
    if d == 0 || mu2.len() != d || s1.len() != d * d || s2.len() != d * d {
        return Err(EvalError::Shape(format!(
            "means of {} and {} values, covariances of {} and {}: not one dimension d ≥ 1",
            mu1.len(),
            mu2.len(),
            s1.len(),
            s2.len()
        )));
    }
    for (what, x) in [("mu1", mu1), ("sigma1", s1), ("mu2", mu2), ("sigma2", s2)] {
        if let Some(index) = x.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::NonFinite { what, index, value: x[index] });
        }
    }
    Ok(d)
}

fn assemble(mu1: &[f64], s1: &[f64], mu2: &[f64], s2: &[f64], tr_root: f64) -> f64 {
    let d = mu1.len();
    let dist: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum();
    let tr = |s: &[f64]| (0..d).map(|i| s[i * d + i]).sum::<f64>();
    dist + tr(s1) + tr(s2) - 2.0 * tr_root
}

enum RootFailure {
    /// The analogue of sqrtm returning inf/NaN: an eigen-solve that failed or overflowed.
    NotFinite,
    /// A covariance that is not positive semi-definite (pytorch-fid's "Imaginary component").
    Eval(EvalError),
}

/// tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2} with eps·I added to both: Σ₁ = Eᵀ Λ E (rows of E its
/// eigenvectors), F = Λ^{1/2} E restricted to λ > 0 (r rows), M = F Σ₂ Fᵀ (r, r) has the nonzero
/// eigenvalues of Σ₁^{1/2}Σ₂Σ₁^{1/2}, and the trace is Σ sqrt(μ) over them.
fn trace_root(s1: &[f64], s2: &[f64], d: usize, eps: f64) -> Result<f64, RootFailure> {
    let offset = |s: &[f64]| {
        let mut s = s.to_vec();
        (0..d).for_each(|i| s[i * d + i] += eps);
        s
    };
    let e = eigh(&offset(s1), d).map_err(|_| RootFailure::NotFinite)?;
    let lambda = clamped(&e.values, d, "Σ₁", true)?;
    let kept: Vec<usize> = (0..d).filter(|&k| lambda[k] > 0.0).collect();
    let r = kept.len();
    if r == 0 {
        return Ok(0.0);
    }
    let mut f = vec![0.0; r * d];
    for (row, &k) in f.chunks_exact_mut(d).zip(&kept) {
        let scale = lambda[k].sqrt();
        row.iter_mut().zip(&e.vectors[k * d..(k + 1) * d]).for_each(|(o, v)| *o = scale * v);
    }
    // Σ₂ symmetrised, so that its rows are its columns: W = F Σ₂ = F Σ₂ᵀ.
    let s2 = offset(s2);
    let mut s2s = s2.clone();
    for i in 0..d {
        for j in 0..d {
            s2s[i * d + j] = 0.5 * (s2[i * d + j] + s2[j * d + i]);
        }
    }
    let w = matmul_abt(&f, &s2s, r, d, d);
    let m = matmul_abt_symmetric(&w, &f, r, d);
    let mu = eigvalsh(&m, r).map_err(|_| RootFailure::NotFinite)?;
    let mu = clamped(&mu, r, "Σ₁^{1/2}Σ₂Σ₁^{1/2}", false)?;
    let t: f64 = mu.iter().map(|v| v.sqrt()).sum();
    if t.is_finite() {
        Ok(t)
    } else {
        Err(RootFailure::NotFinite)
    }
}

/// Eigenvalues of a PSD matrix with the negative ones set to 0 and, with `zero_rounding`, also
/// the positive ones within rounding of 0; an eigenvalue below both the rounding level and
/// −IMAGINARY_ATOL² is an error.
///
/// Σ₁'s rounding eigenvalues are zeroed: a covariance of n ≤ d rows has d − n + 1 exact zeros
/// that come back as ±1e-16·λ_max, and keeping the positive ones adds ~1e-8 each to the trace
/// (measured against a 40-digit evaluation: 7e-7 off at d = 48, n = 30; 2e-8 with them zeroed).
/// The product's small eigenvalues are kept: with pytorch-fid's offset they are ~ε² = 1e-12 and
/// real, and zeroing them would move the trace by 1e-5.
fn clamped(values: &[f64], d: usize, what: &str, zero_rounding: bool) -> Result<Vec<f64>, RootFailure> {
    let top = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if !top.is_finite() {
        return Err(RootFailure::NotFinite);
    }
    let rounding = ROUNDING * d as f64 * f64::EPSILON * top;
    let low = values.iter().fold(f64::INFINITY, |m, &v| m.min(v));
    if low < -rounding.max(IMAGINARY_ATOL * IMAGINARY_ATOL) {
        return Err(RootFailure::Eval(EvalError::Invalid(format!(
            "{what} is not positive semi-definite: eigenvalue {low:e} (the root would have an imaginary part \
             above {IMAGINARY_ATOL})"
        ))));
    }
    let floor = if zero_rounding { rounding } else { 0.0 };
    Ok(values.iter().map(|&v| if v > floor { v } else { 0.0 }).collect())
}
