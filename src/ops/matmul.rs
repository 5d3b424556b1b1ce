//! Launchers for `shaders/matmul.wgsl`: batched out = op(a) · op(b) + bias and its backward.

use super::{f64s, needs, optional, prepare, run_read, tune, CheckResult, Entry, OpSpec, Variant};
use crate::gpu::{groups_for, Buffer, Dispatch, Gpu, GpuError};
use crate::philox::normal_vec;
use crate::reference::matmul as r;
use crate::reference::tol::LOOSE;

/// The problem size and storage of one matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl MatmulShape {
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self { m, n, k, trans_a: false, trans_b: false }
    }

    /// Index of op(a)[i][p] in storage.
    pub(crate) fn ia(&self, i: usize, p: usize) -> usize {
        if self.trans_a {
            p * self.m + i
        } else {
            i * self.k + p
        }
    }

    /// Index of op(b)[p][j] in storage.
    pub(crate) fn ib(&self, p: usize, j: usize) -> usize {
        if self.trans_b {
            j * self.k + p
        } else {
            p * self.n + j
        }
    }
}

/// f32 dot products of length K over unit normals: the rounding error grows like
/// sqrt(K) * 2^-24 * (partial sum size ~ sqrt(K)), about 2e-5 at K = 300; LOOSE has 5x margin
/// on the absolute part and covers outputs near zero, where relative error is meaningless.
const WHY: &str = "f32 accumulation over K terms vs an f64 reference";

pub const SPEC: OpSpec = OpSpec {
    name: "matmul",
    shader: super::shader!("matmul.wgsl", "activation.wgsl", "gemm_tile.wgsl"; Params),
    variants: &[
        Layout::NN.variant(Form::Scalar),
        Layout::NT.variant(Form::Scalar),
        Layout::TN.variant(Form::Scalar),
        Layout::NN.variant(Form::Vec4),
        Layout::NT.variant(Form::Vec4),
        Layout::TN.variant(Form::Vec4),
        Layout::NN.variant(Form::Tiled),
        Layout::NT.variant(Form::Tiled),
        Layout::TN.variant(Form::Tiled),
    ],
    entries: &[
        Entry { name: "matmul_nn", reference: "matmul::matmul", tol: LOOSE, why: WHY },
        Entry { name: "matmul_nt", reference: "matmul::matmul (trans_b)", tol: LOOSE, why: WHY },
        Entry { name: "matmul_tn", reference: "matmul::matmul (trans_a)", tol: LOOSE, why: WHY },
        Entry { name: "matmul_nn4", reference: "matmul::matmul", tol: LOOSE, why: WHY },
        Entry { name: "matmul_nt4", reference: "matmul::matmul (trans_b)", tol: LOOSE, why: WHY },
        Entry { name: "matmul_tn4", reference: "matmul::matmul (trans_a)", tol: LOOSE, why: WHY },
        Entry { name: "matmul_nn_tiled", reference: "matmul::matmul", tol: LOOSE, why: WHY },
        Entry { name: "matmul_nt_tiled", reference: "matmul::matmul (trans_b)", tol: LOOSE, why: WHY },
        Entry { name: "matmul_tn_tiled", reference: "matmul::matmul (trans_a)", tol: LOOSE, why: WHY },
        Entry { name: "matmul_bwd_bias", reference: "matmul::matmul_bwd_bias", tol: LOOSE, why: WHY },
    ],
    check,
};

/// The family's two kernel shapes (`CDL_VARIANT=matmul:rows|tiled`), both for every layout:
/// `Rows`, R rows by 4 columns per invocation; `Tiled`, `matmul_tiled`.
pub use super::tune::Scheme;

/// The scheme of one product: forced, recorded for its shape, measured now when tuning is on
/// (the schemes that pass the registry check here, on scratch operands of its shape), or
/// `Rows`, the default (`tune::decide`).
pub async fn scheme_for(gpu: &Gpu, layout: Layout, d: Dims, s: Strides) -> Result<Scheme, GpuError> {
    if d.m == 0 || d.n == 0 || d.k == 0 || d.batch == 0 {
        return Ok(Scheme::Rows); // refused by `launch`, with its message
    }
    let key = tune_key(layout, d, s);
    let passed = match tune::decide(gpu, &SPEC, &key).await? {
        tune::Decision::Known(scheme) => return Ok(scheme),
        tune::Decision::Measure(passed) => passed,
    };
    // Scratch operands of the problem's shape, over as many batch items as fit in
    // TUNE_SCRATCH elements each (every scheme's work is linear in the items).
    let per_item = [s.a.max(d.m * d.k), s.b.max(d.k * d.n), s.out.max(d.m * d.n)];
    let items = (TUNE_SCRATCH / per_item.into_iter().max().unwrap_or(1)).clamp(1, d.batch);
    let dt = Dims { batch: items, ..d };
    let a = gpu.zeros("tune a", span(items, s.a, d.m * d.k))?;
    let b = gpu.zeros("tune b", span(items, s.b, d.k * d.n))?;
    let out = gpu.zeros("tune out", span(items, s.out, d.m * d.n))?;
    let mut candidates = Vec::new();
    for scheme in passed {
        candidates.push((scheme, launch(gpu, scheme, layout, &a, &b, None, &out, Epilogue::None, dt, s).await?));
    }
    tune::fastest(gpu, &key, &candidates).await
}

/// Workgroups of one matmul over `d` in `scheme`.
fn workgroups(scheme: Scheme, d: Dims) -> usize {
    match scheme {
        Scheme::Rows => d.batch * d.m.div_ceil(R) * d.n.div_ceil(COLS),
        Scheme::Tiled => d.batch * d.m.div_ceil(TM) * d.n.div_ceil(TM),
    }
}

/// Elements per scratch operand when timing the schemes (64 MiB of f32).
const TUNE_SCRATCH: usize = 1 << 24;

/// The choice key of one product: layout, dimensions, batch and strides (which decide the
/// rows scheme's vec4 entry points).
pub fn tune_key(layout: Layout, d: Dims, s: Strides) -> String {
    format!("matmul {layout:?} {}x{}x{} batch {} strides {},{},{}", d.m, d.n, d.k, d.batch, s.a, s.b, s.out)
}

/// The entry point a variant specialises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `matmul`: scalar loads (rows scheme).
    Scalar,
    /// `matmul4`: vec4 loads (rows scheme, aligned shapes).
    Vec4,
    /// `matmul_tiled`.
    Tiled,
}

/// Which operands are stored transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// a (M, K), b (K, N)
    NN,
    /// a (M, K), b (N, K)
    NT,
    /// a (K, M), b (K, N)
    TN,
}

impl Layout {
    /// The entry point of `scheme` for these dimensions over contiguous batch items: in the rows
    /// scheme the vec4 variant when the dimensions read along rows are multiples of 4, else the
    /// scalar one.
    pub fn entry(self, scheme: Scheme, d: Dims) -> &'static str {
        self.entry_strided(scheme, d, Strides::contiguous(d))
    }

    /// The entry point of `scheme` for these dimensions and batch strides: in the rows scheme
    /// vec4 only when every row read is whole vec4s and every batch item starts on a vec4
    /// (strides multiples of 4); the tiled scheme takes any.
    pub fn entry_strided(self, scheme: Scheme, d: Dims, s: Strides) -> &'static str {
        if scheme == Scheme::Tiled {
            return self.variant(Form::Tiled).name;
        }
        let rows = match self {
            Layout::NN | Layout::NT => d.k.is_multiple_of(4) && d.n.is_multiple_of(4),
            Layout::TN => d.m.is_multiple_of(4) && d.n.is_multiple_of(4),
        };
        let aligned = rows && s.a.is_multiple_of(4) && s.b.is_multiple_of(4) && s.out.is_multiple_of(4);
        self.variant(if aligned { Form::Vec4 } else { Form::Scalar }).name
    }

    /// The registry entry of this layout in one form: the shader's `matmul`, `matmul4` or
    /// `matmul_tiled` with its TRANS_A and TRANS_B.
    const fn variant(self, form: Form) -> Variant {
        let constants: &[(&str, f64)] = match self {
            Layout::NN => &[("TRANS_A", 0.0), ("TRANS_B", 0.0)],
            Layout::NT => &[("TRANS_A", 0.0), ("TRANS_B", 1.0)],
            Layout::TN => &[("TRANS_A", 1.0), ("TRANS_B", 0.0)],
        };
        let (name, entry_point) = match (self, form) {
            (Layout::NN, Form::Scalar) => ("matmul_nn", "matmul"),
            (Layout::NT, Form::Scalar) => ("matmul_nt", "matmul"),
            (Layout::TN, Form::Scalar) => ("matmul_tn", "matmul"),
            (Layout::NN, Form::Vec4) => ("matmul_nn4", "matmul4"),
            (Layout::NT, Form::Vec4) => ("matmul_nt4", "matmul4"),
            (Layout::TN, Form::Vec4) => ("matmul_tn4", "matmul4"),
            (Layout::NN, Form::Tiled) => ("matmul_nn_tiled", "matmul_tiled"),
            (Layout::NT, Form::Tiled) => ("matmul_nt_tiled", "matmul_tiled"),
            (Layout::TN, Form::Tiled) => ("matmul_tn_tiled", "matmul_tiled"),
        };
        Variant { name, entry_point, constants }
    }

    fn shape(self, d: Dims) -> MatmulShape {
        MatmulShape { m: d.m, n: d.n, k: d.k, trans_a: self == Layout::TN, trans_b: self == Layout::NT }
    }
}

/// Problem size: `batch` independent (M, N, K) products over contiguous matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
}

impl Dims {
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self { m, n, k, batch: 1 }
    }

    /// Multiply-adds times two.
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k * self.batch) as f64
    }
}

/// Element strides between consecutive batch items of each operand, so that blocks of a larger
/// tensor (the q, k, v blocks of a (B, 3C, T) buffer) are addressed as a view plus a stride.
/// 0 shares one matrix across the batch. Contiguous items have strides M K, K N and M N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strides {
    pub a: usize,
    pub b: usize,
    pub out: usize,
}

impl Strides {
    /// The strides of contiguous batch items.
    pub fn contiguous(d: Dims) -> Self {
        Self { a: d.m * d.k, b: d.k * d.n, out: d.m * d.n }
    }
}

super::constants! {
    /// Output rows per workgroup: each invocation keeps R rows of its 4 columns in registers
    /// (an array size in the shader, so a WGSL `const`).
    const R = 16;
    /// Invocations per workgroup, 4 output columns each.
    override LANES = 64;
    /// Tiled scheme: the side of a workgroup's output tile (a WGSL `const`: it sizes the
    /// workgroup arrays)...
    pub(crate) const TM = 64;
    /// ... the K step staged in workgroup memory per barrier ...
    pub(crate) const TK = 16;
    /// ... and its invocations, (TM / 4)^2, one 4 x 4 block each.
    pub(crate) const TILE_LANES = 256;
}

const _: () = assert!(TILE_LANES == (TM / 4) * (TM / 4) && TK * TM * 4 * 2 <= 16 * 1024);

/// Output columns per workgroup.
const COLS: usize = 4 * LANES;

super::uniform! {
    struct Params {
        m: u32,
        n: u32,
        k: u32,
        batch: u32,
        stride_a: u32,
        stride_b: u32,
        stride_out: u32,
        has_bias: u32,
        epilogue: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// The baseline kernel of `cdl bench ops` (dev/kernels/matmul_v0_naive.wgsl: one invocation per
/// output, a plain K loop), with this family's `Params` declared before it.
pub const NAIVE_SOURCE: &str = super::wgsl::concat_str!(
    "// Declared by src/ops/matmul.rs.\n",
    Params::LAYOUT.wgsl,
    include_str!("../../dev/kernels/matmul_v0_naive.wgsl")
);

impl Params {
    fn strided(d: Dims, s: Strides, has_bias: bool, epilogue: u32) -> Self {
        Self {
            m: d.m as u32,
            n: d.n as u32,
            k: d.k as u32,
            batch: d.batch as u32,
            stride_a: s.a as u32,
            stride_b: s.b as u32,
            stride_out: s.out as u32,
            has_bias: u32::from(has_bias),
            epilogue,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        }
    }
}

/// What a product does with each output element v = op(a) · op(b) + bias before storing it
/// (the shader's EP_* constants): fusing the activation of a Linear into its product saves a
/// dispatch and a pass over the activations, forward and backward.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    /// out = v.
    None,
    /// out = v and `act` = silu(v), both stored like out.
    Silu { act: &'a Buffer },
    /// out = v · silu'(`pre`), `pre` stored like out: the gradient of a SiLU's input from the
    /// gradient of its output, v, and its input, `pre`.
    DSilu { pre: &'a Buffer },
}

impl<'a> Epilogue<'a> {
    /// The shader's code, the buffers to bind as aux (read) and out2 (written), and the operand
    /// the epilogue adds with its name (stored like out, so it needs as many elements).
    fn bind(self, gpu: &'a Gpu) -> (u32, &'a Buffer, &'a Buffer, Option<(&'static str, &'a Buffer)>) {
        match self {
            Epilogue::None => (0, gpu.unused(), gpu.unused_out(), None),
            Epilogue::Silu { act } => (1, gpu.unused(), act, Some(("silu act", act))),
            Epilogue::DSilu { pre } => (2, pre, gpu.unused_out(), Some(("dsilu pre", pre))),
        }
    }
}

/// out = op(a) · op(b) (+ bias), per batch. `bias` is (N,), shared across the batch.
pub async fn matmul(
    gpu: &Gpu,
    layout: Layout,
    a: &Buffer,
    b: &Buffer,
    bias: Option<&Buffer>,
    out: &Buffer,
    d: Dims,
) -> Result<Dispatch, GpuError> {
    matmul_strided(gpu, layout, a, b, bias, out, d, Strides::contiguous(d)).await
}

/// `matmul` in an explicit scheme, whatever `gpu` uses (benchmarks, checks).
#[allow(clippy::too_many_arguments)] // the operands of `matmul` plus the scheme
pub async fn matmul_in(
    gpu: &Gpu,
    scheme: Scheme,
    layout: Layout,
    a: &Buffer,
    b: &Buffer,
    bias: Option<&Buffer>,
    out: &Buffer,
    d: Dims,
) -> Result<Dispatch, GpuError> {
    launch(gpu, scheme, layout, a, b, bias, out, Epilogue::None, d, Strides::contiguous(d)).await
}

/// Elements an operand of `len` elements per item spans over `batch` items `stride` apart.
fn span(batch: usize, stride: usize, len: usize) -> usize {
    (batch - 1) * stride + len
}

/// `matmul` with batch item t of a, b, out starting at t * `s.a`, t * `s.b`, t * `s.out`
/// elements into its buffer (view). Output items must not overlap (s.out >= M N, or batch 1).
#[allow(clippy::too_many_arguments)] // the operands of `matmul` plus the strides
pub async fn matmul_strided(
    gpu: &Gpu,
    layout: Layout,
    a: &Buffer,
    b: &Buffer,
    bias: Option<&Buffer>,
    out: &Buffer,
    d: Dims,
    s: Strides,
) -> Result<Dispatch, GpuError> {
    launch_tuned(gpu, layout, a, b, bias, out, Epilogue::None, d, s).await
}

/// `matmul` with an epilogue on each output element (`Epilogue`): a Linear and its SiLU in one
/// dispatch.
#[allow(clippy::too_many_arguments)] // the operands of `matmul` plus the epilogue
pub async fn matmul_ep(
    gpu: &Gpu,
    layout: Layout,
    a: &Buffer,
    b: &Buffer,
    bias: Option<&Buffer>,
    out: &Buffer,
    ep: Epilogue<'_>,
    d: Dims,
) -> Result<Dispatch, GpuError> {
    launch_tuned(gpu, layout, a, b, bias, out, ep, d, Strides::contiguous(d)).await
}

/// `launch` in the scheme `gpu` uses for this shape (measured, forced or the default).
#[allow(clippy::too_many_arguments)] // the operands of `launch` but the scheme
async fn launch_tuned(
    gpu: &Gpu,
    layout: Layout,
    a: &Buffer,
    b: &Buffer,
    bias: Option<&Buffer>,
    out: &Buffer,
    ep: Epilogue<'_>,
    d: Dims,
    s: Strides,
) -> Result<Dispatch, GpuError> {
    launch(gpu, scheme_for(gpu, layout, d, s).await?, layout, a, b, bias, out, ep, d, s).await
}

#[allow(clippy::too_many_arguments)] // the operands of `matmul_strided` plus the scheme
async fn launch(
    gpu: &Gpu,
    scheme: Scheme,
    layout: Layout,
    a: &Buffer,
    b: &Buffer,
    bias: Option<&Buffer>,
    out: &Buffer,
    ep: Epilogue<'_>,
    d: Dims,
    s: Strides,
) -> Result<Dispatch, GpuError> {
    if d.m == 0 || d.n == 0 || d.k == 0 || d.batch == 0 {
        return Err(GpuError::Shape(format!("matmul with an empty dimension: {d:?}")));
    }
    if d.batch > 1 && s.out < d.m * d.n {
        return Err(GpuError::Shape(format!("matmul output items overlap: {d:?} {s:?}")));
    }
    needs(
        "matmul",
        &[
            ("a", a, span(d.batch, s.a, d.m * d.k)),
            ("b", b, span(d.batch, s.b, d.k * d.n)),
            ("out", out, span(d.batch, s.out, d.m * d.n)),
        ],
    )?;
    let bias_buf = optional(gpu, "matmul bias", bias, d.n)?; // has_bias says which
    let (code, aux, out2, operand) = ep.bind(gpu);
    if let Some((name, buf)) = operand {
        needs("matmul epilogue", &[(name, buf, span(d.batch, s.out, d.m * d.n))])?;
    }
    let entry = layout.entry_strided(scheme, d, s);
    let params = Params::strided(d, s, bias.is_some(), code);
    let bufs = [a, b, bias_buf, out, aux, out2];
    let disp = prepare(gpu, &SPEC, entry, &bufs, &params, workgroups(scheme, d) as u32).await?;
    Ok(disp.with_flops(d.flops() as u64))
}

/// How a gradient is computed: a forward product of `layout` over `dims`, with `dout` as its
/// first operand when `dout_first`, else as its second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub layout: Layout,
    pub dims: Dims,
    pub dout_first: bool,
}

impl Plan {
    /// The entry point that runs this plan in `scheme`.
    pub fn entry(&self, scheme: Scheme) -> &'static str {
        self.layout.entry(scheme, self.dims)
    }
}

/// The product giving `da` for `out = op(a) · op(b)` (stored like `a`, overwritten).
pub fn bwd_a_plan(layout: Layout, d: Dims) -> Plan {
    let Dims { m, n, k, batch } = d;
    match layout {
        // da (M, K) = dout (M, N) · b^T, b (K, N)
        Layout::NN => Plan { layout: Layout::NT, dims: Dims { m, n: k, k: n, batch }, dout_first: true },
        // da (M, K) = dout (M, N) · b, b (N, K)
        Layout::NT => Plan { layout: Layout::NN, dims: Dims { m, n: k, k: n, batch }, dout_first: true },
        // da (K, M) = b (K, N) · dout^T
        Layout::TN => Plan { layout: Layout::NT, dims: Dims { m: k, n: m, k: n, batch }, dout_first: false },
    }
}

/// The product giving `db` for `out = op(a) · op(b)` (stored like `b`, overwritten).
pub fn bwd_b_plan(layout: Layout, d: Dims) -> Plan {
    let Dims { m, n, k, batch } = d;
    match layout {
        // db (K, N) = a^T (K, M) · dout (M, N)
        Layout::NN => Plan { layout: Layout::TN, dims: Dims { m: k, n, k: m, batch }, dout_first: false },
        // db (N, K) = dout^T (N, M) · a (M, K)
        Layout::NT => Plan { layout: Layout::TN, dims: Dims { m: n, n: k, k: m, batch }, dout_first: true },
        // db (K, N) = a (K, M) · dout (M, N)
        Layout::TN => Plan { layout: Layout::NN, dims: Dims { m: k, n, k: m, batch }, dout_first: false },
    }
}

/// The plan's product in `scheme`, or in the scheme `gpu` uses for its shape (None).
async fn run_plan(
    gpu: &Gpu,
    scheme: Option<Scheme>,
    plan: Plan,
    dout: &Buffer,
    other: &Buffer,
    grad: &Buffer,
    ep: Epilogue<'_>,
) -> Result<Dispatch, GpuError> {
    let (x, y) = if plan.dout_first { (dout, other) } else { (other, dout) };
    let (d, s) = (plan.dims, Strides::contiguous(plan.dims));
    match scheme {
        Some(scheme) => launch(gpu, scheme, plan.layout, x, y, None, grad, ep, d, s).await,
        None => launch_tuned(gpu, plan.layout, x, y, None, grad, ep, d, s).await,
    }
}

/// The gradient of `a` for `out = op(a) · op(b)`: stored like `a`, overwritten.
pub async fn matmul_bwd_a(
    gpu: &Gpu,
    layout: Layout,
    dout: &Buffer,
    b: &Buffer,
    da: &Buffer,
    d: Dims,
) -> Result<Dispatch, GpuError> {
    run_plan(gpu, None, bwd_a_plan(layout, d), dout, b, da, Epilogue::None).await
}

/// `matmul_bwd_a` with an epilogue on each element of `da` (`Epilogue::DSilu`: the gradient
/// through the SiLU whose output `a` is).
#[allow(clippy::too_many_arguments)] // the operands of `matmul_bwd_a` plus the epilogue
pub async fn matmul_bwd_a_ep(
    gpu: &Gpu,
    layout: Layout,
    dout: &Buffer,
    b: &Buffer,
    da: &Buffer,
    ep: Epilogue<'_>,
    d: Dims,
) -> Result<Dispatch, GpuError> {
    run_plan(gpu, None, bwd_a_plan(layout, d), dout, b, da, ep).await
}

/// The gradient of `b` for `out = op(a) · op(b)`: stored like `b`, overwritten.
pub async fn matmul_bwd_b(
    gpu: &Gpu,
    layout: Layout,
    dout: &Buffer,
    a: &Buffer,
    db: &Buffer,
    d: Dims,
) -> Result<Dispatch, GpuError> {
    run_plan(gpu, None, bwd_b_plan(layout, d), dout, a, db, Epilogue::None).await
}

/// dbias (N,) += column sums of dout over all rows and batches.
pub async fn matmul_bwd_bias(gpu: &Gpu, dout: &Buffer, dbias: &Buffer, d: Dims) -> Result<Dispatch, GpuError> {
    needs("matmul_bwd_bias", &[("dout", dout, d.batch * d.m * d.n), ("dbias", dbias, d.n)])?;
    let params = Params::strided(d, Strides::contiguous(d), false, 0);
    prepare(gpu, &SPEC, "matmul_bwd_bias", &[dout, dbias], &params, groups_for(d.n, LANES)).await
}

super::check_fn!(check_async);

async fn check_async(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    let mut results = Vec::new();
    // Every scheme, whatever `gpu` uses. Several tiles in both directions (of both schemes'
    // tiles), K not a multiple of 4 nor of the tiled scheme's K step, a batch, with and without
    // bias. The aligned shapes take the rows scheme's vec4 entry points (M stays odd where the
    // layout allows).
    for scheme in Scheme::ALL {
        for (d, with_bias) in [
            (Dims { m: 67, n: 45, k: 83, batch: 2 }, true),
            (Dims { m: 131, n: 97, k: 150, batch: 1 }, false),
            (Dims { m: 68, n: 44, k: 84, batch: 3 }, true),
            (Dims { m: 100, n: 132, k: 36, batch: 1 }, false),
            (Dims { m: 150, n: 141, k: 19, batch: 2 }, true),
        ] {
            for layout in [Layout::NN, Layout::NT, Layout::TN] {
                results.extend(check_one(gpu, scheme, layout, d, with_bias).await?);
            }
        }
    }
    // The epilogues, on an unaligned shape (scalar entry points) and an aligned one (vec4).
    for scheme in Scheme::ALL {
        for d in [Dims { m: 67, n: 45, k: 83, batch: 2 }, Dims { m: 68, n: 44, k: 84, batch: 3 }] {
            for layout in [Layout::NN, Layout::NT, Layout::TN] {
                results.extend(check_epilogues(gpu, scheme, layout, d).await?);
            }
        }
    }
    // Strided batches: gaps between items (odd strides take the scalar entry points, strides
    // that are multiples of 4 the vec4 ones), and b shared across the batch (stride 0).
    for (d, gap, shared_b) in [
        (Dims { m: 37, n: 29, k: 23, batch: 3 }, [5, 3, 7], false),
        (Dims { m: 20, n: 16, k: 12, batch: 3 }, [8, 4, 12], false),
        (Dims { m: 37, n: 29, k: 23, batch: 3 }, [1, 0, 1], true),
    ] {
        let c = Strides::contiguous(d);
        let s = Strides { a: c.a + gap[0], b: if shared_b { 0 } else { c.b + gap[1] }, out: c.out + gap[2] };
        for scheme in Scheme::ALL {
            for layout in [Layout::NN, Layout::NT, Layout::TN] {
                results.push(check_strided(gpu, scheme, layout, d, s).await?);
            }
        }
    }
    Ok(results)
}

/// The forward of one layout over strided batch items, each against the f64 reference; the
/// gaps between output items must keep their contents (zeros).
async fn check_strided(
    gpu: &Gpu,
    scheme: Scheme,
    layout: Layout,
    d: Dims,
    s: Strides,
) -> Result<CheckResult, GpuError> {
    let (na, nb, nc) = (d.m * d.k, d.k * d.n, d.m * d.n);
    let (la, lb, lc) = (span(d.batch, s.a, na), span(d.batch, s.b, nb), span(d.batch, s.out, nc));
    let xa = normal_vec(la, 8, 0);
    let xb = normal_vec(lb, 8, 1);
    let xbias = normal_vec(d.n, 8, 2);
    let (a64, b64, bias64) = (f64s(&xa), f64s(&xb), f64s(&xbias));
    let a = gpu.upload("a", &xa)?;
    let b = gpu.upload("b", &xb)?;
    let bias = gpu.upload("bias", &xbias)?;
    let out = gpu.zeros("out", lc)?;
    let mut want = vec![0.0; lc];
    for t in 0..d.batch {
        let (oa, ob, oc) = (t * s.a, t * s.b, t * s.out);
        r::matmul(&mut want[oc..oc + nc], &a64[oa..oa + na], &b64[ob..ob + nb], Some(&bias64[..]), layout.shape(d));
    }
    let shape = format!("{layout:?} m={} n={} k={} batch={} strides {:?} +bias", d.m, d.n, d.k, d.batch, s);
    let entry = layout.entry_strided(scheme, d, s);
    let f = launch(gpu, scheme, layout, &a, &b, Some(&bias), &out, Epilogue::None, d, s).await?;
    Ok(SPEC.result(entry, shape, &run_read(gpu, &f, &out).await?, &want))
}

/// The forward with bias and `Epilogue::Silu` (both outputs), and the gradient of `a` with
/// `Epilogue::DSilu` over a random pre-activation, against the f64 reference product followed
/// by the reference SiLU and its backward.
async fn check_epilogues(gpu: &Gpu, scheme: Scheme, layout: Layout, d: Dims) -> Result<Vec<CheckResult>, GpuError> {
    use crate::reference::elementwise::{silu_bwd, silu_fwd};
    let s = layout.shape(d);
    let (na, nb, nc) = (d.m * d.k, d.k * d.n, d.m * d.n);
    let (xa, xb, xbias) = (normal_vec(na * d.batch, 9, 0), normal_vec(nb * d.batch, 9, 1), normal_vec(d.n, 9, 2));
    let (xdout, xpre) = (normal_vec(nc * d.batch, 9, 3), normal_vec(na * d.batch, 9, 4));
    let (a64, b64, bias64, dout64, pre64) = (f64s(&xa), f64s(&xb), f64s(&xbias), f64s(&xdout), f64s(&xpre));
    let (mut want_out, mut want_da) = (vec![0.0; nc * d.batch], vec![0.0; na * d.batch]);
    for t in 0..d.batch {
        let (ra, rb, rc) = (t * na..(t + 1) * na, t * nb..(t + 1) * nb, t * nc..(t + 1) * nc);
        r::matmul(&mut want_out[rc.clone()], &a64[ra.clone()], &b64[rb.clone()], Some(&bias64[..]), s);
        r::matmul_bwd_a(&mut want_da[ra], &dout64[rc], &b64[rb], s);
    }
    let mut want_act = vec![0.0; want_out.len()];
    silu_fwd(&mut want_act, &want_out);
    let mut want_dpre = vec![0.0; want_da.len()];
    silu_bwd(&mut want_dpre, &want_da, &pre64);

    let (a, b, bias) = (gpu.upload("a", &xa)?, gpu.upload("b", &xb)?, gpu.upload("bias", &xbias)?);
    let (dout, pre) = (gpu.upload("dout", &xdout)?, gpu.upload("pre", &xpre)?);
    let (out, act, da) =
        (gpu.zeros("out", nc * d.batch)?, gpu.zeros("act", nc * d.batch)?, gpu.zeros("da", na * d.batch)?);
    let shape = format!("{layout:?} m={} n={} k={} batch={} +bias", d.m, d.n, d.k, d.batch);
    let contiguous = Strides::contiguous(d);
    let f = launch(gpu, scheme, layout, &a, &b, Some(&bias), &out, Epilogue::Silu { act: &act }, d, contiguous).await?;
    let entry = layout.entry(scheme, d);
    let mut results =
        vec![SPEC.result(entry, format!("{shape} +silu out"), &run_read(gpu, &f, &out).await?, &want_out)];
    results.push(SPEC.result(entry, format!("{shape} +silu act"), &gpu.read(&act).await?, &want_act));
    let plan = bwd_a_plan(layout, d);
    let g = run_plan(gpu, Some(scheme), plan, &dout, &b, &da, Epilogue::DSilu { pre: &pre }).await?;
    let got = run_read(gpu, &g, &da).await?;
    results.push(SPEC.result(plan.entry(scheme), format!("{shape} bwd_a *dsilu"), &got, &want_dpre));
    Ok(results)
}

/// Forward, both input gradients and (with bias) the bias gradient of one layout, each against
/// the f64 reference run per batch.
async fn check_one(
    gpu: &Gpu,
    scheme: Scheme,
    layout: Layout,
    d: Dims,
    with_bias: bool,
) -> Result<Vec<CheckResult>, GpuError> {
    let s = layout.shape(d);
    let (na, nb, nc) = (d.m * d.k, d.k * d.n, d.m * d.n);
    let xa = normal_vec(na * d.batch, 7, 0);
    let xb = normal_vec(nb * d.batch, 7, 1);
    let xbias = normal_vec(d.n, 7, 2);
    let xdout = normal_vec(nc * d.batch, 7, 3);
    let (a64, b64, bias64, dout64) = (f64s(&xa), f64s(&xb), f64s(&xbias), f64s(&xdout));
    let a = gpu.upload("a", &xa)?;
    let b = gpu.upload("b", &xb)?;
    let bias = gpu.upload("bias", &xbias)?;
    let dout = gpu.upload("dout", &xdout)?;
    let out = gpu.zeros("out", nc * d.batch)?;
    let da = gpu.zeros("da", na * d.batch)?;
    let db = gpu.zeros("db", nb * d.batch)?;

    let (mut want_out, mut want_da, mut want_db) =
        (vec![0.0; nc * d.batch], vec![0.0; na * d.batch], vec![0.0; nb * d.batch]);
    for t in 0..d.batch {
        let (ra, rb, rc) = (t * na..(t + 1) * na, t * nb..(t + 1) * nb, t * nc..(t + 1) * nc);
        r::matmul(&mut want_out[rc.clone()], &a64[ra.clone()], &b64[rb.clone()], with_bias.then_some(&bias64[..]), s);
        r::matmul_bwd_a(&mut want_da[ra.clone()], &dout64[rc.clone()], &b64[rb.clone()], s);
        r::matmul_bwd_b(&mut want_db[rb], &dout64[rc], &a64[ra], s);
    }
    let shape = format!(
        "{:?} m={} n={} k={} batch={}{}",
        layout,
        d.m,
        d.n,
        d.k,
        d.batch,
        if with_bias { " +bias" } else { "" }
    );
    let entry = layout.entry(scheme, d);
    let mut results = Vec::new();
    let f = matmul_in(gpu, scheme, layout, &a, &b, with_bias.then_some(&bias), &out, d).await?;
    results.push(SPEC.result(entry, shape.clone(), &run_read(gpu, &f, &out).await?, &want_out));
    let plan = bwd_a_plan(layout, d);
    let ga = run_plan(gpu, Some(scheme), plan, &dout, &b, &da, Epilogue::None).await?;
    let e = plan.entry(scheme);
    results.push(SPEC.result(e, format!("{shape} bwd_a"), &run_read(gpu, &ga, &da).await?, &want_da));
    let plan = bwd_b_plan(layout, d);
    let gb = run_plan(gpu, Some(scheme), plan, &dout, &a, &db, Epilogue::None).await?;
    let e = plan.entry(scheme);
    results.push(SPEC.result(e, format!("{shape} bwd_b"), &run_read(gpu, &gb, &db).await?, &want_db));
    if with_bias {
        // Accumulates into a non-zero gradient, as parameter gradients do.
        let dbias = gpu.upload("dbias", &xbias)?;
        let mut want = bias64.clone();
        for t in 0..d.batch {
            r::matmul_bwd_bias(&mut want, &dout64[t * nc..(t + 1) * nc], d.m, d.n);
        }
        let g = matmul_bwd_bias(gpu, &dout, &dbias, d).await?;
        results.push(SPEC.result("matmul_bwd_bias", shape, &run_read(gpu, &g, &dbias).await?, &want));
    }
    Ok(results)
}
