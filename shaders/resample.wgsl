// Resampling and skip plumbing of the UNet, NCHW: nearest 2x upsampling, 2x2 average pooling
// (EDM's resample_filter=[1,1]) and the channel concatenation of a decoder input with its skip;
// checked against src/reference/resample.rs. All linear: nothing saved for backward; every output
// overwritten. One thread per element written (gathers, no atomics), in the reference's order.

// Bindings (group 0, inputs first, outputs last):
//   upsample2x_fwd, avgpool2x2_fwd:              x (read), out (write)
//   upsample2x_bwd_input, avgpool2x2_bwd_input:  dout (read), dx (write)
//   concat_fwd:                                  a, skip (read), cat (write)
//   concat_bwd:                                  dout (read), da, dskip (write)
// Shapes: h, w are the size of the resample *input* x. upsample: x (B, C, H, W) -> (B, C, 2H, 2W);
// avgpool (H, W even): x (B, C, H, W) -> (B, C, H/2, W/2); concat: a (B, C1, H, W),
// skip (B, C2, H, W), cat (B, C1 + C2, H, W).
// Group 1: Params. Params and the workgroup size WG are declared in ops/resample.rs.

@group(1) @binding(0) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@group(0) @binding(0) var<storage, read> dout: array<f32>;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> skip: array<f32>;
@group(0) @binding(2) var<storage, read_write> cat: array<f32>;

@group(0) @binding(1) var<storage, read_write> da: array<f32>;
@group(0) @binding(2) var<storage, read_write> dskip: array<f32>;

// Element i of a (BC, h, w) tensor as (x, y, bc).
fn pixel_of(i: u32, w: u32, h: u32) -> vec3<u32> {
    let rest = i / w;
    return vec3<u32>(i % w, rest % h, rest / h);
}

// --- nearest 2x upsampling -----------------------------------------------------------------------

// out[bc, oy, ox] = x[bc, oy / 2, ox / 2]; one thread per output.
@compute @workgroup_size(WG)
fn upsample2x_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let o = pixel_of(i, 2u * p.w, 2u * p.h);
    out[i] = x[(o.z * p.h + o.y / 2u) * p.w + o.x / 2u];
}

// dx[bc, y, x] = sum of the 2x2 block of dout it was copied to; one thread per input.
@compute @workgroup_size(WG)
fn upsample2x_bwd_input(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let q = pixel_of(i, p.w, p.h);
    let w2 = 2u * p.w;
    let top = (q.z * 2u * p.h + 2u * q.y) * w2 + 2u * q.x;
    dx[i] = dout[top] + dout[top + 1u] + dout[top + w2] + dout[top + w2 + 1u];
}

// --- 2x2 average pooling -------------------------------------------------------------------------

// out[bc, oy, ox] = mean of x over the block (2oy.., 2ox..); one thread per output.
@compute @workgroup_size(WG)
fn avgpool2x2_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let o = pixel_of(i, p.w / 2u, p.h / 2u);
    let top = (o.z * p.h + 2u * o.y) * p.w + 2u * o.x;
    out[i] = (x[top] + x[top + 1u] + x[top + p.w] + x[top + p.w + 1u]) * 0.25;
}

// dx[bc, y, x] = dout[bc, y / 2, x / 2] / 4; one thread per input.
@compute @workgroup_size(WG)
fn avgpool2x2_bwd_input(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let q = pixel_of(i, p.w, p.h);
    dx[i] = dout[(q.z * (p.h / 2u) + q.y / 2u) * (p.w / 2u) + q.x / 2u] * 0.25;
}

// --- channel concatenation -----------------------------------------------------------------------

// Where element i of cat[b] = [a[b]; skip[b]] comes from: a (`in_a`) or skip, at `index`.
struct ConcatPart {
    in_a: bool,
    index: u32,
}

fn concat_part(i: u32) -> ConcatPart {
    let na = p.c1 * p.hw;
    let ns = p.c2 * p.hw;
    let b = i / (na + ns);
    let k = i % (na + ns);
    if (k < na) {
        return ConcatPart(true, b * na + k);
    }
    return ConcatPart(false, b * ns + k - na);
}

// cat[b] = [a[b]; skip[b]]; one thread per element of cat.
@compute @workgroup_size(WG)
fn concat_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let part = concat_part(i);
    if (part.in_a) {
        cat[i] = a[part.index];
    } else {
        cat[i] = skip[part.index];
    }
}

// [da[b]; dskip[b]] = dout[b]; one thread per element of dout. Both overwritten: the caller adds
// dskip to the encoder's gradient.
@compute @workgroup_size(WG)
fn concat_bwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let part = concat_part(i);
    if (part.in_a) {
        da[part.index] = dout[i];
    } else {
        dskip[part.index] = dout[i];
    }
}
