//! `cdl export` end to end on a tiny trained MLP: the shipped file holds the F16 model and EMA
//! weights (no optimizer), a preview equal to the page's own computation on those weights, the
//! run's curve from metrics.jsonl, and still loads in `cdl sample`; --f32 keeps F32; bad input
//! is one line.

use crate::common::cli;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use serde_json::Value;

use cdl::eval::denoiser::GpuDenoiser;
use cdl::eval::density::{self, MapKind};
use cdl::reference::tol::{assert_close, Tol};
use cdl::train::checkpoint::{self, Checkpoint};
use cdl::train::data::{Toy, PAGE_TOY_POINTS};
use cdl::train::run::{RunConfig, Trained};

use cli::{cdl, error_line, gpu_scratch, scratch, text};

/// Preview map against the same map computed here from the shipped weights: the file stores it
/// in F16 (relative rounding error at most 2^-11), and the two computations may pick different
/// kernel variants (f32 summation order, far below 1e-3 nats).
const MAP_TOL: Tol = Tol { atol: 1e-3, rtol: 1.0 / 2048.0 };

fn ok(o: &Output) -> Value {
    assert!(o.status.success(), "{}", text(o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// One tiny run for every test of this file (width 8, 40 steps on moons, a metrics line every 5
/// steps): its checkpoint, or None without a GPU.
fn run() -> Option<&'static PathBuf> {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    crate::common::gpu_or_skip()?;
    Some(RUN.get_or_init(|| {
        let out = scratch("export-run").join("run");
        let words = "train --width 8 --blocks 1 --batch 32 --points 8 --toy-points 2000 --steps 40 --log-every 5 --quiet";
        let mut args: Vec<&str> = words.split_whitespace().collect();
        args.extend(["--out", out.to_str().unwrap()]);
        let o = cdl(&args);
        assert!(o.status.success(), "{}", text(&o));
        out.join("checkpoint.safetensors")
    }))
}

fn export(ck: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["export", "--checkpoint", ck.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(extra);
    cdl(&args)
}

fn names(ck: &Checkpoint) -> Vec<&str> {
    ck.tensors().iter().map(|t| t.name.as_str()).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn export_ships_f16_weights_a_preview_and_the_curve() {
    let Some(src) = run() else { return };
    let Some(dir) = gpu_scratch("export") else { return };
    let out = dir.join("moons.safetensors");
    let v = ok(&export(src, &out, &["--samples", "64", "--grid", "16"]));
    let bytes = std::fs::read(&out).unwrap();
    let shipped = checkpoint::decode(&bytes).unwrap();
    let source = checkpoint::load(src).unwrap();
    assert_eq!(v["bytes"].as_u64(), Some(bytes.len() as u64));
    assert_eq!(v["tensors"].as_u64(), Some(shipped.len() as u64));
    assert_eq!(v["f16"], Value::Bool(true));

    // The weights: every model and EMA tensor, F16, the source's values rounded; nothing else
    // of the source (the Adam moments).
    let weights: Vec<&str> =
        names(&source).into_iter().filter(|n| n.starts_with("model.") || n.starts_with("ema.")).collect();
    let mut want = weights.clone();
    want.extend(["preview.logp", "preview.samples"]);
    want.sort();
    assert_eq!(names(&shipped), want);
    assert!(source.len() > weights.len(), "the source holds optimizer tensors");
    let mut rounded = source.clone();
    for n in &weights {
        rounded.store_f16(n).unwrap();
    }
    rounded.round_f16().unwrap();
    for n in &weights {
        assert!(shipped.is_f16(n), "{n} stored as F16");
        assert_eq!(bits(&shipped.get(n).unwrap().data), bits(&rounded.get(n).unwrap().data), "{n}");
    }
    assert_eq!((shipped.arch.as_str(), shipped.step), (source.arch.as_str(), source.step));

    // The preview and its description.
    let samples = shipped.get("preview.samples").unwrap();
    let logp = shipped.get("preview.logp").unwrap();
    assert_eq!((samples.shape.as_slice(), logp.shape.as_slice()), (&[64, 2][..], &[16, 16][..]));
    assert!(shipped.is_f16("preview.samples") && shipped.is_f16("preview.logp"));
    let p: Value = serde_json::from_str(&shipped.extra["preview"]).unwrap();
    let want_p = serde_json::json!({"sampler": "ddpm", "steps": 1000, "variance": "beta", "n": 64, "seed": 1,
                                    "grid": 16, "points": density::POINTS, "mmd": p["mmd"], "mmd_n": 64});
    assert_eq!(p, want_p);
    assert!(p["mmd"].as_f64().unwrap().is_finite() && p["mmd"] == v["mmd"], "{p} {v}");

    // The map is the page's: density::map on the shipped (rounded) EMA weights, with the
    // variances of the points the page generates for moons.
    let gpu = crate::common::gpu_or_skip().unwrap();
    let variances = Toy::Moons.generate(PAGE_TOY_POINTS, RunConfig::default().seed).variances();
    let want_map = pollster::block_on(async {
        let mut den = GpuDenoiser::from_checkpoint(gpu, &shipped, 256, true).await.unwrap();
        density::map(&mut den, &variances, 16, density::POINTS, MapKind::LogP).await.unwrap()
    });
    assert_close("preview.logp against density::map", &logp.data, &want_map, MAP_TOL);
    let got: Vec<f64> = logp.data.iter().map(|&x| f64::from(x)).collect();
    let (lo, hi) = got.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    assert!(hi - lo <= density::LOGP_RANGE + MAP_TOL.atol + MAP_TOL.rtol * hi.abs().max(lo.abs()), "{lo} {hi}");

    // The curve: metrics.jsonl's columns, every line (8 of them, under the 200-row cap).
    let c: Value = serde_json::from_str(&shipped.extra["curve"]).unwrap();
    let lines: Vec<Value> = std::fs::read_to_string(src.with_file_name("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    for key in ["step", "loss", "loss_std", "loss_cdl"] {
        let col: Vec<Value> = lines.iter().map(|l| l[key].clone()).collect();
        assert_eq!(c[key], Value::Array(col), "{key}");
    }

    // Every loader takes it: the run metadata ignores the preview and the curve, and the
    // network is built from the model and EMA tensors only.
    Trained::load(&out).unwrap();
    let csv = dir.join("s.csv");
    let s = cdl(&["sample", "--checkpoint", out.to_str().unwrap(), "--n", "16", "--steps", "20", "--out", csv.to_str().unwrap()]);
    assert!(s.status.success(), "{}", text(&s));
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 17);
}

#[test]
fn export_f32_without_preview_or_metrics_keeps_the_weights_bit_for_bit() {
    let Some(src) = run() else { return };
    let Some(dir) = gpu_scratch("export-f32") else { return };
    // A copy of the checkpoint alone: no metrics.jsonl beside it.
    let alone = dir.join("checkpoint.safetensors");
    std::fs::copy(src, &alone).unwrap();
    let out = dir.join("w.safetensors");
    let o = export(&alone, &out, &["--f32", "--no-preview"]);
    let v = ok(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("metrics.jsonl"), "{stderr}");
    assert_eq!((v["f16"].clone(), v["mmd"].clone()), (Value::Bool(false), Value::Null));

    let shipped = checkpoint::load(&out).unwrap();
    let source = checkpoint::load(src).unwrap();
    assert!(!shipped.extra.contains_key("preview") && !shipped.extra.contains_key("curve"));
    for t in shipped.tensors() {
        assert!(t.name.starts_with("model.") || t.name.starts_with("ema."), "{}", t.name);
        assert!(!shipped.is_f16(&t.name));
        assert_eq!(bits(&t.data), bits(&source.get(&t.name).unwrap().data), "{}", t.name);
    }
    // F16 halves the weights' bytes (the tensor bytes after the header).
    let f16_file = dir.join("h.safetensors");
    ok(&export(&alone, &f16_file, &["--no-preview"]));
    let body = |p: &Path| {
        let b = std::fs::read(p).unwrap();
        b.len() as u64 - 8 - u64::from_le_bytes(b[..8].try_into().unwrap())
    };
    let values: u64 = shipped.tensors().iter().map(|t| t.data.len() as u64).sum();
    assert_eq!((body(&out), body(&f16_file)), (4 * values, 2 * values));
}

#[test]
fn export_errors_are_one_line() {
    let Some(src) = run() else { return };
    let Some(dir) = gpu_scratch("export-bad") else { return };
    let out = dir.join("o.safetensors");
    let missing = dir.join("no-such.safetensors");
    assert!(error_line(&export(&missing, &out, &[])).contains("no-such.safetensors"));
    let not_ck = dir.join("notes.txt");
    std::fs::write(&not_ck, "not a checkpoint\n").unwrap();
    assert!(error_line(&export(&not_ck, &out, &[])).contains("not a valid CDL checkpoint"));
    assert!(error_line(&export(src, src, &[])).contains("the checkpoint itself"));
    assert!(!out.exists());
}

/// A curve longer than 200 rows is thinned to 200 evenly spaced ones, the first and last kept.
#[test]
fn export_thins_a_long_curve_keeping_the_last_row() {
    let Some(dir) = gpu_scratch("export-curve") else { return };
    let run = dir.join("run");
    let words = "train --width 8 --blocks 1 --batch 32 --points 8 --toy-points 2000 --steps 301 --log-every 1 --quiet";
    let mut args: Vec<&str> = words.split_whitespace().collect();
    args.extend(["--out", run.to_str().unwrap()]);
    let o = cdl(&args);
    assert!(o.status.success(), "{}", text(&o));
    let out = dir.join("c.safetensors");
    ok(&export(&run.join("checkpoint.safetensors"), &out, &["--no-preview"]));
    let c: Value = serde_json::from_str(&checkpoint::load(&out).unwrap().extra["curve"]).unwrap();
    let steps: Vec<u64> = c["step"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect();
    // 301 lines (steps 1..=301): row i is line i·300/199.
    let want: Vec<u64> = (0..200).map(|i| 1 + i * 300 / 199).collect();
    assert_eq!(steps, want);
    for key in ["loss", "loss_std", "loss_cdl"] {
        assert_eq!(c[key].as_array().unwrap().len(), 200, "{key}");
    }
}
