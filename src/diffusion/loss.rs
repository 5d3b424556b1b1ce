//! Training losses as weighted rows: the host plans a step's rows, the GPU returns per-row squared
//! errors, and a pure function turns them into the loss, the CDL logits and the per-row gradient
//! weights (math.md §3, §4, §9b; ARCHITECTURE.md "The training step").
//!
//! What it is: `LossConfig` (a standard loss — DDPM, ITD, EDM, Song VP/VE — optionally plus the CDL
//! term), `plan_step` (draws every level, weight, label and noise stream id of one step on the host,
//! in f64, from counter-based Philox streams), and `evaluate` (row errors → loss and dL/dE_r).
//!
//! What it is not: the network, the weighted-MSE kernel, or the optimizer. No gradient flows
//! through the row weights: they are constants of the backward pass (math.md §9b step 3).
//!
//! # Rows
//! A row is one network evaluation. With x_b the batch example `example`, ε₀ the anchor's
//! corruption noise and ε the row's noise (both d-vectors drawn from Philox streams, see below):
//!
//! ```text
//! y      = y_x·x_b + y_n0·ε₀                        (std rows and clean anchors: y = x_b)
//! input  = sqrt_sig_pos·y + sqrt_sig_neg·ε           (the VP channel at the input level, §1.1)
//! target = ε
//! E_r    = ||target − scale·ε̂_θ(input, alpha)||²     (alpha = the conditioning level)
//! ```
//!
//! The loss is L = λ_std·L_std + λ_cdl·L_cdl with
//! L_std = std_const + Σ_{std rows} weight_r·(E_r − offset_r), and for anchor k
//! f_k = Σ_{q rows of k} weight_r·(E_r − offset_r) − Σ_{p rows of k} weight_r·(E_r − offset_r),
//! ℓ_k = softplus(−label_k·f_k), L_cdl = norm·Σ_k ℓ_k (norm = 1/B or 1/K). `offset` (mmse_G) and
//! `std_const` (h_G) are control-variate constants: they change the loss value, never a gradient.
//!
//! # Row ordering contract (R = S + 2KM rows, S = B when a standard loss is on, else 0)
//! - rows [0, S): standard rows; row b reads example b;
//! - rows [S, S+KM): CDL p-rows, ordered [K, M]: row S + k·M + m is anchor k, point m, at level α;
//! - rows [S+KM, S+2KM): CDL q-rows, ordered [K, M]: row S + KM + k·M + m, at level α′, scale c.
//!
//! The CDL block is the [2, K, M] layout of the math.md §3.4 pseudo-code. Anchor k reads example k
//! (x[:K]). With paired draws a q-row has the same input and target as its p-row; with independent
//! draws (official) it has its own α, weight and noise.
//!
//! # Noise streams
//! Every random number is a pure function of (seed, step, tag, id) through
//! `philox::Stream::new(seed, [step, tag, id])`:
//! - `TAG_HOST`: host draws (id = `HOST_*`: levels, ζ, labels), f64 via `rng::HostRng`;
//! - `TAG_STD_NOISE`, id = b: the target ε of standard row b;
//! - `TAG_CDL_NOISE`, id = k·M + m (p-row; also the q-row when paired) or KM + k·M + m (q-row,
//!   independent draws): the target ε of a CDL row;
//! - `TAG_CDL_CORRUPT`, id = k: ε₀ of anchor k.
//!
//! Element i of a row's noise is normal i of its stream (`philox::philox_normal`), so
//! the GPU and `RowPlan::row_input` draw identical numbers.

use super::likelihood::RefGaussian;
use super::logistic::TruncLogistic;
use super::logsnr::{shifted_level, sigmoid, softplus, sqrt_sigmoid};
use super::rng::{row_normals, HostRng};
use super::rows::{LossHead, RowSpec};
use super::schedule::{alpha_of_sigma, DdpmSchedule, EdmPrecond, VeSchedule, VpSde};
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

// ---------------------------------------------------------------------------------------------
// Configuration

/// The standard (denoising) loss, L_std (math.md §4). Each is a weighted ε-MSE over B rows.
#[derive(Clone, Debug, PartialEq)]
pub enum StdLoss {
    /// No standard rows (CDL alone).
    None,
    /// DDPM (math.md §4.1) [Ho et al. 2020]: t ~ U{0..T−1} of Ho's linear schedule, α = logit ᾱ_t,
    /// weight 1/B (sum over pixels, mean over the batch, as the CDL code).
    Ddpm,
    /// ITD (math.md §4.2, §2.2) — the official CDL L_std: α ~ truncated logistic q, weight w(α)/(2B);
    /// with `LossConfig::reference` the value also carries h_G and −mmse_G(α) (an NLL estimate).
    Itd {
        /// Integration distribution of α.
        q: TruncLogistic,
    },
    /// EDM (math.md §4.3) [Karras et al. 2022, `EDMLoss`]: ln σ ~ N(p_mean, p_std²), α = −2 ln σ
    /// (so α ~ N(2.4, 2.4²) by default), weight (1 + e^{−α}/σ_d²)/B on the ε-error.
    Edm {
        /// Mean of ln σ, −1.2.
        p_mean: f64,
        /// Std of ln σ, 1.2.
        p_std: f64,
        /// σ_data (0.5) for the weight.
        precond: EdmPrecond,
    },
    /// Song VP (math.md §4.3, EDM `VPLoss`): t ~ U(eps_t, 1), α = α_VP(t), weight 1/B (= 1/σ² on D).
    VpSong(VpSde),
    /// Song VE (math.md §4.3, EDM `VELoss`): σ = σ_min(σ_max/σ_min)^u, weight 1/B.
    VeSong(VeSchedule),
    /// EDM's loss weighting over the VE noise range (the paper's "VE" baseline with EDM's
    /// preconditioning, math.md §4.3): σ = σ_min(σ_max/σ_min)^u, so α is uniform on
    /// [−2 ln σ_max, −2 ln σ_min], weight (1 + e^{−α}/σ_d²)/B on the ε-error.
    EdmVe {
        /// σ range of Song's VE (0.02, 100).
        ve: VeSchedule,
        /// σ_data for the weight.
        precond: EdmPrecond,
    },
}

/// Standard normal quantile of the central 99.9 %: a normal level distribution's "range" is
/// mean ± 3.29 standard deviations (what `LossConfig::alpha_range` records for EDM's loss).
pub const NORMAL_RANGE_Z: f64 = 3.290526731491926;

impl StdLoss {
    /// EDM's defaults: ln σ ~ N(−1.2, 1.2²), σ_d = 0.5.
    pub fn edm() -> Self {
        Self::Edm { p_mean: -1.2, p_std: 1.2, precond: EdmPrecond::default() }
    }

    /// The log-SNR levels this loss trains the network at, (lo, hi): the exact support of the
    /// bounded distributions (DDPM's schedule, ITD's truncated logistic, Song VP/VE, EDM-VE),
    /// the central 99.9 % of EDM's normal ln σ. None without standard rows.
    pub fn alpha_range(&self) -> Option<(f64, f64)> {
        match self {
            Self::None => None,
            Self::Ddpm => {
                let l = DdpmSchedule::ho().logsnr;
                Some((
                    l.iter().copied().fold(f64::INFINITY, f64::min),
                    l.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                ))
            }
            Self::Itd { q } => Some(q.range()),
            // α = −2 ln σ: the high end of ln σ is the low end of α.
            Self::Edm { p_mean, p_std, .. } => {
                Some((-2.0 * (p_mean + NORMAL_RANGE_Z * p_std), -2.0 * (p_mean - NORMAL_RANGE_Z * p_std)))
            }
            Self::VpSong(vp) => Some((vp.alpha(1.0), vp.alpha(vp.eps_t))),
            Self::VeSong(ve) | Self::EdmVe { ve, .. } => Some(ve.alpha_range()),
        }
    }
}

/// Distribution of the CDL corruption level ζ (math.md §3.1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ZetaDist {
    /// Truncated logistic; CIFAR default (10.5, 1.5, 3), ζ ∈ [6, 15].
    Logistic(TruncLogistic),
    /// ζ ~ U[lo, hi] (CDL `logsnr_uniform_selector`; [6, 15]).
    Uniform {
        /// Lower end.
        lo: f64,
        /// Upper end.
        hi: f64,
    },
}

impl ZetaDist {
    /// ζ ~ U[6, 15].
    pub const UNIFORM_CIFAR: Self = Self::Uniform { lo: 6.0, hi: 15.0 };

    fn validate(&self) -> Result<()> {
        match self {
            Self::Logistic(q) => q.validate(),
            Self::Uniform { lo, hi } => {
                if lo.is_finite() && hi.is_finite() && lo < hi {
                    Ok(())
                } else {
                    Err(DiffusionError::Config(format!("zeta uniform range [{lo}, {hi}] is empty")))
                }
            }
        }
    }

    fn sample(&self, u: f64) -> f64 {
        match self {
            Self::Logistic(q) => q.sample(u).0,
            Self::Uniform { lo, hi } => lo + (hi - lo) * u,
        }
    }
}

/// How Σ_k ℓ_k is normalised (math.md §3.3, §9 pitfall 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CdlNorm {
    /// The authors' code: Σ_{k=1..K} ℓ_k / B (K/B times a per-anchor mean). Default.
    SumOverBatch,
    /// Per-anchor mean: Σ_k ℓ_k / K (B/K times larger than the authors').
    MeanOverAnchors,
}

/// The CDL term (math.md §3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CdlConfig {
    /// K, anchors per step (official: 2); anchor k is example k, so K ≤ B.
    pub anchors: usize,
    /// M, integration points per anchor and density term (official: M = B = 64).
    pub points: usize,
    /// Integration distribution of α (CIFAR fine-tuning: (4, 4, 3)).
    pub q: TruncLogistic,
    /// Corruption level ζ (CIFAR: truncated logistic (10.5, 1.5, 3)).
    pub zeta: ZetaDist,
    /// Common random numbers for the two density terms (math.md §3.2 recommendation, default true);
    /// false = the official independent draws, keeping mmse_G terms when a reference is given.
    pub paired_draws: bool,
    /// Normalisation of Σ_k ℓ_k.
    pub norm: CdlNorm,
}

impl Default for CdlConfig {
    fn default() -> Self {
        Self {
            anchors: 2,
            points: 64,
            q: TruncLogistic::CDL_CIFAR,
            zeta: ZetaDist::Logistic(TruncLogistic::CDL_ZETA_CIFAR),
            paired_draws: true,
            norm: CdlNorm::SumOverBatch,
        }
    }
}

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

/// One network evaluation of a step; see the module doc for the input/target/error formulas.
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

/// One CDL anchor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Anchor {
    /// Batch example (= k).
    pub example: u32,
    /// +1 clean (y = x), −1 noisy (y ~ p_ζ), by a fair coin (math.md §3.1).
    pub label: f64,
    /// Corruption level ζ (drawn for every anchor; the q-rows use it even when clean).
    pub zeta: f64,
    /// y = y_x·x + y_n0·ε₀.
    pub y_x: f64,
    /// See `y_x`.
    pub y_n0: f64,
    /// Stream of ε₀.
    pub noise0: Stream,
}

/// A planned step: rows in the documented order plus what `evaluate` needs.
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

fn stream(seed: u64, step: u32, tag: u32, id: usize) -> Stream {
    Stream::new(seed, [step, tag, id as u32])
}

/// Draws all levels, weights, labels and stream ids of step `step` (math.md §3.4, §9b).
/// `batch` is B, the number of examples in the step.
pub fn plan_step(cfg: &LossConfig, batch: usize, seed: u64, step: u32) -> Result<RowPlan> {
    if batch == 0 {
        return Err(DiffusionError::Config("batch size B must be >= 1".into()));
    }
    if batch > u32::MAX as usize {
        return Err(DiffusionError::Config(format!("batch size {batch} exceeds u32")));
    }
    finite("lambda_std", cfg.lambda_std)?;
    finite("lambda_cdl", cfg.lambda_cdl)?;
    let bf = batch as f64;
    let host = |id: u32| HostRng::new(seed, [step, TAG_HOST, id]);
    let mut rows = Vec::new();
    let mut std_const = 0.0;

    // ---- standard rows [0, S)
    let n_std = if cfg.std == StdLoss::None { 0 } else { batch };
    let mut rng = host(HOST_STD_LEVELS);
    // α_t of Ho's schedule, built only for the DDPM loss. (T,)
    let ddpm_logsnr = if cfg.std == StdLoss::Ddpm { DdpmSchedule::ho().logsnr } else { Vec::new() };
    match &cfg.std {
        StdLoss::Itd { q } => {
            q.validate()?;
            if let Some(r) = &cfg.reference {
                std_const = r.h_g();
            }
        }
        StdLoss::Edm { p_mean, p_std, precond } => {
            finite("edm p_mean", *p_mean)?;
            if !(p_std.is_finite() && *p_std > 0.0 && precond.sigma_data > 0.0) {
                return Err(DiffusionError::Config("EDM p_std and sigma_data must be > 0".into()));
            }
        }
        StdLoss::VpSong(vp) => vp.validate()?,
        StdLoss::VeSong(ve) => ve.validate()?,
        StdLoss::EdmVe { ve, precond } => {
            ve.validate()?;
            if !(precond.sigma_data.is_finite() && precond.sigma_data > 0.0) {
                return Err(DiffusionError::Config("EDM sigma_data must be > 0".into()));
            }
        }
        StdLoss::None | StdLoss::Ddpm => {}
    }
    for b in 0..n_std {
        let (alpha, weight, offset) = match &cfg.std {
            StdLoss::None => (0.0, 0.0, 0.0),
            StdLoss::Ddpm => {
                // t ~ U{0..T−1}: floor(u·T) with u in (0, 1).
                let n_t = ddpm_logsnr.len();
                let t = ((rng.next_uniform() * n_t as f64) as usize).min(n_t.saturating_sub(1));
                let a = ddpm_logsnr
                    .get(t)
                    .copied()
                    .ok_or_else(|| DiffusionError::Config("DDPM schedule is empty".into()))?;
                (a, 1.0 / bf, 0.0)
            }
            StdLoss::Itd { q } => {
                let (a, w) = q.sample(rng.next_uniform());
                let off = cfg.reference.as_ref().map_or(0.0, |r| r.mmse_g(a));
                (a, w / (2.0 * bf), off)
            }
            StdLoss::Edm { p_mean, p_std, precond } => {
                let ln_sigma = p_mean + p_std * rng.next_normal();
                let a = -2.0 * ln_sigma;
                (a, precond.eps_weight(a) / bf, 0.0)
            }
            StdLoss::VpSong(vp) => {
                let t = vp.eps_t + (1.0 - vp.eps_t) * rng.next_uniform();
                (vp.alpha(t), 1.0 / bf, 0.0)
            }
            StdLoss::VeSong(ve) => (alpha_of_sigma(ve.sigma(rng.next_uniform())), 1.0 / bf, 0.0),
            StdLoss::EdmVe { ve, precond } => {
                let a = alpha_of_sigma(ve.sigma(rng.next_uniform()));
                (a, precond.eps_weight(a) / bf, 0.0)
            }
        };
        let noise = stream(seed, step, TAG_STD_NOISE, b);
        rows.push(Row {
            kind: RowKind::Std,
            example: b as u32,
            anchor: b as u32,
            point: 0,
            alpha,
            input_alpha: alpha,
            sqrt_sig_pos: sqrt_sigmoid(alpha),
            sqrt_sig_neg: sqrt_sigmoid(-alpha),
            y_x: 1.0,
            y_n0: 0.0,
            scale: 1.0,
            weight,
            offset,
            noise,
            noise0: noise,
        });
    }

    // ---- CDL rows [S, S+2KM)
    let mut anchors = Vec::new();
    let (mut points, mut cdl_norm) = (0, 0.0);
    if let Some(c) = &cfg.cdl {
        let (k_n, m_n) = (c.anchors, c.points);
        if k_n == 0 || m_n == 0 {
            return Err(DiffusionError::Config(format!(
                "CDL needs K >= 1 anchors and M >= 1 points, got K = {k_n}, M = {m_n}"
            )));
        }
        if k_n > batch {
            return Err(DiffusionError::Config(format!("CDL anchors K = {k_n} exceed batch B = {batch}")));
        }
        if 2 * k_n * m_n > u32::MAX as usize {
            return Err(DiffusionError::Config("CDL K*M exceeds u32 stream ids".into()));
        }
        c.q.validate()?;
        c.zeta.validate()?;
        points = m_n;
        cdl_norm = match c.norm {
            CdlNorm::SumOverBatch => 1.0 / bf,
            CdlNorm::MeanOverAnchors => 1.0 / k_n as f64,
        };
        let (mut zr, mut lr) = (host(HOST_ZETA), host(HOST_LABELS));
        for k in 0..k_n {
            let zeta = c.zeta.sample(zr.next_uniform());
            // where(rand < 0.5, −1, +1) as in the math.md §3.4 pseudo-code.
            let label = if lr.next_uniform() < 0.5 { -1.0 } else { 1.0 };
            let (y_x, y_n0) = if label < 0.0 { (sqrt_sigmoid(zeta), sqrt_sigmoid(-zeta)) } else { (1.0, 0.0) };
            anchors.push(Anchor {
                example: k as u32,
                label,
                zeta,
                y_x,
                y_n0,
                noise0: stream(seed, step, TAG_CDL_CORRUPT, k),
            });
        }
        let wdiv = 2.0 * m_n as f64;
        let reference = if c.paired_draws { None } else { cfg.reference.as_ref() };
        let cdl_row = |kind: RowKind, k: usize, m: usize, u: f64, id: usize| {
            let an = anchors[k];
            let (alpha, w) = c.q.sample(u);
            let sl = shifted_level(alpha, an.zeta);
            let (level, scale) = match kind {
                RowKind::CdlQ => (sl.alpha_prime, sl.c),
                _ => (alpha, 1.0),
            };
            Row {
                kind,
                example: an.example,
                anchor: k as u32,
                point: m as u32,
                alpha: level,
                input_alpha: alpha,
                sqrt_sig_pos: sqrt_sigmoid(alpha),
                sqrt_sig_neg: sqrt_sigmoid(-alpha),
                y_x: an.y_x,
                y_n0: an.y_n0,
                scale,
                weight: w / wdiv,
                offset: reference.map_or(0.0, |r| r.mmse_g(alpha)),
                noise: stream(seed, step, TAG_CDL_NOISE, id),
                noise0: an.noise0,
            }
        };
        let (mut pr, mut qr) = (host(HOST_CDL_LEVELS), host(HOST_CDL_LEVELS_Q));
        let p_u: Vec<f64> = (0..k_n * m_n).map(|_| pr.next_uniform()).collect();
        for (i, &u) in p_u.iter().enumerate() {
            rows.push(cdl_row(RowKind::CdlP, i / m_n, i % m_n, u, i));
        }
        for (i, &u_p) in p_u.iter().enumerate() {
            let (u, id) = if c.paired_draws { (u_p, i) } else { (qr.next_uniform(), k_n * m_n + i) };
            rows.push(cdl_row(RowKind::CdlQ, i / m_n, i % m_n, u, id));
        }
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

// ---------------------------------------------------------------------------------------------
// CPU mirror of the row construction (what the GPU gathers), and the weighted-MSE head

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

    /// CPU reference of row r's input and target from its example x (module doc formulas, with
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

/// E_r = ||target − scale·ε̂||². target, eps_hat: (d,)
pub fn row_error(target: &[f64], eps_hat: &[f64], scale: f64) -> f64 {
    target.iter().zip(eps_hat).map(|(t, e)| (t - scale * e) * (t - scale * e)).sum()
}

/// Backward of the weighted-MSE head: deps_hat = dL/dE_r·(−2·scale)·(target − scale·ε̂) (math.md §9b).
/// deps_hat, target, eps_hat: (d,)
pub fn row_error_backward(deps_hat: &mut [f64], dl_de: f64, target: &[f64], eps_hat: &[f64], scale: f64) {
    for ((g, t), e) in deps_hat.iter_mut().zip(target).zip(eps_hat) {
        *g = dl_de * (-2.0 * scale) * (t - scale * e);
    }
}

// ---------------------------------------------------------------------------------------------
// Row errors → loss, logits, row weights (math.md §3.3, §9b)

/// Everything the host learns from one step's row errors.
#[derive(Clone, Debug, PartialEq)]
pub struct StepLoss {
    /// L = λ_std·L_std + λ_cdl·L_cdl.
    pub total: f64,
    /// L_std (before λ_std), including the control-variate constants.
    pub std: f64,
    /// L_cdl (before λ_cdl) = norm·Σ_k ℓ_k.
    pub cdl: f64,
    /// f_k ≈ log p(y_k) − log p_ζ(y_k), nats. (K,)
    pub logits: Vec<f64>,
    /// ℓ_k = softplus(−label_k·f_k). (K,)
    pub anchor_losses: Vec<f64>,
    /// dL/dE_r, detached (may be negative for p-rows or q-rows). (R,)
    pub row_weights: Vec<f64>,
}

/// dℓ/df for ℓ = softplus(−y·f): −y·s(−y·f) (stable for any f).
fn dsoftplus(label: f64, f: f64) -> f64 {
    -label * sigmoid(-label * f)
}

/// Turns per-row squared errors E_r (in the plan's row order) into the loss, the logits and the
/// per-row gradient weights dL/dE_r (math.md §9b):
/// - std rows: λ_std·weight_r;
/// - with g_k = λ_cdl·norm·dℓ_k/df_k = −λ_cdl·norm·y_k·s(−y_k f_k):
///   q-rows g_k·weight_r, p-rows −g_k·weight_r.
///
/// Non-finite inputs or results return `NonFinite` (never a panic, never a NaN weight).
/// errors: (R,)
pub fn evaluate(plan: &RowPlan, errors: &[f64]) -> Result<StepLoss> {
    let r_n = plan.rows.len();
    if errors.len() != r_n {
        return Err(DiffusionError::Shape(format!("evaluate: {} row errors for a plan of {r_n} rows", errors.len())));
    }
    if let Some(r) = errors.iter().position(|e| !e.is_finite()) {
        return Err(DiffusionError::NonFinite(format!("row {r} error E = {}", errors[r])));
    }
    let mut row_weights = vec![0.0; r_n];
    let mut l_std = plan.std_const;
    for r in 0..plan.n_std {
        let row = &plan.rows[r];
        l_std += row.weight * (errors[r] - row.offset);
        row_weights[r] = plan.lambda_std * row.weight;
    }
    let (k_n, m_n) = (plan.anchors.len(), plan.points);
    let (mut logits, mut anchor_losses) = (Vec::with_capacity(k_n), Vec::with_capacity(k_n));
    let km = k_n * m_n;
    if plan.n_std + 2 * km != r_n {
        return Err(DiffusionError::Shape(format!(
            "evaluate: plan has {r_n} rows, expected S + 2KM = {}",
            plan.n_std + 2 * km
        )));
    }
    let mut l_cdl = 0.0;
    for (k, an) in plan.anchors.iter().enumerate() {
        let mut f = 0.0;
        for m in 0..m_n {
            let (p, q) = (plan.p_row(k, m), plan.p_row(k, m) + km);
            let (rp, rq) = (&plan.rows[p], &plan.rows[q]);
            f += rq.weight * (errors[q] - rq.offset) - rp.weight * (errors[p] - rp.offset);
        }
        if !f.is_finite() {
            return Err(DiffusionError::NonFinite(format!("anchor {k} logit f = {f}")));
        }
        let ell = softplus(-an.label * f);
        let g = plan.lambda_cdl * plan.cdl_norm * dsoftplus(an.label, f);
        for m in 0..m_n {
            let (p, q) = (plan.p_row(k, m), plan.p_row(k, m) + km);
            row_weights[q] = g * plan.rows[q].weight;
            row_weights[p] = -g * plan.rows[p].weight;
        }
        l_cdl += ell;
        logits.push(f);
        anchor_losses.push(ell);
    }
    l_cdl *= plan.cdl_norm;
    let total = plan.lambda_std * l_std + plan.lambda_cdl * l_cdl;
    if !total.is_finite() {
        return Err(DiffusionError::NonFinite(format!("total loss = {total}")));
    }
    if let Some(r) = row_weights.iter().position(|w| !w.is_finite()) {
        return Err(DiffusionError::NonFinite(format!("row {r} weight = {}", row_weights[r])));
    }
    Ok(StepLoss { total, std: l_std, cdl: l_cdl, logits, anchor_losses, row_weights })
}
