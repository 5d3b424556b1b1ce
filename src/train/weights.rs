//! Model parameters in checkpoints: a model's flat parameter values stored as named tensors
//! under a prefix (`model.`, `ema.`, `optim.m.`, `optim.v.`; see `checkpoint`), and read back
//! into the flat layout after checking the architecture and every name and shape.

use super::checkpoint::{Checkpoint, CheckpointError};
use crate::nn::ParamLayout;

/// Adds every tensor of `layout` from the flat buffer `flat` under `prefix`. flat: (flat_len,)
pub fn insert_params(
    ckpt: &mut Checkpoint,
    prefix: &str,
    layout: &ParamLayout,
    flat: &[f32],
) -> Result<(), CheckpointError> {
    if flat.len() < layout.flat_len() {
        return Err(CheckpointError::Invalid(format!(
            "{} parameter values for a layout of {}",
            flat.len(),
            layout.flat_len()
        )));
    }
    for (name, shape, data) in layout.split(flat) {
        ckpt.insert(format!("{prefix}{name}"), shape, data)?;
    }
    Ok(())
}

/// The flat values of `layout` from the tensors under `prefix`. The checkpoint must be of
/// architecture `arch` and hold exactly the layout's tensors under that prefix; otherwise the
/// one-line error names the first mismatch (other prefixes are not looked at).
pub fn read_params(
    ckpt: &Checkpoint,
    arch: &str,
    prefix: &str,
    layout: &ParamLayout,
) -> Result<Vec<f32>, CheckpointError> {
    if ckpt.arch != arch {
        return Err(CheckpointError::Incompatible(format!("architecture is {:?}, expected {arch:?}", ckpt.arch)));
    }
    let shapes = layout.shapes();
    for (name, shape) in &shapes {
        let full = format!("{prefix}{name}");
        match ckpt.get(&full) {
            None => {
                return Err(CheckpointError::Incompatible(format!(
                    "missing tensor {full:?} (expected shape {shape:?})"
                )))
            }
            Some(t) if &t.shape != shape => {
                return Err(CheckpointError::Incompatible(format!(
                    "tensor {full:?} has shape {:?}, expected {shape:?}",
                    t.shape
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(t) =
        ckpt.tensors().iter().find(|t| t.name.strip_prefix(prefix).is_some_and(|n| !shapes.iter().any(|(s, _)| s == n)))
    {
        return Err(CheckpointError::Incompatible(format!("unexpected tensor {:?} (shape {:?})", t.name, t.shape)));
    }
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = shapes
        .iter()
        .filter_map(|(name, _)| {
            ckpt.get(&format!("{prefix}{name}")).map(|t| (name.clone(), t.shape.clone(), t.data.clone()))
        })
        .collect();
    layout.join(&tensors).map_err(|e| CheckpointError::Incompatible(e.to_string()))
}
