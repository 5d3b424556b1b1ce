//! SIGKILL anywhere: `cdl train` killed at each moment that matters (the test hook
//! `CDL_TEST_PAUSE` holds it exactly there: mid metrics line, between a metrics line and the
//! checkpoint, mid checkpoint write, before and after its rename, inside `--resume`'s own metrics
//! truncation, before the first checkpoint) never leaves a checkpoint that fails to load, and
//! `--resume`, killed again or not, ends with the weights and loss curve of an uninterrupted run.

use crate::common::cli;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use cli::{cdl, error_line, gpu_scratch, loss_curve, scratch, text, train_args};

use cdl::train::checkpoint::{self, PAUSE_ENV};

/// Steps of every run here: metrics lines at 5, 10, …, 30 and checkpoints at 10, 20, 30.
const STEPS: u64 = 30;
const LOG_EVERY: u64 = 5;
const CHECKPOINT_EVERY: u64 = 10;

fn args(out: &str) -> Vec<&str> {
    train_args(out, &["--log-every", "5", "--checkpoint-every", "10", "--quiet", "--steps", "30"])
}

/// Runs `cdl train` (with `--resume` when `resume`) until it reports the pause `point`
/// (`<name>:<n>`, the syntax of `CDL_TEST_PAUSE`), then SIGKILLs it there.
fn kill_at(dir: &Path, resume: bool, point: &str) {
    let d = dir.display().to_string();
    let mut a = args(&d);
    if resume {
        a.push("--resume");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdl"))
        .args(&a)
        .env(PAUSE_ENV, point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (name, n) = point.rsplit_once(':').unwrap();
    let marker = format!("cdl-test-pause {name} {n}");
    let mut seen = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == marker {
            child.kill().unwrap();
            assert_eq!(child.wait().unwrap().code(), None, "killed by a signal at {point}");
            return;
        }
        seen.push(line);
    }
    let status = child.wait().unwrap();
    panic!("the run ({status}) never reached {point}; stderr: {}", seen.join(" | "));
}

/// The steps of the complete metrics lines, after checking that only the last line may be torn
/// (no final newline) and that every complete line parses.
fn metrics_steps(dir: &Path) -> Vec<u64> {
    let Ok(text) = std::fs::read_to_string(dir.join("metrics.jsonl")) else { return Vec::new() };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            v["step"].as_u64().unwrap()
        })
        .collect()
}

/// What a kill may leave: a checkpoint that loads (or none yet), at a checkpoint step that has
/// its metrics line, and metrics lines 5, 10, … with neither gap nor duplicate.
fn check_what_a_kill_leaves(dir: &Path, trial: &str) -> Option<u64> {
    let steps = metrics_steps(dir);
    let want: Vec<u64> = (1..=steps.len() as u64).map(|i| i * LOG_EVERY).collect();
    assert_eq!(steps, want, "{trial}: metrics steps");
    let path = dir.join("checkpoint.safetensors");
    if !path.exists() {
        return None;
    }
    let ck = checkpoint::load(&path).unwrap_or_else(|e| panic!("{trial}: {e}"));
    assert!(ck.step.is_multiple_of(CHECKPOINT_EVERY) && steps.contains(&ck.step), "{trial}: step {}", ck.step);
    Some(ck.step)
}

/// Each tensor's name, shape and bit patterns.
fn tensor_bits(dir: &Path) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    let ck = checkpoint::load(dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.step, STEPS);
    ck.tensors()
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), t.data.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

/// The kill moments, one trial per row: the first run is killed at the first point, each
/// `--resume` at the next one, and a last `--resume` runs to the end. Counts are per process:
/// `checkpoint.safetensors/mid-write:2` is the second checkpoint that process writes.
const TRIALS: [&[&str]; 24] = [
    // Before the first step (the resolved config being written).
    &["config.toml/before-rename:1"],
    // Before the first checkpoint exists.
    &["metrics.jsonl/mid-line:1"],
    &["metrics.jsonl/after-line:1"],
    &["metrics.jsonl/after-line:2"],
    &["checkpoint.safetensors/mid-write:1"],
    &["checkpoint.safetensors/before-rename:1"],
    // Around every later metrics line and checkpoint.
    &["checkpoint.safetensors/after-rename:1"],
    &["metrics.jsonl/mid-line:3"],
    &["metrics.jsonl/mid-line:4"],
    &["metrics.jsonl/after-line:4"],
    &["checkpoint.safetensors/mid-write:2"],
    &["checkpoint.safetensors/before-rename:2"],
    &["checkpoint.safetensors/after-rename:2"],
    &["metrics.jsonl/mid-line:6"],
    &["metrics.jsonl/after-line:6"],
    &["checkpoint.safetensors/mid-write:3"],
    &["checkpoint.safetensors/before-rename:3"],
    &["checkpoint.safetensors/after-rename:3"],
    // `--resume` killed during its own metrics truncation (temporary file written, then renamed).
    &["checkpoint.safetensors/after-rename:1", "metrics.jsonl/before-rename:1"],
    &["metrics.jsonl/mid-line:3", "metrics.jsonl/before-rename:1"],
    &["metrics.jsonl/after-line:3", "metrics.jsonl/after-rename:1"],
    // `--resume` killed again at its own checkpoints and lines, several times over.
    &["checkpoint.safetensors/mid-write:2", "checkpoint.safetensors/mid-write:1", "metrics.jsonl/before-rename:1"],
    &["checkpoint.safetensors/before-rename:1", "checkpoint.safetensors/after-rename:1", "metrics.jsonl/mid-line:1"],
    &["metrics.jsonl/mid-line:1", "config.toml/before-rename:1", "metrics.jsonl/mid-line:2"],
];

#[test]
fn sigkill_at_every_moment_resumes_to_the_uninterrupted_run() {
    let Some(straight) = gpu_scratch("sigkill-straight") else { return };
    let o = cdl(&args(&straight.display().to_string()));
    assert!(o.status.success(), "{}", text(&o));
    let (want_tensors, want_curve) = (tensor_bits(&straight), loss_curve(&straight));
    assert_eq!(want_curve.len() as u64, STEPS / LOG_EVERY);

    for (i, kills) in TRIALS.iter().enumerate() {
        let dir = scratch(&format!("sigkill-{i}"));
        let trial = format!("trial {i} {kills:?}");
        let mut at = None;
        for (k, point) in kills.iter().enumerate() {
            kill_at(&dir, k > 0, point);
            at = check_what_a_kill_leaves(&dir, &format!("{trial}, kill at {point}"));
        }
        let o = cdl(&[args(&dir.display().to_string()), vec!["--resume"]].concat());
        assert!(o.status.success(), "{trial}: {}", text(&o));
        let from_zero = String::from_utf8_lossy(&o.stderr).contains("starting the run from step 0");
        assert_eq!(from_zero, at.is_none(), "{trial}: {}", text(&o));
        assert_eq!(metrics_steps(&dir), (1..=STEPS / LOG_EVERY).map(|s| s * LOG_EVERY).collect::<Vec<_>>());
        assert_eq!(loss_curve(&dir), want_curve, "{trial}");
        assert!(tensor_bits(&dir) == want_tensors, "{trial}: final weights differ from the uninterrupted run's");
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        // Nothing left over but the run's files and the loss curve its end draws.
        assert_eq!(left, ["checkpoint.safetensors", "config.toml", "metrics.jsonl", "samples"], "{trial}");
        let pictures: Vec<String> = std::fs::read_dir(dir.join("samples"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(pictures, ["loss.png"], "{trial}");
        println!("{trial}: killed with a checkpoint at {at:?}, resumed exactly");
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&straight);
}

#[test]
fn resume_before_the_first_checkpoint_refuses_another_runs_directory() {
    let Some(dir) = gpu_scratch("sigkill-other-run") else { return };
    let d = dir.display().to_string();
    kill_at(&dir, false, "metrics.jsonl/after-line:1");
    assert!(!dir.join("checkpoint.safetensors").exists());
    // Other flags than the run that started here: refused, nothing touched.
    let before = std::fs::read(dir.join("metrics.jsonl")).unwrap();
    let e = error_line(&cdl(&[args(&d), vec!["--resume", "--lr", "0.01"]].concat()));
    assert!(e.contains("cannot resume") && e.contains("config.toml") && e.contains("same flags"), "{e}");
    assert_eq!(std::fs::read(dir.join("metrics.jsonl")).unwrap(), before);
    // A directory whose checkpoint is another run's is refused as before.
    let o = cdl(&[args(&d), vec!["--resume"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let e = error_line(&cdl(&[args(&d), vec!["--resume", "--seed", "1"]].concat()));
    assert!(e.contains("cannot resume") && e.contains("checkpoint.safetensors") && e.contains("same flags"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
