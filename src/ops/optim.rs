//! Launchers for `shaders/optim.wgsl`: the Adam / AdamW update, the EMA of weights and the
//! global-norm clipping factor, with PyTorch's per-step scalars (`adam_step_scalars`, f64 on the
//! host). A clipped step needs no readback: `reduce::sum_sq` -> `clip_scale` -> `adam_step`.
//! Not here: learning-rate schedules (pass the scheduled lr in `set_step`'s config), amsgrad.

use bytemuck::Zeroable;

use super::{f64s, needs, optional, prepare, run_read, CheckResult, Entry, OpSpec};
use crate::gpu::{groups_for, Buffer, Dispatch, Gpu, GpuError};
use crate::philox::normal_vec;
use crate::reference::optim as r;
use crate::reference::tol::{compare, STRICT};

/// Hyper-parameters of Adam / AdamW. `decoupled` selects AdamW's weight decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub decoupled: bool,
}

impl AdamConfig {
    /// `torch.optim.Adam(lr=lr)` defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn adam(lr: f64) -> Self {
        Self { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false }
    }

    /// `torch.optim.AdamW(lr=lr, weight_decay=weight_decay)` (PyTorch's default wd is 1e-2).
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Self { weight_decay, decoupled: true, ..Self::adam(lr) }
    }
}

/// Host-side scalars of one Adam step, in f64 (uploaded as f32 to the shader).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStepScalars {
    /// lr / (1 - beta1^t)
    pub step_size: f64,
    /// sqrt(1 - beta2^t)
    pub bias_correction2_sqrt: f64,
    /// 1 - lr * wd for AdamW, 1 for Adam.
    pub param_scale: f64,
    /// wd for Adam (added to the gradient), 0 for AdamW.
    pub grad_decay: f64,
}

/// The scalars of step `t` (1-based: the first update is t = 1).
pub fn adam_step_scalars(t: u32, cfg: &AdamConfig) -> AdamStepScalars {
    assert!(t >= 1, "adam: steps count from 1");
    let t = i32::try_from(t).unwrap_or(i32::MAX);
    let (param_scale, grad_decay) =
        if cfg.decoupled { (1.0 - cfg.lr * cfg.weight_decay, 0.0) } else { (1.0, cfg.weight_decay) };
    AdamStepScalars {
        step_size: cfg.lr / (1.0 - cfg.beta1.powi(t)),
        bias_correction2_sqrt: (1.0 - cfg.beta2.powi(t)).sqrt(),
        param_scale,
        grad_decay,
    }
}

pub const SPEC: OpSpec = OpSpec {
    name: "optim",
    shader: super::shader!("optim.wgsl"; AdamParams, EmaParams, ClipParams),
    variants: &[],
    entries: &[
        Entry {
            name: "adam_step",
            reference: "optim::adam_step, optim::clip_grad_norm",
            tol: STRICT,
            why: "the same f32 operations as adam_step::<f32> with host-f64 scalars; m/denom is \
                  scale-invariant, so the clip factor's tree-sum error barely reaches param",
        },
        Entry { name: "ema_update", reference: "optim::ema_update", tol: STRICT, why: "three roundings" },
        Entry {
            name: "clip_scale",
            reference: "optim::clip_coef",
            tol: STRICT,
            why: "sqrt and one division, each within a few ulp",
        },
    ],
    check,
};

super::constants! {
    /// Invocations per workgroup, one element each.
    override WG = 256;
}

super::uniform! {
    struct AdamParams {
        n: u32,
        /// 1: multiply grad by grad_scale[0]; 0: grad_scale is bound but not read.
        scaled: u32,
        /// 1 - beta1
        beta1c: f32,
        beta2: f32,
        /// 1 - beta2
        beta2c: f32,
        /// lr / (1 - beta1^t)
        step_size: f32,
        /// sqrt(1 - beta2^t)
        bc2_sqrt: f32,
        eps: f32,
        /// 1 - lr wd (AdamW) or 1
        param_scale: f32,
        /// wd (Adam) or 0
        grad_decay: f32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// The uniform of step `t`: every scalar rounded once from f64, as `adam_step::<f32>` does.
fn adam_params(n: usize, scaled: bool, cfg: &AdamConfig, t: u32) -> Result<AdamParams, GpuError> {
    if t == 0 {
        return Err(GpuError::Shape("adam_step: steps count from 1".to_string()));
    }
    let k = adam_step_scalars(t, cfg);
    Ok(AdamParams {
        n: n as u32,
        scaled: u32::from(scaled),
        beta1c: (1.0 - cfg.beta1) as f32,
        beta2: cfg.beta2 as f32,
        beta2c: (1.0 - cfg.beta2) as f32,
        step_size: k.step_size as f32,
        bc2_sqrt: k.bias_correction2_sqrt as f32,
        eps: cfg.eps as f32,
        param_scale: k.param_scale as f32,
        grad_decay: k.grad_decay as f32,
        ..Zeroable::zeroed()
    })
}

super::uniform! {
    struct EmaParams {
        n: u32,
        decay: f32,
        /// 1 - decay, rounded once from f64 as the reference does.
        one_minus_decay: f32,
        _pad: u32,
    }
}

impl EmaParams {
    fn new(n: usize, decay: f64) -> Self {
        Self { n: n as u32, decay: decay as f32, one_minus_decay: (1.0 - decay) as f32, _pad: 0 }
    }
}

super::uniform! {
    struct ClipParams {
        n: u32,
        max_norm: f32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// A prepared Adam / AdamW update. Its step scalars live in `dispatch.params`; `set_step`
/// rewrites them (one step per submit: queue writes land before the next submit). A training
/// loop builds it once and calls `set_step` before each submit.
#[derive(Debug)]
pub struct AdamStep {
    pub dispatch: Dispatch,
    n: usize,
    scaled: bool,
}

impl AdamStep {
    /// Writes the scalars of step `t` (1-based) for `cfg` (which may carry a scheduled lr).
    pub fn set_step(&self, gpu: &Gpu, cfg: &AdamConfig, t: u32) -> Result<(), GpuError> {
        let p = adam_params(self.n, self.scaled, cfg, t)?;
        gpu.queue.write_buffer(&self.dispatch.params, 0, bytemuck::bytes_of(&p));
        Ok(())
    }
}

/// One Adam (L2, `cfg.decoupled = false`) or AdamW update of `param`, `m`, `v` in place from
/// `grad`, at step `t`. With `grad_scale` (1 element, e.g. `clip_scale`'s output) the gradient
/// is multiplied by `grad_scale[0]` first. grad, param, m, v: (N,)
#[allow(clippy::too_many_arguments)]
pub async fn adam_step(
    gpu: &Gpu,
    grad: &Buffer,
    grad_scale: Option<&Buffer>,
    param: &Buffer,
    m: &Buffer,
    v: &Buffer,
    n: usize,
    cfg: &AdamConfig,
    t: u32,
) -> Result<AdamStep, GpuError> {
    needs("adam_step", &[("grad", grad, n), ("param", param, n), ("m", m, n), ("v", v, n)])?;
    let scale = optional(gpu, "adam_step grad_scale", grad_scale, 1)?; // scaled says which
    let p = adam_params(n, grad_scale.is_some(), cfg, t)?;
    let bufs = [grad, scale, param, m, v];
    let dispatch = prepare(gpu, &SPEC, "adam_step", &bufs, &p, groups_for(n, WG)).await?;
    Ok(AdamStep { dispatch, n, scaled: grad_scale.is_some() })
}

/// ema = decay * ema + (1 - decay) * param, in place. param, ema: (N,)
pub async fn ema_update(gpu: &Gpu, param: &Buffer, ema: &Buffer, n: usize, decay: f64) -> Result<Dispatch, GpuError> {
    needs("ema_update", &[("param", param, n), ("ema", ema, n)])?;
    let p = EmaParams::new(n, decay);
    prepare(gpu, &SPEC, "ema_update", &[param, ema], &p, groups_for(n, WG)).await
}

/// Rewrites the decay of a prepared `ema_update` over `n` elements (an EMA warm-up changes it
/// every step; the write lands before the next submit).
pub fn set_ema_decay(gpu: &Gpu, ema: &Dispatch, n: usize, decay: f64) {
    gpu.queue.write_buffer(&ema.params, 0, bytemuck::bytes_of(&EmaParams::new(n, decay)));
}

/// scale[0] = min(1, max_norm / (sqrt(sum_sq[0]) + 1e-6)): `clip_grad_norm_`'s factor from the
/// global sum of squares that `reduce::sum_sq` leaves in `sum_sq[0]`. sum_sq, scale: (1,)
pub async fn clip_scale(gpu: &Gpu, sum_sq: &Buffer, scale: &Buffer, max_norm: f32) -> Result<Dispatch, GpuError> {
    clip_scale_n(gpu, sum_sq, scale, 1, max_norm).await
}

/// `clip_scale` over `n` independent sums of squares (the check covers many values at once).
async fn clip_scale_n(
    gpu: &Gpu,
    sum_sq: &Buffer,
    scale: &Buffer,
    n: usize,
    max_norm: f32,
) -> Result<Dispatch, GpuError> {
    needs("clip_scale", &[("sum_sq", sum_sq, n), ("scale", scale, n)])?;
    let p = ClipParams { n: n as u32, max_norm, ..Zeroable::zeroed() };
    prepare(gpu, &SPEC, "clip_scale", &[sum_sq, scale], &p, groups_for(n, WG)).await
}

// --- check --------------------------------------------------------------------------------------

/// How an Adam case treats the gradient norm.
#[derive(Clone, Copy)]
enum Clip {
    /// No grad_scale bound.
    Off,
    /// sum_sq -> clip_scale -> adam_step with this max_norm.
    Norm(f32),
}

super::check_fn!(check_async);

async fn check_async(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    let mut results = Vec::new();
    let mut push = |entry: &'static str, shape: String, got: &[f32], want: &[f64]| {
        let tol = SPEC.entry(entry).map_or(STRICT, |e| e.tol);
        results.push(CheckResult { op: SPEC.name, entry, shape, tol, report: compare(got, want, tol) });
    };

    // 5003 elements: 20 workgroups, a partial last one, and two sum_sq partials. The gradient
    // norm is about sqrt(5003) ~ 71: max_norm 10 clips, 1000 does not.
    let n = 5003usize;
    let cases = [
        ("adam", AdamConfig { weight_decay: 1e-2, ..AdamConfig::adam(1e-2) }, Clip::Off),
        ("adam", AdamConfig { weight_decay: 1e-2, ..AdamConfig::adam(1e-2) }, Clip::Norm(10.0)),
        ("adam", AdamConfig { weight_decay: 1e-2, ..AdamConfig::adam(1e-2) }, Clip::Norm(1000.0)),
        ("adamw", AdamConfig::adamw(1e-2, 0.1), Clip::Off),
        ("adamw", AdamConfig::adamw(1e-2, 0.1), Clip::Norm(10.0)),
        ("adamw", AdamConfig::adamw(1e-2, 0.1), Clip::Norm(1000.0)),
    ];
    for (name, cfg, clip) in cases {
        let (got, want) = adam_case(gpu, n, &cfg, clip, 4).await?;
        let clip_name = match clip {
            Clip::Off => "no clip".to_string(),
            Clip::Norm(c) => format!("max_norm={c}"),
        };
        for (k, what) in ["param", "m", "v"].iter().enumerate() {
            push("adam_step", format!("n={n} {name} {clip_name} t=1..4 {what}"), &got[k], &want[k]);
        }
    }

    let xp = normal_vec(n, 31, 0);
    let xe = normal_vec(n, 31, 1);
    let (param, ema) = (gpu.upload("param", &xp)?, gpu.upload("ema", &xe)?);
    let decay = 0.999;
    let mut want = f64s(&xe);
    r::ema_update(&mut want, &f64s(&xp), decay);
    let d = ema_update(gpu, &param, &ema, n, decay).await?;
    push("ema_update", format!("n={n} decay={decay}"), &run_read(gpu, &d, &ema).await?, &want);

    // Sums of squares from 0 (factor 1) through max_norm^2 (just under 1) to 1e6 (clipped);
    // 300 values cover two workgroups.
    let max_norm = 5.0f32;
    let mut sq: Vec<f32> = vec![0.0, 1e-12, 1.0, 24.0, 25.0, 26.0, 1e6];
    sq.extend(normal_vec(300 - sq.len(), 31, 2).iter().map(|z| (6.0 * z) * (6.0 * z)));
    let (sum_sq, scale) = (gpu.upload("sum_sq", &sq)?, gpu.zeros("scale", sq.len())?);
    let want: Vec<f64> = f64s(&sq).iter().map(|&s| r::clip_coef(s.sqrt(), f64::from(max_norm))).collect();
    let d = clip_scale_n(gpu, &sum_sq, &scale, sq.len(), max_norm).await?;
    push("clip_scale", format!("n={} max_norm={max_norm}", sq.len()), &run_read(gpu, &d, &scale).await?, &want);
    Ok(results)
}

/// Runs `steps` Adam steps on the GPU and in the f64 reference from the same random start, with
/// a fresh gradient each step. Returns (got, want) for param, m, v, each the concatenation of
/// the state after every step (so a failing index / n is the step).
async fn adam_case(
    gpu: &Gpu,
    n: usize,
    cfg: &AdamConfig,
    clip: Clip,
    steps: u32,
) -> Result<([Vec<f32>; 3], [Vec<f64>; 3]), GpuError> {
    let (p0, m0) = (normal_vec(n, 41, 0), normal_vec(n, 41, 1));
    // v >= 0: start from squared normals scaled like a running second moment.
    let v0: Vec<f32> = normal_vec(n, 41, 2).iter().map(|z| 0.5 * z * z).collect();
    let (param, m, v) = (gpu.upload("param", &p0)?, gpu.upload("m", &m0)?, gpu.upload("v", &v0)?);
    let grad = gpu.zeros("grad", n)?;
    let partials = gpu.zeros("partials", super::reduce::sum_sq_partials(n))?;
    let (total, scale) = (gpu.zeros("sum_sq", 1)?, gpu.zeros("scale", 1)?);

    let (sumsq, clip_d) = match clip {
        Clip::Off => (None, None),
        Clip::Norm(c) => {
            let s = super::reduce::sum_sq(gpu, &grad, &partials, &total, n).await?;
            (Some(s), Some(clip_scale(gpu, &total, &scale, c).await?))
        }
    };
    let adam = adam_step(gpu, &grad, clip_d.as_ref().map(|_| &scale), &param, &m, &v, n, cfg, 1).await?;

    let (mut p64, mut m64, mut v64) = (f64s(&p0), f64s(&m0), f64s(&v0));
    let mut got: [Vec<f32>; 3] = Default::default();
    let mut want: [Vec<f64>; 3] = Default::default();
    for t in 1..=steps {
        let g = normal_vec(n, 41, 10 + t);
        gpu.write(&grad, &g);
        adam.set_step(gpu, cfg, t)?;
        match (&sumsq, &clip_d) {
            (Some(s), Some(c)) => gpu.run(&[&s.partial, &s.total, c, &adam.dispatch]),
            _ => gpu.run(&[&adam.dispatch]),
        }
        for (k, buf) in [&param, &m, &v].into_iter().enumerate() {
            got[k].extend(gpu.read(buf).await?);
        }

        let mut g64 = f64s(&g);
        if let Clip::Norm(c) = clip {
            r::clip_grad_norm(&mut [&mut g64[..]], f64::from(c));
        }
        r::adam_step(&mut p64, &mut m64, &mut v64, &g64, t, cfg);
        for (k, x) in [&p64, &m64, &v64].into_iter().enumerate() {
            want[k].extend_from_slice(x);
        }
    }
    Ok((got, want))
}
