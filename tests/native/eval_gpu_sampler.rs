//! The samplers on the device (`eval::gpu_sampler`) against the f64 host path of
//! `diffusion::sampler`, the reference, over the same network (a small MLP with its initial
//! weights, EDM-preconditioned, so ε̂ is a fixed nonlinear function of (x, α)) and the same noise
//! streams: every sampler, with and without clip_denoised, in groups of the rows the model is
//! bound to (a last, partial group included), with the same pass and evaluation counts, and far
//! fewer submissions than evaluations.
//!
//! Tolerance: the device keeps the state in f32, the host in f64; both feed the network the state
//! rounded to f32. A step's rounding (about 1e-7 relative) is carried through up to 1000 steps and
//! the network's Jacobian; `TOL` is an absolute bound on samples of magnitude up to a few units
//! (the measured worst is with the constant).

use crate::common;

use cdl::diffusion::sampler::{sample, ClipDenoised, DdpmVariance, SamplerConfig};
use cdl::eval::denoiser::GpuDenoiser;
use cdl::model::mlp::{Mlp, MlpConfig, Precond};

const CFG: MlpConfig = MlpConfig { dim: 2, width: 32, blocks: 2, emb_dim: 16, precond: Precond::Edm };
/// Largest |device − host| of a sample coordinate: 8× the worst measured on lavapipe (2.4e-6,
/// DDPM-1000; the others 2.5e-7 to 1.5e-6).
const TOL: f64 = 2e-5;

fn denoiser(gpu: &cdl::gpu::Gpu, rows: usize) -> GpuDenoiser<'_> {
    let net = pollster::block_on(Mlp::new(gpu, CFG, rows, 7)).unwrap();
    GpuDenoiser::new(gpu, Box::new(net))
}

/// Samples `cfg` both ways and compares; returns (device submissions, evaluations).
fn compare(cfg: SamplerConfig, n: usize, rows: usize, clip: Option<(f64, f64)>) -> (u64, usize) {
    let Some(gpu) = common::gpu_or_skip() else { return (0, 0) };
    let mut den = denoiser(gpu, rows);
    let seed = 11;
    let (want, want_stats) = pollster::block_on(async {
        match clip {
            Some((lo, hi)) => sample(&mut ClipDenoised { inner: &mut den, lo, hi }, &cfg, n, seed, None).await,
            None => sample(&mut den, &cfg, n, seed, None).await,
        }
    })
    .unwrap();
    let before = gpu.counters();
    let (got, stats) = pollster::block_on(den.sample_on_device(&cfg, n, seed, clip)).unwrap();
    let submissions = gpu.counters().submissions - before.submissions;
    let name = format!("{} n={n} rows={rows} clip={clip:?}", cfg.name());
    assert_eq!(got.len(), want.len(), "{name}");
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max);
    eprintln!("{name}: max |device - host| {worst:.2e} (samples up to {scale:.2}), {submissions} submissions, {stats:?}");
    assert!(worst <= TOL, "{name}: device and host samples differ by {worst:e} > {TOL:e}");
    assert!(scale > 0.5, "{name}: samples collapsed to {scale}");
    assert_eq!(stats, want_stats, "{name}: passes and evaluations");
    (submissions, stats.evaluations)
}

/// DDPM (both variances) and DDIM, in groups of 16 rows with a partial last group; a whole
/// trajectory takes a few submissions, not one per step.
#[test]
fn sequential_samplers_match_the_host_path() {
    for (cfg, n) in [
        (SamplerConfig::Ddpm { steps: 1000, variance: DdpmVariance::Beta }, 20),
        (SamplerConfig::Ddpm { steps: 100, variance: DdpmVariance::Posterior }, 50),
        (SamplerConfig::Ddim { steps: 50 }, 50),
    ] {
        let (submissions, evaluations) = compare(cfg, n, 16, None);
        let groups = n.div_ceil(16) as u64;
        assert!(
            submissions <= groups * (evaluations.div_ceil(64) as u64 + 1),
            "{}: {submissions} submissions for {groups} groups of {evaluations} evaluations",
            cfg.name()
        );
    }
}

/// EDM Heun, deterministic and with churn (whose noise is the host's).
#[test]
fn heun_matches_the_host_path() {
    compare(SamplerConfig::Heun { steps: 18, churn: 0.0 }, 40, 16, None);
    compare(SamplerConfig::Heun { steps: 10, churn: 5.0 }, 40, 16, None);
}

/// The Picard sampler: the whole trajectory in one window and sliding windows smaller than the
/// trajectory (the ring wraps), model chunks that split a point's samples, DDPM and DDIM.
#[test]
fn picard_matches_the_host_path_pass_for_pass() {
    let par = |steps, window, tol, ddim, variance| SamplerConfig::Parallel { steps, window, tol, ddim, variance };
    compare(par(100, 100, 0.1, false, DdpmVariance::Posterior), 30, 512, None);
    compare(par(100, 16, 0.05, false, DdpmVariance::Beta), 30, 100, None);
    compare(par(50, 7, 0.01, true, DdpmVariance::Posterior), 30, 45, None);
}

/// clip_denoised on the device is `ClipDenoised` on the host, for each kind of step.
#[test]
fn clip_denoised_matches_the_host_path() {
    let clip = Some((-0.6, 0.6));
    compare(SamplerConfig::Ddpm { steps: 100, variance: DdpmVariance::Beta }, 30, 16, clip);
    compare(SamplerConfig::Heun { steps: 12, churn: 0.0 }, 30, 16, clip);
    let par = SamplerConfig::Parallel { steps: 60, window: 20, tol: 0.05, ddim: false, variance: DdpmVariance::Posterior };
    compare(par, 30, 128, clip);
}
