//! The CDL term (math.md §3): its configuration, the K anchors (ζ, fair-coin label, corruption
//! ε₀) and the 2KM rows in the [2, K, M] order of math.md §3.4: p-rows at α with scale 1, then
//! q-rows conditioned at α′(α, ζ) with scale c (math.md §2.3), each of weight w(α)/(2M).

use super::{host, stream, Row, RowKind, HOST_CDL_LEVELS, HOST_CDL_LEVELS_Q, HOST_LABELS, HOST_ZETA};
use super::{TAG_CDL_CORRUPT, TAG_CDL_NOISE};
use crate::diffusion::likelihood::RefGaussian;
use crate::diffusion::logistic::TruncLogistic;
use crate::diffusion::logsnr::{shifted_level, sqrt_sigmoid};
use crate::diffusion::{DiffusionError, Result};
use crate::philox::Stream;

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

/// The CDL part of a step's plan.
pub(super) struct CdlRows {
    /// p-rows then q-rows. (2KM,)
    pub rows: Vec<Row>,
    /// (K,)
    pub anchors: Vec<Anchor>,
    /// 1/B or 1/K.
    pub norm: f64,
}

impl CdlConfig {
    /// Draws the anchors and the 2KM rows of step `step` for a batch of B examples. `reference`
    /// gives the rows mmse_G offsets with independent draws only (paired ones cancel).
    pub(super) fn plan(&self, reference: Option<&RefGaussian>, batch: usize, seed: u64, step: u32) -> Result<CdlRows> {
        let (k_n, m_n) = (self.anchors, self.points);
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
        self.q.validate()?;
        self.zeta.validate()?;
        let norm = match self.norm {
            CdlNorm::SumOverBatch => 1.0 / batch as f64,
            CdlNorm::MeanOverAnchors => 1.0 / k_n as f64,
        };
        let anchors = self.anchors(seed, step);
        let wdiv = 2.0 * m_n as f64;
        let reference = if self.paired_draws { None } else { reference };
        let row = |kind: RowKind, k: usize, m: usize, u: f64, id: usize| {
            let an = anchors[k];
            let (alpha, w) = self.q.sample(u);
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
        let (mut pr, mut qr) = (host(seed, step, HOST_CDL_LEVELS), host(seed, step, HOST_CDL_LEVELS_Q));
        let p_u: Vec<f64> = (0..k_n * m_n).map(|_| pr.next_uniform()).collect();
        let mut rows = Vec::with_capacity(2 * k_n * m_n);
        for (i, &u) in p_u.iter().enumerate() {
            rows.push(row(RowKind::CdlP, i / m_n, i % m_n, u, i));
        }
        for (i, &u_p) in p_u.iter().enumerate() {
            let (u, id) = if self.paired_draws { (u_p, i) } else { (qr.next_uniform(), k_n * m_n + i) };
            rows.push(row(RowKind::CdlQ, i / m_n, i % m_n, u, id));
        }
        Ok(CdlRows { rows, anchors, norm })
    }

    /// The K anchors: ζ_k, the fair-coin label and y = x_k (clean) or sqrt(s(ζ))·x_k +
    /// sqrt(s(−ζ))·ε₀_k (noisy).
    fn anchors(&self, seed: u64, step: u32) -> Vec<Anchor> {
        let (mut zr, mut lr) = (host(seed, step, HOST_ZETA), host(seed, step, HOST_LABELS));
        (0..self.anchors)
            .map(|k| {
                let zeta = self.zeta.sample(zr.next_uniform());
                // where(rand < 0.5, −1, +1) as in the math.md §3.4 pseudo-code.
                let label = if lr.next_uniform() < 0.5 { -1.0 } else { 1.0 };
                let (y_x, y_n0) = if label < 0.0 { (sqrt_sigmoid(zeta), sqrt_sigmoid(-zeta)) } else { (1.0, 0.0) };
                Anchor { example: k as u32, label, zeta, y_x, y_n0, noise0: stream(seed, step, TAG_CDL_CORRUPT, k) }
            })
            .collect()
    }
}
