//! The toy demo: the page's controls feed a command queue; one task on the event loop owns the
//! GPU, the data and the models, trains in small chunks (yielding to the browser between them),
//! draws, samples, saves and loads. Two models side by side, or one in the embed layout.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{json, Value};
use wasm_bindgen::JsCast;

use super::preview::{Curve, Fetched, Previews, Shipped};
use super::runtime::{self, push, show_message, Control, Meter, Task};
use super::toy::{default_config, loss_label, ToyModel, TOY_POINTS};
use super::{dom, draw, store};
use crate::diffusion::sampler::{self, PicardPass, SamplerConfig};
use crate::eval::denoiser::GpuDenoiser;
use crate::eval::density::{self, MapKind};
use crate::eval::mmd::{mmd, MMD_BANDWIDTH};
use crate::eval::plot::Colormap;
use crate::gpu::Gpu;
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::data::{parse_csv_limited, Points, Standardization, Toy};
use crate::train::recipe::LossKind;
use crate::train::run::{RunConfig, Trained, TrainingData};

/// Data points drawn in a scatter plot.
const DRAW_DATA: usize = 1500;
/// Fewest drawn points the page trains on.
const MIN_DRAWN: usize = 20;
/// Wall time one training chunk aims at (all models), in ms; the UI thread is busy only for
/// the encoding part of it.
const CHUNK_TARGET_MS: f64 = 60.0;
/// Samples are redrawn this often while training, in ms.
const SAMPLE_EVERY_MS: f64 = 2500.0;
/// The in-memory weights for a device-loss restart are refreshed this often, in ms.
const KEEP_EVERY_MS: f64 = 3000.0;
/// Points, frames and play time of the sampling animation (ms; the last frame is held).
const ANIM_POINTS: usize = 1000;
const ANIM_FRAMES: usize = 80;
const ANIM_MS: f64 = 4000.0;
const ANIM_HOLD_MS: f64 = 1000.0;
/// While training, a model's map is recomputed at most this often, in ms, and never sooner than
/// `HEAT_EVERY_TIMES` its last map took: a 128² map takes seconds on a software adapter, and the
/// samples (and training) should not wait for it at every redraw. Paused, it follows the weights.
const HEAT_EVERY_MS: f64 = 15_000.0;
const HEAT_EVERY_TIMES: f64 = 3.0;
/// α points of a map computed while training (`density::POINTS` otherwise): a 128² map costs
/// cells × points network rows, and at 64 points one took 106 s on SwiftShader.
const HEAT_POINTS_TRAINING: usize = 8;
/// Browser storage key of saved weights (one entry per model slot).
const STORAGE_KEY: &str = "cdl.weights";

/// Start-up stages after the device (`runtime::Startup`).
const MODELS: runtime::Stage = runtime::Stage {
    name: "building the models",
    meaning: "The networks' buffers are allocated and their GPU kernels compiled, each on its first use.",
    advice: runtime::SLOW_ADAPTER,
};
const WEIGHTS: runtime::Stage = runtime::Stage {
    name: "loading shipped weights",
    meaning: "The trained weights shipped with the page (fetched from assets/ at page start, their preview \
              drawn then) are put on the GPU.",
    advice: "Wait, check that the site serves assets/*.safetensors, or add pretrained=0 to the URL to start \
             from fresh weights.",
};
const SAMPLES: runtime::Stage = runtime::Stage {
    name: "drawing the first samples",
    meaning: "The sampler runs the networks once per sampler step (compiling its kernels first), and the \
              log p(x) map needs many more runs; fewer samples (samples=), sampler steps (sampler_steps=) or \
              heat=none in the URL make it quicker.",
    advice: runtime::SLOW_ADAPTER,
};
/// The save buttons, disabled until the page is ready (`runtime::Startup`).
const SAVES: &[&str] = &["save-file-a", "save-file-b", "save-storage"];

/// What the controls ask of the training task.
enum ToyCommand {
    Start,
    Pause,
    Step,
    /// Rebuild the models from the controls (fresh weights) on the current data.
    Reset,
    /// Switch to a built-in data set (and reset).
    Toy(Toy),
    /// Switch to drawn or uploaded points, raw units (standardized here), and reset.
    Points(String, Points),
    SaveFile(usize),
    LoadFile(usize, String, Vec<u8>),
    SaveStorage,
    LoadStorage,
    /// The device was lost (generation, message).
    Lost(u32, String),
    Restart,
    /// Destroys the device (tests of the device-loss path).
    LoseDevice,
    Resample,
    /// Samples once more, recording every step, and plays the trajectories.
    Animate,
    /// Runs the parallel (Picard) sampler for every model and shows its passes.
    Parallel,
}

type ToyShared = runtime::SharedRef<ToyCommand>;

impl ToyCommand {
    /// Whether the command starts training (`Some(true)`), stops it (`Some(false)`) or neither
    /// (Reset stops it too).
    fn starts(&self) -> Option<bool> {
        match self {
            Self::Start => Some(true),
            Self::Pause | Self::Reset | Self::Toy(_) | Self::Points(..) => Some(false),
            _ => None,
        }
    }
}

/// The commands of `window.cdl`.
const API: &[runtime::Named<ToyCommand>] = &[
    ("start", || ToyCommand::Start),
    ("pause", || ToyCommand::Pause),
    ("step", || ToyCommand::Step),
    ("reset", || ToyCommand::Reset),
    ("saveStorage", || ToyCommand::SaveStorage),
    ("loadStorage", || ToyCommand::LoadStorage),
    ("loseDevice", || ToyCommand::LoseDevice),
    ("animate", || ToyCommand::Animate),
    ("parallel", || ToyCommand::Parallel),
];

/// Points drawn with the mouse, in view units, and whether the button is down.
#[derive(Default)]
struct Drawing {
    points: Vec<f64>,
    mouse_down: bool,
}

type DrawingRef = Rc<RefCell<Drawing>>;

/// Page options from the URL (`?dataset=moons&loss=cdl&autoplay&embed&width=16...`).
#[derive(Clone, Debug)]
pub struct ToyPageOptions {
    pub embed: bool,
    pub dataset: String,
    pub losses: Vec<LossKind>,
    /// The run settings of every model but the loss.
    pub base: RunConfig,
    /// Sinusoidal features of the MLP's noise input (`cdl train`'s 128 by default).
    pub emb_dim: usize,
    pub autoplay: bool,
    pub pretrained: bool,
    pub samples: usize,
    pub sampler: String,
    pub sampler_steps: usize,
    /// Fixed chunk size (0: adaptive).
    pub chunk: usize,
    /// Steps the Step button runs.
    pub step_size: usize,
    /// Samples are redrawn this often while training, in ms.
    pub sample_every_ms: f64,
    /// Log the time of each chunk and sampling run to the console.
    pub debug: bool,
    /// The map under the samples: "none", "logp" or "logit".
    pub heat: String,
    /// Parallel sampler window (0: the whole trajectory) and tolerance τ (`cdl sample`'s defaults).
    pub window: usize,
    pub tol: f64,
}

impl ToyPageOptions {
    pub fn from_url(embed: bool) -> Self {
        let num = |k: &str, d: usize| dom::param(k).and_then(|v| v.parse::<usize>().ok()).unwrap_or(d);
        let loss = |k: &str, d: Option<LossKind>| match dom::param(k) {
            Some(v) if v == "none" || v.is_empty() => None,
            Some(v) => v.parse().ok().or(d),
            None => d,
        };
        let mut base = default_config();
        base.width = num("width", base.width as usize).clamp(4, 1024) as u64;
        base.blocks = num("blocks", base.blocks as usize).min(8) as u64;
        base.precond = dom::precond_param().or(base.precond);
        base.batch = num("batch", base.batch as usize).clamp(4, 4096) as u64;
        base.seed = num("seed", 0) as u64;
        base.anchors = num("K", base.anchors as usize).clamp(1, base.batch as usize) as u64;
        base.points = num("M", base.points as usize).clamp(1, 1024) as u64;
        base.lambda_cdl = dom::param("lambda").and_then(|v| v.parse().ok()).unwrap_or(base.lambda_cdl);
        let a = loss("loss", Some(if embed { LossKind::Cdl } else { LossKind::Ddpm }));
        let b = loss("loss_b", if embed { None } else { Some(LossKind::Cdl) });
        Self {
            embed,
            dataset: dom::param("dataset").unwrap_or_else(|| "moons".into()),
            losses: [a, b].into_iter().flatten().collect(),
            base,
            emb_dim: (num("emb", 128).clamp(2, 512) / 2) * 2,
            autoplay: dom::flag("autoplay"),
            pretrained: dom::param("pretrained").is_none_or(|v| v != "0"),
            samples: num("samples", if embed { 300 } else { 1000 }).clamp(16, 20_000),
            // DDPM-1000: the shortened DDIM / DDPM schedules still scatter outliers with these
            // small models (the same with `cdl sample`).
            sampler: dom::param("sampler").unwrap_or_else(|| "ddpm".into()),
            sampler_steps: num("sampler_steps", 1000).clamp(2, 1000),
            chunk: num("chunk", 0).min(super::toy::CHUNK_MAX),
            step_size: num("step_size", 10).clamp(1, super::toy::CHUNK_MAX),
            sample_every_ms: num("sample_every", SAMPLE_EVERY_MS as usize) as f64,
            debug: dom::flag("debug"),
            heat: dom::param("heat").unwrap_or_else(|| if embed { "none".into() } else { "logp".into() }),
            window: num("window", 0).min(1000),
            tol: dom::param("tol")
                .and_then(|v| v.parse().ok())
                .filter(|t: &f64| t.is_finite() && *t >= 0.0)
                .unwrap_or(0.1),
        }
    }
}

/// The data being trained on.
struct ToyDataSet {
    name: String,
    /// Standardized. (n, 2)
    points: Points,
    /// The same points as every model's run trains on them.
    training: Rc<TrainingData>,
}

impl ToyDataSet {
    fn new(name: String, points: Points, st: Standardization) -> Self {
        let training = Rc::new(TrainingData::points(name.clone(), points.clone(), st));
        Self { name, points, training }
    }

    fn toy(t: Toy, seed: u64) -> Self {
        Self::new(t.name().into(), t.generate(TOY_POINTS, seed), Standardization::identity(2))
    }

    fn custom(name: String, mut points: Points) -> Result<Self, String> {
        if points.dim != 2 {
            return Err(format!("{name}: points must have 2 coordinates"));
        }
        let st = points.standardize().map_err(|e| format!("{name}: {e}"))?;
        Ok(Self::new(name, points, st))
    }
}

/// The training task's state.
struct ToyPage {
    ctl: Control<ToyCommand>,
    /// The shipped files, fetched once for the preview and the weights.
    previews: Rc<Previews>,
    opts: ToyPageOptions,
    gpu: Gpu,
    data: ToyDataSet,
    models: Vec<ToyModel>,
    /// The last weights read back (for a restart after device loss).
    kept: Vec<Option<Checkpoint>>,
    anim: Option<Animation>,
    /// Animations played to the end.
    anim_played: u64,
    /// What the last animation showed (for tests): frames, steps, the variance of model 0's
    /// first frame and the hash of its last.
    anim_info: Value,
    /// The last run of the parallel sampler, shown until the models' samples are drawn again.
    parallel: Option<ParallelView>,
}

/// A run of the parallel (Picard) sampler over every model, same noise and settings.
struct ParallelView {
    steps: usize,
    window: usize,
    tol: f64,
    /// Per model: its passes, its samples (n, 2), the step of the weights they come from and
    /// the model's `samples_version` then (its pane shows them until its samples change).
    runs: Vec<(Vec<PicardPass>, Vec<f64>, u64, u64)>,
}

/// Sample trajectories being played: per model, frames of (n, 2) points from x_T to the samples.
struct Animation {
    frames: Vec<Vec<Vec<f64>>>,
    /// The sampler step of each frame: 0 (x_T) first, the number of steps last.
    step_of: Vec<usize>,
    start: f64,
    /// Frames drawn so far.
    shown: usize,
}

// ---------------------------------------------------------------------------------------------
// Start-up and controls

/// Builds the demo on the page: wires the controls, fetches the shipped files of the data set
/// and draws their preview (`show_preview`) while it acquires WebGPU, loads the shipped weights
/// from the same bytes and starts the training task. The full page shows two models side by
/// side (DDPM and ITD+CDL by default) trained on the same data; the embed layout (`?embed`)
/// shows one. For tests and scripts: `window.cdl.state()` (a plain object; see `publish`; before
/// the page is ready, the start-up stage: `runtime::Startup`; in both, `preview`: what the
/// preview drew) and
/// `window.cdl.{start,pause,step,reset,saveStorage,loadStorage,loseDevice,animate,parallel}()`. Commands given
/// during start-up run once the page is ready.
pub async fn run(embed: bool) -> Result<(), String> {
    let opts = ToyPageOptions::from_url(embed);
    let shared: ToyShared = Rc::default();
    let previews = Rc::new(Previews::default());
    runtime::install_api(&shared, API);
    init_controls(&opts);
    wire_controls(&shared, &opts, &previews);
    // Controls pressed from now on are queued and run once the page is ready, in order.
    let startup = runtime::Startup::new(&shared, ToyCommand::starts, SAVES);
    let data = match Toy::from_name(&opts.dataset) {
        Some(t) => ToyDataSet::toy(t, opts.base.seed),
        None => {
            show_message(&format!("unknown dataset {:?}; using moons", opts.dataset));
            ToyDataSet::toy(Toy::Moons, opts.base.seed)
        }
    };
    // The shipped models' preview, drawn while the browser answers for its GPU (or never does).
    if opts.pretrained {
        let (s, p, name, points) = (shared.clone(), previews.clone(), data.name.clone(), data.points.data.clone());
        wasm_bindgen_futures::spawn_local(async move { show_preview(&s, &p, &name, &points).await });
    }
    let Some(gpu) = runtime::acquire_gpu(&startup).await else { return Ok(()) };
    startup.stage(MODELS);
    let meter = Meter::new(opts.chunk.max(4), super::toy::CHUNK_MAX, CHUNK_TARGET_MS);
    let mut engine = ToyPage {
        ctl: Control::new(shared.clone(), meter, opts.sample_every_ms, KEEP_EVERY_MS),
        previews,
        opts: opts.clone(),
        gpu,
        data,
        models: Vec::new(),
        kept: Vec::new(),
        anim: None,
        anim_played: 0,
        anim_info: Value::Null,
        parallel: None,
    };
    runtime::watch_device(&engine.gpu, engine.ctl.generation);
    engine.reset().await?;
    if opts.pretrained {
        startup.stage(WEIGHTS);
        engine.load_pretrained().await;
        // The shipped samples and maps stay on screen until fresh ones are drawn.
        engine.redraw();
    }
    startup.stage(SAMPLES);
    engine.refresh_samples().await;
    engine.redraw();
    startup.finish(&engine.gpu);
    engine.publish();
    if opts.autoplay {
        shared.borrow_mut().running = true;
    }
    wasm_bindgen_futures::spawn_local(runtime::run_loop(engine));
    Ok(())
}

/// Sets the controls to the URL's options.
fn init_controls(opts: &ToyPageOptions) {
    if opts.embed {
        dom::add_body_class("embed");
    }
    let sel = if Toy::from_name(&opts.dataset).is_some() { opts.dataset.as_str() } else { "moons" };
    dom::set_value("dataset", sel);
    let name = |k: Option<&LossKind>| k.map_or("none", |k| k.name());
    dom::set_value("loss-a", name(opts.losses.first()));
    dom::set_value("loss-b", name(opts.losses.get(1)));
    dom::set_value("lambda", &opts.base.lambda_cdl.to_string());
    dom::set_value("anchors", &opts.base.anchors.to_string());
    dom::set_value("points", &opts.base.points.to_string());
    dom::set_value("sampler", &opts.sampler);
    dom::set_value("sampler-steps", &opts.sampler_steps.to_string());
    if opts.window > 0 {
        dom::set_value("sampler-window", &opts.window.to_string());
    }
    dom::set_value("sampler-tol", &opts.tol.to_string());
    dom::set_value("heat", &opts.heat);
    dom::set_text("step", &format!("Step ×{}", opts.step_size));
}

fn wire_controls(shared: &ToyShared, opts: &ToyPageOptions, previews: &Rc<Previews>) {
    let click = |id: &str, make: fn() -> ToyCommand| runtime::on_click(shared, id, make);
    click("reset", || ToyCommand::Reset);
    click("step", || ToyCommand::Step);
    click("start", || ToyCommand::Start);
    click("pause", || ToyCommand::Pause);
    click("save-storage", || ToyCommand::SaveStorage);
    click("load-storage", || ToyCommand::LoadStorage);
    click("restart", || ToyCommand::Restart);
    click("resample", || ToyCommand::Resample);
    click("animate", || ToyCommand::Animate);
    click("parallel", || ToyCommand::Parallel);
    for (i, suffix) in ["a", "b"].into_iter().enumerate() {
        let s = shared.clone();
        dom::on(&format!("save-file-{suffix}"), "click", move |_| push(&s, ToyCommand::SaveFile(i)));
        let s = shared.clone();
        let input = format!("load-file-{suffix}");
        let id = input.clone();
        dom::on(&input, "change", move |_| {
            let Some(file) = store::chosen_file(&id) else { return };
            store::clear_file(&id);
            let s = s.clone();
            wasm_bindgen_futures::spawn_local(async move {
                match store::read_file(&file, store::MAX_WEIGHTS_BYTES, "a weights file").await {
                    Ok(bytes) => push(&s, ToyCommand::LoadFile(i, file.name(), bytes)),
                    Err(e) => set_weights_message(&e, true),
                }
            });
        });
    }
    for id in ["loss-a", "loss-b", "lambda", "anchors", "points"] {
        let s = shared.clone();
        dom::on(id, "change", move |_| push(&s, ToyCommand::Reset));
    }
    for id in ["sampler", "sampler-steps", "sampler-window", "sampler-tol", "heat", "zeta"] {
        let s = shared.clone();
        dom::on(id, "change", move |_| push(&s, ToyCommand::Resample));
    }
    let drawing = DrawingRef::default();
    let (s, d, p) = (shared.clone(), drawing.clone(), previews.clone());
    let (pretrained, seed) = (opts.pretrained, opts.base.seed);
    dom::on("dataset", "change", move |_| {
        let v = dom::value("dataset").unwrap_or_default();
        dom::set_hidden("draw-panel", v != "draw");
        dom::set_hidden("csv-panel", v != "csv");
        dom::set_text("data-error", "");
        if let Some(t) = Toy::from_name(&v) {
            // The set's shipped preview at once, whether or not the GPU task is free (or up).
            if pretrained {
                let (s, p) = (s.clone(), p.clone());
                wasm_bindgen_futures::spawn_local(async move {
                    let points = t.generate(TOY_POINTS, seed);
                    show_preview(&s, &p, t.name(), &points.data).await;
                });
            }
            push(&s, ToyCommand::Toy(t));
        } else if v == "draw" {
            redraw_drawing(&d.borrow().points);
        }
    });
    let s = shared.clone();
    dom::on("csv-file", "change", move |_| {
        let Some(file) = store::chosen_file("csv-file") else { return };
        store::clear_file("csv-file");
        let s = s.clone();
        wasm_bindgen_futures::spawn_local(async move {
            match read_csv(&file).await {
                Ok(points) => {
                    dom::set_text("data-error", "");
                    push(&s, ToyCommand::Points(file.name(), points));
                }
                Err(e) => set_data_error(&e),
            }
        });
    });
    wire_drawing(shared, &drawing);
}

/// The losses of the panes chosen in the controls (what `ToyPage::settings` builds).
fn pane_losses() -> Vec<LossKind> {
    let out: Vec<LossKind> = ["loss-a", "loss-b"].iter().filter_map(|id| dom::value(id)?.parse().ok()).collect();
    if out.is_empty() {
        vec![LossKind::Cdl]
    } else {
        out
    }
}

/// The map chosen under the samples ("none", "logp" or "logit") and the shift ζ of the logit.
fn heat_choice(default: &str) -> (String, f64) {
    let what = dom::value("heat").unwrap_or_else(|| default.into());
    (what, dom::value("zeta").and_then(|v| v.parse::<f64>().ok()).unwrap_or(1.0))
}

/// The colour bar's label of a map (its tag: "logp" or "logit<ζ>") of `points` α points.
fn heat_label(tag: &str, points: usize) -> String {
    let what = match tag.strip_prefix("logit") {
        Some(z) => format!("CDL logit f(x), ζ = {z}"),
        None => "log p(x), nats".into(),
    };
    if points < density::POINTS {
        format!("{what} (while training: {points} α points)")
    } else {
        what
    }
}

/// One model's pane (`suffix` a or b): samples over the data and the map `heat` (values, cells
/// per side, tag, α points) with its colour bar, and the losses trained here (from `first_step` + 1) after
/// the loaded weights' own training `curve`. Returns the map's colour range when one was drawn.
fn draw_pane(
    suffix: &str,
    data: &[f32],
    samples: &[f64],
    heat: Option<(&[f64], usize, &str, usize)>,
    history: &[[f32; 3]],
    first_step: u64,
    curve: Option<&Curve>,
) -> Option<(f64, f64)> {
    let map = heat.map(|(values, g, tag, _)| draw::Heat {
        values,
        g,
        colormap: if tag.starts_with("logit") { Colormap::Diverging } else { Colormap::Viridis },
    });
    let colormap = map.as_ref().map(|m| m.colormap);
    let range = draw::scatter(&format!("scatter-{suffix}"), data, DRAW_DATA, samples, map);
    let bar = format!("cbar-{suffix}");
    match (range, colormap, heat) {
        (Some((lo, hi)), Some(c), Some((_, _, tag, points))) => {
            let label = heat_label(tag, points);
            draw::colour_bar(&bar, c, lo, hi, &label);
            dom::set_attr(&bar, "aria-label", &format!("Colour bar of the map: {label}, from {lo:.2} to {hi:.2}"));
            dom::set_hidden(&bar, false);
        }
        _ => dom::set_hidden(&bar, true),
    }
    let past = curve.map(|c| draw::PastCurve { step: &c.step, std: &c.std, cdl: &c.cdl });
    draw::losses(&format!("curve-{suffix}"), history, first_step, past);
    dom::set_hidden(&format!("legend-shipped-{suffix}"), curve.is_none());
    range
}

/// Draws the shipped preview of data set `set` (data `points`, standardized) in the panes of
/// the chosen losses, before (or without) any GPU work: the preview samples, the log p map when
/// that map is chosen, the shipped training curve and the samples' MMD. Reported in
/// `window.cdl.state().preview`. Not drawn once the GPU task has drawn that set itself, nor
/// after another set was chosen.
async fn show_preview(shared: &ToyShared, previews: &Previews, set: &str, points: &[f32]) {
    let losses = pane_losses();
    let mut files: Vec<Option<Fetched>> = Vec::new();
    for loss in &losses {
        files.push(previews.get(set, loss.name()).await);
    }
    if previews.live.borrow().as_deref() == Some(set) || dom::value("dataset").as_deref() != Some(set) {
        return;
    }
    let (what, _) = heat_choice("logp");
    let mut models = Vec::new();
    for (i, suffix) in ["a", "b"].into_iter().enumerate() {
        dom::set_hidden(&format!("panel-{suffix}"), i >= losses.len());
        let Some(&loss) = losses.get(i) else { continue };
        dom::set_text(&format!("title-{suffix}"), loss_label(loss));
        let shipped = files[i].as_deref().and_then(|r| r.as_ref().ok());
        let heat = shipped.and_then(|s| s.logp.as_ref()).filter(|_| what == "logp");
        let samples = shipped.and_then(|s| s.samples.as_deref()).unwrap_or(&[]);
        let range = draw_pane(
            suffix,
            points,
            samples,
            heat.map(|(v, g)| (v.as_slice(), *g, "logp", density::POINTS)),
            &[],
            0,
            shipped.and_then(|s| s.curve.as_deref()),
        );
        let text = match &files[i] {
            None => format!("no shipped weights for {set} with this loss"),
            Some(f) => match f.as_ref() {
                Err(e) => format!("shipped weights: {e}"),
                Ok(s) => preview_stats(s),
            },
        };
        dom::set_text(&format!("stats-{suffix}"), &text);
        let mut m = shipped.map_or(Value::Null, Shipped::describe);
        if let Some(o) = m.as_object_mut() {
            o.insert("loss".into(), loss.name().into());
            o.insert("mapRange".into(), json!(range));
            o.insert("mapLabel".into(), json!(range.map(|_| heat_label("logp", density::POINTS))));
        }
        models.push(m);
    }
    runtime::set_preview(shared, json!({ "set": set, "models": models }));
}

/// The stats line of a pane showing a shipped file's preview.
fn preview_stats(s: &Shipped) -> String {
    let mut text = format!("shipped weights, step {}", s.checkpoint.step);
    if let Some(d) = s.mmd {
        text += &format!("  ·  MMD {d:.4} (shipped samples)");
    }
    text
}

/// The parallel sampler's plots of one pane (`suffix` a or b): errors against τ, and windows.
fn draw_passes(suffix: &str, passes: &[PicardPass], steps: usize, tol: f64) {
    let errors: Vec<f64> = passes.iter().map(|p| p.error).collect();
    draw::picard_errors(&format!("picard-errors-{suffix}"), &errors, tol);
    let windows: Vec<_> = passes.iter().map(|p| (p.begin, p.end, p.converged)).collect();
    draw::picard_windows(&format!("picard-window-{suffix}"), &windows, steps);
}

async fn read_csv(file: &web_sys::File) -> Result<Points, String> {
    let bytes = store::read_file(file, store::MAX_CSV_BYTES, "a CSV file").await?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", file.name()))?;
    let points = parse_csv_limited(&text, &file.name(), store::MAX_CSV_POINTS).map_err(|e| e.to_string())?;
    if points.len() < MIN_DRAWN {
        return Err(format!("{}: {} points; at least {MIN_DRAWN} are needed", file.name(), points.len()));
    }
    Ok(points)
}

fn set_data_error(text: &str) {
    dom::set_error("data-error", text);
}

/// The element that reports saves and loads of weights.
const WEIGHTS_MSG: &str = "weights-msg";

fn set_weights_message(text: &str, error: bool) {
    dom::set_message(WEIGHTS_MSG, text, error);
}

/// Drawing points with the mouse on `draw-canvas`: each move while the button is down sprays a
/// few points around the cursor.
fn wire_drawing(shared: &ToyShared, drawing: &DrawingRef) {
    let spray = |d: &DrawingRef, e: &web_sys::Event| {
        let Some(m) = e.dyn_ref::<web_sys::MouseEvent>() else { return };
        let Some(canvas) = dom::get::<web_sys::HtmlCanvasElement>("draw-canvas") else { return };
        let r = canvas.get_bounding_client_rect();
        let (w, h) = (f64::from(canvas.width()), f64::from(canvas.height()));
        let px = (f64::from(m.client_x()) - r.left()) * w / r.width().max(1.0);
        let py = (f64::from(m.client_y()) - r.top()) * h / r.height().max(1.0);
        let (x, y) = draw::from_px(w, h, px, py);
        let mut d = d.borrow_mut();
        for _ in 0..3 {
            let jx = (js_sys::Math::random() - 0.5) * 0.15;
            let jy = (js_sys::Math::random() - 0.5) * 0.15;
            d.points.extend([x + jx, y + jy]);
        }
        redraw_drawing(&d.points);
    };
    let d = drawing.clone();
    dom::on("draw-canvas", "mousedown", move |e| {
        d.borrow_mut().mouse_down = true;
        spray(&d, &e);
    });
    let d = drawing.clone();
    dom::on("draw-canvas", "mousemove", move |e| {
        if d.borrow().mouse_down {
            spray(&d, &e);
        }
    });
    for ev in ["mouseup", "mouseleave"] {
        let d = drawing.clone();
        dom::on("draw-canvas", ev, move |_| d.borrow_mut().mouse_down = false);
    }
    let d = drawing.clone();
    dom::on("draw-clear", "click", move |_| {
        d.borrow_mut().points.clear();
        redraw_drawing(&[]);
    });
    let (s, d) = (shared.clone(), drawing.clone());
    dom::on("draw-use", "click", move |_| {
        let drawn = d.borrow().points.clone();
        if drawn.len() / 2 < MIN_DRAWN {
            set_data_error(&format!("draw at least {MIN_DRAWN} points first ({} so far)", drawn.len() / 2));
            return;
        }
        set_data_error("");
        let data = drawn.iter().map(|&v| v as f32).collect();
        push(&s, ToyCommand::Points("drawing".into(), Points { dim: 2, data }));
    });
}

fn redraw_drawing(drawn: &[f64]) {
    let data: Vec<f32> = drawn.iter().map(|&v| v as f32).collect();
    draw::scatter("draw-canvas", &data, usize::MAX, &[], None);
    dom::set_text("draw-count", &format!("{} points", drawn.len() / 2));
}

// ---------------------------------------------------------------------------------------------
// The training task

impl ToyPage {
    /// A fresh device and the models rebuilt from the kept weights.
    async fn restart(&mut self) -> Result<(), String> {
        self.gpu = runtime::renew_gpu(&self.gpu).await?;
        self.ctl.new_device(&self.gpu);
        let kept = std::mem::take(&mut self.kept);
        self.reset().await?;
        for (i, ck) in kept.into_iter().enumerate() {
            if let Some(ck) = ck {
                let trained = Trained::new(ck).map_err(|e| e.to_string())?;
                let base = self.models[i].run.config();
                let m = ToyModel::from_checkpoint(&self.gpu, base, &trained, self.data.training.clone()).await?;
                self.models[i] = m;
            }
        }
        self.back_up_weights().await;
        runtime::hide_lost();
        self.refresh_samples().await;
        Ok(())
    }

    /// The run settings of each model from the controls.
    fn settings(&self) -> Vec<RunConfig> {
        let mut base = self.opts.base.clone();
        let num = |id: &str| dom::value(id).and_then(|v| v.trim().parse::<f64>().ok());
        if let Some(l) = num("lambda").filter(|l| l.is_finite() && *l >= 0.0) {
            base.lambda_cdl = l;
        }
        if let Some(k) = num("anchors").filter(|k| *k >= 1.0) {
            base.anchors = (k as u64).min(base.batch);
        }
        if let Some(m) = num("points").filter(|m| *m >= 1.0) {
            base.points = (m as u64).min(1024);
        }
        let mut out = Vec::new();
        for id in ["loss-a", "loss-b"] {
            let kind = match dom::value(id) {
                Some(v) if v == "none" => None,
                Some(v) => v.parse::<LossKind>().ok(),
                None => self.opts.losses.get(out.len()).copied(),
            };
            if let Some(loss) = kind {
                out.push(RunConfig { loss, ..base.clone() });
            }
        }
        if out.is_empty() {
            out.push(RunConfig { loss: LossKind::Cdl, ..base });
        }
        out
    }

    /// Fresh models from the controls on the current data.
    async fn reset(&mut self) -> Result<(), String> {
        self.ctl.stop();
        let mut models = Vec::new();
        for s in self.settings() {
            models.push(ToyModel::new(&self.gpu, s, self.opts.emb_dim, self.data.training.clone()).await?);
        }
        self.models = models;
        self.kept = vec![None; self.models.len()];
        self.ctl.meter.clear();
        show_message("");
        Ok(())
    }

    /// Loads the shipped weights of (data set, loss) into every model that has them (the bytes
    /// fetched for the preview) and shows their preview until fresh samples and maps are drawn.
    async fn load_pretrained(&mut self) {
        for i in 0..self.models.len() {
            let loss = self.models[i].run.config().loss.name();
            let Some(f) = self.previews.get(&self.data.name, loss).await else { continue };
            let r = match f.as_ref() {
                Ok(s) => self.load_checkpoint(i, &s.url, s.checkpoint.clone()).await.map(|()| self.show_shipped(i, s)),
                Err(e) => Err(e.clone()),
            };
            match r {
                Ok(()) => dom::set_body_data(&format!("pretrained-{i}"), "loaded"),
                Err(e) => {
                    dom::set_body_data(&format!("pretrained-{i}"), "failed");
                    crate::gpu::log(&format!("cdl: shipped weights: {e}"));
                }
            }
        }
    }

    /// Model `i` (just loaded from `s`) shows `s`'s preview samples and their MMD until it has
    /// drawn its own, and, when log p is the chosen map, `s`'s map as its map for these weights:
    /// the same computation (`density::map`) of the same weights, which a software adapter takes
    /// minutes to repeat.
    fn show_shipped(&mut self, i: usize, s: &Shipped) {
        let (what, _) = heat_choice(&self.opts.heat);
        let m = &mut self.models[i];
        if let Some(x) = &s.samples {
            m.samples = x.clone();
            m.mmd = s.mmd;
            m.preview = true;
        }
        if let Some((v, g)) = s.logp.as_ref().filter(|_| what == "logp") {
            m.heat = Some((v.clone(), *g, "logp".into(), m.step()));
            m.heat_points = density::POINTS;
            m.heat_shipped = true;
        }
    }

    /// The sampler steps, and the parallel sampler's window and tolerance τ, in the controls.
    fn sampler_settings(&self) -> (usize, usize, f64) {
        let num = |id: &str| dom::value(id).and_then(|v| v.trim().parse::<f64>().ok());
        let steps = num("sampler-steps").map_or(self.opts.sampler_steps, |v| v.max(0.0) as usize).clamp(2, 1000);
        let window = num("sampler-window").filter(|w| *w >= 1.0).map_or(self.opts.window, |w| w as usize);
        let window = if window == 0 { steps } else { window.min(steps) };
        let tol = num("sampler-tol").filter(|t| t.is_finite() && *t >= 0.0).unwrap_or(self.opts.tol);
        (steps, window, tol)
    }

    /// The sampler chosen in the controls.
    fn sampler(&self) -> SamplerConfig {
        let (steps, window, tol) = self.sampler_settings();
        match dom::value("sampler").unwrap_or_else(|| self.opts.sampler.clone()).as_str() {
            "ddpm" => SamplerConfig::Ddpm { steps, variance: sampler::DdpmVariance::Beta },
            "heun" => SamplerConfig::Heun { steps, churn: 0.0 },
            "parallel" => {
                SamplerConfig::Parallel { steps, window, tol, ddim: true, variance: sampler::DdpmVariance::Posterior }
            }
            _ => SamplerConfig::Ddim { steps },
        }
    }

    /// Runs the parallel sampler of the "Parallel sampling" view for every model: `cdl sample
    /// --sampler parallel --variance posterior` (the authors' parallel sampler) with the page's
    /// steps, window and τ, the displayed samples' count and seed, on the device.
    async fn run_parallel(&mut self) -> Result<(), String> {
        let (steps, window, tol) = self.sampler_settings();
        let cfg =
            SamplerConfig::Parallel { steps, window, tol, ddim: false, variance: sampler::DdpmVariance::Posterior };
        let n = self.opts.samples;
        let mut runs = Vec::new();
        dom::set_text("parallel-caption", "running the parallel sampler…");
        for m in &self.models {
            let mut den =
                GpuDenoiser::from_trainer(&self.gpu, m.run.trainer(), n.min(4096)).await.map_err(|e| e.to_string())?;
            // Each pass drawn as its readback arrives (the browser paints while the next one runs).
            let suffix = ["a", "b"].get(runs.len()).copied().unwrap_or("b");
            dom::set_hidden(&format!("parallel-{suffix}"), false);
            let mut passes = Vec::new();
            let mut on_pass = |p: PicardPass| {
                passes.push(p);
                draw_passes(suffix, &passes, steps, tol);
                dom::set_text(&format!("picard-passes-{suffix}"), &format!("running: pass {}", passes.len()));
            };
            let (x, _) =
                den.sample_on_device_logged(&cfg, n, 1, None, &mut on_pass).await.map_err(|e| e.to_string())?;
            runs.push((passes, x, m.step(), m.samples_version));
        }
        self.parallel = Some(ParallelView { steps, window, tol, runs });
        Ok(())
    }

    /// The parallel sampler's plots, pass counts and caption (hidden before its first run).
    fn draw_parallel(&self) {
        let Some(v) = &self.parallel else { return };
        for (i, suffix) in ["a", "b"].into_iter().enumerate() {
            let Some((passes, ..)) = v.runs.get(i) else { continue };
            dom::set_hidden(&format!("parallel-{suffix}"), false);
            draw_passes(suffix, passes, v.steps, v.tol);
            dom::set_text(
                &format!("picard-passes-{suffix}"),
                &format!("{} passes for {} steps", passes.len(), v.steps),
            );
        }
        let counts: Vec<String> = self
            .models
            .iter()
            .zip(&v.runs)
            .map(|(m, r)| format!("{} {}", loss_label(m.run.config().loss), r.0.len()))
            .collect();
        dom::set_text(
            "parallel-caption",
            &format!(
                "Parallel (Picard) sampling, {} steps, window {}, τ = {}, same noise for both: passes {}. Each pass                  evaluates the whole window at once; it slides past the points whose change fell within τ. Fewer                  passes = the model's denoiser is consistent across noise levels, which the ITD+CDL loss trains for.",
                v.steps,
                v.window,
                v.tol,
                counts.join(", ")
            ),
        );
    }

    /// The heat map under the samples (math.md §2.2, §3.2): −(−log p̂(x)) from the ITD estimator,
    /// or the noise classifier's logit f̂(x) = log p̂(x) − log p̂_ζ(x) at shift ζ, on a grid.
    async fn refresh_heat(&mut self) {
        let (what, zeta) = heat_choice(&self.opts.heat);
        let tag = if what == "logit" { format!("logit{zeta}") } else { what.clone() };
        if what != "logp" && what != "logit" {
            for m in &mut self.models {
                m.heat = None;
            }
            return;
        }
        let variances = self.data.points.variances();
        let kind = if what == "logit" { MapKind::Logit(zeta) } else { MapKind::LogP };
        let g = density::GRID;
        let training = self.ctl.running() || self.ctl.pending_steps > 0;
        let points = if training { HEAT_POINTS_TRAINING } else { density::POINTS };
        for m in &mut self.models {
            let same = m.heat.as_ref().is_some_and(|h| h.2 == tag);
            if same && m.heat.as_ref().is_some_and(|h| h.3 == m.step()) && m.heat_points >= points {
                continue;
            }
            let t0 = dom::now_ms();
            let wait = HEAT_EVERY_MS.max(HEAT_EVERY_TIMES * m.heat_ms.unwrap_or(0.0));
            if training && same && t0 - m.heat_at < wait {
                continue;
            }
            m.heat_tried = Some((m.step(), points));
            let mut den = match GpuDenoiser::from_trainer(&self.gpu, m.run.trainer(), 4096).await {
                Ok(d) => d,
                Err(e) => {
                    crate::gpu::log(&format!("cdl: density map: {e}"));
                    return;
                }
            };
            match density::map(&mut den, &variances, g, points, kind).await {
                Ok(v) => {
                    m.heat = Some((v, g, tag.clone(), m.step()));
                    m.heat_points = points;
                    m.heat_shipped = false;
                    m.heat_at = dom::now_ms();
                    m.heat_ms = Some(m.heat_at - t0);
                }
                Err(e) => crate::gpu::log(&format!("cdl: density map: {e}")),
            }
            if self.opts.debug {
                crate::gpu::log(&format!("cdl: {what} map {g}x{g}, {points} α points: {:.1} ms", dom::now_ms() - t0));
            }
        }
    }

    async fn save_file(&mut self, i: usize) -> Result<(), String> {
        let m = self.models.get(i).ok_or("no such model")?;
        let ck = m.checkpoint(&self.gpu).await?;
        let bytes = checkpoint::encode(&ck).map_err(|e| e.to_string())?;
        let name = format!("cdl-{}-{}-step{}.safetensors", self.data.name, m.run.config().loss.name(), m.step());
        store::download(&name, &bytes)?;
        set_weights_message(&format!("downloaded {name} ({} KB)", bytes.len() / 1024), false);
        Ok(())
    }

    /// Replaces model `i` with the checkpoint in `bytes` (validated; its architecture and run
    /// settings are adopted).
    async fn load_bytes(&mut self, i: usize, source: &str, bytes: &[u8]) -> Result<(), String> {
        let ck = checkpoint::decode(bytes).map_err(|e| format!("{source}: not a CDL weights file: {e}"))?;
        self.load_checkpoint(i, source, ck).await
    }

    /// Replaces model `i` with the checkpoint `ck` (validated; its architecture and run settings
    /// are adopted, and the training curve it carries is drawn before its own losses).
    async fn load_checkpoint(&mut self, i: usize, source: &str, ck: Checkpoint) -> Result<(), String> {
        if self.models.is_empty() {
            return Err("no model to load into".into());
        }
        let i = i.min(self.models.len() - 1);
        ck.check_finite().map_err(|e| format!("{source}: {e}"))?;
        let curve = Curve::of(&ck.extra).map(Rc::new);
        let trained = Trained::new(ck).map_err(|e| format!("{source}: {e}"))?;
        let base = self.models[i].run.config();
        let mut m = ToyModel::from_checkpoint(&self.gpu, base, &trained, self.data.training.clone())
            .await
            .map_err(|e| format!("{source}: {e}"))?;
        m.curve = curve;
        self.models[i] = m;
        self.kept[i] = Some(trained.checkpoint);
        dom::set_value(if i == 0 { "loss-a" } else { "loss-b" }, self.models[i].run.config().loss.name());
        Ok(())
    }

    async fn save_storage(&mut self) -> Result<String, String> {
        let mut total = 0;
        for i in 0..self.models.len() {
            let ck = self.models[i].checkpoint(&self.gpu).await?;
            let bytes = checkpoint::encode(&ck).map_err(|e| e.to_string())?;
            total += bytes.len();
            store::store(&format!("{STORAGE_KEY}.{i}"), &bytes).await?;
        }
        Ok(format!("saved {} model(s) to browser storage ({} KB)", self.models.len(), total / 1024))
    }

    async fn load_storage(&mut self) -> Result<String, String> {
        let mut loaded = 0;
        for i in 0..self.models.len() {
            let key = format!("{STORAGE_KEY}.{i}");
            if let Some(bytes) = store::load(&key).await? {
                self.load_bytes(i, "browser storage", &bytes).await?;
                loaded += 1;
            }
        }
        if loaded == 0 {
            return Err("nothing saved in browser storage yet".into());
        }
        Ok(format!("loaded {loaded} model(s) from browser storage"))
    }

    // -----------------------------------------------------------------------------------------
    // Display

    /// Draws every model's samples again with the chosen sampler, recording each step (the
    /// displayed samples' seed and count, so the animation ends on the samples shown), and
    /// starts playing them. The frames come from the f64 host path (the device path records no
    /// trajectory), the samples shown from the device: the last frame equals them to within the
    /// device's f32 state (`lastGap`, the largest coordinate difference).
    async fn animate(&mut self) -> Result<(), String> {
        let cfg = self.sampler();
        let n = self.opts.samples.min(ANIM_POINTS);
        let mut frames: Vec<Vec<Vec<f64>>> = Vec::new();
        let mut step_of: Vec<usize> = Vec::new();
        for m in &self.models {
            let mut den = GpuDenoiser::from_trainer(&self.gpu, m.run.trainer(), n).await.map_err(|e| e.to_string())?;
            let mut traj = Vec::new();
            sampler::sample(&mut den, &cfg, n, 1, Some(&mut traj)).await.map_err(|e| e.to_string())?;
            let all = sampler::trajectory_frames(&cfg, n, 2, 1, traj);
            // At most ANIM_FRAMES, evenly spaced, the first and the last kept.
            let k = all.len().min(ANIM_FRAMES);
            step_of = (0..k).map(|i| (i * (all.len() - 1)).div_ceil((k - 1).max(1))).collect();
            frames.push(step_of.iter().map(|&j| all[j].clone()).collect());
        }
        let steps = step_of.last().copied().unwrap_or(0);
        if let (Some(first), Some(last)) = (frames[0].first(), frames[0].last()) {
            let var = |c: usize| {
                let v: Vec<f64> = first.iter().skip(c).step_by(2).copied().collect();
                let m = v.iter().sum::<f64>() / v.len() as f64;
                v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0).max(1.0)
            };
            self.anim_info = json!({
                "frames": step_of.len(), "steps": steps, "firstVar": [var(0), var(1)],
                "lastGap": (self.models[0].samples.len() >= last.len()).then(|| {
                    last.iter().zip(&self.models[0].samples).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
                }),
            });
        }
        self.anim = Some(Animation { frames, step_of, start: dom::now_ms(), shown: 0 });
        Ok(())
    }

    /// Draws the animation's current frame over the scatter plots; ends it after the last frame
    /// has been held for a moment.
    fn play(&mut self) {
        let Some(a) = &mut self.anim else { return };
        let count = a.step_of.len();
        let frame_ms = ANIM_MS / count.max(1) as f64;
        let elapsed = dom::now_ms() - a.start;
        if elapsed > ANIM_MS + ANIM_HOLD_MS && a.shown >= count {
            self.anim = None;
            self.anim_played += 1;
            self.redraw();
            return;
        }
        // Every frame is drawn at least once, even when the loop is slower than the frame rate.
        let k = ((elapsed / frame_ms) as usize).min(count - 1).min(a.shown);
        a.shown = a.shown.max(k + 1);
        for (i, suffix) in ["a", "b"].into_iter().enumerate() {
            let Some(f) = a.frames.get(i) else { continue };
            let id = format!("scatter-{suffix}");
            draw::scatter(&id, &self.data.points.data, DRAW_DATA, &f[k], None);
            draw::caption(&id, &format!("sampling: step {} of {}", a.step_of[k], a.step_of[count - 1]));
        }
    }
}

impl runtime::Task for ToyPage {
    type Cmd = ToyCommand;

    fn control(&mut self) -> &mut Control<ToyCommand> {
        &mut self.ctl
    }

    fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn lost_cmd(generation: u32, msg: String) -> ToyCommand {
        ToyCommand::Lost(generation, msg)
    }

    fn allowed_when_lost(cmd: &ToyCommand) -> bool {
        matches!(cmd, ToyCommand::Restart | ToyCommand::Lost(..))
    }

    fn can_train(&self) -> bool {
        !self.models.is_empty()
    }

    fn stale(&self) -> bool {
        // A map left behind while training (`HEAT_EVERY_MS`, `HEAT_POINTS_TRAINING`) follows the
        // weights, with every α point, once paused.
        self.models.iter().any(|m| {
            let behind = m.heat.as_ref().is_some_and(|h| h.3 != m.step()) || m.heat_points < density::POINTS;
            m.samples_step != Some(m.step())
                || (m.heat.is_some() && behind && m.heat_tried != Some((m.step(), density::POINTS)))
        })
    }

    fn tick(&mut self) -> bool {
        let playing = self.anim.is_some();
        self.play();
        playing
    }

    async fn handle(&mut self, cmd: ToyCommand) -> Result<(), String> {
        match cmd {
            ToyCommand::Start => self.ctl.start(),
            ToyCommand::Pause => self.ctl.stop(),
            ToyCommand::Step => self.ctl.pending_steps += self.opts.step_size,
            ToyCommand::Reset => {
                self.reset().await?;
                self.refresh_samples().await;
            }
            ToyCommand::Toy(t) => {
                self.data = ToyDataSet::toy(t, self.opts.base.seed);
                *self.previews.live.borrow_mut() = None;
                if self.opts.pretrained {
                    let shared = self.ctl.shared.clone();
                    show_preview(&shared, &self.previews, &self.data.name, &self.data.points.data).await;
                }
                self.reset().await?;
                if self.opts.pretrained {
                    self.load_pretrained().await;
                    self.redraw();
                    self.publish();
                }
                self.refresh_samples().await;
            }
            ToyCommand::Points(name, points) => {
                self.data = ToyDataSet::custom(name, points).inspect_err(|e| set_data_error(e))?;
                dom::set_value("dataset", if self.data.name == "drawing" { "draw" } else { "csv" });
                self.reset().await?;
                self.refresh_samples().await;
            }
            ToyCommand::SaveFile(i) => self.save_file(i).await?,
            ToyCommand::LoadFile(i, name, bytes) => {
                let r = self.load_bytes(i, &name, &bytes).await.map(|()| format!("loaded {name}"));
                dom::show_result(WEIGHTS_MSG, &r);
                self.refresh_samples().await;
            }
            ToyCommand::SaveStorage => {
                let r = self.save_storage().await;
                dom::show_result(WEIGHTS_MSG, &r);
            }
            ToyCommand::LoadStorage => {
                let r = self.load_storage().await;
                dom::show_result(WEIGHTS_MSG, &r);
                self.refresh_samples().await;
            }
            ToyCommand::Lost(generation, msg) => {
                let kept = self.kept.iter().flatten().map(|c| c.step).max();
                self.ctl.on_lost(generation, msg, kept);
            }
            ToyCommand::Restart => self.restart().await?,
            ToyCommand::LoseDevice => self.gpu.device.destroy(),
            ToyCommand::Resample => self.refresh_samples().await,
            ToyCommand::Animate => self.animate().await?,
            ToyCommand::Parallel => self.run_parallel().await?,
        }
        Ok(())
    }

    async fn train_chunk(&mut self) -> Result<(), String> {
        let n = self.ctl.next_chunk(self.opts.chunk);
        let t0 = dom::now_ms();
        for m in &mut self.models {
            m.train(&self.gpu, n).await?;
        }
        if self.opts.debug {
            let ms = dom::now_ms() - t0;
            crate::gpu::log(&format!("cdl: chunk of {n} steps x {} models: {ms:.1} ms", self.models.len()));
        }
        // Chunks of about CHUNK_TARGET_MS: long enough to amortise the readback, short enough
        // that the loss curve moves smoothly.
        let total: u64 = self.models.iter().map(|m| m.step()).sum::<u64>() / self.models.len().max(1) as u64;
        self.ctl.chunk_done(n, t0, total, self.opts.chunk == 0);
        Ok(())
    }

    /// Draws fresh samples of every model (EMA weights, fixed seed) and their MMD to the data.
    async fn refresh_samples(&mut self) {
        self.ctl.sampled_at = dom::now_ms();
        let cfg = self.sampler();
        let n = self.opts.samples;
        let rows = n.min(4096);
        let reference: Vec<f64> = {
            let p = &self.data.points;
            let k = p.len().min(n);
            (0..k).flat_map(|i| p.point(i * p.len() / k).iter().map(|&v| f64::from(v))).collect::<Vec<_>>()
        };
        for m in &mut self.models {
            if m.samples_step == Some(m.step()) {
                continue;
            }
            let t0 = dom::now_ms();
            let mut den = match GpuDenoiser::from_trainer(&self.gpu, m.run.trainer(), rows).await {
                Ok(d) => d,
                Err(e) => {
                    crate::gpu::log(&format!("cdl: sampling: {e}"));
                    return;
                }
            };
            match den.sample_on_device(&cfg, n, 1, None).await {
                Ok((x, stats)) => {
                    m.mmd = mmd(&x, &reference, 2, MMD_BANDWIDTH).ok();
                    m.samples = x;
                    m.preview = false;
                    m.samples_step = Some(m.step());
                    m.samples_version += 1;
                    m.passes = stats.passes;
                    if self.opts.debug {
                        crate::gpu::log(&format!(
                            "cdl: {n} samples, {} passes: {:.1} ms",
                            stats.passes,
                            dom::now_ms() - t0
                        ));
                    }
                }
                Err(e) => crate::gpu::log(&format!("cdl: sampling: {e}")),
            }
        }
        self.refresh_heat().await;
    }

    /// Reads every model's weights into memory (for a restart after device loss).
    async fn back_up_weights(&mut self) {
        self.ctl.kept_at = dom::now_ms();
        for (i, m) in self.models.iter().enumerate() {
            if self.kept[i].as_ref().is_some_and(|c| c.step == m.step()) {
                continue;
            }
            if let Ok(ck) = m.checkpoint(&self.gpu).await {
                self.kept[i] = Some(ck);
            }
        }
    }

    fn redraw(&mut self) {
        let running = self.ctl.shared.borrow().running;
        dom::set_body_data("running", if running { "1" } else { "0" });
        for (i, suffix) in ["a", "b"].into_iter().enumerate() {
            dom::set_hidden(&format!("panel-{suffix}"), i >= self.models.len());
            let Some(m) = self.models.get(i) else { continue };
            dom::set_text(&format!("title-{suffix}"), loss_label(m.run.config().loss));
            let par = self
                .parallel
                .as_ref()
                .and_then(|v| v.runs.get(i))
                .filter(|r| r.2 == m.step() && r.3 == m.samples_version);
            let shown = par.map_or(&m.samples, |r| &r.1);
            let heat = m.heat.as_ref().map(|h| (h.0.as_slice(), h.1, h.2.as_str(), m.heat_points));
            let first = m.step().saturating_sub(m.log.steps.len() as u64);
            draw_pane(suffix, &self.data.points.data, shown, heat, &m.log.steps, first, m.curve.as_deref());
            if let Some(r) = par {
                draw::caption(&format!("scatter-{suffix}"), &format!("parallel sampler: {} passes", r.0.len()));
            } else if m.preview {
                draw::caption(&format!("scatter-{suffix}"), "shipped samples (drawn before the GPU was up)");
            }
            let last = m.log.steps.last();
            let mut text = format!("step {}", m.step());
            if let Some(r) = last {
                text += &format!("  ·  loss {:.3}", r[0]);
                if m.run.config().loss.has_cdl() {
                    text += &format!(" (std {:.3}, cdl {:.3})", r[1], r[2]);
                }
            }
            if let Some(a) = m.log.accuracy {
                text += &format!("  ·  noise classifier {:.0}% right", 100.0 * a);
            }
            if let Some(d) = m.mmd {
                text += &format!("  ·  MMD {d:.4}{}", if m.preview { " (shipped samples)" } else { "" });
            }
            if m.passes > 0 {
                text += &format!("  ·  sampler passes {}", m.passes);
            }
            dom::set_text(&format!("stats-{suffix}"), &text);
        }
        *self.previews.live.borrow_mut() = Some(self.data.name.clone());
        self.draw_parallel();
        dom::set_text(
            "rate",
            &format!(
                "{:.1} steps/s per model · chunk {} · {} ({} points)",
                self.ctl.meter.steps_per_s,
                self.ctl.meter.chunk,
                self.data.name,
                self.data.points.len()
            ),
        );
    }

    /// Publishes the state for `window.cdl.state()`.
    fn publish(&mut self) {
        let models: Vec<Value> = self
            .models
            .iter()
            .map(|m| {
                let (first, last) = m.log.first_last(20).unzip();
                json!({
                    "label": m.label(), "loss": m.run.config().loss.name(), "step": m.step(),
                    "width": m.run.config().width, "lossFirst": first, "lossLast": last,
                    "history": m.log.steps.len(), "mmd": m.mmd, "samplesVersion": m.samples_version,
                    "samplesStep": m.samples_step, "samplesHash": runtime::hash_bits(m.samples.iter().map(|x| x.to_bits())),
                    "samples": m.samples.len() / 2, "passes": m.passes, "accuracy": m.log.accuracy,
                    "heat": m.heat.as_ref().map(|h| h.2.clone()), "heatStep": m.heat.as_ref().map(|h| h.3),
                    "heatGrid": m.heat.as_ref().map(|h| h.1), "heatMs": m.heat_ms, "heatPoints": m.heat_points,
                    "heatShipped": m.heat_shipped, "preview": m.preview,
                    "curve": m.curve.as_ref().map(|c| c.step.len()),
                })
            })
            .collect();
        let parallel = self.parallel.as_ref().map(|v| {
            let runs: Vec<Value> = v
                .runs
                .iter()
                .map(|(p, _, step, _)| {
                    json!({
                        "passes": p.len(), "errors": p.iter().map(|p| p.error).collect::<Vec<_>>(),
                        "windows": p.iter().map(|p| [p.begin, p.end, p.converged]).collect::<Vec<_>>(), "step": step,
                    })
                })
                .collect();
            json!({ "steps": v.steps, "window": v.window, "tol": v.tol, "models": runs })
        });
        let s = json!({
            "ready": true,
            "running": self.ctl.shared.borrow().running,
            "pending": self.ctl.pending_steps,
            "lost": self.ctl.lost,
            "message": self.ctl.message,
            "stepsPerSec": self.ctl.meter.steps_per_s,
            "chunk": self.ctl.meter.chunk,
            "data": { "name": self.data.name, "n": self.data.points.len() },
            "models": models,
            "preview": self.ctl.shared.borrow().preview,
            "kernels": runtime::kernels_json(&self.gpu),
            "parallel": parallel,
            "anim": {
                "playing": self.anim.is_some(),
                "played": self.anim_played,
                "shown": self.anim.as_ref().map(|a| a.shown),
                "last": self.anim_info,
            },
        });
        self.ctl.shared.borrow_mut().state = s.to_string();
    }
}
