//! Parameter storage: every tensor of a model is a view of one flat buffer per role (values,
//! gradients), each tensor starting at a multiple of `VIEW_ALIGN` so it can be bound on its own.
//! One flat buffer makes zeroing gradients one command, and the global gradient norm, the
//! optimizer step and the EMA one dispatch each over the whole model.

use crate::gpu::{Buffer, Gpu, GpuError, Recorder, VIEW_ALIGN};
use crate::philox::{philox_uniform, Stream};

/// Index of a parameter tensor in its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamId(usize);

/// How a tensor is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Linear and Conv2d weights and
    /// biases (kaiming_uniform with a = sqrt(5) reduces to this bound).
    FanIn(usize),
    /// Every element the same (norm gains 1, norm biases 0).
    Const(f32),
}

#[derive(Clone, Debug)]
struct ParamEntry {
    name: String,
    shape: Vec<usize>,
    offset: usize,
    init: Init,
}

/// The names, shapes and offsets of a model's parameters, built before any allocation.
#[derive(Clone, Debug, Default)]
pub struct ParamLayout {
    entries: Vec<ParamEntry>,
    total: usize,
}

impl ParamLayout {
    /// Registers a tensor; names are the checkpoint names (`blocks.0.fc1.weight`).
    pub fn add(&mut self, name: impl Into<String>, shape: &[usize], init: Init) -> ParamId {
        let len: usize = shape.iter().product();
        let id = ParamId(self.entries.len());
        self.entries.push(ParamEntry { name: name.into(), shape: shape.to_vec(), offset: self.total, init });
        self.total += len.div_ceil(VIEW_ALIGN) * VIEW_ALIGN;
        id
    }

    /// Number of parameters (without alignment padding).
    pub fn count(&self) -> usize {
        self.entries.iter().map(|e| e.shape.iter().product::<usize>()).sum()
    }

    /// Elements of the flat buffers, padding included.
    pub fn flat_len(&self) -> usize {
        self.total.max(VIEW_ALIGN)
    }

    /// Bytes of the optimizer state a training run keeps beside the model: Adam's two moments
    /// and the EMA copy of the weights, each a flat buffer like the values.
    pub fn optimizer_bytes(&self) -> u64 {
        3 * 4 * self.flat_len() as u64
    }

    /// (name, shape) of every tensor, in registration order.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.entries.iter().map(|e| (e.name.clone(), e.shape.clone())).collect()
    }

    /// Splits a flat host copy (values or gradients) into (name, shape, data) per tensor.
    pub fn split(&self, flat: &[f32]) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.entries
            .iter()
            .map(|e| {
                let len: usize = e.shape.iter().product();
                (e.name.clone(), e.shape.clone(), flat[e.offset..e.offset + len].to_vec())
            })
            .collect()
    }

    /// Writes named tensors (for example from a checkpoint) into a flat host buffer of this
    /// layout; every tensor of the layout must be present with its shape.
    pub fn join(&self, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<Vec<f32>, GpuError> {
        let mut flat = vec![0f32; self.flat_len()];
        for e in &self.entries {
            let t = tensors
                .iter()
                .find(|t| t.0 == e.name)
                .ok_or_else(|| GpuError::Shape(format!("missing parameter {}", e.name)))?;
            if t.1 != e.shape || t.2.len() != e.shape.iter().product::<usize>() {
                return Err(GpuError::Shape(format!(
                    "parameter {} has shape {:?}, expected {:?}",
                    e.name, t.1, e.shape
                )));
            }
            flat[e.offset..e.offset + t.2.len()].copy_from_slice(&t.2);
        }
        Ok(flat)
    }

    /// Initial values of the flat buffer, drawn from the counter-based generator: tensor i uses
    /// stream (seed, [i, 0, 0]), so a value depends only on the seed and the tensor's position.
    pub fn init_values(&self, seed: u64) -> Vec<f32> {
        let mut flat = vec![0f32; self.flat_len()];
        for (i, e) in self.entries.iter().enumerate() {
            let len: usize = e.shape.iter().product();
            let dst = &mut flat[e.offset..e.offset + len];
            match e.init {
                Init::Const(v) => dst.fill(v),
                Init::FanIn(fan_in) => {
                    philox_uniform(dst, Stream::new(seed, [i as u32, 0, 0]));
                    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
                    for v in dst.iter_mut() {
                        *v = (2.0 * *v - 1.0) * bound;
                    }
                }
            }
        }
        flat
    }
}

/// A layout with its buffers on the device.
#[derive(Debug)]
pub struct Params {
    pub layout: ParamLayout,
    /// All values, flat. (flat_len,)
    pub value: Buffer,
    /// All gradients, flat, same offsets. (flat_len,)
    pub grad: Buffer,
}

impl Params {
    /// Allocates the value and gradient buffers and uploads the initial values.
    pub fn new(gpu: &Gpu, layout: ParamLayout, seed: u64) -> Result<Self, GpuError> {
        let value = gpu.upload("params", &layout.init_values(seed))?;
        let grad = gpu.zeros("grads", layout.flat_len())?;
        Ok(Self { layout, value, grad })
    }

    fn entry(&self, id: ParamId) -> &ParamEntry {
        &self.layout.entries[id.0]
    }

    /// The view of one tensor's values.
    pub fn value(&self, id: ParamId) -> Result<Buffer, GpuError> {
        let e = self.entry(id);
        self.value.view(e.offset, e.shape.iter().product())
    }

    /// The view of one tensor's gradient.
    pub fn grad(&self, id: ParamId) -> Result<Buffer, GpuError> {
        let e = self.entry(id);
        self.grad.view(e.offset, e.shape.iter().product())
    }

    /// Records the zeroing of every gradient (one clear of the flat buffer).
    pub fn zero_grad<'a>(&'a self, rec: &mut Recorder<'a>) {
        rec.clear(&self.grad);
    }
}
