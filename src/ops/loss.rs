//! Launchers for `shaders/loss.wgsl`: the training step's loss head over rows (math.md §9b).

use bytemuck::Zeroable;

use super::{needs, prepare, run_read, CheckResult, Entry, OpSpec};
use crate::diffusion::rows::LossHead;
use crate::gpu::{groups_for, Buffer, Dispatch, Gpu, GpuError};
use crate::philox::{normal_vec, philox_uniform, Stream};
use crate::reference::loss as r;
use crate::reference::to_f64;
use crate::reference::tol::{DEFAULT, LOOSE, STRICT};

pub const SPEC: OpSpec = OpSpec {
    name: "loss",
    shader: super::shader!("loss.wgsl", "tree.wgsl", "activation.wgsl"; Params),
    variants: &[],
    entries: &[
        Entry { name: "row_err", reference: "loss::row_err", tol: DEFAULT, why: "f32 tree sum over a row" },
        Entry {
            name: "loss_head",
            reference: "loss::loss_head",
            tol: LOOSE,
            why: "logits are differences of f32 row errors of size N (cancellation), summed over M points",
        },
        Entry { name: "loss_grad", reference: "loss::loss_grad", tol: STRICT, why: "four roundings" },
    ],
    check,
};

super::constants! {
    /// Invocations per workgroup (a power of two for the tree).
    override WG = 256;
}

super::uniform! {
    struct Params {
        rows: u32,
        n: u32,
        n_std: u32,
        anchors: u32,
        points: u32,
        lambda_std: f32,
        lambda_cdl: f32,
        cdl_norm: f32,
        std_const: f32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

fn params(h: &LossHead<f32>, n: usize) -> Params {
    Params {
        rows: h.rows() as u32,
        n: n as u32,
        n_std: h.n_std as u32,
        anchors: h.anchors as u32,
        points: h.points as u32,
        lambda_std: h.lambda_std,
        lambda_cdl: h.lambda_cdl,
        cdl_norm: h.cdl_norm,
        std_const: h.std_const,
        ..Zeroable::zeroed()
    }
}

/// errors[r] = ||target_r - scale_r pred_r||^2. pred, target: (R, N); scale, errors: (R,)
pub async fn row_err(
    gpu: &Gpu,
    pred: &Buffer,
    target: &Buffer,
    scale: &Buffer,
    errors: &Buffer,
    h: &LossHead<f32>,
    n: usize,
) -> Result<Dispatch, GpuError> {
    let rows = h.rows();
    needs(
        "row_err",
        &[("pred", pred, rows * n), ("target", target, rows * n), ("scale", scale, rows), ("errors", errors, rows)],
    )?;
    prepare(gpu, &SPEC, "row_err", &[pred, target, scale, errors], &params(h, n), rows as u32).await
}

/// Output buffers of the loss head: row_weights (R,), logits (K,), anchor_losses (K,) and
/// stats (4,) = [total, std, cdl, number of non-finite errors and logits].
pub struct HeadOut<'a> {
    pub row_weights: &'a Buffer,
    pub logits: &'a Buffer,
    pub anchor_losses: &'a Buffer,
    pub stats: &'a Buffer,
}

/// Losses, logits and dL/dE_r from the row errors and the per-row constants.
/// errors, weight, offset: (R,); labels: (K,) of +-1.
pub async fn loss_head(
    gpu: &Gpu,
    errors: &Buffer,
    weight: &Buffer,
    offset: &Buffer,
    labels: &Buffer,
    out: HeadOut<'_>,
    h: &LossHead<f32>,
) -> Result<Dispatch, GpuError> {
    let (rows, k) = (h.rows(), h.anchors);
    needs(
        "loss_head",
        &[
            ("errors", errors, rows),
            ("weight", weight, rows),
            ("offset", offset, rows),
            ("row_weights", out.row_weights, rows),
            ("labels", labels, k),
            ("logits", out.logits, k),
            ("anchor_losses", out.anchor_losses, k),
            ("stats", out.stats, 4),
        ],
    )?;
    let bufs = [errors, weight, offset, labels, out.row_weights, out.logits, out.anchor_losses, out.stats];
    prepare(gpu, &SPEC, "loss_head", &bufs, &params(h, 0), 1).await
}

/// dpred = row_weights[r] (-2 scale[r]) (target - scale[r] pred): the gradient the network's
/// backward starts from. pred, target, dpred: (R, N); scale, row_weights: (R,)
#[allow(clippy::too_many_arguments)]
pub async fn loss_grad(
    gpu: &Gpu,
    pred: &Buffer,
    target: &Buffer,
    scale: &Buffer,
    row_weights: &Buffer,
    dpred: &Buffer,
    h: &LossHead<f32>,
    n: usize,
) -> Result<Dispatch, GpuError> {
    let rows = h.rows();
    needs(
        "loss_grad",
        &[
            ("pred", pred, rows * n),
            ("target", target, rows * n),
            ("scale", scale, rows),
            ("row_weights", row_weights, rows),
            ("dpred", dpred, rows * n),
        ],
    )?;
    let bufs = [pred, target, scale, row_weights, dpred];
    prepare(gpu, &SPEC, "loss_grad", &bufs, &params(h, n), groups_for(rows * n, WG)).await
}

fn uniforms(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut u = vec![0f32; n];
    philox_uniform(&mut u, Stream::new(seed, [0, 0, 0]));
    u.iter().map(|v| lo + (hi - lo) * v).collect()
}

super::check_fn!(check_async);

async fn check_async(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    let mut results = Vec::new();
    // 5 standard rows and 3 anchors of 7 points (47 rows); rows of 300 (several strides).
    let h = LossHead {
        n_std: 5,
        anchors: 3,
        points: 7,
        lambda_std: 1.0f32,
        lambda_cdl: 0.7,
        cdl_norm: 1.0 / 5.0,
        std_const: 0.25,
    };
    let (rows, n) = (h.rows(), 300);
    let shape = format!("S={} K={} M={} N={n}", h.n_std, h.anchors, h.points);
    let pred = normal_vec(rows * n, 31, 0);
    let target = normal_vec(rows * n, 31, 1);
    let scale = uniforms(rows, 2, 0.5, 1.5);
    // Small weights keep the logits O(1), where the sigmoid in the row weights is not saturated.
    let weight = uniforms(rows, 3, 0.0005, 0.002);
    let offset = uniforms(rows, 4, 0.0, 300.0);
    let labels = vec![1.0f32, -1.0, 1.0];
    let up = |name: &str, v: &[f32]| gpu.upload(name, v);
    let (bp, bt, bs) = (up("pred", &pred)?, up("target", &target)?, up("scale", &scale)?);
    let (bw, bo, bl) = (up("weight", &weight)?, up("offset", &offset)?, up("labels", &labels)?);
    // Outputs start as NaN so an element a kernel does not write fails the check.
    let nan = |name: &str, len: usize| gpu.upload(name, &vec![f32::NAN; len]);
    let (errors, rw, logits, losses, stats) =
        (nan("errors", rows)?, nan("row_weights", rows)?, nan("logits", 3)?, nan("losses", 3)?, nan("stats", 4)?);
    let dpred = nan("dpred", rows * n)?;
    let (p64, t64, s64, w64, o64, l64) =
        (to_f64(&pred), to_f64(&target), to_f64(&scale), to_f64(&weight), to_f64(&offset), to_f64(&labels));
    let h64 = LossHead {
        n_std: h.n_std,
        anchors: h.anchors,
        points: h.points,
        lambda_std: f64::from(h.lambda_std),
        lambda_cdl: f64::from(h.lambda_cdl),
        cdl_norm: f64::from(h.cdl_norm),
        std_const: f64::from(h.std_const),
    };

    let mut want_err = vec![0.0; rows];
    r::row_err(&mut want_err, &p64, &t64, &s64, n);
    let got = run_read(gpu, &row_err(gpu, &bp, &bt, &bs, &errors, &h, n).await?, &errors).await?;
    results.push(SPEC.result("row_err", shape.clone(), &got, &want_err));

    // The head from the GPU's errors, against the reference on the same errors.
    let err64 = to_f64(&got);
    let (mut want_rw, mut want_f, mut want_ell) = (vec![0.0; rows], vec![0.0; 3], vec![0.0; 3]);
    let totals = r::loss_head(&mut want_rw, &mut want_f, &mut want_ell, &err64, &w64, &o64, &l64, h64);
    let out = HeadOut { row_weights: &rw, logits: &logits, anchor_losses: &losses, stats: &stats };
    let head = loss_head(gpu, &errors, &bw, &bo, &bl, out, &h).await?;
    gpu.run(&[&head]);
    for (what, buf, want) in [
        ("row_weights", &rw, &want_rw[..]),
        ("logits", &logits, &want_f[..]),
        ("anchor_losses", &losses, &want_ell[..]),
        ("stats", &stats, &[totals[0], totals[1], totals[2], 0.0][..]),
    ] {
        let got = gpu.read(buf).await?;
        results.push(SPEC.result("loss_head", format!("{shape} {what}"), &got, want));
    }

    let rw_f32 = gpu.read(&rw).await?;
    let mut want_d = vec![0.0; rows * n];
    r::loss_grad(&mut want_d, &p64, &t64, &s64, &to_f64(&rw_f32), n);
    let g = loss_grad(gpu, &bp, &bt, &bs, &rw, &dpred, &h, n).await?;
    results.push(SPEC.result("loss_grad", shape.clone(), &run_read(gpu, &g, &dpred).await?, &want_d));

    // A NaN row error is counted, not hidden.
    let mut bad = got.clone();
    bad[4] = f32::NAN;
    gpu.write(&errors, &bad);
    gpu.run(&[&head]);
    let s = gpu.read(&stats).await?;
    let flagged = if s[3] >= 1.0 { 1.0 } else { 0.0 };
    results.push(SPEC.result("loss_head", format!("{shape} NaN error flagged"), &[flagged], &[1.0]));
    Ok(results)
}
