//! The UNet on the GPU against its PyTorch mirror (tools/mirror.py unet), as tests/native/mirror_mlp.rs
//! does for the MLP: the same initial parameters (a CDL checkpoint) and inputs go to both; we
//! compare the output, the MSE loss, the input gradient, every parameter gradient, the loss after
//! each of 5 Adam steps and the final parameters, one OK / NOT OK line per tensor, and the
//! parameter counts; for the tiny preset, its class-conditional variant (10 classes, labels
//! [3, 7] as a one-hot `labels_onehot` input) and its EDM-preconditioned variant (`precond`
//! "edm", σ_d = 0.5; the mirror computes it from EDM's c_in, c_skip, c_out in σ, not from our ε
//! form). Also (no GPU, no Python): the round trip of `UNetConfig`'s JSON.
//!
//! PyTorch runs as a child process; without CDL_PYTHON the test prints `SKIPPED: no PyTorch
//! mirror (set CDL_PYTHON)` and passes, unless REQUIRE_MIRROR=1. Both sides compute in f32 with
//! different summation orders, so the tolerances are those of f32 against f32; see below.

use crate::common;
use crate::common::mirror;

use cdl::model::unet::{self, UNet, UNetConfig};
use cdl::model::Precond;
use cdl::reference::tol::Tol;
use mirror::{gpu_run, python_or_skip, run_mirror, save_params, Inputs, Report, TestDir};

const BATCH: usize = 2;
const SEED: u64 = 13;
const LR: f64 = 1e-3;
const STEPS: u32 = 5;

// Tolerances: f32 against f32 (GPU on lavapipe vs PyTorch 2.15 CPU, one thread), both rounding
// differently over sums much longer than the MLP's: 3x3 convolutions of up to 9 * 64 = 576 terms,
// weight gradients summed over B H W = 512 pixels, GroupNorms over (C / G) H W = 1024 values, a
// softmax over T = 64 keys, about 20 layers deep.
/// Forward values (out, loss), O(1). Measured: out max abs 1.2e-6 (max rel 4.7e-4 on an entry of
/// ~3e-3), loss rel 1.1e-7. atol 1e-5 leaves 8x; a wrong term moves out by O(0.1).
const FORWARD: Tol = Tol { atol: 1e-5, rtol: 1e-4 };
/// Gradients. The MSE mean over N = 1536 outputs makes them small: the largest entry per tensor
/// ranges from ~2e-4 (mid.res1.emb_scale.weight) to ~0.16 (conv_out.bias), grad.x up to ~2e-3.
/// Measured: max abs error 9.7e-8 (grad.conv_out.weight) over every parameter gradient, 4.1e-9 on
/// grad.x; relative errors are large only on entries that are zero up to rounding (the k block
/// of qkv.bias, see FINAL_SMALL_GRAD). DEFAULT's atol 1e-5 would be 6% of the smallest tensor's
/// scale, so: atol 5e-7 (5x the worst measured error, 0.3% of the smallest tensor's largest
/// entry), rtol 1e-3.
const GRADS: Tol = Tol { atol: 5e-7, rtol: 1e-3 };
/// Loss after each Adam step: the step moves each entry by about lr * sign(g), insensitive to
/// small errors in g, so the losses agree about as well as the first one. Measured: rel 1.6e-7.
const STEP_LOSS: Tol = Tol { atol: 1e-7, rtol: 1e-5 };
/// Final parameters after 5 steps (|update| <= lr = 1e-3 per step), for entries whose initial
/// gradient (the mirror's) has |g| >= SMALL_GRAD. Adam's update m_hat / (sqrt(v_hat) + eps) is
/// sensitive to a gradient error d about as d / |g| (when g changes sign over the steps) plus
/// lr * eps * d / (|g| + eps)^2 (eps = 1e-8); with d <= 1e-7 (GRADS) and |g| >= 1e-5 the first is
/// <= 1% of lr per step, the second negligible. Measured: max abs 2.4e-6 (one entry with
/// |g| ~ 1e-6 before the split moved to 1e-5), the rest <= 1.3e-6.
const FINAL_PARAMS: Tol = Tol { atol: 5e-6, rtol: 1e-5 };
/// |g| below which an entry's Adam trajectory follows rounding noise: 100x the worst measured
/// gradient error.
const SMALL_GRAD: f32 = 1e-5;
/// Final parameters of entries with |g| < SMALL_GRAD (a few percent of them, including the whole
/// k block of every qkv.bias, whose true gradient is exactly zero: softmax is invariant to adding
/// q_i . b_k to every score of row i). Their update lr * g / (|g| + eps) reaches sensitivity
/// lr / (4 eps) = 2.5e4 per unit of gradient error at |g| = eps, so f32 noise of ~1e-9 in g moves
/// them by up to ~2.5e-5 per step. Measured: max abs 5.2e-5 after 5 steps; the bound is 5e-4, 10x,
/// still half of one step's lr (an entry that skipped the optimizer would be off by ~lr each step).
const FINAL_SMALL_GRAD: Tol = Tol { atol: 5e-4, rtol: 0.0 };

#[test]
fn config_json_round_trip() {
    let conditional = UNetConfig { num_classes: 10, norm_groups: 2, ..UNetConfig::tiny() };
    let edm = UNetConfig { precond: Precond::Edm, ..UNetConfig::compact() };
    for cfg in [UNetConfig::tiny(), UNetConfig::compact(), UNetConfig::small(), conditional.clone(), edm.clone()] {
        let text = cfg.to_json();
        assert_eq!(UNetConfig::from_json(&text).unwrap(), cfg, "{text}");
    }
    // An eps net is written without the precond key (as before the option: earlier checkpoints
    // and the page's configs still match); an edm net with it; no key reads as eps.
    let v: serde_json::Value = serde_json::from_str(&UNetConfig::tiny().to_json()).unwrap();
    assert!(v.get("precond").is_none(), "{v}");
    let mut v: serde_json::Value = serde_json::from_str(&edm.to_json()).unwrap();
    assert_eq!(v["precond"], "edm");
    v.as_object_mut().unwrap().remove("precond");
    assert_eq!(UNetConfig::from_json(&v.to_string()).unwrap(), UNetConfig::compact());
    v["precond"] = "ve".into();
    assert!(UNetConfig::from_json(&v.to_string()).unwrap_err().contains("\"ve\""));
    v["precond"] = 1.into();
    assert!(UNetConfig::from_json(&v.to_string()).unwrap_err().contains("\"precond\""));
    assert_eq!(unet::ARCH, "unet");
    assert_eq!(UNetConfig::ARCH, unet::ARCH);
    let text = UNetConfig::tiny().to_json();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("heads");
    let err = UNetConfig::from_json(&v.to_string()).unwrap_err();
    assert!(err.contains("\"heads\""), "{err}");
    v["heads"] = 1.into();
    v["mult"] = serde_json::json!([1, -2]);
    let err = UNetConfig::from_json(&v.to_string()).unwrap_err();
    assert!(err.contains("\"mult\""), "{err}");
    assert!(UNetConfig::from_json("{").unwrap_err().contains("not JSON"));
    // Older checkpoints: no num_classes / norm_groups means 0 / 32.
    let mut v: serde_json::Value = serde_json::from_str(&conditional.to_json()).unwrap();
    assert_eq!((v["num_classes"].as_u64(), v["norm_groups"].as_u64()), (Some(10), Some(2)));
    v.as_object_mut().unwrap().remove("num_classes");
    v.as_object_mut().unwrap().remove("norm_groups");
    let old = UNetConfig::from_json(&v.to_string()).unwrap();
    assert_eq!(old, UNetConfig { num_classes: 0, norm_groups: 32, ..conditional });
    v["norm_groups"] = serde_json::json!(-1);
    assert!(UNetConfig::from_json(&v.to_string()).unwrap_err().contains("\"norm_groups\""));
}

#[test]
fn gpu_matches_pytorch_mirror() {
    mirror_case(UNetConfig::tiny(), &[], "unet");
}

/// The tiny preset with 10 classes, labels [3, 7]: class_emb.weight's gradient and Adam steps too.
#[test]
fn gpu_matches_pytorch_mirror_class_conditional() {
    mirror_case(UNetConfig { num_classes: 10, ..UNetConfig::tiny() }, &[3, 7], "unet-class");
}

/// The tiny preset with EDM's preconditioning (σ_d = 0.5): the input scaling, the skip term and
/// the output weight, in the output, grad.x and every parameter gradient.
#[test]
fn gpu_matches_pytorch_mirror_edm() {
    mirror_case(UNetConfig { precond: Precond::Edm, ..UNetConfig::tiny() }, &[], "unet-edm");
}

/// One comparison with the mirror; `labels` (one per image) when cfg.num_classes > 0.
fn mirror_case(cfg: UNetConfig, labels: &[u32], tag: &str) {
    let Some(python) = python_or_skip() else { return };
    let Some(gpu) = common::gpu_or_skip() else { return };
    let model = pollster::block_on(UNet::new(gpu, cfg.clone(), BATCH, SEED)).unwrap();
    let layout = model.params.layout.clone();
    let s = cfg.image_size;
    let (n_in, n_out) = (BATCH * cfg.in_channels * s * s, BATCH * cfg.out_channels * s * s);

    let inputs = Inputs::random(n_in, BATCH, n_out, 23);

    let dir = TestDir::new(tag);
    save_params(gpu, &model.params, UNetConfig::ARCH, cfg.to_json(), &dir);
    let (x_shape, target_shape) = ([BATCH, cfg.in_channels, s, s], [BATCH, cfg.out_channels, s, s]);
    let mut ckpt = inputs.checkpoint("unet-inputs", cfg.to_json(), &x_shape, &target_shape);
    if cfg.num_classes > 0 {
        let k = cfg.num_classes;
        let mut onehot = vec![0.0f32; BATCH * k];
        for (i, &l) in labels.iter().enumerate() {
            onehot[i * k + l as usize] = 1.0;
        }
        ckpt.insert("labels_onehot", vec![BATCH, k], onehot).unwrap();
        model.write_labels(gpu, labels).unwrap();
    }
    let want = run_mirror(&python, "unet", &dir, &ckpt, LR, STEPS);
    let run = gpu_run(gpu, &model, &model.dx, &inputs, LR, STEPS);

    // One line per tensor.
    let mut report = Report::new(&want);
    report.check_run(&run, &layout, FORWARD, GRADS, STEP_LOSS);
    for (name, _, p) in layout.split(&run.finals) {
        // Split by the mirror's initial gradient: well-conditioned entries, then near-zero ones.
        let (Some(g0), Some(want_p)) = (want.get(&format!("grad.{name}")), want.get(&format!("final.{name}"))) else {
            report.check(&format!("final.{name}"), &p, FINAL_PARAMS); // prints and records the miss
            continue;
        };
        let mut parts = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
        for ((got, exp), g) in p.iter().zip(&want_p.data).zip(&g0.data) {
            let part = &mut parts[usize::from(g.abs() < SMALL_GRAD)];
            part.0.push(*got);
            part.1.push(*exp);
        }
        let [(big_got, big_exp), (small_got, small_exp)] = parts;
        report.check_against(&format!("final.{name}"), &big_got, &big_exp, FINAL_PARAMS);
        if !small_got.is_empty() {
            report.check_against(&format!("final.{name}[|g|<1e-5]"), &small_got, &small_exp, FINAL_SMALL_GRAD);
        }
    }
    println!("losses (GPU): {:?}", run.losses);
    report.finish(model.param_count());
}
