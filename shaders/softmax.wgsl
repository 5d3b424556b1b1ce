// Row softmax over a (R, N) matrix (the attention rows: R = B * heads * T queries, N = T keys),
// forward and backward; checked against src/reference/attention.rs (`softmax_rows_*`). Saved
// for backward: y only. Overwritten: y, dx. No overflow for any finite input.

// Bindings (group 0, inputs first, outputs last):
//   softmax_rows_fwd:  x (read), y (write)
//   softmax_rows_bwd:  dy, ys (read), dx (write)
// Shapes: x, y, dy, ys, dx (R, N). Group 1: Params. Params and the workgroup size WG are declared
// in ops/softmax.rs.

@group(1) @binding(0) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> ys: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;

// The most negative finite f32: the identity of max for threads without elements.
const LOWEST: f32 = -3.4028234663852886e38;

// y = exp(x - max) / sum(exp(x - max)) per row, one workgroup per row. Subtracting the row
// maximum means exp sees only arguments <= 0: no overflow for any finite input, and a row of
// equal values (even -1e30) gives 1/N. Three passes: a max tree, a sum tree of e = exp(x - max)
// (each thread stores its e in y), then y = e / sum; each thread rereads only the y it wrote.
@compute @workgroup_size(WG)
fn softmax_rows_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = workgroup_linear(id);
    let live = row < p.rows;
    let base = row * p.n;

    var m = LOWEST;
    if (live) {
        for (var i = lid; i < p.n; i = i + WG) { m = max(m, x[base + i]); }
    }
    m = tree_max(lid, m);

    var acc = 0.0;
    if (live) {
        for (var i = lid; i < p.n; i = i + WG) {
            let e = exp(x[base + i] - m);
            y[base + i] = e;
            acc = acc + e;
        }
    }
    let inv = 1.0 / tree_sum(lid, acc);

    if (live) {
        for (var i = lid; i < p.n; i = i + WG) { y[base + i] = y[base + i] * inv; }
    }
}

// dx = y * (dy - sum(dy * y)) per row (needs no x).
@compute @workgroup_size(WG)
fn softmax_rows_bwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = workgroup_linear(id);
    let live = row < p.rows;
    let base = row * p.n;

    var acc = 0.0;
    if (live) {
        for (var i = lid; i < p.n; i = i + WG) { acc = acc + dy[base + i] * ys[base + i]; }
    }
    let dot = tree_sum(lid, acc);

    if (live) {
        for (var i = lid; i < p.n; i = i + WG) { dx[base + i] = ys[base + i] * (dy[base + i] - dot); }
    }
}
