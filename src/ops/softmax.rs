//! Launchers for `shaders/softmax.wgsl`: row softmax with max subtraction and its backward from
//! the saved output (both overwritten).

use bytemuck::Zeroable;

use super::{f64s, needs, prepare, run_read, CheckResult, Entry, OpSpec};
use crate::gpu::{Buffer, Dispatch, Gpu, GpuError};
use crate::philox::normal_vec;
use crate::reference::attention as r;
use crate::reference::tol::DEFAULT;

pub const SPEC: OpSpec = OpSpec {
    name: "softmax",
    shader: super::shader!("softmax.wgsl", "tree.wgsl"; Params),
    variants: &[],
    entries: &[
        Entry {
            name: "softmax_rows_fwd",
            reference: "attention::softmax_rows_fwd",
            tol: DEFAULT,
            why: "f32 exp (a few ulp) and an f32 tree sum of the row in a different order",
        },
        Entry {
            name: "softmax_rows_bwd",
            reference: "attention::softmax_rows_bwd",
            tol: DEFAULT,
            why: "an f32 tree dot product of the row, then one subtraction and one product",
        },
    ],
    check,
};

super::constants! {
    /// Invocations per workgroup (one workgroup per row; a power of two for the tree).
    override WG = 256;
}

super::uniform! {
    struct Params {
        rows: u32,
        n: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

fn params(rows: usize, n: usize) -> Params {
    Params { rows: rows as u32, n: n as u32, ..Zeroable::zeroed() }
}

/// y = softmax(x) over each row of N, with the row maximum subtracted first; one workgroup per
/// row. x, y: (R, N)
pub async fn softmax_rows_fwd(gpu: &Gpu, x: &Buffer, y: &Buffer, rows: usize, n: usize) -> Result<Dispatch, GpuError> {
    needs("softmax_rows_fwd", &[("x", x, rows * n), ("y", y, rows * n)])?;
    prepare(gpu, &SPEC, "softmax_rows_fwd", &[x, y], &params(rows, n), rows as u32).await
}

/// dx = y * (dy - sum(dy * y)) per row, from the saved forward output y. Overwritten.
/// dy, y, dx: (R, N)
pub async fn softmax_rows_bwd(
    gpu: &Gpu,
    dy: &Buffer,
    y: &Buffer,
    dx: &Buffer,
    rows: usize,
    n: usize,
) -> Result<Dispatch, GpuError> {
    needs("softmax_rows_bwd", &[("dy", dy, rows * n), ("y", y, rows * n), ("dx", dx, rows * n)])?;
    prepare(gpu, &SPEC, "softmax_rows_bwd", &[dy, y, dx], &params(rows, n), rows as u32).await
}

// ---------------------------------------------------------------------------------------------

super::check_fn!(check_async);

async fn check_async(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    let mut results = Vec::new();
    // Rows longer than a workgroup (300) and shorter (37), several rows each.
    for (rows, n) in [(6usize, 300usize), (9, 37)] {
        results.extend(check_one(gpu, rows, n).await?);
    }
    Ok(results)
}

/// Row 0 is plain normals; row 1 mixes +-1000 (exp(-2000) underflows to 0) with one -1e30; row
/// 2 is all -1e30 (x - max = 0: uniform 1/N); row 3 spreads to +-30; the rest are normals.
async fn check_one(gpu: &Gpu, rows: usize, n: usize) -> Result<Vec<CheckResult>, GpuError> {
    let mut xx = normal_vec(rows * n, 50 + n as u64, 0);
    for (i, v) in xx[n..2 * n].iter_mut().enumerate() {
        *v = if i % 3 == 0 { -1000.0 } else { 1000.0 + *v };
    }
    xx[n + n / 2] = -1e30;
    xx[2 * n..3 * n].fill(-1e30);
    for v in &mut xx[3 * n..4 * n] {
        *v *= 10.0;
    }
    let xdy = normal_vec(rows * n, 50 + n as u64, 1);
    let shape = format!("rows={rows} n={n} (+-1000, -1e30 rows)");

    let x = gpu.upload("x", &xx)?;
    // Outputs start as NaN: an element a kernel fails to write fails the check.
    let y = gpu.upload("y", &vec![f32::NAN; rows * n])?;
    let mut want = vec![0.0; rows * n];
    r::softmax_rows_fwd(&mut want, &f64s(&xx), n);
    let d = softmax_rows_fwd(gpu, &x, &y, rows, n).await?;
    let mut results = vec![SPEC.result("softmax_rows_fwd", shape.clone(), &run_read(gpu, &d, &y).await?, &want)];

    // The backward gets the reference's y rounded to f32, so it is checked on its own.
    let y32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
    gpu.write(&y, &y32);
    let dy = gpu.upload("dy", &xdy)?;
    let dx = gpu.upload("dx", &vec![f32::NAN; rows * n])?;
    r::softmax_rows_bwd(&mut want, &f64s(&xdy), &f64s(&y32), n);
    let d = softmax_rows_bwd(gpu, &dy, &y, &dx, rows, n).await?;
    results.push(SPEC.result("softmax_rows_bwd", shape, &run_read(gpu, &d, &dx).await?, &want));
    Ok(results)
}
