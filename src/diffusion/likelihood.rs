//! Pointwise log-likelihood from an ε-denoiser (ITD; Kong, Brekelmans, Ver Steeg, ICLR 2023), the
//! noisy density p_ζ, the CDL logit, and the test-set protocol with bits/dim (math.md §2, §3.2),
//! in f64 over the CPU `Denoiser` trait. Not here: the training loss (`loss` uses the same
//! estimator as rows), GPU code.

use super::logistic::TruncLogistic;
use super::logsnr::{shifted_level, sigmoid, vp_coefs};
use super::rng::HostRng;
use super::{DiffusionError, Result};

// ---------------------------------------------------------------------------------------------
// Denoiser trait and the reference Gaussian

/// A CPU ε-predictor ε̂(z, α) for one example at log-SNR α (math.md §1.1); a network wrapper
/// maps α to its own conditioning (schedule.rs).
pub trait Denoiser {
    /// Data dimension d.
    fn dim(&self) -> usize;
    /// out = ε̂(z, α). z, out: (d,)
    fn eps_hat(&self, z: &[f64], alpha: f64, out: &mut [f64]);
}

/// The reference Gaussian G of (★), given by its covariance eigenvalues λ_i (math.md §2.1). Its value
/// cancels exactly; it is a control variate that sets the estimator's variance and truncation error.
#[derive(Clone, Debug, PartialEq)]
pub struct RefGaussian {
    /// ln λ_i. (d,)
    log_var: Vec<f64>,
}

impl RefGaussian {
    /// N(0, I): λ_i = 1.
    pub fn standard(d: usize) -> Self {
        Self { log_var: vec![0.0; d] }
    }

    /// From eigenvalues or per-coordinate variances (the "diagonal λ" of math.md §2.1, §9 pitfall 9).
    pub fn from_variances(var: &[f64]) -> Result<Self> {
        if let Some(v) = var.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(DiffusionError::Config(format!("reference variance {v} must be positive and finite")));
        }
        Ok(Self { log_var: var.iter().map(|v| v.ln()).collect() })
    }

    /// Dimension d.
    pub fn dim(&self) -> usize {
        self.log_var.len()
    }

    /// h_G = (d/2)·ln(2πe) + ½Σ ln λ_i, the differential entropy of G in nats.
    pub fn h_g(&self) -> f64 {
        let d = self.log_var.len() as f64;
        0.5 * d * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln() + 0.5 * self.log_var.iter().sum::<f64>()
    }

    /// mmse_G(α) = Σ_i s(α + ln λ_i), the expected ε-MMSE of G (= d·s(α) for N(0, I)).
    pub fn mmse_g(&self, alpha: f64) -> f64 {
        self.log_var.iter().map(|l| sigmoid(alpha + l)).sum()
    }
}

/// ||a − b||². a, b: (d,)
pub fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

// ---------------------------------------------------------------------------------------------
// p_ζ: the optimal denoiser of a once-corrupted distribution (math.md §2.3)

/// ε̂_ζ(z, α) = c(α,ζ)·ε̂(z, α′(α,ζ)): the optimal ε-predictor of p_ζ from that of p (math.md §2.3),
/// with α′ and c from logsumexp/log-sigmoids (math.md §9 pitfall 1).
pub struct ZetaDenoiser<'a, D: Denoiser + ?Sized> {
    /// The clean-data denoiser.
    pub inner: &'a D,
    /// The corruption level ζ.
    pub zeta: f64,
}

impl<D: Denoiser + ?Sized> Denoiser for ZetaDenoiser<'_, D> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn eps_hat(&self, z: &[f64], alpha: f64, out: &mut [f64]) {
        let sl = shifted_level(alpha, self.zeta);
        self.inner.eps_hat(z, sl.alpha_prime, out);
        for o in out.iter_mut() {
            *o *= sl.c;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Monte-Carlo estimators (math.md §2.2, §3.2)

/// Scratch buffers for one pointwise evaluation: ε, z, ε̂, all (d,).
struct Work {
    eps: Vec<f64>,
    z: Vec<f64>,
    out: Vec<f64>,
}

impl Work {
    fn new(d: usize) -> Self {
        Self { eps: vec![0.0; d], z: vec![0.0; d], out: vec![0.0; d] }
    }
    /// Draws ε and builds z = sqrt(s(α))·x + sqrt(s(−α))·ε (math.md §1.1).
    fn draw(&mut self, x: &[f64], alpha: f64, rng: &mut HostRng) {
        rng.fill_normal(&mut self.eps);
        let c = vp_coefs(alpha);
        for ((z, &xi), &e) in self.z.iter_mut().zip(x).zip(&self.eps) {
            *z = c.a * xi + c.b * e;
        }
    }
    /// ||ε − ε̂(z, level)||² for the current draw.
    fn err<D: Denoiser + ?Sized>(&mut self, den: &D, level: f64, scale: f64) -> f64 {
        den.eps_hat(&self.z, level, &mut self.out);
        self.eps.iter().zip(&self.out).map(|(e, o)| (e - scale * o) * (e - scale * o)).sum()
    }
}

fn check_dims(what: &str, d: usize, x: usize, reference: Option<&RefGaussian>) -> Result<()> {
    if x != d {
        return Err(DiffusionError::Shape(format!("{what}: x has {x} entries, denoiser d = {d}")));
    }
    if let Some(r) = reference {
        if r.dim() != d {
            return Err(DiffusionError::Shape(format!(
                "{what}: reference Gaussian has d = {}, denoiser d = {d}",
                r.dim()
            )));
        }
    }
    Ok(())
}

/// −log p̂(x) = h_G + (1/(2M))·Σ_m w(α_m)·(||ε_m − ε̂(x_{α_m}, α_m)||² − mmse_G(α_m)), α_m ~ q,
/// ε_m ~ N(0, I), all x_{α_m} from the same x (math.md §2.2). Uniforms for α and normals for ε come
/// from `rng` (its two disjoint sequences). x: (d,)
pub fn nll_mc<D: Denoiser + ?Sized>(
    den: &D,
    x: &[f64],
    q: &TruncLogistic,
    reference: &RefGaussian,
    m: usize,
    rng: &mut HostRng,
) -> Result<f64> {
    let mean = mc_half_mean("nll_mc", den.dim(), x, q, Some(reference), m, rng, |w, alpha| {
        w.err(den, alpha, 1.0) - reference.mmse_g(alpha)
    })?;
    Ok(reference.h_g() + mean)
}

/// (1/(2M))·Σ_m w(α_m)·term(x_{α_m}, α_m) for α_m ~ q and x_{α_m} drawn from x (into the `Work`
/// passed to `term`): the Monte-Carlo loop of both estimators, after checking d and M.
#[allow(clippy::too_many_arguments)]
fn mc_half_mean(
    what: &str,
    d: usize,
    x: &[f64],
    q: &TruncLogistic,
    reference: Option<&RefGaussian>,
    m: usize,
    rng: &mut HostRng,
    mut term: impl FnMut(&mut Work, f64) -> f64,
) -> Result<f64> {
    check_dims(what, d, x.len(), reference)?;
    q.validate()?;
    if m == 0 {
        return Err(DiffusionError::Config(format!("{what} needs M >= 1 points")));
    }
    let mut w = Work::new(d);
    let mut acc = 0.0;
    for _ in 0..m {
        let (alpha, wt) = q.sample(rng.next_uniform());
        w.draw(x, alpha, rng);
        acc += wt * term(&mut w, alpha);
    }
    Ok(acc / (2.0 * m as f64))
}

/// How the two density terms of the CDL logit draw their (α, ε) (math.md §3.2).
#[derive(Clone, Copy, Debug)]
pub enum Draws<'a> {
    /// Common random numbers: the same α_m, ε_m and y_{α_m} in both terms; h_G and mmse_G cancel
    /// exactly and are dropped (math.md's recommendation, [D]).
    Paired,
    /// The official code: two independent `nll_x` estimates, each with its own h_G/mmse_G terms.
    Independent(&'a RefGaussian),
}

/// f̂ ≈ log p(y) − log p_ζ(y), the CDL logit (math.md §3.2), with M points per density term.
/// Paired: f̂ = (1/(2M))·Σ_m w_m·(||ε_m − c_m·ε̂(y_{α_m}, α′_m)||² − ||ε_m − ε̂(y_{α_m}, α_m)||²).
/// Independent: f̂ = [−log p̂_ζ(y)] − [−log p̂(y)] with separate draws (the ζ term first). y: (d,)
pub fn cdl_logit_mc<D: Denoiser + ?Sized>(
    den: &D,
    y: &[f64],
    zeta: f64,
    q: &TruncLogistic,
    m: usize,
    draws: Draws<'_>,
    rng: &mut HostRng,
) -> Result<f64> {
    match draws {
        Draws::Independent(reference) => {
            let zd = ZetaDenoiser { inner: den, zeta };
            let nll_zeta = nll_mc(&zd, y, q, reference, m, rng)?;
            let nll = nll_mc(den, y, q, reference, m, rng)?;
            Ok(nll_zeta - nll)
        }
        Draws::Paired => mc_half_mean("cdl_logit_mc", den.dim(), y, q, None, m, rng, |w, alpha| {
            let sl = shifted_level(alpha, zeta);
            let e_p = w.err(den, alpha, 1.0);
            w.err(den, sl.alpha_prime, sl.c) - e_p
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic quadrature of (★)

/// ∫_lo^hi f(α) dα by composite Simpson with `n` intervals (rounded up to even, at least 2).
pub fn simpson<F: Fn(f64) -> f64>(f: F, lo: f64, hi: f64, n: usize) -> f64 {
    let n = (n.max(2) + 1) & !1;
    let h = (hi - lo) / n as f64;
    let mut acc = f(lo) + f(hi);
    for i in 1..n {
        let coef = if i % 2 == 1 { 4.0 } else { 2.0 };
        acc += coef * f(lo + h * i as f64);
    }
    acc * h / 3.0
}

/// −log p(x) = h_G + ½∫_lo^hi [mse(α) − mmse_G(α)] dα by Simpson with `n` intervals, for a known
/// expected pointwise error mse(α) = E_ε||ε − ε̂(x_α, α)||² (math.md §2.1 (★)). Use a range wide enough
/// that the gap has decayed (it falls like e^{−|α|} for Gaussian-like data), or the q support to
/// get the truncated value the MC estimator targets.
pub fn nll_quadrature<F: Fn(f64) -> f64>(mse: F, reference: &RefGaussian, lo: f64, hi: f64, n: usize) -> f64 {
    reference.h_g() + 0.5 * simpson(|a| mse(a) - reference.mmse_g(a), lo, hi, n)
}

// ---------------------------------------------------------------------------------------------
// Test-set protocol and bits/dim (math.md §2.2, §9 pitfall 10)

/// −log p = h_G + (1/(2M))·Σ_m w_m·min(mse_m − mmse_G(α_m), 0), where mse_m is the MSE at α_m
/// already **averaged over the data set** (ITD `test_nll`: average first, then clamp, because one
/// may switch to the Gaussian denoiser wherever it is better). alpha, weight, mean_mse: (M,)
pub fn clamped_nll(alpha: &[f64], weight: &[f64], mean_mse: &[f64], reference: &RefGaussian) -> Result<f64> {
    let m = alpha.len();
    if m == 0 || weight.len() != m || mean_mse.len() != m {
        return Err(DiffusionError::Shape(format!(
            "clamped_nll: alpha {m}, weight {}, mean_mse {} (need equal, >= 1)",
            weight.len(),
            mean_mse.len()
        )));
    }
    let acc: f64 = (0..m).map(|i| weight[i] * (mean_mse[i] - reference.mmse_g(alpha[i])).min(0.0)).sum();
    Ok(reference.h_g() + acc / (2.0 * m as f64))
}

/// Result of the ITD test-set protocol, in nats per example and bits per dimension.
#[derive(Clone, Debug, PartialEq)]
pub struct TestNll {
    /// Sorted α points, drawn once. (M,)
    pub alpha: Vec<f64>,
    /// Importance weights w(α_m). (M,)
    pub weight: Vec<f64>,
    /// Mean over the data set of ||ε − ε̂||² at α_m. (M,)
    pub mean_mse: Vec<f64>,
    /// −log p per example with the clamped gap (the reported number), nats.
    pub nats: f64,
    /// Same without the clamp (the plain average of (★) over the data), nats.
    pub nats_unclamped: f64,
    /// `nats` in continuous bits/dim.
    pub bpd: f64,
}

/// The ITD test protocol [ITD scripts/test.py, `test_nll`]: M α points drawn once from q and
/// sorted, each evaluated on every example with a fresh ε; the MSE is averaged over the data per
/// α, then the gap is clamped at 0 (math.md §2.2). ITD uses M = 1000. data: (N, d) row-major.
pub fn test_nll<D: Denoiser + ?Sized>(
    den: &D,
    data: &[f64],
    q: &TruncLogistic,
    reference: &RefGaussian,
    points: usize,
    rng: &mut HostRng,
) -> Result<TestNll> {
    let d = den.dim();
    if d == 0 || data.is_empty() || !data.len().is_multiple_of(d) {
        return Err(DiffusionError::Shape(format!(
            "test_nll: data length {} is not a positive multiple of d = {d}",
            data.len()
        )));
    }
    check_dims("test_nll", d, d, Some(reference))?;
    q.validate()?;
    if points == 0 {
        return Err(DiffusionError::Config("test_nll needs >= 1 points".into()));
    }
    let mut alpha: Vec<f64> = (0..points).map(|_| q.sample(rng.next_uniform()).0).collect();
    alpha.sort_by(f64::total_cmp);
    let weight: Vec<f64> = alpha.iter().map(|&a| q.weight(a)).collect();
    let n = data.len() / d;
    let mut w = Work::new(d);
    let mut mean_mse = Vec::with_capacity(points);
    for &a in &alpha {
        let mut acc = 0.0;
        for x in data.chunks_exact(d) {
            w.draw(x, a, rng);
            acc += w.err(den, a, 1.0);
        }
        mean_mse.push(acc / n as f64);
    }
    let nats = clamped_nll(&alpha, &weight, &mean_mse, reference)?;
    let unclamped: f64 = (0..points).map(|i| weight[i] * (mean_mse[i] - reference.mmse_g(alpha[i]))).sum::<f64>();
    let nats_unclamped = reference.h_g() + unclamped / (2.0 * points as f64);
    Ok(TestNll { bpd: bits_per_dim(nats, d), alpha, weight, mean_mse, nats, nats_unclamped })
}

/// Bin width of 8-bit data scaled to [−1, 1]: Δ = 2/255.
pub const BIN_8BIT: f64 = 2.0 / 255.0;

/// Continuous bits/dim: nats/(d·ln 2). State d with the number (math.md §9 pitfall 10).
pub fn bits_per_dim(nats: f64, d: usize) -> f64 {
    nats / (d as f64 * std::f64::consts::LN_2)
}

/// Discrete-limit bits/dim for bin width Δ: bpd − log2 Δ (= bpd + 6.994 for Δ = 2/255) (§2.2).
pub fn discrete_bpd(continuous_bpd: f64, bin_width: f64) -> f64 {
    continuous_bpd - bin_width.log2()
}
