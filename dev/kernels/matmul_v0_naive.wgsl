// Kernel variant 0 of matmul_nn, kept as the benchmark baseline: one invocation per output,
// a plain K loop, no blocking. `cdl bench ops` reports the tuned shaders/matmul.wgsl against it.
// Bindings as shaders/matmul.wgsl (batch and bias ignored); `Params` is declared before this file
// by src/ops/matmul.rs (`NAIVE_SOURCE`).

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(8, 8)
fn matmul_naive(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    if (row >= p.m || col >= p.n) { return; }
    var acc = 0.0;
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
        acc = acc + a[row * p.k + kk] * b[kk * p.n + col];
    }
    if (p.has_bias != 0u) { acc = acc + bias[col]; }
    out[row * p.n + col] = acc;
}
