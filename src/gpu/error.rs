//! GPU errors, each rendered as one line that says what to do.

use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum GpuError {
    /// No adapter at all.
    NoAdapter,
    /// `CDL_ADAPTER` / `--adapter` matched nothing.
    AdapterNotFound { want: String, available: Vec<String> },
    /// The adapter refused the device request.
    Device(String),
    /// A shader or pipeline failed validation.
    Pipeline { key: String, message: String },
    /// A buffer larger than the device allows.
    TooLarge { what: String, bytes: u64, limit: u64 },
    /// Shapes that do not fit the op.
    Shape(String),
    /// A readback failed (device lost, or a mapping error).
    Readback(String),
    /// `CDL_VARIANT`, the page's `?variant` or `Gpu::set_variant` named an op family or a variant that does not exist.
    Variant { op: String, variant: String, available: String },
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuError::NoAdapter if cfg!(target_arch = "wasm32") => write!(
                f,
                "no WebGPU adapter: use a browser with WebGPU enabled (Chrome/Edge 113+, or \
                 Chromium with --enable-unsafe-webgpu; Firefox Nightly with dom.webgpu.enabled)"
            ),
            GpuError::NoAdapter => write!(
                f,
                "no GPU adapter found: install a Vulkan driver (on Debian/Ubuntu without a GPU: \
                 `sudo apt-get install mesa-vulkan-drivers` for Mesa's software lavapipe)"
            ),
            GpuError::AdapterNotFound { want, available } => {
                write!(f, "no adapter matches {want:?}; available: {}", available.join(", "))
            }
            GpuError::Device(e) => write!(f, "GPU device error: {e}"),
            GpuError::Pipeline { key, message } => write!(f, "pipeline {key} failed validation: {message}"),
            GpuError::TooLarge { what, bytes, limit } => {
                write!(f, "{what} needs a {bytes}-byte buffer, over this adapter's {limit}-byte storage binding limit")
            }
            GpuError::Shape(e) => write!(f, "bad shape: {e}"),
            GpuError::Readback(e) => write!(f, "reading GPU results failed: {e}"),
            GpuError::Variant { op, variant, available } => {
                write!(f, "no kernel variant {op:?}:{variant:?}; available: {available}")
            }
        }
    }
}

impl std::error::Error for GpuError {}
