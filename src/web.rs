//! The browser entry point: acquires WebGPU without blocking the page, then runs the op
//! self-test (every registry kernel against the CPU reference, compiled to wasm) and shows the
//! results. Later issues grow this into the training demo; the page logic stays here and in
//! `web/`, the math stays in the shared core.

use wasm_bindgen::prelude::*;

use crate::gpu::{Gpu, GpuOptions};

/// Starts the page's work on the event loop and returns at once.
pub fn start() {
    wasm_bindgen_futures::spawn_local(async {
        if let Err(e) = run().await {
            show("status", &format!("error: {e}"));
            set_status("error");
            crate::gpu::log(&format!("cdl: error: {e}"));
        }
    });
}

/// Runs the self-test and returns `[passed, total]`; for scripts driving the page.
#[wasm_bindgen]
pub async fn self_test() -> Result<Vec<u32>, JsValue> {
    let gpu = Gpu::new(&GpuOptions::default()).await.map_err(|e| JsValue::from_str(&e.to_string()))?;
    let results = crate::ops::check_all(&gpu).await.map_err(|e| JsValue::from_str(&e.to_string()))?;
    let ok = results.iter().filter(|r| r.ok()).count();
    Ok(vec![ok as u32, results.len() as u32])
}

async fn run() -> Result<(), String> {
    show("status", "acquiring WebGPU…");
    let gpu = Gpu::new(&GpuOptions::default()).await.map_err(|e| e.to_string())?;
    show("adapter", &gpu.describe());
    show("status", "running the op self-test…");
    let results = crate::ops::check_all(&gpu).await.map_err(|e| e.to_string())?;
    let lines: Vec<String> = results.iter().map(ToString::to_string).collect();
    show("results", &lines.join("\n"));
    let ok = results.iter().filter(|r| r.ok()).count();
    let summary = format!("self-test: {ok} of {} checks OK", results.len());
    crate::gpu::log(&format!("cdl: {summary}"));
    show("status", &summary);
    set_status(if ok == results.len() { "ok" } else { "fail" });
    Ok(())
}

fn element(id: &str) -> Option<web_sys::Element> {
    web_sys::window()?.document()?.get_element_by_id(id)
}

fn show(id: &str, text: &str) {
    if let Some(el) = element(id) {
        el.set_text_content(Some(text));
    }
}

/// `data-status` on <body>: "ok", "fail" or "error", for tests and screenshots.
fn set_status(status: &str) {
    if let Some(body) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.body()) {
        let _ = body.set_attribute("data-status", status);
    }
}
