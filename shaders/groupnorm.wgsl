// Group normalisation with a per-channel affine (Wu & He 2018), forward and backward.
//
// x is (B, C, H, W) with C split into G contiguous groups, so group (b, g) is the contiguous
// slice [(b * G + g) * N, +N) with N = (C / G) * H * W. Forward and input backward run one
// workgroup per (b, g): each thread accumulates a strided slice in f32, then a tree in workgroup
// memory halves WG partials to one. The forward is two-pass (mean, then the centred sum of
// squares) to avoid the cancellation of E[x^2] - mean^2. The parameter backward runs one
// workgroup per channel and reduces over B * H * W in a fixed order: deterministic, no atomics.
//
// Saved by groupnorm_fwd for backward: mean and rstd = 1 / sqrt(var + eps) per (B, G); the
// backward recomputes xhat = (x - mean) * rstd from x instead of keeping a normalised copy.
// Overwritten: out, mean, rstd (forward), dx. Accumulated (+=): dgamma, dbeta.
//
// Bindings (group 0, inputs first, outputs last):
//   groupnorm_fwd:         x, gamma, beta (read); out, mean_out, rstd_out (write)
//   groupnorm_bwd_input:   x, gamma, dout, mean, rstd (read); dx (write)
//   groupnorm_bwd_params:  x, pdout, pmean, prstd (read); dgamma, dbeta (read_write, +=)
// Shapes: x, out, dout, dx (B, C, H, W); gamma, beta, dgamma, dbeta (C,); mean, rstd (B, G).
// Group 1: Params. Params and the workgroup sizes WG, WG_ROWS are declared in ops/groupnorm.rs.

@group(1) @binding(0) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> x: array<f32>;

@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd_out: array<f32>;

@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read> rstd: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

@group(0) @binding(1) var<storage, read> pdout: array<f32>;
@group(0) @binding(2) var<storage, read> pmean: array<f32>;
@group(0) @binding(3) var<storage, read> prstd: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbeta: array<f32>;

var<workgroup> partial: array<vec2<f32>, WG>;

// Tree-reduces two sums at once and returns the totals (valid in every thread). The trailing
// barrier lets the caller reduce again without racing thread 0's next write against reads of
// partial[0].
fn tree_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { partial[lid] = partial[lid] + partial[lid + s]; }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// Elements per group: (C / G) * H * W.
fn group_len() -> u32 {
    return p.c / p.g * p.hw;
}

// Channel of the i-th element of group g.
fn channel(g: u32, i: u32) -> u32 {
    return g * (p.c / p.g) + i / p.hw;
}

// --- forward -------------------------------------------------------------------------------------

@compute @workgroup_size(WG)
fn groupnorm_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let bg = workgroup_linear(wid, nwg);
    let live = bg < p.b * p.g;
    let n = group_len();
    let base = bg * n;
    let inv_n = 1.0 / f32(n);

    var acc = 0.0;
    if (live) {
        for (var i = lid; i < n; i = i + WG) { acc = acc + x[base + i]; }
    }
    let mu = tree_sum2(lid, vec2<f32>(acc, 0.0)).x * inv_n;

    acc = 0.0;
    if (live) {
        for (var i = lid; i < n; i = i + WG) {
            let d = x[base + i] - mu;
            acc = acc + d * d;
        }
    }
    let r = inverseSqrt(tree_sum2(lid, vec2<f32>(acc, 0.0)).x * inv_n + p.eps);

    if (live) {
        let g = bg % p.g;
        for (var i = lid; i < n; i = i + WG) {
            let c = channel(g, i);
            out[base + i] = gamma[c] * (x[base + i] - mu) * r + beta[c];
        }
        if (lid == 0u) {
            mean_out[bg] = mu;
            rstd_out[bg] = r;
        }
    }
}

// --- backward ------------------------------------------------------------------------------------

// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout * gamma.
@compute @workgroup_size(WG)
fn groupnorm_bwd_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let bg = workgroup_linear(wid, nwg);
    let live = bg < p.b * p.g;
    let n = group_len();
    let base = bg * n;
    let g = bg % p.g;
    var mu = 0.0;
    var r = 0.0;
    var acc = vec2<f32>(0.0, 0.0);
    if (live) {
        mu = mean[bg];
        r = rstd[bg];
        for (var i = lid; i < n; i = i + WG) {
            let dxhat = dout[base + i] * gamma[channel(g, i)];
            acc = acc + vec2<f32>(dxhat, dxhat * (x[base + i] - mu) * r);
        }
    }
    let m = tree_sum2(lid, acc) / f32(n);
    if (live) {
        for (var i = lid; i < n; i = i + WG) {
            let dxhat = dout[base + i] * gamma[channel(g, i)];
            dx[base + i] = r * (dxhat - m.x - (x[base + i] - mu) * r * m.y);
        }
    }
}

// dgamma[c] += sum_{b, hw} dout * xhat, dbeta[c] += sum_{b, hw} dout; one workgroup per channel.
@compute @workgroup_size(WG)
fn groupnorm_bwd_params(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let c = workgroup_linear(wid, nwg);
    let live = c < p.c;
    let gi = c / (p.c / p.g);
    var acc = vec2<f32>(0.0, 0.0);
    if (live) {
        let total = p.b * p.hw;
        for (var i = lid; i < total; i = i + WG) {
            let b = i / p.hw;
            let k = (b * p.c + c) * p.hw + i % p.hw;
            let bg = b * p.g + gi;
            let d = pdout[k];
            acc = acc + vec2<f32>(d * (x[k] - pmean[bg]) * prstd[bg], d);
        }
    }
    let s = tree_sum2(lid, acc);
    if (live && lid == 0u) {
        dgamma[c] = dgamma[c] + s.x;
        dbeta[c] = dbeta[c] + s.y;
    }
}

// --- short groups --------------------------------------------------------------------------------
// When a group has at most ROWS_MAX elements (LayerNorm over an MLP row: N = width), a WG-thread
// workgroup per group spends its time in barriers. These entries give each group (or, for the
// parameter gradients, each channel) one invocation that sums sequentially, WG_ROWS per workgroup.
// Same bindings, same formulas, same outputs as the entries above.

@compute @workgroup_size(WG_ROWS)
fn groupnorm_fwd_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let bg = workgroup_linear(wid, nwg) * WG_ROWS + lid;
    if (bg >= p.b * p.g) { return; }
    let n = group_len();
    let base = bg * n;
    let inv_n = 1.0 / f32(n);
    var acc = 0.0;
    for (var i = 0u; i < n; i = i + 1u) { acc = acc + x[base + i]; }
    let mu = acc * inv_n;
    acc = 0.0;
    for (var i = 0u; i < n; i = i + 1u) {
        let d = x[base + i] - mu;
        acc = acc + d * d;
    }
    let r = inverseSqrt(acc * inv_n + p.eps);
    let g = bg % p.g;
    for (var i = 0u; i < n; i = i + 1u) {
        let c = channel(g, i);
        out[base + i] = gamma[c] * (x[base + i] - mu) * r + beta[c];
    }
    mean_out[bg] = mu;
    rstd_out[bg] = r;
}

@compute @workgroup_size(WG_ROWS)
fn groupnorm_bwd_input_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let bg = workgroup_linear(wid, nwg) * WG_ROWS + lid;
    if (bg >= p.b * p.g) { return; }
    let n = group_len();
    let base = bg * n;
    let g = bg % p.g;
    let mu = mean[bg];
    let r = rstd[bg];
    var acc = vec2<f32>(0.0, 0.0);
    for (var i = 0u; i < n; i = i + 1u) {
        let dxhat = dout[base + i] * gamma[channel(g, i)];
        acc = acc + vec2<f32>(dxhat, dxhat * (x[base + i] - mu) * r);
    }
    let m = acc / f32(n);
    for (var i = 0u; i < n; i = i + 1u) {
        let dxhat = dout[base + i] * gamma[channel(g, i)];
        dx[base + i] = r * (dxhat - m.x - (x[base + i] - mu) * r * m.y);
    }
}

@compute @workgroup_size(WG_ROWS)
fn groupnorm_bwd_params_cols(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let c = workgroup_linear(wid, nwg) * WG_ROWS + lid;
    if (c >= p.c) { return; }
    let gi = c / (p.c / p.g);
    var acc = vec2<f32>(0.0, 0.0);
    for (var b = 0u; b < p.b; b = b + 1u) {
        let bg = b * p.g + gi;
        let m = pmean[bg];
        let r = prstd[bg];
        for (var s = 0u; s < p.hw; s = s + 1u) {
            let k = (b * p.c + c) * p.hw + s;
            let d = pdout[k];
            acc = acc + vec2<f32>(d * (x[k] - m) * r, d);
        }
    }
    dgamma[c] = dgamma[c] + acc.x;
    dbeta[c] = dbeta[c] + acc.y;
}
