//! Noise schedules and their log-SNR mappings, in f64: every mapping between a network's native
//! noise coordinate (DDPM timestep t, SDE time, EDM σ) and the log-SNR α: DDPM linear-β and the
//! α → t lookup, iDDPM cosine (math.md §1.2), Song's VP-SDE and VE (§1.3), EDM σ with ε̂ ↔ D
//! (§1.4) and EDM preconditioning (§4.3) [Karras et al. 2022, Table 1]. Not here: samplers, or
//! which α to train on (`loss`).

use super::logsnr::{logit, sigmoid, softplus, sqrt_sigmoid};
use super::{DiffusionError, Result};

// ---------------------------------------------------------------------------------------------
// DDPM linear-β schedule (math.md §1.2) [Ho et al. 2020; CDL utils.py `get_ddpm_schedule`]

/// ᾱ_t and α_t = logit(ᾱ_t) of a discrete linear-β schedule, t = 0..T−1.
#[derive(Clone, Debug)]
pub struct DdpmSchedule {
    /// ᾱ_t = Π_{u≤t}(1 − β_u). (T,)
    pub alpha_bar: Vec<f64>,
    /// α_t = logit(ᾱ_t) = ln ᾱ_t − ln(1 − ᾱ_t), with 1 − ᾱ_t from expm1 (no cancellation). (T,)
    pub logsnr: Vec<f64>,
}

impl DdpmSchedule {
    /// β_t = linspace(beta_start, beta_end, steps) (numpy's linspace: both ends included).
    pub fn linear(steps: usize, beta_start: f64, beta_end: f64) -> Result<Self> {
        let ok = |b: f64| b.is_finite() && b > 0.0 && b < 1.0;
        if steps < 2 || !ok(beta_start) || !ok(beta_end) {
            return Err(DiffusionError::Config(format!(
                "DDPM schedule needs steps >= 2 and betas in (0,1), got {steps}, {beta_start}, {beta_end}"
            )));
        }
        Ok(Self::build(steps, beta_start, beta_end))
    }

    /// `linear` without the checks, for in-range constants.
    fn build(steps: usize, beta_start: f64, beta_end: f64) -> Self {
        let mut alpha_bar = Vec::with_capacity(steps);
        let mut logsnr = Vec::with_capacity(steps);
        let mut log_ab = 0.0f64; // ln ᾱ_t, accumulated as Σ ln(1 − β_u)
        for t in 0..steps {
            let beta = beta_start + (beta_end - beta_start) * t as f64 / (steps - 1) as f64;
            log_ab += (-beta).ln_1p();
            let one_minus = -log_ab.exp_m1();
            alpha_bar.push(log_ab.exp());
            logsnr.push(log_ab - one_minus.ln());
        }
        Self { alpha_bar, logsnr }
    }

    /// Ho et al.'s schedule: 1000 steps, β from 1e-4 to 0.02. α_0 = +9.21, α_999 = −10.12.
    pub fn ho() -> Self {
        Self::build(1000, 1e-4, 0.02)
    }

    /// Number of steps T.
    pub fn steps(&self) -> usize {
        self.alpha_bar.len()
    }
}

/// The α → fractional timestep lookup of the CDL/ITD wrappers (math.md §1.2): a 10,000-step copy of
/// Ho's schedule (β scaled by 0.1); t(α) = 0.1 · argmin_i |ᾱ_i − s(α)|, so t ∈ [0, 999.9] and α
/// outside ≈[−10.1, 9.2] clamps to an endpoint [CDL utils.py `logsnr2t`; ITD `WrapUNet2DModel`].
#[derive(Clone, Debug)]
pub struct LogSnrToT {
    /// Fine-grid ᾱ, strictly decreasing. (10000,)
    fine_alpha_bar: Vec<f64>,
    /// Timestep per fine index (0.1 for the 10× grid).
    scale: f64,
}

impl Default for LogSnrToT {
    fn default() -> Self {
        Self::ho()
    }
}

impl LogSnrToT {
    /// The table for Ho's 1000-step schedule.
    pub fn ho() -> Self {
        Self { fine_alpha_bar: DdpmSchedule::build(10_000, 1e-5, 2e-3).alpha_bar, scale: 0.1 }
    }

    /// Fractional timestep for one α (nearest fine-grid ᾱ; ties go to the lower index, as
    /// `torch.argmin`). NaN α gives NaN.
    pub fn t(&self, alpha: f64) -> f64 {
        if alpha.is_nan() {
            return f64::NAN;
        }
        let target = sigmoid(alpha);
        let ab = &self.fine_alpha_bar;
        // First index with ᾱ_i <= target (ᾱ decreasing); the nearest is it or its predecessor.
        let j = ab.partition_point(|&v| v > target);
        let best = if j == 0 {
            0
        } else if j == ab.len() {
            ab.len() - 1
        } else if (ab[j - 1] - target).abs() <= (ab[j] - target).abs() {
            j - 1
        } else {
            j
        };
        best as f64 * self.scale
    }

    /// Per-sample lookup (never one t for the whole batch: math.md §1.2, §9 pitfall 4).
    /// out, alpha: (N,)
    pub fn t_batch(&self, out: &mut [f64], alpha: &[f64]) -> Result<()> {
        if out.len() != alpha.len() {
            return Err(DiffusionError::Shape(format!(
                "t_batch: out has {} entries, alpha {}",
                out.len(),
                alpha.len()
            )));
        }
        for (o, &a) in out.iter_mut().zip(alpha) {
            *o = self.t(a);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// iDDPM cosine schedule (math.md §1.2) [Nichol & Dhariwal 2021; ITD `WrapUNetModel.logsnr2t`]

/// iDDPM's offset s0.
pub const COSINE_S0: f64 = 0.008;

/// t(α) = T·(acos(cos(π/2·s0/(1+s0))·sqrt(s(α)))·2(1+s0)/π − s0), T = `steps`.
pub fn cosine_logsnr2t(alpha: f64, steps: f64) -> f64 {
    let s0 = COSINE_S0;
    let h = std::f64::consts::FRAC_PI_2;
    let c0 = (h * s0 / (1.0 + s0)).cos();
    steps * ((c0 * sqrt_sigmoid(alpha)).acos() * (1.0 + s0) / h - s0)
}

/// Inverse of `cosine_logsnr2t`: ᾱ(t) = cos²((t/T+s0)/(1+s0)·π/2)/cos²(π/2·s0/(1+s0)), α = logit ᾱ.
pub fn cosine_t2logsnr(t: f64, steps: f64) -> f64 {
    let s0 = COSINE_S0;
    let h = std::f64::consts::FRAC_PI_2;
    let c0 = (h * s0 / (1.0 + s0)).cos();
    let ct = ((t / steps + s0) / (1.0 + s0) * h).cos();
    logit((ct / c0).powi(2))
}

// ---------------------------------------------------------------------------------------------
// EDM σ ↔ α (math.md §1.3, §1.4) [Karras et al. 2022; CDL seq_samplers.py `logsnr2sigma`]

/// σ = e^{−α/2}: dividing x + σn by sqrt(1+σ²) gives the VP channel at α = −2 ln σ.
pub fn sigma_of_alpha(alpha: f64) -> f64 {
    (-0.5 * alpha).exp()
}

/// α = −2 ln σ.
pub fn alpha_of_sigma(sigma: f64) -> f64 {
    -2.0 * sigma.ln()
}

/// EDM input from a VP input: x_σ = z/sqrt(s(α)) = z·sqrt(1+σ²). out, z: (d,)
pub fn x_sigma_from_z(out: &mut [f64], z: &[f64], alpha: f64) {
    let a = sqrt_sigmoid(alpha);
    for (o, &zi) in out.iter_mut().zip(z) {
        *o = zi / a;
    }
}

/// ε̂ from an EDM denoiser output: ε̂ = (x_σ − D(x_σ; σ))/σ (math.md §1.4 b). out, x_sigma, denoised: (d,)
pub fn eps_from_denoised(out: &mut [f64], x_sigma: &[f64], denoised: &[f64], sigma: f64) {
    for ((o, &x), &dn) in out.iter_mut().zip(x_sigma).zip(denoised) {
        *o = (x - dn) / sigma;
    }
}

/// D from an ε-predictor: D(x_σ; σ) = x_σ − σ·ε̂(x_σ/sqrt(1+σ²), −2 ln σ) (math.md §1.4 b)
/// [CDL `translate_denoiser`]. out, x_sigma, eps_hat: (d,)
pub fn denoised_from_eps(out: &mut [f64], x_sigma: &[f64], eps_hat: &[f64], sigma: f64) {
    for ((o, &x), &e) in out.iter_mut().zip(x_sigma).zip(eps_hat) {
        *o = x - sigma * e;
    }
}

/// EDM preconditioning (math.md §4.3) [EDM networks.py `EDMPrecond`; Karras et al. Table 1]:
/// D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EdmPrecond {
    /// σ_data, 0.5 for images in [−1, 1].
    pub sigma_data: f64,
}

impl Default for EdmPrecond {
    fn default() -> Self {
        Self { sigma_data: 0.5 }
    }
}

impl EdmPrecond {
    /// c_skip = σ_d²/(σ²+σ_d²).
    pub fn c_skip(&self, sigma: f64) -> f64 {
        let sd2 = self.sigma_data * self.sigma_data;
        sd2 / (sigma * sigma + sd2)
    }
    /// c_out = σσ_d/sqrt(σ²+σ_d²).
    pub fn c_out(&self, sigma: f64) -> f64 {
        sigma * self.sigma_data / (sigma * sigma + self.sigma_data * self.sigma_data).sqrt()
    }
    /// c_in = 1/sqrt(σ²+σ_d²).
    pub fn c_in(&self, sigma: f64) -> f64 {
        1.0 / (sigma * sigma + self.sigma_data * self.sigma_data).sqrt()
    }
    /// c_noise = ¼ ln σ.
    pub fn c_noise(&self, sigma: f64) -> f64 {
        0.25 * sigma.ln()
    }
    /// EDM loss weight on the x-error: λ(σ) = (σ²+σ_d²)/(σσ_d)² [EDM loss.py `EDMLoss`].
    pub fn loss_weight(&self, sigma: f64) -> f64 {
        let sd = self.sigma_data;
        (sigma * sigma + sd * sd) / (sigma * sd).powi(2)
    }
    /// The same weight on the ε-error: λ(σ)·σ² = 1 + σ²/σ_d² = 1 + e^{−α}/σ_d² (math.md §4.3 [D]).
    pub fn eps_weight(&self, alpha: f64) -> f64 {
        1.0 + (-alpha).exp() / (self.sigma_data * self.sigma_data)
    }
}

// ---------------------------------------------------------------------------------------------
// Song et al. VP-SDE and VE (math.md §1.3) [EDM loss.py `VPLoss`, `VELoss`; networks.py]

/// VP-SDE: σ(t) = sqrt(exp(½β_d t² + β_min t) − 1), t ∈ [eps_t, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VpSde {
    /// β_d = 19.9.
    pub beta_d: f64,
    /// β_min = 0.1.
    pub beta_min: f64,
    /// Smallest training time, 1e-5.
    pub eps_t: f64,
}

impl Default for VpSde {
    fn default() -> Self {
        Self { beta_d: 19.9, beta_min: 0.1, eps_t: 1e-5 }
    }
}

impl VpSde {
    /// Checks β_d > 0, β_min ≥ 0 and 0 < eps_t < 1.
    pub fn validate(&self) -> Result<()> {
        let ok = self.beta_d.is_finite()
            && self.beta_d > 0.0
            && self.beta_min.is_finite()
            && self.beta_min >= 0.0
            && self.eps_t > 0.0
            && self.eps_t < 1.0;
        if ok {
            Ok(())
        } else {
            Err(DiffusionError::Config(format!("invalid VP-SDE {self:?}")))
        }
    }
    /// ½β_d t² + β_min t = ln(1 + σ²).
    fn exponent(&self, t: f64) -> f64 {
        0.5 * self.beta_d * t * t + self.beta_min * t
    }
    /// σ(t).
    pub fn sigma(&self, t: f64) -> f64 {
        self.exponent(t).exp_m1().sqrt()
    }
    /// α(t) = −ln(exp(½β_d t² + β_min t) − 1).
    pub fn alpha(&self, t: f64) -> f64 {
        -self.exponent(t).exp_m1().ln()
    }
    /// t(σ) = (sqrt(β_min² + 2β_d ln(1+σ²)) − β_min)/β_d.
    pub fn t_of_sigma(&self, sigma: f64) -> f64 {
        self.t_of_log1p_sigma2((sigma * sigma).ln_1p())
    }
    /// t(α), using ln(1+σ²) = ln(1+e^{−α}) = softplus(−α) (stable for any α).
    pub fn t_of_alpha(&self, alpha: f64) -> f64 {
        self.t_of_log1p_sigma2(softplus(-alpha))
    }
    fn t_of_log1p_sigma2(&self, l: f64) -> f64 {
        ((self.beta_min * self.beta_min + 2.0 * self.beta_d * l).sqrt() - self.beta_min) / self.beta_d
    }
}

/// Song's VE: σ = σ_min·(σ_max/σ_min)^u, u ∈ [0, 1]; α uniform on [−2 ln σ_max, −2 ln σ_min].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VeSchedule {
    /// 0.02.
    pub sigma_min: f64,
    /// 100.
    pub sigma_max: f64,
}

impl Default for VeSchedule {
    fn default() -> Self {
        Self { sigma_min: 0.02, sigma_max: 100.0 }
    }
}

impl VeSchedule {
    /// Checks 0 < σ_min < σ_max < ∞.
    pub fn validate(&self) -> Result<()> {
        if self.sigma_min > 0.0 && self.sigma_max > self.sigma_min && self.sigma_max.is_finite() {
            Ok(())
        } else {
            Err(DiffusionError::Config(format!("invalid VE schedule {self:?}")))
        }
    }
    /// σ(u) = σ_min·(σ_max/σ_min)^u.
    pub fn sigma(&self, u: f64) -> f64 {
        self.sigma_min * (self.sigma_max / self.sigma_min).powf(u)
    }
    /// α range (lo, hi) = (−2 ln σ_max, −2 ln σ_min).
    pub fn alpha_range(&self) -> (f64, f64) {
        (alpha_of_sigma(self.sigma_max), alpha_of_sigma(self.sigma_min))
    }
}
