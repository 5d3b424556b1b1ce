//! Long runs behave: Ctrl-C (SIGINT) finishes the chunk, writes a checkpoint and exits with 130;
//! a run killed with SIGKILL resumes from its last checkpoint; either way the resumed loss curve
//! and weights equal an uninterrupted run's.

use crate::common;
use crate::common::cli;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use cli::{cdl, loss_curve, scratch, train_args};

fn args<'a>(out: &'a str, steps: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = train_args(out, &["--log-every", "5", "--checkpoint-every", "10", "--quiet", "--steps", steps]);
    a.extend(extra);
    a
}

fn spawn(a: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cdl")).args(a).spawn().expect("run cdl")
}

fn lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl")).map(|t| t.lines().count()).unwrap_or(0)
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("waited 60 s for {what}");
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(st.success());
}

fn weights(dir: &Path) -> Vec<cdl::train::checkpoint::Tensor> {
    cdl::train::checkpoint::load(dir.join("checkpoint.safetensors")).unwrap().into_tensors()
}

#[test]
fn sigint_checkpoints_and_sigkill_resumes_exactly() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let steps = "4000";
    let straight = scratch("straight");
    let s = straight.display().to_string();
    let o = cdl(&args(&s, "60", &[]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // SIGINT once a few lines are out: exit 130, a checkpoint at a metrics line, then resume.
    let int = scratch("sigint");
    let i = int.display().to_string();
    let mut child = spawn(&args(&i, steps, &[]));
    wait_for("metrics", || lines(&int) >= 3);
    signal(&child, "-INT");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let ck = cdl::train::checkpoint::load(int.join("checkpoint.safetensors")).unwrap();
    let last = loss_curve(&int).last().unwrap()[0].as_u64().unwrap();
    assert_eq!(ck.step, last, "the checkpoint is at the last metrics line");
    assert!(ck.step < 4000 && ck.step.is_multiple_of(5));
    println!("SIGINT stopped at step {}", ck.step);

    // SIGKILL after the first checkpoint: no chance to save; resume from step 10, 20, ...
    let kill = scratch("sigkill");
    let k = kill.display().to_string();
    let mut child = spawn(&args(&k, steps, &[]));
    wait_for("a checkpoint", || kill.join("checkpoint.safetensors").exists() && lines(&kill) >= 3);
    signal(&child, "-KILL");
    assert_eq!(child.wait().unwrap().code(), None, "killed by a signal");
    let at = cdl::train::checkpoint::load(kill.join("checkpoint.safetensors")).unwrap().step;
    println!("SIGKILL left a checkpoint at step {at} and {} metrics lines", lines(&kill));

    // Both resume to step 60 and match the uninterrupted run, curve and weights.
    for dir in [&int, &kill] {
        let d = dir.display().to_string();
        let o = cdl(&args(&d, "60", &["--resume"]));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(loss_curve(dir), loss_curve(&straight), "{d}");
        assert_eq!(weights(dir), weights(&straight), "{d}");
    }
    for d in [straight, int, kill] {
        let _ = std::fs::remove_dir_all(d);
    }
}
