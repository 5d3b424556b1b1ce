//! Launchers for `shaders/elementwise.wgsl`: add, mul, scale, axpy, SiLU forward and backward.

use bytemuck::Zeroable;

use super::{f64s, need, prepare, run_read, CheckResult, Entry, OpSpec};
use crate::gpu::{groups_for, Buffer, Dispatch, Gpu, GpuError};
use crate::philox::normal_vec;
use crate::reference::elementwise as r;
use crate::reference::tol::{compare, STRICT};

pub const SPEC: OpSpec = OpSpec {
    name: "elementwise",
    shader: super::shader!("elementwise.wgsl", "activation.wgsl"; Params),
    variants: &[],
    entries: &[
        Entry { name: "add", reference: "elementwise::add", tol: STRICT, why: "one rounding" },
        Entry { name: "mul", reference: "elementwise::mul", tol: STRICT, why: "one rounding" },
        Entry { name: "scale", reference: "elementwise::scale", tol: STRICT, why: "one rounding" },
        Entry { name: "axpy", reference: "elementwise::axpy", tol: STRICT, why: "two roundings" },
        Entry {
            name: "silu_fwd",
            reference: "elementwise::silu_fwd",
            tol: STRICT,
            why: "GPU exp is within a few ulp; products add one rounding each",
        },
        Entry {
            name: "silu_bwd",
            reference: "elementwise::silu_bwd",
            tol: STRICT,
            why: "as silu_fwd, plus three roundings",
        },
    ],
    check,
};

super::constants! {
    /// Invocations per workgroup, one element each.
    override WG = 256;
}

super::uniform! {
    struct Params {
        n: u32,
        alpha: f32,
        _pad0: u32,
        _pad1: u32,
    }
}

async fn launch(
    gpu: &Gpu,
    entry: &'static str,
    buffers: &[&Buffer],
    n: usize,
    alpha: f32,
) -> Result<Dispatch, GpuError> {
    for (i, b) in buffers.iter().enumerate() {
        need(&format!("{entry} operand {i}"), b, n)?;
    }
    let params = Params { n: n as u32, alpha, ..Zeroable::zeroed() };
    prepare(gpu, &SPEC, entry, buffers, &params, groups_for(n, WG)).await
}

/// out = a + b over the first `n` elements.
pub async fn add(gpu: &Gpu, a: &Buffer, b: &Buffer, out: &Buffer, n: usize) -> Result<Dispatch, GpuError> {
    launch(gpu, "add", &[a, b, out], n, 0.0).await
}

/// out = a * b.
pub async fn mul(gpu: &Gpu, a: &Buffer, b: &Buffer, out: &Buffer, n: usize) -> Result<Dispatch, GpuError> {
    launch(gpu, "mul", &[a, b, out], n, 0.0).await
}

/// y = alpha * x.
pub async fn scale(gpu: &Gpu, x: &Buffer, y: &Buffer, n: usize, alpha: f32) -> Result<Dispatch, GpuError> {
    launch(gpu, "scale", &[x, y], n, alpha).await
}

/// y += alpha * x.
pub async fn axpy(gpu: &Gpu, x: &Buffer, y: &Buffer, n: usize, alpha: f32) -> Result<Dispatch, GpuError> {
    launch(gpu, "axpy", &[x, y], n, alpha).await
}

/// y = silu(x).
pub async fn silu_fwd(gpu: &Gpu, x: &Buffer, y: &Buffer, n: usize) -> Result<Dispatch, GpuError> {
    launch(gpu, "silu_fwd", &[x, y], n, 0.0).await
}

/// dx = dout * silu'(x).
pub async fn silu_bwd(gpu: &Gpu, dout: &Buffer, x: &Buffer, dx: &Buffer, n: usize) -> Result<Dispatch, GpuError> {
    launch(gpu, "silu_bwd", &[dout, x, dx], n, 0.0).await
}

super::check_fn!(check_async);

async fn check_async(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    // Several workgroups, not a multiple of the workgroup size; extreme SiLU inputs included.
    let n = 3001;
    let mut xa = normal_vec(n, 1, 0);
    let xb = normal_vec(n, 1, 1);
    for (i, v) in [-1e4f32, -90.0, -20.0, 0.0, 20.0, 90.0, 1e4].iter().enumerate() {
        xa[i * 400] = *v;
    }
    let alpha = 0.37f32;
    let (a, b) = (gpu.upload("a", &xa)?, gpu.upload("b", &xb)?);
    let out = gpu.zeros("out", n)?;
    let (a64, b64) = (f64s(&xa), f64s(&xb));
    let mut want = vec![0f64; n];
    let mut results = Vec::new();
    let mut push = |entry: &'static str, got: Vec<f32>, want: &[f64]| {
        let tol = SPEC.entry(entry).map_or(STRICT, |e| e.tol);
        results.push(CheckResult {
            op: SPEC.name,
            entry,
            shape: format!("n={n}"),
            tol,
            report: compare(&got, want, tol),
        });
    };

    r::add(&mut want, &a64, &b64);
    push("add", run_read(gpu, &add(gpu, &a, &b, &out, n).await?, &out).await?, &want);
    r::mul(&mut want, &a64, &b64);
    push("mul", run_read(gpu, &mul(gpu, &a, &b, &out, n).await?, &out).await?, &want);
    r::scale(&mut want, &a64, f64::from(alpha));
    push("scale", run_read(gpu, &scale(gpu, &a, &out, n, alpha).await?, &out).await?, &want);
    gpu.write(&out, &xb);
    want.copy_from_slice(&b64);
    r::axpy(&mut want, &a64, f64::from(alpha));
    push("axpy", run_read(gpu, &axpy(gpu, &a, &out, n, alpha).await?, &out).await?, &want);
    r::silu_fwd(&mut want, &a64);
    push("silu_fwd", run_read(gpu, &silu_fwd(gpu, &a, &out, n).await?, &out).await?, &want);
    // dout = b, x = a.
    r::silu_bwd(&mut want, &b64, &a64);
    push("silu_bwd", run_read(gpu, &silu_bwd(gpu, &b, &a, &out, n).await?, &out).await?, &want);
    Ok(results)
}
