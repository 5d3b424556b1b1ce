//! The training loop end to end on the GPU: losses fall (DDPM, ITD + CDL), a run stopped and
//! resumed from its checkpoint continues bit for bit, and a non-finite loss stops training with
//! the last good state kept.

use crate::common;

use cdl::diffusion::logistic::TruncLogistic;
use cdl::diffusion::loss::{CdlConfig, LossConfig, StdLoss, ZetaDist};
use cdl::gpu::Gpu;
use cdl::model::{Mlp, MlpConfig};
use cdl::train::trainer::{Examples, StepStats, TrainConfig, TrainError, Trainer};

/// A mixture of four Gaussians in 2-D (std 0.3 at (±1, ±1)), with `poison` examples set to NaN.
struct Blobs {
    points: Vec<f32>,
}

impl Blobs {
    fn new(n: usize) -> Self {
        let z = cdl::philox::normal_vec(2 * n, 99, 0);
        let mut points = Vec::with_capacity(2 * n);
        for i in 0..n {
            let (cx, cy) = (if i % 2 == 0 { 1.0 } else { -1.0 }, if i % 4 < 2 { 1.0 } else { -1.0 });
            points.push(cx + 0.3 * z[2 * i]);
            points.push(cy + 0.3 * z[2 * i + 1]);
        }
        Self { points }
    }
}

impl Examples for Blobs {
    fn len(&self) -> usize {
        self.points.len() / 2
    }
    fn row_len(&self) -> usize {
        2
    }
    fn gather(&self, idx: &[u32], _seed: u64, _step: u64, out: &mut [f32], _labels: &mut [u32]) {
        for (j, &i) in idx.iter().enumerate() {
            out[2 * j..2 * j + 2].copy_from_slice(&self.points[2 * i as usize..2 * i as usize + 2]);
        }
    }
}

/// Indices of step s: a pure function of s (so resumed runs see the same batches).
fn batcher(n: usize, b: usize) -> impl FnMut(u64, &mut Vec<u32>) {
    move |s, out| {
        out.clear();
        out.extend((0..b).map(|j| ((s as usize * b + j) * 7919 % n) as u32));
    }
}

const MLP: MlpConfig = MlpConfig { dim: 2, width: 32, blocks: 1, emb_dim: 16, precond: cdl::model::Precond::Eps };

fn cdl_loss() -> LossConfig {
    let q = TruncLogistic::cdl_toy(&[1.0, 1.0]).unwrap();
    LossConfig {
        std: StdLoss::Itd { q },
        lambda_std: 1.0,
        cdl: Some(CdlConfig { anchors: 2, points: 16, q, zeta: ZetaDist::Logistic(q), ..CdlConfig::default() }),
        lambda_cdl: 1.0,
        reference: None,
    }
}

fn config(loss: LossConfig, batch: usize) -> TrainConfig {
    TrainConfig { batch, seed: 3, warmup_steps: 10, ..TrainConfig::toy(loss) }
}

async fn trainer(gpu: &Gpu, cfg: TrainConfig, chunk: usize) -> Trainer {
    let net = Mlp::new(gpu, MLP, cfg.rows(), 11).await.unwrap();
    Trainer::new(gpu, Box::new(net), cfg, chunk).await.unwrap()
}

async fn run(gpu: &Gpu, t: &mut Trainer, data: &Blobs, steps: usize) -> Vec<StepStats> {
    let mut b = batcher(data.len(), t.config().batch);
    let mut all = Vec::new();
    while all.len() < steps {
        let n = (steps - all.len()).min(t.chunk_limit());
        all.extend(t.train(gpu, data, &mut b, n).await.unwrap());
    }
    all
}

fn mean(v: impl Iterator<Item = f32>) -> f32 {
    let v: Vec<f32> = v.collect();
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn losses_fall_for_ddpm_and_itd_plus_cdl() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let data = Blobs::new(1024);
    for (name, loss) in [("ddpm", LossConfig::standard(StdLoss::Ddpm)), ("itd+cdl", cdl_loss())] {
        let mut t = pollster::block_on(trainer(gpu, config(loss, 64), 100));
        let s = pollster::block_on(run(gpu, &mut t, &data, 400));
        let (first, last) = (mean(s[..50].iter().map(|s| s.std)), mean(s[350..].iter().map(|s| s.std)));
        println!("{name}: standard loss over the first 50 steps {first:.4}, over the last 50 {last:.4}");
        assert!(last < 0.8 * first, "{name}: {first} -> {last}");
        assert!(s.iter().all(|s| s.loss.is_finite() && s.grad_norm.is_finite()));
        if name == "itd+cdl" {
            assert!(s.iter().all(|s| s.logits.len() == 2 && s.labels.len() == 2));
            assert!(s.iter().any(|s| s.cdl > 0.0));
        }
    }
}

#[test]
fn resumed_run_continues_exactly() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let data = Blobs::new(512);
    // With clipping on, so the clip path is part of the exact-resume check.
    let cfg = TrainConfig { grad_clip: Some(0.5), ..config(cdl_loss(), 32) };
    // Uninterrupted: 24 steps in chunks of 8.
    let mut a = pollster::block_on(trainer(gpu, cfg.clone(), 8));
    let full = pollster::block_on(run(gpu, &mut a, &data, 24));
    let want = pollster::block_on(a.checkpoint(gpu, &[])).unwrap();
    // Stopped after 16 steps, checkpointed, and resumed by a new trainer (other init seed).
    let mut b = pollster::block_on(trainer(gpu, cfg.clone(), 8));
    let first = pollster::block_on(run(gpu, &mut b, &data, 16));
    let ck = pollster::block_on(b.checkpoint(gpu, &[])).unwrap();
    let bytes = cdl::train::checkpoint::encode(&ck).unwrap();
    let mut c = pollster::block_on(trainer(gpu, cfg, 8));
    c.restore(gpu, &cdl::train::checkpoint::decode(&bytes).unwrap()).unwrap();
    assert_eq!(c.step(), 16);
    let rest = pollster::block_on(run(gpu, &mut c, &data, 8));
    let got = pollster::block_on(c.checkpoint(gpu, &[])).unwrap();
    let curve: Vec<StepStats> = first.into_iter().chain(rest).collect();
    assert_eq!(curve, full, "loss curves differ");
    assert_eq!(got.step, 24);
    assert_eq!(got.tensors(), want.tensors(), "weights, EMA or Adam moments differ");
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_state() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let data = Blobs::new(256);
    let mut t = pollster::block_on(trainer(gpu, config(LossConfig::standard(StdLoss::Ddpm), 32), 4));
    pollster::block_on(run(gpu, &mut t, &data, 4));
    let good = pollster::block_on(t.checkpoint(gpu, &[])).unwrap();
    // Example 5 becomes NaN; the batcher reaches it at the third step of the next chunk.
    let mut bad = Blobs { points: data.points.clone() };
    bad.points[10] = f32::NAN;
    let mut calls = 0;
    let mut b = move |_s: u64, out: &mut Vec<u32>| {
        calls += 1;
        out.clear();
        out.extend((0..32).map(|j| if calls == 3 && j == 0 { 5 } else { 100 + j }));
    };
    let err = pollster::block_on(t.train(gpu, &bad, &mut b, 4)).unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, TrainError::NonFinite { step: 7, kept: 4, .. }), "{msg}");
    assert!(msg.contains("step 7") && msg.contains("step 4 is kept"), "{msg}");
    assert_eq!(t.step(), 4);
    let after = pollster::block_on(t.checkpoint(gpu, &[])).unwrap();
    assert_eq!(after.tensors(), good.tensors(), "state after the rollback differs from the last good state");
    // Training continues from the kept state.
    let s = pollster::block_on(run(gpu, &mut t, &data, 4));
    assert!(s.iter().all(|s| s.loss.is_finite()) && t.step() == 8);
}
