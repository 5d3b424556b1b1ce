// The update arithmetic of the samplers (math.md §6) on the device, so that a sampling run keeps
// its state in device memory and reads back once at the end (once per pass for the Picard
// sampler's convergence errors); checked against src/reference/sampler.rs. The network is
// evaluated between these kernels: it reads z (its input) and tin (its noise input, α/8 per row)
// and writes eps.
//
// Steps are rows of `table` (8 floats each), indexed by the step counter ctr[0], which
// sampler_advance increments after each step: a whole trajectory can be recorded in one
// submission with no parameter written between steps.
//   linear (DDPM, DDIM, Picard): a, b, sigma, t_next, m, s, -, -
//     x' = a x + b eps + sigma n_j; t_next is the next step's noise input; m = sqrt(sigmoid(α_j)),
//     s = sqrt(sigmoid(-α_j)) of the level eps was evaluated at (for clip_denoised).
//   Heun: t_hat, t_next, s_churn, c_hat, c_next, tin_hat, tin_next, last (1 on the last level)
//     EDM Heun in x_σ space (math.md §6.4): z = c x with c = 1/sqrt(1 + σ²), so m = c, s = σ c.
//     Level j is heun_step (the correction of level j − 1, then level j's churn and first
//     input), an evaluation, heun_euler (the Euler step, and the second input unless last), an
//     evaluation unless last, sampler_advance.
//
// Noise n_j of sample i, component c is normal c of Philox stream (seed, [j, TAG_NOISE, i]),
// x_T's is stream (seed, [0xFFFFFFFF, TAG_INIT, i]): the numbers src/philox.rs draws for
// diffusion::sampler's host path (pre-sampled noise, math.md §6.5).
//
// Bindings (group 0; every entry binds a prefix of its list, as pipelines' derived layouts
// hold only the bindings an entry uses):
//   sampler_init:               ix, iz, itin (write)
//   sampler_linear:             table, ctr, eps (read), x, z, tin (read-write)
//   heun_step, heun_euler:      table, ctr, eps (read), x, z, tin, d1 (read-write)
//   sampler_advance:            ctrw (read-write)
//   picard_sweep:               table, peps (read), xr, prev (read-write), err (write)
//   picard_max:                 errs (read), flags (write)
// Shapes: x, z, d1 (N) with N = rows * D; tin (rows); eps (N); peps and xr rings of `slots`
// points of NS * D each; prev (NS * D); err (len, NS); flags (len).
// Group 1: Params. Params and the workgroup size WG are declared in ops/sampler.rs.

@group(1) @binding(0) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> table: array<f32>;
@group(0) @binding(1) var<storage, read> ctr: array<u32>;
@group(0) @binding(2) var<storage, read> eps: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> z: array<f32>;
@group(0) @binding(5) var<storage, read_write> tin: array<f32>;
@group(0) @binding(6) var<storage, read_write> d1: array<f32>;

@group(0) @binding(0) var<storage, read_write> ix: array<f32>;
@group(0) @binding(1) var<storage, read_write> iz: array<f32>;
@group(0) @binding(2) var<storage, read_write> itin: array<f32>;

@group(0) @binding(0) var<storage, read_write> ctrw: array<u32>;

@group(0) @binding(1) var<storage, read> peps: array<f32>;
@group(0) @binding(2) var<storage, read_write> xr: array<f32>;
@group(0) @binding(3) var<storage, read_write> prev: array<f32>;
@group(0) @binding(4) var<storage, read_write> err: array<f32>;

@group(0) @binding(0) var<storage, read> errs: array<f32>;
@group(0) @binding(1) var<storage, read_write> flags: array<f32>;

const TAG_INIT: u32 = 0x30u;
const TAG_NOISE: u32 = 0x31u;
const ROW: u32 = 8u;

// Normal c of stream (seed, [w0, TAG, sample]): component c % 4 of block c / 4.
fn normal(w0: u32, tag: u32, sample: u32, c: u32) -> f32 {
    let b = philox4x32_10(vec4<u32>(c / 4u, w0, tag, sample), vec2<u32>(p.seed_lo, p.seed_hi));
    let q = c % 4u;
    var pair: vec2<f32>;
    if (q < 2u) { pair = box_muller(b.x, b.y); } else { pair = box_muller(b.z, b.w); }
    return pair[q % 2u];
}

// ε̂ with the clean estimate x̂₀ = (zv − s e)/m clipped to [lo, hi] when p.clip is set: where x̂₀
// leaves the range, the noise the clipped estimate implies, (zv − m clip(x̂₀))/s; e unchanged
// elsewhere (diffusion::sampler::ClipDenoised).
fn clipped(zv: f32, e: f32, m: f32, s: f32) -> f32 {
    if (p.clip == 0u) { return e; }
    let x0 = (zv - s * e) / m;
    let c = clamp(x0, p.lo, p.hi);
    if (c != x0) { return (zv - m * c) / s; }
    return e;
}

fn at(j: u32, k: u32) -> f32 {
    return table[j * ROW + k];
}

// Element k's sample index (offset by the first sample of this group) and component.
fn sample_of(k: u32) -> u32 { return p.sample0 + k / p.d; }

fn set_tin(k: u32, t: f32) {
    if (k % p.d == 0u) { tin[k / p.d] = t; }
}

@compute @workgroup_size(WG)
fn sampler_init(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let k = invocation_linear(id, lid, WG);
    if (k >= p.n) { return; }
    let v = p.scale * normal(0xFFFFFFFFu, TAG_INIT, sample_of(k), k % p.d);
    ix[k] = v;
    iz[k] = p.c0 * v;
    if (k % p.d == 0u) { itin[k / p.d] = p.t0; }
}

@compute @workgroup_size(WG)
fn sampler_linear(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let k = invocation_linear(id, lid, WG);
    if (k >= p.n) { return; }
    let j = ctr[0];
    let sigma = at(j, 2u);
    let e = clipped(z[k], eps[k], at(j, 4u), at(j, 5u));
    var v = at(j, 0u) * x[k] + at(j, 1u) * e;
    if (sigma > 0.0) { v = v + sigma * normal(j, TAG_NOISE, sample_of(k), k % p.d); }
    x[k] = v;
    z[k] = v;
    set_tin(k, at(j, 3u));
}

@compute @workgroup_size(WG)
fn heun_step(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let k = invocation_linear(id, lid, WG);
    if (k >= p.n) { return; }
    let j = ctr[0];
    var v = x[k];
    if (j > 0u) {
        // Heun's correction of level j − 1: its second evaluation saw z = c_next x_next.
        let i = j - 1u;
        let th = at(i, 0u);
        let tn = at(i, 1u);
        let c = at(i, 4u);
        let e = clipped(z[k], eps[k], c, tn * c);
        v = v + (tn - th) * 0.5 * (d1[k] + e);
    }
    let churn = at(j, 2u);
    if (churn > 0.0) { v = v + churn * normal(j, TAG_NOISE, sample_of(k), k % p.d); }
    x[k] = v;
    z[k] = at(j, 3u) * v;
    set_tin(k, at(j, 5u));
}

@compute @workgroup_size(WG)
fn heun_euler(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let k = invocation_linear(id, lid, WG);
    if (k >= p.n) { return; }
    let j = ctr[0];
    let th = at(j, 0u);
    let tn = at(j, 1u);
    let c = at(j, 3u);
    let e = clipped(z[k], eps[k], c, th * c);
    let xn = x[k] + (tn - th) * e;
    if (at(j, 7u) > 0.0) {
        x[k] = xn;
    } else {
        d1[k] = e;
        z[k] = at(j, 4u) * xn;
        set_tin(k, at(j, 6u));
    }
}

// The counter moves on by p.len steps (1).
@compute @workgroup_size(1)
fn sampler_advance() {
    ctrw[0] = ctrw[0] + p.len;
}

// One Picard pass over points b..b+len-1 of a ring of p.slots points (point j in slot j % slots),
// one workgroup per sample: X̃_{j+1} = X_b + Σ_{i=b..j} ((a_i − 1) X_i + b_i ε̂_i + σ_i n_i), every
// X_i and ε̂_i as they were when the window was evaluated (prev holds the old X_i while slot i
// already holds the new one), X_{j+1} overwritten, and err[o, sample] = ||X̃_{j+1} − X_{j+1}||²
// of point j+1 = b+o+1 (math.md §6.5).
@compute @workgroup_size(WG)
fn picard_sweep(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let sample = workgroup_linear(id);
    let live = sample < p.ns;
    let d = p.d;
    let point = p.ns * d;
    for (var o = 0u; o < p.len; o = o + 1u) {
        let j = p.b + o;
        let here = (j % p.slots) * point;
        let next = ((j + 1u) % p.slots) * point;
        var r = 0.0;
        if (live) {
            let a = at(j, 0u);
            let bj = at(j, 1u);
            let sigma = at(j, 2u);
            let m = at(j, 4u);
            let s = at(j, 5u);
            for (var c = lid; c < d; c = c + WG) {
                let k = sample * d + c;
                var xo = xr[here + k];
                if (o > 0u) { xo = prev[k]; }
                let e = clipped(xo, peps[here + k], m, s);
                var v = xr[here + k] + (a - 1.0) * xo + bj * e;
                if (sigma > 0.0) { v = v + sigma * normal(j, TAG_NOISE, p.sample0 + sample, c); }
                let old = xr[next + k];
                prev[k] = old;
                xr[next + k] = v;
                let diff = v - old;
                r = r + diff * diff;
            }
        }
        let total = tree_sum(lid, r);
        if (live && lid == 0u) { err[o * p.ns + sample] = total; }
    }
}

// flags[o] = max over samples of errs[o, sample].
@compute @workgroup_size(WG)
fn picard_max(id: Grid, @builtin(local_invocation_index) lid: u32) {
    let o = workgroup_linear(id);
    var m = 0.0;
    if (o < p.len) {
        for (var s = lid; s < p.ns; s = s + WG) { m = max(m, errs[o * p.ns + s]); }
    }
    let total = tree_max(lid, m);
    if (o < p.len && lid == 0u) { flags[o] = total; }
}
