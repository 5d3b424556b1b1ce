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

use cdl::diffusion::sampler::{picard, sample, ClipDenoised, DdpmVariance, SamplerConfig};
use cdl::reference::tol::Tol;
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

/// |device − host| of a pass's normalised error (`PicardPass::error`, compared with τ; from 0 to
/// 5e6, where a point's variance is tiny): relative, 10× the worst measured on lavapipe (2.0e-4).
const PASS_ERROR_TOL: Tol = Tol { atol: 1e-4, rtol: 2e-3 };

/// Each pass of the Picard sampler, as the device reports it, is the host's: the same window,
/// the same converged prefix, the same error to within `PASS_ERROR_TOL`; the last pass has
/// converged the whole trajectory, and a pass whose error is within τ converged its window.
#[test]
fn picard_reports_the_host_paths_passes() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let (n, seed) = (30, 11);
    for (steps, window, tol) in [(100, 100, 0.1), (60, 16, 0.05)] {
        let cfg = SamplerConfig::Parallel { steps, window, tol, ddim: false, variance: DdpmVariance::Posterior };
        let mut den = denoiser(gpu, 128);
        let mut want = Vec::new();
        let (_, want_stats) = pollster::block_on(picard(
            &mut den,
            &cfg.linear_steps().unwrap(),
            window,
            tol,
            n,
            seed,
            None,
            Some(&mut want),
        ))
        .unwrap();
        let mut got = Vec::new();
        let (_, stats) = pollster::block_on(den.sample_on_device_logged(&cfg, n, seed, None, &mut |p| got.push(p))).unwrap();
        let name = cfg.name();
        assert_eq!(want.len(), want_stats.passes, "{name}: one report per pass");
        assert_eq!(got.len(), stats.passes, "{name}: one report per pass on the device");
        let worst = got.iter().zip(&want).map(|(g, w)| (g.error - w.error).abs() / w.error.max(1.0)).fold(0.0, f64::max);
        let errors: Vec<String> = want.iter().map(|w| format!("{:.3}", w.error)).collect();
        eprintln!("{name}: {} passes, max |device - host| / max(host, 1) {worst:.2e}; {errors:?}", got.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!((g.begin, g.end, g.converged), (w.begin, w.end, w.converged), "{name}: pass {i}");
            assert!(
                (g.error - w.error).abs() <= PASS_ERROR_TOL.atol + PASS_ERROR_TOL.rtol * w.error.abs(),
                "{name}: pass {i} error {} on the device, {} on the host",
                g.error,
                w.error
            );
            if w.error <= tol && w.end < steps {
                assert_eq!(w.converged, w.end, "{name}: pass {i} within τ but its window did not converge");
            }
        }
        assert_eq!(want.last().map(|p| p.converged), Some(steps), "{name}: the last pass converged everything");
        assert!(want.first().is_some_and(|p| p.error > tol), "{name}: the first pass is not within τ");
    }
}
