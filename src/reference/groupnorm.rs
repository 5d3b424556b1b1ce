//! CPU reference of group normalisation with a per-channel affine (Wu & He 2018; PyTorch
//! `nn.GroupNorm`); the oracle of `shaders/groupnorm.wgsl`. Saved for backward: `mean` and `rstd`
//! per (B, G) (xhat is recomputed from `x`). Overwritten: `out`, `mean`, `rstd`, `dx`;
//! accumulated (`+=`): `dgamma`, `dbeta`. The `groupnorm_silu_*` functions are the norm with the
//! SiLU that often follows, as one op. Not here: running statistics (GroupNorm has none), the
//! min(32, C/4) choice of G (the layer's business).

use std::ops::Range;

use super::elementwise::{silu_bwd, silu_fwd};
use super::Float;
/// The oracle takes the op's own shape type and epsilon.
pub use crate::ops::groupnorm::{GroupNormShape, EPS};

fn cast<T: Float>(v: f64) -> T {
    T::from(v).unwrap_or_else(T::nan)
}

/// 1 / N, N = (C/G) H W the elements of a group.
fn inv_len<T: Float>(s: GroupNormShape) -> T {
    T::one() / cast::<T>(s.group_len() as f64)
}

/// Each group (b, g) as (b G + g, g, its elements): the contiguous slice [(b G + g) N, +N),
/// because groups are contiguous channel ranges and channels are contiguous planes in NCHW.
fn groups(s: GroupNormShape) -> impl Iterator<Item = (usize, usize, Range<usize>)> {
    let n = s.group_len();
    (0..s.b * s.g).map(move |bg| (bg, bg % s.g, bg * n..(bg + 1) * n))
}

// ---------------------------------------------------------------------------------------------

/// out = gamma * (x - mean) * rstd + beta per group; writes the saved `mean` and `rstd`.
/// out, x: (B, C, H, W), mean, rstd: (B, G), gamma, beta: (C,)
///
/// The C channels are split into G contiguous groups of C/G channels. For each (b, g) the
/// N = (C/G) * H * W values are normalised with their mean and biased variance:
/// xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps), `out = gamma[c] * xhat + beta[c]`.
/// eps defaults to 1e-5 as PyTorch (EDM's SongUNet passes 1e-6: it is a field of the shape).
pub fn groupnorm_fwd<T: Float>(
    out: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    x: &[T],
    gamma: &[T],
    beta: &[T],
    s: GroupNormShape,
) {
    let inv_n = inv_len::<T>(s);
    for (bg, _, range) in groups(s) {
        let xs = &x[range];
        let mu = xs.iter().fold(T::zero(), |a, &v| a + v) * inv_n;
        // Two-pass variance: subtracting the mean first avoids the cancellation of E[x^2] - mu^2.
        let var = xs.iter().fold(T::zero(), |a, &v| a + (v - mu) * (v - mu)) * inv_n;
        mean[bg] = mu;
        rstd[bg] = T::one() / (var + cast(s.eps)).sqrt();
    }
    affine(out, x, mean, rstd, gamma, beta, s);
}

/// out = gamma * (x - mean) * rstd + beta from given statistics: the forward's output, and what
/// the fused SiLU's backward recomputes.
fn affine<T: Float>(out: &mut [T], x: &[T], mean: &[T], rstd: &[T], gamma: &[T], beta: &[T], s: GroupNormShape) {
    for (bg, g, range) in groups(s) {
        for (i, k) in range.enumerate() {
            let c = s.channel(g, i);
            out[k] = gamma[c] * (x[k] - mean[bg]) * rstd[bg] + beta[c];
        }
    }
}

/// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout * gamma, with
/// means over the group. Overwritten.
/// dx, dout, x: (B, C, H, W), mean, rstd: (B, G), gamma: (C,)
pub fn groupnorm_bwd_input<T: Float>(
    dx: &mut [T],
    dout: &[T],
    x: &[T],
    mean: &[T],
    rstd: &[T],
    gamma: &[T],
    s: GroupNormShape,
) {
    let inv_n = inv_len::<T>(s);
    for (bg, g, range) in groups(s) {
        let (mu, r) = (mean[bg], rstd[bg]);
        let mut sum_dxhat = T::zero();
        let mut sum_dxhat_xhat = T::zero();
        for (i, (&d, &v)) in dout[range.clone()].iter().zip(&x[range.clone()]).enumerate() {
            let dxhat = d * gamma[s.channel(g, i)];
            sum_dxhat = sum_dxhat + dxhat;
            sum_dxhat_xhat = sum_dxhat_xhat + dxhat * (v - mu) * r;
        }
        let (m1, m2) = (sum_dxhat * inv_n, sum_dxhat_xhat * inv_n);
        for (i, ((o, &d), &v)) in dx[range.clone()].iter_mut().zip(&dout[range.clone()]).zip(&x[range]).enumerate() {
            let dxhat = d * gamma[s.channel(g, i)];
            *o = r * (dxhat - m1 - (v - mu) * r * m2);
        }
    }
}

/// dgamma[c] += sum_{b, hw} dout * xhat, dbeta[c] += sum_{b, hw} dout. Accumulated.
/// dgamma, dbeta: (C,), dout, x: (B, C, H, W), mean, rstd: (B, G)
pub fn groupnorm_bwd_params<T: Float>(
    dgamma: &mut [T],
    dbeta: &mut [T],
    dout: &[T],
    x: &[T],
    mean: &[T],
    rstd: &[T],
    s: GroupNormShape,
) {
    let cpg = s.c / s.g;
    for c in 0..s.c {
        let (mut acc_g, mut acc_b) = (T::zero(), T::zero());
        for b in 0..s.b {
            let bg = b * s.g + c / cpg;
            let start = (b * s.c + c) * s.hw;
            for i in start..start + s.hw {
                acc_g = acc_g + dout[i] * (x[i] - mean[bg]) * rstd[bg];
                acc_b = acc_b + dout[i];
            }
        }
        dgamma[c] = dgamma[c] + acc_g;
        dbeta[c] = dbeta[c] + acc_b;
    }
}

// --- the norm followed by SiLU (a residual block's norm1, the UNet's output head) ------------

/// out = silu(gamma * (x - mean) * rstd + beta): `groupnorm_fwd` then SiLU, writing the saved
/// `mean` and `rstd`; the normalised value itself is not kept.
pub fn groupnorm_silu_fwd<T: Float>(
    out: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    x: &[T],
    gamma: &[T],
    beta: &[T],
    s: GroupNormShape,
) {
    let mut y = vec![T::zero(); out.len()];
    groupnorm_fwd(&mut y, mean, rstd, x, gamma, beta, s);
    silu_fwd(out, &y);
}

/// The gradient of the norm's output y from the gradient `dout` of silu(y): y recomputed from x
/// and the saved statistics.
#[allow(clippy::too_many_arguments)]
fn silu_dy<T: Float>(
    dout: &[T],
    x: &[T],
    mean: &[T],
    rstd: &[T],
    gamma: &[T],
    beta: &[T],
    s: GroupNormShape,
) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    affine(&mut y, x, mean, rstd, gamma, beta, s);
    let mut dy = vec![T::zero(); x.len()];
    silu_bwd(&mut dy, dout, &y);
    dy
}

/// The input gradient of `groupnorm_silu_fwd` for the gradient `dout` of its output. Overwritten.
#[allow(clippy::too_many_arguments)]
pub fn groupnorm_silu_bwd_input<T: Float>(
    dx: &mut [T],
    dout: &[T],
    x: &[T],
    mean: &[T],
    rstd: &[T],
    gamma: &[T],
    beta: &[T],
    s: GroupNormShape,
) {
    let dy = silu_dy(dout, x, mean, rstd, gamma, beta, s);
    groupnorm_bwd_input(dx, &dy, x, mean, rstd, gamma, s);
}

/// The gamma and beta gradients of `groupnorm_silu_fwd` for the gradient `dout` of its output.
/// Accumulated.
#[allow(clippy::too_many_arguments)]
pub fn groupnorm_silu_bwd_params<T: Float>(
    dgamma: &mut [T],
    dbeta: &mut [T],
    dout: &[T],
    x: &[T],
    mean: &[T],
    rstd: &[T],
    gamma: &[T],
    beta: &[T],
    s: GroupNormShape,
) {
    let dy = silu_dy(dout, x, mean, rstd, gamma, beta, s);
    groupnorm_bwd_params(dgamma, dbeta, &dy, x, mean, rstd, s);
}
