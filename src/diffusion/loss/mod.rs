//! Training losses as weighted rows: `plan_step` draws a step's rows on the host (f64, Philox
//! streams), the GPU returns per-row squared errors, and `evaluate` turns them into the loss, the
//! CDL logits and the per-row gradient weights (math.md §3, §4, §9b; ARCHITECTURE.md "The training
//! step"). One module per loss (`ddpm`, `itd`, `edm`, `song`, `cdl`). Not here: the network, the
//! weighted-MSE kernel, the optimizer. Row weights are constants of the backward (math.md §9b).

mod cdl;
mod ddpm;
mod edm;
mod evaluate;
mod itd;
mod song;
mod standard;

pub use cdl::{Anchor, CdlConfig, CdlNorm, ZetaDist};
pub use evaluate::{evaluate, row_error, row_error_backward, StepLoss};
pub use standard::{StdLoss, NORMAL_RANGE_Z};

use super::likelihood::RefGaussian;
use super::logistic::TruncLogistic;
use super::rng::{row_normals, HostRng};
use super::rows::{LossHead, RowSpec};
use super::{finite, DiffusionError, Result};
use crate::philox::Stream;

/// Stream tag of host-side draws.
pub const TAG_HOST: u32 = 0;
/// Stream tag of standard-row noise (id = example b).
pub const TAG_STD_NOISE: u32 = 1;
/// Stream tag of CDL-row noise (id = k·M + m, or KM + k·M + m for independent q-rows).
pub const TAG_CDL_NOISE: u32 = 2;
/// Stream tag of the anchors' corruption ε₀ (id = k).
pub const TAG_CDL_CORRUPT: u32 = 3;
/// Host-draw ids under `TAG_HOST`.
pub const HOST_STD_LEVELS: u32 = 0;
/// ζ per anchor.
pub const HOST_ZETA: u32 = 1;
/// Fair-coin labels per anchor.
pub const HOST_LABELS: u32 = 2;
/// CDL integration levels (p-rows, and q-rows when paired).
pub const HOST_CDL_LEVELS: u32 = 3;
/// CDL integration levels of q-rows with independent draws.
pub const HOST_CDL_LEVELS_Q: u32 = 4;

/// The noise stream (seed, [step, tag, id]). Every random number of a step is a pure function of
/// (seed, step, tag, id) through `philox::Stream::new(seed, [step, tag, id])`:
/// - `TAG_HOST`: host draws (id = `HOST_*`: levels, ζ, labels), f64 via `rng::HostRng`;
/// - `TAG_STD_NOISE`, id = b: the target ε of standard row b;
/// - `TAG_CDL_NOISE`, id = k·M + m (p-row; also the q-row when paired) or KM + k·M + m (q-row,
///   independent draws): the target ε of a CDL row;
/// - `TAG_CDL_CORRUPT`, id = k: ε₀ of anchor k.
///
/// Element i of a row's noise is normal i of its stream (`philox::philox_normal`), so
/// the GPU and `RowPlan::row_input` draw identical numbers.
fn stream(seed: u64, step: u32, tag: u32, id: usize) -> Stream {
    Stream::new(seed, [step, tag, id as u32])
}

/// The host draws of step `step` with id `id` (`HOST_*`).
fn host(seed: u64, step: u32, id: u32) -> HostRng {
    HostRng::new(seed, [step, TAG_HOST, id])
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// A step's loss: L = λ_std·L_std + λ_cdl·L_cdl (math.md §3.3). Any standard loss combines with CDL.
#[derive(Clone, Debug, PartialEq)]
pub struct LossConfig {
    /// The standard loss.
    pub std: StdLoss,
    /// λ_std (official 1).
    pub lambda_std: f64,
    /// The CDL term, or None for the standard loss alone.
    pub cdl: Option<CdlConfig>,
    /// λ_cdl (official 1).
    pub lambda_cdl: f64,
    /// Reference Gaussian G (math.md §2.1): adds h_G and mmse_G offsets to ITD rows and to unpaired
    /// CDL rows (values only; gradients are unchanged). None: plain weighted MSE.
    pub reference: Option<RefGaussian>,
}

impl LossConfig {
    /// The official CDL DDPM-CIFAR setting: ITD L_std with q, plus CDL with the default config.
    pub fn cdl_official(q: TruncLogistic, reference: Option<RefGaussian>) -> Self {
        Self {
            std: StdLoss::Itd { q },
            lambda_std: 1.0,
            cdl: Some(CdlConfig { q, ..CdlConfig::default() }),
            lambda_cdl: 1.0,
            reference,
        }
    }

    /// A standard loss alone.
    pub fn standard(std: StdLoss) -> Self {
        Self { std, lambda_std: 1.0, cdl: None, lambda_cdl: 1.0, reference: None }
    }

    /// The log-SNR levels (lo, hi) the network is trained at: the union of the standard loss's
    /// range (`StdLoss::alpha_range`) and the CDL integration range of its p-rows. CDL's q-rows
    /// are conditioned lower, at α′(α, ζ) < α (math.md §2.3): that is the density of the noisy
    /// anchor, not a level a sampler queries. None when the loss has no rows.
    pub fn alpha_range(&self) -> Option<(f64, f64)> {
        let cdl = self.cdl.as_ref().map(|c| c.q.range());
        match (self.std.alpha_range(), cdl) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (r, None) | (None, r) => r,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The plan

/// What a row is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    /// A standard-loss row.
    Std,
    /// CDL clean-density term: level α, scale 1.
    CdlP,
    /// CDL ζ-density term: level α′, scale c.
    CdlQ,
}

/// One network evaluation of a step. With x_b the batch example `example`, ε₀ the anchor's
/// corruption noise and ε the row's noise (both d-vectors drawn from Philox streams, see `stream`):
///
/// ```text
/// y      = y_x·x_b + y_n0·ε₀                        (std rows and clean anchors: y = x_b)
/// input  = sqrt_sig_pos·y + sqrt_sig_neg·ε           (the VP channel at the input level, §1.1)
/// target = ε
/// E_r    = ||target − scale·ε̂_θ(input, alpha)||²     (alpha = the conditioning level)
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    /// Std, CDL p or CDL q.
    pub kind: RowKind,
    /// Batch example the row reads (class label too, math.md §9 pitfall 13).
    pub example: u32,
    /// Anchor k of a CDL row (the example index for std rows).
    pub anchor: u32,
    /// Integration point m of a CDL row (0 for std rows).
    pub point: u32,
    /// Level the network is conditioned on: α (std, p-rows) or α′ (q-rows).
    pub alpha: f64,
    /// Level of the input channel (α for every row; a q-row's input is built at α, not α′).
    pub input_alpha: f64,
    /// sqrt(s(input_alpha)), coefficient of y.
    pub sqrt_sig_pos: f64,
    /// sqrt(s(−input_alpha)), coefficient of ε.
    pub sqrt_sig_neg: f64,
    /// y = y_x·x + y_n0·ε₀: sqrt(s(ζ)) for noisy anchors, 1 otherwise.
    pub y_x: f64,
    /// sqrt(s(−ζ)) for noisy anchors, 0 otherwise.
    pub y_n0: f64,
    /// Output scale: 1, or c = sqrt(s(−α)/s(−α′)) for q-rows.
    pub scale: f64,
    /// Static loss weight of E_r (λ and the dynamic CDL factor not included):
    /// 1/B (DDPM, Song), (1+e^{−α}/σ_d²)/B (EDM), w/(2B) (ITD), w/(2M) (CDL).
    pub weight: f64,
    /// Control variate subtracted from E_r in the loss value: mmse_G(input_alpha) or 0.
    pub offset: f64,
    /// Stream of ε (target and input noise).
    pub noise: Stream,
    /// Stream of ε₀ (anchor corruption); unused when `y_n0 == 0`.
    pub noise0: Stream,
}

/// A planned step: rows in the documented order plus what `evaluate` needs.
///
/// Row order (R = S + 2KM rows, S = B when a standard loss is on, else 0):
/// - rows [0, S): standard rows; row b reads example b;
/// - rows [S, S+KM): CDL p-rows, ordered [K, M]: row S + k·M + m is anchor k, point m, at level α;
/// - rows [S+KM, S+2KM): CDL q-rows, ordered [K, M]: row S + KM + k·M + m, at level α′, scale c.
///
/// The CDL block is the [2, K, M] layout of math.md §3.4. Anchor k reads example k (`x[:K]`). With
/// paired draws a q-row has the same input and target as its p-row; with independent draws
/// (official) it has its own α, weight and noise.
///
/// The loss is L = λ_std·L_std + λ_cdl·L_cdl with
/// L_std = std_const + Σ_{std rows} weight_r·(E_r − offset_r), and for anchor k
/// f_k = Σ_{q rows of k} weight_r·(E_r − offset_r) − Σ_{p rows of k} weight_r·(E_r − offset_r),
/// ℓ_k = softplus(−label_k·f_k), L_cdl = norm·Σ_k ℓ_k (norm = 1/B or 1/K). `offset` (mmse_G) and
/// `std_const` (h_G) are control-variate constants: they change the loss value, never a gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct RowPlan {
    /// All rows. (R,)
    pub rows: Vec<Row>,
    /// CDL anchors. (K,)
    pub anchors: Vec<Anchor>,
    /// B.
    pub batch: usize,
    /// S, the number of standard rows (B or 0).
    pub n_std: usize,
    /// M (0 without CDL).
    pub points: usize,
    /// λ_std.
    pub lambda_std: f64,
    /// λ_cdl.
    pub lambda_cdl: f64,
    /// 1/B or 1/K.
    pub cdl_norm: f64,
    /// Constant part of L_std (h_G for ITD with a reference, else 0).
    pub std_const: f64,
}

/// Draws all levels, weights, labels and stream ids of step `step` (math.md §3.4, §9b): the
/// standard loss's rows [0, S), then the CDL rows [S, S+2KM). `batch` is B, the number of
/// examples in the step.
pub fn plan_step(cfg: &LossConfig, batch: usize, seed: u64, step: u32) -> Result<RowPlan> {
    if batch == 0 {
        return Err(DiffusionError::Config("batch size B must be >= 1".into()));
    }
    if batch > u32::MAX as usize {
        return Err(DiffusionError::Config(format!("batch size {batch} exceeds u32")));
    }
    finite("lambda_std", cfg.lambda_std)?;
    finite("lambda_cdl", cfg.lambda_cdl)?;
    let reference = cfg.reference.as_ref();
    let (mut rows, std_const) = cfg.std.plan(reference, batch, seed, step)?;
    let n_std = rows.len();
    let (mut anchors, mut points, mut cdl_norm) = (Vec::new(), 0, 0.0);
    if let Some(c) = &cfg.cdl {
        let cdl = c.plan(reference, batch, seed, step)?;
        rows.extend(cdl.rows);
        (anchors, points, cdl_norm) = (cdl.anchors, c.points, cdl.norm);
    }
    Ok(RowPlan {
        rows,
        anchors,
        batch,
        n_std,
        points,
        lambda_std: cfg.lambda_std,
        lambda_cdl: cfg.lambda_cdl,
        cdl_norm,
        std_const,
    })
}

/// Rank `rank`'s contiguous block of `n` items split over `ranks` (sizes differ by at most one).
pub fn shard_range(n: usize, rank: usize, ranks: usize) -> std::ops::Range<usize> {
    let ranks = ranks.max(1);
    n * rank / ranks..n * (rank + 1) / ranks
}

// ---------------------------------------------------------------------------------------------
// CPU mirror of the row construction (what the GPU gathers)

impl RowPlan {
    /// Number of rows R.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the plan has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// K.
    pub fn anchors_len(&self) -> usize {
        self.anchors.len()
    }

    /// Index of the p-row of (k, m); the q-row is this plus K·M.
    pub fn p_row(&self, k: usize, m: usize) -> usize {
        self.n_std + k * self.points + m
    }

    /// The rows as the GPU reads them (`ops::rows`): coefficients rounded once to f32.
    pub fn row_specs(&self) -> Vec<RowSpec> {
        self.rows
            .iter()
            .map(|r| RowSpec {
                example: r.example,
                a: r.sqrt_sig_pos as f32,
                b: r.sqrt_sig_neg as f32,
                y_x: r.y_x as f32,
                y_n0: r.y_n0 as f32,
                noise: r.noise.words,
                noise0: r.noise0.words,
            })
            .collect()
    }

    /// The part of this plan that rank `rank` of `ranks` evaluates in data-parallel training
    /// (`train::dist`): a contiguous block of the standard rows and a contiguous block of the
    /// anchors with all 2M of their rows, so each anchor's logit stays on one rank. Weights and
    /// normalisations stay those of the whole step and `std_const` goes to rank 0 alone, so the
    /// shards' losses and row weights sum to the whole plan's (same rows, same noise streams,
    /// same example indices into the whole batch). The layout is a plan's (std, p-rows, q-rows).
    pub fn shard(&self, rank: usize, ranks: usize) -> RowPlan {
        let (s, k, m) = (self.n_std, self.anchors.len(), self.points);
        let std = shard_range(s, rank, ranks);
        let an = shard_range(k, rank, ranks);
        let p = |k: usize| self.p_row(k, 0);
        let mut rows = self.rows[std.clone()].to_vec();
        rows.extend_from_slice(&self.rows[p(an.start)..p(an.end)]);
        rows.extend_from_slice(&self.rows[p(an.start) + k * m..p(an.end) + k * m]);
        RowPlan {
            rows,
            anchors: self.anchors[an].to_vec(),
            n_std: std.len(),
            std_const: if rank == 0 { self.std_const } else { 0.0 },
            ..*self
        }
    }

    /// Sizes and scalars of the loss head (`ops::loss`, `reference::loss`) for this plan.
    pub fn head(&self) -> LossHead<f64> {
        LossHead {
            n_std: self.n_std,
            anchors: self.anchors.len(),
            points: self.points,
            lambda_std: self.lambda_std,
            lambda_cdl: self.lambda_cdl,
            cdl_norm: self.cdl_norm,
            std_const: self.std_const,
        }
    }

    /// The anchor's y = y_x·x + y_n0·ε₀ (ε₀ from the anchor's stream). x, out: (d,)
    pub fn anchor_y(&self, k: usize, x: &[f64], out: &mut [f64]) -> Result<()> {
        let an = self.anchors.get(k).ok_or_else(|| DiffusionError::Shape(format!("anchor {k} out of range")))?;
        if out.len() != x.len() {
            return Err(DiffusionError::Shape("anchor_y: x and out lengths differ".into()));
        }
        row_normals(out, an.noise0);
        for (o, &xi) in out.iter_mut().zip(x) {
            *o = an.y_x * xi + an.y_n0 * *o;
        }
        Ok(())
    }

    /// CPU reference of row r's input and target from its example x (`Row`'s formulas, with
    /// the GPU's Philox normals). x, input, target: (d,)
    pub fn row_input(&self, r: usize, x: &[f64], input: &mut [f64], target: &mut [f64]) -> Result<()> {
        let row =
            self.rows.get(r).ok_or_else(|| DiffusionError::Shape(format!("row {r} out of range ({})", self.len())))?;
        let d = x.len();
        if input.len() != d || target.len() != d {
            return Err(DiffusionError::Shape(format!(
                "row_input: x {d}, input {}, target {}",
                input.len(),
                target.len()
            )));
        }
        row_normals(target, row.noise);
        row_normals(input, row.noise0);
        for i in 0..d {
            let y = row.y_x * x[i] + row.y_n0 * input[i];
            input[i] = row.sqrt_sig_pos * y + row.sqrt_sig_neg * target[i];
        }
        Ok(())
    }
}
