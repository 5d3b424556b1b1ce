//! `cdl train` end to end: the run directory, exact resume through the CLI, a non-finite loss
//! or update that keeps the last good checkpoint, checkpoints holding NaN refused by every command
//! that loads one, and one-line errors for bad input.

use crate::eval_plot::title_pixels;
use cdl::eval::figure::CURVE_COLORS;
use crate::common;
use crate::common::cli;

use std::path::Path;
use std::process::{Command, Output};

use cli::{cdl, cdl_words, error_line, gpu_scratch, scratch, text, train_args, SMALL_MLP};

use cdl::train::checkpoint;

/// The logging of `train`'s runs (with `cli::SMALL_MLP`).
const LOGS: [&str; 4] = ["--log-every", "5", "--checkpoint-every", "10"];

fn train(out: &Path, extra: &[&str]) -> Output {
    let mut args = LOGS.to_vec();
    args.extend(extra);
    cdl(&train_args(out.to_str().unwrap(), &args))
}

/// metrics.jsonl without the wall-clock fields.
fn curve(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for k in ["elapsed_s", "steps_per_s", "examples_per_s"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect()
}

#[test]
fn train_writes_a_run_directory() {
    let Some(dir) = gpu_scratch("run") else { return };
    let o = train(&dir, &["--steps", "20", "--data", "spirals", "--sample-every", "10"]);
    assert!(o.status.success(), "{}", text(&o));
    for step in ["0000010", "0000020"] {
        let img = image::open(dir.join("samples").join(format!("step-{step}.png"))).unwrap().to_rgb8();
        assert_eq!(img.width(), 512);
        assert!(title_pixels(&img) > 50, "no title on step {step}'s samples");
    }
    // The loss curve beside them: a title and the loss's line (and its legend entry).
    let loss = image::open(dir.join("samples").join("loss.png")).unwrap().to_rgb8();
    assert!(title_pixels(&loss) > 50, "no title on the loss curve");
    assert!(loss.pixels().filter(|p| **p == CURVE_COLORS[0]).count() > 20, "no loss curve");
    assert!(text(&o).contains("checkpoint.safetensors"), "{}", text(&o));
    let lines = curve(&dir);
    assert_eq!(lines.iter().map(|v| v["step"].as_u64().unwrap()).collect::<Vec<_>>(), [5, 10, 15, 20]);
    assert!(lines.iter().all(|v| v["loss"].as_f64().unwrap().is_finite() && v["cdl_accuracy"].is_number()));
    let ck = checkpoint::load(dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!((ck.arch.as_str(), ck.step), ("mlp", 20));
    for prefix in ["model.", "ema.", "optim.m.", "optim.v."] {
        assert!(ck.tensors().iter().any(|t| t.name.starts_with(prefix)), "no {prefix} tensors");
    }
    assert!(ck.extra.contains_key("run.config") && ck.extra.contains_key("data.std"));
    // A second run into the same directory must not replace it silently.
    let e = error_line(&train(&dir, &["--steps", "20", "--data", "spirals"]));
    assert!(e.contains("--resume"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resumed_cli_run_matches_an_uninterrupted_one() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let (a, b) = (scratch("straight"), scratch("resumed"));
    assert!(train(&a, &["--steps", "30"]).status.success());
    assert!(train(&b, &["--steps", "20"]).status.success());
    let o = train(&b, &["--steps", "30", "--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(curve(&a), curve(&b));
    let (ca, cb) = (
        checkpoint::load(a.join("checkpoint.safetensors")).unwrap(),
        checkpoint::load(b.join("checkpoint.safetensors")).unwrap(),
    );
    assert_eq!(ca.tensors(), cb.tensors());
    // Resuming with other flags is refused.
    let e = error_line(&train(&b, &["--steps", "40", "--resume", "--lr", "0.01"]));
    assert!(e.contains("cannot resume") && e.contains("same flags"), "{e}");
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_checkpoint() {
    let Some(dir) = gpu_scratch("nan") else { return };
    // lr 1e30: the first update throws the weights to ~1e30 and the next loss overflows.
    let extra = ["--steps", "20", "--lr", "1e30", "--warmup", "0", "--log-every", "1", "--checkpoint-every", "1"];
    let o = cdl(&train_args(dir.to_str().unwrap(), &extra));
    let e = error_line(&o);
    assert!(e.contains("non-finite") && e.contains("is kept"), "{e}");
    let ck = checkpoint::load(dir.join("checkpoint.safetensors")).unwrap();
    assert!(ck.step >= 1 && ck.step < 20, "step {}", ck.step);
    assert!(e.contains(&format!("loss = NaN at step {}", ck.step + 1)), "{e}");
    assert!(e.contains(&format!("(step {}) is kept", ck.step)), "{e}");
    let bad = ck.tensors().iter().flat_map(|t| t.data.iter()).filter(|v| !v.is_finite()).count();
    assert_eq!(bad, 0, "the kept checkpoint holds non-finite values");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Data far from unit scale is not refused: standardisation (in f64) brings it to unit scale
/// before the network sees it, so only values beyond f32 are (`bad_input_is_one_line_...`).
#[test]
fn data_at_a_huge_scale_trains_with_finite_losses() {
    let Some(dir) = gpu_scratch("huge") else { return };
    let csv = dir.join("huge.csv");
    let rows: String =
        (0..400).map(|i| format!("{}e30,{}e30\n", (i % 17) as f64 - 8.0, (i % 7) as f64 * 3.0)).collect();
    std::fs::write(&csv, format!("x,y\n{rows}3e38,-3e38\n")).unwrap();
    let run = dir.join("run");
    let o = train(&run, &["--steps", "10", "--data", csv.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(curve(&run).iter().all(|v| v["loss"].as_f64().unwrap().is_finite()));
    checkpoint::load(run.join("checkpoint.safetensors")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_update_that_overflows_the_weights_is_never_checkpointed() {
    let Some(dir) = gpu_scratch("overflow") else { return };
    // lr 1e39 is finite in f64 but not in f32: step 1's loss and gradient are finite, its
    // update is not, and step 1 is a checkpoint step.
    let extra = ["--steps", "20", "--lr", "1e39", "--warmup", "0", "--log-every", "1", "--checkpoint-every", "1"];
    let e = error_line(&cdl(&train_args(dir.to_str().unwrap(), &extra)));
    assert!(e.starts_with("error: training stopped at step 1: after the update, tensor \""), "{e}");
    assert!(e.contains("inf at index") && e.contains("no checkpoint was written"), "{e}");
    assert!(!dir.join("checkpoint.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_holding_nan_is_refused_by_every_command_that_loads_it() {
    let Some(dir) = gpu_scratch("poisoned") else { return };
    assert!(train(&dir, &["--steps", "10"]).status.success());
    let path = dir.join("checkpoint.safetensors");
    let ck = checkpoint::load(&path).unwrap();
    // The checkpoint with one value of one model tensor replaced by `value`.
    let poisoned = |value: f32| {
        let mut out = checkpoint::Checkpoint::new(ck.arch.clone(), ck.model_config.clone(), ck.step);
        out.extra = ck.extra.clone();
        for t in ck.tensors() {
            let mut data = t.data.clone();
            if t.name == "model.out.weight" {
                data[17] = value;
            }
            out.insert(t.name.clone(), t.shape.clone(), data).unwrap();
        }
        std::fs::write(&path, checkpoint::encode(&out).unwrap()).unwrap();
    };
    assert!(ck.get("model.out.weight").is_some_and(|t| t.data.len() > 17), "{:?}", ck.shapes());
    let p = path.to_str().unwrap();
    let sample_out = dir.join("samples.csv");
    let commands: [(Vec<&str>, f32, &str); 3] = [
        (vec!["--steps", "20", "--resume"], f32::NAN, "NaN"),
        (
            vec!["sample", "--checkpoint", p, "--steps", "10", "--out", sample_out.to_str().unwrap()],
            f32::INFINITY,
            "inf",
        ),
        (vec!["eval", "--checkpoint", p, "--n", "100"], f32::NEG_INFINITY, "-inf"),
    ];
    for (args, value, what) in commands {
        poisoned(value);
        let o = if args[0] == "--steps" { train(&dir, &args) } else { cdl(&args) };
        let e = error_line(&o);
        let want = format!("checkpoint.safetensors: tensor \"model.out.weight\" holds {what} at index 17");
        assert!(e.contains(&want), "{args:?}: {e}");
    }
    assert!(!sample_out.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_one_line_naming_the_problem() {
    let Some(dir) = gpu_scratch("bad") else { return };
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("points.csv");
    std::fs::write(&csv, "x,y\n0.5,1.0\n0.25,nan\n").unwrap();
    let out = dir.join("out");
    let cases: Vec<(Vec<String>, &[&str])> = vec![
        (vec!["--data".into(), csv.display().to_string()], &["points.csv", "line 3", "column y", "not finite"]),
        (vec!["--data".into(), dir.join("missing.csv").display().to_string()], &["missing.csv"]),
        (vec!["--data".into(), "moonz".into()], &["moonz", "moons"]),
        (vec!["--lr=-1".into()], &["learning rate"]),
        (vec!["--steps".into(), "x".into()], &["--steps", "x"]),
        (vec!["--anchors".into(), "64".into()], &["anchors", "batch"]),
    ];
    // Checkpoints and pictures fall on metrics lines (without LOGS, which sets both intervals).
    let out_s = out.to_str().unwrap();
    for (flag, want) in [
        ("--checkpoint-every", "--checkpoint-every (15) must be a multiple of --log-every (10)"),
        ("--sample-every", "--sample-every (15) must be a multiple of --log-every (10)"),
    ] {
        let e = error_line(&cdl(&train_args(out_s, &["--log-every", "10", flag, "15", "--steps", "5"])));
        assert!(e.contains(want), "{flag}: {e} lacks {want:?}");
    }
    // --resume into a directory whose checkpoint does not decode.
    let corrupt = dir.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join("checkpoint.safetensors"), b"not a checkpoint").unwrap();
    let e = error_line(&train(&corrupt, &["--resume", "--steps", "5"]));
    assert!(e.contains("cannot resume") && e.contains("checkpoint.safetensors: not a valid CDL checkpoint"), "{e}");
    // Every spelling of a non-finite value, and a finite one beyond f32, named with file and line.
    for (i, value) in ["inf", "-inf", "1e999", "-Infinity", "NaN", "1e39"].iter().enumerate() {
        let file = dir.join(format!("bad-{i}.csv"));
        std::fs::write(&file, format!("0.5,1.0\n\n{value},0.25\n")).unwrap();
        let e = error_line(&train(&out, &["--data", file.to_str().unwrap(), "--steps", "5"]));
        let why = if *value == "1e39" { "is out of the f32 range" } else { "is not finite" };
        let want = format!("bad-{i}.csv: line 3: column x: \"{value}\" {why}");
        assert!(e.contains(&want), "{e} lacks {want:?}");
    }
    for (args, want) in cases {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        if !all.contains(&"--steps") {
            all.extend(["--steps", "5"]);
        }
        let e = error_line(&train(&out, &all));
        for w in want {
            assert!(e.contains(w), "{args:?}: {e} lacks {w:?}");
        }
    }
    // K·M rows beyond what the adapter can bind: refused before anything is allocated.
    let e = error_line(&cdl_words(
        "train --batch 32 --anchors 32 --points 65536 --steps 5",
        &["--out", out.to_str().unwrap()],
    ));
    assert!(e.contains("storage binding limit"), "{e}");
    // An output directory that cannot be created.
    let blocker = dir.join("file");
    std::fs::write(&blocker, "x").unwrap();
    let e = error_line(&train(&blocker.join("run"), &["--steps", "5"]));
    assert!(e.contains("run directory"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_default_run_directory_never_replaces_an_earlier_run() {
    let Some(cwd) = gpu_scratch("default-dir") else { return };
    std::fs::create_dir_all(&cwd).unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec!["train"];
        a.extend(SMALL_MLP);
        a.extend(LOGS);
        a.extend(["--steps", "10"]);
        a.extend(extra);
        Command::new(env!("CARGO_BIN_EXE_cdl")).args(&a).current_dir(&cwd).output().unwrap()
    };
    for want in ["runs/moons-cdl/checkpoint.safetensors", "runs/moons-cdl-2/checkpoint.safetensors"] {
        let o = run(&[]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains(want), "{}", text(&o));
    }
    // --resume without --out continues the first one.
    let o = run(&["--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("runs/moons-cdl/checkpoint"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&cwd);
}
