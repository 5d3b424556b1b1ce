// Batched matrix multiply with optional transposes and bias: out = op(a) · op(b) + bias, and
// the bias gradient; checked against src/reference/matmul.rs. out and the input gradients are
// overwritten; dbias is accumulated (a parameter gradient). The three layouts are closed under
// differentiation, so backward is matmul again.

// The layout, set per variant by ops/matmul.rs (which names them matmul_nn .. matmul_tn_tiled);
// TRANS_A with TRANS_B is none:
//   nn (no transposes)  out = a b    a (M, K), b (K, N)  backward: da = nt(dout, b), db = tn(a, dout)
//   nt (TRANS_B)        out = a b^T  a (M, K), b (N, K)  backward: da = nn(dout, b), db = tn(dout, a)
//   tn (TRANS_A)        out = a^T b  a (K, M), b (K, N)  backward: da = nt(b, dout), db = nn(a, dout)
override TRANS_A: bool;
override TRANS_B: bool;

// Bindings (group 0): a (read), b (read), bias (read; a placeholder when has_bias = 0), out
// (write), aux (read) and out2 (write), the epilogue's operands (placeholders when unused);
// matmul_bwd_bias: dout (read), dbias (read_write). Group 1: Params. Params, R and LANES are
// declared in ops/matmul.rs.
//
// The epilogue (p.epilogue) applies to v = op(a) op(b) + bias at each output element:
//   EP_NONE   out = v
//   EP_SILU   out = v and out2 = silu(v)        (a Linear and its activation, forward)
//   EP_DSILU  out = v * silu'(aux)              (the input gradient of a Linear through the
//                                                activation before it, aux its pre-activation)
const EP_NONE: u32 = 0u;
const EP_SILU: u32 = 1u;
const EP_DSILU: u32 = 2u;
@group(1) @binding(0) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@group(0) @binding(0) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;

@group(0) @binding(4) var<storage, read> aux: array<f32>;
@group(0) @binding(5) var<storage, read_write> out2: array<f32>;
@group(0) @binding(4) var<storage, read> aux4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out2_4: array<vec4<f32>>;

@group(0) @binding(0) var<storage, read> dout: array<f32>;
@group(0) @binding(1) var<storage, read_write> dbias: array<f32>;

fn sigmoid4(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(sigmoid(v.x), sigmoid(v.y), sigmoid(v.z), sigmoid(v.w));
}

// The epilogue of one element at index i of out.
fn epilogue(i: u32, v: f32) {
    if (p.epilogue == EP_DSILU) {
        out[i] = silu_grad(v, aux[i]);
        return;
    }
    out[i] = v;
    if (p.epilogue == EP_SILU) { out2[i] = silu(v); }
}

// The epilogue of 4 elements at vec4 index i of out.
fn epilogue4(i: u32, v: vec4<f32>) {
    if (p.epilogue == EP_DSILU) {
        let x = aux4[i];
        let s = sigmoid4(x);
        out4[i] = v * s * (1.0 + x * (1.0 - s));
        return;
    }
    out4[i] = v;
    if (p.epilogue == EP_SILU) { out2_4[i] = v * sigmoid4(v); }
}

// Work split, chosen for CPU-backed adapters (lavapipe, SwiftShader), where what costs is the
// number of load instructions per multiply-add (a load runs per invocation, with its index
// arithmetic), not memory bandwidth: a workgroup owns R = 16 consecutive rows (their indices
// come from the workgroup id only) and each of its LANES = 64 invocations owns 4 consecutive
// columns, so per step along K an invocation loads a 4-wide slice of `b` once and reuses it for
// R rows: 64 multiply-adds into registers per load of `b`, plus the row loads of `a`, which are
// the same for every invocation of the workgroup. Workgroup memory is not used: on these adapters
// it is ordinary memory and tiling through it did not pay (measured; see README, Performance).
// Rows and columns past the edge are clamped for loading and skipped at the store. The linear
// workgroup id enumerates (batch, row tile, column tile), so grids above 65,535 workgroups fold
// like every other op.
struct Tile {
    batch: u32,
    row0: u32, // first of R rows (workgroup-uniform)
    col: u32,  // first of this invocation's 4 columns
    live: bool,
}

fn tile_of(id: Grid, lid: u32) -> Tile {
    let cols = 4u * LANES;
    let tiles_n = (p.n + cols - 1u) / cols;
    let tiles_m = (p.m + R - 1u) / R;
    let t = workgroup_linear(id);
    var tl: Tile;
    tl.batch = t / (tiles_m * tiles_n);
    let r = t % (tiles_m * tiles_n);
    tl.row0 = (r / tiles_n) * R;
    tl.col = (r % tiles_n) * cols + lid * 4u;
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

fn store(tl: Tile, acc: ptr<function, array<vec4<f32>, R>>) {
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
                if (tl.col + j < p.n) { epilogue(base + r * p.n + tl.col + j, v[j]); }
            }
        }
    }
}

fn store4(tl: Tile, acc: ptr<function, array<vec4<f32>, R>>) {
    var bv = vec4<f32>(0.0);
    if (p.has_bias != 0u) { bv = bias4[tl.col / 4u]; }
    let base = (tl.batch * p.stride_out + tl.col) / 4u;
    let n4 = p.n / 4u;
    for (var i = 0u; i < R; i = i + 1u) {
        let r = tl.row0 + i;
        if (r < p.m) { epilogue4(base + r * n4, (*acc)[i] + bv); }
    }
}

// Scalar loads, every layout: op(a)[row][kk] is a[row sa.x + kk sa.y] and op(b)[kk][col] is
// b[col sb.x + kk sb.y] within the batch item.
fn product(tl: Tile, acc: ptr<function, array<vec4<f32>, R>>) {
    let sa = select(vec2<u32>(p.k, 1u), vec2<u32>(1u, p.m), TRANS_A);
    let sb = select(vec2<u32>(1u, p.n), vec2<u32>(p.k, 1u), TRANS_B);
    let ab = tl.batch * p.stride_a;
    let cb = cols4(tl) * sb.x + vec4<u32>(tl.batch * p.stride_b);
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
        let o = cb + vec4<u32>(kk * sb.y);
        let bv = vec4<f32>(b[o.x], b[o.y], b[o.z], b[o.w]);
        let oa = ab + kk * sa.y;
        for (var i = 0u; i < R; i = i + 1u) {
            (*acc)[i] = (*acc)[i] + a[oa + row_at(tl, i) * sa.x] * bv;
        }
    }
}

// vec4 loads along K (nn, nt): per 4 steps of K one vec4 of a per row and 4 vec4s of b: in nn
// the rows kk .. kk + 3 of b at this invocation's columns (acc += sum_j a_j b_j), in nt the 4
// columns' runs along K (acc += (a . b_0, .., a . b_3)).
fn product4(tl: Tile, acc: ptr<function, array<vec4<f32>, R>>) {
    let k4 = p.k / 4u;
    let n4 = p.n / 4u;
    let ab = tl.batch * p.stride_a / 4u;
    // The vec4 index of each b_j at kk = 0, and its step per kk.
    let cn = vec4<u32>((tl.batch * p.stride_b + tl.col) / 4u) + vec4<u32>(0u, 1u, 2u, 3u) * n4;
    let ct = (cols4(tl) * p.k + vec4<u32>(tl.batch * p.stride_b)) / 4u;
    let cb = select(cn, ct, TRANS_B);
    let step = select(4u * n4, 1u, TRANS_B);
    for (var kk = 0u; kk < k4; kk = kk + 1u) {
        let o = cb + vec4<u32>(kk * step);
        let b0 = b4[o.x];
        let b1 = b4[o.y];
        let b2 = b4[o.z];
        let b3 = b4[o.w];
        for (var i = 0u; i < R; i = i + 1u) {
            let av = a4[ab + row_at(tl, i) * k4 + kk];
            if (TRANS_B) {
                (*acc)[i] = (*acc)[i] + vec4<f32>(dot(av, b0), dot(av, b1), dot(av, b2), dot(av, b3));
            } else {
                (*acc)[i] = (*acc)[i] + av.x * b0 + av.y * b1 + av.z * b2 + av.w * b3;
            }
        }
    }
}

// vec4 loads along M (tn): a is stored (K, M), so one vec4 holds 4 consecutive rows of op(a) at
// one kk; R is a multiple of 4 and so is M, so a tile's rows are whole vec4s (clamped as vec4s).
fn product4_tn(tl: Tile, acc: ptr<function, array<vec4<f32>, R>>) {
    let m4 = p.m / 4u;
    let n4 = p.n / 4u;
    let ra = tl.batch * p.stride_a / 4u;
    let cb = (tl.batch * p.stride_b + tl.col) / 4u;
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
        let bv = b4[cb + kk * n4];
        let oa = ra + kk * m4;
        for (var q = 0u; q < R / 4u; q = q + 1u) {
            let av = a4[oa + min(tl.row0 / 4u + q, m4 - 1u)];
            (*acc)[4u * q] = (*acc)[4u * q] + av.x * bv;
            (*acc)[4u * q + 1u] = (*acc)[4u * q + 1u] + av.y * bv;
            (*acc)[4u * q + 2u] = (*acc)[4u * q + 2u] + av.z * bv;
            (*acc)[4u * q + 3u] = (*acc)[4u * q + 3u] + av.w * bv;
        }
    }
}

@compute @workgroup_size(LANES)
fn matmul(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let tl = tile_of(id, lid);
    if (!tl.live) { return; }
    var acc: array<vec4<f32>, R>;
    product(tl, &acc);
    store(tl, &acc);
}

// matmul over vec4 views, used when every row read is a whole number of vec4s (nn, nt: K and N
// multiples of 4; tn: M and N multiples of 4). The two widths stay two entry points because an
// entry point may not bind one buffer as both f32 and vec4 arrays (WGSL's resource interface).
@compute @workgroup_size(LANES)
fn matmul4(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let tl = tile_of(id, lid);
    if (!tl.live) { return; }
    var acc: array<vec4<f32>, R>;
    if (TRANS_A) {
        product4_tn(tl, &acc);
    } else {
        product4(tl, &acc);
    }
    store4(tl, &acc);
}

// The GPU-shaped variant (`matmul_*_tiled`), for adapters with real workgroup memory: the
// staged-tile product of common/gemm_tile.wgsl (TM x TM = 64 x 64 output tiles, 4 x 4 per
// invocation, steps of TK = 16 along K) over op(a) and op(b), each invocation staging 4
// elements of each slice per step with neighbouring invocations on neighbouring addresses of
// whichever dimension the layout stores contiguously. Out-of-range rows, columns and K are
// staged as zeros and skipped at the store; any M, N, K, layout and batch stride.
@compute @workgroup_size(TILE_LANES)
fn matmul_tiled(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let tiles_m = (p.m + TM - 1u) / TM;
    let tiles_n = (p.n + TM - 1u) / TM;
    let t = workgroup_linear(id);
    let bt = t / (tiles_m * tiles_n);
    if (bt >= p.batch) { return; } // whole workgroups only (a folded grid's spare ones)
    let r = t % (tiles_m * tiles_n);
    let row0 = (r / tiles_n) * TM;
    let col0 = (r % tiles_n) * TM;
    let q4 = TM / 4u; // vec4s per staged row
    let tx = lid % q4;
    let ty = lid / q4;
    // op(a)[row][kk] is a[row sa.x + kk sa.y], op(b)[kk][col] is b[col sb.x + kk sb.y].
    let sa = select(vec2<u32>(p.k, 1u), vec2<u32>(1u, p.m), TRANS_A);
    let sb = select(vec2<u32>(1u, p.n), vec2<u32>(p.k, 1u), TRANS_B);
    let ab = bt * p.stride_a;
    let bb = bt * p.stride_b;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 = k0 + TK) {
        for (var e = lid; e < TK * TM; e = e + TILE_LANES) {
            // a: along K when a is (M, K), along M when it is stored (K, M).
            let ia = select(vec2<u32>(e / TK, e % TK), vec2<u32>(e % TM, e / TM), TRANS_A); // (row, kk)
            let ra = row0 + ia.x;
            let ka = k0 + ia.y;
            var va = 0.0;
            if (ra < p.m && ka < p.k) { va = a[ab + ra * sa.x + ka * sa.y]; }
            stage_a(ia.x, ia.y, va);
            // b: along N when b is (K, N), along K when it is stored (N, K).
            let ib = select(vec2<u32>(e % TM, e / TM), vec2<u32>(e / TK, e % TK), TRANS_B); // (col, kk)
            let cb = col0 + ib.x;
            let kb = k0 + ib.y;
            var vb = 0.0;
            if (cb < p.n && kb < p.k) { vb = b[bb + cb * sb.x + kb * sb.y]; }
            stage_b(ib.y, ib.x, vb);
        }
        workgroupBarrier();
        tile_product(tx, ty, &acc);
        workgroupBarrier();
    }
    let col = col0 + 4u * tx;
    var bv = vec4<f32>(0.0);
    if (p.has_bias != 0u) {
        for (var j = 0u; j < 4u; j = j + 1u) {
            if (col + j < p.n) { bv[j] = bias[col + j]; }
        }
    }
    let base = bt * p.stride_out;
    for (var i = 0u; i < 4u; i = i + 1u) {
        let row = row0 + 4u * ty + i;
        if (row < p.m) {
            let v = acc[i] + bv;
            for (var j = 0u; j < 4u; j = j + 1u) {
                if (col + j < p.n) { epilogue(base + row * p.n + col + j, v[j]); }
            }
        }
    }
}

// dbias (N,) += column sums of dout (M, N), over the batch too.
// One invocation per column; rows are walked in order so neighbouring invocations read
// neighbouring addresses.
@compute @workgroup_size(LANES)
fn matmul_bwd_bias(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let j = workgroup_linear(id) * LANES + lid;
    if (j >= p.n) { return; }
    var acc = 0.0;
    for (var bt = 0u; bt < p.batch; bt = bt + 1u) {
        let base = bt * p.stride_out;
        for (var i = 0u; i < p.m; i = i + 1u) { acc = acc + dout[base + i * p.n + j]; }
    }
    dbias[j] = dbias[j] + acc;
}
