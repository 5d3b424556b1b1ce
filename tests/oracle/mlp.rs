//! The 2-D MLP in f64, composed from the CPU references and mirroring src/model/mlp.rs line by
//! line; shared by the native test (tests/native/model_mlp.rs) and the browser test (tests/web.rs).

use std::collections::HashMap;

use cdl::model::mlp::{MlpConfig, Precond, SIGMA_DATA};
use cdl::reference::elementwise::{silu_bwd, silu_fwd};
use cdl::reference::embedding::{embedding_fwd, precond_bwd, precond_fwd};
use cdl::reference::groupnorm::{groupnorm_bwd_input, groupnorm_bwd_params, groupnorm_fwd, GroupNormShape};
use cdl::reference::matmul::{matmul, matmul_bwd_a, matmul_bwd_b, matmul_bwd_bias, MatmulShape};
use cdl::reference::to_f64;

pub type Tensors = HashMap<String, Vec<f64>>;

/// The MLP in f64, mirroring src/model/mlp.rs line by line.
pub struct Oracle {
    pub cfg: MlpConfig,
    pub b: usize,
    pub p: Tensors,
}

pub struct Cache {
    emb: Vec<f64>,
    e1: Vec<f64>,
    e1_act: Vec<f64>,
    blocks: Vec<[Vec<f64>; 7]>, // h_in, u, a, a_act, s, mean, rstd
    h: Vec<f64>,
    t: Vec<f64>,
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

    pub fn forward(&self, x: &[f64], t: &[f64]) -> (Vec<f64>, Cache) {
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
        let f = self.lin("out", &h, w, d);
        let out = match self.cfg.precond {
            Precond::Eps => f,
            Precond::Edm => {
                let mut eps = vec![0.0; b * d];
                precond_fwd(&mut eps, t, x, &f, d, f64::from(SIGMA_DATA));
                eps
            }
        };
        (out, Cache { emb, e1, e1_act, blocks, h, t: t.to_vec() })
    }

    pub fn backward(&self, c: &Cache, x: &[f64], dout: &[f64]) -> (Tensors, Vec<f64>) {
        let (b, w, d, e) = (self.b, self.cfg.width, self.cfg.dim, self.cfg.emb_dim);
        let ln = GroupNormShape::new(b, w, 1, 1);
        let mut g = Tensors::new();
        let (df, dx_skip) = match self.cfg.precond {
            Precond::Eps => (dout.to_vec(), vec![0.0; b * d]),
            Precond::Edm => {
                let (mut df, mut dz) = (vec![0.0; b * d], vec![0.0; b * d]);
                precond_bwd(&mut df, &mut dz, dout, &c.t, d, f64::from(SIGMA_DATA));
                (df, dz)
            }
        };
        let mut dh = self.lin_bwd(&mut g, "out", &c.h, &df, w, d);
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
        let dx: Vec<f64> = self.lin_bwd(&mut g, "inp", x, &dh, d, w).iter().zip(&dx_skip).map(|(a, s)| a + s).collect();
        let de1_act = self.lin_bwd(&mut g, "emb.fc2", &c.e1_act, &dtemb, w, w);
        let mut de1 = vec![0.0; b * w];
        silu_bwd(&mut de1, &de1_act, &c.e1);
        self.lin_bwd(&mut g, "emb.fc1", &c.emb, &de1, e, w);
        (g, dx)
    }
}

pub fn tensors(split: Vec<(String, Vec<usize>, Vec<f32>)>) -> Tensors {
    split.into_iter().map(|(n, _, v)| (n, to_f64(&v))).collect()
}
