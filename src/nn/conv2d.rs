//! Conv2d layer: y = conv(x, W) + b, NCHW, K 3 (padding 1) or 1 (padding 0), stride 1 or 2
//! (`ops::conv2d`). Forward saves nothing beyond its input x (the caller keeps it alive);
//! backward accumulates dW, db (see `backward`) and overwrites dx.

use super::params::{Init, ParamId, ParamLayout, Params};
use crate::gpu::{Buffer, Dispatch, Gpu, GpuError};
use crate::ops::conv2d as op;
use crate::ops::conv2d::Conv2dShape;

/// x (B, Cin, H, W), W (Cout, Cin, K, K), b (Cout,), y (B, Cout, Ho, Wo).
#[derive(Clone, Copy, Debug)]
pub struct Conv2d {
    pub weight: ParamId,
    pub bias: ParamId,
    pub cin: usize,
    pub cout: usize,
    /// Kernel size, 1 or 3 (padding k / 2).
    pub k: usize,
    /// 1, or 2 to halve H and W.
    pub stride: usize,
}

impl Conv2d {
    /// Registers `{name}.weight` (Cout, Cin, K, K) and `{name}.bias` (Cout,) with PyTorch's
    /// default init, U(+-1/sqrt(Cin K K)) for both.
    pub fn new(layout: &mut ParamLayout, name: &str, cin: usize, cout: usize, k: usize, stride: usize) -> Self {
        let fan_in = cin * k * k;
        let weight = layout.add(format!("{name}.weight"), &[cout, cin, k, k], Init::FanIn(fan_in));
        let bias = layout.add(format!("{name}.bias"), &[cout], Init::FanIn(fan_in));
        Self { weight, bias, cin, cout, k, stride }
    }

    /// The op shape for a batch of `b` images of H x W (the input size).
    pub fn shape(&self, b: usize, h: usize, w: usize) -> Conv2dShape {
        Conv2dShape::new(b, self.cin, self.cout, h, w, self.k, self.stride)
    }

    /// y = conv(x, W) + b. x (B, Cin, H, W), y (B, Cout, Ho, Wo), overwritten.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        y: &Buffer,
        b: usize,
        h: usize,
        w: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let (wt, bias) = (p.value(self.weight)?, p.value(self.bias)?);
        Ok(vec![op::conv2d_fwd(gpu, x, &wt, Some(&bias), None, y, self.shape(b, h, w)).await?])
    }

    /// y = conv(x, W) + b + res in one pass (a residual connection); y must not be res.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward_add(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        res: &Buffer,
        y: &Buffer,
        b: usize,
        h: usize,
        w: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let (wt, bias) = (p.value(self.weight)?, p.value(self.bias)?);
        Ok(vec![op::conv2d_fwd(gpu, x, &wt, Some(&bias), Some(res), y, self.shape(b, h, w)).await?])
    }

    /// dW += conv2d_bwd_weight(dy, x), db += sum over (B, Ho, Wo) of dy, and dx = conv^T(dy, W)
    /// (overwritten) when `dx` is given. x is the forward input. dW and db are *accumulated* by
    /// the kernels onto the flat gradient buffer. That equals "written" because the model zeroes
    /// the buffer once per step and each Conv2d is used once per forward; a layer applied twice in
    /// one forward (weight sharing) would sum both uses, which is also the right gradient.
    #[allow(clippy::too_many_arguments)]
    pub async fn backward(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        dy: &Buffer,
        dx: Option<&Buffer>,
        b: usize,
        h: usize,
        w: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        self.backward_with(gpu, p, x, dy, dx.map(|dx| (dx, None)), b, h, w).await
    }

    /// `backward` with dx = conv^T(dy, W) + dres (the gradient x gets from another branch,
    /// summed in the same pass); dx must not be dres.
    #[allow(clippy::too_many_arguments)]
    pub async fn backward_add(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        dy: &Buffer,
        dres: &Buffer,
        dx: &Buffer,
        b: usize,
        h: usize,
        w: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        self.backward_with(gpu, p, x, dy, Some((dx, Some(dres))), b, h, w).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn backward_with(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        dy: &Buffer,
        dx: Option<(&Buffer, Option<&Buffer>)>,
        b: usize,
        h: usize,
        w: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let s = self.shape(b, h, w);
        let mut out = vec![
            op::conv2d_bwd_weight(gpu, dy, x, &p.grad(self.weight)?, s).await?,
            op::conv2d_bwd_bias(gpu, dy, &p.grad(self.bias)?, s).await?,
        ];
        if let Some((dx, dres)) = dx {
            out.push(op::conv2d_bwd_input(gpu, dy, &p.value(self.weight)?, dres, dx, s).await?);
        }
        Ok(out)
    }
}
