//! `Recorder`: the one place that creates command encoders and compute passes. A submission is a
//! list of steps recorded in order (clears, dispatches, copies); every submission adds its
//! dispatch count and FLOPs to the device's counters (`Gpu::counters`).

use std::sync::atomic::Ordering;

use super::{Buffer, Dispatch, Gpu};

/// What a device has been asked to run since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Command buffers submitted.
    pub submissions: u64,
    /// Compute dispatches in them.
    pub dispatches: u64,
    /// Floating-point operations of those dispatches, as their launchers count them
    /// (`Dispatch::flops`: matrix products and convolutions only).
    pub flops: u64,
}

enum Command<'a> {
    Clear(&'a Buffer),
    Dispatch(&'a Dispatch),
    Copy { src: &'a Buffer, src_at: usize, dst: &'a Buffer, dst_at: usize, len: usize },
}

/// The steps of one submission, borrowed until `submit`. Consecutive dispatches share one
/// compute pass (WebGPU orders their storage accesses); a clear or a copy closes the pass and the
/// next dispatch opens a new one. The kernel variant of each recorded dispatch is its pipeline
/// key (`Recorder::kernels`).
pub struct Recorder<'a> {
    gpu: &'a Gpu,
    steps: Vec<Command<'a>>,
}

impl<'a> Recorder<'a> {
    pub(super) fn new(gpu: &'a Gpu) -> Self {
        Self { gpu, steps: Vec::new() }
    }

    /// Sets every element of the view `buf` to 0.
    pub fn clear(&mut self, buf: &'a Buffer) -> &mut Self {
        self.steps.push(Command::Clear(buf));
        self
    }

    /// One prepared dispatch.
    pub fn dispatch(&mut self, d: &'a Dispatch) -> &mut Self {
        self.steps.push(Command::Dispatch(d));
        self
    }

    /// Prepared dispatches, in order.
    pub fn dispatches(&mut self, ds: impl IntoIterator<Item = &'a Dispatch>) -> &mut Self {
        self.steps.extend(ds.into_iter().map(Command::Dispatch));
        self
    }

    /// Copies `len` elements from element `src_at` of `src` to element `dst_at` of `dst` (both
    /// relative to the views).
    pub fn copy(&mut self, src: &'a Buffer, src_at: usize, dst: &'a Buffer, dst_at: usize, len: usize) -> &mut Self {
        self.steps.push(Command::Copy { src, src_at, dst, dst_at, len });
        self
    }

    /// The pipeline key (kernel variant) of each recorded dispatch, in order.
    pub fn kernels(&self) -> Vec<&'a str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Command::Dispatch(d) => Some(d.key.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Encodes the steps into one command buffer and submits it.
    pub fn submit(self) {
        let gpu = self.gpu;
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        let (mut dispatches, mut flops) = (0u64, 0u64);
        let mut i = 0;
        while i < self.steps.len() {
            match &self.steps[i] {
                Command::Clear(b) => {
                    enc.clear_buffer(&b.buffer, (b.offset * 4) as u64, Some((b.len * 4) as u64));
                    i += 1;
                }
                Command::Copy { src, src_at, dst, dst_at, len } => {
                    enc.copy_buffer_to_buffer(
                        &src.buffer,
                        ((src.offset + src_at) * 4) as u64,
                        &dst.buffer,
                        ((dst.offset + dst_at) * 4) as u64,
                        (len * 4) as u64,
                    );
                    i += 1;
                }
                Command::Dispatch(_) => {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    while let Some(Command::Dispatch(d)) = self.steps.get(i) {
                        d.encode(&mut pass);
                        dispatches += 1;
                        flops += d.flops;
                        i += 1;
                    }
                }
            }
        }
        gpu.queue.submit([enc.finish()]);
        gpu.submissions.fetch_add(1, Ordering::Relaxed);
        gpu.dispatches.fetch_add(dispatches, Ordering::Relaxed);
        gpu.flops.fetch_add(flops, Ordering::Relaxed);
    }
}
