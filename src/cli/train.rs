//! `cdl train`: trains the 2-D toy denoiser or a UNet and writes a run directory (`config.toml`,
//! `checkpoint.safetensors`, `metrics.jsonl`); `--resume` continues a run exactly, even one killed
//! at any moment. The run itself is `train::run::Run`; this front keeps the flags and their TOML
//! file (`--config`), the run directory, the metrics lines, Ctrl-C and the progress bar.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use cdl::gpu::Gpu;
use cdl::model::Precond;
use cdl::text::OneLine;
use cdl::train::checkpoint;
use cdl::train::dist::{self, Collective};
use cdl::train::recipe::LossKind;
use cdl::train::run::{Run, RunConfig, Trained, TrainingData, MODELS};
use cdl::train::trainer::StepStats;

/// Checkpoint file name inside the run directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// Metrics file name inside the run directory.
pub const METRICS: &str = "metrics.jsonl";
/// The folder of the run's pictures inside the run directory: `step-<step>.png` samples every
/// `--sample-every` steps and `loss.png`.
pub const PICTURES: &str = "samples";
/// The loss curves of `metrics.jsonl` inside `PICTURES`, redrawn with every sample picture and at
/// the end of the run.
pub const LOSS_PICTURE: &str = "loss.png";
/// The resolved run config inside the run directory.
const CONFIG: &str = "config.toml";
/// TOML files larger than this are refused before reading.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct TrainArgs {
    /// A TOML run config (keys = these flags with underscores, e.g. `lambda_cdl = 0.5`); flags on
    /// the command line override it. Presets: configs/*.toml.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Training data: a built-in 2-D set (moons, spirals, checkerboard, 8gaussians, circles, dino),
    /// a CSV file of x,y points (header optional; standardised per coordinate), or for a UNet
    /// CIFAR-10 (cifar-10-binary.tar.gz, its cifar-10-batches-bin folder or one .bin batch) or a
    /// folder of PNG/JPEG images (center-cropped and resized to the model size) or "shapes", a
    /// built-in procedural set of coloured shapes on gradients (10,000 images, no download).
    #[arg(long, default_value_t = RunConfig::default().data)]
    pub data: String,
    /// Model: mlp (2-D points), unet-tiny (16 px), unet-compact or unet-small (32 px, math.md §8).
    #[arg(long, default_value_t = RunConfig::default().model, value_parser = MODELS)]
    pub model: String,
    /// Image data: class-conditional UNet on CIFAR-10's labels.
    #[arg(long)]
    pub classes: bool,
    /// Image data: random horizontal flips.
    #[arg(long)]
    pub flip: bool,
    /// Loss: ddpm, itd, cdl (ITD + the contrastive diffusion loss), edm (EDM's loss; with EDM's
    /// preconditioning the paper's VP baseline), edm-cdl, edm-ve (EDM's weighting over the VE σ
    /// range, the paper's VE baseline), edm-ve-cdl, vp or ve (Song's).
    #[arg(long, default_value_t = RunConfig::default().loss)]
    pub loss: LossKind,
    /// Optimizer steps.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=4_000_000_000))]
    pub steps: u64,
    /// Examples per step, B.
    #[arg(long, default_value_t = RunConfig::default().batch, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch: u64,
    /// Peak learning rate (Adam).
    #[arg(long, default_value_t = RunConfig::default().lr)]
    pub lr: f64,
    /// Linear learning-rate warm-up, in steps.
    #[arg(long, default_value_t = RunConfig::default().warmup)]
    pub warmup: u64,
    /// EMA decay of the weights (with a (1+s)/(10+s) warm-up).
    #[arg(long, default_value_t = RunConfig::default().ema)]
    pub ema: f64,
    /// Clip the global gradient norm to this value; 0 (the paper's setting) turns clipping off.
    #[arg(long, default_value_t = RunConfig::default().clip)]
    pub clip: f64,
    /// Seed of the model init, the data order and every noise draw.
    #[arg(long, default_value_t = RunConfig::default().seed)]
    pub seed: u64,
    /// CDL: anchors per step, K.
    #[arg(long, default_value_t = RunConfig::default().anchors, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub anchors: u64,
    /// CDL: integration points per anchor, M.
    #[arg(long, default_value_t = RunConfig::default().points, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub points: u64,
    /// CDL: weight λ_cdl of the contrastive term.
    #[arg(long, default_value_t = RunConfig::default().lambda_cdl)]
    pub lambda_cdl: f64,
    /// CDL: draw the two density terms independently, as the authors' code does (default:
    /// common random numbers, far lower variance).
    #[arg(long)]
    pub independent_draws: bool,
    /// CDL: normalise Σ_k ℓ_k by the batch size (authors) or by the number of anchors.
    #[arg(long, default_value_t = RunConfig::default().cdl_norm, value_parser = ["batch", "anchors"])]
    pub cdl_norm: String,
    /// ITD and CDL: location μ of the truncated logistic the log-SNR levels α are drawn from
    /// (α = μ + s·logit(u), |α − μ| ≤ c·s). Default: −mean ln(variance) for 2-D points, the
    /// CIFAR constants of math.md §1.5 for images.
    #[arg(long, allow_hyphen_values = true)]
    #[serde(default)]
    pub levels_mu: Option<f64>,
    /// ITD and CDL: scale s of that logistic. Default 3 for 2-D points, the CIFAR constants of math.md §1.5 for images.
    #[arg(long)]
    #[serde(default)]
    pub levels_scale: Option<f64>,
    /// ITD and CDL: clip c of that logistic, in units of s. Default: wide enough that [μ − cs,
    /// μ + cs] covers every level the samplers query, α ∈ [−10.12, 12.43] (DDPM-1000, EDM Heun).
    #[arg(long)]
    #[serde(default)]
    pub levels_clip: Option<f64>,
    /// EDM losses: mean of ln σ (default −1.2, EDM's).
    #[arg(long, allow_hyphen_values = true)]
    #[serde(default)]
    pub edm_p_mean: Option<f64>,
    /// EDM losses: standard deviation of ln σ (default 1.2, EDM's).
    #[arg(long)]
    #[serde(default)]
    pub edm_p_std: Option<f64>,
    /// MLP hidden width.
    #[arg(long, default_value_t = RunConfig::default().width, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub width: u64,
    /// MLP residual blocks.
    #[arg(long, default_value_t = RunConfig::default().blocks, value_parser = clap::value_parser!(u64).range(0..=64))]
    pub blocks: u64,
    /// How the network's output becomes ε̂: edm (EDM's preconditioning, with σ_d = 1 for the MLP,
    /// ε̂ = sqrt(σ(−α))·x + sqrt(σ(α))·f, so ε̂ follows x at high noise and samples cannot run
    /// away, and σ_d = 0.5 for a UNet; the default) or eps (the output is ε̂, the paper's net).
    #[arg(long, value_parser = ["edm", "eps"])]
    pub precond: Option<String>,
    /// Points generated for a built-in data set.
    #[arg(long, default_value_t = RunConfig::default().toy_points, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub toy_points: u64,
    /// Write metrics every N steps.
    #[arg(long, default_value_t = RunConfig::default().log_every, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub log_every: u64,
    /// Write a checkpoint every N steps (a multiple of --log-every) and at the end.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub checkpoint_every: u64,
    /// Write a picture of samples (EMA weights, fixed seed) to <out>/samples/ every N steps, a
    /// multiple of --log-every: an 8x8 grid for images (DDIM-50), 1,000 points over the data for
    /// 2-D (DDPM-100). 0: never.
    #[arg(long, default_value_t = 0)]
    pub sample_every: u64,
    /// Steps of the sampler behind --sample-every's pictures (default: 50 for images, DDIM; 100
    /// for 2-D, DDPM). Fewer make each picture cheaper on a slow adapter, at lower quality.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sample_steps: Option<u32>,
    /// Run directory (default: runs/<data>-<loss>, or the first free runs/<data>-<loss>-2, -3, …;
    /// with --resume, runs/<data>-<loss>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its checkpoint (same flags; --steps may grow); a run
    /// stopped before its first checkpoint starts again from step 0.
    #[arg(long)]
    #[serde(skip)]
    pub resume: bool,
    /// Print only the final summary (default: a progress bar on a terminal, one line per
    /// --log-every steps otherwise).
    #[arg(long)]
    #[serde(skip)]
    pub quiet: bool,
    /// The final summary goes to stderr (callers whose stdout is JSON: `cdl bench quality`).
    #[arg(skip)]
    #[serde(skip)]
    pub summary_to_stderr: bool,
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The arguments with `--config`'s file applied under the flags given on the command line.
pub fn resolve(args: TrainArgs, matches: Option<&ArgMatches>) -> Result<TrainArgs, String> {
    let Some(path) = args.config.clone() else {
        args.check()?;
        return Ok(args);
    };
    // Escaped: a file name may hold a newline, and every error below names the file.
    let shown = OneLine(&path.display().to_string()).to_string();
    let len = fs::metadata(&path).map_err(|e| format!("cannot read the config {shown}: {e}"))?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(format!("{shown}: {len} bytes is too large for a run config (at most {MAX_CONFIG_BYTES})"));
    }
    let text = fs::read_to_string(&path).map_err(|e| format!("cannot read the config {shown}: {e}"))?;
    apply_config(args, &text, &shown, matches)
}

/// `args` with the TOML run config `text` applied under the flags given on the command line
/// (`matches`), every value range-checked; `shown` names the file in the one-line errors.
/// Pure (no file access), so the fuzz targets and property tests call it directly.
///
/// The file's keys are the flag names with underscores (presets in `configs/`); unknown keys are
/// refused with the closest valid key suggested.
pub fn apply_config(
    args: TrainArgs,
    text: &str,
    shown: &str,
    matches: Option<&ArgMatches>,
) -> Result<TrainArgs, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        format!("{shown}: not valid TOML: {}", e.message().lines().next().unwrap_or("syntax error"))
    })?;
    let mut v = serde_json::to_value(&args).map_err(|e| e.to_string())?;
    let obj = v.as_object_mut().ok_or("internal: arguments are not an object")?;
    let known: Vec<String> = obj.keys().cloned().collect();
    for (key, value) in table {
        if !known.contains(&key) {
            let best = known.iter().min_by_key(|k| edit_distance(k, &key)).cloned().unwrap_or_default();
            return Err(format!("{shown}: unknown key `{}`; did you mean `{best}`?", OneLine(&key)));
        }
        let from_cli = matches.and_then(|m| m.value_source(&key)) == Some(ValueSource::CommandLine);
        if !from_cli {
            obj.insert(key, serde_json::to_value(value).map_err(|e| e.to_string())?);
        }
    }
    let mut out: TrainArgs = serde_json::from_value(v).map_err(|e| format!("{shown}: {e}"))?;
    out.config = args.config;
    out.resume = args.resume;
    out.quiet = args.quiet;
    out.check().map_err(|e| format!("{shown}: {e}"))?;
    Ok(out)
}

#[derive(clap::Parser)]
struct DefaultsOnly {
    #[command(flatten)]
    args: TrainArgs,
}

impl TrainArgs {
    /// The ranges clap enforces on flags, for values that come from a config file.
    pub fn check(&self) -> Result<(), String> {
        let ranges: [(&str, u64, u64, u64); 2] =
            [("steps", self.steps, 1, 4_000_000_000), ("checkpoint_every", self.checkpoint_every, 1, 1_000_000_000)];
        for (name, v, lo, hi) in ranges {
            if v < lo || v > hi {
                return Err(format!("{name} = {v} is out of range {lo}..={hi}"));
            }
        }
        self.run_config().validate().map_err(|e| e.to_string())
    }

    /// The first of checkpoint_every and sample_every (0: never) that is not a multiple of
    /// log_every, with its value: a run's chunks end at its metrics lines, so checkpoints and
    /// pictures can only fall there.
    pub fn off_the_log_grid(&self) -> Option<(&'static str, u64)> {
        [("checkpoint_every", self.checkpoint_every), ("sample_every", self.sample_every)]
            .into_iter()
            .find(|(_, every)| !every.is_multiple_of(self.log_every))
    }

    /// Every flag at its default (what `cdl train` with no flags runs).
    pub fn defaults() -> Self {
        <DefaultsOnly as clap::Parser>::parse_from(["cdl"]).args
    }

    /// The flags that define the run (everything that changes a step's result), as stored in the
    /// checkpoint, the preconditioning resolved; `--resume` refuses a checkpoint of another run.
    pub fn run_config(&self) -> RunConfig {
        let mut run = RunConfig {
            data: self.data.clone(),
            model: self.model.clone(),
            classes: self.classes,
            flip: self.flip,
            loss: self.loss,
            batch: self.batch,
            lr: self.lr,
            warmup: self.warmup,
            ema: self.ema,
            clip: self.clip,
            seed: self.seed,
            anchors: self.anchors,
            points: self.points,
            lambda_cdl: self.lambda_cdl,
            independent_draws: self.independent_draws,
            cdl_norm: self.cdl_norm.clone(),
            levels_mu: self.levels_mu,
            levels_scale: self.levels_scale,
            levels_clip: self.levels_clip,
            edm_p_mean: self.edm_p_mean,
            edm_p_std: self.edm_p_std,
            width: self.width,
            blocks: self.blocks,
            precond: self.precond.clone(),
            toy_points: self.toy_points,
            log_every: self.log_every,
        };
        if run.precond.as_deref().is_none_or(|p| Precond::parse(p).is_ok()) {
            run.precond = Some(run.precond().name().into());
        }
        run
    }

    /// `--out`, or runs/<data>-<loss>: with `--resume` that folder, otherwise the first of
    /// runs/<data>-<loss>, runs/<data>-<loss>-2, … that holds no run yet, so the default command
    /// can be run again without touching an earlier run.
    fn out_dir(&self) -> PathBuf {
        if let Some(out) = &self.out {
            return out.clone();
        }
        let stem = Path::new(&self.data).file_stem().map_or("data".into(), |s| s.to_string_lossy().into_owned());
        let base = PathBuf::from("runs").join(format!("{stem}-{}", self.loss));
        if self.resume {
            return base;
        }
        (1..)
            .map(|i| if i == 1 { base.clone() } else { PathBuf::from(format!("{}-{i}", base.display())) })
            .find(|d| !d.join(CHECKPOINT).exists())
            .unwrap_or(base)
    }
}

/// Statistics of the steps since the last metrics line.
#[derive(Default)]
struct Window {
    steps: Vec<StepStats>,
}

impl Window {
    fn line(&mut self, elapsed: f64, window_s: f64, batch: u64) -> Option<Value> {
        let last = self.steps.last()?.clone();
        let n = self.steps.len() as f64;
        let avg = |f: &dyn Fn(&StepStats) -> f64| self.steps.iter().map(f).sum::<f64>() / n;
        let logits = |label: f32| {
            let v: Vec<f64> = self
                .steps
                .iter()
                .flat_map(|s| {
                    s.logits.iter().zip(&s.labels).filter(move |(_, l)| **l == label).map(|(f, _)| f64::from(*f))
                })
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let acc: Vec<f64> = self.steps.iter().filter_map(StepStats::accuracy).collect();
        let line = json!({
            "step": last.step,
            "loss": avg(&|s| f64::from(s.loss)),
            "loss_std": avg(&|s| f64::from(s.std)),
            "loss_cdl": avg(&|s| f64::from(s.cdl)),
            "grad_norm": avg(&|s| f64::from(s.grad_norm)),
            "lr": last.lr,
            "cdl_accuracy": (!acc.is_empty()).then(|| acc.iter().sum::<f64>() / acc.len() as f64),
            "logit_clean": logits(1.0),
            "logit_noisy": logits(-1.0),
            "steps_per_s": n / window_s.max(1e-9),
            "examples_per_s": n * batch as f64 / window_s.max(1e-9),
            "elapsed_s": elapsed,
        });
        self.steps.clear();
        Some(line)
    }
}

/// What a run that stops leaves: the checkpoint of step `saved`, if one was written.
fn kept(dir: &Path, saved: Option<u64>) -> String {
    match saved {
        Some(step) => format!("the last checkpoint in {} (step {step}) is kept", dir.display()),
        None => format!("no checkpoint was written in {}", dir.display()),
    }
}

/// Refuses `--resume` into a run directory without a checkpoint whose config.toml (written
/// before the first step) describes another run.
fn check_started_run(dir: &Path, run: &RunConfig) -> Result<(), String> {
    let path = dir.join(CONFIG);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot resume: cannot read {}: {e}", path.display())),
    };
    let started: TrainArgs = toml::from_str(&text).map_err(|e| {
        format!("cannot resume: {} is not a run config: {}", path.display(), e.message().lines().next().unwrap_or(""))
    })?;
    let stored = started.run_config();
    if stored != *run {
        return Err(format!(
            "cannot resume: {} started a run with {}, not {}; use the same flags",
            path.display(),
            shown(&stored),
            shown(run)
        ));
    }
    Ok(())
}

/// A run config as one line of JSON, for messages.
fn shown(run: &RunConfig) -> String {
    serde_json::to_string(run).unwrap_or_else(|e| format!("<{e}>"))
}

/// Keeps the metrics lines of steps <= `step` (a resumed run rewrites what came after); a line
/// that does not parse (the torn end of a killed write) is dropped.
fn truncate_metrics(path: &Path, step: u64) -> Result<(), String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s <= step))
        .map(|l| format!("{l}\n"))
        .collect();
    checkpoint::write_atomic(path, |f| f.write_all(kept.as_bytes())).map_err(|e| e.to_string())
}

/// Runs `cdl train` into its run directory: `config.toml` (the resolved run),
/// `checkpoint.safetensors` (model, EMA, Adam moments, step, run config, data standardisation;
/// written atomically every `--checkpoint-every` steps and at the end) and `metrics.jsonl` (one
/// JSON object per `--log-every` steps). `--resume` continues a run from its checkpoint exactly
/// (same batches, same noise) and drops metrics lines written after it; a run killed before its
/// first checkpoint resumes from step 0. A run killed at any moment (SIGKILL) resumes this way:
/// every file is replaced atomically except metrics.jsonl, whose torn last line `--resume` drops.
///
/// As one rank of a data-parallel run (`comm`, `mpirun -n R cdl train`): every rank trains its
/// shard of each step and holds the same weights (checked by hash at every checkpoint); rank 0
/// alone writes the run directory and prints.
pub async fn train(gpu: &Gpu, mut args: TrainArgs, comm: Option<Rc<dyn Collective>>) -> Result<(), String> {
    let rank = comm.as_ref().map_or(0, |c| c.rank());
    let writer = rank == 0;
    if !writer {
        args.quiet = true;
    }
    if let Some((key, every)) = args.off_the_log_grid() {
        let flag = key.replace('_', "-");
        return Err(format!("--{flag} ({every}) must be a multiple of --log-every ({})", args.log_every));
    }
    let config = args.run_config();
    let data = Rc::new(TrainingData::load(&config).map_err(|e| e.to_string())?);

    let dir = args.out_dir();
    let (ck_path, metrics_path) = (dir.join(CHECKPOINT), dir.join(METRICS));
    // A run killed before its first checkpoint resumes from step 0; `try_exists` errors fall
    // through to `load`, which names them.
    let fresh_resume = args.resume && matches!(ck_path.try_exists(), Ok(false));
    let resuming = args.resume && !fresh_resume;
    // The run is assembled before anything is written, so a run that cannot start leaves no trace.
    let mut run = if resuming {
        let trained = Trained::load(&ck_path).map_err(|e| format!("cannot resume: {e}"))?;
        let stored = trained
            .meta
            .run
            .as_ref()
            .ok_or_else(|| format!("cannot resume: {} has no run config", ck_path.display()))?;
        if *stored != config {
            return Err(format!(
                "cannot resume: {} was trained with {}, not {}; use the same flags",
                ck_path.display(),
                shown(stored),
                shown(&config)
            ));
        }
        Run::resume_on(gpu, config, &trained, data, comm.clone())
            .await
            .map_err(|e| format!("cannot resume from {}: {e}", ck_path.display()))?
    } else {
        Run::new_on(gpu, config, data, comm.clone()).await.map_err(|e| e.to_string())?
    };
    if !writer {
        return follow(gpu, &args, &mut run, comm.as_deref()).await;
    }
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create the run directory {}: {e}", dir.display()))?;
    // The step of the checkpoint on disk, for the message of a run that stops.
    let mut saved: Option<u64> = None;
    if resuming {
        truncate_metrics(&metrics_path, run.step())?;
        saved = Some(run.step());
    } else if fresh_resume {
        check_started_run(&dir, run.config())?;
        eprintln!("no checkpoint in {} yet: starting the run from step 0", dir.display());
        fs::write(&metrics_path, "").map_err(|e| format!("cannot write {}: {e}", metrics_path.display()))?;
    } else if ck_path.exists() {
        return Err(format!(
            "{} already holds a run; pass --resume to continue it or choose another --out",
            dir.display()
        ));
    } else {
        fs::write(&metrics_path, "").map_err(|e| format!("cannot write {}: {e}", metrics_path.display()))?;
    }
    // What killed writes of an earlier process left behind.
    for file in [CHECKPOINT, METRICS, CONFIG] {
        checkpoint::remove_stale_temporaries(&dir.join(file));
    }
    let resolved = toml::to_string(&args).map_err(|e| format!("cannot write the resolved config: {e}"))?;
    checkpoint::write_atomic(dir.join(CONFIG), |f| f.write_all(resolved.as_bytes())).map_err(|e| e.to_string())?;
    let mut metrics = fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .map_err(|e| format!("cannot open {}: {e}", metrics_path.display()))?;

    if !args.quiet {
        let ranks = comm.as_ref().map_or(1, |c| c.ranks());
        println!(
            "training {} ({} parameters, {} rows per step{}) on {} ({} points) with the {} loss for {} steps",
            run.trainer().net().arch(),
            run.trainer().net().params().layout.count(),
            run.trainer().config().rows(),
            if ranks > 1 { format!(" over {ranks} ranks") } else { String::new() },
            args.data,
            run.data().examples.len(),
            args.loss,
            args.steps
        );
    }
    let started = Instant::now();
    let mut window_start = Instant::now();
    let mut window = Window::default();
    catch_interrupts();
    let bar = (!args.quiet && std::io::stdout().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(args.steps);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  {per_sec}  ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_position(run.step());
        b
    });
    while run.step() < args.steps {
        let stats = match run.train_chunk(gpu, chunk_len(&args, &run)).await {
            Ok(stats) => stats,
            Err(e) => return Err(format!("{e}; {}", kept(&dir, saved))),
        };
        window.steps.extend(stats);
        let s = run.step();
        if let Some(b) = &bar {
            b.set_position(s);
        }
        if s.is_multiple_of(args.log_every) || s == args.steps {
            let secs = window_start.elapsed().as_secs_f64();
            if let Some(line) = window.line(started.elapsed().as_secs_f64(), secs, args.batch) {
                checkpoint::write_pausable(&mut metrics, format!("{line}\n").as_bytes(), "metrics.jsonl/mid-line")
                    .map_err(|e| format!("cannot write {}: {e}", metrics_path.display()))?;
                checkpoint::pause_point("metrics.jsonl/after-line");
                match &bar {
                    Some(b) => {
                        let num = |k: &str| line[k].as_f64().unwrap_or(f64::NAN);
                        b.set_message(format!(
                            "loss {:.4} (std {:.4}, cdl {:.4})",
                            num("loss"),
                            num("loss_std"),
                            num("loss_cdl")
                        ));
                    }
                    None if !args.quiet => println!("{}", progress(&line, args.steps)),
                    None => {}
                }
            }
            window_start = Instant::now();
        }
        if args.sample_every > 0 && s.is_multiple_of(args.sample_every) {
            let pictures = dir.join(PICTURES);
            sample_picture(gpu, &run, &pictures.join(format!("step-{s:07}.png")), &args).await?;
            loss_picture(&metrics_path, &pictures.join(LOSS_PICTURE), &args)?;
        }
        // Ctrl-C stops at the next metrics line (chunks end there), so the checkpoint and the
        // metrics file agree and `--resume` continues the curve exactly.
        let interrupted = interrupted_at(&args, s, comm.as_deref())?;
        if checkpoint_due(&args, s, interrupted) {
            check_ranks(gpu, &run, comm.as_deref()).await?;
            let ck = run.checkpoint(gpu).await.map_err(|e| e.to_string())?;
            // The loss and gradient checks cannot see an update that overflows the weights
            // themselves (a learning rate beyond f32); such a state is never written.
            if let Err(e) = ck.check_finite() {
                return Err(format!("training stopped at step {s}: after the update, {e}; {}", kept(&dir, saved)));
            }
            checkpoint::save(&ck_path, &ck).map_err(|e| e.to_string())?;
            saved = Some(s);
        }
        if interrupted {
            println!("interrupted at step {s}: wrote {}; continue with the same flags and --resume", ck_path.display());
            return Ok(());
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    loss_picture(&metrics_path, &dir.join(PICTURES).join(LOSS_PICTURE), &args)?;
    let summary = format!(
        "trained {} steps in {:.1} s; wrote {} and {}",
        run.step(),
        started.elapsed().as_secs_f64(),
        ck_path.display(),
        metrics_path.display()
    );
    if args.summary_to_stderr {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(())
}

/// The loop of a rank other than 0: the same chunks, interrupt decisions and weight checks as
/// rank 0's loop (so every collective meets its partners), without files or output.
async fn follow(gpu: &Gpu, args: &TrainArgs, run: &mut Run, comm: Option<&dyn Collective>) -> Result<(), String> {
    catch_interrupts();
    while run.step() < args.steps {
        run.train_chunk(gpu, chunk_len(args, run)).await.map_err(|e| e.to_string())?;
        let s = run.step();
        let interrupted = interrupted_at(args, s, comm)?;
        if checkpoint_due(args, s, interrupted) {
            check_ranks(gpu, run, comm).await?;
        }
        if interrupted {
            return Ok(());
        }
    }
    Ok(())
}

/// Steps of the next chunk: up to the next metrics line, the end of the run or the trainer's limit.
fn chunk_len(args: &TrainArgs, run: &Run) -> usize {
    let s = run.step();
    (args.log_every - s % args.log_every).min(args.steps - s).min(run.chunk_limit() as u64) as usize
}

/// Whether a checkpoint is written after step `s` (and, data-parallel, the ranks' weights compared).
fn checkpoint_due(args: &TrainArgs, s: u64, interrupted: bool) -> bool {
    s.is_multiple_of(args.checkpoint_every) || s == args.steps || interrupted
}

/// Whether the run stops for Ctrl-C after step `s`: at a metrics line, and, data-parallel, when any
/// rank was interrupted (all ranks decide alike).
fn interrupted_at(args: &TrainArgs, s: u64, comm: Option<&dyn Collective>) -> Result<bool, String> {
    if !s.is_multiple_of(args.log_every) {
        return Ok(false);
    }
    let mut flag = [f32::from(u8::from(INTERRUPTED.load(Ordering::SeqCst)))];
    if let Some(c) = comm {
        c.sum_f32(&mut flag)?;
    }
    Ok(flag[0] > 0.0)
}

/// Data-parallel: stops with an error unless every rank holds the same weights.
async fn check_ranks(gpu: &Gpu, run: &Run, comm: Option<&dyn Collective>) -> Result<(), String> {
    let Some(c) = comm.filter(|c| c.ranks() > 1) else { return Ok(()) };
    let hash = run.trainer().weights_hash(gpu).await.map_err(|e| e.to_string())?;
    dist::check_same_weights(c, hash, run.step())
}

/// The run's progress picture: an image grid (DDIM-50, 64 samples) or 1,000 2-D samples
/// (DDPM-100) over 2,000 data points, with the EMA weights and a fixed seed; `--sample-steps`
/// replaces the sampler's 50 or 100 steps.
async fn sample_picture(gpu: &Gpu, run: &Run, file: &Path, args: &TrainArgs) -> Result<(), String> {
    use cdl::diffusion::sampler::{DdpmVariance, SamplerConfig};
    use cdl::eval::figure::{self, Series, DATA_COLOR, SAMPLE_COLOR};
    use cdl::eval::plot;
    let d = run.trainer().net().row_len();
    let steps = args.sample_steps;
    let (n, cfg) = if d == 2 {
        (1000, SamplerConfig::Ddpm { steps: steps.map_or(100, |s| s as usize), variance: DdpmVariance::Beta })
    } else {
        (64, SamplerConfig::Ddim { steps: steps.map_or(50, |s| s as usize) })
    };
    let mut den =
        cdl::eval::denoiser::GpuDenoiser::from_trainer(gpu, run.trainer(), n).await.map_err(|e| e.to_string())?;
    let (x, _) = den.sample_on_device(&cfg, n, 0, None).await.map_err(|e| e.to_string())?;
    let xs: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let title = format!("{}: {} loss, step {}", args.data, args.loss, run.step());
    let sampler = format!("{n} samples, {}, EMA weights", cfg.name());
    let img = if d == 2 {
        let data = &run.data().examples;
        let m = data.len().min(2000);
        let idx: Vec<u32> = (0..m as u32).collect();
        let (mut pts, mut labels) = (vec![0f32; 2 * m], vec![0u32; m]);
        data.gather(&idx, 0, 0, &mut pts, &mut labels);
        let data_label = format!("{m} data points");
        let series = [
            Series { label: &data_label, points: &pts, color: DATA_COLOR },
            Series { label: &sampler, points: &xs, color: SAMPLE_COLOR },
        ];
        figure::scatter(&title, &series, plot::Bounds::covering(&[&pts], 0.1).squared(), 512)
    } else {
        let c = if d.is_multiple_of(3) { 3 } else { 1 };
        let side = ((d / c) as f64).sqrt().round() as usize;
        plot::image_grid(&xs, n, c, side, 8, 2).and_then(|grid| figure::image_figure(&title, &sampler, &grid))
    }
    .map_err(|e| e.to_string())?;
    if let Some(parent) = file.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    plot::save_png(file, &img).map_err(|e| e.to_string())
}

/// The loss curves of the run so far, from `metrics.jsonl`: the loss, and for CDL runs its
/// standard and CDL terms, against the step. Lines that do not parse (a torn last line) and
/// missing or non-finite values are left out; without a finite loss nothing is written.
fn loss_picture(metrics: &Path, file: &Path, args: &TrainArgs) -> Result<(), String> {
    use cdl::eval::figure::{self, Curve, CURVE_COLORS};
    let text = fs::read_to_string(metrics).map_err(|e| format!("cannot read {}: {e}", metrics.display()))?;
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let column = |key: &str| -> Vec<(f64, f64)> {
        let at = |v: &Value| Some((v["step"].as_f64()?, v[key].as_f64().filter(|x| x.is_finite())?));
        lines.iter().filter_map(at).collect()
    };
    let keys = [("loss", "loss"), ("loss_std", "standard term"), ("loss_cdl", "CDL term")];
    let cdl_run = column("loss_cdl").iter().any(|p| p.1 != 0.0);
    let columns: Vec<_> = keys.iter().take(if cdl_run { 3 } else { 1 }).map(|(k, l)| (column(k), *l)).collect();
    if columns[0].0.is_empty() {
        return Ok(());
    }
    let curves: Vec<Curve> =
        columns.iter().zip(CURVE_COLORS).map(|((points, label), color)| Curve { label, points, color }).collect();
    let title = format!("{}: {} loss, mean over every {} steps", args.data, args.loss, args.log_every);
    let img = figure::line_chart(&title, ("step", "loss"), &curves, 640, 400).map_err(|e| e.to_string())?;
    if let Some(parent) = file.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    cdl::eval::plot::save_png(file, &img).map_err(|e| e.to_string())
}

/// Set by SIGINT (Ctrl-C); a second one exits at once.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn catch_interrupts() {
    // Installing twice in one process (the experiment trains two models) fails harmlessly.
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("interrupt: finishing the current chunk and writing a checkpoint (Ctrl-C again to quit now)");
    });
}

fn progress(line: &Value, steps: u64) -> String {
    let num = |k: &str| line[k].as_f64().unwrap_or(f64::NAN);
    let mut s = format!(
        "step {:>7}/{steps}  loss {:.4} (std {:.4}, cdl {:.4})  grad {:.3}",
        line["step"],
        num("loss"),
        num("loss_std"),
        num("loss_cdl"),
        num("grad_norm")
    );
    if let Some(a) = line["cdl_accuracy"].as_f64() {
        s += &format!("  noise-classifier accuracy {a:.2}");
    }
    s + &format!("  {:.0} steps/s", num("steps_per_s"))
}
