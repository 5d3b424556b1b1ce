//! Loss rows (math.md §3.3, §3.4, §4, §9b): the row-ordering contract, the planned constants, the
//! row-weight gradient against f64 central differences of the total loss, the guards, and the CDL
//! logits computed through the plan against the exact Gaussian log-ratio.

use crate::common::gaussian::{data, mean_std, toy_cdl, toy_loss};

use cdl::diffusion::gaussian::GaussianData;
use cdl::diffusion::likelihood::{Denoiser, RefGaussian};
use cdl::diffusion::logistic::TruncLogistic;
use cdl::diffusion::logsnr::{alpha_prime, q_scale, sqrt_sigmoid};
use cdl::diffusion::loss::{
    evaluate, plan_step, row_error, row_error_backward, CdlConfig, CdlNorm, LossConfig, RowKind, RowPlan, StdLoss,
    ZetaDist,
};
use cdl::diffusion::rng::HostRng;
use cdl::diffusion::schedule::{DdpmSchedule, EdmPrecond, VeSchedule, VpSde};
use cdl::diffusion::DiffusionError;
use cdl::reference::tol::{assert_close, Tol};

fn cdl(k: usize, m: usize, paired: bool, norm: CdlNorm) -> CdlConfig {
    CdlConfig {
        anchors: k,
        points: m,
        q: TruncLogistic::new(0.5, 3.0, 3.0).unwrap(),
        zeta: ZetaDist::Uniform { lo: 1.0, hi: 4.0 },
        paired_draws: paired,
        norm,
    }
}

/// Row inputs and targets for a batch, through the CPU mirror of the GPU gather.
/// xs: (B, d); returns inputs, targets: (R, d).
fn gather(plan: &RowPlan, xs: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let r_n = plan.len();
    let (mut inp, mut tgt) = (vec![0.0; r_n * d], vec![0.0; r_n * d]);
    for r in 0..r_n {
        let b = plan.rows[r].example as usize;
        plan.row_input(r, &xs[b * d..(b + 1) * d], &mut inp[r * d..(r + 1) * d], &mut tgt[r * d..(r + 1) * d]).unwrap();
    }
    (inp, tgt)
}

// ---------------------------------------------------------------------------------------------
// Row ordering contract

#[test]
fn rows_follow_the_ordering_contract() {
    let mut cfg = LossConfig::standard(StdLoss::Itd { q: TruncLogistic::ITD_CIFAR });
    cfg.cdl = Some(cdl(2, 3, true, CdlNorm::SumOverBatch));
    let (b_n, k_n, m_n) = (6, 2, 3);
    let plan = plan_step(&cfg, b_n, 42, 7).unwrap();
    assert_eq!(plan.len(), b_n + 2 * k_n * m_n);
    for b in 0..b_n {
        let r = &plan.rows[b];
        assert_eq!((r.kind, r.example, r.scale), (RowKind::Std, b as u32, 1.0));
    }
    let x = [0.7, -0.4, 1.9];
    for k in 0..k_n {
        let an = plan.anchors[k];
        assert_eq!(an.example, k as u32);
        if an.label > 0.0 {
            assert_eq!((an.y_x, an.y_n0), (1.0, 0.0));
        } else {
            assert_eq!((an.y_x, an.y_n0), (sqrt_sigmoid(an.zeta), sqrt_sigmoid(-an.zeta)));
        }
        for m in 0..m_n {
            let p_i = b_n + k * m_n + m;
            let q_i = b_n + k_n * m_n + k * m_n + m;
            assert_eq!(plan.p_row(k, m), p_i);
            let (p, q) = (plan.rows[p_i], plan.rows[q_i]);
            assert_eq!((p.kind, q.kind), (RowKind::CdlP, RowKind::CdlQ));
            assert_eq!((p.anchor, p.point, q.anchor, q.point), (k as u32, m as u32, k as u32, m as u32));
            // Paired: same input level, same noise, q conditioned at α′ with scale c (math.md §3.2).
            assert_eq!((p.input_alpha, p.alpha, p.scale), (q.input_alpha, p.input_alpha, 1.0));
            assert_eq!(q.alpha, alpha_prime(p.alpha, an.zeta));
            assert_eq!(q.scale, q_scale(p.alpha, q.alpha));
            assert_eq!(p.noise, q.noise);
            let (mut ip, mut tp, mut iq, mut tq) = ([0.0; 3], [0.0; 3], [0.0; 3], [0.0; 3]);
            plan.row_input(p_i, &x, &mut ip, &mut tp).unwrap();
            plan.row_input(q_i, &x, &mut iq, &mut tq).unwrap();
            assert_eq!((ip, tp), (iq, tq));
            // input = sqrt(s(α))·y + sqrt(s(−α))·ε with y the anchor's y.
            let mut y = [0.0; 3];
            plan.anchor_y(k, &x, &mut y).unwrap();
            let expect: Vec<f64> = (0..3).map(|i| p.sqrt_sig_pos * y[i] + p.sqrt_sig_neg * tp[i]).collect();
            assert_close("input", &ip, &expect, Tol { atol: 1e-15, rtol: 1e-15 });
        }
    }
    // Independent draws: q-rows get their own levels and noise.
    cfg.cdl = Some(cdl(2, 3, false, CdlNorm::SumOverBatch));
    let plan = plan_step(&cfg, b_n, 42, 7).unwrap();
    let (p, q) = (plan.rows[b_n], plan.rows[b_n + k_n * m_n]);
    assert_ne!(p.noise, q.noise);
    assert_ne!(p.input_alpha, q.input_alpha);
    // No standard loss: CDL rows start at 0, B still sets the normalisation.
    cfg.std = StdLoss::None;
    let plan = plan_step(&cfg, b_n, 42, 7).unwrap();
    assert_eq!((plan.n_std, plan.len(), plan.rows[0].kind), (0, 2 * k_n * m_n, RowKind::CdlP));
    assert_eq!(plan.cdl_norm, 1.0 / b_n as f64);
}

#[test]
fn plan_is_a_pure_function_of_seed_and_step() {
    let cfg = LossConfig::cdl_official(TruncLogistic::CDL_CIFAR, None);
    let a = plan_step(&cfg, 8, 1, 3).unwrap();
    assert_eq!(a, plan_step(&cfg, 8, 1, 3).unwrap());
    assert_ne!(a.rows[0].alpha, plan_step(&cfg, 8, 1, 4).unwrap().rows[0].alpha);
    assert_ne!(a.rows[0].alpha, plan_step(&cfg, 8, 2, 3).unwrap().rows[0].alpha);
    // Official defaults: K = 2, M = 64, ζ ∈ [6, 15], α ∈ [−8, 16].
    assert_eq!(a.len(), 8 + 2 * 2 * 64);
    assert!(a.anchors.iter().all(|an| (6.0..=15.0).contains(&an.zeta)));
    assert!(a.rows.iter().all(|r| (-8.0..=16.0).contains(&r.input_alpha)));
}

/// `plan_step` composes the standard loss's rows with the CDL rows, each drawn from its own
/// streams: for every standard loss, the plan with CDL is the standard-only plan's rows followed
/// by the CDL-only plan's rows and anchors (paired and independent draws, with a reference).
#[test]
fn plan_is_the_standard_rows_then_the_cdl_rows() {
    let reference = Some(RefGaussian::from_variances(&[0.5, 1.5, 2.0]).unwrap());
    let stds = [
        StdLoss::Ddpm,
        StdLoss::Itd { q: TruncLogistic::new(0.5, 3.0, 3.0).unwrap() },
        StdLoss::edm(),
        StdLoss::VpSong(VpSde::default()),
        StdLoss::VeSong(VeSchedule::default()),
        StdLoss::EdmVe { ve: VeSchedule::default(), precond: EdmPrecond::default() },
    ];
    for std in stds {
        for c in [cdl(2, 3, true, CdlNorm::SumOverBatch), cdl(3, 2, false, CdlNorm::MeanOverAnchors)] {
            let both = LossConfig {
                std: std.clone(),
                lambda_std: 1.0,
                cdl: Some(c),
                lambda_cdl: 0.5,
                reference: reference.clone(),
            };
            let plan = plan_step(&both, 5, 11, 2).unwrap();
            let alone = plan_step(&LossConfig { cdl: None, ..both.clone() }, 5, 11, 2).unwrap();
            let cdl_only = plan_step(&LossConfig { std: StdLoss::None, ..both.clone() }, 5, 11, 2).unwrap();
            assert_eq!(plan.rows, [alone.rows.clone(), cdl_only.rows.clone()].concat(), "{std:?}, {c:?}");
            assert_eq!((plan.n_std, plan.std_const), (alone.n_std, alone.std_const));
            assert_eq!((&plan.anchors, plan.points, plan.cdl_norm), (&cdl_only.anchors, c.points, cdl_only.cdl_norm));
        }
    }
}

#[test]
fn labels_are_a_fair_coin() {
    // 4000 anchors over 1000 steps: the fraction of clean labels has SE 0.5/sqrt(4000) = 0.0079.
    let mut cfg = LossConfig::standard(StdLoss::None);
    cfg.cdl = Some(cdl(4, 1, true, CdlNorm::SumOverBatch));
    let mut clean = 0usize;
    for step in 0..1000 {
        let p = plan_step(&cfg, 4, 5, step).unwrap();
        clean += p.anchors.iter().filter(|a| a.label > 0.0).count();
    }
    let frac = clean as f64 / 4000.0;
    assert!((frac - 0.5).abs() < 4.0 * 0.0079, "clean fraction {frac}");
}

// ---------------------------------------------------------------------------------------------
// Standard losses: levels and weights (math.md §4)

#[test]
fn standard_loss_levels_and_weights() {
    let b_n = 2000;
    let bf = b_n as f64;
    // DDPM: α = α_t of Ho's schedule, weight 1/B; t covers the range.
    let p = plan_step(&LossConfig::standard(StdLoss::Ddpm), b_n, 1, 0).unwrap();
    let sched = DdpmSchedule::ho();
    for r in &p.rows {
        assert!(sched.logsnr.contains(&r.alpha));
        assert_eq!((r.weight, r.offset), (1.0 / bf, 0.0));
    }
    let (lo, hi) = p.rows.iter().fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(r.alpha), h.max(r.alpha)));
    assert!(lo < -9.5 && hi > 8.0, "DDPM alpha range [{lo}, {hi}]");

    // EDM: α = −2 ln σ ~ N(2.4, 2.4²); weight (1 + 4e^{−α})/B (math.md §4.3). SE of the mean
    // 2.4/sqrt(2000) = 0.054, of the std 2.4/sqrt(4000) = 0.038; bounds 4 SE.
    let p = plan_step(&LossConfig::standard(StdLoss::edm()), b_n, 1, 0).unwrap();
    let a: Vec<f64> = p.rows.iter().map(|r| r.alpha).collect();
    let (m, s) = mean_std(&a);
    assert!((m - 2.4).abs() < 4.0 * 0.054 && (s - 2.4).abs() < 4.0 * 0.038, "EDM alpha {m} ± {s}");
    for r in &p.rows {
        assert_close("EDM weight", &[r.weight], &[(1.0 + 4.0 * (-r.alpha).exp()) / bf], Tol { atol: 0.0, rtol: 1e-14 });
    }

    // Song VP / VE: plain ε-MSE (weight 1/B) over their α ranges (math.md §1.3).
    let p = plan_step(&LossConfig::standard(StdLoss::VpSong(VpSde::default())), b_n, 1, 0).unwrap();
    assert!(p.rows.iter().all(|r| r.alpha > -10.06 && r.alpha < 13.82 && r.weight == 1.0 / bf));
    let p = plan_step(&LossConfig::standard(StdLoss::VeSong(VeSchedule::default())), b_n, 1, 0).unwrap();
    assert!(p.rows.iter().all(|r| r.alpha > -9.22 && r.alpha < 7.83 && r.weight == 1.0 / bf));

    // ITD: α ~ q, weight w/(2B), offset mmse_G(α), constant h_G (with a reference).
    let q = TruncLogistic::ITD_CIFAR;
    let mut cfg = LossConfig::standard(StdLoss::Itd { q });
    let r = RefGaussian::standard(3);
    cfg.reference = Some(r.clone());
    let p = plan_step(&cfg, b_n, 1, 0).unwrap();
    assert_eq!(p.std_const, r.h_g());
    for row in &p.rows {
        assert_close("ITD weight", &[row.weight], &[q.weight(row.alpha) / (2.0 * bf)], Tol { atol: 0.0, rtol: 1e-14 });
        assert_eq!(row.offset, r.mmse_g(row.alpha));
    }
}

// ---------------------------------------------------------------------------------------------
// (d) Gradient of the total loss w.r.t. network outputs, through the row weights (math.md §9b)

/// The total loss computed directly from network outputs, from math.md's formulas (§3.3, §3.4),
/// not through `evaluate`: L_std from ITD/EDM definitions, f_k = (1/(2M))Σ w·(E_q − E_p) (paired)
/// or the difference of two NLL estimates (independent), ℓ = ln(1 + e^{−y f}).
fn direct_loss(cfg: &LossConfig, plan: &RowPlan, tgt: &[f64], out: &[f64], d: usize) -> f64 {
    let err = |r: usize| row_error(&tgt[r * d..(r + 1) * d], &out[r * d..(r + 1) * d], plan.rows[r].scale);
    let bf = plan.batch as f64;
    let mut l_std = 0.0;
    match &cfg.std {
        StdLoss::Itd { q } => {
            let rf = cfg.reference.as_ref().unwrap();
            l_std += rf.h_g();
            for b in 0..plan.n_std {
                let a = plan.rows[b].alpha;
                l_std += 0.5 * q.weight(a) * (err(b) - rf.mmse_g(a)) / bf;
            }
        }
        StdLoss::Edm { .. } => {
            for b in 0..plan.n_std {
                l_std += (1.0 + 4.0 * (-plan.rows[b].alpha).exp()) * err(b) / bf;
            }
        }
        _ => unreachable!("not used here"),
    }
    let c = cfg.cdl.unwrap();
    let (k_n, m_n) = (c.anchors, c.points);
    let mut l_cdl = 0.0;
    for k in 0..k_n {
        let mut f = 0.0;
        for m in 0..m_n {
            let (p, q) = (plan.p_row(k, m), plan.p_row(k, m) + k_n * m_n);
            let (ap, aq) = (plan.rows[p].input_alpha, plan.rows[q].input_alpha);
            let (mp, mq) = if c.paired_draws {
                (0.0, 0.0)
            } else {
                let rf = cfg.reference.as_ref().unwrap();
                (rf.mmse_g(ap), rf.mmse_g(aq))
            };
            f += (c.q.weight(aq) * (err(q) - mq) - c.q.weight(ap) * (err(p) - mp)) / (2.0 * m_n as f64);
        }
        let y = plan.anchors[k].label;
        l_cdl += (1.0 + (-y * f).exp()).ln();
    }
    l_cdl *= match c.norm {
        CdlNorm::SumOverBatch => 1.0 / bf,
        CdlNorm::MeanOverAnchors => 1.0 / k_n as f64,
    };
    cfg.lambda_std * l_std + cfg.lambda_cdl * l_cdl
}

#[test]
fn row_weight_gradient_matches_central_differences() {
    let d = 3;
    let b_n = 5;
    let configs = [
        // Official: ITD + CDL, paired, Σ/B, λ = 1.
        LossConfig {
            std: StdLoss::Itd { q: TruncLogistic::new(1.0, 2.0, 3.0).unwrap() },
            lambda_std: 1.0,
            cdl: Some(cdl(3, 4, true, CdlNorm::SumOverBatch)),
            lambda_cdl: 1.0,
            reference: Some(RefGaussian::from_variances(&[0.5, 1.5, 2.0]).unwrap()),
        },
        // EDM + CDL with independent draws (mmse_G offsets), per-anchor mean, λ's ≠ 1.
        LossConfig {
            std: StdLoss::Edm { p_mean: -1.2, p_std: 1.2, precond: EdmPrecond::default() },
            lambda_std: 0.7,
            cdl: Some(cdl(4, 3, false, CdlNorm::MeanOverAnchors)),
            lambda_cdl: 2.5,
            reference: Some(RefGaussian::standard(3)),
        },
    ];
    for (ci, cfg) in configs.iter().enumerate() {
        // Find a step whose anchors carry both labels.
        let plan = (0..100)
            .map(|s| plan_step(cfg, b_n, 77, s).unwrap())
            .find(|p| p.anchors.iter().any(|a| a.label > 0.0) && p.anchors.iter().any(|a| a.label < 0.0))
            .expect("a step with both labels");
        let mut rng = HostRng::new(123, [ci as u32, 0, 0]);
        let xs: Vec<f64> = (0..b_n * d).map(|_| rng.next_normal()).collect();
        let (_, tgt) = gather(&plan, &xs, d);
        // Random network outputs: targets plus noise, so logits are O(1) and every ℓ_k has a
        // non-saturated gradient.
        let mut out: Vec<f64> = tgt.iter().map(|t| 0.8 * t + 0.6 * rng.next_normal()).collect();
        let errors: Vec<f64> = (0..plan.len())
            .map(|r| row_error(&tgt[r * d..(r + 1) * d], &out[r * d..(r + 1) * d], plan.rows[r].scale))
            .collect();
        let sl = evaluate(&plan, &errors).unwrap();
        assert_close("total", &[sl.total], &[direct_loss(cfg, &plan, &tgt, &out, d)], Tol { atol: 1e-12, rtol: 1e-12 });
        println!("config {ci}: logits {:?}", sl.logits);
        // Analytic gradient through the row weights.
        let mut grad = vec![0.0; out.len()];
        for r in 0..plan.len() {
            let s = r * d..(r + 1) * d;
            row_error_backward(&mut grad[s.clone()], sl.row_weights[r], &tgt[s.clone()], &out[s], plan.rows[r].scale);
        }
        // Central differences, every coordinate of every row; h = 1e-5 gives O(h²·L''') ≈ 1e-10
        // truncation and ~1e-16/1e-5 = 1e-11 round-off on an O(1) loss.
        let h = 1e-5;
        let mut fd = vec![0.0; out.len()];
        for i in 0..out.len() {
            let v = out[i];
            out[i] = v + h;
            let lp = direct_loss(cfg, &plan, &tgt, &out, d);
            out[i] = v - h;
            let lm = direct_loss(cfg, &plan, &tgt, &out, d);
            out[i] = v;
            fd[i] = (lp - lm) / (2.0 * h);
        }
        // STYLE.md practice 8(a): f64 gradcheck at 1e-6 relative (plus 1e-9 absolute for the
        // near-zero entries).
        assert_close("dL/d eps_hat", &grad, &fd, Tol { atol: 1e-9, rtol: 1e-6 });
        // Some CDL row weights are negative (math.md §9b): the q-rows of a clean anchor and the
        // p-rows of a noisy one.
        assert!(sl.row_weights.iter().any(|w| *w < 0.0));
        for (k, an) in plan.anchors.iter().enumerate() {
            let q = plan.p_row(k, 0) + plan.anchors.len() * plan.points;
            assert_eq!(sl.row_weights[q].signum(), -an.label, "q-row weight sign, anchor {k}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Guards: never panic, never a NaN weight

#[test]
fn evaluate_returns_errors_on_bad_input() {
    let cfg = LossConfig::cdl_official(TruncLogistic::CDL_CIFAR, None);
    let plan = plan_step(&cfg, 4, 0, 0).unwrap();
    let ok = vec![1.0; plan.len()];
    assert!(evaluate(&plan, &ok).is_ok());
    assert!(matches!(evaluate(&plan, &ok[1..]), Err(DiffusionError::Shape(_))));
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut e = ok.clone();
        e[plan.len() - 1] = bad;
        assert!(matches!(evaluate(&plan, &e), Err(DiffusionError::NonFinite(_))));
    }
    // Finite but overflowing: f = Σ w·(E_q − E_p) with E_q = 1e308 overflows to +∞.
    let mut e = ok.clone();
    let q0 = plan.p_row(0, 0) + 2 * 64; // anchor 0's q-rows (K = 2, M = 64)
    e[q0..q0 + 64].fill(1e308);
    let err = evaluate(&plan, &e).unwrap_err();
    assert!(matches!(err, DiffusionError::NonFinite(_)), "{err}");
    assert!(!err.to_string().contains('\n'));
    // A saturated anchor (|f| ~ 1e6) is finite: softplus is linear, its gradient σ(·) is 0 or 1.
    let mut e = ok.clone();
    let p0 = plan.p_row(0, 0);
    e[p0..p0 + 64].fill(1e5);
    let sl = evaluate(&plan, &e).unwrap();
    assert!(sl.logits[0] < -1e5 && sl.total.is_finite());
    assert!(sl.row_weights.iter().all(|w| w.is_finite()));
}

#[test]
fn bad_configs_are_rejected_with_one_line_messages() {
    let base = LossConfig::cdl_official(TruncLogistic::CDL_CIFAR, None);
    let mut cases = Vec::new();
    cases.push((base.clone(), 1usize)); // K = 2 > B = 1
    cases.push((base.clone(), 0)); // B = 0
    let mut c = base.clone();
    c.cdl = Some(CdlConfig { points: 0, ..CdlConfig::default() });
    cases.push((c, 8));
    let mut c = base.clone();
    c.cdl = Some(CdlConfig { zeta: ZetaDist::Uniform { lo: 15.0, hi: 6.0 }, ..CdlConfig::default() });
    cases.push((c, 8));
    let mut c = base.clone();
    c.lambda_cdl = f64::NAN;
    cases.push((c, 8));
    let mut c = base.clone();
    c.std = StdLoss::Itd { q: TruncLogistic { mu: 0.0, s: -1.0, c: 3.0 } };
    cases.push((c, 8));
    let mut c = base.clone();
    c.std = StdLoss::VeSong(VeSchedule { sigma_min: 0.0, sigma_max: 1.0 });
    cases.push((c, 8));
    for (cfg, b) in cases {
        let err = plan_step(&cfg, b, 0, 0).unwrap_err();
        assert!(matches!(err, DiffusionError::Config(_)), "{err}");
        assert!(!err.to_string().contains('\n'));
    }
}

// ---------------------------------------------------------------------------------------------
// End to end through the plan, with the analytic Gaussian denoiser

/// Runs `steps` planned steps with the optimal Gaussian denoiser and returns, per anchor and step,
/// f̂_k − f*(y_k), and the std-loss values.
fn run_plan(cfg: &LossConfig, g: &GaussianData, xs: &[f64], steps: u32) -> (Vec<f64>, Vec<f64>) {
    let d = g.dim();
    let b_n = xs.len() / d;
    let (mut gaps, mut stds) = (Vec::new(), Vec::new());
    let mut out = vec![0.0; d];
    for step in 0..steps {
        let plan = plan_step(cfg, b_n, 2024, step).unwrap();
        let (inp, tgt) = gather(&plan, xs, d);
        let errors: Vec<f64> = (0..plan.len())
            .map(|r| {
                let row = &plan.rows[r];
                g.eps_hat(&inp[r * d..(r + 1) * d], row.alpha, &mut out);
                row_error(&tgt[r * d..(r + 1) * d], &out, row.scale)
            })
            .collect();
        let sl = evaluate(&plan, &errors).unwrap();
        let mut y = vec![0.0; d];
        for (k, an) in plan.anchors.iter().enumerate() {
            let b = an.example as usize;
            plan.anchor_y(k, &xs[b * d..(b + 1) * d], &mut y).unwrap();
            gaps.push(sl.logits[k] - g.logit(&y, an.zeta));
        }
        stds.push(sl.std);
    }
    (gaps, stds)
}

#[test]
fn planned_cdl_logits_match_the_exact_gaussian_log_ratio() {
    // Every anchor's f̂_k (rows → GPU-equivalent Philox noise → optimal denoiser → evaluate) must
    // be an unbiased estimate of log p(y_k) − log p_ζ(y_k) for its own y_k and ζ_k, both labels
    // mixed. 300 steps × 4 anchors; mean gap within 4 SE of 0.
    let g = data();
    let xs = [0.9, -0.7, -1.2, 0.4, 0.1, 0.1, 2.0, -1.5];
    for paired in [true, false] {
        let cdl = toy_cdl(4, 64, ZetaDist::Uniform { lo: 1.0, hi: 4.0 }, paired);
        let cfg = toy_loss(StdLoss::None, Some(cdl), 1.0);
        let (gaps, _) = run_plan(&cfg, &g, &xs, 300);
        let (m, s) = mean_std(&gaps);
        let se = s / (gaps.len() as f64).sqrt();
        println!("planned f - exact (paired = {paired}): mean {m:.5}, std {s:.4}, SE {se:.5}");
        assert!(m.abs() < 4.0 * se, "paired = {paired}: mean gap {m} (SE {se})");
        if paired {
            assert!(s < 0.2, "paired std {s}");
        } else {
            assert!(s > 0.5, "independent std {s}");
        }
    }
}

#[test]
fn planned_itd_std_loss_estimates_the_nll() {
    // With a reference Gaussian the ITD L_std is h_G + (1/B)Σ_b ½w_b(E_b − mmse_G(α_b)): an
    // estimate of the batch-average −log p (math.md §3.3). 10,000 steps of B = 4 (one α per example,
    // so each step is noisy: std ≈ 7 nats, SE ≈ 0.07).
    let g = data();
    let xs = [0.9, -0.7, -1.2, 0.4, 0.1, 0.1, 2.0, -1.5];
    let exact: f64 = xs.chunks(2).map(|x| -g.log_density(x)).sum::<f64>() / 4.0;
    let mut cfg = LossConfig::standard(StdLoss::Itd { q: TruncLogistic::cdl_toy(&g.var).unwrap() });
    cfg.reference = Some(RefGaussian::from_variances(&g.var).unwrap());
    let (_, stds) = run_plan(&cfg, &g, &xs, 10_000);
    let (m, s) = mean_std(&stds);
    let se = s / (stds.len() as f64).sqrt();
    println!("ITD L_std: exact {exact:.5}, mean {m:.5}, SE {se:.5}");
    assert!((m - exact).abs() < 4.0 * se, "L_std {m} vs {exact} (SE {se})");
}

/// Data-parallel shards (`RowPlan::shard`): over any number of ranks every row of the step is in
/// exactly one shard, each shard's loss head gives that row the whole step's gradient weight, and
/// the shards' losses sum to the whole step's (h_G counted once), with every logit in rank order.
#[test]
fn shards_of_a_step_sum_to_the_whole_step() {
    let q = TruncLogistic::ITD_CIFAR;
    let loss = toy_loss(StdLoss::Itd { q }, Some(toy_cdl(3, 4, ZetaDist::Uniform { lo: 1.0, hi: 4.0 }, false)), 0.7);
    let plan = plan_step(&loss, 7, 11, 5).unwrap();
    assert!(plan.std_const != 0.0);
    let errors: Vec<f64> = (0..plan.len()).map(|r| 2.0 + (r as f64 * 0.37).sin()).collect();
    let whole = evaluate(&plan, &errors).unwrap();
    for ranks in 1..=5 {
        let (mut total, mut logits, mut seen) = (0.0, Vec::new(), vec![0; plan.len()]);
        for rank in 0..ranks {
            let shard = plan.shard(rank, ranks);
            // Each shard row is a row of the whole plan (rows are told apart by their streams).
            let at: Vec<usize> =
                shard.rows.iter().map(|r| plan.rows.iter().position(|w| w == r).expect("a row of the plan")).collect();
            let e: Vec<f64> = at.iter().map(|&i| errors[i]).collect();
            let part = evaluate(&shard, &e).unwrap();
            for (&i, &w) in at.iter().zip(&part.row_weights) {
                seen[i] += 1;
                assert_eq!(w, whole.row_weights[i], "row {i}, rank {rank} of {ranks}");
            }
            total += part.total;
            logits.extend(part.logits);
        }
        assert!(seen.iter().all(|&n| n == 1), "{ranks} ranks: rows seen {seen:?}");
        assert_close("sharded total", &[total], &[whole.total], Tol { atol: 1e-12, rtol: 1e-12 });
        assert_eq!(logits, whole.logits, "{ranks} ranks");
    }
}
