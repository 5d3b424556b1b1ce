// Counter-based random numbers: Philox4x32-10 and an integer-only Box-Muller, bit-identical to
// src/philox.rs on every target: the only float operations are an exact int-to-float conversion
// of a value below 2^24 and a multiply by a power of two (logarithm, square root, cosine and sine
// are fixed point; src/philox.rs has the derivation and the tables).

// Bindings (group 0): out (write). Group 1: Params. Params and the workgroup size WG are declared
// in ops/philox.rs.

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read_write> out: array<f32>;

// The generator itself is in common/philox_core.wgsl, prepended by the registry.

// Each invocation produces one block of 4 values: block i = philox([i, w0, w1, w2], seed).
fn block(i: u32) -> vec4<u32> {
    return philox4x32_10(vec4<u32>(i, p.w0, p.w1, p.w2), vec2<u32>(p.seed_lo, p.seed_hi));
}

fn store4(i: u32, v: vec4<f32>) {
    let base = 4u * i;
    for (var c = 0u; c < 4u; c = c + 1u) {
        if (base + c < p.n) { out[base + c] = v[c]; }
    }
}

@compute @workgroup_size(WG)
fn philox_normal(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (4u * i >= p.n) { return; }
    let x = block(i);
    let z01 = box_muller(x.x, x.y);
    let z23 = box_muller(x.z, x.w);
    store4(i, vec4<f32>(z01, z23));
}

@compute @workgroup_size(WG)
fn philox_uniform(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (4u * i >= p.n) { return; }
    let x = block(i);
    store4(i, vec4<f32>(uniform01(x.x), uniform01(x.y), uniform01(x.z), uniform01(x.w)));
}
