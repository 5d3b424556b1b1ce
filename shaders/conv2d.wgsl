// 2-D convolution with bias, NCHW: kernel K = 3 (padding 1) or 1 (padding 0), stride 1 or 2,
// and its backward; checked against src/reference/conv2d.rs (same names, same contract). Saved
// for backward: only the input x and the weight. Overwritten: out, dx; accumulated: dweight,
// dbias. Every kernel is an implicit GEMM (no im2col), deterministic; the launcher
// (src/ops/conv2d.rs) picks the entry from the shape and the scheme (rows or tiled) by
// measurement.

// Bindings (group 0; placeholders where the params' flag is 0):
//   conv2d_fwd(_v4):              x (read), weight (read), bias (read, has_bias), out (write),
//                                 res (read, has_res: added to out, a residual connection)
//   conv2d_bwd_input(_v4):        dout (read), weight (read), dx (write), dres (read, has_res:
//                                 added to dx, the other branch's gradient)
//   conv2d_bwd_weight(_k1, _v4):  dout (read), x_saved (read), dweight (read_write)
//   conv2d_bwd_bias:              dout (read), dbias (read_write)
// The *_tiled entries (the GPU-shaped scheme, below) bind as their plain namesakes.
// Group 1: Params (declared in ops/conv2d.rs).

@group(1) @binding(0) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@group(0) @binding(4) var<storage, read> res: array<f32>;

@group(0) @binding(0) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
@group(0) @binding(3) var<storage, read> dres: array<f32>;

// The forward input, bound second in bwd_weight (binding 0 is dout there).
@group(0) @binding(1) var<storage, read> x_saved: array<f32>;
@group(0) @binding(2) var<storage, read_write> dweight: array<f32>;

@group(0) @binding(1) var<storage, read_write> dbias: array<f32>;

// vec4 views for the stride-1 kernels (W a multiple of 4, so every image row is whole vec4s).
// img4 is the image being convolved: x in conv2d_fwd_v4, dout in conv2d_bwd_input_v4.
@group(0) @binding(0) var<storage, read> img4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dx4: array<vec4<f32>>;
@group(0) @binding(0) var<storage, read> dout4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> x_saved4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> res4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> dres4: array<vec4<f32>>;

// How the kernels are split: the way matmul.wgsl explains for CPU-backed adapters (lavapipe,
// SwiftShader): one operand's loads depend only on the workgroup id and loop counters, and each
// load feeds many multiply-adds. Measured on lavapipe, the number of load instructions per
// multiply-add is what sets the speed. Each weight-gradient element is summed by one invocation
// in a fixed order, and the bias gradient by a fixed tree: results are deterministic (WGSL has
// no float atomics anyway). Rows and pixels past the edge are clamped for loading and skipped at
// the store. The linear workgroup id (workgroup_linear) enumerates the tiles, so grids above
// 65,535 workgroups fold like every other op. Limits: at most 64 invocations per workgroup and
// 256 bytes of workgroup memory (WebGPU defaults allow 256 and 16 KiB); the tiled scheme (at
// the end) takes 256 and 8 KiB.
//
// Tile sizes, declared in ops/conv2d.rs with Params: `const` where the value sizes an array,
// `override` (set at pipeline creation) for the workgroup sizes.
//   fwd / bwd_input: R channels per workgroup, LANES invocations, 4 LANES pixels per workgroup.
//   bwd_weight(_k1): WL invocations (2 output channels each: co0 + lid, co0 + lid + WL, so 2 WL
//     per workgroup); WCI3 input channels per workgroup for K = 3, WCI1 for K = 1.
//   Stride-1 vec4 kernels: RV channels per workgroup and PV pixels per invocation (one row
//     segment) in fwd_v4 / bwd_input_v4 (LANES invocations); RW output channels per workgroup
//     and WLV invocations (one input channel each) in bwd_weight_v4.
//   bwd_bias: BL invocations.

// --- fwd -------------------------------------------------------------------------------------

// out (B, Cout, Ho, Wo) = conv(x, weight) + bias, overwritten. Weight layout (Cout, Cin, K, K)
// as PyTorch. GEMM (Cout) x (B Ho Wo) over Cin K K. A workgroup owns R = 16 output channels
// (weight loads uniform); each of its 64 invocations owns 4 consecutive output pixels (4
// divergent loads of x per (ci, tap) for 64 multiply-adds). The padding masks and addresses of
// a tap are computed once and reused for every ci.
@compute @workgroup_size(LANES)
fn conv2d_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let plane = p.ho * p.wo;
    let npix = p.b * plane;
    let tiles_m = (p.cout + R - 1u) / R;
    let t = workgroup_linear(id);
    let co0 = (t % tiles_m) * R;
    let col = (t / tiles_m) * 4u * LANES + lid * 4u;
    if (col >= npix) { return; }

    // This invocation's 4 output pixels (clamped into the batch for loading).
    let c = min(vec4<u32>(col) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(npix - 1u));
    let bb = c / plane;
    let q = c % plane;
    let iy0 = vec4<i32>((q / p.wo) * p.stride) - vec4<i32>(i32(p.pad));
    let ix0 = vec4<i32>((q % p.wo) * p.stride) - vec4<i32>(i32(p.pad));
    let xb = bb * (p.cin * p.h * p.w);

    let hw = p.h * p.w;
    let kk = p.k * p.k;
    let wrow = p.cin * kk;
    var acc: array<vec4<f32>, R>;
    for (var ky = 0u; ky < p.k; ky = ky + 1u) {
        let iy = iy0 + vec4<i32>(i32(ky));
        let vy = (iy >= vec4<i32>(0)) & (iy < vec4<i32>(i32(p.h)));
        for (var kx = 0u; kx < p.k; kx = kx + 1u) {
            let ix = ix0 + vec4<i32>(i32(kx));
            let valid = vy & (ix >= vec4<i32>(0)) & (ix < vec4<i32>(i32(p.w)));
            let off = select(vec4<u32>(0u), xb + vec4<u32>(iy) * p.w + vec4<u32>(ix), valid);
            let m = select(vec4<f32>(0.0), vec4<f32>(1.0), valid);
            let tap = ky * p.k + kx;
            for (var ci = 0u; ci < p.cin; ci = ci + 1u) {
                let o = off + vec4<u32>(ci * hw);
                let xv = vec4<f32>(x[o.x], x[o.y], x[o.z], x[o.w]) * m;
                let wt = ci * kk + tap;
                for (var i = 0u; i < R; i = i + 1u) {
                    acc[i] = acc[i] + weight[min(co0 + i, p.cout - 1u) * wrow + wt] * xv;
                }
            }
        }
    }

    let ob = bb * (p.cout * plane) + q;
    for (var i = 0u; i < R; i = i + 1u) {
        let co = co0 + i;
        if (co < p.cout) {
            var v = acc[i];
            if (p.has_bias != 0u) { v = v + vec4<f32>(bias[co]); }
            for (var j = 0u; j < 4u; j = j + 1u) {
                let k = ob[j] + co * plane;
                if (col + j < npix) {
                    if (p.has_res != 0u) { out[k] = v[j] + res[k]; } else { out[k] = v[j]; }
                }
            }
        }
    }
}

// --- bwd_input -------------------------------------------------------------------------------

// dx (B, Cin, H, W) = conv^T(dout, weight), overwritten: the transposed convolution in gather
// form (no atomics): GEMM (Cin) x (B H W) over Cout K K, split like fwd with R = 16 input
// channels per workgroup. Input pixels are grouped by parity class (iy mod stride, ix mod
// stride), one class per workgroup, so the taps that reach a pixel are the same for the whole
// workgroup and at stride 2 only those (1, 2 or 4 of 9) are visited.
@compute @workgroup_size(LANES)
fn conv2d_bwd_input(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let s = p.stride;
    // Pixels of parity class (py, px) are iy = s * yq + py, ix = s * xq + px; every class is
    // enumerated over the largest class's (hc, wc) grid and pixels past the image are skipped.
    let hc = (p.h + s - 1u) / s;
    let wc = (p.w + s - 1u) / s;
    let ncls = p.b * hc * wc;
    let tiles_m = (p.cin + R - 1u) / R;
    let t = workgroup_linear(id);
    let ci0 = (t % tiles_m) * R;
    let rest = t / tiles_m;
    let cls = rest % (s * s);
    let py = cls / s;
    let px = cls % s;
    let col = (rest / (s * s)) * 4u * LANES + lid * 4u;
    if (col >= ncls) { return; }

    let c = min(vec4<u32>(col) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(ncls - 1u));
    let bb = c / (hc * wc);
    let yq = (c % (hc * wc)) / wc;
    let xq = c % wc;
    let plane = p.ho * p.wo;
    let gb = bb * (p.cout * plane);

    let kk = p.k * p.k;
    var acc: array<vec4<f32>, R>;
    for (var ky = 0u; ky < p.k; ky = ky + 1u) {
        // Output row oy reads iy at tap ky when oy s + ky - pad = iy, i.e. oy = yq + dy / s.
        let dy = i32(py + p.pad) - i32(ky);
        if (dy % i32(s) != 0) { continue; }
        let oy = vec4<i32>(yq) + vec4<i32>(dy / i32(s));
        let vy = (oy >= vec4<i32>(0)) & (oy < vec4<i32>(i32(p.ho)));
        for (var kx = 0u; kx < p.k; kx = kx + 1u) {
            let dxx = i32(px + p.pad) - i32(kx);
            if (dxx % i32(s) != 0) { continue; }
            let ox = vec4<i32>(xq) + vec4<i32>(dxx / i32(s));
            let valid = vy & (ox >= vec4<i32>(0)) & (ox < vec4<i32>(i32(p.wo)));
            let off = select(vec4<u32>(0u), gb + vec4<u32>(oy) * p.wo + vec4<u32>(ox), valid);
            let m = select(vec4<f32>(0.0), vec4<f32>(1.0), valid);
            let tap = ky * p.k + kx;
            for (var co = 0u; co < p.cout; co = co + 1u) {
                let o = off + vec4<u32>(co * plane);
                let g = vec4<f32>(dout[o.x], dout[o.y], dout[o.z], dout[o.w]) * m;
                let wt = co * p.cin * kk + tap;
                for (var i = 0u; i < R; i = i + 1u) {
                    acc[i] = acc[i] + weight[wt + min(ci0 + i, p.cin - 1u) * kk] * g;
                }
            }
        }
    }

    let iy = yq * s + vec4<u32>(py);
    let ix = xq * s + vec4<u32>(px);
    let live = (vec4<u32>(col) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(ncls))
        & (iy < vec4<u32>(p.h)) & (ix < vec4<u32>(p.w));
    let hw = p.h * p.w;
    let db = bb * (p.cin * hw) + iy * p.w + ix;
    for (var i = 0u; i < R; i = i + 1u) {
        let ci = ci0 + i;
        if (ci < p.cin) {
            for (var j = 0u; j < 4u; j = j + 1u) {
                let k = db[j] + ci * hw;
                if (live[j]) {
                    if (p.has_res != 0u) { dx[k] = acc[i][j] + dres[k]; } else { dx[k] = acc[i][j]; }
                }
            }
        }
    }
}

// --- bwd_weight ------------------------------------------------------------------------------

// The channels of a bwd_weight workgroup of `wci` input channels: input channels ci0 ..
// ci0 + wci - 1 and output channels (co0 + lid, co0 + lid + WL), the tiles enumerated input
// tile fastest; the output channels clamped for loading, and whether each is stored.
struct WeightCols {
    ci0: u32,
    co: vec2<u32>,
    load: vec2<u32>,
    live: vec2<bool>,
}

fn weight_cols(id: Grid, lid: u32, wci: u32) -> WeightCols {
    let tiles_ci = (p.cin + wci - 1u) / wci;
    let t = workgroup_linear(id);
    let co0 = (t / tiles_ci) * 2u * WL;
    var wc: WeightCols;
    wc.ci0 = (t % tiles_ci) * wci;
    wc.co = vec2<u32>(co0 + lid, co0 + lid + WL);
    wc.load = min(wc.co, vec2<u32>(p.cout - 1u));
    wc.live = wc.co < vec2<u32>(p.cout);
    return wc;
}

// dweight (Cout, Cin, 3, 3) += sum_{b,oy,ox} dout * shifted x, accumulated (conv2d_bwd_weight_k1:
// the same for K = 1). GEMM (Cout) x (Cin K K) over B Ho Wo. The reduction runs over pixels in
// a workgroup-uniform loop: a workgroup owns WCI input channels (x loads uniform, and so are the
// padding tests) and each invocation owns 2 output channels (2 divergent loads of dout per
// pixel).
// K = 3: a workgroup owns WCI3 = 4 input channels (one vec4 of x per tap) and 2 WL output
// channels; per pixel 2 divergent loads of dout and 36 uniform loads of x feed 72 multiply-adds.
// The tap loops have constant bounds so the accumulators stay in registers.
@compute @workgroup_size(WL)
fn conv2d_bwd_weight(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let wc = weight_cols(id, lid, WCI3);
    if (!any(wc.live)) { return; }
    let ci0 = wc.ci0;

    let hw = p.h * p.w;
    let plane = p.ho * p.wo;
    let xc = min(vec4<u32>(ci0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.cin - 1u)) * hw;
    let pad = i32(p.pad);
    // acc[2 tap + j]: output channel j, input channels ci0 .. ci0 + 3.
    var acc: array<vec4<f32>, 18>;
    for (var b = 0u; b < p.b; b = b + 1u) {
        let xb = b * p.cin * hw;
        let g0 = b * p.cout * plane + wc.load.x * plane;
        let g1 = b * p.cout * plane + wc.load.y * plane;
        for (var oy = 0u; oy < p.ho; oy = oy + 1u) {
            let iy0 = i32(oy * p.stride) - pad;
            for (var ox = 0u; ox < p.wo; ox = ox + 1u) {
                let ix0 = i32(ox * p.stride) - pad;
                let q = oy * p.wo + ox;
                let g = vec2<f32>(dout[g0 + q], dout[g1 + q]);
                for (var ky = 0; ky < 3; ky = ky + 1) {
                    let iy = iy0 + ky;
                    if (iy < 0 || iy >= i32(p.h)) { continue; }
                    for (var kx = 0; kx < 3; kx = kx + 1) {
                        let ix = ix0 + kx;
                        if (ix < 0 || ix >= i32(p.w)) { continue; }
                        let o = vec4<u32>(xb + u32(iy) * p.w + u32(ix)) + xc;
                        let xv = vec4<f32>(x_saved[o.x], x_saved[o.y], x_saved[o.z], x_saved[o.w]);
                        let tap = ky * 3 + kx;
                        acc[2 * tap] = acc[2 * tap] + g.x * xv;
                        acc[2 * tap + 1] = acc[2 * tap + 1] + g.y * xv;
                    }
                }
            }
        }
    }

    for (var j = 0u; j < 2u; j = j + 1u) {
        if (wc.live[j]) {
            for (var c = 0u; c < WCI3; c = c + 1u) {
                let ci = ci0 + c;
                if (ci < p.cin) {
                    let base = (wc.co[j] * p.cin + ci) * 9u;
                    for (var tap = 0u; tap < 9u; tap = tap + 1u) {
                        dweight[base + tap] = dweight[base + tap] + acc[2u * tap + j][c];
                    }
                }
            }
        }
    }
}

// K = 1: no taps, so a workgroup owns WCI1 = 32 input channels; per pixel 2 divergent loads of
// dout and 32 uniform loads of x feed 64 multiply-adds.
@compute @workgroup_size(WL)
fn conv2d_bwd_weight_k1(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let wc = weight_cols(id, lid, WCI1);
    if (!any(wc.live)) { return; }
    let ci0 = wc.ci0;

    let hw = p.h * p.w;
    let plane = p.ho * p.wo;
    // acc[2 c + j]: output channel j, input channels ci0 + 4 c .. ci0 + 4 c + 3.
    var acc: array<vec4<f32>, WCI1 / 2u>;
    for (var b = 0u; b < p.b; b = b + 1u) {
        let xb = b * p.cin * hw;
        let g0 = b * p.cout * plane + wc.load.x * plane;
        let g1 = b * p.cout * plane + wc.load.y * plane;
        for (var oy = 0u; oy < p.ho; oy = oy + 1u) {
            for (var ox = 0u; ox < p.wo; ox = ox + 1u) {
                let q = oy * p.wo + ox;
                let g = vec2<f32>(dout[g0 + q], dout[g1 + q]);
                let xo = xb + (oy * p.stride) * p.w + ox * p.stride;
                for (var c = 0u; c < WCI1 / 4u; c = c + 1u) {
                    let ci = min(vec4<u32>(ci0 + 4u * c) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.cin - 1u));
                    let o = vec4<u32>(xo) + ci * hw;
                    let xv = vec4<f32>(x_saved[o.x], x_saved[o.y], x_saved[o.z], x_saved[o.w]);
                    acc[2u * c] = acc[2u * c] + g.x * xv;
                    acc[2u * c + 1u] = acc[2u * c + 1u] + g.y * xv;
                }
            }
        }
    }

    for (var j = 0u; j < 2u; j = j + 1u) {
        if (wc.live[j]) {
            for (var c = 0u; c < WCI1; c = c + 1u) {
                let ci = ci0 + c;
                if (ci < p.cin) {
                    let i = wc.co[j] * p.cin + ci;
                    dweight[i] = dweight[i] + acc[2u * (c / 4u) + j][c % 4u];
                }
            }
        }
    }
}

// --- stride 1, W a multiple of 4 ---------------------------------------------------------------

// conv2d_fwd_v4, conv2d_bwd_input_v4, conv2d_bwd_weight_v4 (K = 3 only): the same as the plain
// kernels for stride 1 with W a multiple of 4, reading whole image rows as vec4s. An invocation
// owns a row segment of PV = 8 pixels: per (channel, ky) the 10 input pixels it needs (8 plus
// one each side) are 4 vec4 loads serving all 3 taps, against RV = 8 x 3 uniform weights: 192
// multiply-adds per 28 loads (fwd: 64 per 20). bwd_input_v4 is the same convolution over dout
// with the adjoint (flipped, transposed) weight, which stride 1 with padding K / 2 allows.
// bwd_weight_v4: a workgroup owns RW = 8 output channels (uniform vec4s of dout) and each
// invocation one input channel; per 4-pixel chunk 8 + 9 vec4 loads feed 288 multiply-adds.

// A row segment of PV output pixels (ox0 .. ox0 + PV - 1 of row oy in image b), and the first
// of the RV channels the workgroup computes.
struct Seg {
    b: u32,
    oy: u32,
    ox0: u32,
    row0: u32,
    live: bool,
}

fn seg_of(id: Grid, lid: u32, rows: u32) -> Seg {
    let spr = (p.w + PV - 1u) / PV;
    let nseg = p.b * p.h * spr;
    let tiles_m = (rows + RV - 1u) / RV;
    let t = workgroup_linear(id);
    var sg: Seg;
    sg.row0 = (t % tiles_m) * RV;
    let g = (t / tiles_m) * LANES + lid;
    sg.live = g < nseg;
    let gc = min(g, nseg - 1u);
    sg.b = gc / (p.h * spr);
    sg.oy = (gc / spr) % p.h;
    sg.ox0 = (gc % spr) * PV;
    return sg;
}

// A stride-1 "same" convolution of img4 (B, chans, H, W) producing `rows` channels, for one
// row segment: returns acc[2 r + h] = pixels ox0 + 4 h .. ox0 + 4 h + 3 of channel row0 + r.
// Per (channel, ky) the segment's 10 input pixels (8 + one each side) are 4 vec4 loads and
// serve all 3 taps; the RV x 3 weights are workgroup-uniform. `transposed` reads the weight as
// the adjoint (bwd_input: rows = Cin, chans = Cout, kernel flipped).
fn conv_rows_v4(sg: Seg, rows: u32, chans: u32, transposed: bool) -> array<vec4<f32>, 2u * RV> {
    let w4 = p.w / 4u;
    let q0 = sg.ox0 / 4u;
    // Neighbour vec4s, clamped into the row, and masks that zero the padding.
    let ql = select(q0, q0 - 1u, sg.ox0 > 0u);
    let q1 = min(q0 + 1u, w4 - 1u);
    let qr = min(q0 + 2u, w4 - 1u);
    let ml = select(0.0, 1.0, sg.ox0 > 0u);
    let m1 = select(0.0, 1.0, sg.ox0 + 4u < p.w);
    let mr = select(0.0, 1.0, sg.ox0 + 8u < p.w);
    let kk = p.k * p.k;
    var acc: array<vec4<f32>, 2u * RV>;
    for (var ky = 0u; ky < p.k; ky = ky + 1u) {
        let iy = i32(sg.oy + ky) - i32(p.pad);
        if (iy < 0 || iy >= i32(p.h)) { continue; }
        for (var c = 0u; c < chans; c = c + 1u) {
            let rb = ((sg.b * chans + c) * p.h + u32(iy)) * w4;
            let v0 = img4[rb + q0];
            let v1 = img4[rb + q1] * m1;
            if (p.k == 3u) {
                let xl = img4[rb + ql].w * ml;
                let xr = img4[rb + qr].x * mr;
                // Taps kx = 0, 1, 2 read pixels ox - 1, ox, ox + 1.
                let a0 = vec4<f32>(xl, v0.xyz);
                let a2 = vec4<f32>(v0.yzw, v1.x);
                let b0 = vec4<f32>(v0.w, v1.xyz);
                let b2 = vec4<f32>(v1.yzw, xr);
                for (var r = 0u; r < RV; r = r + 1u) {
                    let row = min(sg.row0 + r, rows - 1u);
                    var i0: u32;
                    var i2: u32;
                    if (transposed) {
                        i2 = (c * rows + row) * 9u + (2u - ky) * 3u;
                        i0 = i2 + 2u;
                    } else {
                        i0 = (row * chans + c) * 9u + ky * 3u;
                        i2 = i0 + 2u;
                    }
                    let w0 = weight[i0];
                    let w1 = weight[min(i0, i2) + 1u];
                    let w2 = weight[i2];
                    acc[2u * r] = acc[2u * r] + w0 * a0 + w1 * v0 + w2 * a2;
                    acc[2u * r + 1u] = acc[2u * r + 1u] + w0 * b0 + w1 * v1 + w2 * b2;
                }
            } else {
                for (var r = 0u; r < RV; r = r + 1u) {
                    let row = min(sg.row0 + r, rows - 1u);
                    let wv = weight[select(row * chans + c, c * rows + row, transposed)];
                    acc[2u * r] = acc[2u * r] + wv * v0;
                    acc[2u * r + 1u] = acc[2u * r + 1u] + wv * v1;
                }
            }
        }
    }
    return acc;
}

@compute @workgroup_size(LANES)
fn conv2d_fwd_v4(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let sg = seg_of(id, lid, p.cout);
    if (!sg.live) { return; }
    let acc = conv_rows_v4(sg, p.cout, p.cin, false);
    let w4 = p.w / 4u;
    let second = sg.ox0 + 4u < p.w;
    for (var r = 0u; r < RV; r = r + 1u) {
        let co = sg.row0 + r;
        if (co < p.cout) {
            var bv = vec4<f32>(0.0);
            if (p.has_bias != 0u) { bv = vec4<f32>(bias[co]); }
            let o = ((sg.b * p.cout + co) * p.h + sg.oy) * w4 + sg.ox0 / 4u;
            var r0 = vec4<f32>(0.0);
            var r1 = vec4<f32>(0.0);
            if (p.has_res != 0u) {
                r0 = res4[o];
                if (second) { r1 = res4[o + 1u]; }
            }
            out4[o] = acc[2u * r] + bv + r0;
            if (second) { out4[o + 1u] = acc[2u * r + 1u] + bv + r1; }
        }
    }
}

@compute @workgroup_size(LANES)
fn conv2d_bwd_input_v4(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let sg = seg_of(id, lid, p.cin);
    if (!sg.live) { return; }
    let acc = conv_rows_v4(sg, p.cin, p.cout, true);
    let w4 = p.w / 4u;
    let second = sg.ox0 + 4u < p.w;
    for (var r = 0u; r < RV; r = r + 1u) {
        let ci = sg.row0 + r;
        if (ci < p.cin) {
            let o = ((sg.b * p.cin + ci) * p.h + sg.oy) * w4 + sg.ox0 / 4u;
            if (p.has_res != 0u) {
                dx4[o] = acc[2u * r] + dres4[o];
                if (second) { dx4[o + 1u] = acc[2u * r + 1u] + dres4[o + 1u]; }
            } else {
                dx4[o] = acc[2u * r];
                if (second) { dx4[o + 1u] = acc[2u * r + 1u]; }
            }
        }
    }
}

// K = 3 only (K = 1 takes conv2d_bwd_weight_k1). A workgroup owns RW output channels (their
// dout vec4s are workgroup-uniform) and each of its WLV invocations one input channel; the loop
// walks every 4-pixel chunk of every row, loading per chunk RW uniform vec4s of dout and, per
// ky, 3 vec4s of x that serve all 3 taps, for RW x 9 x 4 multiply-adds.
@compute @workgroup_size(WLV)
fn conv2d_bwd_weight_v4(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let tiles_ci = (p.cin + WLV - 1u) / WLV;
    let t = workgroup_linear(id);
    let ci = (t % tiles_ci) * WLV + lid;
    let co0 = (t / tiles_ci) * RW;
    if (ci >= p.cin || co0 >= p.cout) { return; }
    let w4 = p.w / 4u;
    // acc[9 r + tap]
    var acc: array<f32, 9u * RW>;
    for (var b = 0u; b < p.b; b = b + 1u) {
        for (var oy = 0u; oy < p.h; oy = oy + 1u) {
            for (var q = 0u; q < w4; q = q + 1u) {
                var g: array<vec4<f32>, RW>;
                for (var r = 0u; r < RW; r = r + 1u) {
                    g[r] = dout4[((b * p.cout + min(co0 + r, p.cout - 1u)) * p.h + oy) * w4 + q];
                }
                let ml = select(0.0, 1.0, q > 0u);
                let mr = select(0.0, 1.0, q + 1u < w4);
                let ql = select(q, q - 1u, q > 0u);
                let qr = min(q + 1u, w4 - 1u);
                for (var ky = 0u; ky < 3u; ky = ky + 1u) {
                    let iy = i32(oy + ky) - 1;
                    if (iy < 0 || iy >= i32(p.h)) { continue; }
                    let rb = ((b * p.cin + ci) * p.h + u32(iy)) * w4;
                    let v = x_saved4[rb + q];
                    let s0 = vec4<f32>(x_saved4[rb + ql].w * ml, v.xyz);
                    let s2 = vec4<f32>(v.yzw, x_saved4[rb + qr].x * mr);
                    for (var r = 0u; r < RW; r = r + 1u) {
                        acc[9u * r + 3u * ky] = acc[9u * r + 3u * ky] + dot(g[r], s0);
                        acc[9u * r + 3u * ky + 1u] = acc[9u * r + 3u * ky + 1u] + dot(g[r], v);
                        acc[9u * r + 3u * ky + 2u] = acc[9u * r + 3u * ky + 2u] + dot(g[r], s2);
                    }
                }
            }
        }
    }

    for (var r = 0u; r < RW; r = r + 1u) {
        let co = co0 + r;
        if (co < p.cout) {
            let base = (co * p.cin + ci) * 9u;
            for (var tap = 0u; tap < 9u; tap = tap + 1u) {
                dweight[base + tap] = dweight[base + tap] + acc[9u * r + tap];
            }
        }
    }
}

// --- tiled (GPU-shaped) -----------------------------------------------------------------------

// conv2d_fwd_tiled, conv2d_bwd_input_tiled, conv2d_bwd_weight_tiled: the same three products as
// implicit GEMMs on the staged tiles of common/gemm_tile.wgsl (64 x 64 output tiles, 4 x 4 per
// invocation, steps of TK = 16 along the reduction), for adapters with real workgroup memory.
// The im2col operand is gathered on the fly into workgroup memory (no im2col buffer): padding
// and pixels past the edge are staged as zeros. The tensors stay NCHW, the model's layout (the
// other kernels of a step, GroupNorm, attention, resampling, read it), so the gathers walk
// pixels: a GEMM column is an output pixel (fwd) or input pixel (bwd_input), and the reduction
// of bwd_weight runs over pixels; neighbouring invocations stage neighbouring pixels, which
// are neighbouring addresses at stride 1. Since TILE_LANES is a multiple of TM, an invocation
// stages the same column (lid % TM) of B at every step, decoded once.
//   fwd:        out (Cout) x (B Ho Wo) over (Cin K K): A = weight, B = x gathered.
//   bwd_input:  dx (Cin) x (B H W) over (Cout taps): A = weight transposed, B = dout gathered;
//               per parity class of the input pixel, as conv2d_bwd_input, so at stride 2 only
//               the taps that reach the class are in the reduction.
//   bwd_weight: dweight (Cout) x (Cin K K) over (B Ho Wo): A = dout, B = x gathered; one
//               invocation sums each element, in a fixed order (deterministic).

// The first row and column of tile t of an output with `cols` columns (column tile fastest);
// row0 past the rows for a folded grid's spare workgroups (uniform).
fn tile_origin(t: u32, cols: u32) -> vec2<u32> {
    let tiles_n = (cols + TM - 1u) / TM;
    return vec2<u32>((t / tiles_n) * TM, (t % tiles_n) * TM);
}

@compute @workgroup_size(TILE_LANES)
fn conv2d_fwd_tiled(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let plane = p.ho * p.wo;
    let npix = p.b * plane;
    let o = tile_origin(workgroup_linear(id), npix);
    if (o.x >= p.cout) { return; }
    let kk = p.k * p.k;
    let kdim = p.cin * kk;
    // The pixel this invocation stages, clamped for decoding.
    let sc = o.y + lid % TM;
    let scc = min(sc, npix - 1u);
    let iy0 = i32((scc % plane / p.wo) * p.stride) - i32(p.pad);
    let ix0 = i32((scc % plane % p.wo) * p.stride) - i32(p.pad);
    let xb = (scc / plane) * p.cin * p.h * p.w;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < kdim; k0 = k0 + TK) {
        for (var e = lid; e < TK * TM; e = e + TILE_LANES) {
            // weight (Cout, Cin K K) is contiguous along the reduction: neighbours along kk.
            let co = o.x + e / TK;
            let ka = k0 + e % TK;
            var va = 0.0;
            if (co < p.cout && ka < kdim) { va = weight[co * kdim + ka]; }
            stage_a(e / TK, e % TK, va);
            let kb = k0 + e / TM;
            var vb = 0.0;
            if (sc < npix && kb < kdim) {
                let tap = kb % kk;
                let iy = iy0 + i32(tap / p.k);
                let ix = ix0 + i32(tap % p.k);
                if (iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
                    vb = x[xb + (kb / kk) * p.h * p.w + u32(iy) * p.w + u32(ix)];
                }
            }
            stage_b(e / TM, lid % TM, vb);
        }
        workgroupBarrier();
        tile_product(lid % (TM / 4u), lid / (TM / 4u), &acc);
        workgroupBarrier();
    }
    let ty = lid / (TM / 4u);
    for (var j = 0u; j < 4u; j = j + 1u) {
        let c = o.y + 4u * (lid % (TM / 4u)) + j;
        if (c < npix) {
            let ob = (c / plane) * p.cout * plane + c % plane;
            for (var i = 0u; i < 4u; i = i + 1u) {
                let co = o.x + 4u * ty + i;
                if (co < p.cout) {
                    var v = acc[i][j];
                    if (p.has_bias != 0u) { v = v + bias[co]; }
                    let k = ob + co * plane;
                    if (p.has_res != 0u) { v = v + res[k]; }
                    out[k] = v;
                }
            }
        }
    }
}

@compute @workgroup_size(TILE_LANES)
fn conv2d_bwd_input_tiled(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let s = p.stride;
    // Parity classes as in conv2d_bwd_input: pixels iy = s yq + py, ix = s xq + px over the
    // largest class's (hc, wc) grid; the class is the workgroup's, after its column tile.
    let hc = (p.h + s - 1u) / s;
    let wc = (p.w + s - 1u) / s;
    let ncls = p.b * hc * wc;
    let tiles_n = (ncls + TM - 1u) / TM;
    let t = workgroup_linear(id);
    let cls = (t / tiles_n) % (s * s);
    let o = tile_origin((t / tiles_n / (s * s)) * tiles_n + t % tiles_n, ncls);
    if (o.x >= p.cin) { return; }
    let py = cls / s;
    let px = cls % s;
    // The taps reaching the class: ky = ky0 + s i (i < nty), kx = kx0 + s j (j < ntx).
    let ky0 = (py + p.pad) % s;
    let kx0 = (px + p.pad) % s;
    let ntx = (p.k - kx0 + s - 1u) / s;
    let ntap = ((p.k - ky0 + s - 1u) / s) * ntx;
    let kdim = p.cout * ntap;
    let kk = p.k * p.k;
    let plane = p.ho * p.wo;
    // The pixel this invocation stages, clamped for decoding.
    let sc = o.y + lid % TM;
    let scc = min(sc, ncls - 1u);
    let bb = scc / (hc * wc);
    let iy = (scc % (hc * wc)) / wc * s + py;
    let ix = scc % wc * s + px;
    let live = sc < ncls && iy < p.h && ix < p.w;
    let gb = bb * p.cout * plane;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < kdim; k0 = k0 + TK) {
        for (var e = lid; e < TK * TM; e = e + TILE_LANES) {
            // A[ci][(co, tap)] = weight[co][ci][tap]: neighbours along ci.
            let ci = o.x + e % TM;
            let ka = k0 + e / TM;
            var va = 0.0;
            if (ci < p.cin && ka < kdim) {
                let ti = ka % ntap;
                let tap = (ky0 + s * (ti / ntx)) * p.k + kx0 + s * (ti % ntx);
                va = weight[((ka / ntap) * p.cin + ci) * kk + tap];
            }
            stage_a(e % TM, e / TM, va);
            // Output pixel oy reads iy at tap ky when oy s + ky - pad = iy (exact by the class).
            let kb = k0 + e / TM;
            var vb = 0.0;
            if (live && kb < kdim) {
                let ti = kb % ntap;
                let oy = (i32(iy + p.pad) - i32(ky0 + s * (ti / ntx))) / i32(s);
                let ox = (i32(ix + p.pad) - i32(kx0 + s * (ti % ntx))) / i32(s);
                if (oy >= 0 && oy < i32(p.ho) && ox >= 0 && ox < i32(p.wo)) {
                    vb = dout[gb + (kb / ntap) * plane + u32(oy) * p.wo + u32(ox)];
                }
            }
            stage_b(e / TM, lid % TM, vb);
        }
        workgroupBarrier();
        tile_product(lid % (TM / 4u), lid / (TM / 4u), &acc);
        workgroupBarrier();
    }
    let ty = lid / (TM / 4u);
    let hw = p.h * p.w;
    for (var j = 0u; j < 4u; j = j + 1u) {
        let c = o.y + 4u * (lid % (TM / 4u)) + j;
        let cy = (c % (hc * wc)) / wc * s + py;
        let cx = c % wc * s + px;
        if (c < ncls && cy < p.h && cx < p.w) {
            let db = (c / (hc * wc)) * p.cin * hw + cy * p.w + cx;
            for (var i = 0u; i < 4u; i = i + 1u) {
                let ci = o.x + 4u * ty + i;
                if (ci < p.cin) {
                    let k = db + ci * hw;
                    if (p.has_res != 0u) { dx[k] = acc[i][j] + dres[k]; } else { dx[k] = acc[i][j]; }
                }
            }
        }
    }
}

@compute @workgroup_size(TILE_LANES)
fn conv2d_bwd_weight_tiled(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let kk = p.k * p.k;
    let ncol = p.cin * kk;
    let o = tile_origin(workgroup_linear(id), ncol);
    if (o.x >= p.cout) { return; }
    let plane = p.ho * p.wo;
    let npix = p.b * plane;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < npix; k0 = k0 + TK) {
        for (var e = lid; e < TK * TM; e = e + TILE_LANES) {
            // Both operands walk pixels: neighbours along the reduction (kk = e % TK).
            let pix = k0 + e % TK;
            let r = e / TK;
            var va = 0.0;
            var vb = 0.0;
            if (pix < npix) {
                let bb = pix / plane;
                let q = pix % plane;
                let co = o.x + r;
                if (co < p.cout) { va = dout[(bb * p.cout + co) * plane + q]; }
                let c = o.y + r;
                let tap = c % kk;
                let iy = i32((q / p.wo) * p.stride + tap / p.k) - i32(p.pad);
                let ix = i32((q % p.wo) * p.stride + tap % p.k) - i32(p.pad);
                if (c < ncol && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
                    vb = x_saved[((bb * p.cin + c / kk) * p.h + u32(iy)) * p.w + u32(ix)];
                }
            }
            stage_a(r, e % TK, va);
            stage_b(e % TK, r, vb);
        }
        workgroupBarrier();
        tile_product(lid % (TM / 4u), lid / (TM / 4u), &acc);
        workgroupBarrier();
    }
    let ty = lid / (TM / 4u);
    for (var i = 0u; i < 4u; i = i + 1u) {
        let co = o.x + 4u * ty + i;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let c = o.y + 4u * (lid % (TM / 4u)) + j;
            if (co < p.cout && c < ncol) {
                let k = co * ncol + c;
                dweight[k] = dweight[k] + acc[i][j];
            }
        }
    }
}

// --- bwd_bias --------------------------------------------------------------------------------

var<workgroup> partial: array<f32, BL>;

// dbias (Cout,) += sum_{b,oy,ox} dout, accumulated: one workgroup per output channel, a strided
// sum and a workgroup-memory tree.
@compute @workgroup_size(BL)
fn conv2d_bwd_bias(id: Grid, @builtin(local_invocation_index) lid: u32) {
    // Uniform across the workgroup, so the barriers below are reached by all or none.
    let co = workgroup_linear(id);
    if (co >= p.cout) { return; }
    let plane = p.ho * p.wo;
    var acc = 0.0;
    for (var b = 0u; b < p.b; b = b + 1u) {
        let base = (b * p.cout + co) * plane;
        for (var i = lid; i < plane; i = i + BL) { acc = acc + dout[base + i]; }
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = BL / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { partial[lid] = partial[lid] + partial[lid + s]; }
        workgroupBarrier();
    }
    if (lid == 0u) { dbias[co] = dbias[co] + partial[0]; }
}
