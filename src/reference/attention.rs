//! CPU reference of self-attention over the T = H * W pixels of a feature map (the UNet's
//! attention block, as DDPM's `AttnBlock` and EDM's `UNetBlock` with `num_heads`), in separable
//! pieces; the oracle of `nn::attention`. The math, layouts and what is saved are on
//! `attention_fwd`. Not here: the GroupNorm before the block and the residual add after it (the
//! caller's), EDM's `skip_scale`, dropout, masking, cross-attention.

use super::conv2d::{conv2d_bwd_bias, conv2d_bwd_input, conv2d_bwd_weight, conv2d_fwd};
use super::Float;
/// The oracle takes the layer's own shape type.
pub use crate::nn::attention::AttentionShape;

/// Parameters of the block. Accepted layouts are those of two 1x1 `nn.Conv2d`s.
#[derive(Clone, Copy, Debug)]
pub struct AttentionParams<'a, T> {
    pub w_qkv: &'a [T], // (3C, C)
    pub b_qkv: &'a [T], // (3C,)
    pub w_o: &'a [T],   // (C, C)
    pub b_o: &'a [T],   // (C,)
}

/// Parameter gradients of the block, accumulated.
#[derive(Debug)]
pub struct AttentionGrads<'a, T> {
    pub dw_qkv: &'a mut [T], // (3C, C)
    pub db_qkv: &'a mut [T], // (3C,)
    pub dw_o: &'a mut [T],   // (C, C)
    pub db_o: &'a mut [T],   // (C,)
}

/// What `attention_fwd` saves for `attention_bwd`.
#[derive(Clone, Copy, Debug)]
pub struct AttentionSaved<'a, T> {
    pub qkv: &'a [T],  // (B, 3C, T)
    pub attn: &'a [T], // (B, heads, T, T)
    pub out: &'a [T],  // (B, C, T)
}

// --- softmax over rows ------------------------------------------------------------------------

/// y[r, :] = exp(x[r, :] - max) / sum exp(x[r, :] - max). Subtracting the row max makes every
/// exponent <= 0, so inputs like +-1000 neither overflow nor produce 0/0. y, x: (R, N)
pub fn softmax_rows_fwd<T: Float>(y: &mut [T], x: &[T], n: usize) {
    for (yr, xr) in y.chunks_mut(n).zip(x.chunks(n)) {
        let max = xr.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
        let mut sum = T::zero();
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = (v - max).exp();
            sum = sum + *o;
        }
        for o in yr.iter_mut() {
            *o = *o / sum;
        }
    }
}

/// dx = y * (dy - sum(dy * y)) per row; needs only the forward output. Overwritten.
/// dx, dy, y: (R, N)
pub fn softmax_rows_bwd<T: Float>(dx: &mut [T], dy: &[T], y: &[T], n: usize) {
    for ((dr, gr), yr) in dx.chunks_mut(n).zip(dy.chunks(n)).zip(y.chunks(n)) {
        let dot = gr.iter().zip(yr).fold(T::zero(), |a, (&g, &p)| a + g * p);
        for ((o, &g), &p) in dr.iter_mut().zip(gr).zip(yr) {
            *o = p * (g - dot);
        }
    }
}

// --- scores = q^T k / sqrt(D) -----------------------------------------------------------------

/// scores[b, h, i, j] = sum_d q[b, h, d, i] k[b, h, d, j] / sqrt(D).
/// scores: (B, heads, T, T), qkv: (B, 3C, T)
pub fn attention_scores_fwd<T: Float>(scores: &mut [T], qkv: &[T], s: AttentionShape) {
    let scale = s.scale::<T>();
    for b in 0..s.b {
        for h in 0..s.heads {
            for i in 0..s.t {
                for j in 0..s.t {
                    let (q, k) = (&qkv[s.qkv_idx(b, 0, h, 0, i)..], &qkv[s.qkv_idx(b, 1, h, 0, j)..]);
                    scores[s.attn_idx(b, h, i, j)] = dot(q, k, s.d(), s.t) * scale;
                }
            }
        }
    }
}

/// sum_k a[k stride] b[k stride] over k < n, in order: over a head's D channels (stride T) or
/// over T tokens (stride 1, the last index of q, k, v and of a (T, T) matrix).
fn dot<T: Float>(a: &[T], b: &[T], n: usize, stride: usize) -> T {
    (0..n).fold(T::zero(), |acc, k| acc + a[k * stride] * b[k * stride])
}

/// dq[d, i] = sum_j dscores[i, j] k[d, j] / sqrt(D), dk[d, j] = sum_i dscores[i, j] q[d, i] / sqrt(D).
/// Overwrites the q and k blocks of dqkv and leaves its v block untouched.
/// dqkv: (B, 3C, T), dscores: (B, heads, T, T), qkv: (B, 3C, T)
pub fn attention_scores_bwd<T: Float>(dqkv: &mut [T], dscores: &[T], qkv: &[T], s: AttentionShape) {
    let scale = s.scale::<T>();
    for b in 0..s.b {
        for h in 0..s.heads {
            for d in 0..s.d() {
                for i in 0..s.t {
                    let acc = dot(&dscores[s.attn_idx(b, h, i, 0)..], &qkv[s.qkv_idx(b, 1, h, d, 0)..], s.t, 1);
                    dqkv[s.qkv_idx(b, 0, h, d, i)] = acc * scale;
                }
                for j in 0..s.t {
                    let mut acc = T::zero();
                    for i in 0..s.t {
                        acc = acc + dscores[s.attn_idx(b, h, i, j)] * qkv[s.qkv_idx(b, 0, h, d, i)];
                    }
                    dqkv[s.qkv_idx(b, 1, h, d, j)] = acc * scale;
                }
            }
        }
    }
}

// --- out = v attn^T ---------------------------------------------------------------------------

/// out[b, h*D + d, i] = sum_j attn[b, h, i, j] v[b, h, d, j].
/// out: (B, C, T), attn: (B, heads, T, T), qkv: (B, 3C, T)
pub fn attention_mix_fwd<T: Float>(out: &mut [T], attn: &[T], qkv: &[T], s: AttentionShape) {
    for b in 0..s.b {
        for h in 0..s.heads {
            for d in 0..s.d() {
                for i in 0..s.t {
                    out[s.out_idx(b, h, d, i)] =
                        dot(&attn[s.attn_idx(b, h, i, 0)..], &qkv[s.qkv_idx(b, 2, h, d, 0)..], s.t, 1);
                }
            }
        }
    }
}

/// dattn[i, j] = sum_d dout[d, i] v[d, j]; dv[d, j] = sum_i dout[d, i] attn[i, j] (per head).
/// Overwrites dattn and the v block of dqkv; leaves the q and k blocks untouched.
/// dattn: (B, heads, T, T), dqkv: (B, 3C, T), dout: (B, C, T), attn: (B, heads, T, T),
/// qkv: (B, 3C, T)
pub fn attention_mix_bwd<T: Float>(
    dattn: &mut [T],
    dqkv: &mut [T],
    dout: &[T],
    attn: &[T],
    qkv: &[T],
    s: AttentionShape,
) {
    for b in 0..s.b {
        for h in 0..s.heads {
            for i in 0..s.t {
                for j in 0..s.t {
                    let (dout_i, v) = (&dout[s.out_idx(b, h, 0, i)..], &qkv[s.qkv_idx(b, 2, h, 0, j)..]);
                    dattn[s.attn_idx(b, h, i, j)] = dot(dout_i, v, s.d(), s.t);
                }
            }
            for d in 0..s.d() {
                for j in 0..s.t {
                    let mut acc = T::zero();
                    for i in 0..s.t {
                        acc = acc + dout[s.out_idx(b, h, d, i)] * attn[s.attn_idx(b, h, i, j)];
                    }
                    dqkv[s.qkv_idx(b, 2, h, d, j)] = acc;
                }
            }
        }
    }
}

// --- the whole block --------------------------------------------------------------------------

/// y = W_o · attention(W_qkv x + b_qkv) + b_o; writes the saved `qkv`, `attn` and `out`.
/// y: (B, C, T), qkv: (B, 3C, T), attn: (B, heads, T, T), out: (B, C, T), x: (B, C, T)
///
/// ```text
/// qkv    = W_qkv x + b_qkv                     1x1 projection, conv2d with K = 1
/// scores = q^T k / sqrt(D)                      per head, D = C / heads  (`attention_scores_*`)
/// attn   = softmax over keys (rows of scores)   with max subtraction    (`softmax_rows_*`)
/// out    = v attn^T                              out[:, i] = sum_j attn[i, j] v[:, j] (`attention_mix_*`)
/// y      = W_o out + b_o                         1x1 projection
/// ```
///
/// Layouts: x, out, y (B, C, T) (NCHW with the spatial dims flattened); qkv (B, 3C, T) holds the
/// blocks [q; k; v] along channels, head h owning channels h*D..(h+1)*D of each block (PyTorch
/// `nn.MultiheadAttention`'s `in_proj_weight` order). EDM instead reshapes its qkv conv output
/// to (B*heads, D, 3, T), i.e. channel h*3D + 3d + {0, 1, 2}: loading EDM weights means
/// permuting the rows of W_qkv and b_qkv. scores and attn are (B, heads, T, T), row = query i,
/// column = key j.
///
/// Saved for backward: `qkv` (q and k for dscores, v for dattn), `attn` (the softmax output: its
/// backward needs only y, and the mix backward needs it too) and `out` (the heads' output before
/// W_o, for dW_o). The input x is the caller's (for dW_qkv); scores are not kept. Overwritten:
/// every forward output, `dx`, `dscores`, `dattn`, and the blocks of `dqkv` a piece owns
/// (`attention_scores_bwd`: q and k; `attention_mix_bwd`: v). Accumulated (`+=`): `dw_qkv`,
/// `db_qkv`, `dw_o`, `db_o`.
pub fn attention_fwd<T: Float>(
    y: &mut [T],
    qkv: &mut [T],
    attn: &mut [T],
    out: &mut [T],
    x: &[T],
    p: AttentionParams<'_, T>,
    s: AttentionShape,
) {
    conv2d_fwd(qkv, x, p.w_qkv, Some(p.b_qkv), s.qkv_conv());
    let mut scores = vec![T::zero(); s.attn_len()];
    attention_scores_fwd(&mut scores, qkv, s);
    softmax_rows_fwd(attn, &scores, s.t);
    attention_mix_fwd(out, attn, qkv, s);
    conv2d_fwd(y, out, p.w_o, Some(p.b_o), s.out_conv());
}

/// Backward of `attention_fwd` through the pieces in reverse order. dx is overwritten, the
/// parameter gradients in `g` are accumulated. The intermediate gradients (dout, dattn, dscores,
/// dqkv) are local here; the GPU keeps them as preallocated scratch buffers.
/// dx: (B, C, T), dy: (B, C, T), x: (B, C, T)
pub fn attention_bwd<T: Float>(
    dx: &mut [T],
    g: AttentionGrads<'_, T>,
    dy: &[T],
    x: &[T],
    saved: AttentionSaved<'_, T>,
    p: AttentionParams<'_, T>,
    s: AttentionShape,
) {
    let mut dout = vec![T::zero(); s.x_len()];
    conv2d_bwd_input(&mut dout, dy, p.w_o, s.out_conv());
    conv2d_bwd_weight(g.dw_o, dy, saved.out, s.out_conv());
    conv2d_bwd_bias(g.db_o, dy, s.out_conv());

    let mut dattn = vec![T::zero(); s.attn_len()];
    let mut dqkv = vec![T::zero(); s.qkv_len()];
    attention_mix_bwd(&mut dattn, &mut dqkv, &dout, saved.attn, saved.qkv, s);
    let mut dscores = vec![T::zero(); s.attn_len()];
    softmax_rows_bwd(&mut dscores, &dattn, saved.attn, s.t);
    attention_scores_bwd(&mut dqkv, &dscores, saved.qkv, s);

    conv2d_bwd_input(dx, &dqkv, p.w_qkv, s.qkv_conv());
    conv2d_bwd_weight(g.dw_qkv, &dqkv, x, s.qkv_conv());
    conv2d_bwd_bias(g.db_qkv, &dqkv, s.qkv_conv());
}
