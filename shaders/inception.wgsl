// The forward-only ops of the FID Inception-v3 network (src/eval/inception.rs), NCHW: a general
// convolution (KH x KW, stride, separate padding, bias, optional ReLU), max / average (padding
// excluded) / global average pooling, a channel-slice copy and the bilinear resize with its
// affine rescale; checked against src/reference/inception.rs. Nothing saved (no backward); every
// output overwritten, and every output but the resize's may be a channel window [c_off, c_off + C)
// of a tensor of c_total channels, so a block's concatenation costs nothing.

// Bindings (group 0, inputs first, outputs last):
//   conv_fwd:                    x (read), wpack (read), bias (read, has_bias), out (write)
//   maxpool_fwd, avgpool_fwd,
//   global_avgpool_fwd,
//   channel_copy,
//   resize_bilinear_fwd:         x (read), out (write)
// Shapes: x (B, Cin, H, W); out (B, c_total, Ho, Wo) written at channels c_off.. (global pool:
// Ho = Wo = 1); wpack (Cin KH KW, cout_pad), the weight (Cout, Cin, KH, KW) transposed and
// zero-padded to cout_pad = Cout rounded up to R (ops/inception.rs `pack_weight`).
// Group 1: Params. Params, R, LANES and WG are declared in ops/inception.rs.

@group(1) @binding(0) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> wpack: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@group(0) @binding(1) var<storage, read_write> dst: array<f32>;

// Index of (b, c, y, x) in the output window: channel c of C counts from p.c_off of p.c_total.
fn out_index(b: u32, c: u32, y: u32, xx: u32) -> u32 {
    return ((b * p.c_total + p.c_off + c) * p.ho + y) * p.wo + xx;
}

// --- conv_fwd --------------------------------------------------------------------------------

// out = act(conv(x, weight) + bias), act = ReLU when p.relu (a BasicConv2d with its BatchNorm
// folded into weight and bias). An implicit GEMM (Cout) x (B Ho Wo) over Cin KH KW, tiled for
// CPU-backed adapters the way conv2d.wgsl explains: a workgroup owns R output channels, each of
// its LANES invocations 4 consecutive output pixels in registers (R vec4 accumulators). Per
// step along the reduction an invocation loads 4 values of x (its pixels) and R / 4 vec4s of the
// packed weight, whose address depends only on the workgroup and the loop counters (uniform
// loads), for 4 R multiply-adds. The padding masks of a tap are computed once for every ci.
@compute @workgroup_size(LANES)
fn conv_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
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
    let iy0 = vec4<i32>((q / p.wo) * p.stride) - vec4<i32>(i32(p.pad_h));
    let ix0 = vec4<i32>((q % p.wo) * p.stride) - vec4<i32>(i32(p.pad_w));
    let xb = bb * (p.cin * p.h * p.w);

    let hw = p.h * p.w;
    let kk = p.kh * p.kw;
    // Row stride of wpack in vec4s, and this tile's first vec4 in a row.
    let row4 = p.cout_pad / 4u;
    let w0 = co0 / 4u;
    var acc: array<vec4<f32>, R>;
    for (var ky = 0u; ky < p.kh; ky = ky + 1u) {
        let iy = iy0 + vec4<i32>(i32(ky));
        let vy = (iy >= vec4<i32>(0)) & (iy < vec4<i32>(i32(p.h)));
        for (var kx = 0u; kx < p.kw; kx = kx + 1u) {
            let ix = ix0 + vec4<i32>(i32(kx));
            let valid = vy & (ix >= vec4<i32>(0)) & (ix < vec4<i32>(i32(p.w)));
            let off = select(vec4<u32>(0u), xb + vec4<u32>(iy) * p.w + vec4<u32>(ix), valid);
            let m = select(vec4<f32>(0.0), vec4<f32>(1.0), valid);
            let tap = ky * p.kw + kx;
            for (var ci = 0u; ci < p.cin; ci = ci + 1u) {
                let o = off + vec4<u32>(ci * hw);
                let xv = vec4<f32>(x[o.x], x[o.y], x[o.z], x[o.w]) * m;
                let wr = (ci * kk + tap) * row4 + w0;
                for (var j = 0u; j < R / 4u; j = j + 1u) {
                    let wv = wpack[wr + j];
                    acc[4u * j] = acc[4u * j] + wv.x * xv;
                    acc[4u * j + 1u] = acc[4u * j + 1u] + wv.y * xv;
                    acc[4u * j + 2u] = acc[4u * j + 2u] + wv.z * xv;
                    acc[4u * j + 3u] = acc[4u * j + 3u] + wv.w * xv;
                }
            }
        }
    }

    let ob = (bb * p.c_total + p.c_off) * plane + q;
    for (var i = 0u; i < R; i = i + 1u) {
        let co = co0 + i;
        if (co < p.cout) {
            var v = acc[i];
            if (p.has_bias != 0u) { v = v + vec4<f32>(bias[co]); }
            if (p.relu != 0u) { v = max(v, vec4<f32>(0.0)); }
            for (var j = 0u; j < 4u; j = j + 1u) {
                if (col + j < npix) { out[ob[j] + co * plane] = v[j]; }
            }
        }
    }
}

// --- pooling ---------------------------------------------------------------------------------

// Output element i of (B, C, Ho, Wo) as (ox, oy, c, b).
fn pool_pixel(i: u32) -> vec4<u32> {
    let ox = i % p.wo;
    let r = i / p.wo;
    return vec4<u32>(ox, r % p.ho, (r / p.ho) % p.cin, r / (p.ho * p.cin));
}

// out = the max of x over each KH x KW window (stride, padding); padded positions are ignored,
// as PyTorch's max_pool2d pads with -inf. One thread per output element.
@compute @workgroup_size(WG)
fn maxpool_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let o = pool_pixel(i);
    let y0 = i32(o.y * p.stride) - i32(p.pad_h);
    let x0 = i32(o.x * p.stride) - i32(p.pad_w);
    let base = (o.w * p.cin + o.z) * p.h;
    // Starts from the first in-image element (every window holds one: pad < kernel), not from
    // -inf, which WGSL cannot spell as a constant (Chromium's compiler refuses the bitcast).
    var m = 0.0;
    var seen = false;
    for (var ky = 0u; ky < p.kh; ky = ky + 1u) {
        let iy = y0 + i32(ky);
        if (iy < 0 || iy >= i32(p.h)) { continue; }
        for (var kx = 0u; kx < p.kw; kx = kx + 1u) {
            let ix = x0 + i32(kx);
            if (ix < 0 || ix >= i32(p.w)) { continue; }
            let v = x[(base + u32(iy)) * p.w + u32(ix)];
            m = select(v, max(m, v), seen);
            seen = true;
        }
    }
    dst[out_index(o.w, o.z, o.y, o.x)] = m;
}

// out = the mean of x over the in-image part of each window: PyTorch's avg_pool2d with
// count_include_pad=False. One thread per output element.
@compute @workgroup_size(WG)
fn avgpool_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let o = pool_pixel(i);
    let y0 = i32(o.y * p.stride) - i32(p.pad_h);
    let x0 = i32(o.x * p.stride) - i32(p.pad_w);
    let base = (o.w * p.cin + o.z) * p.h;
    var s = 0.0;
    var count = 0u;
    for (var ky = 0u; ky < p.kh; ky = ky + 1u) {
        let iy = y0 + i32(ky);
        if (iy < 0 || iy >= i32(p.h)) { continue; }
        for (var kx = 0u; kx < p.kw; kx = kx + 1u) {
            let ix = x0 + i32(kx);
            if (ix < 0 || ix >= i32(p.w)) { continue; }
            s = s + x[(base + u32(iy)) * p.w + u32(ix)];
            count = count + 1u;
        }
    }
    dst[out_index(o.w, o.z, o.y, o.x)] = s / f32(count);
}

// out[b, c] = the mean of x[b, c] over H W (AdaptiveAvgPool2d(1)), in order. One thread per
// (b, c).
@compute @workgroup_size(WG)
fn global_avgpool_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let hw = p.h * p.w;
    var s = 0.0;
    for (var k = 0u; k < hw; k = k + 1u) {
        s = s + x[i * hw + k];
    }
    dst[out_index(i / p.cin, i % p.cin, 0u, 0u)] = s / f32(hw);
}

// --- channel_copy ----------------------------------------------------------------------------

// out[b, c_off + c] = x[b, c] (torch.cat along channels, one part). One thread per element of x.
@compute @workgroup_size(WG)
fn channel_copy(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let plane = p.ho * p.wo;
    let bc = i / plane;
    dst[out_index(bc / p.cin, bc % p.cin, 0u, 0u) + i % plane] = x[i];
}

// --- resize_bilinear_fwd ---------------------------------------------------------------------

// Source position and weight of the second neighbour along one axis, PyTorch's
// upsample_bilinear2d with align_corners=False and an output size given:
// src = max((dst + 0.5) in / out - 0.5, 0), i0 = floor(src), i1 = min(i0 + 1, in - 1),
// lambda = src - i0.
struct Axis {
    i0: u32,
    i1: u32,
    l1: f32,
}

fn axis(o: u32, n_in: u32, n_out: u32) -> Axis {
    let scale = f32(n_in) / f32(n_out);
    let src = max(scale * (f32(o) + 0.5) - 0.5, 0.0);
    let i0 = min(u32(src), n_in - 1u);
    return Axis(i0, min(i0 + 1u, n_in - 1u), src - f32(i0));
}

// out = scale * bilinear(x) + shift, resized from (H, W) to (Ho, Wo) without antialiasing
// (F.interpolate(mode='bilinear', align_corners=False), then pytorch-fid's 2x - 1). One thread
// per output element; the output is a whole tensor (c_off 0, c_total C).
@compute @workgroup_size(WG)
fn resize_bilinear_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let ox = i % p.wo;
    let r = i / p.wo;
    let oy = r % p.ho;
    let bc = r / p.ho;
    let ay = axis(oy, p.h, p.ho);
    let ax = axis(ox, p.w, p.wo);
    let base = bc * p.h;
    let r0 = (base + ay.i0) * p.w;
    let r1 = (base + ay.i1) * p.w;
    let top = (1.0 - ax.l1) * x[r0 + ax.i0] + ax.l1 * x[r0 + ax.i1];
    let bottom = (1.0 - ax.l1) * x[r1 + ax.i0] + ax.l1 * x[r1 + ax.i1];
    let v = (1.0 - ay.l1) * top + ay.l1 * bottom;
    dst[i] = p.scale * v + p.shift;
}
