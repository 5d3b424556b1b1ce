//! `cdl sample`, `cdl eval` and `cdl experiment toy` end to end on a small trained model: every
//! sampler writes what it promises, metrics come back finite, a sampler that leaves the trained
//! noise levels is warned about, the experiment writes its report (every arm and sampler over
//! seeds, errors, the MMD floor, verdicts) and pictures, and bad input is one line.

use crate::common::cli;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use cli::{cdl, cdl_words, gpu_scratch, train_args};

fn ok(o: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_line(o: &Output) -> Value {
    let out = ok(o);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// `cdl experiment <line> --out DIR` with arms `[a, b]`, in a new `gpu_scratch` directory `name`
/// (`None` without a GPU): DIR, report.md and report.json. Checked: report.json holds 2 seeds x
/// 2 arms x 4 samplers runs; report.md has 5 rows (4 samplers and NLL) for each arm and 5 for
/// `b vs a`, and mentions each of `mentions`.
fn experiment(name: &str, line: &str, [a, b]: [&str; 2], mentions: &[&str]) -> Option<(PathBuf, String, Value)> {
    let dir = gpu_scratch(name)?;
    ok(&cdl_words(&format!("experiment {line}"), &["--out", dir.to_str().unwrap()]));
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 2 * 2 * 4, "seeds x arms x samplers");
    for prefix in [format!("| {a} | "), format!("| {b} | "), format!("| {b} vs {a} | ")] {
        let rows = report.lines().filter(|l| l.starts_with(&prefix)).count();
        assert_eq!(rows, 5, "{prefix}\n{report}");
    }
    for want in mentions {
        assert!(report.contains(want), "{want:?} missing from\n{report}");
    }
    Some((dir, report, v))
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
    let Some(dir) = gpu_scratch("samplers") else { return };
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
    // --host-sampler: the f64 host path gives the same points (the device keeps its state in f32;
    // tests/native/eval_gpu_sampler.rs has the tolerance's derivation) and the same counts.
    let host = dir.join("host.csv");
    let args = ["sample", "--checkpoint", &ck, "--n", "64", "--steps", "50", "--host-sampler"];
    let h = json_line(&cdl(&[&args[..], &["--out", host.to_str().unwrap()]].concat()));
    assert_eq!((h["passes"].as_u64(), h["evaluations"].as_u64()), (Some(50), Some(50)), "{h}");
    let values = |t: &str| -> Vec<f64> { t.lines().skip(1).flat_map(|r| r.split(',')).map(|f| f.parse().unwrap()).collect() };
    let (dev, hst) = (values(&text), values(&std::fs::read_to_string(&host).unwrap()));
    assert_eq!(dev.len(), hst.len());
    let worst = dev.iter().zip(&hst).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-4, "device and host samples differ by {worst}");
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
        let img = image::open(&png).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (800, 800));
        assert!(crate::eval_plot::title_pixels(&img) > 50, "no title on {sampler}'s samples");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_reports_finite_metrics() {
    let Some(dir) = gpu_scratch("eval") else { return };
    let ck = trained(&dir);
    let v = json_line(&cdl(&["eval", "--checkpoint", &ck, "--n", "64", "--steps", "50", "--nll-points", "20"]));
    println!("{v}");
    assert_eq!(v["data"], "moons");
    for k in ["mmd", "swd", "nll_bpd", "nll_nats"] {
        assert!(v[k].as_f64().is_some_and(f64::is_finite), "{k}: {v}");
    }
    // The sliced Wasserstein distance of a barely trained model to the data is not zero.
    assert!(v["swd"].as_f64().unwrap() > 0.0);
    // The floor: two held-out sets of 64 differ by sampling noise only (the unbiased estimate
    // scatters around 0), far less than a barely trained model's samples differ from the data.
    let floor = v["mmd_floor"].as_f64().expect("mmd_floor");
    assert!(floor != 0.0 && floor.abs() < v["mmd"].as_f64().unwrap(), "{v}");
    let e = cdl(&["eval", "--checkpoint", &ck, "--metrics", "mmd,is"]);
    assert_eq!(e.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&e.stderr).contains("unknown metric"), "{:?}", e);
    // fid and kid name the flags they need before anything is sampled.
    let e = cli::error_line(&cdl(&["eval", "--checkpoint", &ck, "--metrics", "mmd,fid"]));
    assert!(e.contains("--inception"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn experiment_toy_reports_every_arm_and_sampler_over_seeds_with_errors_and_verdicts() {
    let flags = "--quick --arms itd,cdl --steps 20 --samples 48 --sampler-steps 20 --ddim-steps 10 --heun-steps 6";
    // Comparisons: MMD under each sampler and passes under the parallel one.
    let mentions = ["MMD floor", "2 training seeds", "β̃_t (posterior) for both", "CPU cores", " ± "];
    let Some((dir, report, v)) =
        experiment("experiment", &format!("toy {flags} --data moons"), ["itd", "cdl"], &mentions)
    else {
        return;
    };
    assert!(
        report
            .lines()
            .filter(|l| l.starts_with("| cdl vs itd"))
            .all(|l| l.contains("better") || l.contains("worse") || l.contains("not distinguishable")),
        "{report}"
    );
    for png in ["samples.png", "density-itd.png", "density-cdl.png", "samples-cdl-parallel.png", "samples-itd-heun.png"]
    {
        let img = image::open(dir.join(png)).unwrap().to_rgb8();
        assert!(crate::eval_plot::title_pixels(&img) > 50, "no title on {png}");
        if png.starts_with("density") {
            crate::eval_plot::check_colorbar(&img, cdl::eval::plot::Colormap::Viridis);
        }
    }
    // The sheet: sequential and parallel DDPM of each arm, a row per arm.
    let sheet = image::open(dir.join("samples.png")).unwrap();
    assert_eq!((sheet.width(), sheet.height()), (2 * 440, cdl::eval::figure::TITLE_BAND + 2 * 440));
    let runs = v["runs"].as_array().unwrap();
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
    let flags = "--quick --arms edm,edm-cdl --steps 2 --samples 2 --sampler-steps 3 --ddim-steps 2 --heun-steps 2";
    // Comparisons: saturation under 4 samplers and passes under the parallel one.
    let mentions = ["Saturation floor", "unet-tiny", "held-out", "NLL (bits/dim)"];
    let Some((dir, _, v)) = experiment("experiment-images", &format!("images {flags}"), ["edm", "edm-cdl"], &mentions)
    else {
        return;
    };
    for png in ["samples-edm-sequential.png", "samples-edm-cdl-parallel.png", "samples-edm-heun.png"] {
        let img = image::open(dir.join(png)).unwrap().to_rgb8();
        assert!(crate::eval_plot::title_pixels(&img) > 50, "no title on {png}");
    }
    let runs = v["runs"].as_array().unwrap();
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
    let Some(dir) = gpu_scratch("range") else { return };
    let run = dir.join("run");
    // ITD over α ∈ [−3, 3] only (μ 0, s 1, c 3).
    let extra = "--steps 20 --log-every 20 --quiet --loss itd --levels-mu 0 --levels-scale 1 --levels-clip 3";
    ok(&cdl(&train_args(run.to_str().unwrap(), &extra.split_whitespace().collect::<Vec<_>>())));
    let ck = run.join("checkpoint.safetensors");
    let out = dir.join("s.csv");
    let sample = |ck: &Path, sampler: &str| {
        let paths = ["--checkpoint", ck.to_str().unwrap(), "--out", out.to_str().unwrap()];
        let o = cdl_words(&format!("sample --sampler {sampler} --steps 5 --n 8"), &paths);
        ok(&o);
        o
    };
    let o = sample(&ck, "ddim");
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
        let o = sample(&ck2, sampler);
        assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"), "{sampler}: {o:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_sample_input_is_one_line() {
    let Some(dir) = gpu_scratch("bad") else { return };
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
