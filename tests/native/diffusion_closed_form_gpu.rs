//! The closed-form checks of tests/native/diffusion_closed_form.rs (ITD −log p(x), the CDL logit, paired
//! vs independent draws; math.md §2.2, §3.2), run through the real training-step machinery on the GPU:
//! `diffusion::loss::plan_step` plans the rows, `ops::rows::row_inputs` builds every row's input
//! and target on the GPU, and `ops::loss::{row_err, loss_head, loss_grad}` turn network outputs into
//! the loss, the logits and dL/dpred (math.md §9b). The network is replaced by the analytic optimal
//! ε-predictor of the Gaussian data (gaussian.rs), evaluated on the host in f64 on the inputs the
//! GPU built (read back), at the row's conditioning level (α for std and p-rows, α′ for q-rows),
//! and uploaded as f32 predictions.
//!
//! Setup as in the CPU tests: data N((0.3, −0.2), diag(1.6, 0.5)), x = (0.9, −0.7) (rounded to
//! f32, the value the GPU reads; the exact densities use that rounded x), integration q = the CDL
//! toy setting, reference Gaussian λ = data variances, M = 64 points.
//!
//! Monte-Carlo assertions: n independent estimates, sample std σ̂, SE = σ̂/sqrt(n); "within 4 SE"
//! fails by chance with p ≈ 6e-5. Each f32-vs-f64 comparison uses a rounding bound computed from
//! the magnitudes involved (`f32_bound`).

use crate::common;

use crate::common::gaussian::{assert_paired_far_below_independent, data, mean_std, problem, toy_cdl, toy_loss};

use cdl::diffusion::gaussian::GaussianData;
use cdl::diffusion::likelihood::{nll_quadrature, simpson, Denoiser};
use cdl::diffusion::logistic::TruncLogistic;
use cdl::diffusion::loss::{evaluate, plan_step, row_error, Row, RowKind, RowPlan, StdLoss, StepLoss, ZetaDist};
use cdl::diffusion::rng::row_normals;
use cdl::gpu::{Buffer, Gpu};
use cdl::ops::loss::{loss_grad, loss_head, row_err, HeadOut};
use cdl::ops::rows::{row_inputs, table_words};
use cdl::philox::normal_vec;
use cdl::reference::tol::{compare, Tol};

const X: [f32; 2] = [0.9, -0.7];
const D: usize = 2;
/// ζ of the CPU tests.
const ZETA: f64 = 2.0;
/// Integration points per estimate: the CIFAR CDL setting M = 64 (math.md §2.2, §3.2 table).
const M: usize = 64;
/// Unit roundoff of f32, 2^-24.
const U32: f64 = 5.960_464_477_539_063e-8;

fn x64() -> Vec<f64> {
    X.iter().map(|&v| f64::from(v)).collect()
}

/// First-order worst-case f32 error of a sum of `adds` terms whose magnitudes add up to `mass`,
/// each term itself carrying ≤ 8 roundings before the sum (the prediction's f32 rounding, the
/// product and difference in row_err, the row's square sum, the weight and offset roundings, the
/// product with the weight): (adds + 8)·u·mass (Higham, recursive summation; a tree sums no worse).
fn f32_bound(adds: usize, mass: f64) -> f64 {
    (adds as f64 + 8.0) * U32 * mass
}

/// The magnitude row r contributes to a sum of weight·(E − offset) terms, covering the size of
/// the quantities rounded on the way: weight·(E + offset + ||target||² + scale²·||pred||²).
fn row_mass(plan: &RowPlan, r: usize, target: &[f64], pred: &[f64], err: f64) -> f64 {
    let row = &plan.rows[r];
    let sq = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>();
    row.weight.abs() * (err + row.offset.abs() + sq(target) + row.scale * row.scale * sq(pred))
}

// ---------------------------------------------------------------------------------------------
// The GPU step with a host network

/// Rows built on the GPU: the buffers the head reads, and their contents read back.
struct Rows {
    targets: Buffer,
    /// (R, D)
    inputs_host: Vec<f32>,
    /// (R, D)
    targets_host: Vec<f32>,
}

/// `row_inputs` over the plan's rows; `x` is the batch (B, D), `seed` the plan's seed.
async fn build_rows(gpu: &Gpu, plan: &RowPlan, x: &[f32], seed: u64) -> Rows {
    let rows = plan.len();
    let xb = gpu.upload("x", x).unwrap();
    let table = gpu.upload("table", &table_words(&plan.row_specs(), plan.batch).unwrap()).unwrap();
    let (inputs, targets) = (gpu.zeros("inputs", rows * D).unwrap(), gpu.zeros("targets", rows * D).unwrap());
    let d = row_inputs(gpu, &xb, &table, &inputs, &targets, rows, D, plan.batch, seed).await.unwrap();
    gpu.run(&[&d]);
    let inputs_host = gpu.read(&inputs).await.unwrap();
    let targets_host = gpu.read(&targets).await.unwrap();
    Rows { targets, inputs_host, targets_host }
}

/// The GPU-built rows are the rows the plan defines (`RowPlan::row_input`, f64): targets are the
/// same f32 normals bit for bit; an input a·(y_x·x + y_n0·ε₀) + b·ε has its four coefficients
/// rounded once to f32 and ≤ 4 f32 operations (with all coefficients ≤ 1): ≤ 12u·(|x| + |ε₀| + |ε|).
fn check_rows(plan: &RowPlan, rows: &Rows, xs: &[f32]) {
    let (mut want_in, mut want_t, mut e0) = (vec![0.0; D], vec![0.0; D], vec![0.0; D]);
    for (r, row) in plan.rows.iter().enumerate() {
        let ex = row.example as usize;
        let x = to64(&xs[ex * D..(ex + 1) * D]);
        plan.row_input(r, &x, &mut want_in, &mut want_t).unwrap();
        row_normals(&mut e0, row.noise0);
        for i in 0..D {
            let (got_in, got_t) = (f64::from(rows.inputs_host[r * D + i]), f64::from(rows.targets_host[r * D + i]));
            assert_eq!(got_t, want_t[i], "row {r} target {i}");
            let bound = 12.0 * U32 * (x[i].abs() + e0[i].abs() + want_t[i].abs());
            assert!((got_in - want_in[i]).abs() <= bound, "row {r} input {i}: GPU {got_in} vs plan {}", want_in[i]);
        }
    }
}

/// What the GPU head returns for one step.
struct HeadRead {
    /// (R,)
    errors: Vec<f32>,
    /// (K,)
    logits: Vec<f32>,
    /// [total, std, cdl, non-finite count]
    stats: Vec<f32>,
    /// (R, D)
    dpred: Vec<f32>,
}

/// row_err → loss_head → loss_grad in one submission, on the GPU-built targets and `pred` (R, D).
async fn run_head(gpu: &Gpu, plan: &RowPlan, rows: &Rows, pred: &[f32]) -> HeadRead {
    let r_n = plan.len();
    let h = plan.head().to_f32();
    let k_n = plan.anchors_len();
    let col = |f: fn(&Row) -> f64| plan.rows.iter().map(|r| f(r) as f32).collect::<Vec<f32>>();
    let up = |name: &str, v: &[f32]| gpu.upload(name, v).unwrap();
    let bp = up("pred", pred);
    let (bs, bw, bo) =
        (up("scale", &col(|r| r.scale)), up("weight", &col(|r| r.weight)), up("offset", &col(|r| r.offset)));
    let labels: Vec<f32> = plan.anchors.iter().map(|a| a.label as f32).collect();
    let bl = up("labels", &labels);
    // Outputs start as NaN so an element no kernel writes fails the comparisons. (K may be 0.)
    let nan = |name: &str, len: usize| up(name, &vec![f32::NAN; len.max(1)]);
    let (errors, rw, logits, losses, stats) =
        (nan("errors", r_n), nan("row_weights", r_n), nan("logits", k_n), nan("losses", k_n), nan("stats", 4));
    let dpred = nan("dpred", r_n * D);
    let e = row_err(gpu, &bp, &rows.targets, &bs, &errors, &h, D).await.unwrap();
    let out = HeadOut { row_weights: &rw, logits: &logits, anchor_losses: &losses, stats: &stats };
    let l = loss_head(gpu, &errors, &bw, &bo, &bl, out, &h).await.unwrap();
    let g = loss_grad(gpu, &bp, &rows.targets, &bs, &rw, &dpred, &h, D).await.unwrap();
    gpu.run(&[&e, &l, &g]);
    HeadRead {
        errors: gpu.read(&errors).await.unwrap(),
        logits: gpu.read(&logits).await.unwrap()[..k_n].to_vec(),
        stats: gpu.read(&stats).await.unwrap(),
        dpred: gpu.read(&dpred).await.unwrap(),
    }
}

/// The analytic network: ε̂*(input_r, alpha_r) in f64 for every row, from the GPU's inputs. (R, D)
fn optimal_pred(g: &GaussianData, plan: &RowPlan, inputs: &[f32]) -> Vec<f64> {
    let mut pred = vec![0.0; plan.len() * D];
    for (r, row) in plan.rows.iter().enumerate() {
        let z: Vec<f64> = inputs[r * D..(r + 1) * D].iter().map(|&v| f64::from(v)).collect();
        g.eps_hat(&z, row.alpha, &mut pred[r * D..(r + 1) * D]);
    }
    pred
}

/// The host's f64 row errors (module formula E_r = ||target − scale·pred||²) and `evaluate`.
fn host_eval(plan: &RowPlan, targets: &[f64], pred: &[f64]) -> (Vec<f64>, StepLoss) {
    let errors: Vec<f64> = (0..plan.len())
        .map(|r| row_error(&targets[r * D..(r + 1) * D], &pred[r * D..(r + 1) * D], plan.rows[r].scale))
        .collect();
    let loss = evaluate(plan, &errors).unwrap();
    (errors, loss)
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&a| f64::from(a)).collect()
}

fn to32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&a| a as f32).collect()
}

fn copies(n: usize) -> Vec<f32> {
    X.iter().copied().cycle().take(n * D).collect()
}

// ---------------------------------------------------------------------------------------------
// (a) ITD estimate of −log p(x) on the GPU (math.md §2.2)

#[test]
fn gpu_itd_loss_estimates_exact_log_density() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let (g, reference, q) = problem();
    let cfg = toy_loss(StdLoss::Itd { q }, None, 1.0);
    let x = x64();
    let exact = -g.log_density(&x);
    // The estimator's expectation is (★) truncated to q's support: that bias must be negligible.
    let (lo, hi) = q.range();
    let bias = nll_quadrature(|a| g.expected_err(&x, a), &reference, lo, hi, 20_000) - exact;
    // B = M copies of x: the B standard rows of one step are an M-point estimate of −log p(x).
    // 200 steps (independent Philox streams) give SE ≈ σ/14.
    let (steps, seed) = (200u32, 0xA11u64);
    let xs = copies(M);
    let mut est = Vec::new();
    let mut worst = 0.0f64;
    pollster::block_on(async {
        for step in 0..steps {
            let plan = plan_step(&cfg, M, seed, step).unwrap();
            assert_eq!(plan.len(), M);
            let rows = build_rows(gpu, &plan, &xs, seed).await;
            check_rows(&plan, &rows, &xs);
            let pred = optimal_pred(&g, &plan, &rows.inputs_host);
            let got = run_head(gpu, &plan, &rows, &to32(&pred)).await;
            assert_eq!(got.stats[3], 0.0, "step {step}: non-finite row errors");
            // The same step on the host in f64 from the same GPU inputs and targets.
            let t64 = to64(&rows.targets_host);
            let (errors, want) = host_eval(&plan, &t64, &pred);
            let mass = plan.std_const.abs()
                + (0..M)
                    .map(|r| row_mass(&plan, r, &t64[r * D..(r + 1) * D], &pred[r * D..(r + 1) * D], errors[r]))
                    .sum::<f64>();
            let (l_std, bound) = (f64::from(got.stats[1]), f32_bound(M, mass));
            worst = worst.max((l_std - want.std).abs() / bound);
            assert!(
                (l_std - want.std).abs() <= bound,
                "step {step}: GPU L_std {l_std} vs host {} (bound {bound:.2e})",
                want.std
            );
            assert_eq!(f64::from(got.stats[0]), f64::from(got.stats[1]), "total = L_std without CDL");
            est.push(l_std);
        }
    });
    let (m, s) = mean_std(&est);
    let se = s / f64::from(steps).sqrt();
    println!(
        "GPU ITD -log p: exact {exact:.5} (truncation bias {bias:.1e}), mean of {steps} estimates {m:.5}, \
         std per estimate {s:.4} (M = {M}), SE {se:.4}, bound 4 SE = {:.4}; GPU vs host L_std worst {worst:.3} of \
         the f32 bound",
        4.0 * se
    );
    assert!(bias.abs() < 0.1 * se, "truncation bias {bias} vs SE {se}");
    assert!((m - exact).abs() < 4.0 * se, "GPU ITD mean {m} vs exact {exact} (SE {se})");
    // As on the CPU: at M = 64 the estimator is noisy (std ≈ 1 nat); ~0 would mean unused draws.
    assert!(s > 0.3 && s < 5.0, "std per estimate {s}");
}

// ---------------------------------------------------------------------------------------------
// (b), (c) CDL logits on the GPU (math.md §3.2)

/// One anchor's GPU logit against the exact f(y_k, ζ_k).
struct AnchorLogit {
    clean: bool,
    /// f̂_k − f*(y_k, ζ_k)
    diff: f64,
    exact: f64,
}

/// A CDL-only step of K anchors (batch = K copies of x, anchor k reads example k), through the
/// GPU; checks the GPU logits against `evaluate` on the host and returns f̂_k − f* per anchor.
fn gpu_logits(zeta: ZetaDist, anchors: usize, paired: bool, seed: u64) -> Option<Vec<AnchorLogit>> {
    let gpu = common::gpu_or_skip()?;
    let g = data();
    // A reference is given in both modes: independent draws keep its mmse_G offsets (official
    // code), paired draws drop them (they cancel exactly).
    let cfg = toy_loss(StdLoss::None, Some(toy_cdl(anchors, M, zeta, paired)), 1.0);
    let plan = plan_step(&cfg, anchors, seed, 0).unwrap();
    assert_eq!(plan.len(), 2 * anchors * M);
    let (rows, pred, got) = pollster::block_on(async {
        let xs = copies(anchors);
        let rows = build_rows(gpu, &plan, &xs, seed).await;
        check_rows(&plan, &rows, &xs);
        let pred = optimal_pred(&g, &plan, &rows.inputs_host);
        let got = run_head(gpu, &plan, &rows, &to32(&pred)).await;
        (rows, pred, got)
    });
    assert_eq!(got.stats[3], 0.0, "non-finite row errors or logits");
    let t64 = to64(&rows.targets_host);
    let (errors, want) = host_eval(&plan, &t64, &pred);
    let x = x64();
    let mut y = vec![0.0; D];
    let mut out = Vec::with_capacity(anchors);
    for (k, an) in plan.anchors.iter().enumerate() {
        // f_k sums its 2M rows in order in f32 (loss.wgsl).
        let mass: f64 = (0..M)
            .flat_map(|m| [plan.p_row(k, m), plan.p_row(k, m) + anchors * M])
            .map(|r| row_mass(&plan, r, &t64[r * D..(r + 1) * D], &pred[r * D..(r + 1) * D], errors[r]))
            .sum();
        let f = f64::from(got.logits[k]);
        let bound = f32_bound(2 * M, mass);
        assert!(
            (f - want.logits[k]).abs() <= bound,
            "anchor {k}: GPU f {f} vs host {} (bound {bound:.2e})",
            want.logits[k]
        );
        plan.anchor_y(k, &x, &mut y).unwrap();
        let exact = g.logit(&y, an.zeta);
        out.push(AnchorLogit { clean: an.label > 0.0, diff: f - exact, exact });
    }
    Some(out)
}

/// Mean, std and SE of f̂ − f* over the anchors that `keep` selects, and the mean of f*.
fn summary(v: &[AnchorLogit], keep: impl Fn(&AnchorLogit) -> bool) -> (usize, f64, f64, f64, f64) {
    let sel: Vec<&AnchorLogit> = v.iter().filter(|a| keep(a)).collect();
    let diffs: Vec<f64> = sel.iter().map(|a| a.diff).collect();
    let (m, s) = mean_std(&diffs);
    let exact = sel.iter().map(|a| a.exact).sum::<f64>() / sel.len() as f64;
    (sel.len(), m, s, s / (sel.len() as f64).sqrt(), exact)
}

#[test]
fn gpu_cdl_logits_match_exact_log_ratio_with_paired_draws() {
    // ζ_k ~ U[1, 3] around the CPU tests' ζ = 2; clean anchors (y = x) and noisy ones
    // (y ~ p_ζ from the anchor's ε₀), each against its own exact f*(y_k, ζ_k).
    // K = 512 anchors (~256 of each kind): SE ≈ 0.025/16 ≈ 1.6e-3 per group.
    const K: usize = 512;
    let Some(v) = gpu_logits(ZetaDist::Uniform { lo: 1.0, hi: 3.0 }, K, true, 0xB0B) else { return };
    for (name, clean) in [("clean", true), ("noisy", false)] {
        let (n, m, s, se, exact) = summary(&v, |a| a.clean == clean);
        println!(
            "GPU CDL f, paired, {name} anchors: n = {n}, mean f* {exact:.4}, mean(f̂ − f*) {m:.5}, std {s:.4} \
             (M = {M}), SE {se:.5}, bound 4 SE = {:.5}",
            4.0 * se
        );
        assert!(n >= K / 4, "{name}: only {n} of {K} anchors");
        assert!(m.abs() < 4.0 * se, "{name}: mean(f̂ − f*) {m} (SE {se})");
        // The check can see a zero or sign-flipped logit: either moves mean(f̂ − f*) by at least
        // |mean f*|, which must then lie well outside the 4 SE bound.
        assert!(exact.abs() > 6.0 * se, "{name}: mean f* {exact} too small vs SE {se}");
        // The draws are used: the paired estimator is noisy, though far less than independent.
        assert!(s > 1e-3, "{name}: std {s}");
    }
}

#[test]
fn gpu_paired_draws_have_far_lower_variance_than_independent() {
    // The CPU test's setting: ζ = 2 and clean anchors (y = x). ZetaDist has no fixed ζ, and its
    // uniform needs lo < hi: U[2, 2 + 1e-9] moves f* by < 1e-9 (each anchor uses its own ζ_k anyway).
    const K: usize = 256;
    let zeta = ZetaDist::Uniform { lo: ZETA, hi: ZETA + 1e-9 };
    let Some(paired) = gpu_logits(zeta, K, true, 0xC0) else { return };
    let Some(indep) = gpu_logits(zeta, K, false, 0xC1) else { return };
    let mut stds = Vec::new();
    for (name, v) in [("paired", &paired), ("independent", &indep)] {
        let (n, m, s, se, exact) = summary(v, |a| a.clean);
        println!(
            "GPU CDL f at M = {M}, {name}: n = {n} clean anchors, f* {exact:.5}, mean(f̂ − f*) {m:.5}, \
             std {s:.4}, SE {se:.5}"
        );
        assert!(n >= K / 4, "{name}: only {n} clean anchors of {K}");
        // Both estimators are unbiased (math.md §3.2).
        assert!(m.abs() < 4.0 * se, "{name}: mean(f̂ − f*) {m} (SE {se})");
        stds.push((s, se));
    }
    let ((sp, se_p), (si, _)) = (stds[0], stds[1]);
    // The estimators' expectation is f* truncated to q's support: that bias must be negligible
    // against the paired SE for the unbiasedness checks above to mean anything.
    let (g, x) = (data(), x64());
    let (lo, hi) = TruncLogistic::cdl_toy(&g.var).unwrap().range();
    let truncated = 0.5 * simpson(|a| g.expected_err_zeta(&x, a, ZETA) - g.expected_err(&x, a), lo, hi, 20_000);
    let bias = truncated - g.logit(&x, ZETA);
    println!("CDL f truncation bias {bias:.1e} (paired SE {se_p:.1e})");
    assert!(bias.abs() < 0.1 * se_p, "truncation bias {bias} vs SE {se_p}");
    println!("GPU std of f at M = {M}: paired {sp:.4}, independent {si:.4}, ratio {:.1}", si / sp);
    assert_paired_far_below_independent(sp, si);
}

// ---------------------------------------------------------------------------------------------
// (d) dL/dpred from the GPU against finite differences of the step loss

#[test]
fn gpu_loss_grad_matches_finite_differences_of_the_step_loss() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let (g, q) = (data(), problem().2);
    // ITD with offsets + CDL with independent draws (offsets on CDL rows too), λ_cdl ≠ 1.
    let cdl = toy_cdl(2, 8, ZetaDist::Uniform { lo: 1.0, hi: 3.0 }, false);
    let cfg = toy_loss(StdLoss::Itd { q }, Some(cdl), 0.7);
    let (batch, seed) = (4usize, 0xD0u64);
    // Four different examples, so a wrong example index shows.
    let xs: Vec<f32> = vec![0.9, -0.7, -0.4, 0.3, 1.5, 0.1, 0.2, -1.2];
    // The first step with one clean and one noisy anchor.
    let (plan, step) = (0..64)
        .map(|s| (plan_step(&cfg, batch, seed, s).unwrap(), s))
        .find(|(p, _)| p.anchors[0].label != p.anchors[1].label)
        .unwrap();
    let r_n = plan.len();
    let (rows, pred, got) = pollster::block_on(async {
        let rows = build_rows(gpu, &plan, &xs, seed).await;
        check_rows(&plan, &rows, &xs);
        // Random predictions: the optimal ones plus N(0, 0.3²) noise, which keeps |f_k| = O(1)
        // so the CDL row weights are not saturated away. f32, and the same values on the host.
        let opt = optimal_pred(&g, &plan, &rows.inputs_host);
        let noise = normal_vec(r_n * D, seed, step);
        let pred: Vec<f32> = opt.iter().zip(&noise).map(|(o, e)| (o + 0.3 * f64::from(*e)) as f32).collect();
        let got = run_head(gpu, &plan, &rows, &pred).await;
        (rows, to64(&pred), got)
    });
    assert_eq!(got.stats[3], 0.0);
    let t64 = to64(&rows.targets_host);
    let total = |p: &[f64]| host_eval(&plan, &t64, p).1.total;
    let (_, want) = host_eval(&plan, &t64, &pred);
    // Central differences in f64: h = 1e-5 leaves truncation h²·|L'''|/6 ≲ 1e-9 and rounding
    // ε64·|L|/h ≲ 1e-10 (|L| = O(10)).
    let h = 1e-5;
    let mut fd = vec![0.0; r_n * D];
    let mut p = pred.clone();
    for i in 0..r_n * D {
        p[i] = pred[i] + h;
        let up = total(&p);
        p[i] = pred[i] - h;
        let down = total(&p);
        p[i] = pred[i];
        fd[i] = (up - down) / (2.0 * h);
    }
    // GPU dpred in f32: the CDL row weights carry the error of f_k, a sum of 2M = 16 f32 terms of
    // size ≤ ~40 (w/(2M) ≤ 3.8 times E − mmse_G), so ≲ 16·40·4u ≈ 1.5e-4 absolute, i.e. ≤ 1.5e-4
    // relative in σ(−s·f); dpred adds 4 roundings, and t − s·pred an absolute ≲ |rw|·2s·u·(|t|+|s·pred|)
    // ≲ 5e-6. rtol 1e-3 / atol 1e-5 leave ≥ 2× margin, and are far below the O(1) relative error of
    // any wrong weight, scale, sign or row mix-up.
    let tol = Tol { atol: 1e-5, rtol: 1e-3 };
    let rep = compare(&got.dpred, &fd, tol);
    let cdl_max = fd[plan.n_std * D..].iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let std_max = fd[..plan.n_std * D].iter().fold(0.0f64, |a, v| a.max(v.abs()));
    println!(
        "GPU dL/dpred vs f64 central differences (step {step}, R = {r_n}, f = {:?}, labels {:?}): {rep}; \
         max |dL/dpred| std rows {std_max:.3e}, CDL rows {cdl_max:.3e}; GPU total {} vs host {:.6}",
        want.logits,
        plan.anchors.iter().map(|a| a.label).collect::<Vec<_>>(),
        got.stats[0],
        want.total
    );
    assert!(rep.ok(), "dpred vs FD: {rep}");
    // Not vacuous: both kinds of row carry gradient, and the p- and q-rows differ.
    assert!(cdl_max > 1e-3 && std_max > 1e-3, "gradients too small to test: std {std_max}, CDL {cdl_max}");
    let q_rows = plan.rows.iter().filter(|r| r.kind == RowKind::CdlQ).count();
    assert_eq!(q_rows, 2 * 8);
    // The loss value agrees too: L is a sum of B + K terms of magnitude ≤ the rows' mass.
    let errors = host_eval(&plan, &t64, &pred).0;
    let mass: f64 = plan.std_const.abs()
        + (0..r_n)
            .map(|r| row_mass(&plan, r, &t64[r * D..(r + 1) * D], &pred[r * D..(r + 1) * D], errors[r]))
            .sum::<f64>();
    let bound = f32_bound(r_n, mass);
    assert!(
        (f64::from(got.stats[0]) - want.total).abs() <= bound,
        "GPU total {} vs host {} (bound {bound:.2e})",
        got.stats[0],
        want.total
    );
    // And the errors themselves (one f32 square sum of D = 2 terms each).
    let sq = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>();
    for (r, (&a, &e)) in got.errors.iter().zip(&errors).enumerate() {
        let (t, p) = (&t64[r * D..(r + 1) * D], &pred[r * D..(r + 1) * D]);
        let s2 = plan.rows[r].scale.powi(2);
        let b = f32_bound(D, e + sq(t) + s2 * sq(p));
        assert!((f64::from(a) - e).abs() <= b, "row {r}: GPU E {a} vs host {e} (bound {b:.2e})");
    }
}
