//! Launchers for `shaders/inception.wgsl`: the forward-only ops of the FID Inception-v3 network
//! (`eval::inception`): a general convolution (KH x KW, stride, separate padding, bias, fused
//! ReLU), max / average / global average pooling, a channel-slice copy and the bilinear resize.
//! Every output is overwritten; all but the resize's may be a channel window (`Slice`) of a
//! larger tensor, so a block's concatenation is free. The shapes are defined here and taken by
//! `reference::inception`.

use bytemuck::Zeroable;

use super::{f64s, needs, optional, prepare, run_read, CheckResult, Entry, OpSpec};
use crate::gpu::{groups_for, Buffer, Dispatch, Gpu, GpuError};
use crate::philox::normal_vec;
use crate::reference::inception as r;
use crate::reference::tol::{Tol, EXACT, LOOSE, STRICT};

// --- shapes ------------------------------------------------------------------------------------

/// Where an op writes along channels: its C channels are channels `c_off..c_off + C` of an
/// output tensor of `c_total` channels (the same B and spatial size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    pub c_off: usize,
    pub c_total: usize,
}

impl Slice {
    /// The whole output: C channels of C.
    pub fn whole(c: usize) -> Self {
        Self { c_off: 0, c_total: c }
    }

    fn check(&self, what: &str, c: usize) -> Result<(), GpuError> {
        if self.c_off + c > self.c_total {
            return Err(GpuError::Shape(format!(
                "{what}: channels {}..{} outside an output of {} channels",
                self.c_off,
                self.c_off + c,
                self.c_total
            )));
        }
        Ok(())
    }
}

/// Output side of a window `k` sliding with `stride` over `size` padded by `pad` on both ends:
/// (size + 2 pad - k) / stride + 1 (floor, PyTorch's `ceil_mode=False`); sizes that do not fit
/// are refused by the shapes' checks.
fn out_side(size: usize, pad: usize, k: usize, stride: usize) -> usize {
    (size + 2 * pad).saturating_sub(k) / stride.max(1) + 1
}

/// One convolution: input (B, Cin, H, W), weight (Cout, Cin, KH, KW), stride and zero padding
/// per axis. Output size (H + 2 pad_h - KH) / stride + 1 by (W + 2 pad_w - KW) / stride + 1
/// (floor), as PyTorch's `nn.Conv2d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub b: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad_h: usize,
    pub pad_w: usize,
}

impl ConvShape {
    /// Output height.
    pub fn ho(&self) -> usize {
        out_side(self.h, self.pad_h, self.kh, self.stride)
    }

    /// Output width.
    pub fn wo(&self) -> usize {
        out_side(self.w, self.pad_w, self.kw, self.stride)
    }

    /// Elements of x: B Cin H W.
    pub fn x_len(&self) -> usize {
        self.b * self.cin * self.h * self.w
    }

    /// Elements of the weight: Cout Cin KH KW.
    pub fn weight_len(&self) -> usize {
        self.cout * self.cin * self.kh * self.kw
    }

    /// Output channels rounded up to the kernel's channel tile (columns of the packed weight).
    pub fn cout_pad(&self) -> usize {
        self.cout.div_ceil(R) * R
    }

    /// Elements of the packed weight: Cin KH KW rows of `cout_pad`.
    pub fn packed_len(&self) -> usize {
        self.cin * self.kh * self.kw * self.cout_pad()
    }

    /// Multiply-adds times two.
    pub fn flops(&self) -> f64 {
        2.0 * (self.b * self.cout * self.ho() * self.wo() * self.cin * self.kh * self.kw) as f64
    }

    fn check(&self) -> Result<(), GpuError> {
        let ok = self.b > 0
            && self.cin > 0
            && self.cout > 0
            && self.kh > 0
            && self.kw > 0
            && (self.stride == 1 || self.stride == 2)
            && self.h + 2 * self.pad_h >= self.kh
            && self.w + 2 * self.pad_w >= self.kw
            && self.pad_h < self.kh
            && self.pad_w < self.kw;
        if !ok {
            return Err(GpuError::Shape(format!(
                "conv_fwd: unsupported shape (sizes > 0, stride 1|2, pad < kernel <= padded input): {self:?}"
            )));
        }
        Ok(())
    }
}

/// One pooling: input (B, C, H, W), a K x K window, stride and zero padding on both axes.
/// Output size (H + 2 pad - K) / stride + 1 (floor, PyTorch's default `ceil_mode=False`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl PoolShape {
    /// Output height.
    pub fn ho(&self) -> usize {
        out_side(self.h, self.pad, self.k, self.stride)
    }

    /// Output width.
    pub fn wo(&self) -> usize {
        out_side(self.w, self.pad, self.k, self.stride)
    }

    /// Elements of x: B C H W.
    pub fn x_len(&self) -> usize {
        self.b * self.c * self.h * self.w
    }

    fn check(&self, what: &str) -> Result<(), GpuError> {
        // PyTorch's rule pad <= K / 2 also keeps every window partly inside the image.
        let ok = self.b > 0
            && self.c > 0
            && self.k > 0
            && self.stride > 0
            && 2 * self.pad <= self.k
            && self.h + 2 * self.pad >= self.k
            && self.w + 2 * self.pad >= self.k;
        if !ok {
            return Err(GpuError::Shape(format!(
                "{what}: unsupported shape (sizes > 0, pad <= K/2, K <= padded input): {self:?}"
            )));
        }
        Ok(())
    }
}

/// A bilinear resize of (B, C, H, W) to (B, C, Ho, Wo), then `scale * v + shift`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResizeShape {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
    pub scale: f32,
    pub shift: f32,
}

impl ResizeShape {
    fn check(&self) -> Result<(), GpuError> {
        if [self.b, self.c, self.h, self.w, self.ho, self.wo].contains(&0) {
            return Err(GpuError::Shape(format!("resize_bilinear_fwd: empty dimension in {self:?}")));
        }
        Ok(())
    }
}

/// `weight` (Cout, Cin, KH, KW), PyTorch's layout, as conv_fwd reads it: (Cin KH KW,
/// cout_pad), transposed so one (ci, tap) step loads a tile's R output channels as R / 4 vec4s,
/// the columns past Cout zero.
pub fn pack_weight(weight: &[f32], s: ConvShape) -> Vec<f32> {
    let (k, cp) = (s.cin * s.kh * s.kw, s.cout_pad());
    let mut packed = vec![0.0; k * cp];
    for co in 0..s.cout {
        for (j, &v) in weight[co * k..(co + 1) * k].iter().enumerate() {
            packed[j * cp + co] = v;
        }
    }
    packed
}

// --- registry ----------------------------------------------------------------------------------

/// f32 dot products of up to Cin KH KW unit-normal terms (1,620 in the checks) against an f64
/// reference; the same accounting as conv2d's LOOSE: the rounding (~sqrt(n) 2^-24 relative to
/// the partial sums' size) is far inside it, and the absolute part covers outputs near zero.
const CONV_WHY: &str = "f32 accumulation over Cin*KH*KW terms vs an f64 reference";

pub const SPEC: OpSpec = OpSpec {
    name: "inception",
    shader: super::shader!("inception.wgsl"; Params),
    variants: &[],
    entries: &[
        Entry { name: "conv_fwd", reference: "inception::conv_fwd", tol: LOOSE, why: CONV_WHY },
        Entry { name: "maxpool_fwd", reference: "inception::maxpool_fwd", tol: EXACT, why: "a max picks one input" },
        Entry {
            name: "avgpool_fwd",
            reference: "inception::avgpool_fwd",
            tol: STRICT,
            why: "a sum of at most K*K = 9 terms in f32 and one division",
        },
        Entry {
            name: "global_avgpool_fwd",
            reference: "inception::global_avgpool_fwd",
            tol: POOL_SUM,
            why: "an in-order f32 sum of H*W terms (64 in the network, 150 in the check) and one division",
        },
        Entry { name: "channel_copy", reference: "inception::channel_copy", tol: EXACT, why: "a copy" },
        Entry {
            name: "resize_bilinear_fwd",
            reference: "inception::resize_bilinear_fwd",
            tol: STRICT,
            why: "four weights from one f32 division each, a weighted sum of four and an affine map in f32",
        },
    ],
    check,
};

/// An in-order f32 sum of n terms errs by up to ~n 2^-24 of the sum of magnitudes: 150 unit
/// normals average to ~0.1 with magnitudes summing to ~0.8 per term, so 1e-5 absolute is ~10x
/// the worst case and 1e-4 relative covers the large means.
const POOL_SUM: Tol = Tol { atol: 1e-5, rtol: 1e-4 };

super::constants! {
    /// Output channels per workgroup of conv_fwd (the rows of each invocation's register tile,
    /// a multiple of 4: the packed weight is read as vec4s).
    pub const R = 16;
    /// Invocations per workgroup of conv_fwd, 4 output pixels each.
    override LANES = 64;
    /// Invocations per workgroup of the one-thread-per-element entries.
    override WG = 256;
}

super::uniform! {
    struct Params {
        /// Threads of the one-per-element entries.
        n: u32,
        b: u32,
        /// Input channels (the pools' and copies' C).
        cin: u32,
        h: u32,
        w: u32,
        cout: u32,
        /// Columns of the packed weight (conv_fwd).
        cout_pad: u32,
        ho: u32,
        wo: u32,
        kh: u32,
        kw: u32,
        stride: u32,
        pad_h: u32,
        pad_w: u32,
        has_bias: u32,
        relu: u32,
        /// The output window: first channel and channels of the whole output.
        c_off: u32,
        c_total: u32,
        /// resize_bilinear_fwd: out = scale * v + shift.
        scale: f32,
        shift: f32,
    }
}

impl Params {
    fn conv(s: ConvShape, has_bias: bool, relu: bool, o: Slice) -> Self {
        Self {
            b: s.b as u32,
            cin: s.cin as u32,
            h: s.h as u32,
            w: s.w as u32,
            cout: s.cout as u32,
            cout_pad: s.cout_pad() as u32,
            ho: s.ho() as u32,
            wo: s.wo() as u32,
            kh: s.kh as u32,
            kw: s.kw as u32,
            stride: s.stride as u32,
            pad_h: s.pad_h as u32,
            pad_w: s.pad_w as u32,
            has_bias: u32::from(has_bias),
            relu: u32::from(relu),
            c_off: o.c_off as u32,
            c_total: o.c_total as u32,
            ..Zeroable::zeroed()
        }
    }

    fn pool(s: PoolShape, o: Slice) -> Self {
        Self {
            n: (s.b * s.c * s.ho() * s.wo()) as u32,
            b: s.b as u32,
            cin: s.c as u32,
            h: s.h as u32,
            w: s.w as u32,
            ho: s.ho() as u32,
            wo: s.wo() as u32,
            kh: s.k as u32,
            kw: s.k as u32,
            stride: s.stride as u32,
            pad_h: s.pad as u32,
            pad_w: s.pad as u32,
            c_off: o.c_off as u32,
            c_total: o.c_total as u32,
            ..Zeroable::zeroed()
        }
    }

    /// Channel-wise ops over (B, C, H W): `per_channel` threads per channel or one per element.
    fn channels(b: usize, c: usize, h: usize, w: usize, out_plane: (usize, usize), n: usize, o: Slice) -> Self {
        Self {
            n: n as u32,
            b: b as u32,
            cin: c as u32,
            h: h as u32,
            w: w as u32,
            ho: out_plane.0 as u32,
            wo: out_plane.1 as u32,
            c_off: o.c_off as u32,
            c_total: o.c_total as u32,
            ..Zeroable::zeroed()
        }
    }
}

async fn launch(gpu: &Gpu, entry: &'static str, bufs: &[&Buffer], p: Params) -> Result<Dispatch, GpuError> {
    prepare(gpu, &SPEC, entry, bufs, &p, groups_for(p.n as usize, WG)).await
}

// --- launchers ---------------------------------------------------------------------------------

/// out[:, c_off..c_off + Cout] = act(conv(x, weight) + bias), act = ReLU when `relu`.
/// x: (B, Cin, H, W), wpack: `pack_weight` of (Cout, Cin, KH, KW), bias: (Cout,),
/// out: (B, c_total, Ho, Wo). Overwritten (the window only); out must not be x.
#[allow(clippy::too_many_arguments)]
pub async fn conv_fwd(
    gpu: &Gpu,
    x: &Buffer,
    wpack: &Buffer,
    bias: Option<&Buffer>,
    out: &Buffer,
    s: ConvShape,
    relu: bool,
    o: Slice,
) -> Result<Dispatch, GpuError> {
    s.check()?;
    o.check("conv_fwd", s.cout)?;
    let out_len = s.b * o.c_total * s.ho() * s.wo();
    needs("conv_fwd", &[("x", x, s.x_len()), ("wpack", wpack, s.packed_len()), ("out", out, out_len)])?;
    let bias_buf = optional(gpu, "conv_fwd bias", bias, s.cout)?;
    let tiles = s.cout.div_ceil(R) * (s.b * s.ho() * s.wo()).div_ceil(4 * LANES);
    let params = Params::conv(s, bias.is_some(), relu, o);
    Ok(prepare(gpu, &SPEC, "conv_fwd", &[x, wpack, bias_buf, out], &params, tiles as u32)
        .await?
        .with_flops(s.flops() as u64))
}

/// Pooling kinds of `pool_fwd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// The window's maximum; padding ignored (PyTorch pads max_pool2d with -inf).
    Max,
    /// The mean over the window's in-image part (`count_include_pad=False`).
    Avg,
}

/// out[:, c_off..c_off + C] = the max or mean of x over each window.
/// x: (B, C, H, W), out: (B, c_total, Ho, Wo). Overwritten (the window only).
pub async fn pool_fwd(
    gpu: &Gpu,
    kind: Pool,
    x: &Buffer,
    out: &Buffer,
    s: PoolShape,
    o: Slice,
) -> Result<Dispatch, GpuError> {
    let entry = match kind {
        Pool::Max => "maxpool_fwd",
        Pool::Avg => "avgpool_fwd",
    };
    s.check(entry)?;
    o.check(entry, s.c)?;
    needs(entry, &[("x", x, s.x_len()), ("out", out, s.b * o.c_total * s.ho() * s.wo())])?;
    launch(gpu, entry, &[x, out], Params::pool(s, o)).await
}

/// out[b, c_off + c] = mean over H W of x[b, c]. x: (B, C, H, W), out: (B, c_total).
/// Overwritten (the window only).
#[allow(clippy::too_many_arguments)]
pub async fn global_avgpool_fwd(
    gpu: &Gpu,
    x: &Buffer,
    out: &Buffer,
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    o: Slice,
) -> Result<Dispatch, GpuError> {
    if b * c * h * w == 0 {
        return Err(GpuError::Shape(format!("global_avgpool_fwd: empty dimension in b={b} c={c} h={h} w={w}")));
    }
    o.check("global_avgpool_fwd", c)?;
    needs("global_avgpool_fwd", &[("x", x, b * c * h * w), ("out", out, b * o.c_total)])?;
    launch(gpu, "global_avgpool_fwd", &[x, out], Params::channels(b, c, h, w, (1, 1), b * c, o)).await
}

/// out[b, c_off + c] = x[b, c]: one part of torch.cat along channels.
/// x: (B, C, H, W), out: (B, c_total, H, W). Overwritten (the window only).
#[allow(clippy::too_many_arguments)]
pub async fn channel_copy(
    gpu: &Gpu,
    x: &Buffer,
    out: &Buffer,
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    o: Slice,
) -> Result<Dispatch, GpuError> {
    let n = b * c * h * w;
    if n == 0 {
        return Err(GpuError::Shape(format!("channel_copy: empty dimension in b={b} c={c} h={h} w={w}")));
    }
    o.check("channel_copy", c)?;
    needs("channel_copy", &[("x", x, n), ("out", out, b * o.c_total * h * w)])?;
    launch(gpu, "channel_copy", &[x, out], Params::channels(b, c, h, w, (h, w), n, o)).await
}

/// out = scale * bilinear(x) + shift, x resized from (H, W) to (Ho, Wo) as PyTorch's
/// `F.interpolate(mode='bilinear', align_corners=False)` without antialiasing.
/// x: (B, C, H, W), out: (B, C, Ho, Wo). Overwritten.
pub async fn resize_bilinear_fwd(gpu: &Gpu, x: &Buffer, out: &Buffer, s: ResizeShape) -> Result<Dispatch, GpuError> {
    s.check()?;
    let n = s.b * s.c * s.ho * s.wo;
    needs("resize_bilinear_fwd", &[("x", x, s.b * s.c * s.h * s.w), ("out", out, n)])?;
    let mut p = Params::channels(s.b, s.c, s.h, s.w, (s.ho, s.wo), n, Slice::whole(s.c));
    p.scale = s.scale;
    p.shift = s.shift;
    launch(gpu, "resize_bilinear_fwd", &[x, out], p).await
}

// --- check -------------------------------------------------------------------------------------

super::check_fn!(check_async);

async fn check_async(gpu: &Gpu) -> Result<Vec<CheckResult>, GpuError> {
    let mut results = Vec::new();
    // Every kernel shape of the network (1x1, 3x3 stride 1 and 2, 5x5, 1x7, 7x1, 1x3, 3x1) on
    // odd sizes, channel counts off the tile of 16, pixel counts above one tile of 256, output
    // windows inside larger tensors, with and without bias and ReLU.
    let convs = [
        (ConvShape { b: 2, cin: 5, h: 13, w: 11, cout: 21, kh: 3, kw: 3, stride: 2, pad_h: 0, pad_w: 0 }, true, true),
        (ConvShape { b: 2, cin: 7, h: 12, w: 11, cout: 18, kh: 3, kw: 3, stride: 1, pad_h: 1, pad_w: 1 }, true, false),
        (ConvShape { b: 1, cin: 20, h: 17, w: 15, cout: 33, kh: 1, kw: 1, stride: 1, pad_h: 0, pad_w: 0 }, false, true),
        (ConvShape { b: 2, cin: 6, h: 11, w: 9, cout: 16, kh: 5, kw: 5, stride: 1, pad_h: 2, pad_w: 2 }, true, true),
        (ConvShape { b: 2, cin: 9, h: 10, w: 13, cout: 19, kh: 1, kw: 7, stride: 1, pad_h: 0, pad_w: 3 }, true, true),
        (ConvShape { b: 2, cin: 9, h: 13, w: 10, cout: 19, kh: 7, kw: 1, stride: 1, pad_h: 3, pad_w: 0 }, true, true),
        (ConvShape { b: 2, cin: 12, h: 8, w: 9, cout: 20, kh: 1, kw: 3, stride: 1, pad_h: 0, pad_w: 1 }, true, true),
        (ConvShape { b: 2, cin: 12, h: 9, w: 8, cout: 20, kh: 3, kw: 1, stride: 1, pad_h: 1, pad_w: 0 }, true, true),
        (ConvShape { b: 1, cin: 180, h: 9, w: 9, cout: 40, kh: 3, kw: 3, stride: 2, pad_h: 0, pad_w: 0 }, true, true),
    ];
    for (i, (s, bias, relu)) in convs.into_iter().enumerate() {
        let o = Slice { c_off: 3 + i, c_total: s.cout + 5 + i };
        results.push(check_conv(gpu, s, bias, relu, o, i as u32).await?);
    }

    let x_all = normal_vec(2 * 7 * 17 * 19, 17, 1);
    let pools = [
        (Pool::Max, PoolShape { b: 2, c: 7, h: 17, w: 19, k: 3, stride: 2, pad: 0 }),
        (Pool::Max, PoolShape { b: 2, c: 7, h: 17, w: 19, k: 3, stride: 1, pad: 1 }),
        (Pool::Avg, PoolShape { b: 2, c: 7, h: 17, w: 19, k: 3, stride: 1, pad: 1 }),
        (Pool::Avg, PoolShape { b: 2, c: 7, h: 16, w: 15, k: 3, stride: 2, pad: 1 }),
    ];
    let x = gpu.upload("x", &x_all)?;
    let x64 = f64s(&x_all);
    for (kind, s) in pools {
        let o = Slice { c_off: 2, c_total: s.c + 3 };
        let n_out = s.b * o.c_total * s.ho() * s.wo();
        let init = normal_vec(n_out, 17, 2);
        let out = gpu.upload("out", &init)?;
        let mut want = f64s(&init);
        let entry = match kind {
            Pool::Max => {
                r::maxpool_fwd(&mut want, &x64[..s.x_len()], s, o);
                "maxpool_fwd"
            }
            Pool::Avg => {
                r::avgpool_fwd(&mut want, &x64[..s.x_len()], s, o);
                "avgpool_fwd"
            }
        };
        let d = pool_fwd(gpu, kind, &x, &out, s, o).await?;
        let shape = format!("{s:?} {o:?}");
        results.push(SPEC.result(entry, shape, &run_read(gpu, &d, &out).await?, &want));
    }

    // Global pool and copy: (2, 7, 15, 10) into a window of 12 channels. Outputs start random:
    // the window must be written and nothing else.
    let (b, c, h, w) = (2, 7, 15, 10);
    let o = Slice { c_off: 4, c_total: 12 };
    let init = normal_vec(b * o.c_total * h * w, 17, 3);
    let out = gpu.upload("out", &init)?;
    let mut want = f64s(&init[..b * o.c_total]);
    r::global_avgpool_fwd(&mut want, &x64[..b * c * h * w], b, c, h * w, o);
    let d = global_avgpool_fwd(gpu, &x, &out, b, c, h, w, o).await?;
    let got = run_read(gpu, &d, &out).await?;
    results.push(SPEC.result(
        "global_avgpool_fwd",
        format!("b={b} c={c} hw={h}x{w} {o:?}"),
        &got[..b * o.c_total],
        &want,
    ));

    let out = gpu.upload("out", &init)?;
    let mut want = f64s(&init);
    r::channel_copy(&mut want, &x64[..b * c * h * w], b, c, h * w, o);
    let d = channel_copy(gpu, &x, &out, b, c, h, w, o).await?;
    results.push(SPEC.result(
        "channel_copy",
        format!("b={b} c={c} hw={h}x{w} {o:?}"),
        &run_read(gpu, &d, &out).await?,
        &want,
    ));

    // Resize: up (non-integer ratio, the clamp at 0 and the last-row neighbour), down, and the
    // identity pytorch-fid runs on 299 x 299 inputs (exact weights 0 and 1).
    let resizes = [(2, 3, 7, 9, 23, 20), (1, 3, 40, 37, 13, 17), (1, 2, 11, 11, 11, 11)];
    for (b, c, h, w, ho, wo) in resizes {
        let s = ResizeShape { b, c, h, w, ho, wo, scale: 2.0, shift: -1.0 };
        let xin: Vec<f32> = normal_vec(b * c * h * w, 17, 4);
        let xb = gpu.upload("x", &xin)?;
        let out = gpu.upload("out", &vec![f32::NAN; b * c * ho * wo])?;
        let mut want = vec![0.0; b * c * ho * wo];
        r::resize_bilinear_fwd(&mut want, &f64s(&xin), s);
        let d = resize_bilinear_fwd(gpu, &xb, &out, s).await?;
        results.push(SPEC.result("resize_bilinear_fwd", format!("{s:?}"), &run_read(gpu, &d, &out).await?, &want));
    }
    Ok(results)
}

/// One convolution into a window of a larger output that starts random: the window must hold
/// the reference result and every other element its starting value.
async fn check_conv(
    gpu: &Gpu,
    s: ConvShape,
    bias: bool,
    relu: bool,
    o: Slice,
    tag: u32,
) -> Result<CheckResult, GpuError> {
    let xx = normal_vec(s.x_len(), 19, tag);
    // Weights scaled by 1 / sqrt(fan-in) keep the outputs O(1), as in the network.
    let scale = 1.0 / ((s.cin * s.kh * s.kw) as f32).sqrt();
    let xw: Vec<f32> = normal_vec(s.weight_len(), 19, tag + 100).iter().map(|v| v * scale).collect();
    let xbias = normal_vec(s.cout, 19, tag + 200);
    let n_out = s.b * o.c_total * s.ho() * s.wo();
    let init = normal_vec(n_out, 19, tag + 300);

    let x = gpu.upload("x", &xx)?;
    let wpack = gpu.upload("wpack", &pack_weight(&xw, s))?;
    let bias_buf = gpu.upload("bias", &xbias)?;
    let out = gpu.upload("out", &init)?;
    let mut want = f64s(&init);
    let bias64 = f64s(&xbias);
    r::conv_fwd(&mut want, &f64s(&xx), &f64s(&xw), bias.then_some(&bias64[..]), s, relu, o);
    let d = conv_fwd(gpu, &x, &wpack, bias.then_some(&bias_buf), &out, s, relu, o).await?;
    let shape = format!("{s:?}{}{} {o:?}", if bias { " +bias" } else { "" }, if relu { " relu" } else { "" });
    Ok(SPEC.result("conv_fwd", shape, &run_read(gpu, &d, &out).await?, &want))
}
