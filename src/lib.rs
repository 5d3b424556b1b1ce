//! CDL: diffusion models trained with the Contrastive Diffusion Loss on WebGPU, natively and in
//! the browser, from one set of WGSL shaders. Layers depend only on those above them (listed
//! below); `reference` holds the plain CPU oracles that the op checks and the tests use.

// Layers, each depending only on those above it: `philox` (the counter-based generator that host
// and shaders share), `diffusion` (pure f64 math of noise levels, losses as weighted rows, the row
// table the GPU step reads, likelihoods, samplers; no wgpu), `gpu` (device, buffers, pipelines,
// dispatch, readback), `ops` (the op registry, launchers and their shapes), `nn` (layers with
// parameters: forward and backward as prepared dispatches), `model` (the MLP and the UNet),
// `train` (the training step and loop, data, checkpoints), `eval` (metrics, the GPU denoiser,
// plots); `text` holds the one-line message helper every error type uses. `reference` is used
// only by the op checks (`ops::*::check`) and the tests; it takes the contract types (shapes, row
// specs, Adam's configuration) from the layers above.
pub mod diffusion;
pub mod eval;
pub mod gpu;
pub mod model;
pub mod nn;
pub mod ops;
pub mod philox;
pub mod reference;
pub mod text;
pub mod train;

#[cfg(target_arch = "wasm32")]
pub mod web;
