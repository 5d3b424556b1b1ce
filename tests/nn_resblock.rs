//! The ResBlock layer on the GPU against an f64 oracle composed from the CPU references: output,
//! dx, dtemb and every parameter gradient, with a random upstream gradient. The oracle's own
//! backward is checked against central differences first. Two shapes: Cin != Cout (1x1 skip
//! conv) and Cin == Cout (identity skip); the second also checks that dtemb accumulates.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use cdl::gpu::{Buffer, Dispatch, Gpu};
use cdl::nn::{GradMode, ParamLayout, Params, ResBlock};
use cdl::reference::conv2d::{conv2d_bwd_bias, conv2d_bwd_input, conv2d_bwd_weight, conv2d_fwd, Conv2dShape};
use cdl::reference::elementwise::{silu_bwd, silu_fwd};
use cdl::reference::embedding::{scale_shift_bwd_input, scale_shift_bwd_scale, scale_shift_bwd_shift, scale_shift_fwd};
use cdl::reference::gradcheck::{check, coords, dot};
use cdl::reference::groupnorm::{groupnorm_bwd_input, groupnorm_bwd_params, groupnorm_fwd, GroupNormShape};
use cdl::reference::matmul::{matmul, matmul_bwd_a, matmul_bwd_b, matmul_bwd_bias, MatmulShape};
use cdl::reference::philox::normal_vec;
use cdl::reference::to_f64;
use cdl::reference::tol::{compare, LOOSE};

type Tensors = HashMap<String, Vec<f64>>;

/// One test shape.
#[derive(Clone, Copy, Debug)]
struct Cfg {
    b: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    groups: usize,
    e: usize,
}

const SKIP_CONV: Cfg = Cfg { b: 2, cin: 8, cout: 16, h: 8, w: 8, groups: 4, e: 32 };
const IDENTITY: Cfg = Cfg { b: 2, cin: 16, cout: 16, h: 8, w: 8, groups: 4, e: 32 };
const NAME: &str = "blk";

fn layout(c: Cfg) -> (ParamLayout, ResBlock) {
    let mut l = ParamLayout::default();
    let blk = ResBlock::new(&mut l, NAME, c.cin, c.cout, c.e, |_| c.groups);
    (l, blk)
}

/// x (B, Cin, H, W), temb (B, E), dout (B, Cout, H, W).
fn inputs(c: Cfg) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let hw = c.h * c.w;
    let x: Vec<f32> = normal_vec(c.b * c.cin * hw, 5, 0).iter().map(|v| 0.5 + 1.5 * v).collect();
    let temb = normal_vec(c.b * c.e, 5, 1);
    let dout = normal_vec(c.b * c.cout * hw, 5, 2);
    (x, temb, dout)
}

// --- the oracle ---------------------------------------------------------------------------------

/// The block in f64, mirroring src/nn/resblock.rs.
struct Oracle {
    c: Cfg,
    p: Tensors,
}

struct Cache {
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

impl Oracle {
    fn t(&self, name: &str) -> &[f64] {
        &self.p[&format!("{NAME}.{name}")]
    }

    fn conv(&self, cin: usize, cout: usize, k: usize) -> Conv2dShape {
        Conv2dShape::new(self.c.b, cin, cout, self.c.h, self.c.w, k, 1)
    }

    fn conv_fwd(&self, name: &str, x: &[f64], s: Conv2dShape) -> Vec<f64> {
        let mut y = vec![0.0; s.out_len()];
        conv2d_fwd(&mut y, x, self.t(&format!("{name}.weight")), Some(self.t(&format!("{name}.bias"))), s);
        y
    }

    /// Weight and bias gradients into `g`; returns dx.
    fn conv_bwd(&self, g: &mut Tensors, name: &str, x: &[f64], dy: &[f64], s: Conv2dShape) -> Vec<f64> {
        let (mut dw, mut db, mut dx) = (vec![0.0; s.weight_len()], vec![0.0; s.cout], vec![0.0; s.x_len()]);
        conv2d_bwd_weight(&mut dw, dy, x, s);
        conv2d_bwd_bias(&mut db, dy, s);
        conv2d_bwd_input(&mut dx, dy, self.t(&format!("{name}.weight")), s);
        g.insert(format!("{NAME}.{name}.weight"), dw);
        g.insert(format!("{NAME}.{name}.bias"), db);
        dx
    }

    fn lin_shape(&self) -> MatmulShape {
        MatmulShape { m: self.c.b, n: self.c.cout, k: self.c.e, trans_a: false, trans_b: true }
    }

    fn lin_fwd(&self, name: &str, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; self.c.b * self.c.cout];
        matmul(&mut y, x, self.t(&format!("{name}.weight")), Some(self.t(&format!("{name}.bias"))), self.lin_shape());
        y
    }

    fn lin_bwd(&self, g: &mut Tensors, name: &str, x: &[f64], dy: &[f64]) -> Vec<f64> {
        let (s, c) = (self.lin_shape(), self.c);
        let (mut dw, mut db, mut dx) = (vec![0.0; c.cout * c.e], vec![0.0; c.cout], vec![0.0; c.b * c.e]);
        matmul_bwd_b(&mut dw, dy, x, s);
        matmul_bwd_bias(&mut db, dy, c.b, c.cout);
        matmul_bwd_a(&mut dx, dy, self.t(&format!("{name}.weight")), s);
        g.insert(format!("{NAME}.{name}.weight"), dw);
        g.insert(format!("{NAME}.{name}.bias"), db);
        dx
    }

    fn gn(&self, ch: usize) -> GroupNormShape {
        GroupNormShape::new(self.c.b, ch, self.c.h * self.c.w, self.c.groups)
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

    fn forward(&self, x: &[f64], temb: &[f64]) -> (Vec<f64>, Cache) {
        let c = self.c;
        let (hw, bg) = (c.h * c.w, c.b * c.groups);
        let s1 = self.gn(c.cin);
        let (mut n1, mut mean1, mut rstd1) = (vec![0.0; s1.len()], vec![0.0; bg], vec![0.0; bg]);
        groupnorm_fwd(&mut n1, &mut mean1, &mut rstd1, x, self.t("norm1.weight"), self.t("norm1.bias"), s1);
        let a1 = Self::silu(&n1);
        let h1 = self.conv_fwd("conv1", &a1, self.conv(c.cin, c.cout, 3));
        let ta = Self::silu(temb);
        let scale = self.lin_fwd("emb_scale", &ta);
        let shift = self.lin_fwd("emb_shift", &ta);
        let s2 = self.gn(c.cout);
        let (mut n2, mut mean2, mut rstd2) = (vec![0.0; s2.len()], vec![0.0; bg], vec![0.0; bg]);
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
    fn backward(&self, k: &Cache, x: &[f64], temb: &[f64], dout: &[f64]) -> (Tensors, Vec<f64>, Vec<f64>) {
        let c = self.c;
        let hw = c.h * c.w;
        let mut g = Tensors::new();
        let da2 = self.conv_bwd(&mut g, "conv2", &k.a2, dout, self.conv(c.cout, c.cout, 3));
        let dm = Self::silu_back(&da2, &k.m);
        let (mut dn2, mut dscale, mut dshift) = (vec![0.0; dm.len()], vec![0.0; c.b * c.cout], vec![0.0; c.b * c.cout]);
        scale_shift_bwd_input(&mut dn2, &dm, &k.scale, hw);
        scale_shift_bwd_scale(&mut dscale, &dm, &k.n2, hw);
        scale_shift_bwd_shift(&mut dshift, &dm, hw);
        let s2 = self.gn(c.cout);
        let mut dh1 = vec![0.0; dm.len()];
        groupnorm_bwd_input(&mut dh1, &dn2, &k.h1, &k.mean2, &k.rstd2, self.t("norm2.weight"), s2);
        let (mut dg2, mut db2) = (vec![0.0; c.cout], vec![0.0; c.cout]);
        groupnorm_bwd_params(&mut dg2, &mut db2, &dn2, &k.h1, &k.mean2, &k.rstd2, s2);
        g.insert(format!("{NAME}.norm2.weight"), dg2);
        g.insert(format!("{NAME}.norm2.bias"), db2);
        let da1 = self.conv_bwd(&mut g, "conv1", &k.a1, &dh1, self.conv(c.cin, c.cout, 3));
        let dn1 = Self::silu_back(&da1, &k.n1);
        let s1 = self.gn(c.cin);
        let mut dx = vec![0.0; x.len()];
        groupnorm_bwd_input(&mut dx, &dn1, x, &k.mean1, &k.rstd1, self.t("norm1.weight"), s1);
        let (mut dg1, mut db1) = (vec![0.0; c.cin], vec![0.0; c.cin]);
        groupnorm_bwd_params(&mut dg1, &mut db1, &dn1, x, &k.mean1, &k.rstd1, s1);
        g.insert(format!("{NAME}.norm1.weight"), dg1);
        g.insert(format!("{NAME}.norm1.bias"), db1);
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

fn tensors(split: Vec<(String, Vec<usize>, Vec<f32>)>) -> Tensors {
    split.into_iter().map(|(n, _, v)| (n, to_f64(&v))).collect()
}

// --- tests --------------------------------------------------------------------------------------

/// The oracle's backward agrees with central differences of sum(out * dout) for every parameter
/// tensor, x and temb. Norm gains and biases are moved off 1 and 0 so their gradients are generic.
fn oracle_gradcheck(c: Cfg) {
    let (layout, _) = layout(c);
    let mut p = tensors(layout.split(&layout.init_values(7)));
    for (i, (name, _)) in layout.shapes().iter().enumerate() {
        if name.contains(".norm") {
            let v = p.get_mut(name).unwrap();
            let noise = normal_vec(v.len(), 8, i as u32);
            for (a, r) in v.iter_mut().zip(noise) {
                *a += 0.3 * f64::from(r);
            }
        }
    }
    let (x, temb, dout) = inputs(c);
    let (x, temb, dout) = (to_f64(&x), to_f64(&temb), to_f64(&dout));
    let oracle = Oracle { c, p: p.clone() };
    let (_, cache) = oracle.forward(&x, &temb);
    let (grads, dx, dtemb) = oracle.backward(&cache, &x, &temb, &dout);
    assert_eq!(grads.len(), p.len(), "a gradient per parameter tensor");
    for (name, value) in &p {
        let loss = |v: &[f64]| {
            let mut q = p.clone();
            q.insert(name.clone(), v.to_vec());
            dot(&Oracle { c, p: q }.forward(&x, &temb).0, &dout)
        };
        check(name, loss, value, &grads[name], coords(value.len(), 6)).unwrap();
    }
    check("x", |v: &[f64]| dot(&oracle.forward(v, &temb).0, &dout), &x, &dx, coords(x.len(), 10)).unwrap();
    let loss_t = |v: &[f64]| dot(&oracle.forward(&x, v).0, &dout);
    check("temb", loss_t, &temb, &dtemb, coords(temb.len(), 10)).unwrap();
    println!("OK     oracle vs central differences: {c:?}, {} tensors, x, temb", p.len());
}

#[test]
fn oracle_backward_matches_finite_differences_skip_conv() {
    oracle_gradcheck(SKIP_CONV);
}

#[test]
fn oracle_backward_matches_finite_differences_identity_skip() {
    oracle_gradcheck(IDENTITY);
}

fn run(gpu: &Gpu, p: &Params, dispatches: &[Dispatch]) {
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    p.zero_grad(&mut enc);
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for d in dispatches {
            d.encode(&mut pass);
        }
    }
    gpu.queue.submit([enc.finish()]);
}

fn read(gpu: &Gpu, b: &Buffer) -> Vec<f32> {
    pollster::block_on(gpu.read(b)).unwrap()
}

/// GPU forward and backward against the oracle on the GPU's own initial parameters. With
/// `GradMode::Add`, dtemb starts from a known value and must end at that value plus the gradient.
fn gpu_vs_oracle(c: Cfg, mode: GradMode) {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let (layout, blk) = layout(c);
    let p = Params::new(gpu, layout, 11).unwrap();
    let (x, temb, dout) = inputs(c);
    let dtemb0: Vec<f32> = match mode {
        GradMode::Write => vec![f32::NAN; temb.len()],
        GradMode::Add => normal_vec(temb.len(), 5, 3),
    };
    let xb = gpu.upload("x", &x).unwrap();
    let tb = gpu.upload("temb", &temb).unwrap();
    let db = gpu.upload("dout", &dout).unwrap();
    let out = gpu.upload("out", &vec![f32::NAN; dout.len()]).unwrap();
    let dx = gpu.upload("dx", &vec![f32::NAN; x.len()]).unwrap();
    let dtemb = gpu.upload("dtemb", &dtemb0).unwrap();
    let acts = blk.acts(gpu, c.b, c.h, c.w).unwrap();
    let mut d = pollster::block_on(blk.forward(gpu, &p, &acts, &xb, &tb, &out)).unwrap();
    d.extend(pollster::block_on(blk.backward(gpu, &p, &acts, &xb, &tb, &db, &dx, &dtemb, mode)).unwrap());
    run(gpu, &p, &d);

    let values = read(gpu, &p.value);
    let grads = read(gpu, &p.grad);
    let oracle = Oracle { c, p: tensors(p.layout.split(&values)) };
    let (x64, t64, d64) = (to_f64(&x), to_f64(&temb), to_f64(&dout));
    let (want_out, cache) = oracle.forward(&x64, &t64);
    let (want_grads, want_dx, mut want_dtemb) = oracle.backward(&cache, &x64, &t64, &d64);
    if mode == GradMode::Add {
        for (w, v) in want_dtemb.iter_mut().zip(&dtemb0) {
            *w += f64::from(*v);
        }
    }

    let mut bad = Vec::new();
    let mut report = |what: &str, got: &[f32], want: &[f64]| {
        let r = compare(got, want, LOOSE);
        println!("{} {what}: {r}", if r.ok() { "OK    " } else { "NOT OK" });
        if !r.ok() {
            bad.push(what.to_string());
        }
    };
    println!("{c:?}, dtemb {mode:?}");
    report("out", &read(gpu, &out), &want_out);
    report("dx", &read(gpu, &dx), &want_dx);
    report("dtemb", &read(gpu, &dtemb), &want_dtemb);
    for (name, _, g) in p.layout.split(&grads) {
        report(&format!("grad {name}"), &g, &want_grads[&name]);
    }
    assert!(bad.is_empty(), "mismatches: {bad:?}");
}

#[test]
fn gpu_matches_oracle_skip_conv() {
    gpu_vs_oracle(SKIP_CONV, GradMode::Write);
}

#[test]
fn gpu_matches_oracle_identity_skip_accumulating_dtemb() {
    gpu_vs_oracle(IDENTITY, GradMode::Add);
}

#[test]
fn parameter_names_and_counts() {
    let (l, blk) = layout(SKIP_CONV);
    let names: Vec<String> = l.shapes().into_iter().map(|(n, _)| n).collect();
    let want: Vec<String> = ["norm1", "conv1", "emb_scale", "emb_shift", "norm2", "conv2", "skip"]
        .iter()
        .flat_map(|m| [format!("{NAME}.{m}.weight"), format!("{NAME}.{m}.bias")])
        .collect();
    assert_eq!(names, want);
    // norm1 2*8, conv1 16*8*9+16, emb 2*(16*32+16), norm2 2*16, conv2 16*16*9+16, skip 16*8+16.
    let (ci, co, e) = (8, 16, 32);
    let count = 2 * ci + (co * ci * 9 + co) + 2 * (co * e + co) + 2 * co + (co * co * 9 + co) + (co * ci + co);
    assert_eq!(l.count(), count);
    assert!(blk.skip.is_some());
    assert!(layout(IDENTITY).1.skip.is_none());
}
