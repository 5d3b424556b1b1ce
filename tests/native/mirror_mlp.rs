//! The MLP on the GPU against its PyTorch mirror (tools/mirror.py), llm.c's `test_gpt2.c` way:
//! the same initial parameters (written as a CDL checkpoint) and the same inputs go to both; we
//! compare the output, the MSE loss, the input gradient, every parameter gradient, the loss after
//! each of 5 Adam steps and the final parameters, printing one OK / NOT OK line per tensor.
//!
//! PyTorch runs as a child process: `$CDL_PYTHON tools/mirror.py mlp ...` (scripts/test makes a
//! venv with torch and sets CDL_PYTHON and REQUIRE_MIRROR=1). Without CDL_PYTHON the test prints
//! `SKIPPED: no PyTorch mirror (set CDL_PYTHON)` and passes, unless REQUIRE_MIRROR=1.
//!
//! Both sides compute in f32 with different summation orders (and torch's own kernels), so the
//! tolerances are those of f32 against f32, not against an f64 oracle; see `tolerances`.

use crate::common;
use crate::common::mirror;

use cdl::model::mlp::{Mlp, MlpConfig};
use cdl::reference::tol::{Tol, DEFAULT};
use mirror::{gpu_run, python_or_skip, run_mirror, save_params, Inputs, Report, TestDir};

const CFG: MlpConfig = MlpConfig { dim: 2, width: 24, blocks: 2, emb_dim: 16, precond: cdl::model::Precond::Edm };
const BATCH: usize = 37;
const SEED: u64 = 11;
const LR: f64 = 1e-3;
const STEPS: u32 = 5;

/// The model config as stored in `cdl.model_config`; tools/mirror.py reads these five keys.
fn model_config_json(cfg: MlpConfig) -> String {
    format!(
        r#"{{"dim":{},"width":{},"blocks":{},"emb_dim":{},"precond":"{}"}}"#,
        cfg.dim,
        cfg.width,
        cfg.blocks,
        cfg.emb_dim,
        cfg.precond.name()
    )
}

// Tolerances: f32 against f32 (GPU vs PyTorch CPU), both rounding differently.
/// Forward values (out, loss): reductions of at most W = 24 terms plus a LayerNorm; errors are a
/// few ulps of O(1) values.
const FORWARD: Tol = DEFAULT;
/// Gradients: sums over the batch of products of backward chains through two LayerNorms, where
/// cancellation makes small entries relatively noisy. Measured on lavapipe: max abs 1.2e-7,
/// max rel 1.1e-4 (on entries of ~1e-5); DEFAULT leaves two orders of magnitude for other
/// devices (FMA contraction, other reduction orders) while a wrong term is off by O(|g|).
const GRADS: Tol = DEFAULT;
/// Loss after each Adam step: the step moves each entry by lr * g / (|g| + eps) (step 1), whose
/// sensitivity to an error d in g is lr * eps * d / (|g| + eps)^2, tiny unless |g| ~ eps = 1e-8;
/// so the losses agree about as well as the first one. Measured: rel 1.2e-7. rtol 1e-5 still
/// catches a different beta2 (0.99 for 0.999 moves the 5th loss by 4.6e-5 relative).
const STEP_LOSS: Tol = Tol { atol: 1e-7, rtol: 1e-5 };
/// Final parameters after 5 steps (|update| <= lr = 1e-3 per step), by the same argument.
/// Measured: max abs 7.3e-8 on entries of O(0.1). beta2 0.99 moves them by up to 4.6e-5.
const FINAL_PARAMS: Tol = Tol { atol: 2e-6, rtol: 1e-5 };

#[test]
fn gpu_matches_pytorch_mirror() {
    let Some(python) = python_or_skip() else { return };
    let Some(gpu) = common::gpu_or_skip() else { return };
    for cfg in [CFG, MlpConfig { precond: cdl::model::Precond::Eps, ..CFG }] {
        println!("precond {}", cfg.precond.name());
        mirror_matches(&python, gpu, cfg);
    }
}

fn mirror_matches(python: &str, gpu: &cdl::gpu::Gpu, cfg: MlpConfig) {
    let model = pollster::block_on(Mlp::new(gpu, cfg, BATCH, SEED)).unwrap();
    let layout = model.params.layout.clone();
    let n_out = BATCH * cfg.dim;

    let inputs = Inputs::random(n_out, BATCH, n_out, 21);

    // The initial parameters as a checkpoint (tensor names = layout names), and the inputs.
    let dir = TestDir::new(&format!("mlp-{}", cfg.precond.name()));
    save_params(gpu, &model.params, "mlp", model_config_json(cfg), &dir);
    let shape = [BATCH, cfg.dim];
    let want = run_mirror(
        python,
        "mlp",
        &dir,
        &inputs.checkpoint("mlp-inputs", model_config_json(cfg), &shape, &shape),
        LR,
        STEPS,
    );

    // The same computation on the GPU.
    let run = gpu_run(gpu, &model, &model.dx, &inputs, LR, STEPS);

    // Compare, one line per tensor.
    let mut report = Report::new(&want);
    report.check_run(&run, &layout, FORWARD, GRADS, STEP_LOSS);
    for (name, _, p) in layout.split(&run.finals) {
        report.check(&format!("final.{name}"), &p, FINAL_PARAMS);
    }
    println!("losses (GPU): {:?}", run.losses);
    report.finish(model.param_count());
}
