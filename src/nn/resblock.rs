//! DDPM++-style residual block with noise-embedding conditioning (math.md §8), at one resolution.
//! Its forward (on `ResBlock`) is the contract the PyTorch mirror copies; the backward overwrites
//! `dx` and writes or accumulates `dtemb` (`GradMode`).

use super::conv2d::Conv2d;
use super::groupnorm::{GroupNorm, GroupNormStats};
use super::linear::Linear;
use super::params::{ParamLayout, Params};
use crate::gpu::{Buffer, Dispatch, Gpu, GpuError};
use crate::ops::{elementwise as ew, embedding};

/// The forward, the contract the PyTorch mirror copies (x (B, Cin, H, W), temb (B, E),
/// out (B, Cout, H, W)):
///
/// ```text
/// h     = conv1(silu(norm1(x)))                    norm1 GroupNorm(G1, Cin), conv1 3x3 Cin -> Cout
/// scale = emb_scale(silu(temb))                    Linear E -> Cout, (B, Cout)
/// shift = emb_shift(silu(temb))                    Linear E -> Cout, (B, Cout)
/// h     = norm2(h) * (1 + scale) + shift           norm2 GroupNorm(G2, Cout), broadcast over H, W
/// h     = conv2(silu(h))                           conv2 3x3 Cout -> Cout
/// out   = skip(x) + h                              skip 1x1 conv Cin -> Cout if Cin != Cout, else x
/// ```
///
/// No 1/sqrt(2) scaling of the sum, no dropout. The embedding projection is two Linear layers
/// rather than one E -> 2 Cout split into halves: a (B, 2 Cout) output interleaves scale and
/// shift per row, so its halves are not buffer views. This is the same function as one
/// Linear(E, 2 Cout) whose weight is `cat([emb_scale.weight, emb_shift.weight])` (scale first),
/// and a mirror that uses one Linear maps its halves onto the two names.
///
/// Parameter names: `{name}.norm1.{weight,bias}`, `{name}.conv1.{weight,bias}`,
/// `{name}.emb_scale.{weight,bias}`, `{name}.emb_shift.{weight,bias}`, `{name}.norm2.*`,
/// `{name}.conv2.*`, and `{name}.skip.*` only when Cin != Cout; registered in that order.
///
/// Backward: `dx` overwritten; `dtemb` overwritten or accumulated (`+=`), chosen per call, since
/// a UNet sums the contributions of all its blocks; parameter gradients as in the layers: Linear
/// weights written, everything else accumulated onto the flat buffer the model zeroes per step.
#[derive(Clone, Copy, Debug)]
pub struct ResBlock {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub emb_scale: Linear,
    pub emb_shift: Linear,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    /// The 1x1 projection of the residual path, present when Cin != Cout.
    pub skip: Option<Conv2d>,
    pub cin: usize,
    pub cout: usize,
    /// Width E of the noise embedding.
    pub emb_dim: usize,
}

/// How backward writes the embedding gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradMode {
    /// `dtemb = ...` (the first block of the backward pass).
    Write,
    /// `dtemb += ...` (every later block).
    Add,
}

/// The buffers of one block bound to one (B, H, W): what the forward saves and the backward's
/// scratch. Built once with the model.
///
/// Saved by the forward: silu(norm1(x)) (not norm1(x) itself), conv1's output, silu(temb), scale,
/// shift, norm2's output, silu of the modulated h (not h itself), and both norms' (mean, rstd):
/// the backward recomputes what is not saved. The caller keeps x and temb alive until backward.
#[derive(Debug)]
pub struct ResBlockActs {
    pub b: usize,
    pub h: usize,
    pub w: usize,
    /// silu(norm1(x)). (B, Cin, H, W)
    a1: Buffer,
    /// conv1 output, norm2 output, silu of the modulated norm2 output. (B, Cout, H, W)
    h1: Buffer,
    n2: Buffer,
    a2: Buffer,
    /// silu(temb). (B, E)
    ta: Buffer,
    /// Per-channel modulation. (B, Cout)
    scale: Buffer,
    shift: Buffer,
    stats1: GroupNormStats,
    stats2: GroupNormStats,
    /// Output of the skip conv when there is one. (B, Cout, H, W)
    skip_out: Option<Buffer>,
    // --- backward scratch ---
    /// (B, Cout, H, W) each.
    g_out1: Buffer,
    g_out2: Buffer,
    /// (B, Cin, H, W) each.
    g_in1: Buffer,
    g_in2: Buffer,
    /// dscale, dshift. (B, Cout)
    dscale: Buffer,
    dshift: Buffer,
    /// Gradients of silu(temb) from the two projections, and of temb. (B, E)
    dta1: Buffer,
    dta2: Buffer,
    dtemb_own: Buffer,
}

impl ResBlock {
    /// Registers the block's parameters under `name`. `groups(c)` gives the GroupNorm group count
    /// for c channels (for example `|c| (c / 4).min(32)`, math.md §8); it must divide Cin and Cout.
    pub fn new(
        layout: &mut ParamLayout,
        name: &str,
        cin: usize,
        cout: usize,
        emb_dim: usize,
        groups: impl Fn(usize) -> usize,
    ) -> Self {
        let norm1 = GroupNorm::new(layout, &format!("{name}.norm1"), cin, groups(cin));
        let conv1 = Conv2d::new(layout, &format!("{name}.conv1"), cin, cout, 3, 1);
        let emb_scale = Linear::new(layout, &format!("{name}.emb_scale"), emb_dim, cout);
        let emb_shift = Linear::new(layout, &format!("{name}.emb_shift"), emb_dim, cout);
        let norm2 = GroupNorm::new(layout, &format!("{name}.norm2"), cout, groups(cout));
        let conv2 = Conv2d::new(layout, &format!("{name}.conv2"), cout, cout, 3, 1);
        let skip = (cin != cout).then(|| Conv2d::new(layout, &format!("{name}.skip"), cin, cout, 1, 1));
        Self { norm1, conv1, emb_scale, emb_shift, norm2, conv2, skip, cin, cout, emb_dim }
    }

    /// Allocates the saved activations and backward scratch for batches of `b` images of H x W.
    pub fn acts(&self, gpu: &Gpu, b: usize, h: usize, w: usize) -> Result<ResBlockActs, GpuError> {
        let (ni, no, ne, nc) = (b * self.cin * h * w, b * self.cout * h * w, b * self.emb_dim, b * self.cout);
        let z = |name: &str, n: usize| gpu.zeros(name, n);
        Ok(ResBlockActs {
            b,
            h,
            w,
            a1: z("rb_a1", ni)?,
            h1: z("rb_h1", no)?,
            n2: z("rb_n2", no)?,
            a2: z("rb_a2", no)?,
            ta: z("rb_temb_act", ne)?,
            scale: z("rb_scale", nc)?,
            shift: z("rb_shift", nc)?,
            stats1: self.norm1.stats(gpu, b)?,
            stats2: self.norm2.stats(gpu, b)?,
            skip_out: self.skip.map(|_| z("rb_skip", no)).transpose()?,
            g_out1: z("rb_g_out1", no)?,
            g_out2: z("rb_g_out2", no)?,
            g_in1: z("rb_g_in1", ni)?,
            g_in2: z("rb_g_in2", ni)?,
            dscale: z("rb_dscale", nc)?,
            dshift: z("rb_dshift", nc)?,
            dta1: z("rb_dta1", ne)?,
            dta2: z("rb_dta2", ne)?,
            dtemb_own: z("rb_dtemb", ne)?,
        })
    }

    /// The forward written out on `ResBlock`. x (B, Cin, H, W), temb (B, E), out (B, Cout, H, W)
    /// overwritten; `a` receives what backward needs.
    pub async fn forward(
        &self,
        gpu: &Gpu,
        p: &Params,
        a: &ResBlockActs,
        x: &Buffer,
        temb: &Buffer,
        out: &Buffer,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let (b, h, w, hw) = (a.b, a.h, a.w, a.h * a.w);
        let bc = b * self.cout;
        let mut d = self.norm1.forward_silu(gpu, p, x, &a.a1, &a.stats1, b, hw).await?;
        d.extend(self.conv1.forward(gpu, p, &a.a1, &a.h1, b, h, w).await?);
        d.push(ew::silu_fwd(gpu, temb, &a.ta, b * self.emb_dim).await?);
        d.extend(self.emb_scale.forward(gpu, p, &a.ta, &a.scale, b).await?);
        d.extend(self.emb_shift.forward(gpu, p, &a.ta, &a.shift, b).await?);
        d.extend(self.norm2.forward(gpu, p, &a.h1, &a.n2, &a.stats2, b, hw).await?);
        // The modulation and its SiLU in one pass (the modulated h is recomputed in backward).
        d.push(embedding::scale_shift_silu_fwd(gpu, &a.n2, &a.scale, &a.shift, &a.a2, bc, hw).await?);
        // out = skip(x) + conv2(..), the residual added by conv2's own pass.
        let res = match (&self.skip, &a.skip_out) {
            (Some(skip), Some(s)) => {
                d.extend(skip.forward(gpu, p, x, s, b, h, w).await?);
                s
            }
            _ => x,
        };
        d.extend(self.conv2.forward_add(gpu, p, &a.a2, res, out, b, h, w).await?);
        Ok(d)
    }

    /// Backward of `forward` for upstream `dout` (B, Cout, H, W); x, temb as given to the
    /// forward. dx (B, Cin, H, W) overwritten; dtemb (B, E) written or accumulated per `mode`.
    #[allow(clippy::too_many_arguments)]
    pub async fn backward(
        &self,
        gpu: &Gpu,
        p: &Params,
        a: &ResBlockActs,
        x: &Buffer,
        temb: &Buffer,
        dout: &Buffer,
        dx: &Buffer,
        dtemb: &Buffer,
        mode: GradMode,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let (b, h, w, hw) = (a.b, a.h, a.w, a.h * a.w);
        let (ni, bc, ne) = (b * self.cin * hw, b * self.cout, b * self.emb_dim);
        // out = skip(x) + h2: dh2 = dout.
        let mut d = self.conv2.backward(gpu, p, &a.a2, dout, Some(&a.g_out1), b, h, w).await?; // da2
        let (n2, sc, sh) = (&a.n2, &a.scale, &a.shift);
        let (ds, dh) = (&a.dscale, &a.dshift);
        d.push(embedding::scale_shift_silu_bwd(gpu, &a.g_out1, n2, sc, sh, &a.g_out2, ds, dh, bc, hw).await?); // dn2
        d.extend(self.norm2.backward(gpu, p, &a.h1, &a.g_out2, &a.stats2, Some(&a.g_out1), b, hw).await?); // dh1
        d.extend(self.conv1.backward(gpu, p, &a.a1, &a.g_out1, Some(&a.g_in1), b, h, w).await?); // da1
        d.extend(self.norm1.backward_silu(gpu, p, x, &a.g_in1, &a.stats1, &a.g_in2, b, hw).await?); // dx main
        match &self.skip {
            // dx = the main path's + the skip conv's input gradient, summed by the latter's pass.
            Some(skip) => d.extend(skip.backward_add(gpu, p, x, dout, &a.g_in2, dx, b, h, w).await?),
            None => d.push(ew::add(gpu, &a.g_in2, dout, dx, ni).await?),
        }
        // The embedding branch: d silu(temb) = dscale W_scale + dshift W_shift, then silu'.
        d.extend(self.emb_scale.backward(gpu, p, &a.ta, &a.dscale, Some(&a.dta1), b).await?);
        d.extend(self.emb_shift.backward(gpu, p, &a.ta, &a.dshift, Some(&a.dta2), b).await?);
        d.push(ew::axpy(gpu, &a.dta2, &a.dta1, ne, 1.0).await?);
        match mode {
            GradMode::Write => d.push(ew::silu_bwd(gpu, &a.dta1, temb, dtemb, ne).await?),
            GradMode::Add => {
                d.push(ew::silu_bwd(gpu, &a.dta1, temb, &a.dtemb_own, ne).await?);
                d.push(ew::axpy(gpu, &a.dtemb_own, dtemb, ne, 1.0).await?);
            }
        }
        Ok(d)
    }
}
