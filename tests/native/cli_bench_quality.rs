//! `cdl bench quality` on tiny budgets: both trainers run on the same data with the same noise
//! levels, every case reports finite scores for each trainer and the floor over every seed, the
//! images path scores a UNet with the pixel Fréchet distance, and bad requests are one-line
//! errors. Needs the GPU and CDL_PYTHON (skipped without them, failing under REQUIRE_GPU /
//! REQUIRE_MIRROR).

use crate::common;
use crate::common::cli;
use crate::common::mirror;

use std::path::PathBuf;

use serde_json::Value;

use cli::{error_line, gpu_scratch, text};

/// `cdl bench quality <flags> --dir DIR` with the mirror's Python, DIR a new scratch directory
/// `name`: DIR and the JSON report, or `None` without a GPU or the mirror.
fn bench(name: &str, flags: &str) -> Option<(PathBuf, Value)> {
    let dir = gpu_scratch(name)?;
    let python = mirror::python_or_skip()?;
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_cdl"))
        .args(["bench", "quality"])
        .args(flags.split_whitespace())
        .arg("--dir")
        .arg(&dir)
        .env("CDL_PYTHON", python)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", text(&o)));
    Some((dir, v))
}

fn per_seed<'a>(case: &'a Value, key: &str) -> &'a Vec<Value> {
    case[key]["per_seed"].as_array().unwrap_or_else(|| panic!("{key} in {case}"))
}

#[test]
fn both_trainers_are_scored_on_the_same_data_and_levels() {
    let flags = "--data moons --losses ddpm,cdl --seeds 2 --steps 30 --samples 60 --sampler-steps 20 --points 4";
    let Some((dir, v)) = bench("bench-quality", flags) else { return };
    assert_eq!(v["bench"], "quality");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.iter().map(|c| c["loss"].as_str().unwrap()).collect::<Vec<_>>(), ["ddpm", "cdl"]);
    for c in cases {
        for key in ["score_cdl", "score_reference", "score_floor", "tail_cdl", "tail_reference"] {
            let v = per_seed(c, key);
            assert_eq!(v.len(), 2, "{key}: {c}");
            assert!(v.iter().all(|x| x.as_f64().unwrap().is_finite()), "{key}: {c}");
        }
        assert!(c["ratio_of_means"].as_f64().unwrap().is_finite(), "{c}");
        assert!(c["difference"]["verdict_lower_is_better"].is_string(), "{c}");
    }
    // The reference integrated over the α range `cdl train` trained at, and drew ζ from a logistic.
    for seed in 0..2 {
        let run = dir.join("mlp/moons/cdl").join(format!("seed-{seed}"));
        let ours = cdl::train::checkpoint::load(run.join("checkpoint.safetensors")).unwrap();
        let range: Vec<f64> = serde_json::from_str(&ours.extra["train.alpha_range"]).unwrap();
        let theirs = cdl::train::checkpoint::load(run.join("reference.safetensors")).unwrap();
        let s: Value = serde_json::from_str(&theirs.extra["settings"]).unwrap();
        let q = &s["levels"];
        let (mu, sc, c) = (q["mu"].as_f64().unwrap(), q["s"].as_f64().unwrap(), q["c"].as_f64().unwrap());
        assert!((mu - c * sc - range[0]).abs() < 1e-9 && (mu + c * sc - range[1]).abs() < 1e-9, "{q} vs {range:?}");
        assert!(s["zeta"]["mu"].is_number(), "{s}");
        assert_eq!(theirs.get("samples").unwrap().shape, vec![60, 2]);
    }
}

#[test]
fn images_are_scored_with_the_pixel_frechet_distance() {
    let flags = "--model unet-tiny --losses ddpm --seeds 1 --steps 2 --batch 2 --samples 6 --sampler-steps 2";
    let Some((dir, v)) = bench("bench-quality-images", flags) else { return };
    assert!(v["settings"]["score"].as_str().unwrap().contains("Fréchet"), "{v}");
    let c = &v["cases"][0];
    assert_eq!(c["data"], "shapes");
    for key in ["score_cdl", "score_reference", "score_floor"] {
        let x = per_seed(c, key)[0].as_f64().unwrap();
        assert!(x.is_finite() && x > 0.0, "{key}: {c}");
    }
    let theirs = cdl::train::checkpoint::load(dir.join("unet-tiny/shapes/ddpm/seed-0/reference.safetensors")).unwrap();
    assert_eq!(theirs.get("samples").unwrap().shape, vec![6, 3, 16, 16]);
}

/// An image folder given by its absolute path: the run directories go under --dir, named by the
/// folder's name, never into the folder itself; --first-seed names the seed trained.
#[test]
fn an_image_folder_runs_under_the_bench_directory() {
    let Some(imgs) = gpu_scratch("bench-quality-folder") else { return };
    for i in 0..8u8 {
        let img = image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 15, y as u8 * 15, i * 30]));
        img.save(imgs.join(format!("{i}.png"))).unwrap();
    }
    let imgs = imgs.canonicalize().unwrap();
    let flags = format!(
        "--model unet-tiny --data {} --losses ddpm --seeds 1 --first-seed 3 --steps 2 --batch 2 --samples 3 --sampler-steps 2",
        imgs.display()
    );
    let Some((dir, v)) = bench("bench-quality-folder-runs", &flags) else { return };
    let name = imgs.file_name().unwrap();
    let runs = dir.join("unet-tiny").join(name).join("ddpm");
    let seeds: Vec<_> = std::fs::read_dir(&runs).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(seeds, ["seed-3"], "{v}");
    assert!(runs.join("seed-3/checkpoint.safetensors").is_file(), "{v}");
    assert_eq!(v["settings"]["first_seed"], 3, "{v}");
    let inside: Vec<_> = std::fs::read_dir(&imgs).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(inside.len(), 8, "the image folder gained {inside:?}");
}

#[test]
fn bad_requests_are_one_line_errors() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let python = std::env::var("CDL_PYTHON").unwrap_or_else(|_| "python3".into());
    for (args, want) in [
        (vec!["--losses", "edm"], "the reference trainer has ddpm, itd and cdl"),
        (vec!["--data", "no-such-set"], "built-in 2-D sets"),
        (vec!["--model", "unet-tiny", "--losses", "ddpm", "--data", "moons"], "moons"),
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_cdl"))
            .args(["bench", "quality"])
            .args(&args)
            .env("CDL_PYTHON", &python)
            .output()
            .unwrap();
        let line = error_line(&o);
        assert!(line.contains(want), "{args:?}: {line}");
    }
}
