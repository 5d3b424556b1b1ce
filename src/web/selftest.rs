//! The op self-test page (`index.html?selftest`): acquires WebGPU without blocking the page, runs
//! every registry kernel against the CPU reference (compiled to wasm) and shows the results.

use wasm_bindgen::prelude::*;

use super::dom;
use crate::gpu::{Gpu, GpuOptions};

/// Runs the self-test and returns `[passed, total]`; for scripts driving the page.
#[wasm_bindgen]
pub async fn self_test() -> Result<Vec<u32>, JsValue> {
    let gpu = Gpu::new(&GpuOptions::default()).await.map_err(|e| JsValue::from_str(&e.to_string()))?;
    let results = crate::ops::check_all(&gpu).await.map_err(|e| JsValue::from_str(&e.to_string()))?;
    let ok = results.iter().filter(|r| r.ok()).count();
    Ok(vec![ok as u32, results.len() as u32])
}

pub async fn run() -> Result<(), String> {
    dom::set_text("status", "acquiring WebGPU…");
    let gpu = Gpu::new(&GpuOptions::default()).await.map_err(|e| e.to_string())?;
    dom::set_text("adapter", &gpu.describe());
    dom::set_text("status", "running the op self-test…");
    let results = crate::ops::check_all(&gpu).await.map_err(|e| e.to_string())?;
    let lines: Vec<String> = results.iter().map(ToString::to_string).collect();
    dom::set_text("results", &lines.join("\n"));
    let ok = results.iter().filter(|r| r.ok()).count();
    let summary = format!("self-test: {ok} of {} checks OK", results.len());
    crate::gpu::log(&format!("cdl: {summary}"));
    dom::set_text("status", &summary);
    dom::set_body_data("status", if ok == results.len() { "ok" } else { "fail" });
    Ok(())
}
