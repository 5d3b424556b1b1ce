//! Launchers for `shaders/groupnorm.wgsl`: GroupNorm forward (saving mean and rstd per (B, G)),
//! the input gradient (overwritten) and the gamma/beta gradients (accumulated), each also with
//! the SiLU that follows the norm fused in (`groupnorm_silu_*`: the shader's SILU override).
//!
//! `GroupNormShape` (B, C, H * W, G) and `EPS` are defined here and taken by `reference::groupnorm`,
//! so a layer describes its norm once for both.

use bytemuck::Zeroable;

use super::{f64s, needs, optional, prepare, run_read, CheckResult, Entry, OpSpec, Variant};
use crate::gpu::{groups_for, Buffer, Dispatch, Gpu, GpuError};
use crate::philox::normal_vec;
use crate::reference::groupnorm as r;
use crate::reference::tol::DEFAULT;

/// PyTorch's default `eps` for `nn.GroupNorm`.
pub const EPS: f64 = 1e-5;

/// Problem size: `hw` = H * W (only the spatial size matters), `g` groups dividing `c`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormShape {
    pub b: usize,
    pub c: usize,
    pub hw: usize,
    pub g: usize,
    pub eps: f64,
}

impl GroupNormShape {
    /// A group norm with PyTorch's eps.
    pub fn new(b: usize, c: usize, hw: usize, g: usize) -> Self {
        assert!(g > 0 && c.is_multiple_of(g), "groupnorm: {g} groups do not divide {c} channels");
        Self { b, c, hw, g, eps: EPS }
    }

    /// Elements of x: B * C * H * W.
    pub fn len(&self) -> usize {
        self.b * self.c * self.hw
    }

    /// True when the tensor is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements normalised together: (C / G) * H * W.
    pub fn group_len(&self) -> usize {
        self.c / self.g * self.hw
    }

    /// Channel of the `i`-th element of group slice `(b, g)`.
    pub(crate) fn channel(&self, g: usize, i: usize) -> usize {
        g * (self.c / self.g) + i / self.hw
    }
}

/// Every entry sums thousands of f32 terms in another order than the reference: (C/G)·H·W per
/// group for the forward and dx, B·H·W per channel for the parameter gradients. Each thread adds
/// N/256 terms in sequence, then a tree of 8 levels halves the partials, which keeps the error
/// far below a sequential f32 loop (measured on lavapipe at N = 4096 and 2048: max_abs 8e-7 for
/// out and dx, relative 7e-7 for dgamma), so DEFAULT holds with a wide margin. dx subtracts two
/// group means from dxhat; the cancellation near zero is what the absolute 1e-5 covers.
const FWD: &str = "two f32 tree sums over the group (mean, centred variance), order differs from the reference";
const BWD_INPUT: &str = "two f32 tree sums over the group, subtracted from dxhat (cancellation near 0)";
const BWD_PARAMS: &str = "f32 tree sums over B*H*W per channel, order differs from the reference";
/// The short-group entries sum sequentially in f32 over at most ROWS_MAX (group) or COLS_MAX
/// (B·H·W) terms: relative error about sqrt(N)·2^-24 typically, N·2^-24 ≤ 6e-5 at worst for the
/// parameter sums, within DEFAULT's rtol.
const ROWS: &str = "sequential f32 sums over a short group (at most ROWS_MAX terms)";
const COLS: &str = "sequential f32 sums over B*H*W (at most COLS_MAX terms) per channel";
/// With SiLU fused the sums are the same; the forward adds one f32 silu per element and the
/// backward one silu' (recomputed from the same f32 y), each a few ulp relative.
const SILU_FWD: &str = "the forward's sums, then f32 silu of the normalised value";
const SILU_BWD: &str = "the backward's sums over dy = dout silu'(y), y recomputed in f32";

/// Groups of at most this many elements use the one-invocation-per-group entries.
pub const ROWS_MAX: usize = 1024;
/// Parameter gradients over at most this many B·H·W terms use one invocation per channel.
pub const COLS_MAX: usize = 1024;

pub const SPEC: OpSpec = OpSpec {
    name: "groupnorm",
    shader: super::shader!("groupnorm.wgsl", "tree.wgsl", "activation.wgsl"; Params),
    variants: &SILU_VARIANTS,
    entries: &[
        Entry { name: "groupnorm_fwd", reference: "groupnorm::groupnorm_fwd", tol: DEFAULT, why: FWD },
        Entry {
            name: "groupnorm_bwd_input",
            reference: "groupnorm::groupnorm_bwd_input",
            tol: DEFAULT,
            why: BWD_INPUT,
        },
        Entry {
            name: "groupnorm_bwd_params",
            reference: "groupnorm::groupnorm_bwd_params",
            tol: DEFAULT,
            why: BWD_PARAMS,
        },
        Entry { name: "groupnorm_fwd_rows", reference: "groupnorm::groupnorm_fwd", tol: DEFAULT, why: ROWS },
        Entry {
            name: "groupnorm_bwd_input_rows",
            reference: "groupnorm::groupnorm_bwd_input",
            tol: DEFAULT,
            why: ROWS,
        },
        Entry {
            name: "groupnorm_bwd_params_cols",
            reference: "groupnorm::groupnorm_bwd_params",
            tol: DEFAULT,
            why: COLS,
        },
        Entry { name: "groupnorm_silu_fwd", reference: "groupnorm::groupnorm_silu_fwd", tol: DEFAULT, why: SILU_FWD },
        Entry {
            name: "groupnorm_silu_bwd_input",
            reference: "groupnorm::groupnorm_silu_bwd_input",
            tol: DEFAULT,
            why: SILU_BWD,
        },
        Entry {
            name: "groupnorm_silu_bwd_params",
            reference: "groupnorm::groupnorm_silu_bwd_params",
            tol: DEFAULT,
            why: SILU_BWD,
        },
        Entry {
            name: "groupnorm_silu_fwd_rows",
            reference: "groupnorm::groupnorm_silu_fwd",
            tol: DEFAULT,
            why: SILU_FWD,
        },
        Entry {
            name: "groupnorm_silu_bwd_input_rows",
            reference: "groupnorm::groupnorm_silu_bwd_input",
            tol: DEFAULT,
            why: SILU_BWD,
        },
        Entry {
            name: "groupnorm_silu_bwd_params_cols",
            reference: "groupnorm::groupnorm_silu_bwd_params",
            tol: DEFAULT,
            why: SILU_BWD,
        },
    ],
    check,
};

/// Each entry point with SILU set: registry entry `groupnorm_silu_*` of `groupnorm_*`, read off
/// the name tables below.
const SILU_VARIANTS: [Variant; 6] = {
    const SILU: &[(&str, f64)] = &[("SILU", 1.0)];
    const fn v(pass: [Names; 2], short: bool) -> Variant {
        let (plain, fused) = if short { (pass[0].short, pass[1].short) } else { (pass[0].wide, pass[1].wide) };
        Variant { name: fused, entry_point: plain, constants: SILU }
    }
    [
        v(FWD_NAMES, false),
        v(BWD_INPUT_NAMES, false),
        v(BWD_PARAMS_NAMES, false),
        v(FWD_NAMES, true),
        v(BWD_INPUT_NAMES, true),
        v(BWD_PARAMS_NAMES, true),
    ]
};

/// The registry entries of one pass: plain, or with SiLU fused.
#[derive(Clone, Copy)]
struct Names {
    wide: &'static str,
    short: &'static str,
}

const FWD_NAMES: [Names; 2] = [
    Names { wide: "groupnorm_fwd", short: "groupnorm_fwd_rows" },
    Names { wide: "groupnorm_silu_fwd", short: "groupnorm_silu_fwd_rows" },
];
const BWD_INPUT_NAMES: [Names; 2] = [
    Names { wide: "groupnorm_bwd_input", short: "groupnorm_bwd_input_rows" },
    Names { wide: "groupnorm_silu_bwd_input", short: "groupnorm_silu_bwd_input_rows" },
];
const BWD_PARAMS_NAMES: [Names; 2] = [
    Names { wide: "groupnorm_bwd_params", short: "groupnorm_bwd_params_cols" },
    Names { wide: "groupnorm_silu_bwd_params", short: "groupnorm_silu_bwd_params_cols" },
];

super::constants! {
    /// Invocations per workgroup of the entries with one workgroup per group or channel (a
    /// power of two for the tree).
    override WG = 256;
    /// Groups (or channels) per workgroup of the `_rows` / `_cols` entries, one invocation
    /// each.
    override WG_ROWS = 64;
}

super::uniform! {
    struct Params {
        b: u32,
        c: u32,
        hw: u32,
        g: u32,
        eps: f32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// The forward / input-gradient entry for this shape and its workgroup count: one workgroup per
/// group, or one invocation per group for groups of at most `ROWS_MAX` elements.
fn row_entry(s: GroupNormShape, names: Names) -> (&'static str, u32) {
    if s.c / s.g.max(1) * s.hw <= ROWS_MAX {
        (names.short, groups_for(s.b * s.g, WG_ROWS))
    } else {
        (names.wide, (s.b * s.g) as u32)
    }
}

/// The parameter-gradient entry: one workgroup per channel, or one invocation per channel when
/// B·H·W is at most `COLS_MAX`.
fn param_entry(s: GroupNormShape, names: Names) -> (&'static str, u32) {
    if s.b * s.hw <= COLS_MAX {
        (names.short, groups_for(s.c, WG_ROWS))
    } else {
        (names.wide, s.c as u32)
    }
}

/// Checks that G divides C and returns the uniform parameters.
fn params(s: GroupNormShape) -> Result<Params, GpuError> {
    if s.g == 0 || !s.c.is_multiple_of(s.g) || s.hw == 0 {
        return Err(GpuError::Shape(format!("groupnorm: {} groups, {} channels, hw {}", s.g, s.c, s.hw)));
    }
    let (b, c, hw, g) = (s.b as u32, s.c as u32, s.hw as u32, s.g as u32);
    Ok(Params { b, c, hw, g, eps: s.eps as f32, ..Zeroable::zeroed() })
}

/// out = gamma * (x - mean) * rstd + beta per group; writes the saved `mean` and `rstd`.
/// x, out: (B, C, H, W), gamma, beta: (C,), mean, rstd: (B, G). One workgroup per (b, g).
#[allow(clippy::too_many_arguments)]
pub async fn groupnorm_fwd(
    gpu: &Gpu,
    x: &Buffer,
    gamma: &Buffer,
    beta: &Buffer,
    out: &Buffer,
    mean: &Buffer,
    rstd: &Buffer,
    s: GroupNormShape,
) -> Result<Dispatch, GpuError> {
    fwd(gpu, [x, gamma, beta, out, mean, rstd], s, FWD_NAMES[0]).await
}

/// out = silu(gamma * (x - mean) * rstd + beta): `groupnorm_fwd` with the SiLU that follows it,
/// in one pass; the normalised value is not stored (the backward recomputes it).
#[allow(clippy::too_many_arguments)]
pub async fn groupnorm_silu_fwd(
    gpu: &Gpu,
    x: &Buffer,
    gamma: &Buffer,
    beta: &Buffer,
    out: &Buffer,
    mean: &Buffer,
    rstd: &Buffer,
    s: GroupNormShape,
) -> Result<Dispatch, GpuError> {
    fwd(gpu, [x, gamma, beta, out, mean, rstd], s, FWD_NAMES[1]).await
}

/// Either forward; `bufs` = x, gamma, beta, out, mean, rstd (the shader's bindings).
async fn fwd(gpu: &Gpu, bufs: [&Buffer; 6], s: GroupNormShape, names: Names) -> Result<Dispatch, GpuError> {
    let p = params(s)?;
    let [x, gamma, beta, out, mean, rstd] = bufs;
    needs(
        names.wide,
        &[
            ("x", x, s.len()),
            ("gamma", gamma, s.c),
            ("beta", beta, s.c),
            ("out", out, s.len()),
            ("mean", mean, s.b * s.g),
            ("rstd", rstd, s.b * s.g),
        ],
    )?;
    let (entry, groups) = row_entry(s, names);
    prepare(gpu, &SPEC, entry, &bufs, &p, groups).await
}

/// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout * gamma, from the
/// saved mean and rstd. Overwritten. dout, x, dx: (B, C, H, W), mean, rstd: (B, G), gamma: (C,)
#[allow(clippy::too_many_arguments)]
pub async fn groupnorm_bwd_input(
    gpu: &Gpu,
    dout: &Buffer,
    x: &Buffer,
    mean: &Buffer,
    rstd: &Buffer,
    gamma: &Buffer,
    dx: &Buffer,
    s: GroupNormShape,
) -> Result<Dispatch, GpuError> {
    bwd_input(gpu, [dout, x, mean, rstd, gamma, dx], None, s).await
}

/// The input gradient of `groupnorm_silu_fwd` for the gradient `dout` of its output: dout
/// carried through silu'(y), y recomputed from x, the saved statistics, gamma and beta, then as
/// `groupnorm_bwd_input`. Overwritten.
#[allow(clippy::too_many_arguments)]
pub async fn groupnorm_silu_bwd_input(
    gpu: &Gpu,
    dout: &Buffer,
    x: &Buffer,
    mean: &Buffer,
    rstd: &Buffer,
    gamma: &Buffer,
    beta: &Buffer,
    dx: &Buffer,
    s: GroupNormShape,
) -> Result<Dispatch, GpuError> {
    bwd_input(gpu, [dout, x, mean, rstd, gamma, dx], Some(beta), s).await
}

/// Either input gradient: `bufs` = dout, x, mean, rstd, gamma, dx; with `beta` the SiLU one.
async fn bwd_input(
    gpu: &Gpu,
    bufs: [&Buffer; 6],
    beta: Option<&Buffer>,
    s: GroupNormShape,
) -> Result<Dispatch, GpuError> {
    let p = params(s)?;
    let [dout, x, mean, rstd, gamma, dx] = bufs;
    let names = BWD_INPUT_NAMES[usize::from(beta.is_some())];
    needs(
        names.wide,
        &[
            ("dout", dout, s.len()),
            ("x", x, s.len()),
            ("mean", mean, s.b * s.g),
            ("rstd", rstd, s.b * s.g),
            ("gamma", gamma, s.c),
            ("dx", dx, s.len()),
        ],
    )?;
    let beta = optional(gpu, &format!("{} beta", names.wide), beta, s.c)?;
    let bufs = [x, gamma, dout, mean, rstd, dx, beta];
    let (entry, groups) = row_entry(s, names);
    prepare(gpu, &SPEC, entry, &bufs, &p, groups).await
}

/// dgamma[c] += sum_{b, hw} dout * xhat, dbeta[c] += sum_{b, hw} dout. Accumulated, one
/// workgroup per channel (a fixed summation order: deterministic).
/// dout, x: (B, C, H, W), mean, rstd: (B, G), dgamma, dbeta: (C,)
#[allow(clippy::too_many_arguments)]
pub async fn groupnorm_bwd_params(
    gpu: &Gpu,
    dout: &Buffer,
    x: &Buffer,
    mean: &Buffer,
    rstd: &Buffer,
    dgamma: &Buffer,
    dbeta: &Buffer,
    s: GroupNormShape,
) -> Result<Dispatch, GpuError> {
    bwd_params(gpu, [dout, x, mean, rstd, dgamma, dbeta], None, s).await
}

/// The gamma and beta gradients of `groupnorm_silu_fwd` for the gradient `dout` of its output:
/// `groupnorm_bwd_params` over dy = dout silu'(y), y recomputed. Accumulated.
#[allow(clippy::too_many_arguments)]
pub async fn groupnorm_silu_bwd_params(
    gpu: &Gpu,
    dout: &Buffer,
    x: &Buffer,
    mean: &Buffer,
    rstd: &Buffer,
    gamma: &Buffer,
    beta: &Buffer,
    dgamma: &Buffer,
    dbeta: &Buffer,
    s: GroupNormShape,
) -> Result<Dispatch, GpuError> {
    bwd_params(gpu, [dout, x, mean, rstd, dgamma, dbeta], Some((gamma, beta)), s).await
}

/// Either parameter gradient: `bufs` = dout, x, mean, rstd, dgamma, dbeta; with (gamma, beta)
/// the SiLU one.
async fn bwd_params(
    gpu: &Gpu,
    bufs: [&Buffer; 6],
    affine: Option<(&Buffer, &Buffer)>,
    s: GroupNormShape,
) -> Result<Dispatch, GpuError> {
    let p = params(s)?;
    let [dout, x, mean, rstd, dgamma, dbeta] = bufs;
    let names = BWD_PARAMS_NAMES[usize::from(affine.is_some())];
    needs(
        names.wide,
        &[
            ("dout", dout, s.len()),
            ("x", x, s.len()),
            ("mean", mean, s.b * s.g),
            ("rstd", rstd, s.b * s.g),
            ("dgamma", dgamma, s.c),
            ("dbeta", dbeta, s.c),
        ],
    )?;
    let gamma = optional(gpu, &format!("{} gamma", names.wide), affine.map(|a| a.0), s.c)?;
    let beta = optional(gpu, &format!("{} beta", names.wide), affine.map(|a| a.1), s.c)?;
    let bufs = [x, dout, mean, rstd, dgamma, dbeta, beta, gamma];
    let (entry, groups) = param_entry(s, names);
    prepare(gpu, &SPEC, entry, &bufs, &p, groups).await
}

// ---------------------------------------------------------------------------------------------

super::check_fn!(check_async);

async fn check_async(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    let mut results = Vec::new();
    // Odd sizes with groups longer than one workgroup (351 elements), long groups (4096), and
    // short ones: LayerNorm rows of 20 over 131 rows (the `_rows` / `_cols` entries).
    let shapes = [
        GroupNormShape::new(3, 12, 13 * 9, 4),
        GroupNormShape::new(2, 8, 32 * 32, 2),
        GroupNormShape::new(131, 20, 1, 1),
        GroupNormShape::new(5, 12, 9, 3),
    ];
    for (i, s) in shapes.into_iter().enumerate() {
        for silu in [false, true] {
            results.extend(check_one(gpu, s, 20 + i as u64, silu).await?);
        }
    }
    Ok(results)
}

/// Forward (out, mean, rstd) and both backward entry points on one shape, plain or with SiLU
/// fused. The backward gets the reference's statistics rounded to f32, so it is checked on its
/// own, not through the forward.
async fn check_one(gpu: &Gpu, s: GroupNormShape, seed: u64, silu: bool) -> Result<Vec<CheckResult>, GpuError> {
    let (n, bg) = (s.len(), s.b * s.g);
    // An offset and a scale per element, so the mean and variance are far from 0 and 1.
    let xx: Vec<f32> = normal_vec(n, seed, 0).iter().map(|v| 3.0 + 2.0 * v).collect();
    let xgamma: Vec<f32> = normal_vec(s.c, seed, 1).iter().map(|v| 1.0 + 0.5 * v).collect();
    let xbeta = normal_vec(s.c, seed, 2);
    let xdout = normal_vec(n, seed, 3);
    // Non-zero starting gradients: the params entry accumulates.
    let (xdg, xdb) = (normal_vec(s.c, seed, 4), normal_vec(s.c, seed, 5));
    let (x64, g64, b64, d64) = (f64s(&xx), f64s(&xgamma), f64s(&xbeta), f64s(&xdout));

    let x = gpu.upload("x", &xx)?;
    let gamma = gpu.upload("gamma", &xgamma)?;
    let beta = gpu.upload("beta", &xbeta)?;
    let dout = gpu.upload("dout", &xdout)?;
    // Overwritten outputs start as NaN: an element a kernel fails to write fails the check.
    let out = gpu.upload("out", &vec![f32::NAN; n])?;
    let (mean, rstd) = (gpu.upload("mean", &vec![f32::NAN; bg])?, gpu.upload("rstd", &vec![f32::NAN; bg])?);
    let dx = gpu.upload("dx", &vec![f32::NAN; n])?;
    let (dgamma, dbeta) = (gpu.upload("dgamma", &xdg)?, gpu.upload("dbeta", &xdb)?);

    let shape = format!("b={} c={} hw={} g={}", s.b, s.c, s.hw, s.g);
    let mut results = Vec::new();

    let k = usize::from(silu);
    let (mut want, mut want_mean, mut want_rstd) = (vec![0.0; n], vec![0.0; bg], vec![0.0; bg]);
    let (wm, wr) = (&mut want_mean, &mut want_rstd);
    let f = if silu {
        r::groupnorm_silu_fwd(&mut want, wm, wr, &x64, &g64, &b64, s);
        groupnorm_silu_fwd(gpu, &x, &gamma, &beta, &out, &mean, &rstd, s).await?
    } else {
        r::groupnorm_fwd(&mut want, wm, wr, &x64, &g64, &b64, s);
        groupnorm_fwd(gpu, &x, &gamma, &beta, &out, &mean, &rstd, s).await?
    };
    let (fe, _) = row_entry(s, FWD_NAMES[k]);
    results.push(SPEC.result(fe, format!("{shape} out"), &run_read(gpu, &f, &out).await?, &want));
    results.push(SPEC.result(fe, format!("{shape} mean"), &gpu.read(&mean).await?, &want_mean));
    results.push(SPEC.result(fe, format!("{shape} rstd"), &gpu.read(&rstd).await?, &want_rstd));

    // The saved statistics as the GPU would hold them.
    let mean32: Vec<f32> = want_mean.iter().map(|&v| v as f32).collect();
    let rstd32: Vec<f32> = want_rstd.iter().map(|&v| v as f32).collect();
    gpu.write(&mean, &mean32);
    gpu.write(&rstd, &rstd32);
    let (m64, r64) = (f64s(&mean32), f64s(&rstd32));

    let gi = if silu {
        r::groupnorm_silu_bwd_input(&mut want, &d64, &x64, &m64, &r64, &g64, &b64, s);
        groupnorm_silu_bwd_input(gpu, &dout, &x, &mean, &rstd, &gamma, &beta, &dx, s).await?
    } else {
        r::groupnorm_bwd_input(&mut want, &d64, &x64, &m64, &r64, &g64, s);
        groupnorm_bwd_input(gpu, &dout, &x, &mean, &rstd, &gamma, &dx, s).await?
    };
    let (ie, _) = row_entry(s, BWD_INPUT_NAMES[k]);
    results.push(SPEC.result(ie, shape.clone(), &run_read(gpu, &gi, &dx).await?, &want));

    let (mut want_dg, mut want_db) = (f64s(&xdg), f64s(&xdb));
    let (wg, wb) = (&mut want_dg, &mut want_db);
    let gp = if silu {
        r::groupnorm_silu_bwd_params(wg, wb, &d64, &x64, &m64, &r64, &g64, &b64, s);
        groupnorm_silu_bwd_params(gpu, &dout, &x, &mean, &rstd, &gamma, &beta, &dgamma, &dbeta, s).await?
    } else {
        r::groupnorm_bwd_params(wg, wb, &d64, &x64, &m64, &r64, s);
        groupnorm_bwd_params(gpu, &dout, &x, &mean, &rstd, &dgamma, &dbeta, s).await?
    };
    let got_dg = run_read(gpu, &gp, &dgamma).await?;
    let (pe, _) = param_entry(s, BWD_PARAMS_NAMES[k]);
    results.push(SPEC.result(pe, format!("{shape} dgamma (+=)"), &got_dg, &want_dg));
    results.push(SPEC.result(pe, format!("{shape} dbeta (+=)"), &gpu.read(&dbeta).await?, &want_db));
    Ok(results)
}
