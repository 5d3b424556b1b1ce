//! The ResBlock layer on the GPU against an f64 oracle composed from the CPU references: output,
//! dx, dtemb and every parameter gradient, with a random upstream gradient. The oracle's own
//! backward is checked against central differences first. Two shapes: Cin != Cout (1x1 skip
//! conv) and Cin == Cout (identity skip); the second also checks that dtemb accumulates.

use crate::common::{self, OracleCheck};

use crate::oracle::resblock as oracle;

use cdl::gpu::{Buffer, Dispatch, Gpu};
use cdl::nn::{GradMode, ParamLayout, Params, ResBlock};
use cdl::philox::normal_vec;
use cdl::reference::gradcheck::{check, coords, dot};
use cdl::reference::to_f64;
use cdl::reference::tol::LOOSE;
use oracle::{tensors, Cfg, Oracle};

const SKIP_CONV: Cfg = Cfg { b: 2, cin: 8, cout: 16, h: 8, w: 8, g1: 4, g2: 4, e: 32 };
const IDENTITY: Cfg = Cfg { b: 2, cin: 16, cout: 16, h: 8, w: 8, g1: 4, g2: 4, e: 32 };
const NAME: &str = "blk";

fn layout(c: Cfg) -> (ParamLayout, ResBlock) {
    let mut l = ParamLayout::default();
    let blk = ResBlock::new(&mut l, NAME, c.cin, c.cout, c.e, |_| c.g1);
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

// --- tests --------------------------------------------------------------------------------------

/// The oracle's backward agrees with central differences of sum(out * dout) for every parameter
/// tensor, x and temb. Norm gains and biases are moved off 1 and 0 so their gradients are generic.
fn oracle_gradcheck(c: Cfg) {
    let (layout, _) = layout(c);
    let mut p = tensors(layout.split(&layout.init_values(7)));
    common::jitter(&mut p, &layout, ".norm", 8);
    let (x, temb, dout) = inputs(c);
    let (x, temb, dout) = (to_f64(&x), to_f64(&temb), to_f64(&dout));
    let oracle = Oracle { c, name: NAME, p: &p };
    let (_, cache) = oracle.forward(&x, &temb);
    let (grads, dx, dtemb) = oracle.backward(&cache, &x, &temb, &dout);
    assert_eq!(grads.len(), p.len(), "a gradient per parameter tensor");
    for (name, value) in &p {
        let loss = |v: &[f64]| {
            let mut q = p.clone();
            q.insert(name.clone(), v.to_vec());
            dot(&Oracle { c, name: NAME, p: &q }.forward(&x, &temb).0, &dout)
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
    let mut rec = gpu.recorder();
    p.zero_grad(&mut rec);
    rec.dispatches(dispatches);
    rec.submit();
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
    let pv = tensors(p.layout.split(&values));
    let oracle = Oracle { c, name: NAME, p: &pv };
    let (x64, t64, d64) = (to_f64(&x), to_f64(&temb), to_f64(&dout));
    let (want_out, cache) = oracle.forward(&x64, &t64);
    let (want_grads, want_dx, mut want_dtemb) = oracle.backward(&cache, &x64, &t64, &d64);
    if mode == GradMode::Add {
        for (w, v) in want_dtemb.iter_mut().zip(&dtemb0) {
            *w += f64::from(*v);
        }
    }

    println!("{c:?}, dtemb {mode:?}");
    let mut report = OracleCheck::new("", LOOSE);
    report.check("out", &read(gpu, &out), &want_out);
    report.check("dx", &read(gpu, &dx), &want_dx);
    report.check("dtemb", &read(gpu, &dtemb), &want_dtemb);
    report.grads(&p.layout, &grads, &want_grads);
    report.finish();
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
