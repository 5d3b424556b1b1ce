//! The training step over rows (ARCHITECTURE.md "The training step"; math.md §3.4, §9b) and the
//! loop around it: `Trainer` owns every buffer and dispatch for one model and row count. Promise:
//! a step issues no readback, every random number of step s is a pure function of (seed, s), so a
//! restored run continues bit for bit, and a non-finite chunk is rolled back. Not here: file I/O,
//! metrics files or progress output (the CLI and the web page do that).

use std::fmt;
use std::rc::Rc;

use crate::diffusion::loss::{plan_step, shard_range, LossConfig, RowPlan, StdLoss};
use crate::diffusion::rows::ROW_WORDS;
use crate::diffusion::DiffusionError;
use crate::gpu::{Buffer, Dispatch, Gpu, GpuError, Recorder};
use crate::model::Net;
use crate::ops::loss::{self as head, HeadOut};
/// The optimizer's configuration, defined with its kernel in `ops::optim`.
pub use crate::ops::optim::AdamConfig;
use crate::ops::optim::{self, AdamStep};
use crate::ops::reduce::{self, SumSq};
use crate::ops::rows;
use crate::text::error_from;
use crate::train::checkpoint::{Checkpoint, CheckpointError, ADAM_M_PREFIX, ADAM_V_PREFIX, EMA_PREFIX, MODEL_PREFIX};
use crate::train::dist::{self, Collective};
use crate::train::weights::{insert_params, read_params};

/// The network's noise input for log-SNR α: c_noise = α/8 (math.md §8), continuous (math.md §9
/// pitfall 3). Samplers use the same mapping.
pub fn noise_input(alpha: f64) -> f32 {
    (alpha / 8.0) as f32
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// Everything that defines a run besides the model and the data.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// The loss (standard loss, optional CDL term, λs).
    pub loss: LossConfig,
    /// B, examples per step.
    pub batch: usize,
    /// Seed of the data order and every noise draw (the model's init seed is separate).
    pub seed: u64,
    /// Adam / AdamW hyper-parameters; `adam.lr` is the peak learning rate.
    pub adam: AdamConfig,
    /// Linear learning-rate warm-up: lr·min(1, (s+1)/warmup) at step s (0: none).
    pub warmup_steps: u64,
    /// EMA decay of the weights (0: EMA = weights).
    pub ema_decay: f64,
    /// With warm-up the decay at step s is min(ema_decay, (1+s)/(10+s)), so early EMA weights
    /// are not dominated by the initialisation.
    pub ema_warmup: bool,
    /// Clip the global gradient norm to this value (None: no clipping).
    pub grad_clip: Option<f64>,
}

impl TrainConfig {
    /// The paper's toy setting (math.md §5.1): Adam lr 1e-3, batch 128, no clipping; our additions:
    /// 100 warm-up steps, EMA 0.999 with warm-up.
    pub fn toy(loss: LossConfig) -> Self {
        Self {
            loss,
            batch: 128,
            seed: 0,
            adam: AdamConfig::adam(1e-3),
            warmup_steps: 100,
            ema_decay: 0.999,
            ema_warmup: true,
            grad_clip: None,
        }
    }

    /// Rows of one step: S + 2KM (S = B with a standard loss, else 0).
    pub fn rows(&self) -> usize {
        self.shard_rows(0, 1)
    }

    /// Rows rank `rank` of `ranks` evaluates in data-parallel training (`RowPlan::shard`).
    pub fn shard_rows(&self, rank: usize, ranks: usize) -> usize {
        let s = if self.loss.std == StdLoss::None { 0 } else { self.batch };
        shard_range(s, rank, ranks).len()
            + self.loss.cdl.map_or(0, |c| 2 * c.points * shard_range(c.anchors, rank, ranks).len())
    }

    /// The learning rate of step s (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        if self.warmup_steps == 0 {
            self.adam.lr
        } else {
            self.adam.lr * ((step + 1) as f64 / self.warmup_steps as f64).min(1.0)
        }
    }

    /// The EMA decay applied after step s (0-based).
    pub fn ema_at(&self, step: u64) -> f64 {
        if self.ema_warmup {
            self.ema_decay.min((1 + step) as f64 / (10 + step) as f64)
        } else {
            self.ema_decay
        }
    }

    /// Refuses values no run can use, with the field named.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.batch == 0 {
            return bad("batch must be >= 1".into());
        }
        let a = &self.adam;
        if !(a.lr.is_finite() && a.lr > 0.0) {
            return bad(format!("learning rate must be a positive number, got {}", a.lr));
        }
        if !((0.0..1.0).contains(&a.beta1) && (0.0..1.0).contains(&a.beta2)) {
            return bad(format!("Adam betas must lie in [0, 1), got ({}, {})", a.beta1, a.beta2));
        }
        if !(a.eps.is_finite() && a.eps > 0.0 && a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
            return bad(format!("Adam eps must be > 0 and weight decay >= 0, got {} and {}", a.eps, a.weight_decay));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad(format!("EMA decay must lie in [0, 1), got {}", self.ema_decay));
        }
        if let Some(c) = self.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return bad(format!("gradient clip must be a positive number, got {c}"));
            }
        }
        if let Some(c) = &self.loss.cdl {
            if c.anchors > self.batch {
                return bad(format!("CDL anchors K = {} exceed the batch B = {}", c.anchors, self.batch));
            }
        }
        if self.rows() == 0 {
            return bad("the loss has no rows: enable a standard loss or CDL".into());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Data and errors

/// Training examples as the trainer reads them: fixed-length rows of f32, optional labels.
pub trait Examples {
    /// Number of examples N.
    fn len(&self) -> usize;
    /// True when there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Elements of one example (must equal the model's row length).
    fn row_len(&self) -> usize;
    /// Writes examples `idx` into `out` (B, row_len) and, for labelled data, their labels into
    /// `labels` (B,). `seed` and `step` make augmentations (flips) pure functions of the step.
    fn gather(&self, idx: &[u32], seed: u64, step: u64, out: &mut [f32], labels: &mut [u32]);
}

/// Per-element variances of the first min(N, `max`) examples (unaugmented), each at least 1e-4:
/// the data reference Gaussian of image losses (math.md §2.1), where per-pixel moments are enough.
pub fn example_variances(examples: &dyn Examples, max: usize) -> Vec<f64> {
    let (n, d) = (examples.len().min(max), examples.row_len());
    if n == 0 {
        return vec![1.0; d];
    }
    let idx: Vec<u32> = (0..n as u32).collect();
    let (mut x, mut labels) = (vec![0f32; n * d], vec![0u32; n]);
    examples.gather(&idx, 0, 0, &mut x, &mut labels);
    (0..d)
        .map(|i| {
            let m = (0..n).map(|k| f64::from(x[k * d + i])).sum::<f64>() / n as f64;
            ((0..n).map(|k| (f64::from(x[k * d + i]) - m).powi(2)).sum::<f64>() / n as f64).max(1e-4)
        })
        .collect()
}

impl Examples for crate::train::data::Points {
    fn len(&self) -> usize {
        crate::train::data::Points::len(self)
    }
    fn row_len(&self) -> usize {
        self.dim
    }
    fn gather(&self, idx: &[u32], _seed: u64, _step: u64, out: &mut [f32], _labels: &mut [u32]) {
        for (j, &i) in idx.iter().enumerate() {
            out[j * self.dim..(j + 1) * self.dim].copy_from_slice(self.point(i as usize));
        }
    }
}

/// Why a run stopped.
#[derive(Debug)]
pub enum TrainError {
    /// A configuration the trainer cannot run.
    Config(String),
    /// The device or a kernel failed.
    Gpu(GpuError),
    /// The loss plan refused its inputs.
    Diffusion(DiffusionError),
    /// A checkpoint could not be made or restored.
    Checkpoint(CheckpointError),
    /// A loss or gradient was NaN/Inf at `step` (1-based); the state was rolled back to step
    /// `kept` (the start of the chunk).
    NonFinite { step: u64, what: String, kept: u64 },
    /// A collective operation between the ranks of a data-parallel run failed.
    Dist(String),
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(m) => write!(f, "invalid training config: {m}"),
            Self::Gpu(e) => write!(f, "{e}"),
            Self::Diffusion(e) => write!(f, "{e}"),
            Self::Checkpoint(e) => write!(f, "{e}"),
            Self::Dist(m) => write!(f, "data-parallel training: {m}"),
            Self::NonFinite { step, what, kept } => write!(
                f,
                "training stopped: {what} at step {step} (non-finite); the state of step {kept} is kept \
                 (try a lower learning rate or gradient clipping)"
            ),
        }
    }
}

impl std::error::Error for TrainError {}

error_from!(TrainError: GpuError => Gpu, DiffusionError => Diffusion, CheckpointError => Checkpoint);

/// What the host learns of one step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepStats {
    /// Steps done after this one (1-based).
    pub step: u64,
    /// L = λ_std·L_std + λ_cdl·L_cdl.
    pub loss: f32,
    /// L_std (before λ_std).
    pub std: f32,
    /// L_cdl (before λ_cdl).
    pub cdl: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Learning rate used.
    pub lr: f64,
    /// CDL logits f_k (nats). (K,)
    pub logits: Vec<f32>,
    /// Anchor labels (+1 clean, −1 noisy). (K,)
    pub labels: Vec<f32>,
}

impl StepStats {
    /// Fraction of anchors the noise classifier gets right (sign of f_k = label), or None
    /// without CDL.
    pub fn accuracy(&self) -> Option<f64> {
        if self.logits.is_empty() {
            return None;
        }
        let right = self.logits.iter().zip(&self.labels).filter(|(f, l)| **f * **l > 0.0).count();
        Some(right as f64 / self.logits.len() as f64)
    }
}

// ---------------------------------------------------------------------------------------------
// The trainer

/// Seeds of the independent random streams of a run, derived from the run seed.
fn sub_seed(seed: u64, purpose: u64) -> u64 {
    // SplitMix64 finaliser: distinct purposes give unrelated seeds.
    let mut z = seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
const SEED_NOISE: u64 = 1;
const SEED_DATA: u64 = 2;

/// Log words per step: [total, std, cdl, non-finite count, squared grad norm, f_1..f_K].
const LOG_HEAD: usize = 5;

/// Host-side facts of a submitted step, joined with the device log when the chunk is read.
struct Pending {
    lr: f64,
    labels: Vec<f32>,
}

/// One model bound to one row count, with its optimizer state and every prepared dispatch.
///
/// A step: data batch → row inputs (GPU noise) → one forward over all rows → loss head (row
/// errors, logits, per-row weights) → weighted-MSE gradient → one backward → global gradient
/// norm, clipping → Adam with warm-up → EMA. Checkpoints hold the whole state (model, EMA, Adam
/// moments, step), and resume is exact: the row plan, the GPU noise streams and the mini-batch
/// of step s are pure functions of (seed, s), so a run restored at step N continues bit for bit
/// as if it had never stopped.
///
/// Data-parallel (`with_collective`): each rank evaluates its shard of every step's rows, reads
/// its gradient back, sums it with the other ranks' and uploads the sum before the norm, clipping
/// and Adam: two submissions and one readback per step instead of one submission per step.
pub struct Trainer {
    net: Box<dyn Net>,
    cfg: TrainConfig,
    step: u64,
    rows: usize,
    /// Anchors of this rank's shard (all K without a collective).
    anchors: usize,
    /// The other ranks, when data-parallel.
    comm: Option<Rc<dyn Collective>>,
    noise_seed: u64,
    data_seed: u64,
    // per-step inputs
    batch_x: Buffer,
    table: Buffer,
    scale: Buffer,
    weight: Buffer,
    offset: Buffer,
    labels: Buffer,
    // optimizer state and its snapshot (value, m, v, ema)
    m: Buffer,
    v: Buffer,
    ema: Buffer,
    snapshot: [Buffer; 4],
    // outputs
    stats: Buffer,
    sumsq: Buffer,
    logits: Buffer,
    log: Buffer,
    log_steps: usize,
    // dispatches
    rows_d: Dispatch,
    err_d: Dispatch,
    head_d: Dispatch,
    grad_d: Dispatch,
    norm: SumSq,
    clip_d: Option<Dispatch>,
    adam: AdamStep,
    ema_d: Dispatch,
    // host scratch
    idx: Vec<u32>,
    xb: Vec<f32>,
    lb: Vec<u32>,
    row_scratch: Vec<f32>,
}

impl fmt::Debug for Trainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Trainer({} model, {} rows, step {})", self.net.arch(), self.rows, self.step)
    }
}

impl Trainer {
    /// Prepares training of `net` (bound to `cfg.rows()` rows) on examples of `row_len`
    /// elements. `log_steps` is the most steps one `train` call runs (one log slot each).
    pub async fn new(gpu: &Gpu, net: Box<dyn Net>, cfg: TrainConfig, log_steps: usize) -> Result<Self, TrainError> {
        Self::with_collective(gpu, net, cfg, log_steps, None).await
    }

    /// As `new`, as one rank of a data-parallel run when `comm` is given: `net` is bound to the
    /// rank's rows (`TrainConfig::shard_rows`) and every rank starts from the same weights.
    pub async fn with_collective(
        gpu: &Gpu,
        net: Box<dyn Net>,
        cfg: TrainConfig,
        log_steps: usize,
        comm: Option<Rc<dyn Collective>>,
    ) -> Result<Self, TrainError> {
        cfg.validate()?;
        let (rank, ranks) = comm.as_ref().map_or((0, 1), |c| (c.rank(), c.ranks()));
        if cfg.loss.std != StdLoss::None && cfg.batch < ranks {
            return Err(TrainError::Config(format!("a batch of {} cannot be split over {ranks} ranks", cfg.batch)));
        }
        let rows = cfg.shard_rows(rank, ranks);
        if net.rows() != rows {
            return Err(TrainError::Config(format!(
                "the model is bound to {} rows but the loss needs {rows} (B + 2KM{})",
                net.rows(),
                if ranks > 1 { format!(", rank {rank} of {ranks}") } else { String::new() }
            )));
        }
        let anchors = cfg.loss.cdl.map_or(0, |c| shard_range(c.anchors, rank, ranks).len());
        let n = net.row_len();
        let b = cfg.batch;
        let flat = net.params().layout.flat_len();
        let z = |name: &str, len: usize| gpu.zeros(name, len.max(1));
        let batch_x = z("batch_x", b * n)?;
        let table = z("row_table", rows * ROW_WORDS)?;
        let targets = z("targets", rows * n)?;
        let (scale, weight, offset) = (z("row_scale", rows)?, z("row_weight", rows)?, z("row_offset", rows)?);
        let (errors, row_weights) = (z("row_errors", rows)?, z("row_weights", rows)?);
        let (labels, logits, anchor_losses) =
            (z("labels", anchors)?, z("logits", anchors)?, z("anchor_losses", anchors)?);
        let stats = z("stats", 4)?;
        let (m, v) = (z("adam_m", flat)?, z("adam_v", flat)?);
        let ema = z("ema", flat)?;
        let snapshot = [z("snap_value", flat)?, z("snap_m", flat)?, z("snap_v", flat)?, z("snap_ema", flat)?];
        let partials = z("grad_partials", reduce::sum_sq_partials(flat))?;
        let sumsq = z("grad_sumsq", 1)?;
        let clip = z("clip_scale", 1)?;
        let log_steps = log_steps.max(1);
        let log = z("step_log", log_steps * (LOG_HEAD + anchors))?;

        // The model's inputs are the rows' inputs; the loss head reads its outputs.
        let seed = sub_seed(cfg.seed, SEED_NOISE);
        let rows_d = rows::row_inputs(gpu, &batch_x, &table, net.input(), &targets, rows, n, b, seed).await?;
        // The head's scalars come from a plan of this config (constant across steps).
        let probe = plan_step(&cfg.loss, b, seed, 0)?.shard(rank, ranks);
        let h = probe.head().to_f32();
        let err_d = head::row_err(gpu, net.output(), &targets, &scale, &errors, &h, n).await?;
        let out = HeadOut { row_weights: &row_weights, logits: &logits, anchor_losses: &anchor_losses, stats: &stats };
        let head_d = head::loss_head(gpu, &errors, &weight, &offset, &labels, out, &h).await?;
        let grad_d =
            head::loss_grad(gpu, net.output(), &targets, &scale, &row_weights, net.output_grad(), &h, n).await?;
        let p = net.params();
        let norm = reduce::sum_sq(gpu, &p.grad, &partials, &sumsq, flat).await?;
        let clip_d = match cfg.grad_clip {
            Some(c) => Some(optim::clip_scale(gpu, &sumsq, &clip, c as f32).await?),
            None => None,
        };
        let adam = optim::adam_step(gpu, &p.grad, clip_d.as_ref().map(|_| &clip), &p.value, &m, &v, flat, &cfg.adam, 1)
            .await?;
        let ema_d = optim::ema_update(gpu, &p.value, &ema, flat, cfg.ema_decay).await?;
        // The EMA starts at the initial weights.
        gpu.copy(&p.value, &ema);
        Ok(Self {
            data_seed: sub_seed(cfg.seed, SEED_DATA),
            noise_seed: seed,
            net,
            cfg,
            step: 0,
            rows,
            anchors,
            comm,
            batch_x,
            table,
            scale,
            weight,
            offset,
            labels,
            m,
            v,
            ema,
            snapshot,
            stats,
            sumsq,
            logits,
            log,
            log_steps,
            rows_d,
            err_d,
            head_d,
            grad_d,
            norm,
            clip_d,
            adam,
            ema_d,
            idx: Vec::new(),
            xb: Vec::new(),
            lb: Vec::new(),
            row_scratch: Vec::new(),
        })
    }

    /// Steps done.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The run's config.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The model.
    pub fn net(&self) -> &dyn Net {
        self.net.as_ref()
    }

    /// The EMA weights (flat, the model's layout).
    pub fn ema(&self) -> &Buffer {
        &self.ema
    }

    /// The most steps one `train` call runs.
    pub fn chunk_limit(&self) -> usize {
        self.log_steps
    }

    /// Runs `steps` steps (at most `chunk_limit`), then reads their statistics back (the only
    /// readback). On a non-finite loss or gradient the state returns to what it was before
    /// the call and `TrainError::NonFinite` names the first bad step.
    ///
    /// Each step copies its statistics (losses, non-finite count, squared gradient norm, logits)
    /// into a slot of a log buffer on the device, read once per chunk; the rollback restores a
    /// device-side snapshot of the chunk's start, so the trainer always holds the last good state.
    pub async fn train(
        &mut self,
        gpu: &Gpu,
        data: &dyn Examples,
        batcher: &mut dyn FnMut(u64, &mut Vec<u32>),
        steps: usize,
    ) -> Result<Vec<StepStats>, TrainError> {
        if steps > self.log_steps {
            return Err(TrainError::Config(format!("{steps} steps in one call, at most {}", self.log_steps)));
        }
        if data.row_len() != self.net.row_len() {
            return Err(TrainError::Config(format!(
                "examples have {} values but the model expects {}",
                data.row_len(),
                self.net.row_len()
            )));
        }
        if data.is_empty() {
            return Err(TrainError::Config("no training examples".into()));
        }
        let start = self.step;
        self.save_snapshot(gpu);
        let mut pending = Vec::with_capacity(steps);
        let comm = self.comm.clone();
        for slot in 0..steps {
            pending.push(self.prepare_step(gpu, data, batcher)?);
            let mut rec = gpu.recorder();
            self.record_gradient(&mut rec);
            if let Some(comm) = &comm {
                rec.submit();
                let grad = &self.net.params().grad;
                let mut g = gpu.read(grad).await?;
                comm.sum_f32(&mut g).map_err(TrainError::Dist)?;
                gpu.write(grad, &g);
                rec = gpu.recorder();
            }
            self.record_update(&mut rec, slot);
            rec.submit();
            self.step += 1;
        }
        let rec = LOG_HEAD + self.anchors;
        let mut log = gpu.read(&self.log.view(0, steps * rec)?).await?;
        let rec = match &comm {
            Some(comm) => {
                log = self.global_log(comm.as_ref(), &log, steps)?;
                LOG_HEAD + self.cfg.loss.cdl.map_or(0, |c| c.anchors)
            }
            None => rec,
        };
        let mut out = Vec::with_capacity(steps);
        for (i, (p, r)) in pending.into_iter().zip(log.chunks(rec)).enumerate() {
            let s = StepStats {
                step: start + i as u64 + 1,
                loss: r[0],
                std: r[1],
                cdl: r[2],
                grad_norm: r[4].max(0.0).sqrt(),
                lr: p.lr,
                logits: r[LOG_HEAD..].to_vec(),
                labels: p.labels,
            };
            let what = if r[3] != 0.0 || !r[0].is_finite() {
                Some(format!("loss = {}", r[0]))
            } else if !r[4].is_finite() {
                Some(format!("gradient norm² = {}", r[4]))
            } else {
                None
            };
            if let Some(what) = what {
                self.restore_snapshot(gpu);
                self.step = start;
                gpu.finish().await?;
                return Err(TrainError::NonFinite { step: s.step, what, kept: start });
            }
            out.push(s);
        }
        Ok(out)
    }

    /// The chunk's log of this rank, `steps` records of its shard, as the whole run's: the
    /// losses and non-finite counts summed over the ranks, every anchor's logit at its place,
    /// the squared gradient norm (the same on every rank, computed after the sum) once.
    fn global_log(&self, comm: &dyn Collective, log: &[f32], steps: usize) -> Result<Vec<f32>, TrainError> {
        let k = self.cfg.loss.cdl.map_or(0, |c| c.anchors);
        let first = shard_range(k, comm.rank(), comm.ranks()).start;
        let (local, global) = (LOG_HEAD + self.anchors, LOG_HEAD + k);
        let mut out = vec![0f32; steps * global];
        for (o, r) in out.chunks_exact_mut(global).zip(log.chunks_exact(local)) {
            o[..4].copy_from_slice(&r[..4]);
            if comm.rank() == 0 {
                o[4] = r[4];
            }
            o[LOG_HEAD + first..LOG_HEAD + first + self.anchors].copy_from_slice(&r[LOG_HEAD..]);
        }
        comm.sum_f32(&mut out).map_err(TrainError::Dist)?;
        Ok(out)
    }

    /// The hash of the weights (`dist::hash_f32`), for the check that the ranks of a
    /// data-parallel run hold the same model.
    pub async fn weights_hash(&self, gpu: &Gpu) -> Result<u64, TrainError> {
        Ok(dist::hash_f32(&gpu.read(&self.net.params().value).await?))
    }

    /// Uploads step `self.step`'s batch and rows (this rank's shard when data-parallel).
    fn prepare_step(
        &mut self,
        gpu: &Gpu,
        data: &dyn Examples,
        batcher: &mut dyn FnMut(u64, &mut Vec<u32>),
    ) -> Result<Pending, TrainError> {
        let s = self.step;
        let step32 = u32::try_from(s).map_err(|_| TrainError::Config(format!("step {s} exceeds u32")))?;
        let (b, n) = (self.cfg.batch, self.net.row_len());
        let whole = plan_step(&self.cfg.loss, b, self.noise_seed, step32)?;
        let labels: Vec<f32> = whole.anchors.iter().map(|a| a.label as f32).collect();
        let plan: RowPlan = match &self.comm {
            Some(c) => whole.shard(c.rank(), c.ranks()),
            None => whole,
        };
        batcher(s, &mut self.idx);
        if self.idx.len() != b || self.idx.iter().any(|&i| i as usize >= data.len()) {
            return Err(TrainError::Config(format!("batcher gave {} indices for a batch of {b}", self.idx.len())));
        }
        self.xb.resize(b * n, 0.0);
        self.lb.resize(b, 0);
        data.gather(&self.idx, self.data_seed, s, &mut self.xb, &mut self.lb);
        gpu.write(&self.batch_x, &self.xb);
        gpu.write(&self.table, &rows::table_words(&plan.row_specs(), b)?);
        // Per-row constants through one reused host buffer.
        let mut scratch = std::mem::take(&mut self.row_scratch);
        let mut put = |buf: &Buffer, f: &dyn Fn(&crate::diffusion::loss::Row) -> f32| {
            scratch.clear();
            scratch.extend(plan.rows.iter().map(f));
            gpu.write(buf, &scratch);
        };
        put(self.net.noise_input(), &|r| noise_input(r.alpha));
        put(&self.scale, &|r| r.scale as f32);
        put(&self.weight, &|r| r.weight as f32);
        put(&self.offset, &|r| r.offset as f32);
        if !plan.anchors.is_empty() {
            scratch.clear();
            scratch.extend(plan.anchors.iter().map(|a| a.label as f32));
            gpu.write(&self.labels, &scratch);
        }
        self.row_scratch = scratch;
        if self.net.num_classes() > 0 {
            let row_labels: Vec<u32> = plan.rows.iter().map(|r| self.lb[r.example as usize]).collect();
            self.net.write_labels(gpu, &row_labels)?;
        }
        let lr = self.cfg.lr_at(s);
        self.adam.set_step(gpu, &AdamConfig { lr, ..self.cfg.adam }, step32 + 1)?;
        let flat = self.net.params().layout.flat_len();
        optim::set_ema_decay(gpu, &self.ema_d, flat, self.cfg.ema_at(s));

        Ok(Pending { lr, labels })
    }

    /// Records the step up to the gradient: zeroed gradients, rows, forward, loss head, backward.
    fn record_gradient<'a>(&'a self, rec: &mut Recorder<'a>) {
        self.net.params().zero_grad(rec);
        let (fwd, bwd) = self.net.dispatches();
        rec.dispatch(&self.rows_d)
            .dispatches(fwd)
            .dispatches([&self.err_d, &self.head_d, &self.grad_d])
            .dispatches(bwd);
    }

    /// Records the rest of the step from the gradient: norm, clipping, Adam, EMA, and the copy
    /// of the step's statistics into log slot `slot`.
    fn record_update<'a>(&'a self, rec: &mut Recorder<'a>, slot: usize) {
        rec.dispatches([&self.norm.partial, &self.norm.total])
            .dispatches(&self.clip_d)
            .dispatches([&self.adam.dispatch, &self.ema_d]);
        let at = (LOG_HEAD + self.anchors) * slot;
        rec.copy(&self.stats, 0, &self.log, at, 4).copy(&self.sumsq, 0, &self.log, at + 4, 1);
        if self.anchors > 0 {
            rec.copy(&self.logits, 0, &self.log, at + LOG_HEAD, self.anchors);
        }
    }

    fn state(&self) -> [&Buffer; 4] {
        [&self.net.params().value, &self.m, &self.v, &self.ema]
    }

    fn save_snapshot(&self, gpu: &Gpu) {
        let mut rec = gpu.recorder();
        for (src, dst) in self.state().into_iter().zip(&self.snapshot) {
            rec.copy(src, 0, dst, 0, src.len);
        }
        rec.submit();
    }

    fn restore_snapshot(&self, gpu: &Gpu) {
        let mut rec = gpu.recorder();
        for (dst, src) in self.state().into_iter().zip(&self.snapshot) {
            rec.copy(src, 0, dst, 0, dst.len);
        }
        rec.submit();
    }

    /// The whole state as a checkpoint: model, EMA, Adam moments (names in `checkpoint`), the
    /// step, and `extra` metadata.
    pub async fn checkpoint(&self, gpu: &Gpu, extra: &[(String, String)]) -> Result<Checkpoint, TrainError> {
        let layout = &self.net.params().layout;
        let mut ck = Checkpoint::new(self.net.arch(), self.net.config_json(), self.step);
        for (prefix, buf) in [MODEL_PREFIX, ADAM_M_PREFIX, ADAM_V_PREFIX, EMA_PREFIX].into_iter().zip(self.state()) {
            insert_params(&mut ck, prefix, layout, &gpu.read(buf).await?)?;
        }
        for (k, v) in extra {
            ck.extra.insert(k.clone(), v.clone());
        }
        Ok(ck)
    }

    /// Restores model, EMA, Adam moments and step from a checkpoint of this model. A checkpoint
    /// without optimizer state (weights only) restarts the moments at zero and the EMA at the
    /// weights.
    pub fn restore(&mut self, gpu: &Gpu, ck: &Checkpoint) -> Result<(), TrainError> {
        let layout = self.net.params().layout.clone();
        let arch = self.net.arch();
        if ck.model_config != self.net.config_json() {
            return Err(TrainError::Checkpoint(CheckpointError::Incompatible(format!(
                "model config {} differs from this run's {}",
                ck.model_config,
                self.net.config_json()
            ))));
        }
        let value = read_params(ck, arch, MODEL_PREFIX, &layout)?;
        let has = |prefix: &str| ck.tensors().iter().any(|t| t.name.starts_with(prefix));
        let (m, v) = if has(ADAM_M_PREFIX) {
            (read_params(ck, arch, ADAM_M_PREFIX, &layout)?, read_params(ck, arch, ADAM_V_PREFIX, &layout)?)
        } else {
            (vec![0.0; layout.flat_len()], vec![0.0; layout.flat_len()])
        };
        let ema = if has(EMA_PREFIX) { read_params(ck, arch, EMA_PREFIX, &layout)? } else { value.clone() };
        for (buf, data) in self.state().into_iter().zip([&value, &m, &v, &ema]) {
            gpu.write(buf, data);
        }
        self.step = ck.step;
        Ok(())
    }
}
