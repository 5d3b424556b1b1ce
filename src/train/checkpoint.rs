//! Checkpoints: named f32 tensors plus run metadata (`Checkpoint`), stored as a standard
//! safetensors file (F32, or F16 for the tensors chosen with `Checkpoint::store_f16`). A pure, target-free `encode` / `decode` (the browser stores the bytes where
//! it likes), `check_compatible`, and natively an atomic `save` and `load`. Untrusted input gives
//! a one-line `CheckpointError`, never a panic. Not here: model or optimizer code; the model
//! config is opaque text, stored and never parsed.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::PathBuf;

use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::text::OneLine;

// ---------------------------------------------------------------------------------------------
// Constants

/// Format version written by this build; `decode` reads versions 1..=FORMAT_VERSION.
pub const FORMAT_VERSION: u32 = 1;

/// Largest accepted safetensors header, in bytes: the limit of the safetensors crate itself.
/// Real headers are a few hundred bytes per tensor plus the model config.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Name prefix of the trained parameters.
///
/// Tensor naming convention (the PyTorch mirror in `tools/` uses the same names):
/// - `model.<layer path>.<param>`  the trained parameters, e.g. `model.down.0.conv1.weight`,
///   `model.time_embed.linear1.bias`; the layer path is the field path, list indices in decimal;
/// - `ema.<layer path>.<param>`    the EMA copy of the same parameter (same shape);
/// - `optim.m.<layer path>.<param>`, `optim.v.<layer path>.<param>`  Adam first / second moments;
/// - `preview.<what>`                 a shipped file's precomputed preview (`PREVIEW_PREFIX`).
///
/// Other names are allowed (these prefixes are a convention, not a check), except the empty
/// name and `__metadata__`, which safetensors reserves.
pub const MODEL_PREFIX: &str = "model.";
/// Name prefix of the EMA parameters.
pub const EMA_PREFIX: &str = "ema.";
/// Name prefix of Adam's first moments.
pub const ADAM_M_PREFIX: &str = "optim.m.";
/// Name prefix of Adam's second moments.
pub const ADAM_V_PREFIX: &str = "optim.v.";
/// Name prefix of a shipped file's precomputed preview (`cdl export`: `preview.samples`,
/// `preview.logp`, `preview.images`); nothing that builds a network reads these.
pub const PREVIEW_PREFIX: &str = "preview.";

/// Metadata key of the format version (decimal).
pub const KEY_FORMAT_VERSION: &str = "cdl.format_version";
/// Metadata key of the architecture name.
pub const KEY_ARCH: &str = "cdl.arch";
/// Metadata key of the training step (decimal).
pub const KEY_STEP: &str = "cdl.step";
/// Metadata key of the opaque model config text.
pub const KEY_MODEL_CONFIG: &str = "cdl.model_config";
/// Prefix reserved for this module's metadata keys; `extra` keys may not use it.
pub const RESERVED_KEY_PREFIX: &str = "cdl.";

/// Length of the little-endian u64 header-length prefix of a safetensors file.
const LEN_PREFIX: usize = 8;

// ---------------------------------------------------------------------------------------------
// Errors

/// Every fallible function of this module returns this error; messages are one line (control
/// characters from files or OS messages are escaped).
#[derive(Debug)]
pub enum CheckpointError {
    /// The bytes are not a valid CDL checkpoint: truncated, corrupt header, wrong dtype, bad
    /// offsets, missing or malformed metadata, unsupported format version.
    Format(String),
    /// A valid checkpoint that does not fit what the caller expects (architecture or tensors).
    Incompatible(String),
    /// The caller built something that cannot be stored (duplicate name, shape/data mismatch,
    /// reserved metadata key, header too large).
    Invalid(String),
    /// A file-system operation failed; `action` reads like "cannot open".
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    /// An error about the contents of the file at `path`.
    InFile { path: PathBuf, source: Box<CheckpointError> },
    /// A tensor holds NaN or an infinity (`check_finite`): the message names the tensor and the
    /// first bad index.
    NonFinite(String),
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Format(m) => write!(f, "not a valid CDL checkpoint: {}", OneLine(m)),
            Self::Incompatible(m) => write!(f, "incompatible checkpoint: {}", OneLine(m)),
            Self::Invalid(m) => write!(f, "cannot store checkpoint: {}", OneLine(m)),
            Self::Io { action, path, source } => {
                write!(f, "{action} {}: {}", OneLine(&path.display().to_string()), OneLine(&source.to_string()))
            }
            Self::InFile { path, source } => write!(f, "{}: {source}", OneLine(&path.display().to_string())),
            Self::NonFinite(m) => write!(f, "{}", OneLine(m)),
        }
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::InFile { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

fn format_err(msg: impl Into<String>) -> CheckpointError {
    CheckpointError::Format(msg.into())
}

fn invalid(msg: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid(msg.into())
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

/// One named f32 tensor: row-major (C order) `data` of `shape`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Unique within a checkpoint; see the naming convention at `MODEL_PREFIX`.
    pub name: String,
    /// Dimensions, outermost first; `[]` is a scalar (1 value), a 0 anywhere means no values.
    pub shape: Vec<usize>,
    /// The product of `shape` values, row-major.
    pub data: Vec<f32>,
}

/// Named f32 tensors (sorted by name, unique, each `data.len()` = product of `shape`) plus
/// the run metadata, and which tensors the file stores as F16 (`store_f16`).
///
/// Order: the tensors are sorted by name (byte-wise), which is also the order in which
/// safetensors lays out tensors of one dtype (F32 before F16), so `tensors()` is identical before
/// `encode` and after `decode`. Decimal indices mean `model.down.10` sorts before `model.down.2`: load by name
/// (`get`), and give `check_compatible` the model's own order.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Architecture name, e.g. "mlp" or "unet"; `check_compatible` compares it first.
    pub arch: String,
    /// The model config as opaque text supplied by the caller (JSON, TOML, ...).
    pub model_config: String,
    /// Optimizer steps taken when the checkpoint was written.
    pub step: u64,
    /// Free-form key/values (seed, loss, git revision, ...); keys may not start with `cdl.`.
    pub extra: BTreeMap<String, String>,
    /// Format version of the bytes this was decoded from; `FORMAT_VERSION` for a new one.
    format_version: u32,
    /// Sorted by name, names unique.
    tensors: Vec<Tensor>,
    /// Names of the tensors `encode` stores as F16 (each one in `tensors`).
    f16: BTreeSet<String>,
}

impl Checkpoint {
    /// An empty checkpoint (no tensors, no extra entries) at `step`.
    pub fn new(arch: impl Into<String>, model_config: impl Into<String>, step: u64) -> Self {
        Self {
            arch: arch.into(),
            model_config: model_config.into(),
            step,
            extra: BTreeMap::new(),
            format_version: FORMAT_VERSION,
            tensors: Vec::new(),
            f16: BTreeSet::new(),
        }
    }

    /// Adds a tensor. Fails on an empty or reserved name, a name already present, or
    /// `data.len()` different from the product of `shape` (an empty shape is a scalar: 1 value).
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        data: Vec<f32>,
    ) -> Result<(), CheckpointError> {
        let name = name.into();
        check_name(&name).map_err(invalid)?;
        let numel = numel(&shape).ok_or_else(|| invalid(format!("tensor {name:?}: shape {shape:?} overflows")))?;
        if data.len() != numel {
            return Err(invalid(format!(
                "tensor {name:?}: shape {shape:?} holds {numel} values but {} were given",
                data.len()
            )));
        }
        match self.tensors.binary_search_by(|t| t.name.as_str().cmp(&name)) {
            Ok(_) => Err(invalid(format!("duplicate tensor {name:?}"))),
            Err(at) => {
                self.tensors.insert(at, Tensor { name, shape, data });
                Ok(())
            }
        }
    }

    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.binary_search_by(|t| t.name.as_str().cmp(name)).ok().and_then(|i| self.tensors.get(i))
    }

    /// All tensors, sorted by name.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// Consumes the checkpoint, returning its tensors sorted by name.
    pub fn into_tensors(self) -> Vec<Tensor> {
        self.tensors
    }

    /// Makes `encode` store the tensor `name` as F16 (IEEE binary16, each value rounded to the
    /// nearest, ties to even) instead of F32: half the bytes, about 3 significant digits. Fails
    /// when there is no such tensor; `encode` fails if a finite value lies beyond F16's range.
    pub fn store_f16(&mut self, name: &str) -> Result<(), CheckpointError> {
        if self.get(name).is_none() {
            return Err(invalid(format!("no tensor {name:?} to store as F16")));
        }
        self.f16.insert(name.to_string());
        Ok(())
    }

    /// Whether the tensor `name` is stored as F16: chosen with `store_f16`, or read from an F16
    /// tensor by `decode` (its values are then exactly the F16 ones, widened).
    pub fn is_f16(&self, name: &str) -> bool {
        self.f16.contains(name)
    }

    /// Every value of each F16 tensor as `encode` stores it: rounded to F16 (nearest, ties to
    /// even) and widened back, so the weights in memory are exactly the file's. Fails on a finite
    /// value beyond F16's range, naming the tensor and the index.
    pub fn round_f16(&mut self) -> Result<(), CheckpointError> {
        for t in self.tensors.iter_mut().filter(|t| self.f16.contains(&t.name)) {
            for (i, v) in t.data.iter_mut().enumerate() {
                *v = f16_to_f32(f32_to_f16(*v).map_err(|e| invalid(format!("tensor {:?} at index {i}: {e}", t.name)))?);
            }
        }
        Ok(())
    }

    /// Names and shapes of all tensors, sorted by name: the `expected` list of `check_compatible`.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors.iter().map(|t| (t.name.clone(), t.shape.clone())).collect()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Format version of the bytes this checkpoint was decoded from (`FORMAT_VERSION` if new).
    /// `encode` always writes `FORMAT_VERSION`.
    pub fn format_version(&self) -> u32 {
        self.format_version
    }

    /// Refuses a checkpoint any of whose tensors holds NaN or an infinity, naming the first such
    /// tensor (in name order), its first bad index (flat, row-major) and the value, and counting
    /// the bad values of the whole checkpoint. `save` and `load` call it; `decode` does not, so
    /// the byte format itself stays bit-exact for every f32.
    pub fn check_finite(&self) -> Result<(), CheckpointError> {
        let mut first: Option<(&str, usize, f32)> = None;
        let mut count = 0usize;
        for t in &self.tensors {
            for (i, &v) in t.data.iter().enumerate().filter(|(_, v)| !v.is_finite()) {
                count += 1;
                first.get_or_insert((t.name.as_str(), i, v));
            }
        }
        let Some((name, index, value)) = first else { return Ok(()) };
        let what = if value.is_nan() {
            "NaN"
        } else if value > 0.0 {
            "inf"
        } else {
            "-inf"
        };
        let more = if count > 1 { format!(" ({count} non-finite values in all)") } else { String::new() };
        Err(CheckpointError::NonFinite(format!("tensor {name:?} holds {what} at index {index}{more}")))
    }

    /// Refuses a checkpoint that does not match `expected_arch` and exactly the `expected`
    /// (name, shape) list. The error names the first mismatch, checking in this order: the
    /// architecture; `expected` in the caller's order (missing tensor, different shape); then
    /// tensors of the checkpoint absent from `expected`, by name. It also counts the others.
    pub fn check_compatible<N: AsRef<str>, S: AsRef<[usize]>>(
        &self,
        expected_arch: &str,
        expected: &[(N, S)],
    ) -> Result<(), CheckpointError> {
        if self.arch != expected_arch {
            return Err(CheckpointError::Incompatible(format!(
                "architecture is {:?}, expected {expected_arch:?}",
                self.arch
            )));
        }
        let mut first: Option<String> = None;
        let mut count = 0usize;
        let mut note = |msg: String| {
            count += 1;
            first.get_or_insert(msg);
        };
        for (name, shape) in expected {
            let (name, shape) = (name.as_ref(), shape.as_ref());
            match self.get(name) {
                None => note(format!("missing tensor {name:?} (expected shape {shape:?})")),
                Some(t) if t.shape != shape => {
                    note(format!("tensor {name:?} has shape {:?}, expected {shape:?}", t.shape))
                }
                Some(_) => {}
            }
        }
        let wanted: HashSet<&str> = expected.iter().map(|(n, _)| n.as_ref()).collect();
        for t in self.tensors.iter().filter(|t| !wanted.contains(t.name.as_str())) {
            note(format!("unexpected tensor {:?} (shape {:?})", t.name, t.shape));
        }
        match first {
            None => Ok(()),
            Some(msg) if count == 1 => Err(CheckpointError::Incompatible(msg)),
            Some(msg) => Err(CheckpointError::Incompatible(format!("{msg} (and {} more mismatches)", count - 1))),
        }
    }
}

/// `v` as F16 bits, rounded to the nearest (ties to even; `half`). Exact for NaN: the sign and
/// the top 10 mantissa bits are kept (a NaN whose top bits are all zero keeps a quiet bit), so a
/// NaN read from F16 is written back with the same bits. Fails on a finite value that rounds to
/// an infinity.
fn f32_to_f16(v: f32) -> Result<u16, String> {
    if v.is_nan() {
        let b = v.to_bits();
        let man = ((b >> 13) & 0x03ff) as u16;
        let payload = if man == 0 { 0x0200 } else { man };
        return Ok(((b >> 16) & 0x8000) as u16 | 0x7c00 | payload);
    }
    let h = half::f16::from_f32(v);
    if h.is_infinite() && v.is_finite() {
        return Err(format!("{v} is beyond the F16 range (largest {})", half::f16::MAX));
    }
    Ok(h.to_bits())
}

/// F16 bits widened to f32, exactly (every F16 value is an f32; NaN keeps its sign and payload
/// bits, not quieted, so `f32_to_f16` gives the same bits back).
fn f16_to_f32(bits: u16) -> f32 {
    if bits & 0x7c00 == 0x7c00 && bits & 0x03ff != 0 {
        return f32::from_bits((u32::from(bits & 0x8000) << 16) | 0x7f80_0000 | (u32::from(bits & 0x03ff) << 13));
    }
    half::f16::from_bits(bits).to_f32()
}

/// Product of the dimensions; `None` on overflow.
fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("tensor name is empty".into());
    }
    if name == "__metadata__" {
        return Err("tensor name \"__metadata__\" is reserved by safetensors".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pure core: bytes <-> Checkpoint (target-free)

/// A checkpoint tensor seen by the safetensors serializer: F32, little-endian, or F16 bytes
/// already rounded by `encode`.
enum TensorView<'a> {
    F32(&'a Tensor),
    F16(&'a Tensor, Vec<u8>),
}

impl View for TensorView<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            Self::F32(_) => Dtype::F32,
            Self::F16(..) => Dtype::F16,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Self::F32(t) | Self::F16(t, _) => &t.shape,
        }
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            Self::F32(t) if cfg!(target_endian = "little") => Cow::Borrowed(bytemuck::cast_slice(&t.data)),
            Self::F32(t) => Cow::Owned(t.data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Self::F16(_, bytes) => Cow::Borrowed(bytes),
        }
    }

    fn data_len(&self) -> usize {
        match self {
            Self::F32(t) => t.data.len() * 4,
            Self::F16(_, bytes) => bytes.len(),
        }
    }
}

/// Serializes a checkpoint to safetensors bytes (format `FORMAT_VERSION`). Fails if an `extra`
/// key uses the reserved `cdl.` prefix, a tensor chosen for F16 holds a finite value beyond F16's
/// range, or the header would exceed `MAX_HEADER_BYTES`.
///
/// File layout: a standard safetensors file (every tensor F32, or F16 for those chosen with
/// `store_f16`, rounded to the nearest with ties to even; little-endian, C order) whose
/// `__metadata__` holds `cdl.format_version`, `cdl.arch`, `cdl.step` (decimal) and
/// `cdl.model_config`; every other metadata key is an `extra` entry, stored verbatim. Keys
/// starting with `cdl.` are reserved. safetensors keeps the metadata in a hash map, so the order of
/// metadata keys inside the header may differ between two encodes of the same checkpoint; tensor
/// bytes, offsets and all values are identical.
pub fn encode(ckpt: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    if let Some(key) = ckpt.extra.keys().find(|k| k.starts_with(RESERVED_KEY_PREFIX)) {
        return Err(invalid(format!("extra key {key:?} uses the reserved prefix {RESERVED_KEY_PREFIX:?}")));
    }
    let mut meta: Vec<(String, String)> = vec![
        (KEY_FORMAT_VERSION.into(), FORMAT_VERSION.to_string()),
        (KEY_ARCH.into(), ckpt.arch.clone()),
        (KEY_STEP.into(), ckpt.step.to_string()),
        (KEY_MODEL_CONFIG.into(), ckpt.model_config.clone()),
    ];
    meta.extend(ckpt.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut views = Vec::with_capacity(ckpt.tensors.len());
    for t in &ckpt.tensors {
        if !ckpt.f16.contains(&t.name) {
            views.push((t.name.as_str(), TensorView::F32(t)));
            continue;
        }
        let mut bytes = Vec::with_capacity(t.data.len() * 2);
        for (i, &v) in t.data.iter().enumerate() {
            let h = f32_to_f16(v).map_err(|e| invalid(format!("tensor {:?} at index {i}: {e}", t.name)))?;
            bytes.extend_from_slice(&h.to_le_bytes());
        }
        views.push((t.name.as_str(), TensorView::F16(t, bytes)));
    }
    safetensors::serialize(views, Some(meta.into_iter().collect())).map_err(|e| invalid(e.to_string()))
}

/// Parses safetensors bytes into a checkpoint. Accepts only CDL checkpoints (format versions
/// 1..=`FORMAT_VERSION`) whose tensors are all F32 or F16; F16 values are widened to f32
/// exactly, and those tensors are marked `is_f16`, so `encode` writes them back as F16.
///
/// Untrusted input: rejected, before allocating for the payload, are a file shorter than the
/// 8-byte length prefix and a header length above `MAX_HEADER_BYTES` or above what the file
/// holds; then every tensor entry is checked (dtype F32 or F16 only, shape × 4 or × 2 bytes = its
/// byte span, span inside the file) before safetensors validates the whole layout. Every failure
/// is a one-line `CheckpointError`, never a panic. Every f32 and F16 bit pattern is kept, NaN
/// included;
/// `load` and `save` refuse tensors holding NaN or an infinity (`check_finite`), so no command
/// starts from such weights and a run never replaces its last good checkpoint with them.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let header_len = read_header_len(bytes)?;
    check_header_len(header_len, (bytes.len() - LEN_PREFIX) as u64)?;
    // Both checks passed: the header lies inside `bytes`.
    let header_end = LEN_PREFIX + header_len as usize;
    let header = bytes.get(LEN_PREFIX..header_end).ok_or_else(|| format_err("header out of range"))?;
    let payload_len = bytes.len() - header_end;
    precheck_header(header, payload_len)?;

    let (_, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| format_err(format!("invalid safetensors layout: {e}")))?;
    let payload = bytes.get(header_end..).ok_or_else(|| format_err("payload out of range"))?;

    let meta = metadata
        .metadata()
        .as_ref()
        .ok_or_else(|| format_err(format!("no __metadata__ (missing key {KEY_FORMAT_VERSION:?})")))?;
    let get = |key: &str| meta.get(key).ok_or_else(|| format_err(format!("missing metadata key {key:?}")));

    let version_text = get(KEY_FORMAT_VERSION)?;
    let format_version: u32 = version_text
        .parse()
        .ok()
        .filter(|&v| v >= 1)
        .ok_or_else(|| format_err(format!("format version {version_text:?} is not a positive integer")))?;
    if format_version > FORMAT_VERSION {
        return Err(format_err(format!(
            "format version {format_version} is newer than this build reads (up to {FORMAT_VERSION})"
        )));
    }
    let arch = get(KEY_ARCH)?.clone();
    let step_text = get(KEY_STEP)?;
    let step: u64 =
        step_text.parse().map_err(|_| format_err(format!("step {step_text:?} is not a non-negative integer")))?;
    let model_config = get(KEY_MODEL_CONFIG)?.clone();
    let known = [KEY_FORMAT_VERSION, KEY_ARCH, KEY_STEP, KEY_MODEL_CONFIG];
    let mut extra = BTreeMap::new();
    for (k, v) in meta.iter() {
        if k.starts_with(RESERVED_KEY_PREFIX) {
            if !known.contains(&k.as_str()) {
                return Err(format_err(format!("unknown reserved metadata key {k:?}")));
            }
        } else {
            extra.insert(k.clone(), v.clone());
        }
    }

    let mut tensors = Vec::new();
    let mut f16 = BTreeSet::new();
    for name in metadata.offset_keys() {
        let info = metadata.info(&name).ok_or_else(|| format_err(format!("tensor {name:?} has no entry")))?;
        let (start, end) = info.data_offsets;
        let raw = payload
            .get(start..end)
            .ok_or_else(|| format_err(format!("tensor {name:?}: data_offsets [{start}, {end}] outside the file")))?;
        // precheck_header already enforced the dtypes and spans; kept so this function stands on its own.
        let data: Vec<f32> = match info.dtype {
            Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            other => {
                return Err(format_err(format!("tensor {name:?} has dtype {other}, only F32 and F16 are supported")))
            }
        };
        let width = if info.dtype == Dtype::F16 { 2 } else { 4 };
        if numel(&info.shape) != Some(data.len()) || raw.len() != data.len() * width {
            return Err(format_err(format!("tensor {name:?}: shape {:?} does not match its data", info.shape)));
        }
        check_name(&name).map_err(format_err)?;
        if info.dtype == Dtype::F16 {
            f16.insert(name.clone());
        }
        tensors.push(Tensor { name, shape: info.shape.clone(), data });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));

    Ok(Checkpoint { arch, model_config, step, extra, format_version, tensors, f16 })
}

/// The header length stored in the first 8 bytes.
fn read_header_len(bytes: &[u8]) -> Result<u64, CheckpointError> {
    let prefix: [u8; LEN_PREFIX] = bytes.get(..LEN_PREFIX).and_then(|p| p.try_into().ok()).ok_or_else(|| {
        format_err(format!("truncated: {} bytes, shorter than the {LEN_PREFIX}-byte header length", bytes.len()))
    })?;
    Ok(u64::from_le_bytes(prefix))
}

/// Rejects a header length above the fixed bound or above the `available` bytes after the prefix.
fn check_header_len(header_len: u64, available: u64) -> Result<(), CheckpointError> {
    if header_len > MAX_HEADER_BYTES {
        return Err(format_err(format!("header length {header_len} exceeds the limit of {MAX_HEADER_BYTES} bytes")));
    }
    if header_len > available {
        return Err(format_err(format!(
            "header length {header_len} exceeds the {available} bytes that follow it (truncated file?)"
        )));
    }
    if header_len < 2 {
        return Err(format_err(format!("header length {header_len} is too small for a JSON object")));
    }
    Ok(())
}

/// Checks each tensor entry of the JSON header with a precise message (name, dtype, shape, span)
/// and keeps every data offset within `payload_len`, so that the safetensors validation that
/// follows cannot overflow on crafted offsets. The header is read as a stream: no JSON tree is
/// built and nested values nobody asked for are skipped, so a hostile header costs memory in
/// proportion to its largest entry, not a large multiple of its size. An entry holding any field
/// other than dtype, shape and data_offsets is refused, so safetensors only parses clean headers.
/// When several entries are wrong, the error names the first by name (byte-wise).
fn precheck_header(header: &[u8], payload_len: usize) -> Result<(), CheckpointError> {
    let mut de = serde_json::Deserializer::from_slice(header);
    serde::Deserializer::deserialize_any(&mut de, HeaderCheck { payload_len })
        .and_then(|checked| de.end().map(|()| checked))
        .map_err(|e| format_err(format!("header is not valid JSON: {e}")))?
}

/// The checks of one tensor entry, in the order their messages take precedence.
fn check_entry(name: &str, entry: HeaderEntry, payload_len: usize) -> Result<(), CheckpointError> {
    let bad = |what: &str| format_err(format!("tensor {name:?}: {what}"));
    let dtype = entry.dtype.ok_or_else(|| bad("missing or non-string dtype"))?;
    let width = match dtype.as_str() {
        "F32" => 4u64,
        "F16" => 2,
        _ => return Err(bad(&format!("dtype {dtype}, only F32 and F16 are supported"))),
    };
    let shape = entry.shape.ok_or_else(|| bad("missing shape, or not a list of non-negative integers"))?;
    let (start, end) = match entry.data_offsets.as_deref() {
        Some(&[start, end]) => (start, end),
        _ => return Err(bad("missing data_offsets, or not two non-negative integers")),
    };
    if start > end || end > payload_len as u64 {
        return Err(bad(&format!("data_offsets [{start}, {end}] do not fit the {payload_len} data bytes of the file")));
    }
    let bytes = shape.iter().try_fold(width, |acc, &d| acc.checked_mul(d));
    if bytes != Some(end - start) {
        return Err(bad(&format!("shape {shape:?} in {dtype} does not fill data_offsets [{start}, {end}]")));
    }
    if let Some(field) = entry.unknown {
        return Err(bad(&format!("unknown field {field:?} (an entry holds dtype, shape and data_offsets)")));
    }
    Ok(())
}

/// Visits the header's top-level object; its value is the first error by entry name, if any.
struct HeaderCheck {
    payload_len: usize,
}

/// One tensor entry as read: a field is `None` when missing or of another JSON type.
#[derive(Default)]
struct HeaderEntry {
    dtype: Option<String>,
    shape: Option<Vec<u64>>,
    data_offsets: Option<Vec<u64>>,
    /// The first field that is none of the three.
    unknown: Option<String>,
}

/// What a JSON value is, for the fields of the header; nested values are skipped unread.
enum Json {
    Str(String),
    U64(u64),
    /// Some: every element a non-negative integer.
    U64s(Option<Vec<u64>>),
    Object(HeaderEntry),
    /// `__metadata__`: whether every value is a string.
    Strings(bool),
    Other,
}

/// How to read one value: which `Json` variants to build, everything else being `Other`.
#[derive(Clone, Copy, PartialEq)]
enum Want {
    /// Strings, non-negative integers, lists of them: a field of a tensor entry.
    Field,
    /// Non-negative integers: an element of shape or data_offsets.
    Element,
    /// Only whether it is a string: a metadata value.
    IsStr,
    /// An object of fields: a tensor entry.
    Entry,
    /// An object of strings: `__metadata__`.
    Metadata,
}

impl<'de> serde::de::DeserializeSeed<'de> for Want {
    type Value = Json;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Want {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Other)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Other)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(match u64::try_from(v) {
            Ok(v) if matches!(self, Want::Field | Want::Element) => Json::U64(v),
            _ => Json::Other,
        })
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(if matches!(self, Want::Field | Want::Element) { Json::U64(v) } else { Json::Other })
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(match self {
            Want::Field => Json::Str(v.to_owned()),
            Want::IsStr => Json::Str(String::new()),
            _ => Json::Other,
        })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut list = (self == Want::Field).then(Vec::new);
        while let Some(element) = seq.next_element_seed(Want::Element)? {
            match (element, list.as_mut()) {
                (Json::U64(v), Some(list)) => list.push(v),
                _ => list = None,
            }
        }
        Ok(if self == Want::Field { Json::U64s(list) } else { Json::Other })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        match self {
            Want::Entry => {
                let mut entry = HeaderEntry::default();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value_seed(Want::Field)?;
                    match (key.as_str(), value) {
                        ("dtype", Json::Str(s)) => entry.dtype = Some(s),
                        ("dtype", _) => entry.dtype = None,
                        ("shape", Json::U64s(l)) => entry.shape = l,
                        ("shape", _) => entry.shape = None,
                        ("data_offsets", Json::U64s(l)) => entry.data_offsets = l,
                        ("data_offsets", _) => entry.data_offsets = None,
                        _ => {
                            entry.unknown.get_or_insert(key);
                        }
                    }
                }
                Ok(Json::Object(entry))
            }
            Want::Metadata => {
                let mut strings = true;
                while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                    strings &= matches!(map.next_value_seed(Want::IsStr)?, Json::Str(_));
                }
                Ok(Json::Strings(strings))
            }
            _ => {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Json::Other)
            }
        }
    }
}

impl<'de> serde::de::Visitor<'de> for HeaderCheck {
    type Value = Result<(), CheckpointError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut first: Option<(String, CheckpointError)> = None;
        while let Some(name) = map.next_key::<String>()? {
            let checked = if name == "__metadata__" {
                match map.next_value_seed(Want::Metadata)? {
                    Json::Strings(true) => Ok(()),
                    _ => Err(format_err("__metadata__ is not an object of strings")),
                }
            } else {
                let entry = match map.next_value_seed(Want::Entry)? {
                    Json::Object(entry) => entry,
                    _ => HeaderEntry::default(),
                };
                check_entry(&name, entry, self.payload_len)
            };
            if let Err(e) = checked {
                if first.as_ref().is_none_or(|(n, _)| name < *n) {
                    first = Some((name, e));
                }
            }
        }
        Ok(first.map_or(Ok(()), |(_, e)| Err(e)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Err(format_err("header is not a JSON object")))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(format_err("header is not a JSON object")))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(format_err("header is not a JSON object")))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(format_err("header is not a JSON object")))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(format_err("header is not a JSON object")))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(format_err("header is not a JSON object")))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(format_err("header is not a JSON object")))
    }
}

// ---------------------------------------------------------------------------------------------
// Native file I/O: atomic save, bounded load

#[cfg(not(target_arch = "wasm32"))]
pub use native::{load, pause_point, remove_stale_temporaries, save, write_atomic, write_pausable, PAUSE_ENV};

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::fs::{self, File, OpenOptions};
    use std::io::{self, Read, Write};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    use super::{check_header_len, decode, encode, format_err, Checkpoint, CheckpointError, LEN_PREFIX};

    fn io_err(action: &'static str, path: &Path, source: io::Error) -> CheckpointError {
        CheckpointError::Io { action, path: path.to_path_buf(), source }
    }

    fn in_file(path: &Path, source: CheckpointError) -> CheckpointError {
        CheckpointError::InFile { path: path.to_path_buf(), source: Box::new(source) }
    }

    /// Encodes `ckpt` and writes it to `path` atomically (see `write_atomic`): on any error the
    /// previous file at `path`, if any, is left as it was. A checkpoint holding NaN or an
    /// infinity is refused (`check_finite`), so it never replaces a loadable one.
    pub fn save(path: impl AsRef<Path>, ckpt: &Checkpoint) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        ckpt.check_finite().map_err(|e| in_file(path, e))?;
        let bytes = encode(ckpt).map_err(|e| in_file(path, e))?;
        let point = file_point(path, "mid-write");
        write_atomic(path, |file| write_pausable(file, &bytes, &point))
    }

    /// Reads and decodes the checkpoint at `path` and refuses one holding NaN or an infinity
    /// (`check_finite`). The header length is checked against the file size and
    /// `MAX_HEADER_BYTES` before the file is read; errors name `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint, CheckpointError> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| io_err("cannot open", path, e))?;
        let len = file.metadata().map_err(|e| io_err("cannot stat", path, e))?.len();
        if len < LEN_PREFIX as u64 {
            let msg = format!("truncated: {len} bytes, shorter than the {LEN_PREFIX}-byte header length");
            return Err(in_file(path, format_err(msg)));
        }
        let mut prefix = [0u8; LEN_PREFIX];
        file.read_exact(&mut prefix).map_err(|e| io_err("cannot read", path, e))?;
        check_header_len(u64::from_le_bytes(prefix), len - LEN_PREFIX as u64).map_err(|e| in_file(path, e))?;

        let too_big = || io_err("cannot load", path, io::Error::new(io::ErrorKind::OutOfMemory, "file too large"));
        let capacity = usize::try_from(len).map_err(|_| too_big())?;
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(capacity).map_err(|_| too_big())?;
        bytes.extend_from_slice(&prefix);
        // `take` bounds the read even if the file grows meanwhile.
        file.take(len - LEN_PREFIX as u64).read_to_end(&mut bytes).map_err(|e| io_err("cannot read", path, e))?;
        if bytes.len() as u64 != len {
            let msg = format!("file shrank from {len} to {} bytes while being read", bytes.len());
            return Err(in_file(path, format_err(msg)));
        }
        let ckpt = decode(&bytes).map_err(|e| in_file(path, e))?;
        ckpt.check_finite().map_err(|e| in_file(path, e))?;
        Ok(ckpt)
    }

    /// The environment variable of the test hook `pause_point`.
    pub const PAUSE_ENV: &str = "CDL_TEST_PAUSE";

    /// How long a test pause lasts; the tests kill the process long before.
    const PAUSE: Duration = Duration::from_secs(120);

    /// (point, n) of `CDL_TEST_PAUSE=<point>:<n>`, read once.
    fn pause_wanted() -> Option<&'static (String, u64)> {
        static WANTED: OnceLock<Option<(String, u64)>> = OnceLock::new();
        WANTED
            .get_or_init(|| {
                let v = std::env::var(PAUSE_ENV).ok()?;
                let (point, n) = v.rsplit_once(':')?;
                Some((point.to_string(), n.parse().ok()?))
            })
            .as_ref()
    }

    /// Test hook for the tests that SIGKILL `cdl train` at exact moments (tests/native/cli_sigkill.rs).
    /// With `CDL_TEST_PAUSE=<point>:<n>` in the environment, the n-th call (from 1) with that
    /// `point` prints `cdl-test-pause <point> <n>` on stderr and sleeps two minutes before going
    /// on; without it, nothing happens. Points: `<file name>/mid-write` (half of a checkpoint
    /// written to its temporary file), `<file name>/before-rename` and `<file name>/after-rename`
    /// (`write_atomic`), and those of `cdl train` (`metrics.jsonl/mid-line`, half a metrics line
    /// written; `metrics.jsonl/after-line`).
    pub fn pause_point(point: &str) {
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let Some((wanted, n)) = pause_wanted() else { return };
        if wanted == point && CALLS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("cdl-test-pause {point} {n}");
            std::thread::sleep(PAUSE);
        }
    }

    /// Writes `bytes` with one `write_all`, or, while `CDL_TEST_PAUSE` names `point`, in two
    /// halves with `pause_point(point)` between them (a torn write for the kill tests).
    pub fn write_pausable(out: &mut impl Write, bytes: &[u8], point: &str) -> io::Result<()> {
        if pause_wanted().is_none_or(|(wanted, _)| wanted != point) {
            return out.write_all(bytes);
        }
        let (head, tail) = bytes.split_at(bytes.len() / 2);
        out.write_all(head)?;
        out.flush()?;
        pause_point(point);
        out.write_all(tail)
    }

    /// The pause point `<file name of path>/<stage>`.
    fn file_point(path: &Path, stage: &str) -> String {
        format!("{}/{stage}", path.file_name().unwrap_or_default().to_string_lossy())
    }

    /// Distinguishes temporary files of concurrent saves within one process.
    static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

    /// Removes the temporary file on every early return (and on a panic in `write`).
    struct TempGuard {
        path: PathBuf,
        armed: bool,
    }

    impl Drop for TempGuard {
        fn drop(&mut self) {
            if self.armed {
                let _ = fs::remove_file(&self.path);
            }
        }
    }

    /// `.<name>.tmp-`: how the temporary files of `write_atomic` for `name` begin.
    fn temp_prefix(name: &std::ffi::OsStr) -> std::ffi::OsString {
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(name);
        prefix.push(".tmp-");
        prefix
    }

    /// Removes the temporary files that `write_atomic(path, …)` calls of killed processes left
    /// beside `path`. Call it only while no other process writes `path`.
    pub fn remove_stale_temporaries(path: &Path) {
        let (Some(name), Some(dir)) = (path.file_name(), path.parent()) else { return };
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let prefix = temp_prefix(name);
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            if entry.file_name().as_encoded_bytes().starts_with(prefix.as_encoded_bytes()) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Replaces `path` atomically with what `write` writes: a new temporary file in the same
    /// directory (`.<name>.tmp-<pid>-<n>`), `write`, fsync, rename over `path`, fsync of the
    /// directory (Unix). On any error the temporary file is removed and `path` keeps its previous
    /// contents; the error names `path`.
    pub fn write_atomic(
        path: impl AsRef<Path>,
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        let file_name = path.file_name().ok_or_else(|| {
            io_err("cannot write", path, io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))
        })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };

        let mut attempts = 0;
        let (temp_path, mut file) = loop {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut temp_name = temp_prefix(file_name);
            temp_name.push(format!("{}-{n}", std::process::id()));
            let temp_path = dir.join(temp_name);
            match OpenOptions::new().write(true).create_new(true).open(&temp_path) {
                Ok(file) => break (temp_path, file),
                // A stale file of an earlier process with the same pid: try the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => attempts += 1,
                Err(e) => return Err(io_err("cannot create a temporary file to write", path, e)),
            }
        };
        let mut guard = TempGuard { path: temp_path.clone(), armed: true };

        write(&mut file).map_err(|e| io_err("cannot write", path, e))?;
        file.sync_all().map_err(|e| io_err("cannot sync", path, e))?;
        drop(file);
        if pause_wanted().is_some() {
            pause_point(&file_point(path, "before-rename"));
        }
        fs::rename(&temp_path, path).map_err(|e| io_err("cannot move the temporary file onto", path, e))?;
        guard.armed = false;
        if pause_wanted().is_some() {
            pause_point(&file_point(path, "after-rename"));
        }
        sync_dir(dir).map_err(|e| io_err("cannot sync the directory of", path, e))
    }

    /// Makes the rename durable. Directories cannot be opened for syncing outside Unix.
    fn sync_dir(dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        File::open(dir)?.sync_all()?;
        #[cfg(not(unix))]
        let _ = dir;
        Ok(())
    }
}
