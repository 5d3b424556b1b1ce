//! Launchers for `shaders/conv2d.wgsl`: NCHW convolution with bias (K = 3 or 1, stride 1 or 2)
//! and its dedicated backward kernels. `Conv2dShape` is defined here and taken by
//! `reference::conv2d`, so a layer and its reference agree on (B, Cin, Cout, H, W, K, stride, pad) by construction.
//!
//! Overwritten: `out`, `dx`. Accumulated (`+=`): `dweight`, `dbias`.

use super::tune::{self, Scheme};
use super::{f64s, needs, optional, prepare, run_read, CheckResult, Entry, OpSpec};
use crate::gpu::{Buffer, Dispatch, Gpu, GpuError};
use crate::philox::normal_vec;
use crate::reference::conv2d as r;
use crate::reference::tol::LOOSE;

/// Problem size of one convolution. `h`, `w` are the input size; `pad` is `k / 2` for the
/// supported odd kernels ("same" padding at stride 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub b: usize,
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv2dShape {
    /// A convolution with "same" padding `k / 2` (k = 3 -> 1, k = 1 -> 0).
    pub fn new(b: usize, cin: usize, cout: usize, h: usize, w: usize, k: usize, stride: usize) -> Self {
        Self { b, cin, cout, h, w, k, stride, pad: k / 2 }
    }

    /// Output height, (H + 2 pad - K) / stride + 1.
    pub fn ho(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Output width, (W + 2 pad - K) / stride + 1.
    pub fn wo(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Elements of x: B * Cin * H * W.
    pub fn x_len(&self) -> usize {
        self.b * self.cin * self.h * self.w
    }

    /// Elements of out: B * Cout * Ho * Wo.
    pub fn out_len(&self) -> usize {
        self.b * self.cout * self.ho() * self.wo()
    }

    /// Elements of weight: Cout * Cin * K * K.
    pub fn weight_len(&self) -> usize {
        self.cout * self.cin * self.k * self.k
    }

    /// The input pixel read by output pixel (oy, ox) at tap (ky, kx), or None in the padding.
    pub(crate) fn input_pixel(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let iy = (oy * self.stride + ky).checked_sub(self.pad)?;
        let ix = (ox * self.stride + kx).checked_sub(self.pad)?;
        (iy < self.h && ix < self.w).then_some((iy, ix))
    }

    pub(crate) fn x_idx(&self, b: usize, ci: usize, iy: usize, ix: usize) -> usize {
        ((b * self.cin + ci) * self.h + iy) * self.w + ix
    }

    pub(crate) fn w_idx(&self, co: usize, ci: usize, ky: usize, kx: usize) -> usize {
        ((co * self.cin + ci) * self.k + ky) * self.k + kx
    }

    pub(crate) fn out_idx(&self, b: usize, co: usize, oy: usize, ox: usize) -> usize {
        ((b * self.cout + co) * self.ho() + oy) * self.wo() + ox
    }

    pub(crate) fn check(&self) {
        assert!(self.k == 1 || self.k == 3, "conv2d: kernel {} unsupported (1 or 3)", self.k);
        assert!(self.stride == 1 || self.stride == 2, "conv2d: stride {} unsupported", self.stride);
        assert!(self.h + 2 * self.pad >= self.k && self.w + 2 * self.pad >= self.k);
    }
}

/// f32 dot products over Cin K K (fwd), Cout K K (bwd_input) or B Ho Wo (bwd_weight, bwd_bias)
/// unit-normal terms vs an f64 reference; the longest checked reduction is 768 terms, whose
/// rounding error (~sqrt(n) 2^-24 per partial sum of size ~sqrt(n)) is far inside LOOSE, and the
/// absolute part covers outputs near zero.
const WHY: &str = "f32 accumulation over Cin*K*K, Cout*K*K or B*Ho*Wo terms vs an f64 reference";

pub const SPEC: OpSpec = OpSpec {
    name: "conv2d",
    shader: super::shader!("conv2d.wgsl", "gemm_tile.wgsl"; Params),
    variants: &[],
    entries: &[
        Entry { name: "conv2d_fwd", reference: "conv2d::conv2d_fwd", tol: LOOSE, why: WHY },
        Entry { name: "conv2d_fwd_v4", reference: "conv2d::conv2d_fwd (stride 1)", tol: LOOSE, why: WHY },
        Entry { name: "conv2d_bwd_input", reference: "conv2d::conv2d_bwd_input", tol: LOOSE, why: WHY },
        Entry { name: "conv2d_bwd_input_v4", reference: "conv2d::conv2d_bwd_input (stride 1)", tol: LOOSE, why: WHY },
        Entry { name: "conv2d_bwd_weight", reference: "conv2d::conv2d_bwd_weight (K = 3)", tol: LOOSE, why: WHY },
        Entry { name: "conv2d_bwd_weight_k1", reference: "conv2d::conv2d_bwd_weight (K = 1)", tol: LOOSE, why: WHY },
        Entry { name: "conv2d_bwd_weight_v4", reference: "conv2d::conv2d_bwd_weight (stride 1)", tol: LOOSE, why: WHY },
        Entry { name: "conv2d_fwd_tiled", reference: "conv2d::conv2d_fwd", tol: LOOSE, why: WHY },
        Entry { name: "conv2d_bwd_input_tiled", reference: "conv2d::conv2d_bwd_input", tol: LOOSE, why: WHY },
        Entry { name: "conv2d_bwd_weight_tiled", reference: "conv2d::conv2d_bwd_weight", tol: LOOSE, why: WHY },
        Entry { name: "conv2d_bwd_bias", reference: "conv2d::conv2d_bwd_bias", tol: LOOSE, why: WHY },
    ],
    check,
};

super::constants! {
    /// Channels per workgroup of conv2d_fwd (output) and conv2d_bwd_input (input): the rows
    /// of every invocation's register tile.
    const R = 16;
    /// Input channels per workgroup of conv2d_bwd_weight (K = 3): one vec4 of x per tap.
    const WCI3 = 4;
    /// Input channels per workgroup of conv2d_bwd_weight_k1 (WCI1 / 2 vec4 accumulators).
    const WCI1 = 32;
    /// Channels per workgroup of conv2d_fwd_v4 / conv2d_bwd_input_v4.
    const RV = 8;
    /// Pixels per invocation (one row segment, two vec4s) of the same kernels.
    const PV = 8;
    /// Output channels per workgroup of conv2d_bwd_weight_v4.
    const RW = 8;
    /// Invocations per workgroup of conv2d_fwd and conv2d_bwd_input (4 pixels each) and of
    /// their vec4 kernels (PV pixels each).
    override LANES = 64;
    /// Invocations per workgroup of conv2d_bwd_weight(_k1), 2 output channels each.
    override WL = 32;
    /// Invocations per workgroup of conv2d_bwd_weight_v4, one input channel each.
    override WLV = 32;
    /// Invocations per workgroup of conv2d_bwd_bias.
    override BL = 64;
    /// Tiled scheme (common/gemm_tile.wgsl, shared with matmul_tiled): the side of a
    /// workgroup's output tile, the reduction step staged per barrier, and the invocations.
    const TM = 64;
    const TK = 16;
    const TILE_LANES = 256;
}

// One tile scheme: the shared WGSL product assumes matmul's values.
const _: () = assert!(TM == super::matmul::TM && TK == super::matmul::TK && TILE_LANES == super::matmul::TILE_LANES);

/// Pixels per workgroup of conv2d_fwd and conv2d_bwd_input.
const TILE_PIX: usize = 4 * LANES;

/// Whether the stride-1 vec4 kernels apply: every image row is whole vec4s (Ho = H, Wo = W).
fn vec4_rows(s: Conv2dShape) -> bool {
    s.stride == 1 && s.w.is_multiple_of(4)
}

/// The three products of a convolution, each tuned and forced as family `conv2d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Fwd,
    BwdInput,
    BwdWeight,
}

impl Pass {
    pub const ALL: [Pass; 3] = [Pass::Fwd, Pass::BwdInput, Pass::BwdWeight];

    pub const fn name(self) -> &'static str {
        match self {
            Pass::Fwd => "fwd",
            Pass::BwdInput => "bwd_input",
            Pass::BwdWeight => "bwd_weight",
        }
    }

    /// The entry point of this pass over `s` in `scheme`: in the rows scheme the stride-1 vec4
    /// kernels when every image row is whole vec4s, and for the weight gradient the K = 1 one.
    pub fn entry(self, scheme: Scheme, s: Conv2dShape) -> &'static str {
        match (self, scheme) {
            (Pass::Fwd, Scheme::Tiled) => "conv2d_fwd_tiled",
            (Pass::BwdInput, Scheme::Tiled) => "conv2d_bwd_input_tiled",
            (Pass::BwdWeight, Scheme::Tiled) => "conv2d_bwd_weight_tiled",
            (Pass::Fwd, Scheme::Rows) if vec4_rows(s) => "conv2d_fwd_v4",
            (Pass::Fwd, Scheme::Rows) => "conv2d_fwd",
            (Pass::BwdInput, Scheme::Rows) if vec4_rows(s) => "conv2d_bwd_input_v4",
            (Pass::BwdInput, Scheme::Rows) => "conv2d_bwd_input",
            (Pass::BwdWeight, Scheme::Rows) => match (s.k, vec4_rows(s)) {
                (3, true) => "conv2d_bwd_weight_v4",
                (3, false) => "conv2d_bwd_weight",
                _ => "conv2d_bwd_weight_k1",
            },
        }
    }

    /// Workgroups of this pass over `s` in `scheme`.
    fn workgroups(self, scheme: Scheme, s: Conv2dShape) -> usize {
        let out_pixels = s.b * s.ho() * s.wo();
        // bwd_input: one tile set per parity class (iy mod stride, ix mod stride), each over the
        // largest class's pixel grid.
        let classes = s.stride * s.stride;
        let class_pixels = s.b * s.h.div_ceil(s.stride) * s.w.div_ceil(s.stride);
        let tiled = scheme == Scheme::Tiled;
        match self {
            Pass::Fwd if tiled => s.cout.div_ceil(TM) * out_pixels.div_ceil(TM),
            Pass::BwdInput if tiled => s.cin.div_ceil(TM) * classes * class_pixels.div_ceil(TM),
            Pass::BwdWeight if tiled => s.cout.div_ceil(TM) * (s.cin * s.k * s.k).div_ceil(TM),
            Pass::Fwd if vec4_rows(s) => v4_tiles(s, s.cout),
            Pass::Fwd => s.cout.div_ceil(R) * out_pixels.div_ceil(TILE_PIX),
            Pass::BwdInput if vec4_rows(s) => v4_tiles(s, s.cin),
            Pass::BwdInput => s.cin.div_ceil(R) * classes * class_pixels.div_ceil(TILE_PIX),
            Pass::BwdWeight => {
                // Output and input channels per workgroup.
                let (co_per, ci_per) = match (s.k, vec4_rows(s)) {
                    (3, true) => (RW, WLV),
                    (3, false) => (2 * WL, WCI3),
                    _ => (2 * WL, WCI1),
                };
                s.cout.div_ceil(co_per) * s.cin.div_ceil(ci_per)
            }
        }
    }
}

/// The choice key of one pass over one shape.
pub fn tune_key(pass: Pass, s: Conv2dShape) -> String {
    format!(
        "conv2d {} B={} Cin={} Cout={} H={} W={} K={} s={}",
        pass.name(),
        s.b,
        s.cin,
        s.cout,
        s.h,
        s.w,
        s.k,
        s.stride
    )
}

/// Elements per scratch operand when timing the schemes (64 MiB of f32).
const TUNE_SCRATCH: usize = 1 << 24;

/// The scheme of one pass over `s`: forced, recorded for its shape, measured now when tuning is
/// on (the schemes that pass the registry check here, on scratch operands of its shape), or
/// `Rows`, the default (`tune::decide`).
pub async fn scheme_for(gpu: &Gpu, pass: Pass, s: Conv2dShape) -> Result<Scheme, GpuError> {
    if check_shape(s).is_err() {
        return Ok(Scheme::Rows); // refused by the launcher, with its message
    }
    let key = tune_key(pass, s);
    let passed = match tune::decide(gpu, &SPEC, &key).await? {
        tune::Decision::Known(scheme) => return Ok(scheme),
        tune::Decision::Measure(passed) => passed,
    };
    // Scratch operands over as many images as fit in TUNE_SCRATCH elements each (both schemes'
    // work is linear in the images).
    let per_image = (s.cin * s.h * s.w).max(s.cout * s.ho() * s.wo()).max(s.weight_len());
    let st = Conv2dShape { b: (TUNE_SCRATCH / per_image).clamp(1, s.b), ..s };
    let (x, w, out) =
        (gpu.zeros("tune x", st.x_len())?, gpu.zeros("tune w", st.weight_len())?, gpu.zeros("tune out", st.out_len())?);
    let mut candidates = Vec::new();
    for scheme in passed {
        let d = match pass {
            Pass::Fwd => launch_fwd(gpu, scheme, &x, &w, None, None, &out, st).await?,
            Pass::BwdInput => launch_bwd_input(gpu, scheme, &out, &w, None, &x, st).await?,
            Pass::BwdWeight => launch_bwd_weight(gpu, scheme, &out, &x, &w, st).await?,
        };
        candidates.push((scheme, d));
    }
    tune::fastest(gpu, &key, &candidates).await
}

/// Workgroups of the vec4 fwd / bwd_input kernels producing `rows` channels.
fn v4_tiles(s: Conv2dShape, rows: usize) -> usize {
    rows.div_ceil(RV) * (s.b * s.h * s.w.div_ceil(PV)).div_ceil(LANES)
}

super::uniform! {
    struct Params {
        b: u32,
        cin: u32,
        cout: u32,
        h: u32,
        w: u32,
        ho: u32,
        wo: u32,
        k: u32,
        stride: u32,
        pad: u32,
        has_bias: u32,
        has_res: u32,
    }
}

impl Params {
    fn new(s: Conv2dShape, has_bias: bool) -> Self {
        Self {
            b: s.b as u32,
            cin: s.cin as u32,
            cout: s.cout as u32,
            h: s.h as u32,
            w: s.w as u32,
            ho: s.ho() as u32,
            wo: s.wo() as u32,
            k: s.k as u32,
            stride: s.stride as u32,
            pad: s.pad as u32,
            has_bias: u32::from(has_bias),
            has_res: 0,
        }
    }

    /// The same with an added operand (`res` / `dres`) when `res` is set.
    fn with_res(self, res: bool) -> Self {
        Self { has_res: u32::from(res), ..self }
    }
}

/// The shapes the kernels support: K 3 or 1 with padding K / 2, stride 1 or 2, no empty
/// dimension, and an output of at least one pixel.
fn check_shape(s: Conv2dShape) -> Result<(), GpuError> {
    let ok = (s.k == 1 || s.k == 3)
        && s.pad == s.k / 2
        && (s.stride == 1 || s.stride == 2)
        && s.b > 0
        && s.cin > 0
        && s.cout > 0
        && s.h + 2 * s.pad >= s.k
        && s.w + 2 * s.pad >= s.k;
    if !ok {
        return Err(GpuError::Shape(format!("conv2d shape unsupported (K 1|3, pad K/2, stride 1|2): {s:?}")));
    }
    Ok(())
}

/// out (B, Cout, Ho, Wo) = conv(x (B, Cin, H, W), weight (Cout, Cin, K, K)) + bias (Cout,)
/// (+ res (B, Cout, Ho, Wo) when given: a residual connection in the same pass). Overwritten;
/// out must not be res. In the scheme `gpu` uses for this shape (`scheme_for`).
pub async fn conv2d_fwd(
    gpu: &Gpu,
    x: &Buffer,
    weight: &Buffer,
    bias: Option<&Buffer>,
    res: Option<&Buffer>,
    out: &Buffer,
    s: Conv2dShape,
) -> Result<Dispatch, GpuError> {
    launch_fwd(gpu, scheme_for(gpu, Pass::Fwd, s).await?, x, weight, bias, res, out, s).await
}

#[allow(clippy::too_many_arguments)] // the operands of `conv2d_fwd` plus the scheme
async fn launch_fwd(
    gpu: &Gpu,
    scheme: Scheme,
    x: &Buffer,
    weight: &Buffer,
    bias: Option<&Buffer>,
    res: Option<&Buffer>,
    out: &Buffer,
    s: Conv2dShape,
) -> Result<Dispatch, GpuError> {
    check_shape(s)?;
    needs("conv2d_fwd", &[("x", x, s.x_len()), ("weight", weight, s.weight_len()), ("out", out, s.out_len())])?;
    // The params' flags say which of these are placeholders.
    let bias_buf = optional(gpu, "conv2d_fwd bias", bias, s.cout)?;
    let res_buf = optional(gpu, "conv2d_fwd res", res, s.out_len())?;
    let params = Params::new(s, bias.is_some()).with_res(res.is_some());
    let bufs = [x, weight, bias_buf, out, res_buf];
    launch(gpu, Pass::Fwd, scheme, &bufs, &params, s).await
}

/// The pipeline of `pass` in `scheme` over `bufs`, with its workgroups and FLOPs.
async fn launch(
    gpu: &Gpu,
    pass: Pass,
    scheme: Scheme,
    bufs: &[&Buffer],
    params: &Params,
    s: Conv2dShape,
) -> Result<Dispatch, GpuError> {
    let (e, tiles) = (pass.entry(scheme, s), pass.workgroups(scheme, s));
    Ok(prepare(gpu, &SPEC, e, bufs, params, tiles as u32).await?.with_flops(flops(s) as u64))
}

/// dx (B, Cin, H, W) = conv^T(dout (B, Cout, Ho, Wo), weight (Cout, Cin, K, K)) (+ dres
/// (B, Cin, H, W) when given: the gradient of x from another branch, summed in the same pass).
/// Overwritten; dx must not be dres. In the scheme `gpu` uses for this shape (`scheme_for`).
pub async fn conv2d_bwd_input(
    gpu: &Gpu,
    dout: &Buffer,
    weight: &Buffer,
    dres: Option<&Buffer>,
    dx: &Buffer,
    s: Conv2dShape,
) -> Result<Dispatch, GpuError> {
    launch_bwd_input(gpu, scheme_for(gpu, Pass::BwdInput, s).await?, dout, weight, dres, dx, s).await
}

async fn launch_bwd_input(
    gpu: &Gpu,
    scheme: Scheme,
    dout: &Buffer,
    weight: &Buffer,
    dres: Option<&Buffer>,
    dx: &Buffer,
    s: Conv2dShape,
) -> Result<Dispatch, GpuError> {
    check_shape(s)?;
    needs(
        "conv2d_bwd_input",
        &[("dout", dout, s.out_len()), ("weight", weight, s.weight_len()), ("dx", dx, s.x_len())],
    )?;
    let dres_buf = optional(gpu, "conv2d_bwd_input dres", dres, s.x_len())?;
    let params = Params::new(s, false).with_res(dres.is_some());
    launch(gpu, Pass::BwdInput, scheme, &[dout, weight, dx, dres_buf], &params, s).await
}

/// dweight (Cout, Cin, K, K) += sum over B, Ho, Wo of dout (B, Cout, Ho, Wo) times the shifted
/// forward input x (B, Cin, H, W). Accumulated. In the scheme `gpu` uses for this shape
/// (`scheme_for`).
pub async fn conv2d_bwd_weight(
    gpu: &Gpu,
    dout: &Buffer,
    x: &Buffer,
    dweight: &Buffer,
    s: Conv2dShape,
) -> Result<Dispatch, GpuError> {
    launch_bwd_weight(gpu, scheme_for(gpu, Pass::BwdWeight, s).await?, dout, x, dweight, s).await
}

async fn launch_bwd_weight(
    gpu: &Gpu,
    scheme: Scheme,
    dout: &Buffer,
    x: &Buffer,
    dweight: &Buffer,
    s: Conv2dShape,
) -> Result<Dispatch, GpuError> {
    check_shape(s)?;
    needs(
        "conv2d_bwd_weight",
        &[("dout", dout, s.out_len()), ("x", x, s.x_len()), ("dweight", dweight, s.weight_len())],
    )?;
    launch(gpu, Pass::BwdWeight, scheme, &[dout, x, dweight], &Params::new(s, false), s).await
}

/// dbias (Cout,) += sum over B, Ho, Wo of dout (B, Cout, Ho, Wo). Accumulated.
pub async fn conv2d_bwd_bias(gpu: &Gpu, dout: &Buffer, dbias: &Buffer, s: Conv2dShape) -> Result<Dispatch, GpuError> {
    check_shape(s)?;
    needs("conv2d_bwd_bias", &[("dout", dout, s.out_len()), ("dbias", dbias, s.cout)])?;
    let e = "conv2d_bwd_bias";
    prepare(gpu, &SPEC, e, &[dout, dbias], &Params::new(s, false), s.cout as u32).await
}

/// Multiply-adds times two of one forward (also of bwd_input and of bwd_weight).
pub fn flops(s: Conv2dShape) -> f64 {
    2.0 * (s.b * s.cout * s.ho() * s.wo() * s.cin * s.k * s.k) as f64
}

// --- check -----------------------------------------------------------------------------------

super::check_fn!(check_async);

async fn check_async(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    let mut results = Vec::new();
    // Odd H and W (the general kernels), channel counts off the tile sizes, every (K, stride),
    // pixel counts above one tile of 256, several bwd_weight channel blocks (Cout 70 > 64).
    // Then stride 1 with W a multiple of 4 (the vec4 kernels): part-filled row segments (W 12,
    // W 4), K = 1, and the larger case. Two shapes run the forward without bias; four (general
    // and vec4 kernels, stride 1 and 2, with and without bias) add a residual to the forward's
    // output and the input gradient. Every shape in both schemes, whatever `gpu` uses; for the
    // tiled scheme, Cout 70 and Cin 70 span two 64-row tiles, 333 and 630 columns of dweight
    // several column tiles, and reductions of 54 .. 768 terms leave part-filled K steps.
    let shapes = [
        (Conv2dShape::new(2, 6, 10, 13, 11, 3, 1), true, true),
        (Conv2dShape::new(2, 6, 10, 13, 11, 3, 2), true, true),
        (Conv2dShape::new(2, 6, 10, 13, 11, 1, 1), true, false),
        (Conv2dShape::new(2, 6, 10, 13, 11, 1, 2), true, false),
        (Conv2dShape::new(1, 37, 70, 9, 7, 3, 2), true, false),
        (Conv2dShape::new(2, 37, 70, 9, 7, 1, 1), false, false),
        (Conv2dShape::new(2, 6, 10, 7, 12, 3, 1), true, true),
        (Conv2dShape::new(1, 20, 36, 5, 4, 3, 1), true, false),
        (Conv2dShape::new(2, 37, 70, 9, 12, 1, 1), false, true),
        (Conv2dShape::new(3, 32, 48, 16, 16, 3, 1), true, false),
        (Conv2dShape::new(2, 70, 20, 11, 9, 3, 2), true, true),
    ];
    for (s, with_bias, with_res) in shapes {
        results.extend(check_one(gpu, s, with_bias, with_res).await?);
    }
    Ok(results)
}

/// Forward (with or without bias and residual), the input gradient (with or without an added
/// gradient), and the weight gradient accumulated into non-zero starting values, in each scheme,
/// then the bias gradient (the same in both), each against the f64 reference (the added
/// operands summed onto it).
async fn check_one(gpu: &Gpu, s: Conv2dShape, with_bias: bool, with_res: bool) -> Result<Vec<CheckResult>, GpuError> {
    let tag = (s.k * 10 + s.stride) as u32;
    let xx = normal_vec(s.x_len(), 11, tag);
    let xw = normal_vec(s.weight_len(), 11, tag + 100);
    let xbias = normal_vec(s.cout, 11, tag + 200);
    let xdout = normal_vec(s.out_len(), 11, tag + 300);
    let xdw0 = normal_vec(s.weight_len(), 11, tag + 400);
    let (x64, w64, bias64, dout64) = (f64s(&xx), f64s(&xw), f64s(&xbias), f64s(&xdout));

    let x = gpu.upload("x", &xx)?;
    let w = gpu.upload("weight", &xw)?;
    let bias = gpu.upload("bias", &xbias)?;
    let dout = gpu.upload("dout", &xdout)?;
    let db = gpu.upload("dbias", &xbias)?;

    let shape = format!("B={} Cin={} Cout={} H={} W={} K={} s={}", s.b, s.cin, s.cout, s.h, s.w, s.k, s.stride);
    let mut results = Vec::new();

    // The residuals: (B, Cout, Ho, Wo) for the forward, (B, Cin, H, W) for dx.
    let (xres, xdres) = (normal_vec(s.out_len(), 11, tag + 500), normal_vec(s.x_len(), 11, tag + 600));
    let (res, dres) = (gpu.upload("res", &xres)?, gpu.upload("dres", &xdres)?);
    let plus = |want: &mut [f64], add: &[f32]| want.iter_mut().zip(add).for_each(|(w, &a)| *w += f64::from(a));

    let mut want_out = vec![0.0; s.out_len()];
    r::conv2d_fwd(&mut want_out, &x64, &w64, with_bias.then_some(&bias64[..]), s);
    let mut want_dx = vec![0.0; s.x_len()];
    r::conv2d_bwd_input(&mut want_dx, &dout64, &w64, s);
    if with_res {
        plus(&mut want_out, &xres);
        plus(&mut want_dx, &xdres);
    }
    let mut want_dw = f64s(&xdw0);
    r::conv2d_bwd_weight(&mut want_dw, &dout64, &x64, s);

    for scheme in Scheme::ALL {
        // Output buffers start non-zero: overwritten ones must not keep stale values.
        let out = gpu.upload("out", &vec![7.0; s.out_len()])?;
        let dx = gpu.upload("dx", &vec![7.0; s.x_len()])?;
        let dw = gpu.upload("dweight", &xdw0)?;

        let d = launch_fwd(gpu, scheme, &x, &w, with_bias.then_some(&bias), with_res.then_some(&res), &out, s).await?;
        let what = format!("{shape}{}{}", if with_bias { " +bias" } else { "" }, if with_res { " +res" } else { "" });
        let e = Pass::Fwd.entry(scheme, s);
        results.push(SPEC.result(e, what, &run_read(gpu, &d, &out).await?, &want_out));

        let d = launch_bwd_input(gpu, scheme, &dout, &w, with_res.then_some(&dres), &dx, s).await?;
        let what = format!("{shape}{}", if with_res { " +dres" } else { "" });
        let e = Pass::BwdInput.entry(scheme, s);
        results.push(SPEC.result(e, what, &run_read(gpu, &d, &dx).await?, &want_dx));

        let d = launch_bwd_weight(gpu, scheme, &dout, &x, &dw, s).await?;
        let e = Pass::BwdWeight.entry(scheme, s);
        results.push(SPEC.result(e, format!("{shape} +="), &run_read(gpu, &d, &dw).await?, &want_dw));
    }

    let mut want = bias64.clone();
    r::conv2d_bwd_bias(&mut want, &dout64, s);
    let d = conv2d_bwd_bias(gpu, &dout, &db, s).await?;
    results.push(SPEC.result("conv2d_bwd_bias", format!("{shape} +="), &run_read(gpu, &d, &db).await?, &want));
    Ok(results)
}
