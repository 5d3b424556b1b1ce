//! The MLP on the GPU against an f64 oracle composed from the CPU references: output, every
//! parameter gradient and the input gradient, with a random upstream gradient. The oracle's
//! own backward is checked against central differences first, so a wrong composition cannot
//! hide behind agreement with the GPU.

use crate::common::{self, OracleCheck};

use crate::oracle::mlp as oracle;

use cdl::model::mlp::{self, Mlp, MlpConfig, Precond};
use cdl::philox::normal_vec;
use cdl::reference::gradcheck::{check, coords, dot};
use cdl::reference::to_f64;
use cdl::reference::tol::LOOSE;
use oracle::{tensors, Oracle};

const CFG: MlpConfig = MlpConfig { dim: 2, width: 24, blocks: 2, emb_dim: 16, precond: Precond::Edm };
/// Both output parameterisations; every check runs on each.
const CFGS: [MlpConfig; 2] = [CFG, MlpConfig { precond: Precond::Eps, ..CFG }];
const BATCH: usize = 37;

/// x ~ N(0, 1), t ~ 1.5 N(0, 1) (alpha = 8 t spans the range where both preconditioning
/// coefficients matter), dout ~ N(0, 1).
fn inputs() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let x = normal_vec(BATCH * CFG.dim, 3, 0);
    let t: Vec<f32> = normal_vec(BATCH, 3, 1).iter().map(|v| 1.5 * v).collect();
    let dout = normal_vec(BATCH * CFG.dim, 3, 2);
    (x, t, dout)
}

/// The oracle's backward agrees with central differences of sum(out * dout), for every tensor.
#[test]
fn oracle_backward_matches_finite_differences() {
    for cfg in CFGS {
        oracle_backward_matches_finite_differences_for(cfg);
    }
}

fn oracle_backward_matches_finite_differences_for(cfg: MlpConfig) {
    let layout = mlp::layout(cfg);
    let p = tensors(layout.split(&layout.init_values(9)));
    let (x, t, dout) = inputs();
    let (x, t, dout) = (to_f64(&x), to_f64(&t), to_f64(&dout));
    let oracle = Oracle { cfg, b: BATCH, p: p.clone() };
    let (_, cache) = oracle.forward(&x, &t);
    let (grads, dx) = oracle.backward(&cache, &x, &dout);
    for (name, value) in &p {
        let loss = |v: &[f64]| {
            let mut q = p.clone();
            q.insert(name.clone(), v.to_vec());
            dot(&Oracle { cfg, b: BATCH, p: q }.forward(&x, &t).0, &dout)
        };
        check(name, loss, value, &grads[name], coords(value.len(), 12)).unwrap();
    }
    let loss_x = |v: &[f64]| dot(&oracle.forward(v, &t).0, &dout);
    check("x", loss_x, &x, &dx, coords(x.len(), 20)).unwrap();
}

/// GPU forward and backward against the oracle on the GPU's own initial parameters.
#[test]
fn gpu_matches_oracle() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    for cfg in CFGS {
        println!("precond {}", cfg.precond.name());
        gpu_matches_oracle_for(gpu, cfg);
    }
}

/// A model of `cfg` (initial parameters from `seed`) after one forward and backward of `inputs()`.
fn stepped(gpu: &cdl::gpu::Gpu, cfg: MlpConfig, seed: u64) -> Mlp {
    let model = pollster::block_on(Mlp::new(gpu, cfg, BATCH, seed)).unwrap();
    let (x, t, dout) = inputs();
    gpu.write(&model.x, &x);
    gpu.write(&model.t, &t);
    gpu.write(&model.dout, &dout);
    model.submit(gpu, true);
    model
}

fn gpu_matches_oracle_for(gpu: &cdl::gpu::Gpu, cfg: MlpConfig) {
    let model = stepped(gpu, cfg, 9);
    let (x, t, dout) = inputs();
    let out = pollster::block_on(gpu.read(&model.out)).unwrap();
    let dx = pollster::block_on(gpu.read(&model.dx)).unwrap();
    let values = pollster::block_on(gpu.read(&model.params.value)).unwrap();
    let grads = pollster::block_on(gpu.read(&model.params.grad)).unwrap();

    let layout = &model.params.layout;
    let oracle = Oracle { cfg, b: BATCH, p: tensors(layout.split(&values)) };
    let (x64, t64, dout64) = (to_f64(&x), to_f64(&t), to_f64(&dout));
    let (want_out, cache) = oracle.forward(&x64, &t64);
    let (want_grads, want_dx) = oracle.backward(&cache, &x64, &dout64);

    let mut report = OracleCheck::new("", LOOSE);
    report.check("out", &out, &want_out);
    report.check("dx", &dx, &want_dx);
    report.grads(layout, &grads, &want_grads);
    report.finish();
    assert_eq!(model.param_count(), layout.count());
}

/// A second step gives the same gradients: zeroing works and nothing accumulates across steps.
#[test]
fn gradients_do_not_leak_across_steps() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let model = stepped(gpu, CFG, 4);
    let first = pollster::block_on(gpu.read(&model.params.grad)).unwrap();
    model.submit(gpu, true);
    let second = pollster::block_on(gpu.read(&model.params.grad)).unwrap();
    assert_eq!(first, second);
}

#[test]
fn default_config_has_the_documented_size() {
    // emb: 128*128+128 + 128*128+128; inp: 2*128+128; 2 blocks of 2*(128*128+128) + 2*128;
    // out: 128*2+2.
    let want = 2 * (128 * 128 + 128) + (2 * 128 + 128) + 2 * (2 * (128 * 128 + 128) + 2 * 128) + (128 * 2 + 2);
    assert_eq!(mlp::layout(MlpConfig::default()).count(), want);
}
