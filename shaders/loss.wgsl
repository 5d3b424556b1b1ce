// The loss head of a training step over rows (math.md §9b): per-row squared errors, the standard
// loss, CDL logits and softplus losses, the per-row gradient weights dL/dE_r, and the gradient at
// the network outputs; checked against src/reference/loss.rs. Rows in diffusion::loss::RowPlan's
// order. All outputs overwritten; no loss value needs a blocking readback (they land in `stats`).

// Bindings (group 0, inputs first, outputs last):
//   row_err:   pred, want, scale, errors
//   loss_head: errors_in, weight, offset, labels, row_weights, logits, anchor_losses, stats
//   loss_grad: pred, want, scale, row_weights_in, dpred
// Group 1: Params. Params and the workgroup size WG are declared in ops/loss.rs.

@group(1) @binding(0) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> pred: array<f32>;
@group(0) @binding(1) var<storage, read> want: array<f32>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read_write> errors: array<f32>;

@group(0) @binding(0) var<storage, read> errors_in: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> offset: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_weights: array<f32>;
@group(0) @binding(5) var<storage, read_write> logits: array<f32>;
@group(0) @binding(6) var<storage, read_write> anchor_losses: array<f32>;
@group(0) @binding(7) var<storage, read_write> stats: array<f32>;

@group(0) @binding(3) var<storage, read> row_weights_in: array<f32>;
@group(0) @binding(4) var<storage, read_write> dpred: array<f32>;

// errors[r] = sum_i (want - scale[r] pred)^2, one workgroup per row. Per-row constants (scale,
// weight, offset) and the anchor labels are computed on the host in f64 and uploaded as f32.
@compute @workgroup_size(WG)
fn row_err(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let r = workgroup_linear(id);
    var acc = 0.0;
    if (r < p.rows) {
        let s = scale[r];
        for (var i = r * p.n + lid; i < (r + 1u) * p.n; i = i + WG) {
            let d = want[i] - s * pred[i];
            acc = acc + d * d;
        }
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u && r < p.rows) { errors[r] = total; }
}

// Infinite or NaN, from the bits (WGSL has no isnan; x != x may be folded away).
fn non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

// log(1 + e^x) without overflow (WGSL has no log1p: for |x| > 16 the log term is below f32's
// resolution of the max(x, 0) term anyway).
fn softplus(x: f32) -> f32 {
    return max(x, 0.0) + log(1.0 + exp(-abs(x)));
}

// row_weights, logits, anchor_losses, stats = [total, std, cdl, non-finite count]: one workgroup
// for the whole step (S + K threads of work, K anchors in parallel).
@compute @workgroup_size(WG)
fn loss_head(id: Grid, @builtin(local_invocation_index) lid: u32) {
    var bad = 0.0;
    for (var r = lid; r < p.rows; r = r + WG) {
        if (non_finite(errors_in[r])) { bad = bad + 1.0; }
    }
    // Standard rows: constant weights.
    var acc = 0.0;
    for (var r = lid; r < p.n_std; r = r + WG) {
        acc = acc + weight[r] * (errors_in[r] - offset[r]);
        row_weights[r] = p.lambda_std * weight[r];
    }
    let l_std = p.std_const + tree_sum(lid, acc);
    // CDL: one invocation per anchor sums its M points in order, so f_k is deterministic.
    let km = p.anchors * p.points;
    var ell_acc = 0.0;
    for (var k = lid; k < p.anchors; k = k + WG) {
        var f = 0.0;
        for (var m = 0u; m < p.points; m = m + 1u) {
            let pr = p.n_std + k * p.points + m;
            let qr = pr + km;
            f = f + weight[qr] * (errors_in[qr] - offset[qr]) - weight[pr] * (errors_in[pr] - offset[pr]);
        }
        let s = labels[k];
        let ell = softplus(-s * f);
        let g = p.lambda_cdl * p.cdl_norm * (-s * sigmoid(-s * f));
        for (var m = 0u; m < p.points; m = m + 1u) {
            let pr = p.n_std + k * p.points + m;
            row_weights[pr + km] = g * weight[pr + km];
            row_weights[pr] = -g * weight[pr];
        }
        logits[k] = f;
        anchor_losses[k] = ell;
        if (non_finite(f)) { bad = bad + 1.0; }
        ell_acc = ell_acc + ell;
    }
    let l_cdl = tree_sum(lid, ell_acc) * p.cdl_norm;
    let n_bad = tree_sum(lid, bad);
    if (lid == 0u) {
        stats[0] = p.lambda_std * l_std + p.lambda_cdl * l_cdl;
        stats[1] = l_std;
        stats[2] = l_cdl;
        stats[3] = n_bad;
    }
}

// dpred = row_weights[r] (-2 scale[r]) (want - scale[r] pred), one invocation per element.
@compute @workgroup_size(WG)
fn loss_grad(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i < p.rows * p.n) {
        let r = i / p.n;
        let s = scale[r];
        dpred[i] = row_weights_in[r] * (-2.0 * s) * (want[i] - s * pred[i]);
    }
}
