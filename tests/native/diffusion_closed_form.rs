//! The likelihood and CDL estimators against closed forms (ARCHITECTURE.md correctness ladder,
//! step 5): for Gaussian data the optimal ε-predictor is linear (gaussian.rs), so −log p(x),
//! −log p_ζ(y) and the CDL logit f = log p(y) − log p_ζ(y) are known exactly (math.md §2, §3.2).
//!
//! Setup shared by the tests (our own 2-D example; the authors' 2-D Gaussian behind 2.72163 /
//! 2.73814 / f = 0.0165 is not given and could not be reconstructed from those numbers):
//! data N((0.3, −0.2), diag(1.6, 0.5)), point x = (0.9, −0.7), ζ = 2, integration q = the CDL
//! toy setting (μ = −mean ln v, s = 3, c = 3), reference Gaussian λ = data variances.
//!
//! Monte-Carlo assertions use R independent repetitions (disjoint Philox streams), the sample
//! std σ̂ and the standard error σ̂/sqrt(R); "within 4 SE" fails by chance with p ≈ 6e-5.

use crate::common::gaussian::{assert_paired_far_below_independent, data, draws, mean_std, problem};

use cdl::diffusion::likelihood::{
    bits_per_dim, cdl_logit_mc, clamped_nll, discrete_bpd, nll_mc, nll_quadrature, simpson, test_nll, Denoiser, Draws,
    RefGaussian, ZetaDenoiser, BIN_8BIT,
};
use cdl::diffusion::rng::HostRng;
use cdl::reference::tol::{assert_close, Tol};

const X: [f64; 2] = [0.9, -0.7];
const ZETA: f64 = 2.0;
/// Integration points per estimate: the CIFAR CDL setting M = 64 (math.md §2.2, §3.2 table).
const M: usize = 64;
/// Simpson quadrature of a smooth integrand decaying like e^{−|α|}: [−60, 60] leaves e^{−55}
/// of tail, 24,000 intervals (h = 0.005) leave O(h^4) ≈ 1e-10 of discretisation error.
const QUAD: (f64, f64, usize) = (-60.0, 60.0, 24_000);
/// Quadrature against closed form: both exact to ~1e-10 (see QUAD); 1e-8 leaves margin.
const QUAD_TOL: Tol = Tol { atol: 1e-8, rtol: 0.0 };

/// R repetitions of an estimator, repetition r on stream (seed, [r, tag, 0]).
fn repeat<F: FnMut(&mut HostRng) -> f64>(r_n: u32, seed: u64, tag: u32, mut f: F) -> Vec<f64> {
    (0..r_n).map(|r| f(&mut HostRng::new(seed, [r, tag, 0]))).collect()
}

/// R estimates of the CDL logit at (X, ZETA) with M draws each, paired (Philox seed `seed`) and
/// independent (seed `seed + 1`).
fn logit_estimates(r_n: u32, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let (g, r, q) = problem();
    let paired = repeat(r_n, seed, 0, |rng| cdl_logit_mc(&g, &X, ZETA, &q, M, Draws::Paired, rng).unwrap());
    let indep = repeat(r_n, seed + 1, 0, |rng| cdl_logit_mc(&g, &X, ZETA, &q, M, Draws::Independent(&r), rng).unwrap());
    (paired, indep)
}

// ---------------------------------------------------------------------------------------------
// (★) by quadrature (math.md §2.1)

#[test]
fn quadrature_of_itd_identity_gives_exact_log_density_for_any_reference() {
    // (★) is exact pointwise and its value does not depend on λ (math.md §2.1 [D]).
    let g = data();
    let exact = -g.log_density(&X);
    let refs = [
        RefGaussian::from_variances(&g.var).unwrap(),
        RefGaussian::standard(2),
        RefGaussian::from_variances(&[7.0, 0.02]).unwrap(),
    ];
    for r in &refs {
        let q = nll_quadrature(|a| g.expected_err(&X, a), r, QUAD.0, QUAD.1, QUAD.2);
        assert_close("-log p(x) by quadrature", &[q], &[exact], QUAD_TOL);
    }
}

#[test]
fn quadrature_averaged_over_data_gives_the_entropy() {
    // Averaging (★) over x ~ p turns mse*(x, α) into the Gaussian's mmse(α) = Σ γv/(1+γv); with the
    // N(0, I) reference the gap no longer vanishes, and h_G + ½∫gap must equal ½Σ ln(2πe v_i)
    // (the check the brief asks for when the authors' 2.72163 setup is unknown; 1e-5 requested).
    let g = data();
    let r = RefGaussian::standard(2);
    let mmse = |a: f64| -> f64 {
        let gam = a.exp();
        g.var.iter().map(|v| gam * v / (1.0 + gam * v)).sum()
    };
    let h = nll_quadrature(mmse, &r, QUAD.0, QUAD.1, QUAD.2);
    assert_close("entropy by quadrature", &[h], &[g.entropy()], QUAD_TOL);
}

#[test]
fn zeta_denoiser_is_the_optimal_denoiser_of_p_zeta() {
    // math.md §2.3: c(α,ζ)·ε̂(z, α′) must equal the optimal predictor of p_ζ = N(a_ζ m, a_ζ² v + b_ζ²),
    // including at α = 25, ζ = 15 where the naive f32 formulas break (§9 pitfall 1).
    let g = data();
    let z = [0.4, -1.1];
    for &(alpha, zeta) in &[(-8.0, 6.0), (0.0, 2.0), (4.0, 10.5), (16.0, 15.0), (25.0, 15.0)] {
        let zd = ZetaDenoiser { inner: &g, zeta };
        let (mut a, mut b) = ([0.0; 2], [0.0; 2]);
        zd.eps_hat(&z, alpha, &mut a);
        g.noisy(zeta).eps_hat(&z, alpha, &mut b);
        // Two algebraically equal f64 evaluations of a rational function: ~1e-15 relative.
        assert_close("eps_hat_zeta", &a, &b, Tol { atol: 1e-14, rtol: 1e-12 });
    }
    // And (★) with the ζ-denoiser's expected error gives −log p_ζ(y) (the §2.3 analog of 2.73814).
    let r = RefGaussian::from_variances(&g.var).unwrap();
    let q = nll_quadrature(|a| g.expected_err_zeta(&X, a, ZETA), &r, QUAD.0, QUAD.1, QUAD.2);
    assert_close("-log p_zeta by quadrature", &[q], &[-g.log_density_zeta(&X, ZETA)], QUAD_TOL);
}

#[test]
fn expected_error_formula_matches_monte_carlo() {
    // The closed-form E_ε||ε − ε̂*||² against 200k draws through the Denoiser trait, at 3 levels.
    // Per-draw error has std < 3 here, so SE < 3/sqrt(2e5) = 6.7e-3; bound 4 SE = 0.027.
    let g = data();
    for (i, &alpha) in [-3.0f64, 0.5, 6.0].iter().enumerate() {
        let mut rng = HostRng::new(9, [i as u32, 0, 0]);
        let (ca, cb) = ((1.0 / (1.0 + (-alpha).exp())).sqrt(), (1.0 / (1.0 + alpha.exp())).sqrt());
        let n = 200_000;
        let mut errs = Vec::with_capacity(n);
        let mut out = [0.0; 2];
        for _ in 0..n {
            let e = [rng.next_normal(), rng.next_normal()];
            let z = [ca * X[0] + cb * e[0], ca * X[1] + cb * e[1]];
            g.eps_hat(&z, alpha, &mut out);
            errs.push((e[0] - out[0]).powi(2) + (e[1] - out[1]).powi(2));
        }
        let (m, s) = mean_std(&errs);
        let se = s / (n as f64).sqrt();
        let exact = g.expected_err(&X, alpha);
        assert!((m - exact).abs() < 4.0 * se, "alpha {alpha}: MC {m} vs {exact} (SE {se})");
    }
}

// ---------------------------------------------------------------------------------------------
// (a) ITD Monte-Carlo estimate of −log p(x) (math.md §2.2)

#[test]
fn itd_mc_estimate_matches_exact_log_density() {
    let (g, r, q) = problem();
    let exact = -g.log_density(&X);
    // The estimator's own expectation is (★) truncated to the q support; its truncation bias must
    // be far below the MC error for the comparison with the exact value to be meaningful.
    let (lo, hi) = q.range();
    let truncated = nll_quadrature(|a| g.expected_err(&X, a), &r, lo, hi, 20_000);
    let bias = truncated - exact;
    let r_n = 1000;
    let est = repeat(r_n, 1, 0, |rng| nll_mc(&g, &X, &q, &r, M, rng).unwrap());
    let (m, s) = mean_std(&est);
    let se = s / (r_n as f64).sqrt();
    println!(
        "ITD -log p: exact {exact:.5}, truncated {truncated:.5} (bias {bias:.2e}), \
         MC mean {m:.5}, std per estimate {s:.4} (M = {M}), SE {se:.4}"
    );
    assert!(bias.abs() < 0.1 * se, "truncation bias {bias} vs SE {se}");
    assert!((m - exact).abs() < 4.0 * se, "MC {m} vs exact {exact} (SE {se})");
    // The estimator must actually be noisy at M = 64 (math.md §2.2: ≈1.1 nats on their example):
    // a zero or tiny std would mean the draws are not being used.
    assert!(s > 0.3 && s < 5.0, "std per estimate {s}");
}

// ---------------------------------------------------------------------------------------------
// (b) CDL logit f = log p(y) − log p_ζ(y) (math.md §3.2)

#[test]
fn cdl_logit_matches_exact_log_ratio() {
    let g = data();
    let exact = g.logit(&X, ZETA);
    // Quadrature of ½∫(E_q − E_p) over all α reproduces f exactly.
    let fq = 0.5 * simpson(|a| g.expected_err_zeta(&X, a, ZETA) - g.expected_err(&X, a), QUAD.0, QUAD.1, QUAD.2);
    assert_close("f by quadrature", &[fq], &[exact], QUAD_TOL);
    let r_n = 1000;
    let (paired, indep) = logit_estimates(r_n, 2);
    for (name, v) in [("paired", &paired), ("independent", &indep)] {
        let (m, s) = mean_std(v);
        let se = s / (r_n as f64).sqrt();
        println!("CDL f {name}: exact {exact:.5}, MC mean {m:.5}, std {s:.4}, SE {se:.5}");
        assert!((m - exact).abs() < 4.0 * se, "{name}: MC {m} vs exact {exact} (SE {se})");
    }
    // The logit is a small positive number here (x is in-distribution): catch a sign flip.
    assert!(exact > 0.02 && exact < 0.05, "exact f = {exact}");
}

// ---------------------------------------------------------------------------------------------
// (c) Paired draws have far lower variance (math.md §3.2 table: 0.022 vs 1.60 nats at M = 64)

#[test]
fn paired_draws_have_far_lower_variance_than_independent() {
    let (paired, indep) = logit_estimates(2000, 4);
    let (_, sp) = mean_std(&paired);
    let (_, si) = mean_std(&indep);
    println!("std of f at M = {M}: paired {sp:.4}, independent {si:.4}, ratio {:.1}", si / sp);
    assert_paired_far_below_independent(sp, si);
}

// ---------------------------------------------------------------------------------------------
// Test-set protocol and bits/dim (math.md §2.2, §9 pitfall 10)

#[test]
fn test_protocol_clamps_after_averaging() {
    // Hand-made table: gaps (mse − mmse_G) = (−1, +2) at two levels with weights (3, 5):
    // NLL = h_G + (1/4)·(3·(−1) + 5·0).
    let r = RefGaussian::standard(2);
    let alpha = [0.0, 1.0];
    let mse = [r.mmse_g(0.0) - 1.0, r.mmse_g(1.0) + 2.0];
    let nll = clamped_nll(&alpha, &[3.0, 5.0], &mse, &r).unwrap();
    assert_close("clamped", &[nll], &[r.h_g() - 0.75], Tol { atol: 1e-14, rtol: 0.0 });
    assert!(clamped_nll(&alpha, &[1.0], &mse, &r).is_err());
}

#[test]
fn test_protocol_on_a_useless_denoiser_returns_the_reference_entropy() {
    // ε̂ = (1, 1) has mean mse = E||ε − 1||² = 2d = 4 (± 0.15 over 400 examples) while
    // mmse_G(α) < d = 2 at every α, so every clamped gap is 0 and the protocol returns exactly
    // h_G: one can always switch to the Gaussian denoiser (math.md §2.2).
    struct Ones;
    impl Denoiser for Ones {
        fn dim(&self) -> usize {
            2
        }
        fn eps_hat(&self, _z: &[f64], _alpha: f64, out: &mut [f64]) {
            out.fill(1.0);
        }
    }
    let (g, r, q) = problem();
    let xs = draws(&g, 400, 20);
    let res = test_nll(&Ones, &xs, &q, &r, 200, &mut HostRng::new(21, [0, 0, 0])).unwrap();
    assert_eq!(res.nats, r.h_g());
    assert!(res.nats_unclamped > res.nats);
    assert!(res.alpha.windows(2).all(|w| w[0] <= w[1]), "alpha points sorted");
}

#[test]
fn test_protocol_with_optimal_denoiser_estimates_the_sample_nll() {
    // With the optimal denoiser the unclamped protocol is unbiased for the average −log p over
    // the test set (same α grid for every example); the clamp can only lower it.
    let (g, r, q) = problem();
    let xs = draws(&g, 100, 30);
    let exact: f64 = xs.chunks(2).map(|x| -g.log_density(x)).sum::<f64>() / 100.0;
    let r_n = 40;
    let mut est = Vec::new();
    for rep in 0..r_n {
        let res = test_nll(&g, &xs, &q, &r, 100, &mut HostRng::new(31, [rep, 0, 0])).unwrap();
        assert!(res.nats <= res.nats_unclamped);
        est.push(res.nats_unclamped);
    }
    let (m, s) = mean_std(&est);
    let se = s / (r_n as f64).sqrt();
    println!("test protocol: sample NLL {exact:.5}, estimate {m:.5} ± {se:.5}");
    assert!((m - exact).abs() < 4.0 * se, "protocol {m} vs exact {exact} (SE {se})");
}

#[test]
fn bits_per_dim_conversions() {
    // bpd = nats/(d ln 2); discrete-limit = bpd − log2(2/255) = bpd + 6.994 (math.md §2.2).
    let d = 3072;
    let nats = -8400.0;
    assert_close(
        "bpd",
        &[bits_per_dim(nats, d)],
        &[nats / (3072.0 * std::f64::consts::LN_2)],
        Tol { atol: 1e-15, rtol: 1e-15 },
    );
    // math.md §2.2: simplified ITD −8400 nats is −3.94 bpd.
    assert_close("bpd spec", &[bits_per_dim(nats, d)], &[-3.94], Tol { atol: 0.005, rtol: 0.0 });
    assert_close(
        "discrete",
        &[discrete_bpd(-4.09, BIN_8BIT)],
        &[-4.09 + 127.5f64.log2()],
        Tol { atol: 1e-14, rtol: 0.0 },
    );
    assert_close("6.994", &[discrete_bpd(0.0, BIN_8BIT)], &[6.994], Tol { atol: 5e-4, rtol: 0.0 });
}
