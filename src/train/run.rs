//! A run, assembled once from one `RunConfig`: data, network, loss (`recipe`, math.md §2–§4),
//! trainer, batch order, and the typed checkpoint metadata `RunMeta` (the only code that writes or
//! reads those keys). `cdl train` and both pages drive a `Run` in chunks (`train_chunk`, async);
//! `cdl sample`/`eval`/`experiment` read a `Trained`. Not here: sampling and metrics (`eval`),
//! run-directory files, progress output, the DOM.

use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diffusion::logistic::TruncLogistic;
use crate::diffusion::loss::{CdlNorm, LossConfig};
use crate::diffusion::sampler::SamplerConfig;
use crate::diffusion::DiffusionError;
use crate::gpu::{Gpu, GpuError};
use crate::model::{Mlp, MlpConfig, Net, Precond, UNet, UNetConfig};
use crate::text::{error_from, OneLine};
use crate::train::checkpoint::{Checkpoint, CheckpointError};
use crate::train::data::{data_seed, Batcher, DataError, Points, Standardization};
use crate::train::dist::Collective;
use crate::train::images::ImageDataError;
use crate::train::recipe::{default_q, loss_config_with, CdlKnobs, Levels, LossKind};
use crate::train::trainer::{example_variances, AdamConfig, Examples, StepStats, TrainConfig, TrainError, Trainer};

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a run cannot be assembled, stepped, saved or read back; every message is one line.
#[derive(Debug)]
pub enum RunError {
    /// A setting no run can use (the field named).
    Config(String),
    /// Checkpoint metadata this build does not read (unknown key, newer version, bad value).
    Meta(String),
    /// The training points could not be read.
    Data(DataError),
    /// The training images could not be read.
    Images(ImageDataError),
    /// The checkpoint file or its tensors.
    Checkpoint(CheckpointError),
    /// The trainer (device, loss plan, non-finite step).
    Train(TrainError),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(m) | Self::Meta(m) => write!(f, "{}", OneLine(m)),
            Self::Data(e) => write!(f, "{e}"),
            Self::Images(e) => write!(f, "{e}"),
            Self::Checkpoint(e) => write!(f, "{e}"),
            Self::Train(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RunError {}

error_from!(RunError: DataError => Data, ImageDataError => Images, CheckpointError => Checkpoint, TrainError => Train);
error_from!(RunError, via Train: GpuError, DiffusionError);

fn config_err(msg: impl Into<String>) -> RunError {
    RunError::Config(msg.into())
}

fn meta_err(msg: impl Into<String>) -> RunError {
    RunError::Meta(msg.into())
}

// ---------------------------------------------------------------------------------------------
// The run's settings

/// The network presets of `RunConfig::model`.
pub const MODELS: [&str; 4] = ["mlp", "unet-tiny", "unet-compact", "unet-small"];
/// `RunConfig::model` of a UNet given explicitly (the image page's URL), not by a preset.
pub const CUSTOM_UNET: &str = "unet-custom";

/// Everything that defines a run (what changes a step's result), as `cdl train`'s flags and config
/// files name it and as checkpoints store it (`run.config`, JSON). A key missing from a stored
/// config takes its default (files written before the key existed); an unknown key is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Training data: a built-in 2-D set, a CSV file, "shapes", CIFAR-10 or an image folder
    /// (`TrainingData::load`); a page's name for its own data.
    pub data: String,
    /// The network: a preset of `MODELS`, or `CUSTOM_UNET`.
    pub model: String,
    /// Images: a class-conditional UNet on CIFAR-10's 10 labels.
    pub classes: bool,
    /// Images: random horizontal flips.
    pub flip: bool,
    /// The loss.
    pub loss: LossKind,
    /// Examples per step, B.
    pub batch: u64,
    /// Peak learning rate (Adam).
    pub lr: f64,
    /// Linear learning-rate warm-up, in steps.
    pub warmup: u64,
    /// EMA decay of the weights (with a (1+s)/(10+s) warm-up).
    pub ema: f64,
    /// Clip of the global gradient norm; 0: none.
    pub clip: f64,
    /// Seed of the model init, the data order and every noise draw.
    pub seed: u64,
    /// CDL: anchors per step, K.
    pub anchors: u64,
    /// CDL: integration points per anchor, M.
    pub points: u64,
    /// CDL: weight λ_cdl of the contrastive term.
    pub lambda_cdl: f64,
    /// CDL: the two density terms drawn independently (the authors' code), not paired.
    pub independent_draws: bool,
    /// CDL: Σ_k ℓ_k normalised by the batch ("batch", the authors') or the anchors ("anchors").
    pub cdl_norm: String,
    /// ITD and CDL: μ of the truncated logistic of α (None: `recipe::default_q`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub levels_mu: Option<f64>,
    /// ITD and CDL: its scale s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub levels_scale: Option<f64>,
    /// ITD and CDL: its clip c, in units of s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub levels_clip: Option<f64>,
    /// EDM losses: mean of ln σ (None: EDM's −1.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edm_p_mean: Option<f64>,
    /// EDM losses: standard deviation of ln σ (None: EDM's 1.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edm_p_std: Option<f64>,
    /// MLP hidden width.
    pub width: u64,
    /// MLP residual blocks.
    pub blocks: u64,
    /// "edm" or "eps" (None: `RunConfig::precond`'s rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precond: Option<String>,
    /// Points generated for a built-in 2-D set.
    pub toy_points: u64,
    /// Steps per metrics line (and per chunk, at most 1,000) of `cdl train`.
    pub log_every: u64,
}

/// `cdl train` with no flags: the 2-D MLP on two moons with ITD + CDL (math.md §5.1's toy setting).
impl Default for RunConfig {
    fn default() -> Self {
        Self {
            data: "moons".into(),
            model: "mlp".into(),
            classes: false,
            flip: false,
            loss: LossKind::Cdl,
            batch: 128,
            lr: 1e-3,
            warmup: 100,
            ema: 0.999,
            clip: 0.0,
            seed: 0,
            anchors: 2,
            points: 32,
            lambda_cdl: 1.0,
            independent_draws: false,
            cdl_norm: "batch".into(),
            levels_mu: None,
            levels_scale: None,
            levels_clip: None,
            edm_p_mean: None,
            edm_p_std: None,
            width: 128,
            blocks: 2,
            precond: None,
            toy_points: 100_000,
            log_every: 100,
        }
    }
}

impl RunConfig {
    /// Refuses values no run can use, naming the field as config files do (`batch = 0 is out of
    /// range 1..=1000000`). The optimizer's values are checked by `TrainConfig::validate`.
    pub fn validate(&self) -> Result<(), RunError> {
        let ranges: [(&str, u64, u64, u64); 8] = [
            ("batch", self.batch, 1, 1_000_000),
            ("anchors", self.anchors, 1, 65_536),
            ("points", self.points, 1, 65_536),
            ("width", self.width, 1, 65_536),
            ("blocks", self.blocks, 0, 64),
            ("toy_points", self.toy_points, 1, 10_000_000),
            ("log_every", self.log_every, 1, 1_000_000),
            ("warmup", self.warmup, 0, u64::MAX),
        ];
        for (name, v, lo, hi) in ranges {
            if v < lo || v > hi {
                return Err(config_err(format!("{name} = {v} is out of range {lo}..={hi}")));
            }
        }
        if !["batch", "anchors"].contains(&self.cdl_norm.as_str()) {
            return Err(config_err(format!("cdl_norm = {:?}: expected \"batch\" or \"anchors\"", self.cdl_norm)));
        }
        if !MODELS.contains(&self.model.as_str()) && self.model != CUSTOM_UNET {
            return Err(config_err(format!(
                "unknown model = {:?}: expected mlp, unet-tiny, unet-compact or unet-small",
                self.model
            )));
        }
        for (name, v) in
            [("levels_scale", self.levels_scale), ("levels_clip", self.levels_clip), ("edm_p_std", self.edm_p_std)]
        {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(config_err(format!("{name} = {v} must be a positive number")));
            }
        }
        for (name, v) in [("levels_mu", self.levels_mu), ("edm_p_mean", self.edm_p_mean)] {
            if let Some(v) = v.filter(|v| !v.is_finite()) {
                return Err(config_err(format!("{name} = {v} must be a finite number")));
            }
        }
        if let Some(p) = &self.precond {
            Precond::parse(p).map_err(|e| config_err(format!("precond = {p:?}: {e}")))?;
        }
        Ok(())
    }

    /// `precond`, or the default: edm for every network and loss. With the plain ε-network a
    /// shortfall of ε̂ against x at high noise is multiplied by up to 1/sqrt(ᾱ_T) ≈ 158 along a
    /// DDPM chain; EDM's preconditioning gives ε̂ → x there by construction (and with EDM's loss
    /// it is the paper's VP/VE baseline, math.md §4.3). eps stays available as the paper's net.
    pub fn precond(&self) -> Precond {
        match self.precond.as_deref().map(Precond::parse) {
            Some(Ok(p)) => p,
            _ => Precond::Edm,
        }
    }

    /// The CDL term's knobs (math.md §3).
    pub fn knobs(&self) -> CdlKnobs {
        CdlKnobs {
            anchors: self.anchors as usize,
            points: self.points as usize,
            lambda: self.lambda_cdl,
            paired: !self.independent_draws,
            norm: if self.cdl_norm == "anchors" { CdlNorm::MeanOverAnchors } else { CdlNorm::SumOverBatch },
        }
    }

    /// The noise levels of `levels_*` and `edm_*`: a `levels_*` value replaces that parameter of
    /// the default logistic for the loss on data with `variances`.
    pub fn levels(&self, variances: &[f64]) -> Result<Levels, RunError> {
        let q = if self.levels_mu.is_some() || self.levels_scale.is_some() || self.levels_clip.is_some() {
            let d = default_q(self.loss, variances)?;
            let q = TruncLogistic {
                mu: self.levels_mu.unwrap_or(d.mu),
                s: self.levels_scale.unwrap_or(d.s),
                c: self.levels_clip.unwrap_or(d.c),
            };
            q.validate()?;
            Some(q)
        } else {
            None
        };
        let edm = (self.edm_p_mean.is_some() || self.edm_p_std.is_some())
            .then(|| (self.edm_p_mean.unwrap_or(-1.2), self.edm_p_std.unwrap_or(1.2)));
        Ok(Levels { q, edm, sigma_data: None })
    }

    /// The loss this config trains on data with per-coordinate `variances`.
    pub fn loss_config(&self, variances: &[f64]) -> Result<LossConfig, RunError> {
        Ok(loss_config_with(self.loss, variances, self.knobs(), &self.levels(variances)?)?)
    }

    /// The trainer's settings around `loss`.
    pub fn train_config(&self, loss: LossConfig) -> TrainConfig {
        TrainConfig {
            batch: self.batch as usize,
            seed: self.seed,
            adam: AdamConfig::adam(self.lr),
            warmup_steps: self.warmup,
            ema_decay: self.ema,
            grad_clip: (self.clip > 0.0).then_some(self.clip),
            ..TrainConfig::toy(loss)
        }
    }

    /// The most steps one `Run::train_chunk` call runs: `log_every` (`cdl train`'s chunk), at
    /// least 64 (the pages' chunks, whatever the run that wrote a checkpoint logged) and at most
    /// 1,000. It sizes the trainer's log of step statistics; no step depends on it.
    pub fn chunk_limit(&self) -> usize {
        self.log_every.clamp(64, 1000) as usize
    }

    /// The network of `model`'s preset: the 2-D MLP (`width`, `blocks`, 128 noise features) or a
    /// UNet preset (10 classes with `classes`), with `precond()`.
    pub fn net(&self) -> Result<NetConfig, RunError> {
        if self.model == "mlp" {
            let (width, blocks) = (self.width as usize, self.blocks as usize);
            return Ok(NetConfig::Mlp(MlpConfig { dim: 2, width, blocks, emb_dim: 128, precond: self.precond() }));
        }
        let unet = unet_preset(&self.model)
            .ok_or_else(|| config_err(format!("model {:?} has no preset network", self.model)))?;
        let num_classes = if self.classes { 10 } else { 0 };
        Ok(NetConfig::UNet(UNetConfig { num_classes, precond: self.precond(), ..unet }))
    }

    /// Makes `model`, `width`, `blocks`, `classes` and `precond` describe `net` (a page's own net,
    /// a checkpoint's); a no-op for the net of `net()`.
    fn describe(&mut self, net: &NetConfig) {
        match net {
            NetConfig::Mlp(c) => {
                self.model = "mlp".into();
                self.width = c.width as u64;
                self.blocks = c.blocks as u64;
                self.precond = Some(c.precond.name().into());
            }
            NetConfig::UNet(c) => {
                let num_classes = if c.num_classes > 0 { 10 } else { 0 };
                let preset = MODELS.into_iter().find(|name| {
                    unet_preset(name).is_some_and(|p| UNetConfig { num_classes, precond: c.precond, ..p } == *c)
                });
                self.model = preset.unwrap_or(CUSTOM_UNET).into();
                self.classes = c.num_classes > 0;
                self.precond = Some(c.precond.name().into());
            }
        }
    }
}

/// The UNet preset called `name` (unconditional, plain ε output).
fn unet_preset(name: &str) -> Option<UNetConfig> {
    match name {
        "unet-tiny" => Some(UNetConfig::tiny()),
        "unet-compact" => Some(UNetConfig::compact()),
        "unet-small" => Some(UNetConfig::small()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The network

/// The network a run trains: the MLP of 2-D points or a UNet of images.
#[derive(Clone, Debug, PartialEq)]
pub enum NetConfig {
    Mlp(MlpConfig),
    UNet(UNetConfig),
}

impl NetConfig {
    /// The network a checkpoint stores (its architecture and model config).
    pub fn of(ck: &Checkpoint) -> Result<Self, RunError> {
        match ck.arch.as_str() {
            MlpConfig::ARCH => Ok(Self::Mlp(MlpConfig::from_json(&ck.model_config).map_err(config_err)?)),
            UNetConfig::ARCH => Ok(Self::UNet(UNetConfig::from_json(&ck.model_config).map_err(config_err)?)),
            other => Err(config_err(format!("unknown model architecture {other:?} (expected \"mlp\" or \"unet\")"))),
        }
    }

    /// Elements of one example: D for the MLP, C·S·S for a UNet.
    pub fn row_len(&self) -> usize {
        match self {
            Self::Mlp(c) => c.dim,
            Self::UNet(c) => c.in_channels * c.image_size * c.image_size,
        }
    }

    /// The network bound to `rows` rows, initialised from `seed`.
    async fn build(&self, gpu: &Gpu, rows: usize, seed: u64) -> Result<Box<dyn Net>, GpuError> {
        Ok(match self {
            Self::Mlp(c) => Box::new(Mlp::new(gpu, *c, rows, seed).await?),
            Self::UNet(c) => Box::new(UNet::new(gpu, c.clone(), rows, seed).await?),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The data

/// Images the per-pixel variances of an image set are measured on.
const VARIANCE_IMAGES: usize = 2000;

/// Training examples with what the loss and the checkpoint need to know about them.
pub struct TrainingData {
    /// What they are: `RunConfig::data`, or a page's name for its data (`data.source`).
    pub source: String,
    /// The examples in model units.
    pub examples: Box<dyn Examples>,
    /// Per-coordinate variances in model units (the loss's reference Gaussian, math.md §2.1).
    pub variances: Vec<f64>,
    /// The map from the data's units to model units (None: images, already in [−1, 1]).
    pub standardization: Option<Standardization>,
}

impl TrainingData {
    /// Standardized 2-D points and the map that standardized them.
    pub fn points(source: impl Into<String>, points: Points, standardization: Standardization) -> Self {
        let variances = points.variances();
        Self { source: source.into(), examples: Box::new(points), variances, standardization: Some(standardization) }
    }

    /// Images in [−1, 1], with per-pixel variances over up to 2,000 of them.
    pub fn images(source: impl Into<String>, examples: Box<dyn Examples>) -> Self {
        let variances = example_variances(examples.as_ref(), VARIANCE_IMAGES);
        Self { source: source.into(), examples, variances, standardization: None }
    }

    /// Every example in model units ((N, row length) row-major), augmented as step 0 of `seed`.
    pub fn all_examples(&self, seed: u64) -> Vec<f32> {
        let (n, d) = (self.examples.len(), self.examples.row_len());
        let idx: Vec<u32> = (0..n as u32).collect();
        let (mut x, mut labels) = (vec![0f32; n * d], vec![0u32; n]);
        self.examples.gather(&idx, seed, 0, &mut x, &mut labels);
        x
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::held_out_images;

/// Reading `RunConfig::data` from files (the CLI's data sets).
#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::path::Path;

    use super::{config_err, NetConfig, RunConfig, RunError, TrainingData};
    use crate::train::data::{data_seed, DataSource};
    use crate::train::trainer::{example_variances, Examples};
    use crate::train::{cifar, images, shapes};

    /// Whether `spec` names CIFAR-10: an archive, a `.bin` batch, or a folder holding the batches.
    fn is_cifar(spec: &str, path: &Path) -> bool {
        let lower = spec.to_ascii_lowercase();
        lower.ends_with(".gz")
            || lower.ends_with(".tgz")
            || lower.ends_with(".bin")
            || (path.is_dir()
                && (path.join("cifar-10-batches-bin").is_dir() || path.join("data_batch_1.bin").is_file()))
    }

    impl TrainingData {
        /// The data of `cfg`: for the MLP a built-in 2-D set (`toy_points` of them, seed `seed`)
        /// or a CSV file, standardized; for a UNet "shapes", CIFAR-10 or an image folder at the
        /// net's size. Refuses data that does not fit the net.
        pub fn load(cfg: &RunConfig) -> Result<Self, RunError> {
            let NetConfig::UNet(unet) = cfg.net()? else {
                if cfg.classes || cfg.flip {
                    return Err(config_err("--classes and --flip are for image data (a UNet --model)"));
                }
                let (points, standard) = DataSource::parse(&cfg.data)?.load(cfg.toy_points as usize, cfg.seed)?;
                if points.dim != 2 {
                    return Err(config_err(format!(
                        "{}: the MLP trains on 2-D points, got d = {}",
                        cfg.data, points.dim
                    )));
                }
                return Ok(Self::points(cfg.data.clone(), points, standard));
            };
            let path = Path::new(&cfg.data);
            let examples: Box<dyn Examples> = if cfg.data == shapes::NAME {
                if unet.in_channels != 3 || cfg.classes {
                    return Err(config_err(format!("{}: 3-channel images without labels; drop --classes", cfg.data)));
                }
                let mut set = shapes::generate(shapes::DEFAULT_COUNT, unet.image_size as u32, data_seed(cfg.seed));
                set.flip = cfg.flip;
                Box::new(set)
            } else if is_cifar(&cfg.data, path) {
                if unet.image_size != 32 || unet.in_channels != 3 {
                    return Err(config_err(format!(
                        "CIFAR-10 is 32x32 RGB; --model {} is {} px",
                        cfg.model, unet.image_size
                    )));
                }
                let data = cifar::load(path, cifar::Split::Train)?;
                Box::new(cifar::CifarExamples::new(data, cfg.flip, cfg.classes))
            } else if path.is_dir() {
                if cfg.classes {
                    return Err(config_err(format!("{}: an image folder has no labels for --classes", cfg.data)));
                }
                let mut set = images::load_folder(path, unet.image_size as u32, unet.in_channels as u32)?;
                set.flip = cfg.flip;
                Box::new(set)
            } else {
                return Err(config_err(format!(
                    "{}: not CIFAR-10 (.tar.gz, .bin or its folder), an image folder or \"shapes\"; a UNet \
                     trains on images",
                    cfg.data
                )));
            };
            Ok(Self::images(cfg.data.clone(), examples))
        }
    }

    /// Up to `n` images the run of `cfg` does not train on, in model units ((m, d) row-major),
    /// their per-pixel variances (d of them), and whether they are a true held-out split: `shapes`
    /// drawn with another seed, CIFAR-10's test batch; an image folder has no split, so its first
    /// n images (false).
    pub fn held_out_images(cfg: &RunConfig, n: usize) -> Result<(Vec<f64>, Vec<f64>, bool), RunError> {
        let NetConfig::UNet(unet) = cfg.net()? else {
            return Err(config_err("held-out images are for a UNet --model"));
        };
        let path = Path::new(&cfg.data);
        let lower = cfg.data.to_ascii_lowercase();
        let (examples, split): (Box<dyn Examples>, bool) = if cfg.data == shapes::NAME {
            let seed = data_seed(u64::MAX - cfg.seed);
            (Box::new(shapes::generate(n, unet.image_size as u32, seed)), true)
        } else if lower.ends_with(".gz")
            || lower.ends_with(".tgz")
            || lower.ends_with(".bin")
            || path.join("test_batch.bin").is_file()
            || path.join("cifar-10-batches-bin").is_dir()
        {
            let data = cifar::load(path, cifar::Split::Test)?;
            (Box::new(cifar::CifarExamples::new(data, false, false)), true)
        } else {
            let set = images::load_folder(path, unet.image_size as u32, unet.in_channels as u32)?;
            (Box::new(set), false)
        };
        let (m, d) = (examples.len().min(n), examples.row_len());
        if m == 0 {
            return Err(config_err(format!("{}: no images", cfg.data)));
        }
        let idx: Vec<u32> = (0..m as u32).collect();
        let (mut x, mut labels) = (vec![0f32; m * d], vec![0u32; m]);
        examples.gather(&idx, 0, 0, &mut x, &mut labels);
        let variances = example_variances(examples.as_ref(), m);
        Ok((x.into_iter().map(f64::from).collect(), variances, split))
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoint metadata

/// The version of the run metadata this build writes and the newest it reads; a checkpoint
/// without `meta.version` (written before it existed) is version 1, with every key optional.
pub const META_VERSION: u32 = 2;

const KEY_VERSION: &str = "meta.version";
const KEY_RUN: &str = "run.config";
const KEY_DATA_SOURCE: &str = "data.source";
const KEY_DATA_MEAN: &str = "data.mean";
const KEY_DATA_STD: &str = "data.std";
const KEY_ALPHA_RANGE: &str = "train.alpha_range";
/// Every metadata key a run reads and writes (beside the checkpoint's own `cdl.*` keys).
const KEYS: [&str; 6] = [KEY_VERSION, KEY_RUN, KEY_DATA_SOURCE, KEY_DATA_MEAN, KEY_DATA_STD, KEY_ALPHA_RANGE];

/// Metadata key of a shipped file (`cdl export`): JSON describing its precomputed preview (the
/// `preview.*` tensors). Not run metadata: `from_extra` skips it.
pub const KEY_PREVIEW: &str = "preview";
/// Metadata key of a shipped file (`cdl export`): the run's training curve, JSON
/// {"step":[…],"loss":[…],"loss_std":[…],"loss_cdl":[…]}. Not run metadata: `from_extra` skips it.
pub const KEY_CURVE: &str = "curve";
/// The keys a shipped file adds to a run's metadata.
pub const SHIPPED_KEYS: [&str; 2] = [KEY_PREVIEW, KEY_CURVE];

/// What a run stores beside its tensors (the checkpoint's `extra`): the run's config, its data and
/// the log-SNR range its network was trained at. `to_extra` and `from_extra` are the only writer
/// and reader of these keys.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunMeta {
    /// The run's settings (`run.config`).
    pub run: Option<RunConfig>,
    /// The data's name (`data.source`).
    pub data_source: Option<String>,
    /// The data's units from model units (`data.mean`, `data.std`); None for images.
    pub standardization: Option<Standardization>,
    /// The log-SNR range [lo, hi] the loss trained at (`train.alpha_range`,
    /// `LossConfig::alpha_range`).
    pub alpha_range: Option<(f64, f64)>,
}

impl RunMeta {
    /// The metadata as checkpoint `extra` entries, version `META_VERSION`.
    pub fn to_extra(&self) -> Result<Vec<(String, String)>, RunError> {
        let floats = |v: &[f64]| Value::from(v.to_vec()).to_string();
        let mut out = vec![(KEY_VERSION.to_string(), META_VERSION.to_string())];
        if let Some(run) = &self.run {
            let text =
                serde_json::to_string(run).map_err(|e| config_err(format!("cannot store the run config: {e}")))?;
            out.push((KEY_RUN.into(), text));
        }
        if let Some(source) = &self.data_source {
            out.push((KEY_DATA_SOURCE.into(), source.clone()));
        }
        if let Some(st) = &self.standardization {
            out.push((KEY_DATA_MEAN.into(), floats(&st.mean)));
            out.push((KEY_DATA_STD.into(), floats(&st.std)));
        }
        if let Some((lo, hi)) = self.alpha_range {
            out.push((KEY_ALPHA_RANGE.into(), floats(&[lo, hi])));
        }
        Ok(out)
    }

    /// Reads checkpoint `extra` entries. Refuses a version newer than `META_VERSION`, a key it
    /// does not know and a malformed value, each with one line naming the key; the keys of a
    /// shipped file (`SHIPPED_KEYS`) are skipped unread. A version-1
    /// checkpoint holding none of these keys is bare weights (tools/reference_train.py writes
    /// such files, with notes of its own): its metadata is empty.
    pub fn from_extra(extra: &BTreeMap<String, String>) -> Result<Self, RunError> {
        let version = match extra.get(KEY_VERSION) {
            None => 1,
            Some(t) => t
                .parse::<u32>()
                .ok()
                .filter(|&v| v >= 1)
                .ok_or_else(|| meta_err(format!("{KEY_VERSION} {:?} is not a positive integer", t)))?,
        };
        if version > META_VERSION {
            return Err(meta_err(format!(
                "run metadata version {version} is newer than this build reads (up to {META_VERSION})"
            )));
        }
        if version == 1 && !KEYS.iter().any(|k| extra.contains_key(*k)) {
            return Ok(Self::default());
        }
        if let Some(key) = extra.keys().find(|k| !KEYS.contains(&k.as_str()) && !SHIPPED_KEYS.contains(&k.as_str())) {
            return Err(meta_err(format!(
                "unknown checkpoint metadata key {key:?} (a run stores {})",
                KEYS.join(", ")
            )));
        }
        let run = match extra.get(KEY_RUN) {
            None => None,
            Some(text) => {
                let run: RunConfig = serde_json::from_str(text).map_err(|e| meta_err(format!("{KEY_RUN}: {e}")))?;
                run.validate().map_err(|e| meta_err(format!("{KEY_RUN}: {e}")))?;
                Some(run)
            }
        };
        let floats = |key: &str| -> Result<Option<Vec<f64>>, RunError> {
            let Some(text) = extra.get(key) else { return Ok(None) };
            let v: Vec<f64> =
                serde_json::from_str(text).map_err(|e| meta_err(format!("{key}: not a list of numbers: {e}")))?;
            match v.iter().find(|x| !x.is_finite()) {
                Some(x) => Err(meta_err(format!("{key}: {x} is not finite"))),
                None => Ok(Some(v)),
            }
        };
        let standardization = match (floats(KEY_DATA_MEAN)?, floats(KEY_DATA_STD)?) {
            (None, None) => None,
            (Some(mean), Some(std)) if mean.is_empty() && std.is_empty() => None,
            (Some(mean), Some(std)) if mean.len() == std.len() && std.iter().all(|s| *s > 0.0) => {
                Some(Standardization { mean, std })
            }
            _ => {
                return Err(meta_err(format!(
                    "{KEY_DATA_MEAN} and {KEY_DATA_STD} must be lists of the same length, every std > 0"
                )))
            }
        };
        let alpha_range = match floats(KEY_ALPHA_RANGE)?.as_deref() {
            None => None,
            Some(&[lo, hi]) if lo <= hi => Some((lo, hi)),
            Some(_) => return Err(meta_err(format!("{KEY_ALPHA_RANGE}: expected [lo, hi] with lo <= hi"))),
        };
        Ok(Self { run, data_source: extra.get(KEY_DATA_SOURCE).cloned(), standardization, alpha_range })
    }
}

// ---------------------------------------------------------------------------------------------
// The run

/// One model being trained: config, data, trainer (Adam, EMA) and batch order, assembled once.
pub struct Run {
    config: RunConfig,
    net: NetConfig,
    data: Rc<TrainingData>,
    trainer: Trainer,
    batcher: Batcher,
    /// The log-SNR range the loss trains at.
    alpha_range: (f64, f64),
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Run({:?} on {}, {:?})", self.config.loss.name(), self.data.source, self.trainer)
    }
}

impl Run {
    /// A fresh run of `config`'s preset network on `data`.
    pub async fn new(gpu: &Gpu, config: RunConfig, data: Rc<TrainingData>) -> Result<Self, RunError> {
        Self::new_on(gpu, config, data, None).await
    }

    /// As `new`, as one rank of a data-parallel run when `comm` is given (`train::dist`): the
    /// same network (same init seed) on every rank, each evaluating its shard of every step.
    pub async fn new_on(
        gpu: &Gpu,
        config: RunConfig,
        data: Rc<TrainingData>,
        comm: Option<Rc<dyn Collective>>,
    ) -> Result<Self, RunError> {
        config.validate()?;
        let net = config.net()?;
        Self::assemble(gpu, config, net, data, comm).await
    }

    /// A fresh run of `net` (a page's own network) on `data`; the config is made to describe the
    /// net and to name the data (`RunConfig::data = data.source`).
    pub async fn with_net(
        gpu: &Gpu,
        config: RunConfig,
        net: NetConfig,
        data: Rc<TrainingData>,
    ) -> Result<Self, RunError> {
        Self::assemble(gpu, config, net, data, None).await
    }

    async fn assemble(
        gpu: &Gpu,
        mut config: RunConfig,
        net: NetConfig,
        data: Rc<TrainingData>,
        comm: Option<Rc<dyn Collective>>,
    ) -> Result<Self, RunError> {
        config.validate()?;
        config.describe(&net);
        config.data.clone_from(&data.source);
        let (d, n) = (net.row_len(), data.examples.row_len());
        if d != n {
            return Err(config_err(format!("{}: examples have {n} values but the model takes {d}", data.source)));
        }
        let loss = config.loss_config(&data.variances)?;
        let alpha_range = loss.alpha_range().ok_or_else(|| config_err("the loss has no rows"))?;
        let train = config.train_config(loss);
        train.validate()?;
        let rows = comm.as_ref().map_or(train.rows(), |c| train.shard_rows(c.rank(), c.ranks()));
        let model = net.build(gpu, rows, config.seed).await?;
        let trainer = Trainer::with_collective(gpu, model, train, config.chunk_limit(), comm).await?;
        let batcher = Batcher::new(data_seed(config.seed), data.examples.len(), config.batch as usize)?;
        Ok(Self { config, net, data, trainer, batcher, alpha_range })
    }

    /// The run of `trained`'s checkpoint (its network, weights, EMA, Adam moments and step) on
    /// `data` with `config`; it continues exactly as the run that wrote the checkpoint would have.
    pub async fn resume(
        gpu: &Gpu,
        config: RunConfig,
        trained: &Trained,
        data: Rc<TrainingData>,
    ) -> Result<Self, RunError> {
        Self::resume_on(gpu, config, trained, data, None).await
    }

    /// As `resume`, as one rank of a data-parallel run when `comm` is given (every rank reads
    /// the same checkpoint).
    pub async fn resume_on(
        gpu: &Gpu,
        config: RunConfig,
        trained: &Trained,
        data: Rc<TrainingData>,
        comm: Option<Rc<dyn Collective>>,
    ) -> Result<Self, RunError> {
        let mut run = Self::assemble(gpu, config, trained.net()?, data, comm).await?;
        run.trainer.restore(gpu, &trained.checkpoint)?;
        Ok(run)
    }

    /// Runs `n` steps (at most `chunk_limit`) and returns their statistics (one readback). On a
    /// non-finite step the state of the chunk's start is kept (`TrainError::NonFinite`).
    pub async fn train_chunk(&mut self, gpu: &Gpu, n: usize) -> Result<Vec<StepStats>, RunError> {
        let batcher = &mut self.batcher;
        let examples = self.data.examples.as_ref();
        Ok(self.trainer.train(gpu, examples, &mut |s, out| batcher.indices(s, out), n).await?)
    }

    /// The whole state (model, EMA, Adam moments, step) with the run's metadata.
    pub async fn checkpoint(&self, gpu: &Gpu) -> Result<Checkpoint, RunError> {
        Ok(self.trainer.checkpoint(gpu, &self.meta().to_extra()?).await?)
    }

    /// What the run's checkpoints store beside the tensors.
    pub fn meta(&self) -> RunMeta {
        RunMeta {
            run: Some(self.config.clone()),
            data_source: Some(self.data.source.clone()),
            standardization: self.data.standardization.clone(),
            alpha_range: Some(self.alpha_range),
        }
    }

    /// Steps done.
    pub fn step(&self) -> u64 {
        self.trainer.step()
    }

    /// The most steps one `train_chunk` call runs.
    pub fn chunk_limit(&self) -> usize {
        self.trainer.chunk_limit()
    }

    /// The run's settings (describing its network and naming its data).
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The network it trains.
    pub fn net(&self) -> &NetConfig {
        &self.net
    }

    /// The data it trains on.
    pub fn data(&self) -> &Rc<TrainingData> {
        &self.data
    }

    /// The trainer: its network and EMA weights, for sampling (`eval::denoiser`).
    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// The log-SNR range [lo, hi] the loss trains at.
    pub fn alpha_range(&self) -> (f64, f64) {
        self.alpha_range
    }
}

// ---------------------------------------------------------------------------------------------
// A trained checkpoint, read back

/// A checkpoint with its run metadata read (`RunMeta::from_extra`): what `cdl sample`, `cdl eval`,
/// `cdl experiment`, `Run::resume` and the pages' loaders take.
#[derive(Clone, Debug)]
pub struct Trained {
    pub checkpoint: Checkpoint,
    pub meta: RunMeta,
}

impl Trained {
    /// Reads `checkpoint`'s metadata.
    pub fn new(checkpoint: Checkpoint) -> Result<Self, RunError> {
        let meta = RunMeta::from_extra(&checkpoint.extra)?;
        Ok(Self { checkpoint, meta })
    }

    /// Loads the checkpoint at `path` (`checkpoint::load`: bounded, finite tensors) and reads its
    /// metadata; errors name the path.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(path: &std::path::Path) -> Result<Self, RunError> {
        let ck = crate::train::checkpoint::load(path)?;
        Self::new(ck).map_err(|e| meta_err(format!("{}: {e}", path.display())))
    }

    /// The network the checkpoint stores.
    pub fn net(&self) -> Result<NetConfig, RunError> {
        NetConfig::of(&self.checkpoint)
    }

    /// One line saying how far `sampler` queries the network outside the log-SNR range it was
    /// trained at, if it does (and the checkpoint records that range).
    pub fn range_warning(&self, sampler: &SamplerConfig) -> Option<String> {
        let (lo, hi) = self.meta.alpha_range?;
        let (slo, shi) = sampler.alpha_range().ok()?;
        let mut out = Vec::new();
        if slo < lo {
            out.push(format!("{:.2} below", lo - slo));
        }
        if shi > hi {
            out.push(format!("{:.2} above", shi - hi));
        }
        (!out.is_empty()).then(|| {
            format!(
                "warning: {} queries the network at log-SNR α ∈ [{slo:.2}, {shi:.2}], {} the range it was trained \
                 at, [{lo:.2}, {hi:.2}]; samples may be poor there",
                sampler.name(),
                out.join(" and ")
            )
        })
    }

    /// Samples in model units → the data's units ((n, d) row-major; unchanged without a map).
    pub fn to_data_units(&self, x: &mut [f64]) {
        let Some(st) = self.meta.standardization.as_ref().filter(|s| !s.mean.is_empty()) else { return };
        for row in x.chunks_exact_mut(st.mean.len()) {
            for ((v, s), m) in row.iter_mut().zip(&st.std).zip(&st.mean) {
                *v = *v * s + m;
            }
        }
    }
}
