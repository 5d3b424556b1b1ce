//! The DDPM++ ResBlock (src/nn/resblock.rs) in f64, composed from the CPU references: forward,
//! and backward giving every parameter gradient, dx and dtemb. Shared by
//! tests/native/nn_resblock.rs and the UNet oracle (tests/oracle/unet.rs), with the conv and
//! linear layers by parameter name.

use std::collections::HashMap;

use cdl::reference::conv2d::{conv2d_bwd_bias, conv2d_bwd_input, conv2d_bwd_weight, conv2d_fwd, Conv2dShape};
use cdl::reference::elementwise::{silu_bwd, silu_fwd};
use cdl::reference::embedding::{scale_shift_bwd_input, scale_shift_bwd_scale, scale_shift_bwd_shift, scale_shift_fwd};
use cdl::reference::groupnorm::{groupnorm_bwd_input, groupnorm_bwd_params, groupnorm_fwd, GroupNormShape};
use cdl::reference::matmul::{matmul, matmul_bwd_a, matmul_bwd_b, matmul_bwd_bias, MatmulShape};
use cdl::reference::to_f64;

/// Named f64 tensors (parameters or their gradients).
pub type Tensors = HashMap<String, Vec<f64>>;

/// One block shape: B images of Cin x H x W to Cout channels, E-wide embedding, g1 groups for
/// norm1 (over Cin) and g2 for norm2 (over Cout).
#[derive(Clone, Copy, Debug)]
pub struct Cfg {
    pub b: usize,
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
    pub g1: usize,
    pub g2: usize,
    pub e: usize,
}

/// The block in f64, mirroring src/nn/resblock.rs: parameters `{name}.*` of `p`.
pub struct Oracle<'a> {
    pub c: Cfg,
    pub name: &'a str,
    pub p: &'a Tensors,
}

/// What the forward keeps for the backward.
pub struct Cache {
    n1: Vec<f64>,
    mean1: Vec<f64>,
    rstd1: Vec<f64>,
    a1: Vec<f64>,
    h1: Vec<f64>,
    ta: Vec<f64>,
    scale: Vec<f64>,
    n2: Vec<f64>,
    mean2: Vec<f64>,
    rstd2: Vec<f64>,
    m: Vec<f64>,
    a2: Vec<f64>,
}

impl Oracle<'_> {
    /// `{self.name}.{name}`.
    fn full(&self, name: &str) -> String {
        format!("{}.{name}", self.name)
    }

    fn t(&self, name: &str) -> &[f64] {
        param(self.p, &self.full(name))
    }

    fn conv(&self, cin: usize, cout: usize, k: usize) -> Conv2dShape {
        Conv2dShape::new(self.c.b, cin, cout, self.c.h, self.c.w, k, 1)
    }

    fn conv_fwd(&self, name: &str, x: &[f64], s: Conv2dShape) -> Vec<f64> {
        conv_fwd(self.p, &self.full(name), x, s)
    }

    fn conv_bwd(&self, g: &mut Tensors, name: &str, x: &[f64], dy: &[f64], s: Conv2dShape) -> Vec<f64> {
        conv_bwd(self.p, g, &self.full(name), x, dy, s)
    }

    fn lin_shape(&self) -> MatmulShape {
        MatmulShape { m: self.c.b, n: self.c.cout, k: self.c.e, trans_a: false, trans_b: true }
    }

    fn lin_fwd(&self, name: &str, x: &[f64]) -> Vec<f64> {
        linear_fwd(self.p, &self.full(name), x, self.lin_shape())
    }

    fn lin_bwd(&self, g: &mut Tensors, name: &str, x: &[f64], dy: &[f64]) -> Vec<f64> {
        linear_bwd(self.p, g, &self.full(name), x, dy, self.lin_shape())
    }

    fn gn(&self, ch: usize, g: usize) -> GroupNormShape {
        GroupNormShape::new(self.c.b, ch, self.c.h * self.c.w, g)
    }

    pub fn silu(x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; x.len()];
        silu_fwd(&mut y, x);
        y
    }

    pub fn silu_back(dy: &[f64], x: &[f64]) -> Vec<f64> {
        let mut dx = vec![0.0; x.len()];
        silu_bwd(&mut dx, dy, x);
        dx
    }

    pub fn forward(&self, x: &[f64], temb: &[f64]) -> (Vec<f64>, Cache) {
        let c = self.c;
        let hw = c.h * c.w;
        let s1 = self.gn(c.cin, c.g1);
        let (mut n1, mut mean1, mut rstd1) = (vec![0.0; s1.len()], vec![0.0; c.b * c.g1], vec![0.0; c.b * c.g1]);
        groupnorm_fwd(&mut n1, &mut mean1, &mut rstd1, x, self.t("norm1.weight"), self.t("norm1.bias"), s1);
        let a1 = Self::silu(&n1);
        let h1 = self.conv_fwd("conv1", &a1, self.conv(c.cin, c.cout, 3));
        let ta = Self::silu(temb);
        let scale = self.lin_fwd("emb_scale", &ta);
        let shift = self.lin_fwd("emb_shift", &ta);
        let s2 = self.gn(c.cout, c.g2);
        let (mut n2, mut mean2, mut rstd2) = (vec![0.0; s2.len()], vec![0.0; c.b * c.g2], vec![0.0; c.b * c.g2]);
        groupnorm_fwd(&mut n2, &mut mean2, &mut rstd2, &h1, self.t("norm2.weight"), self.t("norm2.bias"), s2);
        let mut m = vec![0.0; s2.len()];
        scale_shift_fwd(&mut m, &n2, &scale, &shift, hw);
        let a2 = Self::silu(&m);
        let h2 = self.conv_fwd("conv2", &a2, self.conv(c.cout, c.cout, 3));
        let skip = if c.cin != c.cout { self.conv_fwd("skip", x, self.conv(c.cin, c.cout, 1)) } else { x.to_vec() };
        let out = skip.iter().zip(&h2).map(|(a, b)| a + b).collect();
        (out, Cache { n1, mean1, rstd1, a1, h1, ta, scale, n2, mean2, rstd2, m, a2 })
    }

    /// (parameter gradients, dx, dtemb).
    pub fn backward(&self, k: &Cache, x: &[f64], temb: &[f64], dout: &[f64]) -> (Tensors, Vec<f64>, Vec<f64>) {
        let c = self.c;
        let hw = c.h * c.w;
        let mut g = Tensors::new();
        let da2 = self.conv_bwd(&mut g, "conv2", &k.a2, dout, self.conv(c.cout, c.cout, 3));
        let dm = Self::silu_back(&da2, &k.m);
        let (mut dn2, mut dscale, mut dshift) = (vec![0.0; dm.len()], vec![0.0; c.b * c.cout], vec![0.0; c.b * c.cout]);
        scale_shift_bwd_input(&mut dn2, &dm, &k.scale, hw);
        scale_shift_bwd_scale(&mut dscale, &dm, &k.n2, hw);
        scale_shift_bwd_shift(&mut dshift, &dm, hw);
        let s2 = self.gn(c.cout, c.g2);
        let mut dh1 = vec![0.0; dm.len()];
        groupnorm_bwd_input(&mut dh1, &dn2, &k.h1, &k.mean2, &k.rstd2, self.t("norm2.weight"), s2);
        let (mut dg2, mut db2) = (vec![0.0; c.cout], vec![0.0; c.cout]);
        groupnorm_bwd_params(&mut dg2, &mut db2, &dn2, &k.h1, &k.mean2, &k.rstd2, s2);
        g.insert(format!("{}.norm2.weight", self.name), dg2);
        g.insert(format!("{}.norm2.bias", self.name), db2);
        let da1 = self.conv_bwd(&mut g, "conv1", &k.a1, &dh1, self.conv(c.cin, c.cout, 3));
        let dn1 = Self::silu_back(&da1, &k.n1);
        let s1 = self.gn(c.cin, c.g1);
        let mut dx = vec![0.0; x.len()];
        groupnorm_bwd_input(&mut dx, &dn1, x, &k.mean1, &k.rstd1, self.t("norm1.weight"), s1);
        let (mut dg1, mut db1) = (vec![0.0; c.cin], vec![0.0; c.cin]);
        groupnorm_bwd_params(&mut dg1, &mut db1, &dn1, x, &k.mean1, &k.rstd1, s1);
        g.insert(format!("{}.norm1.weight", self.name), dg1);
        g.insert(format!("{}.norm1.bias", self.name), db1);
        let dskip = if c.cin != c.cout {
            self.conv_bwd(&mut g, "skip", x, dout, self.conv(c.cin, c.cout, 1))
        } else {
            dout.to_vec()
        };
        for (d, s) in dx.iter_mut().zip(&dskip) {
            *d += s;
        }
        let dta1 = self.lin_bwd(&mut g, "emb_scale", &k.ta, &dscale);
        let dta2 = self.lin_bwd(&mut g, "emb_shift", &k.ta, &dshift);
        let dta: Vec<f64> = dta1.iter().zip(&dta2).map(|(a, b)| a + b).collect();
        let dtemb = Self::silu_back(&dta, temb);
        (g, dx, dtemb)
    }
}

// ---
// Layers by parameter name, shared with the UNet oracle.

/// The parameter `name` of `p`.
pub fn param<'p>(p: &'p Tensors, name: &str) -> &'p [f64] {
    p.get(name).unwrap_or_else(|| panic!("oracle: no parameter {name}"))
}

/// Conv2d with the parameters `{name}.weight` and `{name}.bias`.
pub fn conv_fwd(p: &Tensors, name: &str, x: &[f64], s: Conv2dShape) -> Vec<f64> {
    let mut y = vec![0.0; s.out_len()];
    conv2d_fwd(&mut y, x, param(p, &format!("{name}.weight")), Some(param(p, &format!("{name}.bias"))), s);
    y
}

/// The weight and bias gradients of conv2d `name` into `g`; returns dx.
pub fn conv_bwd(p: &Tensors, g: &mut Tensors, name: &str, x: &[f64], dy: &[f64], s: Conv2dShape) -> Vec<f64> {
    let (mut dw, mut db, mut dx) = (vec![0.0; s.weight_len()], vec![0.0; s.cout], vec![0.0; s.x_len()]);
    conv2d_bwd_weight(&mut dw, dy, x, s);
    conv2d_bwd_bias(&mut db, dy, s);
    conv2d_bwd_input(&mut dx, dy, param(p, &format!("{name}.weight")), s);
    g.insert(format!("{name}.weight"), dw);
    g.insert(format!("{name}.bias"), db);
    dx
}

/// The linear layer `name`, y = x Wᵀ + b: x (s.m, s.k) to y (s.m, s.n).
pub fn linear_fwd(p: &Tensors, name: &str, x: &[f64], s: MatmulShape) -> Vec<f64> {
    let mut y = vec![0.0; s.m * s.n];
    matmul(&mut y, x, param(p, &format!("{name}.weight")), Some(param(p, &format!("{name}.bias"))), s);
    y
}

/// The weight and bias gradients of linear layer `name` into `g`; returns dx.
pub fn linear_bwd(p: &Tensors, g: &mut Tensors, name: &str, x: &[f64], dy: &[f64], s: MatmulShape) -> Vec<f64> {
    let (mut dw, mut db, mut dx) = (vec![0.0; s.n * s.k], vec![0.0; s.n], vec![0.0; s.m * s.k]);
    matmul_bwd_b(&mut dw, dy, x, s);
    matmul_bwd_bias(&mut db, dy, s.m, s.n);
    matmul_bwd_a(&mut dx, dy, param(p, &format!("{name}.weight")), s);
    g.insert(format!("{name}.weight"), dw);
    g.insert(format!("{name}.bias"), db);
    dx
}

/// Named f64 copies of the (name, shape, data) triples of `ParamLayout::split`.
pub fn tensors(split: Vec<(String, Vec<usize>, Vec<f32>)>) -> Tensors {
    split.into_iter().map(|(n, _, v)| (n, to_f64(&v))).collect()
}
