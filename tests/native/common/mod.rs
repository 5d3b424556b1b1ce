//! Shared helpers of the native tests: the Gaussian toy problem (`gaussian`, pure CPU, also
//! compiled for wasm32), scratch directories (`dirs`), the test device and oracle checks (`gpu`),
//! the `cdl` command-line helpers (`cli`) and the PyTorch mirror helpers (`mirror`).

pub mod gaussian;

#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
#[cfg(not(target_arch = "wasm32"))]
pub mod dirs;
#[cfg(not(target_arch = "wasm32"))]
mod gpu;
#[cfg(not(target_arch = "wasm32"))]
pub mod mirror;

#[cfg(not(target_arch = "wasm32"))]
pub use gpu::{gpu_or_skip, jitter, OracleCheck};
