//! Evaluation: sample-quality metrics (MMD, sliced Wasserstein, NLL, Fréchet distance, KID) and
//! pictures, as pure host computations that compile for wasm32 (but for what runs on the device:
//! the trained network as a denoiser, the samplers, and the FID Inception-v3 features from
//! user-supplied weights: `denoiser`, `gpu_sampler`, `inception`); only `plot::save_png` and
//! `npz::{save_stats, load_stats}` touch the file system, natively; `figure` (titled figures with
//! axes, through plotters) is native only. Not here: Inception weights themselves (the user
//! converts pytorch-fid's, math.md §9 pitfall 16).

use std::fmt;
use std::path::PathBuf;

use crate::text::OneLine;

pub mod denoiser;
pub mod density;
pub mod fd;
pub mod feature_stats;
#[cfg(not(target_arch = "wasm32"))]
pub mod figure;
pub mod gpu_sampler;
pub mod inception;
pub mod kid;
pub mod linalg;
pub mod mmd;
pub mod nll;
pub mod npz;
pub mod plot;
pub mod stats;
pub mod swd;

// ---------------------------------------------------------------------------------------------
// Errors

/// Why an evaluation could not run or a picture could not be encoded or saved: the one-line
/// error of `mmd`, `swd` and `plot` (`nll` uses `DiffusionError`).
#[derive(Debug)]
pub enum EvalError {
    /// Inconsistent shapes: zero dimension, a length that is not a multiple of it, a grid or tile
    /// size that does not match the data.
    Shape(String),
    /// An argument outside its domain (bandwidth, number of directions, picture size).
    Invalid(String),
    /// A point set has fewer points than the metric needs (`what` names the argument).
    TooFew { what: &'static str, n: usize, need: usize },
    /// An input holds NaN or ±∞ at flat index `index`.
    NonFinite { what: &'static str, index: usize, value: f64 },
    /// PNG encoding failed.
    Encode(String),
    /// A figure could not be drawn (the plotting library's message).
    Draw(String),
    /// An `.npz`/`.npy` that cannot be read or written; the message says which array and why.
    Format(String),
    /// A file-system operation failed; `action` reads like "cannot write".
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape(m) => write!(f, "shape mismatch: {}", OneLine(m)),
            Self::Invalid(m) => write!(f, "invalid argument: {}", OneLine(m)),
            Self::TooFew { what, n, need } => write!(f, "{what} has {n} points, at least {need} needed"),
            Self::NonFinite { what, index, value } => {
                write!(f, "{what} holds a non-finite value {value} at index {index}")
            }
            Self::Encode(m) => write!(f, "cannot encode PNG: {}", OneLine(m)),
            Self::Draw(m) => write!(f, "cannot draw the figure: {}", OneLine(m)),
            Self::Format(m) => write!(f, "{}", OneLine(m)),
            Self::Io { action, path, source } => {
                write!(f, "{action} {}: {}", OneLine(&path.display().to_string()), OneLine(&source.to_string()))
            }
        }
    }
}

impl std::error::Error for EvalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Writes `bytes` to `path` atomically (`train::checkpoint::write_atomic`: temporary file,
/// fsync, rename): on error `path` keeps its previous contents and the error names it.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn write_file_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<(), EvalError> {
    use crate::train::checkpoint::{write_atomic, CheckpointError};
    use std::io::Write;
    write_atomic(path, |f| f.write_all(bytes)).map_err(|e| match e {
        CheckpointError::Io { action, path, source } => EvalError::Io { action, path, source },
        other => EvalError::Io {
            action: "cannot write",
            path: path.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Shared guards

/// Checks a point set (n, dim) and returns n: dim > 0, length a multiple of dim, at least `need`
/// points, every value finite. Point sets are flat row-major slices: (n, d) with d = `dim`,
/// element (i, j) at `i·dim + j`.
pub(crate) fn check_points(what: &'static str, x: &[f64], dim: usize, need: usize) -> Result<usize, EvalError> {
    if dim == 0 {
        return Err(EvalError::Shape("dimension 0".into()));
    }
    if !x.len().is_multiple_of(dim) {
        return Err(EvalError::Shape(format!("{what} has {} values, not a multiple of dimension {dim}", x.len())));
    }
    let n = x.len() / dim;
    if n < need {
        return Err(EvalError::TooFew { what, n, need });
    }
    if let Some(index) = x.iter().position(|v| !v.is_finite()) {
        return Err(EvalError::NonFinite { what, index, value: x[index] });
    }
    Ok(n)
}

/// f32 points widened to f64 (exact). x: (n·dim,)
pub(crate) fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}
