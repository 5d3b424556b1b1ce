//! CPU reference of the UNet's resampling and skip plumbing: nearest 2x upsampling and 2x2
//! average pooling (EDM's `Conv2d(up/down=True)` with `resample_filter=[1,1]`, DDPM++) and
//! `torch.cat([x, skip], dim=1)`. All linear: nothing saved, every output overwritten. Not here:
//! NCSN++'s `[1,3,3,1]` FIR, strided-conv downsampling, pooling of odd sizes (the pool asserts even
//! H and W).

use super::Float;
/// The oracle takes the op's own shape type.
pub use crate::ops::resample::Nchw;

// --- nearest 2x upsampling ----------------------------------------------------------------------

/// out[b, c, y, x] = x[b, c, y / 2, x / 2]. out: (B, C, 2H, 2W), x: (B, C, H, W); s = size of x
pub fn upsample2x_fwd<T: Float>(out: &mut [T], x: &[T], s: Nchw) {
    let (h2, w2) = (2 * s.h, 2 * s.w);
    for bc in 0..s.b * s.c {
        for oy in 0..h2 {
            for ox in 0..w2 {
                out[(bc * h2 + oy) * w2 + ox] = x[(bc * s.h + oy / 2) * s.w + ox / 2];
            }
        }
    }
}

/// dx[b, c, y, x] = sum of dout over the 2x2 block that copied x[b, c, y, x]. Overwritten.
/// dx: (B, C, H, W), dout: (B, C, 2H, 2W); s = size of x
pub fn upsample2x_bwd_input<T: Float>(dx: &mut [T], dout: &[T], s: Nchw) {
    let (h2, w2) = (2 * s.h, 2 * s.w);
    for bc in 0..s.b * s.c {
        for y in 0..s.h {
            for x in 0..s.w {
                let mut acc = T::zero();
                for (dy, dxx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    acc = acc + dout[(bc * h2 + 2 * y + dy) * w2 + 2 * x + dxx];
                }
                dx[(bc * s.h + y) * s.w + x] = acc;
            }
        }
    }
}

// --- 2x2 average pooling ------------------------------------------------------------------------

/// out[b, c, y, x] = mean of x over the 2x2 block (2y.., 2x..). H and W must be even.
/// out: (B, C, H/2, W/2), x: (B, C, H, W); s = size of x
pub fn avgpool2x2_fwd<T: Float>(out: &mut [T], x: &[T], s: Nchw) {
    assert!(s.h.is_multiple_of(2) && s.w.is_multiple_of(2), "avgpool2x2: odd size {}x{}", s.h, s.w);
    let (ho, wo) = (s.h / 2, s.w / 2);
    let quarter = T::one() / T::from(4).unwrap_or_else(T::nan);
    for bc in 0..s.b * s.c {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = T::zero();
                for (dy, dxx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    acc = acc + x[(bc * s.h + 2 * oy + dy) * s.w + 2 * ox + dxx];
                }
                out[(bc * ho + oy) * wo + ox] = acc * quarter;
            }
        }
    }
}

/// dx[b, c, y, x] = dout[b, c, y / 2, x / 2] / 4. Overwritten.
/// dx: (B, C, H, W), dout: (B, C, H/2, W/2); s = size of x
pub fn avgpool2x2_bwd_input<T: Float>(dx: &mut [T], dout: &[T], s: Nchw) {
    assert!(s.h.is_multiple_of(2) && s.w.is_multiple_of(2), "avgpool2x2: odd size {}x{}", s.h, s.w);
    let (ho, wo) = (s.h / 2, s.w / 2);
    let quarter = T::one() / T::from(4).unwrap_or_else(T::nan);
    for bc in 0..s.b * s.c {
        for y in 0..s.h {
            for x in 0..s.w {
                dx[(bc * s.h + y) * s.w + x] = dout[(bc * ho + y / 2) * wo + x / 2] * quarter;
            }
        }
    }
}

// --- channel concatenation ----------------------------------------------------------------------

/// out[b] = [a[b]; skip[b]] along channels.
/// out: (B, C1 + C2, H, W), a: (B, C1, H, W), skip: (B, C2, H, W); hw = H * W
pub fn concat_fwd<T: Float>(out: &mut [T], a: &[T], skip: &[T], b: usize, c1: usize, c2: usize, hw: usize) {
    let (na, ns) = (c1 * hw, c2 * hw);
    for bi in 0..b {
        let o = &mut out[bi * (na + ns)..(bi + 1) * (na + ns)];
        o[..na].copy_from_slice(&a[bi * na..(bi + 1) * na]);
        o[na..].copy_from_slice(&skip[bi * ns..(bi + 1) * ns]);
    }
}

/// Splits dout back into da and dskip. Both overwritten (dskip is added to the encoder's
/// gradient by the caller, which sums the two paths of a skip connection).
/// da: (B, C1, H, W), dskip: (B, C2, H, W), dout: (B, C1 + C2, H, W); hw = H * W
pub fn concat_bwd<T: Float>(da: &mut [T], dskip: &mut [T], dout: &[T], b: usize, c1: usize, c2: usize, hw: usize) {
    let (na, ns) = (c1 * hw, c2 * hw);
    for bi in 0..b {
        let d = &dout[bi * (na + ns)..(bi + 1) * (na + ns)];
        da[bi * na..(bi + 1) * na].copy_from_slice(&d[..na]);
        dskip[bi * ns..(bi + 1) * ns].copy_from_slice(&d[na..]);
    }
}
