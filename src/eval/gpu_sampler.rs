//! The samplers of `diffusion::sampler` run on the device: the state stays in device memory, the
//! update arithmetic is `ops::sampler`'s kernels between the network's forward passes, and the
//! host reads the samples once at the end (and, for the Picard sampler, one float per window
//! point per pass: the largest squared change, from which it slides the window). Same schedules,
//! same noise streams and the same clip as the f64 host path, which stays the reference
//! (`tests/native/eval_gpu_sampler.rs` holds the two together); f32 state instead of f64.
//!
//! Not here: trajectories (the host path records them), the schedules themselves.

use crate::diffusion::logsnr::sigmoid;
use crate::diffusion::sampler::{
    check_heun, check_picard, edm_sigmas, finite, picard_pass, picard_slide, EvalFuture, LinearStep, PicardPass,
    SampleStats, SamplerConfig,
};
use crate::diffusion::schedule::alpha_of_sigma;
use crate::diffusion::{DiffusionError, Result};
use crate::gpu::{Buffer, Dispatch, Gpu, GpuError};
use crate::ops::sampler::{self as k, Group, TABLE_ROW};
use crate::train::trainer::noise_input;

use super::denoiser::GpuDenoiser;

/// FLOPs of network evaluations recorded into one submission (at least one evaluation each):
/// long enough that a fast GPU is not starved between submissions, short enough that a slow
/// adapter (a browser on a CPU) returns control to its event loop now and then.
const SUBMIT_FLOPS: u64 = 2_000_000_000;

fn gpu_err(e: GpuError) -> DiffusionError {
    DiffusionError::Denoiser(e.to_string())
}

/// Takes samples where the sampler leaves them, on the device, instead of a readback: `take` gets
/// a buffer whose first m·d values are the next m samples (m, d), model units, in order; it must
/// be done with the buffer when its future resolves (the sampler overwrites it afterwards).
pub trait DeviceSamples {
    fn take<'a>(&'a mut self, x: &'a Buffer, m: usize) -> EvalFuture<'a>;
}

/// Where a sampler's groups of samples go: read back to the host, or to a `DeviceSamples`.
enum Sink<'s> {
    Host(Vec<f64>),
    Device(&'s mut dyn DeviceSamples),
}

impl Sink<'_> {
    async fn put(&mut self, gpu: &Gpu, x: &Buffer, m: usize, d: usize) -> Result<()> {
        match self {
            Sink::Host(out) => out.extend(read(gpu, x, m * d).await?),
            Sink::Device(sink) => sink.take(x, m).await?,
        }
        Ok(())
    }

    fn into_host(self) -> Vec<f64> {
        match self {
            Sink::Host(out) => out,
            Sink::Device(_) => Vec::new(),
        }
    }
}

/// The table rows of linear steps: a, b, σ, the next step's noise input, and the clip's m, s.
fn linear_table(steps: &[LinearStep]) -> Vec<f32> {
    let mut t = Vec::with_capacity(steps.len() * TABLE_ROW);
    for (j, st) in steps.iter().enumerate() {
        let next = steps.get(j + 1).map_or(0.0, |s| noise_input(s.alpha));
        let (m, s) = (sigmoid(st.alpha).sqrt(), sigmoid(-st.alpha).sqrt());
        t.extend([st.a as f32, st.b as f32, st.sigma as f32, next, m as f32, s as f32, 0.0, 0.0]);
    }
    t
}

/// The table rows of EDM Heun's levels (the layout of `shaders/sampler.wgsl`).
fn heun_table(steps: usize, churn: f64) -> Vec<f32> {
    let t = edm_sigmas(steps);
    let gamma = (churn / steps as f64).min(std::f64::consts::SQRT_2 - 1.0);
    let mut rows = Vec::with_capacity(steps * TABLE_ROW);
    for i in 0..steps {
        let (ti, tn) = (t[i], t[i + 1]);
        let th = ti * (1.0 + gamma);
        let s_churn = if gamma > 0.0 { (th * th - ti * ti).sqrt() } else { 0.0 };
        let c = |s: f64| 1.0 / (1.0 + s * s).sqrt();
        let tin = |s: f64| if s > 0.0 { noise_input(alpha_of_sigma(s)) } else { 0.0 };
        let last = if i + 1 == steps { 1.0 } else { 0.0 };
        rows.extend([th, tn, s_churn, c(th), c(tn)].map(|v| v as f32));
        rows.extend([tin(th), tin(tn), last]);
    }
    rows
}

impl GpuDenoiser<'_> {
    /// `sampler::sample(self, cfg, n, seed, None)` (through `ClipDenoised` with `clip`) with the
    /// sampler's arithmetic on the device: samples (n, d) in f64, and the same statistics.
    pub async fn sample_on_device(
        &mut self,
        cfg: &SamplerConfig,
        n: usize,
        seed: u64,
        clip: Option<(f64, f64)>,
    ) -> Result<(Vec<f64>, SampleStats)> {
        self.sample_on_device_logged(cfg, n, seed, clip, &mut |_| {}).await
    }

    /// `sample_on_device` that hands every pass of the parallel sampler to `on_pass` as soon as
    /// its readback arrives (the passes `sampler::picard` logs; none for the other samplers), so
    /// a page can draw them while the sampler runs.
    pub async fn sample_on_device_logged(
        &mut self,
        cfg: &SamplerConfig,
        n: usize,
        seed: u64,
        clip: Option<(f64, f64)>,
        on_pass: &mut dyn FnMut(PicardPass),
    ) -> Result<(Vec<f64>, SampleStats)> {
        let mut sink = Sink::Host(Vec::with_capacity(n * self.net().row_len()));
        let stats = self.run(cfg, n, seed, clip, &mut sink, on_pass).await?;
        let x = sink.into_host();
        finite(&x)?;
        Ok((x, stats))
    }

    /// `sample_on_device` with the samples handed to `sink` on the device, group by group, never
    /// read back: what a metric computed on the device (FID's features) consumes.
    pub async fn sample_into(
        &mut self,
        cfg: &SamplerConfig,
        n: usize,
        seed: u64,
        clip: Option<(f64, f64)>,
        sink: &mut dyn DeviceSamples,
    ) -> Result<SampleStats> {
        self.run(cfg, n, seed, clip, &mut Sink::Device(sink), &mut |_| {}).await
    }

    async fn run(
        &mut self,
        cfg: &SamplerConfig,
        n: usize,
        seed: u64,
        clip: Option<(f64, f64)>,
        sink: &mut Sink<'_>,
        on_pass: &mut dyn FnMut(PicardPass),
    ) -> Result<SampleStats> {
        if n == 0 {
            return Err(DiffusionError::Config("number of samples must be >= 1".into()));
        }
        let clip = clip.map(|(lo, hi)| (lo as f32, hi as f32));
        match *cfg {
            SamplerConfig::Ddpm { .. } | SamplerConfig::Ddim { .. } => {
                self.sequential(&cfg.linear_steps()?, n, seed, clip, sink).await
            }
            SamplerConfig::Heun { steps, churn } => {
                check_heun(steps, churn)?;
                self.heun(steps, churn, n, seed, clip, sink).await?;
                let evals = 2 * steps - 1;
                Ok(SampleStats { passes: evals, evaluations: evals, steps })
            }
            SamplerConfig::Parallel { window, tol, .. } => {
                self.picard(&cfg.linear_steps()?, window, tol, n, seed, clip, sink, on_pass).await
            }
        }
    }

    /// Groups of the rows the model is bound to, each run through all of `record`'s steps:
    /// (first sample, samples) per group.
    fn groups(&self, n: usize) -> impl Iterator<Item = (usize, usize)> {
        let r = self.net().rows();
        (0..n).step_by(r).map(move |s| (s, r.min(n - s)))
    }

    /// Evaluations per submission for this model.
    fn evals_per_submit(&self) -> usize {
        let flops: u64 = self.net().dispatches().0.iter().map(Dispatch::flops).sum();
        (SUBMIT_FLOPS / flops.max(1)).clamp(1, 64) as usize
    }

    async fn sequential(
        &mut self,
        steps: &[LinearStep],
        n: usize,
        seed: u64,
        clip: Option<(f32, f32)>,
        sink: &mut Sink<'_>,
    ) -> Result<SampleStats> {
        let (gpu, d, rows) = (self.gpu(), self.net().row_len(), self.net().rows());
        let table = gpu.upload("sampler table", &linear_table(steps)).map_err(gpu_err)?;
        let ctr = gpu.zeros("sampler step", 1).map_err(gpu_err)?;
        let x = gpu.zeros("sampler x", rows * d).map_err(gpu_err)?;
        let per = self.evals_per_submit();
        for (sample0, m) in self.groups(n).collect::<Vec<_>>() {
            let g = Group { seed, rows, d, sample0, clip };
            let net = self.net();
            let (z, tin, eps) = (net.input(), net.noise_input(), net.output());
            let t0 = noise_input(steps[0].alpha);
            let init = k::sampler_init(gpu, &g, &x, z, tin, 1.0, 1.0, t0).await.map_err(gpu_err)?;
            let step = k::step(gpu, "sampler_linear", &g, &table, &ctr, eps, &x, z, tin, gpu.unused()).await;
            let step = step.map_err(gpu_err)?;
            let advance = k::sampler_advance(gpu, &ctr).await.map_err(gpu_err)?;
            let fwd = net.dispatches().0;
            let mut rec = gpu.recorder();
            rec.clear(&ctr).dispatch(&init);
            for j in 0..steps.len() {
                rec.dispatches(fwd).dispatch(&step).dispatch(&advance);
                if (j + 1) % per == 0 {
                    std::mem::replace(&mut rec, gpu.recorder()).submit();
                }
            }
            rec.submit();
            sink.put(gpu, &x, m, d).await?;
        }
        let s = steps.len();
        Ok(SampleStats { passes: s, evaluations: s, steps: s })
    }

    async fn heun(
        &mut self,
        steps: usize,
        churn: f64,
        n: usize,
        seed: u64,
        clip: Option<(f32, f32)>,
        sink: &mut Sink<'_>,
    ) -> Result<()> {
        let (gpu, d, rows) = (self.gpu(), self.net().row_len(), self.net().rows());
        let table = gpu.upload("sampler table", &heun_table(steps, churn)).map_err(gpu_err)?;
        let ctr = gpu.zeros("sampler step", 1).map_err(gpu_err)?;
        let x = gpu.zeros("sampler x", rows * d).map_err(gpu_err)?;
        let d1 = gpu.zeros("sampler d1", rows * d).map_err(gpu_err)?;
        let per = self.evals_per_submit();
        let sigma_max = edm_sigmas(steps)[0] as f32;
        for (sample0, m) in self.groups(n).collect::<Vec<_>>() {
            let g = Group { seed, rows, d, sample0, clip };
            let net = self.net();
            let (z, tin, eps) = (net.input(), net.noise_input(), net.output());
            let init = k::sampler_init(gpu, &g, &x, z, tin, sigma_max, 0.0, 0.0).await.map_err(gpu_err)?;
            let hstep = k::step(gpu, "heun_step", &g, &table, &ctr, eps, &x, z, tin, &d1).await.map_err(gpu_err)?;
            let euler = k::step(gpu, "heun_euler", &g, &table, &ctr, eps, &x, z, tin, &d1).await.map_err(gpu_err)?;
            let advance = k::sampler_advance(gpu, &ctr).await.map_err(gpu_err)?;
            let fwd = net.dispatches().0;
            let mut rec = gpu.recorder();
            rec.clear(&ctr).dispatch(&init);
            let mut evals = 0;
            for i in 0..steps {
                rec.dispatch(&hstep).dispatches(fwd).dispatch(&euler);
                evals += 1;
                if i + 1 < steps {
                    rec.dispatches(fwd).dispatch(&advance);
                    evals += 1;
                }
                if evals >= per {
                    evals = 0;
                    std::mem::replace(&mut rec, gpu.recorder()).submit();
                }
            }
            rec.submit();
            sink.put(gpu, &x, m, d).await?;
        }
        Ok(())
    }

    /// ParaDiGMS (math.md §6.5) exactly as `sampler::picard`, over a ring of window + 1 points on
    /// the device: every pass evaluates the window in chunks of the model's rows, rebuilds the
    /// window by cumulative sums (`picard_sweep`) and reads back each point's largest squared
    /// change over the samples, from which the host decides how far the window slides.
    #[allow(clippy::too_many_arguments)]
    async fn picard(
        &mut self,
        steps: &[LinearStep],
        window: usize,
        tol: f64,
        n: usize,
        seed: u64,
        clip: Option<(f32, f32)>,
        sink: &mut Sink<'_>,
        on_pass: &mut dyn FnMut(PicardPass),
    ) -> Result<SampleStats> {
        let s_n = steps.len();
        check_picard(window, tol)?;
        let window = window.min(s_n);
        let (gpu, d, rows) = (self.gpu(), self.net().row_len(), self.net().rows());
        let (point, slots) = (n * d, window + 1);
        let alloc = |label: &str, len: usize| gpu.zeros(label, len).map_err(gpu_err);
        let table = gpu.upload("sampler table", &linear_table(steps)).map_err(gpu_err)?;
        // Each point's noise input, repeated for its n rows: what a chunk copies to the model.
        let tall: Vec<f32> = steps.iter().flat_map(|s| std::iter::repeat_n(noise_input(s.alpha), n)).collect();
        let tall = gpu.upload("picard noise inputs", &tall).map_err(gpu_err)?;
        let (xr, peps) = (alloc("picard x", slots * point)?, alloc("picard eps", slots * point)?);
        let (prev, err, flags) =
            (alloc("picard prev", point)?, alloc("picard err", window * n)?, alloc("picard max", window)?);
        let g = Group { seed, rows: n, d, sample0: 0, clip };
        let pc = k::picard(gpu, &g, &table, &peps, &xr, &prev, &err, &flags, slots, window).await.map_err(gpu_err)?;
        // x_T into slot 0 and (as the init kernel's z) into prev, which is the pass's scratch
        // until picard_sweep writes it: a buffer cannot be copied onto itself, so slot-to-slot
        // copies go through prev. The init kernel's tin lands in err, also overwritten later.
        let x0 = xr.view(0, point).map_err(gpu_err)?;
        let init = k::sampler_init(gpu, &g, &x0, &prev, &err.view(0, n).map_err(gpu_err)?, 1.0, 1.0, 0.0).await;
        let init = init.map_err(gpu_err)?;
        let net = self.net();
        let (zin, tin, out, fwd) = (net.input(), net.noise_input(), net.output(), net.dispatches().0);
        let mut rec = gpu.recorder();
        rec.dispatch(&init);
        for j in 1..=window {
            rec.copy(&prev, 0, &xr, j * point, point);
        }
        let (mut b, mut e) = (0usize, window);
        let mut stats = SampleStats { steps: s_n, ..SampleStats::default() };
        while b < s_n {
            let len = e - b;
            pc.set_window(gpu, b, len).map_err(gpu_err)?;
            for r0 in (0..len * n).step_by(rows) {
                let r1 = (r0 + rows).min(len * n);
                for (ring, at, count) in ring_runs(b, r0, r1, n, slots) {
                    rec.copy(&xr, ring * d, zin, at * d, count * d);
                }
                rec.copy(&tall, b * n + r0, tin, 0, r1 - r0);
                rec.dispatches(fwd);
                for (ring, at, count) in ring_runs(b, r0, r1, n, slots) {
                    rec.copy(out, at * d, &peps, ring * d, count * d);
                }
            }
            rec.dispatch(&pc.sweep).dispatch(&pc.max);
            std::mem::replace(&mut rec, gpu.recorder()).submit();
            let worst = gpu.read(&flags.view(0, len).map_err(gpu_err)?).await.map_err(gpu_err)?;
            stats.passes += 1;
            stats.evaluations += len;
            let worst: Vec<f64> = worst.into_iter().map(f64::from).collect();
            let (nb, ne) = picard_slide(steps, b, &worst, window, tol, d);
            on_pass(picard_pass(steps, b, &worst, nb, tol, d));
            if ne > e {
                rec.copy(&xr, (e % slots) * point, &prev, 0, point);
            }
            for j in e + 1..=ne {
                rec.copy(&prev, 0, &xr, (j % slots) * point, point);
            }
            b = nb;
            e = ne.max(b);
        }
        // X_S, through prev (a view's start must be aligned; a copy's need not).
        rec.copy(&xr, (s_n % slots) * point, &prev, 0, point);
        rec.submit();
        sink.put(gpu, &prev, n, d).await?;
        Ok(stats)
    }
}

/// The ring positions of rows r0..r1 of a window starting at point b (row r is sample r % n of
/// point b + r / n, in slot (b + r / n) % slots), as maximal runs (first ring row, first chunk
/// row, rows) that are contiguous in the ring.
fn ring_runs(b: usize, r0: usize, r1: usize, n: usize, slots: usize) -> Vec<(usize, usize, usize)> {
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    let mut r = r0;
    while r < r1 {
        let (j, s) = (b + r / n, r % n);
        let count = (n - s).min(r1 - r);
        let ring = (j % slots) * n + s;
        match runs.last_mut() {
            Some(last) if last.0 + last.2 == ring => last.2 += count,
            _ => runs.push((ring, r - r0, count)),
        }
        r += count;
    }
    runs
}

async fn read(gpu: &Gpu, buf: &Buffer, len: usize) -> Result<Vec<f64>> {
    let got = gpu.read(&buf.view(0, len).map_err(gpu_err)?).await.map_err(gpu_err)?;
    Ok(got.into_iter().map(f64::from).collect())
}
