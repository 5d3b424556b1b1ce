//! One 2-D model of the demo: the MLP, its trainer and batch order, the loss history the page
//! plots and the samples it draws. Built from the page's settings or from a checkpoint (the
//! CLI's format: `cdl train` output opens here and the page's downloads resume with `cdl train
//! --resume`).

use serde_json::{json, Value};

use super::runtime::LossLog;
use crate::diffusion::loss::CdlNorm;
use crate::gpu::Gpu;
use crate::model::{Mlp, MlpConfig, Precond};
use crate::train::checkpoint::Checkpoint;
use crate::train::data::{data_seed, Batcher, Points, Standardization};
use crate::train::recipe::{loss_config, CdlKnobs, LossKind};
use crate::train::trainer::AdamConfig;
use crate::train::trainer::{StepStats, TrainConfig, Trainer};

/// Most steps one `train` call runs (the trainer's log slots).
pub const CHUNK_MAX: usize = 64;
/// Checkpoint metadata keys, as `cdl train` writes them.
pub const KEY_RUN: &str = "run.config";
pub const KEY_DATA_MEAN: &str = "data.mean";
pub const KEY_DATA_STD: &str = "data.std";
pub const KEY_DATA_SOURCE: &str = "data.source";

/// What defines a toy run (the page's controls and URL parameters).
#[derive(Clone, Debug, PartialEq)]
pub struct ToySettings {
    pub loss: LossKind,
    pub knobs: CdlKnobs,
    /// MLP hidden width.
    pub width: usize,
    /// MLP residual blocks.
    pub blocks: usize,
    /// Sinusoidal features of the noise input (the CLI uses 128).
    pub emb_dim: usize,
    /// How the MLP's output becomes ε̂: EDM's preconditioning, as `cdl train` and the shipped
    /// weights; a loaded checkpoint brings its own.
    pub precond: Precond,
    /// Examples per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Seed of the init, the batch order and the noise.
    pub seed: u64,
}

impl Default for ToySettings {
    fn default() -> Self {
        Self {
            loss: LossKind::Cdl,
            knobs: CdlKnobs { points: 32, ..CdlKnobs::default() },
            width: 64,
            blocks: 2,
            emb_dim: 128,
            precond: Precond::Edm,
            batch: 128,
            lr: 1e-3,
            seed: 0,
        }
    }
}

impl ToySettings {
    /// The run config as `cdl train` stores it (`run.config`), so the CLI can resume the file.
    pub fn run_config(&self, data: &str) -> Value {
        json!({
            "data": data, "loss": self.loss.name(), "batch": self.batch, "lr": self.lr,
            "warmup": 100, "ema": 0.999, "clip": 0.0, "seed": self.seed,
            "anchors": self.knobs.anchors, "points": self.knobs.points, "lambda_cdl": self.knobs.lambda,
            "independent_draws": !self.knobs.paired,
            "cdl_norm": if self.knobs.norm == CdlNorm::MeanOverAnchors { "anchors" } else { "batch" },
            "width": self.width, "blocks": self.blocks, "precond": self.precond.name(), "toy_points": 100_000,
            "log_every": 100,
        })
    }

    /// Settings read back from a checkpoint's `run.config` and model config; fields it lacks
    /// keep their values in `self`.
    pub fn with_checkpoint(&self, ck: &Checkpoint) -> Result<Self, String> {
        if ck.arch != MlpConfig::ARCH {
            return Err(format!("this is a {:?} checkpoint; toy mode needs an \"mlp\" one", ck.arch));
        }
        let mlp = MlpConfig::from_json(&ck.model_config)?;
        if mlp.dim != 2 {
            return Err(format!("the model is {}-dimensional; toy mode draws 2-D points", mlp.dim));
        }
        let mut s =
            Self { width: mlp.width, blocks: mlp.blocks, emb_dim: mlp.emb_dim, precond: mlp.precond, ..self.clone() };
        let run: Value = ck.extra.get(KEY_RUN).and_then(|t| serde_json::from_str(t).ok()).unwrap_or(Value::Null);
        let uint = |k: &str| run[k].as_u64().map(|v| v as usize);
        if let Some(l) = run["loss"].as_str() {
            s.loss = l.parse()?;
        }
        s.batch = uint("batch").unwrap_or(s.batch);
        s.knobs.anchors = uint("anchors").unwrap_or(s.knobs.anchors);
        s.knobs.points = uint("points").unwrap_or(s.knobs.points);
        s.knobs.lambda = run["lambda_cdl"].as_f64().unwrap_or(s.knobs.lambda);
        s.knobs.paired = !run["independent_draws"].as_bool().unwrap_or(!s.knobs.paired);
        if let Some(n) = run["cdl_norm"].as_str() {
            s.knobs.norm = if n == "anchors" { CdlNorm::MeanOverAnchors } else { CdlNorm::SumOverBatch };
        }
        s.lr = run["lr"].as_f64().unwrap_or(s.lr);
        s.seed = run["seed"].as_u64().unwrap_or(s.seed);
        Ok(s)
    }
}

/// The display name of a loss.
pub fn loss_label(kind: LossKind) -> &'static str {
    match kind {
        LossKind::Ddpm => "DDPM",
        LossKind::Itd => "ITD",
        LossKind::Cdl => "ITD+CDL",
        LossKind::Edm => "EDM",
        LossKind::EdmCdl => "EDM+CDL",
        LossKind::EdmVe => "EDM-VE",
        LossKind::EdmVeCdl => "EDM-VE+CDL",
        LossKind::Vp => "VP",
        LossKind::Ve => "VE",
    }
}

/// One model being trained.
pub struct ToyModel {
    pub settings: ToySettings,
    pub trainer: Trainer,
    batcher: Batcher,
    /// Losses of every step since step `history_start`.
    pub log: LossLog,
    pub history_start: u64,
    /// The samples on display, standardized units. (n, 2)
    pub samples: Vec<f64>,
    /// Step of the weights the samples come from.
    pub samples_step: Option<u64>,
    /// Bumped whenever `samples` change (tests wait on it).
    pub samples_version: u64,
    /// MMD between the samples and the data.
    pub mmd: Option<f64>,
    /// Passes of the last sampling run (the parallel sampler's Picard iterations).
    pub passes: usize,
    /// The "noise classifier's view" on a grid over the plot: log p̂(x) or the CDL logit f̂(x);
    /// (values (g, g) row 0 at the top, g, what, step).
    pub heat: Option<(Vec<f64>, usize, String, u64)>,
}

impl ToyModel {
    /// A fresh model for `points`.
    pub async fn new(gpu: &Gpu, settings: ToySettings, points: &Points) -> Result<Self, String> {
        let s = settings;
        let loss = loss_config(s.loss, &points.variances(), s.knobs).map_err(|e| e.to_string())?;
        let cfg = TrainConfig { batch: s.batch, seed: s.seed, adam: AdamConfig::adam(s.lr), ..TrainConfig::toy(loss) };
        cfg.validate().map_err(|e| e.to_string())?;
        let mlp = MlpConfig { dim: 2, width: s.width, blocks: s.blocks, emb_dim: s.emb_dim, precond: s.precond };
        let net = Mlp::new(gpu, mlp, cfg.rows(), s.seed).await.map_err(|e| e.to_string())?;
        let trainer = Trainer::new(gpu, Box::new(net), cfg, CHUNK_MAX).await.map_err(|e| e.to_string())?;
        let batcher = Batcher::new(data_seed(s.seed), points.len(), s.batch).map_err(|e| e.to_string())?;
        Ok(Self {
            settings: s,
            trainer,
            batcher,
            log: LossLog::default(),
            history_start: 0,
            samples: Vec::new(),
            samples_step: None,
            samples_version: 0,
            mmd: None,
            passes: 0,
            heat: None,
        })
    }

    /// A model restored from `ck` (its architecture and run settings, `base` for the rest).
    pub async fn from_checkpoint(
        gpu: &Gpu,
        base: &ToySettings,
        ck: &Checkpoint,
        points: &Points,
    ) -> Result<Self, String> {
        let settings = base.with_checkpoint(ck)?;
        let mut m = Self::new(gpu, settings, points).await?;
        m.trainer.restore(gpu, ck).map_err(|e| e.to_string())?;
        m.history_start = ck.step;
        Ok(m)
    }

    pub fn label(&self) -> &'static str {
        loss_label(self.settings.loss)
    }

    pub fn step(&self) -> u64 {
        self.trainer.step()
    }

    /// Runs `n` steps (at most `CHUNK_MAX`) and records their losses.
    pub async fn train(&mut self, gpu: &Gpu, points: &Points, n: usize) -> Result<Vec<StepStats>, String> {
        let batcher = &mut self.batcher;
        let stats = self
            .trainer
            .train(gpu, points, &mut |s, out| batcher.indices(s, out), n.min(CHUNK_MAX))
            .await
            .map_err(|e| e.to_string())?;
        self.log.record(&stats);
        Ok(stats)
    }

    /// The whole state as a checkpoint with the CLI's metadata.
    pub async fn checkpoint(&self, gpu: &Gpu, data: &str, st: &Standardization) -> Result<Checkpoint, String> {
        let f64s = |v: &[f64]| Value::from(v.to_vec()).to_string();
        let extra = vec![
            (KEY_RUN.to_string(), self.settings.run_config(data).to_string()),
            (KEY_DATA_MEAN.to_string(), f64s(&st.mean)),
            (KEY_DATA_STD.to_string(), f64s(&st.std)),
            (KEY_DATA_SOURCE.to_string(), data.to_string()),
        ];
        self.trainer.checkpoint(gpu, &extra).await.map_err(|e| e.to_string())
    }
}
