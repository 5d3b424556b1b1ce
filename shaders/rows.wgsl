// Row inputs of a training step (math.md §9b): input = a (y_x x[example] + y_n0 eps0) + b eps and
// target = eps per row, with eps and eps0 from the row's own Philox streams (the generator is
// common/philox_core.wgsl), the same numbers as src/reference/rows.rs. Outputs are overwritten.

// Bindings (group 0): x (read), table (read), inputs (write), targets (write). Group 1: Params.
// Params, the workgroup size WG and ROW_WORDS are declared in ops/rows.rs.

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read_write> inputs: array<f32>;
@group(0) @binding(3) var<storage, read_write> targets: array<f32>;


// Per-row constants are computed in f64 on the host and uploaded as f32 bits in a u32 table of
// 12 words per row: [example, a, b, y_x, y_n0, noise w0..w2, noise0 w0..w2, pad].
fn normals(blk: u32, w: u32) -> vec4<f32> {
    let c = philox4x32_10(vec4<u32>(blk, table[w], table[w + 1u], table[w + 2u]), vec2<u32>(p.seed_lo, p.seed_hi));
    return vec4<f32>(box_muller(c.x, c.y), box_muller(c.z, c.w));
}

// One invocation per block of 4 elements of a row.
@compute @workgroup_size(WG)
fn row_inputs(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let g = invocation_linear(id, lid, WG);
    let blocks = (p.n + 3u) / 4u;
    let r = g / blocks;
    if (r >= p.rows) { return; }
    let blk = g % blocks;
    let t = r * ROW_WORDS;
    let ex = table[t];
    let a = bitcast<f32>(table[t + 1u]);
    let b = bitcast<f32>(table[t + 2u]);
    let y_x = bitcast<f32>(table[t + 3u]);
    let y_n0 = bitcast<f32>(table[t + 4u]);
    let e = normals(blk, t + 5u);
    let e0 = normals(blk, t + 8u);
    for (var c = 0u; c < 4u; c = c + 1u) {
        let i = 4u * blk + c;
        if (i < p.n) {
            inputs[r * p.n + i] = a * (y_x * x[ex * p.n + i] + y_n0 * e0[c]) + b * e[c];
            targets[r * p.n + i] = e[c];
        }
    }
}
