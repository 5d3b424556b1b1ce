//! Unit tests of the log-SNR constants (math.md §1.1, §2.3, §9 pitfall 1), the host RNG and the
//! truncated logistic sampler with importance weights (math.md §1.5). CPU, f64.

use crate::common::gaussian::mean_std;

use cdl::diffusion::logistic::TruncLogistic;
use cdl::diffusion::logsnr::{
    alpha_prime, log_sigmoid, logit, q_scale, shifted_level, sigmoid, softplus, sqrt_sigmoid, vp_coefs, x_hat,
};
use cdl::diffusion::rng::HostRng;
use cdl::reference::tol::{assert_close, Tol};

/// f64 round-off on O(1)–O(30) values computed through a handful of exp/ln calls.
const F64_FUNC: Tol = Tol { atol: 1e-14, rtol: 1e-13 };

// ---------------------------------------------------------------------------------------------
// Scalar functions

#[test]
fn sigmoid_softplus_extremes_are_finite_and_exact() {
    // softplus(u) = u + ln(1+e^{-u}) for large u; e^u for very negative u.
    assert_eq!(softplus(1000.0), 1000.0);
    assert_eq!(softplus(-1000.0), 0.0);
    assert_close("softplus(-50)", &[softplus(-50.0)], &[(-50.0f64).exp()], F64_FUNC);
    assert_close("softplus(0)", &[softplus(0.0)], &[2f64.ln()], F64_FUNC);
    assert_eq!(log_sigmoid(-800.0), -800.0);
    assert_close("log_sigmoid(40)", &[log_sigmoid(40.0)], &[-(-40.0f64).exp()], F64_FUNC);
    assert_eq!(sigmoid(-1000.0), 0.0);
    assert_eq!(sigmoid(1000.0), 1.0);
    assert_close("logit(sigmoid(3.7))", &[logit(sigmoid(3.7))], &[3.7], F64_FUNC);
}

#[test]
fn vp_coefficients_keep_relative_accuracy_at_large_alpha() {
    // a² + b² = 1 (variance preserving); b = sqrt(s(−α)) ≈ e^{−α/2} must keep all its digits at
    // α = 40, where sqrt(1 − a²) would return 0.
    for &alpha in &[-30.0, -5.0, 0.0, 2.5, 16.6, 40.0] {
        let c = vp_coefs(alpha);
        assert_close("a²+b²", &[c.a * c.a + c.b * c.b], &[1.0], F64_FUNC);
    }
    let c = vp_coefs(40.0);
    let expected_b = (-20.0f64).exp() / (1.0 + (-40.0f64).exp()).sqrt();
    assert_close("b(40)", &[c.b], &[expected_b], F64_FUNC);
    assert_close("sqrt_sigmoid(-40)", &[sqrt_sigmoid(-40.0)], &[expected_b], F64_FUNC);
}

#[test]
fn x_hat_inverts_the_channel() {
    // With the true ε as ε̂, x̂ = (z − b ε)/a must return x (math.md §1.1).
    let x = [0.3, -1.2, 2.0];
    let eps = [1.1, 0.4, -0.7];
    for &alpha in &[-6.0, 0.0, 9.0] {
        let c = vp_coefs(alpha);
        let z: Vec<f64> = x.iter().zip(&eps).map(|(x, e)| c.a * x + c.b * e).collect();
        let mut out = [0.0; 3];
        x_hat(&mut out, &z, &eps, alpha);
        // Dividing by a = sqrt(s(α)) amplifies rounding by 1/a ≈ 20 at α = −6.
        assert_close("x_hat", &out, &x, Tol { atol: 1e-12, rtol: 1e-12 });
    }
}

// ---------------------------------------------------------------------------------------------
// α′ and c (math.md §2.3, §9 pitfall 1)

#[test]
fn alpha_prime_and_c_match_high_precision_values() {
    // 50-digit values from Python `decimal`, rounded to 16 significant digits: α′ = −ln(e^{−α} + e^{−ζ} + e^{−α−ζ}),
    // c = exp(½(ln s(−α) − ln s(−α′))).
    let cases = [
        // (α, ζ, α′, c)
        (30.0, 15.0, 14.999999694097633, 5.530843701478077e-4),
        (16.0, 6.0, 5.999954488570724, 6.746139165997761e-3),
        (-8.0, 15.0, -8.000000306004892, 0.9999999999486906),
    ];
    for (alpha, zeta, ap, c) in cases {
        let sl = shifted_level(alpha, zeta);
        assert_close("alpha'", &[sl.alpha_prime], &[ap], F64_FUNC);
        assert_close("c", &[sl.c], &[c], F64_FUNC);
    }
    // The code's logit(s(α)·s(ζ)) in f32 is infinite at α = 30; ours is finite up to α = 700.
    let sl = shifted_level(700.0, 15.0);
    assert!(sl.alpha_prime.is_finite() && sl.c.is_finite() && sl.c > 0.0);
}

#[test]
fn alpha_prime_properties() {
    // α′ < min(α, ζ); ζ → ∞ gives α′ = α and c = 1; c ∈ (0, 1]; c² = s(−α)/s(−α′).
    for &alpha in &[-10.0, -1.0, 0.0, 4.0, 12.0, 20.0] {
        for &zeta in &[-3.0, 0.0, 6.0, 10.5, 15.0] {
            let ap = alpha_prime(alpha, zeta);
            assert!(ap < alpha.min(zeta), "alpha'({alpha},{zeta}) = {ap}");
            let c = q_scale(alpha, ap);
            assert!(c > 0.0 && c <= 1.0);
            // Moderate values: the naive formulas are accurate here and serve as the oracle.
            let naive_ap = logit(sigmoid(alpha) * sigmoid(zeta));
            let naive_c = (sigmoid(-alpha) / sigmoid(-naive_ap)).sqrt();
            // logit of a product near 1 loses ~e^{|α|} ulps: 1e-8 covers α = 20.
            let tol = Tol { atol: 1e-8, rtol: 1e-8 };
            assert_close("alpha' vs naive", &[ap], &[naive_ap], tol);
            assert_close("c vs naive", &[c], &[naive_c], tol);
        }
    }
    assert_eq!(alpha_prime(3.0, f64::INFINITY), 3.0);
    assert_eq!(q_scale(3.0, 3.0), 1.0);
}

// ---------------------------------------------------------------------------------------------
// Host RNG

#[test]
fn host_rng_is_a_pure_function_of_seed_words_index() {
    let a = HostRng::new(7, [1, 2, 3]);
    let mut b = HostRng::new(7, [1, 2, 3]);
    for i in 0..10 {
        assert_eq!(a.uniform_at(i), b.next_uniform());
    }
    for i in 0..10 {
        assert_eq!(a.normal_at(i), b.next_normal());
    }
    let c = HostRng::new(7, [1, 2, 4]);
    assert_ne!(a.uniform_at(0), c.uniform_at(0));
    assert_ne!(a.uniform_at(0), HostRng::new(8, [1, 2, 3]).uniform_at(0));
}

#[test]
fn host_rng_moments() {
    // N = 200k draws: SE of a U(0,1) mean is 0.289/sqrt(N) = 6.5e-4, of a normal mean 2.2e-3,
    // of a normal variance sqrt(2/N) = 3.2e-3. Bounds are 5 SE.
    let mut r = HostRng::new(11, [0, 0, 0]);
    let n = 200_000;
    let u: Vec<f64> = (0..n).map(|_| r.next_uniform()).collect();
    let z: Vec<f64> = (0..n).map(|_| r.next_normal()).collect();
    assert!(u.iter().all(|&v| v > 0.0 && v < 1.0));
    let (mu, _) = mean_std(&u);
    assert!((mu - 0.5).abs() < 5.0 * 6.5e-4, "uniform mean {mu}");
    let (mz, sz) = mean_std(&z);
    assert!(mz.abs() < 5.0 * 2.3e-3, "normal mean {mz}");
    assert!((sz * sz - 1.0).abs() < 5.0 * 3.2e-3, "normal var {}", sz * sz);
    // Uniforms and normals of one stream are independent: correlation within 5/sqrt(N).
    let cov = u.iter().zip(&z).map(|(a, b)| (a - mu) * (b - mz)).sum::<f64>() / n as f64;
    let corr = cov / (0.2887 * sz);
    assert!(corr.abs() < 5.0 / (n as f64).sqrt(), "uniform/normal correlation {corr}");
}

// ---------------------------------------------------------------------------------------------
// Truncated logistic (math.md §1.5)

#[test]
fn truncated_logistic_weight_integrates_f_equal_one_to_2cs() {
    // E_q[w·1] = ∫_{μ−cs}^{μ+cs} dα = 2cs. Deterministic check by the midpoint rule in u (the
    // change of variables α(u) is exact), then a Monte-Carlo check within 4 standard errors.
    let q = TruncLogistic::new(4.0, 4.0, 3.0).unwrap();
    let n = 200_000;
    let mid: f64 = (0..n).map(|i| q.sample((i as f64 + 0.5) / n as f64).1).sum::<f64>() / n as f64;
    // Midpoint error O(n^-2·w'') with w up to s·e^c/4 ≈ 20: far below 1e-6.
    assert_close("midpoint E_q[w]", &[mid], &[2.0 * 3.0 * 4.0], Tol { atol: 1e-6, rtol: 0.0 });
    let mut r = HostRng::new(3, [0, 0, 0]);
    let w: Vec<f64> = (0..n).map(|_| q.sample(r.next_uniform()).1).collect();
    let (m, s) = mean_std(&w);
    let se = s / (n as f64).sqrt();
    assert!((m - 24.0).abs() < 4.0 * se, "MC E_q[w] = {m} ± {se}");
    // math.md's CIFAR numbers: α ∈ [−8, 16], w ∈ [14.5, 80.2] (§1.5 table). The closed form
    // s·tanh(c/2)/(s(c)s(−c)) = 80.143 at the edge: math.md's 80.2 is 0.07% high, so the edge is
    // checked against the formula written out here, and against the spec to 0.1.
    let (lo, hi) = q.range();
    assert_eq!((lo, hi), (-8.0, 16.0));
    assert_close("w(mu)", &[q.weight(4.0)], &[4.0 * 1.5f64.tanh() * 4.0], F64_FUNC);
    assert_close("w(mu) spec", &[q.weight(4.0)], &[14.5], Tol { atol: 0.05, rtol: 0.0 });
    let edge = 4.0 * 1.5f64.tanh() / (sigmoid(3.0) * sigmoid(-3.0));
    assert_close("w(edge)", &[q.weight(16.0), q.weight(-8.0)], &[edge, edge], F64_FUNC);
    assert_close("w(edge) spec", &[q.weight(16.0)], &[80.2], Tol { atol: 0.1, rtol: 0.0 });
}

#[test]
fn truncated_logistic_weight_integrates_a_polynomial() {
    // f(α) = α³ − 2α + 1 on [μ−cs, μ+cs] = [−7.5, 11.1] for (μ, s, c) = (1.8, 2.325, 4).
    let q = TruncLogistic::new(1.8, 2.325, 4.0).unwrap();
    let f = |a: f64| a * a * a - 2.0 * a + 1.0;
    let prim = |a: f64| a.powi(4) / 4.0 - a * a + a;
    let (lo, hi) = q.range();
    let exact = prim(hi) - prim(lo);
    let n = 400_000;
    let mid: f64 = (0..n)
        .map(|i| {
            let (a, w) = q.sample((i as f64 + 0.5) / n as f64);
            w * f(a)
        })
        .sum::<f64>()
        / n as f64;
    // Midpoint rule in u on a smooth integrand of size ~1e4: relative error ≪ 1e-7.
    assert_close("E_q[w f]", &[mid], &[exact], Tol { atol: 0.0, rtol: 1e-7 });
}

#[test]
fn truncated_logistic_samples_stay_in_range_and_density_inverts_weight() {
    let q = TruncLogistic::CDL_ZETA_CIFAR;
    let (lo, hi) = q.range();
    assert_eq!((lo, hi), (6.0, 15.0));
    let mut r = HostRng::new(5, [0, 0, 0]);
    for _ in 0..10_000 {
        let (a, w) = q.sample(r.next_uniform());
        assert!((lo..=hi).contains(&a));
        assert_close("q·w", &[q.density(a) * w], &[1.0], F64_FUNC);
    }
    assert_eq!(q.density(hi + 0.1), 0.0);
}

#[test]
fn mu_and_s_from_variances_use_3_over_pi_and_unbiased_variance() {
    // ln λ = (0, 2, 4): mean 2, unbiased variance 4 → μ = −2, s = sqrt(1 + (3/π)·4).
    let e = std::f64::consts::E;
    let q = TruncLogistic::from_variances(&[1.0, e * e, e.powi(4)], 4.0).unwrap();
    assert_close("mu", &[q.mu], &[-2.0], F64_FUNC);
    assert_close("s", &[q.s], &[(1.0 + 12.0 / std::f64::consts::PI).sqrt()], F64_FUNC);
    let toy = TruncLogistic::cdl_toy(&[1.0, e * e]).unwrap();
    assert_eq!((toy.s, toy.c), (3.0, 3.0));
    assert_close("toy mu", &[toy.mu], &[-1.0], F64_FUNC);
}

#[test]
fn truncated_logistic_rejects_bad_config() {
    assert!(TruncLogistic::new(0.0, 0.0, 3.0).is_err());
    assert!(TruncLogistic::new(0.0, 1.0, -1.0).is_err());
    assert!(TruncLogistic::new(f64::NAN, 1.0, 1.0).is_err());
    assert!(TruncLogistic::from_variances(&[1.0], 3.0).is_err());
    assert!(TruncLogistic::from_variances(&[1.0, -1.0], 3.0).is_err());
    let msg = TruncLogistic::new(0.0, 0.0, 3.0).unwrap_err().to_string();
    assert!(!msg.contains('\n') && msg.contains("scale"), "{msg}");
}
