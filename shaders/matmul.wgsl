// Batched matrix multiply with optional transposes and bias: out = op(a) · op(b) + bias.
//
// Entry points (one per storage layout; the three layouts are closed under differentiation):
//   matmul_nn  out = a b      a (M, K), b (K, N)   backward: da = nt(dout, b), db = tn(a, dout)
//   matmul_nt  out = a b^T    a (M, K), b (N, K)   backward: da = nn(dout, b), db = tn(dout, a)
//   matmul_tn  out = a^T b    a (K, M), b (K, N)   backward: da = nt(b, dout), db = nn(a, dout)
//   matmul_nn4, matmul_nt4, matmul_tn4: the same over vec4 views, used when every row read is a
//              whole number of vec4s (nn, nt: K and N multiples of 4; tn: M and N multiples of 4)
//   matmul_bwd_bias  dbias (N,) += column sums of dout (M, N), over the batch too
// out and the input gradients are overwritten; dbias is accumulated (a parameter gradient).
//
// Work split, chosen for CPU-backed adapters (lavapipe, SwiftShader), where what costs is the
// number of load instructions per multiply-add (a load runs per invocation, with its index
// arithmetic), not memory bandwidth: a workgroup owns R = 16 consecutive rows (their indices
// come from the workgroup id only) and each of its 64 invocations owns 4 consecutive columns,
// so per step along K an invocation loads a 4-wide slice of `b` once and reuses it for 16 rows:
// 64 multiply-adds into registers per load of `b`, plus the row loads of `a`, which are the same
// for every invocation of the workgroup. Workgroup memory is not used: on these adapters it is
// ordinary memory and tiling through it did not pay (measured; see README, Performance).
// Rows and columns past the edge are clamped for loading and skipped at the store.
//
// The linear workgroup id enumerates (batch, row tile, column tile), so grids above 65,535
// workgroups fold like every other op. Bindings (group 0): a (read), b (read), bias (read;
// a placeholder when has_bias = 0), out (write); matmul_bwd_bias: dout (read), dbias
// (read_write). Group 1: Params.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    stride_a: u32,
    stride_b: u32,
    stride_out: u32,
    has_bias: u32,
}

@group(1) @binding(0) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@group(0) @binding(0) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;

@group(0) @binding(0) var<storage, read> dout: array<f32>;
@group(0) @binding(1) var<storage, read_write> dbias: array<f32>;

// Rows per workgroup, invocations per workgroup, columns per workgroup.
const R: u32 = 16u;
const LANES: u32 = 64u;
const COLS: u32 = 256u;

struct Tile {
    batch: u32,
    row0: u32, // first of R rows (workgroup-uniform)
    col: u32,  // first of this invocation's 4 columns
    live: bool,
}

fn tile_of(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Tile {
    let tiles_n = (p.n + COLS - 1u) / COLS;
    let tiles_m = (p.m + R - 1u) / R;
    let t = workgroup_linear(wid, nwg);
    var tl: Tile;
    tl.batch = t / (tiles_m * tiles_n);
    let r = t % (tiles_m * tiles_n);
    tl.row0 = (r / tiles_n) * R;
    tl.col = (r % tiles_n) * COLS + lid * 4u;
    tl.live = tl.batch < p.batch && tl.col < p.n;
    return tl;
}

// Row index clamped into the matrix (loads only).
fn row_at(tl: Tile, i: u32) -> u32 {
    return min(tl.row0 + i, p.m - 1u);
}

fn cols4(tl: Tile) -> vec4<u32> {
    return min(vec4<u32>(tl.col) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
}

fn store(tl: Tile, acc: ptr<function, array<vec4<f32>, 16>>) {
    var bv = vec4<f32>(0.0);
    if (p.has_bias != 0u) {
        let c = cols4(tl);
        bv = vec4<f32>(bias[c.x], bias[c.y], bias[c.z], bias[c.w]);
    }
    let base = tl.batch * p.stride_out;
    for (var i = 0u; i < R; i = i + 1u) {
        let r = tl.row0 + i;
        if (r < p.m) {
            let v = (*acc)[i] + bv;
            for (var j = 0u; j < 4u; j = j + 1u) {
                if (tl.col + j < p.n) { out[base + r * p.n + tl.col + j] = v[j]; }
            }
        }
    }
}

fn store4(tl: Tile, acc: ptr<function, array<vec4<f32>, 16>>) {
    var bv = vec4<f32>(0.0);
    if (p.has_bias != 0u) { bv = bias4[tl.col / 4u]; }
    let base = (tl.batch * p.stride_out + tl.col) / 4u;
    let n4 = p.n / 4u;
    for (var i = 0u; i < R; i = i + 1u) {
        let r = tl.row0 + i;
        if (r < p.m) { out4[base + r * n4] = (*acc)[i] + bv; }
    }
}

@compute @workgroup_size(64)
fn matmul_nn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let tl = tile_of(wid, nwg, lid);
    if (!tl.live) { return; }
    let ab = tl.batch * p.stride_a;
    let c = cols4(tl) + vec4<u32>(tl.batch * p.stride_b);
    var acc: array<vec4<f32>, 16>;
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
        let o = kk * p.n;
        let bv = vec4<f32>(b[o + c.x], b[o + c.y], b[o + c.z], b[o + c.w]);
        for (var i = 0u; i < R; i = i + 1u) {
            acc[i] = acc[i] + a[ab + row_at(tl, i) * p.k + kk] * bv;
        }
    }
    store(tl, &acc);
}

@compute @workgroup_size(64)
fn matmul_nt(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let tl = tile_of(wid, nwg, lid);
    if (!tl.live) { return; }
    let ab = tl.batch * p.stride_a;
    let c = cols4(tl) * p.k + vec4<u32>(tl.batch * p.stride_b);
    var acc: array<vec4<f32>, 16>;
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
        let bv = vec4<f32>(b[c.x + kk], b[c.y + kk], b[c.z + kk], b[c.w + kk]);
        for (var i = 0u; i < R; i = i + 1u) {
            acc[i] = acc[i] + a[ab + row_at(tl, i) * p.k + kk] * bv;
        }
    }
    store(tl, &acc);
}

@compute @workgroup_size(64)
fn matmul_tn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let tl = tile_of(wid, nwg, lid);
    if (!tl.live) { return; }
    let ab = tl.batch * p.stride_a;
    let c = cols4(tl) + vec4<u32>(tl.batch * p.stride_b);
    var acc: array<vec4<f32>, 16>;
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
        let o = kk * p.n;
        let bv = vec4<f32>(b[o + c.x], b[o + c.y], b[o + c.z], b[o + c.w]);
        let oa = ab + kk * p.m;
        for (var i = 0u; i < R; i = i + 1u) {
            acc[i] = acc[i] + a[oa + row_at(tl, i)] * bv;
        }
    }
    store(tl, &acc);
}

@compute @workgroup_size(64)
fn matmul_nn4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let tl = tile_of(wid, nwg, lid);
    if (!tl.live) { return; }
    let k4 = p.k / 4u;
    let n4 = p.n / 4u;
    let ab = tl.batch * p.stride_a / 4u;
    let c = (tl.batch * p.stride_b + tl.col) / 4u;
    var acc: array<vec4<f32>, 16>;
    for (var kk = 0u; kk < k4; kk = kk + 1u) {
        let o = c + 4u * kk * n4;
        let b0 = b4[o];
        let b1 = b4[o + n4];
        let b2 = b4[o + 2u * n4];
        let b3 = b4[o + 3u * n4];
        for (var i = 0u; i < R; i = i + 1u) {
            let av = a4[ab + row_at(tl, i) * k4 + kk];
            acc[i] = acc[i] + av.x * b0 + av.y * b1 + av.z * b2 + av.w * b3;
        }
    }
    store4(tl, &acc);
}

@compute @workgroup_size(64)
fn matmul_nt4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let tl = tile_of(wid, nwg, lid);
    if (!tl.live) { return; }
    let k4 = p.k / 4u;
    let ab = tl.batch * p.stride_a / 4u;
    let c = (cols4(tl) * p.k + vec4<u32>(tl.batch * p.stride_b)) / 4u;
    var acc: array<vec4<f32>, 16>;
    for (var kk = 0u; kk < k4; kk = kk + 1u) {
        let b0 = b4[c.x + kk];
        let b1 = b4[c.y + kk];
        let b2 = b4[c.z + kk];
        let b3 = b4[c.w + kk];
        for (var i = 0u; i < R; i = i + 1u) {
            let av = a4[ab + row_at(tl, i) * k4 + kk];
            acc[i] = acc[i] + vec4<f32>(dot(av, b0), dot(av, b1), dot(av, b2), dot(av, b3));
        }
    }
    store4(tl, &acc);
}

@compute @workgroup_size(64)
fn matmul_tn4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let tl = tile_of(wid, nwg, lid);
    if (!tl.live) { return; }
    let m4 = p.m / 4u;
    let n4 = p.n / 4u;
    // R is a multiple of 4 and M is, so a tile's rows are whole vec4s (clamped as vec4s).
    let ra = tl.batch * p.stride_a / 4u;
    let cb = (tl.batch * p.stride_b + tl.col) / 4u;
    var acc: array<vec4<f32>, 16>;
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
        let bv = b4[cb + kk * n4];
        let oa = ra + kk * m4;
        for (var q = 0u; q < R / 4u; q = q + 1u) {
            let av = a4[oa + min(tl.row0 / 4u + q, m4 - 1u)];
            acc[4u * q] = acc[4u * q] + av.x * bv;
            acc[4u * q + 1u] = acc[4u * q + 1u] + av.y * bv;
            acc[4u * q + 2u] = acc[4u * q + 2u] + av.z * bv;
            acc[4u * q + 3u] = acc[4u * q + 3u] + av.w * bv;
        }
    }
    store4(tl, &acc);
}

// One invocation per column; rows are walked in order so neighbouring invocations read
// neighbouring addresses.
@compute @workgroup_size(64)
fn matmul_bwd_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let j = workgroup_linear(wid, nwg) * 64u + lid;
    if (j >= p.n) { return; }
    var acc = 0.0;
    for (var bt = 0u; bt < p.batch; bt = bt + 1u) {
        let base = bt * p.stride_out;
        for (var i = 0u; i < p.m; i = i + 1u) { acc = acc + dout[base + i * p.n + j]; }
    }
    dbias[j] = dbias[j] + acc;
}
