//! CPU reference of the loss head of a training step over rows (math.md §9b): per-row squared
//! errors, the standard loss, the CDL logits and softplus losses, the per-row gradient weights
//! dL/dE_r, and the gradient at the network outputs. Rows in `diffusion::loss::RowPlan`'s order.
//! Mirrors `diffusion::loss::evaluate` without depending on it (tests/native/diffusion_loss_head.rs
//! checks that they agree). Outputs are overwritten.

use super::Float;
/// The oracle takes the host's own loss-head sizes.
pub use crate::diffusion::rows::LossHead;

/// The loss values of a step: [total, std, cdl].
pub type Totals<T> = [T; 3];

/// errors[r] = sum_i (target[r, i] - scale[r] pred[r, i])^2. errors, scale: (R,); pred, target: (R, N)
pub fn row_err<T: Float>(errors: &mut [T], pred: &[T], target: &[T], scale: &[T], n: usize) {
    for (r, e) in errors.iter_mut().enumerate() {
        let mut acc = T::zero();
        for i in r * n..(r + 1) * n {
            let d = target[i] - scale[r] * pred[i];
            acc = acc + d * d;
        }
        *e = acc;
    }
}

/// softplus(x) = log(1 + e^x), without overflow.
pub fn softplus<T: Float>(x: T) -> T {
    x.max(T::zero()) + (-x.abs()).exp().ln_1p()
}

/// Losses and row weights from the row errors. Returns [total, std, cdl] and writes
/// row_weights (R,) = dL/dE_r, logits (K,) = f_k, anchor_losses (K,) = softplus(-label_k f_k).
/// errors, weight, offset, row_weights: (R,); labels, logits, anchor_losses: (K,)
#[allow(clippy::too_many_arguments)]
pub fn loss_head<T: Float>(
    row_weights: &mut [T],
    logits: &mut [T],
    anchor_losses: &mut [T],
    errors: &[T],
    weight: &[T],
    offset: &[T],
    labels: &[T],
    h: LossHead<T>,
) -> Totals<T> {
    let mut l_std = h.std_const;
    for r in 0..h.n_std {
        l_std = l_std + weight[r] * (errors[r] - offset[r]);
        row_weights[r] = h.lambda_std * weight[r];
    }
    let km = h.anchors * h.points;
    let mut l_cdl = T::zero();
    for k in 0..h.anchors {
        let mut f = T::zero();
        for m in 0..h.points {
            let p = h.n_std + k * h.points + m;
            let q = p + km;
            f = f + weight[q] * (errors[q] - offset[q]) - weight[p] * (errors[p] - offset[p]);
        }
        let s = labels[k];
        let ell = softplus(-s * f);
        // d softplus(-s f) / d f = -s sigmoid(-s f)
        let g = h.lambda_cdl * h.cdl_norm * (-s * sigmoid(-s * f));
        for m in 0..h.points {
            let p = h.n_std + k * h.points + m;
            row_weights[p + km] = g * weight[p + km];
            row_weights[p] = -g * weight[p];
        }
        logits[k] = f;
        anchor_losses[k] = ell;
        l_cdl = l_cdl + ell;
    }
    l_cdl = l_cdl * h.cdl_norm;
    [h.lambda_std * l_std + h.lambda_cdl * l_cdl, l_std, l_cdl]
}

fn sigmoid<T: Float>(x: T) -> T {
    super::elementwise::sigmoid(x)
}

/// The gradient at the network outputs: dpred[r, i] = row_weights[r] (-2 scale[r])
/// (target[r, i] - scale[r] pred[r, i]). dpred, pred, target: (R, N); row_weights, scale: (R,)
pub fn loss_grad<T: Float>(dpred: &mut [T], pred: &[T], target: &[T], scale: &[T], row_weights: &[T], n: usize) {
    let two = T::one() + T::one();
    for (i, d) in dpred.iter_mut().enumerate() {
        let r = i / n;
        *d = row_weights[r] * (-two * scale[r]) * (target[i] - scale[r] * pred[i]);
    }
}
