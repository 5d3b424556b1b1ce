//! Image mode (`index.html?mode=image`): a UNet learns 32×32 RGB images in the tab, on the
//! built-in `shapes` set or on CIFAR-10 files the reader picks, training in chunks on the event
//! loop with samples refreshing beside training images. Weights are the CLI's safetensors
//! checkpoints (download, upload, or IndexedDB), so `cdl train`/`cdl sample` interoperate.

use std::rc::Rc;

use serde_json::json;

use super::quality::{Quality, MAX_INCEPTION_BYTES};
use super::runtime::{self, push, show_message, Control, LossLog, Meter, Task};
use super::toy::loss_label;
use super::{dom, draw, store};
use crate::diffusion::sampler::{self, SamplerConfig};
use crate::eval::denoiser::GpuDenoiser;
use crate::gpu::Gpu;
use crate::model::UNetConfig;
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::cifar::{self, Cifar, Split};
use crate::train::data::data_seed;
use crate::train::recipe::LossKind;
use crate::train::run::{NetConfig, Run, RunConfig, Trained, TrainingData};
use crate::train::shapes;
use crate::train::trainer::Examples;

/// Side of the images (CIFAR-10's, and the shapes drawn for it).
const SIDE: usize = cifar::SIDE;
/// Most steps one chunk runs (the trainer's log slots).
const CHUNK_MAX: usize = 16;
/// Wall time one chunk aims at, in ms.
const CHUNK_TARGET_MS: f64 = 250.0;
/// Training images shown next to the samples.
const PREVIEW: usize = 16;
/// Largest CIFAR-10 file read: the official archive is 163 MB, a batch 30 MB.
const MAX_CIFAR_BYTES: f64 = 200.0 * 1024.0 * 1024.0;
/// Most batch files chosen at once (the official set has six).
const MAX_CIFAR_FILES: usize = 6;
/// Browser storage key of the saved weights.
const STORAGE_KEY: &str = "cdl.images";
/// The in-memory weights for a device-loss restart are refreshed this often, in ms.
const KEEP_EVERY_MS: f64 = 20_000.0;

/// Start-up stages after the device (`runtime::Startup`).
const IMAGES: runtime::Stage = runtime::Stage {
    name: "drawing the built-in images",
    meaning: "The page draws its training images on the CPU.",
    advice: "Wait, or ask for fewer images (shapes= in the URL).",
};
const MODEL: runtime::Stage = runtime::Stage {
    name: "building the model",
    meaning: "The UNet's buffers are allocated and its GPU kernels compiled, each on its first use.",
    advice: runtime::SLOW_ADAPTER,
};
/// The save buttons, disabled until the page is ready (`runtime::Startup`).
const SAVES: &[&str] = &["img-save-file", "img-save-storage"];

/// What the controls ask of the training task.
enum ImageCommand {
    Start,
    Pause,
    Step,
    /// Fresh weights from the controls on the current data.
    Reset,
    /// Switch to the built-in shapes (and reset).
    Shapes,
    /// Switch to CIFAR-10 images read from files (and reset).
    Cifar(String, Cifar),
    SaveFile,
    LoadFile(String, Vec<u8>),
    SaveStorage,
    LoadStorage,
    Resample,
    /// The FID Inception weights, read from a file.
    LoadInception(String, Vec<u8>),
    /// FID and KID of fresh samples against training images.
    Quality,
    Lost(u32, String),
    Restart,
    LoseDevice,
}

type ImageShared = runtime::SharedRef<ImageCommand>;

impl ImageCommand {
    /// Whether the command starts training (`Some(true)`), stops it (`Some(false)`) or neither
    /// (a reset stops it too).
    fn starts(&self) -> Option<bool> {
        match self {
            Self::Start => Some(true),
            Self::Pause | Self::Reset | Self::Shapes | Self::Cifar(..) => Some(false),
            _ => None,
        }
    }
}

const API: &[runtime::Named<ImageCommand>] = &[
    ("start", || ImageCommand::Start),
    ("pause", || ImageCommand::Pause),
    ("step", || ImageCommand::Step),
    ("reset", || ImageCommand::Reset),
    ("resample", || ImageCommand::Resample),
    ("quality", || ImageCommand::Quality),
    ("saveStorage", || ImageCommand::SaveStorage),
    ("loadStorage", || ImageCommand::LoadStorage),
    ("loseDevice", || ImageCommand::LoseDevice),
];

/// What defines a run: the UNet (any size the URL asks for) and the run's settings (the page's
/// controls and URL).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSettings {
    pub unet: UNetConfig,
    pub config: RunConfig,
}

impl ImageSettings {
    /// The URL's settings: `model=compact|small`, optionally resized by `ch`, `mult=1,2`,
    /// `blocks` and `attn=16,8|none`; `loss`, `precond`, `lambda`, `K`, `M`, `batch`, `lr`, `seed`.
    fn from_url() -> Self {
        let num = |k: &str, d: usize| dom::param(k).and_then(|v| v.parse::<usize>().ok()).unwrap_or(d);
        let list = |k: &str| {
            dom::param(k).map(|v| {
                v.split(',').filter_map(|x| x.trim().parse::<usize>().ok()).filter(|&x| x > 0).collect::<Vec<_>>()
            })
        };
        let mut unet =
            if dom::param("model").as_deref() == Some("small") { UNetConfig::small() } else { UNetConfig::compact() };
        unet.channels = num("ch", unet.channels).clamp(4, 256);
        if let Some(m) = list("mult").filter(|m| !m.is_empty() && m.len() <= 4) {
            unet.mult = m;
        }
        unet.blocks_per_level = num("blocks", unet.blocks_per_level).clamp(1, 4);
        if let Some(a) = list("attn") {
            unet.attn_resolutions = a;
        }
        let batch = num("batch", 16).clamp(1, 256);
        let precond = dom::precond_param();
        let config = RunConfig {
            precond,
            loss: dom::param("loss").and_then(|v| v.parse().ok()).unwrap_or(LossKind::Cdl),
            batch: batch as u64,
            lr: dom::param("lr").and_then(|v| v.parse().ok()).filter(|l: &f64| *l > 0.0).unwrap_or(5e-4),
            // Gradient clipping keeps a young UNet's first steps in range at the page's small batches.
            clip: 1.0,
            seed: num("seed", 0) as u64,
            anchors: num("K", 1).clamp(1, batch) as u64,
            points: num("M", 8).clamp(1, 256) as u64,
            lambda_cdl: dom::param("lambda").and_then(|v| v.parse().ok()).unwrap_or(1.0),
            ..RunConfig::default()
        };
        unet.precond = config.precond();
        Self { unet, config }
    }

    /// The settings of `run`: its net and its config.
    fn of(run: &Run) -> Self {
        let unet = match run.net() {
            NetConfig::UNet(c) => c.clone(),
            NetConfig::Mlp(_) => UNetConfig::compact(),
        };
        Self { unet, config: run.config().clone() }
    }
}

/// Refuses a checkpoint image mode cannot train: an MLP, another image size, a conditional net.
fn check_image_net(trained: &Trained) -> Result<(), String> {
    let NetConfig::UNet(unet) = trained.net().map_err(|e| e.to_string())? else {
        return Err(format!("this is a {:?} checkpoint; image mode needs a \"unet\" one", trained.checkpoint.arch));
    };
    if unet.image_size != SIDE || unet.in_channels != 3 {
        return Err(format!(
            "the net takes {}-channel {} px images; image mode trains on 3-channel {SIDE} px ones",
            unet.in_channels, unet.image_size
        ));
    }
    if unet.num_classes > 0 {
        return Err("the net is class-conditional; image mode trains unconditional nets".into());
    }
    Ok(())
}

/// Page options besides the run settings.
#[derive(Clone, Debug)]
struct ImagePageOptions {
    settings: ImageSettings,
    autoplay: bool,
    samples: usize,
    sampler: String,
    sampler_steps: usize,
    /// Clip the sampler's x̂₀ to [-1, 1].
    clip: bool,
    /// Fixed chunk size (0: adaptive).
    chunk: usize,
    step_size: usize,
    sample_every_ms: f64,
    /// Images of the built-in set.
    shapes: usize,
    /// Samples (and training images) of FID/KID.
    quality_n: usize,
}

impl ImagePageOptions {
    fn from_url() -> Self {
        let num = |k: &str, d: usize| dom::param(k).and_then(|v| v.parse::<usize>().ok()).unwrap_or(d);
        Self {
            settings: ImageSettings::from_url(),
            autoplay: dom::flag("autoplay"),
            samples: num("samples", 16).clamp(1, 64),
            sampler: dom::param("sampler").unwrap_or_else(|| "ddim".into()),
            sampler_steps: num("sampler_steps", 25).clamp(2, 1000),
            clip: dom::param("clip").is_none_or(|v| v != "0" && v != "false"),
            chunk: num("chunk", 0).min(CHUNK_MAX),
            step_size: num("step_size", 4).clamp(1, CHUNK_MAX),
            sample_every_ms: num("sample_every", 10_000) as f64,
            shapes: num("shapes", shapes::DEFAULT_COUNT).clamp(16, 50_000),
            quality_n: num("fid_n", 64).clamp(2, 2048),
        }
    }
}

/// The images being trained on.
struct ImageDataSet {
    training: Rc<TrainingData>,
    /// The first `PREVIEW` images as model values.
    preview: Vec<f32>,
}

impl ImageDataSet {
    fn new(name: String, examples: Box<dyn Examples>) -> Self {
        let n = examples.len().min(PREVIEW);
        let idx: Vec<u32> = (0..n as u32).collect();
        let (mut preview, mut labels) = (vec![0f32; n * examples.row_len()], vec![0u32; n]);
        examples.gather(&idx, 0, 0, &mut preview, &mut labels);
        Self { training: Rc::new(TrainingData::images(name, examples)), preview }
    }

    fn shapes(n: usize, seed: u64) -> Self {
        Self::new(shapes::NAME.into(), Box::new(shapes::generate(n, SIDE as u32, data_seed(seed))))
    }

    fn name(&self) -> &str {
        &self.training.source
    }
}

/// The run being trained and what the page shows of it.
struct Model {
    run: Run,
    log: LossLog,
    /// The samples on display, model values (n, 3, 32, 32).
    samples: Vec<f32>,
    samples_step: Option<u64>,
    samples_version: u64,
}

impl Model {
    fn showing(run: Run) -> Self {
        Self { run, log: LossLog::default(), samples: Vec::new(), samples_step: None, samples_version: 0 }
    }

    async fn new(gpu: &Gpu, settings: ImageSettings, data: &ImageDataSet) -> Result<Self, String> {
        let net = NetConfig::UNet(settings.unet);
        let run = Run::with_net(gpu, settings.config, net, data.training.clone()).await.map_err(|e| e.to_string())?;
        Ok(Self::showing(run))
    }

    /// The run of `trained` (its net, settings and state; `base`'s settings for a checkpoint that
    /// stores none) on `data`, its batch and CDL sizes held to the page's limits.
    async fn from_checkpoint(
        gpu: &Gpu,
        base: &RunConfig,
        trained: &Trained,
        data: &ImageDataSet,
    ) -> Result<Self, String> {
        check_image_net(trained)?;
        let mut config = trained.meta.run.clone().unwrap_or_else(|| base.clone());
        config.batch = config.batch.min(256);
        config.anchors = config.anchors.min(config.batch);
        config.points = config.points.min(256);
        let run = Run::resume(gpu, config, trained, data.training.clone()).await.map_err(|e| e.to_string())?;
        Ok(Self::showing(run))
    }

    fn step(&self) -> u64 {
        self.run.step()
    }

    fn loss(&self) -> LossKind {
        self.run.config().loss
    }

    async fn train(&mut self, gpu: &Gpu, n: usize) -> Result<(), String> {
        let stats = self.run.train_chunk(gpu, n.min(CHUNK_MAX)).await.map_err(|e| e.to_string())?;
        self.log.record(&stats);
        Ok(())
    }

    async fn checkpoint(&self, gpu: &Gpu) -> Result<Checkpoint, String> {
        self.run.checkpoint(gpu).await.map_err(|e| e.to_string())
    }
}

/// The training task's state.
struct ImagePage {
    ctl: Control<ImageCommand>,
    opts: ImagePageOptions,
    gpu: Gpu,
    data: ImageDataSet,
    model: Model,
    /// The last weights read back (for a restart after device loss).
    kept: Option<Checkpoint>,
    grid_drawn: bool,
    /// The FID feature network, once the reader gave its weights.
    quality: Option<Quality>,
    /// The last FID/KID: the step measured, FID, KID mean and standard deviation, images a side.
    scores: Option<(u64, f64, f64, f64, usize)>,
}

/// Builds image mode on the page and starts its training task: a grid of samples refreshes
/// while it trains, next to a grid of training images, with the loss curve and images per
/// second. CIFAR-10 comes as the official `.bin` batches or `cifar-10-binary.tar.gz`. Weights:
/// `cdl train --model unet-compact --data shapes` output opens here, and `cdl sample` reads the
/// page's downloads. For tests and scripts: `window.cdl.state()` (see `publish`; before the page
/// is ready, the start-up stage: `runtime::Startup`) and
/// `window.cdl.{start,pause,step,reset,resample,saveStorage,loadStorage,loseDevice}()`.
/// Commands given during start-up run once the page is ready.
pub async fn run() -> Result<(), String> {
    dom::add_body_class("image-mode");
    let opts = ImagePageOptions::from_url();
    let shared: ImageShared = Rc::default();
    runtime::install_api(&shared, API);
    init_controls(&opts);
    wire_controls(&shared);
    // Controls pressed from now on are queued and run once the page is ready, in order.
    let startup = runtime::Startup::new(&shared, ImageCommand::starts, SAVES);
    let Some(gpu) = runtime::acquire_gpu(&startup).await else { return Ok(()) };
    startup.stage(IMAGES);
    dom::sleep(0).await;
    let data = ImageDataSet::shapes(opts.shapes, opts.settings.config.seed);
    startup.stage(MODEL);
    let model = Model::new(&gpu, opts.settings.clone(), &data).await?;
    let meter = Meter::new(opts.chunk.max(1), CHUNK_MAX, CHUNK_TARGET_MS);
    let mut engine = ImagePage {
        ctl: Control::new(shared.clone(), meter, opts.sample_every_ms, KEEP_EVERY_MS),
        opts,
        gpu,
        data,
        model,
        kept: None,
        grid_drawn: false,
        quality: None,
        scores: None,
    };
    runtime::watch_device(&engine.gpu, engine.ctl.generation);
    engine.redraw();
    startup.finish(&engine.gpu);
    engine.publish();
    if engine.opts.autoplay {
        shared.borrow_mut().running = true;
    }
    wasm_bindgen_futures::spawn_local(runtime::run_loop(engine));
    Ok(())
}

fn init_controls(opts: &ImagePageOptions) {
    let s = &opts.settings;
    dom::set_value("img-loss", s.config.loss.name());
    dom::set_value("img-lambda", &s.config.lambda_cdl.to_string());
    dom::set_value("img-anchors", &s.config.anchors.to_string());
    dom::set_value("img-points", &s.config.points.to_string());
    dom::set_value("img-batch", &s.config.batch.to_string());
    dom::set_value("img-sampler", &opts.sampler);
    dom::set_value("img-sampler-steps", &opts.sampler_steps.to_string());
    dom::set_checked("img-clip", opts.clip);
    dom::set_text("img-step", &format!("Step ×{}", opts.step_size));
    dom::set_text("img-fid", &format!("FID/KID ({} images)", opts.quality_n));
    let attn = match s.unet.attn_resolutions.as_slice() {
        [] => "no attention".to_string(),
        r => format!("attention at {}", r.iter().map(|v| format!("{v} px")).collect::<Vec<_>>().join(", ")),
    };
    let arch = format!(
        "UNet: ch {}, mult {:?}, {} block(s) a level, {attn}",
        s.unet.channels, s.unet.mult, s.unet.blocks_per_level
    );
    dom::set_text("img-arch", &arch);
}

fn wire_controls(shared: &ImageShared) {
    let click = |id: &str, make: fn() -> ImageCommand| runtime::on_click(shared, id, make);
    click("img-start", || ImageCommand::Start);
    click("img-pause", || ImageCommand::Pause);
    click("img-step", || ImageCommand::Step);
    click("img-reset", || ImageCommand::Reset);
    click("img-resample", || ImageCommand::Resample);
    click("img-fid", || ImageCommand::Quality);
    click("img-save-file", || ImageCommand::SaveFile);
    click("img-save-storage", || ImageCommand::SaveStorage);
    click("img-load-storage", || ImageCommand::LoadStorage);
    click("restart", || ImageCommand::Restart);
    for id in ["img-loss", "img-lambda", "img-anchors", "img-points", "img-batch"] {
        let s = shared.clone();
        dom::on(id, "change", move |_| push(&s, ImageCommand::Reset));
    }
    for id in ["img-sampler", "img-sampler-steps", "img-clip"] {
        let s = shared.clone();
        dom::on(id, "change", move |_| push(&s, ImageCommand::Resample));
    }
    let s = shared.clone();
    dom::on("img-data", "change", move |_| {
        let v = dom::value("img-data").unwrap_or_default();
        dom::set_hidden("cifar-panel", v != "cifar");
        set_data_error("");
        if v == shapes::NAME {
            push(&s, ImageCommand::Shapes);
        }
    });
    let s = shared.clone();
    dom::on("cifar-file", "change", move |_| {
        // The list empties when the input is cleared (so the same files can be chosen again).
        let list = dom::get::<web_sys::HtmlInputElement>("cifar-file").and_then(|i| i.files());
        let files: Vec<web_sys::File> =
            list.map_or_else(Vec::new, |l| (0..l.length()).filter_map(|i| l.get(i)).collect());
        store::clear_file("cifar-file");
        let s = s.clone();
        wasm_bindgen_futures::spawn_local(async move {
            set_data_error("");
            dom::set_text("img-data-info", "reading…");
            match read_cifar(&files).await {
                Ok((name, data)) => {
                    dom::set_text("img-data-info", "");
                    push(&s, ImageCommand::Cifar(name, data));
                }
                Err(e) => {
                    dom::set_text("img-data-info", "");
                    set_data_error(&e);
                }
            }
        });
    });
    let s = shared.clone();
    dom::on("img-inception-file", "change", move |_| {
        let Some(file) = store::chosen_file("img-inception-file") else { return };
        store::clear_file("img-inception-file");
        let s = s.clone();
        wasm_bindgen_futures::spawn_local(async move {
            dom::set_message(QUALITY_MSG, "reading…", false);
            match store::read_file(&file, MAX_INCEPTION_BYTES, "an Inception weights file").await {
                Ok(bytes) => push(&s, ImageCommand::LoadInception(file.name(), bytes)),
                Err(e) => dom::set_message(QUALITY_MSG, &e, true),
            }
        });
    });
    let s = shared.clone();
    dom::on("img-load-file", "change", move |_| {
        let Some(file) = store::chosen_file("img-load-file") else { return };
        store::clear_file("img-load-file");
        let s = s.clone();
        wasm_bindgen_futures::spawn_local(async move {
            match store::read_file(&file, store::MAX_WEIGHTS_BYTES, "a weights file").await {
                Ok(bytes) => push(&s, ImageCommand::LoadFile(file.name(), bytes)),
                Err(e) => set_weights_message(&e, true),
            }
        });
    });
}

/// CIFAR-10 from the chosen files: one `.tar.gz` / `.tgz` archive (its five training batches),
/// or up to six `.bin` batch files (any number of records each), concatenated in the order
/// chosen. Sizes are checked before anything is read.
async fn read_cifar(files: &[web_sys::File]) -> Result<(String, Cifar), String> {
    let n = files.len();
    if n == 0 {
        return Err("no file chosen".into());
    }
    if n > MAX_CIFAR_FILES {
        return Err(format!("{n} files chosen; pick at most {MAX_CIFAR_FILES} CIFAR-10 batch files"));
    }
    let mut out = Cifar { images: Vec::new(), labels: Vec::new() };
    let mut names = Vec::new();
    for file in files {
        let name = file.name();
        let lower = name.to_ascii_lowercase();
        let archive = lower.ends_with(".tar.gz") || lower.ends_with(".tgz");
        if !archive && !lower.ends_with(".bin") {
            return Err(format!("{name}: not a CIFAR-10 file (cifar-10-binary.tar.gz or a .bin batch)"));
        }
        if archive && n > 1 {
            return Err(format!("{name}: choose the archive alone, not with other files"));
        }
        let limit = if archive { MAX_CIFAR_BYTES } else { (cifar::BATCH_BYTES * 2) as f64 };
        let bytes = store::read_file(file, limit, "a CIFAR-10 file").await?;
        let part = if archive {
            cifar::read_archive(bytes.as_slice(), &name, Split::Train)
        } else {
            cifar::parse_batch(&bytes, &name)
        }
        .map_err(|e| e.to_string())?;
        out.images.extend(part.images);
        out.labels.extend(part.labels);
        names.push(name);
    }
    let name = if names.len() == 1 { names.remove(0) } else { format!("{} CIFAR-10 batches", names.len()) };
    Ok((name, out))
}

fn set_data_error(text: &str) {
    dom::set_error("img-data-error", text);
}

/// The element that reports saves and loads of weights.
const WEIGHTS_MSG: &str = "img-weights-msg";
/// The element that reports the Inception weights and FID/KID.
const QUALITY_MSG: &str = "img-fid-msg";

fn set_weights_message(text: &str, error: bool) {
    dom::set_message(WEIGHTS_MSG, text, error);
}

impl ImagePage {
    /// The run settings from the controls.
    fn settings(&self) -> ImageSettings {
        let mut s = ImageSettings::of(&self.model.run);
        let c = &mut s.config;
        let num = |id: &str| dom::value(id).and_then(|v| v.trim().parse::<f64>().ok());
        if let Some(l) = dom::value("img-loss").and_then(|v| v.parse::<LossKind>().ok()) {
            c.loss = l;
        }
        if let Some(b) = num("img-batch").filter(|b| *b >= 1.0) {
            c.batch = (b as u64).min(256);
        }
        if let Some(l) = num("img-lambda").filter(|l| l.is_finite() && *l >= 0.0) {
            c.lambda_cdl = l;
        }
        if let Some(k) = num("img-anchors").filter(|k| *k >= 1.0) {
            c.anchors = (k as u64).min(c.batch);
        }
        if let Some(m) = num("img-points").filter(|m| *m >= 1.0) {
            c.points = (m as u64).min(256);
        }
        s
    }

    /// Fresh weights from the controls on the current data.
    async fn reset(&mut self) -> Result<(), String> {
        self.ctl.stop();
        self.model = Model::new(&self.gpu, self.settings(), &self.data).await?;
        self.kept = None;
        self.ctl.meter.clear();
        self.grid_drawn = false;
        show_message("");
        Ok(())
    }

    fn sampler(&self) -> SamplerConfig {
        let steps = dom::value("img-sampler-steps")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(self.opts.sampler_steps)
            .clamp(2, 1000);
        match dom::value("img-sampler").unwrap_or_else(|| self.opts.sampler.clone()).as_str() {
            "ddpm" => SamplerConfig::Ddpm { steps, variance: sampler::DdpmVariance::Beta },
            "heun" => SamplerConfig::Heun { steps, churn: 0.0 },
            _ => SamplerConfig::Ddim { steps },
        }
    }

    async fn restart(&mut self) -> Result<(), String> {
        self.gpu = runtime::renew_gpu(&self.gpu).await?;
        self.ctl.new_device(&self.gpu);
        let kept = self.kept.take();
        self.reset().await?;
        if let Some(ck) = kept {
            let trained = Trained::new(ck).map_err(|e| e.to_string())?;
            self.model = Model::from_checkpoint(&self.gpu, self.model.run.config(), &trained, &self.data).await?;
            self.kept = Some(trained.checkpoint);
        }
        if let Some(q) = self.quality.as_mut() {
            q.forget_device();
        }
        runtime::hide_lost();
        self.refresh_samples().await;
        Ok(())
    }

    /// FID and KID of `quality_n` fresh samples (the page's sampler, seed 1) against the first
    /// `quality_n` training images, both through the Inception network on this GPU.
    async fn measure_quality(&mut self) -> Result<String, String> {
        let Some(mut quality) = self.quality.take() else {
            return Err("choose the Inception weights file first".into());
        };
        let r = self.quality_with(&mut quality).await;
        self.quality = Some(quality);
        let (fid, kid, n) = r?;
        let step = self.model.step();
        self.scores = Some((step, fid, kid.mean, kid.std, n));
        Ok(format!(
            "step {step}: FID {fid:.2} · KID {:.4} ± {:.4} ({n} samples against {n} training images; \
             both grow as n shrinks, so compare at equal n)",
            kid.mean, kid.std
        ))
    }

    async fn quality_with(&self, quality: &mut Quality) -> Result<(f64, crate::eval::kid::Kid, usize), String> {
        let n = self.opts.quality_n;
        let examples = &self.data.training.examples;
        if examples.len() < n {
            return Err(format!("{n} images asked for and the data has {}", examples.len()));
        }
        let cfg = self.sampler();
        let clip = dom::checked("img-clip").unwrap_or(self.opts.clip);
        dom::set_message(QUALITY_MSG, &format!("sampling {n} images…"), false);
        dom::sleep(0).await;
        let mut den =
            GpuDenoiser::from_trainer(&self.gpu, self.model.run.trainer(), n).await.map_err(|e| e.to_string())?;
        let (x, _) = den.sample_on_device(&cfg, n, 1, clip.then_some((-1.0, 1.0))).await.map_err(|e| e.to_string())?;
        let samples: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let idx: Vec<u32> = (0..n as u32).collect();
        let (mut reals, mut labels) = (vec![0f32; n * examples.row_len()], vec![0u32; n]);
        examples.gather(&idx, 0, 0, &mut reals, &mut labels);
        let progress = |k: usize, of: usize| {
            dom::set_message(QUALITY_MSG, &format!("Inception features {k}/{of}…"), false);
        };
        let s = quality.scores(&self.gpu, &samples, &reals, n, SIDE, progress).await?;
        Ok((s.fid, s.kid, s.n))
    }

    async fn save_file(&mut self) -> Result<(), String> {
        let ck = self.model.checkpoint(&self.gpu).await?;
        let bytes = checkpoint::encode(&ck).map_err(|e| e.to_string())?;
        let name = format!("cdl-images-{}-step{}.safetensors", self.model.loss().name(), self.model.step());
        store::download(&name, &bytes)?;
        set_weights_message(&format!("downloaded {name} ({:.1} MB)", bytes.len() as f64 / 1e6), false);
        Ok(())
    }

    async fn save_storage(&mut self) -> Result<String, String> {
        let ck = self.model.checkpoint(&self.gpu).await?;
        let bytes = checkpoint::encode(&ck).map_err(|e| e.to_string())?;
        store::store(STORAGE_KEY, &bytes).await?;
        Ok(format!("saved step {} in this browser ({:.1} MB)", ck.step, bytes.len() as f64 / 1e6))
    }

    async fn load_bytes(&mut self, source: &str, bytes: &[u8]) -> Result<(), String> {
        let ck = checkpoint::decode(bytes).map_err(|e| format!("{source}: not a CDL weights file: {e}"))?;
        ck.check_finite().map_err(|e| format!("{source}: {e}"))?;
        let trained = Trained::new(ck).map_err(|e| format!("{source}: {e}"))?;
        let m = Model::from_checkpoint(&self.gpu, self.model.run.config(), &trained, &self.data)
            .await
            .map_err(|e| format!("{source}: {e}"))?;
        self.model = m;
        self.kept = Some(trained.checkpoint);
        dom::set_value("img-loss", self.model.loss().name());
        dom::set_value("img-batch", &self.model.run.config().batch.to_string());
        Ok(())
    }
}

impl runtime::Task for ImagePage {
    type Cmd = ImageCommand;

    fn control(&mut self) -> &mut Control<ImageCommand> {
        &mut self.ctl
    }

    fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn lost_cmd(generation: u32, msg: String) -> ImageCommand {
        ImageCommand::Lost(generation, msg)
    }

    fn allowed_when_lost(cmd: &ImageCommand) -> bool {
        matches!(cmd, ImageCommand::Restart | ImageCommand::Lost(..))
    }

    fn stale(&self) -> bool {
        self.model.samples_step != Some(self.model.step())
    }

    async fn handle(&mut self, cmd: ImageCommand) -> Result<(), String> {
        match cmd {
            ImageCommand::Start => self.ctl.start(),
            ImageCommand::Pause => self.ctl.stop(),
            ImageCommand::Step => self.ctl.pending_steps += self.opts.step_size,
            ImageCommand::Reset => self.reset().await?,
            ImageCommand::Shapes => {
                self.data = ImageDataSet::shapes(self.opts.shapes, self.opts.settings.config.seed);
                self.reset().await?;
            }
            ImageCommand::Cifar(name, images) => {
                if images.is_empty() {
                    return Err(format!("{name}: no images"));
                }
                self.data = ImageDataSet::new(name, Box::new(cifar::CifarExamples::new(images, true, false)));
                dom::set_value("img-data", "cifar");
                self.reset().await?;
            }
            ImageCommand::SaveFile => self.save_file().await?,
            ImageCommand::SaveStorage => {
                let r = self.save_storage().await;
                dom::show_result(WEIGHTS_MSG, &r);
            }
            ImageCommand::LoadStorage => {
                let r = match store::load(STORAGE_KEY).await {
                    Ok(Some(bytes)) => self.load_bytes("browser storage", &bytes).await,
                    Ok(None) => Err("nothing saved in browser storage yet".into()),
                    Err(e) => Err(e),
                };
                let r = r.map(|()| "loaded the weights saved in this browser".to_string());
                dom::show_result(WEIGHTS_MSG, &r);
                self.refresh_samples().await;
            }
            ImageCommand::LoadFile(name, bytes) => {
                let r = self.load_bytes(&name, &bytes).await.map(|()| format!("loaded {name}"));
                dom::show_result(WEIGHTS_MSG, &r);
                self.refresh_samples().await;
            }
            ImageCommand::Resample => {
                self.model.samples_step = None;
                self.refresh_samples().await;
            }
            ImageCommand::LoadInception(name, bytes) => {
                let r = Quality::load(&name, &bytes).map(|q| {
                    self.quality = Some(q);
                    format!("loaded {name}: the FID Inception-v3 network")
                });
                dom::show_result(QUALITY_MSG, &r);
                dom::set_disabled("img-fid", self.quality.is_none());
                if self.quality.is_some() {
                    dom::set_attr("img-fid", "title", "FID and KID of fresh samples against as many training images");
                }
            }
            ImageCommand::Quality => {
                let r = self.measure_quality().await;
                dom::show_result(QUALITY_MSG, &r);
            }
            ImageCommand::Lost(generation, msg) => {
                self.ctl.on_lost(generation, msg, self.kept.as_ref().map(|c| c.step))
            }
            ImageCommand::Restart => self.restart().await?,
            ImageCommand::LoseDevice => self.gpu.device.destroy(),
        }
        Ok(())
    }

    async fn train_chunk(&mut self) -> Result<(), String> {
        let n = self.ctl.next_chunk(self.opts.chunk);
        let t0 = dom::now_ms();
        self.model.train(&self.gpu, n).await?;
        self.ctl.chunk_done(n, t0, self.model.step(), self.opts.chunk == 0);
        Ok(())
    }

    /// Fresh samples (EMA weights, fixed seed, so the grid changes only with the weights).
    async fn refresh_samples(&mut self) {
        self.ctl.sampled_at = dom::now_ms();
        if self.model.samples_step == Some(self.model.step()) {
            return;
        }
        let cfg = self.sampler();
        let n = self.opts.samples;
        let drawn = match GpuDenoiser::from_trainer(&self.gpu, self.model.run.trainer(), n).await {
            Ok(mut den) => {
                // Clipping x̂₀ to the data's [-1, 1] keeps a young model's samples from saturating.
                let clip = dom::checked("img-clip").unwrap_or(self.opts.clip);
                den.sample_on_device(&cfg, n, 1, clip.then_some((-1.0, 1.0))).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match drawn {
            Ok((x, _)) => {
                self.model.samples = x.iter().map(|&v| v as f32).collect();
                self.model.samples_step = Some(self.model.step());
                self.model.samples_version += 1;
            }
            Err(e) => crate::gpu::log(&format!("cdl: sampling: {e}")),
        }
    }

    async fn back_up_weights(&mut self) {
        self.ctl.kept_at = dom::now_ms();
        if self.kept.as_ref().is_some_and(|c| c.step == self.model.step()) {
            return;
        }
        if let Ok(ck) = self.model.checkpoint(&self.gpu).await {
            self.kept = Some(ck);
        }
    }

    fn redraw(&mut self) {
        let running = self.ctl.shared.borrow().running;
        dom::set_body_data("running", if running { "1" } else { "0" });
        let m = &self.model;
        let d = &self.data;
        draw::image_grid("img-data-grid", &d.preview, d.preview.len() / (3 * SIDE * SIDE), SIDE, 4);
        let n = m.samples.len() / (3 * SIDE * SIDE);
        self.grid_drawn = n > 0 && draw::image_grid("img-samples", &m.samples, n, SIDE, 4);
        draw::losses("img-curve", &m.log.steps, m.step().saturating_sub(m.log.steps.len() as u64), None);
        dom::set_text("img-title", &format!("{} on {}", loss_label(m.loss()), d.name()));
        let mut text = format!("step {}", m.step());
        if let Some(r) = m.log.steps.last() {
            text += &format!("  ·  loss {:.4}", r[0]);
            if m.loss().has_cdl() {
                text += &format!(" (std {:.4}, cdl {:.4})", r[1], r[2]);
            }
            if matches!(m.loss(), LossKind::Itd | LossKind::Cdl) {
                // The ITD loss estimates −log p(x) in nats (math.md §2.2): continuous bits/dim.
                let bpd = f64::from(r[1]) / ((3 * SIDE * SIDE) as f64 * std::f64::consts::LN_2);
                text += &format!("  ·  ≈ {bpd:.2} bits/dim (continuous)");
            }
        }
        if let Some(a) = m.log.accuracy {
            text += &format!("  ·  noise classifier {:.0}% right", 100.0 * a);
        }
        if let Some(s) = m.samples_step {
            text += &format!("  ·  samples from step {s}");
        }
        dom::set_text("img-stats", &text);
        dom::set_text(
            "img-rate",
            &format!(
                "{:.2} img/s ({:.2} steps/s of {} images) · chunk {} · {} ({} images)",
                self.ctl.meter.steps_per_s * m.run.config().batch as f64,
                self.ctl.meter.steps_per_s,
                m.run.config().batch,
                self.ctl.meter.chunk,
                d.name(),
                d.training.examples.len()
            ),
        );
    }

    fn publish(&mut self) {
        let m = &self.model;
        let (first, last) = m.log.first_last(10).unzip();
        let s = json!({
            "ready": true,
            "mode": "image",
            "running": self.ctl.shared.borrow().running,
            "pending": self.ctl.pending_steps,
            "lost": self.ctl.lost,
            "message": self.ctl.message,
            "stepsPerSec": self.ctl.meter.steps_per_s,
            "imagesPerSec": self.ctl.meter.steps_per_s * m.run.config().batch as f64,
            "chunk": self.ctl.meter.chunk,
            "data": { "name": self.data.name(), "n": self.data.training.examples.len() },
            "model": {
                "loss": m.loss().name(), "step": m.step(), "batch": m.run.config().batch,
                "channels": ImageSettings::of(&m.run).unet.channels, "params": m.run.trainer().net().params().layout.count(),
                "history": m.log.steps.len(), "lossFirst": first, "lossLast": last, "accuracy": m.log.accuracy,
                "samples": m.samples.len() / (3 * SIDE * SIDE), "samplesStep": m.samples_step,
                "samplesVersion": m.samples_version, "gridDrawn": self.grid_drawn,
                "samplesHash": runtime::hash_bits(m.samples.iter().map(|x| u64::from(x.to_bits()))),
                "keptStep": self.kept.as_ref().map(|c| c.step),
            },
            "kernels": runtime::kernels_json(&self.gpu),
            "quality": {
                "weights": self.quality.as_ref().map(|q| q.name.clone()),
                "scores": self.scores.map(|(step, fid, kid, kid_std, n)| json!({
                    "step": step, "fid": fid, "kidMean": kid, "kidStd": kid_std, "n": n,
                })),
            },
        });
        self.ctl.shared.borrow_mut().state = s.to_string();
    }
}
