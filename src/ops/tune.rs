//! Kernel variants chosen by measurement on the running adapter. A family with two schemes
//! (matmul, conv2d: `Scheme`) keys each problem by its op family and shape; the first time a
//! key is met while `Gpu::tuning` is on (`decide`), the launcher times every scheme that passed
//! the family's registry check on this device, on scratch buffers of the problem's shape, and
//! keeps the fastest (`fastest`). `Gpu::choice` remembers the choice for the device's lifetime;
//! the choices are kept across runs per adapter and driver as one JSON text (`cache_text`,
//! `read_cache`): the CLI in a file under the user's cache directory (cli/tune.rs), the page in
//! browser storage (web/store.rs).

use serde_json::{json, Value};

use super::{variant_names, OpSpec};
use crate::gpu::{Dispatch, Gpu, GpuError};

/// The two kernel shapes of a family with variants (`CDL_VARIANT=matmul:rows|tiled`,
/// `conv2d:rows|tiled`); a registry entry belongs to `Tiled` when its name ends in `_tiled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Shaped for CPU-backed adapters (lavapipe, SwiftShader): a few rows by a few columns per
    /// invocation in registers, no workgroup memory, vec4 loads where aligned. The default.
    Rows,
    /// Shaped for GPUs: 64 x 64 output tiles staged through workgroup memory, 4 x 4 per
    /// invocation (`shaders/common/gemm_tile.wgsl`).
    Tiled,
}

impl Scheme {
    pub const ALL: [Scheme; 2] = [Scheme::Rows, Scheme::Tiled];
    /// Their names, the default first (`ops::VARIANT_CHOICES`).
    pub const NAMES: [&'static str; 2] = [Scheme::Rows.name(), Scheme::Tiled.name()];

    pub const fn name(self) -> &'static str {
        match self {
            Scheme::Rows => "rows",
            Scheme::Tiled => "tiled",
        }
    }

    pub fn named(name: &str) -> Option<Self> {
        Scheme::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The scheme a registry entry belongs to.
    pub fn of_entry(entry: &str) -> Self {
        if entry.ends_with("_tiled") {
            Scheme::Tiled
        } else {
            Scheme::Rows
        }
    }

    /// The scheme forced for every problem of family `op` on `gpu` (`CDL_VARIANT=op:…`,
    /// `Gpu::set_variant`), if any; a name the family does not have is an error.
    pub fn forced(gpu: &Gpu, op: &str) -> Result<Option<Self>, GpuError> {
        let Some(v) = gpu.variant(op) else { return Ok(None) };
        variant_names(op, &v)?;
        Ok(Scheme::named(&v))
    }

    /// The schemes of `spec` whose every registry check passes on `gpu` (checked once per
    /// device, or read from the cache: `passing`).
    pub async fn passing(gpu: &Gpu, spec: &OpSpec) -> Result<Vec<Scheme>, GpuError> {
        let names = passing(gpu, spec, |entry| Scheme::of_entry(entry).name()).await?;
        Ok(Scheme::ALL.into_iter().filter(|x| names.iter().any(|n| n == x.name())).collect())
    }
}

/// What decides a problem's scheme before anything is timed (`decide`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forced, recorded for this key (cache or an earlier measurement), or the default because
    /// tuning is off.
    Known(Scheme),
    /// Tuning is on and the key is new: time these (the schemes that pass here) with `fastest`.
    Measure(Vec<Scheme>),
}

/// The scheme of the problem recorded under `key` in family `spec`: the forced one, else the
/// choice recorded for the key (a name from an older cache that this build lacks: the default),
/// else, when `gpu.tuning()`, the passing schemes to measure; else `Rows`, the default.
pub async fn decide(gpu: &Gpu, spec: &OpSpec, key: &str) -> Result<Decision, GpuError> {
    if let Some(forced) = Scheme::forced(gpu, spec.name)? {
        return Ok(Decision::Known(forced));
    }
    if let Some(v) = gpu.choice(key) {
        return Ok(Decision::Known(Scheme::named(&v).unwrap_or(Scheme::Rows)));
    }
    if !gpu.tuning() {
        return Ok(Decision::Known(Scheme::Rows));
    }
    Ok(Decision::Measure(Scheme::passing(gpu, spec).await?))
}

/// A variant other than the family's default is chosen only when it takes less than this
/// fraction of the default's time. Timing on a shared machine moves by several per cent between
/// repetitions; without a margin, near-equal variants would flip between runs (and a resumed run
/// would sum in another order than the run it resumes), for no gain worth having.
pub const MARGIN: f64 = 0.9;

/// Timed repetitions per variant, after one warm-up run of each; the median counts.
pub const REPS: usize = 3;

/// The format version of a saved set of choices.
pub const CACHE_SCHEMA: u64 = 1;

/// What identifies the adapter and its driver: saved choices apply to it alone.
pub fn adapter_id(gpu: &Gpu) -> String {
    let i = &gpu.info;
    format!("{:?}|{}|{:x}:{:x}|{}|{}", i.backend, i.name, i.vendor, i.device, i.driver, i.driver_info)
}

/// A short name for the adapter and driver (FNV-1a of `adapter_id`, 16 hex digits), for file
/// names and storage keys.
pub fn adapter_key(gpu: &Gpu) -> String {
    let hash =
        adapter_id(gpu).bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{hash:016x}")
}

/// The choices saved in `text` for `gpu`'s adapter, or why they cannot be used (another
/// schema or adapter, not JSON, a choice that is not a string).
pub fn read_cache(text: &str, gpu: &Gpu) -> Result<Vec<(String, String)>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if v["schema"].as_u64() != Some(CACHE_SCHEMA) {
        return Err(format!("schema {} (this build writes {CACHE_SCHEMA})", v["schema"]));
    }
    if v["adapter"].as_str() != Some(&adapter_id(gpu)) {
        return Err("written for another adapter or driver".into());
    }
    let choices = v["choices"].as_object().ok_or("no \"choices\" object")?;
    choices
        .iter()
        .map(|(k, c)| {
            c.as_str().map(|c| (k.clone(), c.to_string())).ok_or_else(|| format!("choice {k:?} is not a string"))
        })
        .collect()
}

/// `gpu`'s choices over `saved` (what the cache holds now: another process may have added
/// shapes), as the text `read_cache` reads.
pub fn cache_text(gpu: &Gpu, saved: Vec<(String, String)>) -> String {
    let mut choices: serde_json::Map<String, Value> = saved.into_iter().map(|(k, v)| (k, json!(v))).collect();
    for (k, v) in gpu.choices() {
        choices.insert(k, json!(v));
    }
    json!({"schema": CACHE_SCHEMA, "adapter": adapter_id(gpu), "choices": choices}).to_string()
}

/// Gives `gpu` the `choices` read from a cache (not measured by it: not saved again unless
/// tuning adds to them).
pub fn apply_cache(gpu: &Gpu, choices: Vec<(String, String)>) {
    for (k, v) in choices {
        gpu.set_choice(&k, &v, false);
    }
}

/// The choice key under which a family's passing variants are recorded.
fn passed_key(op: &str) -> String {
    format!("passed {op}")
}

/// The variants of `spec` whose every registry check passes on `gpu` (`variant_of` names the
/// variant of a checked entry), comma-separated under "passed <op>": the check runs once per
/// device, or never where the cache has its result.
pub async fn passing(gpu: &Gpu, spec: &OpSpec, variant_of: fn(&str) -> &'static str) -> Result<Vec<String>, GpuError> {
    let key = passed_key(spec.name);
    if let Some(v) = gpu.choice(&key) {
        return Ok(v.split(',').filter(|s| !s.is_empty()).map(String::from).collect());
    }
    let results = (spec.check)(gpu).await?;
    let mut names: Vec<&'static str> = results.iter().map(|r| variant_of(r.entry)).collect();
    names.sort_unstable();
    names.dedup();
    let ok: Vec<String> = names
        .into_iter()
        .filter(|n| results.iter().filter(|r| variant_of(r.entry) == *n).all(|r| r.ok()))
        .map(String::from)
        .collect();
    gpu.set_choice(&key, &ok.join(","), true);
    Ok(ok)
}

/// Times `candidates` (a scheme, a prepared dispatch of the problem in it) and records under
/// `key` the fastest, or `Rows`, the default, unless another is faster by `MARGIN`. The time is
/// the wall time from submit to idle (`performance.now()` in the browser).
pub async fn fastest(gpu: &Gpu, key: &str, candidates: &[(Scheme, Dispatch)]) -> Result<Scheme, GpuError> {
    let default = Scheme::Rows;
    let times = median_times(gpu, candidates, REPS).await?;
    let of = |scheme: Scheme| times.iter().find(|(n, _)| *n == scheme).map(|(_, t)| *t);
    let best = times.iter().copied().min_by(|x, y| x.1.total_cmp(&y.1));
    let pick = match (best, of(default)) {
        (Some((scheme, t)), Some(td)) if scheme != default && t >= MARGIN * td => default,
        (Some((scheme, _)), _) => scheme,
        (None, _) => default,
    };
    gpu.set_choice(key, pick.name(), true);
    Ok(pick)
}

/// Each candidate's median wall time in seconds from submit to idle over `reps` runs, after one
/// warm-up run of each; the runs interleaved, so that a burst of load elsewhere hits every
/// candidate alike.
pub async fn median_times(
    gpu: &Gpu,
    candidates: &[(Scheme, Dispatch)],
    reps: usize,
) -> Result<Vec<(Scheme, f64)>, GpuError> {
    for (_, d) in candidates {
        gpu.run(&[d]);
        gpu.finish().await?;
    }
    let mut t = vec![Vec::with_capacity(reps); candidates.len()];
    for _ in 0..reps.max(1) {
        for (i, (_, d)) in candidates.iter().enumerate() {
            let start = now_s();
            gpu.run(&[d]);
            gpu.finish().await?;
            t[i].push(now_s() - start);
        }
    }
    Ok(candidates
        .iter()
        .zip(t)
        .map(|((name, _), mut v)| {
            v.sort_by(f64::total_cmp);
            (*name, v[v.len() / 2])
        })
        .collect())
}

/// Seconds on a monotonic clock (`Instant` panics on wasm: the page's `performance.now()`).
fn now_s() -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
    }
    #[cfg(target_arch = "wasm32")]
    {
        web_sys::window().and_then(|w| w.performance()).map_or(0.0, |p| p.now() / 1e3)
    }
}
