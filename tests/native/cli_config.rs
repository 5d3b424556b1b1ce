//! Run configs for `cdl train`: every preset in configs/ resolves; flags override the file; an
//! unknown key is refused with the closest valid key; out-of-range values and broken TOML are one
//! line; the run directory gets the resolved config.toml. Image data trains a UNet.

use crate::common::cli;

use std::path::{Path, PathBuf};

use cli::{cdl, cdl_words, error_line, gpu_scratch, scratch};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn bad_configs_are_one_line_errors() {
    let dir = scratch("bad");
    let cases = [
        ("typo.toml", "lrr = 0.01\n", vec!["typo.toml", "unknown key `lrr`", "did you mean `lr`"]),
        ("typo2.toml", "lamda_cdl = 2.0\n", vec!["did you mean `lambda_cdl`"]),
        ("range.toml", "steps = 0\n", vec!["range.toml", "steps = 0 is out of range"]),
        ("type.toml", "batch = \"big\"\n", vec!["type.toml", "invalid type"]),
        ("syntax.toml", "steps = = 3\n", vec!["syntax.toml", "not valid TOML"]),
        ("loss.toml", "loss = \"mse\"\n", vec!["unknown loss \\\"mse\\\""]),
        ("model.toml", "model = \"resnet\"\n", vec!["model = \\\"resnet\\\""]),
        ("norm.toml", "cdl_norm = \"mean\"\n", vec!["cdl_norm"]),
        ("lr.toml", "lr = -1.0\n", vec!["learning rate"]),
    ];
    for (name, text, want) in cases {
        let path = write(&dir, name, text);
        let out = dir.join("out");
        let e = error_line(&cdl(&["train", "--config", &path, "--out", out.to_str().unwrap()]));
        for w in want {
            assert!(e.contains(&w.replace("\\\"", "\"")), "{name}: {e} lacks {w}");
        }
    }
    let e = error_line(&cdl(&["train", "--config", "/nonexistent/run.toml"]));
    assert!(e.contains("/nonexistent/run.toml"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_preset_resolves_and_flags_override_the_file() {
    let Some(dir) = gpu_scratch("presets") else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    // configs/sweeps/ holds sweep grids (tests/native/cli_sweep.rs), not run configs.
    let mut presets: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    presets.sort();
    assert!(presets.len() >= 7, "{presets:?}");
    for p in &presets {
        let text = std::fs::read_to_string(p).unwrap();
        let table: toml::Table = text.parse().unwrap();
        // CIFAR presets name a file the user supplies: without it the error names that path.
        if table["model"].as_str() != Some("mlp") {
            let out = dir.join("cifar");
            let e = error_line(&cdl(&["train", "--config", p.to_str().unwrap(), "--out", out.to_str().unwrap()]));
            assert!(e.contains("data/cifar-10-binary.tar.gz"), "{}: {e}", p.display());
            continue;
        }
        // Toy presets run; --steps and --width on the command line win over the file.
        let out = dir.join(p.file_stem().unwrap());
        let o = cdl(&[
            "train",
            "--config",
            p.to_str().unwrap(),
            "--steps",
            "10",
            "--width",
            "16",
            "--points",
            "4",
            "--log-every",
            "5",
            "--checkpoint-every",
            "10",
            "--toy-points",
            "1000",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}: {}", p.display(), String::from_utf8_lossy(&o.stderr));
        let resolved: toml::Table = std::fs::read_to_string(out.join("config.toml")).unwrap().parse().unwrap();
        assert_eq!(resolved["steps"].as_integer(), Some(10));
        assert_eq!(resolved["width"].as_integer(), Some(16));
        assert_eq!(resolved["loss"].as_str(), table["loss"].as_str());
        assert_eq!(resolved["lr"].as_float(), table["lr"].as_float());
        // The resolved file is itself a valid config that reproduces the run's settings.
        let again = dir.join(format!("{}-again", p.file_stem().unwrap().to_string_lossy()));
        let o =
            cdl(&["train", "--config", out.join("config.toml").to_str().unwrap(), "--out", again.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let a = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let b = std::fs::read_to_string(again.join("metrics.jsonl")).unwrap();
        let loss = |t: &str| {
            t.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].clone()).collect::<Vec<_>>()
        };
        assert_eq!(loss(&a), loss(&b), "{}", p.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_unet_trains_on_an_image_folder() {
    let Some(dir) = gpu_scratch("images") else { return };
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for i in 0..6u8 {
        let img = image::RgbImage::from_fn(20, 16, |x, y| image::Rgb([x as u8 * 12, y as u8 * 15, i * 40]));
        img.save(imgs.join(format!("{i}.png"))).unwrap();
    }
    let out = dir.join("run");
    let o = cdl(&[
        "train",
        "--model",
        "unet-tiny",
        "--data",
        imgs.to_str().unwrap(),
        "--flip",
        "--loss",
        "cdl",
        "--batch",
        "2",
        "--anchors",
        "1",
        "--points",
        "1",
        "--steps",
        "3",
        "--log-every",
        "1",
        "--checkpoint-every",
        "3",
        "--sample-every",
        "3",
        // A 2-step DDIM grid: the picture's plumbing, not its quality (DDIM-50 of 64 images
        // costs this test over a minute on a CPU adapter).
        "--sample-steps",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ck = cdl::train::checkpoint::load(out.join("checkpoint.safetensors")).unwrap();
    assert_eq!((ck.arch.as_str(), ck.step), ("unet", 3));
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3);
    // The progress picture: an 8 × 8 grid of 16-px tiles with 2-px padding, scaled up whole
    // under a title and above a caption.
    let grid = image::open(out.join("samples").join("step-0000003.png")).unwrap().to_rgb8();
    let side = 8 * 16 + 9 * 2;
    let k = cdl::eval::figure::MIN_GRID_WIDTH.div_ceil(side);
    assert_eq!(grid.height(), cdl::eval::figure::TITLE_BAND + k * side + cdl::eval::figure::CAPTION_BAND);
    assert!(crate::eval_plot::title_pixels(&grid) > 50, "no title on the grid");
    // A directory of PNGs for FID tools (flat, EDM's uint8 convention).
    let pngs = dir.join("pngs");
    let ck = out.join("checkpoint.safetensors");
    let o = cdl_words(
        "sample --n 3 --sampler ddim --steps 3",
        &["--checkpoint", ck.to_str().unwrap(), "--out", pngs.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for i in 0..3 {
        let img = image::open(pngs.join(format!("{i:06}.png"))).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (16, 16));
    }
    // Image data for the MLP, or points for a UNet, are refused by name.
    let e = error_line(&cdl(&["train", "--model", "unet-tiny", "--data", "moons", "--out", out.to_str().unwrap()]));
    assert!(e.contains("moons") && e.contains("image"), "{e}");
    let bad = dir.join("short.bin");
    std::fs::write(&bad, vec![0u8; 3073 * 2 + 5]).unwrap();
    let e = error_line(&cdl_words(
        "train --model unet-compact",
        &["--data", bad.to_str().unwrap(), "--out", out.to_str().unwrap()],
    ));
    assert!(e.contains("short.bin"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_unet_trains_on_the_built_in_shapes() {
    let Some(dir) = gpu_scratch("shapes") else { return };
    let out = dir.join("run");
    let args = "train --model unet-tiny --data shapes --loss ddpm --batch 2";
    let out_flag = ["--out", out.to_str().unwrap()];
    let o = cdl_words(&format!("{args} --steps 2 --log-every 1 --checkpoint-every 2 --quiet"), &out_flag);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ck = cdl::train::checkpoint::load(out.join("checkpoint.safetensors")).unwrap();
    assert_eq!((ck.arch.as_str(), ck.step), ("unet", 2));
    assert_eq!(ck.extra.get("data.source").map(String::as_str), Some("shapes"));
    // Labels belong to CIFAR-10; the shapes have none.
    let e = error_line(&cdl_words(&format!("{args} --classes"), &out_flag));
    assert!(e.contains("shapes") && e.contains("--classes"), "{e}");
    // Samples with x̂₀ clipped to [-1, 1].
    let ck = out.join("checkpoint.safetensors");
    let pngs = dir.join("pngs");
    let paths = ["--checkpoint", ck.to_str().unwrap(), "--out", pngs.to_str().unwrap()];
    let o = cdl_words("sample --n 2 --sampler ddim --steps 3 --clip-denoised", &paths);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(pngs.join("000001.png").is_file());
    // 2-D points have no [-1, 1] range to clip to.
    let toy = dir.join("toy");
    let o = cdl_words("train --steps 2 --log-every 1 --checkpoint-every 2 --quiet", &["--out", toy.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let toy_ck = toy.join("checkpoint.safetensors");
    let csv = dir.join("s.csv");
    let paths = ["--checkpoint", toy_ck.to_str().unwrap(), "--out", csv.to_str().unwrap()];
    let e = error_line(&cdl_words("sample --n 4 --clip-denoised", &paths));
    assert!(e.contains("--clip-denoised") && e.contains("mlp"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
