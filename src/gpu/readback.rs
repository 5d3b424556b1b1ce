//! Async readback: copy to a staging buffer, map it, resolve when the map callback fires.
//!
//! Natively the device is polled until the copy is done (blocking only inside this future);
//! in a browser the event loop fires the callback and the future resolves without blocking.

use super::{Buffer, Gpu, GpuError};

pub(super) async fn read_f32(gpu: &Gpu, src: &Buffer) -> Result<Vec<f32>, GpuError> {
    let len = src.len;
    if len == 0 {
        return Ok(Vec::new());
    }
    let size = (len * 4) as u64;
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(&src.buffer, (src.offset * 4) as u64, &staging, 0, size);
    gpu.queue.submit([enc.finish()]);
    let (tx, rx) = futures_channel::oneshot::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    #[cfg(not(target_arch = "wasm32"))]
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Readback(e.to_string()))?;
    rx.await
        .map_err(|_| GpuError::Readback("the device was lost before the map completed".into()))?
        .map_err(|e| GpuError::Readback(e.to_string()))?;
    let out = {
        let view = staging.get_mapped_range(..).map_err(|e| GpuError::Readback(e.to_string()))?;
        bytemuck::cast_slice::<u8, f32>(&view).to_vec()
    };
    staging.unmap();
    Ok(out)
}

pub(super) async fn wait_idle(gpu: &Gpu) -> Result<(), GpuError> {
    let (tx, rx) = futures_channel::oneshot::channel();
    gpu.queue.on_submitted_work_done(move || {
        let _ = tx.send(());
    });
    #[cfg(not(target_arch = "wasm32"))]
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Readback(e.to_string()))?;
    rx.await.map_err(|_| GpuError::Readback("the device was lost".into()))
}
