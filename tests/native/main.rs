//! The native integration tests, one binary (one link instead of one per file): a module per area,
//! tests named `<module>::<test>` (`cargo test --test native cli_train::`). The browser twin is
//! tests/web.rs. All modules run in one process: scratch paths are unique per call (common/cli.rs).

// Tests may unwrap: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

// ---
// Shared helpers (common/ has a CPU part for both targets), the f64 oracles, and the fuzz targets'
// contract (which installs its counting allocator as this binary's global allocator).

mod common;
#[cfg(not(target_arch = "wasm32"))]
#[path = "../../fuzz/src/lib.rs"]
mod contract;
#[cfg(not(target_arch = "wasm32"))]
#[path = "../oracle/mod.rs"]
mod oracle;

// ---
// Pure CPU tests: also compiled for wasm32 (clippy --all-targets), as when each was a binary.

mod checkpoint;
mod diffusion_closed_form;
mod diffusion_logsnr;
mod diffusion_loss;
mod diffusion_loss_head;
mod diffusion_rows;
mod diffusion_schedule;
mod eval_fd;
mod eval_metrics;
mod reference_gradcheck;
mod reference_nn_gradcheck;
mod reference_philox;
mod shaders_validate;
mod train_data;
mod train_recipe;

// ---
// Native only: the GPU, the `cdl` binary, the PyTorch mirror, files and proptest.

#[cfg(not(target_arch = "wasm32"))]
mod cli;
#[cfg(not(target_arch = "wasm32"))]
mod cli_bench;
#[cfg(not(target_arch = "wasm32"))]
mod cli_bench_quality;
#[cfg(not(target_arch = "wasm32"))]
mod cli_cifar;
#[cfg(not(target_arch = "wasm32"))]
mod cli_config;
#[cfg(not(target_arch = "wasm32"))]
mod cli_docs;
#[cfg(not(target_arch = "wasm32"))]
mod cli_outliers;
#[cfg(not(target_arch = "wasm32"))]
mod cli_sample;
#[cfg(unix)]
mod cli_sigkill;
#[cfg(unix)]
mod cli_signals;
#[cfg(not(target_arch = "wasm32"))]
mod cli_train;
#[cfg(not(target_arch = "wasm32"))]
mod diffusion_closed_form_gpu;
#[cfg(not(target_arch = "wasm32"))]
mod diffusion_sampler;
#[cfg(not(target_arch = "wasm32"))]
mod eval_nll;
#[cfg(not(target_arch = "wasm32"))]
mod eval_plot;
#[cfg(not(target_arch = "wasm32"))]
mod fuzz_regressions;
#[cfg(not(target_arch = "wasm32"))]
mod mirror_mlp;
#[cfg(not(target_arch = "wasm32"))]
mod mirror_unet;
#[cfg(not(target_arch = "wasm32"))]
mod model_checkpoint;
#[cfg(not(target_arch = "wasm32"))]
mod model_mlp;
#[cfg(not(target_arch = "wasm32"))]
mod model_unet;
#[cfg(not(target_arch = "wasm32"))]
mod nn_attention;
#[cfg(not(target_arch = "wasm32"))]
mod nn_resblock;
#[cfg(not(target_arch = "wasm32"))]
mod ops_gpu_vs_cpu;
#[cfg(not(target_arch = "wasm32"))]
mod prop_parsers;
#[cfg(not(target_arch = "wasm32"))]
mod reference_train;
#[cfg(not(target_arch = "wasm32"))]
mod ship_weights;
#[cfg(not(target_arch = "wasm32"))]
mod train_images;
#[cfg(not(target_arch = "wasm32"))]
mod train_loop;
#[cfg(not(target_arch = "wasm32"))]
mod train_run;
