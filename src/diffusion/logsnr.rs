//! The variance-preserving channel indexed by log-SNR α (math.md §1.1) and the shifted level α′
//! and scale c of a noisy distribution p_ζ (math.md §2.3), in f64 log space (logsumexp,
//! log-sigmoids) so they stay exact for |α| well beyond 20, where f32 s(α) rounds to 1 (math.md
//! §9 pitfall 1, §9b); the host uploads well-scaled f32 values. Not here: schedules (`schedule`),
//! samplers of α (`logistic`).

// ---------------------------------------------------------------------------------------------
// Scalar helpers

/// Logistic sigmoid s(u) = 1/(1+e^{−u}), without overflow for any finite u.
pub fn sigmoid(u: f64) -> f64 {
    if u >= 0.0 {
        1.0 / (1.0 + (-u).exp())
    } else {
        let e = u.exp();
        e / (1.0 + e)
    }
}

/// softplus(u) = ln(1 + e^u), linear for large u and e^u for very negative u (math.md §9 pitfall 6).
pub fn softplus(u: f64) -> f64 {
    u.max(0.0) + (-u.abs()).exp().ln_1p()
}

/// ln s(u) = −softplus(−u); exact for large |u| (≈ u for u ≪ 0, ≈ −e^{−u} for u ≫ 0).
pub fn log_sigmoid(u: f64) -> f64 {
    -softplus(-u)
}

/// logit(p) = ln(p/(1−p)) for p in (0, 1).
pub fn logit(p: f64) -> f64 {
    p.ln() - (-p).ln_1p()
}

/// ln Σ e^{v_i}, shifted by the maximum; −∞ for an empty slice or all −∞ entries.
pub fn logsumexp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    if m == f64::INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// sqrt(s(u)) = exp(½ ln s(u)): the data coefficient of the channel at level u (math.md §1.1).
pub fn sqrt_sigmoid(u: f64) -> f64 {
    (0.5 * log_sigmoid(u)).exp()
}

// ---------------------------------------------------------------------------------------------
// The VP channel (math.md §1.1)

/// The two coefficients of x_α = a·x + b·ε: a = sqrt(s(α)), b = sqrt(s(−α)), a² + b² = 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VpCoefs {
    /// sqrt(s(α)), the data coefficient.
    pub a: f64,
    /// sqrt(s(−α)), the noise coefficient.
    pub b: f64,
}

/// The channel coefficients at log-SNR `alpha`, each from its own log-sigmoid so that neither is
/// computed as sqrt(1 − other²) (which loses all digits of b for large α).
pub fn vp_coefs(alpha: f64) -> VpCoefs {
    VpCoefs { a: sqrt_sigmoid(alpha), b: sqrt_sigmoid(-alpha) }
}

/// Clean-data estimate x̂ = sqrt(1+e^{−α})·z − e^{−α/2}·ε̂ (math.md §1.1). z, eps_hat, out: (d,)
pub fn x_hat(out: &mut [f64], z: &[f64], eps_hat: &[f64], alpha: f64) {
    // sqrt(1+e^{−α}) = 1/sqrt(s(α)); e^{−α/2} = sqrt(s(−α))/sqrt(s(α)).
    let VpCoefs { a, b } = vp_coefs(alpha);
    for ((o, &zi), &ei) in out.iter_mut().zip(z).zip(eps_hat) {
        *o = (zi - b * ei) / a;
    }
}

/// Factor k with ∇_z log p_α(z) = k·ε̂(z, α), k = −1/sqrt(s(−α)) (math.md §1.1 "score").
pub fn score_factor(alpha: f64) -> f64 {
    -1.0 / sqrt_sigmoid(-alpha)
}

// ---------------------------------------------------------------------------------------------
// Shifted level of a noisy distribution p_ζ (math.md §2.3, §3.2)

/// α′ = logit(s(α)·s(ζ)) = −logsumexp(−α, −ζ, −α−ζ): the level seen from clean data when the
/// α-channel is applied on top of one corruption at ζ (1/SNR values add up). Always α′ < min(α, ζ).
/// ζ = +∞ (a clean anchor, no corruption) gives α′ = α.
pub fn alpha_prime(alpha: f64, zeta: f64) -> f64 {
    -logsumexp(&[-alpha, -zeta, -alpha - zeta])
}

/// c = sqrt(s(−α)/s(−α′)) = exp(½(ln s(−α) − ln s(−α′))), the output scale of the q-row:
/// ε̂_ζ(z, α) = c·ε̂(z, α′) (math.md §2.3). c ∈ (0, 1].
pub fn q_scale(alpha: f64, alpha_prime: f64) -> f64 {
    (0.5 * (log_sigmoid(-alpha) - log_sigmoid(-alpha_prime))).exp()
}

/// α′ and c for one integration level α of an anchor corrupted at ζ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShiftedLevel {
    /// α′ = −logsumexp(−α, −ζ, −α−ζ).
    pub alpha_prime: f64,
    /// c = sqrt(s(−α)/s(−α′)).
    pub c: f64,
}

/// α′(α, ζ) and c(α, ζ) together (math.md §2.3, §9 pitfall 1).
pub fn shifted_level(alpha: f64, zeta: f64) -> ShiftedLevel {
    let alpha_prime = alpha_prime(alpha, zeta);
    ShiftedLevel { alpha_prime, c: q_scale(alpha, alpha_prime) }
}
