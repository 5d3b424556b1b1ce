//! What every demo page's task needs, whatever it trains: the command queue the controls feed,
//! `window.cdl` for tests and scripts, WebGPU acquisition with the no-WebGPU message, device-loss
//! reports, and the steps/s meter with the adaptive chunk size.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use wasm_bindgen::prelude::*;

use super::dom;
use crate::gpu::{Gpu, GpuOptions};

/// How long a page waits for a WebGPU adapter before saying it has none, in ms (`?adapter_wait`
/// overrides it).
pub const ADAPTER_TIMEOUT_MS: i32 = 15_000;

/// What the controls and the task share: handlers only push commands and read flags.
pub struct Shared<C> {
    pub queue: VecDeque<C>,
    pub running: bool,
    /// The last published state (JSON text) for `window.cdl.state()`.
    pub state: String,
}

impl<C> Default for Shared<C> {
    fn default() -> Self {
        Self { queue: VecDeque::new(), running: false, state: String::new() }
    }
}

pub type SharedRef<C> = Rc<RefCell<Shared<C>>>;
/// A named command of `window.cdl`.
pub type Named<C> = (&'static str, fn() -> C);

pub fn push<C>(shared: &SharedRef<C>, cmd: C) {
    shared.borrow_mut().queue.push_back(cmd);
}

/// Calls `push(make())` on every click of button `id`.
pub fn on_click<C: 'static>(shared: &SharedRef<C>, id: &str, make: fn() -> C) {
    let s = shared.clone();
    dom::on(id, "click", move |_| push(&s, make()));
}

/// `window.cdl`: `state()` (the published JSON as an object) and one function per command.
pub fn install_api<C: 'static>(shared: &SharedRef<C>, cmds: &[Named<C>]) {
    let api = js_sys::Object::new();
    let s = shared.clone();
    let state =
        Closure::<dyn Fn() -> JsValue>::new(move || js_sys::JSON::parse(&s.borrow().state).unwrap_or(JsValue::NULL));
    let _ = js_sys::Reflect::set(&api, &"state".into(), state.as_ref());
    state.forget();
    for &(name, make) in cmds {
        let s = shared.clone();
        let f = Closure::<dyn Fn()>::new(move || push(&s, make()));
        let _ = js_sys::Reflect::set(&api, &name.into(), f.as_ref());
        f.forget();
    }
    if let Some(w) = dom::window() {
        let _ = js_sys::Reflect::set(&w, &"cdl".into(), &api);
    }
}

pub fn show_message(text: &str) {
    dom::set_text("message", text);
    dom::set_hidden("message", text.is_empty());
}

/// The page without WebGPU: what is missing and which browser or flag provides it.
pub fn no_webgpu(why: &str) {
    dom::set_body_data("status", "no-webgpu");
    show_message(&format!(
        "This demo trains on your GPU through WebGPU, which this browser does not offer ({why}). \
         Open it in Chrome or Edge 113+ (desktop), Safari 26+, or Chromium started with \
         --enable-unsafe-webgpu (on Linux also --enable-features=Vulkan)."
    ));
    dom::set_text("status", "WebGPU is not available");
}

/// The WebGPU device, or None after showing the no-WebGPU message. Some configurations (WebGPU
/// switched off by policy or flags) never answer the adapter request: the message then appears
/// after `ADAPTER_TIMEOUT_MS`.
pub async fn acquire_gpu() -> Option<Gpu> {
    dom::set_text("status", "acquiring WebGPU…");
    let wait = dom::param("adapter_wait").and_then(|v| v.parse::<i32>().ok()).unwrap_or(ADAPTER_TIMEOUT_MS);
    let acquired = Rc::new(Cell::new(false));
    let flag = acquired.clone();
    wasm_bindgen_futures::spawn_local(async move {
        dom::sleep(wait).await;
        if !flag.get() {
            no_webgpu(&format!("no answer to the adapter request within {:.0} s", f64::from(wait) / 1000.0));
        }
    });
    let gpu = Gpu::new(&GpuOptions::default()).await;
    acquired.set(true);
    match gpu {
        Ok(g) => {
            dom::set_text("adapter", &g.describe());
            Some(g)
        }
        Err(e) => {
            no_webgpu(&e.to_string());
            None
        }
    }
}

thread_local! {
    /// Device-lost reports (device generation, message) from wgpu's callback.
    static LOST: RefCell<Vec<(u32, String)>> = const { RefCell::new(Vec::new()) };
}

/// Reports the loss of `gpu`'s device under `generation` to `take_lost` (the callback must be
/// `Send`, so it goes through a thread-local list the task drains).
pub fn watch_device(gpu: &Gpu, generation: u32) {
    gpu.device.set_device_lost_callback(move |reason, msg| {
        LOST.with(|l| l.borrow_mut().push((generation, format!("{reason:?}: {msg}"))));
    });
}

/// The device-loss reports since the last call.
pub fn take_lost() -> Vec<(u32, String)> {
    LOST.with(|l| l.borrow_mut().drain(..).collect())
}

/// Shows the device-lost box (a message and the restart button).
pub fn show_lost(msg: &str, kept_step: Option<u64>) {
    dom::set_text(
        "lost-text",
        &format!(
            "The GPU device was lost ({msg}). Training stopped. Restart to continue from the weights kept \
             in memory{}.",
            kept_step.map_or(String::new(), |s| format!(" (step {s})"))
        ),
    );
    dom::set_hidden("device-lost", false);
    dom::set_body_data("status", "device-lost");
}

/// Hides the device-lost box after a restart.
pub fn hide_lost() {
    dom::set_hidden("device-lost", true);
    dom::set_body_data("status", "ready");
    show_message("");
}

/// Steps per second over the last few seconds, and the chunk size that keeps one chunk near a
/// target time.
#[derive(Debug)]
pub struct Meter {
    /// (time ms, steps) at the end of recent chunks.
    marks: VecDeque<(f64, u64)>,
    pub steps_per_s: f64,
    pub chunk: usize,
    max_chunk: usize,
    target_ms: f64,
}

impl Meter {
    pub fn new(chunk: usize, max_chunk: usize, target_ms: f64) -> Self {
        Self { marks: VecDeque::new(), steps_per_s: 0.0, chunk: chunk.clamp(1, max_chunk), max_chunk, target_ms }
    }

    pub fn clear(&mut self) {
        self.marks.clear();
        self.steps_per_s = 0.0;
    }

    /// Records a chunk of `n` steps that took `ms` and ended at time `now` with `steps` done;
    /// with `adapt`, the next chunk aims at the target time (at most doubling or halving).
    pub fn record(&mut self, n: usize, ms: f64, now: f64, steps: u64, adapt: bool) {
        if adapt {
            let want = (n as f64 * self.target_ms / ms.max(1.0)).clamp(n as f64 * 0.5, n as f64 * 2.0);
            self.chunk = (want.round() as usize).clamp(1, self.max_chunk);
        }
        self.marks.push_back((now, steps));
        while self.marks.len() > 2 && now - self.marks[0].0 > 3000.0 {
            self.marks.pop_front();
        }
        if let (Some(a), Some(b)) = (self.marks.front(), self.marks.back()) {
            if b.0 > a.0 {
                self.steps_per_s = (b.1 - a.1) as f64 * 1000.0 / (b.0 - a.0);
            }
        }
    }
}

/// FNV-1a over the little-endian bytes of `words`, as hex: equal samples have equal hashes.
pub fn hash_bits(words: impl Iterator<Item = u64>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for b in w.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}
