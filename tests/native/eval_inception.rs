//! The FID Inception-v3 network on the device (`eval::inception`) against its f64 oracle
//! (`reference::inception::forward`, written block by block like pytorch-fid's modules) on random
//! weights, and the weight loader's checks of a converted state dict.
//!
//! Tolerance: the device runs f32 through 17 convolutions deep (reductions of up to 2,016 terms)
//! and 11 pools, the oracle f64 from the same folded f32 weights; ReLU and max pooling pass the
//! rounding on unchanged, so it grows with depth, not with the images. Measured on lavapipe:
//! max |device - oracle| 1.3e-6 on features up to 2.1 (the relative error reaches 4e-3 only on
//! features near zero); `TOL` allows 16x that absolute error, or 1e-3 relative.

use crate::common;

use cdl::eval::inception::{conv_layers, Inception, InputRange, InceptionWeights, FEATURES};
use cdl::gpu::GpuError;
use cdl::philox::normal_vec;
use cdl::reference::inception::forward;
use cdl::reference::tol::{assert_close, Tol};
use safetensors::tensor::{Dtype, TensorView};

const TOL: Tol = cdl::reference::tol::INCEPTION;

/// Two images of 3 x 37 x 41 (upsampled to 299 x 299: non-square, a non-integer ratio) in [0, 1].
fn images(n: usize, h: usize, w: usize) -> Vec<f32> {
    normal_vec(n * 3 * h * w, 5, 0).iter().map(|z| (0.5 + 0.25 * z).clamp(0.0, 1.0)).collect()
}

#[test]
fn inception_features_match_the_reference_forward() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let (n, h, w) = (2, 37, 41);
    let weights = InceptionWeights::random(7);
    let net = Inception::new(gpu, &weights, n, h, w).unwrap();
    let x = images(n, h, w);
    let t = std::time::Instant::now();
    let got = pollster::block_on(net.features(gpu, &x, n)).unwrap();
    let t_gpu = t.elapsed().as_secs_f64();
    // The f64 oracle costs about a minute per image on this machine's CPU in the test profile:
    // it checks the first image, and the second is checked against its own forward alone.
    let t = std::time::Instant::now();
    let want = forward(&weights, &cdl::reference::to_f64(&x[..3 * h * w]), 1, h, w);
    eprintln!("device {t_gpu:.2} s (first call: pipelines included), reference {:.2} s", t.elapsed().as_secs_f64());
    eprintln!("features: {}", cdl::reference::tol::compare(&got[..FEATURES], &want, TOL));
    assert_eq!(got.len(), n * FEATURES);
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max);
    let mean = want.iter().sum::<f64>() / want.len() as f64;
    eprintln!("features: max |feature| {scale:.3}, mean {mean:.3}");
    assert!(scale > 0.1 && scale < 100.0, "random weights should keep features O(1), max {scale}");
    assert_close("Inception::features (image 0 of 2) vs reference::inception::forward", &got[..FEATURES], &want, TOL);
    // The second image of the batch equals that image alone (fewer images than the batch: other
    // dispatches), so the batch's offsets are right for every image the oracle does not see.
    let alone = pollster::block_on(net.features(gpu, &x[3 * h * w..], 1)).unwrap();
    let alone: Vec<f64> = alone.iter().map(|&v| f64::from(v)).collect();
    assert_close("Inception::features (image 1 of 2) vs image 1 alone", &got[FEATURES..], &alone, TOL);

    // The first image alone, in [-1, 1], already on the device (the range map folded into the
    // resize).
    let x11: Vec<f32> = x[..3 * h * w].iter().map(|v| 2.0 * v - 1.0).collect();
    let buf = gpu.upload("images", &x11).unwrap();
    let got11 = pollster::block_on(net.features_of_range(gpu, &buf, 1, InputRange::MinusOneOne)).unwrap();
    assert_close("features_of_range([-1, 1]) of 1 image vs reference", &got11, &want[..FEATURES], TOL);
}

#[test]
fn inception_refuses_bad_sizes_with_shape_errors() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let weights = InceptionWeights::random(1);
    assert!(matches!(Inception::new(gpu, &weights, 0, 8, 8), Err(GpuError::Shape(_))));
    assert!(matches!(Inception::new(gpu, &weights, 1, 0, 8), Err(GpuError::Shape(_))));
    let net = Inception::new(gpu, &weights, 2, 8, 8).unwrap();
    assert_eq!(net.batch(), 2);
    let x = vec![0.5; 3 * 3 * 64];
    for (n, len) in [(0, 0), (3, 3 * 3 * 64), (2, 3 * 64)] {
        let r = pollster::block_on(net.features(gpu, &x[..len], n));
        assert!(matches!(r, Err(GpuError::Shape(_))), "n={n} len={len}: {r:?}");
    }
    let small = gpu.upload("images", &x[..3 * 64]).unwrap();
    let r = pollster::block_on(net.features_of(gpu, &small, 2));
    assert!(matches!(r, Err(GpuError::Shape(_))), "{r:?}");
}

// --- the weight file ---------------------------------------------------------------------------

/// The tensors of a converted pytorch-fid state dict, as (name, dtype, shape, bytes): every
/// BasicConv2d's conv weight (values (i mod 7) - 3) and BatchNorm (gamma 1.5, beta 0.25, mean
/// 0.5, var 3.999: scale 0.75 and folded bias -0.125, exact in f32), each BatchNorm's
/// `num_batches_tracked` (I64) and the classifier, which the loader ignores. `edit` may drop or
/// change a tensor.
type Raw = (String, Dtype, Vec<usize>, Vec<u8>);

fn state_dict(edit: impl Fn(&mut Vec<Raw>)) -> Vec<u8> {
    let f32s = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut raw: Vec<Raw> = Vec::new();
    for l in conv_layers() {
        let shape = vec![l.cout, l.cin, l.kh, l.kw];
        let n: usize = shape.iter().product();
        raw.push((format!("{}.conv.weight", l.name), Dtype::F32, shape, f32s((0..n).map(|i| (i % 7) as f32 - 3.0).collect())));
        for (what, v) in [("weight", 1.5), ("bias", 0.25), ("running_mean", 0.5), ("running_var", 3.999)] {
            raw.push((format!("{}.bn.{what}", l.name), Dtype::F32, vec![l.cout], f32s(vec![v; l.cout])));
        }
        raw.push((format!("{}.bn.num_batches_tracked", l.name), Dtype::I64, vec![], 7i64.to_le_bytes().to_vec()));
    }
    raw.push(("fc.weight".into(), Dtype::F32, vec![3, 2048], f32s(vec![0.0; 3 * 2048])));
    edit(&mut raw);
    let views: Vec<(String, TensorView)> =
        raw.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize(views, None).unwrap()
}

fn load_err(bytes: &[u8]) -> String {
    let e = InceptionWeights::from_safetensors(bytes).expect_err("a broken file loads").to_string();
    assert!(!e.contains('\n'), "error is not one line: {e}");
    e
}

#[test]
fn inception_weights_load_and_fold_batchnorm() {
    let w = InceptionWeights::from_safetensors(&state_dict(|_| {})).unwrap();
    assert_eq!(w.convs().len(), 94);
    let c = w.conv("Mixed_6b.branch7x7dbl_3").unwrap();
    assert_eq!((c.cout, c.cin, c.kh, c.kw), (128, 128, 1, 7));
    let want: Vec<f32> = (0..c.weight.len()).map(|i| ((i % 7) as f32 - 3.0) * 0.75).collect();
    assert_eq!(c.weight, want, "folded weight = w gamma / sqrt(var + eps)");
    assert!(c.bias.iter().all(|&b| b == -0.125), "folded bias = beta - mean gamma / sqrt(var + eps)");
}

#[test]
fn inception_weights_refuse_a_missing_tensor() {
    let name = "Mixed_7c.branch3x3dbl_3b.bn.running_mean";
    let e = load_err(&state_dict(|raw| raw.retain(|t| t.0 != name)));
    assert!(e.contains(name) && e.contains("missing"), "{e}");
}

#[test]
fn inception_weights_refuse_a_misshapen_tensor() {
    let name = "Mixed_6e.branch7x7_2.conv.weight";
    let e = load_err(&state_dict(|raw| {
        let t = raw.iter_mut().find(|t| t.0 == name).unwrap();
        // (192, 192, 1, 7) stored as (192, 192, 7, 1): the same bytes, the other kernel.
        t.2 = vec![192, 192, 7, 1];
    }));
    assert!(e.contains(name) && e.contains("[192, 192, 7, 1]") && e.contains("[192, 192, 1, 7]"), "{e}");
    let name = "Conv2d_1a_3x3.bn.weight";
    let e = load_err(&state_dict(|raw| {
        let t = raw.iter_mut().find(|t| t.0 == name).unwrap();
        t.1 = Dtype::I32;
    }));
    assert!(e.contains(name) && e.contains("I32"), "{e}");
}

#[test]
fn inception_weights_refuse_a_truncated_or_corrupt_file() {
    let bytes = state_dict(|_| {});
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        let e = load_err(&bytes[..cut]);
        assert!(e.contains("not a readable safetensors file"), "cut at {cut}: {e}");
    }
    let mut corrupt = bytes.clone();
    corrupt[8..16].copy_from_slice(b"{garbage");
    let e = load_err(&corrupt);
    assert!(e.contains("not a readable safetensors file"), "{e}");
}
