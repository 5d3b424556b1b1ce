// Group normalisation with a per-channel affine (Wu & He 2018), forward and backward; checked
// against src/reference/groupnorm.rs. Saved by groupnorm_fwd for backward: mean and rstd per
// (B, G) (xhat is recomputed from x). Overwritten: out, mean, rstd, dx. Accumulated (+=):
// dgamma, dbeta. Deterministic: fixed-order reductions, no atomics.
//
// With SILU (the `groupnorm_silu_*` registry entries) the norm and the SiLU that follows it in a
// residual block are one op: the forward writes silu(y) only, y = gamma xhat + beta, and the
// backward takes the gradient of silu(y), recomputing y from x and the saved statistics.

// Bindings (group 0, inputs first, outputs last; act_beta, act_gamma bound but read only with
// SILU):
//   groupnorm_fwd:         x, gamma, beta (read); out, mean_out, rstd_out (write)
//   groupnorm_bwd_input:   x, gamma, dout, mean, rstd (read); dx (write); act_beta (read)
//   groupnorm_bwd_params:  x, pdout, pmean, prstd (read); dgamma, dbeta (read_write, +=);
//                          act_beta, act_gamma (read)
// Shapes: x, out, dout, dx (B, C, H, W); gamma, beta, dgamma, dbeta (C,); mean, rstd (B, G).
// Group 1: Params. Params and the workgroup sizes WG, WG_ROWS are declared in ops/groupnorm.rs.

// Whether SiLU follows the norm (set per registry entry).
override SILU: bool = false;

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

@group(0) @binding(6) var<storage, read> act_beta: array<f32>;
@group(0) @binding(7) var<storage, read> act_gamma: array<f32>;

// Elements per group: (C / G) * H * W.
fn group_len() -> u32 {
    return p.c / p.g * p.hw;
}

// Channel of the i-th element of group g.
fn channel(g: u32, i: u32) -> u32 {
    return g * (p.c / p.g) + i / p.hw;
}

// Group (b, g) = bg: whether it exists, and its slice [base, base + n) of x.
struct Group {
    bg: u32,
    g: u32,
    live: bool,
    n: u32,
    base: u32,
}

fn group_at(bg: u32) -> Group {
    let n = group_len();
    return Group(bg, bg % p.g, bg < p.b * p.g, n, bg * n);
}

// The forward's output from the normalised value y = gamma xhat + beta.
fn act(y: f32) -> f32 {
    if (SILU) { return silu(y); }
    return y;
}

// The gradient dy of the norm's output y at element k (channel c) from the upstream gradient:
// dout itself, or with SILU dout carried through silu'(y), y recomputed exactly as the forward
// computes it. One function per backward entry, each reading that entry's bindings.
fn dy_input(k: u32, c: u32, mu: f32, r: f32) -> f32 {
    if (!SILU) { return dout[k]; }
    return silu_grad(dout[k], gamma[c] * (x[k] - mu) * r + act_beta[c]);
}

fn dy_params(k: u32, c: u32, mu: f32, r: f32) -> f32 {
    if (!SILU) { return pdout[k]; }
    return silu_grad(pdout[k], act_gamma[c] * (x[k] - mu) * r + act_beta[c]);
}

// --- forward -------------------------------------------------------------------------------------

// Group (b, g) is the contiguous slice [(b * G + g) * N, +N) of x (B, C, H, W), with C split
// into G contiguous groups and N = (C / G) * H * W. Forward and input backward run one workgroup
// per (b, g): each thread accumulates a strided slice in f32, then a tree in workgroup memory
// halves WG partials to one. The forward is two-pass (mean, then the centred sum of squares) to
// avoid the cancellation of E[x^2] - mean^2; it writes rstd = 1 / sqrt(var + eps).
@compute @workgroup_size(WG)
fn groupnorm_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let gr = group_at(workgroup_linear(id));
    let inv_n = 1.0 / f32(gr.n);

    var acc = 0.0;
    if (gr.live) {
        for (var i = lid; i < gr.n; i = i + WG) { acc = acc + x[gr.base + i]; }
    }
    let mu = tree_sum(lid, acc) * inv_n;

    acc = 0.0;
    if (gr.live) {
        for (var i = lid; i < gr.n; i = i + WG) {
            let d = x[gr.base + i] - mu;
            acc = acc + d * d;
        }
    }
    let r = inverseSqrt(tree_sum(lid, acc) * inv_n + p.eps);

    if (gr.live) {
        for (var i = lid; i < gr.n; i = i + WG) {
            let c = channel(gr.g, i);
            out[gr.base + i] = act(gamma[c] * (x[gr.base + i] - mu) * r + beta[c]);
        }
        if (lid == 0u) {
            mean_out[gr.bg] = mu;
            rstd_out[gr.bg] = r;
        }
    }
}

// --- backward ------------------------------------------------------------------------------------

// dxhat = dy gamma at element i of group gr.
fn dxhat_at(gr: Group, i: u32, mu: f32, r: f32) -> f32 {
    let c = channel(gr.g, i);
    return dy_input(gr.base + i, c, mu, r) * gamma[c];
}

// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * gamma.
@compute @workgroup_size(WG)
fn groupnorm_bwd_input(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let gr = group_at(workgroup_linear(id));
    var mu = 0.0;
    var r = 0.0;
    var acc = vec2<f32>(0.0, 0.0);
    if (gr.live) {
        mu = mean[gr.bg];
        r = rstd[gr.bg];
        for (var i = lid; i < gr.n; i = i + WG) {
            let dxhat = dxhat_at(gr, i, mu, r);
            acc = acc + vec2<f32>(dxhat, dxhat * (x[gr.base + i] - mu) * r);
        }
    }
    let m = tree_sum2(lid, acc) / f32(gr.n);
    if (gr.live) {
        for (var i = lid; i < gr.n; i = i + WG) {
            let dxhat = dxhat_at(gr, i, mu, r);
            dx[gr.base + i] = r * (dxhat - m.x - (x[gr.base + i] - mu) * r * m.y);
        }
    }
}

// dgamma[c] += sum_{b, hw} dy * xhat, dbeta[c] += sum_{b, hw} dy (dy as in dy_params); one
// workgroup per channel, reducing over B * H * W in a fixed order.
@compute @workgroup_size(WG)
fn groupnorm_bwd_params(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let c = workgroup_linear(id);
    let live = c < p.c;
    let gi = c / (p.c / p.g);
    var acc = vec2<f32>(0.0, 0.0);
    if (live) {
        let total = p.b * p.hw;
        for (var i = lid; i < total; i = i + WG) {
            let b = i / p.hw;
            let k = (b * p.c + c) * p.hw + i % p.hw;
            let bg = b * p.g + gi;
            let d = dy_params(k, c, pmean[bg], prstd[bg]);
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
fn groupnorm_fwd_rows(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let gr = group_at(invocation_linear(id, lid, WG_ROWS));
    if (!gr.live) { return; }
    let inv_n = 1.0 / f32(gr.n);
    var acc = 0.0;
    for (var i = 0u; i < gr.n; i = i + 1u) { acc = acc + x[gr.base + i]; }
    let mu = acc * inv_n;
    acc = 0.0;
    for (var i = 0u; i < gr.n; i = i + 1u) {
        let d = x[gr.base + i] - mu;
        acc = acc + d * d;
    }
    let r = inverseSqrt(acc * inv_n + p.eps);
    for (var i = 0u; i < gr.n; i = i + 1u) {
        let c = channel(gr.g, i);
        out[gr.base + i] = act(gamma[c] * (x[gr.base + i] - mu) * r + beta[c]);
    }
    mean_out[gr.bg] = mu;
    rstd_out[gr.bg] = r;
}

@compute @workgroup_size(WG_ROWS)
fn groupnorm_bwd_input_rows(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let gr = group_at(invocation_linear(id, lid, WG_ROWS));
    if (!gr.live) { return; }
    let mu = mean[gr.bg];
    let r = rstd[gr.bg];
    var acc = vec2<f32>(0.0, 0.0);
    for (var i = 0u; i < gr.n; i = i + 1u) {
        let dxhat = dxhat_at(gr, i, mu, r);
        acc = acc + vec2<f32>(dxhat, dxhat * (x[gr.base + i] - mu) * r);
    }
    let m = acc / f32(gr.n);
    for (var i = 0u; i < gr.n; i = i + 1u) {
        let dxhat = dxhat_at(gr, i, mu, r);
        dx[gr.base + i] = r * (dxhat - m.x - (x[gr.base + i] - mu) * r * m.y);
    }
}

@compute @workgroup_size(WG_ROWS)
fn groupnorm_bwd_params_cols(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let c = invocation_linear(id, lid, WG_ROWS);
    if (c >= p.c) { return; }
    let gi = c / (p.c / p.g);
    var acc = vec2<f32>(0.0, 0.0);
    for (var b = 0u; b < p.b; b = b + 1u) {
        let bg = b * p.g + gi;
        let m = pmean[bg];
        let r = prstd[bg];
        for (var s = 0u; s < p.hw; s = s + 1u) {
            let k = (b * p.c + c) * p.hw + s;
            let d = dy_params(k, c, m, r);
            acc = acc + vec2<f32>(d * (x[k] - m) * r, d);
        }
    }
    dgamma[c] = dgamma[c] + acc.x;
    dbeta[c] = dbeta[c] + acc.y;
}
