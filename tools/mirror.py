#!/usr/bin/env python3
"""PyTorch mirrors of CDL's models: the autograd oracle of tests/mirror_*.rs.

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
    out  = out(h)
  sinusoidal: half = E/2, freq_j = exp(-ln(10000) j / half), [cos(t freq), sin(t freq)].
  model config (metadata cdl.model_config): {"dim":D,"width":W,"blocks":N,"emb_dim":E}.
  inputs file tensors: x (B, D), t (B,), target (B, D).

Output tensors (all float32, whatever --dtype):
  out (B, D); loss (); grad.<param>; grad.x (B, D);
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


class Mlp(nn.Module):
    def __init__(self, dim, width, blocks, emb_dim):
        super().__init__()
        if emb_dim <= 0 or emb_dim % 2 != 0:
            raise ValueError(f"emb_dim must be positive and even, got {emb_dim}")
        self.emb = Embedding(emb_dim, width)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList([Block(width) for _ in range(blocks)])
        self.out = nn.Linear(width, dim)

    def forward(self, x, t):
        temb = self.emb(t)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)


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


def run_mlp(args):
    dtype = getattr(torch, args.dtype)
    meta, cfg = read_config(args.checkpoint)
    model = Mlp(cfg["dim"], cfg["width"], cfg["blocks"], cfg["emb_dim"]).to(dtype)
    load_params(model, args.checkpoint, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch parameter count: {n_params}")

    inputs = load_file(args.inputs)
    x = inputs["x"].to(dtype).requires_grad_(True)
    t = inputs["t"].to(dtype)
    target = inputs["target"].to(dtype)

    def mse(out):
        return ((out - target) ** 2).mean()

    # Forward and backward at the initial parameters.
    out = model(x, t)
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
        loss = mse(model(x, t))
        losses.append(loss.item())
        if k + 1 < args.steps:
            loss.backward()
    results["losses_after_steps"] = torch.tensor(losses, dtype=torch.float64)
    for name, p in model.named_parameters():
        results[f"final.{name}"] = p.detach().clone()

    out_meta = {
        "cdl.format_version": "1",
        "cdl.arch": "mlp-mirror",
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
    """A freshly initialised mirror model of `arch` ("mlp") from its config dict."""
    if arch == "mlp":
        return Mlp(cfg["dim"], cfg["width"], cfg["blocks"], cfg["emb_dim"])
    sys.exit(f"mirror.py: unknown architecture {arch!r}")


def bench(args):
    """Times the training step cdl bench model times (forward, MSE head, backward, Adam) on the
    CPU and prints one JSON line: the median over --steps after --warmup steps."""
    import time

    torch.set_num_threads(args.threads)
    cfg = json.loads(args.config)
    model = build(args.arch, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    if args.arch == "mlp":
        x = torch.randn(args.batch, cfg["dim"])
        t = torch.randn(args.batch)
    target = torch.randn_like(x)
    times = []
    for k in range(args.warmup + args.steps):
        start = time.perf_counter()
        opt.zero_grad()
        loss = ((model(x, t) - target) ** 2).mean()
        loss.backward()
        opt.step()
        if k >= args.warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    print(json.dumps({
        "ms_per_step": 1e3 * times[len(times) // 2],
        "param_count": sum(p.numel() for p in model.parameters()),
        "threads": args.threads,
        "torch": torch.__version__,
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="model", required=True)
    bn = sub.add_parser("bench", help="time one training step of a mirror model on the CPU (JSON on stdout)")
    bn.add_argument("--arch", required=True, choices=["mlp"])
    bn.add_argument("--config", required=True, help="model config JSON, as stored in checkpoints")
    bn.add_argument("--batch", type=int, required=True)
    bn.add_argument("--steps", type=int, default=5)
    bn.add_argument("--warmup", type=int, default=1)
    bn.add_argument("--threads", type=int, default=2)
    m = sub.add_parser("mlp", help="the 2-D MLP of src/model/mlp.rs")
    m.add_argument("--checkpoint", required=True, help="CDL checkpoint (safetensors) with the initial parameters")
    m.add_argument("--inputs", required=True, help="safetensors with x (B, D), t (B,), target (B, D)")
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
    if args.model == "mlp":
        run_mlp(args)


if __name__ == "__main__":
    main()
