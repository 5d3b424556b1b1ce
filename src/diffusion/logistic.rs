//! Truncated logistic distribution of log-SNR levels, with importance weights (math.md §1.5):
//! E_q[w·f(α)] is the unweighted integral of f over the support [ITD `logistic_integrate`; CDL
//! utils.py]; also (μ, s) estimated from data variances. The weights grow like e^c at the clip
//! edges (math.md §9 pitfall 5). Not here: the integrand; the ζ sampler of CDL is a second
//! instance of this type (`loss::ZetaDist`).

use super::logsnr::{log_sigmoid, logit, sigmoid};
use super::{finite, DiffusionError, Result};

/// Logistic(μ, s) truncated at ±c scales around μ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TruncLogistic {
    /// Location μ (the centre of the α range).
    pub mu: f64,
    /// Scale s > 0.
    pub s: f64,
    /// Clip c > 0, in units of s: α ∈ [μ − c·s, μ + c·s].
    pub c: f64,
}

impl TruncLogistic {
    /// ITD CIFAR-10 with the diagonal heuristic: (6.2614, 3.0976, 4) [ITD `dataset_info`].
    pub const ITD_CIFAR: Self = Self { mu: 6.261363983154297, s: 3.0976245403289795, c: 4.0 };
    /// CDL CIFAR-10 fine-tuning integration: (4, 4, 3), α ∈ [−8, 16] [CDL diffusionmodel_test.py].
    pub const CDL_CIFAR: Self = Self { mu: 4.0, s: 4.0, c: 3.0 };
    /// CDL CIFAR-10 ζ distribution: (10.5, 1.5, 3), ζ ∈ [6, 15] (math.md §3.1).
    pub const CDL_ZETA_CIFAR: Self = Self { mu: 10.5, s: 1.5, c: 3.0 };

    /// Checked constructor: μ finite, s > 0, c > 0, all finite.
    pub fn new(mu: f64, s: f64, c: f64) -> Result<Self> {
        finite("logistic mu", mu)?;
        if !(s.is_finite() && s > 0.0) {
            return Err(DiffusionError::Config(format!("logistic scale s = {s} must be > 0")));
        }
        if !(c.is_finite() && c > 0.0) {
            return Err(DiffusionError::Config(format!("logistic clip c = {c} must be > 0")));
        }
        Ok(Self { mu, s, c })
    }

    /// Re-checks the fields (they are public, so a config may hold any value).
    pub fn validate(&self) -> Result<()> {
        Self::new(self.mu, self.s, self.c).map(|_| ())
    }

    /// (μ, s) "estimated from data" [ITD `dataset_info`]: with λ_i the covariance eigenvalues (or,
    /// diagonally, per-coordinate variances), μ = −mean ln λ_i and s = sqrt(1 + (3/π)·Var ln λ_i).
    /// The code's constant is 3/π, not the moment-matching 3/π², and `torch.var` is the unbiased
    /// (n−1) variance; both are reproduced (math.md §1.5). Needs ≥ 2 positive finite variances.
    pub fn from_variances(variances: &[f64], c: f64) -> Result<Self> {
        let n = variances.len();
        if n < 2 {
            return Err(DiffusionError::Shape(format!("from_variances needs at least 2 variances, got {n}")));
        }
        if let Some(v) = variances.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(DiffusionError::Config(format!("variance {v} must be positive and finite")));
        }
        let logs: Vec<f64> = variances.iter().map(|v| v.ln()).collect();
        let mean = logs.iter().sum::<f64>() / n as f64;
        let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        Self::new(-mean, (1.0 + 3.0 / std::f64::consts::PI * var).sqrt(), c)
    }

    /// The CDL toy setting (d ≤ 2): μ = −mean ln var_i, s = 3 hard-coded, c = 3
    /// [CDL diffusionmodel.py `dataset_info`; math.md §1.5 table].
    pub fn cdl_toy(variances: &[f64]) -> Result<Self> {
        if variances.is_empty() {
            return Err(DiffusionError::Shape("cdl_toy needs at least 1 variance".into()));
        }
        if let Some(v) = variances.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(DiffusionError::Config(format!("variance {v} must be positive and finite")));
        }
        let mean = variances.iter().map(|v| v.ln()).sum::<f64>() / variances.len() as f64;
        Self::new(-mean, 3.0, 3.0)
    }

    /// The support [μ − c·s, μ + c·s].
    pub fn range(&self) -> (f64, f64) {
        (self.mu - self.c * self.s, self.mu + self.c * self.s)
    }

    /// Truncated mass of the unit logistic, s(c) − s(−c) = tanh(c/2).
    pub fn mass(&self) -> f64 {
        (0.5 * self.c).tanh()
    }

    /// Density q(α) of the truncated distribution; 0 outside the support.
    pub fn density(&self, alpha: f64) -> f64 {
        let (lo, hi) = self.range();
        if alpha < lo || alpha > hi {
            return 0.0;
        }
        1.0 / self.weight(alpha)
    }

    /// w(α) = 1/q(α) = s·tanh(c/2)/(s(r)·s(−r)), r = (α−μ)/s, from log-sigmoids (no cancellation).
    /// Meaningful on the support only (the formula is evaluated as is elsewhere).
    pub fn weight(&self, alpha: f64) -> f64 {
        let r = (alpha - self.mu) / self.s;
        self.s * self.mass() * (-(log_sigmoid(r) + log_sigmoid(-r))).exp()
    }

    /// Inverse-CDF draw from a uniform u ∈ (0, 1): returns (α, w(α)).
    pub fn sample(&self, u: f64) -> (f64, f64) {
        let lo = sigmoid(-self.c);
        let p = lo + self.mass() * u;
        let alpha = self.mu + self.s * logit(p);
        (alpha, self.weight(alpha))
    }
}
