//! The op registry (`OPS`) and one launcher module per shader family. Launchers check shapes
//! against buffer lengths, then return a prepared `Dispatch` that a caller creates once and
//! encodes every step; no math lives here. Dimension letters: B rows (batch), N row length,
//! M/N/K matmul rows/cols/inner.

pub mod conv2d;
pub mod elementwise;
pub mod embedding;
pub mod groupnorm;
pub mod inception;
pub mod loss;
pub mod matmul;
pub mod optim;
pub mod philox;
pub mod reduce;
pub mod resample;
pub mod rows;
pub mod sampler;
pub mod softmax;
pub mod tune;
mod wgsl;

pub use wgsl::{Shader, Uniform};

use std::future::Future;
use std::pin::Pin;

use crate::gpu::{Buffer, Dispatch, Gpu, GpuError};
use crate::reference::tol::{Report, Tol};

/// A family's `Shader`: the WGSL its pipelines receive (WGSL has no #include) is what its
/// launcher declares (the uniform structs named, and `WGSL_CONSTANTS` of its `constants!`),
/// `common/index.wgsl`, the other `common/` files named, then the shader file itself.
macro_rules! shader {
    ($file:literal $(, $common:literal)*; $($uniform:ident),+) => {
        $crate::ops::Shader {
            source: $crate::ops::wgsl::concat_str!(
                "// Declared by the launcher in src/ops: uniform structs and tuning constants.\n",
                $($uniform::LAYOUT.wgsl,)+
                WGSL_CONSTANTS,
                concat!(
                    "\n",
                    include_str!("../../shaders/common/index.wgsl"),
                    "\n",
                    $(include_str!(concat!("../../shaders/common/", $common)), "\n",)*
                    include_str!(concat!("../../shaders/", $file))
                )
            ),
            uniforms: &[$($uniform::LAYOUT),+],
            overrides: OVERRIDES,
        }
    };
}
pub(crate) use shader;

/// A family's `fn check`, the `OpSpec::check` of its registry entry: its `async fn` of checks,
/// boxed (a fn pointer cannot return an `async fn`'s own future type).
macro_rules! check_fn {
    ($checks:ident) => {
        fn check(gpu: &$crate::gpu::Gpu) -> $crate::ops::CheckFuture<'_> {
            Box::pin($checks(gpu))
        }
    };
}
pub(crate) use check_fn;
pub(crate) use wgsl::{constants, uniform};

/// One registry entry, a WGSL entry point or a `Variant` of one: its CPU reference and the
/// tolerance its check uses.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub name: &'static str,
    /// The reference function(s) it is checked against.
    pub reference: &'static str,
    pub tol: Tol,
    /// Why this tolerance.
    pub why: &'static str,
}

/// The result of checking one entry point on one shape.
#[derive(Clone, Debug)]
pub struct CheckResult {
    pub op: &'static str,
    pub entry: &'static str,
    pub shape: String,
    pub tol: Tol,
    pub report: Report,
}

impl CheckResult {
    pub fn ok(&self) -> bool {
        self.report.ok()
    }

    /// Compares `got` with `want` under the registry tolerance of `spec`'s `entry` (EXACT, the
    /// strictest, if the entry is not registered, so a misspelt name cannot loosen a check).
    pub fn compare(spec: &OpSpec, entry: &'static str, shape: String, got: &[f32], want: &[f64]) -> Self {
        let tol = spec.entry(entry).map_or(crate::reference::tol::EXACT, |e| e.tol);
        CheckResult { op: spec.name, entry, shape, tol, report: crate::reference::tol::compare(got, want, tol) }
    }
}

impl std::fmt::Display for CheckResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = if self.ok() { "OK" } else { "NOT OK" };
        write!(f, "{status:6} {}::{} [{}] {}", self.op, self.entry, self.shape, self.report)
    }
}

pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<CheckResult>, GpuError>> + 'a>>;

/// A registry entry that specialises another WGSL entry point: `entry_point` with these values
/// of its pipeline-overridable constants (matmul's layouts).
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub name: &'static str,
    pub entry_point: &'static str,
    pub constants: &'static [(&'static str, f64)],
}

/// A shader family: file stem, full source, entry points and its GPU-vs-reference check.
pub struct OpSpec {
    /// Shader file stem, Rust module name and registry key.
    pub name: &'static str,
    /// The WGSL exactly as pipelines receive it, and the declarations prepended to it.
    pub shader: Shader,
    /// The entries that are not WGSL entry points of their own.
    pub variants: &'static [Variant],
    pub entries: &'static [Entry],
    /// Runs every entry point on shapes that need several workgroups and compares with the
    /// reference (`check_fn!`).
    pub check: for<'a> fn(&'a Gpu) -> CheckFuture<'a>,
}

impl OpSpec {
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// `got` against `want` under the tolerance of `entry` (`CheckResult::compare`).
    pub fn result(&self, entry: &'static str, shape: String, got: &[f32], want: &[f64]) -> CheckResult {
        CheckResult::compare(self, entry, shape, got, want)
    }

    /// The WGSL entry point of registry entry `name` and the pipeline-overridable constants it
    /// is created with: the family's, then its variant's.
    pub fn pipeline(&self, name: &'static str) -> (&'static str, Vec<(&'static str, f64)>) {
        let mut constants = self.shader.overrides.to_vec();
        match self.variants.iter().find(|v| v.name == name) {
            Some(v) => {
                constants.extend_from_slice(v.constants);
                (v.entry_point, constants)
            }
            None => (name, constants),
        }
    }
}

/// Every op family: the single table that shader validation, pipeline creation, the
/// GPU-vs-reference checks (native tests, browser tests, `cdl info`) and the benchmarks iterate.
pub const OPS: &[OpSpec] = &[
    elementwise::SPEC,
    matmul::SPEC,
    reduce::SPEC,
    philox::SPEC,
    groupnorm::SPEC,
    resample::SPEC,
    embedding::SPEC,
    softmax::SPEC,
    optim::SPEC,
    conv2d::SPEC,
    loss::SPEC,
    rows::SPEC,
    sampler::SPEC,
    inception::SPEC,
];

/// The op families with interchangeable kernel variants, and each one's variant names (the
/// family's default first): what `CDL_VARIANT=op:variant` and `Gpu::set_variant` may name.
pub const VARIANT_CHOICES: &[(&str, &[&str])] =
    &[(matmul::SPEC.name, &tune::Scheme::NAMES), (conv2d::SPEC.name, &tune::Scheme::NAMES)];

/// The variant names of op family `op`, or the error naming what exists.
pub fn variant_names(op: &str, variant: &str) -> Result<&'static [&'static str], GpuError> {
    let all =
        || VARIANT_CHOICES.iter().flat_map(|(o, vs)| vs.iter().map(move |v| format!("{o}:{v}"))).collect::<Vec<_>>();
    let bad = || GpuError::Variant { op: op.into(), variant: variant.into(), available: all().join(", ") };
    let names = VARIANT_CHOICES.iter().find(|(o, _)| *o == op).map(|(_, v)| *v).ok_or_else(bad)?;
    if names.contains(&variant) {
        Ok(names)
    } else {
        Err(bad())
    }
}

/// Fails on the first variant forced on `gpu` that the registry does not have (a misspelt
/// `CDL_VARIANT` must not be ignored silently).
pub fn check_variants(gpu: &Gpu) -> Result<(), GpuError> {
    for (op, variant) in gpu.variants() {
        variant_names(&op, &variant)?;
    }
    Ok(())
}

/// Per op family with variants: its name, the variant in use and whether it was forced or set
/// (else it is the family's default).
pub fn variants_in_use(gpu: &Gpu) -> Vec<(&'static str, String, bool)> {
    VARIANT_CHOICES
        .iter()
        .map(|&(op, names)| match gpu.variant(op) {
            Some(v) => (op, v, true),
            None => (op, names[0].to_string(), false),
        })
        .collect()
}

/// Looks an op family up by name.
pub fn op(name: &str) -> Option<&'static OpSpec> {
    OPS.iter().find(|o| o.name == name)
}

/// Runs the check of every registered op; stops at the first GPU error, not at the first
/// numeric failure (those are reported in the results).
pub async fn check_all(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    let mut out = Vec::new();
    for spec in OPS {
        out.extend((spec.check)(gpu).await?);
    }
    Ok(out)
}

/// The pipeline of registry entry `entry` of `spec` (cached under its name and constants), and
/// a dispatch of it over `buffers` with `params`.
pub(crate) async fn prepare<T: bytemuck::Pod>(
    gpu: &Gpu,
    spec: &OpSpec,
    entry: &'static str,
    buffers: &[&Buffer],
    params: &T,
    workgroups: u32,
) -> Result<Dispatch, GpuError> {
    let (entry_point, constants) = spec.pipeline(entry);
    let kernel = gpu.kernel_with_constants(entry, spec.name, spec.shader.source, entry_point, &constants).await?;
    gpu.dispatch(&kernel, buffers, params, workgroups)
}

/// Fails unless `buf` holds at least `need` elements.
pub(crate) fn need(what: &str, buf: &Buffer, need: usize) -> Result<(), GpuError> {
    if buf.len < need {
        return Err(GpuError::Shape(format!("{what} has {} elements, needs {need}", buf.len)));
    }
    Ok(())
}

/// Fails unless every `(binding, buffer, elements)` of `entry` holds at least that many elements.
pub(crate) fn needs(entry: &str, bindings: &[(&str, &Buffer, usize)]) -> Result<(), GpuError> {
    for &(binding, buf, n) in bindings {
        need(&format!("{entry} {binding}"), buf, n)?;
    }
    Ok(())
}

/// An optional binding: `buf`, which must hold `n` elements, or else the device's placeholder,
/// bound but never read (the kernel's params say which).
pub(crate) fn optional<'a>(
    gpu: &'a Gpu,
    what: &str,
    buf: Option<&'a Buffer>,
    n: usize,
) -> Result<&'a Buffer, GpuError> {
    match buf {
        Some(b) => need(what, b, n).map(|()| b),
        None => Ok(gpu.unused()),
    }
}

/// Runs one prepared dispatch and reads `out` back (for checks and one-off use).
pub(crate) async fn run_read(gpu: &Gpu, d: &Dispatch, out: &Buffer) -> Result<Vec<f32>, GpuError> {
    gpu.run(&[d]);
    gpu.read(out).await
}

/// f32 test data as f64 for the reference.
pub(crate) fn f64s(x: &[f32]) -> Vec<f64> {
    crate::reference::to_f64(x)
}
