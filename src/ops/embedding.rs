//! Launchers for `shaders/embedding.wgsl`: the sinusoidal embedding of the per-row noise input,
//! the scale/shift modulation with its three backward entry points, and the EDM preconditioning
//! (the input scaling, which is its own backward, and the ε output with its backward; all
//! overwritten).

use super::{f64s, needs, prepare, run_read, CheckResult, Entry, OpSpec};
use crate::gpu::{groups_for, Buffer, Dispatch, Gpu, GpuError};
use crate::philox::normal_vec;
use crate::reference::embedding as r;
use crate::reference::tol::{DEFAULT, STRICT};

/// freq_j = exp(-ln(1e4) j / half) is computed in f32 (WGSL allows exp 3 + 2|x| ulp, at most 21
/// here) and arg = t * freq is rounded to f32, so the sin/cos argument carries an absolute error
/// of about |t| * 1e-7 (bounded by |t| * 1.3e-6); the shader's own sincos adds under 1e-7 (the
/// WGSL built-ins would add up to 2^-11: 1.9e-4 measured on SwiftShader). Measured: 1.1e-6 at
/// |t| = 10, identical on lavapipe and SwiftShader. STRICT's 1e-6 does not cover that; DEFAULT's
/// 1e-5 does, with margin, over the c_noise range of EDM (1/4 ln sigma in [-1.6, 1.1]) and of
/// alpha / 8. VP's c_noise (up to 999) would need a looser tolerance.
const EMB: &str = "f32 exp for the frequencies and an f32 t*freq: sin/cos arguments off by ~|t|*1e-7";

/// The per-row coefficients take an f32 exp, divisions, sqrts and m = 1 + (σ_d² − 1)·s, whose
/// subtraction amplifies s's rounding by up to max(1, σ_d²)/min(1, σ_d²) (4 at σ_d = 0.5): a few
/// ulp each (simulated in f32 over α in [−20, 20]: 2.4e-7 relative at most), then one or two
/// products. STRICT's rtol 1e-5 would cover it too; DEFAULT leaves margin for the backend's exp.
const PRECOND: &str = "f32 exp, sqrt and divisions of the per-row coefficients (a few ulp each), then 1-2 products";

/// dx: the recomputed modulation, SiLU's derivative (as silu_bwd) and one product, a few ulp
/// (STRICT would hold); dscale, dshift: f32 sums over H·W, a tree or sequential, in another
/// order than the reference.
const SSILU_BWD: &str = "dx a few roundings; dscale, dshift f32 sums over H*W in another order";

/// Rows of at most this many H·W elements use `scale_shift_silu_bwd_rows` (one invocation
/// each); longer ones a workgroup each.
pub const ROWS_HW_MAX: usize = 1024;

pub const SPEC: OpSpec = OpSpec {
    name: "embedding",
    shader: super::shader!("embedding.wgsl", "tree.wgsl", "activation.wgsl"; Params),
    variants: &[],
    entries: &[
        Entry { name: "embedding_fwd", reference: "embedding::embedding_fwd", tol: DEFAULT, why: EMB },
        Entry {
            name: "scale_shift_silu_fwd",
            reference: "embedding::scale_shift_silu_fwd",
            tol: STRICT,
            why: "the modulation's roundings, then SiLU's f32 exp and division (as silu_fwd)",
        },
        Entry {
            name: "scale_shift_silu_bwd",
            reference: "embedding::scale_shift_silu_bwd_input and _bwd_params",
            tol: DEFAULT,
            why: SSILU_BWD,
        },
        Entry {
            name: "scale_shift_silu_bwd_rows",
            reference: "embedding::scale_shift_silu_bwd_input and _bwd_params",
            tol: DEFAULT,
            why: SSILU_BWD,
        },
        Entry { name: "precond_in", reference: "embedding::precond_in", tol: DEFAULT, why: PRECOND },
        Entry { name: "precond_fwd", reference: "embedding::precond_fwd", tol: DEFAULT, why: PRECOND },
        Entry { name: "precond_bwd", reference: "embedding::precond_bwd", tol: DEFAULT, why: PRECOND },
    ],
    check,
};

super::constants! {
    /// Invocations per workgroup: one element each, or one (b, c) row per workgroup in the
    /// reductions (a power of two for the tree).
    override WG = 256;
    /// Rows per workgroup of `scale_shift_silu_bwd_rows`, one invocation each.
    override WG_ROWS = 64;
}

super::uniform! {
    struct Params {
        /// Threads (elementwise entries) or rows B * C (reductions).
        n: u32,
        /// Embedding width E, or the row length of the preconditioning entries.
        e: u32,
        /// H * W of the scale/shift entries.
        hw: u32,
        /// σ_d of the preconditioning entries (0 for the others, which do not read it).
        sigma_d: f32,
    }
}

fn params(n: usize, e: usize, hw: usize) -> Params {
    Params { n: n as u32, e: e as u32, hw: hw as u32, sigma_d: 0.0 }
}

fn precond_params(b: usize, e: usize, sigma_d: f32) -> Result<Params, GpuError> {
    if !(sigma_d.is_finite() && sigma_d > 0.0) {
        return Err(GpuError::Shape(format!("precond: sigma_d {sigma_d} must be positive and finite")));
    }
    Ok(Params { sigma_d, ..params(b * e, e.max(1), 0) })
}

// --- sinusoidal embedding -----------------------------------------------------------------------

/// out[b] = [cos(t[b] freq), sin(t[b] freq)], freq_j = 10000^(-j / (E/2)). E even; accurate for
/// |t| <= 8192 (the range of the shader's sin/cos reduction). t: (B,), out: (B, E)
pub async fn embedding_fwd(gpu: &Gpu, t: &Buffer, out: &Buffer, b: usize, e: usize) -> Result<Dispatch, GpuError> {
    if e == 0 || !e.is_multiple_of(2) {
        return Err(GpuError::Shape(format!("embedding: width {e} must be even and positive")));
    }
    needs("embedding_fwd", &[("t", t, b), ("out", out, b * e)])?;
    let p = params(b * e, e, 0);
    prepare(gpu, &SPEC, "embedding_fwd", &[t, out], &p, groups_for(b * e, WG)).await
}

// --- scale/shift modulation followed by SiLU -----------------------------------------------------

/// y = silu(x * (1 + scale[b, c]) + shift[b, c]): the modulation and the SiLU in one pass,
/// the modulated value not stored (the backward recomputes it from x). Overwritten.
/// x, y: (B, C, H, W), scale, shift: (B, C); bc = B * C, hw = H * W
pub async fn scale_shift_silu_fwd(
    gpu: &Gpu,
    x: &Buffer,
    scale: &Buffer,
    shift: &Buffer,
    y: &Buffer,
    bc: usize,
    hw: usize,
) -> Result<Dispatch, GpuError> {
    let e = "scale_shift_silu_fwd";
    needs(e, &[("x", x, bc * hw), ("scale", scale, bc), ("shift", shift, bc), ("y", y, bc * hw)])?;
    let p = params(bc * hw, 0, hw.max(1));
    prepare(gpu, &SPEC, e, &[x, scale, shift, y], &p, groups_for(bc * hw, WG)).await
}

/// The backward of `scale_shift_silu_fwd` for the gradient `dout` of its output, in one pass:
/// dm = dout * silu'(m) with m recomputed from x, dx = dm * (1 + scale[b, c]),
/// dscale[b, c] = sum_hw dm * x, dshift[b, c] = sum_hw dm. All overwritten.
/// dout, x, dx: (B, C, H, W), scale, shift, dscale, dshift: (B, C)
#[allow(clippy::too_many_arguments)]
pub async fn scale_shift_silu_bwd(
    gpu: &Gpu,
    dout: &Buffer,
    x: &Buffer,
    scale: &Buffer,
    shift: &Buffer,
    dx: &Buffer,
    dscale: &Buffer,
    dshift: &Buffer,
    bc: usize,
    hw: usize,
) -> Result<Dispatch, GpuError> {
    let n = bc * hw;
    let (e, groups) = ssilu_bwd_plan(bc, hw);
    let b = [("dout", dout, n), ("x", x, n), ("scale", scale, bc), ("shift", shift, bc), ("dx", dx, n)];
    needs(e, &b)?;
    needs(e, &[("dscale", dscale, bc), ("dshift", dshift, bc)])?;
    let p = params(bc, 0, hw);
    prepare(gpu, &SPEC, e, &[dout, x, scale, shift, dx, dscale, dshift], &p, groups).await
}

/// The backward's entry for rows of `hw` elements and its workgroup count.
fn ssilu_bwd_plan(bc: usize, hw: usize) -> (&'static str, u32) {
    if hw <= ROWS_HW_MAX {
        ("scale_shift_silu_bwd_rows", groups_for(bc, WG_ROWS))
    } else {
        ("scale_shift_silu_bwd", bc as u32)
    }
}

// --- preconditioning ----------------------------------------------------------------------------

/// zin = a_in·z per row, α = 8·t[b] (reference/embedding.rs): the network's input. Also the
/// backward of that scaling (dz = a_in·dzin: pass dzin as z). Overwritten. t: (B,), z, zin: (B, E)
pub async fn precond_in(
    gpu: &Gpu,
    t: &Buffer,
    z: &Buffer,
    zin: &Buffer,
    b: usize,
    e: usize,
    sigma_d: f32,
) -> Result<Dispatch, GpuError> {
    needs("precond_in", &[("t", t, b), ("z", z, b * e), ("zin", zin, b * e)])?;
    let p = precond_params(b, e, sigma_d)?;
    prepare(gpu, &SPEC, "precond_in", &[t, z, zin], &p, groups_for(b * e, WG)).await
}

/// eps = a_skip·z + a_out·f per row, α = 8·t[b] (reference/embedding.rs).
/// t: (B,), z, f, eps: (B, E)
#[allow(clippy::too_many_arguments)]
pub async fn precond_fwd(
    gpu: &Gpu,
    t: &Buffer,
    z: &Buffer,
    f: &Buffer,
    eps: &Buffer,
    b: usize,
    e: usize,
    sigma_d: f32,
) -> Result<Dispatch, GpuError> {
    needs("precond_fwd", &[("t", t, b), ("z", z, b * e), ("f", f, b * e), ("eps", eps, b * e)])?;
    let p = precond_params(b, e, sigma_d)?;
    prepare(gpu, &SPEC, "precond_fwd", &[t, z, f, eps], &p, groups_for(b * e, WG)).await
}

/// df = a_out·deps, dz = a_skip·deps. Both overwritten. t: (B,), deps, df, dz: (B, E)
#[allow(clippy::too_many_arguments)]
pub async fn precond_bwd(
    gpu: &Gpu,
    t: &Buffer,
    deps: &Buffer,
    df: &Buffer,
    dz: &Buffer,
    b: usize,
    e: usize,
    sigma_d: f32,
) -> Result<Dispatch, GpuError> {
    needs("precond_bwd", &[("t", t, b), ("deps", deps, b * e), ("df", df, b * e), ("dz", dz, b * e)])?;
    let p = precond_params(b, e, sigma_d)?;
    prepare(gpu, &SPEC, "precond_bwd", &[t, deps, df, dz], &p, groups_for(b * e, WG)).await
}

// ---------------------------------------------------------------------------------------------

super::check_fn!(check_async);

async fn check_async(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    let mut results = Vec::new();

    // Embedding: 37 rows of width 200 (29 workgroups, E/2 = 100 not a power of two). t spans EDM's
    // c_noise range (1/4 ln sigma for sigma in [0.002, 80] is [-1.6, 1.1]), plus 0 and +-10
    // (alpha / 8 at |alpha| = 80).
    let (b, e) = (37usize, 200usize);
    let mut xt: Vec<f32> = normal_vec(b, 40, 0).iter().map(|v| 1.5 * v).collect();
    xt[..5].copy_from_slice(&[0.0, -10.0, 10.0, -1.6, 1.1]);
    let t = gpu.upload("t", &xt)?;
    // Outputs start as NaN: an element a kernel fails to write fails the check.
    let emb = gpu.upload("emb", &vec![f32::NAN; b * e])?;
    let mut want = vec![0.0; b * e];
    r::embedding_fwd(&mut want, &f64s(&xt), e);
    let d = embedding_fwd(gpu, &t, &emb, b, e).await?;
    results.push(SPEC.result("embedding_fwd", format!("b={b} e={e}"), &run_read(gpu, &d, &emb).await?, &want));

    // Scale/shift: B=3, C=12, 13x9 and 4x4 planes (the one-invocation-per-row backward, 36 and
    // 70 rows: several workgroups) and a 40x30 plane (H*W = 1200: a workgroup per row, several
    // strides per thread).
    for (bc, hw) in [(3 * 12, 13 * 9), (7 * 10, 4 * 4), (2 * 5, 40 * 30)] {
        let n = bc * hw;
        let shape = format!("bc={bc} hw={hw}");
        let xx = normal_vec(n, 41, 0);
        let xd = normal_vec(n, 41, 1);
        let (xs, xh) = (normal_vec(bc, 41, 2), normal_vec(bc, 41, 3));
        let (x64, d64, s64, h64) = (f64s(&xx), f64s(&xd), f64s(&xs), f64s(&xh));
        let (x, dout) = (gpu.upload("x", &xx)?, gpu.upload("dout", &xd)?);
        let (scale, shift) = (gpu.upload("scale", &xs)?, gpu.upload("shift", &xh)?);
        let y = gpu.upload("y", &vec![f32::NAN; n])?;
        // Start the reduced gradients non-zero: they must be overwritten, not accumulated.
        let dsmall = gpu.upload("dsmall", &normal_vec(bc, 41, 4))?;

        // The modulation + SiLU.
        let mut want = vec![0.0; n];
        r::scale_shift_silu_fwd(&mut want, &x64, &s64, &h64, hw);
        let d = scale_shift_silu_fwd(gpu, &x, &scale, &shift, &y, bc, hw).await?;
        results.push(SPEC.result("scale_shift_silu_fwd", shape.clone(), &run_read(gpu, &d, &y).await?, &want));
        gpu.write(&y, &vec![f32::NAN; n]);
        r::scale_shift_silu_bwd_input(&mut want, &d64, &x64, &s64, &h64, hw);
        let dsmall2 = gpu.upload("dsmall2", &normal_vec(bc, 41, 6))?;
        let (mut want_s, mut want_h) = (vec![0.0; bc], vec![0.0; bc]);
        r::scale_shift_silu_bwd_params(&mut want_s, &mut want_h, &d64, &x64, &s64, &h64, hw);
        let d = scale_shift_silu_bwd(gpu, &dout, &x, &scale, &shift, &y, &dsmall, &dsmall2, bc, hw).await?;
        gpu.run(&[&d]);
        let e = ssilu_bwd_plan(bc, hw).0;
        for (what, buf, want) in [("dx", &y, &want), ("dscale", &dsmall, &want_s), ("dshift", &dsmall2, &want_h)] {
            results.push(SPEC.result(e, format!("{shape} {what}"), &gpu.read(buf).await?, want));
        }
    }

    // Preconditioning: 301 rows of 3 (4 workgroups, a row length that does not divide 256); the
    // noise inputs span alpha / 8 for alpha in [-20, 20], the clamp-free range where every
    // coefficient matters, plus rows at +-20 (alpha = +-160) where exp(-|alpha|) underflows; for
    // the MLP's sigma_d = 1, the UNet's 0.5 and a sigma_d above 1 (m = 1 + (d - 1) s grows).
    let (b, e) = (301usize, 3usize);
    let mut xt: Vec<f32> = normal_vec(b, 42, 0).iter().map(|v| 1.2 * v).collect();
    xt[..3].copy_from_slice(&[0.0, -20.0, 20.0]);
    let (xz, xf, xd) = (normal_vec(b * e, 42, 1), normal_vec(b * e, 42, 2), normal_vec(b * e, 42, 3));
    let (t64, z64, f64_, d64) = (f64s(&xt), f64s(&xz), f64s(&xf), f64s(&xd));
    let (t, z, f, deps) =
        (gpu.upload("t", &xt)?, gpu.upload("z", &xz)?, gpu.upload("f", &xf)?, gpu.upload("deps", &xd)?);
    for sigma_d in [1.0f32, 0.5, 1.7] {
        let (eps, df, dz) = (
            gpu.upload("eps", &vec![f32::NAN; b * e])?,
            gpu.upload("df", &vec![f32::NAN; b * e])?,
            gpu.upload("dz", &vec![f32::NAN; b * e])?,
        );
        let (shape, sd) = (format!("b={b} e={e} sigma_d={sigma_d}"), f64::from(sigma_d));
        let mut want = vec![0.0; b * e];
        r::precond_in(&mut want, &t64, &z64, e, sd);
        let d = precond_in(gpu, &t, &z, &eps, b, e, sigma_d).await?;
        results.push(SPEC.result("precond_in", shape.clone(), &run_read(gpu, &d, &eps).await?, &want));
        gpu.write(&eps, &vec![f32::NAN; b * e]);
        r::precond_fwd(&mut want, &t64, &z64, &f64_, e, sd);
        let d = precond_fwd(gpu, &t, &z, &f, &eps, b, e, sigma_d).await?;
        results.push(SPEC.result("precond_fwd", shape.clone(), &run_read(gpu, &d, &eps).await?, &want));
        let (mut want_df, mut want_dz) = (vec![0.0; b * e], vec![0.0; b * e]);
        r::precond_bwd(&mut want_df, &mut want_dz, &d64, &t64, e, sd);
        let d = precond_bwd(gpu, &t, &deps, &df, &dz, b, e, sigma_d).await?;
        let got_df = run_read(gpu, &d, &df).await?;
        results.push(SPEC.result("precond_bwd", format!("{shape} df"), &got_df, &want_df));
        results.push(SPEC.result("precond_bwd", format!("{shape} dz"), &gpu.read(&dz).await?, &want_dz));
    }
    Ok(results)
}
