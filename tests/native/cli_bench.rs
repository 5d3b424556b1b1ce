//! `cdl bench train` keeps its JSON schema: training cases (std and std+CDL) and every sampler
//! per batch size, with positive rates, device memory, and FLOPs per step equal to a hand count.

use crate::common;

use std::process::Command;

/// FLOPs of one row through the default MLP (D 2, W 128, E 128, 2 blocks), by hand:
/// 2 (E W + W W + D W + 2 (2 W W) + W D), the products emb.fc1, emb.fc2, inp, the blocks' fc1
/// and fc2, and out.
const MLP_FWD_PER_ROW: u64 = 2 * (128 * 128 + 128 * 128 + 2 * 128 + 4 * 128 * 128 + 128 * 2);

#[test]
fn bench_train_reports_every_case() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cdl"))
        .args([
            "bench",
            "train",
            "--model",
            "mlp",
            "--batches",
            "8,16",
            "--points",
            "4",
            "--runs",
            "2",
            "--sampler-steps",
            "3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["bench"].as_str(), v["schema"].as_u64()), (Some("train"), Some(1)));
    assert!(v["best_matmul"]["gflops"].as_f64().unwrap() > 0.0, "{v}");
    let cases = v["cases"].as_array().unwrap();
    for batch in [8u64, 16] {
        let of = |what: &str| cases.iter().filter(|c| c["batch"] == batch && c["what"] == what).collect::<Vec<_>>();
        let train = of("train");
        assert_eq!(train.iter().map(|c| c["loss"].as_str().unwrap()).collect::<Vec<_>>(), ["std", "std+cdl"]);
        // K = 2 anchors of M = 4 points: std + CDL evaluates B + 16 rows.
        assert_eq!(train[1]["rows"].as_u64(), Some(batch + 16));
        for c in &train {
            assert!(c["examples_per_s"].as_f64().unwrap() > 0.0 && c["device_bytes"].as_u64().unwrap() > 0, "{c}");
            // Backward is twice the forward but for emb.fc1's input gradient.
            let per_row = 3 * MLP_FWD_PER_ROW - 2 * 128 * 128;
            assert_eq!(c["flops_per_step"].as_f64(), Some((c["rows"].as_u64().unwrap() * per_row) as f64), "{c}");
            assert!(c["gflops_per_s"].as_f64().unwrap() > 0.0 && c["efficiency_vs_best_matmul"].as_f64().unwrap() > 0.0);
            assert!(c["dispatches_per_step"].as_f64().unwrap() >= 20.0, "{c}");
        }
        let samplers: Vec<&str> = of("sample").iter().map(|c| c["sampler"].as_str().unwrap()).collect();
        assert_eq!(samplers.len(), 4, "{samplers:?}");
        assert!(of("sample").iter().all(|c| c["samples_per_s"].as_f64().unwrap() > 0.0));
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_cdl")).args(["bench", "train", "--model", "vit"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown model"));
}

/// scripts/gpu-bench at toy sizes on this adapter: every step runs and the one JSON holds each
/// step's output (the matmul schemes timed, the tuned cache); on a machine without the NVIDIA
/// driver the full run stops at once, saying what is missing.
#[test]
fn the_gpu_bench_script_runs_every_step_and_writes_one_json() {
    let Some(out) = crate::common::cli::gpu_scratch("gpu-bench") else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/gpu-bench");
    let o = Command::new(script)
        .env("CDL", env!("CARGO_BIN_EXE_cdl"))
        .env("OUT", &out)
        .env("GPU_BENCH_QUICK", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", crate::common::cli::text(&o));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("gpu-bench.json")).unwrap()).unwrap();
    for step in ["info", "tune", "ops", "train"] {
        assert_eq!(v["steps"][step]["exit"], 0, "{step}: {v}");
    }
    assert!(v["steps"]["info"]["output"].as_str().unwrap().contains("checks OK"), "{v}");
    assert!(v["steps"]["tune"]["output"]["measured"].as_u64().unwrap() > 0, "{v}");
    let kernels: Vec<&str> =
        v["steps"]["ops"]["output"]["cases"].as_array().unwrap().iter().filter_map(|c| c["kernel"].as_str()).collect();
    assert!(kernels.contains(&"matmul_nn_tiled") && kernels.contains(&"matmul_nn4"), "{kernels:?}");
    assert_eq!(v["steps"]["train"]["output"]["bench"], "train", "{v}");

    if Command::new("nvidia-smi").arg("-L").output().is_err() {
        let o = Command::new(script).env("CDL", env!("CARGO_BIN_EXE_cdl")).env("OUT", &out).output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("nvidia-smi not found"), "{err}");
    }
}

/// `cdl bench sample` times every sampler on both paths (device, then host); each run's FLOPs
/// are its evaluations of the default MLP on every sample, so the count and the evaluations
/// agree.
#[test]
fn bench_sample_reports_every_sampler() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cdl"))
        .args(["bench", "sample", "--model", "mlp", "--samples", "8", "--steps", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bench"], "sample");
    let cases = v["cases"].as_array().unwrap();
    let names: Vec<(&str, &str)> =
        cases.iter().map(|c| (c["sampler"].as_str().unwrap(), c["path"].as_str().unwrap())).collect();
    let want: Vec<(&str, &str)> = ["ddpm-3", "ddim-3", "heun-3", "parallel-ddpm-3-posterior-p3-tol0.1"]
        .iter()
        .flat_map(|s| [(*s, "device"), (*s, "host")])
        .collect();
    assert_eq!(names, want);
    for pair in cases.chunks(2) {
        // Same sampler, same evaluations on both paths; the device path submits no more often.
        assert_eq!(pair[0]["passes"], pair[1]["passes"], "{pair:?}");
        assert_eq!(pair[0]["evaluations"], pair[1]["evaluations"], "{pair:?}");
        assert!(pair[0]["submissions"].as_u64() <= pair[1]["submissions"].as_u64(), "{pair:?}");
    }
    for c in cases {
        assert!(c["samples_per_s"].as_f64().unwrap() > 0.0, "{c}");
        assert_eq!(c["flops"].as_u64(), Some(c["evaluations"].as_u64().unwrap() * 8 * MLP_FWD_PER_ROW), "{c}");
    }
}
