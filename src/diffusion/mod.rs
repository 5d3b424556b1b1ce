//! Diffusion math for CDL, following docs/math.md section by section: noise parameterisation,
//! schedules, loss rows, likelihood, samplers. Pure f64 host code: no wgpu, no network, no GPU
//! buffers (ARCHITECTURE.md layer `diffusion/`, STYLE.md practice 13); the GPU consumes `RowPlan`
//! and hands back per-row squared errors. Notation: d data dimension, B batch, K CDL anchors, M
//! points per anchor, R rows of a step (B + 2KM); s(u) = 1/(1+e^{-u}); α is the log-SNR (ᾱ_t is
//! `alpha_bar`).

// math.md sections: logsnr §1.1, §2.3, §9 pitfall 1; schedule §1.2–§1.4, §4.3; logistic §1.5;
// likelihood §2; loss §3, §4, §9b; sampler §6; gaussian is the closed-form oracle of them all.
pub mod gaussian;
pub mod likelihood;
pub mod logistic;
pub mod logsnr;
pub mod loss;
pub mod rng;
pub mod rows;
pub mod sampler;
pub mod schedule;

/// Every fallible function of this module returns this error; messages are one line.
#[derive(Clone, Debug, PartialEq)]
pub enum DiffusionError {
    /// A configuration value is out of its domain (e.g. a non-positive scale, K > B).
    Config(String),
    /// Slice lengths do not match what the plan or the dimension requires.
    Shape(String),
    /// A NaN or an infinity appeared in an input or an intermediate value.
    NonFinite(String),
    /// A batched denoiser (e.g. a network on the GPU) failed to evaluate.
    Denoiser(String),
}

impl std::fmt::Display for DiffusionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(m) => write!(f, "diffusion config error: {m}"),
            Self::Shape(m) => write!(f, "diffusion shape error: {m}"),
            Self::NonFinite(m) => write!(f, "diffusion non-finite value: {m}"),
            Self::Denoiser(m) => write!(f, "denoiser failed: {m}"),
        }
    }
}

impl std::error::Error for DiffusionError {}

/// Shorthand for results of this module.
pub type Result<T> = std::result::Result<T, DiffusionError>;

/// Returns a `Config` error unless `v` is finite.
pub(crate) fn finite(name: &str, v: f64) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(DiffusionError::Config(format!("{name} = {v} is not finite")))
    }
}
