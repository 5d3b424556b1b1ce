//! CPU reference of the optimizer updates: Adam / AdamW with bias correction, EMA of weights,
//! global gradient-norm clipping, with PyTorch semantics step for step (torch 2.x
//! `_single_tensor_adam`, `clip_grad_norm_`) so the mirror in `tools/` can compare weights. State
//! is updated in place. No backward: tested against closed forms. Not here: amsgrad, maximize,
//! learning-rate schedules (the caller passes lr per step), gradient accumulation.

use super::Float;
/// The oracle takes the op's own configuration and per-step scalars.
pub use crate::ops::optim::{adam_step_scalars, AdamConfig, AdamStepScalars};

fn cast<T: Float>(v: f64) -> T {
    T::from(v).unwrap_or_else(T::nan)
}

/// One Adam / AdamW update at step `t` (1-based), in place; `grad` is only read.
/// param, m, v: (N,) updated; grad: (N,)
///
/// Adam (Kingma & Ba 2015, Algorithm 1) at step t = 1, 2, ... with gradient g:
/// ```text
/// Adam  (`torch.optim.Adam(weight_decay=wd)`): g <- g + wd * p   (L2 penalty in the gradient)
/// AdamW (`torch.optim.AdamW(weight_decay=wd)`): p <- p * (1 - lr * wd)   (decoupled,
///        Loshchilov & Hutter 2019, applied before the moment update as PyTorch does)
/// m <- lerp(m, g, 1 - beta1) = m + (1 - beta1)(g - m)      (torch `exp_avg.lerp_`)
/// v <- beta2 v + (1 - beta2) g^2
/// p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// ```
/// The per-step scalars (bias corrections, step size, decay factor) are computed on the host in
/// f64, as PyTorch does with Python floats and as our shader receives them in a uniform; the
/// elementwise update runs in T.
pub fn adam_step<T: Float>(param: &mut [T], m: &mut [T], v: &mut [T], grad: &[T], t: u32, cfg: &AdamConfig) {
    let k = adam_step_scalars(t, cfg);
    let (b1c, b2, b2c) = (cast::<T>(1.0 - cfg.beta1), cast::<T>(cfg.beta2), cast::<T>(1.0 - cfg.beta2));
    let (step_size, bc2_sqrt, eps) = (cast::<T>(k.step_size), cast::<T>(k.bias_correction2_sqrt), cast::<T>(cfg.eps));
    let (param_scale, grad_decay) = (cast::<T>(k.param_scale), cast::<T>(k.grad_decay));
    for i in 0..param.len() {
        let g = grad[i] + grad_decay * param[i];
        let p = param[i] * param_scale;
        m[i] = m[i] + b1c * (g - m[i]);
        v[i] = b2 * v[i] + b2c * g * g;
        let denom = v[i].sqrt() / bc2_sqrt + eps;
        param[i] = p - step_size * m[i] / denom;
    }
}

// --- EMA of weights -----------------------------------------------------------------------------

/// ema = decay * ema + (1 - decay) * param, in place. ema, param: (N,)
pub fn ema_update<T: Float>(ema: &mut [T], param: &[T], decay: f64) {
    let (a, b) = (cast::<T>(decay), cast::<T>(1.0 - decay));
    for (e, &p) in ema.iter_mut().zip(param) {
        *e = a * *e + b * p;
    }
}

// --- global gradient-norm clipping --------------------------------------------------------------

/// The 2-norm of all gradients together: the norm of the per-tensor norms, as
/// `clip_grad_norm_` (equal to sqrt of the total sum of squares). grads: one (N_i,) per tensor
pub fn grad_norm<T: Float>(grads: &[&[T]]) -> T {
    grads.iter().map(|g| g.iter().fold(T::zero(), |a, &v| a + v * v).sqrt()).fold(T::zero(), |a, n| a + n * n).sqrt()
}

/// min(1, max_norm / (total_norm + 1e-6)): the factor every gradient is multiplied by. A NaN
/// norm gives NaN (PyTorch's default `error_if_nonfinite=False` propagates it too).
pub fn clip_coef<T: Float>(total_norm: T, max_norm: T) -> T {
    let coef = max_norm / (total_norm + cast(1e-6));
    if coef > T::one() {
        T::one()
    } else {
        coef
    }
}

/// Scales all gradients by `clip_coef(grad_norm, max_norm)` in place and returns the norm before
/// clipping, as `torch.nn.utils.clip_grad_norm_` (which multiplies even when the factor is 1).
/// grads: one (N_i,) per tensor, updated
pub fn clip_grad_norm<T: Float>(grads: &mut [&mut [T]], max_norm: T) -> T {
    let total = {
        let views: Vec<&[T]> = grads.iter().map(|g| &**g).collect();
        grad_norm(&views)
    };
    let coef = clip_coef(total, max_norm);
    for g in grads.iter_mut() {
        for v in g.iter_mut() {
            *v = *v * coef;
        }
    }
    total
}
