//! `cdl fid`: FID and KID between two image sets (a folder, `shapes`, CIFAR-10) or an image set and
//! pytorch-fid statistics, with the Inception-v3 network of `eval::inception` on the device and the
//! formulas of `eval::fd`, `eval::kid` (pytorch-fid's and torch-fidelity's). Not here: the network.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Value};

use cdl::diffusion::sampler::EvalFuture;
use cdl::diffusion::DiffusionError;
use cdl::eval::fd::frechet_moments;
use cdl::eval::feature_stats::{FeatureStats, Moments};
use cdl::eval::gpu_sampler::DeviceSamples;
use cdl::eval::inception::{Inception, InceptionWeights, InputRange, FEATURES};
use cdl::eval::kid::{kid, KidConfig};
use cdl::eval::npz;
use cdl::gpu::{Buffer, Gpu};
use cdl::train::{cifar, images, shapes};

/// Why a FID against a statistics file has no KID.
pub const KID_NOTE: &str =
    "KID needs the features of both sets; a statistics .npz holds only their mean and covariance";
/// Side of the built-in `shapes` images `cdl fid` draws (the 32 px of unet-compact).
pub const SHAPES_SIDE: u32 = 32;
/// Seed of the built-in `shapes` images `cdl fid` draws.
const SHAPES_SEED: u64 = 0;

#[derive(Args, Clone, Debug)]
pub struct FidArgs {
    /// First image set: a folder of PNG/JPEG images (all of one size; not its sub-folders),
    /// `shapes` (the built-in set at 32 px) or a CIFAR-10 archive (cifar-10-binary.tar.gz, its
    /// folder or a .bin batch; the training split).
    pub a: String,
    /// Second set: the same kinds, or a pytorch-fid statistics file (.npz with mu and sigma, as
    /// written by --save-stats or pytorch-fid --save-stats). KID needs two image sets.
    pub b: String,
    /// Inception-v3 weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth converted with
    /// tools/inception_to_safetensors.py.
    #[arg(long)]
    pub inception: PathBuf,
    /// Images per network evaluation.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch: u64,
    /// At most this many images of each set (default: all; `shapes`: 10,000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=100_000_000))]
    pub limit: Option<u64>,
    /// KID subsets (torch-fidelity's default).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub kid_subsets: u64,
    /// Images per KID subset from each set, at most the smaller set (torch-fidelity's default).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(2..=100_000_000))]
    pub kid_subset_size: u64,
    /// Also write the first set's feature statistics (mu, sigma) as a pytorch-fid .npz.
    #[arg(long)]
    pub save_stats: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Image sets

/// The images of one side, decoded batch by batch (a folder) or held as u8 CHW (built-in sets).
pub enum ImageSource {
    /// Image files of one size, h×w, decoded as RGB when a batch needs them.
    Files { files: Vec<PathBuf>, h: usize, w: usize },
    /// (n, 3, h, w) u8.
    Bytes { images: Vec<u8>, h: usize, w: usize },
}

impl ImageSource {
    /// The image set `spec` names (see `FidArgs::a`), at most `limit` images.
    pub fn open(spec: &str, limit: Option<usize>) -> Result<Self, String> {
        let path = Path::new(spec);
        let lower = spec.to_ascii_lowercase();
        if spec == shapes::NAME {
            let set = shapes::generate(limit.unwrap_or(shapes::DEFAULT_COUNT), SHAPES_SIDE, SHAPES_SEED);
            let s = SHAPES_SIDE as usize;
            return Ok(Self::Bytes { images: set.images, h: s, w: s });
        }
        let cifar = lower.ends_with(".gz")
            || lower.ends_with(".tgz")
            || lower.ends_with(".bin")
            || path.join("data_batch_1.bin").is_file()
            || path.join("cifar-10-batches-bin").is_dir();
        if cifar {
            let data = cifar::load(path, cifar::Split::Train).map_err(|e| e.to_string())?;
            let mut images = data.images;
            let per = 3 * 32 * 32;
            images.truncate(limit.unwrap_or(usize::MAX).saturating_mul(per));
            return Ok(Self::Bytes { images, h: 32, w: 32 });
        }
        if !path.is_dir() {
            return Err(format!(
                "{spec}: no such folder (an image set is a folder of PNG/JPEG images, `shapes` or a CIFAR-10 archive)"
            ));
        }
        let mut files = images::image_files(path).map_err(|e| e.to_string())?;
        if files.is_empty() {
            return Err(format!("{spec}: no PNG or JPEG images in the folder"));
        }
        files.truncate(limit.unwrap_or(usize::MAX));
        // Every size from the headers, before any network runs: one size per set (pytorch-fid
        // batches images as they are and resizes them in the network).
        let dims = |p: &PathBuf| image::image_dimensions(p).map_err(|e| format!("{}: {e}", p.display()));
        let (w, h) = dims(&files[0])?;
        for p in &files[1..] {
            let (pw, ph) = dims(p)?;
            if (pw, ph) != (w, h) {
                return Err(mismatch(p, (pw as usize, ph as usize), (w as usize, h as usize)));
            }
        }
        Ok(Self::Files { files, h: h as usize, w: w as usize })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            Self::Files { files, .. } => files.len(),
            Self::Bytes { images, h, w } => images.len() / (3 * h * w),
        }
    }

    /// (h, w) of every image.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Self::Files { h, w, .. } | Self::Bytes { h, w, .. } => (*h, *w),
        }
    }

    /// Images start..start + m as (m, 3, h, w) in [0, 1] (v / 255, as pytorch-fid's ToTensor).
    pub fn batch(&self, start: usize, m: usize, out: &mut Vec<f32>) -> Result<(), String> {
        out.clear();
        match self {
            Self::Bytes { images, h, w } => {
                let per = 3 * h * w;
                out.extend(images[start * per..(start + m) * per].iter().map(|&v| f32::from(v) / 255.0));
            }
            Self::Files { files, h, w } => {
                for path in &files[start..start + m] {
                    let img = image::ImageReader::open(path)
                        .and_then(|r| r.with_guessed_format())
                        .map_err(|e| format!("{}: {e}", path.display()))?
                        .decode()
                        .map_err(|e| format!("{}: {e}", path.display()))?
                        .into_rgb8();
                    let (iw, ih) = (img.width() as usize, img.height() as usize);
                    if (ih, iw) != (*h, *w) {
                        return Err(mismatch(path, (iw, ih), (*w, *h)));
                    }
                    // HWC bytes to CHW values.
                    let px = img.as_raw();
                    for c in 0..3 {
                        out.extend(px[c..].iter().step_by(3).map(|&v| f32::from(v) / 255.0));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The error of an image whose size (w, h) is not the set's.
fn mismatch(path: &Path, (iw, ih): (usize, usize), (w, h): (usize, usize)) -> String {
    format!(
        "{}: image is {iw}×{ih}, but the folder's first image is {w}×{h} (every image of a set must have one size)",
        path.display()
    )
}

/// The pytorch-fid statistics file `spec` names, or `None` when it names an image set.
pub(super) fn stats_file(spec: &str) -> Result<Option<Moments>, String> {
    if !spec.to_ascii_lowercase().ends_with(".npz") {
        return Ok(None);
    }
    let m = npz::load_stats(spec).map_err(|e| e.to_string())?;
    if m.dim != FEATURES {
        return Err(format!("{spec}: statistics of {} features, expected Inception's {FEATURES}", m.dim));
    }
    Ok(Some(m))
}

// ---------------------------------------------------------------------------------------------
// Features

/// Reads and checks the converted Inception weights.
pub fn load_weights(path: &Path) -> Result<InceptionWeights, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    InceptionWeights::from_safetensors(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// A progress bar on stderr when it is a terminal, counting images.
pub fn progress(len: usize, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} images  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_message(what.to_string());
    b
}

/// The Inception features of every image of `src`: their moments and, with `keep`, the features
/// themselves, (n, 2048) row-major.
pub(super) async fn source_features(
    gpu: &Gpu,
    weights: &InceptionWeights,
    src: &ImageSource,
    batch: usize,
    keep: bool,
    what: &str,
) -> Result<(FeatureStats, Vec<f32>), String> {
    let (h, w) = src.dims();
    let n = src.len();
    let net = Inception::new(gpu, weights, batch.min(n), h, w).map_err(|e| e.to_string())?;
    let mut stats = FeatureStats::new(FEATURES).map_err(|e| e.to_string())?;
    let mut kept = Vec::new();
    let bar = progress(n, what);
    let mut x = Vec::new();
    for start in (0..n).step_by(net.batch()) {
        let m = net.batch().min(n - start);
        src.batch(start, m, &mut x)?;
        let f = net.features(gpu, &x, m).await.map_err(|e| e.to_string())?;
        stats.push(&f).map_err(|e| format!("{what}: {e}"))?;
        if keep {
            kept.extend_from_slice(&f);
        }
        bar.inc(m as u64);
    }
    bar.finish_and_clear();
    Ok((stats, kept))
}

/// The features of samples the sampler leaves on the device (`GpuDenoiser::sample_into`): each
/// chunk of up to the network's batch is copied out of the sampler's buffer and run through
/// Inception as model units in [-1, 1] (`InputRange::MinusOneOne`: the network's own input map,
/// folded into its resize, skips the [0, 1] → [-1, 1] step); only the features are read back. Unlike the PNGs of `cdl sample --out DIR`, the images are
/// neither clipped nor rounded to 8 bits.
pub(super) struct InceptionSink<'g> {
    gpu: &'g Gpu,
    net: Inception,
    /// Values per sample, 3·side².
    d: usize,
    /// (batch, d): a chunk of samples, model units.
    chunk: Buffer,
    /// Moments of every feature so far.
    pub stats: FeatureStats,
    /// Every feature so far, (n, 2048), when KID needs them.
    pub kept: Option<Vec<f32>>,
}

impl<'g> InceptionSink<'g> {
    pub fn new(
        gpu: &'g Gpu,
        weights: &InceptionWeights,
        batch: usize,
        side: usize,
        keep: bool,
    ) -> Result<Self, String> {
        let e = |e: cdl::gpu::GpuError| e.to_string();
        let net = Inception::new(gpu, weights, batch, side, side).map_err(e)?;
        let d = 3 * side * side;
        let len = net.batch() * d;
        let chunk = gpu.zeros("fid samples", len).map_err(e)?;
        let stats = FeatureStats::new(FEATURES).map_err(|e| e.to_string())?;
        Ok(Self { gpu, net, d, chunk, stats, kept: keep.then(Vec::new) })
    }
}

impl DeviceSamples for InceptionSink<'_> {
    fn take<'a>(&'a mut self, x: &'a Buffer, m: usize) -> EvalFuture<'a> {
        Box::pin(async move {
            let err = |e: String| DiffusionError::Denoiser(format!("Inception features: {e}"));
            let b = self.net.batch();
            for start in (0..m).step_by(b) {
                let c = b.min(m - start);
                let mut rec = self.gpu.recorder();
                rec.copy(x, start * self.d, &self.chunk, 0, c * self.d);
                rec.submit();
                let f = self
                    .net
                    .features_of_range(self.gpu, &self.chunk, c, InputRange::MinusOneOne)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                self.stats.push(&f).map_err(|e| err(e.to_string()))?;
                if let Some(k) = &mut self.kept {
                    k.extend_from_slice(&f);
                }
            }
            Ok(())
        })
    }
}

/// The reference side of a FID: the moments of an image set's features (and the features
/// themselves with `keep`) or of a statistics file (features `None`), with its image count.
pub(super) async fn reference(
    gpu: &Gpu,
    weights: &InceptionWeights,
    spec: &str,
    batch: usize,
    keep: bool,
) -> Result<(Moments, Option<Vec<f32>>, Option<usize>), String> {
    if let Some(m) = stats_file(spec)? {
        return Ok((m, None, None));
    }
    let src = ImageSource::open(spec, None)?;
    if src.len() < 2 {
        return Err(format!("{spec}: {} image, FID needs at least 2", src.len()));
    }
    let (stats, f) = source_features(gpu, weights, &src, batch, keep, "reference").await?;
    Ok((stats.moments().map_err(|e| e.to_string())?, keep.then_some(f), Some(src.len())))
}

/// KID of two feature sets (n, 2048) with `cfg`, as JSON fields.
pub(super) fn kid_json(a: &[f32], b: &[f32], cfg: KidConfig) -> Result<Value, String> {
    let (wa, wb): (Vec<f64>, Vec<f64>) =
        (a.iter().map(|&v| f64::from(v)).collect(), b.iter().map(|&v| f64::from(v)).collect());
    let k = kid(&wa, &wb, FEATURES, cfg).map_err(|e| e.to_string())?;
    Ok(json!({"kid_mean": k.mean, "kid_std": k.std, "kid_subsets": k.subsets, "kid_subset_size": k.subset_size}))
}

// ---------------------------------------------------------------------------------------------
// The command

pub async fn fid(gpu: &Gpu, args: &FidArgs) -> Result<Value, String> {
    let limit = args.limit.map(|v| v as usize);
    if args.a.to_ascii_lowercase().ends_with(".npz") {
        return Err(format!("{}: the first set must be images (a statistics file can be the second)", args.a));
    }
    let a = ImageSource::open(&args.a, limit)?;
    let b_stats = stats_file(&args.b)?;
    let b = match b_stats {
        Some(_) => None,
        None => Some(ImageSource::open(&args.b, limit)?),
    };
    for (spec, src) in [(&args.a, Some(&a)), (&args.b, b.as_ref())] {
        if let Some(s) = src.filter(|s| s.len() < 2) {
            return Err(format!("{spec}: {} image, FID needs at least 2", s.len()));
        }
    }
    let weights = load_weights(&args.inception)?;
    let batch = args.batch as usize;
    let keep = b.is_some();
    let (sa, fa) = source_features(gpu, &weights, &a, batch, keep, "A").await?;
    let ma = sa.moments().map_err(|e| e.to_string())?;
    if let Some(path) = &args.save_stats {
        npz::save_stats(path, &ma).map_err(|e| e.to_string())?;
    }
    let (mb, fb) = match (&b, b_stats) {
        (Some(src), _) => {
            let (sb, fb) = source_features(gpu, &weights, src, batch, true, "B").await?;
            (sb.moments().map_err(|e| e.to_string())?, Some(fb))
        }
        (None, Some(m)) => (m, None),
        (None, None) => return Err("internal: the second set is neither images nor statistics".into()),
    };
    let fid = frechet_moments(&ma, &mb).map_err(|e| e.to_string())?;
    let mut out = json!({
        "fid": fid,
        "kid_mean": null,
        "kid_std": null,
        "n_a": a.len(),
        "n_b": b.as_ref().map(ImageSource::len),
    });
    match fb {
        Some(fb) => {
            let cfg = KidConfig {
                subsets: args.kid_subsets as usize,
                subset_size: args.kid_subset_size as usize,
                ..KidConfig::default()
            };
            let k = kid_json(&fa, &fb, cfg)?;
            for key in ["kid_mean", "kid_std", "kid_subsets", "kid_subset_size"] {
                out[key] = k[key].clone();
            }
        }
        None => {
            out["kid_note"] =
                json!("KID needs the features of both sets; a statistics .npz holds only their mean and covariance")
        }
    }
    if let Some(path) = &args.save_stats {
        out["stats_a"] = json!(path.display().to_string());
    }
    Ok(out)
}
