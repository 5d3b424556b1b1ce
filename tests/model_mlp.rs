//! The MLP on the GPU against an f64 oracle composed from the CPU references: output, every
//! parameter gradient and the input gradient, with a random upstream gradient. The oracle's
//! own backward is checked against central differences first, so a wrong composition cannot
//! hide behind agreement with the GPU.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::collections::HashMap;

use cdl::model::mlp::{self, Mlp, MlpConfig};
use cdl::reference::elementwise::{silu_bwd, silu_fwd};
use cdl::reference::embedding::embedding_fwd;
use cdl::reference::gradcheck::{check, coords, dot};
use cdl::reference::groupnorm::{groupnorm_bwd_input, groupnorm_bwd_params, groupnorm_fwd, GroupNormShape};
use cdl::reference::matmul::{matmul, matmul_bwd_a, matmul_bwd_b, matmul_bwd_bias, MatmulShape};
use cdl::reference::philox::normal_vec;
use cdl::reference::to_f64;
use cdl::reference::tol::{compare, LOOSE};

type Tensors = HashMap<String, Vec<f64>>;

/// The MLP in f64, mirroring src/model/mlp.rs line by line.
struct Oracle {
    cfg: MlpConfig,
    b: usize,
    p: Tensors,
}

struct Cache {
    emb: Vec<f64>,
    e1: Vec<f64>,
    e1_act: Vec<f64>,
    blocks: Vec<[Vec<f64>; 7]>, // h_in, u, a, a_act, s, mean, rstd
    h: Vec<f64>,
}

impl Oracle {
    fn lin(&self, name: &str, x: &[f64], din: usize, dout: usize) -> Vec<f64> {
        let mut y = vec![0.0; self.b * dout];
        let s = MatmulShape { m: self.b, n: dout, k: din, trans_a: false, trans_b: true };
        matmul(&mut y, x, &self.p[&format!("{name}.weight")], Some(&self.p[&format!("{name}.bias")]), s);
        y
    }

    /// dW, db into `g`; returns dx.
    fn lin_bwd(&self, g: &mut Tensors, name: &str, x: &[f64], dy: &[f64], din: usize, dout: usize) -> Vec<f64> {
        let s = MatmulShape { m: self.b, n: dout, k: din, trans_a: false, trans_b: true };
        let mut dw = vec![0.0; dout * din];
        matmul_bwd_b(&mut dw, dy, x, s);
        let mut db = vec![0.0; dout];
        matmul_bwd_bias(&mut db, dy, self.b, dout);
        let mut dx = vec![0.0; self.b * din];
        matmul_bwd_a(&mut dx, dy, &self.p[&format!("{name}.weight")], s);
        g.insert(format!("{name}.weight"), dw);
        g.insert(format!("{name}.bias"), db);
        dx
    }

    fn forward(&self, x: &[f64], t: &[f64]) -> (Vec<f64>, Cache) {
        let (b, w, d, e) = (self.b, self.cfg.width, self.cfg.dim, self.cfg.emb_dim);
        let mut emb = vec![0.0; b * e];
        embedding_fwd(&mut emb, t, e);
        let e1 = self.lin("emb.fc1", &emb, e, w);
        let mut e1_act = vec![0.0; b * w];
        silu_fwd(&mut e1_act, &e1);
        let temb = self.lin("emb.fc2", &e1_act, w, w);
        let mut h = self.lin("inp", x, d, w);
        let ln = GroupNormShape::new(b, w, 1, 1);
        let mut blocks = Vec::new();
        for i in 0..self.cfg.blocks {
            let u: Vec<f64> = h.iter().zip(&temb).map(|(a, c)| a + c).collect();
            let a = self.lin(&format!("blocks.{i}.fc1"), &u, w, w);
            let mut a_act = vec![0.0; b * w];
            silu_fwd(&mut a_act, &a);
            let c = self.lin(&format!("blocks.{i}.fc2"), &a_act, w, w);
            let s: Vec<f64> = h.iter().zip(&c).map(|(a, c)| a + c).collect();
            let (mut hn, mut mean, mut rstd) = (vec![0.0; b * w], vec![0.0; b], vec![0.0; b]);
            let (gw, gb) = (&self.p[&format!("blocks.{i}.norm.weight")], &self.p[&format!("blocks.{i}.norm.bias")]);
            groupnorm_fwd(&mut hn, &mut mean, &mut rstd, &s, gw, gb, ln);
            blocks.push([h, u, a, a_act, s, mean, rstd]);
            h = hn;
        }
        let out = self.lin("out", &h, w, d);
        (out, Cache { emb, e1, e1_act, blocks, h })
    }

    fn backward(&self, c: &Cache, x: &[f64], dout: &[f64]) -> (Tensors, Vec<f64>) {
        let (b, w, d, e) = (self.b, self.cfg.width, self.cfg.dim, self.cfg.emb_dim);
        let ln = GroupNormShape::new(b, w, 1, 1);
        let mut g = Tensors::new();
        let mut dh = self.lin_bwd(&mut g, "out", &c.h, dout, w, d);
        let mut dtemb = vec![0.0; b * w];
        for i in (0..self.cfg.blocks).rev() {
            let [_, u, a, a_act, s, mean, rstd] = &c.blocks[i];
            let gw = &self.p[&format!("blocks.{i}.norm.weight")];
            let mut ds = vec![0.0; b * w];
            groupnorm_bwd_input(&mut ds, &dh, s, mean, rstd, gw, ln);
            let (mut dgw, mut dgb) = (vec![0.0; w], vec![0.0; w]);
            groupnorm_bwd_params(&mut dgw, &mut dgb, &dh, s, mean, rstd, ln);
            g.insert(format!("blocks.{i}.norm.weight"), dgw);
            g.insert(format!("blocks.{i}.norm.bias"), dgb);
            let da_act = self.lin_bwd(&mut g, &format!("blocks.{i}.fc2"), a_act, &ds, w, w);
            let mut da = vec![0.0; b * w];
            silu_bwd(&mut da, &da_act, a);
            let du = self.lin_bwd(&mut g, &format!("blocks.{i}.fc1"), u, &da, w, w);
            dh = ds.iter().zip(&du).map(|(p, q)| p + q).collect();
            for (t, v) in dtemb.iter_mut().zip(&du) {
                *t += v;
            }
        }
        let dx = self.lin_bwd(&mut g, "inp", x, &dh, d, w);
        let de1_act = self.lin_bwd(&mut g, "emb.fc2", &c.e1_act, &dtemb, w, w);
        let mut de1 = vec![0.0; b * w];
        silu_bwd(&mut de1, &de1_act, &c.e1);
        self.lin_bwd(&mut g, "emb.fc1", &c.emb, &de1, e, w);
        (g, dx)
    }
}

fn tensors(split: Vec<(String, Vec<usize>, Vec<f32>)>) -> Tensors {
    split.into_iter().map(|(n, _, v)| (n, to_f64(&v))).collect()
}

const CFG: MlpConfig = MlpConfig { dim: 2, width: 24, blocks: 2, emb_dim: 16 };
const BATCH: usize = 37;

fn inputs() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let x = normal_vec(BATCH * CFG.dim, 3, 0);
    let t: Vec<f32> = normal_vec(BATCH, 3, 1).iter().map(|v| 1.5 * v).collect();
    let dout = normal_vec(BATCH * CFG.dim, 3, 2);
    (x, t, dout)
}

/// The oracle's backward agrees with central differences of sum(out * dout), for every tensor.
#[test]
fn oracle_backward_matches_finite_differences() {
    let layout = mlp::layout(CFG);
    let p = tensors(layout.split(&layout.init_values(9)));
    let (x, t, dout) = inputs();
    let (x, t, dout) = (to_f64(&x), to_f64(&t), to_f64(&dout));
    let oracle = Oracle { cfg: CFG, b: BATCH, p: p.clone() };
    let (_, cache) = oracle.forward(&x, &t);
    let (grads, dx) = oracle.backward(&cache, &x, &dout);
    for (name, value) in &p {
        let loss = |v: &[f64]| {
            let mut q = p.clone();
            q.insert(name.clone(), v.to_vec());
            dot(&Oracle { cfg: CFG, b: BATCH, p: q }.forward(&x, &t).0, &dout)
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
    let model = pollster::block_on(Mlp::new(gpu, CFG, BATCH, 9)).unwrap();
    let (x, t, dout) = inputs();
    gpu.write(&model.x, &x);
    gpu.write(&model.t, &t);
    gpu.write(&model.dout, &dout);
    model.submit(gpu, true);
    let out = pollster::block_on(gpu.read(&model.out)).unwrap();
    let dx = pollster::block_on(gpu.read(&model.dx)).unwrap();
    let values = pollster::block_on(gpu.read(&model.params.value)).unwrap();
    let grads = pollster::block_on(gpu.read(&model.params.grad)).unwrap();

    let layout = &model.params.layout;
    let oracle = Oracle { cfg: CFG, b: BATCH, p: tensors(layout.split(&values)) };
    let (x64, t64, dout64) = (to_f64(&x), to_f64(&t), to_f64(&dout));
    let (want_out, cache) = oracle.forward(&x64, &t64);
    let (want_grads, want_dx) = oracle.backward(&cache, &x64, &dout64);

    let mut bad = Vec::new();
    let mut report = |what: &str, got: &[f32], want: &[f64]| {
        let r = compare(got, want, LOOSE);
        println!("{} {what}: {r}", if r.ok() { "OK    " } else { "NOT OK" });
        if !r.ok() {
            bad.push(what.to_string());
        }
    };
    report("out", &out, &want_out);
    report("dx", &dx, &want_dx);
    for (name, _, g) in layout.split(&grads) {
        report(&format!("grad {name}"), &g, &want_grads[&name]);
    }
    assert!(bad.is_empty(), "mismatches: {bad:?}");
    assert_eq!(model.param_count(), layout.count());
}

/// A second step gives the same gradients: zeroing works and nothing accumulates across steps.
#[test]
fn gradients_do_not_leak_across_steps() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let model = pollster::block_on(Mlp::new(gpu, CFG, BATCH, 4)).unwrap();
    let (x, t, dout) = inputs();
    gpu.write(&model.x, &x);
    gpu.write(&model.t, &t);
    gpu.write(&model.dout, &dout);
    model.submit(gpu, true);
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
