//! Shared helpers of the PyTorch mirror tests (tests/native/mirror_*.rs): the CDL_PYTHON /
//! REQUIRE_MIRROR skip rule, running `tools/mirror.py <model>`, the OK / NOT OK report, and the
//! random FID Inception weights the Inception tests share.

use std::path::Path;
use std::process::Command;

use cdl::gpu::{Buffer, Gpu};
use cdl::model::Net;
use cdl::nn::{ParamLayout, Params};
use cdl::philox::normal_vec;
use cdl::reference::tol::{compare, Tol};
use cdl::train::checkpoint::{self, Checkpoint};

pub use super::dirs::TestDir;

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

/// Random FID Inception weights in pytorch-fid's names (`tools/inception_mirror.py make-weights`,
/// seed `INCEPTION_SEED`) and their conversion (`tools/inception_to_safetensors.py`): (the state
/// dict `.pth`, the converted `.safetensors`). Made once per test process (~30 s of PyTorch) and
/// shared by every test that needs a weights file.
pub fn inception_weights(python: &str) -> &'static (std::path::PathBuf, std::path::PathBuf) {
    static FILES: std::sync::OnceLock<(std::path::PathBuf, std::path::PathBuf)> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let dir = super::dirs::scratch("inception-weights");
        let (pth, st) = (dir.join("weights.pth"), dir.join("weights.safetensors"));
        let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools");
        let seed = INCEPTION_SEED.to_string();
        for args in [
            vec![
                tools.join("inception_mirror.py").into_os_string(),
                "make-weights".into(),
                pth.clone().into(),
                seed.into(),
            ],
            vec![tools.join("inception_to_safetensors.py").into_os_string(), pth.clone().into(), st.clone().into()],
        ] {
            let o = Command::new(python).args(&args).output().expect("run the PyTorch mirror");
            assert!(o.status.success(), "{:?} failed: {}", args, String::from_utf8_lossy(&o.stderr));
        }
        (pth, st)
    })
}

/// Seed of the shared random Inception weights.
pub const INCEPTION_SEED: u64 = 3;

/// The inputs of a mirror run, from Philox `seed`: x ~ N(0, 1), t ~ 1.5 N(0, 1) (a c_noise-like
/// range), target ~ N(0, 1) (the ε the model predicts).
pub struct Inputs {
    pub x: Vec<f32>,
    pub t: Vec<f32>,
    pub target: Vec<f32>,
}

impl Inputs {
    pub fn random(x_len: usize, rows: usize, target_len: usize, seed: u64) -> Self {
        let x = normal_vec(x_len, seed, 0);
        let t = normal_vec(rows, seed, 1).iter().map(|v| 1.5 * v).collect();
        Self { x, t, target: normal_vec(target_len, seed, 2) }
    }

    /// The inputs as tools/mirror.py reads them: x of shape `x_shape`, t (rows,), target of
    /// `target_shape`.
    pub fn checkpoint(&self, arch: &str, config: String, x_shape: &[usize], target_shape: &[usize]) -> Checkpoint {
        let mut c = Checkpoint::new(arch, config, 0);
        c.insert("x", x_shape.to_vec(), self.x.clone()).unwrap();
        c.insert("t", vec![self.t.len()], self.t.clone()).unwrap();
        c.insert("target", target_shape.to_vec(), self.target.clone()).unwrap();
        c
    }
}

/// Writes the model's current parameters as the mirror's initial weights (init.safetensors in
/// `dir`): a checkpoint of `arch`, tensor names = layout names.
pub fn save_params(gpu: &Gpu, params: &Params, arch: &str, config: String, dir: &TestDir) {
    let values = pollster::block_on(gpu.read(&params.value)).unwrap();
    let mut ckpt = Checkpoint::new(arch, config, 0);
    for (name, shape, data) in params.layout.split(&values) {
        ckpt.insert(name, shape, data).unwrap();
    }
    checkpoint::save(dir.path("init.safetensors"), &ckpt).unwrap();
}

/// Runs `python tools/mirror.py <model>` on the initial weights in `dir` (`save_params`) and
/// `inputs`, echoing its output; returns the mirror's output checkpoint, panics on failure.
pub fn run_mirror(python: &str, model: &str, dir: &TestDir, inputs: &Checkpoint, lr: f64, steps: u32) -> Checkpoint {
    let (inputs_path, out) = (dir.path("inputs.safetensors"), dir.path("mirror.safetensors"));
    checkpoint::save(&inputs_path, inputs).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/mirror.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(model)
        .arg("--checkpoint")
        .arg(dir.path("init.safetensors"))
        .arg("--inputs")
        .arg(&inputs_path)
        .arg("--out")
        .arg(&out)
        .args(["--lr", &lr.to_string(), "--steps", &steps.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} {}: {e}", script.display()));
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "tools/mirror.py failed: {}", output.status);
    checkpoint::load(&out).unwrap()
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

    /// The checks of a run up to its final parameters: output and loss with `forward`, grad.x
    /// and every parameter gradient with `grads`, the loss after each step with `step_loss`.
    pub fn check_run(&mut self, run: &GpuRun, layout: &ParamLayout, forward: Tol, grads: Tol, step_loss: Tol) {
        self.check("out", &run.out, forward);
        self.check("loss", &[run.loss0 as f32], forward);
        self.check("grad.x", &run.dx, grads);
        for (name, _, g) in layout.split(&run.grads) {
            self.check(&format!("grad.{name}"), &g, grads);
        }
        self.check("losses_after_steps", &run.losses, step_loss);
    }

    /// Fails on a parameter count other than the mirror's (metadata `param_count`) or any mismatch.
    pub fn finish(&self, param_count: usize) {
        let torch_count: usize = self.want.extra.get("param_count").and_then(|s| s.parse().ok()).unwrap_or(0);
        println!("parameter count: GPU {param_count} torch {torch_count}");
        assert_eq!(param_count, torch_count, "parameter counts differ");
        assert!(self.bad.is_empty(), "mismatches with the PyTorch mirror: {:?}", self.bad);
    }
}

/// The MSE head on the GPU: diff = out - target, dout = 2 diff / N, loss_sum = sum(diff^2), with
/// N = `n` elements.
pub struct MseHead {
    pub dispatches: Vec<cdl::gpu::Dispatch>,
    pub loss_sum: Buffer,
}

pub async fn mse_head(
    gpu: &Gpu,
    out: &Buffer,
    dout: &Buffer,
    target: &Buffer,
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

/// Writes x and t to `net` (whose input gradient is `dx`), runs the MSE loss against the target,
/// the backward and `steps` Adam steps (lr `lr`) on the GPU, as tools/mirror.py does in torch.
pub fn gpu_run(gpu: &Gpu, net: &dyn Net, dx: &Buffer, inputs: &Inputs, lr: f64, steps: u32) -> GpuRun {
    use cdl::ops::optim::adam_step;
    use cdl::train::trainer::AdamConfig;
    let read = |b: &Buffer| pollster::block_on(gpu.read(b)).unwrap();
    gpu.write(net.input(), &inputs.x);
    gpu.write(net.noise_input(), &inputs.t);
    let params = net.params();
    let (forward, backward) = net.dispatches();
    let submit = |backward_too: bool| cdl::model::submit(gpu, params, forward, backward_too.then_some(backward));
    let n_out = inputs.target.len();
    let target_buf = gpu.upload("target", &inputs.target).unwrap();
    let head = pollster::block_on(mse_head(gpu, net.output(), net.output_grad(), &target_buf, n_out)).unwrap();
    let head_refs: Vec<&cdl::gpu::Dispatch> = head.dispatches.iter().collect();
    // Forward, loss head (writes dout), then forward again with the backward (the forward is
    // deterministic, so the backward sees the activations of the loss just computed).
    let step = |backward: bool| -> f64 {
        submit(false);
        gpu.run(&head_refs);
        if backward {
            submit(true);
        }
        f64::from(read(&head.loss_sum)[0]) / n_out as f64
    };
    let loss0 = step(true);
    let (out, dx, grads) = (read(net.output()), read(dx), read(&params.grad));
    let flat = params.layout.flat_len();
    let (mm, vv) = (gpu.zeros("adam_m", flat).unwrap(), gpu.zeros("adam_v", flat).unwrap());
    let cfg = AdamConfig::adam(lr);
    let adam = pollster::block_on(adam_step(gpu, &params.grad, None, &params.value, &mm, &vv, flat, &cfg, 1)).unwrap();
    let mut losses = vec![loss0 as f32];
    for k in 1..=steps {
        adam.set_step(gpu, &cfg, k).unwrap();
        gpu.run(&[&adam.dispatch]);
        losses.push(step(k < steps) as f32);
    }
    let finals = read(&params.value);
    gpu.take_error().unwrap();
    GpuRun { loss0, out, dx, grads, losses, finals }
}
