//! Self-attention layer over the T = H * W pixels of a feature map: the math of
//! `reference::attention::attention_fwd` / `attention_bwd` (layouts there), on the GPU from
//! conv2d, matmul and softmax kernels, checked against it by tests/native/nn_attention.rs. Forward,
//! views and what is saved are on `Attention`. Not here: the GroupNorm before the block and the
//! residual add after it (the caller's).

use super::params::{Init, ParamId, ParamLayout, Params};
use crate::gpu::{Buffer, Dispatch, Gpu, GpuError, VIEW_ALIGN};
use crate::ops::conv2d::Conv2dShape;
use crate::ops::conv2d::{conv2d_bwd_bias, conv2d_bwd_input, conv2d_bwd_weight, conv2d_fwd};
use crate::ops::elementwise as ew;
use crate::ops::matmul::{matmul_strided, Dims, Layout, Strides};
use crate::ops::softmax::{softmax_rows_bwd, softmax_rows_fwd};
use num_traits::Float;

/// Problem size: B maps of C channels and T tokens, `heads` dividing C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub b: usize,
    pub c: usize,
    pub t: usize,
    pub heads: usize,
}

impl AttentionShape {
    pub fn new(b: usize, c: usize, t: usize, heads: usize) -> Self {
        assert!(heads > 0 && c.is_multiple_of(heads), "attention: {heads} heads do not divide {c} channels");
        Self { b, c, t, heads }
    }

    /// Channels per head, D = C / heads.
    pub fn d(&self) -> usize {
        self.c / self.heads
    }

    /// Elements of x, out, y: B * C * T.
    pub fn x_len(&self) -> usize {
        self.b * self.c * self.t
    }

    /// Elements of qkv: B * 3C * T.
    pub fn qkv_len(&self) -> usize {
        3 * self.x_len()
    }

    /// Elements of scores and attn: B * heads * T * T.
    pub fn attn_len(&self) -> usize {
        self.b * self.heads * self.t * self.t
    }

    /// Index in qkv of channel d of head h of block `which` (0 = q, 1 = k, 2 = v), token i.
    pub(crate) fn qkv_idx(&self, b: usize, which: usize, h: usize, d: usize, i: usize) -> usize {
        ((b * 3 + which) * self.c + h * self.d() + d) * self.t + i
    }

    /// Index in out (B, C, T) of channel d of head h, token i.
    pub(crate) fn out_idx(&self, b: usize, h: usize, d: usize, i: usize) -> usize {
        (b * self.c + h * self.d() + d) * self.t + i
    }

    /// Index in scores / attn of (query i, key j) of head h.
    pub(crate) fn attn_idx(&self, b: usize, h: usize, i: usize, j: usize) -> usize {
        ((b * self.heads + h) * self.t + i) * self.t + j
    }

    /// 1/sqrt(D), the scaling of the scores ("Attention is all you need", eq. 1).
    pub(crate) fn scale<T: Float>(&self) -> T {
        T::one() / T::from(self.d()).unwrap_or_else(T::nan).sqrt()
    }

    /// The input projection as a convolution: (B, C, 1, T) -> (B, 3C, 1, T), K = 1.
    pub fn qkv_conv(&self) -> Conv2dShape {
        Conv2dShape::new(self.b, self.c, 3 * self.c, 1, self.t, 1, 1)
    }

    /// The output projection as a convolution: (B, C, 1, T) -> (B, C, 1, T), K = 1.
    pub fn out_conv(&self) -> Conv2dShape {
        Conv2dShape::new(self.b, self.c, self.c, 1, self.t, 1, 1)
    }
}

/// The attention block's parameters and sizes.
///
/// ```text
/// qkv    = W_qkv x + b_qkv            conv2d 1x1                    (B, 3C, T)
/// scores = q_h^T k_h / sqrt(D)        matmul tn per head, then scale (B, heads, T, T)
/// attn   = softmax over keys          softmax_rows_fwd               (B, heads, T, T)
/// out_h  = v_h attn_h^T               matmul nt per head             (B, C, T)
/// y      = W_o out + b_o              conv2d 1x1                     (B, C, T)
/// ```
///
/// The q, k, v blocks of head h are views of the one qkv buffer plus a batch stride of 3 C T
/// (`matmul_strided`), so no copy splits them. A view must start at a multiple of `VIEW_ALIGN`
/// elements, hence the shape rule checked by `Attention::buffers`: D T a multiple of 64 (D =
/// C / heads), and with more than one head T T a multiple of 64 too (head h of the scores starts
/// at h T T).
///
/// Saved by forward (in `AttentionBuffers`): qkv, attn (the softmax output, all its backward
/// needs) and out (the heads' output before W_o, for dW_o); the input x is the caller's. Backward
/// overwrites dx and the scratch buffers; the four parameter gradients are accumulated (`+=`) by
/// the conv2d weight and bias kernels onto the gradient buffer the model zeroes once per step,
/// each parameter being used once per forward, so they end up written once as the layer
/// contract in `nn/mod.rs` asks.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    /// W_qkv, (3C, C): rows [q; k; v], head h owning rows h D..(h+1) D of each block.
    pub qkv_weight: ParamId,
    /// b_qkv, (3C,).
    pub qkv_bias: ParamId,
    /// W_o, (C, C).
    pub proj_weight: ParamId,
    /// b_o, (C,).
    pub proj_bias: ParamId,
    /// Channels C.
    pub channels: usize,
    /// Heads, dividing C.
    pub heads: usize,
}

/// Activations and scratch of one attention layer for one (batch, T), allocated once.
#[derive(Debug)]
pub struct AttentionBuffers {
    pub shape: AttentionShape,
    /// Saved: the projection [q; k; v]. (B, 3C, T)
    pub qkv: Buffer,
    /// Saved: softmax probabilities, row = query. (B, heads, T, T)
    pub attn: Buffer,
    /// Saved: the heads' output before W_o. (B, C, T)
    pub out: Buffer,
    /// Scratch: raw scores in forward; dattn, then the scaled dscores in backward. (B, heads, T, T)
    pub scratch0: Buffer,
    /// Scratch: scaled scores in forward; unscaled dscores in backward. (B, heads, T, T)
    pub scratch1: Buffer,
    /// Gradient of `out`. (B, C, T)
    pub dout: Buffer,
    /// Gradient of `qkv`. (B, 3C, T)
    pub dqkv: Buffer,
}

/// Elements spanned by `batch` items of `len` elements `stride` apart.
fn span(batch: usize, stride: usize, len: usize) -> usize {
    (batch - 1) * stride + len
}

impl Attention {
    /// Registers `{name}.qkv.weight` (3C, C), `{name}.qkv.bias` (3C,), `{name}.proj.weight`
    /// (C, C) and `{name}.proj.bias` (C,), the two 1x1 convolutions, with PyTorch's default
    /// init (fan-in C). EDM zero-initialises proj; a model that wants that overwrites it.
    pub fn new(layout: &mut ParamLayout, name: &str, channels: usize, heads: usize) -> Self {
        let c = channels;
        Self {
            qkv_weight: layout.add(format!("{name}.qkv.weight"), &[3 * c, c], Init::FanIn(c)),
            qkv_bias: layout.add(format!("{name}.qkv.bias"), &[3 * c], Init::FanIn(c)),
            proj_weight: layout.add(format!("{name}.proj.weight"), &[c, c], Init::FanIn(c)),
            proj_bias: layout.add(format!("{name}.proj.bias"), &[c], Init::FanIn(c)),
            channels,
            heads,
        }
    }

    /// The shape for `batch` maps of `t` tokens, or why the kernels cannot address it.
    pub fn shape(&self, batch: usize, t: usize) -> Result<AttentionShape, GpuError> {
        let (c, heads) = (self.channels, self.heads);
        if batch == 0 || t == 0 || c == 0 || heads == 0 || !c.is_multiple_of(heads) {
            return Err(GpuError::Shape(format!(
                "attention: B={batch} C={c} T={t} heads={heads} (heads must divide C)"
            )));
        }
        let d = c / heads;
        if !(d * t).is_multiple_of(VIEW_ALIGN) || (heads > 1 && !(t * t).is_multiple_of(VIEW_ALIGN)) {
            return Err(GpuError::Shape(format!(
                "attention: C={c} T={t} heads={heads} needs (C/heads)*T, and with several heads T*T, \
                 to be multiples of {VIEW_ALIGN} (per-head blocks are buffer views)"
            )));
        }
        Ok(AttentionShape::new(batch, c, t, heads))
    }

    /// Allocates the saved activations and scratch for `batch` maps of `t` tokens.
    pub fn buffers(&self, gpu: &Gpu, batch: usize, t: usize) -> Result<AttentionBuffers, GpuError> {
        let s = self.shape(batch, t)?;
        Ok(AttentionBuffers {
            shape: s,
            qkv: gpu.zeros("attn.qkv", s.qkv_len())?,
            attn: gpu.zeros("attn.attn", s.attn_len())?,
            out: gpu.zeros("attn.out", s.x_len())?,
            scratch0: gpu.zeros("attn.scratch0", s.attn_len())?,
            scratch1: gpu.zeros("attn.scratch1", s.attn_len())?,
            dout: gpu.zeros("attn.dout", s.x_len())?,
            dqkv: gpu.zeros("attn.dqkv", s.qkv_len())?,
        })
    }

    /// y = W_o attention(W_qkv x + b_qkv) + b_o (+ res, when given, in the output projection's
    /// pass: a residual connection; y must not be res); writes the saved buffers of `bufs`.
    /// x, y, res: (B, C, T)
    pub async fn forward(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        res: Option<&Buffer>,
        y: &Buffer,
        bufs: &AttentionBuffers,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let (s, v) = self.views(bufs)?;
        let (wq, bq) = (p.value(self.qkv_weight)?, p.value(self.qkv_bias)?);
        let (wo, bo) = (p.value(self.proj_weight)?, p.value(self.proj_bias)?);
        let (tt, dt) = (v.scores(), v.mix());

        let mut out = vec![conv2d_fwd(gpu, x, &wq, Some(&bq), None, &bufs.qkv, s.qkv_conv()).await?];
        for h in 0..s.heads {
            // scores_h (T, T) = q_h^T (T, D) k_h (D, T)
            let (q, k, sc) = (v.qkv(&bufs.qkv, 0, h)?, v.qkv(&bufs.qkv, 1, h)?, v.tt(&bufs.scratch0, h)?);
            let st = Strides { a: v.qkv_stride(), b: v.qkv_stride(), out: v.tt_stride() };
            out.push(matmul_strided(gpu, Layout::TN, &q, &k, None, &sc, tt, st).await?);
        }
        out.push(ew::scale(gpu, &bufs.scratch0, &bufs.scratch1, s.attn_len(), scale(s)).await?);
        out.push(softmax_rows_fwd(gpu, &bufs.scratch1, &bufs.attn, s.b * s.heads * s.t, s.t).await?);
        for h in 0..s.heads {
            // out_h (D, T) = v_h (D, T) attn_h^T, attn_h (T query, T key)
            let (vh, a, o) = (v.qkv(&bufs.qkv, 2, h)?, v.tt(&bufs.attn, h)?, v.ct(&bufs.out, h)?);
            let st = Strides { a: v.qkv_stride(), b: v.tt_stride(), out: v.ct_stride() };
            out.push(matmul_strided(gpu, Layout::NT, &vh, &a, None, &o, dt, st).await?);
        }
        out.push(conv2d_fwd(gpu, &bufs.out, &wo, Some(&bo), res, y, s.out_conv()).await?);
        Ok(out)
    }

    /// Parameter gradients (accumulated onto the zeroed gradient buffer) and, when `dx` is
    /// given, dx (overwritten), from dy and the buffers the forward saved. x, dy, dx: (B, C, T)
    pub async fn backward(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        dy: &Buffer,
        dx: Option<&Buffer>,
        bufs: &AttentionBuffers,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let (s, v) = self.views(bufs)?;
        let (wq, wo) = (p.value(self.qkv_weight)?, p.value(self.proj_weight)?);
        let (tt, dt) = (v.scores(), v.mix());
        let (oc, qc) = (s.out_conv(), s.qkv_conv());

        let mut out = vec![
            conv2d_bwd_input(gpu, dy, &wo, None, &bufs.dout, oc).await?,
            conv2d_bwd_weight(gpu, dy, &bufs.out, &p.grad(self.proj_weight)?, oc).await?,
            conv2d_bwd_bias(gpu, dy, &p.grad(self.proj_bias)?, oc).await?,
        ];
        for h in 0..s.heads {
            let (dout, vh, a) = (v.ct(&bufs.dout, h)?, v.qkv(&bufs.qkv, 2, h)?, v.tt(&bufs.attn, h)?);
            // dattn_h (T, T) = dout_h^T (T, D) v_h (D, T)
            let st = Strides { a: v.ct_stride(), b: v.qkv_stride(), out: v.tt_stride() };
            out.push(matmul_strided(gpu, Layout::TN, &dout, &vh, None, &v.tt(&bufs.scratch0, h)?, tt, st).await?);
            // dv_h (D, T) = dout_h (D, T) attn_h (T, T)
            let st = Strides { a: v.ct_stride(), b: v.tt_stride(), out: v.qkv_stride() };
            out.push(matmul_strided(gpu, Layout::NN, &dout, &a, None, &v.qkv(&bufs.dqkv, 2, h)?, dt, st).await?);
        }
        out.push(softmax_rows_bwd(gpu, &bufs.scratch0, &bufs.attn, &bufs.scratch1, s.b * s.heads * s.t, s.t).await?);
        // dscores of the unscaled q^T k, into scratch0.
        out.push(ew::scale(gpu, &bufs.scratch1, &bufs.scratch0, s.attn_len(), scale(s)).await?);
        for h in 0..s.heads {
            let (q, k, ds) = (v.qkv(&bufs.qkv, 0, h)?, v.qkv(&bufs.qkv, 1, h)?, v.tt(&bufs.scratch0, h)?);
            let st = Strides { a: v.qkv_stride(), b: v.tt_stride(), out: v.qkv_stride() };
            // dq_h (D, T query) = k_h (D, T key) ds_h^T
            out.push(matmul_strided(gpu, Layout::NT, &k, &ds, None, &v.qkv(&bufs.dqkv, 0, h)?, dt, st).await?);
            // dk_h (D, T key) = q_h (D, T query) ds_h
            out.push(matmul_strided(gpu, Layout::NN, &q, &ds, None, &v.qkv(&bufs.dqkv, 1, h)?, dt, st).await?);
        }
        out.push(conv2d_bwd_weight(gpu, &bufs.dqkv, x, &p.grad(self.qkv_weight)?, qc).await?);
        out.push(conv2d_bwd_bias(gpu, &bufs.dqkv, &p.grad(self.qkv_bias)?, qc).await?);
        if let Some(dx) = dx {
            out.push(conv2d_bwd_input(gpu, &bufs.dqkv, &wq, None, dx, qc).await?);
        }
        Ok(out)
    }

    /// The buffers' shape, which must be one this layer accepts, and the per-head views of them.
    fn views(&self, bufs: &AttentionBuffers) -> Result<(AttentionShape, Views), GpuError> {
        let s = bufs.shape;
        if s.c != self.channels || s.heads != self.heads {
            return Err(GpuError::Shape(format!(
                "attention buffers for C={} heads={} bound to a layer with C={} heads={}",
                s.c, s.heads, self.channels, self.heads
            )));
        }
        let s = self.shape(s.b, s.t)?;
        Ok((s, Views { s }))
    }
}

/// 1/sqrt(D), "Attention is all you need" eq. 1.
fn scale(s: AttentionShape) -> f32 {
    1.0 / (s.d() as f32).sqrt()
}

/// Per-head views of the layer's buffers, each spanning all B batch items (addressed with the
/// matching stride).
struct Views {
    s: AttentionShape,
}

impl Views {
    /// The per-head score products: (T, T) over D.
    fn scores(&self) -> Dims {
        Dims { m: self.s.t, n: self.s.t, k: self.s.d(), batch: self.s.b }
    }

    /// The per-head mixing products: (D, T) over T.
    fn mix(&self) -> Dims {
        Dims { m: self.s.d(), n: self.s.t, k: self.s.t, batch: self.s.b }
    }

    fn qkv_stride(&self) -> usize {
        3 * self.s.c * self.s.t
    }

    fn ct_stride(&self) -> usize {
        self.s.c * self.s.t
    }

    fn tt_stride(&self) -> usize {
        self.s.heads * self.s.t * self.s.t
    }

    /// Block `which` (0 = q, 1 = k, 2 = v) of head h in a (B, 3C, T) buffer: (D, T) per item.
    fn qkv(&self, buf: &Buffer, which: usize, h: usize) -> Result<Buffer, GpuError> {
        let (c, d, t) = (self.s.c, self.s.d(), self.s.t);
        buf.view((which * c + h * d) * t, span(self.s.b, self.qkv_stride(), d * t))
    }

    /// Head h of a (B, C, T) buffer: (D, T) per item.
    fn ct(&self, buf: &Buffer, h: usize) -> Result<Buffer, GpuError> {
        let (d, t) = (self.s.d(), self.s.t);
        buf.view(h * d * t, span(self.s.b, self.ct_stride(), d * t))
    }

    /// Head h of a (B, heads, T, T) buffer: (T, T) per item.
    fn tt(&self, buf: &Buffer, h: usize) -> Result<Buffer, GpuError> {
        let t = self.s.t;
        buf.view(h * t * t, span(self.s.b, self.tt_stride(), t * t))
    }
}
