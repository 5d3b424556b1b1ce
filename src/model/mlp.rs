//! The 2-D toy denoiser, close to the paper's 2-D net (math.md §5.1), with SiLU for GELU and a
//! learned embedding of a continuous noise input (math.md §9 pitfall 3), optionally wrapped in
//! EDM's preconditioning with σ_d = 1 (the default, math.md §1.4(b)). The forward and parameter
//! names that the PyTorch mirror copies are on `Mlp`.

use super::{config_text, ConfigJson};
use crate::gpu::{Buffer, Dispatch, Gpu, GpuError};
use crate::nn::params::Init;
use crate::nn::{Linear, ParamId, ParamLayout, Params};
use crate::ops::groupnorm::GroupNormShape;
use crate::ops::{elementwise as ew, embedding, groupnorm};

/// σ_d of the MLP's "edm" preconditioning: the toy sets are standardised. With σ_d = 1 the
/// network's input scaling a_in is 1, so the MLP reads x itself (reference/embedding.rs).
pub const SIGMA_DATA: f32 = 1.0;

/// How the network's output becomes ε̂ (math.md §1.4(b), §4.3); shared by the MLP and the UNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precond {
    /// The output is ε̂ (the plain ε-network of DDPM and the paper's toys).
    Eps,
    /// EDM's preconditioning in ε form: the network reads a_in·x and ε̂ = a_skip·x + a_out·f
    /// (reference/embedding.rs), with the model's σ_d: 1 for the MLP (standardised points),
    /// where it is ε̂ = sqrt(σ(−α))·x + sqrt(σ(α))·f, and 0.5 for the UNet (images in [−1, 1]).
    #[default]
    Edm,
}

impl Precond {
    /// The name in configs, flags and checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Eps => "eps",
            Self::Edm => "edm",
        }
    }

    /// Parses `name`'s text; the error lists the choices.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "eps" => Ok(Self::Eps),
            "edm" => Ok(Self::Edm),
            _ => Err(format!("unknown preconditioning {s:?}; expected eps or edm")),
        }
    }
}

/// Sizes of the MLP. One comment per field, the EDM way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpConfig {
    /// Data dimension D (2 for the toy sets).
    pub dim: usize,
    /// Hidden width W.
    pub width: usize,
    /// Residual blocks.
    pub blocks: usize,
    /// Sinusoidal features E of the noise input (even).
    pub emb_dim: usize,
    /// How the output becomes ε̂.
    pub precond: Precond,
}

impl MlpConfig {
    /// The architecture name stored in checkpoints.
    pub const ARCH: &'static str = "mlp";

    /// The config as the JSON text stored in checkpoints (`cdl.model_config`) and read by the
    /// PyTorch mirror.
    /// An "eps" network is written without the `precond` key, exactly as before the option
    /// existed, so earlier checkpoints (the page's shipped weights) still match their config.
    pub fn to_json(&self) -> String {
        let v =
            serde_json::json!({ "dim": self.dim, "width": self.width, "blocks": self.blocks, "emb_dim": self.emb_dim });
        config_text(v, self.precond)
    }

    /// Parses `to_json`'s text; the error names the missing or invalid field. A config without
    /// `precond` (written before the field existed) is an "eps" network.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v = ConfigJson::parse("MLP", text)?;
        let precond = v.precond()?;
        Ok(Self {
            dim: v.usize("dim")?,
            width: v.usize("width")?,
            blocks: v.usize("blocks")?,
            emb_dim: v.usize("emb_dim")?,
            precond,
        })
    }
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self { dim: 2, width: 128, blocks: 2, emb_dim: 128, precond: Precond::Edm }
    }
}

#[derive(Clone, Copy, Debug)]
struct Block {
    fc1: Linear,
    fc2: Linear,
    norm_weight: ParamId,
    norm_bias: ParamId,
}

/// The layout of the MLP's parameters (names, shapes, init), without allocating anything.
pub fn layout(cfg: MlpConfig) -> ParamLayout {
    build_layout(cfg).0
}

fn build_layout(cfg: MlpConfig) -> (ParamLayout, [Linear; 4], Vec<Block>) {
    let mut l = ParamLayout::default();
    let (w, e) = (cfg.width, cfg.emb_dim);
    let emb1 = Linear::new(&mut l, "emb.fc1", e, w);
    let emb2 = Linear::new(&mut l, "emb.fc2", w, w);
    let inp = Linear::new(&mut l, "inp", cfg.dim, w);
    let blocks = (0..cfg.blocks)
        .map(|i| Block {
            fc1: Linear::new(&mut l, &format!("blocks.{i}.fc1"), w, w),
            fc2: Linear::new(&mut l, &format!("blocks.{i}.fc2"), w, w),
            norm_weight: l.add(format!("blocks.{i}.norm.weight"), &[w], Init::Const(1.0)),
            norm_bias: l.add(format!("blocks.{i}.norm.bias"), &[w], Init::Const(0.0)),
        })
        .collect();
    let out = Linear::new(&mut l, "out", w, cfg.dim);
    (l, [emb1, emb2, inp, out], blocks)
}

/// Activations of one block, kept for backward. All (B, W) except mean, rstd (B,).
#[derive(Debug)]
struct BlockActs {
    h_in: Buffer,
    u: Buffer,
    a: Buffer,
    a_act: Buffer,
    s: Buffer,
    mean: Buffer,
    rstd: Buffer,
}

/// The MLP bound to one batch size: parameters, activations and prepared dispatches.
///
/// Width 128, 2 residual blocks h <- LayerNorm(h + W2 act(W1 (h + emb))) (math.md §5.1):
///
/// ```text
/// temb = emb.fc2(silu(emb.fc1(sinusoidal(t, E))))          t (B,): the noise input (e.g. alpha/8)
/// h    = inp(x)                                            x (B, D)
/// for each block i:  h = norm_i(h + fc2_i(silu(fc1_i(h + temb))))      norm = LayerNorm over W
/// f    = out(h)                                            (B, D)
/// eps  = f                                   with precond "eps": the network's output is eps
/// eps  = sqrt(σ(−α))·x + sqrt(σ(α))·f        with precond "edm", α = 8t (the default; EDM's
///                                            preconditioning with σ_d = 1)
/// ```
///
/// Why "edm" is the default: every block ends in a LayerNorm, so f is bounded whatever x is.
/// A bounded ε̂ cannot follow z out of the trained range: in DDPM ancestral sampling a sample
/// whose path drifts past |z| ≈ 4 at high noise sees ε̂ stuck near its bound, so x is never
/// pulled back and grows through the chain of 1/sqrt(1−β_t) factors (|x| = 35 from
/// x_T = (2.1, 0.4) on moons). With "edm" the Gaussian term sqrt(σ(−α))·x carries the
/// magnitude and the network learns the correction.
///
/// Parameter names (checkpoint names): `emb.fc1.{weight,bias}`, `emb.fc2.*`, `inp.*`,
/// `blocks.{i}.fc1.*`, `blocks.{i}.fc2.*`, `blocks.{i}.norm.{weight,bias}`, `out.*`; Linear
/// weights are (out, in) as in PyTorch. LayerNorm is GroupNorm with one group over (W, 1, 1).
/// The preconditioning has no parameters; it is part of the model config.
#[derive(Debug)]
pub struct Mlp {
    pub cfg: MlpConfig,
    pub batch: usize,
    pub params: Params,
    /// Input points. (B, D)
    pub x: Buffer,
    /// Noise input of each row. (B,)
    pub t: Buffer,
    /// Output (eps prediction). (B, D)
    pub out: Buffer,
    /// Upstream gradient of `out`, written by the loss head. (B, D)
    pub dout: Buffer,
    /// Gradient with respect to `x`. (B, D)
    pub dx: Buffer,
    /// Bytes of device memory this model allocated: parameters, gradients, inputs, outputs and
    /// activations (uniform buffers of a few bytes per dispatch not counted).
    pub memory_bytes: u64,
    forward: Vec<Dispatch>,
    backward: Vec<Dispatch>,
}

impl Mlp {
    /// Builds the model for `batch` rows with parameters initialised from `seed`.
    pub async fn new(gpu: &Gpu, cfg: MlpConfig, batch: usize, seed: u64) -> Result<Self, GpuError> {
        if cfg.emb_dim == 0 || !cfg.emb_dim.is_multiple_of(2) || cfg.width == 0 || cfg.dim == 0 || batch == 0 {
            return Err(GpuError::Shape(format!("invalid MLP config {cfg:?} for batch {batch}")));
        }
        let (layout, [emb1, emb2, inp, out_l], blocks) = build_layout(cfg);
        // Refuse what the adapter cannot bind before allocating anything.
        gpu.check_fits("MLP parameters", layout.flat_len())?;
        gpu.check_fits("MLP activations", batch * cfg.width.max(cfg.emb_dim))?;
        let p = Params::new(gpu, layout, seed)?;
        let bytes = std::cell::Cell::new(8 * p.layout.flat_len() as u64);
        let (b, w, d, e) = (batch, cfg.width, cfg.dim, cfg.emb_dim);
        let z = |name: &str, n: usize| {
            bytes.set(bytes.get() + 4 * n.max(1) as u64);
            gpu.zeros(name, n)
        };
        let (x, t, out, dout, dx) = (z("x", b * d)?, z("t", b)?, z("out", b * d)?, z("dout", b * d)?, z("dx", b * d)?);
        let (emb, e1, e1_act, temb) = (z("emb", b * e)?, z("e1", b * w)?, z("e1_act", b * w)?, z("temb", b * w)?);
        let ln = GroupNormShape::new(b, w, 1, 1);
        let n = b * w;

        // --- forward ---
        let mut fwd = vec![embedding::embedding_fwd(gpu, &t, &emb, b, e).await?];
        fwd.extend(emb1.forward_silu(gpu, &p, &emb, &e1, &e1_act, b).await?);
        fwd.extend(emb2.forward(gpu, &p, &e1_act, &temb, b).await?);
        let mut h = z("h0", n)?;
        fwd.extend(inp.forward(gpu, &p, &x, &h, b).await?);
        let mut acts = Vec::new();
        for (i, blk) in blocks.iter().enumerate() {
            let ba = BlockActs {
                h_in: h.clone(),
                u: z("u", n)?,
                a: z("a", n)?,
                a_act: z("a_act", n)?,
                s: z("s", n)?,
                mean: z("mean", b)?,
                rstd: z("rstd", b)?,
            };
            let c = z("c", n)?;
            let h_next = z(&format!("h{}", i + 1), n)?;
            fwd.push(ew::add(gpu, &ba.h_in, &temb, &ba.u, n).await?);
            fwd.extend(blk.fc1.forward_silu(gpu, &p, &ba.u, &ba.a, &ba.a_act, b).await?);
            fwd.extend(blk.fc2.forward(gpu, &p, &ba.a_act, &c, b).await?);
            fwd.push(ew::add(gpu, &ba.h_in, &c, &ba.s, n).await?);
            let (gw, gb) = (p.value(blk.norm_weight)?, p.value(blk.norm_bias)?);
            fwd.push(groupnorm::groupnorm_fwd(gpu, &ba.s, &gw, &gb, &h_next, &ba.mean, &ba.rstd, ln).await?);
            acts.push(ba);
            h = h_next;
        }
        // With "edm" the output layer writes f and the preconditioning turns it into ε̂.
        let (f, df, dx_skip) = match cfg.precond {
            Precond::Eps => (out.clone(), dout.clone(), None),
            Precond::Edm => (z("f", b * d)?, z("df", b * d)?, Some(z("dx_skip", b * d)?)),
        };
        fwd.extend(out_l.forward(gpu, &p, &h, &f, b).await?);
        if cfg.precond == Precond::Edm {
            fwd.push(embedding::precond_fwd(gpu, &t, &x, &f, &out, b, d, SIGMA_DATA).await?);
        }

        // --- backward (reverse order) ---
        let mut bwd = Vec::new();
        if let Some(dxs) = &dx_skip {
            bwd.push(embedding::precond_bwd(gpu, &t, &dout, &df, dxs, b, d, SIGMA_DATA).await?);
        }
        let mut dh = z("dh", n)?;
        bwd.extend(out_l.backward(gpu, &p, &h, &df, Some(&dh), b).await?);
        let dtemb = z("dtemb", n)?;
        for (i, (blk, ba)) in blocks.iter().zip(&acts).enumerate().rev() {
            let (ds, da, du, dh_prev) = (z("ds", n)?, z("da", n)?, z("du", n)?, z("dh", n)?);
            let gw = p.value(blk.norm_weight)?;
            bwd.push(groupnorm::groupnorm_bwd_input(gpu, &dh, &ba.s, &ba.mean, &ba.rstd, &gw, &ds, ln).await?);
            let (dgw, dgb) = (p.grad(blk.norm_weight)?, p.grad(blk.norm_bias)?);
            bwd.push(groupnorm::groupnorm_bwd_params(gpu, &dh, &ba.s, &ba.mean, &ba.rstd, &dgw, &dgb, ln).await?);
            bwd.extend(blk.fc2.backward_through_silu(gpu, &p, &ba.a_act, &ds, &da, &ba.a, b).await?);
            bwd.extend(blk.fc1.backward(gpu, &p, &ba.u, &da, Some(&du), b).await?);
            // h_in feeds both the residual sum and u = h_in + temb.
            bwd.push(ew::add(gpu, &ds, &du, &dh_prev, n).await?);
            if i + 1 == blocks.len() {
                bwd.push(ew::scale(gpu, &du, &dtemb, n, 1.0).await?);
            } else {
                bwd.push(ew::axpy(gpu, &du, &dtemb, n, 1.0).await?);
            }
            dh = dh_prev;
        }
        bwd.extend(inp.backward(gpu, &p, &x, &dh, Some(&dx), b).await?);
        if let Some(dxs) = &dx_skip {
            // x also feeds ε̂ directly through the preconditioning's skip term.
            bwd.push(ew::axpy(gpu, dxs, &dx, b * d, 1.0).await?);
        }
        let de1 = z("de1", n)?;
        if blocks.is_empty() {
            // No block reads temb: its gradient is zero (dtemb was never written).
            bwd.push(ew::scale(gpu, &dh, &dtemb, n, 0.0).await?);
        }
        bwd.extend(emb2.backward_through_silu(gpu, &p, &e1_act, &dtemb, &de1, &e1, b).await?);
        bwd.extend(emb1.backward(gpu, &p, &emb, &de1, None, b).await?);

        let memory_bytes = bytes.get();
        Ok(Self { cfg, batch, params: p, x, t, out, dout, dx, memory_bytes, forward: fwd, backward: bwd })
    }

    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        self.params.layout.count()
    }

    /// Submits the forward pass, and with `backward` the zeroing of the gradients and the
    /// backward pass (reading `dout`), in one command buffer.
    pub fn submit(&self, gpu: &Gpu, backward: bool) {
        super::submit(gpu, &self.params, &self.forward, backward.then_some(&self.backward[..]));
    }

    /// The prepared forward and backward dispatches, in encoding order (for profiles).
    pub fn dispatches(&self) -> (&[Dispatch], &[Dispatch]) {
        (&self.forward, &self.backward)
    }
}
