//! Samplers against closed forms (math.md §6): with the analytic optimal denoiser of Gaussian data
//! N(m, diag(v)) every sampler's output must have the data's mean and variance; the parallel
//! Picard sampler with τ → 0 reproduces the sequential DDPM trajectory (same pre-sampled noise);
//! pass counts never exceed the number of steps.

use crate::common::gaussian::data;

use cdl::diffusion::gaussian::GaussianData;
use cdl::diffusion::sampler::{
    ddpm_schedule, ddpm_steps, initial_noise, picard, sample, sequential, trajectory_frames, BatchDenoiser,
    ClipDenoised, DdpmVariance, RowByRow, SamplerConfig,
};

fn moments(x: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = (x.len() / d) as f64;
    let mean: Vec<f64> = (0..d).map(|i| x.iter().skip(i).step_by(d).sum::<f64>() / n).collect();
    let var =
        (0..d).map(|i| x.iter().skip(i).step_by(d).map(|v| (v - mean[i]).powi(2)).sum::<f64>() / (n - 1.0)).collect();
    (mean, var)
}

#[test]
fn every_sampler_reproduces_gaussian_moments() {
    let g = data();
    let n = 4000;
    let cases = [
        SamplerConfig::DDPM,
        SamplerConfig::Ddpm { steps: 1000, variance: DdpmVariance::Posterior },
        SamplerConfig::Ddim { steps: 100 },
        // EDM's N = 18 is tuned for images; on this Gaussian it is 13% off in variance (see
        // heun_converges_at_second_order), so the moments test uses N = 100.
        SamplerConfig::Heun { steps: 100, churn: 0.0 },
        SamplerConfig::Heun { steps: 100, churn: 40.0 },
        SamplerConfig::Parallel { steps: 1000, window: 1000, tol: 0.1, ddim: false, variance: DdpmVariance::Posterior },
        SamplerConfig::Parallel { steps: 100, window: 16, tol: 0.1, ddim: true, variance: DdpmVariance::Posterior },
    ];
    for cfg in cases {
        let (x, stats) = pollster::block_on(sample(&mut RowByRow(&g), &cfg, n, 7, None)).unwrap();
        let (mean, var) = moments(&x, 2);
        println!(
            "{}: mean {mean:.4?} var {var:.4?} passes {} evaluations {}",
            cfg.name(),
            stats.passes,
            stats.evaluations
        );
        for i in 0..2 {
            let v = g.var[i];
            // Sampling error of n draws: SE(mean) = sqrt(v/n), SE(var) = v·sqrt(2/(n−1)); 4 SE
            // fails by chance with p ≈ 6e-5. Plus 1% of v for the discretisation of the
            // shortest samplers (DDIM-100, Heun-100) and the Picard tolerance.
            let (se_m, se_v) = ((v / n as f64).sqrt(), v * (2.0 / (n - 1) as f64).sqrt());
            assert!((mean[i] - g.mean[i]).abs() < 4.0 * se_m + 0.01 * v.sqrt(), "{}: mean {i} {}", cfg.name(), mean[i]);
            assert!((var[i] - v).abs() < 4.0 * se_v + 0.01 * v, "{}: var {i} {} vs {v}", cfg.name(), var[i]);
        }
        assert!(stats.passes <= stats.steps.max(stats.evaluations), "{stats:?}");
        if let SamplerConfig::Parallel { .. } = cfg {
            assert!(stats.passes <= stats.steps, "passes {} > steps {}", stats.passes, stats.steps);
            assert!(stats.passes < stats.steps / 2, "no parallel speed-up: {stats:?}");
        }
    }
}

#[test]
fn heun_converges_at_second_order() {
    // Same noise for every N: the variance error against N = 400 shrinks like N^-2.
    let g = data();
    let var_at = |steps| {
        let cfg = SamplerConfig::Heun { steps, churn: 0.0 };
        let (x, s) = pollster::block_on(sample(&mut RowByRow(&g), &cfg, 2000, 7, None)).unwrap();
        assert_eq!(s.evaluations, 2 * steps - 1, "Heun costs 2N - 1 evaluations");
        moments(&x, 2).1[1]
    };
    let reference = var_at(400);
    let (e18, e40) = ((var_at(18) - reference).abs(), (var_at(40) - reference).abs());
    println!("Heun variance error vs N = 400: N = 18 {e18:.4}, N = 40 {e40:.4}, ratio {:.3}", e40 / e18);
    // Second order predicts (18/40)^2 = 0.20; first order would give 0.45.
    assert!(e40 / e18 < 0.3, "{e18} -> {e40}");
}

#[test]
fn parallel_sampler_with_zero_tolerance_reproduces_the_sequential_trajectory() {
    let g = data();
    let steps = ddpm_steps(&ddpm_schedule(100).unwrap(), DdpmVariance::Posterior);
    let n = 64;
    let mut traj = Vec::new();
    let (want, _) = pollster::block_on(sequential(&mut RowByRow(&g), &steps, n, 3, Some(&mut traj))).unwrap();
    for window in [1, 7, 100] {
        for tol in [0.0, 1e-9] {
            let mut buf = Vec::new();
            let (got, stats) =
                pollster::block_on(picard(&mut RowByRow(&g), &steps, window, tol, n, 3, Some(&mut buf), None)).unwrap();
            // Cumulative sums regroup the additions of the sequential recursion: equal up to a
            // few ulps per step over 100 steps of O(1) values.
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            println!("window {window} tol {tol}: max |parallel - sequential| {err:.2e}, {stats:?}");
            assert!(err < 1e-10, "window {window} tol {tol}: {err}");
            // The whole trajectory, not just the end point.
            for (j, (a, b)) in buf[1..].iter().zip(&traj).enumerate() {
                let e = a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                assert!(e < 1e-10, "step {j}: {e}");
            }
            assert!(stats.passes <= 100 && stats.evaluations >= 100, "{stats:?}");
            if window == 1 {
                assert_eq!(stats.passes, 100, "window 1 is the sequential sampler");
            }
        }
    }
}

#[test]
fn looser_tolerance_never_costs_more_passes() {
    let g = data();
    let steps = ddpm_steps(&ddpm_schedule(200).unwrap(), DdpmVariance::Posterior);
    let mut last = usize::MAX;
    for tol in [1e-6, 1e-3, 0.1, 1.0] {
        let (_, s) = pollster::block_on(picard(&mut RowByRow(&g), &steps, 200, tol, 32, 5, None, None)).unwrap();
        println!("tol {tol}: {s:?}");
        assert!(s.passes <= 200 && s.passes <= last, "tol {tol}: {s:?}");
        last = s.passes;
    }
    assert!(last < 50, "tol 1 still takes {last} passes");
}

#[test]
fn short_ddpm_schedules_are_ho_respaced() {
    let ho = cdl::diffusion::schedule::DdpmSchedule::ho();
    for steps in [2, 10, 100, 999] {
        let s = ddpm_schedule(steps).unwrap();
        assert_eq!(s.steps(), steps);
        // Same end points as DDPM-1000, ᾱ strictly decreasing.
        assert_eq!((s.logsnr[0], s.logsnr[steps - 1]), (ho.logsnr[0], ho.logsnr[999]), "{steps}");
        assert!(s.alpha_bar.windows(2).all(|w| w[1] < w[0]), "{steps}");
    }
    // A 10-step DDPM on the Gaussian: the mean is right; ancestral sampling with so few steps
    // under-disperses with β̃ and over-disperses with β (coarse bounds, this is not a bug).
    let g = data();
    for variance in [DdpmVariance::Posterior, DdpmVariance::Beta] {
        let cfg = SamplerConfig::Ddpm { steps: 10, variance };
        let (x, _) = pollster::block_on(sample(&mut RowByRow(&g), &cfg, 4000, 3, None)).unwrap();
        let (mean, var) = moments(&x, 2);
        println!("ddpm-10 {variance:?}: mean {mean:.3?} var {var:.3?}");
        for i in 0..2 {
            let r = var[i] / g.var[i];
            assert!((mean[i] - g.mean[i]).abs() < 0.1 && r > 0.4 && r < 1.6, "{variance:?} {i}: {mean:?} {var:?}");
        }
    }
    assert!(ddpm_schedule(1).is_err() && ddpm_schedule(0).is_err());
}

#[test]
fn bad_sampler_settings_are_errors() {
    let g = data();
    for cfg in [
        SamplerConfig::Ddim { steps: 0 },
        SamplerConfig::Ddim { steps: 1001 },
        SamplerConfig::Heun { steps: 1, churn: 0.0 },
        SamplerConfig::Heun { steps: 10, churn: f64::NAN },
        SamplerConfig::Parallel { steps: 100, window: 0, tol: 0.1, ddim: false, variance: DdpmVariance::Posterior },
        SamplerConfig::Parallel { steps: 100, window: 10, tol: -1.0, ddim: false, variance: DdpmVariance::Posterior },
    ] {
        assert!(pollster::block_on(sample(&mut RowByRow(&g), &cfg, 4, 0, None)).is_err(), "{cfg:?}");
    }
    assert!(pollster::block_on(sample(&mut RowByRow(&g), &SamplerConfig::DDPM, 0, 0, None)).is_err());
}

#[test]
fn trajectory_frames_run_from_the_initial_noise_to_the_samples() {
    let g = data();
    let (n, seed) = (300, 11);
    let cases = [
        (SamplerConfig::Ddpm { steps: 50, variance: DdpmVariance::Beta }, 50),
        (SamplerConfig::Ddim { steps: 20 }, 20),
        (SamplerConfig::Heun { steps: 18, churn: 0.0 }, 18),
        (
            SamplerConfig::Parallel { steps: 30, window: 30, tol: 0.1, ddim: true, variance: DdpmVariance::Posterior },
            30,
        ),
    ];
    for (cfg, steps) in cases {
        let mut traj = Vec::new();
        let (x, _) = pollster::block_on(sample(&mut RowByRow(&g), &cfg, n, seed, Some(&mut traj))).unwrap();
        let frames = trajectory_frames(&cfg, n, 2, seed, traj);
        assert_eq!(frames.len(), steps + 1, "{cfg:?}");
        assert!(frames.iter().all(|f| f.len() == n * 2), "{cfg:?}");
        assert_eq!(frames.last().unwrap(), &x, "{cfg:?}: the last frame is the samples");
        // The first frame is x_T: the sampler's initial noise, N(0, I) in VP units (Heun's
        // σ_max = 80 scaled by 1/sqrt(1 + σ²) differs from 1 by 7.8e-5: below 4e-4 for |n| < 5).
        let noise = initial_noise(seed, n, 2);
        let err = frames[0].iter().zip(&noise).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err < 4e-4, "{cfg:?}: first frame off the initial noise by {err}");
        // Every frame stays on the VP scale: between the data's and the noise's spread.
        for (i, f) in frames.iter().enumerate() {
            let (_, var) = moments(f, 2);
            assert!(var.iter().all(|v| (0.2..2.5).contains(v)), "{cfg:?} frame {i}: variances {var:?}");
        }
    }
}

#[test]
fn clip_denoised_keeps_samples_in_range_and_is_a_no_op_inside_it() {
    // Data far outside [-1, 1]: N(3, 0.25) in each coordinate.
    let far = GaussianData::new(vec![3.0, -3.0], vec![0.25, 0.25]).unwrap();
    for cfg in [SamplerConfig::Ddim { steps: 50 }, SamplerConfig::Ddpm { steps: 100, variance: DdpmVariance::Beta }] {
        let mut inner = RowByRow(&far);
        let mut den = ClipDenoised { inner: &mut inner, lo: -1.0, hi: 1.0 };
        let (x, _) = pollster::block_on(sample(&mut den, &cfg, 500, 5, None)).unwrap();
        // The last step of both samplers lands on x̂₀ itself (ᾱ_prev = 1), which is clipped.
        let worst = x.iter().map(|v| v.abs()).fold(0.0, f64::max);
        assert!(worst <= 1.0 + 1e-9, "{cfg:?}: a sample at {worst}");
        let (plain, _) = pollster::block_on(sample(&mut RowByRow(&far), &cfg, 500, 5, None)).unwrap();
        assert!(plain.iter().any(|v| v.abs() > 2.0), "{cfg:?}: without clipping the data's range is reached");
    }
    // Where x̂₀ stays inside the range, ε̂ is unchanged bit for bit.
    let g = data();
    let z = [0.1, -0.2, 0.3, 0.05];
    let alpha = [2.0, 6.0];
    let (mut a, mut b) = ([0.0; 4], [0.0; 4]);
    pollster::block_on(RowByRow(&g).eps_batch(&z, &alpha, &mut a)).unwrap();
    let mut inner = RowByRow(&g);
    let mut wide = ClipDenoised { inner: &mut inner, lo: -1e9, hi: 1e9 };
    pollster::block_on(wide.eps_batch(&z, &alpha, &mut b)).unwrap();
    assert_eq!(a, b);
}

// --- the parallel sampler against a plain ParaDiGMS loop --------------------------------------

/// An isotropic Gaussian mixture Σ_k π_k N(μ_k, s² I) with its exact optimal ε̂ under the VP
/// channel z = sqrt(σ(α)) x + sqrt(σ(−α)) ε: per component z ~ N(sqrt(σ(α)) μ_k, (σ(α) s² + σ(−α)) I),
/// E[ε | z] = Σ_k w_k(z) sqrt(σ(−α)) (z − sqrt(σ(α)) μ_k) / (σ(α) s² + σ(−α)).
struct Mixture {
    means: Vec<[f64; 2]>,
    var: f64,
}

impl cdl::diffusion::likelihood::Denoiser for Mixture {
    fn dim(&self) -> usize {
        2
    }
    fn eps_hat(&self, z: &[f64], alpha: f64, out: &mut [f64]) {
        let (a, na) = (1.0 / (1.0 + (-alpha).exp()), 1.0 / (1.0 + alpha.exp()));
        let v = a * self.var + na;
        let logw: Vec<f64> = self
            .means
            .iter()
            .map(|m| -((z[0] - a.sqrt() * m[0]).powi(2) + (z[1] - a.sqrt() * m[1]).powi(2)) / (2.0 * v))
            .collect();
        let top = logw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = logw.iter().map(|l| (l - top).exp()).collect();
        let total: f64 = w.iter().sum();
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.means.iter().zip(&w).map(|(m, wk)| wk / total * na.sqrt() * (z[i] - a.sqrt() * m[i]) / v).sum();
        }
    }
}

/// ParaDiGMS's iteration written out from math.md §6.5 for one batch of `n` samples, without the
/// crate's sampler: every pass evaluates ε̂ at the window as it stands, computes all drifts from
/// that snapshot, rebuilds the window by cumulative sums, measures each point's change against
/// τ²·d·v (v the next step's posterior variance; the last point only when reproduced exactly),
/// slides past the converged prefix and starts new points at the window's last value.
/// Returns (X_S, passes, evaluations).
fn paradigms_reference(
    den: &dyn cdl::diffusion::likelihood::Denoiser,
    steps: &[cdl::diffusion::sampler::LinearStep],
    window: usize,
    tol: f64,
    n: usize,
    seed: u64,
) -> (Vec<f64>, usize, usize) {
    let d = den.dim();
    let t_n = steps.len();
    let noise: Vec<Vec<f64>> = (0..t_n)
        .map(|j| {
            let mut v = vec![0.0; n * d];
            cdl::diffusion::sampler::step_noise(seed, j, d, &mut v);
            v.iter().map(|u| steps[j].sigma * u).collect()
        })
        .collect();
    let mut x = vec![initial_noise(seed, n, d); t_n + 1];
    let (mut b, mut e, mut passes, mut evals) = (0, window.min(t_n), 0, 0);
    while b < t_n {
        let snapshot: Vec<Vec<f64>> = x[b..e].to_vec();
        let eps: Vec<Vec<f64>> = snapshot
            .iter()
            .enumerate()
            .map(|(o, xj)| {
                let mut out = vec![0.0; n * d];
                for s in 0..n {
                    den.eps_hat(&xj[s * d..(s + 1) * d], steps[b + o].alpha, &mut out[s * d..(s + 1) * d]);
                }
                out
            })
            .collect();
        passes += 1;
        evals += e - b;
        let mut sum = x[b].clone();
        let mut first_unconverged = e - b;
        for o in 0..e - b {
            let (j, st) = (b + o, &steps[b + o]);
            for i in 0..n * d {
                sum[i] += (st.a - 1.0) * snapshot[o][i] + st.b * eps[o][i] + noise[j][i];
            }
            let ok = (0..n).all(|s| {
                let r: f64 = (0..d).map(|i| (sum[s * d + i] - x[j + 1][s * d + i]).powi(2)).sum();
                match steps.get(j + 1) {
                    Some(next) => r <= tol * tol * d as f64 * next.tol_var.max(1e-20),
                    None => r == 0.0,
                }
            });
            if !ok && first_unconverged == e - b {
                first_unconverged = o;
            }
            x[j + 1] = sum.clone();
        }
        let new_b = b + (first_unconverged + 1).min(e - b);
        let new_e = (new_b + window).min(t_n);
        for j in e + 1..=new_e {
            x[j] = x[e].clone();
        }
        (b, e) = (new_b, new_e.max(new_b));
    }
    (x.pop().unwrap(), passes, evals)
}

#[test]
fn parallel_sampler_is_the_paradigms_iteration() {
    let gauss = data();
    let mix = Mixture {
        means: (0..8)
            .map(|k| f64::from(k) * std::f64::consts::FRAC_PI_4)
            .map(|t| [2.0 * t.cos(), 2.0 * t.sin()])
            .collect(),
        var: 0.05,
    };
    let dens: [(&str, &dyn cdl::diffusion::likelihood::Denoiser); 2] = [("gaussian", &gauss), ("8-mixture", &mix)];
    let steps = ddpm_steps(&ddpm_schedule(200).unwrap(), DdpmVariance::Posterior);
    let n = 16;
    for (name, den) in dens {
        for window in [5, 32, 200] {
            for tol in [0.01, 0.1, 0.5] {
                let (want, passes, evals) = paradigms_reference(den, &steps, window, tol, n, 9);
                let (got, stats) =
                    pollster::block_on(picard(&mut RowByRow(den), &steps, window, tol, n, 9, None, None)).unwrap();
                println!(
                    "{name} window {window} tol {tol}: reference {passes} passes / {evals} evaluations, {stats:?}"
                );
                assert_eq!((stats.passes, stats.evaluations), (passes, evals), "{name} window {window} tol {tol}");
                assert_eq!(got, want, "{name} window {window} tol {tol}: samples");
            }
        }
    }
}

#[test]
fn parallel_ddpm_converges_to_the_sequential_sampler_with_the_same_variance_for_either_variance() {
    // The fixed point of the Picard iteration is the sequential sampler with the same transition:
    // at τ = 0 parallel = sequential for β_t and for β̃_t alike, and the two variances give
    // different samples, so a parallel-vs-sequential comparison must use one of them for both.
    let g = data();
    let n = 32;
    let mut ends = Vec::new();
    for variance in [DdpmVariance::Beta, DdpmVariance::Posterior] {
        let seq = SamplerConfig::Ddpm { steps: 50, variance };
        let par = SamplerConfig::Parallel { steps: 50, window: 50, tol: 0.0, ddim: false, variance };
        let (want, _) = pollster::block_on(sample(&mut RowByRow(&g), &seq, n, 5, None)).unwrap();
        let (got, _) = pollster::block_on(sample(&mut RowByRow(&g), &par, n, 5, None)).unwrap();
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err < 1e-10, "{variance:?}: {err}");
        ends.push(want);
    }
    let gap = ends[0].iter().zip(&ends[1]).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(gap > 1e-3, "β and β̃ gave the same samples ({gap})");
}

#[test]
fn each_sampler_reports_the_levels_it_queries() {
    let ho = cdl::diffusion::schedule::DdpmSchedule::ho().logsnr;
    let (lo, hi) = SamplerConfig::DDPM.alpha_range().unwrap();
    assert_eq!((lo, hi), (ho[999], ho[0]));
    assert!((lo + 10.12).abs() < 0.01 && (hi - 9.21).abs() < 0.01, "{lo} {hi}");
    // EDM Heun: σ from 80 down to 0.002, α = −2 ln σ.
    let (lo, hi) = SamplerConfig::Heun { steps: 18, churn: 0.0 }.alpha_range().unwrap();
    assert!((lo - (-2.0 * 80f64.ln())).abs() < 1e-9 && (hi - (-2.0 * 0.002f64.ln())).abs() < 1e-9, "{lo} {hi}");
    // Churn raises the first level before it is evaluated.
    let (lo_churn, _) = SamplerConfig::Heun { steps: 18, churn: 10.0 }.alpha_range().unwrap();
    assert!(lo_churn < lo, "{lo_churn} {lo}");
    // DDIM-10 queries 10 of the 1000 levels: α_0 and α_900 at its ends.
    let (lo, hi) = SamplerConfig::Ddim { steps: 10 }.alpha_range().unwrap();
    assert_eq!((lo, hi), (ho[900], ho[0]));
    let par = SamplerConfig::Parallel { steps: 100, window: 100, tol: 0.1, ddim: false, variance: DdpmVariance::Beta };
    assert_eq!(
        par.alpha_range().unwrap(),
        SamplerConfig::Ddpm { steps: 100, variance: DdpmVariance::Beta }.alpha_range().unwrap()
    );
}
