//! CPU reference of the FID Inception-v3 ops (`shaders/inception.wgsl`) and of the whole network
//! (`forward`, the oracle of `eval::inception::Inception`), as pytorch-fid's `InceptionV3` with
//! output block 3 computes them. Forward only; every output overwritten, in its channel window.
//! Not here: the classifier head, antialiased resizing, pooling with `ceil_mode`.

use super::Float;
use crate::eval::inception::{InceptionWeights, FEATURES, INPUT};
/// The oracle takes the ops' own shape types.
pub use crate::ops::inception::{ConvShape, PoolShape, ResizeShape, Slice};

// --- ops ---------------------------------------------------------------------------------------

/// out[:, c_off..c_off + Cout] = act(conv(x, weight) + bias), act = ReLU when `relu`.
/// out: (B, c_total, Ho, Wo), x: (B, Cin, H, W), weight: (Cout, Cin, KH, KW), bias: (Cout,)
///
/// ```text
/// out[b, co, oy, ox] = bias[co] + sum_{ci, ky, kx} weight[co, ci, ky, kx] * x[b, ci, iy, ix]
/// ```
/// with iy = oy stride + ky - pad_h, ix = ox stride + kx - pad_w, x = 0 outside the image.
pub fn conv_fwd<T: Float>(
    out: &mut [T],
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    s: ConvShape,
    relu: bool,
    o: Slice,
) {
    let (ho, wo) = (s.ho(), s.wo());
    // Row by row over ox: the same sum in the order (ci, ky, kx) per output, written so the
    // compiler vectorises the innermost loop (the network's forward runs this on 299 x 299).
    let mut row = vec![T::zero(); wo];
    for b in 0..s.b {
        for co in 0..s.cout {
            for oy in 0..ho {
                row.iter_mut().for_each(|v| *v = bias.map_or(T::zero(), |bias| bias[co]));
                for ci in 0..s.cin {
                    for ky in 0..s.kh {
                        let Some(iy) = (oy * s.stride + ky).checked_sub(s.pad_h).filter(|&iy| iy < s.h) else {
                            continue;
                        };
                        let xrow = &x[((b * s.cin + ci) * s.h + iy) * s.w..][..s.w];
                        for kx in 0..s.kw {
                            let wv = weight[((co * s.cin + ci) * s.kh + ky) * s.kw + kx];
                            for (ox, acc) in row.iter_mut().enumerate() {
                                let ix = ox * s.stride + kx;
                                if ix >= s.pad_w && ix - s.pad_w < s.w {
                                    *acc = *acc + wv * xrow[ix - s.pad_w];
                                }
                            }
                        }
                    }
                }
                let dst = &mut out[((b * o.c_total + o.c_off + co) * ho + oy) * wo..][..wo];
                for (d, &v) in dst.iter_mut().zip(&row) {
                    *d = if relu { v.max(T::zero()) } else { v };
                }
            }
        }
    }
}

/// The in-image (iy, ix) of output pixel (oy, ox) of a pooling window.
fn window(s: PoolShape, oy: usize, ox: usize) -> impl Iterator<Item = (usize, usize)> {
    let ys = (0..s.k).filter_map(move |ky| (oy * s.stride + ky).checked_sub(s.pad).filter(|&iy| iy < s.h));
    ys.flat_map(move |iy| {
        (0..s.k).filter_map(move |kx| (ox * s.stride + kx).checked_sub(s.pad).filter(|&ix| ix < s.w).map(|ix| (iy, ix)))
    })
}

/// Applies `f` (the in-image values of one window) to every output pixel.
fn pool<T: Float>(out: &mut [T], x: &[T], s: PoolShape, o: Slice, f: impl Fn(&mut dyn Iterator<Item = T>) -> T) {
    let (ho, wo) = (s.ho(), s.wo());
    for b in 0..s.b {
        for c in 0..s.c {
            let plane = &x[(b * s.c + c) * s.h * s.w..][..s.h * s.w];
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut vals = window(s, oy, ox).map(|(iy, ix)| plane[iy * s.w + ix]);
                    out[((b * o.c_total + o.c_off + c) * ho + oy) * wo + ox] = f(&mut vals);
                }
            }
        }
    }
}

/// out[:, c_off..c_off + C] = the max of x over each window, padding ignored (PyTorch's
/// max_pool2d). out: (B, c_total, Ho, Wo), x: (B, C, H, W)
pub fn maxpool_fwd<T: Float>(out: &mut [T], x: &[T], s: PoolShape, o: Slice) {
    pool(out, x, s, o, |vals: &mut dyn Iterator<Item = T>| vals.fold(T::neg_infinity(), T::max));
}

/// out[:, c_off..c_off + C] = the mean of x over the in-image part of each window (PyTorch's
/// avg_pool2d with count_include_pad=False). out: (B, c_total, Ho, Wo), x: (B, C, H, W)
pub fn avgpool_fwd<T: Float>(out: &mut [T], x: &[T], s: PoolShape, o: Slice) {
    pool(out, x, s, o, |vals: &mut dyn Iterator<Item = T>| {
        let (sum, n) = vals.fold((T::zero(), 0usize), |(a, n), v| (a + v, n + 1));
        sum / T::from(n).unwrap_or_else(T::nan)
    });
}

/// out[b, c_off + c] = the mean of x[b, c] over its hw pixels (AdaptiveAvgPool2d(1)).
/// out: (B, c_total), x: (B, C, H, W); hw = H W
pub fn global_avgpool_fwd<T: Float>(out: &mut [T], x: &[T], b: usize, c: usize, hw: usize, o: Slice) {
    let n = T::from(hw).unwrap_or_else(T::nan);
    for bi in 0..b {
        for ci in 0..c {
            let sum = x[(bi * c + ci) * hw..][..hw].iter().fold(T::zero(), |a, &v| a + v);
            out[bi * o.c_total + o.c_off + ci] = sum / n;
        }
    }
}

/// out[b, c_off..c_off + C] = x[b] (one part of torch.cat along channels).
/// out: (B, c_total, H, W), x: (B, C, H, W); hw = H W
pub fn channel_copy<T: Float>(out: &mut [T], x: &[T], b: usize, c: usize, hw: usize, o: Slice) {
    for bi in 0..b {
        out[(bi * o.c_total + o.c_off) * hw..][..c * hw].copy_from_slice(&x[bi * c * hw..][..c * hw]);
    }
}

/// Source rows (i0, i1) and the weight of i1 along one axis: PyTorch's upsample_bilinear2d with
/// align_corners=False and an output size given: src = max((dst + 0.5) in / out - 0.5, 0),
/// i0 = floor(src), i1 = min(i0 + 1, in - 1), lambda = src - i0. The position is computed in
/// f32 as PyTorch computes it for f32 images (at in / out = 3, a position near 40 carries an f32
/// rounding of ~4e-6, which the oracle must share to check the rest at STRICT).
fn axis<T: Float>(o: usize, n_in: usize, n_out: usize) -> (usize, usize, T) {
    let src = ((o as f32 + 0.5) * (n_in as f32 / n_out as f32) - 0.5).max(0.0);
    let i0 = (src.floor() as usize).min(n_in - 1);
    (i0, (i0 + 1).min(n_in - 1), T::from(src - i0 as f32).unwrap_or_else(T::nan))
}

/// out = scale * bilinear(x) + shift: x resized from (H, W) to (Ho, Wo) as
/// `F.interpolate(mode='bilinear', align_corners=False)` (no antialias).
/// out: (B, C, Ho, Wo), x: (B, C, H, W)
pub fn resize_bilinear_fwd<T: Float>(out: &mut [T], x: &[T], s: ResizeShape) {
    let (scale, shift) = (T::from(s.scale).unwrap_or_else(T::nan), T::from(s.shift).unwrap_or_else(T::nan));
    for bc in 0..s.b * s.c {
        let plane = &x[bc * s.h * s.w..][..s.h * s.w];
        for oy in 0..s.ho {
            let (y0, y1, ly) = axis::<T>(oy, s.h, s.ho);
            for ox in 0..s.wo {
                let (x0, x1, lx) = axis::<T>(ox, s.w, s.wo);
                let at = |y: usize, xx: usize| plane[y * s.w + xx];
                let top = (T::one() - lx) * at(y0, x0) + lx * at(y0, x1);
                let bottom = (T::one() - lx) * at(y1, x0) + lx * at(y1, x1);
                out[(bc * s.ho + oy) * s.wo + ox] = scale * ((T::one() - ly) * top + ly * bottom) + shift;
            }
        }
    }
}

// --- the network -------------------------------------------------------------------------------

/// An activation (B, C, H, W) of the reference forward.
struct Act {
    x: Vec<f64>,
    c: usize,
    h: usize,
    w: usize,
}

/// pytorch-fid's InceptionV3 (resize, 2x - 1, blocks 0-3, AdaptiveAvgPool2d(1)) in f64 from the
/// folded weights, written out block by block like the PyTorch modules (FIDInceptionA/C/E_1/E_2,
/// InceptionB/D) and independently of `eval::inception`'s plan. images: (n, 3, h, w) in [0, 1];
/// returns (n, 2048).
pub fn forward(weights: &InceptionWeights, images: &[f64], n: usize, h: usize, w: usize) -> Vec<f64> {
    let s = ResizeShape { b: n, c: 3, h, w, ho: INPUT, wo: INPUT, scale: 2.0, shift: -1.0 };
    let mut x = vec![0.0; n * 3 * INPUT * INPUT];
    resize_bilinear_fwd(&mut x, images, s);
    let net = Net { weights, n };
    let x = Act { x, c: 3, h: INPUT, w: INPUT };
    // block 0
    let x = net.conv("Conv2d_1a_3x3", &x, 2, (0, 0));
    let x = net.conv("Conv2d_2a_3x3", &x, 1, (0, 0));
    let x = net.conv("Conv2d_2b_3x3", &x, 1, (1, 1));
    let x = net.max_pool(&x, 2, 0);
    // block 1
    let x = net.conv("Conv2d_3b_1x1", &x, 1, (0, 0));
    let x = net.conv("Conv2d_4a_3x3", &x, 1, (0, 0));
    let x = net.max_pool(&x, 2, 0);
    // block 2
    let x = net.inception_a("Mixed_5b", &x);
    let x = net.inception_a("Mixed_5c", &x);
    let x = net.inception_a("Mixed_5d", &x);
    let x = net.inception_b("Mixed_6a", &x);
    let x = net.inception_c("Mixed_6b", &x);
    let x = net.inception_c("Mixed_6c", &x);
    let x = net.inception_c("Mixed_6d", &x);
    let x = net.inception_c("Mixed_6e", &x);
    // block 3
    let x = net.inception_d("Mixed_7a", &x);
    let x = net.inception_e("Mixed_7b", &x, false);
    let x = net.inception_e("Mixed_7c", &x, true);
    let mut out = vec![0.0; n * FEATURES];
    global_avgpool_fwd(&mut out, &x.x, n, x.c, x.h * x.w, Slice::whole(x.c));
    out
}

struct Net<'a> {
    weights: &'a InceptionWeights,
    n: usize,
}

impl Net<'_> {
    /// BasicConv2d `name` (conv with the BatchNorm folded in, then ReLU).
    fn conv(&self, name: &str, x: &Act, stride: usize, (pad_h, pad_w): (usize, usize)) -> Act {
        let c = self.weights.conv(name).unwrap_or_else(|| panic!("reference forward: no conv {name}"));
        assert_eq!(c.cin, x.c, "reference forward: {name} input channels");
        let s =
            ConvShape { b: self.n, cin: x.c, h: x.h, w: x.w, cout: c.cout, kh: c.kh, kw: c.kw, stride, pad_h, pad_w };
        let mut out = vec![0.0; self.n * c.cout * s.ho() * s.wo()];
        let (wt, b) = (super::to_f64(&c.weight), super::to_f64(&c.bias));
        conv_fwd(&mut out, &x.x, &wt, Some(&b), s, true, Slice::whole(c.cout));
        Act { x: out, c: c.cout, h: s.ho(), w: s.wo() }
    }

    fn pool_with(&self, x: &Act, stride: usize, pad: usize, f: fn(&mut [f64], &[f64], PoolShape, Slice)) -> Act {
        let s = PoolShape { b: self.n, c: x.c, h: x.h, w: x.w, k: 3, stride, pad };
        let mut out = vec![0.0; self.n * x.c * s.ho() * s.wo()];
        f(&mut out, &x.x, s, Slice::whole(x.c));
        Act { x: out, c: x.c, h: s.ho(), w: s.wo() }
    }

    /// 3x3 max pooling.
    fn max_pool(&self, x: &Act, stride: usize, pad: usize) -> Act {
        self.pool_with(x, stride, pad, maxpool_fwd)
    }

    /// 3x3 average pooling, stride 1, padding 1, count_include_pad=False.
    fn avg_pool(&self, x: &Act) -> Act {
        self.pool_with(x, 1, 1, avgpool_fwd)
    }

    /// torch.cat(parts, 1).
    fn cat(&self, parts: &[Act]) -> Act {
        let c: usize = parts.iter().map(|p| p.c).sum();
        let (h, w) = (parts[0].h, parts[0].w);
        let mut out = vec![0.0; self.n * c * h * w];
        let mut off = 0;
        for p in parts {
            assert_eq!((p.h, p.w), (h, w), "reference forward: concatenated sizes");
            channel_copy(&mut out, &p.x, self.n, p.c, h * w, Slice { c_off: off, c_total: c });
            off += p.c;
        }
        Act { x: out, c, h, w }
    }

    fn inception_a(&self, m: &str, x: &Act) -> Act {
        let b1 = self.conv(&format!("{m}.branch1x1"), x, 1, (0, 0));
        let b5 = self.conv(&format!("{m}.branch5x5_1"), x, 1, (0, 0));
        let b5 = self.conv(&format!("{m}.branch5x5_2"), &b5, 1, (2, 2));
        let b3 = self.conv(&format!("{m}.branch3x3dbl_1"), x, 1, (0, 0));
        let b3 = self.conv(&format!("{m}.branch3x3dbl_2"), &b3, 1, (1, 1));
        let b3 = self.conv(&format!("{m}.branch3x3dbl_3"), &b3, 1, (1, 1));
        let bp = self.conv(&format!("{m}.branch_pool"), &self.avg_pool(x), 1, (0, 0));
        self.cat(&[b1, b5, b3, bp])
    }

    fn inception_b(&self, m: &str, x: &Act) -> Act {
        let b3 = self.conv(&format!("{m}.branch3x3"), x, 2, (0, 0));
        let bd = self.conv(&format!("{m}.branch3x3dbl_1"), x, 1, (0, 0));
        let bd = self.conv(&format!("{m}.branch3x3dbl_2"), &bd, 1, (1, 1));
        let bd = self.conv(&format!("{m}.branch3x3dbl_3"), &bd, 2, (0, 0));
        let bp = self.max_pool(x, 2, 0);
        self.cat(&[b3, bd, bp])
    }

    fn inception_c(&self, m: &str, x: &Act) -> Act {
        let b1 = self.conv(&format!("{m}.branch1x1"), x, 1, (0, 0));
        let b7 = self.conv(&format!("{m}.branch7x7_1"), x, 1, (0, 0));
        let b7 = self.conv(&format!("{m}.branch7x7_2"), &b7, 1, (0, 3));
        let b7 = self.conv(&format!("{m}.branch7x7_3"), &b7, 1, (3, 0));
        let bd = self.conv(&format!("{m}.branch7x7dbl_1"), x, 1, (0, 0));
        let bd = self.conv(&format!("{m}.branch7x7dbl_2"), &bd, 1, (3, 0));
        let bd = self.conv(&format!("{m}.branch7x7dbl_3"), &bd, 1, (0, 3));
        let bd = self.conv(&format!("{m}.branch7x7dbl_4"), &bd, 1, (3, 0));
        let bd = self.conv(&format!("{m}.branch7x7dbl_5"), &bd, 1, (0, 3));
        let bp = self.conv(&format!("{m}.branch_pool"), &self.avg_pool(x), 1, (0, 0));
        self.cat(&[b1, b7, bd, bp])
    }

    fn inception_d(&self, m: &str, x: &Act) -> Act {
        let b3 = self.conv(&format!("{m}.branch3x3_1"), x, 1, (0, 0));
        let b3 = self.conv(&format!("{m}.branch3x3_2"), &b3, 2, (0, 0));
        let b7 = self.conv(&format!("{m}.branch7x7x3_1"), x, 1, (0, 0));
        let b7 = self.conv(&format!("{m}.branch7x7x3_2"), &b7, 1, (0, 3));
        let b7 = self.conv(&format!("{m}.branch7x7x3_3"), &b7, 1, (3, 0));
        let b7 = self.conv(&format!("{m}.branch7x7x3_4"), &b7, 2, (0, 0));
        let bp = self.max_pool(x, 2, 0);
        self.cat(&[b3, b7, bp])
    }

    /// FIDInceptionE_1 (`max_pool` false: average pooling without padding counted) or
    /// FIDInceptionE_2 (max pooling) of the pooling branch.
    fn inception_e(&self, m: &str, x: &Act, max_pool: bool) -> Act {
        let b1 = self.conv(&format!("{m}.branch1x1"), x, 1, (0, 0));
        let b3 = self.conv(&format!("{m}.branch3x3_1"), x, 1, (0, 0));
        let b3a = self.conv(&format!("{m}.branch3x3_2a"), &b3, 1, (0, 1));
        let b3b = self.conv(&format!("{m}.branch3x3_2b"), &b3, 1, (1, 0));
        let bd = self.conv(&format!("{m}.branch3x3dbl_1"), x, 1, (0, 0));
        let bd = self.conv(&format!("{m}.branch3x3dbl_2"), &bd, 1, (1, 1));
        let bda = self.conv(&format!("{m}.branch3x3dbl_3a"), &bd, 1, (0, 1));
        let bdb = self.conv(&format!("{m}.branch3x3dbl_3b"), &bd, 1, (1, 0));
        let pooled = if max_pool { self.max_pool(x, 1, 1) } else { self.avg_pool(x) };
        let bp = self.conv(&format!("{m}.branch_pool"), &pooled, 1, (0, 0));
        let b3 = self.cat(&[b3a, b3b]);
        let bd = self.cat(&[bda, bdb]);
        self.cat(&[b1, b3, bd, bp])
    }
}
