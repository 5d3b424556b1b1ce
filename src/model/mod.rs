//! Models: the 2-D toy denoiser `Mlp` and the compact UNet. A model owns its parameters,
//! its activation buffers for one batch size and the prepared dispatches of its forward and
//! backward, all created once; a step only encodes them.

pub mod mlp;
pub mod unet;

pub use mlp::{Mlp, MlpConfig, Precond};
pub use unet::{UNet, UNetConfig};

use crate::gpu::{Buffer, Dispatch, Gpu, GpuError};
use crate::nn::Params;

/// What a training loop or a sampler needs of a denoiser bound to R rows: the ε-prediction
/// ε̂(input, t) of every row, t the noise input (c_noise = α/8, math.md §8), and its backward.
pub trait Net {
    /// Architecture name stored in checkpoints ("mlp", "unet").
    fn arch(&self) -> &'static str;
    /// The model config as checkpoint text (JSON).
    fn config_json(&self) -> String;
    /// R, the rows the model is bound to.
    fn rows(&self) -> usize;
    /// Elements of one row (D, or C·H·W).
    fn row_len(&self) -> usize;
    /// Parameters (values and gradients, flat).
    fn params(&self) -> &Params;
    /// Inputs. (R, row_len)
    fn input(&self) -> &Buffer;
    /// Noise input of each row. (R,)
    fn noise_input(&self) -> &Buffer;
    /// ε predictions. (R, row_len)
    fn output(&self) -> &Buffer;
    /// Upstream gradient of `output`, read by the backward pass. (R, row_len)
    fn output_grad(&self) -> &Buffer;
    /// Class count of a conditional model (0: unconditional).
    fn num_classes(&self) -> usize {
        0
    }
    /// Writes the class label of every row (conditional models only). labels: (R,)
    fn write_labels(&self, gpu: &Gpu, labels: &[u32]) -> Result<(), GpuError> {
        let _ = (gpu, labels);
        Err(GpuError::Shape(format!("the {} model is not class-conditional", self.arch())))
    }
    /// The prepared forward and backward dispatches, in encoding order.
    fn dispatches(&self) -> (&[Dispatch], &[Dispatch]);
    /// Bytes of device memory the model allocated (parameters, gradients, activations).
    fn memory_bytes(&self) -> u64;
}

/// The `Net` methods that read the fields both models have under the same names: `cfg`,
/// `batch`, `params` and the buffers `x`, `t`, `out`, `dout`.
macro_rules! net_fields {
    () => {
        fn config_json(&self) -> String {
            self.cfg.to_json()
        }
        fn rows(&self) -> usize {
            self.batch
        }
        fn params(&self) -> &Params {
            &self.params
        }
        fn input(&self) -> &Buffer {
            &self.x
        }
        fn noise_input(&self) -> &Buffer {
            &self.t
        }
        fn output(&self) -> &Buffer {
            &self.out
        }
        fn output_grad(&self) -> &Buffer {
            &self.dout
        }
    };
}

impl Net for Mlp {
    net_fields!();
    fn arch(&self) -> &'static str {
        MlpConfig::ARCH
    }
    fn row_len(&self) -> usize {
        self.cfg.dim
    }
    fn dispatches(&self) -> (&[Dispatch], &[Dispatch]) {
        Mlp::dispatches(self)
    }
    fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }
}

impl Net for UNet {
    net_fields!();
    fn arch(&self) -> &'static str {
        UNetConfig::ARCH
    }
    fn row_len(&self) -> usize {
        self.cfg.in_channels * self.cfg.image_size * self.cfg.image_size
    }
    fn num_classes(&self) -> usize {
        self.cfg.num_classes
    }
    fn write_labels(&self, gpu: &Gpu, labels: &[u32]) -> Result<(), GpuError> {
        UNet::write_labels(self, gpu, labels)
    }
    fn dispatches(&self) -> (&[Dispatch], &[Dispatch]) {
        UNet::dispatches(self)
    }
    fn memory_bytes(&self) -> u64 {
        UNet::memory_bytes(self) as u64
    }
}

/// A model config as checkpoint text: `v` plus `precond`, which an "eps" network leaves out (as
/// configs written before the option existed do, so those checkpoints still match).
pub(crate) fn config_text(mut v: serde_json::Value, precond: Precond) -> String {
    if precond != Precond::Eps {
        v["precond"] = precond.name().into();
    }
    v.to_string()
}

/// A model config's JSON object (`config_text`), read field by field; errors name the model
/// (`what`) and the missing or invalid field.
pub(crate) struct ConfigJson {
    what: &'static str,
    v: serde_json::Value,
}

impl ConfigJson {
    pub(crate) fn parse(what: &'static str, text: &str) -> Result<Self, String> {
        let v = serde_json::from_str(text).map_err(|e| format!("{what} config is not JSON: {e}"))?;
        Ok(Self { what, v })
    }

    /// A non-negative integer field.
    pub(crate) fn usize(&self, name: &str) -> Result<usize, String> {
        self.v
            .get(name)
            .and_then(serde_json::Value::as_u64)
            .map(|n| n as usize)
            .ok_or_else(|| format!("{} config has no non-negative integer {name:?}", self.what))
    }

    /// `usize(name)`, or `default` where the field is missing (written before it existed).
    pub(crate) fn usize_or(&self, name: &str, default: usize) -> Result<usize, String> {
        if self.v.get(name).is_none() {
            Ok(default)
        } else {
            self.usize(name)
        }
    }

    /// A list of non-negative integers.
    pub(crate) fn list(&self, name: &str) -> Result<Vec<usize>, String> {
        self.v
            .get(name)
            .and_then(serde_json::Value::as_array)
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| format!("{} config has no list of non-negative integers {name:?}", self.what))
    }

    /// `precond`, "eps" where missing (written before the field existed).
    pub(crate) fn precond(&self) -> Result<Precond, String> {
        match self.v.get("precond") {
            None => Ok(Precond::Eps),
            Some(p) => {
                let name =
                    p.as_str().ok_or_else(|| format!("{} config field \"precond\" is not a string", self.what))?;
                Precond::parse(name)
            }
        }
    }
}

/// Submits a model's forward pass and, when `backward` is given, the zeroing of its gradients
/// and its backward pass, in one command buffer (dispatches in one compute pass: WebGPU orders
/// their storage accesses).
pub fn submit(gpu: &Gpu, params: &Params, forward: &[Dispatch], backward: Option<&[Dispatch]>) {
    let mut rec = gpu.recorder();
    if backward.is_some() {
        params.zero_grad(&mut rec);
    }
    rec.dispatches(forward.iter().chain(backward.unwrap_or_default()));
    rec.submit();
}

/// Builds the model a checkpoint names (`arch`, and its config JSON) bound to `rows` rows, with
/// parameters initialised from `seed` (load weights afterwards).
pub async fn build(gpu: &Gpu, arch: &str, config_json: &str, rows: usize, seed: u64) -> Result<Box<dyn Net>, GpuError> {
    match arch {
        MlpConfig::ARCH => {
            let cfg = MlpConfig::from_json(config_json).map_err(GpuError::Shape)?;
            Ok(Box::new(Mlp::new(gpu, cfg, rows, seed).await?))
        }
        UNetConfig::ARCH => {
            let cfg = UNetConfig::from_json(config_json).map_err(GpuError::Shape)?;
            Ok(Box::new(UNet::new(gpu, cfg, rows, seed).await?))
        }
        other => Err(GpuError::Shape(format!("unknown model architecture {other:?} (expected \"mlp\" or \"unet\")"))),
    }
}
