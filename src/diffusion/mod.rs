//! Diffusion math for CDL: noise parameterisation, schedules, loss rows, likelihood. Pure f64 host
//! code, no wgpu (ARCHITECTURE.md layer `diffusion/`, STYLE.md practice 13).
//!
//! What it is: everything the host computes about noise levels and losses, following
//! `docs/math.md` section by section:
//! - `logsnr`: the VP channel indexed by log-SNR α (math.md §1.1) and the stable per-row constants
//!   sqrt(s(±α)), α′, c (math.md §2.3, §9 pitfall 1, §9b);
//! - `schedule`: DDPM linear-β and iDDPM cosine ↔ α (math.md §1.2), VP-SDE / VE / EDM σ ↔ α and the
//!   EDM preconditioning (math.md §1.3, §1.4, §4.3);
//! - `logistic`: the truncated logistic α sampler with importance weights (math.md §1.5);
//! - `rng`: host uniforms/normals in f64 on top of the counter-based Philox of `philox`;
//! - `loss`: standard losses and CDL as weighted rows: planning a step, and turning per-row squared
//!   errors into the loss, the logits f_k and the per-row gradient weights (math.md §3, §4, §9b);
//! - `rows`: the row table and loss-head sizes that the GPU training step reads (the contract
//!   between `loss` and the row and loss-head kernels);
//! - `likelihood`: the ITD pointwise −log p(x) (MC and quadrature), p_ζ, the test-set protocol and
//!   bits/dim, over a CPU `Denoiser` trait (math.md §2);
//! - `gaussian`: the analytic optimal denoiser for Gaussian data and its exact densities, the
//!   closed-form oracle for all of the above (ARCHITECTURE.md correctness ladder, step 5).
//!
//! - `sampler`: DDPM, DDIM, EDM Heun and the parallel Picard sampler over a batched denoiser
//!   (math.md §6).
//!
//! What it is not: no network, no GPU buffers. The GPU side consumes `RowPlan`
//! (f64 constants, uploaded as f32) and hands back per-row squared errors.
//!
//! Notation: d data dimension, B batch (examples), K CDL anchors, M integration points per anchor,
//! R rows of a step (R = B + 2KM when both losses are on). s(u) = 1/(1+e^{-u}) is the logistic
//! sigmoid; α is the log-SNR (not ᾱ_t, which is written `alpha_bar`).

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
