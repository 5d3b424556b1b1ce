//! The compact UNet of math.md §8 (DDPM++ structure at a small scale), optionally wrapped in
//! EDM's preconditioning (math.md §1.4(b)). Its structure is written once, as a `Description`;
//! parameters, names, counts and FLOPs follow it. The forward pseudo-code that the PyTorch mirror
//! (tools/mirror.py) copies is on `UNet`.

use super::{config_text, ConfigJson};
use crate::gpu::{Buffer, Dispatch, Gpu, GpuError};
use crate::nn::attention::AttentionBuffers;
use crate::nn::params::Init;
use crate::nn::{
    Attention, Conv2d, GradMode, GroupNorm, GroupNormStats, Linear, ParamId, ParamLayout, Params, ResBlock,
    ResBlockActs,
};
use crate::ops::matmul::{self, Dims, Layout};
use crate::ops::resample::{self, Nchw};
use crate::ops::{elementwise as ew, embedding};

use super::mlp::Precond;

/// σ_d of the UNet's "edm" preconditioning: images in [−1, 1] (math.md §4.3, EDM's default).
pub const SIGMA_DATA: f32 = 0.5;

/// Sizes of the UNet. One comment per field, the EDM way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UNetConfig {
    /// Side S of the square input images (divisible by 2^(levels - 1)).
    pub image_size: usize,
    /// Channels of the input x.
    pub in_channels: usize,
    /// Channels of the output (the eps or denoiser prediction).
    pub out_channels: usize,
    /// Base width ch (model_channels); also the number of sinusoidal features of t. E = 4 ch.
    pub channels: usize,
    /// Width multiplier of each level (channel_mult); levels = mult.len().
    pub mult: Vec<usize>,
    /// ResBlocks per level on the way down (the way up has one more).
    pub blocks_per_level: usize,
    /// Resolutions (sides) at which every ResBlock is followed by self-attention.
    pub attn_resolutions: Vec<usize>,
    /// Attention heads (1, as EDM's CIFAR nets).
    pub heads: usize,
    /// Classes of the label conditioning; 0 = unconditional (every preset).
    pub num_classes: usize,
    /// Upper bound on GroupNorm groups: c channels get min(norm_groups, c / 4) (32: math.md §8).
    pub norm_groups: usize,
    /// How the net's output becomes ε̂: "eps" (the output is ε̂) or "edm" (EDM's preconditioning
    /// with σ_d = 0.5; needs in_channels = out_channels).
    pub precond: Precond,
}

/// The architecture name stored in checkpoints (`cdl.arch`); also `UNetConfig::ARCH`.
pub const ARCH: &str = UNetConfig::ARCH;

impl UNetConfig {
    /// The architecture name stored in checkpoints.
    pub const ARCH: &'static str = "unet";

    /// The config as the JSON text stored in checkpoints (`cdl.model_config`) and read by the
    /// PyTorch mirror (tools/mirror.py): the field names of this struct. An "eps" net is written
    /// without the `precond` key, exactly as before the option existed, so earlier checkpoints
    /// (the page's shipped weights) still match their config.
    pub fn to_json(&self) -> String {
        let v = serde_json::json!({
            "image_size": self.image_size,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "channels": self.channels,
            "mult": self.mult,
            "blocks_per_level": self.blocks_per_level,
            "attn_resolutions": self.attn_resolutions,
            "heads": self.heads,
            "num_classes": self.num_classes,
            "norm_groups": self.norm_groups,
        });
        config_text(v, self.precond)
    }

    /// Parses `to_json`'s text; the error names the missing or invalid field. `num_classes`,
    /// `norm_groups` and `precond` may be missing (checkpoints written before they existed): 0,
    /// 32 and "eps", the unconditional ε-network with math.md §8's groups.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v = ConfigJson::parse("UNet", text)?;
        let precond = v.precond()?;
        Ok(Self {
            image_size: v.usize("image_size")?,
            in_channels: v.usize("in_channels")?,
            out_channels: v.usize("out_channels")?,
            channels: v.usize("channels")?,
            mult: v.list("mult")?,
            blocks_per_level: v.usize("blocks_per_level")?,
            attn_resolutions: v.list("attn_resolutions")?,
            heads: v.usize("heads")?,
            num_classes: v.usize_or("num_classes", 0)?,
            norm_groups: v.usize_or("norm_groups", DEFAULT_NORM_GROUPS)?,
            precond,
        })
    }

    /// Test-size net: 16 px RGB, ch 16, mult [1, 2], 1 block, attention at 8.
    pub fn tiny() -> Self {
        Self::rgb(16, 16, vec![1, 2], 1, vec![8])
    }

    /// math.md §8 variant A: 32 px, ch 32, mult [1, 2, 2], 2 blocks, attention at 8.
    pub fn compact() -> Self {
        Self::rgb(32, 32, vec![1, 2, 2], 2, vec![8])
    }

    /// math.md §8 variant B: as A with ch 64 and attention at 16.
    pub fn small() -> Self {
        Self::rgb(32, 64, vec![1, 2, 2], 2, vec![16])
    }

    fn rgb(image_size: usize, channels: usize, mult: Vec<usize>, blocks: usize, attn: Vec<usize>) -> Self {
        Self {
            image_size,
            in_channels: 3,
            out_channels: 3,
            channels,
            mult,
            blocks_per_level: blocks,
            attn_resolutions: attn,
            heads: 1,
            num_classes: 0,
            norm_groups: DEFAULT_NORM_GROUPS,
            precond: Precond::Eps,
        }
    }

    /// Width E of the noise embedding the blocks read: 4 ch (channel_mult_emb 4).
    pub fn emb_dim(&self) -> usize {
        4 * self.channels
    }

    /// GroupNorm groups for c channels: min(norm_groups, c / 4), at least 1 (math.md §8 with the
    /// default 32). `layout` refuses a config where this does not divide c.
    pub fn groups(&self, c: usize) -> usize {
        (c / 4).min(self.norm_groups).max(1)
    }
}

/// `UNetConfig::norm_groups` of the presets and of configs that omit it: math.md §8's 32.
pub const DEFAULT_NORM_GROUPS: usize = 32;

// --- the description: the UNet as one list of blocks ---------------------------------------------

/// One piece of the UNet in forward order, acting on the running activation h (c channels of
/// r x r pixels per image) and the skip stack. `Description::new` lists them once per config; the
/// layout and its names (checkpoints, the PyTorch mirror), `UNet::new`, the parameter count and
/// the FLOPs all follow that list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    /// temb = emb.fc2(silu(emb.fc1(sinusoidal(t, ch)))), Linear ch -> e and e -> e, plus
    /// labels_onehot class_emb.weight^T (e, classes) when classes > 0.
    Embedding { ch: usize, e: usize, classes: usize },
    /// h = conv_in(x): 3x3, cin -> cout, at r.
    ConvIn { cin: usize, cout: usize, r: usize },
    /// h = ResBlock `{name}.*`(h, temb): cin -> cout at r, embedding width e (nn/resblock.rs).
    Res { name: String, cin: usize, cout: usize, e: usize, r: usize },
    /// h = h + `{name}.attn`(`{name}.attn_norm`(h)): c channels at r.
    Attn { name: String, c: usize, r: usize },
    /// skips.push(h).
    Skip,
    /// h = avgpool2x2(h): c channels, r -> r / 2.
    Down { c: usize, r: usize },
    /// h = cat([h, skips.pop()], dim=1): c + skip channels at r.
    Concat { c: usize, skip: usize, r: usize },
    /// h = `{name}`(upsample_nearest2x(h)): 3x3 conv c -> c, r -> 2 r.
    Up { name: String, c: usize, r: usize },
    /// out = conv_out(silu(norm_out(h))): c -> cout at r.
    Head { c: usize, cout: usize, r: usize },
}

/// Parameters of a Linear n_in -> n_out (weight and bias).
fn linear_params(n_in: usize, n_out: usize) -> usize {
    n_in * n_out + n_out
}

/// Parameters of a k x k convolution cin -> cout (weight and bias).
fn conv_params(cin: usize, cout: usize, k: usize) -> usize {
    cout * cin * k * k + cout
}

/// 2 x the multiply-adds of a matmul (or convolution) whose loop sizes are `dims`; in u64, which
/// no count overflows (a 32-bit usize would, at 64 x 64 attention).
fn matmul_flops(dims: &[usize]) -> u64 {
    2 * dims.iter().map(|&n| n as u64).product::<u64>()
}

/// 2 x the multiply-adds of a k x k convolution cin -> cout over r x r output pixels.
fn conv_flops(cin: usize, cout: usize, k: usize, r: usize) -> u64 {
    matmul_flops(&[r, r, cout, cin, k, k])
}

impl Block {
    /// Its parameters, counted from the sizes (GroupNorm: gain and bias per channel; attention:
    /// the qkv and proj projections with biases). A test checks the sum against the layout.
    pub fn params(&self) -> usize {
        match *self {
            Self::Embedding { ch, e, classes } => linear_params(ch, e) + linear_params(e, e) + e * classes,
            Self::ConvIn { cin, cout, .. } => conv_params(cin, cout, 3),
            Self::Res { cin, cout, e, .. } => {
                let skip = if cin == cout { 0 } else { conv_params(cin, cout, 1) };
                2 * cin
                    + conv_params(cin, cout, 3)
                    + 2 * linear_params(e, cout)
                    + 2 * cout
                    + conv_params(cout, cout, 3)
                    + skip
            }
            Self::Attn { c, .. } => 2 * c + linear_params(c, 3 * c) + linear_params(c, c),
            Self::Up { c, .. } => conv_params(c, c, 3),
            Self::Head { c, cout, .. } => 2 * c + conv_params(c, cout, 3),
            Self::Skip | Self::Down { .. } | Self::Concat { .. } => 0,
        }
    }

    /// Forward FLOPs per image: 2 x the multiply-adds of its convolutions (3x3, the 1x1 skips)
    /// and matmuls (the embedding's and the ResBlocks' Linear layers, the one-hot class product,
    /// attention's qkv and proj projections and its two T x T products q^T k and v attn^T over
    /// T = r² tokens, heads x D = C channels). Not counted: norms, activations, softmax, bias
    /// and residual adds, pooling, upsampling, concatenation, the preconditioning.
    pub fn flops(&self) -> u64 {
        match *self {
            Self::Embedding { ch, e, classes } => {
                matmul_flops(&[ch, e]) + matmul_flops(&[e, e]) + matmul_flops(&[classes, e])
            }
            Self::ConvIn { cin, cout, r } => conv_flops(cin, cout, 3, r),
            Self::Res { cin, cout, e, r, .. } => {
                let skip = if cin == cout { 0 } else { conv_flops(cin, cout, 1, r) };
                conv_flops(cin, cout, 3, r) + conv_flops(cout, cout, 3, r) + skip + 2 * matmul_flops(&[e, cout])
            }
            Self::Attn { c, r, .. } => {
                conv_flops(c, 3 * c, 1, r) + conv_flops(c, c, 1, r) + 2 * matmul_flops(&[r * r, r * r, c])
            }
            Self::Up { c, r, .. } => conv_flops(c, c, 3, 2 * r),
            Self::Head { c, cout, r } => conv_flops(c, cout, 3, r),
            Self::Skip | Self::Down { .. } | Self::Concat { .. } => 0,
        }
    }
}

fn bad(msg: String) -> GpuError {
    GpuError::Shape(format!("unet: {msg}"))
}

fn check_channels(cfg: &UNetConfig, c: usize) -> Result<(), GpuError> {
    let g = cfg.groups(c);
    if c == 0 || !c.is_multiple_of(4) || !c.is_multiple_of(g) {
        let n = cfg.norm_groups;
        return Err(bad(format!("{c} channels: need a multiple of 4 divisible by min(norm_groups {n}, c/4) = {g}")));
    }
    Ok(())
}

/// A config's UNet as one list of blocks, in forward order (`UNet`'s pseudo-code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// Embedding, ConvIn, the body, Head.
    pub blocks: Vec<Block>,
}

impl Description {
    /// The blocks of `cfg`, or why it cannot be built (before any layout or allocation; the
    /// attention layers' alignment rule needs a batch and is checked by `memory_estimate`).
    pub fn new(cfg: &UNetConfig) -> Result<Self, GpuError> {
        let levels = cfg.mult.len();
        if levels == 0
            || cfg.mult.contains(&0)
            || cfg.in_channels == 0
            || cfg.out_channels == 0
            || cfg.heads == 0
            || cfg.norm_groups == 0
        {
            return Err(bad(format!("invalid config {cfg:?}")));
        }
        if cfg.precond == Precond::Edm && cfg.in_channels != cfg.out_channels {
            let (i, o) = (cfg.in_channels, cfg.out_channels);
            return Err(bad(format!("precond edm adds the input to the output: in_channels {i} != out_channels {o}")));
        }
        if cfg.image_size == 0 || !cfg.image_size.is_multiple_of(1 << (levels - 1)) {
            return Err(bad(format!("image size {} not divisible by 2^{}", cfg.image_size, levels - 1)));
        }
        let (ch, e, mut r) = (cfg.channels, cfg.emb_dim(), cfg.image_size);
        check_channels(cfg, ch)?;
        let mut blocks = vec![
            Block::Embedding { ch, e, classes: cfg.num_classes },
            Block::ConvIn { cin: cfg.in_channels, cout: ch, r },
            Block::Skip,
        ];
        // Channels of the skip stack, and of h.
        let (mut skips, mut c) = (vec![ch], ch);
        // A ResBlock cin -> cout at r, followed by attention when r is listed.
        let res = |blocks: &mut Vec<Block>, name: String, cin: usize, cout: usize, r: usize| {
            check_channels(cfg, cin)?;
            check_channels(cfg, cout)?;
            blocks.push(Block::Res { name: format!("{name}.res"), cin, cout, e, r });
            if cfg.attn_resolutions.contains(&r) {
                blocks.push(Block::Attn { name, c: cout, r });
            }
            Ok::<(), GpuError>(())
        };
        for (lv, m) in cfg.mult.iter().enumerate() {
            for i in 0..cfg.blocks_per_level {
                res(&mut blocks, format!("down.{lv}.{i}"), c, ch * m, r)?;
                c = ch * m;
                blocks.push(Block::Skip);
                skips.push(c);
            }
            if lv + 1 < levels {
                blocks.push(Block::Down { c, r });
                r /= 2;
                blocks.push(Block::Skip);
                skips.push(c);
            }
        }
        blocks.push(Block::Res { name: "mid.res0".into(), cin: c, cout: c, e, r });
        blocks.push(Block::Attn { name: "mid".into(), c, r });
        blocks.push(Block::Res { name: "mid.res1".into(), cin: c, cout: c, e, r });
        for (lv, m) in cfg.mult.iter().enumerate().rev() {
            for i in 0..=cfg.blocks_per_level {
                let skip = skips.pop().ok_or_else(|| bad("skip stack underflow".into()))?;
                blocks.push(Block::Concat { c, skip, r });
                res(&mut blocks, format!("up.{lv}.{i}"), c + skip, ch * m, r)?;
                c = ch * m;
            }
            if lv > 0 {
                blocks.push(Block::Up { name: format!("up.{lv}.conv"), c, r });
                r *= 2;
            }
        }
        blocks.push(Block::Head { c, cout: cfg.out_channels, r });
        Ok(Self { blocks })
    }

    /// Number of parameters, from the sizes alone (equal to the layout's count).
    pub fn param_count(&self) -> usize {
        self.blocks.iter().map(Block::params).sum()
    }

    /// Forward FLOPs per image (one row), as `Block::flops` counts them.
    pub fn flops(&self) -> u64 {
        self.blocks.iter().map(Block::flops).sum()
    }
}

// --- the plan: the description's layers and activation shapes, before any allocation ------------

/// One activation: c channels of r x r pixels (per image).
#[derive(Clone, Copy, Debug)]
struct Map {
    c: usize,
    r: usize,
}

/// One step of the forward between activations (indices into `Plan::maps`).
// A few dozen steps, built once per model: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug)]
enum Step {
    Res {
        blk: ResBlock,
        x: usize,
        out: usize,
    },
    /// out = x + attn(norm(x)).
    Attn {
        norm: GroupNorm,
        attn: Attention,
        x: usize,
        out: usize,
    },
    Down {
        x: usize,
        out: usize,
    },
    /// out = conv(upsample2x(x)).
    Up {
        conv: Conv2d,
        x: usize,
        out: usize,
    },
    Concat {
        a: usize,
        skip: usize,
        out: usize,
    },
}

struct Plan {
    description: Description,
    layout: ParamLayout,
    fc1: Linear,
    fc2: Linear,
    /// `class_emb.weight` (E, K), when K > 0.
    class_emb: Option<ParamId>,
    conv_in: Conv2d,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    /// maps[0] is conv_in's output; the last is the input of the output head.
    maps: Vec<Map>,
    steps: Vec<Step>,
}

/// Registers the layers of `cfg`'s description in block order (the parameter names and their
/// order) and numbers the activations between them.
fn plan(cfg: &UNetConfig) -> Result<Plan, GpuError> {
    let description = Description::new(cfg)?;
    let groups = |c: usize| cfg.groups(c);
    let internal = || bad("internal: the description does not start with the stem and end with the head".into());
    let [Block::Embedding { ch, e, classes }, Block::ConvIn { cin, cout: c0, r: size }, rest @ ..] =
        description.blocks.as_slice()
    else {
        return Err(internal());
    };
    let [body @ .., Block::Head { c, cout, .. }] = rest else { return Err(internal()) };
    let mut l = ParamLayout::default();
    let fc1 = Linear::new(&mut l, "emb.fc1", *ch, *e);
    let fc2 = Linear::new(&mut l, "emb.fc2", *e, *e);
    let class_emb = (*classes > 0).then(|| l.add("class_emb.weight", &[*e, *classes], Init::FanIn(*classes)));
    let conv_in = Conv2d::new(&mut l, "conv_in", *cin, *c0, 3, 1);
    let mut maps = vec![Map { c: *c0, r: *size }];
    let (mut steps, mut skips, mut h) = (Vec::new(), Vec::new(), 0);
    for block in body {
        // The step's output: a new activation of c channels at r.
        let mut next = |c: usize, r: usize| {
            maps.push(Map { c, r });
            maps.len() - 1
        };
        match block {
            Block::Res { name, cin, cout, e, r } => {
                let blk = ResBlock::new(&mut l, name, *cin, *cout, *e, groups);
                let out = next(*cout, *r);
                steps.push(Step::Res { blk, x: h, out });
                h = out;
            }
            Block::Attn { name, c, r } => {
                let norm = GroupNorm::new(&mut l, &format!("{name}.attn_norm"), *c, groups(*c));
                let attn = Attention::new(&mut l, &format!("{name}.attn"), *c, cfg.heads);
                let out = next(*c, *r);
                steps.push(Step::Attn { norm, attn, x: h, out });
                h = out;
            }
            Block::Skip => skips.push(h),
            Block::Down { c, r } => {
                let out = next(*c, r / 2);
                steps.push(Step::Down { x: h, out });
                h = out;
            }
            Block::Concat { c, skip, r } => {
                let popped = skips.pop().ok_or_else(|| bad("skip stack underflow".into()))?;
                let out = next(c + skip, *r);
                steps.push(Step::Concat { a: h, skip: popped, out });
                h = out;
            }
            Block::Up { name, c, r } => {
                let conv = Conv2d::new(&mut l, name, *c, *c, 3, 1);
                let out = next(*c, 2 * r);
                steps.push(Step::Up { conv, x: h, out });
                h = out;
            }
            Block::Embedding { .. } | Block::ConvIn { .. } | Block::Head { .. } => {
                return Err(bad(format!("internal: {block:?} inside the body")));
            }
        }
    }
    let norm_out = GroupNorm::new(&mut l, "norm_out", *c, groups(*c));
    let conv_out = Conv2d::new(&mut l, "conv_out", *c, *cout, 3, 1);
    Ok(Plan { description, layout: l, fc1, fc2, class_emb, conv_in, norm_out, conv_out, maps, steps })
}

/// The layout of the UNet's parameters (names, shapes, init), without allocating anything.
pub fn layout(cfg: &UNetConfig) -> Result<ParamLayout, GpuError> {
    Ok(plan(cfg)?.layout)
}

/// What `UNet::new` would allocate for `batch` images, in bytes (parameters, gradients,
/// activations, scratch), and the size of its largest buffer; the config's and the attention
/// layers' shape errors, without a device.
pub fn memory_estimate(cfg: &UNetConfig, batch: usize) -> Result<(usize, usize), GpuError> {
    let b = budget(&plan(cfg)?, cfg, batch)?;
    Ok((4 * b.total, 4 * b.largest))
}

// --- memory: every buffer the model allocates, counted before allocating ------------------------

/// Total and largest buffer, in f32 elements.
#[derive(Debug, Default)]
struct Budget {
    total: usize,
    largest: usize,
    largest_what: String,
}

impl Budget {
    fn add(&mut self, what: &str, n: usize) {
        self.total += n;
        if n > self.largest {
            self.largest = n;
            self.largest_what = what.to_string();
        }
    }
}

/// Counts what `UNet::new` allocates for `batch`, mirroring `ResBlock::acts` and
/// `Attention::buffers`; also returns the attention layers' shape errors.
fn budget(p: &Plan, cfg: &UNetConfig, b: usize) -> Result<Budget, GpuError> {
    let mut g = Budget::default();
    let s = cfg.image_size * cfg.image_size;
    let (ch, e) = (cfg.channels, cfg.emb_dim());
    g.add("parameters", p.layout.flat_len());
    g.add("gradients", p.layout.flat_len());
    for (what, n) in [("x", cfg.in_channels), ("dx", cfg.in_channels), ("out", cfg.out_channels)] {
        g.add(what, b * n * s);
    }
    g.add("dout", b * cfg.out_channels * s);
    if cfg.precond == Precond::Edm {
        for what in ["x_in", "dx_in", "dx_skip"] {
            g.add(what, b * cfg.in_channels * s);
        }
        for what in ["f", "df"] {
            g.add(what, b * cfg.out_channels * s);
        }
    }
    g.add("t", b);
    g.add("emb", b * ch);
    for what in ["e1", "e1_act", "temb", "dtemb", "de1"] {
        g.add(what, b * e);
    }
    if cfg.num_classes > 0 {
        g.add("labels_onehot", b * cfg.num_classes);
        g.add("temb_base", b * e);
        g.add("temb_class", b * e);
    }
    let mut uses = vec![0usize; p.maps.len()];
    for m in &p.maps {
        g.add("activation", b * m.c * m.r * m.r);
        g.add("activation gradient", b * m.c * m.r * m.r);
    }
    for st in &p.steps {
        match *st {
            Step::Res { blk, x, .. } => {
                uses[x] += 1;
                let hw = p.maps[x].r * p.maps[x].r;
                let (ni, no) = (b * blk.cin * hw, b * blk.cout * hw);
                for _ in 0..3 {
                    g.add("resblock (B, Cin, H, W)", ni);
                }
                for _ in 0..4 {
                    g.add("resblock (B, E)", b * e);
                    g.add("resblock (B, Cout)", b * blk.cout);
                }
                for _ in 0..(5 + usize::from(blk.skip.is_some())) {
                    g.add("resblock (B, Cout, H, W)", no);
                }
                g.add("resblock stats", 2 * b * (blk.norm1.groups + blk.norm2.groups));
            }
            Step::Attn { norm, attn, x, .. } => {
                uses[x] += 1;
                let m = p.maps[x];
                let sh = attn.shape(b, m.r * m.r)?;
                for _ in 0..3 {
                    g.add("attention norm, output, dx (B, C, T)", sh.x_len());
                }
                g.add("attention stats", 2 * b * norm.groups);
                for _ in 0..2 {
                    g.add("attention out (B, C, T)", sh.x_len());
                    g.add("attention qkv (B, 3C, T)", sh.qkv_len());
                }
                for _ in 0..3 {
                    g.add("attention scores (B, heads, T, T)", sh.attn_len());
                }
            }
            Step::Down { x, .. } => uses[x] += 1,
            Step::Up { conv, x, .. } => {
                uses[x] += 1;
                let r = 2 * p.maps[x].r;
                g.add("upsampled (B, C, 2H, 2W)", b * conv.cin * r * r);
                g.add("upsampled gradient (B, C, 2H, 2W)", b * conv.cin * r * r);
            }
            Step::Concat { a, skip, .. } => {
                uses[a] += 1;
                uses[skip] += 1;
            }
        }
    }
    // The output head: silu(norm) and its gradient; stats.
    let c0 = p.norm_out.c;
    for _ in 0..2 {
        g.add("output head (B, C, H, W)", b * c0 * s);
    }
    g.add("output head stats", 2 * b * p.norm_out.groups);
    // One scratch per tensor read twice (its second gradient).
    for (m, u) in p.maps.iter().zip(&uses) {
        if *u > 1 {
            g.add("gradient scratch", b * m.c * m.r * m.r);
        }
    }
    Ok(g)
}

// --- the model ----------------------------------------------------------------------------------

/// The extra buffers of the "edm" preconditioning.
#[derive(Debug)]
struct EdmBuffers {
    /// The net's input a_in x. (B, Cin, S, S)
    x_in: Buffer,
    /// Gradient of `x_in`. (B, Cin, S, S)
    dx_in: Buffer,
    /// The skip term's part of dx, a_skip dout. (B, Cin, S, S)
    dx_skip: Buffer,
    /// The net's output f. (B, Cout, S, S)
    f: Buffer,
    /// Gradient of `f`, a_out dout. (B, Cout, S, S)
    df: Buffer,
}

/// An activation on the device with its gradient. (B, c, r, r) each.
#[derive(Debug)]
struct Tensor {
    buf: Buffer,
    grad: Buffer,
    /// Scratch for a second gradient contribution, when the tensor is read twice.
    scratch: Option<Buffer>,
    /// Whether the backward built so far has written `grad`.
    written: bool,
}

/// The UNet bound to one batch size: parameters, activations and prepared dispatches.
///
/// The forward, the contract a PyTorch mirror copies (x (B, Cin, S, S), t (B,), out (B, Cout, S, S);
/// ch = `channels`, E = 4 ch, `c_l = ch * mult[l]`, K = `num_classes`, G(c) = min(`norm_groups`, c / 4)
/// GroupNorm groups (the default norm_groups 32 gives math.md §8's min(32, c / 4); G(c) must divide c)):
///
/// ```text
/// temb = emb.fc2(silu(emb.fc1(sinusoidal(t, ch))))        emb.fc1 Linear ch -> E, emb.fc2 E -> E
/// if K > 0:  temb = temb + labels_onehot @ class_emb.weight^T
///                                 class_emb: bias-free Linear K -> E (weight (E, K)); labels_onehot (B, K)
/// h = conv_in(x)                                          3x3, Cin -> ch;            skips = [h]
/// for level l = 0 .. L-1 (resolution r = S / 2^l):
///     for i in 0 .. blocks_per_level:
///         h = down.{l}.{i}.res(h, temb)                   ResBlock c_prev -> c_l (nn/resblock.rs)
///         if r in attn_resolutions:
///             h = h + down.{l}.{i}.attn(down.{l}.{i}.attn_norm(h))
///         skips.push(h)
///     if l < L-1:  h = avgpool2x2(h); skips.push(h)     (no parameters)
/// h = mid.res0(h, temb); h = h + mid.attn(mid.attn_norm(h)); h = mid.res1(h, temb)
/// for level l = L-1 .. 0:
///     for i in 0 .. blocks_per_level + 1:
///         h = up.{l}.{i}.res(cat([h, skips.pop()], dim=1), temb)      ResBlock c_h + c_skip -> c_l
///         if r in attn_resolutions:
///             h = h + up.{l}.{i}.attn(up.{l}.{i}.attn_norm(h))
///     if l > 0:  h = up.{l}.conv(upsample_nearest2x(h))   3x3, c_l -> c_l
/// out = conv_out(silu(norm_out(h)))                       norm_out GroupNorm(G(c_0), c_0), 3x3 c_0 -> Cout
/// ```
///
/// Not here: dropout, EDM's 1/sqrt(2) skip scaling, EDM's c_noise = ¼ ln σ (the noise input is
/// t = α/8 either way). `attn` is `nn::Attention` (1x1 qkv and proj convolutions,
/// softmax(q^T k / sqrt(D)), `heads` heads, no internal norm); every `*_norm` and the ResBlock
/// norms use G(c) groups and eps 1e-5.
///
/// With `precond` "edm" (EDM's `EDMPrecond` in ε form, σ_d = `SIGMA_DATA` = 0.5, α = 8 t;
/// math.md §1.4(b), coefficients in reference/embedding.rs), the net above is F and (Cin = Cout):
///
/// ```text
/// f   = F(a_in(α) x, t)                a_in   = sqrt((1+σ²)/(σ²+σ_d²)),  σ² = e^{−α}
/// out = a_skip(α) x + a_out(α) f       a_skip = σ sqrt(1+σ²)/(σ²+σ_d²),  a_out = σ_d/sqrt(σ²+σ_d²)
/// ```
///
/// With "eps" (the default, and every config without the key) out = F(x, t).
///
/// Class conditioning (DDPM++ / EDM's label embedding) when `num_classes` K > 0: the caller writes
/// the one-hot labels into `labels_onehot` (B, K) (`write_labels` does it from class indices);
/// K = 0 is unconditional, with neither the buffer nor the parameter.
///
/// Parameter names (checkpoint names), registered in forward order: `emb.fc1.{weight,bias}`,
/// `emb.fc2.*`, `class_emb.weight` (E, K) (only when K > 0; no bias), `conv_in.*`,
/// `down.{l}.{i}.res.*` (the ResBlock's names: `norm1`, `conv1`, `emb_scale`, `emb_shift`, `norm2`,
/// `conv2`, `skip` when Cin != Cout), `down.{l}.{i}.attn_norm.*`, `down.{l}.{i}.attn.{qkv,proj}.*`,
/// `mid.res0.*`, `mid.attn_norm.*`, `mid.attn.*`, `mid.res1.*`, `up.{l}.{i}.res.*`,
/// `up.{l}.{i}.attn_norm.*`, `up.{l}.{i}.attn.*`, `up.{l}.conv.*`, `norm_out.*`, `conv_out.*`.
/// Init is PyTorch's default everywhere (no zero-init of the last convolutions).
///
/// Backward: every activation has a gradient buffer; a tensor read twice (a skip, read by the
/// next layer and by a concatenation) gets its first gradient written, the second computed into
/// a scratch buffer and added. dtemb sums every ResBlock's contribution (first Write, then Add).
#[derive(Debug)]
pub struct UNet {
    pub cfg: UNetConfig,
    pub batch: usize,
    pub params: Params,
    /// Input images. (B, Cin, S, S)
    pub x: Buffer,
    /// Noise input of each image (c_noise). (B,)
    pub t: Buffer,
    /// Output. (B, Cout, S, S)
    pub out: Buffer,
    /// Upstream gradient of `out`, written by the loss head. (B, Cout, S, S)
    pub dout: Buffer,
    /// Gradient with respect to `x`. (B, Cin, S, S)
    pub dx: Buffer,
    /// One-hot class labels, written by the caller (`write_labels`), when `num_classes` K > 0:
    /// row i is image i's label (1.0 at its class, 0.0 elsewhere). (B, K)
    pub labels_onehot: Option<Buffer>,
    description: Description,
    memory: usize,
    forward: Vec<Dispatch>,
    backward: Vec<Dispatch>,
}

/// Where a backward writes the gradient of tensor `i`: its gradient buffer the first time, its
/// scratch afterwards (then `finish` adds the scratch in).
fn grad_dst(ts: &mut [Tensor], i: usize) -> Result<(Buffer, Option<usize>), GpuError> {
    let t = &mut ts[i];
    if !t.written {
        t.written = true;
        return Ok((t.grad.clone(), None));
    }
    let s = t.scratch.clone().ok_or_else(|| bad(format!("activation {i} read more than planned")))?;
    Ok((s, Some(i)))
}

async fn finish(gpu: &Gpu, ts: &[Tensor], pending: Option<usize>, bwd: &mut Vec<Dispatch>) -> Result<(), GpuError> {
    if let Some(i) = pending {
        let t = &ts[i];
        if let Some(s) = &t.scratch {
            bwd.push(ew::axpy(gpu, s, &t.grad, t.grad.len, 1.0).await?);
        }
    }
    Ok(())
}

/// The activations of `maps` with their gradients, and a scratch for each one `steps` read twice.
fn activations(gpu: &Gpu, maps: &[Map], steps: &[Step], b: usize) -> Result<Vec<Tensor>, GpuError> {
    let mut reads = vec![0usize; maps.len()];
    for st in steps {
        match *st {
            Step::Res { x, .. } | Step::Attn { x, .. } | Step::Down { x, .. } | Step::Up { x, .. } => reads[x] += 1,
            Step::Concat { a, skip, .. } => {
                reads[a] += 1;
                reads[skip] += 1;
            }
        }
    }
    let mut ts = Vec::with_capacity(maps.len());
    for (m, r) in maps.iter().zip(&reads) {
        let n = b * m.c * m.r * m.r;
        ts.push(Tensor {
            buf: gpu.zeros("act", n)?,
            grad: gpu.zeros("dact", n)?,
            scratch: if *r > 1 { Some(gpu.zeros("dact_scratch", n)?) } else { None },
            written: false,
        });
    }
    Ok(ts)
}

/// What a body step's forward keeps for its backward.
// A few dozen, built once per model: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Saved {
    Res(ResBlockActs),
    Attn { stats: GroupNormStats, bufs: AttentionBuffers, n: Buffer, y: Buffer },
    Up(Buffer),
    None,
}

/// What encoding a body step reads: the device, the parameters, the batch, the activation
/// shapes and the noise embedding temb (B, E) with its gradient dtemb (B, E).
struct Body<'a> {
    gpu: &'a Gpu,
    p: &'a Params,
    b: usize,
    maps: &'a [Map],
    temb: &'a Buffer,
    dtemb: &'a Buffer,
}

impl Body<'_> {
    fn nchw(&self, i: usize) -> Nchw {
        Nchw::new(self.b, self.maps[i].c, self.maps[i].r, self.maps[i].r)
    }

    /// Encodes the forward of `st` and allocates what its backward reads.
    async fn forward(&self, st: Step, ts: &[Tensor], fwd: &mut Vec<Dispatch>) -> Result<Saved, GpuError> {
        let (gpu, p, b, maps) = (self.gpu, self.p, self.b, self.maps);
        Ok(match st {
            Step::Res { blk, x, out } => {
                let r = maps[x].r;
                let a = blk.acts(gpu, b, r, r)?;
                fwd.extend(blk.forward(gpu, p, &a, &ts[x].buf, self.temb, &ts[out].buf).await?);
                Saved::Res(a)
            }
            Step::Attn { norm, attn, x, out } => {
                let (n_el, hw) = (self.nchw(x).len(), maps[x].r * maps[x].r);
                let stats = norm.stats(gpu, b)?;
                let bufs = attn.buffers(gpu, b, hw)?;
                let (n, y) = (gpu.zeros("attn_in", n_el)?, gpu.zeros("attn_y", n_el)?);
                fwd.extend(norm.forward(gpu, p, &ts[x].buf, &n, &stats, b, hw).await?);
                // out = x + attn(n), the residual added by the output projection's pass.
                fwd.extend(attn.forward(gpu, p, &n, Some(&ts[x].buf), &ts[out].buf, &bufs).await?);
                Saved::Attn { stats, bufs, n, y }
            }
            Step::Down { x, out } => {
                fwd.push(resample::avgpool2x2_fwd(gpu, &ts[x].buf, &ts[out].buf, self.nchw(x)).await?);
                Saved::None
            }
            Step::Up { conv, x, out } => {
                let r = maps[out].r;
                let up = gpu.zeros("upsampled", self.nchw(out).len())?;
                fwd.push(resample::upsample2x_fwd(gpu, &ts[x].buf, &up, self.nchw(x)).await?);
                fwd.extend(conv.forward(gpu, p, &up, &ts[out].buf, b, r, r).await?);
                Saved::Up(up)
            }
            Step::Concat { a, skip, out } => {
                let (c1, c2, hw) = (maps[a].c, maps[skip].c, maps[a].r * maps[a].r);
                fwd.push(resample::concat_fwd(gpu, &ts[a].buf, &ts[skip].buf, &ts[out].buf, b, c1, c2, hw).await?);
                Saved::None
            }
        })
    }

    /// Encodes the backward of `st` from its output's gradient. dtemb is written by the first
    /// ResBlock of the backward (`mode` Write) and added to by the others.
    async fn backward(
        &self,
        st: Step,
        sv: &Saved,
        ts: &mut [Tensor],
        mode: &mut GradMode,
        bwd: &mut Vec<Dispatch>,
    ) -> Result<(), GpuError> {
        let (gpu, p, b, maps) = (self.gpu, self.p, self.b, self.maps);
        match (st, sv) {
            (Step::Res { blk, x, out }, Saved::Res(a)) => {
                let (dst, pend) = grad_dst(ts, x)?;
                let (xb, dy) = (&ts[x].buf, &ts[out].grad);
                bwd.extend(blk.backward(gpu, p, a, xb, self.temb, dy, &dst, self.dtemb, *mode).await?);
                finish(gpu, ts, pend, bwd).await?;
                *mode = GradMode::Add;
            }
            (Step::Attn { norm, attn, x, out }, Saved::Attn { stats, bufs, n, y }) => {
                // y (scratch the forward leaves unused) takes dn.
                let (n_el, hw) = (self.nchw(x).len(), maps[x].r * maps[x].r);
                let dy = ts[out].grad.clone();
                bwd.extend(attn.backward(gpu, p, n, &dy, Some(y), bufs).await?);
                let dxn = gpu.zeros("attn_dxn", n_el)?;
                bwd.extend(norm.backward(gpu, p, &ts[x].buf, y, stats, Some(&dxn), b, hw).await?);
                let (dst, pend) = grad_dst(ts, x)?;
                bwd.push(ew::add(gpu, &dy, &dxn, &dst, n_el).await?);
                finish(gpu, ts, pend, bwd).await?;
            }
            (Step::Down { x, out }, _) => {
                let (dst, pend) = grad_dst(ts, x)?;
                bwd.push(resample::avgpool2x2_bwd_input(gpu, &ts[out].grad, &dst, self.nchw(x)).await?);
                finish(gpu, ts, pend, bwd).await?;
            }
            (Step::Up { conv, x, out }, Saved::Up(up)) => {
                let r = maps[out].r;
                let dup = gpu.zeros("dupsampled", up.len)?;
                bwd.extend(conv.backward(gpu, p, up, &ts[out].grad, Some(&dup), b, r, r).await?);
                let (dst, pend) = grad_dst(ts, x)?;
                bwd.push(resample::upsample2x_bwd_input(gpu, &dup, &dst, self.nchw(x)).await?);
                finish(gpu, ts, pend, bwd).await?;
            }
            (Step::Concat { a, skip, out }, _) => {
                let (c1, c2, hw) = (maps[a].c, maps[skip].c, maps[a].r * maps[a].r);
                let (da, pa) = grad_dst(ts, a)?;
                let (ds, ps) = grad_dst(ts, skip)?;
                bwd.push(resample::concat_bwd(gpu, &ts[out].grad, &da, &ds, b, c1, c2, hw).await?);
                finish(gpu, ts, pa, bwd).await?;
                finish(gpu, ts, ps, bwd).await?;
            }
            _ => return Err(bad("internal: step and saved buffers disagree".into())),
        }
        Ok(())
    }
}

impl UNet {
    /// Builds the model for `batch` images with parameters initialised from `seed`. Refuses,
    /// before allocating, a config the attention layer cannot address or whose largest buffer
    /// exceeds the device's storage binding limit.
    pub async fn new(gpu: &Gpu, cfg: UNetConfig, batch: usize, seed: u64) -> Result<Self, GpuError> {
        if batch == 0 {
            return Err(bad("batch 0".into()));
        }
        let plan = plan(&cfg)?;
        let budget = budget(&plan, &cfg, batch)?;
        let limit = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size);
        let bytes = 4 * budget.largest as u64;
        if bytes > limit {
            return Err(GpuError::TooLarge { what: format!("unet {}", budget.largest_what), bytes, limit });
        }
        let Plan { description, layout, fc1, fc2, class_emb, conv_in, norm_out, conv_out, maps, steps } = plan;
        let p = Params::new(gpu, layout, seed)?;
        let b = batch;
        let (s, ch, e) = (cfg.image_size, cfg.channels, cfg.emb_dim());
        let z = |name: &str, n: usize| gpu.zeros(name, n);
        let (n_x, n_out) = (b * cfg.in_channels * s * s, b * cfg.out_channels * s * s);
        let (x, dx) = (z("x", n_x)?, z("dx", n_x)?);
        let (out, dout) = (z("out", n_out)?, z("dout", n_out)?);
        let t = z("t", b)?;
        // With "edm": the net reads x_in = a_in x and writes f; out = a_skip x + a_out f.
        let edm = match cfg.precond {
            Precond::Eps => None,
            Precond::Edm => Some(EdmBuffers {
                x_in: z("x_in", n_x)?,
                dx_in: z("dx_in", n_x)?,
                dx_skip: z("dx_skip", n_x)?,
                f: z("f", n_out)?,
                df: z("df", n_out)?,
            }),
        };
        // The net's own input, output and their gradients.
        let (net_x, net_dx, net_out, net_dout) = match &edm {
            None => (x.clone(), dx.clone(), out.clone(), dout.clone()),
            Some(m) => (m.x_in.clone(), m.dx_in.clone(), m.f.clone(), m.df.clone()),
        };
        let emb = z("emb", b * ch)?;
        let [e1, e1_act, temb, dtemb, de1] =
            [z("e1", b * e)?, z("e1_act", b * e)?, z("temb", b * e)?, z("dtemb", b * e)?, z("de1", b * e)?];
        // With labels: temb = temb_base + labels_onehot W^T (temb_class); dtemb reaches both terms.
        let class = match class_emb {
            Some(w) => {
                let k = cfg.num_classes;
                Some((w, z("labels_onehot", b * k)?, z("temb_base", b * e)?, z("temb_class", b * e)?))
            }
            None => None,
        };
        let mut ts = activations(gpu, &maps, &steps, b)?;
        let body = Body { gpu, p: &p, b, maps: &maps, temb: &temb, dtemb: &dtemb };

        // --- forward ---
        let mut fwd = vec![embedding::embedding_fwd(gpu, &t, &emb, b, ch).await?];
        fwd.extend(fc1.forward_silu(gpu, &p, &emb, &e1, &e1_act, b).await?);
        if let Some((w, onehot, base, cls)) = &class {
            let d = Dims::new(b, e, cfg.num_classes);
            fwd.extend(fc2.forward(gpu, &p, &e1_act, base, b).await?);
            fwd.push(matmul::matmul(gpu, Layout::NT, onehot, &p.value(*w)?, None, cls, d).await?);
            fwd.push(ew::add(gpu, base, cls, &temb, b * e).await?);
        } else {
            fwd.extend(fc2.forward(gpu, &p, &e1_act, &temb, b).await?);
        }
        if let Some(m) = &edm {
            fwd.push(embedding::precond_in(gpu, &t, &x, &m.x_in, b, n_x / b, SIGMA_DATA).await?);
        }
        fwd.extend(conv_in.forward(gpu, &p, &net_x, &ts[0].buf, b, s, s).await?);
        let mut saved = Vec::with_capacity(steps.len());
        for st in &steps {
            saved.push(body.forward(*st, &ts, &mut fwd).await?);
        }
        let last = maps.len() - 1;
        let n0 = body.nchw(last).len();
        let stats_out = norm_out.stats(gpu, b)?;
        let (oa, doa) = (z("out_act", n0)?, z("dout_act", n0)?);
        fwd.extend(norm_out.forward_silu(gpu, &p, &ts[last].buf, &oa, &stats_out, b, s * s).await?);
        fwd.extend(conv_out.forward(gpu, &p, &oa, &net_out, b, s, s).await?);
        if let Some(m) = &edm {
            fwd.push(embedding::precond_fwd(gpu, &t, &x, &m.f, &out, b, n_out / b, SIGMA_DATA).await?);
        }

        // --- backward (reverse order) ---
        let mut bwd = Vec::new();
        if let Some(m) = &edm {
            bwd.push(embedding::precond_bwd(gpu, &t, &dout, &m.df, &m.dx_skip, b, n_out / b, SIGMA_DATA).await?);
        }
        bwd.extend(conv_out.backward(gpu, &p, &oa, &net_dout, Some(&doa), b, s, s).await?);
        let (dst, pend) = grad_dst(&mut ts, last)?;
        bwd.extend(norm_out.backward_silu(gpu, &p, &ts[last].buf, &doa, &stats_out, &dst, b, s * s).await?);
        finish(gpu, &ts, pend, &mut bwd).await?;
        let mut mode = GradMode::Write;
        for (st, sv) in steps.iter().zip(&saved).rev() {
            body.backward(*st, sv, &mut ts, &mut mode, &mut bwd).await?;
        }
        bwd.extend(conv_in.backward(gpu, &p, &net_x, &ts[0].grad, Some(&net_dx), b, s, s).await?);
        if let Some(m) = &edm {
            // dx = a_in dx_in (the input scaling is its own backward) + the skip term's part.
            bwd.push(embedding::precond_in(gpu, &t, &m.dx_in, &dx, b, n_x / b, SIGMA_DATA).await?);
            bwd.push(ew::axpy(gpu, &m.dx_skip, &dx, n_x, 1.0).await?);
        }
        if let Some((w, onehot, _, _)) = &class {
            let d = Dims::new(b, e, cfg.num_classes);
            bwd.push(matmul::matmul_bwd_b(gpu, Layout::NT, &dtemb, onehot, &p.grad(*w)?, d).await?);
        }
        bwd.extend(fc2.backward_through_silu(gpu, &p, &e1_act, &dtemb, &de1, &e1, b).await?);
        bwd.extend(fc1.backward(gpu, &p, &emb, &de1, None, b).await?);

        let memory = 4 * budget.total;
        let labels_onehot = class.map(|(_, onehot, _, _)| onehot);
        Ok(Self {
            cfg,
            batch,
            params: p,
            x,
            t,
            out,
            dout,
            dx,
            labels_onehot,
            description,
            memory,
            forward: fwd,
            backward: bwd,
        })
    }

    /// Writes the one-hot rows of `labels` (one class index per image, B of them) into
    /// `labels_onehot`. Refuses an unconditional model, a wrong count and a label >= num_classes.
    pub fn write_labels(&self, gpu: &Gpu, labels: &[u32]) -> Result<(), GpuError> {
        let k = self.cfg.num_classes;
        let buf = self.labels_onehot.as_ref().ok_or_else(|| bad("labels given to an unconditional model".into()))?;
        if labels.len() != self.batch {
            return Err(bad(format!("{} labels for batch {}", labels.len(), self.batch)));
        }
        if let Some(l) = labels.iter().find(|&&l| l as usize >= k) {
            return Err(bad(format!("label {l} out of range: num_classes is {k}")));
        }
        let mut onehot = vec![0.0f32; self.batch * k];
        for (i, &l) in labels.iter().enumerate() {
            onehot[i * k + l as usize] = 1.0;
        }
        gpu.write(buf, &onehot);
        Ok(())
    }

    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        self.params.layout.count()
    }

    /// Forward FLOPs per image (one row), as `Block::flops` counts them; a training step costs
    /// about three times this per row (the backward computes two products per forward one).
    pub fn flops(&self) -> u64 {
        self.description.flops()
    }

    /// The blocks the model was built from.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// Bytes of every buffer the model allocated: parameters, gradients, activations and scratch.
    pub fn memory_bytes(&self) -> usize {
        self.memory
    }

    /// Submits the forward pass, and with `backward` the zeroing of the gradients and the
    /// backward pass (reading `dout`), in one command buffer.
    pub fn submit(&self, gpu: &Gpu, backward: bool) {
        super::submit(gpu, &self.params, &self.forward, backward.then_some(self.backward.as_slice()));
    }

    /// The prepared forward and backward dispatches, in encoding order (for profiles).
    pub fn dispatches(&self) -> (&[Dispatch], &[Dispatch]) {
        (&self.forward, &self.backward)
    }
}
