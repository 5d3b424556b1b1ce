//! `cdl sample`, `cdl eval` and `cdl experiment toy` end to end on a small trained model: every
//! sampler writes what it promises, metrics come back finite, a sampler that leaves the trained
//! noise levels is warned about, the experiment writes its report (every arm and sampler over
//! seeds, errors, the MMD floor, verdicts) and pictures, and bad input is one line.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)]

#[path = "common/cli.rs"]
mod cli;
mod common;

use std::path::Path;
use std::process::Output;

use cli::{cdl, scratch, train_args};

fn ok(o: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_line(o: &Output) -> serde_json::Value {
    let out = ok(o);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// A 16-wide MLP trained for 40 steps on moons.
fn trained(dir: &Path) -> String {
    let out = dir.join("run");
    let extra = ["--steps", "40", "--log-every", "20", "--checkpoint-every", "40", "--quiet"];
    ok(&cdl(&train_args(out.to_str().unwrap(), &extra)));
    out.join("checkpoint.safetensors").display().to_string()
}

#[test]
fn every_sampler_writes_points_and_pictures() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let dir = scratch("samplers");
    let ck = trained(&dir);
    let csv = dir.join("s.csv");
    let v =
        json_line(&cdl(&["sample", "--checkpoint", &ck, "--n", "64", "--steps", "50", "--out", csv.to_str().unwrap()]));
    assert_eq!((v["passes"].as_u64(), v["evaluations"].as_u64()), (Some(50), Some(50)), "{v}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "x,y");
    assert_eq!(rows.len(), 65);
    assert!(rows[1..].iter().all(|r| r.split(',').all(|f| f.parse::<f64>().is_ok_and(f64::is_finite))), "{text}");
    for (sampler, extra) in [
        ("ddim", vec!["--steps", "20"]),
        ("heun", vec!["--steps", "8", "--churn", "1"]),
        ("parallel", vec!["--steps", "50", "--window", "10"]),
    ] {
        let png = dir.join(format!("{sampler}.png"));
        let mut args =
            vec!["sample", "--checkpoint", &ck, "--n", "32", "--sampler", sampler, "--out", png.to_str().unwrap()];
        args.extend(extra);
        let v = json_line(&cdl(&args));
        println!("{sampler}: {v}");
        let (passes, steps) = (v["passes"].as_u64().unwrap(), v["steps"].as_u64().unwrap());
        assert!(passes >= 1 && (sampler == "heun" || passes <= steps), "{v}");
        let img = image::open(&png).unwrap();
        assert_eq!((img.width(), img.height()), (800, 800));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_reports_finite_metrics() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let dir = scratch("eval");
    let ck = trained(&dir);
    let v = json_line(&cdl(&["eval", "--checkpoint", &ck, "--n", "64", "--steps", "50", "--nll-points", "20"]));
    println!("{v}");
    assert_eq!(v["data"], "moons");
    for k in ["mmd", "swd", "nll_bpd", "nll_nats"] {
        assert!(v[k].as_f64().is_some_and(f64::is_finite), "{k}: {v}");
    }
    // The sliced Wasserstein distance of a barely trained model to the data is not zero.
    assert!(v["swd"].as_f64().unwrap() > 0.0);
    let e = cdl(&["eval", "--checkpoint", &ck, "--metrics", "mmd,fid"]);
    assert_eq!(e.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&e.stderr).contains("unknown metric"), "{:?}", e);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn experiment_toy_reports_every_arm_and_sampler_over_seeds_with_errors_and_verdicts() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let dir = scratch("experiment");
    let o = cdl(&[
        "experiment",
        "toy",
        "--quick",
        "--arms",
        "itd,cdl",
        "--steps",
        "20",
        "--samples",
        "48",
        "--sampler-steps",
        "20",
        "--ddim-steps",
        "10",
        "--heun-steps",
        "6",
        "--data",
        "moons",
        "--out",
        dir.to_str().unwrap(),
    ]);
    ok(&o);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    // 2 arms x 4 samplers in the main table, one NLL row per arm; comparisons: MMD under each
    // sampler and passes under the parallel one.
    let rows = |prefix: &str| report.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(rows("| itd | "), 5, "{report}");
    assert_eq!(rows("| cdl | "), 5, "{report}");
    assert_eq!(rows("| cdl vs itd | "), 5, "{report}");
    for want in ["MMD floor", "2 training seeds", "β̃_t (posterior) for both", "CPU cores", " ± "] {
        assert!(report.contains(want), "{want:?} missing from\n{report}");
    }
    assert!(
        report
            .lines()
            .filter(|l| l.starts_with("| cdl vs itd"))
            .all(|l| l.contains("better") || l.contains("worse") || l.contains("not distinguishable")),
        "{report}"
    );
    for png in ["samples.png", "density-itd.png", "density-cdl.png", "samples-cdl-parallel.png", "samples-itd-heun.png"]
    {
        image::open(dir.join(png)).unwrap();
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2 * 2 * 4, "seeds x arms x samplers");
    for r in runs {
        assert!(r["mmd"].as_f64().is_some_and(f64::is_finite) && r["passes"].as_u64().unwrap() <= 20, "{r}");
        let o = r["outlier_fraction"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&o), "{r}");
    }
    assert_eq!(v["mmd_floor"]["per_seed"].as_array().unwrap().len(), 2);
    assert!(v["mmd_floor"]["se"].as_f64().is_some_and(f64::is_finite), "{}", v["mmd_floor"]);
    // The parallel and sequential DDPM rows name the same variance.
    for r in runs.iter().filter(|r| r["config"].as_str().unwrap().contains("ddpm-20")) {
        assert!(r["config"].as_str().unwrap().contains("posterior"), "{r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn experiment_images_reports_every_arm_and_sampler_with_grids() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let dir = scratch("experiment-images");
    let o = cdl(&[
        "experiment",
        "images",
        "--quick",
        "--arms",
        "edm,edm-cdl",
        "--steps",
        "2",
        "--samples",
        "2",
        "--sampler-steps",
        "3",
        "--ddim-steps",
        "2",
        "--heun-steps",
        "2",
        "--out",
        dir.to_str().unwrap(),
    ]);
    ok(&o);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let rows = |prefix: &str| report.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(rows("| edm | "), 5, "{report}");
    assert_eq!(rows("| edm-cdl | "), 5, "{report}");
    // Saturation under 4 samplers and passes under the parallel one.
    assert_eq!(rows("| edm-cdl vs edm | "), 5, "{report}");
    for want in ["Saturation floor", "unet-tiny", "held-out", "NLL (bits/dim)"] {
        assert!(report.contains(want), "{want:?} missing from\n{report}");
    }
    for png in ["samples-edm-sequential.png", "samples-edm-cdl-parallel.png", "samples-edm-heun.png"] {
        image::open(dir.join(png)).unwrap();
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2 * 2 * 4, "seeds x arms x samplers");
    for r in runs {
        let sat = r["saturated_fraction"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&sat) && r["nll_bpd"].as_f64().is_some_and(f64::is_finite), "{r}");
    }
    // The EDM arms train the UNet with EDM's preconditioning.
    let ck = cdl::train::checkpoint::load(dir.join("seed-0").join("edm").join("checkpoint.safetensors")).unwrap();
    let unet = cdl::model::UNetConfig::from_json(&ck.model_config).unwrap();
    assert_eq!(unet.precond, cdl::model::Precond::Edm);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sample_warns_once_when_a_sampler_leaves_the_trained_levels() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let dir = scratch("range");
    let run = dir.join("run");
    // ITD over α ∈ [−3, 3] only (μ 0, s 1, c 3).
    let extra = [
        "--steps",
        "20",
        "--log-every",
        "20",
        "--quiet",
        "--loss",
        "itd",
        "--levels-mu",
        "0",
        "--levels-scale",
        "1",
        "--levels-clip",
        "3",
    ];
    ok(&cdl(&train_args(run.to_str().unwrap(), &extra)));
    let ck = run.join("checkpoint.safetensors");
    let ck = ck.to_str().unwrap();
    let out = dir.join("s.csv");
    let o = cdl(&[
        "sample",
        "--checkpoint",
        ck,
        "--sampler",
        "ddim",
        "--steps",
        "5",
        "--n",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("[-3.00, 3.00]") && warnings[0].contains("below") && warnings[0].contains("above"),
        "{stderr}"
    );
    // A default run covers every sampler: no warning.
    let run2 = dir.join("run2");
    ok(&cdl(&train_args(run2.to_str().unwrap(), &["--steps", "20", "--log-every", "20", "--quiet"])));
    let ck2 = run2.join("checkpoint.safetensors");
    for sampler in ["ddpm", "heun", "parallel"] {
        let o = cdl(&[
            "sample",
            "--checkpoint",
            ck2.to_str().unwrap(),
            "--sampler",
            sampler,
            "--steps",
            "5",
            "--n",
            "8",
            "--out",
            out.to_str().unwrap(),
        ]);
        ok(&o);
        assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"), "{sampler}: {o:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_sample_input_is_one_line() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let dir = scratch("bad");
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint at all").unwrap();
    for (args, want) in [
        (vec!["sample", "--checkpoint", "/nonexistent/c.safetensors"], "c.safetensors"),
        (vec!["sample", "--checkpoint", junk.to_str().unwrap()], "junk.safetensors"),
        (vec!["sample", "--checkpoint", junk.to_str().unwrap(), "--sampler", "euler"], "euler"),
    ] {
        let o = cdl(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(want) && !stderr.contains("panicked"), "{stderr}");
    }
    let ck = trained(&dir);
    let o =
        cdl(&["sample", "--checkpoint", &ck, "--n", "4", "--steps", "5", "--out", dir.join("x.txt").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains(".csv or .png"));
    let _ = std::fs::remove_dir_all(&dir);
}
