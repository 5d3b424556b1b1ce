//! Schedule mappings to and from log-SNR α: DDPM linear-β and the α → t lookup (math.md §1.2),
//! iDDPM cosine (§1.2), VP-SDE and VE (§1.3), EDM σ and ε̂ ↔ D (§1.4), EDM weights (§4.3).

use cdl::diffusion::gaussian::GaussianData;
use cdl::diffusion::likelihood::Denoiser;
use cdl::diffusion::logsnr::{logit, sqrt_sigmoid};
use cdl::diffusion::schedule::{
    alpha_of_sigma, cosine_logsnr2t, cosine_t2logsnr, denoised_from_eps, eps_from_denoised, sigma_of_alpha,
    x_sigma_from_z, DdpmSchedule, EdmPrecond, LogSnrToT, VeSchedule, VpSde,
};
use cdl::reference::tol::{assert_close, Tol};

/// f64 round-off through a few exp/ln/sqrt calls.
const F64_FUNC: Tol = Tol { atol: 1e-12, rtol: 1e-12 };
/// The spec quotes schedule endpoints to 2 decimals: ±0.005 plus f64 noise.
const SPEC_2DP: Tol = Tol { atol: 0.00500001, rtol: 0.0 };

#[test]
fn ddpm_schedule_endpoints() {
    let s = DdpmSchedule::ho();
    assert_eq!(s.steps(), 1000);
    // math.md §1.2: α_0 = +9.21, α_999 = −10.12.
    assert_close("alpha_0, alpha_999", &[s.logsnr[0], s.logsnr[999]], &[9.21, -10.12], SPEC_2DP);
    // α_0 = logit(1 − 1e-4) exactly.
    assert_close("alpha_0 exact", &[s.logsnr[0]], &[logit(1.0 - 1e-4)], F64_FUNC);
    // α_t = logit(ᾱ_t), strictly decreasing.
    for t in 0..1000 {
        assert_close("logit", &[s.logsnr[t]], &[logit(s.alpha_bar[t])], Tol { atol: 1e-9, rtol: 1e-9 });
        if t > 0 {
            assert!(s.logsnr[t] < s.logsnr[t - 1]);
        }
    }
    assert!(DdpmSchedule::linear(1, 1e-4, 0.02).is_err());
    assert!(DdpmSchedule::linear(10, 0.0, 0.02).is_err());
}

#[test]
fn logsnr2t_is_monotone_clamped_and_per_sample() {
    let lut = LogSnrToT::ho();
    // Monotone non-increasing in α, on a fine α grid across and beyond the DDPM range.
    let mut prev = f64::INFINITY;
    for i in 0..=4000 {
        let a = -15.0 + i as f64 * 0.0075;
        let t = lut.t(a);
        assert!(t <= prev, "t({a}) = {t} > {prev}");
        assert!((0.0..=999.9 + 1e-9).contains(&t));
        prev = t;
    }
    // α outside ≈[−10.1, 9.2] clamps to an endpoint (math.md §1.2).
    assert_eq!(lut.t(20.0), 0.0);
    assert_close("t(-20)", &[lut.t(-20.0)], &[999.9], F64_FUNC);
    // The lookup maps each DDPM α_t back near t, but not exactly: the code's 10× grid scales β by
    // 0.1 instead of subdividing Ho's ᾱ curve, so ln ᾱ differs by Σβ²·(1/2 − 1/20) ≈ 0.06 at the
    // end, i.e. ≈ 0.06/β_T = 3 steps (plus the 0.9-step offset of the first fine index). Measured
    // worst case 3.9 steps (at t = 999) and 1.4 in the first half; bounds 4.0 and 1.5.
    let s = DdpmSchedule::ho();
    let (mut worst, mut worst_first_half) = (0.0f64, 0.0f64);
    for (t, &a) in s.logsnr.iter().enumerate() {
        let e = (lut.t(a) - t as f64).abs();
        worst = worst.max(e);
        if t < 500 {
            worst_first_half = worst_first_half.max(e);
        }
    }
    assert!(worst <= 4.0, "worst |t(alpha_t) - t| = {worst}");
    assert!(worst_first_half <= 1.5, "first half |t(alpha_t) - t| = {worst_first_half}");
    // Per sample: a batch of different α gets different t, each equal to its single lookup
    // (the bug fixed in InfoDiffusionSimple 01bc6b5 used one t for the whole batch).
    let alphas = [8.0, 0.0, -5.0, 3.3];
    let mut ts = [0.0; 4];
    lut.t_batch(&mut ts, &alphas).unwrap();
    for (t, a) in ts.iter().zip(&alphas) {
        assert_eq!(*t, lut.t(*a));
    }
    assert!(ts[0] < ts[3] && ts[3] < ts[1] && ts[1] < ts[2]);
    assert!(lut.t_batch(&mut ts[..3], &alphas).is_err());
}

#[test]
fn cosine_closed_form_round_trips() {
    // t → α → t for the iDDPM cosine schedule; acos loses ~sqrt(eps) near t = 0 (derivative
    // of acos at 1), hence the looser tolerance at the very start.
    for i in 0..1000 {
        let t = i as f64 + 0.37;
        let back = cosine_logsnr2t(cosine_t2logsnr(t, 1000.0), 1000.0);
        assert_close("cosine t", &[back], &[t], Tol { atol: 1e-6, rtol: 1e-9 });
    }
    // t(α) decreases in α.
    assert!(cosine_logsnr2t(5.0, 1000.0) < cosine_logsnr2t(0.0, 1000.0));
}

#[test]
fn vp_sde_range_and_inverse() {
    let vp = VpSde::default();
    // math.md §1.3: σ ∈ [0.001, 152.2], α ∈ [−10.05, 13.82] over t ∈ [1e-5, 1].
    assert_close("sigma(eps_t)", &[vp.sigma(1e-5)], &[0.001], Tol { atol: 5e-6, rtol: 0.0 });
    assert_close("sigma(1)", &[vp.sigma(1.0)], &[152.2], Tol { atol: 0.05, rtol: 0.0 });
    // math.md's 13.82 is −2 ln 0.001 = 13.8155 rounded; σ(1e-5) = 1.0005e-3 gives 13.8145, hence
    // ±0.01 for that end.
    assert_close("alpha(1)", &[vp.alpha(1.0)], &[-10.05], SPEC_2DP);
    assert_close("alpha(eps_t)", &[vp.alpha(1e-5)], &[13.82], Tol { atol: 0.01, rtol: 0.0 });
    for i in 0..=100 {
        let t = 1e-5 + (1.0 - 1e-5) * i as f64 / 100.0;
        assert_close("t(sigma(t))", &[vp.t_of_sigma(vp.sigma(t))], &[t], Tol { atol: 1e-12, rtol: 1e-9 });
        assert_close("t(alpha(t))", &[vp.t_of_alpha(vp.alpha(t))], &[t], Tol { atol: 1e-12, rtol: 1e-9 });
        assert_close(
            "alpha = -2 ln sigma",
            &[vp.alpha(t)],
            &[alpha_of_sigma(vp.sigma(t))],
            Tol { atol: 1e-9, rtol: 1e-12 },
        );
    }
}

#[test]
fn ve_and_edm_sigma_ranges() {
    // math.md §1.3: VE σ ∈ [0.02, 100] ↔ α ∈ [−9.21, 7.82]; EDM sampler σ ∈ [0.002, 80] ↔ α ∈ [−8.76, 12.43].
    let (lo, hi) = VeSchedule::default().alpha_range();
    assert_close("VE alpha range", &[lo, hi], &[-9.21, 7.82], SPEC_2DP);
    assert_close("EDM sampler alpha range", &[alpha_of_sigma(80.0), alpha_of_sigma(0.002)], &[-8.76, 12.43], SPEC_2DP);
    let ve = VeSchedule::default();
    assert_close("VE ends", &[ve.sigma(0.0), ve.sigma(1.0)], &[0.02, 100.0], F64_FUNC);
    for &a in &[-12.0, -1.0, 0.0, 3.0, 15.0] {
        assert_close("sigma round trip", &[alpha_of_sigma(sigma_of_alpha(a))], &[a], F64_FUNC);
    }
    assert!(VeSchedule { sigma_min: 1.0, sigma_max: 0.5 }.validate().is_err());
}

#[test]
fn edm_eps_denoiser_round_trip_and_optimal_gaussian_denoiser() {
    // For 1-D-per-coordinate Gaussian data N(0, σ_d²), the ideal EDM denoiser is
    // D(x_σ) = x_σ·σ_d²/(σ²+σ_d²) (STYLE.md practice 13). Turned into ε̂ by math.md §1.4(b) it
    // must equal the analytic VP ε-predictor of gaussian.rs at α = −2 ln σ.
    let sd = 0.5;
    let data = GaussianData::new(vec![0.0; 3], vec![sd * sd; 3]).unwrap();
    let z = [0.4, -1.3, 2.2];
    for &alpha in &[-8.0, -2.0, 0.0, 2.4, 9.0] {
        let sigma = sigma_of_alpha(alpha);
        let mut xs = [0.0; 3];
        x_sigma_from_z(&mut xs, &z, alpha);
        // x_σ = z·sqrt(1+σ²).
        let scale = (1.0 + sigma * sigma).sqrt();
        assert_close("x_sigma", &xs, &z.map(|v| v * scale), F64_FUNC);
        let d: Vec<f64> = xs.iter().map(|x| x * sd * sd / (sigma * sigma + sd * sd)).collect();
        let mut eps = [0.0; 3];
        eps_from_denoised(&mut eps, &xs, &d, sigma);
        let mut eps_vp = [0.0; 3];
        data.eps_hat(&z, alpha, &mut eps_vp);
        assert_close("eps from optimal D", &eps, &eps_vp, Tol { atol: 1e-12, rtol: 1e-10 });
        let mut back = [0.0; 3];
        denoised_from_eps(&mut back, &xs, &eps, sigma);
        assert_close("D round trip", &back, &d, Tol { atol: 1e-12, rtol: 1e-10 });
    }
}

#[test]
fn edm_preconditioning_and_eps_weight() {
    let p = EdmPrecond::default();
    for &alpha in &[-6.0, 0.0, 2.4, 8.0] {
        let s = sigma_of_alpha(alpha);
        // λ(σ)·σ² = 1 + 4e^{−α} for σ_d = 0.5 (math.md §4.3).
        assert_close("eps weight", &[p.eps_weight(alpha)], &[p.loss_weight(s) * s * s], F64_FUNC);
        assert_close("1+4e^-a", &[p.eps_weight(alpha)], &[1.0 + 4.0 * (-alpha).exp()], F64_FUNC);
        // Karras et al. Table 1 in terms of c_in = 1/sqrt(σ²+σ_d²): c_in²(σ²+σ_d²) = 1,
        // c_skip = σ_d²·c_in², c_out = σσ_d·c_in, c_noise = ¼ ln σ = −α/8.
        assert_close("c_in", &[p.c_in(s).powi(2) * (s * s + 0.25)], &[1.0], F64_FUNC);
        assert_close("c_skip", &[p.c_skip(s)], &[0.25 * p.c_in(s).powi(2)], F64_FUNC);
        assert_close("c_out", &[p.c_out(s)], &[s * 0.5 * p.c_in(s)], F64_FUNC);
        assert_close("c_noise", &[p.c_noise(s)], &[-alpha / 8.0], F64_FUNC);
    }
    // The VP data coefficient relation used by x_sigma_from_z: 1/sqrt(s(α)) = sqrt(1+σ²).
    let a = 1.7;
    assert_close("1/sqrt(s)", &[1.0 / sqrt_sigmoid(a)], &[(1.0 + sigma_of_alpha(a).powi(2)).sqrt()], F64_FUNC);
}
