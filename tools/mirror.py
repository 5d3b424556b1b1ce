#!/usr/bin/env python3
"""PyTorch mirrors of CDL's models: the autograd oracle of tests/native/mirror_*.rs.

A plain `torch.nn` copy of each model with the same parameter names as the Rust layout (the
contract is the header of the model's Rust file), driven from files only: it reads a CDL
checkpoint (safetensors, metadata `cdl.model_config`) and an inputs file, computes the loss and
every gradient with autograd, takes a few `torch.optim.Adam` steps, and writes the results as a
CDL checkpoint that the Rust test reads back. No pyo3: Python is only ever a child process.

    python tools/mirror.py mlp --checkpoint C --inputs I --out O [--lr 1e-3 --steps 5]
                               [--dtype float32|float64]

mlp (src/model/mlp.rs):
    temb = emb.fc2(silu(emb.fc1(sinusoidal(t, E))))
    h    = inp(x)
    for each block i:  h = norm_i(h + fc2_i(silu(fc1_i(h + temb))))     norm: LayerNorm(W, eps=1e-5)
    f    = out(h)
    eps  = f                                      precond "eps" (and configs without the key)
    eps  = sqrt(sigmoid(-a)) x + sqrt(sigmoid(a)) f, a = 8 t     precond "edm" (EDM, sigma_d = 1)
  sinusoidal: half = E/2, freq_j = exp(-ln(10000) j / half), [cos(t freq), sin(t freq)].
  model config (metadata cdl.model_config): {"dim":D,"width":W,"blocks":N,"emb_dim":E[,"precond":P]}.
  inputs file tensors: x (B, D), t (B,), target (B, D).

    python tools/mirror.py unet --checkpoint C --inputs I --out O [--lr 1e-3 --steps 5]
                                [--dtype float32|float64]

unet (src/model/unet.rs; the doc of `UNet` there is the contract, copied in `UNet.forward`):
    ch = channels, E = 4 ch, c_l = ch mult[l], K = num_classes,
    G(c) = max(1, min(norm_groups, c / 4)) GroupNorm groups (must divide c), eps 1e-5;
    temb = emb.fc2(silu(emb.fc1(sinusoidal(t, ch)))), plus class_emb(labels_onehot) when K > 0
    (class_emb: nn.Linear(K, E, bias=False), weight (E, K)); conv_in 3x3; per level ResBlocks (+ attention
    at the attn_resolutions), avgpool 2x2 between levels, skips; mid res0, attn, res1; per level
    (reversed) blocks_per_level + 1 ResBlocks on cat([h, skip]) (+ attention), nearest 2x upsample
    and up.{l}.conv; out = conv_out(silu(norm_out(h))).
  precond "edm" (EDM's EDMPrecond, sigma_d = 0.5; configs without the key are "eps"): with the
    net above as F, a = 8 t, sigma = exp(-a / 2), x_sigma = x sqrt(1 + sigma^2),
    c_in = 1 / sqrt(sigma^2 + sigma_d^2), c_skip = sigma_d^2 / (sigma^2 + sigma_d^2),
    c_out = sigma sigma_d / sqrt(sigma^2 + sigma_d^2):  f = F(c_in x_sigma, t),
    D = c_skip x_sigma - c_out f, eps = (x_sigma - D) / sigma (EDM's textbook form in sigma,
    coefficients in float64; the Rust side uses the equivalent eps form of reference/embedding.rs).
  ResBlock (src/nn/resblock.rs): h = conv1(silu(norm1(x))); scale = emb_scale(silu(temb)),
    shift = emb_shift(silu(temb)); h = norm2(h) (1 + scale) + shift; h = conv2(silu(h));
    out = skip(x) + h (skip a 1x1 conv when Cin != Cout).
  Attention (src/nn/attention.rs): qkv (3C, C) and proj (C, C) 1x1 projections (stored 2-D, so
    nn.Linear over the tokens); q, k, v = the three C-channel blocks, head h channels h D..(h+1) D;
    attn = softmax_keys(q^T k / sqrt(D)); out = v attn^T; y = proj(out); the block is
    h + attn(attn_norm(h)).
  model config: UNetConfig::to_json: {"image_size","in_channels","out_channels","channels","mult",
    "blocks_per_level","attn_resolutions","heads","num_classes","norm_groups"[,"precond"]} (the last
    three may be missing: 0, 32 and "eps").
  inputs file tensors: x (B, Cin, S, S), t (B,), target (B, Cout, S, S), and when num_classes > 0
    labels_onehot (B, K) (one-hot rows; a constant input, no gradient).

Output tensors (all float32, whatever --dtype):
  out (model output shape); loss (); grad.<param>; grad.x (x's shape);
  losses_after_steps (steps + 1,): the loss before any step, then after each Adam step;
  final.<param>: the parameters after `steps` Adam steps.
Output metadata: cdl.* keys of a CDL checkpoint (arch "<model>-mirror"), plus param_count,
torch_version, dtype, lr, steps.
"""

import argparse
import json
import math
import sys

import torch
from torch import nn
from safetensors.torch import load_file, safe_open, save_file

MAX_PERIOD = 10000.0
LAYERNORM_EPS = 1e-5
GROUPNORM_EPS = 1e-5  # nn::GroupNorm's default, PyTorch's
MODEL_PREFIX = "model."  # accepted (and stripped) on checkpoint tensor names


def sinusoidal(t, emb_dim):
    """[cos(t freq_j), sin(t freq_j)], freq_j = MAX_PERIOD^(-j/half), computed in float64."""
    half = emb_dim // 2
    j = torch.arange(half, dtype=torch.float64)
    freq = torch.exp(-math.log(MAX_PERIOD) * j / half).to(t.dtype)
    args = t[:, None] * freq[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class Embedding(nn.Module):
    def __init__(self, emb_dim, width):
        super().__init__()
        self.emb_dim = emb_dim
        self.fc1 = nn.Linear(emb_dim, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, t):
        return self.fc2(nn.functional.silu(self.fc1(sinusoidal(t, self.emb_dim))))


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=LAYERNORM_EPS)

    def forward(self, h, temb):
        return self.norm(h + self.fc2(nn.functional.silu(self.fc1(h + temb))))


ALPHA_PER_T = 8.0  # the networks' noise input is alpha / 8


def precond_edm(x, t, f):
    """EDM's preconditioning with sigma_d = 1 in eps form: sqrt(sigmoid(-a)) x + sqrt(sigmoid(a)) f."""
    a = (ALPHA_PER_T * t)[:, None]
    return torch.sigmoid(-a).sqrt() * x + torch.sigmoid(a).sqrt() * f


class Mlp(nn.Module):
    def __init__(self, dim, width, blocks, emb_dim, precond="eps"):
        super().__init__()
        if emb_dim <= 0 or emb_dim % 2 != 0:
            raise ValueError(f"emb_dim must be positive and even, got {emb_dim}")
        if precond not in ("eps", "edm"):
            raise ValueError(f"unknown precond {precond!r}; expected eps or edm")
        self.precond = precond
        self.emb = Embedding(emb_dim, width)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList([Block(width) for _ in range(blocks)])
        self.out = nn.Linear(width, dim)

    def forward(self, x, t):
        temb = self.emb(t)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, temb)
        f = self.out(h)
        return precond_edm(x, t, f) if self.precond == "edm" else f


def groups(c, norm_groups=32):
    """GroupNorm groups for c channels: min(norm_groups, c / 4), at least 1 (UNetConfig::groups)."""
    g = max(1, min(norm_groups, c // 4))
    if c % g != 0:
        raise ValueError(f"{g} GroupNorm groups do not divide {c} channels (norm_groups {norm_groups})")
    return g


def group_norm(c, norm_groups=32):
    return nn.GroupNorm(groups(c, norm_groups), c, eps=GROUPNORM_EPS)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim, norm_groups=32):
        super().__init__()
        self.norm1 = group_norm(cin, norm_groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb_scale = nn.Linear(emb_dim, cout)
        self.emb_shift = nn.Linear(emb_dim, cout)
        self.norm2 = group_norm(cout, norm_groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        silu = nn.functional.silu
        h = self.conv1(silu(self.norm1(x)))
        e = silu(temb)
        scale = self.emb_scale(e)[:, :, None, None]
        shift = self.emb_shift(e)[:, :, None, None]
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(silu(h))
        return (x if self.skip is None else self.skip(x)) + h


class Attention(nn.Module):
    """The attention of src/nn/attention.rs without its norm and residual: y = proj(attn(qkv(x)))."""

    def __init__(self, channels, heads):
        super().__init__()
        if heads <= 0 or channels % heads != 0:
            raise ValueError(f"{heads} heads do not divide {channels} channels")
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels)  # weight (3C, C), rows [q; k; v]
        self.proj = nn.Linear(channels, channels)

    def forward(self, x):
        b, c, hh, ww = x.shape
        t, d = hh * ww, c // self.heads
        tokens = x.reshape(b, c, t).transpose(1, 2)  # (B, T, C)
        q, k, v = self.qkv(tokens).split(c, dim=2)  # (B, T, C) each

        def per_head(z):
            return z.reshape(b, t, self.heads, d).transpose(1, 2)  # (B, heads, T, D)

        q, k, v = per_head(q), per_head(k), per_head(v)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)  # (B, heads, Tq, Tk)
        out = (attn @ v).transpose(1, 2).reshape(b, t, c)  # (B, T, C), channel h D + d
        return self.proj(out).transpose(1, 2).reshape(b, c, hh, ww)


UNET_SIGMA_DATA = 0.5  # src/model/unet.rs SIGMA_DATA: images in [-1, 1]


def edm_coeffs(t, sigma_data, dtype):
    """(input scale, skip weight, output weight) per row, shaped (B, 1, 1, 1), for the eps form of
    EDM's preconditioning: F's input c_in x_sigma = x (c_in xs); eps = (x_sigma - D) / sigma =
    x (1 - c_skip) xs / sigma + f c_out / sigma with D = c_skip x_sigma - c_out f. Computed from
    EDM's c_in, c_skip, c_out in float64 (1 - c_skip cancels at small sigma), then cast."""
    a = ALPHA_PER_T * t.to(torch.float64)
    sigma = torch.exp(-a / 2)
    sd2 = sigma_data * sigma_data
    c_in = 1 / torch.sqrt(sigma**2 + sd2)
    c_skip = sd2 / (sigma**2 + sd2)
    c_out = sigma * sigma_data / torch.sqrt(sigma**2 + sd2)
    xs = torch.sqrt(1 + sigma**2)
    coeffs = (c_in * xs, (1 - c_skip) * xs / sigma, c_out / sigma)
    return tuple(c.to(dtype)[:, None, None, None] for c in coeffs)


class UNet(nn.Module):
    """src/model/unet.rs with its parameter names (nested ModuleDicts keyed "0", "1", ...)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        ch, mult, nb = cfg["channels"], cfg["mult"], cfg["blocks_per_level"]
        self.ch, self.levels, self.nb = ch, len(mult), nb
        self.attn_res = set(cfg["attn_resolutions"])
        if ch <= 0 or ch % 2 != 0:
            raise ValueError(f"channels must be positive and even, got {ch}")
        e = 4 * ch
        size, heads = cfg["image_size"], cfg["heads"]
        self.num_classes = cfg.get("num_classes", 0)
        self.precond = cfg.get("precond", "eps")
        if self.precond not in ("eps", "edm"):
            raise ValueError(f"unknown precond {self.precond!r}; expected eps or edm")
        if self.precond == "edm" and cfg["in_channels"] != cfg["out_channels"]:
            raise ValueError("precond edm needs in_channels == out_channels")
        ng = cfg.get("norm_groups", 32)
        if ng <= 0:
            raise ValueError(f"norm_groups must be positive, got {ng}")
        if size % (1 << (self.levels - 1)) != 0:
            raise ValueError(f"image size {size} not divisible by 2^{self.levels - 1}")
        self.emb = Embedding(ch, e)
        if self.num_classes > 0:
            self.class_emb = nn.Linear(self.num_classes, e, bias=False)  # weight (E, K)
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch, 3, padding=1)

        def block(cin, cout, r):
            m = nn.ModuleDict({"res": ResBlock(cin, cout, e, ng)})
            if r in self.attn_res:
                m["attn_norm"] = group_norm(cout, ng)
                m["attn"] = Attention(cout, heads)
            return m

        skip_ch = [ch]
        c, r = ch, size
        self.down = nn.ModuleDict()
        for lv, m in enumerate(mult):
            level = nn.ModuleDict()
            for i in range(nb):
                level[str(i)] = block(c, ch * m, r)
                c = ch * m
                skip_ch.append(c)
            if lv + 1 < self.levels:
                r //= 2
                skip_ch.append(c)
            self.down[str(lv)] = level
        self.mid = nn.ModuleDict({
            "res0": ResBlock(c, c, e, ng),
            "attn_norm": group_norm(c, ng),
            "attn": Attention(c, heads),
            "res1": ResBlock(c, c, e, ng),
        })
        self.up = nn.ModuleDict()
        for lv in reversed(range(self.levels)):
            level = nn.ModuleDict()
            for i in range(nb + 1):
                level[str(i)] = block(c + skip_ch.pop(), ch * mult[lv], r)
                c = ch * mult[lv]
            if lv > 0:
                level["conv"] = nn.Conv2d(c, c, 3, padding=1)
                r *= 2
            self.up[str(lv)] = level
        self.norm_out = group_norm(c, ng)
        self.conv_out = nn.Conv2d(c, cfg["out_channels"], 3, padding=1)

    @staticmethod
    def apply_block(m, h, temb):
        h = m["res"](h, temb)
        if "attn" in m:
            h = h + m["attn"](m["attn_norm"](h))
        return h

    def forward(self, x, t, labels_onehot=None):
        if self.precond == "eps":
            return self.net(x, t, labels_onehot)
        a_in, a_skip, a_out = edm_coeffs(t, UNET_SIGMA_DATA, x.dtype)
        return a_skip * x + a_out * self.net(a_in * x, t, labels_onehot)

    def net(self, x, t, labels_onehot=None):
        """F: the network without preconditioning."""
        silu = nn.functional.silu
        temb = self.emb(t)
        if self.num_classes > 0:
            if labels_onehot is None or tuple(labels_onehot.shape) != (x.shape[0], self.num_classes):
                shape = None if labels_onehot is None else tuple(labels_onehot.shape)
                raise ValueError(f"labels_onehot must be ({x.shape[0]}, {self.num_classes}), got {shape}")
            temb = temb + self.class_emb(labels_onehot)
        h = self.conv_in(x)
        skips = [h]
        for lv in range(self.levels):
            for i in range(self.nb):
                h = self.apply_block(self.down[str(lv)][str(i)], h, temb)
                skips.append(h)
            if lv + 1 < self.levels:
                h = nn.functional.avg_pool2d(h, 2)
                skips.append(h)
        h = self.mid["res0"](h, temb)
        h = h + self.mid["attn"](self.mid["attn_norm"](h))
        h = self.mid["res1"](h, temb)
        for lv in reversed(range(self.levels)):
            level = self.up[str(lv)]
            for i in range(self.nb + 1):
                h = self.apply_block(level[str(i)], torch.cat([h, skips.pop()], dim=1), temb)
            if lv > 0:
                h = level["conv"](nn.functional.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(silu(self.norm_out(h)))


def read_config(path):
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if "cdl.model_config" not in meta:
        sys.exit(f"mirror.py: {path}: no metadata key cdl.model_config")
    return meta, json.loads(meta["cdl.model_config"])


def load_params(model, path, dtype):
    """Loads every parameter of `model` from the checkpoint; names must match exactly."""
    tensors = {(k[len(MODEL_PREFIX):] if k.startswith(MODEL_PREFIX) else k): v for k, v in load_file(path).items()}
    own = dict(model.named_parameters())
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        sys.exit(f"mirror.py: checkpoint/model name mismatch: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for name, p in own.items():
            src = tensors[name]
            if tuple(src.shape) != tuple(p.shape):
                sys.exit(f"mirror.py: {name}: checkpoint shape {tuple(src.shape)}, model {tuple(p.shape)}")
            p.copy_(src.to(dtype))


def run_model(args):
    """Forward, MSE loss, autograd backward and `args.steps` Adam steps of the `args.model` mirror."""
    dtype = getattr(torch, args.dtype)
    meta, cfg = read_config(args.checkpoint)
    model = build(args.model, cfg).to(dtype)
    load_params(model, args.checkpoint, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch parameter count: {n_params}")

    inputs = load_file(args.inputs)
    x = inputs["x"].to(dtype).requires_grad_(True)
    t = inputs["t"].to(dtype)
    target = inputs["target"].to(dtype)
    # The UNet's class labels (one-hot rows), when the config has num_classes > 0.
    extra = ()
    if args.model == "unet" and cfg.get("num_classes", 0) > 0:
        if "labels_onehot" not in inputs:
            sys.exit(f"mirror.py: {args.inputs}: no labels_onehot for a class-conditional UNet")
        extra = (inputs["labels_onehot"].to(dtype),)

    def mse(out):
        return ((out - target) ** 2).mean()

    # Forward and backward at the initial parameters.
    out = model(x, t, *extra)
    loss = mse(out)
    loss.backward()
    results = {"out": out.detach(), "loss": loss.detach().reshape(())}
    for name, p in model.named_parameters():
        results[f"grad.{name}"] = p.grad.detach().clone()
    results["grad.x"] = x.grad.detach().clone()

    # Adam steps; the loss is recomputed (and the gradient taken) at each new point.
    x = x.detach()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    losses = [loss.item()]
    for k in range(args.steps):
        opt.step()
        opt.zero_grad()
        loss = mse(model(x, t, *extra))
        losses.append(loss.item())
        if k + 1 < args.steps:
            loss.backward()
    results["losses_after_steps"] = torch.tensor(losses, dtype=torch.float64)
    for name, p in model.named_parameters():
        results[f"final.{name}"] = p.detach().clone()

    out_meta = {
        "cdl.format_version": "1",
        "cdl.arch": f"{args.model}-mirror",
        "cdl.step": str(args.steps),
        "cdl.model_config": meta["cdl.model_config"],
        "param_count": str(n_params),
        "torch_version": torch.__version__,
        "dtype": args.dtype,
        "lr": repr(args.lr),
        "steps": str(args.steps),
    }
    save_file({k: v.to(torch.float32).contiguous() for k, v in results.items()}, args.out, metadata=out_meta)
    print(f"loss {losses[0]:.8e} -> {losses[-1]:.8e} after {args.steps} Adam steps (lr {args.lr}, {args.dtype})")


def build(arch, cfg):
    """A freshly initialised mirror model of `arch` ("mlp" or "unet") from its config dict."""
    if arch == "mlp":
        return Mlp(cfg["dim"], cfg["width"], cfg["blocks"], cfg["emb_dim"], cfg.get("precond", "eps"))
    if arch == "unet":
        return UNet(cfg)
    sys.exit(f"mirror.py: unknown architecture {arch!r}")


def bench(args):
    """Times the training step cdl bench model times (forward, MSE head, backward, Adam) on the
    CPU (or --device cuda, synchronised around each step) and prints one JSON line: the median
    over --steps after --warmup steps."""
    import time

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("mirror.py: bench: --device cuda, but torch sees no CUDA device")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    cfg = json.loads(args.config)
    model = build(args.arch, cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    extra = ()
    if args.arch == "mlp":
        x = torch.randn(args.batch, cfg["dim"])
        t = torch.randn(args.batch)
    elif args.arch == "unet":
        x = torch.randn(args.batch, cfg["in_channels"], cfg["image_size"], cfg["image_size"])
        t = torch.randn(args.batch)
        k = cfg.get("num_classes", 0)
        if k > 0:
            extra = (nn.functional.one_hot(torch.randint(k, (args.batch,)), k).float(),)
    else:
        sys.exit(f"mirror.py: bench: unknown architecture {args.arch!r}")
    x, t, extra = x.to(dev), t.to(dev), tuple(e.to(dev) for e in extra)
    with torch.no_grad():
        target = torch.randn_like(model(x, t, *extra))
    times = []
    for k in range(args.warmup + args.steps):
        sync()
        start = time.perf_counter()
        opt.zero_grad()
        loss = ((model(x, t, *extra) - target) ** 2).mean()
        loss.backward()
        opt.step()
        sync()
        if k >= args.warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    print(json.dumps({
        "ms_per_step": 1e3 * times[len(times) // 2],
        "param_count": sum(p.numel() for p in model.parameters()),
        "threads": args.threads,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="model", required=True)
    bn = sub.add_parser("bench", help="time one training step of a mirror model on the CPU (JSON on stdout)")
    bn.add_argument("--arch", required=True, choices=["mlp", "unet"])
    bn.add_argument("--config", required=True, help="model config JSON, as stored in checkpoints")
    bn.add_argument("--batch", type=int, required=True)
    bn.add_argument("--steps", type=int, default=5)
    bn.add_argument("--warmup", type=int, default=1)
    bn.add_argument("--threads", type=int, default=2)
    bn.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    for name, help_, shapes in [
        ("mlp", "the 2-D MLP of src/model/mlp.rs", "x (B, D), t (B,), target (B, D)"),
        ("unet", "the UNet of src/model/unet.rs",
         "x (B, Cin, S, S), t (B,), target (B, Cout, S, S) [, labels_onehot (B, K)]"),
    ]:
        m = sub.add_parser(name, help=help_)
        m.add_argument("--checkpoint", required=True, help="CDL checkpoint (safetensors) with the initial parameters")
        m.add_argument("--inputs", required=True, help=f"safetensors with {shapes}")
        m.add_argument("--out", required=True, help="output safetensors")
        m.add_argument("--lr", type=float, default=1e-3)
        m.add_argument("--steps", type=int, default=5)
        m.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.model == "bench":
        bench(args)
        return
    torch.set_num_threads(1)  # one summation order, run to run
    run_model(args)


if __name__ == "__main__":
    main()
