//! Models: the 2-D toy denoiser `Mlp` and the compact UNet. A model owns its parameters,
//! its activation buffers for one batch size and the prepared dispatches of its forward and
//! backward, all created once; a step only encodes them.

pub mod mlp;
pub mod unet;

pub use mlp::{Mlp, MlpConfig};
pub use unet::{UNet, UNetConfig};

use crate::gpu::{Dispatch, Gpu};
use crate::nn::Params;

/// Submits a model's forward pass and, when `backward` is given, the zeroing of its gradients
/// and its backward pass, in one command buffer (dispatches in one compute pass: WebGPU orders
/// their storage accesses).
pub fn submit(gpu: &Gpu, params: &Params, forward: &[Dispatch], backward: Option<&[Dispatch]>) {
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    if backward.is_some() {
        params.zero_grad(&mut enc);
    }
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for d in forward.iter().chain(backward.unwrap_or_default()) {
            d.encode(&mut pass);
        }
    }
    gpu.queue.submit([enc.finish()]);
}
