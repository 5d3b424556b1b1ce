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
mod train_dist;
mod train_recipe;
mod train_shapes;

// ---
// Native only: the GPU, the `cdl` binary, the PyTorch mirror, files and proptest.

/// Declares modules compiled only natively.
macro_rules! native {
    ($($m:ident),* $(,)?) => {
        $(#[cfg(not(target_arch = "wasm32"))]
        mod $m;)*
    };
}

#[cfg(all(unix, feature = "mpi"))]
mod cli_mpi;
#[cfg(unix)]
mod cli_sigkill;
#[cfg(unix)]
mod cli_signals;

native!(
    cli,
    cli_bench,
    cli_bench_quality,
    cli_cifar,
    cli_config,
    cli_docs,
    cli_export,
    cli_fid,
    cli_outliers,
    cli_sample,
    cli_sweep,
    cli_train,
    diffusion_closed_form_gpu,
    diffusion_sampler,
    eval_gpu_sampler,
    eval_inception,
    eval_nll,
    eval_plot,
    fuzz_regressions,
    mirror_inception,
    mirror_mlp,
    mirror_unet,
    model_checkpoint,
    model_mlp,
    model_unet,
    nn_attention,
    nn_resblock,
    ops_gpu_vs_cpu,
    ops_variants,
    prop_parsers,
    reference_train,
    shipped_assets,
    train_images,
    train_loop,
    train_run,
);
