//! `cdl sample` and `cdl eval`: samplers on a trained checkpoint and the metrics of spec
//! §5.1/§7.2 (MMD with h = 0.03, sliced Wasserstein, NLL in bits/dim).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use cdl::diffusion::likelihood::RefGaussian;
use cdl::diffusion::logistic::TruncLogistic;
use cdl::diffusion::sampler::{sample, ClipDenoised, DdpmVariance, SampleStats, SamplerConfig};
use cdl::eval::denoiser::GpuDenoiser;
use cdl::eval::figure::{self, Series, SAMPLE_COLOR};
use cdl::eval::mmd::{mmd, MMD_BANDWIDTH};
use cdl::eval::nll::test_nll;
use cdl::eval::plot::{self, Bounds};
use cdl::eval::swd::{sliced_wasserstein, SWD_DIRECTIONS};
use cdl::gpu::Gpu;
use cdl::train::checkpoint::{self, Checkpoint};
use cdl::train::data::{DataSource, Toy};
use cdl::train::run::{NetConfig, Trained};

/// Rows per GPU evaluation chunk when sampling (the model is bound to this many rows).
pub(super) const EVAL_ROWS: usize = 8192;
/// Seed of the held-out points `cdl eval` (and `cdl export`'s preview MMD) measures against; the
/// MMD floor's second held-out set uses the next one.
pub(super) const HELD_OUT_SEED: u64 = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SamplerKind {
    /// DDPM ancestral, variance β_t (math.md §6.1).
    Ddpm,
    /// DDIM, η = 0 (math.md §6.3).
    Ddim,
    /// EDM Heun, deterministic unless --churn > 0 (math.md §6.4).
    Heun,
    /// Parallel Picard iteration over the DDPM transition (math.md §6.5).
    Parallel,
}

/// The variance of the DDPM ancestral transition (sequential and parallel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VarianceKind {
    /// σ² = β_t (Ho et al.'s "fixed large"; the CDL code's sequential sampler).
    Beta,
    /// σ² = β̃_t, the posterior variance (Ho et al.'s "fixed small"; the authors' parallel sampler).
    Posterior,
}

impl VarianceKind {
    fn ddpm(self) -> DdpmVariance {
        match self {
            Self::Beta => DdpmVariance::Beta,
            Self::Posterior => DdpmVariance::Posterior,
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct SamplerArgs {
    /// Sampler.
    #[arg(long, value_enum, default_value_t = SamplerKind::Ddpm)]
    pub sampler: SamplerKind,
    /// Steps: DDPM/parallel schedule length T, DDIM steps, or Heun levels N (default 1000, 100, 1000, 18).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Parallel sampler window p (default: the whole trajectory).
    #[arg(long)]
    pub window: Option<usize>,
    /// Parallel sampler tolerance τ.
    #[arg(long, default_value_t = 0.1)]
    pub tol: f64,
    /// Variance of the DDPM transition, for both the sequential and the parallel sampler (the
    /// parallel sampler converges to the sequential one with the same variance).
    #[arg(long, value_enum, default_value_t = VarianceKind::Beta)]
    pub variance: VarianceKind,
    /// Heun S_churn (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Number of samples.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub n: u64,
    /// Seed of the initial noise and every sampler draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use the trained weights instead of the EMA weights.
    #[arg(long)]
    pub no_ema: bool,
    /// Clip the model's clean-image estimate x̂₀ to [−1, 1] at every step (Ho et al.'s
    /// clip_denoised; image models only). Keeps an undertrained model's samples from saturating.
    #[arg(long)]
    pub clip_denoised: bool,
    /// Run the sampler's arithmetic on the host in f64 (the reference path: one readback per
    /// network evaluation) instead of on the device (one readback at the end, one small one per
    /// parallel pass).
    #[arg(long)]
    pub host_sampler: bool,
}

impl SamplerArgs {
    /// Draws `n` samples over `den`, clipping x̂₀ to [−1, 1] with `--clip-denoised`: on the
    /// device, or on the host with `--host-sampler`.
    pub async fn sample(
        &self,
        den: &mut GpuDenoiser<'_>,
        n: usize,
        seed: u64,
    ) -> Result<(Vec<f64>, SampleStats), String> {
        let clip = self.clip_denoised.then_some((-1.0, 1.0));
        let r = match (self.host_sampler, clip) {
            (false, _) => den.sample_on_device(&self.config(), n, seed, clip).await,
            (true, Some((lo, hi))) => {
                sample(&mut ClipDenoised { inner: den, lo, hi }, &self.config(), n, seed, None).await
            }
            (true, None) => sample(den, &self.config(), n, seed, None).await,
        };
        r.map_err(|e| e.to_string())
    }

    pub fn config(&self) -> SamplerConfig {
        match self.sampler {
            SamplerKind::Ddpm => {
                SamplerConfig::Ddpm { steps: self.steps.unwrap_or(1000), variance: self.variance.ddpm() }
            }
            SamplerKind::Ddim => SamplerConfig::Ddim { steps: self.steps.unwrap_or(100) },
            SamplerKind::Heun => SamplerConfig::Heun { steps: self.steps.unwrap_or(18), churn: self.churn },
            SamplerKind::Parallel => {
                let steps = self.steps.unwrap_or(1000);
                SamplerConfig::Parallel {
                    steps,
                    window: self.window.unwrap_or(steps),
                    tol: self.tol,
                    ddim: false,
                    variance: self.variance.ddpm(),
                }
            }
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct SampleArgs {
    /// Checkpoint written by `cdl train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Output: a .csv of x,y points (in the data's units), a .png picture (scatter or image grid),
    /// or, for image models, a directory of PNGs (DIR/000000.png, …) for FID tools.
    #[arg(long, default_value = "samples.csv")]
    pub out: PathBuf,
}

#[derive(Args, Clone, Debug)]
pub struct EvalArgs {
    /// Checkpoint written by `cdl train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Reference data: a built-in set (held-out points from another seed) or a CSV file; default:
    /// the data the checkpoint was trained on.
    #[arg(long)]
    pub data: Option<String>,
    /// Comma-separated metrics: mmd, swd, nll; for image models also fid and kid (with
    /// --inception and --ref; the samples go from the sampler to the Inception network on the
    /// device, mapped from [-1, 1] to [0, 1] without 8-bit rounding). Against a built-in set, mmd
    /// comes with mmd_floor: the held-out set against a second one of the same size, what a
    /// perfect model's samples would give (the estimate is unbiased, so it scatters around 0: its
    /// size is the metric's noise at this n).
    #[arg(long, default_value = "mmd,swd,nll", value_delimiter = ',')]
    pub metrics: Vec<String>,
    /// Inception-v3 weights for fid and kid (see `cdl fid --inception`).
    #[arg(long)]
    pub inception: Option<PathBuf>,
    /// Reference of fid and kid: a folder of PNG/JPEG images, `shapes`, a CIFAR-10 archive, or a
    /// pytorch-fid statistics .npz (fid only: it holds no features for kid).
    #[arg(long = "ref")]
    pub reference: Option<String>,
    /// α points of the NLL test protocol (ITD uses 1000).
    #[arg(long, default_value_t = 1000)]
    pub nll_points: usize,
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// The checkpoint at `path` with its run metadata.
pub(super) fn load(path: &Path) -> Result<Trained, String> {
    Trained::load(path).map_err(|e| e.to_string())
}

/// Held-out reference points in model units: a built-in set from another seed (standardised
/// over 100,000 points as in training), or a CSV file mapped with the training standardisation.
pub(super) fn reference_points(spec: &str, trained: &Trained, n: usize, seed: u64) -> Result<Vec<f64>, String> {
    let source = DataSource::parse(spec).map_err(|e| e.to_string())?;
    match source {
        DataSource::Toy(toy) => Ok(toy_points(toy, n, seed)),
        DataSource::Csv(path) => {
            // Read once and mapped with the model's standardisation; a checkpoint that stored
            // none gets the file's own.
            let mut points = cdl::train::data::read_csv(&path).map_err(|e| e.to_string())?;
            let d = points.dim;
            match trained.meta.standardization.as_ref().filter(|s| s.mean.len() == d) {
                Some(s) => s.apply(&mut points.data),
                None => points.standardize().map(drop).map_err(|e| e.to_string())?,
            }
            let mut v: Vec<f64> = points.data.iter().map(|&x| f64::from(x)).collect();
            v.truncate(n * d);
            Ok(v)
        }
    }
}

fn toy_points(toy: Toy, n: usize, seed: u64) -> Vec<f64> {
    let p = toy.generate(100_000.max(n), seed);
    p.data[..n * p.dim].iter().map(|&x| f64::from(x)).collect()
}

/// Samples `n` points with timing: (samples in model units, stats, seconds).
pub(super) async fn draw(
    gpu: &Gpu,
    ck: &Checkpoint,
    args: &SamplerArgs,
    n: usize,
) -> Result<(Vec<f64>, SampleStats, f64), String> {
    if args.clip_denoised && ck.arch != "unet" {
        return Err(format!("--clip-denoised is for image models (data in [-1, 1]); this is a {:?} model", ck.arch));
    }
    // The parallel sampler evaluates a window of steps for every sample in one batch: a 2-D model
    // is bound to all of them (up to EVAL_ROWS), so a pass is a few large dispatches rather than
    // one per n rows (each with its own readback).
    let rows = match (args.config(), ck.arch.as_str()) {
        (SamplerConfig::Parallel { window, .. }, "mlp") => n.saturating_mul(window),
        _ => n,
    };
    let mut den = GpuDenoiser::from_checkpoint(gpu, ck, EVAL_ROWS.min(rows.max(64)), !args.no_ema)
        .await
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let (x, stats) = args.sample(&mut den, n, args.seed).await?;
    Ok((x, stats, t.elapsed().as_secs_f64()))
}

pub(super) fn f32s(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

pub async fn sample_cmd(gpu: &Gpu, args: SampleArgs) -> Result<(), String> {
    let out = &args.out;
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if ext.is_empty() {
        return sample_dir(gpu, &args).await;
    }
    if ext != "csv" && ext != "png" {
        return Err(format!("{}: the output must end in .csv or .png, or be a directory", out.display()));
    }
    let trained = load(&args.checkpoint)?;
    if let Some(w) = trained.range_warning(&args.sampler.config()) {
        eprintln!("{w}");
    }
    let (mut x, stats, secs) = draw(gpu, &trained.checkpoint, &args.sampler, args.sampler.n as usize).await?;
    let d = (x.len() / args.sampler.n as usize).max(1);
    match ext.as_str() {
        "csv" => {
            if d != 2 {
                return Err(format!(
                    "{}: CSV output is for 2-D models; this model has d = {d} (use .png)",
                    out.display()
                ));
            }
            trained.to_data_units(&mut x);
            let mut text = String::from("x,y\n");
            for p in x.chunks_exact(2) {
                let _ = writeln!(text, "{},{}", p[0], p[1]);
            }
            checkpoint::write_atomic(out, |f| std::io::Write::write_all(f, text.as_bytes()))
                .map_err(|e| e.to_string())?;
        }
        "png" => {
            let run = args.checkpoint.parent().and_then(|p| p.file_name()).unwrap_or(args.checkpoint.as_os_str());
            let title = format!("{}, step {}", run.to_string_lossy(), trained.checkpoint.step);
            let ema = if args.sampler.no_ema { "raw" } else { "EMA" };
            let img = if d == 2 {
                let pts = f32s(&x);
                let label = format!("{} samples, {}, {ema} weights", args.sampler.n, args.sampler.config().name());
                let series = [Series { label: &label, points: &pts, color: SAMPLE_COLOR }];
                figure::scatter(&title, &series, Bounds::covering(&[&pts], 0.05).squared(), 800)
            } else {
                let c = if d.is_multiple_of(3) { 3 } else { 1 };
                let side = ((d / c) as f64).sqrt() as usize;
                let n = (args.sampler.n as usize).min(64);
                let caption = format!("{n} samples, {}, {ema} weights", args.sampler.config().name());
                plot::image_grid(&f32s(&x[..n * d]), n, c, side, 8, 2)
                    .and_then(|grid| figure::image_figure(&title, &caption, &grid))
            }
            .map_err(|e| e.to_string())?;
            plot::save_png(out, &img).map_err(|e| e.to_string())?;
        }
        _ => return Err(format!("{}: the output must end in .csv or .png", out.display())),
    }
    println!(
        "{}",
        json!({"out": out.display().to_string(), "sampler": args.sampler.config().name(), "n": args.sampler.n,
               "passes": stats.passes, "evaluations": stats.evaluations, "steps": stats.steps, "seconds": secs})
    );
    Ok(())
}

/// Most samples per batch when writing an image directory.
const DIR_BATCH: usize = 256;
/// Device memory one sampling batch of an image model may take (the model's activations at that
/// many rows, `unet::memory_estimate`); the batch halves until it fits.
const DIR_BATCH_BYTES: usize = 2 << 30;

/// `--out DIR` for image models: one PNG per sample, `DIR/000000.png`, `DIR/000001.png`, … (a
/// flat folder, which pytorch-fid and EDM's fid.py both read), pixels with EDM's uint8 convention
/// clip(x·127.5 + 128, 0, 255) (math.md §7.1). Batches of at most `DIR_BATCH` samples, fewer when the
/// model would need more than `DIR_BATCH_BYTES` or the adapter's largest binding; batch b draws
/// with seed + b, so the first images do not depend on n.
async fn sample_dir(gpu: &Gpu, args: &SampleArgs) -> Result<(), String> {
    let trained = load(&args.checkpoint)?;
    if let Some(w) = trained.range_warning(&args.sampler.config()) {
        eprintln!("{w}");
    }
    let NetConfig::UNet(c) = trained.net().map_err(|e| e.to_string())? else {
        return Err(format!("{}: a directory of PNGs is for image models; use .csv or .png", args.out.display()));
    };
    let d = c.in_channels * c.image_size * c.image_size;
    let (side, ch) = (c.image_size as u32, c.in_channels);
    let n = args.sampler.n as usize;
    let per = image_rows(gpu, &c, n)?;
    let mut den = GpuDenoiser::from_checkpoint(gpu, &trained.checkpoint, per, !args.sampler.no_ema)
        .await
        .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let t = Instant::now();
    let mut stats = SampleStats::default();
    for (b, start) in (0..n).step_by(per).enumerate() {
        let m = per.min(n - start);
        let seed = args.sampler.seed.wrapping_add(b as u64);
        let (x, st) = args.sampler.sample(&mut den, m, seed).await?;
        stats = st;
        for k in 0..m {
            let i = start + k;
            let px = &x[k * d..(k + 1) * d];
            let img = image::RgbImage::from_fn(side, side, |col, row| {
                let at = |chan: usize| {
                    plot::to_u8(px[(chan * side as usize + row as usize) * side as usize + col as usize] as f32)
                };
                if ch == 3 {
                    image::Rgb([at(0), at(1), at(2)])
                } else {
                    image::Rgb([at(0); 3])
                }
            });
            plot::save_png(args.out.join(format!("{i:06}.png")), &img).map_err(|e| e.to_string())?;
        }
    }
    println!(
        "{}",
        json!({"out": args.out.display().to_string(), "sampler": args.sampler.config().name(), "n": n,
               "batch": per, "passes_per_batch": stats.passes, "evaluations": stats.evaluations, "seconds": t.elapsed().as_secs_f64()})
    );
    Ok(())
}

/// Samples per sampling batch of an image model: at most `DIR_BATCH` (and n), halved while the
/// model would need more than `DIR_BATCH_BYTES` or the adapter's largest binding.
fn image_rows(gpu: &Gpu, c: &cdl::model::UNetConfig, n: usize) -> Result<usize, String> {
    let limit = (gpu.limits.max_storage_buffer_binding_size as usize).min(DIR_BATCH_BYTES);
    let mut per = DIR_BATCH.min(n);
    while per > 1 {
        let (total, largest) = cdl::model::unet::memory_estimate(c, per).map_err(|e| e.to_string())?;
        if total <= DIR_BATCH_BYTES && largest <= limit {
            break;
        }
        per /= 2;
    }
    Ok(per)
}

/// The error of fid or kid without their flags.
const FID_FLAGS: &str =
    "--metrics fid and kid need --inception WEIGHTS and --ref (an image folder, shapes, CIFAR-10 or a .npz)";
/// Images per Inception evaluation in `cdl eval`'s fid and kid.
const FID_BATCH: usize = 16;

/// fid and kid of an image checkpoint's samples against `args.reference`: the sampler's output
/// goes to the Inception network on the device (`GpuDenoiser::sample_into`), never to the host.
async fn fid_metrics(gpu: &Gpu, trained: &Trained, args: &EvalArgs) -> Result<Value, String> {
    use super::fid;
    let want_kid = args.metrics.iter().any(|m| m == "kid");
    let (Some(weights), Some(spec)) = (&args.inception, &args.reference) else {
        return Err(FID_FLAGS.into());
    };
    let NetConfig::UNet(c) = trained.net().map_err(|e| e.to_string())? else {
        return Err("fid and kid are for image models".into());
    };
    if c.in_channels != 3 {
        return Err(format!("fid and kid need RGB images; this model has {} channel(s)", c.in_channels));
    }
    if args.sampler.host_sampler {
        return Err("fid and kid take the samples on the device; drop --host-sampler".into());
    }
    let n = args.sampler.n as usize;
    if n < 2 {
        return Err("fid and kid need at least 2 samples (--n)".into());
    }
    if want_kid && spec.to_ascii_lowercase().ends_with(".npz") {
        return Err(format!("{spec}: kid needs reference images; {}", fid::KID_NOTE));
    }
    let weights = fid::load_weights(weights)?;
    let (ref_m, ref_f, ref_n) = fid::reference(gpu, &weights, spec, FID_BATCH, want_kid).await?;
    let rows = image_rows(gpu, &c, n)?;
    let mut den = GpuDenoiser::from_checkpoint(gpu, &trained.checkpoint, rows, !args.sampler.no_ema)
        .await
        .map_err(|e| e.to_string())?;
    let mut sink = fid::InceptionSink::new(gpu, &weights, FID_BATCH.min(n), c.image_size, want_kid)?;
    let clip = args.sampler.clip_denoised.then_some((-1.0, 1.0));
    let t = Instant::now();
    den.sample_into(&args.sampler.config(), n, args.sampler.seed, clip, &mut sink).await.map_err(|e| e.to_string())?;
    let m = sink.stats.moments().map_err(|e| e.to_string())?;
    let mut out = json!({"ref": spec, "n_ref": ref_n, "fid_seconds": t.elapsed().as_secs_f64()});
    if args.metrics.iter().any(|m| m == "fid") {
        out["fid"] = json!(cdl::eval::fd::frechet_moments(&m, &ref_m).map_err(|e| e.to_string())?);
    }
    if let (Some(a), Some(b)) = (&sink.kept, &ref_f) {
        let k = fid::kid_json(a, b, cdl::eval::kid::KidConfig::default())?;
        for key in ["kid_mean", "kid_std", "kid_subsets", "kid_subset_size"] {
            out[key] = k[key].clone();
        }
    }
    Ok(out)
}

/// The metrics of one model × sampler against reference points (model units); `which` holds
/// only mmd, swd and nll (`eval_cmd` checks the names).
#[allow(clippy::too_many_arguments)]
async fn metrics(
    gpu: &Gpu,
    trained: &Trained,
    sampler: &SamplerArgs,
    reference: &[f64],
    which: &[String],
    nll_points: usize,
) -> Result<Value, String> {
    let d = trained.net().map_err(|e| e.to_string())?.row_len();
    let n = sampler.n as usize;
    let mut out = json!({"sampler": sampler.config().name(), "n": n});
    let need_samples = which.iter().any(|m| m == "mmd" || m == "swd");
    if need_samples {
        let (x, stats, secs) = draw(gpu, &trained.checkpoint, sampler, n).await?;
        out["passes"] = json!(stats.passes);
        out["evaluations"] = json!(stats.evaluations);
        out["seconds"] = json!(secs);
        if which.iter().any(|m| m == "mmd") {
            out["mmd"] = json!(mmd(&x, reference, d, MMD_BANDWIDTH).map_err(|e| e.to_string())?);
        }
        if which.iter().any(|m| m == "swd") {
            out["swd"] = json!(sliced_wasserstein(&x, reference, d, SWD_DIRECTIONS, 1).map_err(|e| e.to_string())?);
        }
    }
    if which.iter().any(|m| m == "nll") {
        let mut den = GpuDenoiser::from_checkpoint(gpu, &trained.checkpoint, EVAL_ROWS, !sampler.no_ema)
            .await
            .map_err(|e| e.to_string())?;
        let var = vec![1.0; d];
        let q = TruncLogistic::cdl_toy(&var).map_err(|e| e.to_string())?;
        let r = RefGaussian::from_variances(&var).map_err(|e| e.to_string())?;
        let t = test_nll(&mut den, reference, &q, &r, nll_points, 2).await.map_err(|e| e.to_string())?;
        out["nll_nats"] = json!(t.nats);
        out["nll_bpd"] = json!(t.bpd);
    }
    Ok(out)
}

pub async fn eval_cmd(gpu: &Gpu, args: EvalArgs) -> Result<(), String> {
    let trained = load(&args.checkpoint)?;
    if let Some(w) = trained.range_warning(&args.sampler.config()) {
        eprintln!("{w}");
    }
    // Every name and fid's flags before any sampling, so a bad request fails at once.
    for m in &args.metrics {
        if !["mmd", "swd", "nll", "fid", "kid"].contains(&m.as_str()) {
            return Err(format!("unknown metric {m:?}; expected mmd, swd, nll, fid or kid"));
        }
    }
    let (point_metrics, fid_metric): (Vec<String>, Vec<String>) =
        args.metrics.iter().cloned().partition(|m| m != "fid" && m != "kid");
    if !fid_metric.is_empty() && (args.inception.is_none() || args.reference.is_none()) {
        return Err(FID_FLAGS.into());
    }
    let mut v = json!({"sampler": args.sampler.config().name(), "n": args.sampler.n});
    if !point_metrics.is_empty() {
        let spec = args.data.clone().or_else(|| trained.meta.data_source.clone()).ok_or_else(|| {
            format!("{}: the checkpoint does not name its data; pass --data", args.checkpoint.display())
        })?;
        let reference = reference_points(&spec, &trained, args.sampler.n as usize, HELD_OUT_SEED)?;
        v = metrics(gpu, &trained, &args.sampler, &reference, &point_metrics, args.nll_points).await?;
        // The floor of the MMD at this n: the held-out set against a second one drawn alike.
        if let (true, Ok(DataSource::Toy(toy))) = (point_metrics.iter().any(|m| m == "mmd"), DataSource::parse(&spec)) {
            let n = args.sampler.n as usize;
            let second = toy_points(toy, n, HELD_OUT_SEED + 1);
            v["mmd_floor"] = json!(mmd(&second, &reference, 2, MMD_BANDWIDTH).map_err(|e| e.to_string())?);
        }
        v["data"] = json!(spec);
    }
    if !fid_metric.is_empty() {
        let f = fid_metrics(gpu, &trained, &args).await?;
        for (k, x) in f.as_object().into_iter().flatten() {
            v[k] = x.clone();
        }
    }
    v["checkpoint"] = json!(args.checkpoint.display().to_string());
    println!("{v}");
    Ok(())
}
