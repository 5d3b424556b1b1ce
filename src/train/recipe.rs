//! Named losses as the CLI and the web page offer them (`LossKind`: `--loss ddpm|itd|cdl|edm|…`),
//! turned into a `LossConfig` with the data-dependent constants of math.md: the ITD/CDL
//! integration distribution from the data's variances (§1.5), ζ for the toys (§3.1), the data
//! reference Gaussian (§2.1). Defaults cover every level a sampler queries (`sampler_range`,
//! math.md §1.5, §4.4); every choice can be overridden (`Levels`).

use std::fmt;
use std::str::FromStr;

use crate::diffusion::likelihood::RefGaussian;
use crate::diffusion::logistic::TruncLogistic;
use crate::diffusion::loss::{CdlConfig, CdlNorm, LossConfig, StdLoss, ZetaDist};
use crate::diffusion::sampler::SamplerConfig;
use crate::diffusion::schedule::{EdmPrecond, VeSchedule, VpSde};
use crate::diffusion::DiffusionError;

/// A standard loss, optionally with the Contrastive Diffusion Loss on top.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// DDPM ε-MSE, uniform t (§4.1).
    Ddpm,
    /// ITD: logistic α with importance weights (§4.2).
    Itd,
    /// ITD + CDL, the paper's objective (§3.3).
    Cdl,
    /// EDM's loss (§4.3): ln σ ~ N(−1.2, 1.2²), weight 1 + σ²/σ_d²; the paper's "VP" baseline
    /// when the network has EDM's preconditioning.
    Edm,
    /// EDM's loss + CDL (§4.4).
    EdmCdl,
    /// EDM's weighting over the VE σ range [0.02, 100] (the paper's "VE" baseline, §4.3).
    EdmVe,
    /// EDM-VE + CDL (§4.4).
    EdmVeCdl,
    /// Song VP (§4.3).
    Vp,
    /// Song VE (§4.3).
    Ve,
}

impl LossKind {
    /// Every kind, in the order help texts list them.
    pub const ALL: [LossKind; 9] =
        [Self::Ddpm, Self::Itd, Self::Cdl, Self::Edm, Self::EdmCdl, Self::EdmVe, Self::EdmVeCdl, Self::Vp, Self::Ve];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddpm => "ddpm",
            Self::Itd => "itd",
            Self::Cdl => "cdl",
            Self::Edm => "edm",
            Self::EdmCdl => "edm-cdl",
            Self::EdmVe => "edm-ve",
            Self::EdmVeCdl => "edm-ve-cdl",
            Self::Vp => "vp",
            Self::Ve => "ve",
        }
    }

    /// Whether the CDL term is on.
    pub fn has_cdl(self) -> bool {
        matches!(self, Self::Cdl | Self::EdmCdl | Self::EdmVeCdl)
    }

    /// Whether the standard loss is EDM's weighting (the losses made for EDM's preconditioning).
    pub fn is_edm(self) -> bool {
        matches!(self, Self::Edm | Self::EdmCdl | Self::EdmVe | Self::EdmVeCdl)
    }

    /// The same standard loss without CDL (the baseline a CDL arm is compared with).
    pub fn base(self) -> Self {
        match self {
            Self::Cdl => Self::Itd,
            Self::EdmCdl => Self::Edm,
            Self::EdmVeCdl => Self::EdmVe,
            k => k,
        }
    }
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Configs and checkpoints store a loss by its CLI name (`name`), and read every `FromStr` alias.
impl serde::Serialize for LossKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for LossKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for LossKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.to_ascii_lowercase();
        let alias = match s.as_str() {
            "itd+cdl" => "cdl",
            "edm+cdl" => "edm-cdl",
            "edm-ve+cdl" => "edm-ve-cdl",
            other => other,
        };
        Self::ALL.into_iter().find(|k| k.name() == alias).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
            format!("unknown loss {s:?}; expected one of {}", names.join(", "))
        })
    }
}

/// The CDL knobs (math.md §3; defaults: K = 2, M = 64, λ = 1, paired draws, Σ/B).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CdlKnobs {
    /// K anchors per step.
    pub anchors: usize,
    /// M integration points per anchor.
    pub points: usize,
    /// λ_cdl.
    pub lambda: f64,
    /// Common random numbers for the two density terms (false: the authors' independent draws).
    pub paired: bool,
    /// Normalisation of Σ_k ℓ_k.
    pub norm: CdlNorm,
}

impl Default for CdlKnobs {
    fn default() -> Self {
        Self { anchors: 2, points: 64, lambda: 1.0, paired: true, norm: CdlNorm::SumOverBatch }
    }
}

/// The union of the levels the samplers query, (lo, hi): DDPM-1000 (and DDIM and the parallel
/// sampler over it) from α_999 = −10.12 to α_0 = 9.21, EDM Heun from σ = 80 (α = −8.76) to
/// σ = 0.002 (α = 12.43). From-scratch training covers it by default.
pub fn sampler_range() -> (f64, f64) {
    let ranges = [SamplerConfig::DDPM, SamplerConfig::Heun { steps: 18, churn: 0.0 }].map(|s| s.alpha_range());
    ranges.into_iter().flatten().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (a, b)| (lo.min(a), hi.max(b)))
}

/// `q` with its clip c widened (never narrowed) until [μ − cs, μ + cs] covers `range` (with a
/// margin of 1e-9 so that rounding in μ ± cs cannot leave the end out).
pub fn covering(q: TruncLogistic, range: (f64, f64)) -> TruncLogistic {
    let need = (q.mu - range.0).max(range.1 - q.mu) / q.s + 1e-9;
    TruncLogistic { c: q.c.max(need), ..q }
}

/// The noise-level choices of a run; `None` takes the default of the loss and the data.
///
/// Models here are trained from scratch, so every level a sampler queries must be trained
/// (math.md §4.4: the CDL paper's constants are for fine-tuning pretrained nets). The truncated
/// logistic of ITD and CDL keeps math.md's (μ, s) and widens its clip c until [μ − cs, μ + cs]
/// covers `sampler_range()`. EDM's loss keeps EDM's normal ln σ (that is what defines the
/// baseline); its preconditioning makes the network's share of ε̂ vanish at the far noise end
/// (a_out → σ_d/σ). The trained range is recorded (`LossConfig::alpha_range`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Levels {
    /// ITD / CDL integration distribution of α (truncated logistic μ, s, c). Default: math.md's
    /// (μ, s) for the data (§1.5) with c widened to cover `sampler_range()`.
    pub q: Option<TruncLogistic>,
    /// EDM's ln σ ~ N(p_mean, p_std²). Default EDM's (−1.2, 1.2).
    pub edm: Option<(f64, f64)>,
    /// σ_data of EDM's loss weight. Default: 1 for standardised 2-D points (the MLP's
    /// preconditioning), 0.5 for images in [−1, 1].
    pub sigma_data: Option<f64>,
}

/// The default integration distribution of ITD and CDL for `kind` on data with `variances`:
/// math.md's (μ, s) (toys: μ = −mean ln v, s = 3; images: ITD's CIFAR constants, or the CDL
/// fine-tuning ones with CDL) with c widened to cover `sampler_range()`.
pub fn default_q(kind: LossKind, variances: &[f64]) -> Result<TruncLogistic, DiffusionError> {
    let q = if variances.len() <= 2 {
        TruncLogistic::cdl_toy(variances)?
    } else if kind.has_cdl() {
        TruncLogistic::CDL_CIFAR
    } else {
        TruncLogistic::ITD_CIFAR
    };
    Ok(covering(q, sampler_range()))
}

/// `loss_config_with` at the default levels.
pub fn loss_config(kind: LossKind, variances: &[f64], cdl: CdlKnobs) -> Result<LossConfig, DiffusionError> {
    loss_config_with(kind, variances, cdl, &Levels::default())
}

/// The loss of `kind` for data with per-coordinate `variances`:
/// - ITD and CDL integrate α over the truncated logistic `default_q` (or `levels.q`);
/// - ζ follows the authors' toy logistic (μ, 3, 3) for d ≤ 2 (§3.1; not widened: ζ is the
///   anchors' corruption, not a level the network is queried at) and the CIFAR setting
///   (10.5, 1.5, 3) otherwise;
/// - EDM's losses weight the ε-error by 1 + e^{−α}/σ_d² (σ_d from `levels`);
/// - the ITD value carries h_G and mmse_G of the data reference Gaussian, so L_std reads as an
///   estimate of −log p(x) in nats (gradients are unchanged).
pub fn loss_config_with(
    kind: LossKind,
    variances: &[f64],
    cdl: CdlKnobs,
    levels: &Levels,
) -> Result<LossConfig, DiffusionError> {
    let toy = variances.len() <= 2;
    let q = match levels.q {
        Some(q) => {
            q.validate()?;
            q
        }
        None => default_q(kind, variances)?,
    };
    let precond = EdmPrecond { sigma_data: levels.sigma_data.unwrap_or(if toy { 1.0 } else { 0.5 }) };
    let (p_mean, p_std) = levels.edm.unwrap_or((-1.2, 1.2));
    let reference = Some(RefGaussian::from_variances(variances)?);
    let std = match kind {
        LossKind::Ddpm => StdLoss::Ddpm,
        LossKind::Itd | LossKind::Cdl => StdLoss::Itd { q },
        LossKind::Edm | LossKind::EdmCdl => StdLoss::Edm { p_mean, p_std, precond },
        LossKind::EdmVe | LossKind::EdmVeCdl => StdLoss::EdmVe { ve: VeSchedule::default(), precond },
        LossKind::Vp => StdLoss::VpSong(VpSde::default()),
        LossKind::Ve => StdLoss::VeSong(VeSchedule::default()),
    };
    let cdl_cfg = kind.has_cdl().then_some(CdlConfig {
        anchors: cdl.anchors,
        points: cdl.points,
        q,
        zeta: ZetaDist::Logistic(if toy { TruncLogistic::cdl_toy(variances)? } else { TruncLogistic::CDL_ZETA_CIFAR }),
        paired_draws: cdl.paired,
        norm: cdl.norm,
    });
    Ok(LossConfig { std, lambda_std: 1.0, cdl: cdl_cfg, lambda_cdl: cdl.lambda, reference })
}
