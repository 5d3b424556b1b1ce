// Elementwise ops over flat f32 arrays: add, mul, scale, axpy, SiLU forward and backward;
// checked against src/reference/elementwise.rs. Every output is overwritten except axpy's y
// (y += alpha x). Backward of add/mul/scale/axpy is expressed with these same entry points.

// Bindings (group 0, inputs first, outputs last):
//   binary entries  add, mul, silu_bwd:  a (read), b (read), out (write)
//   unary entries   scale, silu_fwd:     x (read), y (write)
//   axpy:                                x (read), y (read_write)
// Group 1: Params. Params and the workgroup size WG are declared in ops/elementwise.rs.

@group(1) @binding(0) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn add(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i < p.n) { out[i] = a[i] + b[i]; }
}

@compute @workgroup_size(WG)
fn mul(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i < p.n) { out[i] = a[i] * b[i]; }
}

@compute @workgroup_size(WG)
fn scale(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i < p.n) { y[i] = p.alpha * x[i]; }
}

@compute @workgroup_size(WG)
fn axpy(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i < p.n) { y[i] = p.alpha * x[i] + y[i]; }
}

@compute @workgroup_size(WG)
fn silu_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i < p.n) { y[i] = silu(x[i]); }
}

// out = dout * s * (1 + x (1 - s)) with a = dout, b = x: SiLU's own backward, which recomputes
// s = sigmoid(x) from the saved input instead of saving it.
@compute @workgroup_size(WG)
fn silu_bwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i < p.n) { out[i] = silu_grad(a[i], b[i]); }
}
