//! The op registry in a real browser: every kernel compiled to wasm, run through the browser's
//! WebGPU (SwiftShader in headless Chromium), compared with the CPU reference compiled to wasm.
//! Run by the test command through wasm-bindgen-test-runner and chromedriver.

#![cfg(target_arch = "wasm32")]

// The oracles the native tests share (tests/oracle/); this binary uses the MLP and the UNet ones.
#[allow(dead_code)]
#[path = "oracle/mod.rs"]
mod oracle;

use cdl::gpu::{Gpu, GpuOptions};
use cdl::model::mlp::{Mlp, MlpConfig};
use cdl::model::unet::{UNet, UNetConfig};
use cdl::ops;
use cdl::philox::normal_vec;
use cdl::reference::to_f64;
use cdl::reference::tol::{compare, LOOSE};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn gpu() -> Gpu {
    Gpu::new(&GpuOptions::default()).await.unwrap_or_else(|e| panic!("{e}"))
}

/// The kernels run on the browser's WebGPU implementation, not on a CPU fallback in Rust.
#[wasm_bindgen_test]
async fn runs_on_browser_webgpu() {
    let g = gpu().await;
    cdl::gpu::log(&format!("cdl web test adapter: {}", g.describe()));
    assert_eq!(g.info.backend, wgpu::Backend::BrowserWebGpu, "{}", g.describe());
}

async fn run(op: &str) {
    let g = gpu().await;
    let spec = ops::op(op).unwrap_or_else(|| panic!("no op {op} in the registry"));
    let results = (spec.check)(&g).await.unwrap_or_else(|e| panic!("{op}: {e}"));
    for r in &results {
        cdl::gpu::log(&r.to_string());
    }
    for e in spec.entries {
        assert!(results.iter().any(|r| r.entry == e.name), "{op}: entry {} was not checked", e.name);
    }
    let bad: Vec<String> = results.iter().filter(|r| !r.ok()).map(ToString::to_string).collect();
    assert!(bad.is_empty(), "{op} on {}:\n{}", g.describe(), bad.join("\n"));
}

macro_rules! op_tests {
    ($($name:ident),*) => {
        $(#[wasm_bindgen_test] async fn $name() { run(stringify!($name)).await; })*

        #[wasm_bindgen_test]
        fn every_registry_op_has_a_browser_test() {
            let tested = [$(stringify!($name)),*];
            for spec in ops::OPS {
                assert!(tested.contains(&spec.name), "registry op {} has no browser test", spec.name);
            }
        }
    };
}

op_tests!(
    elementwise,
    matmul,
    reduce,
    philox,
    groupnorm,
    resample,
    embedding,
    softmax,
    optim,
    conv2d,
    loss,
    rows,
    sampler,
    inception
);

/// The FID Inception network in the browser against its f64 oracle on random weights, as
/// tests/native/eval_inception.rs does natively (same weights seed, tolerance and oracle): one
/// 3×16×17 image, upsampled to 299×299, through every block to the 2,048 pool features.
#[wasm_bindgen_test]
async fn inception_features_match_the_reference_forward() {
    use cdl::eval::inception::{Inception, InceptionWeights, FEATURES};
    let g = gpu().await;
    let (h, w) = (16, 17);
    let weights = InceptionWeights::random(7);
    let net = Inception::new(&g, &weights, 1, h, w).unwrap_or_else(|e| panic!("{e}"));
    let x: Vec<f32> = normal_vec(3 * h * w, 5, 0).iter().map(|z| (0.5 + 0.25 * z).clamp(0.0, 1.0)).collect();
    let got = net.features(&g, &x, 1).await.unwrap_or_else(|e| panic!("{e}"));
    let want = cdl::reference::inception::forward(&weights, &to_f64(&x), 1, h, w);
    assert_eq!(got.len(), FEATURES);
    let r = compare(&got, &want, cdl::reference::tol::INCEPTION);
    cdl::gpu::log(&format!("inception features: {r}"));
    assert!(r.ok(), "Inception features in the browser vs the oracle: {r}");
}

/// The samplers on the device (`eval::gpu_sampler`) against the f64 host path in the browser, as
/// tests/native/eval_gpu_sampler.rs does natively (same network, noise and tolerance): DDPM, Heun
/// with churn and the Picard sampler with a sliding window, in groups and chunks of 16 rows.
#[wasm_bindgen_test]
async fn samplers_on_the_device_match_the_host_path() {
    use cdl::diffusion::sampler::{sample, DdpmVariance, SamplerConfig};
    let g = gpu().await;
    let cfg = MlpConfig { dim: 2, width: 32, blocks: 2, emb_dim: 16, precond: cdl::model::Precond::Edm };
    let net = Mlp::new(&g, cfg, 16, 7).await.unwrap_or_else(|e| panic!("{e}"));
    let mut den = cdl::eval::denoiser::GpuDenoiser::new(&g, Box::new(net));
    let par =
        SamplerConfig::Parallel { steps: 40, window: 10, tol: 0.05, ddim: false, variance: DdpmVariance::Posterior };
    let sequential = SamplerConfig::Ddpm { steps: 50, variance: DdpmVariance::Beta };
    for s in [sequential, SamplerConfig::Heun { steps: 8, churn: 2.0 }, par] {
        let (want, want_stats) = sample(&mut den, &s, 20, 11, None).await.unwrap_or_else(|e| panic!("{e}"));
        let (got, stats) = den.sample_on_device(&s, 20, 11, None).await.unwrap_or_else(|e| panic!("{e}"));
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        cdl::gpu::log(&format!("{}: max |device - host| {worst:.2e}, {stats:?}", s.name()));
        assert!(worst <= 2e-5, "{}: device and host samples differ by {worst:e}", s.name());
        assert_eq!(stats, want_stats, "{}", s.name());
    }
}

/// Output, input gradient and every parameter gradient (flat `grads` split by `layout`) against
/// the oracle's, with LOOSE; one message listing every mismatch.
fn assert_matches_oracle(
    layout: &cdl::nn::ParamLayout,
    out: (&[f32], &[f64]),
    dx: (&[f32], &[f64]),
    (grads, want_grads): (&[f32], &std::collections::HashMap<String, Vec<f64>>),
) {
    let mut bad = Vec::new();
    let mut cmp = |what: String, got: &[f32], want: &[f64]| {
        let r = compare(got, want, LOOSE);
        if !r.ok() {
            bad.push(format!("{what}: {r}"));
        }
    };
    cmp("out".into(), out.0, out.1);
    cmp("dx".into(), dx.0, dx.1);
    for (name, _, gr) in layout.split(grads) {
        cmp(format!("grad {name}"), &gr, &want_grads[&name]);
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The MLP forward and backward in the browser against the f64 oracle (as tests/native/model_mlp.rs
/// does natively): the model's whole dispatch list runs on the browser's WebGPU.
#[wasm_bindgen_test]
async fn mlp_matches_oracle() {
    let g = gpu().await;
    let (cfg, b) = (MlpConfig { dim: 2, width: 24, blocks: 2, emb_dim: 16, precond: cdl::model::Precond::Edm }, 37);
    let model = Mlp::new(&g, cfg, b, 9).await.unwrap_or_else(|e| panic!("{e}"));
    let x = normal_vec(b * cfg.dim, 3, 0);
    let t: Vec<f32> = normal_vec(b, 3, 1).iter().map(|v| 1.5 * v).collect();
    let dout = normal_vec(b * cfg.dim, 3, 2);
    g.write(&model.x, &x);
    g.write(&model.t, &t);
    g.write(&model.dout, &dout);
    model.submit(&g, true);
    let read = |buf| g.read(buf);
    let out = read(&model.out).await.unwrap_or_else(|e| panic!("{e}"));
    let dx = read(&model.dx).await.unwrap_or_else(|e| panic!("{e}"));
    let values = read(&model.params.value).await.unwrap_or_else(|e| panic!("{e}"));
    let grads = read(&model.params.grad).await.unwrap_or_else(|e| panic!("{e}"));
    let layout = &model.params.layout;
    let o = oracle::mlp::Oracle { cfg, b, p: oracle::mlp::tensors(layout.split(&values)) };
    let (x64, t64, d64) = (to_f64(&x), to_f64(&t), to_f64(&dout));
    let (want_out, cache) = o.forward(&x64, &t64);
    let (want_grads, want_dx) = o.backward(&cache, &x64, &d64);
    assert_matches_oracle(layout, (&out, &want_out), (&dx, &want_dx), (&grads, &want_grads));
}

/// The tiny UNet's forward and backward in the browser against the f64 oracle (as
/// tests/native/model_unet.rs does natively): output, input gradient and every parameter gradient.
#[wasm_bindgen_test]
async fn unet_matches_oracle() {
    let g = gpu().await;
    let (cfg, b) = (UNetConfig::tiny(), 2);
    let model = UNet::new(&g, cfg.clone(), b, 9).await.unwrap_or_else(|e| panic!("{e}"));
    let s2 = cfg.image_size * cfg.image_size;
    let x = normal_vec(b * cfg.in_channels * s2, 13, 0);
    let t: Vec<f32> = normal_vec(b, 13, 1).iter().map(|v| 1.5 * v).collect();
    let dout = normal_vec(b * cfg.out_channels * s2, 13, 2);
    g.write(&model.x, &x);
    g.write(&model.t, &t);
    g.write(&model.dout, &dout);
    model.submit(&g, true);
    let out = g.read(&model.out).await.unwrap_or_else(|e| panic!("{e}"));
    let dx = g.read(&model.dx).await.unwrap_or_else(|e| panic!("{e}"));
    let values = g.read(&model.params.value).await.unwrap_or_else(|e| panic!("{e}"));
    let grads = g.read(&model.params.grad).await.unwrap_or_else(|e| panic!("{e}"));
    let layout = &model.params.layout;
    let p = oracle::resblock::tensors(layout.split(&values));
    let o = oracle::unet::Oracle { cfg: &cfg, b, p: &p };
    let (x64, t64, d64) = (to_f64(&x), to_f64(&t), to_f64(&dout));
    let (want_out, cache) = o.forward(&x64, &t64);
    let (want_grads, want_dx) = o.backward(&cache, &x64, &d64);
    assert_matches_oracle(layout, (&out, &want_out), (&dx, &want_dx), (&grads, &want_grads));
    assert_eq!(want_grads.len(), layout.shapes().len());
}
