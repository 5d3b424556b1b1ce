//! The named losses of `--loss`: from-scratch noise levels cover every level the samplers query,
//! the range a loss trains at is what its distribution draws, EDM's weighting uses the data's σ_d,
//! and CDL arms sit on top of their base loss.

use cdl::diffusion::loss::{plan_step, RowKind, StdLoss};
use cdl::diffusion::sampler::{DdpmVariance, SamplerConfig};
use cdl::train::recipe::{loss_config, loss_config_with, sampler_range, CdlKnobs, Levels, LossKind};

const TOY: [f64; 2] = [1.0, 1.0];

fn images() -> Vec<f64> {
    vec![0.25; 3 * 16 * 16]
}

#[test]
fn the_sampler_range_is_the_union_of_ddpm_and_edm_heun() {
    let (lo, hi) = sampler_range();
    let ddpm = SamplerConfig::DDPM.alpha_range().unwrap();
    let heun = SamplerConfig::Heun { steps: 18, churn: 0.0 }.alpha_range().unwrap();
    assert_eq!((lo, hi), (ddpm.0.min(heun.0), ddpm.1.max(heun.1)));
    assert!((lo + 10.12).abs() < 0.01 && (hi - 12.43).abs() < 0.01, "{lo} {hi}");
}

#[test]
fn itd_and_cdl_levels_cover_every_sampler_on_toys_and_images() {
    let (lo, hi) = sampler_range();
    let samplers = [
        SamplerConfig::DDPM,
        SamplerConfig::PARALLEL_TOY,
        SamplerConfig::Ddim { steps: 100 },
        SamplerConfig::Heun { steps: 18, churn: 0.0 },
        SamplerConfig::Ddpm { steps: 100, variance: DdpmVariance::Posterior },
    ];
    for variances in [TOY.to_vec(), images()] {
        for kind in [LossKind::Itd, LossKind::Cdl, LossKind::EdmCdl] {
            let cfg = loss_config(kind, &variances, CdlKnobs::default()).unwrap();
            let (a, b) = cfg.alpha_range().unwrap();
            assert!(a <= lo && b >= hi, "{kind} d = {}: trained [{a}, {b}]", variances.len());
            for s in samplers {
                let (sa, sb) = s.alpha_range().unwrap();
                assert!(a <= sa && b >= sb, "{kind}: {} leaves [{a}, {b}]", s.name());
            }
            // math.md's (μ, s) are kept; only the clip is widened, never narrowed below 3.
            if let Some(c) = &cfg.cdl {
                assert!(c.q.c >= 3.0 && c.q.s >= 3.0, "{:?}", c.q);
            }
            // Every drawn level lies in the recorded range.
            for step in 0..20 {
                let plan = plan_step(&cfg, 8, 1, step).unwrap();
                for r in plan.rows.iter().filter(|r| r.kind != RowKind::CdlQ) {
                    assert!(r.alpha >= a && r.alpha <= b, "{kind}: α {} outside [{a}, {b}]", r.alpha);
                }
            }
        }
    }
}

#[test]
fn ddpm_and_edm_keep_their_own_level_distributions() {
    let ddpm = loss_config(LossKind::Ddpm, &TOY, CdlKnobs::default()).unwrap();
    assert_eq!(ddpm.alpha_range().unwrap(), SamplerConfig::DDPM.alpha_range().unwrap());
    // EDM: α = −2 ln σ with ln σ ~ N(−1.2, 1.2²): the central 99.9 % is 2.4 ± 3.29·2.4.
    let edm = loss_config(LossKind::Edm, &TOY, CdlKnobs::default()).unwrap();
    let (a, b) = edm.alpha_range().unwrap();
    assert!((a - (2.4 - 3.2905 * 2.4)).abs() < 1e-3 && (b - (2.4 + 3.2905 * 2.4)).abs() < 1e-3, "{a} {b}");
    // EDM-VE: α uniform on [−2 ln 100, −2 ln 0.02].
    let ve = loss_config(LossKind::EdmVe, &TOY, CdlKnobs::default()).unwrap();
    let (a, b) = ve.alpha_range().unwrap();
    assert!((a + 2.0 * 100f64.ln()).abs() < 1e-9 && (b + 2.0 * 0.02f64.ln()).abs() < 1e-9, "{a} {b}");
    for step in 0..20 {
        for r in plan_step(&ve, 16, 2, step).unwrap().rows {
            assert!(r.alpha >= a - 1e-9 && r.alpha <= b + 1e-9, "{}", r.alpha);
        }
    }
}

#[test]
fn edm_weights_use_the_data_sigma() {
    // Standardised 2-D points: σ_d = 1 (the MLP's preconditioning); images in [−1, 1]: 0.5.
    for (variances, sd) in [(TOY.to_vec(), 1.0), (images(), 0.5)] {
        let cfg = loss_config(LossKind::Edm, &variances, CdlKnobs::default()).unwrap();
        let plan = plan_step(&cfg, 4, 3, 0).unwrap();
        for r in &plan.rows {
            let want = (1.0 + (-r.alpha).exp() / (sd * sd)) / 4.0;
            assert!((r.weight - want).abs() <= 1e-12 * want, "{} vs {want}", r.weight);
        }
    }
}

#[test]
fn cdl_arms_add_the_contrastive_term_to_their_base() {
    for (kind, base) in
        [(LossKind::Cdl, LossKind::Itd), (LossKind::EdmCdl, LossKind::Edm), (LossKind::EdmVeCdl, LossKind::EdmVe)]
    {
        assert!(kind.has_cdl() && !base.has_cdl());
        assert_eq!(kind.base(), base);
        let with = loss_config(kind, &TOY, CdlKnobs::default()).unwrap();
        let without = loss_config(base, &TOY, CdlKnobs::default()).unwrap();
        assert_eq!(with.std, without.std, "{kind}");
        assert!(with.cdl.is_some() && without.cdl.is_none());
        assert_eq!(kind.name().parse::<LossKind>().unwrap(), kind);
    }
    assert_eq!("edm+cdl".parse::<LossKind>().unwrap(), LossKind::EdmCdl);
    assert!(matches!(loss_config(LossKind::EdmVe, &TOY, CdlKnobs::default()).unwrap().std, StdLoss::EdmVe { .. }));
}

#[test]
fn explicit_levels_replace_the_defaults() {
    let q = cdl::diffusion::logistic::TruncLogistic::new(1.0, 2.0, 3.0).unwrap();
    let levels = Levels { q: Some(q), edm: Some((-1.0, 0.5)), sigma_data: None };
    let cfg = loss_config_with(LossKind::Cdl, &TOY, CdlKnobs::default(), &levels).unwrap();
    assert_eq!(cfg.alpha_range().unwrap(), (-5.0, 7.0));
    let edm = loss_config_with(LossKind::Edm, &TOY, CdlKnobs::default(), &levels).unwrap();
    let (a, b) = edm.alpha_range().unwrap();
    assert!((a - (2.0 - 2.0 * 3.2905 * 0.5)).abs() < 1e-3 && (b - (2.0 + 2.0 * 3.2905 * 0.5)).abs() < 1e-3);
    let bad = Levels { q: Some(cdl::diffusion::logistic::TruncLogistic { mu: 0.0, s: -1.0, c: 3.0 }), ..levels };
    assert!(loss_config_with(LossKind::Itd, &TOY, CdlKnobs::default(), &bad).is_err());
}
