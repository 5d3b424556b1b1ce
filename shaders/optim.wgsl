// Optimizer updates over flat f32 arrays: Adam / AdamW, EMA of weights, and the global-norm
// clipping factor; checked against src/reference/optim.rs (PyTorch 2.x `_single_tensor_adam`
// and `clip_grad_norm_` semantics). In place: param, m, v (adam_step) and ema (ema_update).
// Overwritten: scale (clip_scale). A clipped step needs no host readback.

// Bindings (group 0, inputs first, outputs last):
//   adam_step:   grad (read), grad_scale (read, 1 element), param, m, v (read_write)
//   ema_update:  param (read), ema (read_write)
//   clip_scale:  sum_sq (read), scale (read_write)
// Group 1: AdamParams / EmaParams / ClipParams (one per entry point, same slot). The three
// structs and the workgroup size WG are declared in ops/optim.rs.

@group(1) @binding(0) var<uniform> pa: AdamParams;
@group(1) @binding(0) var<uniform> pe: EmaParams;
@group(1) @binding(0) var<uniform> pc: ClipParams;

@group(0) @binding(0) var<storage, read> grad: array<f32>;
@group(0) @binding(1) var<storage, read> grad_scale: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> ema: array<f32>;

@group(0) @binding(0) var<storage, read> sum_sq: array<f32>;
@group(0) @binding(1) var<storage, read_write> scale: array<f32>;

// clip_coef's guard against a zero norm (torch clip_grad_norm_ adds 1e-6 to the norm).
const CLIP_EPS: f32 = 1e-6;

// Every per-step scalar (bias corrections, step size, decay factors) is computed on the host in
// f64 by reference::optim::adam_step_scalars and arrives here as an f32 uniform, so the kernel
// repeats `adam_step::<f32>` operation for operation:
//   g     = grad * grad_scale + grad_decay * param   (grad_decay = wd for Adam's L2, 0 for AdamW)
//   q     = param * param_scale                      (param_scale = 1 - lr wd for AdamW, 1 for Adam)
//   m     = m + (1 - beta1) (g - m)                  (torch `exp_avg.lerp_(g, 1 - beta1)`)
//   v     = beta2 v + (1 - beta2) g g
//   param = q - step_size m / (sqrt(v) / sqrt(1 - beta2^t) + eps),  step_size = lr / (1 - beta1^t)
// grad_scale is clip_scale's output (a storage buffer, so clipping needs no host readback) or 1
// when the dispatch is not scaled. Clipping never rewrites `grad`: scaling it inside the update
// gives the same g as torch's in-place `grad.mul_(clip_coef)` followed by the step.
@compute @workgroup_size(WG)
fn adam_step(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= pa.n) { return; }
    var gs = 1.0;
    if (pa.scaled != 0u) { gs = grad_scale[0]; }
    let p0 = param[i];
    let g = grad[i] * gs + pa.grad_decay * p0;
    let q = p0 * pa.param_scale;
    let m1 = m[i] + pa.beta1c * (g - m[i]);
    let v1 = pa.beta2 * v[i] + pa.beta2c * g * g;
    let denom = sqrt(v1) / pa.bc2_sqrt + pa.eps;
    m[i] = m1;
    v[i] = v1;
    param[i] = q - pa.step_size * m1 / denom;
}

// ema = decay ema + (1 - decay) param, with src = param.
@compute @workgroup_size(WG)
fn ema_update(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i < pe.n) { ema[i] = pe.decay * ema[i] + pe.one_minus_decay * src[i]; }
}

// A clipped step is four dispatches, all on the GPU: reduce::sum_sq_partial, reduce::row_sum
// (sum of squares of every gradient in one flat buffer), clip_scale, adam_step.
// scale[i] = min(1, max_norm / (sqrt(sum_sq[i]) + 1e-6)); n = 1 in training. Written as the
// reference's `if coef > 1 { 1 } else { coef }` so a NaN norm yields NaN where the backend
// preserves NaN (WGSL does not promise it; min() would be free to return 1).
@compute @workgroup_size(WG)
fn clip_scale(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i < pc.n) {
        let coef = pc.max_norm / (sqrt(sum_sq[i]) + CLIP_EPS);
        scale[i] = select(coef, 1.0, coef > 1.0);
    }
}
