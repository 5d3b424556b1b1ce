//! CPU reference of noise-level conditioning: the sinusoidal embedding of a continuous noise
//! input (math.md §8), the scale/shift ("AdaGN") modulation of a residual block, and EDM's
//! preconditioning in ε form (math.md §1.4(b)); the oracle for `shaders/embedding.wgsl`. Saved
//! for backward: only the inputs; every output is overwritten (`dscale`/`dshift` are activation
//! gradients). Not here: the MLP on top of the embedding, Fourier features (NCSN++).

use super::Float;

/// The longest period of the sinusoids, as DDPM, ADM and EDM.
pub const MAX_PERIOD: f64 = 10000.0;

/// Log-SNR per unit of noise input: networks are fed c_noise = α/8 (math.md §8).
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
///
/// For a row value t (c_noise: a scaled log-SNR, math.md §8) and E features, half = E/2:
/// freq_j = exp(-ln(MAX_PERIOD) * j / half) = MAX_PERIOD^(-j/half), j = 0..half. This is
/// guided-diffusion's `timestep_embedding` (ADM) and EDM's `PositionalEmbedding(endpoint=False)`
/// (used by EDM's DhariwalUNet). It differs from
/// - DDPM (Ho et al., `get_timestep_embedding`): freq_j = MAX_PERIOD^(-j/(half-1)), order [sin, cos];
/// - EDM's SongUNet (DDPM++): `PositionalEmbedding(endpoint=True)`, i.e. the DDPM frequencies, then
///   a flip to [sin, cos], which reproduces DDPM's embedding.
///
/// The choice only matters when loading pretrained weights (a permutation and a slight change of
/// frequencies); all variants span frequencies 1 down to about 1/MAX_PERIOD.
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
///
/// ADM / EDM `UNetBlock` with `adaptive_scale=True` ("AdaGN"): [scale; shift] is the output of a
/// Linear of the embedding (EDM: `params.chunk(2)`, scale first). EDM's DDPM++ (SongUNet) config
/// uses `adaptive_scale=False` instead: a per-channel bias added *before* the second GroupNorm,
/// which is this op with scale = 0 placed before norm1.
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

/// y = silu(x * (1 + scale[b, c]) + shift[b, c]). Overwritten. x, y: (B, C, H, W),
/// scale, shift: (B, C)
pub fn scale_shift_silu_fwd<T: Float>(y: &mut [T], x: &[T], scale: &[T], shift: &[T], hw: usize) {
    let mut m = vec![T::zero(); x.len()];
    scale_shift_fwd(&mut m, x, scale, shift, hw);
    super::elementwise::silu_fwd(y, &m);
}

/// dm = dout * silu'(m) for m = x * (1 + scale) + shift, recomputed from x. dout, x: (B, C, H, W)
fn scale_shift_silu_dm<T: Float>(dout: &[T], x: &[T], scale: &[T], shift: &[T], hw: usize) -> Vec<T> {
    let mut m = vec![T::zero(); x.len()];
    scale_shift_fwd(&mut m, x, scale, shift, hw);
    let mut dm = vec![T::zero(); x.len()];
    super::elementwise::silu_bwd(&mut dm, dout, &m);
    dm
}

/// The input gradient of `scale_shift_silu_fwd`: dx = dm * (1 + scale[b, c]). Overwritten.
/// dx, dout, x: (B, C, H, W), scale, shift: (B, C)
pub fn scale_shift_silu_bwd_input<T: Float>(dx: &mut [T], dout: &[T], x: &[T], scale: &[T], shift: &[T], hw: usize) {
    scale_shift_bwd_input(dx, &scale_shift_silu_dm(dout, x, scale, shift, hw), scale, hw);
}

/// The modulation gradients of `scale_shift_silu_fwd`: dscale = sum_hw dm * x, dshift = sum_hw dm.
/// Overwritten. dscale, dshift, scale, shift: (B, C), dout, x: (B, C, H, W)
#[allow(clippy::too_many_arguments)]
pub fn scale_shift_silu_bwd_params<T: Float>(
    dscale: &mut [T],
    dshift: &mut [T],
    dout: &[T],
    x: &[T],
    scale: &[T],
    shift: &[T],
    hw: usize,
) {
    let dm = scale_shift_silu_dm(dout, x, scale, shift, hw);
    scale_shift_bwd_scale(dscale, &dm, x, hw);
    scale_shift_bwd_shift(dshift, &dm, hw);
}

// --- preconditioning ----------------------------------------------------------------------------

/// The preconditioning's per-row coefficients: EDM's `EDMPrecond` (math.md §4.3) written for an
/// ε-predictor (math.md §1.4(b), which derives a_in, a_skip, a_out from c_in, c_skip, c_out).
/// The network sees a_in·z and ε̂ = a_skip·z + a_out·f, f = −F. σ_d: 1 for the MLP
/// (standardised points; then m = 1 exactly and the coefficients are (1, sqrt(σ(−α)),
/// sqrt(σ(α))) bit for bit, so its network sees z itself), 0.5 for the UNet (images in [−1, 1]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrecondCoeffs<T> {
    /// Scale of the network's input: a_in = c_in·sqrt(1+σ²).
    pub a_in: T,
    /// Weight of the input z in ε̂: a_skip = (1 − c_skip)·sqrt(1+σ²)/σ.
    pub a_skip: T,
    /// Weight of the network output f in ε̂: a_out = c_out/σ.
    pub a_out: T,
}

/// The coefficients for the row with noise input t (α = ALPHA_PER_T·t) and data standard
/// deviation `sigma_d`, computed from exp of a non-positive argument only (as the shader does).
///
/// σ² = e^{−α} overflows f32 for α < −88, so they come from s = σ(α) and s̄ = σ(−α) (each from
/// e^{−|α|}): with m = (σ²+σ_d²)/(1+σ²) = s̄ + σ_d²·s = 1 + (σ_d² − 1)·s, a_in = 1/sqrt(m),
/// a_skip = sqrt(s̄)/m, a_out = σ_d·sqrt(s)·a_in. m lies in [min(1, σ_d²), max(1, σ_d²)], so
/// nothing overflows or cancels for any α (the subtraction in m loses at most a factor
/// max(1, σ_d²)/min(1, σ_d²) of relative accuracy: 4 at σ_d = 0.5).
pub fn precond_coeffs<T: Float>(t: T, sigma_d: T) -> PrecondCoeffs<T> {
    let alpha = cast::<T>(ALPHA_PER_T) * t;
    let e = (-alpha.abs()).exp();
    let (one, big) = (T::one(), alpha >= T::zero());
    let s = if big { one / (one + e) } else { e / (one + e) };
    let sb = if big { e / (one + e) } else { one / (one + e) };
    let m = one + (sigma_d * sigma_d - one) * s;
    let a_in = one / m.sqrt();
    PrecondCoeffs { a_in, a_skip: sb.sqrt() / m, a_out: sigma_d * s.sqrt() * a_in }
}

/// zin = a_in·z per row of length e: the network's input. Linear and diagonal, so it is its own
/// backward: dz = a_in·dzin is this function applied to dzin. zin, z: (B, E), t: (B,)
pub fn precond_in<T: Float>(zin: &mut [T], t: &[T], z: &[T], e: usize, sigma_d: T) {
    for ((o, zr), &tb) in zin.chunks_mut(e).zip(z.chunks(e)).zip(t) {
        let a = precond_coeffs(tb, sigma_d).a_in;
        for (o, &zv) in o.iter_mut().zip(zr) {
            *o = a * zv;
        }
    }
}

/// eps = a_skip·z + a_out·f per row of length e. eps, z, f: (B, E), t: (B,)
pub fn precond_fwd<T: Float>(eps: &mut [T], t: &[T], z: &[T], f: &[T], e: usize, sigma_d: T) {
    for (((o, zr), fr), &tb) in eps.chunks_mut(e).zip(z.chunks(e)).zip(f.chunks(e)).zip(t) {
        let c = precond_coeffs(tb, sigma_d);
        for ((o, &zv), &fv) in o.iter_mut().zip(zr).zip(fr) {
            *o = c.a_skip * zv + c.a_out * fv;
        }
    }
}

/// df = a_out·deps, dz = a_skip·deps per row (the gradient through the skip term only; a model
/// whose net reads a_in·z adds the net's part). Both overwritten. df, dz, deps: (B, E), t: (B,)
pub fn precond_bwd<T: Float>(df: &mut [T], dz: &mut [T], deps: &[T], t: &[T], e: usize, sigma_d: T) {
    for (((dfr, dzr), gr), &tb) in df.chunks_mut(e).zip(dz.chunks_mut(e)).zip(deps.chunks(e)).zip(t) {
        let c = precond_coeffs(tb, sigma_d);
        for ((df, dz), &g) in dfr.iter_mut().zip(dzr.iter_mut()).zip(gr) {
            *df = c.a_out * g;
            *dz = c.a_skip * g;
        }
    }
}
