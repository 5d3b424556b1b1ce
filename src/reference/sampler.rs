//! CPU oracles of `shaders/sampler.wgsl`: one sampler step of each kind over the step table
//! (`ops::sampler::TABLE_ROW` floats per step), in f64, with the device's noise (Philox normals,
//! widened). The whole samplers, step after step, are `diffusion::sampler`'s host path.

use crate::philox::Stream;

/// Floats per step in the table.
pub const ROW: usize = 8;
pub use crate::diffusion::sampler::{TAG_SAMPLER_INIT as TAG_INIT, TAG_SAMPLER_NOISE as TAG_NOISE};

/// What every entry reads besides its buffers: the seed, the row length D, the index of the
/// group's first sample and the clip range of `clip_denoised` (None: no clipping).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Common {
    pub seed: u64,
    pub d: usize,
    pub sample0: usize,
    pub clip: Option<(f64, f64)>,
}

/// Normal c of stream (seed, [w0, tag, sample]).
pub fn normal(seed: u64, w0: u32, tag: u32, sample: usize, c: usize) -> f64 {
    f64::from(Stream::new(seed, [w0, tag, sample as u32]).normal4((c / 4) as u32)[c % 4])
}

fn clipped(k: &Common, zv: f64, e: f64, m: f64, s: f64) -> f64 {
    match k.clip {
        Some((lo, hi)) => {
            let x0 = (zv - s * e) / m;
            let c = x0.clamp(lo, hi);
            if c != x0 {
                (zv - m * c) / s
            } else {
                e
            }
        }
        None => e,
    }
}

fn set_tin(k: &Common, i: usize, tin: &mut [f64], t: f64) {
    if i.is_multiple_of(k.d) {
        tin[i / k.d] = t;
    }
}

/// x = scale·n_T, z = c0·x, tin = t0. x, z: (R, D), tin: (R,)
pub fn sampler_init(k: &Common, x: &mut [f64], z: &mut [f64], tin: &mut [f64], scale: f64, c0: f64, t0: f64) {
    for i in 0..x.len() {
        let v = scale * normal(k.seed, u32::MAX, TAG_INIT, k.sample0 + i / k.d, i % k.d);
        x[i] = v;
        z[i] = c0 * v;
        set_tin(k, i, tin, t0);
    }
}

/// Step j of a linear sampler: x = a·x + b·ε̂ + σ·n_j, z = x, tin = t_next.
/// table: (S, ROW), eps, x, z: (R, D), tin: (R,)
pub fn sampler_linear(k: &Common, table: &[f64], j: usize, eps: &[f64], x: &mut [f64], z: &mut [f64], tin: &mut [f64]) {
    let r = &table[j * ROW..(j + 1) * ROW];
    for i in 0..x.len() {
        let e = clipped(k, z[i], eps[i], r[4], r[5]);
        let mut v = r[0] * x[i] + r[1] * e;
        if r[2] > 0.0 {
            v += r[2] * normal(k.seed, j as u32, TAG_NOISE, k.sample0 + i / k.d, i % k.d);
        }
        x[i] = v;
        z[i] = v;
        set_tin(k, i, tin, r[3]);
    }
}

/// Level j of EDM Heun up to its first evaluation: Heun's correction of level j − 1 (j > 0;
/// its second evaluation saw z), x += (t_next − t_hat)/2·(d1 + ε̂), then the churn noise of level
/// j, z = c_hat·x, tin = tin_hat. table: (S, ROW), eps, x, z, d1: (R, D), tin: (R,)
#[allow(clippy::too_many_arguments)]
pub fn heun_step(
    k: &Common,
    table: &[f64],
    j: usize,
    eps: &[f64],
    x: &mut [f64],
    z: &mut [f64],
    tin: &mut [f64],
    d1: &[f64],
) {
    let r = &table[j * ROW..(j + 1) * ROW];
    for i in 0..x.len() {
        if j > 0 {
            let q = &table[(j - 1) * ROW..j * ROW];
            let (th, tn, c) = (q[0], q[1], q[4]);
            let e = clipped(k, z[i], eps[i], c, tn * c);
            x[i] += (tn - th) * 0.5 * (d1[i] + e);
        }
        if r[2] > 0.0 {
            x[i] += r[2] * normal(k.seed, j as u32, TAG_NOISE, k.sample0 + i / k.d, i % k.d);
        }
        z[i] = r[3] * x[i];
        set_tin(k, i, tin, r[5]);
    }
}

/// The Euler step of level j: d1 = ε̂, and x = x + (t_next − t_hat)·ε̂ on the last level, else
/// z = c_next·(x + (t_next − t_hat)·ε̂), tin = tin_next.
#[allow(clippy::too_many_arguments)]
pub fn heun_euler(
    k: &Common,
    table: &[f64],
    j: usize,
    eps: &[f64],
    x: &mut [f64],
    z: &mut [f64],
    tin: &mut [f64],
    d1: &mut [f64],
) {
    let r = &table[j * ROW..(j + 1) * ROW];
    let (th, tn, c) = (r[0], r[1], r[3]);
    for i in 0..x.len() {
        let e = clipped(k, z[i], eps[i], c, th * c);
        let xn = x[i] + (tn - th) * e;
        if r[7] > 0.0 {
            x[i] = xn;
        } else {
            d1[i] = e;
            z[i] = r[4] * xn;
            set_tin(k, i, tin, r[6]);
        }
    }
}

/// One Picard pass over points b..b+len−1 of a ring of `slots` points of NS samples (point j in
/// slot j % slots): every X_{j+1} rebuilt from the window as evaluated, err[o, s] the squared
/// change of sample s at point b+o+1. xr, eps: (slots, NS, D), err: (len, NS)
#[allow(clippy::too_many_arguments)]
pub fn picard_sweep(
    k: &Common,
    table: &[f64],
    eps: &[f64],
    xr: &mut [f64],
    err: &mut [f64],
    ns: usize,
    slots: usize,
    b: usize,
    len: usize,
) {
    let point = ns * k.d;
    let old: Vec<f64> = xr.to_vec();
    let slot = |j: usize| (j % slots) * point;
    for s in 0..ns {
        for c in 0..k.d {
            let i = s * k.d + c;
            let mut acc = old[slot(b) + i];
            for o in 0..len {
                let j = b + o;
                let r = &table[j * ROW..(j + 1) * ROW];
                let xo = old[slot(j) + i];
                let e = clipped(k, xo, eps[slot(j) + i], r[4], r[5]);
                acc += (r[0] - 1.0) * xo + r[1] * e;
                if r[2] > 0.0 {
                    acc += r[2] * normal(k.seed, j as u32, TAG_NOISE, k.sample0 + s, c);
                }
                xr[slot(j + 1) + i] = acc;
            }
        }
        for o in 0..len {
            let at = slot(b + o + 1) + s * k.d;
            err[o * ns + s] = (0..k.d).map(|c| (xr[at + c] - old[at + c]).powi(2)).sum();
        }
    }
}

/// flags[o] = max over samples of err[o, s]. err: (len, NS), flags: (len,)
pub fn picard_max(err: &[f64], ns: usize, flags: &mut [f64]) {
    for (o, f) in flags.iter_mut().enumerate() {
        *f = err[o * ns..(o + 1) * ns].iter().copied().fold(0.0, f64::max);
    }
}
