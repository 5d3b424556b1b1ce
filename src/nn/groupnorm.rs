//! GroupNorm layer (PyTorch `nn.GroupNorm(groups, C, eps)` with its affine; the math is
//! `reference::groupnorm`). Forward writes `mean` and `rstd` (B, G) into a `GroupNormStats` the
//! caller allocates once per batch size (`GroupNorm::stats`) and keeps alive with x for
//! backward. Backward: dx overwritten; dgamma, dbeta accumulated onto the (zeroed) flat buffer.

use super::params::{Init, ParamId, ParamLayout, Params};
use crate::gpu::{Buffer, Dispatch, Gpu, GpuError};
use crate::ops::groupnorm as op;
use crate::ops::groupnorm::{GroupNormShape, EPS};

#[derive(Clone, Copy, Debug)]
pub struct GroupNorm {
    pub weight: ParamId,
    pub bias: ParamId,
    /// Channels C.
    pub c: usize,
    /// Groups G, dividing C.
    pub groups: usize,
    /// Added to the variance; PyTorch's 1e-5 unless set with `with_eps` (EDM uses 1e-6).
    pub eps: f64,
}

/// The saved statistics of one forward, per (B, G). Overwritten by every forward.
#[derive(Clone, Debug)]
pub struct GroupNormStats {
    pub mean: Buffer,
    pub rstd: Buffer,
}

impl GroupNorm {
    /// Registers `{name}.weight` (C,) = 1 and `{name}.bias` (C,) = 0, as PyTorch.
    pub fn new(layout: &mut ParamLayout, name: &str, c: usize, groups: usize) -> Self {
        assert!(groups > 0 && c.is_multiple_of(groups), "groupnorm {name}: {groups} groups do not divide {c} channels");
        let weight = layout.add(format!("{name}.weight"), &[c], Init::Const(1.0));
        let bias = layout.add(format!("{name}.bias"), &[c], Init::Const(0.0));
        Self { weight, bias, c, groups, eps: EPS }
    }

    /// The same norm with another eps.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// The op shape for `b` images of `hw` = H * W pixels.
    pub fn shape(&self, b: usize, hw: usize) -> GroupNormShape {
        GroupNormShape { b, c: self.c, hw, g: self.groups, eps: self.eps }
    }

    /// Allocates the saved statistics for batches of `b`.
    pub fn stats(&self, gpu: &Gpu, b: usize) -> Result<GroupNormStats, GpuError> {
        Ok(GroupNormStats {
            mean: gpu.zeros("gn_mean", b * self.groups)?,
            rstd: gpu.zeros("gn_rstd", b * self.groups)?,
        })
    }

    /// y = gamma xhat + beta; writes `stats`. x, y (B, C, H, W) with `hw` = H * W.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        y: &Buffer,
        stats: &GroupNormStats,
        b: usize,
        hw: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let (g, bt) = (p.value(self.weight)?, p.value(self.bias)?);
        Ok(vec![op::groupnorm_fwd(gpu, x, &g, &bt, y, &stats.mean, &stats.rstd, self.shape(b, hw)).await?])
    }

    /// a = silu(gamma xhat + beta), the norm and the SiLU after it in one pass (the normalised
    /// value is not stored); writes `stats`. x, a (B, C, H, W).
    #[allow(clippy::too_many_arguments)]
    pub async fn forward_silu(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        a: &Buffer,
        stats: &GroupNormStats,
        b: usize,
        hw: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let (g, bt) = (p.value(self.weight)?, p.value(self.bias)?);
        Ok(vec![op::groupnorm_silu_fwd(gpu, x, &g, &bt, a, &stats.mean, &stats.rstd, self.shape(b, hw)).await?])
    }

    /// The backward of `forward_silu` for the gradient `da` of its output: dgamma, dbeta +=,
    /// dx overwritten.
    #[allow(clippy::too_many_arguments)]
    pub async fn backward_silu(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        da: &Buffer,
        stats: &GroupNormStats,
        dx: &Buffer,
        b: usize,
        hw: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let s = self.shape(b, hw);
        let (g, bt) = (p.value(self.weight)?, p.value(self.bias)?);
        let (dg, db) = (p.grad(self.weight)?, p.grad(self.bias)?);
        let (m, r) = (&stats.mean, &stats.rstd);
        Ok(vec![
            op::groupnorm_silu_bwd_params(gpu, da, x, m, r, &g, &bt, &dg, &db, s).await?,
            op::groupnorm_silu_bwd_input(gpu, da, x, m, r, &g, &bt, dx, s).await?,
        ])
    }

    /// dgamma, dbeta += (accumulated); dx overwritten when given. x is the forward input and
    /// `stats` what its forward saved.
    #[allow(clippy::too_many_arguments)]
    pub async fn backward(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        dy: &Buffer,
        stats: &GroupNormStats,
        dx: Option<&Buffer>,
        b: usize,
        hw: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let s = self.shape(b, hw);
        let (dg, db) = (p.grad(self.weight)?, p.grad(self.bias)?);
        let mut out = vec![op::groupnorm_bwd_params(gpu, dy, x, &stats.mean, &stats.rstd, &dg, &db, s).await?];
        if let Some(dx) = dx {
            let g = p.value(self.weight)?;
            out.push(op::groupnorm_bwd_input(gpu, dy, x, &stats.mean, &stats.rstd, &g, dx, s).await?);
        }
        Ok(out)
    }
}
