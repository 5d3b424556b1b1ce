//! The shipped weights of the toy page (`web/assets/{set}-{loss}.safetensors`, the format of
//! `cdl export`) and what the page draws from them before any GPU work: the preview samples, the
//! log p map and the training curve stored in the file. Each file is fetched and decoded once;
//! the GPU task later loads its weights from the same decoded checkpoint.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use serde_json::Value;

use super::{dom, store};
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::run::{KEY_CURVE, KEY_PREVIEW};

/// Checkpoints shipped with the page (`web/assets/`): every built-in data set, for the DDPM and
/// the ITD+CDL loss.
pub const PRETRAINED: &[(&str, &str)] = &[
    ("moons", "ddpm"),
    ("moons", "cdl"),
    ("spirals", "ddpm"),
    ("spirals", "cdl"),
    ("checkerboard", "ddpm"),
    ("checkerboard", "cdl"),
    ("8gaussians", "ddpm"),
    ("8gaussians", "cdl"),
    ("circles", "ddpm"),
    ("circles", "cdl"),
    ("dino", "ddpm"),
    ("dino", "cdl"),
];

/// The URL of the shipped file of (data set, loss), if the page ships one.
pub fn url(set: &str, loss: &str) -> Option<String> {
    PRETRAINED.contains(&(set, loss)).then(|| format!("assets/{set}-{loss}.safetensors"))
}

/// The training curve a file carries (`curve` metadata: the run's logged rows).
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub step: Vec<f64>,
    /// The standard part of the loss.
    pub std: Vec<f64>,
    /// The CDL part (0 for a loss without one).
    pub cdl: Vec<f64>,
}

impl Curve {
    /// The curve in `extra`, if it has a well-formed one (equal-length numeric arrays, at least
    /// two rows, steps increasing).
    pub fn of(extra: &BTreeMap<String, String>) -> Option<Self> {
        let v: Value = serde_json::from_str(extra.get(KEY_CURVE)?).ok()?;
        let col = |k: &str| -> Option<Vec<f64>> { v.get(k)?.as_array()?.iter().map(Value::as_f64).collect() };
        let (step, std, cdl) = (col("step")?, col("loss_std")?, col("loss_cdl")?);
        let ok = step.len() >= 2
            && std.len() == step.len()
            && cdl.len() == step.len()
            && step.windows(2).all(|w| w[1] > w[0])
            && std.iter().chain(&cdl).all(|x| x.is_finite());
        ok.then_some(Self { step, std, cdl })
    }

    pub fn last_step(&self) -> f64 {
        self.step.last().copied().unwrap_or(0.0)
    }
}

/// One shipped file, decoded, with its preview.
pub struct Shipped {
    pub url: String,
    pub checkpoint: Checkpoint,
    /// `preview.samples`, standardized units. (n, 2)
    pub samples: Option<Vec<f64>>,
    /// `preview.logp`: (values row-major from the top row, cells per side).
    pub logp: Option<(Vec<f64>, usize)>,
    /// The preview samples' MMD to held-out data (`preview` metadata).
    pub mmd: Option<f64>,
    pub curve: Option<Rc<Curve>>,
}

impl Shipped {
    /// Decodes a shipped file (any CDL checkpoint; preview parts it lacks are None).
    pub fn decode(url: &str, bytes: &[u8]) -> Result<Self, String> {
        let checkpoint = checkpoint::decode(bytes).map_err(|e| format!("{url}: not a CDL weights file: {e}"))?;
        checkpoint.check_finite().map_err(|e| format!("{url}: {e}"))?;
        let samples = checkpoint
            .get("preview.samples")
            .filter(|t| t.shape.len() == 2 && t.shape[1] == 2)
            .map(|t| t.data.iter().map(|&v| f64::from(v)).collect());
        let logp = checkpoint
            .get("preview.logp")
            .filter(|t| t.shape.len() == 2 && t.shape[0] == t.shape[1] && t.shape[0] > 0)
            .map(|t| (t.data.iter().map(|&v| f64::from(v)).collect(), t.shape[0]));
        let mmd = checkpoint
            .extra
            .get(KEY_PREVIEW)
            .and_then(|p| serde_json::from_str::<Value>(p).ok())
            .and_then(|p| p.get("mmd")?.as_f64());
        let curve = Curve::of(&checkpoint.extra).map(Rc::new);
        Ok(Self { url: url.into(), checkpoint, samples, logp, mmd, curve })
    }

    /// What `window.cdl.state()` reports of it.
    pub fn describe(&self) -> Value {
        serde_json::json!({
            "url": self.url,
            "samples": self.samples.as_ref().map(|s| s.len() / 2),
            "samplesHash": self.samples.as_ref().map(|s| super::runtime::hash_bits(s.iter().map(|x| x.to_bits()))),
            "map": self.logp.as_ref().map(|l| l.1),
            "mmd": self.mmd,
            "curve": self.curve.as_ref().map(|c| c.step.len()),
            "curveLastStep": self.curve.as_ref().map(|c| c.last_step()),
        })
    }
}

pub type Fetched = Rc<Result<Shipped, String>>;

enum Slot {
    Pending,
    Ready(Fetched),
}

/// The shipped files fetched so far (by URL), shared by the page's start-up, its controls and
/// its GPU task: a file is fetched once, whoever asks first.
#[derive(Default)]
pub struct Previews {
    files: RefCell<BTreeMap<String, Slot>>,
    /// The data set whose panes the GPU task has drawn (a preview drawn later would cover them).
    pub live: RefCell<Option<String>>,
}

/// How often a second asker polls for a file another is fetching, in ms.
const POLL_MS: i32 = 20;

impl Previews {
    /// The shipped file of (data set, loss), fetched and decoded on first use; None if the page
    /// ships none.
    pub async fn get(&self, set: &str, loss: &str) -> Option<Fetched> {
        let url = url(set, loss)?;
        loop {
            let pending = match self.files.borrow().get(&url) {
                Some(Slot::Ready(f)) => return Some(f.clone()),
                Some(Slot::Pending) => true,
                None => false,
            };
            if !pending {
                break;
            }
            dom::sleep(POLL_MS).await;
        }
        self.files.borrow_mut().insert(url.clone(), Slot::Pending);
        let r = match store::fetch_bytes(&url, store::MAX_WEIGHTS_BYTES).await {
            Ok(bytes) => Shipped::decode(&url, &bytes),
            Err(e) => Err(e),
        };
        if let Err(e) = &r {
            crate::gpu::log(&format!("cdl: shipped weights {e}"));
        }
        let f = Rc::new(r);
        self.files.borrow_mut().insert(url, Slot::Ready(f.clone()));
        Some(f)
    }
}
