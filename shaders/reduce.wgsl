// Row reductions over a (B, N) matrix, their backward broadcasts, and a global sum of squares;
// checked against src/reference/reduce.rs. All outputs are overwritten. One workgroup per row:
// a strided f32 slice per thread, then a tree in workgroup memory (WG partials to one).

// Bindings (group 0, inputs first, outputs last):
//   row_sum, row_mean, sum_sq_partial:  x (read), out (write)
//   row_sq_err:                         x (read), y (read), out2 (write)
//   row_broadcast_bwd:                  dout (read), dx (write)       dx[b, i] = scale * dout[b]
//   row_sq_err_bwd:                     x (read), y (read), dout_e (read), dx_e (write)
// Group 1: Params. Params, the workgroup size WG and SUM_SQ_CHUNK are declared in ops/reduce.rs.

@group(1) @binding(0) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> out2: array<f32>;

@group(0) @binding(0) var<storage, read> dout: array<f32>;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;

@group(0) @binding(2) var<storage, read> dout_e: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx_e: array<f32>;


fn row_total(row: u32, lid: u32) -> f32 {
    var acc = 0.0;
    if (row < p.rows) {
        let base = row * p.n;
        for (var i = lid; i < p.n; i = i + WG) { acc = acc + x[base + i]; }
    }
    return tree_sum(lid, acc);
}

@compute @workgroup_size(WG)
fn row_sum(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = workgroup_linear(id);
    let total = row_total(row, lid);
    if (lid == 0u && row < p.rows) { out[row] = total; }
}

@compute @workgroup_size(WG)
fn row_mean(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = workgroup_linear(id);
    let total = row_total(row, lid);
    if (lid == 0u && row < p.rows) { out[row] = total / f32(p.n); }
}

@compute @workgroup_size(WG)
fn row_sq_err(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = workgroup_linear(id);
    var acc = 0.0;
    if (row < p.rows) {
        let base = row * p.n;
        for (var i = lid; i < p.n; i = i + WG) {
            let d = x[base + i] - y[base + i];
            acc = acc + d * d;
        }
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u && row < p.rows) { out2[row] = total; }
}

// The global sum of squares runs in two passes: sum_sq_partial writes one partial per workgroup
// of SUM_SQ_CHUNK elements, then row_sum (one row) adds the partials.
// rows = number of partials; n = total element count.
@compute @workgroup_size(WG)
fn sum_sq_partial(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let g = workgroup_linear(id);
    var acc = 0.0;
    if (g < p.rows) {
        let end = min((g + 1u) * SUM_SQ_CHUNK, p.n);
        for (var i = g * SUM_SQ_CHUNK + lid; i < end; i = i + WG) {
            let v = x[i];
            acc = acc + v * v;
        }
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u && g < p.rows) { out[g] = total; }
}

// One thread per element of dx (rows * n).
@compute @workgroup_size(WG)
fn row_broadcast_bwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i < p.rows * p.n) { dx[i] = p.scale * dout[i / p.n]; }
}

@compute @workgroup_size(WG)
fn row_sq_err_bwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i < p.rows * p.n) { dx_e[i] = 2.0 * dout_e[i / p.n] * (x[i] - y[i]); }
}
