//! The attention layer on the GPU against the f64 reference `attention_fwd` / `attention_bwd`,
//! on the GPU's own initial parameters (read back from the flat buffers), with a random
//! upstream gradient: y, the saved softmax, dx and all four parameter gradients. The reference
//! backward itself is checked against central differences in tests/native/reference_nn_gradcheck.rs.

use crate::common::{self, OracleCheck};

use cdl::gpu::{Dispatch, Gpu};
use cdl::nn::{Attention, ParamLayout, Params};
use cdl::philox::normal_vec;
use cdl::reference::attention::{attention_bwd, attention_fwd, AttentionGrads, AttentionParams, AttentionSaved};
use cdl::reference::to_f64;
use cdl::reference::tol::LOOSE;

fn submit(gpu: &Gpu, p: &Params, fwd: &[Dispatch], bwd: &[Dispatch]) {
    let mut rec = gpu.recorder();
    p.zero_grad(&mut rec);
    rec.dispatches(fwd.iter().chain(bwd));
    rec.submit();
}

/// Runs one forward + backward of B maps of C channels and T tokens and compares everything.
fn check_layer(b: usize, c: usize, t: usize, heads: usize) {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let mut layout = ParamLayout::default();
    let layer = Attention::new(&mut layout, "attn", c, heads);
    let p = Params::new(gpu, layout, 11).unwrap();
    let bufs = layer.buffers(gpu, b, t).unwrap();
    let s = bufs.shape;
    // Scaled so the softmax is far from uniform (scores of a few units).
    let xx: Vec<f32> = normal_vec(s.x_len(), 21, t as u32).iter().map(|v| 3.0 * v).collect();
    let xdy = normal_vec(s.x_len(), 21, 1000 + t as u32);
    let x = gpu.upload("x", &xx).unwrap();
    let dy = gpu.upload("dy", &xdy).unwrap();
    // Outputs start as NaN: an element the layer fails to write fails the check.
    let y = gpu.upload("y", &vec![f32::NAN; s.x_len()]).unwrap();
    let dx = gpu.upload("dx", &vec![f32::NAN; s.x_len()]).unwrap();
    let fwd = pollster::block_on(layer.forward(gpu, &p, &x, None, &y, &bufs)).unwrap();
    let bwd = pollster::block_on(layer.backward(gpu, &p, &x, &dy, Some(&dx), &bufs)).unwrap();
    submit(gpu, &p, &fwd, &bwd);
    let read = |buf| pollster::block_on(gpu.read(buf)).unwrap();
    let (got_y, got_attn, got_dx) = (read(&y), read(&bufs.attn), read(&dx));
    let (values, grads) = (read(&p.value), read(&p.grad));

    let tensors: Vec<Vec<f64>> = p.layout.split(&values).into_iter().map(|(_, _, v)| to_f64(&v)).collect();
    let [w_qkv, b_qkv, w_o, b_o] = [&tensors[0], &tensors[1], &tensors[2], &tensors[3]];
    let params = AttentionParams { w_qkv, b_qkv, w_o, b_o };
    let (x64, dy64) = (to_f64(&xx), to_f64(&xdy));
    let (mut want_y, mut qkv, mut attn, mut out) =
        (vec![0.0; s.x_len()], vec![0.0; s.qkv_len()], vec![0.0; s.attn_len()], vec![0.0; s.x_len()]);
    attention_fwd(&mut want_y, &mut qkv, &mut attn, &mut out, &x64, params, s);
    let c = s.c;
    let (mut dw_qkv, mut db_qkv, mut dw_o, mut db_o) =
        (vec![0.0; 3 * c * c], vec![0.0; 3 * c], vec![0.0; c * c], vec![0.0; c]);
    let mut want_dx = vec![0.0; s.x_len()];
    let g = AttentionGrads { dw_qkv: &mut dw_qkv, db_qkv: &mut db_qkv, dw_o: &mut dw_o, db_o: &mut db_o };
    let saved = AttentionSaved { qkv: &qkv, attn: &attn, out: &out };
    attention_bwd(&mut want_dx, g, &dy64, &x64, saved, params, s);

    let mut report = OracleCheck::new(format!("B={b} C={c} T={t} heads={heads} "), LOOSE);
    report.check("y", &got_y, &want_y);
    report.check("attn", &got_attn, &attn);
    report.check("dx", &got_dx, &want_dx);
    let want_grads = [&dw_qkv, &db_qkv, &dw_o, &db_o];
    for ((name, _, g), want) in p.layout.split(&grads).into_iter().zip(want_grads) {
        report.check(&format!("grad {name}"), &g, want);
    }
    report.finish();

    // A second step gives the same gradients: nothing accumulates across steps.
    submit(gpu, &p, &fwd, &bwd);
    assert_eq!(read(&p.grad), grads, "gradients changed on a second identical step");
}

#[test]
fn one_head_8x8() {
    check_layer(2, 16, 64, 1);
}

#[test]
fn two_heads_8x8() {
    check_layer(2, 16, 64, 2);
}

/// T = 36 (6x6): not a power of two, and T T = 1296 is not a multiple of 64, so one head only.
#[test]
fn one_head_6x6() {
    check_layer(2, 16, 36, 1);
}

/// Shapes whose per-head blocks cannot be buffer views are refused with an error, not run.
#[test]
fn unaligned_shapes_are_refused() {
    let mut layout = ParamLayout::default();
    let two = Attention::new(&mut layout, "a", 16, 2);
    let three = Attention::new(&mut layout, "b", 16, 3);
    let one = Attention::new(&mut layout, "c", 16, 1);
    assert!(two.shape(2, 36).is_err(), "T*T = 1296 is not a multiple of 64");
    assert!(three.shape(2, 64).is_err(), "3 heads do not divide 16 channels");
    assert!(one.shape(2, 6).is_err(), "C*T = 96 is not a multiple of 64");
    assert!(one.shape(2, 36).is_ok() && two.shape(2, 64).is_ok());
}
