//! Command-line front end: parses arguments, acquires the device, calls into the library and
//! turns every error into one line on stderr and a non-zero exit code.

mod bench;
mod experiment;
mod export;
mod fid;
#[cfg(feature = "mpi")]
mod mpi;
mod quality;
mod sample;
mod sweep;
mod train;
mod tune;

use std::process::ExitCode;
use std::rc::Rc;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use cdl::gpu::{Gpu, GpuOptions};
use cdl::train::dist::Collective;

#[derive(Parser)]
#[command(name = "cdl", version, about = "Contrastive Diffusion Loss training on WebGPU")]
struct Cli {
    /// Use the adapter with this index in `cdl info`'s list, or whose name contains this text;
    /// default: the first high-performance adapter. Also read from CDL_ADAPTER.
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Restrict adapters to one backend: vulkan, metal, dx12 or gl (sets WGPU_BACKEND).
    #[arg(long, global = true, value_parser = ["vulkan", "metal", "dx12", "gl"])]
    backend: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a denoiser (default: the 2-D MLP on two moons, ITD + CDL, 1000 steps; a UNet on
    /// CIFAR-10 or an image folder with --model) and write a run directory.
    Train(train::TrainArgs),
    /// Print the adapter, its limits, and a self-test of every op against the CPU reference.
    Info,
    /// Draw samples from a checkpoint with DDPM, DDIM, EDM Heun or the parallel sampler; write
    /// a CSV of points or a PNG.
    Sample(sample::SampleArgs),
    /// Sample a checkpoint and report MMD, sliced Wasserstein and NLL (bits/dim) against data, as
    /// one JSON line.
    Eval(sample::EvalArgs),
    /// Write a checkpoint as a file to ship with a page: the model and EMA weights only (F16
    /// unless --f32), a preview computed from them (samples and a log p̂ map of a 2-D model, a
    /// sample grid of an image model) and the run's training curve; one JSON line.
    Export(export::ExportArgs),
    /// FID and KID between two image sets (folders, `shapes`, CIFAR-10), or FID between an image
    /// set and pytorch-fid statistics (.npz), with Inception-v3 weights the user supplies
    /// (pytorch-fid's, converted by tools/inception_to_safetensors.py); one JSON line.
    Fid(fid::FidArgs),
    /// Run an experiment and write a report.
    Experiment {
        #[command(subcommand)]
        what: ExperimentWhat,
    },
    /// Measure the kernel variants of a model's training step on this adapter and keep the
    /// fastest per shape in the cache (which every command reads), so runs start tuned. JSON on
    /// stdout.
    Tune(tune::TuneArgs),
    /// Run a grid of `cdl train` runs (flags × seeds): J at a time here, or as a Slurm array or a
    /// shell script; collect their final metrics as mean ± standard error over seeds.
    ///
    /// Each run is a `cdl train --resume` child process in a directory of its own, so running the
    /// sweep again skips finished runs and continues the others. `cdl sweep` itself does not open
    /// the GPU.
    #[command(after_help = sweep::GRID_HELP)]
    Sweep(sweep::SweepArgs),
    /// Measure kernels and write JSON results.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum ExperimentWhat {
    /// The paper's toy experiment: DDPM, ITD, ITD + CDL, EDM and EDM + CDL trained with the same
    /// budget on the same data over several seeds, each sampled with sequential and parallel
    /// DDPM, DDIM and EDM Heun; MMD (with its floor), outliers, Picard passes and NLL as
    /// mean ± standard error, CDL against its base with a verdict; writes report.md, report.json
    /// and PNGs.
    Toy(experiment::ToyArgs),
    /// The same arms on a UNet (default unet-tiny at 16 px on the built-in shapes; unet-compact
    /// on a GPU): sample grids per arm and sampler, saturated pixels, Picard passes and the ITD
    /// test NLL as mean ± standard error over seeds, CDL against its base; report.md, report.json.
    Images(experiment::ImagesArgs),
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Matmul forward and backward in every kernel scheme (square, 256, 512, 1024 by default);
    /// the compact UNet's largest convolutions, forward and both gradients, in every scheme;
    /// row reductions. JSON on stdout.
    Ops {
        /// Timed runs per case (after one warm-up run); the median is reported.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
        /// Matmul sizes N (N x N x N), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "256,512,1024",
              value_parser = clap::value_parser!(u32).range(4..=16384))]
        sizes: Vec<u32>,
        /// Batch B of the convolution cases (B x 96 x 32 x 32 inputs and smaller); 0 skips them.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=4096))]
        conv_batch: u32,
        /// Also write the JSON to this file.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Full training steps (std and std + CDL) and every sampler of a model preset at several
    /// batch sizes, with device memory and the PyTorch mirror on the same rows. JSON on stdout.
    Train {
        /// mlp, unet-tiny, unet-compact or unet-small.
        #[arg(long, default_value = "unet-compact")]
        model: String,
        /// Batch sizes, comma-separated.
        #[arg(long, default_value = "32,64,128", value_delimiter = ',')]
        batches: Vec<usize>,
        /// CDL anchors K.
        #[arg(long, default_value_t = 2)]
        anchors: usize,
        /// CDL points M.
        #[arg(long, default_value_t = 64)]
        points: usize,
        /// Timed training steps per case (after one warm-up step).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
        /// Steps of each sampler (DDPM, DDIM, Heun levels, parallel DDPM).
        #[arg(long, default_value_t = 10)]
        sampler_steps: usize,
        /// Python with torch for the PyTorch mirror; also read from CDL_PYTHON.
        #[arg(long)]
        python: Option<std::path::PathBuf>,
        /// Also write the JSON to this file.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Sample quality of `cdl train` against a plain PyTorch trainer of the same network
    /// (tools/reference_train.py) at equal budgets, over seeds, for DDPM, ITD and ITD + CDL: MMD
    /// on built-in 2-D sets (MLP), a pixel Fréchet distance on images (UNet). JSON on stdout.
    Quality(quality::QualityArgs),
    /// Samples/s of every sampler (DDPM, DDIM, EDM Heun, parallel DDPM) of a model preset,
    /// with the submissions and FLOPs of each run. JSON on stdout.
    Sample {
        /// mlp, unet-tiny, unet-compact or unet-small.
        #[arg(long, default_value = "unet-compact")]
        model: String,
        /// Samples per run.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        samples: u32,
        /// Steps of each sampler (Heun: levels).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=10_000))]
        steps: u32,
        /// Also write the JSON to this file.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Images/s of the Inception-v3 feature network of `cdl fid` with random weights (no file
    /// needed), and GFLOP/s at its 11.4 GFLOP (5.7 G multiply-adds) per 299×299 image. JSON on stdout.
    Fid {
        /// Batch sizes, comma-separated.
        #[arg(long, default_value = "8,32", value_delimiter = ',',
              value_parser = clap::value_parser!(u32).range(1..=4096))]
        batches: Vec<u32>,
        /// Side of the input images (the network resizes them to 299×299).
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
        size: u32,
        /// Timed runs per case (after one warm-up run); the median is reported.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
        /// Also write the JSON to this file.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// One training step (forward, backward, Adam) of each model, with a per-kernel breakdown
    /// and the same step of the PyTorch mirror on the CPU. JSON on stdout.
    Model {
        /// Timed steps per case (after one warm-up step); the median is reported.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
        /// Python with torch for the PyTorch mirror (tools/mirror.py); also read from CDL_PYTHON.
        /// Without it the PyTorch columns are null.
        #[arg(long)]
        python: Option<std::path::PathBuf>,
        /// Also write the JSON to this file.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let parsed = Cli::command().try_get_matches().and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => e.exit(),
        Err(e) => {
            // One line, as for every other error: clap's first line, without its usage block.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            eprintln!("error: {first} (see cdl --help)");
            return ExitCode::from(2);
        }
    };
    match pollster::block_on(run(cli, &matches)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<ExitCode, String> {
    // Run configs are read before the device is acquired, so a bad file fails fast.
    let cli = match cli.command {
        Command::Train(args) => {
            Cli { command: Command::Train(train::resolve(args, matches.subcommand_matches("train"))?), ..cli }
        }
        _ => cli,
    };
    if let Some(b) = &cli.backend {
        // Read by wgpu when the instance is created, below (and by `cdl sweep`'s children).
        std::env::set_var("WGPU_BACKEND", b);
    }
    // A sweep only starts processes: they open the device, with the adapter chosen here.
    if let Command::Sweep(args) = cli.command {
        if let Some(a) = &cli.adapter {
            std::env::set_var("CDL_ADAPTER", a);
        }
        return sweep::sweep(args);
    }
    let mut opts = GpuOptions::from_env();
    if cli.adapter.is_some() {
        opts.adapter = cli.adapter.clone();
    }
    // `mpirun -n R cdl train`: the job's ranks, before the device, since each rank takes its own.
    let ranks = match cli.command {
        Command::Train(_) => launch_ranks()?,
        _ => None,
    };
    // A job of one rank (`mpirun -n 1`, or one task of a launcher) is a plain run.
    let comm = ranks.as_ref().filter(|r| r.ranks() > 1).map(|r| r.clone() as Rc<dyn Collective>);
    if let Some(c) = comm.as_ref().filter(|_| opts.adapter.is_none()) {
        opts.adapter = cdl::gpu::rank_adapter(c.rank()).await.map(|i| i.to_string());
    }
    let result = async {
        let gpu = Gpu::new(&opts).await.map_err(|e| e.to_string())?;
        cdl::ops::check_variants(&gpu).map_err(|e| format!("CDL_VARIANT: {e}"))?;
        // Kernel variants: the cached choices of this adapter, and measurement of new shapes
        // unless CDL_TUNE=0 (then the cache and the defaults).
        // The ranks of a data-parallel run take the cached choices and the defaults without
        // measuring: timings could pick different kernels, and so different roundings, per rank.
        tune::load(&gpu);
        let ranks = comm.as_ref().map_or(1, |c| c.ranks());
        gpu.set_tuning(ranks == 1 && std::env::var("CDL_TUNE").map_or(true, |v| v != "0"));
        let result = command(&gpu, cli, comm.clone()).await;
        if comm.as_ref().is_none_or(|c| c.rank() == 0) {
            tune::save(&gpu);
        }
        result
    }
    .await;
    match (result, &ranks) {
        #[cfg(feature = "mpi")]
        (Err(e), Some(mpi)) if mpi.ranks() > 1 => {
            // One rank's error stops the whole job (the others wait in a collective otherwise).
            eprintln!("error: rank {} of {}: {e}", mpi.rank(), mpi.ranks());
            mpi.abort(2)
        }
        (result, _) => result,
    }
}

/// Environment variables through which MPI launchers (Open MPI's mpirun, MPICH's Hydra, Slurm's
/// srun) tell a process the size of its job.
const LAUNCHER_SIZE_VARS: [&str; 2] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];

/// The MPI job this process is a rank of, when a launcher started it.
#[cfg(feature = "mpi")]
fn launch_ranks() -> Result<Option<Rc<mpi::Mpi>>, String> {
    let launched = LAUNCHER_SIZE_VARS.iter().chain(&["PMIX_RANK"]).any(|v| std::env::var_os(v).is_some());
    if !launched {
        return Ok(None);
    }
    Ok(Some(Rc::new(mpi::Mpi::init()?)))
}

/// Without MPI support a launcher's ranks would each train the whole run into the same files.
#[cfg(not(feature = "mpi"))]
fn launch_ranks() -> Result<Option<Rc<dyn Collective>>, String> {
    let size = LAUNCHER_SIZE_VARS.iter().find_map(|v| std::env::var(v).ok()?.parse::<u64>().ok());
    match size {
        Some(n) if n > 1 => Err(format!(
            "started as one of {n} MPI ranks, but this cdl was built without MPI support; build it with \
             `cargo build --release --features mpi`"
        )),
        _ => Ok(None),
    }
}

async fn command(gpu: &Gpu, cli: Cli, comm: Option<Rc<dyn Collective>>) -> Result<ExitCode, String> {
    match cli.command {
        Command::Sweep(_) => Err("internal: cdl sweep does not use the device".into()),
        Command::Info => info(gpu).await,
        Command::Tune(args) => emit(&tune::tune(gpu, &args).await?, None),
        Command::Sample(args) => sample::sample_cmd(gpu, args).await.map(|()| ExitCode::SUCCESS),
        Command::Eval(args) => sample::eval_cmd(gpu, args).await.map(|()| ExitCode::SUCCESS),
        Command::Export(args) => export::export(gpu, &args).await.map(|()| ExitCode::SUCCESS),
        Command::Fid(args) => {
            println!("{}", fid::fid(gpu, &args).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Experiment { what: ExperimentWhat::Toy(args) } => {
            experiment::toy(gpu, args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Experiment { what: ExperimentWhat::Images(args) } => {
            experiment::images(gpu, args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Train(args) => train::train(gpu, args, comm).await.map(|()| {
            if train::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
                ExitCode::from(130)
            } else {
                ExitCode::SUCCESS
            }
        }),
        Command::Bench { what: BenchWhat::Ops { runs, sizes, conv_batch, out } } => {
            let sizes: Vec<usize> = sizes.iter().map(|&n| n as usize).collect();
            let json = bench::ops(gpu, runs as usize, &sizes, conv_batch as usize).await.map_err(|e| e.to_string())?;
            emit(&json, out.as_deref())
        }
        Command::Bench {
            what: BenchWhat::Train { model, batches, anchors, points, runs, sampler_steps, python, out },
        } => {
            let python = python.or_else(|| std::env::var_os("CDL_PYTHON").map(Into::into));
            if batches.is_empty() || batches.contains(&0) {
                return Err("--batches needs positive batch sizes".into());
            }
            let o = bench::TrainBench {
                model: &model,
                batches: &batches,
                anchors,
                points,
                runs: runs as usize,
                sampler_steps,
                python: python.as_deref(),
            };
            let json = bench::train(gpu, &o).await?;
            emit(&json, out.as_deref())
        }
        Command::Bench { what: BenchWhat::Sample { model, samples, steps, out } } => {
            let json = bench::sample(gpu, &model, samples as usize, steps as usize).await?;
            emit(&json, out.as_deref())
        }
        Command::Bench { what: BenchWhat::Fid { batches, size, runs, out } } => {
            let batches: Vec<usize> = batches.iter().map(|&b| b as usize).collect();
            let json = bench::fid(gpu, &batches, size as usize, runs as usize).await?;
            emit(&json, out.as_deref())
        }
        Command::Bench { what: BenchWhat::Quality(args) } => {
            let json = quality::quality(gpu, &args).await?;
            emit(&json, args.out.as_deref())
        }
        Command::Bench { what: BenchWhat::Model { runs, python, out } } => {
            let python = python.or_else(|| std::env::var_os("CDL_PYTHON").map(Into::into));
            let json = bench::model(gpu, runs as usize, python.as_deref()).await?;
            emit(&json, out.as_deref())
        }
    }
}

/// Prints bench JSON and, when asked, writes it to a file too.
fn emit(json: &serde_json::Value, out: Option<&std::path::Path>) -> Result<ExitCode, String> {
    let text = serde_json::to_string_pretty(json).map_err(|e| e.to_string())?;
    println!("{text}");
    if let Some(path) = out {
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn info(gpu: &Gpu) -> Result<ExitCode, String> {
    println!("adapter: {}", gpu.describe());
    println!("adapters (--adapter INDEX or a piece of the name; --backend to restrict):");
    for (i, a) in cdl::gpu::list_adapters().await.iter().enumerate() {
        println!("  {i}: {a}");
    }
    println!("limits:");
    for (name, value) in gpu.limit_report() {
        println!("  {name:40} {value}");
    }
    println!("kernel variants (CDL_VARIANT=op:variant,... forces one):");
    for (op, variant, forced) in cdl::ops::variants_in_use(gpu) {
        let names = cdl::ops::VARIANT_CHOICES.iter().find(|c| c.0 == op).map_or(&[][..], |c| c.1);
        let how = if forced { "forced" } else { "default" };
        println!("  {op:16} {variant} ({how}; of {})", names.join(", "));
    }
    println!("models (parameters; device memory at batch 32: model (weights, gradients, activations) + optimizer state (Adam m, v, EMA)):");
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let mlp = cdl::model::Mlp::new(gpu, cdl::model::MlpConfig::default(), 32, 0).await.map_err(|e| e.to_string())?;
    let opt = mlp.params.layout.optimizer_bytes();
    println!(
        "  {:16} {:>10} {:>10.1} MiB model + {:>8.1} MiB",
        "mlp (default)",
        mlp.param_count(),
        mib(mlp.memory_bytes),
        mib(opt)
    );
    for (name, cfg) in [
        ("unet tiny", cdl::model::UNetConfig::tiny()),
        ("unet compact", cdl::model::UNetConfig::compact()),
        ("unet small", cdl::model::UNetConfig::small()),
    ] {
        let layout = cdl::model::unet::layout(&cfg).map_err(|e| e.to_string())?;
        let (bytes, _) = cdl::model::unet::memory_estimate(&cfg, 32).map_err(|e| e.to_string())?;
        let opt = layout.optimizer_bytes();
        println!("  {name:16} {:>10} {:>10.1} MiB model + {:>8.1} MiB", layout.count(), mib(bytes as u64), mib(opt));
    }
    println!("self-test (GPU vs CPU reference):");
    let results = cdl::ops::check_all(gpu).await.map_err(|e| e.to_string())?;
    for r in &results {
        println!("  {r}");
    }
    let bad = results.iter().filter(|r| !r.ok()).count();
    println!("self-test: {} of {} checks OK", results.len() - bad, results.len());
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
