//! Linear layer: y = x W^T + b. x (B, in), W (out, in), b (out,), y (B, out).
//!
//! Forward saves nothing beyond its input x (the caller keeps it alive); backward computes
//! dW = dy^T x (written), db += column sums of dy (accumulated) and, when asked, dx = dy W
//! (overwritten). A SiLU after the layer (forward) or before it (backward) can run in the same
//! dispatch as the product (`forward_silu`, `backward_through_silu`).

use super::params::{Init, ParamId, ParamLayout, Params};
use crate::gpu::{Buffer, Dispatch, Gpu, GpuError};
use crate::ops::matmul::{self, Dims, Epilogue, Layout};

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

    /// y = x W^T + b and act = silu(y), in one dispatch (the epilogue `Epilogue::Silu`).
    pub async fn forward_silu(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        y: &Buffer,
        act: &Buffer,
        batch: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let (w, b) = (p.value(self.weight)?, p.value(self.bias)?);
        let ep = Epilogue::Silu { act };
        Ok(vec![matmul::matmul_ep(gpu, Layout::NT, x, &w, Some(&b), y, ep, self.dims(batch)).await?])
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
        self.backward_ep(gpu, p, x, dy, dx.map(|dx| (dx, Epilogue::None)), batch).await
    }

    /// `backward` where x = silu(pre): the gradient of pre, dpre = (dy W) · silu'(pre), takes
    /// the place of dx, in the same dispatch (the epilogue `Epilogue::DSilu`).
    #[allow(clippy::too_many_arguments)] // the operands of `backward` plus the pre-activation
    pub async fn backward_through_silu(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        dy: &Buffer,
        dpre: &Buffer,
        pre: &Buffer,
        batch: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        self.backward_ep(gpu, p, x, dy, Some((dpre, Epilogue::DSilu { pre })), batch).await
    }

    async fn backward_ep(
        &self,
        gpu: &Gpu,
        p: &Params,
        x: &Buffer,
        dy: &Buffer,
        dx: Option<(&Buffer, Epilogue<'_>)>,
        batch: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let d = self.dims(batch);
        let mut out = vec![
            matmul::matmul_bwd_b(gpu, Layout::NT, dy, x, &p.grad(self.weight)?, d).await?,
            matmul::matmul_bwd_bias(gpu, dy, &p.grad(self.bias)?, d).await?,
        ];
        if let Some((dx, ep)) = dx {
            out.push(matmul::matmul_bwd_a_ep(gpu, Layout::NT, dy, &p.value(self.weight)?, dx, ep, d).await?);
        }
        Ok(out)
    }
}
