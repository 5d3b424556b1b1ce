//! The FID Inception-v3 network on the device, forward only: pytorch-fid's `InceptionV3` with
//! output block 3 (the 2048-d pool features of the FID variant of the 2015-12-05 graph), from
//! weights converted out of its state dict, each BatchNorm folded into its convolution. The
//! kernels are `ops::inception`'s; the oracle is `reference::inception::forward`.
//!
//! Not here: the classifier head (`fc`), the other output blocks, the Fréchet distance (`fd`).

use std::sync::{Mutex, PoisonError};

use safetensors::tensor::{Dtype, SafeTensors};

use super::EvalError;
use crate::gpu::{Buffer, Dispatch, Gpu, GpuError};
use crate::ops::inception::{self as k, ConvShape, Pool, PoolShape, ResizeShape, Slice};
use crate::philox::normal_vec;

/// Features per image (Mixed_7c's channels after the global average pool).
pub const FEATURES: usize = 2048;
/// The network's input size: every image is resized to INPUT x INPUT first.
pub const INPUT: usize = 299;
/// BatchNorm's epsilon in torchvision's BasicConv2d.
const BN_EPS: f64 = 0.001;
/// FLOPs recorded into one submission (at least one dispatch each): short enough that a browser
/// on a CPU adapter gets its event loop back now and then.
const SUBMIT_FLOPS: f64 = 2e9;

// --- the architecture ----------------------------------------------------------------------------

/// One BasicConv2d: its state-dict prefix (`Mixed_6b.branch7x7dbl_3`), channels, kernel, stride
/// and padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvLayer {
    pub name: String,
    pub cin: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad_h: usize,
    pub pad_w: usize,
}

/// The activation buffers of the plan; each holds up to `batch` images of its largest use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Buf {
    /// (B, 3, 299, 299): the resized, rescaled input.
    Resized = 0,
    /// Block inputs and outputs, alternately.
    Main0 = 1,
    Main1 = 2,
    /// Branch intermediates inside a block.
    T0 = 3,
    T1 = 4,
    /// (B, 2048).
    Features = 5,
}
const BUFS: usize = 6;

/// A tensor of the plan: C channels of H x W in buffer `buf` (whole, `c` channels).
#[derive(Clone, Copy, Debug)]
struct Tensor {
    buf: Buf,
    c: usize,
    h: usize,
    w: usize,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Conv layer `layer` (index into `Plan::convs`) with ReLU, src into a window of dst.
    Conv { layer: usize, src: Tensor, dst: Buf, slice: Slice },
    /// 3x3 pooling of src into a window of dst.
    Pool { kind: Pool, src: Tensor, stride: usize, pad: usize, dst: Buf, slice: Slice },
    /// AdaptiveAvgPool2d(1) of src into Features.
    Global { src: Tensor },
}

/// The network after the resize as a list of steps over six buffers, and the BasicConv2d layers
/// it uses (forward order): the one description of the architecture, which the weight loader
/// and `Inception` both read.
struct Plan {
    convs: Vec<ConvLayer>,
    steps: Vec<Step>,
    /// Elements per image each buffer must hold.
    per_image: [usize; BUFS],
}

impl Plan {
    fn new() -> Self {
        let mut p = Plan { convs: Vec::new(), steps: Vec::new(), per_image: [0; BUFS] };
        p.per_image[Buf::Resized as usize] = 3 * INPUT * INPUT;
        p.per_image[Buf::Features as usize] = FEATURES;
        let x = Tensor { buf: Buf::Resized, c: 3, h: INPUT, w: INPUT };
        // block 0
        let x = p.conv1("Conv2d_1a_3x3", x, Buf::Main0, 32, (3, 3), 2, (0, 0));
        let x = p.conv1("Conv2d_2a_3x3", x, Buf::Main1, 32, (3, 3), 1, (0, 0));
        let x = p.conv1("Conv2d_2b_3x3", x, Buf::Main0, 64, (3, 3), 1, (1, 1));
        let x = p.pool1(Pool::Max, x, Buf::Main1, 2, 0);
        // block 1
        let x = p.conv1("Conv2d_3b_1x1", x, Buf::Main0, 80, (1, 1), 1, (0, 0));
        let x = p.conv1("Conv2d_4a_3x3", x, Buf::Main1, 192, (3, 3), 1, (0, 0));
        let x = p.pool1(Pool::Max, x, Buf::Main0, 2, 0);
        // block 2
        let x = p.inception_a("Mixed_5b", x, 32);
        let x = p.inception_a("Mixed_5c", x, 64);
        let x = p.inception_a("Mixed_5d", x, 64);
        let x = p.inception_b("Mixed_6a", x);
        let x = p.inception_c("Mixed_6b", x, 128);
        let x = p.inception_c("Mixed_6c", x, 160);
        let x = p.inception_c("Mixed_6d", x, 160);
        let x = p.inception_c("Mixed_6e", x, 192);
        // block 3
        let x = p.inception_d("Mixed_7a", x);
        let x = p.inception_e("Mixed_7b", x, Pool::Avg);
        let x = p.inception_e("Mixed_7c", x, Pool::Max);
        debug_assert_eq!(x.c, FEATURES);
        p.steps.push(Step::Global { src: x });
        p
    }

    fn need(&mut self, buf: Buf, elements: usize) {
        let n = &mut self.per_image[buf as usize];
        *n = (*n).max(elements);
    }

    /// BasicConv2d `name` of src into channels c_off.. of a `c_total`-channel tensor in dst;
    /// returns that whole tensor.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        src: Tensor,
        dst: Buf,
        (c_off, c_total): (usize, usize),
        cout: usize,
        (kh, kw): (usize, usize),
        stride: usize,
        (pad_h, pad_w): (usize, usize),
    ) -> Tensor {
        let layer = ConvLayer { name: name.to_string(), cin: src.c, cout, kh, kw, stride, pad_h, pad_w };
        let s = ConvShape { b: 1, cin: src.c, h: src.h, w: src.w, cout, kh, kw, stride, pad_h, pad_w };
        self.need(dst, c_total * s.ho() * s.wo());
        self.steps.push(Step::Conv { layer: self.convs.len(), src, dst, slice: Slice { c_off, c_total } });
        self.convs.push(layer);
        Tensor { buf: dst, c: c_total, h: s.ho(), w: s.wo() }
    }

    /// A convolution into a whole tensor of its own.
    #[allow(clippy::too_many_arguments)]
    fn conv1(
        &mut self,
        name: &str,
        src: Tensor,
        dst: Buf,
        cout: usize,
        k: (usize, usize),
        stride: usize,
        pad: (usize, usize),
    ) -> Tensor {
        self.conv(name, src, dst, (0, cout), cout, k, stride, pad)
    }

    /// 3x3 pooling of src into channels c_off.. of a `c_total`-channel tensor in dst.
    fn pool(
        &mut self,
        kind: Pool,
        src: Tensor,
        dst: Buf,
        (c_off, c_total): (usize, usize),
        stride: usize,
        pad: usize,
    ) -> Tensor {
        let s = PoolShape { b: 1, c: src.c, h: src.h, w: src.w, k: 3, stride, pad };
        self.need(dst, c_total * s.ho() * s.wo());
        self.steps.push(Step::Pool { kind, src, stride, pad, dst, slice: Slice { c_off, c_total } });
        Tensor { buf: dst, c: c_total, h: s.ho(), w: s.wo() }
    }

    fn pool1(&mut self, kind: Pool, src: Tensor, dst: Buf, stride: usize, pad: usize) -> Tensor {
        self.pool(kind, src, dst, (0, src.c), stride, pad)
    }

    /// The other main buffer: a block reads one and writes the other.
    fn out_of(x: Tensor) -> Buf {
        if x.buf == Buf::Main0 {
            Buf::Main1
        } else {
            Buf::Main0
        }
    }

    /// FIDInceptionA: [1x1 64, 1x1 48 -> 5x5 64, 1x1 64 -> 3x3 96 -> 3x3 96, avg pool -> 1x1].
    fn inception_a(&mut self, m: &str, x: Tensor, pool_features: usize) -> Tensor {
        let (y, total) = (Self::out_of(x), 224 + pool_features);
        let n = |b: &str| format!("{m}.{b}");
        self.conv(&n("branch1x1"), x, y, (0, total), 64, (1, 1), 1, (0, 0));
        let t = self.conv1(&n("branch5x5_1"), x, Buf::T0, 48, (1, 1), 1, (0, 0));
        self.conv(&n("branch5x5_2"), t, y, (64, total), 64, (5, 5), 1, (2, 2));
        let t = self.conv1(&n("branch3x3dbl_1"), x, Buf::T0, 64, (1, 1), 1, (0, 0));
        let t = self.conv1(&n("branch3x3dbl_2"), t, Buf::T1, 96, (3, 3), 1, (1, 1));
        self.conv(&n("branch3x3dbl_3"), t, y, (128, total), 96, (3, 3), 1, (1, 1));
        let t = self.pool1(Pool::Avg, x, Buf::T0, 1, 1);
        self.conv(&n("branch_pool"), t, y, (224, total), pool_features, (1, 1), 1, (0, 0))
    }

    /// InceptionB: [3x3/2 384, 1x1 64 -> 3x3 96 -> 3x3/2 96, max pool/2].
    fn inception_b(&mut self, m: &str, x: Tensor) -> Tensor {
        let (y, total) = (Self::out_of(x), 480 + x.c);
        let n = |b: &str| format!("{m}.{b}");
        self.conv(&n("branch3x3"), x, y, (0, total), 384, (3, 3), 2, (0, 0));
        let t = self.conv1(&n("branch3x3dbl_1"), x, Buf::T0, 64, (1, 1), 1, (0, 0));
        let t = self.conv1(&n("branch3x3dbl_2"), t, Buf::T1, 96, (3, 3), 1, (1, 1));
        self.conv(&n("branch3x3dbl_3"), t, y, (384, total), 96, (3, 3), 2, (0, 0));
        self.pool(Pool::Max, x, y, (480, total), 2, 0)
    }

    /// FIDInceptionC: [1x1 192, 1x1 c7 -> 1x7 -> 7x1 192, 1x1 c7 -> 7x1 -> 1x7 -> 7x1 -> 1x7 192,
    /// avg pool -> 1x1 192].
    fn inception_c(&mut self, m: &str, x: Tensor, c7: usize) -> Tensor {
        let (y, total) = (Self::out_of(x), 768);
        let n = |b: &str| format!("{m}.{b}");
        let (row, col) = ((1, 7), (7, 1));
        let (prow, pcol) = ((0, 3), (3, 0));
        self.conv(&n("branch1x1"), x, y, (0, total), 192, (1, 1), 1, (0, 0));
        let t = self.conv1(&n("branch7x7_1"), x, Buf::T0, c7, (1, 1), 1, (0, 0));
        let t = self.conv1(&n("branch7x7_2"), t, Buf::T1, c7, row, 1, prow);
        self.conv(&n("branch7x7_3"), t, y, (192, total), 192, col, 1, pcol);
        let t = self.conv1(&n("branch7x7dbl_1"), x, Buf::T0, c7, (1, 1), 1, (0, 0));
        let t = self.conv1(&n("branch7x7dbl_2"), t, Buf::T1, c7, col, 1, pcol);
        let t = self.conv1(&n("branch7x7dbl_3"), t, Buf::T0, c7, row, 1, prow);
        let t = self.conv1(&n("branch7x7dbl_4"), t, Buf::T1, c7, col, 1, pcol);
        self.conv(&n("branch7x7dbl_5"), t, y, (384, total), 192, row, 1, prow);
        let t = self.pool1(Pool::Avg, x, Buf::T0, 1, 1);
        self.conv(&n("branch_pool"), t, y, (576, total), 192, (1, 1), 1, (0, 0))
    }

    /// InceptionD: [1x1 192 -> 3x3/2 320, 1x1 192 -> 1x7 -> 7x1 -> 3x3/2 192, max pool/2].
    fn inception_d(&mut self, m: &str, x: Tensor) -> Tensor {
        let (y, total) = (Self::out_of(x), 512 + x.c);
        let n = |b: &str| format!("{m}.{b}");
        let t = self.conv1(&n("branch3x3_1"), x, Buf::T0, 192, (1, 1), 1, (0, 0));
        self.conv(&n("branch3x3_2"), t, y, (0, total), 320, (3, 3), 2, (0, 0));
        let t = self.conv1(&n("branch7x7x3_1"), x, Buf::T0, 192, (1, 1), 1, (0, 0));
        let t = self.conv1(&n("branch7x7x3_2"), t, Buf::T1, 192, (1, 7), 1, (0, 3));
        let t = self.conv1(&n("branch7x7x3_3"), t, Buf::T0, 192, (7, 1), 1, (3, 0));
        self.conv(&n("branch7x7x3_4"), t, y, (320, total), 192, (3, 3), 2, (0, 0));
        self.pool(Pool::Max, x, y, (512, total), 2, 0)
    }

    /// FIDInceptionE_1 (`pool` Avg) / E_2 (Max): [1x1 320, 1x1 384 -> (1x3, 3x1) 384 each,
    /// 1x1 448 -> 3x3 384 -> (1x3, 3x1) 384 each, 3x3 pool -> 1x1 192].
    fn inception_e(&mut self, m: &str, x: Tensor, pool: Pool) -> Tensor {
        let (y, total) = (Self::out_of(x), 2048);
        let n = |b: &str| format!("{m}.{b}");
        self.conv(&n("branch1x1"), x, y, (0, total), 320, (1, 1), 1, (0, 0));
        let t = self.conv1(&n("branch3x3_1"), x, Buf::T0, 384, (1, 1), 1, (0, 0));
        self.conv(&n("branch3x3_2a"), t, y, (320, total), 384, (1, 3), 1, (0, 1));
        self.conv(&n("branch3x3_2b"), t, y, (704, total), 384, (3, 1), 1, (1, 0));
        let t = self.conv1(&n("branch3x3dbl_1"), x, Buf::T0, 448, (1, 1), 1, (0, 0));
        let t = self.conv1(&n("branch3x3dbl_2"), t, Buf::T1, 384, (3, 3), 1, (1, 1));
        self.conv(&n("branch3x3dbl_3a"), t, y, (1088, total), 384, (1, 3), 1, (0, 1));
        self.conv(&n("branch3x3dbl_3b"), t, y, (1472, total), 384, (3, 1), 1, (1, 0));
        let t = self.pool1(pool, x, Buf::T0, 1, 1);
        self.conv(&n("branch_pool"), t, y, (1856, total), 192, (1, 1), 1, (0, 0))
    }
}

/// The BasicConv2d layers of the network, in forward order (94): what a weight file must hold.
pub fn conv_layers() -> Vec<ConvLayer> {
    Plan::new().convs
}

// --- weights -------------------------------------------------------------------------------------

/// One BasicConv2d with its BatchNorm folded in: conv(x, weight) + bias, then ReLU.
#[derive(Clone, Debug)]
pub struct FoldedConv {
    pub name: String,
    pub cin: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    /// (Cout, Cin, KH, KW): w * gamma / sqrt(var + eps).
    pub weight: Vec<f32>,
    /// (Cout,): beta - mean * gamma / sqrt(var + eps).
    pub bias: Vec<f32>,
}

/// The raw parameters of one BasicConv2d as the state dict holds them.
struct RawConv<'a> {
    weight: &'a [f64],
    gamma: &'a [f64],
    beta: &'a [f64],
    mean: &'a [f64],
    var: &'a [f64],
}

/// Folds BatchNorm (eval mode, eps 0.001) into the convolution, in f64, then rounds to f32.
fn fold(layer: &ConvLayer, raw: &RawConv) -> Result<FoldedConv, EvalError> {
    let per_out = layer.cin * layer.kh * layer.kw;
    let mut weight = Vec::with_capacity(layer.cout * per_out);
    let mut bias = Vec::with_capacity(layer.cout);
    for co in 0..layer.cout {
        let denom = raw.var[co] + BN_EPS;
        if denom.is_nan() || denom <= 0.0 {
            return Err(EvalError::Format(format!(
                "Inception weights: {}.bn.running_var[{co}] = {} (var + eps must be positive)",
                layer.name, raw.var[co]
            )));
        }
        let scale = raw.gamma[co] / denom.sqrt();
        weight.extend(raw.weight[co * per_out..][..per_out].iter().map(|&w| (w * scale) as f32));
        bias.push((raw.beta[co] - raw.mean[co] * scale) as f32);
    }
    Ok(FoldedConv {
        name: layer.name.clone(),
        cin: layer.cin,
        cout: layer.cout,
        kh: layer.kh,
        kw: layer.kw,
        weight,
        bias,
    })
}

/// The folded convolutions of the whole network, in `conv_layers` order.
#[derive(Clone, Debug)]
pub struct InceptionWeights {
    convs: Vec<FoldedConv>,
}

impl InceptionWeights {
    /// Reads a safetensors file converted from pytorch-fid's state dict (torchvision names:
    /// `<layer>.conv.weight`, `<layer>.bn.{weight,bias,running_mean,running_var}`, f32; other
    /// tensors such as `fc.*` and `num_batches_tracked` are ignored), checks every needed
    /// tensor's presence, type and shape, and folds each BatchNorm into its convolution. Errors
    /// are one line naming the tensor, or saying the file is not readable.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, EvalError> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| EvalError::Format(format!("Inception weights: not a readable safetensors file: {e}")))?;
        let convs = conv_layers()
            .iter()
            .map(|l| {
                let weight = tensor(&st, &format!("{}.conv.weight", l.name), &[l.cout, l.cin, l.kh, l.kw])?;
                let bn = |what: &str| tensor(&st, &format!("{}.bn.{what}", l.name), &[l.cout]);
                let (gamma, beta, mean, var) = (bn("weight")?, bn("bias")?, bn("running_mean")?, bn("running_var")?);
                fold(l, &RawConv { weight: &weight, gamma: &gamma, beta: &beta, mean: &mean, var: &var })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { convs })
    }

    /// Deterministic random weights (benchmarks, tests without a weight file): He-normal
    /// convolutions (std sqrt(2 / fan-in), which keeps ReLU activations O(1) through the depth)
    /// and BatchNorm statistics near the identity (gamma ~ 1, beta, mean ~ 0, var ~ 1, each
    /// perturbed by 0.1 of a normal), folded as a file's would be.
    pub fn random(seed: u64) -> Self {
        let convs = conv_layers()
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let tag = 8 * i as u32;
                let draw = |n: usize, k: u32, scale: f64, offset: f64| -> Vec<f64> {
                    normal_vec(n, seed, tag + k).iter().map(|&z| offset + scale * f64::from(z)).collect()
                };
                let std = (2.0 / (l.cin * l.kh * l.kw) as f64).sqrt();
                let weight = draw(l.cout * l.cin * l.kh * l.kw, 0, std, 0.0);
                let (gamma, beta, mean) =
                    (draw(l.cout, 1, 0.1, 1.0), draw(l.cout, 2, 0.1, 0.0), draw(l.cout, 3, 0.1, 0.0));
                let var: Vec<f64> = draw(l.cout, 4, 0.1, 0.0).iter().map(|z| 1.0 + z.abs()).collect();
                let raw = RawConv { weight: &weight, gamma: &gamma, beta: &beta, mean: &mean, var: &var };
                // var >= 1: folding cannot fail.
                fold(l, &raw).unwrap_or_else(|e| unreachable!("random Inception weights: {e}"))
            })
            .collect();
        Self { convs }
    }

    /// The folded convolution of layer `name` (`Mixed_6b.branch7x7dbl_3`), if it is one.
    pub fn conv(&self, name: &str) -> Option<&FoldedConv> {
        self.convs.iter().find(|c| c.name == name)
    }

    /// Every folded convolution, in forward order.
    pub fn convs(&self) -> &[FoldedConv] {
        &self.convs
    }
}

/// Tensor `name` of `st` as f64, after checking it exists, is F32 and has shape `shape`.
fn tensor(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f64>, EvalError> {
    let t = st.tensor(name).map_err(|_| EvalError::Format(format!("Inception weights: tensor {name} is missing")))?;
    if t.dtype() != Dtype::F32 {
        return Err(EvalError::Format(format!("Inception weights: tensor {name} is {:?}, expected F32", t.dtype())));
    }
    if t.shape() != shape {
        return Err(EvalError::Format(format!(
            "Inception weights: tensor {name} has shape {:?}, expected {shape:?}",
            t.shape()
        )));
    }
    let values: Vec<f64> =
        t.data().chunks_exact(4).map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(EvalError::Format(format!("Inception weights: tensor {name} holds {} at index {i}", values[i])));
    }
    Ok(values)
}

// --- the network on the device -------------------------------------------------------------------

/// The value range of images given to `Inception`: pytorch-fid's input is [0, 1] and it maps
/// it to [-1, 1] (`2x - 1`) after resizing; images already in [-1, 1] skip that map (bilinear
/// weights sum to 1, so resizing commutes with it). Values outside the range are used as they
/// are, as pytorch-fid does with its tensor input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputRange {
    ZeroOne,
    MinusOneOne,
}

impl InputRange {
    /// (scale, shift) applied after the resize.
    fn affine(self) -> (f32, f32) {
        match self {
            InputRange::ZeroOne => (2.0, -1.0),
            InputRange::MinusOneOne => (1.0, 0.0),
        }
    }
}

/// Pipelines, weight buffers and activation buffers of the network for up to `batch` images of
/// size h x w. Activations live in six buffers reused by every block (`Plan`), so memory is
/// bounded by `batch` (about 15 MB per image, plus 87 MB of weights).
pub struct Inception {
    batch: usize,
    h: usize,
    w: usize,
    plan: Plan,
    /// Per conv layer: packed weight (Cin KH KW, Cout rounded up to 16) and bias (Cout,).
    wpack: Vec<Buffer>,
    bias: Vec<Buffer>,
    /// (batch, 3, h, w): host images uploaded by `features`.
    input: Buffer,
    /// The plan's buffers, `Buf` order, each `batch` times its per-image size.
    bufs: Vec<Buffer>,
    /// The network's dispatches after the resize for the last image count used: created on the
    /// first call (pipeline creation is async), reused while the count stays the same.
    prepared: Mutex<Option<(usize, Vec<Dispatch>)>>,
}

impl Inception {
    /// Uploads `weights` and allocates the activations for `batch` images of h x w; fails with
    /// `GpuError::Shape` on an empty size and `GpuError::TooLarge` when a buffer of `batch`
    /// images exceeds the adapter's binding limit (use a smaller batch).
    pub fn new(gpu: &Gpu, weights: &InceptionWeights, batch: usize, h: usize, w: usize) -> Result<Self, GpuError> {
        if batch == 0 || h == 0 || w == 0 {
            return Err(GpuError::Shape(format!("Inception: batch {batch}, image {h}x{w}: every size must be >= 1")));
        }
        let plan = Plan::new();
        if weights.convs.len() != plan.convs.len()
            || weights
                .convs
                .iter()
                .zip(&plan.convs)
                .any(|(c, l)| (c.cin, c.cout, c.kh, c.kw) != (l.cin, l.cout, l.kh, l.kw))
        {
            return Err(GpuError::Shape("Inception: weights do not match the network's layers".into()));
        }
        let input_len =
            batch.checked_mul(3 * h * w).ok_or_else(|| GpuError::Shape("Inception: input too large".into()))?;
        gpu.check_fits("Inception input", input_len)?;
        for (i, &per) in plan.per_image.iter().enumerate() {
            gpu.check_fits(&format!("Inception activation {i}"), batch * per)?;
        }
        let input = gpu.zeros("inception input", input_len)?;
        let bufs = plan
            .per_image
            .iter()
            .map(|&per| gpu.zeros("inception activation", batch * per))
            .collect::<Result<_, _>>()?;
        let (mut wpack, mut bias) = (Vec::new(), Vec::new());
        for (c, l) in weights.convs.iter().zip(&plan.convs) {
            let s = ConvShape {
                b: 1,
                cin: l.cin,
                h: 1,
                w: 1,
                cout: l.cout,
                kh: l.kh,
                kw: l.kw,
                stride: 1,
                pad_h: 0,
                pad_w: 0,
            };
            wpack.push(gpu.upload(&l.name, &k::pack_weight(&c.weight, s))?);
            bias.push(gpu.upload(&l.name, &c.bias)?);
        }
        Ok(Self { batch, h, w, plan, wpack, bias, input, bufs, prepared: Mutex::new(None) })
    }

    /// The most images one call takes.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// FLOPs of the network on one image, as its launchers count them from the shapes (two per
    /// multiply-add of every convolution; the pools and the resize count 0).
    pub async fn flops_per_image(&self, gpu: &Gpu) -> Result<u64, GpuError> {
        Ok(self.dispatches(gpu, 1).await?.iter().map(Dispatch::flops).sum())
    }

    /// Features of n <= batch images (n, 3, h, w) in [0, 1], row-major f32 -> (n, 2048).
    pub async fn features(&self, gpu: &Gpu, images: &[f32], n: usize) -> Result<Vec<f32>, GpuError> {
        self.check_n(n)?;
        let want = n * 3 * self.h * self.w;
        if images.len() != want {
            return Err(GpuError::Shape(format!(
                "Inception::features: {} values for {n} images of 3x{}x{} ({want} expected)",
                images.len(),
                self.h,
                self.w
            )));
        }
        gpu.write(&self.input, images);
        self.run(gpu, &self.input, n, InputRange::ZeroOne).await
    }

    /// `features` of images already on the device, in [0, 1]: images holds at least
    /// (n, 3, h, w). Only the (n, 2048) features are read back.
    pub async fn features_of(&self, gpu: &Gpu, images: &Buffer, n: usize) -> Result<Vec<f32>, GpuError> {
        self.features_of_range(gpu, images, n, InputRange::ZeroOne).await
    }

    /// `features_of` for images in `range` (the samplers write [-1, 1]: `InputRange::MinusOneOne`).
    pub async fn features_of_range(
        &self,
        gpu: &Gpu,
        images: &Buffer,
        n: usize,
        range: InputRange,
    ) -> Result<Vec<f32>, GpuError> {
        self.check_n(n)?;
        crate::ops::need("Inception::features_of images", images, n * 3 * self.h * self.w)?;
        self.run(gpu, images, n, range).await
    }

    /// Times every dispatch of the network for n images already in the resized input (a
    /// breakdown for benchmarks: each dispatch in its own pass, so the sum runs a little over a
    /// plain run): (step, FLOPs, ms) in forward order, or None when the adapter has no
    /// timestamp queries. A step is named by its conv layer or its pooling.
    pub async fn profile(&self, gpu: &Gpu, n: usize) -> Result<Option<Vec<(String, u64, f64)>>, GpuError> {
        self.check_n(n)?;
        let ds = self.dispatches(gpu, n).await?;
        let Some(ms) = gpu.profile(&ds.iter().collect::<Vec<_>>()).await? else { return Ok(None) };
        let names = self.plan.steps.iter().map(|s| match s {
            Step::Conv { layer, .. } => self.plan.convs[*layer].name.clone(),
            Step::Pool { kind, src, .. } => format!("{kind:?} pool of {}x{}x{}", src.c, src.h, src.w),
            Step::Global { .. } => "global average pool".into(),
        });
        Ok(Some(names.zip(&ds).zip(ms).map(|((name, d), t)| (name, d.flops(), t)).collect()))
    }

    fn check_n(&self, n: usize) -> Result<(), GpuError> {
        if n == 0 || n > self.batch {
            return Err(GpuError::Shape(format!("Inception: {n} images, batch is {} (1..=batch)", self.batch)));
        }
        Ok(())
    }

    /// Resizes n images of `images` into the network input and runs the plan; reads (n, 2048).
    async fn run(&self, gpu: &Gpu, images: &Buffer, n: usize, range: InputRange) -> Result<Vec<f32>, GpuError> {
        let (scale, shift) = range.affine();
        let s = ResizeShape { b: n, c: 3, h: self.h, w: self.w, ho: INPUT, wo: INPUT, scale, shift };
        let resize = k::resize_bilinear_fwd(gpu, images, &self.bufs[Buf::Resized as usize], s).await?;
        let lock = || self.prepared.lock().unwrap_or_else(PoisonError::into_inner);
        if !matches!(lock().as_ref(), Some((m, _)) if *m == n) {
            let ds = self.dispatches(gpu, n).await?;
            *lock() = Some((n, ds));
        }
        // Encoded under the lock (no await while it is held), in submissions of about
        // SUBMIT_FLOPS each.
        {
            let prepared = lock();
            let net = prepared.as_ref().map_or(&[][..], |(_, ds)| &ds[..]);
            let mut rec = gpu.recorder();
            rec.dispatch(&resize);
            let mut flops = 0.0;
            for d in net {
                rec.dispatch(d);
                flops += d.flops() as f64;
                if flops >= SUBMIT_FLOPS {
                    rec.submit();
                    rec = gpu.recorder();
                    flops = 0.0;
                }
            }
            rec.submit();
        }
        let out = self.bufs[Buf::Features as usize].view(0, n * FEATURES)?;
        gpu.read(&out).await
    }

    /// The plan's dispatches for n images.
    async fn dispatches(&self, gpu: &Gpu, n: usize) -> Result<Vec<Dispatch>, GpuError> {
        let buf = |b: Buf| &self.bufs[b as usize];
        let mut ds = Vec::with_capacity(self.plan.steps.len());
        for step in &self.plan.steps {
            let d = match *step {
                Step::Conv { layer, src, dst, slice } => {
                    let l = &self.plan.convs[layer];
                    let s = ConvShape {
                        b: n,
                        cin: src.c,
                        h: src.h,
                        w: src.w,
                        cout: l.cout,
                        kh: l.kh,
                        kw: l.kw,
                        stride: l.stride,
                        pad_h: l.pad_h,
                        pad_w: l.pad_w,
                    };
                    let (wp, b) = (&self.wpack[layer], &self.bias[layer]);
                    k::conv_fwd(gpu, buf(src.buf), wp, Some(b), buf(dst), s, true, slice).await?
                }
                Step::Pool { kind, src, stride, pad, dst, slice } => {
                    let s = PoolShape { b: n, c: src.c, h: src.h, w: src.w, k: 3, stride, pad };
                    k::pool_fwd(gpu, kind, buf(src.buf), buf(dst), s, slice).await?
                }
                Step::Global { src } => {
                    let out = buf(Buf::Features);
                    k::global_avgpool_fwd(gpu, buf(src.buf), out, n, src.c, src.h, src.w, Slice::whole(src.c)).await?
                }
            };
            ds.push(d);
        }
        Ok(ds)
    }
}
