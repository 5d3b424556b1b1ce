//! `cdl sample`, `cdl eval` and `cdl experiment toy` end to end on a small trained model: every
//! sampler writes what it promises, metrics come back finite, the experiment writes its report
//! and pictures, and bad input is one line.

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
fn experiment_toy_writes_its_report_and_pictures() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let dir = scratch("experiment");
    let o = cdl(&[
        "experiment",
        "toy",
        "--quick",
        "--steps",
        "20",
        "--samples",
        "48",
        "--data",
        "moons",
        "--out",
        dir.to_str().unwrap(),
    ]);
    ok(&o);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let rows = report.lines().filter(|l| l.starts_with("| ddpm") || l.starts_with("| cdl")).count();
    assert_eq!(rows, 4, "{report}");
    for png in ["samples.png", "density-ddpm.png", "density-cdl.png", "samples-cdl-parallel.png"] {
        image::open(dir.join(png)).unwrap();
    }
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    for r in table.as_array().unwrap() {
        assert!(r["mmd"].as_f64().is_some_and(f64::is_finite) && r["passes"].as_u64().unwrap() <= 100, "{r}");
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
