//! The kernel-variant cache of the CLI and `cdl tune`. Choices measured on an adapter
//! (`ops::tune`) are kept in one JSON file per adapter and driver under the user's cache
//! directory, so that the second run starts with them; a file that cannot be read is ignored
//! with one warning line and rewritten.

use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};

use cdl::gpu::Gpu;
use cdl::ops::tune;
use cdl::train::checkpoint;

/// The cache directory: `CDL_CACHE_DIR`, else `$XDG_CACHE_HOME/cdl`, else `~/.cache/cdl`;
/// None without any of them.
fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("CDL_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("cdl")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/cdl")))
}

/// The cache file of `gpu`'s adapter and driver: `variants-<ops::tune::adapter_key>.json`.
pub fn cache_path(gpu: &Gpu) -> Option<PathBuf> {
    Some(cache_dir()?.join(format!("variants-{}.json", tune::adapter_key(gpu))))
}

/// The choices of a cache file, or why it cannot be used.
fn read(path: &std::path::Path, gpu: &Gpu) -> Result<Vec<(String, String)>, String> {
    tune::read_cache(&std::fs::read_to_string(path).map_err(|e| e.to_string())?, gpu)
}

/// Loads the cached choices of `gpu`'s adapter into it. A missing file is no news; an
/// unreadable one is ignored with one warning line (and replaced at the next `save`).
pub fn load(gpu: &Gpu) {
    let Some(path) = cache_path(gpu) else { return };
    if !path.exists() {
        return;
    }
    match read(&path, gpu) {
        Ok(choices) => tune::apply_cache(gpu, choices),
        Err(e) => eprintln!("warning: ignoring the kernel-variant cache {}: {e}", path.display()),
    }
}

/// Writes `gpu`'s choices when some were measured since the last save, merged over what the
/// file holds now (another process may have added shapes), atomically. A failure is one
/// warning line: the cache only saves time.
pub fn save(gpu: &Gpu) {
    if !gpu.take_new_choices() {
        return;
    }
    let Some(path) = cache_path(gpu) else { return };
    let text = tune::cache_text(gpu, read(&path, gpu).unwrap_or_default());
    let written = std::fs::create_dir_all(path.parent().unwrap_or(std::path::Path::new(".")))
        .map_err(|e| e.to_string())
        .and_then(|()| {
            checkpoint::write_atomic(&path, |f| std::io::Write::write_all(f, text.as_bytes()))
                .map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        eprintln!("warning: cannot write the kernel-variant cache: {e}");
    }
}

#[derive(Args, Clone, Debug)]
pub struct TuneArgs {
    /// The network whose kernels to tune: mlp or a UNet preset.
    #[arg(long, default_value = "unet-compact", value_parser = ["mlp", "unet-tiny", "unet-compact", "unet-small"])]
    pub model: String,
    /// Batch sizes B to tune for (each is its own set of shapes), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batches: Vec<u64>,
}

/// `cdl tune`: builds the training step of `--model` (the standard loss and the standard loss
/// plus CDL) at each batch size with tuning on, which measures every kernel shape the step
/// uses that the cache lacks, then saves the cache and prints the choices as JSON.
pub async fn tune(gpu: &Gpu, a: &TuneArgs) -> Result<Value, String> {
    gpu.set_tuning(true);
    let before = gpu.choices().len();
    let start = std::time::Instant::now();
    for &batch in &a.batches {
        for kind in [cdl::train::recipe::LossKind::Itd, cdl::train::recipe::LossKind::Cdl] {
            super::bench::synthetic_run(gpu, &a.model, kind, batch as usize, 2, 32, 1).await?;
        }
    }
    let measured = gpu.choices().len() - before;
    save(gpu);
    Ok(json!({
        "adapter": gpu.describe(),
        "cache": cache_path(gpu).map(|p| p.display().to_string()),
        "model": a.model, "batches": a.batches,
        "measured": measured, "seconds": start.elapsed().as_secs_f64(),
        "variants": super::bench::variants_json(gpu),
        "choices": gpu.choices().into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<String, Value>>(),
    }))
}
