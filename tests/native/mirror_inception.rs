//! The Inception-v3 feature network on the GPU against pytorch-fid's own InceptionV3([3])
//! (tools/inception_mirror.py): random weights in pytorch-fid's names (`make-weights`), converted
//! by tools/inception_to_safetensors.py and read by `InceptionWeights::from_safetensors`; two
//! 32×32 images per set (so the bilinear resize to 299 is exercised) go to both sides; we compare
//! the (n, 2048) features, the FID of two sets against pytorch-fid's calculate_frechet_distance, and
//! check that broken weights files are refused with one line naming the tensor.
//!
//! PyTorch runs as a child process; without CDL_PYTHON the test prints `SKIPPED: no PyTorch
//! mirror (set CDL_PYTHON)` and passes, unless REQUIRE_MIRROR=1.

use std::path::Path;
use std::process::Command;

use crate::common;
use crate::common::mirror::{inception_weights, python_or_skip, TestDir};

use cdl::eval::fd::frechet_distance;
use cdl::eval::inception::{Inception, InceptionWeights, FEATURES};
use cdl::eval::npz::{npz_bytes, read_npz};
use cdl::philox::normal_vec;
use cdl::reference::tol::{compare, Tol};

/// Images per set (every image costs a 299×299 forward, seconds on lavapipe), and their side.
const N: usize = 2;
const SIDE: usize = 32;

/// Features, relative to the largest |feature| of the mirror (atol = FEATURES_REL · max |f|). Both
/// sides compute in f32 through 94 convolutions (sums of up to 2,048 products); we fold BatchNorm
/// into the weights in f64 while PyTorch applies it after each convolution, so the roundings
/// differ. Measured on lavapipe against PyTorch on the CPU: max |Δf| 1.5e-4 on max |f| 77.2,
/// 2.0e-6 of it; 1e-5 leaves 5×. A wrong layer (an average pool that counts padding, a missing
/// ReLU, a swapped branch order) moves features by O(10%) of max |f|.
const FEATURES_REL: f64 = 1e-5;
/// FID of two sets, relative to its scale S = |Δμ|² + tr Σ₁ + tr Σ₂ (every term is quadratic in
/// the features, so features within FEATURES_REL of max |f| move FID by ~2·FEATURES_REL of S).
/// Measured: |ΔFID| 0.011 on S = 6,648, 1.6e-6 of it; 1e-4 leaves 5× over the 2e-5 the features'
/// tolerance allows. A network that is wrong changes FID by O(S).
const FID_REL: f64 = 1e-4;

/// Runs `tools/<script>` with `args`; panics with its stderr when it fails.
fn python(python: &str, script: &str, args: &[&Path]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools").join(script);
    let o = Command::new(python).arg(&path).args(args).output().unwrap();
    print!("{}", String::from_utf8_lossy(&o.stdout));
    assert!(o.status.success(), "tools/{script} failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// `N` deterministic SIDE×SIDE RGB images in [0, 1]: smooth gradients plus clamped noise, so
/// neighbouring pixels differ (the resize interpolates) without leaving [0, 1]. (N, 3, SIDE, SIDE)
fn images(seed: u64) -> Vec<f32> {
    let noise = normal_vec(N * 3 * SIDE * SIDE, seed, 0);
    (0..N * 3 * SIDE * SIDE)
        .map(|i| {
            let (img, c, y, x) = (i / (3 * SIDE * SIDE), (i / (SIDE * SIDE)) % 3, (i / SIDE) % SIDE, i % SIDE);
            let ramp = ((x + 2 * y + 7 * c + 11 * img) % (2 * SIDE)) as f32 / (2 * SIDE) as f32;
            (0.7 * ramp + 0.15 + 0.1 * noise[i]).clamp(0.0, 1.0)
        })
        .collect()
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

fn max_abs(x: &[f64]) -> f64 {
    x.iter().fold(0.0, |m, v| m.max(v.abs()))
}

#[test]
fn features_and_fid_match_pytorch_fid() {
    let Some(py) = python_or_skip() else { return };
    let Some(gpu) = common::gpu_or_skip() else { return };
    let dir = TestDir::new("mirror-inception");
    let (pth, st) = inception_weights(&py);

    let (a, b) = (images(1), images(2));
    let shape = [N, 3, SIDE, SIDE];
    let bytes = npz_bytes(&[("images", &shape, &widen(&a)), ("images_b", &shape, &widen(&b))]).unwrap();
    let (input, output) = (dir.path("images.npz"), dir.path("features.npz"));
    std::fs::write(&input, bytes).unwrap();
    python(&py, "inception_mirror.py", &[Path::new("features"), pth, &input, &output]);
    let want = read_npz(std::fs::File::open(&output).unwrap(), &["features", "features_b", "fd"]).unwrap();
    assert_eq!(want[0].shape, [N, FEATURES]);

    let weights = InceptionWeights::from_safetensors(&std::fs::read(st).unwrap()).unwrap();
    let net = Inception::new(gpu, &weights, N, SIDE, SIDE).unwrap();
    let got_a = pollster::block_on(net.features(gpu, &a, N)).unwrap();
    let got_b = pollster::block_on(net.features(gpu, &b, N)).unwrap();

    let scale = max_abs(&want[0].data).max(max_abs(&want[1].data));
    assert!(scale > 0.1 && scale.is_finite(), "the mirror's features are degenerate: max |f| = {scale}");
    let tol = Tol { atol: FEATURES_REL * scale, rtol: 0.0 };
    for (what, got, want) in [("features A", &got_a, &want[0].data), ("features B", &got_b, &want[1].data)] {
        let r = compare(got, want, tol);
        println!("{what}: {r} (max |f| {scale:.4})");
        assert!(r.ok(), "{what}: {r}");
    }

    // FID of A against B: ours on our features, pytorch-fid's on its own.
    let (fa, fb) = (widen(&got_a), widen(&got_b));
    let fid = frechet_distance(&fa, &fb, FEATURES).unwrap();
    let pytorch_fid = want[2].data[0];
    let (wa, wb) = (&want[0].data, &want[1].data);
    let mean = |x: &[f64], j: usize| (0..N).map(|i| x[i * FEATURES + j]).sum::<f64>() / N as f64;
    let s: f64 = (0..FEATURES)
        .map(|j| {
            let (ma, mb) = (mean(wa, j), mean(wb, j));
            let var = |x: &[f64], m: f64| (0..N).map(|i| (x[i * FEATURES + j] - m).powi(2)).sum::<f64>() / (N - 1) as f64;
            (ma - mb).powi(2) + var(wa, ma) + var(wb, mb)
        })
        .sum();
    println!("FID {fid:.6} vs pytorch-fid {pytorch_fid:.6} (scale {s:.4})");
    assert!((fid - pytorch_fid).abs() <= FID_REL * s, "FID {fid} vs pytorch-fid {pytorch_fid}, scale {s}");
}

/// A converted file with one tensor removed, one reshaped, or cut short: refused with one line,
/// naming the tensor where there is one to name.
#[test]
fn broken_weights_files_are_refused_with_one_line_naming_the_tensor() {
    let Some(py) = python_or_skip() else { return };
    let (_, st) = inception_weights(&py);
    let good = std::fs::read(st).unwrap();
    assert!(InceptionWeights::from_safetensors(&good).is_ok());

    let tensors = safetensors::SafeTensors::deserialize(&good).unwrap();
    // The file again without tensor `drop`, and with `reshape`'s tensor cut to the given shape.
    let rewrite = |drop: &str, reshape: Option<(&str, Vec<usize>)>| -> Vec<u8> {
        let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, view) in tensors.tensors() {
            if name == drop {
                continue;
            }
            let shape = match &reshape {
                Some((n, s)) if *n == name => s.clone(),
                _ => view.shape().to_vec(),
            };
            let bytes = view.data()[..shape.iter().product::<usize>() * 4].to_vec();
            owned.push((name, view.dtype(), shape, bytes));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = owned
            .iter()
            .map(|(n, t, s, d)| (n.clone(), safetensors::tensor::TensorView::new(*t, s.clone(), d).unwrap()))
            .collect();
        safetensors::tensor::serialize(views, None).unwrap()
    };
    let missing = "Mixed_6b.branch7x7_2.conv.weight";
    let reshaped = "Conv2d_1a_3x3.bn.running_var";
    let cases: [(&str, Vec<u8>, Option<&str>); 3] = [
        ("a missing tensor", rewrite(missing, None), Some(missing)),
        ("a tensor of the wrong shape", rewrite("", Some((reshaped, vec![31]))), Some(reshaped)),
        ("a truncated file", good[..good.len() - 1000].to_vec(), None),
    ];
    for (what, bytes, name) in cases {
        let e = match InceptionWeights::from_safetensors(&bytes) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => e.to_string(),
        };
        println!("{what}: {e}");
        assert!(!e.is_empty() && !e.contains('\n'), "{what}: not one line: {e:?}");
        if let Some(name) = name {
            assert!(e.contains(name), "{what}: the error does not name {name}: {e}");
        }
    }
}
