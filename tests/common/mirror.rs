//! Shared helpers of the PyTorch mirror tests (tests/mirror_*.rs): the CDL_PYTHON / REQUIRE_MIRROR
//! skip rule, a scratch directory, running `tools/mirror.py <model>`, and the OK / NOT OK report.
//! Included with `#[path = "common/mirror.rs"] mod mirror;`.

#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cdl::reference::tol::{compare, Tol};
use cdl::train::checkpoint::Checkpoint;

/// The mirror's Python, or `None` (with the SKIPPED line) when CDL_PYTHON is unset; with
/// REQUIRE_MIRROR=1 an unset CDL_PYTHON fails instead, so CI cannot pass by skipping.
pub fn python_or_skip() -> Option<String> {
    match std::env::var("CDL_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            let required = std::env::var("REQUIRE_MIRROR").is_ok_and(|v| v == "1");
            assert!(!required, "REQUIRE_MIRROR=1 but CDL_PYTHON is not set");
            println!("SKIPPED: no PyTorch mirror (set CDL_PYTHON)");
            None
        }
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("cdl-mirror-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `python tools/mirror.py <model> ...`, echoing its output; panics on failure.
pub fn run_mirror(python: &str, model: &str, ckpt: &Path, inputs: &Path, out: &Path, lr: f64, steps: u32) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/mirror.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(model)
        .arg("--checkpoint")
        .arg(ckpt)
        .arg("--inputs")
        .arg(inputs)
        .arg("--out")
        .arg(out)
        .args(["--lr", &lr.to_string(), "--steps", &steps.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} {}: {e}", script.display()));
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "tools/mirror.py failed: {}", output.status);
}

/// Compares GPU tensors with the mirror's output, one OK / NOT OK line each; collects the
/// names of the mismatches.
pub struct Report<'a> {
    pub want: &'a Checkpoint,
    pub bad: Vec<String>,
}

impl<'a> Report<'a> {
    pub fn new(want: &'a Checkpoint) -> Self {
        Self { want, bad: Vec::new() }
    }

    pub fn check(&mut self, what: &str, got: &[f32], tol: Tol) {
        let Some(expected) = self.want.get(what) else {
            println!("NOT OK {what}: missing from the mirror's output");
            self.bad.push(what.to_string());
            return;
        };
        let expected = expected.data.clone();
        self.check_against(what, got, &expected, tol);
    }

    /// As `check`, against `expected` given by the caller (a subset of a mirror tensor).
    pub fn check_against(&mut self, what: &str, got: &[f32], expected: &[f32], tol: Tol) {
        let r = compare(got, expected, tol);
        println!("{} {what}: {r}", if r.ok() { "OK    " } else { "NOT OK" });
        if !r.ok() {
            self.bad.push(what.to_string());
        }
    }

    /// The mirror's parameter count (metadata `param_count`), 0 when absent.
    pub fn torch_param_count(&self) -> usize {
        self.want.extra.get("param_count").and_then(|s| s.parse().ok()).unwrap_or(0)
    }
}

/// The MSE head on the GPU: diff = out - target, dout = 2 diff / N, loss_sum = sum(diff^2), with
/// N = `n` elements.
pub struct MseHead {
    pub dispatches: Vec<cdl::gpu::Dispatch>,
    pub loss_sum: cdl::gpu::Buffer,
}

pub async fn mse_head(
    gpu: &cdl::gpu::Gpu,
    out: &cdl::gpu::Buffer,
    dout: &cdl::gpu::Buffer,
    target: &cdl::gpu::Buffer,
    n: usize,
) -> Result<MseHead, cdl::gpu::GpuError> {
    use cdl::ops::{elementwise as ew, reduce};
    let diff = gpu.zeros("diff", n)?;
    let partials = gpu.zeros("partials", reduce::sum_sq_partials(n))?;
    let loss_sum = gpu.zeros("loss_sum", 1)?;
    let sq = reduce::sum_sq(gpu, &diff, &partials, &loss_sum, n).await?;
    let dispatches = vec![
        ew::scale(gpu, out, &diff, n, 1.0).await?,
        ew::axpy(gpu, target, &diff, n, -1.0).await?,
        ew::scale(gpu, &diff, dout, n, 2.0 / n as f32).await?,
        sq.partial,
        sq.total,
    ];
    Ok(MseHead { dispatches, loss_sum })
}

/// What the GPU side of a mirror test computes: the first forward, loss and backward, then
/// `steps` Adam steps with the loss recomputed after each.
pub struct GpuRun {
    pub loss0: f64,
    pub out: Vec<f32>,
    pub dx: Vec<f32>,
    pub grads: Vec<f32>,
    /// The loss before any step, then after each step.
    pub losses: Vec<f32>,
    pub finals: Vec<f32>,
}

/// The buffers of a model that a mirror run reads and writes.
pub struct GpuModel<'a> {
    pub params: &'a cdl::nn::Params,
    pub out: &'a cdl::gpu::Buffer,
    pub dout: &'a cdl::gpu::Buffer,
    pub dx: &'a cdl::gpu::Buffer,
    /// Submits the model's forward and, with `true`, its backward.
    pub submit: &'a dyn Fn(bool),
}

/// Runs the MSE loss against `target`, the backward and `steps` Adam steps (lr `lr`) on the GPU,
/// as tools/mirror.py does in torch. Inputs must already be written to the model.
pub fn gpu_run(gpu: &cdl::gpu::Gpu, m: &GpuModel<'_>, target: &[f32], lr: f64, steps: u32) -> GpuRun {
    use cdl::ops::optim::adam_step;
    use cdl::train::trainer::AdamConfig;
    let read = |b: &cdl::gpu::Buffer| pollster::block_on(gpu.read(b)).unwrap();
    let n_out = target.len();
    let target_buf = gpu.upload("target", target).unwrap();
    let head = pollster::block_on(mse_head(gpu, m.out, m.dout, &target_buf, n_out)).unwrap();
    let head_refs: Vec<&cdl::gpu::Dispatch> = head.dispatches.iter().collect();
    // Forward, loss head (writes dout), then forward again with the backward (the forward is
    // deterministic, so the backward sees the activations of the loss just computed).
    let step = |backward: bool| -> f64 {
        (m.submit)(false);
        gpu.run(&head_refs);
        if backward {
            (m.submit)(true);
        }
        f64::from(read(&head.loss_sum)[0]) / n_out as f64
    };
    let loss0 = step(true);
    let (out, dx, grads) = (read(m.out), read(m.dx), read(&m.params.grad));
    let flat = m.params.layout.flat_len();
    let (mm, vv) = (gpu.zeros("adam_m", flat).unwrap(), gpu.zeros("adam_v", flat).unwrap());
    let cfg = AdamConfig::adam(lr);
    let adam =
        pollster::block_on(adam_step(gpu, &m.params.grad, None, &m.params.value, &mm, &vv, flat, &cfg, 1)).unwrap();
    let mut losses = vec![loss0 as f32];
    for k in 1..=steps {
        adam.set_step(gpu, &cfg, k).unwrap();
        gpu.run(&[&adam.dispatch]);
        losses.push(step(k < steps) as f32);
    }
    let finals = read(&m.params.value);
    gpu.take_error().unwrap();
    GpuRun { loss0, out, dx, grads, losses, finals }
}
