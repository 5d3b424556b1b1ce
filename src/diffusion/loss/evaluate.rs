//! The weighted-MSE head in f64 (math.md §3.3, §9b): row errors E_r → the loss, the CDL logits f_k
//! and the per-row gradient weights dL/dE_r, plus the per-row error and its backward. The GPU head
//! (`shaders/loss.wgsl`, `ops::loss`) computes the same; tests/native/diffusion_loss_head.rs checks it.

use super::RowPlan;
use crate::diffusion::logsnr::{sigmoid, softplus};
use crate::diffusion::{DiffusionError, Result};

/// E_r = ||target − scale·ε̂||². target, eps_hat: (d,)
pub fn row_error(target: &[f64], eps_hat: &[f64], scale: f64) -> f64 {
    target.iter().zip(eps_hat).map(|(t, e)| (t - scale * e) * (t - scale * e)).sum()
}

/// Backward of the weighted-MSE head: deps_hat = dL/dE_r·(−2·scale)·(target − scale·ε̂) (math.md §9b).
/// deps_hat, target, eps_hat: (d,)
pub fn row_error_backward(deps_hat: &mut [f64], dl_de: f64, target: &[f64], eps_hat: &[f64], scale: f64) {
    for ((g, t), e) in deps_hat.iter_mut().zip(target).zip(eps_hat) {
        *g = dl_de * (-2.0 * scale) * (t - scale * e);
    }
}

/// Everything the host learns from one step's row errors.
#[derive(Clone, Debug, PartialEq)]
pub struct StepLoss {
    /// L = λ_std·L_std + λ_cdl·L_cdl.
    pub total: f64,
    /// L_std (before λ_std), including the control-variate constants.
    pub std: f64,
    /// L_cdl (before λ_cdl) = norm·Σ_k ℓ_k.
    pub cdl: f64,
    /// f_k ≈ log p(y_k) − log p_ζ(y_k), nats. (K,)
    pub logits: Vec<f64>,
    /// ℓ_k = softplus(−label_k·f_k). (K,)
    pub anchor_losses: Vec<f64>,
    /// dL/dE_r, detached (may be negative for p-rows or q-rows). (R,)
    pub row_weights: Vec<f64>,
}

/// dℓ/df for ℓ = softplus(−y·f): −y·s(−y·f) (stable for any f).
fn dsoftplus(label: f64, f: f64) -> f64 {
    -label * sigmoid(-label * f)
}

/// Turns per-row squared errors E_r (in the plan's row order) into the loss, the logits and the
/// per-row gradient weights dL/dE_r (math.md §9b):
/// - std rows: λ_std·weight_r;
/// - with g_k = λ_cdl·norm·dℓ_k/df_k = −λ_cdl·norm·y_k·s(−y_k f_k):
///   q-rows g_k·weight_r, p-rows −g_k·weight_r.
///
/// Non-finite inputs or results return `NonFinite` (never a panic, never a NaN weight).
/// errors: (R,)
pub fn evaluate(plan: &RowPlan, errors: &[f64]) -> Result<StepLoss> {
    let r_n = plan.rows.len();
    if errors.len() != r_n {
        return Err(DiffusionError::Shape(format!("evaluate: {} row errors for a plan of {r_n} rows", errors.len())));
    }
    if let Some(r) = errors.iter().position(|e| !e.is_finite()) {
        return Err(DiffusionError::NonFinite(format!("row {r} error E = {}", errors[r])));
    }
    let mut row_weights = vec![0.0; r_n];
    let mut l_std = plan.std_const;
    for r in 0..plan.n_std {
        let row = &plan.rows[r];
        l_std += row.weight * (errors[r] - row.offset);
        row_weights[r] = plan.lambda_std * row.weight;
    }
    let (k_n, m_n) = (plan.anchors.len(), plan.points);
    let (mut logits, mut anchor_losses) = (Vec::with_capacity(k_n), Vec::with_capacity(k_n));
    let km = k_n * m_n;
    if plan.n_std + 2 * km != r_n {
        return Err(DiffusionError::Shape(format!(
            "evaluate: plan has {r_n} rows, expected S + 2KM = {}",
            plan.n_std + 2 * km
        )));
    }
    let mut l_cdl = 0.0;
    for (k, an) in plan.anchors.iter().enumerate() {
        let mut f = 0.0;
        for m in 0..m_n {
            let (p, q) = (plan.p_row(k, m), plan.p_row(k, m) + km);
            let (rp, rq) = (&plan.rows[p], &plan.rows[q]);
            f += rq.weight * (errors[q] - rq.offset) - rp.weight * (errors[p] - rp.offset);
        }
        if !f.is_finite() {
            return Err(DiffusionError::NonFinite(format!("anchor {k} logit f = {f}")));
        }
        let ell = softplus(-an.label * f);
        let g = plan.lambda_cdl * plan.cdl_norm * dsoftplus(an.label, f);
        for m in 0..m_n {
            let (p, q) = (plan.p_row(k, m), plan.p_row(k, m) + km);
            row_weights[q] = g * plan.rows[q].weight;
            row_weights[p] = -g * plan.rows[p].weight;
        }
        l_cdl += ell;
        logits.push(f);
        anchor_losses.push(ell);
    }
    l_cdl *= plan.cdl_norm;
    let total = plan.lambda_std * l_std + plan.lambda_cdl * l_cdl;
    if !total.is_finite() {
        return Err(DiffusionError::NonFinite(format!("total loss = {total}")));
    }
    if let Some(r) = row_weights.iter().position(|w| !w.is_finite()) {
        return Err(DiffusionError::NonFinite(format!("row {r} weight = {}", row_weights[r])));
    }
    Ok(StepLoss { total, std: l_std, cdl: l_cdl, logits, anchor_losses, row_weights })
}
