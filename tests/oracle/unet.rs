//! The UNet of src/model/unet.rs in f64, written from its header contract (not from its code):
//! a tape of steps recorded by the forward and walked backwards, gradients of activations summed
//! where a tensor is read twice. ResBlocks are the ResBlock oracle (tests/oracle/resblock.rs),
//! attention the reference `attention_fwd` / `attention_bwd`, the rest the CPU references. With
//! precond "edm" the net reads precond_in(x) and the output is precond_fwd(x, f), σ_d = 0.5.

use cdl::model::unet::SIGMA_DATA;
use cdl::model::{Precond, UNetConfig};
use cdl::reference::attention::{
    attention_bwd, attention_fwd, AttentionGrads, AttentionParams, AttentionSaved, AttentionShape,
};
use cdl::reference::conv2d::Conv2dShape;
use cdl::reference::elementwise::{silu_bwd, silu_fwd};
use cdl::reference::embedding::{embedding_fwd, precond_bwd, precond_fwd, precond_in};
use cdl::reference::groupnorm::{groupnorm_bwd_input, groupnorm_bwd_params, groupnorm_fwd, GroupNormShape};
use cdl::reference::matmul::{matmul, matmul_bwd_b, MatmulShape};
use cdl::reference::resample::{
    avgpool2x2_bwd_input, avgpool2x2_fwd, concat_bwd, concat_fwd, upsample2x_bwd_input, upsample2x_fwd, Nchw,
};

use super::resblock::{self as rb, Tensors};

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

fn silu(x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    silu_fwd(&mut y, x);
    y
}

fn silu_back(dy: &[f64], x: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; x.len()];
    silu_bwd(&mut dx, dy, x);
    dx
}

/// A GroupNorm's saved input statistics.
struct Norm {
    mean: Vec<f64>,
    rstd: Vec<f64>,
}

/// One recorded step. Activations are indices into `Cache::acts`: (B, c, r, r).
enum Node {
    Res { name: String, cfg: rb::Cfg, x: usize, out: usize, cache: rb::Cache },
    Attn { name: String, c: usize, r: usize, x: usize, out: usize, n: Vec<f64>, st: Norm, saved: [Vec<f64>; 3] },
    Down { c: usize, r: usize, x: usize, out: usize },
    Up { name: String, c: usize, r: usize, x: usize, out: usize, up: Vec<f64> },
    Concat { c1: usize, c2: usize, r: usize, a: usize, skip: usize, out: usize },
}

pub struct Cache {
    /// One-hot labels (B, K); empty when unconditional.
    onehot: Vec<f64>,
    /// Noise inputs (B,) and the net's input (x, or a_in x with "edm").
    t: Vec<f64>,
    x_in: Vec<f64>,
    emb: Vec<f64>,
    e1: Vec<f64>,
    e1_act: Vec<f64>,
    temb: Vec<f64>,
    acts: Vec<Vec<f64>>,
    /// (channels, side) of each activation.
    dims: Vec<(usize, usize)>,
    tape: Vec<Node>,
    on: Vec<f64>,
    on_st: Norm,
    oa: Vec<f64>,
}

pub struct Oracle<'a> {
    pub cfg: &'a UNetConfig,
    pub b: usize,
    pub p: &'a Tensors,
}

impl Oracle<'_> {
    fn t(&self, name: &str) -> &[f64] {
        rb::param(self.p, name)
    }

    fn conv_shape(&self, cin: usize, cout: usize, r: usize, k: usize) -> Conv2dShape {
        Conv2dShape::new(self.b, cin, cout, r, r, k, 1)
    }

    fn conv(&self, name: &str, x: &[f64], s: Conv2dShape) -> Vec<f64> {
        rb::conv_fwd(self.p, name, x, s)
    }

    fn conv_bwd(&self, g: &mut Tensors, name: &str, x: &[f64], dy: &[f64], s: Conv2dShape) -> Vec<f64> {
        rb::conv_bwd(self.p, g, name, x, dy, s)
    }

    fn lin_shape(&self, din: usize, dout: usize) -> MatmulShape {
        MatmulShape { m: self.b, n: dout, k: din, trans_a: false, trans_b: true }
    }

    fn lin(&self, name: &str, x: &[f64], din: usize, dout: usize) -> Vec<f64> {
        rb::linear_fwd(self.p, name, x, self.lin_shape(din, dout))
    }

    fn lin_bwd(&self, g: &mut Tensors, name: &str, x: &[f64], dy: &[f64], din: usize, dout: usize) -> Vec<f64> {
        rb::linear_bwd(self.p, g, name, x, dy, self.lin_shape(din, dout))
    }

    /// GroupNorm groups for c channels: min(norm_groups, c / 4), at least 1 (the header's G(c)).
    fn groups(&self, c: usize) -> usize {
        (c / 4).min(self.cfg.norm_groups).max(1)
    }

    fn gn_shape(&self, c: usize, r: usize) -> GroupNormShape {
        GroupNormShape::new(self.b, c, r * r, self.groups(c))
    }

    fn norm(&self, name: &str, x: &[f64], c: usize, r: usize) -> (Vec<f64>, Norm) {
        let s = self.gn_shape(c, r);
        let bg = self.b * s.g;
        let (mut y, mut mean, mut rstd) = (vec![0.0; x.len()], vec![0.0; bg], vec![0.0; bg]);
        let (w, b) = (self.t(&format!("{name}.weight")), self.t(&format!("{name}.bias")));
        groupnorm_fwd(&mut y, &mut mean, &mut rstd, x, w, b, s);
        (y, Norm { mean, rstd })
    }

    #[allow(clippy::too_many_arguments)]
    fn norm_bwd(&self, g: &mut Tensors, name: &str, x: &[f64], dy: &[f64], st: &Norm, c: usize, r: usize) -> Vec<f64> {
        let s = self.gn_shape(c, r);
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
        groupnorm_bwd_input(&mut dx, dy, x, &st.mean, &st.rstd, self.t(&format!("{name}.weight")), s);
        groupnorm_bwd_params(&mut dw, &mut db, dy, x, &st.mean, &st.rstd, s);
        g.insert(format!("{name}.weight"), dw);
        g.insert(format!("{name}.bias"), db);
        dx
    }

    fn attn_params(&self, name: &str) -> AttentionParams<'_, f64> {
        AttentionParams {
            w_qkv: self.t(&format!("{name}.qkv.weight")),
            b_qkv: self.t(&format!("{name}.qkv.bias")),
            w_o: self.t(&format!("{name}.proj.weight")),
            b_o: self.t(&format!("{name}.proj.bias")),
        }
    }

    // --- forward ---------------------------------------------------------------------------

    fn push(k: &mut Cache, v: Vec<f64>, c: usize, r: usize) -> usize {
        k.acts.push(v);
        k.dims.push((c, r));
        k.acts.len() - 1
    }

    /// ResBlock `{base}.res` to cout channels, then attention when the resolution asks.
    fn block(&self, k: &mut Cache, base: &str, h: usize, cout: usize) -> usize {
        let out = self.block_res_only(k, &format!("{base}.res"), h, cout);
        let r = k.dims[out].1;
        if self.cfg.attn_resolutions.contains(&r) {
            return self.attention(k, base, out);
        }
        out
    }

    /// h + attn(attn_norm(h)) with parameters `{base}.attn_norm.*`, `{base}.attn.*`.
    fn attention(&self, k: &mut Cache, base: &str, h: usize) -> usize {
        let (c, r) = k.dims[h];
        let (n, st) = self.norm(&format!("{base}.attn_norm"), &k.acts[h], c, r);
        let name = format!("{base}.attn");
        let s = AttentionShape::new(self.b, c, r * r, self.cfg.heads);
        let (mut y, mut qkv, mut attn, mut ao) =
            (vec![0.0; s.x_len()], vec![0.0; s.qkv_len()], vec![0.0; s.attn_len()], vec![0.0; s.x_len()]);
        attention_fwd(&mut y, &mut qkv, &mut attn, &mut ao, &n, self.attn_params(&name), s);
        let out = Self::push(k, add(&k.acts[h], &y), c, r);
        k.tape.push(Node::Attn { name: base.to_string(), c, r, x: h, out, n, st, saved: [qkv, attn, ao] });
        out
    }

    /// The unconditional forward (num_classes 0): the browser test's; the native ones pass labels.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub fn forward(&self, x: &[f64], t: &[f64]) -> (Vec<f64>, Cache) {
        self.forward_labeled(x, t, &[])
    }

    /// The forward with one-hot labels (B, num_classes); empty when num_classes is 0.
    pub fn forward_labeled(&self, x: &[f64], t: &[f64], onehot: &[f64]) -> (Vec<f64>, Cache) {
        let (cfg, b) = (self.cfg, self.b);
        let (ch, e, s, nk) = (cfg.channels, 4 * cfg.channels, cfg.image_size, cfg.num_classes);
        assert_eq!(onehot.len(), b * nk, "oracle: labels_onehot must be (B, num_classes)");
        let mut emb = vec![0.0; b * ch];
        embedding_fwd(&mut emb, t, ch);
        let e1 = self.lin("emb.fc1", &emb, ch, e);
        let e1_act = silu(&e1);
        let mut temb = self.lin("emb.fc2", &e1_act, e, e);
        if nk > 0 {
            let mut cls = vec![0.0; b * e];
            let sh = MatmulShape { m: b, n: e, k: nk, trans_a: false, trans_b: true };
            matmul(&mut cls, onehot, self.t("class_emb.weight"), None, sh);
            temb = add(&temb, &cls);
        }
        let x_in = match cfg.precond {
            Precond::Eps => x.to_vec(),
            Precond::Edm => {
                let mut v = vec![0.0; x.len()];
                precond_in(&mut v, t, x, x.len() / b, f64::from(SIGMA_DATA));
                v
            }
        };
        let h0 = self.conv("conv_in", &x_in, self.conv_shape(cfg.in_channels, ch, s, 3));
        let empty = || Norm { mean: vec![], rstd: vec![] };
        let mut k = Cache {
            onehot: onehot.to_vec(),
            t: t.to_vec(),
            x_in,
            emb,
            e1,
            e1_act,
            temb,
            acts: vec![],
            dims: vec![],
            tape: vec![],
            on: vec![],
            on_st: empty(),
            oa: vec![],
        };
        let mut h = Self::push(&mut k, h0, ch, s);
        let mut skips = vec![h];
        let levels = cfg.mult.len();
        for (l, m) in cfg.mult.iter().enumerate() {
            for i in 0..cfg.blocks_per_level {
                h = self.block(&mut k, &format!("down.{l}.{i}"), h, ch * m);
                skips.push(h);
            }
            if l + 1 < levels {
                let (c, r) = k.dims[h];
                let mut y = vec![0.0; b * c * r * r / 4];
                avgpool2x2_fwd(&mut y, &k.acts[h], Nchw::new(b, c, r, r));
                let out = Self::push(&mut k, y, c, r / 2);
                k.tape.push(Node::Down { c, r, x: h, out });
                h = out;
                skips.push(h);
            }
        }
        let c = k.dims[h].0;
        h = self.block_res_only(&mut k, "mid.res0", h, c);
        h = self.attention(&mut k, "mid", h);
        h = self.block_res_only(&mut k, "mid.res1", h, c);
        for (l, m) in cfg.mult.iter().enumerate().rev() {
            for i in 0..=cfg.blocks_per_level {
                let skip = skips.pop().expect("skip");
                let ((c1, r), c2) = (k.dims[h], k.dims[skip].0);
                let mut y = vec![0.0; b * (c1 + c2) * r * r];
                concat_fwd(&mut y, &k.acts[h], &k.acts[skip], b, c1, c2, r * r);
                let out = Self::push(&mut k, y, c1 + c2, r);
                k.tape.push(Node::Concat { c1, c2, r, a: h, skip, out });
                h = self.block(&mut k, &format!("up.{l}.{i}"), out, ch * m);
            }
            if l > 0 {
                let (c, r) = k.dims[h];
                let mut up = vec![0.0; b * c * 4 * r * r];
                upsample2x_fwd(&mut up, &k.acts[h], Nchw::new(b, c, r, r));
                let name = format!("up.{l}.conv");
                let y = self.conv(&name, &up, self.conv_shape(c, c, 2 * r, 3));
                let out = Self::push(&mut k, y, c, 2 * r);
                k.tape.push(Node::Up { name, c, r: 2 * r, x: h, out, up });
                h = out;
            }
        }
        let c = k.dims[h].0;
        let (on, on_st) = self.norm("norm_out", &k.acts[h], c, s);
        let oa = silu(&on);
        let f = self.conv("conv_out", &oa, self.conv_shape(c, cfg.out_channels, s, 3));
        (k.on, k.on_st, k.oa) = (on, on_st, oa);
        let out = match cfg.precond {
            Precond::Eps => f,
            Precond::Edm => {
                let mut eps = vec![0.0; f.len()];
                precond_fwd(&mut eps, t, x, &f, f.len() / b, f64::from(SIGMA_DATA));
                eps
            }
        };
        (out, k)
    }

    /// A ResBlock named exactly `name` (the middle's, and the first half of `block`), no attention.
    fn block_res_only(&self, k: &mut Cache, name: &str, h: usize, cout: usize) -> usize {
        let (cin, r) = k.dims[h];
        let cfg = rb::Cfg {
            b: self.b,
            cin,
            cout,
            h: r,
            w: r,
            g1: self.groups(cin),
            g2: self.groups(cout),
            e: k.temb.len() / self.b,
        };
        let (y, cache) = rb::Oracle { c: cfg, name, p: self.p }.forward(&k.acts[h], &k.temb);
        let out = Self::push(k, y, cout, r);
        k.tape.push(Node::Res { name: name.to_string(), cfg, x: h, out, cache });
        out
    }

    // --- backward --------------------------------------------------------------------------

    /// (every parameter gradient, dx) of sum(out * dout).
    pub fn backward(&self, k: &Cache, x: &[f64], dout: &[f64]) -> (Tensors, Vec<f64>) {
        let (cfg, b) = (self.cfg, self.b);
        let (ch, e, s) = (cfg.channels, 4 * cfg.channels, cfg.image_size);
        let mut g = Tensors::new();
        let mut d: Vec<Option<Vec<f64>>> = vec![None; k.acts.len()];
        let acc = |d: &mut Vec<Option<Vec<f64>>>, i: usize, v: Vec<f64>| {
            d[i] = Some(match d[i].take() {
                None => v,
                Some(old) => add(&old, &v),
            });
        };
        let last = k.acts.len() - 1;
        let c = k.dims[last].0;
        let (df, dx_skip) = match cfg.precond {
            Precond::Eps => (dout.to_vec(), vec![0.0; x.len()]),
            Precond::Edm => {
                let (mut df, mut dz) = (vec![0.0; dout.len()], vec![0.0; dout.len()]);
                precond_bwd(&mut df, &mut dz, dout, &k.t, dout.len() / b, f64::from(SIGMA_DATA));
                (df, dz)
            }
        };
        let doa = self.conv_bwd(&mut g, "conv_out", &k.oa, &df, self.conv_shape(c, cfg.out_channels, s, 3));
        let don = silu_back(&doa, &k.on);
        let dh = self.norm_bwd(&mut g, "norm_out", &k.acts[last], &don, &k.on_st, c, s);
        acc(&mut d, last, dh);
        let mut dtemb = vec![0.0; b * e];
        for node in k.tape.iter().rev() {
            match node {
                Node::Res { name, cfg: rc, x, out, cache } => {
                    let dy = d[*out].take().expect("gradient of a ResBlock output");
                    let o = rb::Oracle { c: *rc, name, p: self.p };
                    let (gr, dx, dt) = o.backward(cache, &k.acts[*x], &k.temb, &dy);
                    g.extend(gr);
                    dtemb = add(&dtemb, &dt);
                    acc(&mut d, *x, dx);
                }
                Node::Attn { name, c, r, x, out, n, st, saved } => {
                    let dy = d[*out].take().expect("gradient of an attention output");
                    let an = format!("{name}.attn");
                    let sh = AttentionShape::new(b, *c, r * r, cfg.heads);
                    let (mut dwq, mut dbq, mut dwo, mut dbo) =
                        (vec![0.0; 3 * c * c], vec![0.0; 3 * c], vec![0.0; c * c], vec![0.0; *c]);
                    let mut dn = vec![0.0; sh.x_len()];
                    let grads = AttentionGrads { dw_qkv: &mut dwq, db_qkv: &mut dbq, dw_o: &mut dwo, db_o: &mut dbo };
                    let sv = AttentionSaved { qkv: &saved[0], attn: &saved[1], out: &saved[2] };
                    attention_bwd(&mut dn, grads, &dy, n, sv, self.attn_params(&an), sh);
                    g.insert(format!("{an}.qkv.weight"), dwq);
                    g.insert(format!("{an}.qkv.bias"), dbq);
                    g.insert(format!("{an}.proj.weight"), dwo);
                    g.insert(format!("{an}.proj.bias"), dbo);
                    let dxn = self.norm_bwd(&mut g, &format!("{name}.attn_norm"), &k.acts[*x], &dn, st, *c, *r);
                    acc(&mut d, *x, add(&dy, &dxn));
                }
                Node::Down { c, r, x, out } => {
                    let dy = d[*out].take().expect("gradient of a pooled map");
                    let mut dx = vec![0.0; b * c * r * r];
                    avgpool2x2_bwd_input(&mut dx, &dy, Nchw::new(b, *c, *r, *r));
                    acc(&mut d, *x, dx);
                }
                Node::Up { name, c, r, x, out, up } => {
                    let dy = d[*out].take().expect("gradient of an upsampled map");
                    let dup = self.conv_bwd(&mut g, name, up, &dy, self.conv_shape(*c, *c, *r, 3));
                    let mut dx = vec![0.0; b * c * r * r / 4];
                    upsample2x_bwd_input(&mut dx, &dup, Nchw::new(b, *c, r / 2, r / 2));
                    acc(&mut d, *x, dx);
                }
                Node::Concat { c1, c2, r, a, skip, out } => {
                    let dy = d[*out].take().expect("gradient of a concatenation");
                    let (mut da, mut ds) = (vec![0.0; b * c1 * r * r], vec![0.0; b * c2 * r * r]);
                    concat_bwd(&mut da, &mut ds, &dy, b, *c1, *c2, r * r);
                    acc(&mut d, *a, da);
                    acc(&mut d, *skip, ds);
                }
            }
        }
        let dh0 = d[0].take().expect("gradient of conv_in's output");
        let dx_in = self.conv_bwd(&mut g, "conv_in", &k.x_in, &dh0, self.conv_shape(cfg.in_channels, ch, s, 3));
        let dx = match cfg.precond {
            Precond::Eps => dx_in,
            Precond::Edm => {
                // The input scaling is its own backward; x also reaches out through the skip term.
                let mut dx = vec![0.0; x.len()];
                precond_in(&mut dx, &k.t, &dx_in, x.len() / b, f64::from(SIGMA_DATA));
                add(&dx, &dx_skip)
            }
        };
        if cfg.num_classes > 0 {
            let nk = cfg.num_classes;
            let sh = MatmulShape { m: b, n: e, k: nk, trans_a: false, trans_b: true };
            let mut dw = vec![0.0; e * nk];
            matmul_bwd_b(&mut dw, &dtemb, &k.onehot, sh);
            g.insert("class_emb.weight".to_string(), dw);
        }
        let de1_act = self.lin_bwd(&mut g, "emb.fc2", &k.e1_act, &dtemb, e, e);
        let de1 = silu_back(&de1_act, &k.e1);
        self.lin_bwd(&mut g, "emb.fc1", &k.emb, &de1, ch, e);
        (g, dx)
    }
}
