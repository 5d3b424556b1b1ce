//! `cdl sweep`: a 2 x 2 grid runs two at a time, is skipped when run again and collects into a
//! table of mean ± standard error that matches each run's own files; a failing run does not stop
//! the others; the Slurm and shell scripts hold the manifest's commands; bad grids write nothing.

use crate::common::cli;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use cdl::eval::stats::mean_se;
use cli::{cdl, error_line, gpu_scratch, scratch, text};

/// The small MLP of the CLI tests at 20 steps: a run takes well under a second on lavapipe.
const TINY: &str = "model = \"mlp\"\nwidth = 8\nblocks = 1\nbatch = 16\npoints = 4\ntoy_points = 500\n\
                    steps = 20\nlog_every = 10\ncheckpoint_every = 20\n";

fn write_grid(dir: &Path, body: &str) -> String {
    let p = dir.join("grid.toml");
    std::fs::write(&p, format!("{TINY}{body}")).unwrap();
    p.display().to_string()
}

fn sweep(grid: &str, out: &Path, more: &[&str]) -> std::process::Output {
    let mut args = vec!["sweep", "--grid", grid, "--out", out.to_str().unwrap()];
    args.extend(more);
    cdl(&args)
}

fn manifest(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap()
}

fn commands(m: &Value) -> Vec<String> {
    m["runs"].as_array().unwrap().iter().map(|r| r["command"].as_str().unwrap().to_string()).collect()
}

/// The last metrics line of a run directory.
fn last_metrics(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn standard_error_matches_a_hand_computation() {
    // 1, 2, 3, 4: mean 2.5, sample variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3, se = sqrt(5/3 / 4).
    let (m, se) = mean_se(&[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(m, 2.5);
    assert!((se - 0.645_497_224_367_902_8).abs() < 1e-12, "{se}");
    // Two values a, b: se = |a - b| / 2, what the sweep table below relies on.
    let (m, se) = mean_se(&[0.25, 1.0]);
    assert!((m - 0.625).abs() < 1e-15 && (se - 0.375).abs() < 1e-15, "{m} {se}");
    assert!(mean_se(&[3.0]).1.is_nan());
}

#[test]
fn grid_runs_two_at_a_time_is_skipped_when_rerun_and_collects_mean_and_se_over_seeds() {
    let Some(dir) = gpu_scratch("sweep") else { return };
    let grid = write_grid(&dir, "loss = [\"ddpm\", \"cdl\"]\nseeds = 2\n[eval]\nn = 64\nsteps = 10\nmetrics = [\"mmd\"]\n");
    let out = dir.join("out");
    let o = sweep(&grid, &out, &["--jobs", "2"]);
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stdout.matches(": started").count(), 4, "{stdout}");
    // Two at a time: the first two runs start before either finishes.
    let progress: Vec<&str> = stdout.lines().filter(|l| l.starts_with('[')).collect();
    assert!(progress[..2].iter().all(|l| l.ends_with(": started")), "{stdout}");
    assert_eq!(stdout.matches(": finished in ").count(), 4, "{stdout}");
    assert!(stdout.contains("sweep: 4 finished, 0 skipped, 0 failed"), "{stdout}");

    let m = manifest(&out);
    let runs = m["runs"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["loss=ddpm,seed=0", "loss=ddpm,seed=1", "loss=cdl,seed=0", "loss=cdl,seed=1"]);
    for r in runs {
        let run = out.join(r["name"].as_str().unwrap());
        // The command file is the manifest's; the config is the one `cdl train` wrote back.
        assert_eq!(std::fs::read_to_string(run.join("command")).unwrap().trim_end(), r["command"].as_str().unwrap());
        let config: toml::Table = std::fs::read_to_string(run.join("config.toml")).unwrap().parse().unwrap();
        assert_eq!(config["loss"].as_str().unwrap(), r["point"]["loss"].as_str().unwrap());
        assert_eq!(config["seed"].as_integer().unwrap(), r["point"]["seed"].as_i64().unwrap());
        assert_eq!(last_metrics(&run)["step"], 20);
        let eval: Value = serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
        assert!(eval["mmd"].as_f64().unwrap().is_finite(), "{eval}");
    }
    assert_eq!(std::fs::read_to_string(out.join("commands.txt")).unwrap().lines().collect::<Vec<_>>(), commands(&m));

    // Again: every run is finished, nothing is trained.
    let before = std::fs::read_to_string(out.join(names[0]).join("metrics.jsonl")).unwrap();
    let o = sweep(&grid, &out, &["--jobs", "2"]);
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stdout.matches(": skipped").count(), 4, "{stdout}");
    assert!(stdout.contains("sweep: 0 finished, 4 skipped, 0 failed"), "{stdout}");
    assert_eq!(std::fs::read_to_string(out.join(names[0]).join("metrics.jsonl")).unwrap(), before);

    // The table: a row per loss, n = 2, each mean and se those of the two runs' own final lines.
    let o = cdl(&["sweep", "--collect", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(md, std::fs::read_to_string(out.join("results.md")).unwrap());
    assert!(md.contains("| loss=ddpm | 2 |") && md.contains("| loss=cdl | 2 |"), "{md}");
    let mut reader = csv::Reader::from_path(out.join("results.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "{header:?}");
    let col = |row: &csv::StringRecord, name: &str| -> f64 {
        let i = header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name} in {header:?}"));
        row[i].parse().unwrap_or_else(|_| panic!("{name} = {:?}", &row[i]))
    };
    for (row, loss) in rows.iter().zip(["ddpm", "cdl"]) {
        assert_eq!(&row[0], loss);
        assert_eq!(col(row, "n"), 2.0);
        for (metric, file) in [("loss", "metrics"), ("grad_norm", "metrics"), ("eval_mmd", "eval")] {
            let per_seed: Vec<f64> = (0..2)
                .map(|s| {
                    let run = out.join(format!("loss={loss},seed={s}"));
                    match file {
                        "metrics" => last_metrics(&run)[metric].as_f64().unwrap(),
                        _ => {
                            let e: Value =
                                serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
                            e["mmd"].as_f64().unwrap()
                        }
                    }
                })
                .collect();
            let (mean, se) = (col(row, &format!("{metric}_mean")), col(row, &format!("{metric}_se")));
            assert!(mean.is_finite() && se.is_finite(), "{loss} {metric}: {mean} {se}");
            let want = ((per_seed[0] + per_seed[1]) / 2.0, (per_seed[0] - per_seed[1]).abs() / 2.0);
            assert!((mean - want.0).abs() <= 1e-12 * want.0.abs().max(1.0), "{loss} {metric}: {mean} vs {want:?}");
            assert!((se - want.1).abs() <= 1e-12 * want.0.abs().max(1.0), "{loss} {metric}: {se} vs {want:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_run_is_reported_and_the_others_finish() {
    let Some(dir) = gpu_scratch("sweep-fail") else { return };
    // A data file that does not exist: the grid is valid, the run fails when it loads its data.
    let missing = dir.join("missing.csv");
    let grid = write_grid(&dir, &format!("data = [\"{}\", \"moons\"]\nseeds = 2\n", missing.display()));
    let out = dir.join("out");
    let o = sweep(&grid, &out, &["--jobs", "2"]);
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(stdout.matches("FAILED: ").count(), 2, "{stdout}");
    let failed = stdout.lines().find(|l| l.contains("FAILED: ")).unwrap();
    assert!(failed.contains("missing.csv"), "the log's last line names the file: {failed}");
    assert!(stdout.contains("sweep: 2 finished, 0 skipped, 2 failed"), "{stdout}");
    for s in 0..2 {
        assert!(out.join(format!("data=moons,seed={s}")).join("checkpoint.safetensors").exists());
    }
    // The table leaves the failed runs out and says so.
    let o = cdl(&["sweep", "--collect", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(md.contains("| data=moons | 2 |") && md.contains("2 of 4 runs not finished"), "{md}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn emitted_slurm_and_shell_scripts_run_the_manifest_commands() {
    let Some(dir) = gpu_scratch("sweep-emit") else { return };
    let grid = write_grid(&dir, "lambda_cdl = [0.5, 1.0]\nloss = \"cdl\"\n");
    let out = dir.join("out");
    let o = sweep(&grid, &out, &["--emit", "slurm"]);
    assert!(o.status.success(), "{}", text(&o));
    let sbatch = out.join("sweep.sbatch");
    assert!(String::from_utf8_lossy(&o.stdout).contains(sbatch.to_str().unwrap()), "{}", text(&o));
    let script = std::fs::read_to_string(&sbatch).unwrap();
    assert!(script.contains("#SBATCH --array=0-1\n") && script.contains("SLURM_ARRAY_TASK_ID"), "{script}");
    assert!(script.contains(out.join("commands.txt").to_str().unwrap()), "{script}");
    let m = manifest(&out);
    let want = commands(&m);
    assert_eq!(want.len(), 2);
    assert!(want[0].starts_with("cdl train --config ") && want[0].contains(" --resume "), "{}", want[0]);
    assert_eq!(std::fs::read_to_string(out.join("commands.txt")).unwrap().lines().collect::<Vec<_>>(), want);
    assert!(!out.join("lambda_cdl=0.5").join("train.log").exists(), "--emit runs nothing");

    let o = sweep(&grid, &out, &["--emit", "shell"]);
    assert!(o.status.success(), "{}", text(&o));
    let sh = out.join("sweep.sh");
    let script = std::fs::read_to_string(&sh).unwrap();
    let lines: Vec<String> = script.lines().filter(|l| l.starts_with("cdl train")).map(String::from).collect();
    assert_eq!(lines, want);
    // The script trains, and the sweep then finds both runs finished.
    let run = Command::new("bash").arg(&sh).env("CDL", env!("CARGO_BIN_EXE_cdl")).output().unwrap();
    assert!(run.status.success(), "{}", text(&run));
    for name in ["lambda_cdl=0.5", "lambda_cdl=1"] {
        assert_eq!(last_metrics(&out.join(name))["step"], 20, "{name}");
    }
    let o = sweep(&grid, &out, &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 finished, 2 skipped, 0 failed"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_grids_are_one_line_errors_and_write_nothing() {
    let dir = scratch("sweep-bad");
    let out = dir.join("out");
    let cases: [(&str, &[&str]); 14] = [
        ("lrr = 0.01\n", &["grid.toml", "unknown key `lrr`", "did you mean `lr`"]),
        ("loss = []\n", &["`loss` is an empty list"]),
        ("batch = [16, \"big\"]\n", &["`batch` = \"big\"", "invalid type"]),
        ("loss = [\"cdl\", \"mse\"]\n", &["`loss` = \"mse\"", "unknown loss"]),
        ("loss = [\"cdl\", \"cdl\"]\n", &["`loss` lists \"cdl\" twice"]),
        ("seeds = 2\nseed = 1\n", &["`seeds` (seeds 0..N) and `seed` are both set"]),
        ("seeds = 0\n", &["`seeds` = 0"]),
        ("steps = [10, 0]\n", &["run steps=0", "steps = 0 is out of range"]),
        ("checkpoint_every = [20, 7]\n", &["run checkpoint_every=7", "multiple of log_every"]),
        ("out = \"x\"\n", &["`out` is set by the sweep"]),
        ("steps = = 3\n", &["not valid TOML"]),
        ("[eval]\nnn = 3\n", &["[eval]", "--nn", "did you mean `n`"]),
        ("[eval]\nsampler = \"euler\"\n", &["[eval]", "euler"]),
        ("[eval]\ncheckpoint = \"x\"\n", &["[eval] `checkpoint` is set by the sweep"]),
    ];
    for (body, want) in cases {
        // The tiny grid's `steps` and `checkpoint_every` are left out where a case sets them.
        let base: String = TINY.lines().filter(|l| !body.contains(l.split(" = ").next().unwrap())).map(|l| l.to_string() + "\n").collect();
        let grid = dir.join("grid.toml");
        std::fs::write(&grid, format!("{base}{body}")).unwrap();
        let e = error_line(&sweep(grid.to_str().unwrap(), &out, &["--jobs", "2"]));
        for w in want {
            assert!(e.contains(w), "{body:?}: {e} lacks {w}");
        }
        assert!(!out.exists(), "{body:?} wrote {}", out.display());
    }
    let e = error_line(&cdl(&["sweep", "--collect", dir.to_str().unwrap()]));
    assert!(e.contains("sweep.json"), "{e}");
    let e = error_line(&cdl(&["sweep", "--grid", dir.join("grid.toml").to_str().unwrap()]));
    assert!(e.contains("--out"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shipped_example_grids_expand() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs").join("sweeps");
    let mut grids: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    grids.sort();
    assert!(!grids.is_empty());
    for g in &grids {
        let out = scratch("sweep-shipped");
        let o = sweep(g.to_str().unwrap(), &out, &["--emit", "shell"]);
        assert!(o.status.success(), "{}: {}", g.display(), text(&o));
        // toy2d-lambda.toml: 2 λ × 2 seeds.
        assert!(commands(&manifest(&out)).len() >= 4, "{}", g.display());
        let _ = std::fs::remove_dir_all(&out);
    }
}
