//! The loss-head reference that the GPU kernels are checked against (reference::loss) computes
//! exactly what the diffusion math defines (diffusion::loss::evaluate), on real row plans: the
//! standard and CDL loss values, the logits and every row weight.

use cdl::diffusion::likelihood::RefGaussian;
use cdl::diffusion::logistic::TruncLogistic;
use cdl::diffusion::loss::{evaluate, plan_step, CdlConfig, CdlNorm, LossConfig, StdLoss};
use cdl::philox::normal_vec;
use cdl::reference::loss::{loss_head, LossHead};

fn check_plan(cfg: &LossConfig, batch: usize, step: u32) {
    let plan = plan_step(cfg, batch, 5, step).expect("plan");
    let rows = plan.rows.len();
    // Row errors of the size a d = 2 row has, positive, with spread.
    let errors: Vec<f64> = normal_vec(rows, 9, step).iter().map(|v| 2.0 + 1.5 * f64::from(*v).abs()).collect();
    let want = evaluate(&plan, &errors).expect("evaluate");
    let h = LossHead {
        n_std: plan.n_std,
        anchors: plan.anchors.len(),
        points: plan.points,
        lambda_std: plan.lambda_std,
        lambda_cdl: plan.lambda_cdl,
        cdl_norm: plan.cdl_norm,
        std_const: plan.std_const,
    };
    let weight: Vec<f64> = plan.rows.iter().map(|r| r.weight).collect();
    let offset: Vec<f64> = plan.rows.iter().map(|r| r.offset).collect();
    let labels: Vec<f64> = plan.anchors.iter().map(|a| a.label).collect();
    let k = labels.len();
    let (mut rw, mut f, mut ell) = (vec![0.0; rows], vec![0.0; k], vec![0.0; k]);
    let [total, std, cdl] = loss_head(&mut rw, &mut f, &mut ell, &errors, &weight, &offset, &labels, h);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + b.abs());
    assert!(
        close(total, want.total) && close(std, want.std) && close(cdl, want.cdl),
        "{total} {std} {cdl} vs {want:?}"
    );
    for i in 0..k {
        assert!(close(f[i], want.logits[i]) && close(ell[i], want.anchor_losses[i]), "anchor {i}");
    }
    for (r, (got, want)) in rw.iter().zip(&want.row_weights).enumerate() {
        assert!(close(*got, *want), "row {r}: {got} vs {want}");
    }
}

#[test]
fn reference_head_equals_the_diffusion_loss() {
    let q = TruncLogistic::ITD_CIFAR;
    let reference = Some(RefGaussian::standard(2));
    // The authors' setting: ITD + CDL, paired draws, sum over anchors / B.
    check_plan(&LossConfig::cdl_official(q, None), 16, 1);
    // Unpaired draws with the reference Gaussian's offsets, per-anchor mean, other lambdas.
    let mut cfg = LossConfig::cdl_official(q, reference);
    cfg.lambda_cdl = 2.5;
    cfg.lambda_std = 0.5;
    cfg.cdl = Some(CdlConfig {
        anchors: 3,
        points: 5,
        paired_draws: false,
        norm: CdlNorm::MeanOverAnchors,
        ..CdlConfig::default()
    });
    check_plan(&cfg, 8, 2);
    // A standard loss alone (no CDL rows).
    check_plan(&LossConfig::standard(StdLoss::Ddpm), 12, 3);
}
