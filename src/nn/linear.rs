//! Linear layer: y = x W^T + b. x (B, in), W (out, in), b (out,), y (B, out).
//!
//! Forward saves nothing beyond its input x (the caller keeps it alive); backward computes
//! dW = dy^T x (written), db += column sums of dy (accumulated) and, when asked, dx = dy W
//! (overwritten).

use super::params::{Init, ParamId, ParamLayout, Params};
use crate::gpu::{Buffer, Dispatch, Gpu, GpuError};
use crate::ops::matmul::{self, Dims, Layout};

#[derive(Clone, Copy, Debug)]
pub struct Linear {
    pub weight: ParamId,
    pub bias: ParamId,
    pub in_dim: usize,
    pub out_dim: usize,
}

impl Linear {
    /// Registers `{name}.weight` (out, in) and `{name}.bias` (out,) with PyTorch's default init.
    pub fn new(layout: &mut ParamLayout, name: &str, in_dim: usize, out_dim: usize) -> Self {
        let weight = layout.add(format!("{name}.weight"), &[out_dim, in_dim], Init::FanIn(in_dim));
        let bias = layout.add(format!("{name}.bias"), &[out_dim], Init::FanIn(in_dim));
        Self { weight, bias, in_dim, out_dim }
    }

    fn dims(&self, batch: usize) -> Dims {
        Dims::new(batch, self.out_dim, self.in_dim)
    }

    /// y = x W^T + b.
    pub async fn forward(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        y: &Buffer,
        batch: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let (w, b) = (p.value(self.weight)?, p.value(self.bias)?);
        Ok(vec![matmul::matmul(gpu, Layout::NT, x, &w, Some(&b), y, self.dims(batch)).await?])
    }

    /// dW = dy^T x, db += sum_rows dy, and dx = dy W when `dx` is given.
    pub async fn backward(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        dy: &Buffer,
        dx: Option<&Buffer>,
        batch: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let d = self.dims(batch);
        let mut out = vec![
            matmul::matmul_bwd_b(gpu, Layout::NT, dy, x, &p.grad(self.weight)?, d).await?,
            matmul::matmul_bwd_bias(gpu, dy, &p.grad(self.bias)?, d).await?,
        ];
        if let Some(dx) = dx {
            out.push(matmul::matmul_bwd_a(gpu, Layout::NT, dy, &p.value(self.weight)?, dx, d).await?);
        }
        Ok(out)
    }
}
