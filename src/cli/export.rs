//! `cdl export`: a run's checkpoint as a file to ship with a page (the shipped-weights format):
//! the model and EMA weights only (F16 unless --f32), a preview computed from exactly those
//! weights, and the run's training curve from its metrics.jsonl.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde_json::{json, Value};

use cdl::diffusion::sampler::{DdpmVariance, SamplerConfig};
use cdl::eval::denoiser::GpuDenoiser;
use cdl::eval::density::{self, MapKind};
use cdl::eval::mmd::{mmd, MMD_BANDWIDTH};
use cdl::gpu::Gpu;
use cdl::train::checkpoint::{self, Checkpoint, EMA_PREFIX, MODEL_PREFIX};
use cdl::train::data::{self, DataSource, PAGE_TOY_POINTS};
use cdl::train::run::{NetConfig, RunConfig, Trained, KEY_CURVE, KEY_PREVIEW, SHIPPED_KEYS};

use super::sample::{reference_points, EVAL_ROWS, HELD_OUT_SEED};
use super::train::METRICS;

/// Seed of the preview's sampler: the pages' own (`refresh_samples` in src/web/app.rs and
/// src/web/image.rs), so the preview is what a page would draw.
const PREVIEW_SEED: u64 = 1;
/// Steps of the toy page's default sampler (DDPM, variance β).
const TOY_STEPS: usize = 1000;
/// Images of an image model's preview, drawn as the image page's default sampler does (DDIM,
/// `IMAGE_STEPS` steps, x̂₀ clipped to [−1, 1]; src/web/image.rs).
const IMAGE_N: usize = 16;
/// DDIM steps of the image page's default sampler.
const IMAGE_STEPS: usize = 25;
/// Most rows of the shipped training curve (evenly spaced over metrics.jsonl, the last kept).
pub const CURVE_ROWS: usize = 200;

#[derive(Args, Clone, Debug)]
pub struct ExportArgs {
    /// Checkpoint written by `cdl train`; the training curve comes from the metrics.jsonl beside it.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The file to write (safetensors), replaced atomically.
    #[arg(long)]
    pub out: PathBuf,
    /// Keep the weights in F32 (default: F16, rounded to the nearest, half the bytes).
    #[arg(long)]
    pub f32: bool,
    /// Samples of a 2-D model's preview (DDPM-1000, variance β, EMA weights, seed 1), and
    /// held-out points of their MMD.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub samples: u64,
    /// Cells per side of a 2-D model's preview map (log p̂ over the page's view).
    #[arg(long, default_value_t = density::GRID as u64, value_parser = clap::value_parser!(u64).range(2..=1024))]
    pub grid: u64,
    /// Write no preview: the weights and the curve only.
    #[arg(long)]
    pub no_preview: bool,
}

pub async fn export(gpu: &Gpu, args: &ExportArgs) -> Result<(), String> {
    let t0 = Instant::now();
    if same_file(&args.checkpoint, &args.out) {
        return Err(format!("{}: --out is the checkpoint itself; choose another file", args.out.display()));
    }
    let trained = Trained::load(&args.checkpoint).map_err(|e| e.to_string())?;
    let mut shipped =
        weights(&trained.checkpoint, !args.f32).map_err(|e| format!("{}: {e}", args.checkpoint.display()))?;

    let metrics = args.checkpoint.parent().unwrap_or(Path::new(".")).join(METRICS);
    match curve(&metrics, shipped.step)? {
        Some(c) => {
            shipped.extra.insert(KEY_CURVE.into(), c.to_string());
        }
        None => eprintln!("warning: {}: no training curve there; the export holds none", metrics.display()),
    }

    let mut mmd_value = None;
    if !args.no_preview {
        let preview = match NetConfig::of(&shipped).map_err(|e| e.to_string())? {
            NetConfig::Mlp(_) => preview_points(gpu, &trained, &mut shipped, args).await?,
            NetConfig::UNet(c) => preview_images(gpu, &mut shipped, c.in_channels, c.image_size).await?,
        };
        mmd_value = preview.get("mmd").cloned();
        shipped.extra.insert(KEY_PREVIEW.into(), preview.to_string());
    }

    checkpoint::save(&args.out, &shipped).map_err(|e| e.to_string())?;
    let bytes = std::fs::metadata(&args.out).map_err(|e| format!("cannot stat {}: {e}", args.out.display()))?.len();
    println!(
        "{}",
        json!({"out": args.out.display().to_string(), "bytes": bytes, "tensors": shipped.len(), "f16": !args.f32,
               "preview": !args.no_preview, "mmd": mmd_value, "seconds": t0.elapsed().as_secs_f64()})
    );
    Ok(())
}

/// Whether `a` and `b` name one existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The run's weights (`model.*`, `ema.*`) and metadata, without the optimizer's moments or an
/// earlier export's preview and curve; with `f16`, stored as F16 and rounded here already, so
/// the preview comes from exactly the weights the file holds.
fn weights(ck: &Checkpoint, f16: bool) -> Result<Checkpoint, String> {
    let mut out = Checkpoint::new(ck.arch.clone(), ck.model_config.clone(), ck.step);
    out.extra = ck
        .extra
        .iter()
        .filter(|(k, _)| !SHIPPED_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for t in ck.tensors().iter().filter(|t| t.name.starts_with(MODEL_PREFIX) || t.name.starts_with(EMA_PREFIX)) {
        out.insert(t.name.clone(), t.shape.clone(), t.data.clone()).map_err(|e| e.to_string())?;
        if f16 {
            out.store_f16(&t.name).map_err(|e| e.to_string())?;
        }
    }
    if !out.tensors().iter().any(|t| t.name.starts_with(MODEL_PREFIX)) {
        return Err(format!("no {MODEL_PREFIX}* tensors: not the weights of a cdl train run"));
    }
    out.round_f16().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Adds an F16 tensor (rounded in place, so what follows sees the file's values).
fn insert_f16(ck: &mut Checkpoint, name: &str, shape: Vec<usize>, data: Vec<f32>) -> Result<(), String> {
    ck.insert(name, shape, data).map_err(|e| e.to_string())?;
    ck.store_f16(name).map_err(|e| e.to_string())?;
    ck.round_f16().map_err(|e| e.to_string())
}

/// A 2-D model's preview: `preview.samples` (the toy page's default sampler on the EMA
/// weights) and `preview.logp` (the page's log p̂ map), and its description with the samples'
/// MMD against `cdl eval`'s held-out points.
async fn preview_points(gpu: &Gpu, trained: &Trained, ck: &mut Checkpoint, args: &ExportArgs) -> Result<Value, String> {
    let (n, g) = (args.samples as usize, args.grid as usize);
    let spec = trained
        .meta
        .data_source
        .clone()
        .ok_or("the checkpoint does not name its data, which the preview needs; use --no-preview")?;
    let variances = page_variances(&spec)?;
    let cfg = SamplerConfig::Ddpm { steps: TOY_STEPS, variance: DdpmVariance::Beta };
    let mut den = GpuDenoiser::from_checkpoint(gpu, ck, n.min(4096), true).await.map_err(|e| e.to_string())?;
    let (x, _) = den.sample_on_device(&cfg, n, PREVIEW_SEED, None).await.map_err(|e| e.to_string())?;
    let mut den =
        GpuDenoiser::from_checkpoint(gpu, ck, EVAL_ROWS.min(g * g).max(64), true).await.map_err(|e| e.to_string())?;
    let map = density::map(&mut den, &variances, g, density::POINTS, MapKind::LogP).await.map_err(|e| e.to_string())?;
    insert_f16(ck, "preview.samples", vec![n, 2], x.iter().map(|&v| v as f32).collect())?;
    insert_f16(ck, "preview.logp", vec![g, g], map.iter().map(|&v| v as f32).collect())?;

    let samples: Vec<f64> =
        ck.get("preview.samples").map(|t| t.data.iter().map(|&v| f64::from(v)).collect()).unwrap_or_default();
    let held_out = reference_points(&spec, trained, n, HELD_OUT_SEED)?;
    let m = mmd(&samples, &held_out, 2, MMD_BANDWIDTH).map_err(|e| e.to_string())?;
    Ok(json!({"sampler": "ddpm", "steps": TOY_STEPS, "variance": "beta", "n": n, "seed": PREVIEW_SEED,
              "grid": g, "points": density::POINTS, "mmd": m, "mmd_n": held_out.len() / 2}))
}

/// The per-coordinate variances of the points the toy page shows for `spec` (its density map's
/// level distribution and reference): a built-in set as the page generates it, a CSV file
/// standardized as the page standardizes an upload.
fn page_variances(spec: &str) -> Result<Vec<f64>, String> {
    match DataSource::parse(spec).map_err(|e| e.to_string())? {
        DataSource::Toy(t) => Ok(t.generate(PAGE_TOY_POINTS, RunConfig::default().seed).variances()),
        DataSource::Csv(path) => {
            let mut p = data::read_csv(&path).map_err(|e| e.to_string())?;
            p.standardize().map_err(|e| e.to_string())?;
            Ok(p.variances())
        }
    }
}

/// An image model's preview: `preview.images` (IMAGE_N images in model units, the image page's
/// default sampler on the EMA weights) and its description.
async fn preview_images(gpu: &Gpu, ck: &mut Checkpoint, channels: usize, side: usize) -> Result<Value, String> {
    let cfg = SamplerConfig::Ddim { steps: IMAGE_STEPS };
    let mut den = GpuDenoiser::from_checkpoint(gpu, ck, IMAGE_N, true).await.map_err(|e| e.to_string())?;
    let (x, _) =
        den.sample_on_device(&cfg, IMAGE_N, PREVIEW_SEED, Some((-1.0, 1.0))).await.map_err(|e| e.to_string())?;
    insert_f16(ck, "preview.images", vec![IMAGE_N, channels, side, side], x.iter().map(|&v| v as f32).collect())?;
    Ok(json!({"sampler": "ddim", "steps": IMAGE_STEPS, "n": IMAGE_N, "seed": PREVIEW_SEED}))
}

/// The training curve of metrics.jsonl up to `step`: {"step","loss","loss_std","loss_cdl"}
/// columns of at most `CURVE_ROWS` rows, evenly spaced, the last always kept. Lines that do not
/// parse (a torn last line) or lack a finite value are skipped. None (no curve) when the file is
/// missing or holds no usable line; an unreadable file is an error.
fn curve(path: &Path, step: u64) -> Result<Option<Value>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let rows: Vec<(u64, [f64; 3])> = text
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let num = |k: &str| v[k].as_f64().filter(|x| x.is_finite());
            Some((v["step"].as_u64()?, [num("loss")?, num("loss_std")?, num("loss_cdl")?]))
        })
        .filter(|(s, _)| *s <= step)
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let kept: Vec<&(u64, [f64; 3])> = evenly_spaced(rows.len(), CURVE_ROWS).into_iter().map(|i| &rows[i]).collect();
    let column = |k: usize| kept.iter().map(|r| r.1[k]).collect::<Vec<f64>>();
    Ok(Some(json!({"step": kept.iter().map(|r| r.0).collect::<Vec<u64>>(), "loss": column(0),
                   "loss_std": column(1), "loss_cdl": column(2)})))
}

/// At most `max` (≥ 2) indices into `0..n`, evenly spaced, first and last included.
fn evenly_spaced(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    (0..max).map(|i| i * (n - 1) / (max - 1)).collect()
}
