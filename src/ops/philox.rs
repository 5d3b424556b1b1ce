//! Launchers for `shaders/philox.wgsl`: counter-based normals and uniforms, bit-identical to
//! `philox` on every target.

use bytemuck::Zeroable;

use super::{need, prepare, run_read, CheckResult, Entry, OpSpec};
use crate::gpu::{groups_for, Buffer, Dispatch, Gpu, GpuError};
use crate::philox::{self as r, Stream};
use crate::reference::tol::{compare, EXACT};

pub const SPEC: OpSpec = OpSpec {
    name: "philox",
    shader: super::shader!("philox.wgsl", "philox_core.wgsl"; Params),
    variants: &[],
    entries: &[
        Entry {
            name: "philox_normal",
            reference: "philox::philox_normal",
            tol: EXACT,
            why: "integer arithmetic throughout; compared bit for bit",
        },
        Entry {
            name: "philox_uniform",
            reference: "philox::philox_uniform",
            tol: EXACT,
            why: "integer arithmetic throughout; compared bit for bit",
        },
    ],
    check,
};

super::constants! {
    /// Invocations per workgroup, one block of 4 values each.
    override WG = 64;
}

super::uniform! {
    struct Params {
        n: u32,
        seed_lo: u32,
        seed_hi: u32,
        /// The stream's counter words 1..3 (word 0 is the block index).
        w0: u32,
        w1: u32,
        w2: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

async fn launch(gpu: &Gpu, entry: &'static str, out: &Buffer, n: usize, s: Stream) -> Result<Dispatch, GpuError> {
    need(entry, out, n)?;
    let [w0, w1, w2] = s.words;
    let (seed_lo, seed_hi) = (s.seed as u32, (s.seed >> 32) as u32);
    let p = Params { n: n as u32, seed_lo, seed_hi, w0, w1, w2, ..Zeroable::zeroed() };
    prepare(gpu, &SPEC, entry, &[out], &p, groups_for(n.div_ceil(4), WG)).await
}

/// out[i] = normal i of `stream`.
pub async fn philox_normal(gpu: &Gpu, out: &Buffer, n: usize, stream: Stream) -> Result<Dispatch, GpuError> {
    launch(gpu, "philox_normal", out, n, stream).await
}

/// out[i] = uniform i of `stream`, in (0, 1).
pub async fn philox_uniform(gpu: &Gpu, out: &Buffer, n: usize, stream: Stream) -> Result<Dispatch, GpuError> {
    launch(gpu, "philox_uniform", out, n, stream).await
}

fn bits(x: &[f32]) -> Vec<f64> {
    x.iter().map(|v| f64::from(v.to_bits())).collect()
}

super::check_fn!(check_async);

async fn check_async(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    // Not a multiple of 4 nor of the workgroup; a seed using both key words.
    let n = 10_001;
    let stream = Stream::new(0x0123_4567_89AB_CDEF, [3, 5, 7]);
    let out = gpu.zeros("out", n)?;
    let mut want = vec![0f32; n];
    let mut results = Vec::new();
    let shape = format!("n={n}");
    r::philox_normal(&mut want, stream);
    let got = run_read(gpu, &philox_normal(gpu, &out, n, stream).await?, &out).await?;
    results.push(CheckResult {
        op: SPEC.name,
        entry: "philox_normal",
        shape: shape.clone(),
        tol: EXACT,
        report: compare(&bits(&got), &bits(&want), EXACT),
    });
    r::philox_uniform(&mut want, stream);
    let got = run_read(gpu, &philox_uniform(gpu, &out, n, stream).await?, &out).await?;
    results.push(CheckResult {
        op: SPEC.name,
        entry: "philox_uniform",
        shape,
        tol: EXACT,
        report: compare(&bits(&got), &bits(&want), EXACT),
    });
    Ok(results)
}
