//! The row inputs the GPU builds (reference::rows, checked against shaders/rows.wgsl in the op
//! registry) are the inputs the diffusion plan defines (RowPlan::row_input, f64): same example,
//! same noise streams, same coefficients, for standard, clean-anchor and noisy-anchor rows.

use cdl::diffusion::logistic::TruncLogistic;
use cdl::diffusion::loss::{plan_step, CdlConfig, LossConfig};
use cdl::philox::normal_vec;
use cdl::reference::rows::row_inputs;

#[test]
fn gpu_row_inputs_follow_the_plan() {
    let mut cfg = LossConfig::cdl_official(TruncLogistic::ITD_CIFAR, None);
    cfg.cdl = Some(CdlConfig { anchors: 4, points: 3, ..CdlConfig::default() });
    let (batch, d) = (6usize, 2usize);
    // The first step whose fair coins gave both clean and noisy anchors.
    let plan = (0..64)
        .map(|step| plan_step(&cfg, batch, 77, step).expect("plan"))
        .find(|p| p.anchors.iter().any(|a| a.label < 0.0) && p.anchors.iter().any(|a| a.label > 0.0))
        .expect("a step with both labels");
    let x = normal_vec(batch * d, 1, 0);
    let seed = plan.rows[0].noise.seed;
    assert!(plan.rows.iter().all(|r| (r.noise.seed, r.noise0.seed) == (seed, seed)), "one seed per step");
    // The specs the trainer uploads (coefficients rounded once to f32).
    let specs = plan.row_specs();
    let rows = specs.len();
    let (mut inputs, mut targets) = (vec![0f32; rows * d], vec![0f32; rows * d]);
    row_inputs(&mut inputs, &mut targets, &x, &specs, seed, d);
    for r in 0..rows {
        let ex = plan.rows[r].example as usize;
        let xe: Vec<f64> = x[ex * d..(ex + 1) * d].iter().map(|&v| f64::from(v)).collect();
        let (mut want_in, mut want_t) = (vec![0.0; d], vec![0.0; d]);
        plan.row_input(r, &xe, &mut want_in, &mut want_t).expect("row_input");
        for i in 0..d {
            // Targets are the same f32 normals; inputs differ by f32 rounding of the coefficients.
            assert_eq!(f64::from(targets[r * d + i]), want_t[i], "row {r} target {i}");
            let got = f64::from(inputs[r * d + i]);
            assert!(
                (got - want_in[i]).abs() <= 1e-6 * (1.0 + want_in[i].abs()),
                "row {r} input {i}: {got} vs {}",
                want_in[i]
            );
        }
    }
}
