//! The trained network as a `BatchDenoiser`: ε̂(z, α) for any number of rows, evaluated on the
//! GPU in chunks of the rows the model is bound to (forward pass only), with the noise input
//! c_noise = α/8 the trainer used (`train::trainer::noise_input`).
//!
//! What it is not: a sampler (see `diffusion::sampler`) or a metric.

use crate::diffusion::sampler::{check_batch, BatchDenoiser, EvalFuture};
use crate::diffusion::DiffusionError;
use crate::gpu::{Dispatch, Gpu, GpuError};
use crate::model::{self, Net};
use crate::train::checkpoint::{Checkpoint, EMA_PREFIX, MODEL_PREFIX};
use crate::train::trainer::{noise_input, TrainError, Trainer};
use crate::train::weights::read_params;

/// A model bound to `rows` rows, holding fixed weights.
pub struct GpuDenoiser<'g> {
    gpu: &'g Gpu,
    net: Box<dyn Net>,
    z: Vec<f32>,
    t: Vec<f32>,
}

impl std::fmt::Debug for GpuDenoiser<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuDenoiser({} model, {} rows)", self.net.arch(), self.net.rows())
    }
}

impl<'g> GpuDenoiser<'g> {
    /// Wraps a model whose weights are already loaded.
    pub fn new(gpu: &'g Gpu, net: Box<dyn Net>) -> Self {
        Self { gpu, net, z: Vec::new(), t: Vec::new() }
    }

    /// The model of a checkpoint with its EMA weights (`use_ema`, when present) or its trained
    /// weights, bound to `rows` rows per evaluation chunk.
    pub async fn from_checkpoint(
        gpu: &'g Gpu,
        ck: &Checkpoint,
        rows: usize,
        use_ema: bool,
    ) -> Result<Self, TrainError> {
        let net = model::build(gpu, &ck.arch, &ck.model_config, rows, 0).await?;
        let layout = &net.params().layout;
        let has_ema = ck.tensors().iter().any(|t| t.name.starts_with(EMA_PREFIX));
        let prefix = if use_ema && has_ema { EMA_PREFIX } else { MODEL_PREFIX };
        let flat = read_params(ck, &ck.arch, prefix, layout)?;
        gpu.write(&net.params().value, &flat);
        Ok(Self::new(gpu, net))
    }

    /// The trainer's model with its current EMA weights (copied on the device), bound to `rows`.
    pub async fn from_trainer(gpu: &'g Gpu, trainer: &Trainer, rows: usize) -> Result<Self, TrainError> {
        let src = trainer.net();
        let net = model::build(gpu, src.arch(), &src.config_json(), rows, 0).await?;
        gpu.copy(trainer.ema(), &net.params().value);
        Ok(Self::new(gpu, net))
    }

    /// The device the model lives on.
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// The model.
    pub fn net(&self) -> &dyn Net {
        self.net.as_ref()
    }

    async fn eval(&mut self, z: &[f64], alpha: &[f64], out: &mut [f64]) -> Result<(), GpuError> {
        let (d, rows) = (self.net.row_len(), self.net.rows());
        let fwd: Vec<&Dispatch> = self.net.dispatches().0.iter().collect();
        for ((zc, ac), oc) in z.chunks(rows * d).zip(alpha.chunks(rows)).zip(out.chunks_mut(rows * d)) {
            self.z.clear();
            self.z.extend(zc.iter().map(|&v| v as f32));
            self.t.clear();
            self.t.extend(ac.iter().map(|&a| noise_input(a)));
            self.gpu.write(self.net.input(), &self.z);
            self.gpu.write(self.net.noise_input(), &self.t);
            self.gpu.run(&fwd);
            let got = self.gpu.read(&self.net.output().view(0, zc.len())?).await?;
            for (o, g) in oc.iter_mut().zip(&got) {
                *o = f64::from(*g);
            }
        }
        Ok(())
    }
}

impl BatchDenoiser for GpuDenoiser<'_> {
    fn dim(&self) -> usize {
        self.net.row_len()
    }

    fn eps_batch<'a>(&'a mut self, z: &'a [f64], alpha: &'a [f64], out: &'a mut [f64]) -> EvalFuture<'a> {
        Box::pin(async move {
            check_batch(self.net.row_len(), z, alpha, out)?;
            self.eval(z, alpha, out).await.map_err(|e| DiffusionError::Denoiser(e.to_string()))
        })
    }
}
