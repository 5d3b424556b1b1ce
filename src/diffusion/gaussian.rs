//! Gaussian data N(m, diag(v)): the analytic optimal ε-predictor and exact densities (math.md
//! §2.1, §2.3), the closed-form oracle for the likelihood and CDL code (ARCHITECTURE.md
//! correctness ladder, step 5). Not a model of image data; correlated Gaussians reduce to this by
//! rotation only when m = 0 (the VP noise is isotropic), which the tests do not need.

use super::likelihood::Denoiser;
use super::logsnr::{shifted_level, sigmoid};
use super::{DiffusionError, Result};

/// Data distribution N(mean, diag(var)) with its optimal denoiser.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianData {
    /// m. (d,)
    pub mean: Vec<f64>,
    /// v, all > 0. (d,)
    pub var: Vec<f64>,
}

impl GaussianData {
    /// Checked constructor: equal lengths ≥ 1, finite mean, positive finite variances.
    pub fn new(mean: Vec<f64>, var: Vec<f64>) -> Result<Self> {
        if mean.is_empty() || mean.len() != var.len() {
            return Err(DiffusionError::Shape(format!(
                "GaussianData: mean has {} entries, var {}",
                mean.len(),
                var.len()
            )));
        }
        if mean.iter().any(|m| !m.is_finite()) || var.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(DiffusionError::Config("GaussianData: mean must be finite and variances positive".into()));
        }
        Ok(Self { mean, var })
    }

    /// ln N(x; m, diag(v)). x: (d,)
    pub fn log_density(&self, x: &[f64]) -> f64 {
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        x.iter()
            .zip(&self.mean)
            .zip(&self.var)
            .map(|((xi, mi), vi)| -0.5 * (ln2pi + vi.ln() + (xi - mi) * (xi - mi) / vi))
            .sum()
    }

    /// Differential entropy ½Σ ln(2πe v_i).
    pub fn entropy(&self) -> f64 {
        let c = (2.0 * std::f64::consts::PI * std::f64::consts::E).ln();
        self.var.iter().map(|v| 0.5 * (c + v.ln())).sum()
    }

    /// p_ζ = law of sqrt(s(ζ))·x + sqrt(s(−ζ))·ε₀: N(a_ζ m, s(ζ) v + s(−ζ)) (math.md §2.3).
    pub fn noisy(&self, zeta: f64) -> Self {
        let (s_pos, s_neg) = (sigmoid(zeta), sigmoid(-zeta));
        let a = s_pos.sqrt();
        Self {
            mean: self.mean.iter().map(|m| a * m).collect(),
            var: self.var.iter().map(|v| s_pos * v + s_neg).collect(),
        }
    }

    /// ln p_ζ(y). y: (d,)
    pub fn log_density_zeta(&self, y: &[f64], zeta: f64) -> f64 {
        self.noisy(zeta).log_density(y)
    }

    /// The exact CDL logit f*(y) = ln p(y) − ln p_ζ(y) (math.md §3.1). y: (d,)
    pub fn logit(&self, y: &[f64], zeta: f64) -> f64 {
        self.log_density(y) - self.log_density_zeta(y, zeta)
    }

    /// Coefficients (k_i, o_i) of the optimal predictor ε̂*_i = k_i·z_i + o_i at level α:
    /// k_i = b/(a²v_i + b²), o_i = −k_i·a·m_i, with a² = s(α), b² = s(−α) taken directly.
    /// Why linear: for z = a·x + b·ε each coordinate (z_i, ε_i) is jointly Gaussian with
    /// Cov(ε_i, z_i) = b and Var z_i = a²v_i + b², so
    /// ε̂*_i = E[ε_i | z_i] = b·(z_i − a·m_i)/(a²v_i + b²).
    fn coeffs(&self, alpha: f64, i: usize) -> (f64, f64) {
        let (a2, b2) = (sigmoid(alpha), sigmoid(-alpha));
        let k = b2.sqrt() / (a2 * self.var[i] + b2);
        (k, -k * a2.sqrt() * self.mean[i])
    }

    /// E_ε||ε − scale·ε̂*(y_α, level)||² with y_α = sqrt(s(α))·y + sqrt(s(−α))·ε, for a linear
    /// predictor: Σ_i (1 − scale·k_i·b)² + (scale·(k_i·a·y_i + o_i))², (k, o) taken at `level`.
    fn linear_expected_err(&self, y: &[f64], alpha: f64, level: f64, scale: f64) -> f64 {
        let (a, b) = (sigmoid(alpha).sqrt(), sigmoid(-alpha).sqrt());
        (0..self.mean.len())
            .map(|i| {
                let (k, o) = self.coeffs(level, i);
                let (ks, os) = (scale * k, scale * o);
                (1.0 - ks * b).powi(2) + (ks * a * y[i] + os).powi(2)
            })
            .sum()
    }

    /// mse*(x, α) = E_ε||ε − ε̂*(x_α, α)||², the pointwise expected error of the optimal denoiser
    /// (math.md §2.1, which gives the closed form). x: (d,)
    ///
    /// It follows from ε − ε̂ = (1 − k_i b)ε_i − k_i a (x_i − m_i), γ = e^α. With the data
    /// reference (λ_i = v_i) the gap in (★) is Σ_i γ((x_i−m_i)² − v_i)/(1+γv_i)², whose
    /// α-integral is Σ_i ((x_i−m_i)²/v_i − 1): (★) gives back −log N(x; m, v) exactly.
    pub fn expected_err(&self, x: &[f64], alpha: f64) -> f64 {
        self.linear_expected_err(x, alpha, alpha, 1.0)
    }

    /// E_ε||ε − c·ε̂*(y_α, α′)||², the expected error of the optimal p_ζ predictor (math.md §2.3),
    /// i.e. the q-row error of CDL (math.md §3.2). y: (d,)
    pub fn expected_err_zeta(&self, y: &[f64], alpha: f64, zeta: f64) -> f64 {
        let sl = shifted_level(alpha, zeta);
        self.linear_expected_err(y, alpha, sl.alpha_prime, sl.c)
    }
}

impl Denoiser for GaussianData {
    fn dim(&self) -> usize {
        self.mean.len()
    }
    fn eps_hat(&self, z: &[f64], alpha: f64, out: &mut [f64]) {
        for (i, (o, zi)) in out.iter_mut().zip(z).enumerate() {
            let (k, off) = self.coeffs(alpha, i);
            *o = k * zi + off;
        }
    }
}
