//! The standard loss L_std (math.md §4): which one (`StdLoss`), the levels it trains at, and its
//! B rows. Each loss's level draw and row weight live in its own module (`ddpm`, `itd`, `edm`,
//! `song`); this file names them and builds what their rows share: row b reads example b, its
//! input and conditioning at the drawn level α, scale 1, noise stream (`TAG_STD_NOISE`, b).

use super::{ddpm, edm, host, itd, song, stream, Row, RowKind, HOST_STD_LEVELS, TAG_STD_NOISE};
use crate::diffusion::likelihood::RefGaussian;
use crate::diffusion::logistic::TruncLogistic;
use crate::diffusion::logsnr::sqrt_sigmoid;
use crate::diffusion::rng::HostRng;
use crate::diffusion::schedule::{EdmPrecond, VeSchedule, VpSde};
use crate::diffusion::Result;

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
            Self::Ddpm => Some(ddpm::alpha_range()),
            Self::Itd { q } => Some(q.range()),
            Self::Edm { p_mean, p_std, .. } => Some(edm::alpha_range(*p_mean, *p_std)),
            Self::VpSong(vp) => Some(song::vp_alpha_range(vp)),
            Self::VeSong(ve) | Self::EdmVe { ve, .. } => Some(ve.alpha_range()),
        }
    }

    /// The standard rows of step `step` (B of them, none for `None`) and the constant part of
    /// L_std (h_G for ITD with a reference, else 0).
    pub(super) fn plan(
        &self,
        reference: Option<&RefGaussian>,
        batch: usize,
        seed: u64,
        step: u32,
    ) -> Result<(Vec<Row>, f64)> {
        Ok(match self {
            Self::None => (Vec::new(), 0.0),
            Self::Ddpm => (ddpm::rows(batch, seed, step)?, 0.0),
            Self::Itd { q } => (itd::rows(q, reference, batch, seed, step)?, itd::constant(reference)),
            Self::Edm { p_mean, p_std, precond } => (edm::rows(*p_mean, *p_std, precond, batch, seed, step)?, 0.0),
            Self::VpSong(vp) => (song::vp_rows(vp, batch, seed, step)?, 0.0),
            Self::VeSong(ve) => (song::ve_rows(ve, batch, seed, step)?, 0.0),
            Self::EdmVe { ve, precond } => (edm::ve_rows(ve, precond, batch, seed, step)?, 0.0),
        })
    }
}

/// One standard row's draw: its level α, the static weight of E_r and the control variate.
pub(super) struct Draw {
    pub alpha: f64,
    pub weight: f64,
    pub offset: f64,
}

/// The B rows of a standard loss: row b is example b at the b-th `draw`, which reads the
/// step's `HOST_STD_LEVELS` stream in row order.
pub(super) fn rows(
    batch: usize,
    seed: u64,
    step: u32,
    mut draw: impl FnMut(&mut HostRng) -> Result<Draw>,
) -> Result<Vec<Row>> {
    let mut rng = host(seed, step, HOST_STD_LEVELS);
    (0..batch)
        .map(|b| {
            let Draw { alpha, weight, offset } = draw(&mut rng)?;
            let noise = stream(seed, step, TAG_STD_NOISE, b);
            Ok(Row {
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
            })
        })
        .collect()
}
