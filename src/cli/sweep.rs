//! `cdl sweep`: expands a grid of `cdl train` flags into one run directory per point, runs the
//! `cdl train --resume` commands as child processes (or writes a Slurm or shell script of them) and
//! collects the runs' final metrics as mean ± standard error over seeds. It never opens the GPU.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use clap::error::{ContextKind, ContextValue};
use clap::{Args, FromArgMatches, Parser};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use cdl::eval::stats::mean_se;
use cdl::text::OneLine;
use cdl::train::checkpoint::{self, KEY_STEP, MAX_HEADER_BYTES};

use super::sample::EvalArgs;
use super::train::{self, TrainArgs, CHECKPOINT, MAX_CONFIG_BYTES, METRICS};

/// The `--help` text after the options: the grid format and the files of a sweep directory.
pub const GRID_HELP: &str = "\
Grid file (TOML): every key is a `cdl train` flag with underscores, as in a --config file. A
scalar is the same for every run; a list is an axis, and there is one run per combination:
    model = \"mlp\"
    steps = 2000
    loss = [\"itd\", \"cdl\"]       # an axis
    lambda_cdl = [0.5, 1.0]     # another: 2 x 2 points
    seeds = 3                   # the seed axis 0, 1, 2 (not with `seed`; `seed = [4, 7]` picks seeds)
    config = \"base.toml\"        # optional: a run config under the grid's keys (path from the grid file)
    [eval]                      # optional: `cdl eval` flags, run after each run (JSON in eval.json)
    n = 1000
    metrics = [\"mmd\", \"swd\"]    # a list in [eval] is the flag's comma list, not an axis
Every point is checked as `cdl train` checks its flags before anything is written or run. `out`
is the sweep's: a run's directory is DIR/<its axes, alphabetically, seed last>, e.g.
DIR/lambda_cdl=0.5,loss=cdl,seed=0 (characters other than letters, digits and . _ + - = , become _).

DIR/sweep.json lists every run (name, point, command); DIR/commands.txt holds one command a line;
DIR/<run>/config.toml is its run config and DIR/<run>/command its command, run from the directory
`cdl sweep` ran in: `cdl train --config DIR/<run>/config.toml --out DIR/<run> --resume`, output
appended to DIR/<run>/train.log, then `cdl eval` into DIR/<run>/eval.json with [eval]. A run is
finished when its checkpoint is at --steps (and eval.json is there with [eval]): running the
sweep again skips finished runs and continues the others where their checkpoints stopped.

--emit slurm writes DIR/sweep.sbatch, an array job whose task i runs line i + 1 of commands.txt:
edit its #SBATCH lines (partition, GPUs, memory, time) for your cluster, then `sbatch` it.
--emit shell writes DIR/sweep.sh, the commands one after another. In both, `cdl` runs $CDL,
by default this executable.

--collect DIR writes DIR/results.csv and DIR/results.md (also printed): a row per grid point
without the seed, with every numeric field of the last metrics.jsonl line and of eval.json
(eval_*) as mean and standard error over the finished seeds (n); unfinished runs are left out
and counted in the table's note.";

/// The manifest of a sweep directory.
const MANIFEST: &str = "sweep.json";
/// One command a line, in manifest order (the Slurm array reads line i + 1).
const COMMANDS: &str = "commands.txt";
/// A run's command, inside its directory.
const COMMAND: &str = "command";
/// A run's `cdl train` and `cdl eval` output, appended to by every attempt.
const LOG: &str = "train.log";
/// The JSON line of `cdl eval`, with an `[eval]` table.
const EVAL: &str = "eval.json";
/// A run's config, as `cdl train` writes it.
const CONFIG: &str = "config.toml";
/// Keys of the grid that are not `cdl train` flags.
const SEEDS: &str = "seeds";
const EVAL_TABLE: &str = "eval";
const BASE_CONFIG: &str = "config";
/// Run names longer than this are cut and given a hash (file names hold at most 255 bytes).
const MAX_NAME: usize = 160;

#[derive(Args, Clone, Debug)]
pub struct SweepArgs {
    /// The grid: `cdl train` flags as TOML keys, lists as axes (format below).
    #[arg(long, value_name = "TOML", conflicts_with = "collect")]
    pub grid: Option<PathBuf>,
    /// The sweep directory: one run directory per point, sweep.json, commands.txt.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Runs at a time, each a `cdl train` child process (its output in <run>/train.log).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: u32,
    /// Write a script instead of running: slurm (DIR/sweep.sbatch, an array job) or shell
    /// (DIR/sweep.sh).
    #[arg(long, value_parser = ["slurm", "shell"], conflicts_with = "jobs")]
    pub emit: Option<String>,
    /// Gather the final metrics of the sweep in DIR into DIR/results.csv and DIR/results.md.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "emit"])]
    pub collect: Option<PathBuf>,
}

/// `cdl sweep`: collect, emit or run.
pub fn sweep(args: SweepArgs) -> Result<ExitCode, String> {
    if let Some(dir) = &args.collect {
        return collect(dir);
    }
    let (Some(grid), Some(out)) = (&args.grid, &args.out) else {
        return Err("cdl sweep needs --grid TOML and --out DIR, or --collect DIR".into());
    };
    let plan = Plan::new(grid, out)?;
    plan.write()?;
    match args.emit.as_deref() {
        Some("slurm") => plan.emit_slurm(),
        Some(_) => plan.emit_shell(),
        None => plan.run_all(args.jobs as usize),
    }
}

// ---
// The grid: axes and fixed values, expanded into checked points.

/// A grid file read and checked: the fixed keys, the axes and the `[eval]` flags.
struct Grid {
    /// The grid file, as shown in messages.
    shown: String,
    /// Values for every run (a base config's, then the grid's scalars).
    fixed: toml::Table,
    /// (key, values), alphabetically, seed last.
    axes: Vec<(String, Vec<toml::Value>)>,
    /// `cdl eval` flags (without the program, the command and --checkpoint), if any.
    eval: Option<Vec<String>>,
}

impl Grid {
    fn read(path: &Path) -> Result<Self, String> {
        let shown = OneLine(&path.display().to_string()).to_string();
        let mut table = read_toml(path, &shown)?;
        let mut fixed = match table.remove(BASE_CONFIG) {
            Some(base) => base_config(path, &base, &shown)?,
            None => toml::Table::new(),
        };
        let eval = match table.remove(EVAL_TABLE) {
            None => None,
            Some(toml::Value::Table(t)) => Some(eval_flags(&t, &shown)?),
            Some(_) => return Err(format!("{shown}: `{EVAL_TABLE}` must be a table ([eval]) of `cdl eval` flags")),
        };
        let seeds = match table.remove(SEEDS) {
            None => None,
            Some(_) if table.contains_key("seed") => {
                return Err(format!("{shown}: `{SEEDS}` (seeds 0..N) and `seed` are both set; keep one"));
            }
            Some(toml::Value::Integer(n)) if (1..=1_000_000).contains(&n) => Some(n),
            Some(v) => return Err(format!("{shown}: `{SEEDS}` = {v}: expected a number of seeds, 1..=1000000")),
        };
        let defaults = serde_json::to_value(TrainArgs::defaults()).map_err(|e| e.to_string())?;
        let mut axes = Vec::new();
        for (key, value) in table {
            if key == "out" {
                return Err(format!("{shown}: `out` is set by the sweep (DIR/<run>); remove it"));
            }
            let toml::Value::Array(values) = value else {
                check_type(&defaults, &key, &value, &shown)?;
                fixed.insert(key, value);
                continue;
            };
            if values.is_empty() {
                return Err(format!("{shown}: `{}` is an empty list; an axis needs values", OneLine(&key)));
            }
            let mut seen = HashSet::new();
            for v in &values {
                check_type(&defaults, &key, v, &shown)?;
                if !seen.insert(value_text(v)) {
                    return Err(format!("{shown}: `{}` lists {v} twice", OneLine(&key)));
                }
            }
            axes.push((key, values));
        }
        if let Some(n) = seeds {
            axes.push(("seed".into(), (0..n).map(toml::Value::Integer).collect()));
        }
        // Alphabetical (the table's order), seed last: the innermost axis, grouped over by --collect.
        axes.sort_by_key(|(k, _)| k == "seed");
        Ok(Self { shown, fixed, axes, eval })
    }

    /// Every point: the axes' values, the last axis fastest.
    fn points(&self) -> Vec<Vec<(String, toml::Value)>> {
        let mut points = vec![Vec::new()];
        for (key, values) in &self.axes {
            points = points
                .into_iter()
                .flat_map(|p| {
                    values.iter().map(move |v| {
                        let mut p = p.clone();
                        p.push((key.clone(), v.clone()));
                        p
                    })
                })
                .collect();
        }
        points
    }
}

/// The run config that the grid's `config` key names (a path from the grid file's folder),
/// checked as `cdl train --config` checks it.
fn base_config(grid: &Path, value: &toml::Value, shown: &str) -> Result<toml::Table, String> {
    let toml::Value::String(base) = value else {
        return Err(format!("{shown}: `{BASE_CONFIG}` must be the path of a run config"));
    };
    let path = grid.parent().unwrap_or(Path::new("")).join(base);
    let base_shown = format!("{} (the `{BASE_CONFIG}` of {shown})", OneLine(&path.display().to_string()));
    let table = read_toml(&path, &base_shown)?;
    train::apply_config(TrainArgs::defaults(), &toml_text(&table)?, &base_shown, None)?;
    Ok(table)
}

/// A TOML file, size-checked, as a table; errors name `shown`.
fn read_toml(path: &Path, shown: &str) -> Result<toml::Table, String> {
    let len = fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(format!("{shown}: {len} bytes is too large (at most {MAX_CONFIG_BYTES})"));
    }
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    text.parse().map_err(|e: toml::de::Error| {
        format!("{shown}: not valid TOML: {}", e.message().lines().next().unwrap_or("syntax error"))
    })
}

fn toml_text(table: &toml::Table) -> Result<String, String> {
    toml::to_string(table).map_err(|e| format!("internal: cannot write TOML: {e}"))
}

/// Refuses an unknown key (with `cdl train`'s "did you mean") or a value of the wrong type,
/// naming the key; ranges and combinations are checked per point.
fn check_type(defaults: &Value, key: &str, value: &toml::Value, shown: &str) -> Result<(), String> {
    let mut v = defaults.clone();
    let obj = v.as_object_mut().ok_or("internal: arguments are not an object")?;
    if !obj.contains_key(key) {
        let one = toml::Table::from_iter([(key.to_string(), value.clone())]);
        train::apply_config(TrainArgs::defaults(), &toml_text(&one)?, shown, None)?;
        return Err(format!("{shown}: unknown key `{}`", OneLine(key)));
    }
    if matches!(value, toml::Value::Array(_) | toml::Value::Table(_)) {
        return Err(format!("{shown}: `{}`: a list of lists or tables is not an axis", OneLine(key)));
    }
    obj.insert(key.into(), serde_json::to_value(value).map_err(|e| e.to_string())?);
    serde_json::from_value::<TrainArgs>(v).map_err(|e| format!("{shown}: `{}` = {value}: {e}", OneLine(key)))?;
    Ok(())
}

/// The `[eval]` table as `cdl eval` flags, checked by `cdl eval`'s own parser.
fn eval_flags(table: &toml::Table, shown: &str) -> Result<Vec<String>, String> {
    #[derive(Parser)]
    struct EvalOnly {
        #[command(flatten)]
        args: EvalArgs,
    }
    let mut flags = Vec::new();
    for (key, value) in table {
        if key == "checkpoint" {
            return Err(format!("{shown}: [eval] `checkpoint` is set by the sweep (DIR/<run>/{CHECKPOINT})"));
        }
        let flag = format!("--{}", key.replace('_', "-"));
        let text = match value {
            toml::Value::Boolean(true) => {
                flags.push(flag);
                continue;
            }
            toml::Value::Boolean(false) => continue,
            toml::Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join(","),
            toml::Value::Table(_) => return Err(format!("{shown}: [eval] `{}` is a table", OneLine(key))),
            v => value_text(v),
        };
        flags.extend([flag, text]);
    }
    let argv = ["cdl eval", "--checkpoint", CHECKPOINT].into_iter().map(String::from).chain(flags.iter().cloned());
    let parsed = <EvalOnly as clap::CommandFactory>::command()
        .try_get_matches_from(argv)
        .and_then(|m| EvalOnly::from_arg_matches(&m));
    if let Err(e) = parsed {
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("invalid flags").trim_start_matches("error: ");
        let hint = match e.get(ContextKind::SuggestedArg) {
            Some(ContextValue::String(s)) => {
                format!("; did you mean `{}`?", s.trim_start_matches("--").replace('-', "_"))
            }
            _ => String::new(),
        };
        return Err(format!("{shown}: [eval]: {first}{hint}"));
    }
    Ok(flags)
}

/// A value as it appears in a run name and on a command line.
fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// `key=value,…` of a point (`run` for a grid without axes).
fn point_label(point: &[(String, toml::Value)]) -> String {
    if point.is_empty() {
        return "run".into();
    }
    point.iter().map(|(k, v)| format!("{k}={}", value_text(v))).collect::<Vec<_>>().join(",")
}

/// A directory name: `label` with characters other than letters, digits and `._+-=,` as `_`, cut
/// with a hash when long or when `salt` is set (two points whose names would collide).
fn dir_name(label: &str, salt: bool) -> String {
    let mut name: String =
        label.chars().map(|c| if c.is_ascii_alphanumeric() || "._+-=,".contains(c) { c } else { '_' }).collect();
    if name.starts_with('.') {
        name.insert(0, '_');
    }
    if salt || name.len() > MAX_NAME {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let hash =
            label.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        name.truncate(MAX_NAME);
        name += &format!("-{:08x}", hash as u32);
    }
    name
}

// ---
// The plan: every run's directory, config and command, written before anything runs.

/// The manifest, DIR/sweep.json.
#[derive(Serialize, Deserialize)]
struct Manifest {
    /// The grid file the sweep was made from.
    grid: String,
    /// The directory the commands run in (relative paths in them start there).
    cwd: PathBuf,
    /// The axes, in the order of the run names; `seed` is grouped over by --collect.
    axes: Vec<String>,
    /// `cdl eval` flags after `--checkpoint`, if the grid has an [eval] table.
    eval: Option<Vec<String>>,
    runs: Vec<RunEntry>,
}

#[derive(Serialize, Deserialize, Clone)]
struct RunEntry {
    /// The run directory's name inside the sweep directory.
    name: String,
    /// The point: the value of every axis.
    point: Map<String, Value>,
    /// The run's --steps: it is finished when its checkpoint is there.
    steps: u64,
    /// What runs it, a shell line: `cdl train` (and `cdl eval`) with their output redirected.
    command: String,
    /// `cdl train`'s arguments, `cdl` first.
    train: Vec<String>,
    /// `cdl eval`'s arguments, `cdl` first, if any.
    eval: Option<Vec<String>>,
}

struct Plan {
    dir: PathBuf,
    manifest: Manifest,
    /// Each run's resolved config.toml, as `cdl train` writes it.
    configs: Vec<String>,
}

impl Plan {
    /// Reads the grid and checks every point as `cdl train` would; writes nothing.
    fn new(grid_path: &Path, dir: &Path) -> Result<Self, String> {
        let grid = Grid::read(grid_path)?;
        let points = grid.points();
        let labels: Vec<String> = points.iter().map(|p| point_label(p)).collect();
        let mut count: HashMap<String, usize> = HashMap::new();
        for l in &labels {
            *count.entry(dir_name(l, false)).or_default() += 1;
        }
        let mut manifest = Manifest {
            grid: grid_path.display().to_string(),
            cwd: std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?,
            axes: grid.axes.iter().map(|(k, _)| k.clone()).collect(),
            eval: grid.eval.clone(),
            runs: Vec::new(),
        };
        let mut configs = Vec::new();
        for (point, label) in points.iter().zip(&labels) {
            let name = dir_name(label, count[&dir_name(label, false)] > 1);
            let shown =
                if point.is_empty() { grid.shown.clone() } else { format!("{}, run {}", grid.shown, OneLine(label)) };
            let mut args = resolve(&grid, point, &shown)?;
            let run_dir = dir.join(&name);
            args.out = Some(run_dir.clone());
            check_existing(&run_dir, &args)?;
            configs.push(toml::to_string(&args).map_err(|e| format!("cannot write the resolved config: {e}"))?);
            let point =
                point.iter().map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Value::Null))).collect();
            manifest.runs.push(RunEntry::new(name, point, &run_dir, args.steps, grid.eval.as_deref()));
        }
        Ok(Self { dir: dir.to_path_buf(), manifest, configs })
    }

    /// Writes the sweep directory: sweep.json, commands.txt, and per run config.toml and command.
    fn write(&self) -> Result<(), String> {
        let write = |path: PathBuf, text: &str| {
            checkpoint::write_atomic(&path, |f| f.write_all(text.as_bytes()))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        for (run, config) in self.manifest.runs.iter().zip(&self.configs) {
            let dir = self.dir.join(&run.name);
            fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            write(dir.join(CONFIG), config)?;
            write(dir.join(COMMAND), &format!("{}\n", run.command))?;
        }
        let json = serde_json::to_string_pretty(&self.manifest).map_err(|e| e.to_string())?;
        write(self.dir.join(MANIFEST), &(json + "\n"))?;
        let lines: String = self.manifest.runs.iter().map(|r| format!("{}\n", r.command)).collect();
        write(self.dir.join(COMMANDS), &lines)
    }

    /// The lines every script starts with: the directory the commands run in, and `cdl`.
    fn script_head(&self) -> Result<String, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
        Ok(format!(
            "set -u\ncd {}\nCDL=${{CDL:-{}}}\ncdl() {{ \"$CDL\" \"$@\"; }}\n",
            quote(&self.manifest.cwd.display().to_string()),
            quote(&exe.display().to_string())
        ))
    }

    fn emit_slurm(&self) -> Result<ExitCode, String> {
        let n = self.manifest.runs.len();
        let abs = self.manifest.cwd.join(&self.dir);
        let log = abs.join("slurm-%A_%a.out");
        let script = format!(
            "#!/bin/bash\n\
             # The cdl sweep in {dir}: task i of this array runs line i + 1 of {commands} (sweep.json lists\n\
             # the same commands). Edit the #SBATCH lines for your cluster, then: sbatch {this}\n\
             # (add %K to --array to run at most K tasks at a time).\n\
             #SBATCH --job-name=cdl-sweep\n\
             #SBATCH --array=0-{last}\n\
             #SBATCH --ntasks=1\n\
             #SBATCH --cpus-per-task=4\n\
             #SBATCH --gres=gpu:1\n\
             #SBATCH --mem=16G\n\
             #SBATCH --time=24:00:00\n\
             #SBATCH --output={log}\n\
             {head}\
             line=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {commands})\n\
             eval \"$line\"\n",
            dir = self.dir.display(),
            commands = quote(&self.dir.join(COMMANDS).display().to_string()),
            this = self.dir.join("sweep.sbatch").display(),
            last = n - 1,
            log = log.display(),
            head = self.script_head()?,
        );
        self.write_script(
            "sweep.sbatch",
            &script,
            &format!("a Slurm array of {n} runs; edit its #SBATCH lines, then sbatch it"),
        )
    }

    fn emit_shell(&self) -> Result<ExitCode, String> {
        let n = self.manifest.runs.len();
        let mut script = format!(
            "#!/bin/bash\n# The cdl sweep in {}: its {n} runs one after another (the commands of sweep.json).\n{}",
            self.dir.display(),
            self.script_head()?
        );
        for run in &self.manifest.runs {
            script += &format!("{}\n", run.command);
        }
        self.write_script("sweep.sh", &script, &format!("{n} runs one after another; run it with bash"))
    }

    fn write_script(&self, file: &str, text: &str, what: &str) -> Result<ExitCode, String> {
        let path = self.dir.join(file);
        checkpoint::write_atomic(&path, |f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o755));
        }
        println!("wrote {} ({what}) and {}", path.display(), self.dir.join(MANIFEST).display());
        Ok(ExitCode::SUCCESS)
    }
}

/// The `cdl train` arguments of one point, checked as `cdl train` checks its flags.
fn resolve(grid: &Grid, point: &[(String, toml::Value)], shown: &str) -> Result<TrainArgs, String> {
    let mut table = grid.fixed.clone();
    table.extend(point.iter().cloned());
    let args = train::apply_config(TrainArgs::defaults(), &toml_text(&table)?, shown, None)?;
    // `cdl train` checks this when it starts, after its flags: here before any run.
    if let Some((key, every)) = args.off_the_log_grid() {
        return Err(format!("{shown}: {key} = {every} must be a multiple of log_every = {}", args.log_every));
    }
    Ok(args)
}

impl RunEntry {
    /// The run `name` in `run_dir`: `cdl train --resume` on its config.toml, then `cdl eval` with
    /// `eval`'s flags, if any.
    fn new(name: String, point: Map<String, Value>, run_dir: &Path, steps: u64, eval: Option<&[String]>) -> Self {
        let path = |file: &str| run_dir.join(file).display().to_string();
        let owned = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<String>>();
        let train =
            owned(&["cdl", "train", "--config", &path(CONFIG), "--out", &run_dir.display().to_string(), "--resume"]);
        let eval =
            eval.map(|flags| [owned(&["cdl", "eval", "--checkpoint", &path(CHECKPOINT)]), flags.to_vec()].concat());
        let command = command_line(&train, eval.as_ref(), &path(LOG), &path(EVAL));
        Self { name, point, steps, command, train, eval }
    }
}

/// Refuses a run directory whose config.toml describes another run (a sweep directory reused for
/// another grid), before anything is written.
fn check_existing(dir: &Path, args: &TrainArgs) -> Result<(), String> {
    let path = dir.join(CONFIG);
    let Ok(text) = fs::read_to_string(&path) else { return Ok(()) };
    let same = toml::from_str::<TrainArgs>(&text).is_ok_and(|old| old.run_config() == args.run_config());
    if same {
        Ok(())
    } else {
        Err(format!("{} holds another run than the grid's; choose another --out", path.display()))
    }
}

/// The shell line of a run: `cdl train` appending to the log, then `cdl eval` into eval.json.
fn command_line(train: &[String], eval: Option<&Vec<String>>, log: &str, eval_json: &str) -> String {
    let join = |argv: &[String]| argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
    let mut line = format!("{} >> {} 2>&1", join(train), quote(log));
    if let Some(eval) = eval {
        line += &format!(" && {} > {} 2>> {}", join(eval), quote(eval_json), quote(log));
    }
    line
}

/// `s` as one shell word: bare when safe, otherwise in single quotes.
fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._+-=,/:@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

// ---
// Running: J child processes at a time; finished runs skipped.

/// The step of the checkpoint at `path`, read from its header alone (a UNet's weights are not
/// read); `None` when there is none or it cannot be read.
fn checkpoint_step(path: &Path) -> Option<u64> {
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__")]
        meta: HashMap<String, String>,
    }
    let mut file = File::open(path).ok()?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        return None;
    }
    let mut header = Vec::new();
    file.take(len).read_to_end(&mut header).ok()?;
    let header: Header = serde_json::from_slice(&header).ok()?;
    header.meta.get(KEY_STEP)?.parse().ok()
}

/// The numeric fields of the JSON object in `path` (a run's eval.json), if it holds one.
fn eval_json(path: &Path) -> Option<Map<String, Value>> {
    match serde_json::from_str(&fs::read_to_string(path).ok()?).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A run is finished when its checkpoint is at its --steps and, with [eval], eval.json holds the
/// metrics: what `cdl train --resume` and a finished run of the sweep leave, however it was run.
fn finished(dir: &Path, run: &RunEntry) -> Option<u64> {
    let step = checkpoint_step(&dir.join(CHECKPOINT)).filter(|&s| s >= run.steps)?;
    (run.eval.is_none() || eval_json(&dir.join(EVAL)).is_some()).then_some(step)
}

enum Event {
    Skipped(u64),
    Started,
    Finished(f64),
    Failed(String),
}

impl Plan {
    fn run_all(&self, jobs: usize) -> Result<ExitCode, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
        let runs = &self.manifest.runs;
        let n = runs.len();
        println!("sweep: {n} runs in {}, {jobs} at a time", self.dir.display());
        let next = AtomicUsize::new(0);
        let (tx, rx) = mpsc::channel();
        let (mut done, mut skipped, mut failed) = (0, 0, Vec::new());
        std::thread::scope(|s| {
            for _ in 0..jobs.min(n) {
                let tx = tx.clone();
                let (next, exe) = (&next, &exe);
                s.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(run) = runs.get(i) else { break };
                    let dir = self.dir.join(&run.name);
                    if let Some(step) = finished(&dir, run) {
                        let _ = tx.send((i, Event::Skipped(step)));
                        continue;
                    }
                    let _ = tx.send((i, Event::Started));
                    let t = Instant::now();
                    let event = match run_one(exe, &dir, run) {
                        Ok(()) => Event::Finished(t.elapsed().as_secs_f64()),
                        Err(e) => Event::Failed(e),
                    };
                    let _ = tx.send((i, event));
                });
            }
            drop(tx);
            for (i, event) in rx {
                let what = match event {
                    Event::Skipped(step) => {
                        skipped += 1;
                        format!("skipped (finished: checkpoint at step {step})")
                    }
                    Event::Started => "started".into(),
                    Event::Finished(secs) => {
                        done += 1;
                        format!("finished in {secs:.1} s")
                    }
                    Event::Failed(e) => {
                        failed.push(runs[i].name.clone());
                        format!("FAILED: {e}")
                    }
                };
                println!("[{}/{n}] {}: {what}", i + 1, runs[i].name);
            }
        });
        println!("sweep: {done} finished, {skipped} skipped, {} failed", failed.len());
        if failed.is_empty() {
            Ok(ExitCode::SUCCESS)
        } else {
            println!("failed runs (see their {LOG}): {}", failed.join(" "));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Runs one run's command (as `command_line` writes it) with this executable as `cdl`; the error
/// is the last line of its log.
fn run_one(exe: &Path, dir: &Path, run: &RunEntry) -> Result<(), String> {
    let log_path = dir.join(LOG);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let clone = || log.try_clone().map_err(|e| format!("cannot open {}: {e}", log_path.display()));
    let spawn = |argv: &[String], stdout: Stdio, stderr: Stdio| {
        Command::new(exe)
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))
    };
    let failure = |status: std::process::ExitStatus| {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        text.lines().rev().find(|l| !l.trim().is_empty()).map_or_else(|| format!("{status}"), |l| l.trim().to_string())
    };
    let status = spawn(&run.train, clone()?.into(), clone()?.into())?;
    if !status.success() {
        return Err(failure(status));
    }
    if let Some(eval) = &run.eval {
        let (path, tmp) = (dir.join(EVAL), dir.join(format!("{EVAL}.tmp")));
        let out = File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        let status = spawn(eval, out.into(), clone()?.into())?;
        if !status.success() {
            let _ = fs::remove_file(&tmp);
            return Err(failure(status));
        }
        fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if finished(dir, run).is_none() {
        return Err(format!("exited with success, but {} is not at step {}", CHECKPOINT, run.steps));
    }
    Ok(())
}

// ---
// Collecting: mean ± standard error over seeds.

/// One row of the table: a grid point without the seed.
struct Row {
    label: String,
    point: Map<String, Value>,
    /// Per metric, its values over the finished seeds.
    values: BTreeMap<String, Vec<f64>>,
    n: usize,
}

fn collect(dir: &Path) -> Result<ExitCode, String> {
    let path = dir.join(MANIFEST);
    let text = fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e} (a directory written by `cdl sweep --grid`)", path.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("{} is not a sweep manifest: {e}", path.display()))?;
    let axes: Vec<&String> = manifest.axes.iter().filter(|a| *a != "seed").collect();
    let mut rows: Vec<Row> = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    let mut unfinished = Vec::new();
    for run in &manifest.runs {
        let point: Map<String, Value> =
            run.point.iter().filter(|(k, _)| *k != "seed").map(|(k, v)| (k.clone(), v.clone())).collect();
        let label = if point.is_empty() {
            "all".to_string()
        } else {
            axes.iter().map(|a| format!("{a}={}", plain(&point[a.as_str()]))).collect::<Vec<_>>().join(",")
        };
        let row = match rows.iter().position(|r| r.label == label) {
            Some(i) => i,
            None => {
                rows.push(Row { label, point, values: BTreeMap::new(), n: 0 });
                rows.len() - 1
            }
        };
        let run_dir = dir.join(&run.name);
        let Some(fields) = finished(&run_dir, run).and_then(|_| final_metrics(&run_dir)) else {
            unfinished.push(run.name.clone());
            continue;
        };
        rows[row].n += 1;
        for (k, v) in fields {
            if !columns.contains(&k) {
                columns.push(k.clone());
            }
            rows[row].values.entry(k).or_default().push(v);
        }
    }
    // The loss and its parts first, then the noise classifier, sample quality and cost.
    let rank = |c: &String| {
        let first = ["loss", "loss_std", "loss_cdl", "grad_norm", "cdl_accuracy", "logit_clean", "logit_noisy"];
        first.iter().position(|f| f == c).unwrap_or(if c.starts_with("eval_") { first.len() } else { first.len() + 1 })
    };
    columns.sort_by_key(rank);
    let csv_path = dir.join("results.csv");
    write_csv(&csv_path, &axes, &columns, &rows)?;
    let md = markdown(&columns, &rows, &unfinished, manifest.runs.len());
    let md_path = dir.join("results.md");
    fs::write(&md_path, &md).map_err(|e| format!("cannot write {}: {e}", md_path.display()))?;
    print!("{md}");
    eprintln!("wrote {} and {}", csv_path.display(), md_path.display());
    Ok(ExitCode::SUCCESS)
}

/// A JSON scalar without quotes.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Every numeric field of the last line of a run's metrics.jsonl but the step, then of its
/// eval.json (as eval_<field>).
fn final_metrics(dir: &Path) -> Option<Vec<(String, f64)>> {
    let text = fs::read_to_string(dir.join(METRICS)).ok()?;
    let last: Map<String, Value> = serde_json::from_str(text.lines().rev().find(|l| !l.trim().is_empty())?).ok()?;
    let mut out: Vec<(String, f64)> =
        last.iter().filter(|(k, _)| *k != "step").filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect();
    if let Some(eval) = eval_json(&dir.join(EVAL)) {
        out.extend(eval.iter().filter_map(|(k, v)| Some((format!("eval_{k}"), v.as_f64()?))));
    }
    Some(out)
}

fn write_csv(path: &Path, axes: &[&String], columns: &[String], rows: &[Row]) -> Result<(), String> {
    let err = |e: csv::Error| format!("cannot write {}: {e}", path.display());
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    let mut header: Vec<String> = axes.iter().map(|a| a.to_string()).collect();
    header.push("n".into());
    for c in columns {
        header.extend([format!("{c}_mean"), format!("{c}_se")]);
    }
    w.write_record(&header).map_err(err)?;
    let num = |x: f64| if x.is_finite() { x.to_string() } else { String::new() };
    for row in rows {
        let mut rec: Vec<String> = axes.iter().map(|a| plain(&row.point[a.as_str()])).collect();
        rec.push(row.n.to_string());
        for c in columns {
            let (m, se) = row.values.get(c).map_or((f64::NAN, f64::NAN), |v| mean_se(v));
            rec.extend([num(m), num(se)]);
        }
        w.write_record(&rec).map_err(err)?;
    }
    w.flush().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The table in Markdown; columns whose value is the same in every run go into the note.
fn markdown(columns: &[String], rows: &[Row], unfinished: &[String], total: usize) -> String {
    let all =
        |c: &String| rows.iter().flat_map(|r| r.values.get(c).into_iter().flatten().copied()).collect::<Vec<f64>>();
    let (constant, shown): (Vec<&String>, Vec<&String>) = columns.iter().partition(|c| {
        let v = all(c);
        v.len() > 1 && v.iter().all(|x| *x == v[0])
    });
    let mut s =
        format!("| run | n | {} |\n|---|--:|", shown.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(" | "));
    s += &"--:|".repeat(shown.len());
    s += "\n";
    for row in rows {
        let cells: Vec<String> = shown.iter().map(|c| row.values.get(*c).map_or("—".into(), |v| pm(v))).collect();
        let _ = writeln!(s, "| {} | {} | {} |", row.label, row.n, cells.join(" | "));
    }
    let _ = write!(s, "\nMean ± standard error over the seeds of each row (n finished runs).");
    if !unfinished.is_empty() {
        let _ = write!(s, " Left out: {} of {total} runs not finished ({}).", unfinished.len(), unfinished.join("; "));
    }
    if !constant.is_empty() {
        let same: Vec<String> = constant.iter().map(|c| format!("{c} = {}", all(c)[0])).collect();
        let _ = write!(s, " The same in every run: {}.", same.join(", "));
    }
    s + "\n"
}

/// `mean ± se`, the error to two significant digits and the mean to the same decimals.
fn pm(v: &[f64]) -> String {
    let (m, se) = mean_se(v);
    if v.is_empty() {
        return "—".into();
    }
    if !(se.is_finite() && se > 0.0) {
        return sig(m, 4);
    }
    let decimals = (1 - se.log10().floor() as i32).max(0);
    if decimals <= 8 && m.abs().max(se) < 1e9 {
        let d = decimals as usize;
        format!("{m:.d$} ± {se:.d$}")
    } else {
        format!("{m:.3e} ± {se:.1e}")
    }
}

/// `x` to `digits` significant digits.
fn sig(x: f64, digits: i32) -> String {
    if x == 0.0 || !x.is_finite() {
        return x.to_string();
    }
    let decimals = digits - 1 - x.abs().log10().floor() as i32;
    if (0..=8).contains(&decimals) {
        let d = decimals as usize;
        format!("{x:.d$}")
    } else if decimals < 0 && x.abs() < 1e9 {
        format!("{x:.0}")
    } else {
        format!("{x:.3e}")
    }
}
