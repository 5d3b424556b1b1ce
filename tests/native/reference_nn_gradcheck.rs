//! The UNet op references checked on the CPU (STYLE practice 8a, 8c): every backward against f64
//! central differences of the fake loss `sum(fwd(inputs) * dout)` with a random `dout`, with
//! respect to every input and parameter; forward sanity checks that can fail; the
//! accumulate-vs-overwrite contract; optimizer updates against closed forms.
//!
//! Shapes are small and not powers of two so that an index mix-up cannot hide behind symmetry.

use cdl::diffusion::schedule::EdmPrecond;
use cdl::philox::normal_vec;
use cdl::reference::attention::{
    attention_bwd, attention_fwd, attention_mix_bwd, attention_mix_fwd, attention_scores_bwd, attention_scores_fwd,
    softmax_rows_bwd, softmax_rows_fwd, AttentionGrads, AttentionParams, AttentionSaved, AttentionShape,
};
use cdl::reference::conv2d::{conv2d_bwd_bias, conv2d_bwd_input, conv2d_bwd_weight, conv2d_fwd, Conv2dShape};
use cdl::reference::embedding::{
    embedding_bwd_t, embedding_fwd, precond_bwd, precond_coeffs, precond_fwd, precond_in, scale_shift_bwd_input,
    scale_shift_bwd_scale, scale_shift_bwd_shift, scale_shift_fwd, scale_shift_silu_bwd_input,
    scale_shift_silu_bwd_params, scale_shift_silu_fwd,
};
use cdl::reference::groupnorm::{
    groupnorm_bwd_input, groupnorm_bwd_params, groupnorm_fwd, groupnorm_silu_bwd_input, groupnorm_silu_bwd_params,
    groupnorm_silu_fwd, GroupNormShape,
};
use cdl::reference::optim::{adam_step, clip_grad_norm, ema_update, grad_norm, AdamConfig};
use cdl::reference::resample::{
    avgpool2x2_bwd_input, avgpool2x2_fwd, concat_bwd, concat_fwd, upsample2x_bwd_input, upsample2x_fwd, Nchw,
};
use cdl::reference::tol::{self, Tol};
use cdl::reference::{gradcheck, to_f64};

const SEED: u64 = 0xC0FF_EE00_0008;
/// Coordinates checked per tensor (all of them when the tensor is smaller).
const COORDS: usize = 30;
/// Tolerance for f64 forward identities that involve a few roundings.
const F64_TIGHT: Tol = Tol { atol: 1e-12, rtol: 1e-12 };

/// `n` standard normals (f32 Philox draws, as everywhere in the tests) widened to f64.
fn randn(n: usize, tag: u32) -> Vec<f64> {
    to_f64(&normal_vec(n, SEED, tag))
}

/// `n` normals scaled by `1 / sqrt(fan_in)`, so that layers keep activations O(1).
fn randw(n: usize, fan_in: usize, tag: u32) -> Vec<f64> {
    let k = 1.0 / (fan_in as f64).sqrt();
    randn(n, tag).into_iter().map(|v| v * k).collect()
}

fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

/// Central-difference check of `analytic` = d loss / d x at up to COORDS coordinates.
#[track_caller]
fn check(what: &str, loss: impl Fn(&[f64]) -> f64, x: &[f64], analytic: &[f64]) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let coords = gradcheck::coords(x.len(), COORDS);
    if let Err(e) = gradcheck::check(what, loss, x, analytic, coords) {
        panic!("{e}");
    }
}

/// `check` of loss(x, a, b) in each of its three inputs against the analytic gradients, named
/// `{what} {names[i]}`.
#[track_caller]
fn check_each(
    what: &str,
    names: [&str; 3],
    loss: impl Fn(&[f64], &[f64], &[f64]) -> f64,
    [x, a, b]: [&[f64]; 3],
    [dx, da, db]: [&[f64]; 3],
) {
    check(&format!("{what} {}", names[0]), |v| loss(v, a, b), x, dx);
    check(&format!("{what} {}", names[1]), |v| loss(x, v, b), a, da);
    check(&format!("{what} {}", names[2]), |v| loss(x, a, v), b, db);
}

/// Calls a backward twice on one buffer (and once on a buffer full of garbage): an overwritten
/// gradient must come out the same each time.
#[track_caller]
fn assert_overwrites(what: &str, n: usize, bwd: impl Fn(&mut [f64])) {
    let mut d = vec![0.0; n];
    bwd(&mut d);
    let once = d.clone();
    assert!(once.iter().any(|&v| v != 0.0), "{what}: gradient is all zeros");
    bwd(&mut d);
    tol::assert_close(&format!("{what} called twice"), &d, &once, tol::EXACT);
    let mut g = vec![7.0; n];
    bwd(&mut g);
    tol::assert_close(&format!("{what} on a dirty buffer"), &g, &once, tol::EXACT);
}

/// Calls a backward twice on one zeroed buffer: an accumulated gradient must double.
#[track_caller]
fn assert_accumulates(what: &str, n: usize, bwd: impl Fn(&mut [f64])) {
    let mut d = vec![0.0; n];
    bwd(&mut d);
    let twice: Vec<f64> = d.iter().map(|v| 2.0 * v).collect();
    assert!(d.iter().any(|&v| v != 0.0), "{what}: gradient is all zeros");
    bwd(&mut d);
    tol::assert_close(&format!("{what} called twice"), &d, &twice, tol::EXACT);
}

// --- conv2d -------------------------------------------------------------------------------------

/// B = 2, Cin = 6, Cout = 5, H = 5, W = 7.
fn conv_shape(k: usize, stride: usize) -> Conv2dShape {
    Conv2dShape::new(2, 6, 5, 5, 7, k, stride)
}

fn conv_fwd(x: &[f64], w: &[f64], bias: &[f64], s: Conv2dShape) -> Vec<f64> {
    let mut out = vec![0.0; s.out_len()];
    conv2d_fwd(&mut out, x, w, Some(bias), s);
    out
}

fn conv2d_gradcheck(k: usize, stride: usize) {
    let s = conv_shape(k, stride);
    let what = format!("conv2d k{k} s{stride}");
    let x = randn(s.x_len(), 1);
    let w = randw(s.weight_len(), s.cin * k * k, 2);
    let bias = randn(s.cout, 3);
    let dout = randn(s.out_len(), 4);

    let mut dx = vec![0.0; s.x_len()];
    conv2d_bwd_input(&mut dx, &dout, &w, s);
    let mut dw = vec![0.0; s.weight_len()];
    conv2d_bwd_weight(&mut dw, &dout, &x, s);
    let mut db = vec![0.0; s.cout];
    conv2d_bwd_bias(&mut db, &dout, s);

    let l = |x: &[f64], w: &[f64], b: &[f64]| gradcheck::dot(&conv_fwd(x, w, b, s), &dout);
    check_each(&what, ["dx", "dweight", "dbias"], l, [&x, &w, &bias], [&dx, &dw, &db]);
}

#[test]
fn conv2d_gradcheck_k3_s1() {
    conv2d_gradcheck(3, 1);
}

#[test]
fn conv2d_gradcheck_k3_s2() {
    conv2d_gradcheck(3, 2);
}

#[test]
fn conv2d_gradcheck_k1_s1() {
    conv2d_gradcheck(1, 1);
}

#[test]
fn conv2d_gradcheck_k1_s2() {
    conv2d_gradcheck(1, 2);
}

#[test]
fn conv2d_output_size_follows_pytorch() {
    // (H + 2p - k) / s + 1 with H = 5, W = 7.
    for (k, stride, ho, wo) in [(3, 1, 5, 7), (3, 2, 3, 4), (1, 1, 5, 7), (1, 2, 3, 4)] {
        let s = conv_shape(k, stride);
        assert_eq!((s.ho(), s.wo()), (ho, wo), "k{k} s{stride}");
    }
    let even = Conv2dShape::new(1, 1, 1, 8, 6, 3, 2);
    assert_eq!((even.ho(), even.wo()), (4, 3));
}

#[test]
fn conv2d_identity_kernel_returns_input() {
    for (k, stride) in [(3, 1), (3, 2), (1, 1), (1, 2)] {
        let s = Conv2dShape::new(2, 4, 4, 5, 7, k, stride);
        let x = randn(s.x_len(), 10);
        let mut w = vec![0.0; s.weight_len()];
        for c in 0..s.cin {
            w[((c * s.cin + c) * k + k / 2) * k + k / 2] = 1.0;
        }
        let out = conv_fwd(&x, &w, &[0.0; 4], s);
        // Stride 2 keeps the even rows and columns: out[oy, ox] = x[2 oy, 2 ox].
        let mut expected = Vec::new();
        for bc in 0..s.b * s.cin {
            for oy in 0..s.ho() {
                for ox in 0..s.wo() {
                    expected.push(x[(bc * s.h + oy * stride) * s.w + ox * stride]);
                }
            }
        }
        tol::assert_close(&format!("identity k{k} s{stride}"), &out, &expected, tol::EXACT);
    }
}

#[test]
fn conv2d_ones_kernel_counts_taps_inside_the_padding() {
    // All-ones 3x3 kernel on an all-ones image with Cin = 2: each output is 2 * (number of taps
    // inside the image) + bias, i.e. 8 at corners, 12 on edges, 18 inside.
    let s = Conv2dShape::new(1, 2, 1, 4, 5, 3, 1);
    let out = conv_fwd(&vec![1.0; s.x_len()], &vec![1.0; s.weight_len()], &[0.5], s);
    let taps = |n: usize, i: usize| if i == 0 || i == n - 1 { 2.0 } else { 3.0 };
    let mut expected = Vec::new();
    for y in 0..4 {
        for x in 0..5 {
            expected.push(2.0 * taps(4, y) * taps(5, x) + 0.5);
        }
    }
    tol::assert_close("conv2d ones", &out, &expected, tol::EXACT);
}

#[test]
fn conv2d_accumulates_params_overwrites_dx() {
    let s = conv_shape(3, 2);
    let x = randn(s.x_len(), 20);
    let w = randw(s.weight_len(), s.cin * 9, 21);
    let dout = randn(s.out_len(), 22);
    assert_accumulates("conv2d_bwd_weight", s.weight_len(), |d| conv2d_bwd_weight(d, &dout, &x, s));
    assert_accumulates("conv2d_bwd_bias", s.cout, |d| conv2d_bwd_bias(d, &dout, s));
    assert_overwrites("conv2d_bwd_input", s.x_len(), |d| conv2d_bwd_input(d, &dout, &w, s));
}

// --- groupnorm ----------------------------------------------------------------------------------

fn gn_fwd(x: &[f64], gamma: &[f64], beta: &[f64], s: GroupNormShape) -> Vec<f64> {
    let mut out = vec![0.0; s.len()];
    let (mut mean, mut rstd) = (vec![0.0; s.b * s.g], vec![0.0; s.b * s.g]);
    groupnorm_fwd(&mut out, &mut mean, &mut rstd, x, gamma, beta, s);
    out
}

fn groupnorm_gradcheck(g: usize) {
    // B = 2, C = 6, H * W = 5 * 7.
    let s = GroupNormShape::new(2, 6, 35, g);
    let what = format!("groupnorm G={g}");
    let x: Vec<f64> = randn(s.len(), 30).iter().map(|v| 2.0 * v + 0.5).collect();
    let gamma: Vec<f64> = randn(s.c, 31).iter().map(|v| 1.0 + 0.3 * v).collect();
    let beta = randn(s.c, 32);
    let dout = randn(s.len(), 33);

    let mut out = vec![0.0; s.len()];
    let (mut mean, mut rstd) = (vec![0.0; s.b * s.g], vec![0.0; s.b * s.g]);
    groupnorm_fwd(&mut out, &mut mean, &mut rstd, &x, &gamma, &beta, s);
    let mut dx = vec![0.0; s.len()];
    groupnorm_bwd_input(&mut dx, &dout, &x, &mean, &rstd, &gamma, s);
    let (mut dgamma, mut dbeta) = (vec![0.0; s.c], vec![0.0; s.c]);
    groupnorm_bwd_params(&mut dgamma, &mut dbeta, &dout, &x, &mean, &rstd, s);

    let l = |x: &[f64], g: &[f64], b: &[f64]| gradcheck::dot(&gn_fwd(x, g, b, s), &dout);
    check_each(&what, ["dx", "dgamma", "dbeta"], l, [&x, &gamma, &beta], [&dx, &dgamma, &dbeta]);
}

#[test]
fn groupnorm_gradcheck_3_groups() {
    groupnorm_gradcheck(3);
}

#[test]
fn groupnorm_gradcheck_1_group() {
    groupnorm_gradcheck(1);
}

#[test]
fn groupnorm_gradcheck_group_per_channel() {
    groupnorm_gradcheck(6);
}

#[test]
fn groupnorm_normalizes_each_group() {
    let s = GroupNormShape::new(2, 6, 35, 3);
    let x: Vec<f64> = randn(s.len(), 40).iter().map(|v| 3.0 * v - 1.0).collect();
    let mut out = vec![0.0; s.len()];
    let (mut mean, mut rstd) = (vec![0.0; 6], vec![0.0; 6]);
    groupnorm_fwd(&mut out, &mut mean, &mut rstd, &x, &[1.0; 6], &[0.0; 6], s);
    let n = s.group_len();
    for bg in 0..s.b * s.g {
        let (xs, os) = (&x[bg * n..(bg + 1) * n], &out[bg * n..(bg + 1) * n]);
        let mu = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / n as f64;
        tol::assert_close("saved mean", &[mean[bg]], &[mu], F64_TIGHT);
        tol::assert_close("saved rstd", &[rstd[bg]], &[1.0 / (var + 1e-5).sqrt()], F64_TIGHT);
        let omu = os.iter().sum::<f64>() / n as f64;
        let ovar = os.iter().map(|v| (v - omu) * (v - omu)).sum::<f64>() / n as f64;
        assert!(omu.abs() < 1e-12, "group {bg}: mean {omu}");
        // Biased variance var / (var + eps): 1 up to eps / var ~ 1e-6 here.
        assert!((ovar - 1.0).abs() < 1e-5, "group {bg}: variance {ovar}");
    }
    // The affine acts per channel on the normalised values.
    let gamma = [0.5, -1.0, 2.0, 1.5, 0.0, 3.0];
    let beta = [1.0, 2.0, -3.0, 0.25, 4.0, -0.5];
    let affine = gn_fwd(&x, &gamma, &beta, s);
    let expected: Vec<f64> =
        out.iter().enumerate().map(|(i, v)| gamma[(i / 35) % 6] * v + beta[(i / 35) % 6]).collect();
    tol::assert_close("groupnorm affine", &affine, &expected, F64_TIGHT);
}

/// The fused norm + SiLU: its forward is silu(groupnorm) exactly, its gradients match finite
/// differences of that composition, and the backward accumulates / overwrites as the plain norm's.
#[test]
fn groupnorm_silu_gradcheck() {
    let s = GroupNormShape::new(2, 6, 35, 3);
    let x: Vec<f64> = randn(s.len(), 34).iter().map(|v| 2.0 * v + 0.5).collect();
    let gamma: Vec<f64> = randn(s.c, 35).iter().map(|v| 1.0 + 0.3 * v).collect();
    let beta = randn(s.c, 36);
    let dout = randn(s.len(), 37);
    let (mut mean, mut rstd) = (vec![0.0; s.b * s.g], vec![0.0; s.b * s.g]);
    let fwd = |x: &[f64], g: &[f64], b: &[f64]| {
        let mut out = vec![0.0; s.len()];
        let (mut m, mut r) = (vec![0.0; s.b * s.g], vec![0.0; s.b * s.g]);
        groupnorm_silu_fwd(&mut out, &mut m, &mut r, x, g, b, s);
        out
    };
    let mut want = vec![0.0; s.len()];
    cdl::reference::elementwise::silu_fwd(&mut want, &gn_fwd(&x, &gamma, &beta, s));
    tol::assert_close("groupnorm_silu = silu(groupnorm)", &fwd(&x, &gamma, &beta), &want, tol::EXACT);

    let mut out = vec![0.0; s.len()];
    groupnorm_silu_fwd(&mut out, &mut mean, &mut rstd, &x, &gamma, &beta, s);
    let mut dx = vec![0.0; s.len()];
    groupnorm_silu_bwd_input(&mut dx, &dout, &x, &mean, &rstd, &gamma, &beta, s);
    let (mut dgamma, mut dbeta) = (vec![0.0; s.c], vec![0.0; s.c]);
    groupnorm_silu_bwd_params(&mut dgamma, &mut dbeta, &dout, &x, &mean, &rstd, &gamma, &beta, s);
    let l = |x: &[f64], g: &[f64], b: &[f64]| gradcheck::dot(&fwd(x, g, b), &dout);
    check_each("groupnorm_silu", ["dx", "dgamma", "dbeta"], l, [&x, &gamma, &beta], [&dx, &dgamma, &dbeta]);

    assert_accumulates("groupnorm_silu_bwd_params dgamma", s.c, |d| {
        groupnorm_silu_bwd_params(d, &mut [0.0; 6], &dout, &x, &mean, &rstd, &gamma, &beta, s)
    });
    assert_accumulates("groupnorm_silu_bwd_params dbeta", s.c, |d| {
        groupnorm_silu_bwd_params(&mut [0.0; 6], d, &dout, &x, &mean, &rstd, &gamma, &beta, s)
    });
    assert_overwrites("groupnorm_silu_bwd_input", s.len(), |d| {
        groupnorm_silu_bwd_input(d, &dout, &x, &mean, &rstd, &gamma, &beta, s)
    });
}

#[test]
fn groupnorm_accumulates_params_overwrites_dx() {
    let s = GroupNormShape::new(2, 6, 35, 3);
    let x = randn(s.len(), 50);
    let gamma = randn(s.c, 51);
    let dout = randn(s.len(), 52);
    let mut out = vec![0.0; s.len()];
    let (mut mean, mut rstd) = (vec![0.0; 6], vec![0.0; 6]);
    groupnorm_fwd(&mut out, &mut mean, &mut rstd, &x, &gamma, &[0.0; 6], s);
    assert_accumulates("groupnorm_bwd_params dgamma", s.c, |d| {
        groupnorm_bwd_params(d, &mut [0.0; 6], &dout, &x, &mean, &rstd, s)
    });
    assert_accumulates("groupnorm_bwd_params dbeta", s.c, |d| {
        groupnorm_bwd_params(&mut [0.0; 6], d, &dout, &x, &mean, &rstd, s)
    });
    assert_overwrites("groupnorm_bwd_input", s.len(), |d| groupnorm_bwd_input(d, &dout, &x, &mean, &rstd, &gamma, s));
}

// --- softmax and attention ----------------------------------------------------------------------

#[test]
fn softmax_rows_sum_to_one_and_survive_extreme_inputs() {
    let n = 4;
    #[rustfmt::skip]
    let x = [
        1000.0, -1000.0, 0.0, 999.0,      // exp(1000) overflows without the max subtraction
        -1000.0, -1000.0, -1000.0, -1000.0, // exp(-1000) underflows to 0/0 without it
        1000.0, 1000.0, 1000.0, 1000.0,
        0.5, -0.25, 3.0, 1.0,
    ];
    let e1 = (-1.0f64).exp();
    let (a, b) = (1.0 / (1.0 + e1), e1 / (1.0 + e1));
    let t: f64 = [0.5f64, -0.25, 3.0, 1.0].iter().map(|v| v.exp()).sum();
    #[rustfmt::skip]
    let expected = [
        a, 0.0, 0.0, b,
        0.25, 0.25, 0.25, 0.25,
        0.25, 0.25, 0.25, 0.25,
        0.5f64.exp() / t, (-0.25f64).exp() / t, 3.0f64.exp() / t, 1.0f64.exp() / t,
    ];
    let mut y = [0.0f64; 16];
    softmax_rows_fwd(&mut y, &x, n);
    tol::assert_close("softmax f64", &y, &expected, F64_TIGHT);
    let mut y32 = [0.0f32; 16];
    softmax_rows_fwd(&mut y32, &to_f32(&x), n);
    tol::assert_close("softmax f32", &y32, &expected, tol::STRICT);
    for (r, row) in y32.chunks(n).enumerate() {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "row {r} sums to {sum}");
    }
}

#[test]
fn softmax_rows_gradcheck() {
    let (r, n) = (5, 9);
    let x: Vec<f64> = randn(r * n, 60).iter().map(|v| 2.0 * v).collect();
    let dy = randn(r * n, 61);
    let fwd = |x: &[f64]| {
        let mut y = vec![0.0; r * n];
        softmax_rows_fwd(&mut y, x, n);
        y
    };
    let mut dx = vec![0.0; r * n];
    softmax_rows_bwd(&mut dx, &dy, &fwd(&x), n);
    check("softmax_rows dx", |v| gradcheck::dot(&fwd(v), &dy), &x, &dx);
    assert_overwrites("softmax_rows_bwd", r * n, |d| softmax_rows_bwd(d, &dy, &fwd(&x), n));
}

#[test]
fn attention_scores_gradcheck() {
    let s = AttentionShape::new(2, 8, 9, 2);
    let qkv = randn(s.qkv_len(), 70);
    let dscores = randn(s.attn_len(), 71);
    let fwd = |qkv: &[f64]| {
        let mut scores = vec![0.0; s.attn_len()];
        attention_scores_fwd(&mut scores, qkv, s);
        scores
    };
    // The v block is not written by the scores backward: zero it, its derivative is 0.
    let mut dqkv = vec![0.0; s.qkv_len()];
    attention_scores_bwd(&mut dqkv, &dscores, &qkv, s);
    let all = 0..qkv.len();
    let loss = |v: &[f64]| gradcheck::dot(&fwd(v), &dscores);
    gradcheck::check("attention_scores dqkv", loss, &qkv, &dqkv, all).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn attention_mix_gradcheck() {
    let s = AttentionShape::new(2, 8, 9, 2);
    let qkv = randn(s.qkv_len(), 80);
    let mut attn = vec![0.0; s.attn_len()];
    softmax_rows_fwd(&mut attn, &randn(s.attn_len(), 81), s.t);
    let dout = randn(s.x_len(), 82);
    let fwd = |attn: &[f64], qkv: &[f64]| {
        let mut out = vec![0.0; s.x_len()];
        attention_mix_fwd(&mut out, attn, qkv, s);
        out
    };
    let mut dattn = vec![0.0; s.attn_len()];
    let mut dqkv = vec![0.0; s.qkv_len()];
    attention_mix_bwd(&mut dattn, &mut dqkv, &dout, &attn, &qkv, s);
    check("attention_mix dattn", |v| gradcheck::dot(&fwd(v, &qkv), &dout), &attn, &dattn);
    // All of dqkv: the q and k blocks have derivative 0 and were left at 0.
    let loss = |v: &[f64]| gradcheck::dot(&fwd(&attn, v), &dout);
    gradcheck::check("attention_mix dqkv", loss, &qkv, &dqkv, 0..qkv.len()).unwrap_or_else(|e| panic!("{e}"));
}

fn params<'a>(w_qkv: &'a [f64], b_qkv: &'a [f64], w_o: &'a [f64], b_o: &'a [f64]) -> AttentionParams<'a, f64> {
    AttentionParams { w_qkv, b_qkv, w_o, b_o }
}

struct AttnCase {
    s: AttentionShape,
    x: Vec<f64>,
    w_qkv: Vec<f64>,
    b_qkv: Vec<f64>,
    w_o: Vec<f64>,
    b_o: Vec<f64>,
}

impl AttnCase {
    /// B = 2, C = 8, T = 9 (a 3x3 map).
    fn new(heads: usize, tag: u32) -> Self {
        let s = AttentionShape::new(2, 8, 9, heads);
        let c = s.c;
        Self {
            s,
            x: randn(s.x_len(), tag),
            w_qkv: randw(3 * c * c, c, tag + 1),
            b_qkv: randn(3 * c, tag + 2).iter().map(|v| 0.1 * v).collect(),
            w_o: randw(c * c, c, tag + 3),
            b_o: randn(c, tag + 4),
        }
    }

    fn fwd(&self, x: &[f64], p: AttentionParams<'_, f64>) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let s = self.s;
        let (mut y, mut qkv) = (vec![0.0; s.x_len()], vec![0.0; s.qkv_len()]);
        let (mut attn, mut out) = (vec![0.0; s.attn_len()], vec![0.0; s.x_len()]);
        attention_fwd(&mut y, &mut qkv, &mut attn, &mut out, x, p, s);
        (y, qkv, attn, out)
    }
}

fn attention_gradcheck(heads: usize) {
    let c = AttnCase::new(heads, 90);
    let s = c.s;
    let what = format!("attention heads={heads}");
    let dy = randn(s.x_len(), 99);
    let p = params(&c.w_qkv, &c.b_qkv, &c.w_o, &c.b_o);
    let (_, qkv, attn, out) = c.fwd(&c.x, p);

    let mut dx = vec![0.0; s.x_len()];
    let (mut dw_qkv, mut db_qkv) = (vec![0.0; c.w_qkv.len()], vec![0.0; c.b_qkv.len()]);
    let (mut dw_o, mut db_o) = (vec![0.0; c.w_o.len()], vec![0.0; c.b_o.len()]);
    let g = AttentionGrads { dw_qkv: &mut dw_qkv, db_qkv: &mut db_qkv, dw_o: &mut dw_o, db_o: &mut db_o };
    let saved = AttentionSaved { qkv: &qkv, attn: &attn, out: &out };
    attention_bwd(&mut dx, g, &dy, &c.x, saved, p, s);

    let l = |x: &[f64], p: AttentionParams<'_, f64>| gradcheck::dot(&c.fwd(x, p).0, &dy);
    check(&format!("{what} dx"), |v| l(v, p), &c.x, &dx);
    check(&format!("{what} dw_qkv"), |v| l(&c.x, params(v, &c.b_qkv, &c.w_o, &c.b_o)), &c.w_qkv, &dw_qkv);
    check(&format!("{what} db_qkv"), |v| l(&c.x, params(&c.w_qkv, v, &c.w_o, &c.b_o)), &c.b_qkv, &db_qkv);
    check(&format!("{what} dw_o"), |v| l(&c.x, params(&c.w_qkv, &c.b_qkv, v, &c.b_o)), &c.w_o, &dw_o);
    check(&format!("{what} db_o"), |v| l(&c.x, params(&c.w_qkv, &c.b_qkv, &c.w_o, v)), &c.b_o, &db_o);
}

#[test]
fn attention_gradcheck_one_head() {
    attention_gradcheck(1);
}

#[test]
fn attention_gradcheck_two_heads() {
    attention_gradcheck(2);
}

#[test]
fn attention_with_zero_queries_averages_values() {
    // q = k = 0 makes every score 0 and the attention uniform; with v = x and W_o = I the block
    // returns, at every token, the mean of x over tokens.
    let s = AttentionShape::new(2, 4, 9, 2);
    let c = s.c;
    let mut w_qkv = vec![0.0; 3 * c * c];
    for i in 0..c {
        w_qkv[(2 * c + i) * c + i] = 1.0;
    }
    let mut w_o = vec![0.0; c * c];
    for i in 0..c {
        w_o[i * c + i] = 1.0;
    }
    let x = randn(s.x_len(), 100);
    let p = AttentionParams { w_qkv: &w_qkv, b_qkv: &[0.0; 12], w_o: &w_o, b_o: &[0.0; 4] };
    let (mut y, mut qkv) = (vec![0.0; s.x_len()], vec![0.0; s.qkv_len()]);
    let (mut attn, mut out) = (vec![0.0; s.attn_len()], vec![0.0; s.x_len()]);
    attention_fwd(&mut y, &mut qkv, &mut attn, &mut out, &x, p, s);
    let expected: Vec<f64> =
        x.chunks(s.t).flat_map(|row| std::iter::repeat_n(row.iter().sum::<f64>() / s.t as f64, s.t)).collect();
    tol::assert_close("attention uniform", &y, &expected, F64_TIGHT);
    tol::assert_close("attention weights", &attn, &vec![1.0 / 9.0; s.attn_len()], F64_TIGHT);
}

#[test]
fn attention_accumulates_params_overwrites_dx() {
    let c = AttnCase::new(2, 110);
    let s = c.s;
    let dy = randn(s.x_len(), 119);
    let p = params(&c.w_qkv, &c.b_qkv, &c.w_o, &c.b_o);
    let (_, qkv, attn, out) = c.fwd(&c.x, p);
    let saved = AttentionSaved { qkv: &qkv, attn: &attn, out: &out };
    // One parameter gradient at a time goes through the check; the others go to scratch.
    let run = |which: usize, d: &mut [f64], dx: &mut [f64]| {
        let mut bufs = [vec![0.0; 3 * 64], vec![0.0; 24], vec![0.0; 64], vec![0.0; 8]];
        let [a, b, cc, e] = &mut bufs;
        let g = match which {
            0 => AttentionGrads { dw_qkv: d, db_qkv: b, dw_o: cc, db_o: e },
            1 => AttentionGrads { dw_qkv: a, db_qkv: d, dw_o: cc, db_o: e },
            2 => AttentionGrads { dw_qkv: a, db_qkv: b, dw_o: d, db_o: e },
            _ => AttentionGrads { dw_qkv: a, db_qkv: b, dw_o: cc, db_o: d },
        };
        attention_bwd(dx, g, &dy, &c.x, saved, p, s);
    };
    for (which, (name, n)) in [("dw_qkv", 3 * 64), ("db_qkv", 24), ("dw_o", 64), ("db_o", 8)].into_iter().enumerate() {
        assert_accumulates(&format!("attention_bwd {name}"), n, |d| run(which, d, &mut vec![0.0; s.x_len()]));
    }
    assert_overwrites("attention_bwd dx", s.x_len(), |dx| run(0, &mut vec![0.0; 3 * 64], dx));
}

// --- resample -----------------------------------------------------------------------------------

#[test]
fn upsample_then_avgpool_is_identity() {
    let s = Nchw::new(2, 3, 5, 7);
    let x = randn(s.len(), 120);
    let mut up = vec![0.0; 4 * s.len()];
    upsample2x_fwd(&mut up, &x, s);
    for (i, &v) in up.iter().enumerate() {
        let (bc, y, xx) = (i / (10 * 14), (i / 14) % 10, i % 14);
        assert_eq!(v, x[(bc * 5 + y / 2) * 7 + xx / 2], "upsample at {i}");
    }
    let mut back = vec![0.0; s.len()];
    avgpool2x2_fwd(&mut back, &up, Nchw::new(2, 3, 10, 14));
    tol::assert_close("avgpool(upsample(x))", &back, &x, tol::EXACT);
}

#[test]
fn avgpool_hand_values() {
    // One 4x4 plane holding 0..16: each output is the mean of its 2x2 block.
    let x: Vec<f64> = (0..16).map(f64::from).collect();
    let mut out = [0.0; 4];
    avgpool2x2_fwd(&mut out, &x, Nchw::new(1, 1, 4, 4));
    tol::assert_close("avgpool", &out, &[2.5, 4.5, 10.5, 12.5], tol::EXACT);
}

/// A resampling reference, (out or dx, x or dout, shape of x).
type Resample = fn(&mut [f64], &[f64], Nchw);

/// A 2x resampling op on `s` against central differences: `fwd` (x to `out_len` values) and its
/// input backward `bwd`, which must overwrite dx; random x and dout from Philox tags `tag`, `tag + 1`.
fn resample_gradcheck(name: &str, s: Nchw, out_len: usize, tag: u32, fwd: Resample, bwd: Resample) {
    let x = randn(s.len(), tag);
    let dout = randn(out_len, tag + 1);
    let fwd = |x: &[f64]| {
        let mut out = vec![0.0; out_len];
        fwd(&mut out, x, s);
        out
    };
    let mut dx = vec![0.0; s.len()];
    bwd(&mut dx, &dout, s);
    check(&format!("{name} dx"), |v| gradcheck::dot(&fwd(v), &dout), &x, &dx);
    assert_overwrites(&format!("{name}_bwd_input"), s.len(), |d| bwd(d, &dout, s));
}

#[test]
fn upsample_gradcheck() {
    let s = Nchw::new(2, 3, 5, 7);
    resample_gradcheck("upsample2x", s, 4 * s.len(), 130, upsample2x_fwd, upsample2x_bwd_input);
}

#[test]
fn avgpool_gradcheck() {
    let s = Nchw::new(2, 3, 6, 10);
    resample_gradcheck("avgpool2x2", s, s.len() / 4, 140, avgpool2x2_fwd, avgpool2x2_bwd_input);
}

#[test]
fn concat_places_channels_and_gradcheck() {
    let (b, c1, c2, hw) = (2, 3, 5, 35);
    let a = randn(b * c1 * hw, 150);
    let skip = randn(b * c2 * hw, 151);
    let dout = randn(b * (c1 + c2) * hw, 152);
    let fwd = |a: &[f64], skip: &[f64]| {
        let mut out = vec![0.0; b * (c1 + c2) * hw];
        concat_fwd(&mut out, a, skip, b, c1, c2, hw);
        out
    };
    let out = fwd(&a, &skip);
    for bi in 0..b {
        for c in 0..c1 + c2 {
            for p in 0..hw {
                let expected = if c < c1 { a[(bi * c1 + c) * hw + p] } else { skip[(bi * c2 + c - c1) * hw + p] };
                assert_eq!(out[(bi * (c1 + c2) + c) * hw + p], expected, "b{bi} c{c} p{p}");
            }
        }
    }
    let (mut da, mut dskip) = (vec![0.0; a.len()], vec![0.0; skip.len()]);
    concat_bwd(&mut da, &mut dskip, &dout, b, c1, c2, hw);
    check("concat da", |v| gradcheck::dot(&fwd(v, &skip), &dout), &a, &da);
    check("concat dskip", |v| gradcheck::dot(&fwd(&a, v), &dout), &skip, &dskip);
    assert_overwrites("concat_bwd da", a.len(), |d| concat_bwd(d, &mut vec![0.0; skip.len()], &dout, b, c1, c2, hw));
    assert_overwrites("concat_bwd dskip", skip.len(), |d| concat_bwd(&mut vec![0.0; a.len()], d, &dout, b, c1, c2, hw));
}

// --- embedding and scale/shift ------------------------------------------------------------------

#[test]
fn embedding_hand_values() {
    // E = 8: half = 4 and freq_j = 10000^(-j/4) = 10^-j.
    let t = [0.0, 2.0, -1.5];
    let mut out = [0.0f64; 24];
    embedding_fwd(&mut out, &t, 8);
    let mut expected = vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
    for tb in [2.0f64, -1.5] {
        let f = [1.0, 0.1, 0.01, 0.001];
        expected.extend(f.iter().map(|f| (tb * f).cos()));
        expected.extend(f.iter().map(|f| (tb * f).sin()));
    }
    tol::assert_close("embedding f64", &out, &expected, Tol { atol: 1e-15, rtol: 1e-14 });
    let mut out32 = [0.0f32; 24];
    embedding_fwd(&mut out32, &[0.0, 2.0, -1.5], 8);
    tol::assert_close("embedding f32", &out32, &expected, tol::STRICT);
    assert_eq!(&out32[..8], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], "t = 0 is exact");
}

#[test]
fn embedding_bwd_t_gradcheck() {
    let (b, e) = (5, 16);
    let t: Vec<f64> = randn(b, 160).iter().map(|v| 3.0 * v).collect();
    let dout = randn(b * e, 161);
    let fwd = |t: &[f64]| {
        let mut out = vec![0.0; b * e];
        embedding_fwd(&mut out, t, e);
        out
    };
    let mut dt = vec![0.0; b];
    embedding_bwd_t(&mut dt, &dout, &t, e);
    check("embedding dt", |v| gradcheck::dot(&fwd(v), &dout), &t, &dt);
    assert_overwrites("embedding_bwd_t", b, |d| embedding_bwd_t(d, &dout, &t, e));
}

#[test]
fn scale_shift_hand_values() {
    // Two channels of two pixels: y = x (1 + scale) + shift; scale = shift = 0 is the identity.
    let x = [1.0, -2.0, 0.5, 4.0];
    let mut y = [0.0; 4];
    scale_shift_fwd(&mut y, &x, &[0.0, 0.0], &[0.0, 0.0], 2);
    tol::assert_close("scale_shift identity", &y, &x, tol::EXACT);
    scale_shift_fwd(&mut y, &x, &[1.0, -0.5], &[0.25, 3.0], 2);
    tol::assert_close("scale_shift", &y, &[2.25, -3.75, 3.25, 5.0], tol::EXACT);
}

#[test]
fn scale_shift_gradcheck() {
    // B = 2, C = 6, H * W = 5 * 7.
    let (bc, hw) = (12, 35);
    let x = randn(bc * hw, 170);
    let scale: Vec<f64> = randn(bc, 171).iter().map(|v| 0.5 * v).collect();
    let shift = randn(bc, 172);
    let dout = randn(bc * hw, 173);
    let fwd = |x: &[f64], sc: &[f64], sh: &[f64]| {
        let mut y = vec![0.0; bc * hw];
        scale_shift_fwd(&mut y, x, sc, sh, hw);
        y
    };
    let mut dx = vec![0.0; bc * hw];
    scale_shift_bwd_input(&mut dx, &dout, &scale, hw);
    let (mut dscale, mut dshift) = (vec![0.0; bc], vec![0.0; bc]);
    scale_shift_bwd_scale(&mut dscale, &dout, &x, hw);
    scale_shift_bwd_shift(&mut dshift, &dout, hw);
    let l = |x: &[f64], sc: &[f64], sh: &[f64]| gradcheck::dot(&fwd(x, sc, sh), &dout);
    check_each("scale_shift", ["dx", "dscale", "dshift"], l, [&x, &scale, &shift], [&dx, &dscale, &dshift]);
    // All three are activation gradients: overwritten.
    assert_overwrites("scale_shift_bwd_input", bc * hw, |d| scale_shift_bwd_input(d, &dout, &scale, hw));
    assert_overwrites("scale_shift_bwd_scale", bc, |d| scale_shift_bwd_scale(d, &dout, &x, hw));
    assert_overwrites("scale_shift_bwd_shift", bc, |d| scale_shift_bwd_shift(d, &dout, hw));
}

/// The fused modulation + SiLU: its gradients against central differences, and its forward equal
/// to the two ops it replaces.
#[test]
fn scale_shift_silu_gradcheck() {
    let (bc, hw) = (12, 35);
    let x = randn(bc * hw, 174);
    let scale: Vec<f64> = randn(bc, 175).iter().map(|v| 0.5 * v).collect();
    let shift = randn(bc, 176);
    let dout = randn(bc * hw, 177);
    let fwd = |x: &[f64], sc: &[f64], sh: &[f64]| {
        let mut y = vec![0.0; bc * hw];
        scale_shift_silu_fwd(&mut y, x, sc, sh, hw);
        y
    };
    let (mut m, mut want) = (vec![0.0; bc * hw], vec![0.0; bc * hw]);
    scale_shift_fwd(&mut m, &x, &scale, &shift, hw);
    cdl::reference::elementwise::silu_fwd(&mut want, &m);
    tol::assert_close("scale_shift_silu = silu(scale_shift)", &fwd(&x, &scale, &shift), &want, tol::EXACT);
    let mut dx = vec![0.0; bc * hw];
    scale_shift_silu_bwd_input(&mut dx, &dout, &x, &scale, &shift, hw);
    let (mut dscale, mut dshift) = (vec![0.0; bc], vec![0.0; bc]);
    scale_shift_silu_bwd_params(&mut dscale, &mut dshift, &dout, &x, &scale, &shift, hw);
    let l = |x: &[f64], sc: &[f64], sh: &[f64]| gradcheck::dot(&fwd(x, sc, sh), &dout);
    check_each("scale_shift_silu", ["dx", "dscale", "dshift"], l, [&x, &scale, &shift], [&dx, &dscale, &dshift]);
    assert_overwrites("scale_shift_silu_bwd_input", bc * hw, |d| {
        scale_shift_silu_bwd_input(d, &dout, &x, &scale, &shift, hw)
    });
    assert_overwrites("scale_shift_silu_bwd_params dscale", bc, |d| {
        scale_shift_silu_bwd_params(d, &mut vec![0.0; bc], &dout, &x, &scale, &shift, hw)
    });
}

/// σ_d of the MLP (1), of the UNet (0.5), and one above 1 (m = 1 + (σ_d² − 1)·σ(α) grows).
const SIGMA_DS: [f64; 3] = [1.0, 0.5, 1.7];

#[test]
fn precond_is_the_gaussian_denoiser_plus_a_scaled_output() {
    // sigma_d = 1: at alpha = 0 a_skip = a_out = sqrt(1/2); far out one of them vanishes; the
    // squares always sum to 1 (sigmoid(a) + sigmoid(-a) = 1), and the input is not scaled.
    let h = 0.5f64.sqrt();
    let c = precond_coeffs(0.0, 1.0);
    tol::assert_close("alpha 0", &[c.a_in, c.a_skip, c.a_out], &[1.0, h, h], F64_TIGHT);
    let c = precond_coeffs(20.0f64, 1.0); // alpha = 160
    assert!(c.a_skip < 1e-30 && (c.a_out - 1.0).abs() < 1e-15, "alpha 160: {c:?}");
    for t in [-3.0f64, -0.4, 0.7, 2.5] {
        let c = precond_coeffs(t, 1.0);
        assert!((c.a_skip.powi(2) + c.a_out.powi(2) - 1.0).abs() < 1e-14, "t = {t}: {c:?}");
        // sqrt(sigmoid(-alpha)), alpha = 8 t, written out.
        assert!((c.a_skip - (1.0 / (1.0 + (8.0 * t).exp())).sqrt()).abs() < 1e-15, "t = {t}: {c:?}");
    }
    // f = 0 leaves the optimal denoiser of N(0, I) data: eps = sqrt(sigmoid(-alpha)) z.
    let mut eps = [0.0; 2];
    precond_fwd(&mut eps, &[-0.25], &[2.0, -1.0], &[0.0, 0.0], 2, 1.0);
    let a = (1.0 / (1.0 + (-2.0f64).exp())).sqrt();
    tol::assert_close("f = 0", &eps, &[2.0 * a, -a], F64_TIGHT);
    // For N(0, σ_d² I) data the optimal ε̂ is z·sqrt(1+σ²)·σ/(σ²+σ_d²): the skip term alone.
    let (t, sd) = (-0.3f64, 0.5);
    let s2 = (8.0 * 0.3f64).exp();
    let want = s2.sqrt() * (1.0 + s2).sqrt() / (s2 + sd * sd);
    precond_fwd(&mut eps, &[t], &[2.0, -1.0], &[0.0, 0.0], 2, sd);
    tol::assert_close("f = 0, sigma_d 0.5", &eps, &[2.0 * want, -want], F64_TIGHT);
}

/// The ε-form coefficients are EDM's c_in, c_skip, c_out (diffusion::schedule::EdmPrecond, the
/// textbook formulas in σ) moved to ε: a_in = c_in·sqrt(1+σ²), a_skip = (1 − c_skip)·sqrt(1+σ²)/σ,
/// a_out = c_out/σ, σ = e^{−α/2}, over α in [−20, 20] (step 1/4).
#[test]
fn precond_coeffs_are_edms_in_eps_form() {
    for sd in SIGMA_DS {
        let edm = EdmPrecond { sigma_data: sd };
        for i in -80..=80 {
            let alpha = f64::from(i) / 4.0;
            let sigma = (-alpha / 2.0).exp();
            let xs = (1.0 + sigma * sigma).sqrt();
            let c = precond_coeffs(alpha / 8.0, sd);
            let what = format!("sigma_d {sd} alpha {alpha}");
            let want = [edm.c_in(sigma) * xs, edm.c_out(sigma) / sigma];
            tol::assert_close(&what, &[c.a_in, c.a_out], &want, Tol { atol: 0.0, rtol: 1e-13 });
            // 1 − c_skip cancels at small σ (to ~1e-16 absolute), so a_skip is compared there.
            let one_minus_skip = c.a_skip * sigma / xs;
            tol::assert_close(&what, &[one_minus_skip], &[1.0 - edm.c_skip(sigma)], Tol { atol: 1e-15, rtol: 1e-13 });
        }
    }
}

/// With σ_d = 1 the coefficients are exactly the MLP's (1, sqrt(σ(−α)), sqrt(σ(α))), in f32 and
/// f64: m = 1 exactly, so the MLP's results do not move.
#[test]
fn precond_coeffs_at_sigma_d_1_are_bit_exact() {
    fn sqrt_sigmoid<T: cdl::reference::Float>(v: T) -> T {
        let e = (-v.abs()).exp();
        let one = T::one();
        (if v >= T::zero() { one / (one + e) } else { e / (one + e) }).sqrt()
    }
    for i in -200..=200 {
        let t = f64::from(i) / 40.0;
        let c = precond_coeffs(t, 1.0);
        assert_eq!([c.a_in, c.a_skip, c.a_out], [1.0, sqrt_sigmoid(-8.0 * t), sqrt_sigmoid(8.0 * t)], "t {t}");
        let t = t as f32;
        let c = precond_coeffs(t, 1.0f32);
        assert_eq!([c.a_in, c.a_skip, c.a_out], [1.0, sqrt_sigmoid(-8.0 * t), sqrt_sigmoid(8.0 * t)], "t {t}");
    }
}

/// The f32 coefficients (what the shader computes, same formulas) stay within a few ulp of f64
/// over α in [−20, 20], and are finite with the right limits at α = ±160 where e^{−|α|}
/// underflows and σ² = e^{−α} would overflow.
#[test]
fn precond_coeffs_are_stable_in_f32() {
    // Measured worst relative error 2.4e-7 (2 ulp); 1e-6 leaves 4x.
    let f32_coeffs = Tol { atol: 0.0, rtol: 1e-6 };
    for sd in SIGMA_DS {
        for i in -400..=400 {
            let t = f64::from(i) / 160.0; // alpha = t * 8 in [-20, 20]
            let c = precond_coeffs(t as f32, sd as f32);
            let w = precond_coeffs(f64::from(t as f32), f64::from(sd as f32));
            tol::assert_close(
                &format!("sigma_d {sd} t {t}"),
                &[c.a_in, c.a_skip, c.a_out],
                &[w.a_in, w.a_skip, w.a_out],
                f32_coeffs,
            );
        }
        let hi = precond_coeffs(20.0f32, sd as f32); // alpha = 160: sigma -> 0, D -> x
        let want_hi = [1.0 / sd, 0.0, 1.0];
        tol::assert_close(&format!("sigma_d {sd} alpha 160"), &[hi.a_in, hi.a_skip, hi.a_out], &want_hi, f32_coeffs);
        let lo = precond_coeffs(-20.0f32, sd as f32); // alpha = -160: pure noise, eps = z
        tol::assert_close(
            &format!("sigma_d {sd} alpha -160"),
            &[lo.a_in, lo.a_skip, lo.a_out],
            &[1.0, 1.0, 0.0],
            f32_coeffs,
        );
    }
}

#[test]
fn precond_gradcheck() {
    // B = 7 rows of E = 3 (a row length that is neither 1 nor a power of two).
    let (b, e) = (7, 3);
    let t: Vec<f64> = randn(b, 175).iter().map(|v| 0.8 * v).collect();
    let (z, f, deps) = (randn(b * e, 176), randn(b * e, 177), randn(b * e, 178));
    for sd in SIGMA_DS {
        let fwd = |z: &[f64], f: &[f64]| {
            let mut eps = vec![0.0; b * e];
            precond_fwd(&mut eps, &t, z, f, e, sd);
            eps
        };
        let (mut df, mut dz) = (vec![0.0; b * e], vec![0.0; b * e]);
        precond_bwd(&mut df, &mut dz, &deps, &t, e, sd);
        check(&format!("precond df sigma_d {sd}"), |v| gradcheck::dot(&fwd(&z, v), &deps), &f, &df);
        check(&format!("precond dz sigma_d {sd}"), |v| gradcheck::dot(&fwd(v, &f), &deps), &z, &dz);
        assert_overwrites("precond_bwd df", b * e, |d| precond_bwd(d, &mut vec![0.0; b * e], &deps, &t, e, sd));
        assert_overwrites("precond_bwd dz", b * e, |d| precond_bwd(&mut vec![0.0; b * e], d, &deps, &t, e, sd));

        // The input scaling is its own backward: precond_in applied to dzin is d/dz of
        // sum(precond_in(z) * dzin).
        let mut dz_in = vec![0.0; b * e];
        precond_in(&mut dz_in, &t, &deps, e, sd);
        let scaled = |v: &[f64]| {
            let mut zin = vec![0.0; b * e];
            precond_in(&mut zin, &t, v, e, sd);
            gradcheck::dot(&zin, &deps)
        };
        check(&format!("precond_in dz sigma_d {sd}"), scaled, &z, &dz_in);
        assert_overwrites("precond_in", b * e, |d| precond_in(d, &t, &deps, e, sd));
    }
}

// --- f32 and f64 agree --------------------------------------------------------------------------

#[test]
fn f32_forwards_match_f64() {
    // The same generic code in f32 (the GPU oracle) stays within the DEFAULT tolerance of f64.
    let s = conv_shape(3, 2);
    let (x, w, b) = (randn(s.x_len(), 180), randw(s.weight_len(), 54, 181), randn(s.cout, 182));
    let mut out32 = vec![0.0f32; s.out_len()];
    conv2d_fwd(&mut out32, &to_f32(&x), &to_f32(&w), Some(&to_f32(&b)), s);
    tol::assert_close("conv2d f32", &out32, &conv_fwd(&x, &w, &b, s), tol::DEFAULT);

    let g = GroupNormShape::new(2, 6, 35, 3);
    let (gx, gamma, beta) = (randn(g.len(), 183), randn(6, 184), randn(6, 185));
    let mut gn32 = vec![0.0f32; g.len()];
    let (mut m32, mut r32) = (vec![0.0f32; 6], vec![0.0f32; 6]);
    groupnorm_fwd(&mut gn32, &mut m32, &mut r32, &to_f32(&gx), &to_f32(&gamma), &to_f32(&beta), g);
    tol::assert_close("groupnorm f32", &gn32, &gn_fwd(&gx, &gamma, &beta, g), tol::DEFAULT);

    let c = AttnCase::new(2, 186);
    let s = c.s;
    let (wq, bq, wo, bo) = (to_f32(&c.w_qkv), to_f32(&c.b_qkv), to_f32(&c.w_o), to_f32(&c.b_o));
    let p32 = AttentionParams { w_qkv: &wq, b_qkv: &bq, w_o: &wo, b_o: &bo };
    let (mut y, mut qkv) = (vec![0.0f32; s.x_len()], vec![0.0f32; s.qkv_len()]);
    let (mut attn, mut out) = (vec![0.0f32; s.attn_len()], vec![0.0f32; s.x_len()]);
    attention_fwd(&mut y, &mut qkv, &mut attn, &mut out, &to_f32(&c.x), p32, s);
    let y64 = c.fwd(&c.x, params(&c.w_qkv, &c.b_qkv, &c.w_o, &c.b_o)).0;
    tol::assert_close("attention f32", &y, &y64, tol::DEFAULT);
}

// --- optimizer ----------------------------------------------------------------------------------

#[test]
fn adam_constant_gradient_closed_form() {
    // With a constant gradient g, m_t = (1 - b1^t) g and v_t = (1 - b2^t) g^2, so the bias
    // corrections cancel and every step moves p by exactly lr * g / (|g| + eps).
    let cfg = AdamConfig::adam(0.01);
    let g = [0.5, -2.0, 1e-3, 3.0, 1e-9];
    let p0 = [1.0, -1.0, 0.25, 0.0, 2.0];
    let (mut p, mut m, mut v) = (p0.to_vec(), vec![0.0; 5], vec![0.0; 5]);
    let (mut p32, mut m32, mut v32) = (to_f32(&p0), vec![0.0f32; 5], vec![0.0f32; 5]);
    for t in 1..=3u32 {
        adam_step(&mut p, &mut m, &mut v, &g, t, &cfg);
        adam_step(&mut p32, &mut m32, &mut v32, &to_f32(&g), t, &cfg);
        let expected: Vec<f64> =
            p0.iter().zip(&g).map(|(p, g)| p - f64::from(t) * 0.01 * g / (g.abs() + 1e-8)).collect();
        tol::assert_close(&format!("adam step {t}"), &p, &expected, Tol { atol: 1e-15, rtol: 1e-12 });
        tol::assert_close(&format!("adam f32 step {t}"), &p32, &expected, tol::STRICT);
    }
}

/// Two steps of PyTorch's update written out with literal numbers: lr 0.1, betas (0.9, 0.999),
/// eps 1e-8, wd 0.1, p0 = 1, g1 = 0.5, g2 = -1 (the gradient of the loss, before any decay).
fn adam_two_steps(decoupled: bool) -> f64 {
    let cfg = AdamConfig { weight_decay: 0.1, decoupled, ..AdamConfig::adam(0.1) };
    let (mut p, mut m, mut v) = ([1.0], [0.0], [0.0]);
    adam_step(&mut p, &mut m, &mut v, &[0.5], 1, &cfg);
    adam_step(&mut p, &mut m, &mut v, &[-1.0], 2, &cfg);
    p[0]
}

#[test]
fn adamw_two_steps_hand_values() {
    // Step 1: p = 1 * (1 - 0.1 * 0.1) = 0.99; m = 0.05, v = 0.001 * 0.25 = 0.00025;
    //         p -= (0.1 / 0.1) * 0.05 / (sqrt(0.00025) / sqrt(0.001) + 1e-8) = 0.05 / (0.5 + 1e-8).
    let p1 = 0.99 - 0.05 / (0.5 + 1e-8);
    // Step 2: p = p1 * 0.99; m = 0.9 * 0.05 - 0.1 = -0.055; v = 0.999 * 0.00025 + 0.001;
    //         bias corrections 1 - 0.81 = 0.19 and 1 - 0.998001 = 0.001999.
    let v2: f64 = 0.999 * 0.00025 + 0.001;
    let p2 = p1 * 0.99 - (0.1 / 0.19) * -0.055 / (v2.sqrt() / 0.001999f64.sqrt() + 1e-8);
    tol::assert_close("adamw", &[adam_two_steps(true)], &[p2], Tol { atol: 1e-15, rtol: 1e-13 });
}

#[test]
fn adam_l2_weight_decay_two_steps_hand_values() {
    // torch.optim.Adam(weight_decay=0.1) adds wd * p to the gradient.
    // Step 1: g = 0.5 + 0.1 * 1 = 0.6; m = 0.06, v = 0.00036; p = 1 - 1 * 0.06 / (0.6 + 1e-8).
    let p1 = 1.0 - 0.06 / (0.6 + 1e-8);
    // Step 2: g = -1 + 0.1 p1; m = 0.9 * 0.06 + 0.1 g; v = 0.999 * 0.00036 + 0.001 g^2.
    let g2 = -1.0 + 0.1 * p1;
    let (m2, v2): (f64, f64) = (0.054 + 0.1 * g2, 0.999 * 0.00036 + 0.001 * g2 * g2);
    let p2 = p1 - (0.1 / 0.19) * m2 / (v2.sqrt() / 0.001999f64.sqrt() + 1e-8);
    tol::assert_close("adam l2", &[adam_two_steps(false)], &[p2], Tol { atol: 1e-15, rtol: 1e-13 });
    // The two decays differ, and both coincide when wd = 0.
    assert!((adam_two_steps(false) - adam_two_steps(true)).abs() > 1e-3);
    let (a, w) = (AdamConfig::adam(0.1), AdamConfig::adamw(0.1, 0.0));
    let (mut pa, mut ma, mut va) = ([1.0], [0.0], [0.0]);
    let (mut pw, mut mw, mut vw) = ([1.0], [0.0], [0.0]);
    for (t, g) in [(1, 0.5), (2, -1.0), (3, 0.25)] {
        adam_step(&mut pa, &mut ma, &mut va, &[g], t, &a);
        adam_step(&mut pw, &mut mw, &mut vw, &[g], t, &w);
    }
    assert_eq!(pa, pw);
}

#[test]
fn ema_closed_form() {
    // Constant weights p: ema_n = p + decay^n (ema_0 - p).
    let (p, e0, decay) = ([2.0, -1.0, 0.5], [0.0, 3.0, 0.5], 0.9);
    let mut ema = e0;
    for n in 1..=3 {
        ema_update(&mut ema, &p, decay);
        let expected: Vec<f64> = p.iter().zip(&e0).map(|(p, e)| p + 0.9f64.powi(n) * (e - p)).collect();
        tol::assert_close(&format!("ema step {n}"), &ema, &expected, F64_TIGHT);
    }
    // Moving weights: 0.99 * 1 + 0.01 * 3 = 1.02, then 0.99 * 1.02 + 0.01 * (-1) = 1.0;
    let mut e = [1.0];
    ema_update(&mut e, &[3.0], 0.99);
    ema_update(&mut e, &[-1.0], 0.99);
    tol::assert_close("ema moving", &e, &[0.99 * 1.02 - 0.01], F64_TIGHT);
}

#[test]
fn clip_grad_norm_scales_to_max_norm() {
    // Two tensors [3, 4] and [12]: global norm sqrt(9 + 16 + 144) = 13.
    let (mut a, mut b) = ([3.0f64, 4.0], [12.0f64]);
    assert_eq!(grad_norm(&[&a[..], &b[..]]), 13.0);
    let norm = clip_grad_norm(&mut [&mut a[..], &mut b[..]], 6.5);
    assert_eq!(norm, 13.0, "returns the norm before clipping");
    let coef = 6.5 / (13.0 + 1e-6);
    tol::assert_close("clipped a", &a, &[3.0 * coef, 4.0 * coef], F64_TIGHT);
    tol::assert_close("clipped b", &b, &[12.0 * coef], F64_TIGHT);
    let after = grad_norm(&[&a[..], &b[..]]);
    assert!((after - 6.5).abs() < 1e-6, "norm after clipping {after}");
}

#[test]
fn clip_grad_norm_leaves_small_gradients() {
    let (mut a, mut b) = ([3.0f32, 4.0], [12.0f32]);
    let norm = clip_grad_norm(&mut [&mut a[..], &mut b[..]], 100.0);
    assert_eq!(norm, 13.0);
    assert_eq!((a, b), ([3.0, 4.0], [12.0]), "factor clamped to 1");
}
