//! Launchers for `shaders/resample.wgsl`: nearest 2x upsampling, 2x2 average pooling and the
//! channel concatenation of skip connections, each with its input backward (all overwritten).
//!
//! `Nchw` is the size of the op's *input* x; `reference::resample` takes the same type.

use bytemuck::Zeroable;

use super::{f64s, needs, prepare, run_read, CheckResult, Entry, OpSpec};
use crate::gpu::{groups_for, Buffer, Dispatch, Gpu, GpuError};
use crate::philox::normal_vec;
use crate::reference::resample as r;
use crate::reference::tol::{EXACT, STRICT};

/// An NCHW size. For the resample ops it is the size of the *input* x.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nchw {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Nchw {
    pub fn new(b: usize, c: usize, h: usize, w: usize) -> Self {
        Self { b, c, h, w }
    }

    /// Elements: B * C * H * W.
    pub fn len(&self) -> usize {
        self.b * self.c * self.h * self.w
    }

    /// True when the tensor is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub const SPEC: OpSpec = OpSpec {
    name: "resample",
    shader: super::shader!("resample.wgsl"; Params),
    variants: &[],
    entries: &[
        Entry { name: "upsample2x_fwd", reference: "resample::upsample2x_fwd", tol: EXACT, why: "a copy" },
        Entry {
            name: "upsample2x_bwd_input",
            reference: "resample::upsample2x_bwd_input",
            tol: STRICT,
            why: "a sum of four in f32, same order as the reference",
        },
        Entry {
            name: "avgpool2x2_fwd",
            reference: "resample::avgpool2x2_fwd",
            tol: STRICT,
            why: "a sum of four in f32 (the exact 1/4 scale adds no rounding)",
        },
        Entry {
            name: "avgpool2x2_bwd_input",
            reference: "resample::avgpool2x2_bwd_input",
            tol: EXACT,
            why: "a copy scaled by 1/4, exact in binary floating point",
        },
        Entry { name: "concat_fwd", reference: "resample::concat_fwd", tol: EXACT, why: "a copy" },
        Entry { name: "concat_bwd", reference: "resample::concat_bwd", tol: EXACT, why: "a copy" },
    ],
    check,
};

super::constants! {
    /// Invocations per workgroup, one element of the tensor written each.
    override WG = 256;
}

super::uniform! {
    struct Params {
        /// Threads: elements of the tensor written.
        n: u32,
        /// Size of the resample input (up/downsampling).
        h: u32,
        w: u32,
        /// concat: H * W and the two channel counts.
        hw: u32,
        c1: u32,
        c2: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

impl Params {
    fn resample(n: usize, s: Nchw) -> Self {
        let hw = s.h * s.w;
        Self { n: n as u32, h: s.h as u32, w: s.w as u32, hw: hw as u32, c1: s.c as u32, ..Zeroable::zeroed() }
    }

    fn concat(b: usize, c1: usize, c2: usize, hw: usize) -> Self {
        let n = b * (c1 + c2) * hw;
        Self { n: n as u32, hw: hw as u32, c1: c1 as u32, c2: c2 as u32, ..Zeroable::zeroed() }
    }
}

async fn launch(gpu: &Gpu, entry: &'static str, bufs: &[&Buffer], p: Params) -> Result<Dispatch, GpuError> {
    prepare(gpu, &SPEC, entry, bufs, &p, groups_for(p.n as usize, WG)).await
}

fn even(s: Nchw) -> Result<(), GpuError> {
    if !s.h.is_multiple_of(2) || !s.w.is_multiple_of(2) {
        return Err(GpuError::Shape(format!("avgpool2x2: odd size {}x{}", s.h, s.w)));
    }
    Ok(())
}

// --- nearest 2x upsampling ----------------------------------------------------------------------

/// out[b, c, y, x] = x[b, c, y / 2, x / 2]. x: (B, C, H, W), out: (B, C, 2H, 2W); s = size of x
pub async fn upsample2x_fwd(gpu: &Gpu, x: &Buffer, out: &Buffer, s: Nchw) -> Result<Dispatch, GpuError> {
    needs("upsample2x_fwd", &[("x", x, s.len()), ("out", out, 4 * s.len())])?;
    launch(gpu, "upsample2x_fwd", &[x, out], Params::resample(4 * s.len(), s)).await
}

/// dx = the sum of dout over each 2x2 block. Overwritten.
/// dout: (B, C, 2H, 2W), dx: (B, C, H, W); s = size of x
pub async fn upsample2x_bwd_input(gpu: &Gpu, dout: &Buffer, dx: &Buffer, s: Nchw) -> Result<Dispatch, GpuError> {
    needs("upsample2x_bwd_input", &[("dout", dout, 4 * s.len()), ("dx", dx, s.len())])?;
    launch(gpu, "upsample2x_bwd_input", &[dout, dx], Params::resample(s.len(), s)).await
}

// --- 2x2 average pooling ------------------------------------------------------------------------

/// out = the mean of each 2x2 block of x; H and W even. x: (B, C, H, W), out: (B, C, H/2, W/2)
pub async fn avgpool2x2_fwd(gpu: &Gpu, x: &Buffer, out: &Buffer, s: Nchw) -> Result<Dispatch, GpuError> {
    even(s)?;
    needs("avgpool2x2_fwd", &[("x", x, s.len()), ("out", out, s.len() / 4)])?;
    launch(gpu, "avgpool2x2_fwd", &[x, out], Params::resample(s.len() / 4, s)).await
}

/// dx[b, c, y, x] = dout[b, c, y / 2, x / 2] / 4. Overwritten.
/// dout: (B, C, H/2, W/2), dx: (B, C, H, W); s = size of x
pub async fn avgpool2x2_bwd_input(gpu: &Gpu, dout: &Buffer, dx: &Buffer, s: Nchw) -> Result<Dispatch, GpuError> {
    even(s)?;
    needs("avgpool2x2_bwd_input", &[("dout", dout, s.len() / 4), ("dx", dx, s.len())])?;
    launch(gpu, "avgpool2x2_bwd_input", &[dout, dx], Params::resample(s.len(), s)).await
}

// --- channel concatenation ----------------------------------------------------------------------

/// out[b] = [a[b]; skip[b]] along channels.
/// a: (B, C1, H, W), skip: (B, C2, H, W), out: (B, C1 + C2, H, W); hw = H * W
#[allow(clippy::too_many_arguments)]
pub async fn concat_fwd(
    gpu: &Gpu,
    a: &Buffer,
    skip: &Buffer,
    out: &Buffer,
    b: usize,
    c1: usize,
    c2: usize,
    hw: usize,
) -> Result<Dispatch, GpuError> {
    needs("concat_fwd", &[("a", a, b * c1 * hw), ("skip", skip, b * c2 * hw), ("out", out, b * (c1 + c2) * hw)])?;
    launch(gpu, "concat_fwd", &[a, skip, out], Params::concat(b, c1, c2, hw)).await
}

/// Splits dout into da and dskip. Both overwritten.
/// dout: (B, C1 + C2, H, W), da: (B, C1, H, W), dskip: (B, C2, H, W); hw = H * W
#[allow(clippy::too_many_arguments)]
pub async fn concat_bwd(
    gpu: &Gpu,
    dout: &Buffer,
    da: &Buffer,
    dskip: &Buffer,
    b: usize,
    c1: usize,
    c2: usize,
    hw: usize,
) -> Result<Dispatch, GpuError> {
    needs("concat_bwd", &[("dout", dout, b * (c1 + c2) * hw), ("da", da, b * c1 * hw), ("dskip", dskip, b * c2 * hw)])?;
    launch(gpu, "concat_bwd", &[dout, da, dskip], Params::concat(b, c1, c2, hw)).await
}

// ---------------------------------------------------------------------------------------------

super::check_fn!(check_async);

async fn check_async(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    let mut results = Vec::new();
    // Odd sizes for upsampling; even (non-power-of-two) for pooling; tens of workgroups each.
    let up = Nchw::new(3, 12, 13, 9);
    let pool = Nchw::new(3, 12, 14, 10);
    let (n_up, n_pool) = (up.len(), pool.len());

    let xx = normal_vec(4 * n_up, 30, 0);
    let xd = normal_vec(4 * n_up, 30, 1);
    let (x64, d64) = (f64s(&xx), f64s(&xd));
    let (x, dout) = (gpu.upload("x", &xx)?, gpu.upload("dout", &xd)?);
    // Outputs start as NaN: an element a kernel fails to write fails the check.
    let big = gpu.upload("big", &vec![f32::NAN; 4 * n_up])?;
    let small = gpu.upload("small", &vec![f32::NAN; n_up])?;

    let shape = format!("x b={} c={} h={} w={}", up.b, up.c, up.h, up.w);
    let mut want = vec![0.0; 4 * n_up];
    r::upsample2x_fwd(&mut want, &x64[..n_up], up);
    let d = upsample2x_fwd(gpu, &x, &big, up).await?;
    results.push(SPEC.result("upsample2x_fwd", shape.clone(), &run_read(gpu, &d, &big).await?, &want));
    let mut want = vec![0.0; n_up];
    r::upsample2x_bwd_input(&mut want, &d64, up);
    let d = upsample2x_bwd_input(gpu, &dout, &small, up).await?;
    results.push(SPEC.result("upsample2x_bwd_input", shape, &run_read(gpu, &d, &small).await?, &want));

    let shape = format!("x b={} c={} h={} w={}", pool.b, pool.c, pool.h, pool.w);
    let mut want = vec![0.0; n_pool / 4];
    r::avgpool2x2_fwd(&mut want, &x64[..n_pool], pool);
    let d = avgpool2x2_fwd(gpu, &x, &small, pool).await?;
    results.push(SPEC.result("avgpool2x2_fwd", shape.clone(), &run_read(gpu, &d, &small).await?[..n_pool / 4], &want));
    let mut want = vec![0.0; n_pool];
    r::avgpool2x2_bwd_input(&mut want, &d64[..n_pool / 4], pool);
    let d = avgpool2x2_bwd_input(gpu, &dout, &big, pool).await?;
    results.push(SPEC.result("avgpool2x2_bwd_input", shape, &run_read(gpu, &d, &big).await?[..n_pool], &want));

    let (b, c1, c2, hw) = (3, 12, 5, 13 * 9);
    let shape = format!("b={b} c1={c1} c2={c2} hw={hw}");
    let (na, ns, no) = (b * c1 * hw, b * c2 * hw, b * (c1 + c2) * hw);
    let skip = gpu.upload("skip", &xd[..ns])?;
    let mut want = vec![0.0; no];
    r::concat_fwd(&mut want, &x64[..na], &d64[..ns], b, c1, c2, hw);
    let d = concat_fwd(gpu, &x, &skip, &big, b, c1, c2, hw).await?;
    results.push(SPEC.result("concat_fwd", shape.clone(), &run_read(gpu, &d, &big).await?[..no], &want));
    let (da, dskip) = (gpu.upload("da", &vec![f32::NAN; na])?, gpu.upload("dskip", &vec![f32::NAN; ns])?);
    let (mut want_a, mut want_s) = (vec![0.0; na], vec![0.0; ns]);
    r::concat_bwd(&mut want_a, &mut want_s, &d64[..no], b, c1, c2, hw);
    let d = concat_bwd(gpu, &dout, &da, &dskip, b, c1, c2, hw).await?;
    results.push(SPEC.result("concat_bwd", format!("{shape} da"), &run_read(gpu, &d, &da).await?, &want_a));
    results.push(SPEC.result("concat_bwd", format!("{shape} dskip"), &gpu.read(&dskip).await?, &want_s));
    Ok(results)
}
