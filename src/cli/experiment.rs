//! `cdl experiment toy` and `cdl experiment images`: does the Contrastive Diffusion Loss make
//! sampling better, above all parallel sampling? Every arm (a loss) is trained with the same
//! budget on the same data for several seeds and sampled with every sampler; every figure is a
//! mean ± standard error over the seeds next to the floor of its metric, and each CDL arm gets a
//! paired verdict against its base (`Compare`). Arms, samplers and metrics: on `toy`, `images`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde_json::{json, Value};

use cdl::diffusion::likelihood::RefGaussian;
use cdl::diffusion::logistic::TruncLogistic;
use cdl::diffusion::sampler::SampleStats;
use cdl::eval::denoiser::GpuDenoiser;
use cdl::eval::figure::{self, Map, Panel, Series, DATA_COLOR, SAMPLE_COLOR};
use cdl::eval::mmd::{mmd, MMD_BANDWIDTH};
use cdl::eval::nll::{pointwise, test_nll};
use cdl::eval::plot::{self, Bounds, Colormap};
use cdl::eval::stats::{mean_se, outlier_fraction, saturated_fraction, verdict_threshold, Verdict, OUTLIER_STDS};
use cdl::gpu::Gpu;
use cdl::train::checkpoint;
use cdl::train::recipe::{default_q, LossKind};
use cdl::train::run::{held_out_images, Trained};

use super::sample::{draw, f32s, load, reference_points, SamplerArgs, SamplerKind, VarianceKind, EVAL_ROWS};
use super::train::{self as train_cmd, TrainArgs};

/// The names `--samplers` takes.
const SAMPLERS: [&str; 4] = ["sequential", "parallel", "ddim", "heun"];

/// What both experiments share: arms, seeds, budgets and samplers.
#[derive(Args, Clone, Debug)]
pub struct ArmArgs {
    /// Training seeds 0..N (default 5; --quick 2).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub seeds: Option<u64>,
    /// Arms (losses), comma-separated.
    #[arg(long, default_value = "ddpm,itd,cdl,edm,edm-cdl", value_delimiter = ',')]
    pub arms: Vec<String>,
    /// Training steps (overrides the default of the mode).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4_000_000_000))]
    pub steps: Option<u64>,
    /// Samples per model and sampler, and held-out examples (overrides the default of the mode).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    pub samples: Option<u64>,
    /// Steps T of sequential and parallel DDPM (overrides the default of the mode).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=10_000))]
    pub sampler_steps: Option<u64>,
    /// DDIM steps (overrides the default of the mode).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub ddim_steps: Option<u64>,
    /// EDM Heun levels (overrides the default of the mode).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=1000))]
    pub heun_steps: Option<u64>,
    /// Samplers, comma-separated: sequential, parallel, ddim, heun.
    #[arg(long, default_value = "sequential,parallel,ddim,heun", value_delimiter = ',')]
    pub samplers: Vec<String>,
    /// Variance of the DDPM transition, the same for the sequential and the parallel sampler.
    #[arg(long, value_enum, default_value_t = VarianceKind::Posterior)]
    pub variance: VarianceKind,
    /// The network's preconditioning for every arm: edm or eps (default: as `cdl train`).
    #[arg(long, value_parser = ["edm", "eps"])]
    pub precond: Option<String>,
    /// Output directory (default runs/experiment-<data>, runs/experiment-images-<data>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Clone, Debug)]
pub struct ToyArgs {
    /// Data: a built-in set or a CSV file.
    #[arg(long, default_value = "dino")]
    pub data: String,
    /// A few minutes on a CPU adapter: 2 seeds, 1,000 training steps, M = 16, 500 samples,
    /// DDPM-100 (sequential and parallel), DDIM-50, Heun-18, 200 NLL points. Default: 5 seeds and
    /// the paper's setting (batch 128, lr 1e-3, M = 128, DDPM-1000, τ = 0.1, no window, 2,000
    /// samples) with 20,000 training steps, DDIM-100, Heun-18.
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub arms: ArmArgs,
}

#[derive(Args, Clone, Debug)]
pub struct ImagesArgs {
    /// Data: "shapes" (built in), a CIFAR-10 archive (cifar-10-binary.tar.gz, its folder or a
    /// .bin batch) or a folder of PNG/JPEG images.
    #[arg(long, default_value = "shapes")]
    pub data: String,
    /// The UNet: unet-tiny (16 px, for a CPU adapter), unet-compact or unet-small (32 px, GPUs).
    #[arg(long, default_value = "unet-tiny", value_parser = ["unet-tiny", "unet-compact", "unet-small"])]
    pub model: String,
    /// Examples per training step, B.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch: Option<u64>,
    /// A quarter of an hour on a CPU adapter (a run that shows the machinery, not an effect):
    /// 2 seeds, 20 steps at batch 8, M = 4, 4 samples, DDPM-6 (sequential and parallel), DDIM-4,
    /// Heun-3, 4 NLL points on 4 held-out images. Default:
    /// 5 seeds, 20,000 steps at batch 64, M = 16, 64 samples, DDPM-1000, DDIM-100, Heun-18, 100
    /// NLL points on 256 held-out images (a GPU's budget).
    #[arg(long)]
    pub quick: bool,
    /// Inception-v3 weights (see `cdl fid --inception`): adds a FID column, each model's samples
    /// against the held-out images (both mapped from [-1, 1] to [0, 1], not rounded to 8 bits).
    #[arg(long)]
    pub inception: Option<PathBuf>,
    #[command(flatten)]
    pub arms: ArmArgs,
}

/// The resolved settings of one experiment.
struct ExperimentPlan {
    seeds: u64,
    steps: u64,
    batch: u64,
    points: u64,
    n: usize,
    nll_points: usize,
    t_n: usize,
    ddim: usize,
    heun: usize,
    arms: Vec<LossKind>,
}

impl ExperimentPlan {
    /// `a` over the mode's defaults (seeds, steps, batch, M, n, NLL points, T, DDIM, Heun).
    fn new(a: &ArmArgs, d: (u64, u64, u64, u64, usize, usize, usize, usize, usize)) -> Result<Self, String> {
        let mut arms = Vec::new();
        for name in &a.arms {
            let k: LossKind = name.trim().parse()?;
            if arms.contains(&k) {
                return Err(format!("--arms names {k} twice"));
            }
            arms.push(k);
        }
        if arms.is_empty() {
            return Err("--arms is empty".into());
        }
        for name in &a.samplers {
            if !SAMPLERS.contains(&name.trim()) {
                return Err(format!("unknown sampler {name:?} in --samplers; expected {}", SAMPLERS.join(", ")));
            }
        }
        let ddim = a.ddim_steps.map_or(d.7, |v| v as usize);
        if ddim > 1000 {
            return Err(format!("--ddim-steps {ddim}: DDIM takes at most the 1,000 steps of the schedule"));
        }
        Ok(Self {
            seeds: a.seeds.unwrap_or(d.0),
            steps: a.steps.unwrap_or(d.1),
            batch: d.2,
            points: d.3,
            n: a.samples.map_or(d.4, |v| v as usize),
            nll_points: d.5,
            t_n: a.sampler_steps.map_or(d.6, |v| v as usize),
            ddim,
            heun: a.heun_steps.map_or(d.8, |v| v as usize),
            arms,
        })
    }

    /// (label, name, settings) of each sampler of `--samplers`, all from seed `seed`.
    fn samplers(&self, a: &ArmArgs, seed: u64) -> Vec<(String, &'static str, SamplerArgs)> {
        let base = SamplerArgs {
            sampler: SamplerKind::Ddpm,
            steps: Some(self.t_n),
            window: Some(self.t_n),
            tol: 0.1,
            variance: a.variance,
            churn: 0.0,
            n: self.n as u64,
            seed,
            no_ema: false,
            clip_denoised: false,
            host_sampler: false,
        };
        let var = match a.variance {
            VarianceKind::Beta => "β",
            VarianceKind::Posterior => "β̃",
        };
        let all = [
            (format!("sequential DDPM-{} ({var})", self.t_n), "sequential", base.clone()),
            (
                format!("parallel DDPM-{} ({var}, τ = 0.1, window {})", self.t_n, self.t_n),
                "parallel",
                SamplerArgs { sampler: SamplerKind::Parallel, ..base.clone() },
            ),
            (
                format!("DDIM-{}", self.ddim),
                "ddim",
                SamplerArgs { sampler: SamplerKind::Ddim, steps: Some(self.ddim), ..base.clone() },
            ),
            (
                format!("EDM Heun-{}", self.heun),
                "heun",
                SamplerArgs { sampler: SamplerKind::Heun, steps: Some(self.heun), ..base },
            ),
        ];
        all.into_iter().filter(|(_, name, _)| a.samplers.iter().any(|s| s.trim() == *name)).collect()
    }

    /// Trains `arm` for seed `seed` into `out` and loads it: `TrainArgs` from `base` with the
    /// plan's budget.
    async fn train(
        &self,
        gpu: &Gpu,
        base: &TrainArgs,
        arm: LossKind,
        seed: u64,
        out: &Path,
    ) -> Result<(Trained, f64), String> {
        let _ = std::fs::remove_file(out.join(train_cmd::CHECKPOINT));
        println!("seed {seed}: training {arm} for {} steps on {} …", self.steps, base.data);
        let log = 100.min(self.steps);
        let targs = TrainArgs {
            loss: arm,
            steps: self.steps,
            batch: self.batch,
            seed,
            points: self.points,
            out: Some(out.to_path_buf()),
            quiet: true,
            log_every: log,
            checkpoint_every: self.steps.div_ceil(log) * log,
            ..base.clone()
        };
        let t = Instant::now();
        train_cmd::train(gpu, targs, None).await?;
        let secs = t.elapsed().as_secs_f64();
        Ok((load(&out.join(train_cmd::CHECKPOINT))?, secs))
    }
}

// ---------------------------------------------------------------------------------------------
// The table of an experiment

/// Which paired differences (CDL arm − its base) a column reports.
///
/// For each CDL arm against its base (ITD + CDL vs ITD, EDM + CDL vs EDM): the paired difference
/// over seeds (same seed, same data, same sampler noise) with its standard error and a verdict:
/// better or worse when it is further from 0 than the 95 % quantile of Student's t with N − 1
/// degrees of freedom in standard errors (2 SE for many seeds, 2.78 SE for 5, 12.7 for 2), else
/// not distinguishable.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compare {
    No,
    /// Under every sampler.
    All,
    /// Under the parallel sampler only (passes).
    Parallel,
}

/// One figure of the report.
#[derive(Clone, Copy)]
struct Column {
    key: &'static str,
    header: &'static str,
    digits: usize,
    /// Printed ×100 (a fraction shown in %).
    percent: bool,
    compare: Compare,
}

/// A Markdown table's header row and rule: the `lead` cells, one per column, then the `tail` cells.
fn md_header(lead: &[&str], columns: &[Column], tail: &[&str]) -> String {
    let names: Vec<&str> =
        lead.iter().copied().chain(columns.iter().map(|c| c.header)).chain(tail.iter().copied()).collect();
    format!("| {} |\n|{}\n", names.join(" | "), "---|".repeat(names.len()))
}

/// One row's cells of `columns` (mean ± SE of each), each followed by its `|`.
fn md_cells(cell: &Cell, columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| format!(" {} |", pm(Table::values(cell, c.key), c.digits, if c.percent { 100.0 } else { 1.0 })))
        .collect()
}

const fn col(key: &'static str, header: &'static str, digits: usize, percent: bool, compare: Compare) -> Column {
    Column { key, header, digits, percent, compare }
}

/// Per-seed values of one cell, by column key.
type Cell = BTreeMap<&'static str, Vec<f64>>;

/// Every figure of an experiment: per (arm, sampler) and per arm, over seeds.
struct Table {
    arms: Vec<LossKind>,
    labels: Vec<String>,
    names: Vec<&'static str>,
    columns: Vec<Column>,
    arm_columns: Vec<Column>,
    cells: Vec<Vec<Cell>>,
    arm_cells: Vec<Cell>,
    alpha_ranges: Vec<Option<(f64, f64)>>,
    /// The floor of the first column, per seed (toy: MMD between two held-out sets).
    floor: Vec<f64>,
}

fn pm(v: &[f64], digits: usize, scale: f64) -> String {
    let v: Vec<f64> = v.iter().map(|x| x * scale).collect();
    let (m, se) = mean_se(&v);
    if v.is_empty() {
        "—".into()
    } else if se.is_finite() {
        format!("{m:.digits$} ± {se:.digits$}")
    } else {
        format!("{m:.digits$}")
    }
}

fn ms_json(v: &[f64]) -> Value {
    let (m, se) = mean_se(v);
    json!({"mean": if m.is_finite() { json!(m) } else { Value::Null }, "se": if se.is_finite() { json!(se) } else { Value::Null }})
}

impl Table {
    /// The table of `plan` under `samplers`: the experiment's own per-sampler `quality` columns
    /// followed by the columns every experiment reports (passes, evaluations, sampling time), and
    /// per arm the NLL and the training time.
    fn new(plan: &ExperimentPlan, samplers: &[(String, &'static str, SamplerArgs)], quality: &[Column]) -> Self {
        let k = plan.arms.len();
        let mut columns: Vec<Column> = quality.to_vec();
        columns.extend([
            col("passes", "passes", 1, false, Compare::Parallel),
            col("evaluations", "evaluations", 1, false, Compare::No),
            col("seconds", "sampling time (s)", 1, false, Compare::No),
        ]);
        let arm_columns = vec![
            col("nll_bpd", "NLL (bits/dim)", 3, false, Compare::No),
            col("train_seconds", "training time (s)", 0, false, Compare::No),
        ];
        Self {
            arms: plan.arms.clone(),
            labels: samplers.iter().map(|s| s.0.clone()).collect(),
            names: samplers.iter().map(|s| s.1).collect(),
            columns,
            arm_columns,
            cells: (0..k).map(|_| (0..samplers.len()).map(|_| Cell::new()).collect()).collect(),
            arm_cells: (0..k).map(|_| Cell::new()).collect(),
            alpha_ranges: vec![None; k],
            floor: Vec::new(),
        }
    }

    fn push(&mut self, arm: usize, sampler: usize, key: &'static str, v: f64) {
        self.cells[arm][sampler].entry(key).or_default().push(v);
    }

    /// One draw of (arm, sampler): the metrics given, then the sampler's passes, evaluations and
    /// seconds.
    fn push_draw(
        &mut self,
        arm: usize,
        sampler: usize,
        metrics: &[(&'static str, f64)],
        stats: &SampleStats,
        secs: f64,
    ) {
        let cost = [("passes", stats.passes as f64), ("evaluations", stats.evaluations as f64), ("seconds", secs)];
        for &(key, v) in metrics.iter().chain(&cost) {
            self.push(arm, sampler, key, v);
        }
    }

    fn push_arm(&mut self, arm: usize, key: &'static str, v: f64) {
        self.arm_cells[arm].entry(key).or_default().push(v);
    }

    fn values<'a>(cell: &'a Cell, key: &str) -> &'a [f64] {
        cell.get(key).map_or(&[], Vec::as_slice)
    }

    /// (CDL arm, its base) index pairs where both are arms.
    fn pairs(&self) -> Vec<(usize, usize)> {
        let arms = &self.arms;
        arms.iter()
            .enumerate()
            .filter(|(_, k)| k.has_cdl())
            .filter_map(|(i, k)| arms.iter().position(|b| *b == k.base()).map(|j| (i, j)))
            .collect()
    }

    /// The per-sampler table, the per-arm table and the CDL comparisons, in Markdown.
    fn markdown(&self, seeds: u64) -> String {
        let mut s = md_header(&["arm", "sampler"], &self.columns, &[]);
        for (ai, arm) in self.arms.iter().enumerate() {
            for (si, label) in self.labels.iter().enumerate() {
                let _ = writeln!(s, "| {arm} | {label} |{}", md_cells(&self.cells[ai][si], &self.columns));
            }
        }
        s += "\n";
        s += &md_header(&["arm"], &self.arm_columns, &["trained α range"]);
        for (ai, arm) in self.arms.iter().enumerate() {
            let _ = write!(s, "| {arm} |{}", md_cells(&self.arm_cells[ai], &self.arm_columns));
            let range = self.alpha_ranges[ai].map_or("?".into(), |(lo, hi)| format!("[{lo:.2}, {hi:.2}]"));
            let _ = writeln!(s, " {range} |");
        }
        let pairs = self.pairs();
        if pairs.is_empty() {
            return s;
        }
        let _ = write!(
            s,
            "\n**CDL against its base** (paired over seeds: CDL − base, mean ± SE; lower is better; a verdict needs \
             |mean| > {:.2} SE, the two-sided 95 % quantile of Student's t with {} degrees of freedom):\n\n\
             | comparison | sampler | figure | difference | verdict |\n|---|---|---|---|---|\n",
            verdict_threshold(seeds as usize),
            seeds.saturating_sub(1)
        );
        for (i, j) in pairs {
            for (si, label) in self.labels.iter().enumerate() {
                for c in &self.columns {
                    if c.compare == Compare::No || (c.compare == Compare::Parallel && self.names[si] != "parallel") {
                        continue;
                    }
                    let a = Self::values(&self.cells[i][si], c.key);
                    let b = Self::values(&self.cells[j][si], c.key);
                    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
                    let scale = if c.percent { 100.0 } else { 1.0 };
                    let _ = writeln!(
                        s,
                        "| {} vs {} | {label} | {} | {} | {} |",
                        self.arms[i],
                        self.arms[j],
                        c.header,
                        pm(&d, c.digits, scale),
                        Verdict::of(&d).text()
                    );
                }
            }
        }
        s
    }

    /// Mean ± SE of every figure.
    fn summary(&self) -> Value {
        let mut out = Vec::new();
        for (ai, arm) in self.arms.iter().enumerate() {
            for (si, label) in self.labels.iter().enumerate() {
                let mut v = json!({"arm": arm.name(), "sampler": label});
                for c in &self.columns {
                    v[c.key] = ms_json(Self::values(&self.cells[ai][si], c.key));
                }
                for c in &self.arm_columns {
                    v[c.key] = ms_json(Self::values(&self.arm_cells[ai], c.key));
                }
                out.push(v);
            }
        }
        json!(out)
    }
}

/// A directory name for `data` (a built-in set's name, or the stem of a path's last component):
/// `data` itself would put an absolute path's run directories inside the user's data.
pub(super) fn data_stem(data: &str) -> String {
    Path::new(data).file_stem().map_or("data".into(), |s| s.to_string_lossy().into_owned())
}

fn out_dir(a: &ArmArgs, prefix: &str, data: &str) -> Result<PathBuf, String> {
    let stem = data_stem(data);
    let dir = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{prefix}-{stem}")));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn machine(gpu: &Gpu) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{}; {cores} CPU cores", gpu.describe())
}

fn write_report(dir: &Path, md: &str, js: &Value) -> Result<(), String> {
    checkpoint::write_atomic(dir.join("report.md"), |f| std::io::Write::write_all(f, md.as_bytes()))
        .map_err(|e| e.to_string())?;
    let text = serde_json::to_string_pretty(js).unwrap_or_default() + "\n";
    checkpoint::write_atomic(dir.join("report.json"), |f| std::io::Write::write_all(f, text.as_bytes()))
        .map_err(|e| e.to_string())?;
    println!("{md}");
    println!("wrote {}", dir.join("report.md").display());
    Ok(())
}

fn variance_text(v: VarianceKind) -> &'static str {
    match v {
        VarianceKind::Beta => "β_t",
        VarianceKind::Posterior => "β̃_t (posterior)",
    }
}

fn arm_names(arms: &[LossKind]) -> String {
    arms.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------------------------
// The toy experiment

/// The toy experiment on 2-D points.
///
/// - Arms: DDPM, ITD, ITD + CDL, EDM, EDM + CDL (`--arms`). The network has EDM's
///   preconditioning in every arm, as `cdl train` defaults (`--precond eps`: the plain ε-network).
/// - Samplers: sequential DDPM-T and the parallel Picard sampler over the same DDPM-T transition
///   with the same variance (`--variance`, default the authors' β̃: math.md §6.2, §9 pitfall 11),
///   τ = 0.1, no window; DDIM and EDM Heun (deterministic).
/// - Toy metrics: MMD (h = 0.03) against held-out data and its floor (the held-out set against a
///   second held-out set of the same size: what two samples of the data itself score); the
///   fraction of samples beyond `OUTLIER_STDS` data standard deviations; Picard passes; the ITD
///   test NLL in bits/dim (which favours ITD-trained arms by construction: it is the quantity the
///   ITD loss estimates).
///
/// Seed s trains with `--seed s` (init, batches, noise) and samples with sampler seed 1 + s; toy
/// models are scored against held-out points drawn with seed 1000 + s (a CSV file is its own
/// reference).
pub async fn toy(gpu: &Gpu, args: ToyArgs) -> Result<(), String> {
    let defaults = if args.quick {
        (2, 1000, 128, 16, 500, 200, 100, 50, 18)
    } else {
        (5, 20_000, 128, 128, 2000, 1000, 1000, 100, 18)
    };
    let a = &args.arms;
    let plan = ExperimentPlan::new(a, defaults)?;
    let dir = out_dir(a, "experiment", &args.data)?;
    let started = Instant::now();
    let base = TrainArgs { data: args.data.clone(), precond: a.precond.clone(), ..TrainArgs::defaults() };
    let columns = [col("mmd", "MMD", 5, false, Compare::All), col("outliers", "outliers (%)", 2, true, Compare::No)];
    let mut table = Table::new(&plan, &plan.samplers(a, 0), &columns);
    let (mut panels, mut rows) = (Vec::new(), Vec::new());
    let (held_label, sample_label) = (format!("{} held-out points", plan.n), format!("{} samples", plan.n));
    for seed in 0..plan.seeds {
        for (ai, &arm) in plan.arms.iter().enumerate() {
            let (trained, train_s) =
                plan.train(gpu, &base, arm, seed, &dir.join(format!("seed-{seed}")).join(arm.name())).await?;
            table.push_arm(ai, "train_seconds", train_s);
            table.alpha_ranges[ai] = trained.meta.alpha_range;
            let both = reference_points(&args.data, &trained, 2 * plan.n, 1000 + seed)?;
            let d = both.len() / (2 * plan.n).max(1);
            if d == 0 || both.len() < 2 * plan.n * d {
                return Err(format!("{}: needs at least {} points for two reference sets", args.data, 2 * plan.n));
            }
            let (reference, second) = both.split_at(plan.n * d);
            if ai == 0 {
                table.floor.push(mmd(second, reference, d, MMD_BANDWIDTH).map_err(|e| e.to_string())?);
            }
            // The ITD test NLL on the held-out points (math.md §2.2), in bits/dim.
            let mut den = GpuDenoiser::from_checkpoint(gpu, &trained.checkpoint, EVAL_ROWS, true)
                .await
                .map_err(|e| e.to_string())?;
            let var = vec![1.0; d];
            let q = TruncLogistic::cdl_toy(&var).map_err(|e| e.to_string())?;
            let r = RefGaussian::from_variances(&var).map_err(|e| e.to_string())?;
            let t_nll = test_nll(&mut den, reference, &q, &r, plan.nll_points, 2).await.map_err(|e| e.to_string())?;
            table.push_arm(ai, "nll_bpd", t_nll.bpd);
            for (si, (label, name, sa)) in plan.samplers(a, 1 + seed).into_iter().enumerate() {
                println!("seed {seed}: sampling {arm} with {label} …");
                let (x, stats, secs) = draw(gpu, &trained.checkpoint, &sa, plan.n).await?;
                let m = mmd(&x, reference, d, MMD_BANDWIDTH).map_err(|e| e.to_string())?;
                let o = outlier_fraction(&x, d);
                table.push_draw(ai, si, &[("mmd", m), ("outliers", o)], &stats, secs);
                rows.push(json!({"seed": seed, "arm": arm.name(), "sampler": label, "config": sa.config().name(),
                    "mmd": m, "outlier_fraction": o, "passes": stats.passes, "evaluations": stats.evaluations,
                    "sample_seconds": secs, "nll_bpd": t_nll.bpd, "train_seconds": train_s,
                    "mmd_floor": table.floor[seed as usize]}));
                if seed == 0 {
                    let (xs, rs) = (f32s(&x), f32s(reference));
                    let title = format!("{arm}: {label}");
                    let series = [
                        Series { label: &held_label, points: &rs, color: DATA_COLOR },
                        Series { label: &sample_label, points: &xs, color: SAMPLE_COLOR },
                    ];
                    let img = figure::scatter(&title, &series, Bounds::covering(&[&rs], 0.1).squared(), 440)
                        .map_err(|e| e.to_string())?;
                    plot::save_png(dir.join(format!("samples-{}-{name}.png", arm.name())), &img)
                        .map_err(|e| e.to_string())?;
                    if name == "sequential" || name == "parallel" {
                        panels.push((title, rs, xs));
                    }
                }
            }
            if seed == 0 {
                let m = if args.quick { 32 } else { 128 };
                let file = dir.join(format!("density-{}.png", arm.name()));
                density_png(&mut den, reference, m, &format!("{arm}: log density, ITD estimator"), &file).await?;
            }
        }
    }
    if !panels.is_empty() {
        // One row per arm: its sequential and parallel DDPM panels, over the same bounds.
        let cols = panels.len().div_ceil(plan.arms.len());
        let sheet: Vec<Panel> = panels
            .iter()
            .map(|(title, rs, xs)| Panel {
                title: title.clone(),
                series: vec![
                    Series { label: &held_label, points: rs, color: DATA_COLOR },
                    Series { label: &sample_label, points: xs, color: SAMPLE_COLOR },
                ],
            })
            .collect();
        let all: Vec<&[f32]> = panels.iter().map(|p| &p.1[..]).collect();
        let bounds = Bounds::covering(&all, 0.1).squared();
        let title = format!("{}: DDPM samples of every arm, seed 0", args.data);
        let img = figure::scatter_sheet(&title, &sheet, bounds, 440, cols).map_err(|e| e.to_string())?;
        plot::save_png(dir.join("samples.png"), &img).map_err(|e| e.to_string())?;
    }
    let secs = started.elapsed().as_secs_f64();
    let precond = a.precond.as_deref().unwrap_or("edm");
    let mut md = format!(
        "# Toy experiment on `{}`: {}\n\n\
         **Settings.** {} training seeds (0..{}); every arm: the 2-D MLP (width 128, 2 blocks, preconditioning \
         `{precond}`), Adam lr 1e-3 with 100 warm-up steps, batch 128, {} steps, EMA 0.999 weights for sampling. \
         CDL arms: K = 2, M = {}, paired draws, Σ/B, λ = 1. {} samples per model and sampler against {} held-out \
         points (seed 1000 + s) in standardised units; MMD with h = 0.03 (unbiased); outliers: samples with a \
         coordinate beyond {OUTLIER_STDS} data standard deviations; NLL: the ITD test protocol with {} α points, \
         bits/dim (d = 2; it favours ITD-trained arms by construction). Passes: sequential rounds of network \
         evaluations; evaluations: network evaluations per sample. DDPM variance {} for both the sequential and \
         the parallel sampler.\n\n**Machine.** {}. Total time {secs:.0} s.\n\n\
         **MMD floor** (held-out set against a second held-out set of {} points, per seed): {} — differences \
         below it are sampling noise of the metric.\n\n",
        args.data,
        arm_names(&plan.arms),
        plan.seeds,
        plan.seeds - 1,
        plan.steps,
        plan.points,
        plan.n,
        plan.n,
        plan.nll_points,
        variance_text(a.variance),
        machine(gpu),
        plan.n,
        pm(&table.floor, 5, 1.0)
    );
    md += &table.markdown(plan.seeds);
    md += "\nPictures (seed 0): `samples-<arm>-<sampler>.png` (samples in colour over the held-out data in grey), \
           `samples.png` (sequential and parallel DDPM of every arm), `density-<arm>.png` (log p̂(x) from the ITD \
           estimator on a 128×128 grid, drawn bilinearly over the 8 nats below its maximum). Per-seed numbers: report.json.\n";
    let js = json!({
        "experiment": "toy", "data": args.data, "seeds": plan.seeds, "steps": plan.steps, "points": plan.points,
        "samples": plan.n, "sampler_steps": plan.t_n, "ddim_steps": plan.ddim, "heun_steps": plan.heun,
        "variance": format!("{:?}", a.variance).to_lowercase(), "precond": precond, "arms": arm_names(&plan.arms),
        "machine": machine(gpu), "seconds": secs,
        "mmd_floor": {"mean": mean_se(&table.floor).0, "se": ms_json(&table.floor)["se"], "per_seed": table.floor},
        "summary": table.summary(), "runs": rows,
    });
    write_report(&dir, &md, &js)
}

/// Cells a side of the density map's grid.
const DENSITY_GRID: usize = 128;
/// Held-out points drawn over the density map.
const DENSITY_POINTS: usize = 150;

/// log p̂(x) on a `DENSITY_GRID`² grid (ITD estimator with `m` α points, EMA weights), drawn
/// bilinearly over the 8 nats below its maximum with a colour bar, under the first
/// `DENSITY_POINTS` held-out points: the noise classifier's view of the data.
async fn density_png(
    den: &mut GpuDenoiser<'_>,
    reference: &[f64],
    m: usize,
    title: &str,
    file: &Path,
) -> Result<(), String> {
    let rs = f32s(reference);
    let bounds = Bounds::covering(&[&rs], 0.1).squared();
    let (nx, ny) = (DENSITY_GRID, DENSITY_GRID);
    let grid: Vec<f64> = bounds.grid_centers(nx, ny).iter().map(|&v| f64::from(v)).collect();
    let var = [1.0, 1.0];
    let q = TruncLogistic::cdl_toy(&var).map_err(|e| e.to_string())?;
    let r = RefGaussian::from_variances(&var).map_err(|e| e.to_string())?;
    let nll = pointwise(den, &grid, &q, &r, m, None, 3).await.map_err(|e| e.to_string())?;
    let logp: Vec<f64> = nll.iter().map(|v| -v).collect();
    let top = logp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let map = Map {
        values: &logp,
        nx,
        ny,
        bounds,
        colormap: Colormap::Viridis,
        range: (top - 8.0, top),
        label: "log p(x) (nats)",
    };
    let shown = &rs[..rs.len().min(2 * DENSITY_POINTS)];
    let label = format!("{} held-out points", shown.len() / 2);
    let overlay = [Series { label: &label, points: shown, color: figure::OVERLAY_FILL }];
    let img = figure::heatmap(title, &map, &overlay, 560).map_err(|e| e.to_string())?;
    plot::save_png(file, &img).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// The image experiment

/// Moments of the Inception features of images `x` (n, 3, side, side) in model units [-1, 1].
async fn fid_moments(
    gpu: &Gpu,
    weights: &cdl::eval::inception::InceptionWeights,
    x: &[f64],
    side: usize,
) -> Result<cdl::eval::feature_stats::Moments, String> {
    use cdl::eval::inception::{Inception, FEATURES};
    let d = 3 * side * side;
    let n = x.len() / d;
    let net = Inception::new(gpu, weights, n.clamp(1, 16), side, side).map_err(|e| e.to_string())?;
    let mut stats = cdl::eval::feature_stats::FeatureStats::new(FEATURES).map_err(|e| e.to_string())?;
    for start in (0..n).step_by(net.batch()) {
        let m = net.batch().min(n - start);
        let images: Vec<f32> = x[start * d..(start + m) * d].iter().map(|&v| (0.5 * v + 0.5) as f32).collect();
        stats.push(&net.features(gpu, &images, m).await.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    stats.moments().map_err(|e| format!("FID: {e}"))
}

/// The image experiment: arms, samplers and seeds as `toy`; image models are scored against
/// held-out images (`train::run::held_out_images`). Metrics: sample grids, the fraction of
/// saturated pixels (with the held-out images' own fraction as its floor), Picard passes, the
/// ITD test NLL in bits/dim, and with `--inception` FID against the held-out images.
pub async fn images(gpu: &Gpu, args: ImagesArgs) -> Result<(), String> {
    let defaults = if args.quick { (2, 20, 8, 4, 4, 4, 6, 4, 3) } else { (5, 20_000, 64, 16, 64, 100, 1000, 100, 18) };
    let a = &args.arms;
    let mut plan = ExperimentPlan::new(a, defaults)?;
    plan.batch = args.batch.unwrap_or(plan.batch);
    let held = if args.quick { 4 } else { 256 };
    let dir = out_dir(a, "experiment-images", &args.data)?;
    let started = Instant::now();
    let base = TrainArgs {
        data: args.data.clone(),
        model: args.model.clone(),
        precond: a.precond.clone(),
        lr: 2e-4,
        ema: 0.999,
        warmup: 100.min(plan.steps / 10),
        ..TrainArgs::defaults()
    };
    base.check()?;
    let (test, variances, split) = held_out_images(&base.run_config(), held).map_err(|e| e.to_string())?;
    let (d, m) = (variances.len(), test.len() / variances.len());
    let floor_sat = saturated_fraction(&test);
    // FID against the held-out images when weights are given: their features once, then each
    // model's samples'.
    let side = ((d / 3) as f64).sqrt().round() as usize;
    let fid_ref = match &args.inception {
        Some(path) if d != 3 * side * side => {
            return Err(format!("{}: FID needs RGB images; these have {d} values each", path.display()))
        }
        Some(path) => {
            let weights = super::fid::load_weights(path)?;
            let moments = fid_moments(gpu, &weights, &test, side).await?;
            Some((weights, moments))
        }
        None => None,
    };
    let mut columns = vec![col("saturated", "saturated pixels (%)", 2, true, Compare::All)];
    if fid_ref.is_some() {
        columns.push(col("fid", "FID", 2, false, Compare::All));
    }
    let mut table = Table::new(&plan, &plan.samplers(a, 0), &columns);
    let mut rows = Vec::new();
    for seed in 0..plan.seeds {
        for (ai, &arm) in plan.arms.iter().enumerate() {
            let (trained, train_s) =
                plan.train(gpu, &base, arm, seed, &dir.join(format!("seed-{seed}")).join(arm.name())).await?;
            table.push_arm(ai, "train_seconds", train_s);
            table.alpha_ranges[ai] = trained.meta.alpha_range;
            // The ITD test NLL on the held-out images (math.md §2.2), continuous bits/dim, over the
            // ITD loss's own integration range and the images' per-pixel reference Gaussian.
            let q = default_q(LossKind::Itd, &variances).map_err(|e| e.to_string())?;
            let r = RefGaussian::from_variances(&variances).map_err(|e| e.to_string())?;
            let mut den = GpuDenoiser::from_checkpoint(gpu, &trained.checkpoint, m.max(1), true)
                .await
                .map_err(|e| e.to_string())?;
            let t_nll = test_nll(&mut den, &test, &q, &r, plan.nll_points, 2).await.map_err(|e| e.to_string())?;
            table.push_arm(ai, "nll_bpd", t_nll.bpd);
            drop(den);
            for (si, (label, name, sa)) in plan.samplers(a, 1 + seed).into_iter().enumerate() {
                println!("seed {seed}: sampling {arm} with {label} …");
                let (x, stats, secs) = draw(gpu, &trained.checkpoint, &sa, plan.n).await?;
                let sat = saturated_fraction(&x);
                let fid = match &fid_ref {
                    Some((weights, reference)) => {
                        let m = fid_moments(gpu, weights, &x, side).await?;
                        Some(cdl::eval::fd::frechet_moments(&m, reference).map_err(|e| e.to_string())?)
                    }
                    None => None,
                };
                let mut figures = vec![("saturated", sat)];
                figures.extend(fid.map(|f| ("fid", f)));
                table.push_draw(ai, si, &figures, &stats, secs);
                rows.push(json!({"seed": seed, "arm": arm.name(), "sampler": label, "config": sa.config().name(),
                    "saturated_fraction": sat, "fid": fid, "passes": stats.passes, "evaluations": stats.evaluations,
                    "sample_seconds": secs, "nll_bpd": t_nll.bpd, "train_seconds": train_s}));
                if seed == 0 {
                    let c = if d.is_multiple_of(3) { 3 } else { 1 };
                    let side = ((d / c) as f64).sqrt().round() as usize;
                    let k = plan.n.min(64);
                    let caption = format!("{k} samples, {}, EMA weights", sa.config().name());
                    let img = plot::image_grid(&f32s(&x[..k * d]), k, c, side, 8, 2)
                        .and_then(|grid| figure::image_figure(&format!("{arm}: {label}"), &caption, &grid))
                        .map_err(|e| e.to_string())?;
                    plot::save_png(dir.join(format!("samples-{}-{name}.png", arm.name())), &img)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let mut md = format!(
        "# Image experiment on `{}`: {}\n\n\
         **Settings.** {} training seeds (0..{}); every arm: `{}` (EDM's preconditioning in every arm unless \
         `--precond`), Adam lr 2e-4 with {} warm-up steps, batch {}, {} steps, EMA 0.999 \
         weights for sampling. CDL arms: K = 2, M = {}, paired draws, Σ/B, λ = 1. {} samples per model and sampler. \
         Saturated pixels: channel values that the uint8 export puts at 0 or 255. NLL: the ITD test protocol with \
         {} α points on {} {} images, continuous bits/dim (it favours ITD-trained arms by construction). DDPM \
         variance {} for both the sequential and the parallel sampler. {}\n\n\
         **Machine.** {}. Total time {secs:.0} s.\n\n\
         **Saturation floor** (the held-out images' own fraction): {:.2} %.\n\n",
        args.data,
        arm_names(&plan.arms),
        plan.seeds,
        plan.seeds - 1,
        args.model,
        base.warmup,
        plan.batch,
        plan.steps,
        plan.points,
        plan.n,
        plan.nll_points,
        m,
        if split { "held-out" } else { "training (an image folder has no held-out split)" },
        variance_text(a.variance),
        if fid_ref.is_some() {
            "FID: Inception-v3 features (`--inception`) of each model's samples against the held-out images, \
             both mapped from [-1, 1] to [0, 1] without 8-bit rounding; with few images it is biased upwards and \
             compares arms, not papers."
        } else {
            "No sample-quality metric (FID: pass `--inception WEIGHTS`)."
        },
        machine(gpu),
        100.0 * floor_sat
    );
    md += &table.markdown(plan.seeds);
    md += "\nPictures (seed 0): `samples-<arm>-<sampler>.png`, up to 64 samples each. Per-seed numbers: report.json.\n";
    let js = json!({
        "experiment": "images", "data": args.data, "model": args.model, "seeds": plan.seeds, "steps": plan.steps,
        "batch": plan.batch, "points": plan.points, "samples": plan.n, "sampler_steps": plan.t_n,
        "ddim_steps": plan.ddim, "heun_steps": plan.heun, "variance": format!("{:?}", a.variance).to_lowercase(),
        "arms": arm_names(&plan.arms), "machine": machine(gpu), "seconds": secs, "held_out": split,
        "saturated_floor": floor_sat, "summary": table.summary(), "runs": rows,
    });
    write_report(&dir, &md, &js)
}
