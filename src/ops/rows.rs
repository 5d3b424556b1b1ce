//! Launcher for `shaders/rows.wgsl`: every row's input and target of a training step, with the
//! noise drawn on the GPU from per-row counter-based streams.

use super::{needs, prepare, CheckResult, Entry, OpSpec};
use crate::diffusion::rows::RowSpec;
use crate::gpu::{groups_for, Buffer, Dispatch, Gpu, GpuError};
use crate::philox::{normal_vec, philox_uniform, Stream};
use crate::reference::rows as r;
use crate::reference::to_f64;
use crate::reference::tol::{compare, EXACT, STRICT};

pub const SPEC: OpSpec = OpSpec {
    name: "rows",
    shader: super::shader!("rows.wgsl", "philox_core.wgsl"; Params),
    variants: &[],
    entries: &[Entry {
        name: "row_inputs",
        reference: "rows::row_inputs",
        tol: STRICT,
        why: "noise bit-identical; a (y_x x + y_n0 e0) + b e may be contracted to FMAs by the shader compiler",
    }],
    check,
};

super::constants! {
    /// Invocations per workgroup, one block of 4 elements each.
    override WG = 64;
    /// Words per row of the packed table (defined by `diffusion::rows`, which packs it).
    override ROW_WORDS = crate::diffusion::rows::ROW_WORDS;
}

super::uniform! {
    struct Params {
        rows: u32,
        n: u32,
        seed_lo: u32,
        seed_hi: u32,
    }
}

/// inputs, targets (R, N) from the data batch x (B, N) and the packed row table (R * 12 words,
/// `diffusion::rows::pack`, uploaded as the bits of an f32 buffer). `batch` is B, to bound the
/// examples the table may name (the host checks them when it packs).
#[allow(clippy::too_many_arguments)]
pub async fn row_inputs(
    gpu: &Gpu,
    x: &Buffer,
    table: &Buffer,
    inputs: &Buffer,
    targets: &Buffer,
    rows: usize,
    n: usize,
    batch: usize,
    seed: u64,
) -> Result<Dispatch, GpuError> {
    needs(
        "row_inputs",
        &[
            ("x", x, batch * n),
            ("table", table, rows * ROW_WORDS),
            ("inputs", inputs, rows * n),
            ("targets", targets, rows * n),
        ],
    )?;
    let p = Params { rows: rows as u32, n: n as u32, seed_lo: seed as u32, seed_hi: (seed >> 32) as u32 };
    let bufs = [x, table, inputs, targets];
    prepare(gpu, &SPEC, "row_inputs", &bufs, &p, groups_for(rows * n.div_ceil(4), WG)).await
}

/// The packed table as an f32 buffer's contents (bit for bit), for `Gpu::upload` / `write`.
/// Fails when a row names an example outside the batch.
pub fn table_words(rows: &[RowSpec], batch: usize) -> Result<Vec<f32>, GpuError> {
    if let Some(bad) = rows.iter().find(|r| r.example as usize >= batch) {
        return Err(GpuError::Shape(format!("row reads example {} of a batch of {batch}", bad.example)));
    }
    Ok(r::pack(rows).into_iter().map(f32::from_bits).collect())
}

super::check_fn!(check_async);

async fn check_async(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    // 37 rows over a batch of 5 examples of 301 elements (not a multiple of 4), clean and noisy.
    let (batch, n, rows, seed) = (5usize, 301usize, 37usize, 0x5EED_0000_0001u64);
    let x = normal_vec(batch * n, 17, 0);
    let mut u = vec![0f32; rows];
    philox_uniform(&mut u, Stream::new(3, [0, 0, 0]));
    let specs: Vec<RowSpec> = (0..rows)
        .map(|i| {
            let a = u[i].sqrt();
            let noisy = i % 3 == 0;
            RowSpec {
                example: (i % batch) as u32,
                a,
                b: (1.0 - a * a).sqrt(),
                y_x: if noisy { 0.9 } else { 1.0 },
                y_n0: if noisy { 0.43 } else { 0.0 },
                noise: [7, 1, i as u32],
                noise0: [7, 3, (i / 4) as u32],
            }
        })
        .collect();
    let (mut want_in, mut want_t) = (vec![0f32; rows * n], vec![0f32; rows * n]);
    r::row_inputs(&mut want_in, &mut want_t, &x, &specs, seed, n);
    let xb = gpu.upload("x", &x)?;
    let table = gpu.upload("table", &table_words(&specs, batch)?)?;
    let (inputs, targets) = (gpu.zeros("inputs", rows * n)?, gpu.zeros("targets", rows * n)?);
    let d = row_inputs(gpu, &xb, &table, &inputs, &targets, rows, n, batch, seed).await?;
    gpu.run(&[&d]);
    let shape = format!("rows={rows} n={n} batch={batch}");
    let got_in = gpu.read(&inputs).await?;
    let got_t = gpu.read(&targets).await?;
    let bits = |v: &[f32]| v.iter().map(|x| f64::from(x.to_bits())).collect::<Vec<f64>>();
    Ok(vec![
        SPEC.result("row_inputs", format!("{shape} inputs"), &got_in, &to_f64(&want_in)),
        // Targets are the noise itself: bit for bit.
        CheckResult {
            op: SPEC.name,
            entry: "row_inputs",
            shape: format!("{shape} targets (bits)"),
            tol: EXACT,
            report: compare(&bits(&got_t), &bits(&want_t), EXACT),
        },
    ])
}
