//! Samplers over a batched ε-denoiser (math.md §6): DDPM ancestral (§6.1, β_t or β̃_t variance),
//! DDIM η = 0 (§6.3), EDM Heun with optional churn (§6.4), and the parallel Picard sampler of
//! ParaDiGMS (§6.5), as f64 host bookkeeping over `BatchDenoiser`. Every random number is a pure
//! function of (seed, step, sample), so the parallel sampler sees exactly the sequential one's
//! noise. Not here: a training loop, metrics, image I/O.

use std::future::Future;
use std::pin::Pin;

use super::likelihood::Denoiser;
use super::logsnr::sigmoid;
use super::rng::row_normals;
use super::schedule::{alpha_of_sigma, DdpmSchedule};
use super::{DiffusionError, Result};
use crate::philox::Stream;

/// Stream tag of the initial x_T: sample i's x_T is normal stream (seed, [INIT, TAG_SAMPLER_INIT,
/// i]) and the noise n_j of step j is stream (seed, [j, TAG_SAMPLER_NOISE, i]) ("pre-sampled"
/// noise, math.md §6.5).
pub const TAG_SAMPLER_INIT: u32 = 0x30;
/// Stream tag of the per-step noise.
pub const TAG_SAMPLER_NOISE: u32 = 0x31;

// ---------------------------------------------------------------------------------------------
// The denoiser interface

/// The future of one batched evaluation (not `Send`: the browser's GPU futures are not).
pub type EvalFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

/// ε̂(z, α) for N rows at once. With the analytic Gaussian denoiser the samplers are the CPU
/// reference; with `eval::denoiser::GpuDenoiser` the network runs batched on the GPU (all samples
/// of a step, or every step of a Picard window, in one batch).
///
/// x lives in the VP channel of math.md §1.1 (x_t = sqrt(ᾱ_t)x₀ + sqrt(1−ᾱ_t)ε, so the network
/// sees x_t at α_t = logit ᾱ_t); samples are returned as (n, d) row-major f64 in the units the
/// model was trained on.
pub trait BatchDenoiser {
    /// Data dimension d.
    fn dim(&self) -> usize;
    /// out[r] = ε̂(z[r], alpha[r]). z, out: (N, d); alpha: (N,)
    fn eps_batch<'a>(&'a mut self, z: &'a [f64], alpha: &'a [f64], out: &'a mut [f64]) -> EvalFuture<'a>;
}

/// A denoiser whose implied clean estimate x̂₀ = (z − sqrt(σ(−α))·ε̂) / sqrt(σ(α)) is clipped to
/// `[lo, hi]` (Ho et al.'s `clip_denoised`, for data known to lie in [−1, 1] such as images):
/// where x̂₀ leaves the range, ε̂ is replaced by (z − sqrt(σ(α))·clip(x̂₀)) / sqrt(σ(−α)), the
/// noise that clipped estimate implies; elsewhere ε̂ is returned unchanged, bit for bit. Every
/// sampler over it (DDPM, DDIM, Heun, Picard) then steers towards in-range data, which keeps an
/// undertrained image model's samples from saturating.
pub struct ClipDenoised<'a> {
    pub inner: &'a mut dyn BatchDenoiser,
    pub lo: f64,
    pub hi: f64,
}

impl BatchDenoiser for ClipDenoised<'_> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn eps_batch<'a>(&'a mut self, z: &'a [f64], alpha: &'a [f64], out: &'a mut [f64]) -> EvalFuture<'a> {
        Box::pin(async move {
            self.inner.eps_batch(z, alpha, out).await?;
            let d = self.inner.dim();
            for ((zr, or), &a) in z.chunks_exact(d).zip(out.chunks_exact_mut(d)).zip(alpha) {
                let (m, s) = (sigmoid(a).sqrt(), sigmoid(-a).sqrt());
                for (zv, e) in zr.iter().zip(or.iter_mut()) {
                    let x0 = (zv - s * *e) / m;
                    let c = x0.clamp(self.lo, self.hi);
                    if c != x0 {
                        *e = (zv - m * c) / s;
                    }
                }
            }
            Ok(())
        })
    }
}

/// A CPU `Denoiser` (e.g. the analytic Gaussian one) evaluated row by row.
#[derive(Debug)]
pub struct RowByRow<'d, D: Denoiser + ?Sized>(pub &'d D);

impl<D: Denoiser + ?Sized> BatchDenoiser for RowByRow<'_, D> {
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn eps_batch<'a>(&'a mut self, z: &'a [f64], alpha: &'a [f64], out: &'a mut [f64]) -> EvalFuture<'a> {
        let d = self.0.dim();
        let r = check_batch(d, z, alpha, out).map(|()| {
            for ((zr, or), &a) in z.chunks_exact(d).zip(out.chunks_exact_mut(d)).zip(alpha) {
                self.0.eps_hat(zr, a, or);
            }
        });
        Box::pin(std::future::ready(r))
    }
}

/// Checks the shapes of one batched evaluation.
pub fn check_batch(d: usize, z: &[f64], alpha: &[f64], out: &[f64]) -> Result<()> {
    if d == 0 || z.len() != alpha.len() * d || out.len() != z.len() {
        return Err(DiffusionError::Shape(format!(
            "eps_batch: z {}, alpha {}, out {} for d = {d}",
            z.len(),
            alpha.len(),
            out.len()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Linear (VP) transitions: x' = a·x + b·ε̂(x, α) + σ·n

/// One step of a DDPM/DDIM-type sampler.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearStep {
    /// Level the network is queried at (logit ᾱ_t).
    pub alpha: f64,
    /// Coefficient of x.
    pub a: f64,
    /// Coefficient of ε̂.
    pub b: f64,
    /// Standard deviation of the added noise (0 for deterministic steps and the last DDPM step).
    pub sigma: f64,
    /// The variance that normalises this step's Picard error (math.md §6.5): the DDPM posterior
    /// variance β̃ of the step, also for DDIM (whose own noise variance is 0).
    pub tol_var: f64,
}

/// Variance of the DDPM ancestral step (math.md §6.1, §6.2, §9 pitfall 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DdpmVariance {
    /// σ² = β_t, no noise at t = 0: the sequential sampler of the CDL repository.
    Beta,
    /// σ² = β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t (0 at t = 0): the posterior variance the parallel
    /// DDPM transition uses.
    Posterior,
}

/// The `steps`-step DDPM schedule: Ho's 1000 steps; for fewer, Ho's schedule respaced (ᾱ at
/// `steps` evenly spaced timesteps t_i = round(i·999/(steps−1)), the steps' β implied by
/// consecutive ᾱ, as in improved DDPM), so every length spans the same noise range
/// α ∈ [−10.1, 9.2]; for more, the linear schedule with β from 0.1/steps to 20/steps.
pub fn ddpm_schedule(steps: usize) -> Result<DdpmSchedule> {
    match steps {
        1000 => Ok(DdpmSchedule::ho()),
        0 | 1 => Err(DiffusionError::Config(format!("a DDPM schedule needs >= 2 steps, got {steps}"))),
        2..1000 => {
            let ho = DdpmSchedule::ho();
            let ts: Vec<usize> = (0..steps).map(|i| (i * 999 + (steps - 1) / 2) / (steps - 1)).collect();
            Ok(DdpmSchedule {
                alpha_bar: ts.iter().map(|&t| ho.alpha_bar[t]).collect(),
                logsnr: ts.iter().map(|&t| ho.logsnr[t]).collect(),
            })
        }
        _ => {
            let s = steps as f64;
            DdpmSchedule::linear(steps, 0.1 / s, 20.0 / s)
        }
    }
}

fn posterior_var(ab: f64, ab_prev: f64) -> f64 {
    let beta = 1.0 - ab / ab_prev;
    (1.0 - ab_prev) / (1.0 - ab) * beta
}

/// The T steps of DDPM ancestral sampling, t = T−1 down to 0 (math.md §6.1/§6.2; the means of
/// both forms are equal: a = 1/sqrt(1−β_t), b = −β_t/(sqrt(1−β_t)·sqrt(1−ᾱ_t))).
pub fn ddpm_steps(sched: &DdpmSchedule, variance: DdpmVariance) -> Vec<LinearStep> {
    let t_n = sched.steps();
    (0..t_n)
        .rev()
        .map(|t| {
            let ab = sched.alpha_bar[t];
            let ab_prev = if t == 0 { 1.0 } else { sched.alpha_bar[t - 1] };
            let beta = 1.0 - ab / ab_prev;
            let post = posterior_var(ab, ab_prev);
            let var = match (t, variance) {
                (0, _) => 0.0,
                (_, DdpmVariance::Beta) => beta,
                (_, DdpmVariance::Posterior) => post,
            };
            LinearStep {
                alpha: sched.logsnr[t],
                a: 1.0 / (1.0 - beta).sqrt(),
                b: -beta / ((1.0 - beta).sqrt() * (1.0 - ab).sqrt()),
                sigma: var.sqrt(),
                tol_var: post,
            }
        })
        .collect()
}

/// DDIM η = 0 over `n` of the schedule's T timesteps, evenly spaced (t_i = floor(i·T/n)),
/// from the last to 0 (math.md §6.3): x_prev = sqrt(ᾱ_prev)·x̂₀ + sqrt(1−ᾱ_prev)·ε̂ with
/// x̂₀ = (x − sqrt(1−ᾱ)ε̂)/sqrt(ᾱ), and ᾱ_prev = 1 after t = 0.
pub fn ddim_steps(sched: &DdpmSchedule, n: usize) -> Result<Vec<LinearStep>> {
    let t_n = sched.steps();
    if n == 0 || n > t_n {
        return Err(DiffusionError::Config(format!("DDIM needs 1..={t_n} steps, got {n}")));
    }
    let ts: Vec<usize> = (0..n).map(|i| i * t_n / n).collect();
    Ok((0..n)
        .rev()
        .map(|i| {
            let ab = sched.alpha_bar[ts[i]];
            let ab_prev = if i == 0 { 1.0 } else { sched.alpha_bar[ts[i - 1]] };
            let a = (ab_prev / ab).sqrt();
            LinearStep {
                alpha: sched.logsnr[ts[i]],
                a,
                b: (1.0 - ab_prev).sqrt() - a * (1.0 - ab).sqrt(),
                sigma: 0.0,
                tol_var: posterior_var(ab, ab_prev),
            }
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Configuration and statistics

/// Which sampler, with its knobs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerConfig {
    /// DDPM ancestral over a `steps`-step linear schedule (Ho's at 1000).
    Ddpm {
        /// T.
        steps: usize,
        /// β_t (the sequential sampler's) or β̃_t.
        variance: DdpmVariance,
    },
    /// DDIM η = 0, `steps` of the 1000-step schedule.
    Ddim {
        /// Number of DDIM steps.
        steps: usize,
    },
    /// EDM Heun (math.md §6.4): σ ∈ [0.002, 80], ρ = 7, `steps` levels (2·steps − 1 evaluations);
    /// churn = S_churn (0: deterministic), S_noise 1, over all σ.
    Heun {
        /// N.
        steps: usize,
        /// S_churn.
        churn: f64,
    },
    /// ParaDiGMS Picard iteration (math.md §6.5) over the DDPM transition (`ddim: false`) with
    /// `variance`, or DDIM (`ddim: true`, no noise), window p, tolerance τ. Its fixed point is the
    /// sequential sampler with the same transition and noise, so "parallel vs sequential" is a
    /// fair comparison only at the same variance (math.md §9 pitfall 11).
    Parallel {
        /// T of the DDPM schedule, or the number of DDIM steps.
        steps: usize,
        /// Window p (= steps: the whole trajectory, the toy setting).
        window: usize,
        /// Tolerance τ.
        tol: f64,
        /// DDIM transition instead of DDPM.
        ddim: bool,
        /// Variance of the DDPM transition (the authors' parallel sampler: β̃_t); unused by DDIM.
        variance: DdpmVariance,
    },
}

impl SamplerConfig {
    /// Sequential DDPM-1000 with β_t (the paper's baseline sampler).
    pub const DDPM: Self = Self::Ddpm { steps: 1000, variance: DdpmVariance::Beta };
    /// Parallel DDPM-1000 with β̃_t, τ = 0.1, no window (the paper's toy setting, §5.1, §6.2).
    pub const PARALLEL_TOY: Self =
        Self::Parallel { steps: 1000, window: 1000, tol: 0.1, ddim: false, variance: DdpmVariance::Posterior };

    /// A short name for reports ("ddpm-1000", "parallel-ddpm-1000-p1000-tol0.1", ...).
    pub fn name(&self) -> String {
        match *self {
            Self::Ddpm { steps, variance: DdpmVariance::Beta } => format!("ddpm-{steps}"),
            Self::Ddpm { steps, variance: DdpmVariance::Posterior } => format!("ddpm-{steps}-posterior"),
            Self::Ddim { steps } => format!("ddim-{steps}"),
            Self::Heun { steps, churn: 0.0 } => format!("heun-{steps}"),
            Self::Heun { steps, churn } => format!("heun-{steps}-churn{churn}"),
            Self::Parallel { steps, window, tol, ddim: true, .. } => {
                format!("parallel-ddim-{steps}-p{window}-tol{tol}")
            }
            Self::Parallel { steps, window, tol, ddim: false, variance: DdpmVariance::Beta } => {
                format!("parallel-ddpm-{steps}-p{window}-tol{tol}")
            }
            Self::Parallel { steps, window, tol, ddim: false, variance: DdpmVariance::Posterior } => {
                format!("parallel-ddpm-{steps}-posterior-p{window}-tol{tol}")
            }
        }
    }

    /// The steps of a DDPM, DDIM or parallel configuration (the transition each of its points
    /// takes); Heun has none (an error).
    pub fn linear_steps(&self) -> Result<Vec<LinearStep>> {
        match *self {
            Self::Ddpm { steps, variance } | Self::Parallel { steps, ddim: false, variance, .. } => {
                Ok(ddpm_steps(&ddpm_schedule(steps)?, variance))
            }
            Self::Ddim { steps } | Self::Parallel { steps, ddim: true, .. } => ddim_steps(&DdpmSchedule::ho(), steps),
            Self::Heun { .. } => Err(DiffusionError::Config("EDM Heun has no linear steps".into())),
        }
    }

    /// The log-SNR levels (lo, hi) at which this sampler queries the network.
    pub fn alpha_range(&self) -> Result<(f64, f64)> {
        let span = |l: &mut dyn Iterator<Item = f64>| {
            l.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), a| (lo.min(a), hi.max(a)))
        };
        Ok(match *self {
            Self::Ddpm { steps, .. } | Self::Parallel { steps, ddim: false, .. } => {
                span(&mut ddpm_schedule(steps)?.logsnr.into_iter())
            }
            Self::Ddim { steps } | Self::Parallel { steps, ddim: true, .. } => {
                span(&mut ddim_steps(&DdpmSchedule::ho(), steps)?.into_iter().map(|s| s.alpha))
            }
            // Churn raises a level to σ(1 + γ) before it is evaluated.
            Self::Heun { steps, churn } => {
                let gamma = if churn > 0.0 { (churn / steps as f64).min(std::f64::consts::SQRT_2 - 1.0) } else { 0.0 };
                let sig = edm_sigmas(steps);
                let lowest = sig[..steps].iter().copied().fold(f64::INFINITY, f64::min);
                (alpha_of_sigma(sig[0] * (1.0 + gamma)), alpha_of_sigma(lowest))
            }
        })
    }
}

/// What a sampling run cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleStats {
    /// Sequential rounds of network evaluations (= steps for sequential samplers, Picard
    /// iterations for the parallel one).
    pub passes: usize,
    /// Network evaluations per sample (Σ window lengths for the parallel sampler).
    pub evaluations: usize,
    /// Steps of the underlying sequential sampler.
    pub steps: usize,
}

/// One pass of the Picard sampler, as both the host and the device samplers report it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PicardPass {
    /// The window it evaluated: points [begin, end).
    pub begin: usize,
    pub end: usize,
    /// The points before this one have converged after the pass (the next window's start).
    pub converged: usize,
    /// The normalised change sqrt(||X̃_{j+1} − X_{j+1}||²/(d·v_{j+1})), largest over the samples,
    /// of the window's first point above τ (the one that stopped the window sliding further;
    /// math.md §6.5), or the largest of the window's when none is: a point has converged when it
    /// is ≤ τ. The output X_S (no next step) is left out; 0 when the window holds only X_S.
    pub error: f64,
}

/// Initial x_T ~ N(0, I) of `n` samples: the device's normals (`row_normals`), so the device
/// samplers (`eval::gpu_sampler`) draw exactly these numbers. (n, d)
pub fn initial_noise(seed: u64, n: usize, d: usize) -> Vec<f64> {
    let mut x = vec![0.0; n * d];
    for (i, row) in x.chunks_exact_mut(d).enumerate() {
        row_normals(row, Stream::new(seed, [u32::MAX, TAG_SAMPLER_INIT, i as u32]));
    }
    x
}

/// n_j of step j for `n` samples (standard normals, as `initial_noise`). out: (n, d)
pub fn step_noise(seed: u64, step: usize, d: usize, out: &mut [f64]) {
    for (i, row) in out.chunks_exact_mut(d).enumerate() {
        row_normals(row, Stream::new(seed, [step as u32, TAG_SAMPLER_NOISE, i as u32]));
    }
}

/// Draws `n` samples. With `trajectory`, the state after every step (sequential samplers) or the
/// final Picard buffer X_0..X_S (parallel) is appended, each (n, d).
pub async fn sample(
    den: &mut dyn BatchDenoiser,
    cfg: &SamplerConfig,
    n: usize,
    seed: u64,
    trajectory: Option<&mut Vec<Vec<f64>>>,
) -> Result<(Vec<f64>, SampleStats)> {
    if n == 0 {
        return Err(DiffusionError::Config("number of samples must be >= 1".into()));
    }
    match *cfg {
        SamplerConfig::Ddpm { .. } | SamplerConfig::Ddim { .. } => {
            sequential(den, &cfg.linear_steps()?, n, seed, trajectory).await
        }
        SamplerConfig::Heun { steps, churn } => heun(den, steps, churn, n, seed, trajectory).await,
        SamplerConfig::Parallel { window, tol, .. } => {
            picard(den, &cfg.linear_steps()?, window, tol, n, seed, trajectory, None).await
        }
    }
}

/// The states of a `sample(.., cfg, n, seed, Some(trajectory))` run as points of the
/// variance-preserving process, x_T first and the samples last (S + 1 frames, each (n, d)), for
/// pictures of sampling: sequential and Picard states as they are (the Picard buffer already
/// starts at x_T), Heun's x_σ divided by sqrt(1 + σ²).
pub fn trajectory_frames(
    cfg: &SamplerConfig,
    n: usize,
    d: usize,
    seed: u64,
    trajectory: Vec<Vec<f64>>,
) -> Vec<Vec<f64>> {
    match *cfg {
        SamplerConfig::Parallel { .. } => trajectory,
        SamplerConfig::Ddpm { .. } | SamplerConfig::Ddim { .. } => {
            std::iter::once(initial_noise(seed, n, d)).chain(trajectory).collect()
        }
        SamplerConfig::Heun { steps, .. } => {
            let t = edm_sigmas(steps);
            let first = initial_noise(seed, n, d).into_iter().map(|v| v * t[0] / t[0].hypot(1.0)).collect();
            let scaled = trajectory.into_iter().zip(&t[1..]).map(|(x, s)| {
                let k = 1.0 / s.hypot(1.0);
                x.into_iter().map(|v| v * k).collect()
            });
            std::iter::once(first).chain(scaled).collect()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sequential linear samplers

/// x ← a_j·x + b_j·ε̂(x, α_j) + σ_j·n_j for j = 0..S−1, from x_T = `initial_noise`.
pub async fn sequential(
    den: &mut dyn BatchDenoiser,
    steps: &[LinearStep],
    n: usize,
    seed: u64,
    mut trajectory: Option<&mut Vec<Vec<f64>>>,
) -> Result<(Vec<f64>, SampleStats)> {
    let d = den.dim();
    let mut x = initial_noise(seed, n, d);
    let (mut eps, mut noise) = (vec![0.0; n * d], vec![0.0; n * d]);
    for (j, st) in steps.iter().enumerate() {
        den.eps_batch(&x, &vec![st.alpha; n], &mut eps).await?;
        if st.sigma > 0.0 {
            step_noise(seed, j, d, &mut noise);
        }
        for i in 0..n * d {
            let z = if st.sigma > 0.0 { st.sigma * noise[i] } else { 0.0 };
            x[i] = st.a * x[i] + st.b * eps[i] + z;
        }
        if let Some(t) = trajectory.as_deref_mut() {
            t.push(x.clone());
        }
    }
    finite(&x)?;
    Ok((x, SampleStats { passes: steps.len(), evaluations: steps.len(), steps: steps.len() }))
}

/// Fails on the first non-finite sample value.
pub(crate) fn finite(x: &[f64]) -> Result<()> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(DiffusionError::NonFinite(format!("sample value {i} is {}", x[i]))),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Parallel (Picard) sampler, math.md §6.5

/// ParaDiGMS over `steps`: a buffer X_0..X_S starting at copies of x_T; each pass evaluates ε̂
/// at X_b..X_{e−1} in one batch, rebuilds X_{b+1..e} by cumulative sums of drifts and the fixed
/// noise, and slides the window past the converged prefix. Point j+1 is converged when
/// ||X̃_{j+1} − X_{j+1}||²/(d·v_{j+1}) ≤ τ² for every sample, v = the next step's β̃. The output
/// X_S has no next step (v = 0, pitfall 11): it counts as converged only when reproduced exactly
/// (no 0·∞); the window still slides onto it once its predecessors have converged, so it never
/// holds the loop back. With τ → 0 the result is the sequential sampler's with the same noise.
/// With `passes`, every pass is appended to it.
#[allow(clippy::too_many_arguments)]
pub async fn picard(
    den: &mut dyn BatchDenoiser,
    steps: &[LinearStep],
    window: usize,
    tol: f64,
    n: usize,
    seed: u64,
    trajectory: Option<&mut Vec<Vec<f64>>>,
    mut passes: Option<&mut Vec<PicardPass>>,
) -> Result<(Vec<f64>, SampleStats)> {
    let d = den.dim();
    let s_n = steps.len();
    check_picard(window, tol)?;
    let nd = n * d;
    // ξ_j = σ_j·n_j, fixed up front (computed from the seed, the same numbers `sequential` draws).
    let mut xi = vec![0.0; s_n * nd];
    for (j, st) in steps.iter().enumerate() {
        if st.sigma > 0.0 {
            let row = &mut xi[j * nd..(j + 1) * nd];
            step_noise(seed, j, d, row);
            row.iter_mut().for_each(|v| *v *= st.sigma);
        }
    }
    let x_t = initial_noise(seed, n, d);
    let mut buf: Vec<Vec<f64>> = vec![x_t; s_n + 1];
    let (mut b, mut stats) = (0usize, SampleStats { steps: s_n, ..SampleStats::default() });
    let mut e = window.min(s_n);
    while b < s_n {
        let len = e - b;
        let mut z = Vec::with_capacity(len * nd);
        let mut alpha = Vec::with_capacity(len * n);
        for j in b..e {
            z.extend_from_slice(&buf[j]);
            alpha.extend(std::iter::repeat_n(steps[j].alpha, n));
        }
        let mut eps = vec![0.0; len * nd];
        den.eps_batch(&z, &alpha, &mut eps).await?;
        stats.passes += 1;
        stats.evaluations += len;
        // X̃_{j+1} = X_b + Σ_{i=b..j} (δ_i + ξ_i), δ_i = (a_i − 1)·X_i + b_i·ε̂_i, every drift
        // from the window as it was evaluated (`z`, the pass's snapshot), never from a point this
        // pass has already rewritten (ParaDiGMS, math.md §6.5).
        let mut acc = buf[b].clone();
        let mut worst = Vec::with_capacity(len);
        for (o, j) in (b..e).enumerate() {
            let st = &steps[j];
            let (xj, ej, xij) = (&z[o * nd..(o + 1) * nd], &eps[o * nd..(o + 1) * nd], &xi[j * nd..(j + 1) * nd]);
            for i in 0..nd {
                acc[i] += (st.a - 1.0) * xj[i] + st.b * ej[i] + xij[i];
            }
            worst.push(largest_change(&acc, &buf[j + 1], d));
            buf[j + 1].copy_from_slice(&acc);
        }
        let (nb, ne) = picard_slide(steps, b, &worst, window, tol, d);
        if let Some(log) = passes.as_deref_mut() {
            log.push(picard_pass(steps, b, &worst, nb, tol, d));
        }
        for j in e + 1..=ne {
            buf[j] = buf[e].clone();
        }
        b = nb;
        e = ne.max(b);
    }
    if let Some(t) = trajectory {
        t.extend(buf.iter().cloned());
    }
    let out = buf.pop().unwrap_or_default();
    finite(&out)?;
    Ok((out, stats))
}

/// Fails unless the window and the tolerance are usable.
pub(crate) fn check_picard(window: usize, tol: f64) -> Result<()> {
    if window == 0 || !(tol.is_finite() && tol >= 0.0) {
        return Err(DiffusionError::Config(format!(
            "parallel sampler needs window >= 1 and tol >= 0, got {window}, {tol}"
        )));
    }
    Ok(())
}

/// The largest squared change ||new − old||² over the samples of one point (n rows of d), NaN
/// when any is NaN.
fn largest_change(new: &[f64], old: &[f64], d: usize) -> f64 {
    new.chunks_exact(d)
        .zip(old.chunks_exact(d))
        .map(|(a, b)| a.iter().zip(b).map(|(a, b)| (a - b).powi(2)).sum::<f64>())
        .fold(0.0, |worst, r| if r.is_nan() || r > worst { r } else { worst })
}

/// After a pass over the window starting at point `b` whose rebuilt points b+1.. changed by at
/// most `worst[o]` (squared, over the samples), the next window [nb, ne): it starts past the
/// converged prefix plus the first unconverged point. Point j+1 has converged when
/// worst ≤ τ²·d·v_{j+1}, v = the next step's β̃; the output X_S (no next step) only when
/// reproduced exactly. The host and the device samplers both slide by this rule.
pub(crate) fn picard_slide(
    steps: &[LinearStep],
    b: usize,
    worst: &[f64],
    window: usize,
    tol: f64,
    d: usize,
) -> (usize, usize) {
    let converged = |o: usize| {
        let r = worst[o];
        match steps.get(b + o + 1) {
            None => r == 0.0,
            Some(s) => r <= tol * tol * d as f64 * s.tol_var.max(1e-20),
        }
    };
    let len = worst.len();
    let first_bad = (0..len).find(|&o| !converged(o)).unwrap_or(len);
    let nb = b + (first_bad + 1).min(len);
    (nb, (nb + window).min(steps.len()))
}

/// The report of a pass over the window starting at `b` whose points changed by at most
/// `worst[o]` and after which the window starts at `nb` (`picard_slide`, tolerance `tol`).
pub(crate) fn picard_pass(steps: &[LinearStep], b: usize, worst: &[f64], nb: usize, tol: f64, d: usize) -> PicardPass {
    // Normalised changes of the points that have a next step (not X_S), in window order.
    let norm: Vec<f64> = worst
        .iter()
        .enumerate()
        .filter_map(|(o, &r)| steps.get(b + o + 1).map(|s| (r / (d as f64 * s.tol_var.max(1e-20))).sqrt()))
        .collect();
    let error = match norm.iter().find(|&&v| v.is_nan() || v > tol) {
        Some(&v) => v,
        None => norm.iter().copied().fold(0.0, f64::max),
    };
    PicardPass { begin: b, end: b + worst.len(), converged: nb, error }
}

// ---------------------------------------------------------------------------------------------
// EDM Heun, math.md §6.4

/// σ_min, σ_max and ρ of EDM's sampler.
pub const EDM_SIGMA_MIN: f64 = 0.002;
/// See `EDM_SIGMA_MIN`.
pub const EDM_SIGMA_MAX: f64 = 80.0;
/// See `EDM_SIGMA_MIN`.
pub const EDM_RHO: f64 = 7.0;

/// EDM's levels t_0 > … > t_{N−1} and t_N = 0.
pub fn edm_sigmas(steps: usize) -> Vec<f64> {
    let (lo, hi) = (EDM_SIGMA_MIN.powf(1.0 / EDM_RHO), EDM_SIGMA_MAX.powf(1.0 / EDM_RHO));
    let mut t: Vec<f64> =
        (0..steps).map(|i| (hi + i as f64 / (steps.max(2) - 1) as f64 * (lo - hi)).powf(EDM_RHO)).collect();
    t.push(0.0);
    t
}

/// EDM Heun in x_σ = x + σ·n space with D(x; σ) = x − σ·ε̂(x/sqrt(1+σ²), −2 ln σ) (math.md §1.4(b)),
/// so d = (x − D)/σ = ε̂. Churn γ_i = min(S_churn/N, √2 − 1) on every level (S_min = 0,
/// S_max = ∞, S_noise = 1); no Heun correction on the last step. Noise of level i is stream
/// (seed, [i, TAG_SAMPLER_NOISE, sample]).
pub async fn heun(
    den: &mut dyn BatchDenoiser,
    steps: usize,
    churn: f64,
    n: usize,
    seed: u64,
    mut trajectory: Option<&mut Vec<Vec<f64>>>,
) -> Result<(Vec<f64>, SampleStats)> {
    check_heun(steps, churn)?;
    let d = den.dim();
    let nd = n * d;
    let t = edm_sigmas(steps);
    let mut x: Vec<f64> = initial_noise(seed, n, d).into_iter().map(|v| v * t[0]).collect();
    let (mut d1, mut d2, mut z, mut noise) = (vec![0.0; nd], vec![0.0; nd], vec![0.0; nd], vec![0.0; nd]);
    let mut evals = 0;
    let gamma = (churn / steps as f64).min(std::f64::consts::SQRT_2 - 1.0);
    for i in 0..steps {
        let (ti, tn) = (t[i], t[i + 1]);
        let th = ti * (1.0 + gamma);
        if gamma > 0.0 {
            step_noise(seed, i, d, &mut noise);
            let s = (th * th - ti * ti).sqrt();
            x.iter_mut().zip(&noise).for_each(|(x, n)| *x += s * n);
        }
        eps_at(den, &x, th, n, &mut z, &mut d1).await?;
        evals += 1;
        let xn: Vec<f64> = x.iter().zip(&d1).map(|(x, d)| x + (tn - th) * d).collect();
        if i + 1 < steps {
            eps_at(den, &xn, tn, n, &mut z, &mut d2).await?;
            evals += 1;
            for k in 0..nd {
                x[k] += (tn - th) * 0.5 * (d1[k] + d2[k]);
            }
        } else {
            x = xn;
        }
        if let Some(tr) = trajectory.as_deref_mut() {
            tr.push(x.clone());
        }
    }
    finite(&x)?;
    Ok((x, SampleStats { passes: evals, evaluations: evals, steps }))
}

/// Fails unless Heun's level count and churn are usable.
pub(crate) fn check_heun(steps: usize, churn: f64) -> Result<()> {
    if steps < 2 || !(churn.is_finite() && churn >= 0.0) {
        return Err(DiffusionError::Config(format!("Heun needs >= 2 steps and churn >= 0, got {steps}, {churn}")));
    }
    Ok(())
}

/// out = ε̂(x/sqrt(1+σ²), −2 ln σ) for x in x_σ space; z is scratch. x, z, out: (n, d)
async fn eps_at(
    den: &mut dyn BatchDenoiser,
    x: &[f64],
    sigma: f64,
    n: usize,
    z: &mut [f64],
    out: &mut [f64],
) -> Result<()> {
    let c = 1.0 / (1.0 + sigma * sigma).sqrt();
    z.iter_mut().zip(x).for_each(|(z, x)| *z = c * x);
    den.eps_batch(z, &vec![-2.0 * sigma.ln(); n], out).await
}
