//! `cdl bench quality`: does `cdl train` train as well as a plain PyTorch trainer of the same
//! network (`tools/reference_train.py`)? Both train at equal budgets on the same data, sample with
//! the same DDPM ancestral sampler, and are scored by the same metric (`Judge`) against the same
//! held-out data, over several seeds, with a paired verdict per (data, loss).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Args;
use serde_json::{json, Value};

use cdl::diffusion::logistic::TruncLogistic;
use cdl::diffusion::loss::{StdLoss, ZetaDist};
use cdl::eval::fd::{frechet_distance, pool_features};
use cdl::eval::mmd::{mmd, MMD_BANDWIDTH};
use cdl::eval::stats::{mean_se, outlier_fraction, saturated_fraction, verdict_threshold, Verdict};
use cdl::gpu::Gpu;
use cdl::train::checkpoint::{self, Checkpoint};
use cdl::train::data::{DataSource, Toy};
use cdl::train::recipe::LossKind;
use cdl::train::run::{held_out_images, NetConfig, Trained, TrainingData};

use super::experiment::data_stem;
use super::sample::{draw, load, reference_points, SamplerArgs, SamplerKind, VarianceKind};
use super::train::{self as train_cmd, TrainArgs};

/// Pixel blocks averaged into one image feature (2×2: 8×8 features per channel at 16 px).
const POOL: usize = 2;

#[derive(Args, Clone, Debug)]
pub struct QualityArgs {
    /// The network: mlp (2-D points) or a UNet preset (unet-tiny at 16 px on this machine).
    #[arg(long, default_value = "mlp", value_parser = ["mlp", "unet-tiny", "unet-compact", "unet-small"])]
    pub model: String,
    /// Data sets, comma-separated (default: moons, 8gaussians, spirals for the MLP; shapes for a
    /// UNet, which also takes an image folder).
    #[arg(long, value_delimiter = ',')]
    pub data: Vec<String>,
    /// Losses, comma-separated: ddpm, itd, cdl.
    #[arg(long, default_value = "ddpm,itd,cdl", value_delimiter = ',')]
    pub losses: Vec<String>,
    /// Training seeds: N of them, from --first-seed on.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub seeds: u64,
    /// The first training seed (seeds S..S+N), so that one set of seeds can be split over
    /// several invocations or machines and the reports pooled.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub first_seed: u64,
    /// Training steps of both trainers.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=4_000_000_000))]
    pub steps: u64,
    /// Examples per step, B (default: `cdl train`'s, 128).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch: Option<u64>,
    /// Samples per model, and held-out examples (default 1,000 points; 256 images).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    pub samples: Option<u64>,
    /// Steps T of the DDPM sampler, variance β, both trainers (default 1,000 for points, 100 for
    /// images).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=1000))]
    pub sampler_steps: Option<u64>,
    /// CDL: integration points per anchor, M (both trainers).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub points: u64,
    /// The network's preconditioning (both trainers): edm or eps (default: as `cdl train`).
    #[arg(long, value_parser = ["edm", "eps"])]
    pub precond: Option<String>,
    /// Python with torch (tools/reference_train.py); also read from CDL_PYTHON.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Working directory for the runs (default runs/bench-quality).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also write the JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// "μ,s,c" of a logistic, as reference_train.py's `--levels` and `--zeta` take it.
fn logistic_arg(q: &TruncLogistic) -> String {
    format!("{},{},{}", q.mu, q.s, q.c)
}

/// The `--levels` and `--zeta` flags (one word each: μ may be negative) of reference_train.py
/// for the loss `cdl train` resolved.
fn level_flags(args: &TrainArgs, variances: &[f64]) -> Result<Vec<String>, String> {
    let loss = args.run_config().loss_config(variances).map_err(|e| e.to_string())?;
    let mut flags = Vec::new();
    match loss.std {
        StdLoss::Ddpm => {}
        StdLoss::Itd { q } => flags.push(format!("--levels={}", logistic_arg(&q))),
        other => return Err(format!("the reference trainer has no {other:?} loss")),
    }
    if let Some(c) = &loss.cdl {
        match c.zeta {
            ZetaDist::Logistic(z) => flags.push(format!("--zeta={}", logistic_arg(&z))),
            ZetaDist::Uniform { .. } => return Err("the reference trainer draws ζ from a logistic only".into()),
        }
    }
    Ok(flags)
}

/// Trains tools/reference_train.py on the examples of `args` (the same as `cdl train`'s) in
/// `dir` and returns its `n` samples, DDPM-`sampler_steps`.
///
/// The reference is a plain PyTorch trainer over the mirror (`tools/mirror.py`, same network and
/// parameter names), given the same training examples (`TrainingData::all_examples`: the built-in
/// set generated with the run's seed, as `cdl train` generates it), the same model config, loss,
/// noise levels (the logistic of α and of ζ that `cdl train` resolved), batch, learning rate,
/// warm-up, EMA, clipping, K, M and λ; its own f64 DDPM-T sampler (variance β). Batch order and
/// random draws are torch's own, so the two agree in distribution, not bit for bit. The CDL side
/// is `cdl train`'s recipe in-process (`train::train`, the defaults of `cdl train` unless a flag
/// says otherwise), sampled with DDPM-T (variance β, EMA weights).
fn reference(
    python: &Path,
    dir: &Path,
    args: &TrainArgs,
    trained: &Trained,
    n: u64,
    sampler_steps: u64,
) -> Result<Vec<f64>, String> {
    let data = TrainingData::load(&args.run_config()).map_err(|e| e.to_string())?;
    let (x, d, variances) = (data.all_examples(args.seed), data.examples.row_len(), data.variances);
    let shape = match image_shape(trained)? {
        Some((c, size)) => vec![x.len() / d, c, size, size],
        None => vec![x.len() / d, d],
    };
    let data = dir.join("reference-data.safetensors");
    let out = dir.join("reference.safetensors");
    let mut ck = Checkpoint::new("data", "{}", 0);
    ck.insert("x", shape, x).map_err(|e| e.to_string())?;
    checkpoint::save(&data, &ck).map_err(|e| e.to_string())?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/reference_train.py");
    let num = |v: f64| v.to_string();
    let arch = if args.model == "mlp" { "mlp" } else { "unet" };
    let o = Command::new(python)
        .arg(script)
        .args(["--arch", arch, "--config", &trained.checkpoint.model_config, "--loss", args.loss.name()])
        .args(["--steps", &args.steps.to_string(), "--batch", &args.batch.to_string(), "--lr", &num(args.lr)])
        .args(["--warmup", &args.warmup.to_string(), "--ema", &num(args.ema), "--clip", &num(args.clip)])
        .args(["--anchors", &args.anchors.to_string(), "--points", &args.points.to_string()])
        .args(["--lambda-cdl", &num(args.lambda_cdl), "--seed", &args.seed.to_string()])
        .args(["--n", &n.to_string(), "--sample-steps", &sampler_steps.to_string(), "--threads", "2"])
        .args(level_flags(args, &variances)?)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let _ = std::fs::remove_file(&data);
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        return Err(format!("tools/reference_train.py failed: {}", err.lines().last().unwrap_or("no output")));
    }
    let ck = checkpoint::load(&out).map_err(|e| e.to_string())?;
    let s = ck.get("samples").ok_or("tools/reference_train.py wrote no samples")?;
    Ok(s.data.iter().map(|&v| f64::from(v)).collect())
}

/// Largest |coordinate| of `x`.
fn max_abs(x: &[f64]) -> f64 {
    x.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn summary(v: &[f64]) -> Value {
    let (m, se) = mean_se(v);
    json!({"mean": m, "se": if se.is_finite() { json!(se) } else { Value::Null }, "per_seed": v})
}

/// (channels, size) of a UNet checkpoint's images; None for the MLP.
fn image_shape(trained: &Trained) -> Result<Option<(usize, usize)>, String> {
    Ok(match trained.net().map_err(|e| e.to_string())? {
        NetConfig::Mlp(_) => None,
        NetConfig::UNet(c) => Some((c.in_channels, c.image_size)),
    })
}

/// The metric of one sample set against held-out data: MMD for points, the pixel Fréchet
/// distance for images.
///
/// - 2-D points (`--model mlp`): MMD (h = 0.03) against the held-out points (seed 1000 + s), the
///   fraction of samples beyond 4 data standard deviations and the largest |x|; the floor is the
///   held-out set against a second one of the same size.
/// - Images (`--model unet-tiny` …): a pixel-space Fréchet distance (`eval::fd`: each channel
///   averaged over 2×2 blocks, 192 features at 16 px) against held-out images
///   (`train::run::held_out_images`: `shapes` from another seed; an image folder has no split, so
///   its own images), and the fraction of saturated pixels; the floor is the held-out set against
///   a second one.
struct Judge {
    images: Option<(usize, usize)>,
    /// Features of the held-out set (pooled once).
    held: Vec<f64>,
    /// The floor's second held-out set, as samples.
    second: Vec<f64>,
}

impl Judge {
    fn new(images: Option<(usize, usize)>, held: &[f64], second: &[f64]) -> Result<Self, String> {
        let mut j = Self { images, held: Vec::new(), second: second.to_vec() };
        j.held = j.features(held)?;
        Ok(j)
    }

    fn features(&self, x: &[f64]) -> Result<Vec<f64>, String> {
        match self.images {
            Some((c, s)) => pool_features(x, c, s, POOL).map_err(|e| e.to_string()),
            None => Ok(x.to_vec()),
        }
    }

    fn score(&self, x: &[f64]) -> Result<f64, String> {
        let f = self.features(x)?;
        match self.images {
            Some((c, s)) => frechet_distance(&f, &self.held, c * (s / POOL) * (s / POOL)).map_err(|e| e.to_string()),
            None => mmd(&f, &self.held, 2, MMD_BANDWIDTH).map_err(|e| e.to_string()),
        }
    }

    /// Outliers for points (beyond 4 data standard deviations), saturated pixels for images.
    fn tail(&self, x: &[f64]) -> f64 {
        if self.images.is_some() {
            saturated_fraction(x)
        } else {
            outlier_fraction(x, 2)
        }
    }
}

/// Runs the comparison. Per (data, loss): mean ± standard error over seeds, the ratio of the
/// means, and the paired difference CDL − reference (same seed, same data) with its verdict
/// (Student's t at 95 %).
pub async fn quality(gpu: &Gpu, a: &QualityArgs) -> Result<Value, String> {
    let python = a
        .python
        .clone()
        .or_else(|| std::env::var_os("CDL_PYTHON").map(Into::into))
        .ok_or("cdl bench quality needs Python with torch: --python or CDL_PYTHON")?;
    let mut losses = Vec::new();
    for name in &a.losses {
        let k: LossKind = name.trim().parse()?;
        if !matches!(k, LossKind::Ddpm | LossKind::Itd | LossKind::Cdl) {
            return Err(format!("--losses: the reference trainer has ddpm, itd and cdl, not {k}"));
        }
        losses.push(k);
    }
    let mlp = a.model == "mlp";
    let sets: Vec<String> = if !a.data.is_empty() {
        a.data.clone()
    } else if mlp {
        ["moons", "8gaussians", "spirals"].map(String::from).to_vec()
    } else {
        vec!["shapes".into()]
    };
    for data in &sets {
        let toy = matches!(DataSource::parse(data), Ok(DataSource::Toy(_)));
        if mlp && !toy {
            return Err(format!(
                "--data {data}: cdl bench quality runs the MLP on the built-in 2-D sets ({})",
                Toy::ALL.map(|t| t.name()).join(", ")
            ));
        }
        if !mlp && toy {
            return Err(format!("--data {data}: a UNet trains on images (shapes or an image folder)"));
        }
    }
    let defaults = TrainArgs::defaults();
    let batch = a.batch.unwrap_or(defaults.batch);
    let n = a.samples.unwrap_or(if mlp { 1000 } else { 256 });
    let sampler_steps = a.sampler_steps.unwrap_or(if mlp { 1000 } else { 100 });
    let root = a.dir.clone().unwrap_or_else(|| PathBuf::from("runs/bench-quality"));
    let started = Instant::now();
    let mut cases = Vec::new();
    for data in &sets {
        for &loss in &losses {
            let mut f: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
            for seed in a.first_seed..a.first_seed + a.seeds {
                let dir = root.join(&a.model).join(data_stem(data)).join(loss.name()).join(format!("seed-{seed}"));
                std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let _ = std::fs::remove_file(dir.join(train_cmd::CHECKPOINT));
                let log = 100.min(a.steps);
                let targs = TrainArgs {
                    data: data.clone(),
                    model: a.model.clone(),
                    loss,
                    steps: a.steps,
                    batch,
                    seed,
                    points: a.points,
                    precond: a.precond.clone(),
                    out: Some(dir.clone()),
                    quiet: true,
                    summary_to_stderr: true,
                    log_every: log,
                    checkpoint_every: a.steps.div_ceil(log) * log,
                    ..defaults.clone()
                };
                targs.check()?;
                eprintln!("{data} {loss} seed {seed}: cdl train, {} steps …", a.steps);
                let t = Instant::now();
                train_cmd::train(gpu, targs.clone(), None).await?;
                let trained = load(&dir.join(train_cmd::CHECKPOINT))?;
                let sa = SamplerArgs {
                    sampler: SamplerKind::Ddpm,
                    steps: Some(sampler_steps as usize),
                    window: None,
                    tol: 0.1,
                    variance: VarianceKind::Beta,
                    churn: 0.0,
                    n,
                    seed: 1 + seed,
                    no_ema: false,
                    clip_denoised: false,
                    host_sampler: false,
                };
                let (x, _, _) = draw(gpu, &trained.checkpoint, &sa, n as usize).await?;
                f.entry("seconds_cdl").or_default().push(t.elapsed().as_secs_f64());
                eprintln!("{data} {loss} seed {seed}: tools/reference_train.py …");
                let t = Instant::now();
                let y = reference(&python, &dir, &targs, &trained, n, sampler_steps)?;
                f.entry("seconds_reference").or_default().push(t.elapsed().as_secs_f64());
                let judge = if mlp {
                    let both = reference_points(data, &trained, 2 * n as usize, 1000 + seed)?;
                    // n held-out points of 2 coordinates, then n more: the floor's second set.
                    let (held, second) = both.split_at(n as usize * 2);
                    Judge::new(None, held, second)?
                } else {
                    let (both, variances, _) =
                        held_out_images(&targs.run_config(), 2 * n as usize).map_err(|e| e.to_string())?;
                    let d = variances.len();
                    let m = both.len() / d / 2;
                    if m < 2 {
                        return Err(format!("{data}: too few images for two held-out sets"));
                    }
                    let (held, second) = both.split_at(m * d);
                    Judge::new(image_shape(&trained)?, held, &second[..m * d])?
                };
                for (k, v) in [
                    ("score_cdl", judge.score(&x)?),
                    ("score_reference", judge.score(&y)?),
                    ("score_floor", judge.score(&judge.second)?),
                    ("tail_cdl", judge.tail(&x)),
                    ("tail_reference", judge.tail(&y)),
                    ("max_abs_cdl", max_abs(&x)),
                    ("max_abs_reference", max_abs(&y)),
                ] {
                    f.entry(k).or_default().push(v);
                }
                let last = |k: &str| f[k][f[k].len() - 1];
                eprintln!(
                    "{data} {loss} seed {seed}: {} cdl {:.5}, reference {:.5}, floor {:.5}",
                    if mlp { "MMD" } else { "pixel FD" },
                    last("score_cdl"),
                    last("score_reference"),
                    last("score_floor")
                );
            }
            let diff: Vec<f64> = f["score_cdl"].iter().zip(&f["score_reference"]).map(|(o, t)| o - t).collect();
            let (d, se) = mean_se(&diff);
            let mut case = json!({
                "data": data, "loss": loss.name(),
                "ratio_of_means": mean_se(&f["score_cdl"]).0 / mean_se(&f["score_reference"]).0,
                "difference": {"mean": d, "se": if se.is_finite() { json!(se) } else { Value::Null },
                               "verdict_lower_is_better": Verdict::of(&diff).text(),
                               "threshold_se": verdict_threshold(diff.len())},
            });
            for (k, v) in &f {
                case[*k] = summary(v);
            }
            cases.push(case);
        }
    }
    Ok(json!({
        "bench": "quality",
        "adapter": gpu.info.name,
        "backend": format!("{:?}", gpu.info.backend),
        "settings": {
            "model": a.model, "precond": a.precond.clone().unwrap_or_else(|| "cdl train's default".into()),
            "steps": a.steps, "batch": batch, "lr": defaults.lr, "warmup": defaults.warmup,
            "ema": defaults.ema, "clip": defaults.clip, "anchors": defaults.anchors, "points": a.points,
            "seeds": a.seeds, "first_seed": a.first_seed, "samples": n,
            "sampler": format!("DDPM-{sampler_steps} ancestral, variance β, EMA weights"),
            "score": if mlp { "MMD, h = 0.03, against held-out points (seed 1000 + s)".to_string() }
                     else { format!("Fréchet distance of {POOL}x{POOL}-pooled pixels against held-out images") },
            "tail": if mlp { "fraction of samples with a coordinate beyond 4 data standard deviations" }
                    else { "fraction of saturated pixels (uint8 0 or 255)" },
        },
        "seconds": started.elapsed().as_secs_f64(),
        "cases": cases,
    }))
}
