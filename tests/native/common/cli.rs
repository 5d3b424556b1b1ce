//! Shared helpers of the `cdl` command-line tests (tests/native/cli_*.rs): running the binary, a
//! scratch directory, and the one-line error rule.

use std::path::PathBuf;
use std::process::{Command, Output};

pub use super::dirs::scratch;

/// Runs the `cdl` binary of this build (a panic would print its backtrace, which `error_line`
/// refuses).
pub fn cdl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdl")).args(args).env("RUST_BACKTRACE", "1").output().expect("run cdl")
}

/// Runs `cdl` with the words of `line` (commands, flags and values, none with a space), then
/// `more` (paths): a long command line stays one readable line.
pub fn cdl_words(line: &str, more: &[&str]) -> Output {
    let mut args: Vec<&str> = line.split_whitespace().collect();
    args.extend(more);
    cdl(&args)
}

/// A scratch directory (as `scratch`) for a test that runs `cdl` on the GPU, or `None` (the test
/// skips; see `gpu_or_skip`) when there is no adapter.
pub fn gpu_scratch(name: &str) -> Option<PathBuf> {
    super::gpu_or_skip()?;
    Some(scratch(name))
}

/// stdout and stderr together, for failure messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The one error line of a failed run: exit status 2, a single stderr line starting with
/// "error: ", no panic and no backtrace.
pub fn error_line(o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", text(o));
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

/// The small, fast MLP run of the CLI tests: width 16, 1 block, B = 32, M = 8, 2,000 points.
pub const SMALL_MLP: [&str; 10] =
    ["--width", "16", "--blocks", "1", "--batch", "32", "--points", "8", "--toy-points", "2000"];

/// `cdl train --out OUT` with `SMALL_MLP` and then `extra`.
pub fn train_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["train", "--out", out];
    a.extend(SMALL_MLP);
    a.extend(extra);
    a
}

/// The loss curve of a run directory's metrics.jsonl with the wall-clock fields dropped, for
/// comparing an interrupted and resumed run with an uninterrupted one.
pub fn loss_curve(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("read metrics.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a metrics line");
            serde_json::json!([v["step"], v["loss"], v["loss_std"], v["loss_cdl"], v["grad_norm"], v["cdl_accuracy"]])
        })
        .collect()
}
