//! Kernel variants chosen by measurement on the running adapter. A launcher with several
//! variants (matmul's schemes) keys each problem by its op family and shape; the first time a
//! key is met while `Gpu::tuning` is on, it times every variant that passed the family's
//! registry check on this device, on scratch buffers of the problem's shape, and keeps the
//! fastest (`fastest`). `Gpu::choice` remembers the choice for the device's lifetime; the CLI
//! keeps it across runs in a cache file per adapter and driver (cli/tune.rs).

use super::OpSpec;
use crate::gpu::{Dispatch, Gpu, GpuError};

/// A variant other than the family's default is chosen only when it takes less than this
/// fraction of the default's time. Timing on a shared machine moves by several per cent between
/// repetitions; without a margin, near-equal variants would flip between runs (and a resumed run
/// would sum in another order than the run it resumes), for no gain worth having.
pub const MARGIN: f64 = 0.9;

/// Timed repetitions per variant, after one warm-up run of each; the median counts.
pub const REPS: usize = 3;

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

/// Times `candidates` (variant name, a prepared dispatch of the problem) and records under
/// `key` the fastest, or `default` unless another is faster by `MARGIN`. Natively the time is
/// the wall time from submit to idle; in the browser tuning is not offered yet (the default).
pub async fn fastest(
    gpu: &Gpu,
    key: &str,
    default: &'static str,
    candidates: &[(&'static str, Dispatch)],
) -> Result<&'static str, GpuError> {
    let times = median_times(gpu, candidates).await?;
    let of = |name: &str| times.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
    let best = times.iter().copied().min_by(|x, y| x.1.total_cmp(&y.1));
    let pick = match (best, of(default)) {
        (Some((name, t)), Some(td)) if name != default && t >= MARGIN * td => default,
        (Some((name, _)), _) => name,
        (None, _) => default,
    };
    gpu.set_choice(key, pick, true);
    Ok(pick)
}

#[cfg(not(target_arch = "wasm32"))]
async fn median_times(
    gpu: &Gpu,
    candidates: &[(&'static str, Dispatch)],
) -> Result<Vec<(&'static str, f64)>, GpuError> {
    for (_, d) in candidates {
        gpu.run(&[d]);
        gpu.finish().await?;
    }
    let mut t = vec![Vec::with_capacity(REPS); candidates.len()];
    // Interleaved, so that a burst of load elsewhere hits every variant alike.
    for _ in 0..REPS {
        for (i, (_, d)) in candidates.iter().enumerate() {
            let start = std::time::Instant::now();
            gpu.run(&[d]);
            gpu.finish().await?;
            t[i].push(start.elapsed().as_secs_f64());
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

#[cfg(target_arch = "wasm32")]
async fn median_times(
    _gpu: &Gpu,
    _candidates: &[(&'static str, Dispatch)],
) -> Result<Vec<(&'static str, f64)>, GpuError> {
    Ok(Vec::new())
}
