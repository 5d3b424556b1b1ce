// Resampling and skip plumbing of the UNet, NCHW: nearest 2x upsampling, 2x2 average pooling
// (EDM's resample_filter=[1,1]) and the channel concatenation of a decoder input with its skip.
//
// Every op is linear, so nothing is saved for backward; every output is overwritten, including
// both gradients of concat_bwd (the caller adds dskip to the encoder's gradient). One thread per
// element of the tensor written (no scattered writes, no atomics): the upsample backward and
// the pool forward gather their 2x2 block, in the reference's order.
//
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

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return workgroup_linear(wid, nwg) * WG + lid;
}

// --- nearest 2x upsampling -----------------------------------------------------------------------

// out[bc, oy, ox] = x[bc, oy / 2, ox / 2]; one thread per output.
@compute @workgroup_size(WG)
fn upsample2x_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let w2 = 2u * p.w;
    let ox = i % w2;
    let rest = i / w2;
    let oy = rest % (2u * p.h);
    let bc = rest / (2u * p.h);
    out[i] = x[(bc * p.h + oy / 2u) * p.w + ox / 2u];
}

// dx[bc, y, x] = sum of the 2x2 block of dout it was copied to; one thread per input.
@compute @workgroup_size(WG)
fn upsample2x_bwd_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let xx = i % p.w;
    let rest = i / p.w;
    let y = rest % p.h;
    let bc = rest / p.h;
    let w2 = 2u * p.w;
    let top = (bc * 2u * p.h + 2u * y) * w2 + 2u * xx;
    dx[i] = dout[top] + dout[top + 1u] + dout[top + w2] + dout[top + w2 + 1u];
}

// --- 2x2 average pooling -------------------------------------------------------------------------

// out[bc, oy, ox] = mean of x over the block (2oy.., 2ox..); one thread per output.
@compute @workgroup_size(WG)
fn avgpool2x2_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let wo = p.w / 2u;
    let ho = p.h / 2u;
    let ox = i % wo;
    let rest = i / wo;
    let oy = rest % ho;
    let bc = rest / ho;
    let top = (bc * p.h + 2u * oy) * p.w + 2u * ox;
    out[i] = (x[top] + x[top + 1u] + x[top + p.w] + x[top + p.w + 1u]) * 0.25;
}

// dx[bc, y, x] = dout[bc, y / 2, x / 2] / 4; one thread per input.
@compute @workgroup_size(WG)
fn avgpool2x2_bwd_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let xx = i % p.w;
    let rest = i / p.w;
    let y = rest % p.h;
    let bc = rest / p.h;
    dx[i] = dout[(bc * (p.h / 2u) + y / 2u) * (p.w / 2u) + xx / 2u] * 0.25;
}

// --- channel concatenation -----------------------------------------------------------------------

// cat[b] = [a[b]; skip[b]]; one thread per element of cat.
@compute @workgroup_size(WG)
fn concat_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let na = p.c1 * p.hw;
    let ns = p.c2 * p.hw;
    let b = i / (na + ns);
    let k = i % (na + ns);
    if (k < na) {
        cat[i] = a[b * na + k];
    } else {
        cat[i] = skip[b * ns + k - na];
    }
}

// [da[b]; dskip[b]] = dout[b]; one thread per element of dout.
@compute @workgroup_size(WG)
fn concat_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let na = p.c1 * p.hw;
    let ns = p.c2 * p.hw;
    let b = i / (na + ns);
    let k = i % (na + ns);
    if (k < na) {
        da[b * na + k] = dout[i];
    } else {
        dskip[b * ns + k - na] = dout[i];
    }
}
