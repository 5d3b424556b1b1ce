//! Batched likelihood estimators (eval::nll) against closed forms, with the analytic optimal
//! denoiser of Gaussian data: −log p̂(x) per point ≈ −log N(x; m, v), the logit per point ≈
//! log p(y) − log p_ζ(y), and the batched test protocol equals the row-by-row one in
//! `diffusion::likelihood` in expectation.

use crate::common::gaussian::{draws, problem};

use cdl::diffusion::sampler::RowByRow;
use cdl::eval::nll::{pointwise, test_nll};

const POINTS: [f64; 6] = [0.9, -0.7, 0.0, 0.0, -2.0, 1.0];

#[test]
fn pointwise_nll_matches_the_exact_log_density() {
    let (g, r, q) = problem();
    // M = 16384: one estimate's std is about 1.7·sqrt(64/M) ≈ 0.11 nats (measured 1.7 at M = 64
    // in diffusion_closed_form); 4 of those bound a chance failure at p ≈ 6e-5 per point (the
    // points share draws, so their errors are correlated, not independent chances).
    let m = 16384;
    let got = pollster::block_on(pointwise(&mut RowByRow(&g), &POINTS, &q, &r, m, None, 3)).unwrap();
    for (x, est) in POINTS.chunks(2).zip(&got) {
        let exact = -g.log_density(x);
        println!("x {x:?}: -log p exact {exact:.4}, estimate {est:.4}");
        assert!((est - exact).abs() < 4.0 * 0.11, "{x:?}: {est} vs {exact}");
    }
}

#[test]
fn pointwise_logit_matches_the_exact_log_ratio() {
    let (g, r, q) = problem();
    let zeta = 2.0;
    // Paired draws: std 0.021 nats at M = 64 (diffusion_closed_form), 0.0053 at M = 1024.
    let got = pollster::block_on(pointwise(&mut RowByRow(&g), &POINTS, &q, &r, 1024, Some(zeta), 4)).unwrap();
    for (x, est) in POINTS.chunks(2).zip(&got) {
        let exact = g.logit(x, zeta);
        println!("y {x:?}: f exact {exact:.5}, estimate {est:.5}");
        assert!((est - exact).abs() < 4.0 * 0.0053 + 1e-3, "{x:?}: {est} vs {exact}");
    }
}

#[test]
fn batched_test_protocol_estimates_the_data_entropy() {
    let (g, r, q) = problem();
    // 400 examples of the data; the protocol's clamped estimate of E[−log p] with the optimal
    // denoiser is the sample NLL (the clamp only removes negative-gap noise).
    let n = 400;
    let xs = draws(&g, n, 9);
    let sample_nll: f64 = xs.chunks(2).map(|x| -g.log_density(x)).sum::<f64>() / n as f64;
    let t = pollster::block_on(test_nll(&mut RowByRow(&g), &xs, &q, &r, 1000, 5)).unwrap();
    println!(
        "sample NLL {sample_nll:.4}, protocol {:.4} nats ({:.4} bpd), unclamped {:.4}",
        t.nats, t.bpd, t.nats_unclamped
    );
    // 1000 α points × 400 examples: the MC error of the unclamped mean is about 1.7/sqrt(1000·400/64)
    // ≈ 0.02 nats; 0.1 leaves room for the clamp's (non-negative) bias.
    assert!((t.nats_unclamped - sample_nll).abs() < 0.1, "{} vs {sample_nll}", t.nats_unclamped);
    assert!(t.nats <= t.nats_unclamped + 1e-12, "the clamp can only lower the estimate");
    assert!((t.bpd - t.nats / (2.0 * std::f64::consts::LN_2)).abs() < 1e-12);
}
