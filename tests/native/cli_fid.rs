//! `cdl fid` and `cdl bench fid`: FID and KID of two small PNG folders with weights made by the
//! PyTorch mirror and converter (tools/inception_mirror.py, tools/inception_to_safetensors.py;
//! skipped without CDL_PYTHON unless REQUIRE_MIRROR=1), the statistics round trip through
//! --save-stats, the one-line errors of bad inputs, and the bench's JSON. Small on purpose: every
//! image is resized to 299×299, seconds each on lavapipe, so the tests share their forwards.

use std::path::Path;

use crate::common;
use crate::common::cli::{cdl, cdl_words, error_line, gpu_scratch, text};
use crate::common::mirror::{inception_weights, python_or_skip};

use cdl::eval::inception::FEATURES;
use cdl::eval::npz::load_stats;

/// Images per folder (each costs a 299×299 forward, seconds on lavapipe), and their side.
const N: usize = 2;
const SIDE: u32 = 32;

/// Writes `n` RGB PNGs of w×h into `dir` (created), drawn from `seed`.
fn folder(dir: &Path, n: usize, w: u32, h: u32, seed: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n as u32 {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let v = |c: u32| ((x * (3 + c) + y * (5 + seed) + 37 * i + 11 * seed + 60 * c) % 256) as u8;
            image::Rgb([v(0), v(1), v(2)])
        });
        img.save(dir.join(format!("{i:03}.png"))).unwrap();
    }
}

/// The shared random Inception weights (`common::mirror::inception_weights`): the path of the
/// safetensors file.
fn weights(py: &str) -> String {
    inception_weights(py).1.display().to_string()
}

/// The one JSON line of a successful `cdl fid`.
fn fid_json(args: &[&str]) -> serde_json::Value {
    let o = cdl(args);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

/// `cdl eval --metrics fid,kid` hands the sampler's output to the network on the device; `cdl
/// sample --out DIR` then `cdl fid DIR` takes the same samples (same sampler, seed and n) through
/// 8-bit PNGs. With x̂₀ clipped, DDIM's last step lands in [-1, 1], so the two differ by the PNGs'
/// rounding alone (at most 1/255 of the range per pixel): EVAL_VS_PNG bounds the relative FID
/// difference that leaves (features move by ~1e-2 of their scale at most, FID by about twice
/// that). Measured on lavapipe: 1.9e-3; 1e-2 leaves 5×. A device path that skipped the
/// [-1, 1] → [0, 1] map or read the wrong rows moves FID by O(1) of itself.
const EVAL_VS_PNG: f64 = 1e-2;

#[test]
fn fid_of_folders_and_statistics_and_eval_on_the_device_agree() {
    let Some(py) = python_or_skip() else { return };
    let Some(dir) = gpu_scratch("cli-fid-eval") else { return };
    let st = weights(&py);
    let (run, pngs, refs, stats) = (dir.join("run"), dir.join("pngs"), dir.join("refs"), dir.join("refs.npz"));
    folder(&refs, N, 16, 16, 4);
    let o = cdl_words(
        "train --model unet-tiny --data shapes --loss ddpm --batch 2 --steps 2 --log-every 1 --checkpoint-every 2 --quiet",
        &["--out", run.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let ck = run.join("checkpoint.safetensors");
    let sampler = format!("--n {N} --sampler ddim --steps 3 --clip-denoised --seed 5");
    let ck = ck.to_str().unwrap();
    let o = cdl_words(&format!("sample {sampler}"), &["--checkpoint", ck, "--out", pngs.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let (refs, pngs, stats) = (refs.to_str().unwrap(), pngs.to_str().unwrap(), stats.to_str().unwrap());

    // Two folders (16 px references, 32 px samples: each resized to 299), saving the first's
    // statistics; KID over min(1000, N, N) = N images per subset.
    let png = fid_json(&["fid", refs, pngs, "--inception", &st, "--batch", "1", "--kid-subsets", "5", "--save-stats", stats]);
    let fid = png["fid"].as_f64().unwrap();
    assert!(fid.is_finite() && fid > 0.0, "{png}");
    assert!(png["kid_mean"].as_f64().unwrap().is_finite() && png["kid_std"].as_f64().unwrap() >= 0.0, "{png}");
    assert_eq!((png["n_a"].as_u64(), png["n_b"].as_u64(), png["kid_subset_size"].as_u64()), (Some(2), Some(2), Some(2)));
    let m = load_stats(stats).unwrap();
    assert_eq!((m.dim, m.mu.len(), m.sigma.len()), (FEATURES, FEATURES, FEATURES * FEATURES));

    // The samples against the saved statistics: the same FID (the moments survive the .npz bit
    // for bit), no KID, and no count for the statistics' side.
    let w = fid_json(&["fid", pngs, stats, "--inception", &st]);
    let fid2 = w["fid"].as_f64().unwrap();
    assert!((fid2 - fid).abs() <= 1e-6 * (1.0 + fid), "{fid2} vs {fid}");
    assert!(w["kid_mean"].is_null() && w["n_b"].is_null() && w["kid_note"].is_string(), "{w}");

    // The same samples straight from the sampler to the network on the device.
    let o = cdl_words(
        &format!("eval {sampler} --metrics fid,kid"),
        &["--checkpoint", ck, "--inception", &st, "--ref", refs],
    );
    assert!(o.status.success(), "{}", text(&o));
    let dev: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let a = dev["fid"].as_f64().unwrap();
    println!("FID on the device {a:.6}, through PNGs {fid:.6}: relative difference {:.2e}", (a - fid).abs() / fid);
    assert!((a - fid).abs() <= EVAL_VS_PNG * fid, "eval {dev} vs fid on PNGs {png}");
    assert!(dev["kid_mean"].as_f64().unwrap().is_finite() && dev["n_ref"] == N, "{dev}");
    // Bad requests: no weights, KID against moments.
    let e = error_line(&cdl_words(&format!("eval {sampler} --metrics fid"), &["--checkpoint", ck, "--ref", refs]));
    assert!(e.contains("--inception"), "{e}");
    let e = error_line(&cdl_words(
        &format!("eval {sampler} --metrics kid"),
        &["--checkpoint", ck, "--inception", &st, "--ref", stats],
    ));
    assert!(e.contains("kid"), "{e}");
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let Some(dir) = gpu_scratch("cli-fid-bad") else { return };
    let (a, empty, mixed) = (dir.join("a"), dir.join("empty"), dir.join("mixed"));
    folder(&a, 2, SIDE, SIDE, 1);
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "not an image").unwrap();
    folder(&mixed, 2, SIDE, SIDE, 3);
    image::RgbImage::new(SIDE + 4, SIDE).save(mixed.join("999.png")).unwrap();
    let garbage = dir.join("w.safetensors");
    std::fs::write(&garbage, b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}").unwrap();
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let (a, garbage) = (p(&a), p(&garbage));
    let missing = p(&dir.join("nothere"));
    let cases: [(Vec<String>, &str); 6] = [
        (vec![missing.clone(), a.clone(), "--inception".into(), garbage.clone()], "no such folder"),
        (vec![p(&empty), a.clone(), "--inception".into(), garbage.clone()], "no PNG or JPEG images"),
        (vec![p(&mixed), a.clone(), "--inception".into(), garbage.clone()], "999.png: image is 36×32"),
        (vec![a.clone(), a.clone(), "--inception".into(), missing.clone()], "cannot read"),
        (vec![a.clone(), a.clone(), "--inception".into(), garbage.clone()], "w.safetensors"),
        (vec![p(&dir.join("s.npz")), a.clone(), "--inception".into(), garbage.clone()], "must be images"),
    ];
    for (args, want) in cases {
        let mut all = vec!["fid".to_string()];
        all.extend(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let line = error_line(&cdl(&refs));
        assert!(line.contains(want), "{all:?}: {line}");
    }
}

#[test]
fn bench_fid_reports_images_per_second() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let o = cdl(&["bench", "fid", "--batches", "1", "--size", "16", "--runs", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["bench"], "fid");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.iter().map(|c| c["batch"].as_u64().unwrap()).collect::<Vec<_>>(), [1]);
    for c in cases {
        let per_s = c["images_per_s"].as_f64().unwrap();
        assert!(per_s > 0.0 && per_s.is_finite(), "{c}");
        // The counted FLOPs are Inception-v3's 5.71 G multiply-adds at 299×299 (torchvision's
        // published figure for the same layers) times two, and the GFLOP/s column the rate times
        // them.
        let flops = c["flops_per_image"].as_f64().unwrap();
        assert!((flops / 2.0 - 5.71e9).abs() <= 0.01 * 5.71e9, "{c}");
        assert!((c["gflops"].as_f64().unwrap() - per_s * flops / 1e9).abs() <= 1e-9 * per_s * flops / 1e9, "{c}");
        // Where the adapter has timestamp queries (lavapipe has), every step of the network timed
        // alone, slowest first: each of the 94 convolutions by its layer name, with its rate.
        if let Some(layers) = c["layers"].as_array() {
            let ms: Vec<f64> = layers.iter().map(|l| l["ms"].as_f64().unwrap()).collect();
            assert!(ms.windows(2).all(|w| w[0] >= w[1]) && ms.iter().all(|t| t.is_finite()), "{c}");
            for conv in cdl::eval::inception::conv_layers() {
                let l = layers.iter().find(|l| l["step"] == conv.name.as_str());
                assert!(l.is_some_and(|l| l["gflops_per_s"].as_f64().unwrap() >= 0.0), "{} in {c}", conv.name);
            }
        }
    }
}

/// `cdl experiment images --inception`: a FID column, each run's samples against the held-out
/// images, in report.md and report.json.
#[test]
fn experiment_images_reports_fid_with_inception_weights() {
    let Some(py) = python_or_skip() else { return };
    let Some(dir) = gpu_scratch("cli-fid-experiment") else { return };
    let st = weights(&py);
    let out = dir.join("exp");
    let o = cdl_words(
        "experiment images --quick --arms ddpm --seeds 1 --steps 2 --samples 2 --samplers ddim --ddim-steps 2",
        &["--inception", &st, "--out", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| FID |") || report.contains(" FID |"), "{report}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{v}");
    // Two samples of a model trained for 2 steps against 4 held-out shapes: far apart.
    let fid = runs[0]["fid"].as_f64().unwrap();
    assert!(fid.is_finite() && fid > 0.0, "{}", runs[0]);
    // A weights file that is not there: one line naming it, before any training.
    let e = error_line(&cdl_words(
        "experiment images --quick --arms ddpm --seeds 1 --steps 2 --samples 3 --samplers ddim",
        &["--inception", dir.join("none.safetensors").to_str().unwrap(), "--out", dir.join("exp2").to_str().unwrap()],
    ));
    assert!(e.contains("none.safetensors"), "{e}");
}
