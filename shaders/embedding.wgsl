// Noise-level conditioning: the sinusoidal embedding of a per-row noise input t, the
// scale/shift modulation (ADM/EDM "AdaGN") of a residual block, and EDM's preconditioning in eps
// form; checked against src/reference/embedding.rs. Saved for backward: only the inputs. Every
// output is overwritten (dscale and dshift are activation gradients, not parameters).

// Bindings (group 0, inputs first, outputs last):
//   embedding_fwd:          t (read), emb (write)
//   scale_shift_silu_fwd:   x, scale, shift (read), y (write)
//   scale_shift_silu_bwd(_rows): sd_dout, sd_x, sd_scale, sd_shift (read), sd_dx, sd_dscale,
//                           sd_dshift (write)
//   precond_in:             t, pz (read), pzin (write)
//   precond_fwd:            t, pz, pf (read), peps (write)
//   precond_bwd:            t, pdeps (read), pdf, pdz (write)
// Shapes: t (B,), emb (B, E); x, y, sd_dout, sd_x, sd_dx (B, C, H, W); scale, shift, sd_scale,
// sd_shift, sd_dscale, sd_dshift (B, C);
// pz, pzin, pf, peps, pdeps, pdf, pdz (B, E) with E the row length (the model's output size per row).
// Group 1: Params. Params and the workgroup size WG are declared in ops/embedding.rs.

@group(1) @binding(0) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> t: array<f32>;
@group(0) @binding(1) var<storage, read_write> emb: array<f32>;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> scale: array<f32>;
@group(0) @binding(2) var<storage, read> shift: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@group(0) @binding(0) var<storage, read> sd_dout: array<f32>;
@group(0) @binding(1) var<storage, read> sd_x: array<f32>;
@group(0) @binding(2) var<storage, read> sd_scale: array<f32>;
@group(0) @binding(3) var<storage, read> sd_shift: array<f32>;
@group(0) @binding(4) var<storage, read_write> sd_dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> sd_dscale: array<f32>;
@group(0) @binding(6) var<storage, read_write> sd_dshift: array<f32>;

@group(0) @binding(1) var<storage, read> pz: array<f32>;
@group(0) @binding(2) var<storage, read> pf: array<f32>;
@group(0) @binding(3) var<storage, read_write> peps: array<f32>;

@group(0) @binding(2) var<storage, read_write> pzin: array<f32>;

@group(0) @binding(1) var<storage, read> pdeps: array<f32>;
@group(0) @binding(2) var<storage, read_write> pdf: array<f32>;
@group(0) @binding(3) var<storage, read_write> pdz: array<f32>;

// ln(MAX_PERIOD), MAX_PERIOD = 10000 as DDPM, ADM and EDM.
const LN_MAX_PERIOD: f32 = 9.210340371976184;
// The log-SNR per unit of noise input: the networks are fed c_noise = alpha / 8 (math.md §8).
const ALPHA_PER_T: f32 = 8.0;

// (a_in, a_skip, a_out) for log-SNR alpha and sigma_d; exp of a non-positive argument only, so
// finite for every alpha. EDM's `EDMPrecond` in eps form (math.md §1.4(b), §4.3; derivation in
// reference/embedding.rs): with s = sigmoid(alpha), sb = sigmoid(-alpha), d = sigma_d^2 and
// m = 1 + (d - 1) s (= (sigma^2 + d) / (1 + sigma^2), in [min(1, d), max(1, d)]):
//   a_in = 1 / sqrt(m),  a_skip = sqrt(sb) / m,  a_out = sigma_d sqrt(s) a_in.
// With sigma_d = 1, m = 1 exactly: a_in = 1, a_skip = sqrt(sb), a_out = sqrt(s).
fn precond_coeffs(alpha: f32, sigma_d: f32) -> vec3<f32> {
    let e = exp(-abs(alpha));
    let s = select(e / (1.0 + e), 1.0 / (1.0 + e), alpha >= 0.0);
    let sb = select(1.0 / (1.0 + e), e / (1.0 + e), alpha >= 0.0);
    let m = 1.0 + (sigma_d * sigma_d - 1.0) * s;
    let a_in = 1.0 / sqrt(m);
    return vec3<f32>(a_in, sqrt(sb) / m, sigma_d * sqrt(s) * a_in);
}

// pi/2 in three parts (Cephes sinf's DP1..DP3, doubled): P1 and P2 have few significant bits, so
// q * P1 and q * P2 are exact for the quadrants q of |a| <= 8192 (Cody-Waite reduction).
const PIO2_1: f32 = 1.5703125;
const PIO2_2: f32 = 4.837512969970703125e-4;
const PIO2_3: f32 = 7.54978995489188216e-8;
const TWO_OVER_PI: f32 = 0.636619772367581343;

// (sin a, cos a) for |a| <= 8192, within 1e-7 absolute of the exact values at the f32 a on any
// backend: reduction to r in [-pi/4, pi/4] by quadrant, then Cephes sinf/cosf minimax
// polynomials, then the quadrant's symmetry.
fn sincos(a: f32) -> vec2<f32> {
    let q = round(a * TWO_OVER_PI);
    let r = ((a - q * PIO2_1) - q * PIO2_2) - q * PIO2_3;
    let r2 = r * r;
    let s = r + r * r2 * (-1.6666654611e-1 + r2 * (8.3321608736e-3 + r2 * -1.9515295891e-4));
    let c = 1.0 - 0.5 * r2
        + r2 * r2 * (4.166664568298827e-2 + r2 * (-1.388731625493765e-3 + r2 * 2.443315711809948e-5));
    switch (bitcast<u32>(i32(q)) & 3u) {
        case 0u: { return vec2<f32>(s, c); }
        case 1u: { return vec2<f32>(c, -s); }
        case 2u: { return vec2<f32>(-s, -c); }
        default: { return vec2<f32>(-c, s); }
    }
}

// --- sinusoidal embedding ------------------------------------------------------------------------

// ADM `timestep_embedding`, EDM `PositionalEmbedding(endpoint=False)`, half = E / 2:
//   freq_j = exp(-ln(MAX_PERIOD) * j / half),  out[b] = [cos(t[b] freq), sin(t[b] freq)].
// The frequencies are computed here with f32 exp instead of being uploaded as a table, so the
// op needs no buffer besides t; see ops/embedding.rs for the tolerance this costs. sin and cos
// are evaluated by `sincos`, not by the built-ins: WGSL promises the built-ins only to 2^-11
// absolute on [-pi, pi] (SwiftShader, the browser test adapter, is off by 1.9e-4).
// One thread per output feature: cos for k < half, sin for k >= half.
@compute @workgroup_size(WG)
fn embedding_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let half = p.e / 2u;
    let k = i % p.e;
    let j = k % half;
    let freq = exp(-LN_MAX_PERIOD * f32(j) / f32(half));
    let sc = sincos(t[i / p.e] * freq);
    emb[i] = select(sc.x, sc.y, k < half);
}

// --- scale/shift modulation followed by SiLU (a residual block's norm2 -> modulation -> SiLU) -----
// The modulated m = x (1 + scale) + shift is not stored: the backward recomputes it from x.

// d m for the gradient g = dout of silu(m).
fn dsilu_mod(i: u32) -> f32 {
    let bc = i / p.hw;
    let m = sd_x[i] * (1.0 + sd_scale[bc]) + sd_shift[bc];
    return silu_grad(sd_dout[i], m);
}

// y = silu(x (1 + scale[b, c]) + shift[b, c]).
@compute @workgroup_size(WG)
fn scale_shift_silu_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let bc = i / p.hw;
    let m = x[i] * (1.0 + scale[bc]) + shift[bc];
    y[i] = silu(m);
}

// The whole backward in one pass per (b, c) row of H*W: dm = dout silu'(m) once per element,
// dx = dm (1 + scale[b, c]), dscale[b, c] = sum_hw dm x, dshift[b, c] = sum_hw dm (all
// overwritten). One workgroup per row with a tree for the sums, or (`_rows`, for short rows)
// one invocation per row summing in sequence, WG_ROWS rows per workgroup.

// dm at element i of row bc; writes dx[i] and returns (dm x, dm).
fn ssilu_bwd_elem(bc: u32, i: u32) -> vec2<f32> {
    let dm = dsilu_mod(i);
    sd_dx[i] = dm * (1.0 + sd_scale[bc]);
    return vec2<f32>(dm * sd_x[i], dm);
}

@compute @workgroup_size(WG)
fn scale_shift_silu_bwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let bc = workgroup_linear(id);
    var acc = vec2<f32>(0.0, 0.0);
    if (bc < p.n) {
        let base = bc * p.hw;
        for (var i = lid; i < p.hw; i = i + WG) { acc = acc + ssilu_bwd_elem(bc, base + i); }
    }
    let total = tree_sum2(lid, acc);
    if (lid == 0u && bc < p.n) {
        sd_dscale[bc] = total.x;
        sd_dshift[bc] = total.y;
    }
}

@compute @workgroup_size(WG_ROWS)
fn scale_shift_silu_bwd_rows(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let bc = invocation_linear(id, lid, WG_ROWS);
    if (bc >= p.n) { return; }
    let base = bc * p.hw;
    var acc = vec2<f32>(0.0, 0.0);
    for (var i = 0u; i < p.hw; i = i + 1u) { acc = acc + ssilu_bwd_elem(bc, base + i); }
    sd_dscale[bc] = acc.x;
    sd_dshift[bc] = acc.y;
}

// zin = a_in z per row (the network's input c_in x_sigma), alpha = ALPHA_PER_T t[row]. Linear and
// diagonal, so the same entry scales the gradient back: dz = a_in dzin.
@compute @workgroup_size(WG)
fn precond_in(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    pzin[i] = precond_coeffs(ALPHA_PER_T * t[i / p.e], p.sigma_d).x * pz[i];
}

// eps = a_skip z + a_out f per row.
@compute @workgroup_size(WG)
fn precond_fwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let a = precond_coeffs(ALPHA_PER_T * t[i / p.e], p.sigma_d);
    peps[i] = a.y * pz[i] + a.z * pf[i];
}

// df = a_out deps, dz = a_skip deps (both overwritten).
@compute @workgroup_size(WG)
fn precond_bwd(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = invocation_linear(id, lid, WG);
    if (i >= p.n) { return; }
    let a = precond_coeffs(ALPHA_PER_T * t[i / p.e], p.sigma_d);
    pdf[i] = a.z * pdeps[i];
    pdz[i] = a.y * pdeps[i];
}
