//! Noise-level conditioning: the sinusoidal embedding of a continuous noise input per row, and
//! the scale/shift modulation that injects the embedding into a residual block.
//!
//! Embedding. For a row value t (c_noise: a scaled log-SNR, spec §8) and E features, half = E/2:
//!   freq_j = exp(-ln(MAX_PERIOD) * j / half) = MAX_PERIOD^(-j/half),  j = 0..half,
//!   out[b] = [cos(t freq_0 .. freq_{half-1}), sin(t freq_0 .. freq_{half-1})].
//! This is guided-diffusion's `timestep_embedding` (ADM) and EDM's
//! `PositionalEmbedding(endpoint=False)` (used by EDM's DhariwalUNet). It differs from
//! - DDPM (Ho et al., `get_timestep_embedding`): freq_j = MAX_PERIOD^(-j/(half-1)), order [sin, cos];
//! - EDM's SongUNet (DDPM++): `PositionalEmbedding(endpoint=True)`, i.e. the DDPM frequencies, then
//!   a flip to [sin, cos], which reproduces DDPM's embedding.
//!
//! The choice only matters when loading pretrained weights (a permutation and a slight change of
//! frequencies); all variants span frequencies 1 down to about 1/MAX_PERIOD.
//!
//! Scale/shift (ADM / EDM `UNetBlock` with `adaptive_scale=True`, "AdaGN"):
//!   y[b, c, :, :] = x[b, c, :, :] * (1 + scale[b, c]) + shift[b, c],
//! where [scale; shift] is the output of a Linear of the embedding (EDM: `params.chunk(2)`,
//! scale first). EDM's DDPM++ (SongUNet) config uses `adaptive_scale=False` instead: a per-channel
//! bias added *before* the second GroupNorm, which is this op with scale = 0 placed before norm1.
//!
//! Preconditioning ("edm" in `--precond`): EDM's `EDMPrecond` (spec §4.3) with σ_d = 1, written
//! for an ε-predictor. With σ = e^{−α/2}, x_σ = z/sqrt(σ(α)): c_in·x_σ = z, and
//! ε̂ = (x_σ − D(x_σ; σ))/σ = sqrt(σ(−α))·z + sqrt(σ(α))·f, where f = −F(z, c_noise) is the raw
//! network output (the sign of F is immaterial to training). The first term is the optimal ε̂
//! for N(0, I) data, so at high noise ε̂ → z by construction, and for inputs far outside the
//! trained range ε̂ grows with z instead of saturating at the bounded output of a normalised
//! network. The row's log-SNR is read from its noise input, α = ALPHA_PER_T·t.
//!
//! Not here: the MLP on top of the embedding (Linear + SiLU), Fourier features (NCSN++).
//!
//! Saved for backward: nothing but the inputs (scale for dx, x for dscale). All outputs are
//! overwritten, including `dscale` and `dshift`: they are activation gradients (the outputs of
//! the embedding Linear), not parameters.

use super::Float;

/// The longest period of the sinusoids, as DDPM, ADM and EDM.
pub const MAX_PERIOD: f64 = 10000.0;

/// Log-SNR per unit of noise input: networks are fed c_noise = α/8 (spec §8).
pub const ALPHA_PER_T: f64 = 8.0;

fn cast<T: Float>(v: f64) -> T {
    T::from(v).unwrap_or_else(T::nan)
}

/// freq_j = MAX_PERIOD^(-j / half), computed in f64 (the GPU receives it as a table or computes
/// `exp` in f32; the difference is one rounding).
fn freq<T: Float>(j: usize, half: usize) -> T {
    cast((-MAX_PERIOD.ln() * j as f64 / half as f64).exp())
}

// --- sinusoidal embedding -----------------------------------------------------------------------

/// out[b] = [cos(t[b] freq), sin(t[b] freq)]. E must be even. out: (B, E), t: (B,)
pub fn embedding_fwd<T: Float>(out: &mut [T], t: &[T], e: usize) {
    assert!(e.is_multiple_of(2), "embedding: odd width {e}");
    let half = e / 2;
    for (row, &tb) in out.chunks_mut(e).zip(t) {
        for j in 0..half {
            let arg = tb * freq::<T>(j, half);
            row[j] = arg.cos();
            row[half + j] = arg.sin();
        }
    }
}

/// dt[b] = sum_j freq_j (-sin(t freq_j) dout[b, j] + cos(t freq_j) dout[b, half + j]).
/// Not needed for training (t is a constant); kept because it is trivial and lets the embedding
/// be gradient-checked. Overwritten. dt: (B,), dout: (B, E), t: (B,)
pub fn embedding_bwd_t<T: Float>(dt: &mut [T], dout: &[T], t: &[T], e: usize) {
    let half = e / 2;
    for ((d, row), &tb) in dt.iter_mut().zip(dout.chunks(e)).zip(t) {
        let mut acc = T::zero();
        for j in 0..half {
            let f = freq::<T>(j, half);
            let arg = tb * f;
            acc = acc + f * (row[half + j] * arg.cos() - row[j] * arg.sin());
        }
        *d = acc;
    }
}

// --- scale/shift modulation ---------------------------------------------------------------------

/// y = x * (1 + scale[b, c]) + shift[b, c], broadcast over H, W.
/// y, x: (B, C, H, W), scale, shift: (B, C); hw = H * W
pub fn scale_shift_fwd<T: Float>(y: &mut [T], x: &[T], scale: &[T], shift: &[T], hw: usize) {
    for (bc, (yp, xp)) in y.chunks_mut(hw).zip(x.chunks(hw)).enumerate() {
        let (a, s) = (T::one() + scale[bc], shift[bc]);
        for (o, &v) in yp.iter_mut().zip(xp) {
            *o = v * a + s;
        }
    }
}

/// dx = dout * (1 + scale[b, c]). Overwritten. dx, dout: (B, C, H, W), scale: (B, C)
pub fn scale_shift_bwd_input<T: Float>(dx: &mut [T], dout: &[T], scale: &[T], hw: usize) {
    for (bc, (dp, gp)) in dx.chunks_mut(hw).zip(dout.chunks(hw)).enumerate() {
        let a = T::one() + scale[bc];
        for (o, &g) in dp.iter_mut().zip(gp) {
            *o = g * a;
        }
    }
}

/// dscale[b, c] = sum_hw dout * x. Overwritten. dscale: (B, C), dout, x: (B, C, H, W)
pub fn scale_shift_bwd_scale<T: Float>(dscale: &mut [T], dout: &[T], x: &[T], hw: usize) {
    for ((d, gp), xp) in dscale.iter_mut().zip(dout.chunks(hw)).zip(x.chunks(hw)) {
        *d = gp.iter().zip(xp).fold(T::zero(), |a, (&g, &v)| a + g * v);
    }
}

/// dshift[b, c] = sum_hw dout. Overwritten. dshift: (B, C), dout: (B, C, H, W)
pub fn scale_shift_bwd_shift<T: Float>(dshift: &mut [T], dout: &[T], hw: usize) {
    for (d, gp) in dshift.iter_mut().zip(dout.chunks(hw)) {
        *d = gp.iter().fold(T::zero(), |a, &g| a + g);
    }
}

// --- preconditioning ----------------------------------------------------------------------------

/// sqrt(σ(v)), computed from exp of a non-positive argument only (as the shader does).
fn sqrt_sigmoid<T: Float>(v: T) -> T {
    let e = (-v.abs()).exp();
    let s = if v >= T::zero() { T::one() / (T::one() + e) } else { e / (T::one() + e) };
    s.sqrt()
}

/// (skip, out) = (sqrt(σ(−α)), sqrt(σ(α))) for the row with noise input t, α = ALPHA_PER_T·t.
pub fn precond_coeffs<T: Float>(t: T) -> (T, T) {
    let alpha = cast::<T>(ALPHA_PER_T) * t;
    (sqrt_sigmoid(-alpha), sqrt_sigmoid(alpha))
}

/// eps = skip·z + out·f per row of length e. eps, z, f: (B, E), t: (B,)
pub fn precond_fwd<T: Float>(eps: &mut [T], t: &[T], z: &[T], f: &[T], e: usize) {
    for (((o, zr), fr), &tb) in eps.chunks_mut(e).zip(z.chunks(e)).zip(f.chunks(e)).zip(t) {
        let (a, b) = precond_coeffs(tb);
        for ((o, &zv), &fv) in o.iter_mut().zip(zr).zip(fr) {
            *o = a * zv + b * fv;
        }
    }
}

/// df = out·deps, dz = skip·deps per row. Both overwritten. df, dz, deps: (B, E), t: (B,)
pub fn precond_bwd<T: Float>(df: &mut [T], dz: &mut [T], deps: &[T], t: &[T], e: usize) {
    for (((dfr, dzr), gr), &tb) in df.chunks_mut(e).zip(dz.chunks_mut(e)).zip(deps.chunks(e)).zip(t) {
        let (a, b) = precond_coeffs(tb);
        for ((df, dz), &g) in dfr.iter_mut().zip(dzr.iter_mut()).zip(gr) {
            *df = b * g;
            *dz = a * g;
        }
    }
}
