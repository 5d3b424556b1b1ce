//! `cdl experiment toy`: does the Contrastive Diffusion Loss make sampling better, above all
//! parallel sampling? An effect, not one draw: every arm (a loss) is trained with the same budget
//! on the same data for several training seeds, each model is sampled with every sampler, and
//! every figure is a mean ± standard error over the seeds next to the floor of its metric.
//!
//! - Arms: DDPM, ITD, ITD + CDL, EDM, EDM + CDL (`--arms`), the 2-D MLP with EDM's
//!   preconditioning (`--precond`) for all of them.
//! - Samplers: sequential DDPM-T and the parallel Picard sampler over the same DDPM-T transition
//!   with the same variance (`--variance`, default the authors' β̃: spec §6.2, §9 pitfall 11),
//!   τ = 0.1, no window; DDIM and EDM Heun (deterministic).
//! - Metrics: MMD (h = 0.03) against held-out data; the MMD floor (the held-out set against a
//!   second held-out set of the same size: what two samples of the data itself score); the
//!   fraction of samples beyond `OUTLIER_STDS` data standard deviations; Picard passes; the ITD
//!   test NLL in bits/dim (which favours ITD-trained arms by construction: it is the quantity the
//!   ITD loss estimates).
//! - For each CDL arm against its base (ITD + CDL vs ITD, EDM + CDL vs EDM): the paired
//!   difference over seeds (same seed, same data, same sampler noise) in MMD and in passes, with
//!   its standard error and a verdict: better or worse when it is further from 0 than the 95 %
//!   quantile of Student's t with N − 1 degrees of freedom in standard errors (2 SE for many
//!   seeds, 2.78 SE for 5, 12.7 for 2), else not distinguishable.
//!
//! Seed s trains with `--seed s` (init, batches, noise), samples with sampler seed 1 + s and is
//! scored against held-out points drawn with seed 1000 + s (built-in sets; a CSV file is its own
//! reference).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde_json::{json, Value};

use cdl::diffusion::likelihood::RefGaussian;
use cdl::diffusion::logistic::TruncLogistic;
use cdl::eval::denoiser::GpuDenoiser;
use cdl::eval::mmd::{mmd, MMD_BANDWIDTH};
use cdl::eval::nll::{pointwise, test_nll};
use cdl::eval::plot::{self, Bounds, Colormap};
use cdl::eval::stats::{mean_se, outlier_fraction, verdict_threshold, Verdict, OUTLIER_STDS};
use cdl::gpu::Gpu;
use cdl::train::checkpoint;
use cdl::train::recipe::LossKind;

use super::sample::{draw, f32s, load, reference_points, SamplerArgs, SamplerKind, VarianceKind, EVAL_ROWS};
use super::train::{self as train_cmd, TrainArgs};

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
    /// Training seeds 0..N (default 5; --quick 2).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub seeds: Option<u64>,
    /// Arms (losses), comma-separated.
    #[arg(long, default_value = "ddpm,itd,cdl,edm,edm-cdl", value_delimiter = ',')]
    pub arms: Vec<String>,
    /// Training steps (overrides the default of the mode).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4_000_000_000))]
    pub steps: Option<u64>,
    /// Samples, and held-out points in each reference set (overrides the default of the mode).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    pub samples: Option<u64>,
    /// Steps T of sequential and parallel DDPM (overrides the default of the mode).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=10_000))]
    pub sampler_steps: Option<u64>,
    /// DDIM steps (overrides the default of the mode).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub ddim_steps: Option<u64>,
    /// Samplers, comma-separated: sequential, parallel, ddim, heun.
    #[arg(long, default_value = "sequential,parallel,ddim,heun", value_delimiter = ',')]
    pub samplers: Vec<String>,
    /// EDM Heun levels.
    #[arg(long, default_value_t = 18, value_parser = clap::value_parser!(u64).range(2..=1000))]
    pub heun_steps: u64,
    /// Variance of the DDPM transition, the same for the sequential and the parallel sampler.
    #[arg(long, value_enum, default_value_t = VarianceKind::Posterior)]
    pub variance: VarianceKind,
    /// The MLP's preconditioning for every arm: edm (default) or eps (the paper's plain ε-net).
    #[arg(long, value_parser = ["edm", "eps"])]
    pub precond: Option<String>,
    /// Output directory (default runs/experiment-<data>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The names `--samplers` takes.
const SAMPLERS: [&str; 4] = ["sequential", "parallel", "ddim", "heun"];

/// The resolved settings of one experiment.
struct Plan {
    seeds: u64,
    steps: u64,
    points: u64,
    n: usize,
    nll_points: usize,
    density_points: usize,
    t_n: usize,
    ddim: usize,
    arms: Vec<LossKind>,
}

impl Plan {
    fn new(a: &ToyArgs) -> Result<Self, String> {
        let (seeds, steps, points, n, nll_points, density_points, t_n, ddim) =
            if a.quick { (2, 1000, 16, 500, 200, 32, 100, 50) } else { (5, 20_000, 128, 2000, 1000, 128, 1000, 100) };
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
        let ddim = a.ddim_steps.map_or(ddim, |v| v as usize);
        if ddim > 1000 {
            return Err(format!("--ddim-steps {ddim}: DDIM takes at most the 1,000 steps of the schedule"));
        }
        Ok(Self {
            seeds: a.seeds.unwrap_or(seeds),
            steps: a.steps.unwrap_or(steps),
            points,
            n: a.samples.map_or(n, |v| v as usize),
            nll_points,
            density_points,
            t_n: a.sampler_steps.map_or(t_n, |v| v as usize),
            ddim,
            arms,
        })
    }

    /// (label, name, sampler settings) of each sampler of `--samplers`, all from seed `seed`.
    fn samplers(&self, a: &ToyArgs, seed: u64) -> Vec<(String, &'static str, SamplerArgs)> {
        let mut all = self.all_samplers(a, seed);
        all.retain(|(_, name, _)| a.samplers.iter().any(|s| s.trim() == *name));
        all
    }

    fn all_samplers(&self, a: &ToyArgs, seed: u64) -> Vec<(String, &'static str, SamplerArgs)> {
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
        };
        let var = match a.variance {
            VarianceKind::Beta => "β",
            VarianceKind::Posterior => "β̃",
        };
        vec![
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
                format!("EDM Heun-{}", a.heun_steps),
                "heun",
                SamplerArgs { sampler: SamplerKind::Heun, steps: Some(a.heun_steps as usize), ..base },
            ),
        ]
    }
}

fn pm(v: &[f64], digits: usize) -> String {
    let (m, se) = mean_se(v);
    if se.is_finite() {
        format!("{m:.digits$} ± {se:.digits$}")
    } else {
        format!("{m:.digits$}")
    }
}

/// One (arm, sampler) cell: per-seed values.
#[derive(Default)]
struct Cell {
    mmd: Vec<f64>,
    outliers: Vec<f64>,
    passes: Vec<f64>,
    evaluations: Vec<f64>,
    seconds: Vec<f64>,
}

pub async fn toy(gpu: &Gpu, args: ToyArgs) -> Result<(), String> {
    let plan = Plan::new(&args)?;
    let stem = Path::new(&args.data).file_stem().map_or("data".into(), |s| s.to_string_lossy().into_owned());
    let dir = args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("experiment-{stem}")));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let started = Instant::now();
    let n_samplers = plan.samplers(&args, 0).len();
    let mut cells: Vec<Vec<Cell>> =
        plan.arms.iter().map(|_| (0..n_samplers).map(|_| Cell::default()).collect()).collect();
    let mut nll: Vec<Vec<f64>> = vec![Vec::new(); plan.arms.len()];
    let mut train_s: Vec<Vec<f64>> = vec![Vec::new(); plan.arms.len()];
    let mut alpha_ranges: Vec<Option<(f64, f64)>> = vec![None; plan.arms.len()];
    let mut floor = Vec::new();
    let mut panels = Vec::new();
    let mut rows = Vec::new();
    for seed in 0..plan.seeds {
        for (ai, &arm) in plan.arms.iter().enumerate() {
            let out = dir.join(format!("seed-{seed}")).join(arm.name());
            let _ = std::fs::remove_file(out.join(train_cmd::CHECKPOINT));
            println!("seed {seed}: training {arm} for {} steps on {} …", plan.steps, args.data);
            let targs = TrainArgs {
                data: args.data.clone(),
                loss: arm,
                steps: plan.steps,
                seed,
                points: plan.points,
                precond: args.precond.clone(),
                out: Some(out.clone()),
                quiet: true,
                log_every: 100.min(plan.steps),
                checkpoint_every: plan.steps.div_ceil(100.min(plan.steps)) * 100.min(plan.steps),
                ..TrainArgs::defaults()
            };
            let t = Instant::now();
            train_cmd::train(gpu, targs).await?;
            train_s[ai].push(t.elapsed().as_secs_f64());
            let trained = load(&out.join(train_cmd::CHECKPOINT))?;
            alpha_ranges[ai] = trained.alpha_range();
            let both = reference_points(&args.data, &trained, 2 * plan.n, 1000 + seed)?;
            let d = both.len() / (2 * plan.n).max(1);
            if d == 0 || both.len() < 2 * plan.n * d {
                return Err(format!("{}: needs at least {} points for two reference sets", args.data, 2 * plan.n));
            }
            let (reference, second) = both.split_at(plan.n * d);
            if ai == 0 {
                floor.push(mmd(second, reference, d, MMD_BANDWIDTH).map_err(|e| e.to_string())?);
            }
            // The ITD test NLL on the held-out points (spec §2.2), in bits/dim.
            let mut den =
                GpuDenoiser::from_checkpoint(gpu, &trained.ck, EVAL_ROWS, true).await.map_err(|e| e.to_string())?;
            let var = vec![1.0; d];
            let q = TruncLogistic::cdl_toy(&var).map_err(|e| e.to_string())?;
            let r = RefGaussian::from_variances(&var).map_err(|e| e.to_string())?;
            let t_nll = test_nll(&mut den, reference, &q, &r, plan.nll_points, 2).await.map_err(|e| e.to_string())?;
            nll[ai].push(t_nll.bpd);
            for (si, (label, file, sa)) in plan.samplers(&args, 1 + seed).into_iter().enumerate() {
                println!("seed {seed}: sampling {arm} with {label} …");
                let (x, stats, secs) = draw(gpu, &trained.ck, &sa, plan.n).await?;
                let m = mmd(&x, reference, d, MMD_BANDWIDTH).map_err(|e| e.to_string())?;
                let o = outlier_fraction(&x, d);
                let c = &mut cells[ai][si];
                c.mmd.push(m);
                c.outliers.push(o);
                c.passes.push(stats.passes as f64);
                c.evaluations.push(stats.evaluations as f64);
                c.seconds.push(secs);
                rows.push(json!({"seed": seed, "arm": arm.name(), "sampler": label, "config": sa.config().name(),
                    "mmd": m, "outlier_fraction": o, "passes": stats.passes, "evaluations": stats.evaluations,
                    "sample_seconds": secs, "nll_bpd": t_nll.bpd, "mmd_floor": floor[seed as usize]}));
                if seed == 0 {
                    let (xs, rs) = (f32s(&x), f32s(reference));
                    let img = plot::scatter(&rs, &xs, Bounds::covering(&[&rs], 0.1).squared(), 400)
                        .map_err(|e| e.to_string())?;
                    plot::save_png(dir.join(format!("samples-{}-{file}.png", arm.name())), &img)
                        .map_err(|e| e.to_string())?;
                    if file == "sequential" || file == "parallel" {
                        panels.push(img);
                    }
                }
            }
            if seed == 0 {
                density_png(&mut den, reference, plan.density_points, &dir.join(format!("density-{}.png", arm.name())))
                    .await?;
            }
        }
    }
    if !panels.is_empty() {
        let sheet = plot::side_by_side(&panels.iter().collect::<Vec<_>>(), 8);
        plot::save_png(dir.join("samples.png"), &sheet).map_err(|e| e.to_string())?;
    }
    let (labels, names): (Vec<String>, Vec<&str>) = plan.samplers(&args, 0).into_iter().map(|(l, n, _)| (l, n)).unzip();
    let report = Report {
        args: &args,
        plan: &plan,
        gpu,
        labels: &labels,
        names: &names,
        cells: &cells,
        nll: &nll,
        train_s: &train_s,
        alpha_ranges: &alpha_ranges,
        floor: &floor,
        secs: started.elapsed().as_secs_f64(),
    };
    let md = report.markdown();
    checkpoint::write_atomic(dir.join("report.md"), |f| std::io::Write::write_all(f, md.as_bytes()))
        .map_err(|e| e.to_string())?;
    let js = serde_json::to_string_pretty(&report.json(rows)).unwrap_or_default() + "\n";
    checkpoint::write_atomic(dir.join("report.json"), |f| std::io::Write::write_all(f, js.as_bytes()))
        .map_err(|e| e.to_string())?;
    println!("{md}");
    println!("wrote {}", dir.join("report.md").display());
    Ok(())
}

/// log p̂(x) on a 48×48 grid (ITD estimator, EMA weights) over the 8 nats below its maximum, with
/// the held-out points: the noise classifier's view of the data.
async fn density_png(den: &mut GpuDenoiser<'_>, reference: &[f64], m: usize, file: &Path) -> Result<(), String> {
    let rs = f32s(reference);
    let bounds = Bounds::covering(&[&rs], 0.1).squared();
    let (nx, ny) = (48, 48);
    let grid: Vec<f64> = bounds.grid_centers(nx, ny).iter().map(|&v| f64::from(v)).collect();
    let var = [1.0, 1.0];
    let q = TruncLogistic::cdl_toy(&var).map_err(|e| e.to_string())?;
    let r = RefGaussian::from_variances(&var).map_err(|e| e.to_string())?;
    let nll = pointwise(den, &grid, &q, &r, m, None, 3).await.map_err(|e| e.to_string())?;
    let logp: Vec<f64> = nll.iter().map(|v| -v).collect();
    let top = logp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut img =
        plot::heatmap_in_range(&logp, nx, ny, 400, Colormap::Viridis, (top - 8.0, top)).map_err(|e| e.to_string())?;
    plot::overlay_points(&mut img, bounds, &rs[..rs.len().min(2 * 150)]).map_err(|e| e.to_string())?;
    plot::save_png(file, &img).map_err(|e| e.to_string())
}

struct Report<'a> {
    args: &'a ToyArgs,
    plan: &'a Plan,
    gpu: &'a Gpu,
    labels: &'a [String],
    names: &'a [&'a str],
    cells: &'a [Vec<Cell>],
    nll: &'a [Vec<f64>],
    train_s: &'a [Vec<f64>],
    alpha_ranges: &'a [Option<(f64, f64)>],
    floor: &'a [f64],
    secs: f64,
}

impl Report<'_> {
    /// (CDL arm index, base arm index) of every CDL arm whose base is also an arm.
    fn pairs(&self) -> Vec<(usize, usize)> {
        let arms = &self.plan.arms;
        arms.iter()
            .enumerate()
            .filter(|(_, k)| k.has_cdl())
            .filter_map(|(i, k)| arms.iter().position(|b| *b == k.base()).map(|j| (i, j)))
            .collect()
    }

    fn diffs(a: &[f64], b: &[f64]) -> Vec<f64> {
        a.iter().zip(b).map(|(x, y)| x - y).collect()
    }

    fn machine(&self) -> String {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        format!("{}; {cores} CPU cores", self.gpu.describe())
    }

    fn markdown(&self) -> String {
        let (a, p) = (self.args, self.plan);
        let precond = a.precond.as_deref().unwrap_or("edm");
        let mut s = format!(
            "# Toy experiment on `{}`: {}\n\n\
             **Settings.** {} training seeds (0..{}); every arm: the 2-D MLP (width 128, 2 blocks, \
             preconditioning `{precond}`), Adam lr 1e-3 with 100 warm-up steps, batch 128, {} steps, EMA 0.999 \
             weights for sampling. CDL arms: K = 2, M = {}, paired draws, Σ/B, λ = 1. {} samples per model and \
             sampler against {} held-out points (seed 1000 + s) in standardised units; MMD with h = 0.03 \
             (unbiased); outliers: samples with a coordinate beyond {OUTLIER_STDS} data standard deviations; \
             NLL: the ITD test protocol with {} α points, bits/dim (d = 2; it favours ITD-trained arms by \
             construction). Passes: sequential rounds of network evaluations; evaluations: network evaluations \
             per sample. DDPM variance {} for both the sequential and the parallel sampler.\n\n\
             **Machine.** {}. Total time {:.0} s.\n\n",
            a.data,
            p.arms.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "),
            p.seeds,
            p.seeds - 1,
            p.steps,
            p.points,
            p.n,
            p.n,
            p.nll_points,
            match a.variance {
                VarianceKind::Beta => "β_t",
                VarianceKind::Posterior => "β̃_t (posterior)",
            },
            self.machine(),
            self.secs
        );
        let _ = writeln!(
            s,
            "**MMD floor** (held-out set against a second held-out set of {} points, per seed): {} — \
             differences below it are sampling noise of the metric.\n",
            p.n,
            pm(self.floor, 5)
        );
        s += "| arm | sampler | MMD | outliers (%) | passes | evaluations | sampling time (s) |\n\
              |---|---|---|---|---|---|---|\n";
        for (ai, arm) in p.arms.iter().enumerate() {
            for (si, label) in self.labels.iter().enumerate() {
                let c = &self.cells[ai][si];
                let pct: Vec<f64> = c.outliers.iter().map(|o| 100.0 * o).collect();
                let _ = writeln!(
                    s,
                    "| {arm} | {label} | {} | {} | {} | {} | {:.1} |",
                    pm(&c.mmd, 5),
                    pm(&pct, 2),
                    pm(&c.passes, 1),
                    pm(&c.evaluations, 1),
                    mean_se(&c.seconds).0
                );
            }
        }
        s += "\n| arm | NLL (bits/dim) | trained α range | training time (s) |\n|---|---|---|---|\n";
        for (ai, arm) in p.arms.iter().enumerate() {
            let range = self.alpha_ranges[ai].map_or("?".into(), |(lo, hi)| format!("[{lo:.2}, {hi:.2}]"));
            let _ = writeln!(s, "| {arm} | {} | {range} | {:.0} |", pm(&self.nll[ai], 3), mean_se(&self.train_s[ai]).0);
        }
        let pairs = self.pairs();
        if !pairs.is_empty() {
            let _ = write!(
                s,
                "\n**CDL against its base** (paired over seeds: CDL − base, mean ± SE; lower is better; a verdict \
                 needs |mean| > {:.2} SE, the two-sided 95 % quantile of Student's t with {} degrees of freedom):\n\n",
                verdict_threshold(p.seeds as usize),
                p.seeds.saturating_sub(1)
            );
            s += "\
                  | comparison | sampler | Δ MMD | verdict | Δ passes | verdict |\n|---|---|---|---|---|---|\n";
            for (i, j) in pairs {
                for (si, label) in self.labels.iter().enumerate() {
                    let (ci, cj) = (&self.cells[i][si], &self.cells[j][si]);
                    let dm = Self::diffs(&ci.mmd, &cj.mmd);
                    let passes = self.names[si] == "parallel";
                    let dp = Self::diffs(&ci.passes, &cj.passes);
                    let _ = writeln!(
                        s,
                        "| {} vs {} | {label} | {} | {} | {} | {} |",
                        p.arms[i],
                        p.arms[j],
                        pm(&dm, 5),
                        Verdict::of(&dm).text(),
                        if passes { pm(&dp, 1) } else { "—".into() },
                        if passes { Verdict::of(&dp).text() } else { "—" }
                    );
                }
            }
        }
        s += "\nPictures (seed 0): `samples-<arm>-<sampler>.png` (samples in colour over the held-out data in \
              grey), `samples.png` (sequential and parallel DDPM of every arm), `density-<arm>.png` (log p̂(x) \
              from the ITD estimator on a 48×48 grid, the 8 nats below its maximum). Per-seed numbers: \
              report.json.\n";
        s
    }

    fn json(&self, rows: Vec<Value>) -> Value {
        let p = self.plan;
        let mut summary = Vec::new();
        for (ai, arm) in p.arms.iter().enumerate() {
            for (si, label) in self.labels.iter().enumerate() {
                let c = &self.cells[ai][si];
                let ms = |v: &[f64]| {
                    let (m, se) = mean_se(v);
                    json!({"mean": m, "se": if se.is_finite() { json!(se) } else { Value::Null }})
                };
                summary.push(json!({"arm": arm.name(), "sampler": label, "mmd": ms(&c.mmd),
                    "outlier_fraction": ms(&c.outliers), "passes": ms(&c.passes), "evaluations": ms(&c.evaluations),
                    "nll_bpd": ms(&self.nll[ai])}));
            }
        }
        let (fm, fse) = mean_se(self.floor);
        json!({
            "data": self.args.data, "seeds": p.seeds, "steps": p.steps, "points": p.points, "samples": p.n,
            "sampler_steps": p.t_n, "ddim_steps": p.ddim, "heun_steps": self.args.heun_steps,
            "variance": format!("{:?}", self.args.variance).to_lowercase(),
            "precond": self.args.precond.as_deref().unwrap_or("edm"),
            "arms": p.arms.iter().map(|k| k.name()).collect::<Vec<_>>(),
            "machine": self.machine(), "seconds": self.secs,
            "mmd_floor": {"mean": fm, "se": if fse.is_finite() { json!(fse) } else { Value::Null }, "per_seed": self.floor},
            "summary": summary, "runs": rows,
        })
    }
}
