//! Launchers for `shaders/reduce.wgsl`: row sum / mean / squared error, their backward
//! broadcasts, and the global sum of squares used for gradient-norm clipping.

use super::{f64s, needs, prepare, run_read, CheckResult, Entry, OpSpec};
use crate::gpu::{groups_for, Buffer, Dispatch, Gpu, GpuError};
use crate::philox::normal_vec;
use crate::reference::reduce as r;
use crate::reference::tol::{compare, DEFAULT, STRICT};

const TREE: &str = "f32 tree summation in a different order from the reference";

pub const SPEC: OpSpec = OpSpec {
    name: "reduce",
    shader: super::shader!("reduce.wgsl", "tree.wgsl"; Params),
    variants: &[],
    entries: &[
        Entry { name: "row_sum", reference: "reduce::row_sum", tol: DEFAULT, why: TREE },
        Entry { name: "row_mean", reference: "reduce::row_mean", tol: DEFAULT, why: TREE },
        Entry { name: "row_sq_err", reference: "reduce::row_sq_err", tol: DEFAULT, why: TREE },
        Entry { name: "sum_sq_partial", reference: "reduce::sum_sq", tol: DEFAULT, why: TREE },
        Entry {
            name: "row_broadcast_bwd",
            reference: "reduce::row_sum_bwd, reduce::row_mean_bwd",
            tol: STRICT,
            why: "one rounding",
        },
        Entry { name: "row_sq_err_bwd", reference: "reduce::row_sq_err_bwd", tol: STRICT, why: "three roundings" },
    ],
    check,
};

super::constants! {
    /// Invocations per workgroup (a power of two for the tree).
    override WG = 256;
    /// Elements per partial in `sum_sq_partial` (WG invocations, 16 each).
    pub override SUM_SQ_CHUNK = 4096;
}

super::uniform! {
    struct Params {
        rows: u32,
        n: u32,
        scale: f32,
        _pad: u32,
    }
}

fn params(rows: usize, n: usize, scale: f32) -> Params {
    Params { rows: rows as u32, n: n as u32, scale, _pad: 0 }
}

/// out[b] = sum_i x[b, i]. x: (B, N), out: (B,)
pub async fn row_sum(gpu: &Gpu, x: &Buffer, out: &Buffer, rows: usize, n: usize) -> Result<Dispatch, GpuError> {
    needs("row_sum", &[("x", x, rows * n), ("out", out, rows)])?;
    prepare(gpu, &SPEC, "row_sum", &[x, out], &params(rows, n, 1.0), rows as u32).await
}

/// out[b] = mean_i x[b, i]. x: (B, N), out: (B,)
pub async fn row_mean(gpu: &Gpu, x: &Buffer, out: &Buffer, rows: usize, n: usize) -> Result<Dispatch, GpuError> {
    needs("row_mean", &[("x", x, rows * n), ("out", out, rows)])?;
    prepare(gpu, &SPEC, "row_mean", &[x, out], &params(rows, n, 1.0), rows as u32).await
}

/// out[b] = sum_i (x - y)^2. x, y: (B, N), out: (B,)
pub async fn row_sq_err(
    gpu: &Gpu,
    x: &Buffer,
    y: &Buffer,
    out: &Buffer,
    rows: usize,
    n: usize,
) -> Result<Dispatch, GpuError> {
    needs("row_sq_err", &[("x", x, rows * n), ("y", y, rows * n), ("out", out, rows)])?;
    prepare(gpu, &SPEC, "row_sq_err", &[x, y, out], &params(rows, n, 1.0), rows as u32).await
}

/// dx[b, i] = scale * dout[b]: the backward of row_sum (scale 1) and row_mean (scale 1/N).
pub async fn row_broadcast_bwd(
    gpu: &Gpu,
    dout: &Buffer,
    dx: &Buffer,
    rows: usize,
    n: usize,
    scale: f32,
) -> Result<Dispatch, GpuError> {
    needs("row_broadcast_bwd", &[("dout", dout, rows), ("dx", dx, rows * n)])?;
    let p = params(rows, n, scale);
    prepare(gpu, &SPEC, "row_broadcast_bwd", &[dout, dx], &p, groups_for(rows * n, WG)).await
}

/// dx = 2 dout[b] (x - y). x, y, dx: (B, N), dout: (B,)
pub async fn row_sq_err_bwd(
    gpu: &Gpu,
    x: &Buffer,
    y: &Buffer,
    dout: &Buffer,
    dx: &Buffer,
    rows: usize,
    n: usize,
) -> Result<Dispatch, GpuError> {
    needs("row_sq_err_bwd", &[("x", x, rows * n), ("y", y, rows * n), ("dout", dout, rows), ("dx", dx, rows * n)])?;
    let p = params(rows, n, 1.0);
    prepare(gpu, &SPEC, "row_sq_err_bwd", &[x, y, dout, dx], &p, groups_for(rows * n, WG)).await
}

/// The global sum of squares of `x[..n]` in two dispatches: partial sums into `partials`
/// (at least `sum_sq_partials(n)` elements), then their sum into `out[0]`.
pub struct SumSq {
    pub partial: Dispatch,
    pub total: Dispatch,
}

/// Number of partial sums `sum_sq` needs for `n` elements.
pub fn sum_sq_partials(n: usize) -> usize {
    n.div_ceil(SUM_SQ_CHUNK).max(1)
}

pub async fn sum_sq(gpu: &Gpu, x: &Buffer, partials: &Buffer, out: &Buffer, n: usize) -> Result<SumSq, GpuError> {
    let parts = sum_sq_partials(n);
    needs("sum_sq", &[("x", x, n), ("partials", partials, parts), ("out", out, 1)])?;
    let p = params(parts, n, 1.0);
    let partial = prepare(gpu, &SPEC, "sum_sq_partial", &[x, partials], &p, parts as u32).await?;
    let total = row_sum(gpu, partials, out, 1, parts).await?;
    Ok(SumSq { partial, total })
}

super::check_fn!(check_async);

async fn check_async(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    // 37 rows of 1000 (several strides per invocation); sum of squares over 3 partials.
    let (rows, n) = (37usize, 1000usize);
    let xx = normal_vec(rows * n, 11, 0);
    let xy = normal_vec(rows * n, 11, 1);
    let xd = normal_vec(rows, 11, 2);
    let (x64, y64, d64) = (f64s(&xx), f64s(&xy), f64s(&xd));
    let (x, y, dout) = (gpu.upload("x", &xx)?, gpu.upload("y", &xy)?, gpu.upload("dout", &xd)?);
    let out = gpu.zeros("out", rows)?;
    let dx = gpu.zeros("dx", rows * n)?;
    let shape = format!("rows={rows} n={n}");
    let mut results = Vec::new();
    let mut push = |entry: &'static str, shape: &str, got: &[f32], want: &[f64]| {
        let tol = SPEC.entry(entry).map_or(DEFAULT, |e| e.tol);
        results.push(CheckResult {
            op: SPEC.name,
            entry,
            shape: shape.to_string(),
            tol,
            report: compare(got, want, tol),
        });
    };

    let mut want = vec![0.0; rows];
    r::row_sum(&mut want, &x64, n);
    push("row_sum", &shape, &run_read(gpu, &row_sum(gpu, &x, &out, rows, n).await?, &out).await?, &want);
    r::row_mean(&mut want, &x64, n);
    push("row_mean", &shape, &run_read(gpu, &row_mean(gpu, &x, &out, rows, n).await?, &out).await?, &want);
    r::row_sq_err(&mut want, &x64, &y64, n);
    push("row_sq_err", &shape, &run_read(gpu, &row_sq_err(gpu, &x, &y, &out, rows, n).await?, &out).await?, &want);

    let mut want = vec![0.0; rows * n];
    r::row_sum_bwd(&mut want, &d64, n);
    let g = row_broadcast_bwd(gpu, &dout, &dx, rows, n, 1.0).await?;
    push("row_broadcast_bwd", &format!("{shape} sum"), &run_read(gpu, &g, &dx).await?, &want);
    r::row_mean_bwd(&mut want, &d64, n);
    let g = row_broadcast_bwd(gpu, &dout, &dx, rows, n, 1.0 / n as f32).await?;
    push("row_broadcast_bwd", &format!("{shape} mean"), &run_read(gpu, &g, &dx).await?, &want);
    r::row_sq_err_bwd(&mut want, &d64, &x64, &y64, n);
    let g = row_sq_err_bwd(gpu, &x, &y, &dout, &dx, rows, n).await?;
    push("row_sq_err_bwd", &shape, &run_read(gpu, &g, &dx).await?, &want);

    let total = 10_007;
    let parts = gpu.zeros("partials", sum_sq_partials(total))?;
    let s = sum_sq(gpu, &x, &parts, &out, total).await?;
    gpu.run(&[&s.partial, &s.total]);
    let got = gpu.read(&out).await?;
    push("sum_sq_partial", &format!("n={total}"), &got[..1], &[r::sum_sq(&x64[..total])]);
    Ok(results)
}
