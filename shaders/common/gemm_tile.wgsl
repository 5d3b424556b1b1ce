// The staged-tile product of the GPU-shaped kernels (matmul_tiled, conv2d_*_tiled), prepended by
// the registry. A workgroup of TILE_LANES = (TM / 4)^2 invocations owns a TM x TM output tile,
// invocation (tx, ty) the 4 x 4 block at rows 4 ty .. 4 ty + 3 and columns 4 tx .. 4 tx + 3. Per
// step of TK along the reduction the workgroup stages the A slice (TM rows x TK) in ta and the B
// slice (TK x TM columns) in tb (2 x 4 KiB at TM 64, TK 16: within WebGPU's default 16 KiB), then
// every invocation reads one vec4 of each per kk. TM, TK and TILE_LANES are declared by the
// launcher.
var<workgroup> ta: array<vec4<f32>, TK * TM / 4>; // [kk][row / 4], component row % 4
var<workgroup> tb: array<vec4<f32>, TK * TM / 4>; // [kk][col / 4], component col % 4

// Stages A[row][kk] (row < TM, kk < TK) of this step.
fn stage_a(row: u32, kk: u32, v: f32) {
    ta[kk * (TM / 4u) + row / 4u][row % 4u] = v;
}

// Stages B[kk][col] (kk < TK, col < TM) of this step.
fn stage_b(kk: u32, col: u32, v: f32) {
    tb[kk * (TM / 4u) + col / 4u][col % 4u] = v;
}

// acc[i][j] += sum over this step's kk of A[4 ty + i][kk] B[kk][4 tx + j]; called between the
// barrier after staging and the one before the next step's staging.
fn tile_product(tx: u32, ty: u32, acc: ptr<function, array<vec4<f32>, 4>>) {
    for (var kk = 0u; kk < TK; kk = kk + 1u) {
        let av = ta[kk * (TM / 4u) + ty];
        let bv = tb[kk * (TM / 4u) + tx];
        (*acc)[0] = (*acc)[0] + av.x * bv;
        (*acc)[1] = (*acc)[1] + av.y * bv;
        (*acc)[2] = (*acc)[2] + av.z * bv;
        (*acc)[3] = (*acc)[3] + av.w * bv;
    }
}
