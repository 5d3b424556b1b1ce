//! `eval::mmd` and `eval::swd`: the math.md §5.1 MMD estimator against a literal brute-force copy of
//! the formula and against the Gaussian closed form, and the sliced Wasserstein distance against
//! exact 1-D W2 and brute-force quantile integrals. Statistical checks state their tolerance as a
//! number of standard errors, estimated from repeats or derived in the test.

use std::f64::consts::TAU;

use cdl::diffusion::rng::HostRng;
use cdl::eval::mmd::{kernel, mmd, mmd_f32, MMD_BANDWIDTH};
use cdl::eval::swd::{directions, sliced_wasserstein, sliced_wasserstein_f32, wasserstein2_sq_1d, SWD_DIRECTIONS};
use cdl::eval::EvalError;

// ---------------------------------------------------------------------------------------------
// Helpers

/// n points of N(mean, s²·I_d), row-major (n, d), from stream `[stream, 0x7e57, 0]` of `seed`.
fn gauss(n: usize, mean: &[f64], s: f64, seed: u64, stream: u32) -> Vec<f64> {
    let d = mean.len();
    let mut rng = HostRng::new(seed, [stream, 0x7e57, 0]);
    let mut out = vec![0.0; n * d];
    for (i, v) in out.iter_mut().enumerate() {
        *v = mean[i % d] + s * rng.next_normal();
    }
    out
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// E k(x, y) for x − y ~ N(δ, σ²·I_d): the Gaussian convolution
/// (2πh)^(−1/2)·(h/(h + σ²))^(d/2)·exp(−‖δ‖²/(2(h + σ²))).
fn expected_kernel(delta: &[f64], var: f64, h: f64) -> f64 {
    let d = delta.len() as f64;
    let dd: f64 = delta.iter().map(|v| v * v).sum();
    (h / (h + var)).powf(0.5 * d) * (-dd / (2.0 * (h + var))).exp() / (TAU * h).sqrt()
}

/// The math.md §5.1 estimator written out literally: mean over i<j of k(y_i,y_j) + mean_i[(Σ_j
/// k(x_i,x_j) − k(x_i,x_i))/(n−1)] − 2·mean k(x_i,y_j), with k from the formula (not `kernel`).
fn brute_force_mmd(x: &[f64], y: &[f64], d: usize, h: f64) -> f64 {
    let k = |a: &[f64], b: &[f64]| {
        let s: f64 = a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum();
        (-s / (2.0 * h)).exp() / (2.0 * std::f64::consts::PI * h).sqrt()
    };
    let xs: Vec<&[f64]> = x.chunks(d).collect();
    let ys: Vec<&[f64]> = y.chunks(d).collect();
    let (n, m) = (xs.len(), ys.len());
    let mut yy = Vec::new();
    for i in 0..m {
        for j in i + 1..m {
            yy.push(k(ys[i], ys[j]));
        }
    }
    let term_y = yy.iter().sum::<f64>() / yy.len() as f64;
    let term_x =
        (0..n).map(|i| ((0..n).map(|j| k(xs[i], xs[j])).sum::<f64>() - k(xs[i], xs[i])) / (n - 1) as f64).sum::<f64>()
            / n as f64;
    let mut xy = 0.0;
    for a in &xs {
        for b in &ys {
            xy += k(a, b);
        }
    }
    term_y + term_x - 2.0 * xy / (n * m) as f64
}

/// Exact W2² between 1-D empirical distributions by brute force: on the grid of N = lcm(n, m)
/// equal pieces of (0, 1], piece k has quantiles a[⌊k·n/N⌋] and b[⌊k·m/N⌋].
fn brute_force_w2_sq(a: &[f64], b: &[f64]) -> f64 {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len(), b.len());
    let gcd = |mut p: usize, mut q: usize| {
        while q != 0 {
            (p, q) = (q, p % q);
        }
        p
    };
    let big_n = n / gcd(n, m) * m;
    (0..big_n).map(|k| (a[k * n / big_n] - b[k * m / big_n]).powi(2)).sum::<f64>() / big_n as f64
}

fn project(x: &[f64], theta: &[f64]) -> Vec<f64> {
    x.chunks(theta.len()).map(|p| p.iter().zip(theta).map(|(a, b)| a * b).sum()).collect()
}

// ---------------------------------------------------------------------------------------------
// MMD

#[test]
fn mmd_matches_brute_force_spec_formula() {
    // Tolerance 1e-12 absolute: both sides sum the same O(1) terms in f64 in different orders
    // (rounding ~1e-16 per term, 35 + 21 + 10 terms).
    let (d, h) = (3, MMD_BANDWIDTH);
    // Scaled so that distances are comparable to sqrt(h) and no kernel value underflows.
    let x: Vec<f64> = gauss(5, &[0.0; 3], 0.15, 1, 0);
    let y: Vec<f64> = gauss(7, &[0.05, 0.0, -0.05], 0.2, 1, 1);
    let got = mmd(&x, &y, d, h).unwrap();
    let want = brute_force_mmd(&x, &y, d, h);
    println!("tiny MMD: {got:.15} vs brute force {want:.15}");
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    assert!(want.abs() > 1e-3, "test set too spread out to exercise the kernel: {want}");
    // Another bandwidth and 1-D, including n = m = 2 (the smallest allowed sets).
    for (x, y, d, h) in [
        (gauss(4, &[0.0; 2], 1.0, 2, 0), gauss(9, &[0.3, 0.1], 1.3, 2, 1), 2, 0.7),
        (gauss(2, &[0.0], 0.2, 3, 0), gauss(2, &[0.1], 0.2, 3, 1), 1, MMD_BANDWIDTH),
    ] {
        let (got, want) = (mmd(&x, &y, d, h).unwrap(), brute_force_mmd(&x, &y, d, h));
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
    // The f32 entry point is the f64 estimator on widened values.
    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let yf: Vec<f32> = y.iter().map(|&v| v as f32).collect();
    let widened = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
    assert_eq!(mmd_f32(&xf, &yf, d, h).unwrap(), mmd(&widened(&xf), &widened(&yf), d, h).unwrap());
    // `kernel` is math.md's k.
    let k = kernel(&[0.1, 0.2], &[0.3, -0.1], 0.03);
    let want = (-(0.04 + 0.09) / 0.06f64).exp() / (TAU * 0.03).sqrt();
    assert!((k - want).abs() < 1e-15, "{k} vs {want}");
}

#[test]
fn mmd_is_symmetric() {
    // Tolerance 1e-12 relative: swapping x and y only reorders the sums of the cross term.
    let x = gauss(300, &[0.0, 0.0], 0.5, 4, 0);
    let y = gauss(200, &[0.2, -0.1], 0.6, 4, 1);
    let (a, b) = (mmd(&x, &y, 2, MMD_BANDWIDTH).unwrap(), mmd(&y, &x, 2, MMD_BANDWIDTH).unwrap());
    println!("MMD(x, y) = {a:.6e}, MMD(y, x) = {b:.6e}");
    assert!((a - b).abs() <= 1e-12 * a.abs(), "{a} vs {b}");
}

#[test]
fn mmd_same_distribution_is_zero_within_noise() {
    // 16 repeats of two independent samples of 2000 points of N(0, I₂), h = 0.03 (math.md's
    // setting). The estimator is unbiased, so the mean over repeats must lie within 3 standard
    // errors (sd/sqrt(R)) of 0. A biased V-statistic (diagonal included) would be off by about
    // k(0)·(1/n + 1/m) = 2.3e-3, which is checked to be far outside that band.
    let (n, reps, d) = (2000, 16, 2);
    let est: Vec<f64> = (0..reps)
        .map(|r| {
            let x = gauss(n, &[0.0; 2], 1.0, 100 + r as u64, 0);
            let y = gauss(n, &[0.0; 2], 1.0, 100 + r as u64, 1);
            mmd(&x, &y, d, MMD_BANDWIDTH).unwrap()
        })
        .collect();
    let (mean, sd) = mean_sd(&est);
    let se = sd / (reps as f64).sqrt();
    let v_bias = 2.0 / n as f64 / (TAU * MMD_BANDWIDTH).sqrt();
    println!("same distribution: mean MMD {mean:.3e}, sd {sd:.3e}, se {se:.3e}, V-statistic bias {v_bias:.3e}");
    assert!(est.iter().any(|&e| e < 0.0), "an unbiased estimator of 0 must go negative sometimes: {est:?}");
    assert!(mean.abs() < 3.0 * se, "mean {mean} vs 3·se {}", 3.0 * se);
    assert!(v_bias > 10.0 * se, "the test could not tell a biased estimator apart: {v_bias} vs se {se}");
}

#[test]
fn mmd_estimator_mean_matches_gaussian_closed_form() {
    // x ~ N(μ₁, s₁² I₂), y ~ N(μ₂, s₂² I₂). With the Gaussian kernel,
    // MMD_pop = E k(x, x') + E k(y, y') − 2 E k(x, y) with x − x' ~ N(0, 2s₁²), y − y' ~ N(0, 2s₂²),
    // x − y ~ N(μ₁ − μ₂, s₁² + s₂²) (`expected_kernel`). The estimator is unbiased, so its mean
    // over R = 100 repeats must match within 4 standard errors (estimated from the repeats). The
    // V-statistic (diagonal terms kept) would be off by ≈ k(0)·(1/n + 1/m) = 1.0e-2, checked to be
    // more than 6 standard errors.
    let (mu1, s1, mu2, s2, h) = ([0.0, 0.0], 0.3, [0.2, 0.0], 0.4, MMD_BANDWIDTH);
    let delta = [mu1[0] - mu2[0], mu1[1] - mu2[1]];
    let pop = expected_kernel(&[0.0; 2], 2.0 * s1 * s1, h) + expected_kernel(&[0.0; 2], 2.0 * s2 * s2, h)
        - 2.0 * expected_kernel(&delta, s1 * s1 + s2 * s2, h);
    let (n, m, reps) = (400, 500, 100);
    let est: Vec<f64> = (0..reps)
        .map(|r| {
            let x = gauss(n, &mu1, s1, 200 + r as u64, 0);
            let y = gauss(m, &mu2, s2, 200 + r as u64, 1);
            mmd(&x, &y, 2, h).unwrap()
        })
        .collect();
    let (mean, sd) = mean_sd(&est);
    let se = sd / (reps as f64).sqrt();
    println!("closed form: population MMD {pop:.5e}, estimator mean {mean:.5e} ± {se:.2e} (sd {sd:.2e})");
    assert!(pop > 10.0 * se, "population MMD {pop} not resolved by se {se}");
    let v_bias = (1.0 / n as f64 + 1.0 / m as f64) / (TAU * h).sqrt();
    assert!(v_bias > 6.0 * se, "the test could not tell a biased estimator apart: {v_bias} vs se {se}");
    assert!((mean - pop).abs() < 4.0 * se, "mean {mean} vs population {pop} (se {se})");
}

#[test]
fn mmd_grows_with_mean_shift() {
    // One pair of samples, y shifted by growing amounts: the cross term falls monotonically in
    // expectation; population steps (closed form, `expected_kernel`) are 2.4e-3, 7.2e-3, 2.7e-2,
    // 8.2e-2. One estimate's noise at 1500 points is ~1e-3 (shift 0 measured −7.2e-4), and the
    // same samples at every shift make most of it cancel in the differences.
    let x = gauss(1500, &[0.0; 2], 0.5, 7, 0);
    let y0 = gauss(1500, &[0.0; 2], 0.5, 7, 1);
    let mut prev = f64::NEG_INFINITY;
    for shift in [0.0, 0.1, 0.2, 0.4, 0.8] {
        let y: Vec<f64> = y0.iter().enumerate().map(|(i, v)| if i % 2 == 0 { v + shift } else { *v }).collect();
        let e = mmd(&x, &y, 2, MMD_BANDWIDTH).unwrap();
        println!("shift {shift}: MMD {e:.4e}");
        assert!(e > prev, "MMD {e} at shift {shift} not above {prev}");
        prev = e;
    }
}

#[test]
fn mmd_rejects_bad_inputs() {
    let ok = [0.0, 0.0, 1.0, 1.0];
    let one_line = |e: EvalError| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        s
    };
    assert!(matches!(mmd(&ok, &[0.0, 0.0], 2, 0.03), Err(EvalError::TooFew { what: "y", n: 1, need: 2 })));
    assert!(matches!(mmd(&ok, &ok[..3], 2, 0.03), Err(EvalError::Shape(_))));
    assert!(matches!(mmd(&ok, &ok, 0, 0.03), Err(EvalError::Shape(_))));
    assert!(matches!(mmd(&ok, &ok, 2, 0.0), Err(EvalError::Invalid(_))));
    assert!(matches!(mmd(&ok, &ok, 2, f64::NAN), Err(EvalError::Invalid(_))));
    let e = mmd(&[0.0, f64::NAN, 1.0, 1.0], &ok, 2, 0.03).unwrap_err();
    assert!(matches!(e, EvalError::NonFinite { what: "x", index: 1, .. }));
    println!("{}", one_line(e));
    let e = mmd_f32(&[0.0, 0.0, f32::INFINITY, 1.0], &[0.0; 4], 2, 0.03).unwrap_err();
    assert!(matches!(e, EvalError::NonFinite { what: "x", index: 2, .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Sliced Wasserstein

#[test]
fn swd_is_zero_for_identical_sets() {
    // Exactly 0: the same projections, sorted, subtract to 0 whatever the order of the rows.
    let x = gauss(500, &[0.0; 3], 1.0, 8, 0);
    assert_eq!(sliced_wasserstein(&x, &x, 3, 64, 1).unwrap(), 0.0);
    let mut rows: Vec<&[f64]> = x.chunks(3).collect();
    rows.reverse();
    let permuted: Vec<f64> = rows.concat();
    assert_eq!(sliced_wasserstein(&x, &permuted, 3, 64, 1).unwrap(), 0.0);
    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    assert_eq!(sliced_wasserstein_f32(&xf, &xf, 3, 16, 1).unwrap(), 0.0);
}

#[test]
fn swd_1d_equals_exact_w2_of_sorted_values() {
    // In 1-D every direction is ±1 and W2 is sign-invariant, so SWD = sqrt(mean (a₍ᵢ₎ − b₍ᵢ₎)²)
    // over sorted values. Tolerance 1e-12 relative (summation order only).
    let a = gauss(1000, &[0.0], 1.0, 9, 0);
    let b = gauss(1000, &[0.5], 2.0, 9, 1);
    let (mut sa, mut sb) = (a.clone(), b.clone());
    sa.sort_by(f64::total_cmp);
    sb.sort_by(f64::total_cmp);
    let want = (sa.iter().zip(&sb).map(|(p, q)| (p - q).powi(2)).sum::<f64>() / 1000.0).sqrt();
    let got = sliced_wasserstein(&a, &b, 1, 7, 3).unwrap();
    println!("1-D SWD {got:.12} vs sorted W2 {want:.12}");
    assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
    assert!(directions(1, 32, 5).unwrap().iter().all(|&t| t.abs() == 1.0));
}

#[test]
fn swd_of_a_pure_shift_is_mean_squared_projection() {
    // y = x + v: every projection is shifted by θ·v, so SWD² = mean_l (θ_l·v)² for the very
    // directions used. Tolerance 1e-10 relative: x + v rounds each coordinate (1e-16), which can
    // reorder near-ties but moves W2² only at that level.
    let (d, l) = (3, 100);
    let v = [0.3, -0.7, 1.1];
    let x = gauss(700, &[0.0; 3], 1.0, 10, 0);
    let y: Vec<f64> = x.iter().enumerate().map(|(i, a)| a + v[i % d]).collect();
    let dirs = directions(d, l, 11).unwrap();
    let want = dirs.chunks(d).map(|t| (t[0] * v[0] + t[1] * v[1] + t[2] * v[2]).powi(2)).sum::<f64>() / l as f64;
    let got = sliced_wasserstein(&x, &y, d, l, 11).unwrap().powi(2);
    println!("pure shift: SWD² {got:.12} vs mean (θ·v)² {want:.12}");
    assert!((got - want).abs() <= 1e-10 * want, "{got} vs {want}");
    // Directions are unit vectors and do not depend on how many are asked for.
    for t in dirs.chunks(d) {
        assert!((t.iter().map(|a| a * a).sum::<f64>() - 1.0).abs() < 1e-14);
    }
    assert_eq!(directions(d, 10, 11).unwrap()[..], dirs[..30]);
}

#[test]
fn swd_of_shifted_gaussians_is_norm_over_dim() {
    // x ~ N(0, I₂), y ~ N(v, I₂), independent, n = m = 20000, L = SWD_DIRECTIONS, ‖v‖ = 2.
    // (a) The directions: mean_l (θ_l·v)² estimates ‖v‖²/d with sd (‖v‖²/d)·sqrt(2(d−1)/(d+2))/sqrt(L)
    //     (θ uniform on the circle: Var cos² = 1/8); allowed: 4 sd.
    // (b) The metric: in 1-D, W2²(P, Q' + c) = W2²(P, Q') + c² + 2c(mean Q' − mean P), so
    //     SWD² − mean_l c_l² = SWD²(x, y') + 2·mean_l c_l θ_l·(ȳ' − x̄), with y' = y − v. The last term
    //     ≈ (2/d)·v·(ȳ' − x̄), sd (2/d)‖v‖·sqrt(2/n); allowed: 4 sd plus the measured floor
    //     SWD²(x, y') (positive, O(1/n)). A mean of 1-D W1, squared, would give
    //     (2‖v‖/π)² = 1.62, off by 0.38.
    let (d, n, l) = (2usize, 20_000usize, SWD_DIRECTIONS);
    let v = [1.2, -1.6];
    let v2 = v[0] * v[0] + v[1] * v[1];
    let x = gauss(n, &[0.0; 2], 1.0, 12, 0);
    let y_base = gauss(n, &[0.0; 2], 1.0, 12, 1);
    let y: Vec<f64> = y_base.iter().enumerate().map(|(i, a)| a + v[i % d]).collect();
    let seed = 13;
    let dirs = directions(d, l, seed).unwrap();
    let mean_c2 = dirs.chunks(d).map(|t| (t[0] * v[0] + t[1] * v[1]).powi(2)).sum::<f64>() / l as f64;
    let expected = v2 / d as f64;
    let sd_dir = expected * (2.0 * (d as f64 - 1.0) / (d as f64 + 2.0)).sqrt() / (l as f64).sqrt();
    let swd2 = sliced_wasserstein(&x, &y, d, l, seed).unwrap().powi(2);
    let floor = sliced_wasserstein(&x, &y_base, d, l, seed).unwrap().powi(2);
    let sd_mean = 2.0 / d as f64 * v2.sqrt() * (2.0 / n as f64).sqrt();
    println!(
        "shifted Gaussians: SWD² {swd2:.5}, mean (θ·v)² {mean_c2:.5}, ‖v‖²/d {expected:.5}, sd_dir {sd_dir:.4}, \
         sd_mean {sd_mean:.4}, floor {floor:.2e}"
    );
    assert!((mean_c2 - expected).abs() < 4.0 * sd_dir, "directions: {mean_c2} vs {expected} (sd {sd_dir})");
    assert!((swd2 - mean_c2).abs() < 4.0 * sd_mean + floor, "SWD² {swd2} vs {mean_c2} (sd {sd_mean}, floor {floor})");
    assert!((swd2 - expected).abs() < 4.0 * (sd_dir + sd_mean) + floor, "SWD² {swd2} vs ‖v‖²/d {expected}");
}

#[test]
fn swd_directions_are_uniform_on_the_sphere() {
    // For θ uniform on S^(d−1): E θ₁² = 1/d and E θ₁⁴ = 3/(d(d + 2)). With L = 2^16 directions the
    // sample means have sd sqrt(Var/L); allowed: 4 sd (Var θ₁² = 3/(d(d+2)) − 1/d²,
    // Var θ₁⁴ = E θ₁⁸ − (E θ₁⁴)² with E θ₁⁸ = 105/(d(d+2)(d+4)(d+6))). A direction law that is
    // not rotation-invariant (e.g. normalised uniform-in-a-cube vectors) fails the 4th moment.
    let l = 1 << 16;
    for d in [2usize, 5, 16] {
        let dirs = directions(d, l, 21).unwrap();
        let df = d as f64;
        let (m2, m4, m8) = (1.0 / df, 3.0 / (df * (df + 2.0)), 105.0 / (df * (df + 2.0) * (df + 4.0) * (df + 6.0)));
        let got2 = dirs.chunks(d).map(|t| t[0] * t[0]).sum::<f64>() / l as f64;
        let got4 = dirs.chunks(d).map(|t| t[0].powi(4)).sum::<f64>() / l as f64;
        let (sd2, sd4) = (((m4 - m2 * m2) / l as f64).sqrt(), ((m8 - m4 * m4) / l as f64).sqrt());
        println!("d {d}: E θ₁² {got2:.5} (want {m2:.5} ± {sd2:.1e}), E θ₁⁴ {got4:.5} (want {m4:.5} ± {sd4:.1e})");
        assert!((got2 - m2).abs() < 4.0 * sd2, "d {d}: E θ₁² {got2} vs {m2}");
        assert!((got4 - m4).abs() < 4.0 * sd4, "d {d}: E θ₁⁴ {got4} vs {m4}");
    }
}

#[test]
fn swd_unequal_sizes_match_brute_force_quantiles() {
    // Tolerance 1e-12 relative: the merged-grid integral and the lcm-grid sum add the same
    // squared differences with different (exact integer) multiplicities.
    for (n, m) in [(1, 1), (1, 5), (6, 10), (7, 3), (64, 100), (99, 101)] {
        let a = gauss(n, &[0.0], 1.0, 14, n as u32);
        let b = gauss(m, &[0.3], 1.5, 15, m as u32);
        let got = wasserstein2_sq_1d(&a, &b).unwrap();
        let want = brute_force_w2_sq(&a, &b);
        assert!((got - want).abs() <= 1e-12 * want, "n {n}, m {m}: {got} vs {want}");
        let swd = sliced_wasserstein(&a, &b, 1, 3, 0).unwrap();
        assert!((swd * swd - want).abs() <= 1e-12 * want, "1-D SWD, n {n}, m {m}: {} vs {want}", swd * swd);
    }
    // 2-D, n ≠ m: SWD² = mean over the directions of the brute-force W2² of the projections.
    let (d, l) = (2, 20);
    let x = gauss(60, &[0.0; 2], 1.0, 16, 0);
    let y = gauss(84, &[0.5, 0.2], 0.7, 16, 1);
    let dirs = directions(d, l, 17).unwrap();
    let want = dirs.chunks(d).map(|t| brute_force_w2_sq(&project(&x, t), &project(&y, t))).sum::<f64>() / l as f64;
    let got = sliced_wasserstein(&x, &y, d, l, 17).unwrap().powi(2);
    println!("2-D n≠m: SWD² {got:.12} vs brute force {want:.12}");
    assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
}

#[test]
fn swd_rejects_bad_inputs() {
    assert!(matches!(sliced_wasserstein(&[], &[1.0], 1, 4, 0), Err(EvalError::TooFew { what: "x", .. })));
    assert!(matches!(sliced_wasserstein(&[1.0, 2.0, 3.0], &[1.0, 2.0], 2, 4, 0), Err(EvalError::Shape(_))));
    assert!(matches!(sliced_wasserstein(&[1.0], &[1.0], 1, 0, 0), Err(EvalError::Invalid(_))));
    let e = sliced_wasserstein(&[1.0], &[f64::NEG_INFINITY], 1, 4, 0).unwrap_err();
    assert!(matches!(e, EvalError::NonFinite { what: "y", index: 0, .. }), "{e}");
    assert!(!e.to_string().contains('\n'));
    assert!(matches!(wasserstein2_sq_1d(&[1.0], &[]), Err(EvalError::TooFew { what: "b", .. })));
}

#[test]
fn mean_and_standard_error_match_the_textbook_formulas() {
    use cdl::eval::stats::mean_se;
    // Values 1..5: mean 3, sample variance 2.5, SE sqrt(2.5 / 5).
    let (m, se) = mean_se(&[1.0, 2.0, 3.0, 4.0, 5.0]);
    assert!((m - 3.0).abs() < 1e-15 && (se - 0.5f64.sqrt()).abs() < 1e-15, "{m} {se}");
    let (m, se) = mean_se(&[7.0]);
    assert!(m == 7.0 && se.is_nan());
}

#[test]
fn a_paired_difference_is_a_verdict_only_beyond_the_t_quantile_of_its_seeds() {
    use cdl::eval::stats::{verdict_threshold, Verdict};
    // Mean −1, SE 0.0707 (14 SE below 0): better; mirrored: worse.
    let d = [-1.1, -0.9, -1.0, -1.1, -0.9];
    assert_eq!(Verdict::of(&d), Verdict::Better);
    assert_eq!(Verdict::of(&d.map(|x| -x)), Verdict::Worse);
    // Mean 0.1 with SE ≈ 0.37: not distinguishable.
    assert_eq!(Verdict::of(&[1.0, -0.8, 0.9, -0.6, 0.0]), Verdict::NotDistinguishable);
    assert_eq!(Verdict::of(&[-3.0]), Verdict::OneSeed);
    // Two seeds: mean −1, SE 0.1 is 10 SE from 0 but within t(1) = 12.7: no verdict. Five
    // seeds need 2.78 SE; many seeds 2 SE.
    assert_eq!(Verdict::of(&[-1.1, -0.9]), Verdict::NotDistinguishable);
    assert!((verdict_threshold(2) - 12.706).abs() < 1e-9 && (verdict_threshold(5) - 2.776).abs() < 1e-9);
    assert_eq!(verdict_threshold(100), 2.0);
    // Mean −1, SE 0.212 at n = 5 (4.7 SE): better at t(4) = 2.78. Mean −0.5 with the same SE
    // (2.4 SE): not distinguishable at n = 5, though beyond "2 SE".
    let d5 = [-1.0, -1.0, -1.0, -0.33, -1.67];
    let (m, se) = cdl::eval::stats::mean_se(&d5);
    assert!((m + 1.0).abs() < 1e-12 && (se - 0.2119).abs() < 1e-3, "{se}");
    assert_eq!(Verdict::of(&d5), Verdict::Better);
    assert_eq!(Verdict::of(&d5.map(|x| x + 0.5)), Verdict::NotDistinguishable);
}

#[test]
fn outliers_are_samples_with_a_coordinate_beyond_four_standard_deviations() {
    use cdl::eval::stats::outlier_fraction;
    let x = [0.0, 3.9, -4.1, 0.0, 1.0, 1.0, f64::NAN, 0.0];
    assert_eq!(outlier_fraction(&x, 2), 0.5);
    assert_eq!(outlier_fraction(&[], 2), 0.0);
}
