//! CPU reference of 2-D convolution with bias, NCHW: kernel 3 (padding 1) or 1 (padding 0),
//! stride 1 or 2; the oracle of `shaders/conv2d.wgsl` (and of the attention projections, 1x1).
//! Saved for backward: only the input `x` and the weight. Overwritten: `out`, `dx`; accumulated
//! (`+=`): `dweight`, `dbias`. Not here: dilation, groups, transposed convolution, fused
//! up/downsampling (the UNet resamples with `resample.rs` and then convolves).

use super::Float;
/// The oracle takes the op's own shape type.
pub use crate::ops::conv2d::Conv2dShape;

// ---------------------------------------------------------------------------------------------

/// out = conv(x, weight) + bias.
/// out: (B, Cout, Ho, Wo), x: (B, Cin, H, W), weight: (Cout, Cin, K, K), bias: (Cout,)
///
/// ```text
/// out[b, co, oy, ox] = bias[co] + sum_{ci, ky, kx} weight[co, ci, ky, kx] * x[b, ci, iy, ix]
/// ```
/// with iy = oy * stride + ky - pad, ix = ox * stride + kx - pad, and x = 0 outside the image
/// (zero padding). Output size (H + 2 pad - K) / stride + 1, as PyTorch's `nn.Conv2d` (floor).
/// Weight layout (Cout, Cin, K, K) as PyTorch, so a checkpoint maps one to one.
pub fn conv2d_fwd<T: Float>(out: &mut [T], x: &[T], weight: &[T], bias: Option<&[T]>, s: Conv2dShape) {
    s.check();
    for b in 0..s.b {
        for co in 0..s.cout {
            for oy in 0..s.ho() {
                for ox in 0..s.wo() {
                    let mut acc = bias.map_or(T::zero(), |bias| bias[co]);
                    for ci in 0..s.cin {
                        for ky in 0..s.k {
                            for kx in 0..s.k {
                                if let Some((iy, ix)) = s.input_pixel(oy, ox, ky, kx) {
                                    acc = acc + weight[s.w_idx(co, ci, ky, kx)] * x[s.x_idx(b, ci, iy, ix)];
                                }
                            }
                        }
                    }
                    out[s.out_idx(b, co, oy, ox)] = acc;
                }
            }
        }
    }
}

/// dx = conv^T(dout, weight): every output pixel scatters `weight * dout` back to the input
/// pixels it read. Overwritten (zeroed first). dx: (B, Cin, H, W), dout: (B, Cout, Ho, Wo),
/// weight: (Cout, Cin, K, K)
pub fn conv2d_bwd_input<T: Float>(dx: &mut [T], dout: &[T], weight: &[T], s: Conv2dShape) {
    s.check();
    dx[..s.x_len()].fill(T::zero());
    for b in 0..s.b {
        for co in 0..s.cout {
            for oy in 0..s.ho() {
                for ox in 0..s.wo() {
                    let g = dout[s.out_idx(b, co, oy, ox)];
                    for ci in 0..s.cin {
                        for ky in 0..s.k {
                            for kx in 0..s.k {
                                if let Some((iy, ix)) = s.input_pixel(oy, ox, ky, kx) {
                                    let i = s.x_idx(b, ci, iy, ix);
                                    dx[i] = dx[i] + weight[s.w_idx(co, ci, ky, kx)] * g;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// dweight[co, ci, ky, kx] += sum_{b, oy, ox} dout[b, co, oy, ox] * x[b, ci, iy, ix].
/// Accumulated. dweight: (Cout, Cin, K, K), dout: (B, Cout, Ho, Wo), x: (B, Cin, H, W)
pub fn conv2d_bwd_weight<T: Float>(dweight: &mut [T], dout: &[T], x: &[T], s: Conv2dShape) {
    s.check();
    for co in 0..s.cout {
        for ci in 0..s.cin {
            for ky in 0..s.k {
                for kx in 0..s.k {
                    let mut acc = T::zero();
                    for b in 0..s.b {
                        for oy in 0..s.ho() {
                            for ox in 0..s.wo() {
                                if let Some((iy, ix)) = s.input_pixel(oy, ox, ky, kx) {
                                    acc = acc + dout[s.out_idx(b, co, oy, ox)] * x[s.x_idx(b, ci, iy, ix)];
                                }
                            }
                        }
                    }
                    let i = s.w_idx(co, ci, ky, kx);
                    dweight[i] = dweight[i] + acc;
                }
            }
        }
    }
}

/// dbias[co] += sum_{b, oy, ox} dout[b, co, oy, ox]. Accumulated.
/// dbias: (Cout,), dout: (B, Cout, Ho, Wo)
pub fn conv2d_bwd_bias<T: Float>(dbias: &mut [T], dout: &[T], s: Conv2dShape) {
    let plane = s.ho() * s.wo();
    for (co, d) in dbias.iter_mut().enumerate().take(s.cout) {
        let mut acc = T::zero();
        for b in 0..s.b {
            let start = (b * s.cout + co) * plane;
            acc = dout[start..start + plane].iter().fold(acc, |a, &g| a + g);
        }
        *d = *d + acc;
    }
}
