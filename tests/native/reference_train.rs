//! tools/reference_train.py, the plain PyTorch trainer `cdl train` is measured against, on small
//! runs: it trains the mirror of the MLP (both preconditionings) and of a tiny UNet, its loss
//! falls, its samples have the data's shape and are finite, and its weights carry CDL's
//! checkpoint names and shapes, so `cdl sample` can read them.

use crate::common::mirror;

use std::path::Path;
use std::process::Command;

use cdl::model::{mlp, unet, MlpConfig, Precond, UNetConfig};
use cdl::nn::ParamLayout;
use cdl::philox::normal_vec;
use cdl::train::checkpoint::{self, Checkpoint};
use mirror::{python_or_skip, TestDir};

/// Trains `arch` with `config` on `x` (shape `shape`) and returns the output file.
fn train(
    python: &str,
    dir: &TestDir,
    arch: &str,
    config: &str,
    x: Vec<f32>,
    shape: Vec<usize>,
    extra: &[&str],
) -> Checkpoint {
    let (data, out) = (dir.path(&format!("{arch}-data.safetensors")), dir.path(&format!("{arch}-out.safetensors")));
    let mut d = Checkpoint::new("data", "{}", 0);
    d.insert("x", shape, x).unwrap();
    checkpoint::save(&data, &d).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/reference_train.py");
    let o = Command::new(python)
        .arg(script)
        .args(["--arch", arch, "--config", config, "--threads", "1"])
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    checkpoint::load(&out).unwrap()
}

/// Every model and EMA tensor of `layout` is present with its shape; the samples are finite.
fn check_output(out: &Checkpoint, layout: &ParamLayout, sample_shape: &[usize]) {
    for prefix in ["model.", "ema."] {
        for (name, shape) in layout.shapes() {
            let t = out.get(&format!("{prefix}{name}")).unwrap_or_else(|| panic!("no {prefix}{name}"));
            assert_eq!(t.shape, shape, "{prefix}{name}");
        }
    }
    let s = out.get("samples").unwrap();
    assert_eq!(s.shape, sample_shape);
    assert!(s.data.iter().all(|v| v.is_finite()), "non-finite samples");
}

fn losses(out: &Checkpoint) -> (f64, f64) {
    let get = |k: &str| out.extra[k].parse::<f64>().unwrap();
    (get("first_loss"), get("final_loss"))
}

#[test]
fn reference_trainer_trains_the_mirror_models() {
    let Some(python) = python_or_skip() else { return };
    let dir = TestDir::new("reference-train");

    // Two blobs at (±1.5, 0), std 0.3: DDPM loss, 300 steps, both output parameterisations.
    let n = 512;
    let z = normal_vec(2 * n, 5, 0);
    let x: Vec<f32> = (0..2 * n)
        .map(|i| {
            z[i] * 0.3
                + if i % 2 == 0 {
                    if i % 4 == 0 {
                        1.5
                    } else {
                        -1.5
                    }
                } else {
                    0.0
                }
        })
        .collect();
    for precond in [Precond::Edm, Precond::Eps] {
        let cfg = MlpConfig { dim: 2, width: 32, blocks: 1, emb_dim: 16, precond };
        let args = ["--steps", "300", "--batch", "64", "--n", "100", "--sample-steps", "100", "--ema", "0.99"];
        let out = train(&python, &dir, "mlp", &cfg.to_json(), x.clone(), vec![n, 2], &args);
        check_output(&out, &mlp::layout(cfg), &[100, 2]);
        let (first, last) = losses(&out);
        println!("mlp {}: loss {first:.3} -> {last:.3}", precond.name());
        assert!(last < 0.8 * first, "mlp {}: loss {first} -> {last}", precond.name());
        // Samples spread over both blobs: |x| of about 1.5 on average.
        let s = &out.get("samples").unwrap().data;
        let mean_abs = s.iter().step_by(2).map(|v| f64::from(v.abs())).sum::<f64>() / 100.0;
        assert!((0.8..2.2).contains(&mean_abs), "mlp {}: mean |x_0| of the samples {mean_abs}", precond.name());
    }

    // A tiny UNet on 8x8 RGB noise images, ITD loss: it runs and writes CDL's names.
    let ucfg =
        UNetConfig { image_size: 8, channels: 8, mult: vec![1, 2], attn_resolutions: vec![4], ..UNetConfig::tiny() };
    let imgs = normal_vec(16 * 3 * 8 * 8, 5, 1);
    let args = ["--loss", "itd", "--steps", "3", "--batch", "4", "--n", "2", "--sample-steps", "5"];
    let out = train(&python, &dir, "unet", &ucfg.to_json(), imgs, vec![16, 3, 8, 8], &args);
    check_output(&out, &unet::layout(&ucfg).unwrap(), &[2, 3, 8, 8]);
}
