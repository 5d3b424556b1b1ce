//! Data-parallel training over MPI (`--features mpi`): `mpirun -n 2 cdl train` on this machine's
//! one adapter equals the one-process run with the same global batch, resumes exactly, and a
//! killed rank stops the job with the rank named and the last checkpoint intact.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use cdl::train::checkpoint::{self, Checkpoint};

use crate::common;
use crate::common::cli::{cdl, loss_curve, scratch, text, train_args};

/// Tolerance between the 2-rank and the 1-rank run, relative to the largest value of the same
/// metrics line (or tensor). The ranks sum the same row contributions in another order (each
/// rank's backward over its rows, then the all-reduce), so values differ by f32 rounding of those
/// sums: the CDL loss and logits are differences of sums of row errors and carry the rounding of
/// the sums, not of their small difference (unet-tiny, 4 steps: loss_cdl 0.16100 vs 0.16106 next to
/// a total loss of 982; losses otherwise within 1e-6 relative). A wrong shard (a row missed or
/// counted twice: a 1/B-sized term) is far outside 1e-4.
const RANKS_REL_TOL: f64 = 1e-4;

/// `mpirun -n <ranks> <cdl> args` (root allowed, as in containers; oversubscribed, for 1-core
/// machines).
fn mpirun_n(ranks: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-n", &ranks.to_string(), env!("CARGO_BIN_EXE_cdl")])
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RUST_BACKTRACE", "1");
    c
}

fn mpirun(args: &[&str]) -> Output {
    mpirun_n(2, args).output().expect("run mpirun (Open MPI's openmpi-bin)")
}

fn close(what: &str, a: f64, b: f64, scale: f64) {
    assert!((a - b).abs() <= RANKS_REL_TOL * scale.max(1e-3), "{what}: 1 rank {a}, 2 ranks {b} (scale {scale})");
}

/// Σ_t lr_t of a run logged at every step. Adam moves a weight by about lr per step whatever the
/// size of its gradient, so a weight whose gradient is rounding noise alone (an attention key
/// bias: softmax ignores it) may drift by up to that sum in each run, on any adapter.
fn lr_sum(dir: &Path) -> f64 {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics.jsonl");
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.last().map(|l| l["step"].as_u64()), Some(Some(lines.len() as u64)), "log every step");
    lines.iter().map(|l| l["lr"].as_f64().expect("lr")).sum()
}

/// Every metrics line of two runs agrees within `RANKS_REL_TOL`, every tensor within that plus
/// twice the Adam drift bound (`lr_sum`).
fn assert_same_run(one: &Path, two: &Path) {
    let (a, b) = (loss_curve(one), loss_curve(two));
    assert_eq!(a.len(), b.len());
    for (la, lb) in a.iter().zip(&b) {
        assert_eq!(la[0], lb[0], "steps");
        let fields = la.as_array().map_or(0, Vec::len);
        let scale = (1..fields).filter_map(|i| la[i].as_f64()).fold(0.0, |m: f64, v| m.max(v.abs()));
        for i in 1..fields {
            if let (Some(x), Some(y)) = (la[i].as_f64(), lb[i].as_f64()) {
                close(&format!("step {} field {i}", la[0]), x, y, scale);
            } else {
                assert_eq!(la[i], lb[i]);
            }
        }
    }
    let load = |d: &Path| checkpoint::load(d.join("checkpoint.safetensors")).expect("checkpoint");
    let (ca, cb): (Checkpoint, Checkpoint) = (load(one), load(two));
    let drift = lr_sum(one);
    assert_eq!(ca.step, cb.step);
    assert_eq!(ca.tensors().len(), cb.tensors().len());
    for (ta, tb) in ca.tensors().iter().zip(cb.tensors()) {
        assert_eq!(ta.name, tb.name);
        let scale = ta.data.iter().fold(1e-3f64, |m, &v| m.max(f64::from(v).abs()));
        let worst = ta.data.iter().zip(&tb.data).map(|(&x, &y)| f64::from(x - y).abs()).fold(0.0, f64::max);
        assert!(
            worst <= RANKS_REL_TOL * scale + 2.0 * drift,
            "{}: largest difference {worst} (values up to {scale})",
            ta.name
        );
    }
}

/// Trains with `args` once in one process and once over 2 ranks; both must be the same run.
fn one_and_two_ranks(name: &str, args: &[&str]) {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let (one, two) = (scratch(&format!("{name}-1")), scratch(&format!("{name}-2")));
    let (s1, s2) = (one.to_str().expect("utf-8 path"), two.to_str().expect("utf-8 path"));
    let with = |dir| [&["train", "--out", dir][..], args].concat();
    let o = cdl(&with(s1));
    assert!(o.status.success(), "{}", text(&o));
    let o = mpirun(&with(s2));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("over 2 ranks"), "{}", text(&o));
    assert_same_run(&one, &two);
    for d in [&one, &two] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn two_ranks_equal_one_mlp_itd_cdl() {
    // ITD + CDL with K = 3 anchors: rank 0 takes 1 anchor and 16 standard rows, rank 1 2 and 16.
    one_and_two_ranks(
        "mpi-mlp",
        &[
            "--loss",
            "cdl",
            "--width",
            "16",
            "--blocks",
            "1",
            "--batch",
            "32",
            "--anchors",
            "3",
            "--points",
            "8",
            "--toy-points",
            "2000",
            "--steps",
            "30",
            "--log-every",
            "1",
            "--checkpoint-every",
            "10",
        ],
    );
}

#[test]
fn two_ranks_equal_one_unet_tiny() {
    one_and_two_ranks(
        "mpi-unet",
        &[
            "--model",
            "unet-tiny",
            "--data",
            "shapes",
            "--loss",
            "cdl",
            "--batch",
            "4",
            "--anchors",
            "2",
            "--points",
            "2",
            "--steps",
            "4",
            "--log-every",
            "1",
            "--checkpoint-every",
            "2",
        ],
    );
}

#[test]
fn one_rank_under_mpirun_is_a_plain_run() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let (a, b) = (scratch("mpi-plain"), scratch("mpi-one-rank"));
    let (sa, sb) = (a.to_str().expect("utf-8"), b.to_str().expect("utf-8"));
    let o = cdl(&train_args(sa, &["--steps", "20", "--log-every", "10"]));
    assert!(o.status.success(), "{}", text(&o));
    let o = mpirun_n(1, &train_args(sb, &["--steps", "20", "--log-every", "10"])).output().expect("mpirun");
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("ranks"), "{}", text(&o));
    assert_eq!(loss_curve(&a), loss_curve(&b));
    let load = |d: &Path| checkpoint::load(d.join("checkpoint.safetensors")).expect("checkpoint");
    assert_eq!(load(&a).tensors(), load(&b).tensors());
    for d in [&a, &b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn two_rank_run_resumes_exactly() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let (a, b) = (scratch("mpi-straight"), scratch("mpi-resumed"));
    let (sa, sb) = (a.to_str().expect("utf-8"), b.to_str().expect("utf-8"));
    let o = mpirun(&train_args(sa, &["--steps", "30", "--log-every", "10", "--checkpoint-every", "10"]));
    assert!(o.status.success(), "{}", text(&o));
    let o = mpirun(&train_args(sb, &["--steps", "20", "--log-every", "10", "--checkpoint-every", "10"]));
    assert!(o.status.success(), "{}", text(&o));
    let o = mpirun(&train_args(sb, &["--steps", "30", "--log-every", "10", "--checkpoint-every", "10", "--resume"]));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(loss_curve(&a), loss_curve(&b));
    let load = |d: &Path| checkpoint::load(d.join("checkpoint.safetensors")).expect("checkpoint");
    assert_eq!(load(&a).tensors(), load(&b).tensors());
    for d in [&a, &b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The pid of rank `rank` among mpirun's children (Open MPI starts local ranks as its children
/// and tells each its rank in OMPI_COMM_WORLD_RANK).
fn rank_pid(mpirun: u32, rank: usize) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{mpirun}/task/{mpirun}/children")).ok()?;
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()).find(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == want.as_bytes()))
    })
}

#[test]
fn a_killed_rank_stops_the_job_and_keeps_the_checkpoint() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let dir = scratch("mpi-killed");
    let ck = dir.join("checkpoint.safetensors");
    let args = train_args(
        dir.to_str().expect("utf-8"),
        &["--steps", "1000000", "--log-every", "20", "--checkpoint-every", "20"],
    );
    let mut child = mpirun_n(2, &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("mpirun");
    // Wait for the first checkpoint, then kill rank 1 mid-run.
    let pid = loop {
        if child.try_wait().expect("mpirun status").is_some() {
            panic!("the job ended before rank 1 was killed: {}", text(&child.wait_with_output().expect("output")));
        }
        if let Some(pid) = rank_pid(child.id(), 1).filter(|_| ck.exists()) {
            break pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let killed = Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
    assert!(killed.success());
    let o = child.wait_with_output().expect("mpirun ends");
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("rank 1"), "the rank is not named: {}", text(&o));
    let saved = checkpoint::load(&ck).expect("the last checkpoint stays valid");
    assert!(saved.step > 0 && saved.step.is_multiple_of(20), "step {}", saved.step);
    let _ = std::fs::remove_dir_all(dir);
}
