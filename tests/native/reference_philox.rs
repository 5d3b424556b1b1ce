//! The counter-based generator: Philox known-answer vectors, the integer Box-Muller pieces
//! against their real-valued definitions, and the distribution of the normals.

use cdl::philox::{box_muller, cordic_q27, neg2ln_q26, philox4x32_10, philox_normal, philox_uniform, sqrt_q21, Stream};

/// Known-answer vectors of Random123 (kat_vectors, philox4x32 with 10 rounds).
#[test]
fn philox_known_answers() {
    assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    assert_eq!(
        philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
    );
}

#[test]
fn fixed_point_log_matches_ln() {
    for a in [0u32, 1, 2, 3, 1000, 0x1234_5678, 0x8000_0000, 0xFFFF_FFFE, u32::MAX] {
        let u = f64::from(a | 1) / 4_294_967_296.0;
        let got = f64::from(neg2ln_q26(a)) / f64::from(1u32 << 26);
        // 30 normalisation steps leave ~2^-30 relative; rounded table entries add <= 30 * 2^-27.
        assert!((got - (-2.0 * u.ln())).abs() < 1e-6, "a={a}: {got} vs {}", -2.0 * u.ln());
    }
}

#[test]
fn fixed_point_sqrt_is_floor_sqrt() {
    for l in [0u32, 1, 2, 5, 1 << 26, 123_456_789, u32::MAX] {
        let r = u64::from(sqrt_q21(l));
        let v = u64::from(l) << 16;
        assert!(r * r <= v && (r + 1) * (r + 1) > v, "l={l}");
    }
}

#[test]
fn cordic_matches_cos_sin() {
    let r_q21 = 3 << 21; // r = 3
    for b in [0u32, 1 << 28, 0x4000_0000, 0x7FFF_FFFF, 0x9000_0000, 0xC000_0001, u32::MAX] {
        let t = 2.0 * std::f64::consts::PI * f64::from(b) / 4_294_967_296.0;
        let (c, s) = cordic_q27(r_q21, b);
        let (c, s) = (f64::from(c) / f64::from(1u32 << 27), f64::from(s) / f64::from(1u32 << 27));
        assert!((c - 3.0 * t.cos()).abs() < 1e-6 && (s - 3.0 * t.sin()).abs() < 1e-6, "b={b:#x}: ({c}, {s})");
    }
}

#[test]
fn box_muller_matches_its_real_valued_definition() {
    for (a, b) in [(12345u32, 67890u32), (0xDEAD_BEEF, 0x0BAD_F00D), (1, 0xFFFF_FFFF)] {
        let u1 = f64::from(a | 1) / 4_294_967_296.0;
        let t = 2.0 * std::f64::consts::PI * f64::from(b) / 4_294_967_296.0;
        let r = (-2.0 * u1.ln()).sqrt();
        let [z0, z1] = box_muller(a, b);
        // Q.20 output resolution (1e-6) plus the fixed-point errors above.
        assert!((f64::from(z0) - r * t.cos()).abs() < 4e-6, "{z0} vs {}", r * t.cos());
        assert!((f64::from(z1) - r * t.sin()).abs() < 4e-6, "{z1} vs {}", r * t.sin());
    }
}

/// Mean, variance, skew, kurtosis and a Kolmogorov-Smirnov distance of 400k normals, with
/// bounds of about 5 standard errors.
#[test]
fn normals_are_standard_normal() {
    let n = 400_000;
    let mut z = vec![0f32; n];
    philox_normal(&mut z, Stream::new(7, [1, 2, 3]));
    let nf = n as f64;
    let m = |p: i32| z.iter().map(|&v| f64::from(v).powi(p)).sum::<f64>() / nf;
    let (m1, m2, m3, m4) = (m(1), m(2), m(3), m(4));
    assert!(m1.abs() < 5.0 / nf.sqrt(), "mean {m1}");
    assert!((m2 - 1.0).abs() < 5.0 * (2.0 / nf).sqrt(), "variance {m2}");
    assert!(m3.abs() < 5.0 * (15.0 / nf).sqrt(), "third moment {m3}");
    assert!((m4 - 3.0).abs() < 5.0 * (96.0 / nf).sqrt(), "fourth moment {m4}");
    let mut s: Vec<f64> = z.iter().map(|&v| f64::from(v)).collect();
    s.sort_by(f64::total_cmp);
    let cdf = |x: f64| 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
    let ks = s.iter().enumerate().map(|(i, &x)| (cdf(x) - (i as f64 + 0.5) / nf).abs()).fold(0.0, f64::max);
    // The 99.9% quantile of the KS statistic is 1.95 / sqrt(n).
    assert!(ks < 1.95 / nf.sqrt(), "KS distance {ks}");
}

#[test]
fn uniforms_are_uniform_and_open() {
    let n = 200_000;
    let mut u = vec![0f32; n];
    philox_uniform(&mut u, Stream::new(9, [0, 0, 0]));
    assert!(u.iter().all(|&v| v > 0.0 && v < 1.0));
    let mean = u.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    assert!((mean - 0.5).abs() < 5.0 * (1.0 / 12.0 / n as f64).sqrt(), "mean {mean}");
}

#[test]
fn streams_are_distinct_and_reproducible() {
    let draw = |s: Stream| {
        let mut v = vec![0f32; 64];
        philox_normal(&mut v, s);
        v
    };
    let base = Stream::new(5, [1, 2, 3]);
    assert_eq!(draw(base), draw(base));
    for other in [
        Stream::new(6, [1, 2, 3]),
        Stream::new(5, [0, 2, 3]),
        Stream::new(5, [1, 2, 4]),
        Stream::new(5 | 1 << 40, [1, 2, 3]),
    ] {
        assert_ne!(draw(base), draw(other), "{other:?}");
    }
    // A prefix of a longer draw is the shorter draw.
    let mut long = vec![0f32; 101];
    philox_normal(&mut long, base);
    assert_eq!(&long[..64], &draw(base)[..]);
}

/// erf in f64: the Maclaurin series below 3 (cancellation costs at most ~1e-12 there), the
/// asymptotic expansion of erfc above (absolute error below 1e-8); the KS bound is 3e-3.
fn erf(x: f64) -> f64 {
    if x < 0.0 {
        return -erf(-x);
    }
    if x < 3.0 {
        let (mut sum, mut term) = (0.0f64, x);
        for k in 0..200 {
            let kf = f64::from(k);
            sum += term / (2.0 * kf + 1.0);
            term *= -x * x / (kf + 1.0);
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        let x2 = x * x;
        let series = 1.0 - 1.0 / (2.0 * x2) + 3.0 / (4.0 * x2 * x2) - 15.0 / (8.0 * x2 * x2 * x2);
        1.0 - (-x2).exp() / (x * std::f64::consts::PI.sqrt()) * series
    }
}

#[test]
fn erf_reference_values() {
    assert!((erf(0.5) - 0.520_499_877_813_046_5).abs() < 1e-12);
    assert!((erf(2.9) - 0.999_958_902_121_900_5).abs() < 1e-11);
    assert!((erf(3.5) - 0.999_999_256_901_628).abs() < 1e-8);
}
