//! The `cdl` binary end to end: errors are one line and a non-zero exit, never a panic.

use crate::common;
use crate::common::cli;

use std::process::Command;

fn cdl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cdl"))
}

/// With the Vulkan loader pointed at no driver there is no adapter: one line that says what to
/// install, exit status 2, no backtrace.
#[test]
fn no_adapter_is_one_line_and_exit_2() {
    let out = cdl()
        .arg("info")
        .env("WGPU_BACKEND", "vulkan")
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run cdl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(lines[0].contains("mesa-vulkan-drivers"), "{}", lines[0]);
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn bad_arguments_are_rejected_without_a_panic() {
    let out = cdl().args(["bench", "ops", "--runs", "0"]).output().expect("run cdl");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--runs"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn info_prints_adapter_and_an_all_ok_self_test() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let out = cdl().arg("info").output().expect("run cdl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("adapter: "), "{stdout}");
    assert!(stdout.contains("max_storage_buffer_binding_size"), "{stdout}");
    let summary = stdout.lines().last().unwrap_or_default();
    let words: Vec<&str> = summary.split_whitespace().collect();
    // "self-test: N of N checks OK"
    assert!(words.len() == 6 && words[1] == words[3] && words[1] != "0", "{summary}");
    assert!(!stdout.contains("NOT OK"), "{stdout}");
}

#[test]
fn adapters_are_chosen_by_index_or_name() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let out = cdl().args(["--adapter", "0", "info"]).output().expect("run cdl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("\n  0: "), "{stdout}");
    let out = cdl().args(["--adapter", "99", "info"]).output().expect("run cdl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.lines().count() == 1 && stderr.contains("no adapter matches \"99\""), "{stderr}");
    // A number is always an index, even where the first adapter's name holds it ("LLVM 15").
    let listed: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("  1: ")).collect();
    if let Some(second) = listed.first() {
        let out = cdl().args(["--adapter", "1", "info"]).output().expect("run cdl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let chosen = stdout.lines().next().unwrap_or_default();
        // "  1: NAME (BACKEND, TYPE)" is chosen as "adapter: NAME (BACKEND, TYPE, driver ...)".
        let name_and_backend = second.split(',').next().unwrap_or_default();
        assert!(chosen.starts_with(&format!("adapter: {name_and_backend},")), "{chosen} is not {second}");
        // The self-test runs on the chosen adapter (with lavapipe installed, the second is
        // llvmpipe through GL): every kernel passes its check on a second backend too.
        let summary = stdout.lines().find(|l| l.starts_with("self-test: ")).unwrap_or_default();
        let counts: Vec<&str> = summary.split_whitespace().collect();
        assert!(
            counts.len() == 6 && counts[1] == counts[3] && counts[4..] == ["checks", "OK"],
            "{second}: {summary}\n{stdout}"
        );
    }
}

/// A shell with no window system (no `XDG_RUNTIME_DIR`, `DISPLAY` or `WAYLAND_DISPLAY`, as in a
/// container or over SSH): the graphics stack prints nothing, so stderr holds only our own lines
/// (none, for commands that succeed).
#[test]
fn a_shell_without_a_window_system_hears_nothing_from_the_graphics_stack() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let bare = |args: &[&str]| {
        let out = cdl()
            .args(args)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .output()
            .expect("run cdl");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "cdl {args:?}: {stderr}");
        stderr
    };
    assert_eq!(bare(&["info"]), "", "cdl info");
    let scratch = cli::scratch("bare-shell");
    let out = scratch.join("run").display().to_string();
    assert_eq!(bare(&cli::train_args(&out, &["--steps", "4"])), "", "cdl train");
    let _ = std::fs::remove_dir_all(&scratch);
}
