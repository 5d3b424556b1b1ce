//! CDL: diffusion models trained with the Contrastive Diffusion Loss on WebGPU, natively and in
//! the browser, from one set of WGSL shaders.
//!
//! Layers, each depending only on those above it: `reference` (CPU oracles, depends on nothing),
//! `gpu` (device, buffers, pipelines, dispatch, readback), `ops` (the op registry and launchers),
//! `nn` (layers with parameters: forward and backward as prepared dispatches), `model` (the MLP),
//! `diffusion` (pure f64 math of noise levels, losses as weighted rows and likelihoods; no wgpu),
//! `train` (the training step and loop, data, checkpoints), `eval` (metrics, the GPU denoiser,
//! plots); `text` holds the one-line message helper every error type uses.

pub mod diffusion;
pub mod eval;
pub mod gpu;
pub mod model;
pub mod nn;
pub mod ops;
pub mod reference;
pub mod text;
pub mod train;

#[cfg(target_arch = "wasm32")]
pub mod web;
