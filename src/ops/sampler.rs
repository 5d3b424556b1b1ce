//! Launchers for `shaders/sampler.wgsl`: the samplers' update arithmetic on the device (DDPM and
//! DDIM steps, EDM Heun's three stages, the step counter, the Picard pass and its convergence
//! maxima). The step constants live in a table buffer (`TABLE_ROW` floats per step, laid out in
//! the shader's header), indexed by a device-side counter, so a trajectory needs no parameter
//! written between steps. Driven by `eval::gpu_sampler`.

use bytemuck::Zeroable;

use super::{f64s, needs, prepare, CheckResult, Entry, OpSpec};
use crate::gpu::{groups_for, Buffer, Dispatch, Gpu, GpuError};
use crate::philox::normal_vec;
use crate::reference::sampler::{self as r, Common};
use crate::reference::tol::{DEFAULT, STRICT};

pub use crate::reference::sampler::ROW as TABLE_ROW;

/// One or two roundings per term and an exact Philox normal; the clip branch divides once.
const STEP: &str = "a few f32 roundings per element (products, one sum, the clip's division); exact noise";
/// A running f32 sum over the window's steps, then squared differences summed over D.
const SWEEP: &str = "f32 running sums over up to len steps and sums of squares over D in a tree";

pub const SPEC: OpSpec = OpSpec {
    name: "sampler",
    shader: super::shader!("sampler.wgsl", "philox_core.wgsl", "tree.wgsl"; Params),
    variants: &[],
    entries: &[
        Entry { name: "sampler_init", reference: "sampler::sampler_init", tol: STRICT, why: STEP },
        Entry { name: "sampler_linear", reference: "sampler::sampler_linear", tol: STRICT, why: STEP },
        Entry { name: "heun_step", reference: "sampler::heun_step", tol: STRICT, why: STEP },
        Entry { name: "heun_euler", reference: "sampler::heun_euler", tol: STRICT, why: STEP },
        Entry {
            name: "sampler_advance",
            reference: "the counter plus one",
            tol: crate::reference::tol::EXACT,
            why: "integer",
        },
        Entry { name: "picard_sweep", reference: "sampler::picard_sweep", tol: DEFAULT, why: SWEEP },
        Entry { name: "picard_max", reference: "sampler::picard_max", tol: crate::reference::tol::EXACT, why: "max" },
    ],
    check,
};

super::constants! {
    /// Invocations per workgroup: one element each in the step entries, one sample's D elements
    /// (strided) in picard_sweep, one point's samples in picard_max (a power of two for the tree).
    override WG = 64;
}

super::uniform! {
    struct Params {
        /// Elements R * D of the step entries.
        n: u32,
        /// Row length D.
        d: u32,
        seed_lo: u32,
        seed_hi: u32,
        /// Index of the first sample of this group (the noise streams are per sample).
        sample0: u32,
        /// 1: clip the clean estimate to [lo, hi] (clip_denoised).
        clip: u32,
        lo: f32,
        hi: f32,
        /// sampler_init: x = scale·n, z = c0·x, tin = t0.
        scale: f32,
        c0: f32,
        t0: f32,
        /// Picard: samples NS.
        ns: u32,
        /// Picard: first point b of the window and its length.
        b: u32,
        len: u32,
        /// Picard: points in the ring.
        slots: u32,
        _pad: u32,
    }
}

/// What every dispatch of one sampling group shares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Group {
    pub seed: u64,
    /// Rows R (samples of this group) and row length D.
    pub rows: usize,
    pub d: usize,
    /// Index of the group's first sample.
    pub sample0: usize,
    /// clip_denoised's range.
    pub clip: Option<(f32, f32)>,
}

impl Group {
    fn params(&self) -> Params {
        let (lo, hi) = self.clip.unwrap_or((0.0, 0.0));
        Params {
            n: (self.rows * self.d) as u32,
            d: self.d as u32,
            seed_lo: self.seed as u32,
            seed_hi: (self.seed >> 32) as u32,
            sample0: self.sample0 as u32,
            clip: u32::from(self.clip.is_some()),
            lo,
            hi,
            ..Zeroable::zeroed()
        }
    }

    fn check(&self) -> Result<(), GpuError> {
        if self.d == 0 || self.rows == 0 {
            return Err(GpuError::Shape(format!("sampler: {} rows of {}", self.rows, self.d)));
        }
        if let Some((lo, hi)) = self.clip {
            if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
                return Err(GpuError::Shape(format!("sampler: clip range [{lo}, {hi}] is empty")));
            }
        }
        Ok(())
    }

    fn reference(&self) -> Common {
        Common {
            seed: self.seed,
            d: self.d,
            sample0: self.sample0,
            clip: self.clip.map(|(lo, hi)| (f64::from(lo), f64::from(hi))),
        }
    }
}

/// x = scale·x_T noise, z = c0·x, tin = t0. x, z: (R, D), tin: (R,)
#[allow(clippy::too_many_arguments)]
pub async fn sampler_init(
    gpu: &Gpu,
    g: &Group,
    x: &Buffer,
    z: &Buffer,
    tin: &Buffer,
    scale: f32,
    c0: f32,
    t0: f32,
) -> Result<Dispatch, GpuError> {
    g.check()?;
    let n = g.rows * g.d;
    needs("sampler_init", &[("x", x, n), ("z", z, n), ("tin", tin, g.rows)])?;
    let p = Params { scale, c0, t0, ..g.params() };
    prepare(gpu, &SPEC, "sampler_init", &[x, z, tin], &p, groups_for(n, WG)).await
}

/// The step entries, over the bindings table, ctr, eps, x, z, tin (and d1 but for
/// `sampler_linear`): `sampler_linear`, `heun_step`, `heun_euler`.
/// table: (S, TABLE_ROW), ctr: (1,), eps, x, z, d1: (R, D), tin: (R,)
#[allow(clippy::too_many_arguments)]
pub async fn step(
    gpu: &Gpu,
    entry: &'static str,
    g: &Group,
    table: &Buffer,
    ctr: &Buffer,
    eps: &Buffer,
    x: &Buffer,
    z: &Buffer,
    tin: &Buffer,
    d1: &Buffer,
) -> Result<Dispatch, GpuError> {
    g.check()?;
    let n = g.rows * g.d;
    needs(entry, &[("table", table, TABLE_ROW), ("ctr", ctr, 1), ("x", x, n), ("z", z, n), ("tin", tin, g.rows)])?;
    let p = g.params();
    let groups = groups_for(n, WG);
    needs(entry, &[("eps", eps, n)])?;
    match entry {
        "sampler_linear" => prepare(gpu, &SPEC, entry, &[table, ctr, eps, x, z, tin], &p, groups).await,
        "heun_step" | "heun_euler" => {
            needs(entry, &[("d1", d1, n)])?;
            prepare(gpu, &SPEC, entry, &[table, ctr, eps, x, z, tin, d1], &p, groups).await
        }
        _ => Err(GpuError::Shape(format!("sampler: {entry} is not a step entry"))),
    }
}

/// ctr[0] += 1. ctr: (1,)
pub async fn sampler_advance(gpu: &Gpu, ctr: &Buffer) -> Result<Dispatch, GpuError> {
    needs("sampler_advance", &[("ctr", ctr, 1)])?;
    prepare(gpu, &SPEC, "sampler_advance", &[ctr], &Params { len: 1, ..Zeroable::zeroed() }, 1).await
}

/// A Picard pass (`picard_sweep`) and its per-point maxima (`picard_max`), prepared once; the
/// window (b, len) is written before each pass (`set_window`).
pub struct Picard {
    pub sweep: Dispatch,
    pub max: Dispatch,
    base: Params,
    window: usize,
}

impl Picard {
    /// Sets the window of the next submission to points b..b+len−1 (len ≤ the window it was
    /// prepared for).
    pub fn set_window(&self, gpu: &Gpu, b: usize, len: usize) -> Result<(), GpuError> {
        if len == 0 || len > self.window {
            return Err(GpuError::Shape(format!("picard: window of {len} points, prepared for {}", self.window)));
        }
        let p = Params { b: b as u32, len: len as u32, ..self.base };
        gpu.queue.write_buffer(&self.sweep.params, 0, bytemuck::bytes_of(&p));
        gpu.queue.write_buffer(&self.max.params, 0, bytemuck::bytes_of(&p));
        Ok(())
    }
}

/// Prepares the Picard pass over a ring of `slots` points of `g.rows` samples for windows of up
/// to `window` points (slots > window). table: (S, TABLE_ROW), eps, xr: (slots, NS, D),
/// prev: (NS, D), err: (window, NS), flags: (window,)
#[allow(clippy::too_many_arguments)]
pub async fn picard(
    gpu: &Gpu,
    g: &Group,
    table: &Buffer,
    eps: &Buffer,
    xr: &Buffer,
    prev: &Buffer,
    err: &Buffer,
    flags: &Buffer,
    slots: usize,
    window: usize,
) -> Result<Picard, GpuError> {
    g.check()?;
    let (ns, point) = (g.rows, g.rows * g.d);
    if window == 0 || slots <= window {
        return Err(GpuError::Shape(format!("picard: a window of {window} needs more than {slots} slots")));
    }
    needs(
        "picard_sweep",
        &[
            ("table", table, TABLE_ROW),
            ("eps", eps, slots * point),
            ("xr", xr, slots * point),
            ("prev", prev, point),
            ("err", err, window * ns),
            ("flags", flags, window),
        ],
    )?;
    let base = Params { ns: ns as u32, slots: slots as u32, b: 0, len: 1, ..g.params() };
    let sweep = prepare(gpu, &SPEC, "picard_sweep", &[table, eps, xr, prev, err], &base, ns as u32).await?;
    let max = prepare(gpu, &SPEC, "picard_max", &[err, flags], &base, window as u32).await?;
    Ok(Picard { sweep, max, base, window })
}

super::check_fn!(check_async);

/// A table of `s` steps with every constant drawn around plausible values (a, m near 1, b, s
/// below 1, noise on every other step), so every term of every entry matters.
fn test_table(s: usize, seed: u64) -> Vec<f32> {
    let v = normal_vec(s * TABLE_ROW, seed, 0);
    let mut t = vec![0f32; s * TABLE_ROW];
    for j in 0..s {
        let (r, w) = (&v[j * TABLE_ROW..], &mut t[j * TABLE_ROW..(j + 1) * TABLE_ROW]);
        w[0] = 1.0 + 0.05 * r[0].abs();
        w[1] = 0.3 * r[1];
        w[2] = if j % 2 == 0 { 0.1 + 0.1 * r[2].abs() } else { 0.0 };
        w[3] = 0.5 * r[3];
        w[4] = 0.5 + 0.4 * r[4].abs().min(1.0);
        w[5] = 0.3 + 0.4 * r[5].abs().min(1.0);
        w[6] = 0.5 * r[6];
        w[7] = if j + 1 == s { 1.0 } else { 0.0 };
    }
    t
}

async fn check_async(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    let mut results = Vec::new();
    // 37 rows of 7 (several workgroups, a row length that is neither a multiple of 4 nor of the
    // workgroup), a seed that uses both key words, a group starting at sample 5; with and without
    // clipping (a range narrow enough to clip about half the elements).
    let (rows, d, s_n) = (37usize, 7usize, 3usize);
    let n = rows * d;
    let table_h = test_table(s_n, 51);
    let table64 = f64s(&table_h);
    let table = gpu.upload("table", &table_h)?;
    let (xe, xx, xz, xd) = (normal_vec(n, 52, 0), normal_vec(n, 52, 1), normal_vec(n, 52, 2), normal_vec(n, 52, 3));
    for clip in [None, Some((-0.5f32, 0.7f32))] {
        let g = Group { seed: 0x0123_4567_89AB_CDEF, rows, d, sample0: 5, clip };
        let k = g.reference();
        let shape = format!("rows={rows} d={d} clip={clip:?}");
        let (x, z, tin, d1) = (
            gpu.upload("x", &xx)?,
            gpu.upload("z", &xz)?,
            gpu.upload("tin", &vec![f32::NAN; rows])?,
            gpu.upload("d1", &xd)?,
        );
        let eps = gpu.upload("eps", &xe)?;
        let (mut wx, mut wz, mut wt, mut wd) = (f64s(&xx), f64s(&xz), vec![f64::NAN; rows], f64s(&xd));

        let dsp = sampler_init(gpu, &g, &x, &z, &tin, 1.7, 0.6, 0.25).await?;
        gpu.run(&[&dsp]);
        r::sampler_init(&k, &mut wx, &mut wz, &mut wt, 1.7, 0.6, 0.25);
        for (buf, want) in [(&x, &wx), (&z, &wz), (&tin, &wt)] {
            results.push(SPEC.result("sampler_init", shape.clone(), &gpu.read(buf).await?, want));
        }
        let e64 = f64s(&xe);
        // Every entry at step 1 (noise-free) and at steps 0 and 2 (noisy; 2 is the last Heun level).
        for j in 0..s_n {
            let ctr = gpu.upload("ctr", &[f32::from_bits(j as u32)])?;
            let st = |e| step(gpu, e, &g, &table, &ctr, &eps, &x, &z, &tin, &d1);
            let shape = format!("{shape} step={j}");
            let dsp = st("sampler_linear").await?;
            gpu.run(&[&dsp]);
            r::sampler_linear(&k, &table64, j, &e64, &mut wx, &mut wz, &mut wt);
            for (buf, want) in [(&x, &wx), (&z, &wz), (&tin, &wt)] {
                results.push(SPEC.result("sampler_linear", shape.clone(), &gpu.read(buf).await?, want));
            }
            let dsp = st("heun_step").await?;
            gpu.run(&[&dsp]);
            r::heun_step(&k, &table64, j, &e64, &mut wx, &mut wz, &mut wt, &wd);
            for (buf, want) in [(&x, &wx), (&z, &wz), (&tin, &wt)] {
                results.push(SPEC.result("heun_step", shape.clone(), &gpu.read(buf).await?, want));
            }
            let dsp = st("heun_euler").await?;
            gpu.run(&[&dsp]);
            r::heun_euler(&k, &table64, j, &e64, &mut wx, &mut wz, &mut wt, &mut wd);
            for (buf, want) in [(&x, &wx), (&z, &wz), (&tin, &wt), (&d1, &wd)] {
                results.push(SPEC.result("heun_euler", shape.clone(), &gpu.read(buf).await?, want));
            }
            let dsp = sampler_advance(gpu, &ctr).await?;
            gpu.run(&[&dsp]);
            let got = gpu.read_u32(&ctr).await?;
            let got: Vec<f32> = got.iter().map(|&c| c as f32).collect();
            results.push(SPEC.result("sampler_advance", shape, &got, &[(j + 1) as f64]));
        }
    }

    // Picard: 70 samples of 5 (two workgroups' worth of samples in picard_max) in a ring of 4
    // slots, windows that wrap around the ring, with and without clipping.
    let (ns, d, slots, window, s_n) = (70usize, 5usize, 4usize, 3usize, 9usize);
    let point = ns * d;
    let table_h = test_table(s_n, 53);
    let table64 = f64s(&table_h);
    let table = gpu.upload("table", &table_h)?;
    let (xe, xx) = (normal_vec(slots * point, 54, 0), normal_vec(slots * point, 54, 1));
    for (clip, b, len) in [(None, 0usize, 3usize), (Some((-0.5f32, 0.7f32)), 6, 3), (None, 5, 2)] {
        let g = Group { seed: 77, rows: ns, d, sample0: 3, clip };
        let k = g.reference();
        let shape = format!("ns={ns} d={d} slots={slots} b={b} len={len} clip={clip:?}");
        let (eps, xr) = (gpu.upload("eps", &xe)?, gpu.upload("xr", &xx)?);
        let prev = gpu.zeros("prev", point)?;
        let err = gpu.upload("err", &vec![f32::NAN; window * ns])?;
        let flags = gpu.upload("flags", &vec![f32::NAN; window])?;
        let pc = picard(gpu, &g, &table, &eps, &xr, &prev, &err, &flags, slots, window).await?;
        pc.set_window(gpu, b, len)?;
        let mut rec = gpu.recorder();
        rec.dispatch(&pc.sweep).dispatch(&pc.max);
        rec.submit();
        let (mut wx, mut we, mut wf) = (f64s(&xx), vec![0.0; len * ns], vec![0.0; len]);
        r::picard_sweep(&k, &table64, &f64s(&xe), &mut wx, &mut we, ns, slots, b, len);
        r::picard_max(&we, ns, &mut wf);
        results.push(SPEC.result("picard_sweep", shape.clone(), &gpu.read(&xr).await?, &wx));
        results.push(SPEC.result("picard_sweep", shape.clone(), &gpu.read(&err.view(0, len * ns)?).await?, &we));
        let got = gpu.read(&flags.view(0, len)?).await?;
        // The maxima of the device's own errors, exactly; the errors themselves are checked above.
        let mut exact = vec![0.0; len];
        r::picard_max(&f64s(&gpu.read(&err.view(0, len * ns)?).await?), ns, &mut exact);
        results.push(SPEC.result("picard_max", shape, &got, &exact));
    }
    Ok(results)
}
