//! One 2-D model of the demo: a `train::run::Run` of the MLP and what the page shows of it (the
//! loss history, the samples, their MMD, the density map). Its checkpoints are the CLI's
//! (`Run::checkpoint`): `cdl train` output opens here and `cdl sample` reads the page's downloads.

use std::rc::Rc;

use super::preview::Curve;
use super::runtime::LossLog;
use crate::gpu::Gpu;
use crate::model::MlpConfig;
use crate::train::checkpoint::Checkpoint;
use crate::train::recipe::LossKind;
use crate::train::run::{NetConfig, Run, RunConfig, Trained, TrainingData};

/// Most steps one `train` call runs.
pub const CHUNK_MAX: usize = 64;
/// Points generated for a built-in data set.
pub const TOY_POINTS: usize = crate::train::data::PAGE_TOY_POINTS;

/// The page's run settings before its controls and URL change them: `cdl train`'s, with a
/// narrower MLP (width 64, as the shipped weights) and the page's smaller data sets.
pub fn default_config() -> RunConfig {
    RunConfig { width: 64, toy_points: TOY_POINTS as u64, ..RunConfig::default() }
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
    pub run: Run,
    /// Losses of every step trained here (since the model was built or loaded).
    pub log: LossLog,
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
    /// How long the last map took to compute, in ms, and when it was done (`dom::now_ms`).
    pub heat_ms: Option<f64>,
    pub heat_at: f64,
    /// The α points of the map's estimator (fewer while training), and whether the map is the
    /// shipped file's (computed by `cdl export` from the same weights).
    pub heat_points: usize,
    pub heat_shipped: bool,
    /// The step of the weights and the α points of the last map computed (or tried).
    pub heat_tried: Option<(u64, usize)>,
    /// The samples, MMD and map shown are a shipped file's preview, not yet drawn here.
    pub preview: bool,
    /// The training curve of the run that wrote the loaded weights (a shipped file's `curve`).
    pub curve: Option<Rc<Curve>>,
}

impl ToyModel {
    fn showing(run: Run) -> Self {
        Self {
            run,
            log: LossLog::default(),
            samples: Vec::new(),
            samples_step: None,
            samples_version: 0,
            mmd: None,
            passes: 0,
            heat: None,
            heat_ms: None,
            heat_at: 0.0,
            heat_points: 0,
            heat_shipped: false,
            heat_tried: None,
            preview: false,
            curve: None,
        }
    }

    /// A fresh model of `config` whose MLP reads `emb_dim` noise features, on `data`.
    pub async fn new(gpu: &Gpu, config: RunConfig, emb_dim: usize, data: Rc<TrainingData>) -> Result<Self, String> {
        let mlp = MlpConfig {
            dim: 2,
            width: config.width as usize,
            blocks: config.blocks as usize,
            emb_dim,
            precond: config.precond(),
        };
        let run = Run::with_net(gpu, config, NetConfig::Mlp(mlp), data).await.map_err(|e| e.to_string())?;
        Ok(Self::showing(run))
    }

    /// The model of `trained` (its network, run settings and state; `base`'s settings for a
    /// checkpoint that stores none), trained on `data` from here on.
    pub async fn from_checkpoint(
        gpu: &Gpu,
        base: &RunConfig,
        trained: &Trained,
        data: Rc<TrainingData>,
    ) -> Result<Self, String> {
        match trained.net().map_err(|e| e.to_string())? {
            NetConfig::Mlp(c) if c.dim == 2 => {}
            NetConfig::Mlp(c) => return Err(format!("the model is {}-dimensional; toy mode draws 2-D points", c.dim)),
            NetConfig::UNet(_) => return Err("this is a \"unet\" checkpoint; toy mode needs an \"mlp\" one".into()),
        }
        let stored = trained.meta.run.clone().unwrap_or_else(|| base.clone());
        let config = RunConfig { toy_points: base.toy_points, ..stored };
        let run = Run::resume(gpu, config, trained, data).await.map_err(|e| e.to_string())?;
        Ok(Self::showing(run))
    }

    pub fn label(&self) -> &'static str {
        loss_label(self.run.config().loss)
    }

    pub fn step(&self) -> u64 {
        self.run.step()
    }

    /// Runs `n` steps (at most `CHUNK_MAX`) and records their losses.
    pub async fn train(&mut self, gpu: &Gpu, n: usize) -> Result<(), String> {
        let stats = self.run.train_chunk(gpu, n.min(CHUNK_MAX)).await.map_err(|e| e.to_string())?;
        self.log.record(&stats);
        Ok(())
    }

    /// The whole state as a checkpoint with the run's metadata.
    pub async fn checkpoint(&self, gpu: &Gpu) -> Result<Checkpoint, String> {
        self.run.checkpoint(gpu).await.map_err(|e| e.to_string())
    }
}
