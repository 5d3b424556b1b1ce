//! What every demo page's task needs, whatever it trains: the command queue the controls feed,
//! `window.cdl` for tests and scripts, the start-up stages shown while the page gets ready,
//! WebGPU acquisition with the no-WebGPU message, device-loss reports, and the steps/s meter
//! with the adaptive chunk size.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use serde_json::json;
use wasm_bindgen::prelude::*;

use super::dom;
use crate::gpu::{Gpu, GpuOptions};
use crate::train::trainer::StepStats;

/// How long a page waits for a WebGPU adapter before saying it has none, in ms (`?adapter_wait`
/// overrides it).
pub const ADAPTER_TIMEOUT_MS: i32 = 15_000;

/// How long one start-up stage may run before the page says so, in s (`?stage_timeout`, in s,
/// overrides it). Running over is a warning: the stage goes on and the page with it.
pub const STAGE_TIMEOUT_S: f64 = 60.0;

/// How often the running stage's elapsed seconds are refreshed in the status line, in ms.
const STAGE_TICK_MS: i32 = 1000;

/// The advice for stages that a software adapter makes slow.
pub const SLOW_ADAPTER: &str = "A software WebGPU adapter (SwiftShader, which Chromium uses where it finds no usable \
     GPU) is many times slower than a GPU: wait, or open the page in a browser with hardware WebGPU.";

/// What the controls and the task share: handlers only push commands and read flags.
pub struct Shared<C> {
    pub queue: VecDeque<C>,
    pub running: bool,
    /// The last published state (JSON text) for `window.cdl.state()`.
    pub state: String,
    /// What the page shows before its GPU work (the toy page's shipped previews), reported as
    /// `preview` in every state, start-up's included (`set_preview`).
    pub preview: serde_json::Value,
}

impl<C> Default for Shared<C> {
    fn default() -> Self {
        Self { queue: VecDeque::new(), running: false, state: String::new(), preview: serde_json::Value::Null }
    }
}

/// Records `preview` for `window.cdl.state()` and puts it into the state published now (which
/// may be start-up's, or the last one of a start-up that stopped for want of WebGPU).
pub fn set_preview<C>(shared: &SharedRef<C>, preview: serde_json::Value) {
    let mut s = shared.borrow_mut();
    let mut state: serde_json::Value = serde_json::from_str(&s.state).unwrap_or_else(|_| json!({ "ready": false }));
    if let Some(o) = state.as_object_mut() {
        o.insert("preview".into(), preview.clone());
    }
    s.state = state.to_string();
    s.preview = preview;
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
/// Commands given before the page's code ran (`window.cdlEarly`, kept by the script in
/// `web/index.html`: Start, Pause and Step clicked, or called on its stand-in `window.cdl`) are
/// queued first, in order.
pub fn install_api<C: 'static>(shared: &SharedRef<C>, cmds: &[Named<C>]) {
    take_early(shared, cmds);
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

/// Queues the commands `web/index.html` kept before the page's code ran (their names in
/// `window.cdlEarly.cmds`), and tells that script to stop keeping them.
fn take_early<C>(shared: &SharedRef<C>, cmds: &[Named<C>]) {
    let Some(early) = dom::window().and_then(|w| js_sys::Reflect::get(&w, &"cdlEarly".into()).ok()) else { return };
    if !early.is_object() {
        return;
    }
    let _ = js_sys::Reflect::set(&early, &"taken".into(), &JsValue::TRUE);
    let names =
        js_sys::Reflect::get(&early, &"cmds".into()).map_or_else(|_| js_sys::Array::new(), |v| js_sys::Array::from(&v));
    for name in names.iter().filter_map(|v| v.as_string()) {
        if let Some(&(_, make)) = cmds.iter().find(|(n, _)| *n == name) {
            push(shared, make());
        }
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

/// The start-up stage that waits for the browser's adapter.
const ADAPTER: Stage = Stage {
    name: "requesting a WebGPU adapter",
    meaning: "The browser has not yet answered the page's request for a GPU.",
    advice: "Wait: a browser with WebGPU switched off never answers, and the page then says so.",
};

/// The start-up stage that waits for the device on the adapter.
const DEVICE: Stage = Stage {
    name: "creating the device",
    meaning: "The browser found a GPU adapter and is opening a device on it.",
    advice: "Wait, or reload the page; if it stays here, restart the browser.",
};

/// The WebGPU device, or None after showing the no-WebGPU message; `startup` shows the adapter
/// and device stages. Some configurations (WebGPU switched off by policy or flags) never
/// answer the adapter request: the message then appears after `ADAPTER_TIMEOUT_MS`. A device
/// request that never answers is left to the stage limit's message (an adapter was found).
pub async fn acquire_gpu<C: 'static>(startup: &Startup<C>) -> Option<Gpu> {
    startup.stage(ADAPTER);
    let wait = dom::param("adapter_wait").and_then(|v| v.parse::<i32>().ok()).unwrap_or(ADAPTER_TIMEOUT_MS);
    let acquired = Rc::new(Cell::new(false));
    let flag = acquired.clone();
    let inner = startup.inner.clone();
    wasm_bindgen_futures::spawn_local(async move {
        dom::sleep(wait).await;
        if !flag.get() {
            // The status line says there is no WebGPU now, not how long the request has waited.
            inner.st.borrow_mut().quiet = true;
            no_webgpu(&format!("no answer to the adapter request within {} s", f64::from(wait) / 1000.0));
        }
    });
    let opts = gpu_options();
    let adapter = Gpu::adapter(&opts).await;
    acquired.set(true);
    let gpu = match adapter {
        Ok(a) => {
            startup.stage(DEVICE);
            Gpu::with_adapter(a, &opts).await
        }
        Err(e) => Err(e),
    };
    match gpu {
        Ok(g) => {
            dom::set_text("adapter", &g.describe());
            if let Err(e) = crate::ops::check_variants(&g) {
                startup.inner.st.borrow_mut().quiet = true;
                dom::set_body_data("status", "error");
                dom::set_text("status", "cannot start");
                show_message(&format!("?variant: {e}"));
                return None;
            }
            startup.stage(KERNEL_CHOICES);
            super::store::load_variants(&g).await;
            Some(g)
        }
        Err(e) => {
            startup.inner.st.borrow_mut().quiet = true;
            no_webgpu(&e.to_string());
            None
        }
    }
}

/// The start-up stage that reads the kernel-variant choices saved for this adapter.
const KERNEL_CHOICES: Stage = Stage {
    name: "reading saved kernel choices",
    meaning: "The page reads which kernel variants it measured fastest on this adapter in an earlier visit.",
    advice: "Wait, or reload the page; browser storage that never answers is a browser problem.",
};

/// The device options of the page: `?variant=op:variant,…` forces kernel variants as
/// `CDL_VARIANT` does natively (a name the registry does not know stops start-up with the
/// registry's message).
pub fn gpu_options() -> GpuOptions {
    GpuOptions {
        variants: crate::gpu::parse_variants(&dom::param("variant").unwrap_or_default()),
        ..GpuOptions::default()
    }
}

/// A fresh device for a restart after device loss, with the options, the forced variants, the
/// measured choices and the tuning switch of `old`.
pub async fn renew_gpu(old: &Gpu) -> Result<Gpu, String> {
    let gpu = Gpu::new(&gpu_options()).await.map_err(|e| format!("cannot restart: {e}"))?;
    crate::ops::tune::apply_cache(&gpu, old.choices());
    gpu.set_tuning(old.tuning());
    Ok(gpu)
}

/// Whether the page measures kernel variants on shapes it has no choice for: from the moment it
/// is ready (start-up runs the defaults, so the first samples are not delayed) unless
/// `?tune=0`.
fn tuning_wanted() -> bool {
    dom::param("tune").is_none_or(|v| v != "0")
}

/// The kernel variants for `window.cdl.state()`: whether tuning is on, the variant forced per
/// family, the choices measured or read (per op family and shape), and what the saved cache did.
pub fn kernels_json(gpu: &Gpu) -> serde_json::Value {
    let cache = super::store::variant_cache();
    let shapes: Vec<(String, String)> = gpu.choices().into_iter().filter(|(k, _)| !k.starts_with("passed ")).collect();
    json!({
        "tuning": gpu.tuning(),
        "forced": gpu.variants().into_iter().map(|(op, v)| format!("{op}:{v}")).collect::<Vec<_>>(),
        "choices": shapes.len(),
        "chosen": shapes.iter().map(|(_, v)| v.as_str()).collect::<std::collections::BTreeSet<_>>(),
        "loaded": cache.loaded, "saves": cache.saves, "cacheWarning": cache.warning,
    })
}

/// One named part of a page's start-up, and what to tell the reader when it runs long.
#[derive(Clone, Copy, Debug)]
pub struct Stage {
    /// Shown in the status line while it runs ("drawing the first samples… 12 s").
    pub name: &'static str,
    /// What the page is doing meanwhile.
    pub meaning: &'static str,
    /// What the reader can do about a stage that runs long.
    pub advice: &'static str,
}

/// A page's start-up, stage by stage. While a stage runs, the status line shows its name and
/// the seconds it has taken (refreshed every `STAGE_TICK_MS`), `<body data-stage>` its name,
/// and `window.cdl.state()` (until the page publishes its own) `{ ready: false, stage,
/// stageSeconds, seconds, late, startPressed, stageLimit }`. A stage that runs longer than the
/// limit (`STAGE_TIMEOUT_S`, `?stage_timeout`) is named in `#message` with what it means and
/// what to try, and in `<body data-stage-timeout>`; the work is not cancelled, and the page goes
/// on when it finishes. Buttons that cannot act before the page is ready are `hold`en until
/// `finish`. Dropping it (a start-up that failed) stops the clock.
pub struct Startup<C: 'static> {
    inner: Rc<StartupInner<C>>,
}

struct StartupInner<C> {
    shared: SharedRef<C>,
    /// Whether a command starts training (`Some(true)`), stops it (`Some(false)`) or neither.
    starts: fn(&C) -> Option<bool>,
    /// The stage limit, in s.
    limit_s: f64,
    /// When start-up began, in ms.
    began: f64,
    st: RefCell<StartupState>,
}

#[derive(Default)]
struct StartupState {
    /// The running stage and when it began, in ms.
    stage: Option<(Stage, f64)>,
    /// Stages that ran over the limit, with the seconds they took once they finished.
    late: Vec<(Stage, Option<f64>)>,
    /// Buttons disabled until the page is ready, with the titles they had.
    held: Vec<(&'static str, Option<String>)>,
    /// The no-WebGPU message owns the status line.
    quiet: bool,
    done: bool,
}

impl<C: 'static> Startup<C> {
    /// Starts the clock; `starts` tells which queued commands start or stop training (the
    /// status line says when Start was pressed and training waits for the page). The buttons
    /// `saves` stay disabled, with a title saying why, until `finish`: there are no weights to
    /// save before then.
    pub fn new(shared: &SharedRef<C>, starts: fn(&C) -> Option<bool>, saves: &[&'static str]) -> Self {
        let limit_s = dom::param("stage_timeout")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(STAGE_TIMEOUT_S);
        let inner = Rc::new(StartupInner {
            shared: shared.clone(),
            starts,
            limit_s,
            began: dom::now_ms(),
            st: RefCell::default(),
        });
        let clock = inner.clone();
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                dom::sleep(STAGE_TICK_MS).await;
                if clock.st.borrow().done {
                    break;
                }
                clock.tick();
            }
        });
        let startup = Self { inner };
        for id in saves {
            startup.hold(id, "available once the page is ready: there are no weights to save yet");
        }
        startup
    }

    /// Ends the running stage and begins `stage`.
    pub fn stage(&self, stage: Stage) {
        let i = &self.inner;
        i.end_stage();
        {
            let mut st = i.st.borrow_mut();
            st.stage = Some((stage, dom::now_ms()));
            st.quiet = false;
        }
        dom::set_body_data("stage", stage.name);
        // A page's reset during start-up clears the message; a late stage's note stays.
        i.show_late();
        i.show();
    }

    /// Disables button `id` until `finish`, saying `why` in its title.
    fn hold(&self, id: &'static str, why: &str) {
        self.inner.st.borrow_mut().held.push((id, dom::attr(id, "title")));
        dom::set_disabled(id, true);
        dom::set_attr(id, "title", why);
    }

    /// Ends the last stage: the status line "ready", `data-stage` and `data-status` "ready",
    /// held buttons enabled again, the notes of late stages kept in `#message`. The page then
    /// publishes its state.
    pub fn finish(&self, gpu: &Gpu) {
        gpu.set_tuning(tuning_wanted());
        let i = &self.inner;
        i.end_stage();
        let held = {
            let mut st = i.st.borrow_mut();
            st.done = true;
            std::mem::take(&mut st.held)
        };
        for (id, title) in held {
            dom::set_disabled(id, false);
            match title {
                Some(t) => dom::set_attr(id, "title", &t),
                None => dom::remove_attr(id, "title"),
            }
        }
        dom::set_body_data("stage", "ready");
        i.show_late();
        dom::set_text("status", "ready");
        dom::set_body_data("status", "ready");
    }
}

impl<C> Drop for Startup<C> {
    fn drop(&mut self) {
        self.inner.st.borrow_mut().done = true;
    }
}

impl<C> StartupInner<C> {
    fn seconds_since(t: f64) -> f64 {
        (dom::now_ms() - t) / 1000.0
    }

    /// Records the running stage as late if it ran over the limit, with the time it took.
    fn end_stage(&self) {
        let mut st = self.st.borrow_mut();
        let Some((stage, t0)) = st.stage.take() else { return };
        let took = Self::seconds_since(t0);
        if let Some(entry) = st.late.iter_mut().find(|(s, t)| s.name == stage.name && t.is_none()) {
            entry.1 = Some(took);
        } else if took > self.limit_s {
            st.late.push((stage, Some(took)));
            dom::set_body_data("stage-timeout", stage.name);
        }
    }

    /// Once a second: the running stage's seconds, a note when it passes the limit, the state.
    fn tick(&self) {
        let over = {
            let mut st = self.st.borrow_mut();
            match st.stage {
                // While the no-WebGPU message is up, it stays the one message.
                Some((stage, t0)) if !st.quiet && Self::seconds_since(t0) > self.limit_s => {
                    let noted = st.late.iter().any(|(s, t)| s.name == stage.name && t.is_none());
                    if !noted {
                        st.late.push((stage, None));
                    }
                    (!noted).then_some(stage)
                }
                _ => None,
            }
        };
        if let Some(stage) = over {
            dom::set_body_data("stage-timeout", stage.name);
            self.show_late();
        }
        self.show();
    }

    /// Whether the queued commands leave training started (Start pressed during start-up).
    fn start_pressed(&self) -> bool {
        self.shared.borrow().queue.iter().filter_map(self.starts).last().unwrap_or(false)
    }

    /// The status line and the state of the running stage.
    fn show(&self) {
        let st = self.st.borrow();
        let Some((stage, t0)) = st.stage else { return };
        let secs = Self::seconds_since(t0);
        let start = self.start_pressed();
        if !st.quiet {
            let mut text = format!("{}… {secs:.0} s", stage.name);
            if start {
                text += " · Start pressed: training begins when the page is ready";
            }
            dom::set_text("status", &text);
        }
        let late: Vec<&str> = st.late.iter().map(|(s, _)| s.name).collect();
        let state = json!({
            "ready": false, "stage": stage.name, "stageSeconds": secs, "seconds": Self::seconds_since(self.began),
            "late": late, "startPressed": start, "stageLimit": self.limit_s,
            "preview": self.shared.borrow().preview,
        });
        self.shared.borrow_mut().state = state.to_string();
    }

    /// `#message`: every late stage, what it means and what to try.
    fn show_late(&self) {
        let st = self.st.borrow();
        if st.late.is_empty() {
            return;
        }
        let limit = self.limit_s;
        let notes: Vec<String> = st
            .late
            .iter()
            .map(|(s, took)| match took {
                None => format!(
                    "Start-up is slow: \"{}\" has run for over {limit} s. {} {} The page keeps waiting and goes on \
                     when it finishes.",
                    s.name, s.meaning, s.advice
                ),
                Some(t) => format!(
                    "Start-up was slow: \"{}\" took {} s (more than {limit} s), then finished. {} {}",
                    s.name,
                    if *t < 1.0 { format!("{t:.3}") } else { format!("{t:.1}") },
                    s.meaning,
                    s.advice
                ),
            })
            .collect();
        show_message(&notes.join(" "));
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
    /// with `adapt`, the next chunk aims at the target time (at most doubling or halving). The
    /// first chunk after `clear` gives a rate of its own.
    pub fn record(&mut self, n: usize, ms: f64, now: f64, steps: u64, adapt: bool) {
        if self.marks.is_empty() {
            self.marks.push_back((now - ms, steps.saturating_sub(n as u64)));
        }
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

/// What every page's training task keeps besides its models and data.
pub struct Control<C> {
    pub shared: SharedRef<C>,
    /// Bumped with every new device, so a stale device-lost callback is ignored.
    pub generation: u32,
    /// Set from a device loss until the restart.
    pub lost: Option<String>,
    /// Steps the Step button still asks for.
    pub pending_steps: usize,
    pub meter: Meter,
    /// The last error shown.
    pub message: String,
    /// When samples were last drawn and weights last read back (for a restart), in ms.
    pub sampled_at: f64,
    pub kept_at: f64,
    /// How often samples are redrawn and weights kept while training, in ms.
    pub sample_every_ms: f64,
    pub keep_every_ms: f64,
    /// How long the last redraw of samples while training took, in ms: the next waits at least
    /// twice as long, so a slow sampler (a software adapter) leaves training half the time.
    pub sample_ms: f64,
}

impl<C> Control<C> {
    pub fn new(shared: SharedRef<C>, meter: Meter, sample_every_ms: f64, keep_every_ms: f64) -> Self {
        Self {
            shared,
            generation: 0,
            lost: None,
            pending_steps: 0,
            meter,
            message: String::new(),
            sampled_at: 0.0,
            kept_at: 0.0,
            sample_every_ms,
            keep_every_ms,
            sample_ms: 0.0,
        }
    }

    /// Starts training (Start); the rate is measured afresh unless it was already running.
    pub fn start(&mut self) {
        if !self.running() {
            self.meter.clear();
        }
        self.shared.borrow_mut().running = true;
    }

    pub fn running(&self) -> bool {
        self.shared.borrow().running
    }

    /// Stops training (Pause, errors, resets).
    pub fn stop(&mut self) {
        self.shared.borrow_mut().running = false;
        self.pending_steps = 0;
    }

    pub fn fail(&mut self, e: String) {
        show_message(&e);
        self.message = e;
    }

    /// Steps for the next chunk: the meter's (or a fixed `chunk`), at most what Step asked for.
    pub fn next_chunk(&self, chunk: usize) -> usize {
        let n = if chunk > 0 { chunk } else { self.meter.chunk };
        if self.pending_steps > 0 && !self.running() {
            n.min(self.pending_steps)
        } else {
            n
        }
    }

    /// Records a chunk of `n` steps that ran from `t0` to now, `steps` done in all.
    pub fn chunk_done(&mut self, n: usize, t0: f64, steps: u64, adapt: bool) {
        let t1 = dom::now_ms();
        self.pending_steps = self.pending_steps.saturating_sub(n);
        self.meter.record(n, t1 - t0, t1, steps, adapt);
    }

    /// A device-loss report: stops and shows the restart box (once per device).
    pub fn on_lost(&mut self, generation: u32, msg: String, kept_step: Option<u64>) {
        if generation == self.generation && self.lost.is_none() {
            self.stop();
            show_lost(&msg, kept_step);
            self.lost = Some(msg);
        }
    }

    /// A new device: watched under the next generation.
    pub fn new_device(&mut self, gpu: &Gpu) {
        self.generation += 1;
        watch_device(gpu, self.generation);
        self.lost = None;
    }
}

/// A page's training task, driven by `run_loop`.
pub trait Task {
    type Cmd;
    fn control(&mut self) -> &mut Control<Self::Cmd>;
    fn gpu(&self) -> &Gpu;
    /// The command that reports a device loss.
    fn lost_cmd(generation: u32, msg: String) -> Self::Cmd;
    /// Whether `cmd` may run while the device is lost (the report itself, the restart).
    fn allowed_when_lost(cmd: &Self::Cmd) -> bool;
    async fn handle(&mut self, cmd: Self::Cmd) -> Result<(), String>;
    /// Whether there is anything to train.
    fn can_train(&self) -> bool {
        true
    }
    async fn train_chunk(&mut self) -> Result<(), String>;
    /// Whether the samples on display come from older weights.
    fn stale(&self) -> bool;
    async fn refresh_samples(&mut self);
    /// Reads the weights back for a restart after device loss.
    async fn back_up_weights(&mut self);
    fn redraw(&mut self);
    /// Display work between redraws (animations); true while it wants frames.
    fn tick(&mut self) -> bool {
        false
    }
    fn publish(&mut self);
}

/// The task's life: commands first, then a chunk of training when running (samples redrawn and
/// weights kept now and then), yielding to the browser between turns. Paused, it refreshes
/// stale samples and otherwise idles at 30 ms a turn.
pub async fn run_loop<T: Task>(mut task: T) {
    loop {
        let mut cmds: Vec<T::Cmd> = take_lost().into_iter().map(|(g, m)| T::lost_cmd(g, m)).collect();
        cmds.extend(task.control().shared.borrow_mut().queue.drain(..));
        let had_cmds = !cmds.is_empty();
        for cmd in cmds {
            let r = if task.control().lost.is_some() && !T::allowed_when_lost(&cmd) {
                Err("the GPU device was lost: press \"Restart from last weights\" first".into())
            } else {
                task.handle(cmd).await
            };
            if let Err(e) = r {
                task.control().fail(e);
            }
        }
        let c = task.control();
        let train = c.lost.is_none() && (c.running() || c.pending_steps > 0);
        if train && task.can_train() {
            if had_cmds {
                // What the commands changed (Start: running) shows before the chunk.
                task.redraw();
                task.publish();
            }
            if let Err(e) = task.train_chunk().await {
                task.control().stop();
                task.control().fail(e);
            }
            let now = dom::now_ms();
            let c = task.control();
            let paused = !c.running() && c.pending_steps == 0;
            let every = c.sample_every_ms.max(2.0 * c.sample_ms);
            let (sample, keep) = (paused || now - c.sampled_at > every, paused || now - c.kept_at > c.keep_every_ms);
            if sample || keep {
                // The new step and rate show while samples and weights are read, which can take
                // much longer than a chunk.
                task.redraw();
                task.publish();
            }
            if sample {
                task.refresh_samples().await;
                task.control().sample_ms = dom::now_ms() - now;
            }
            if keep {
                task.back_up_weights().await;
            }
            super::store::save_variants(task.gpu()).await;
            task.redraw();
            task.tick();
            task.publish();
            dom::sleep(0).await;
        } else {
            // Paused: show samples (and keep weights) of the final step.
            let stale = task.control().lost.is_none() && task.stale();
            if stale {
                task.refresh_samples().await;
                task.back_up_weights().await;
                super::store::save_variants(task.gpu()).await;
            }
            if had_cmds || stale {
                task.redraw();
            }
            if task.tick() || had_cmds || stale {
                task.publish();
            }
            dom::sleep(30).await;
        }
    }
}

/// A model's training record as the pages plot it.
#[derive(Debug, Default)]
pub struct LossLog {
    /// (loss, standard part, CDL part) of every step recorded.
    pub steps: Vec<[f32; 3]>,
    /// Noise-classifier accuracy over the last chunk (CDL only).
    pub accuracy: Option<f64>,
}

impl LossLog {
    pub fn record(&mut self, stats: &[StepStats]) {
        self.steps.extend(stats.iter().map(|s| [s.loss, s.std, s.cdl]));
        let acc: Vec<f64> = stats.iter().filter_map(StepStats::accuracy).collect();
        if !acc.is_empty() {
            self.accuracy = Some(acc.iter().sum::<f64>() / acc.len() as f64);
        }
    }

    /// Mean of the standard loss over the first and the last `k` recorded steps.
    pub fn first_last(&self, k: usize) -> Option<(f64, f64)> {
        if self.steps.is_empty() {
            return None;
        }
        let mean = |h: &[[f32; 3]]| h.iter().map(|r| f64::from(r[1])).sum::<f64>() / h.len().max(1) as f64;
        let k = k.min(self.steps.len());
        Some((mean(&self.steps[..k]), mean(&self.steps[self.steps.len() - k..])))
    }
}
