#!/usr/bin/env python3
"""A plain PyTorch trainer of CDL's models: the independent reference `cdl bench quality` measures
`cdl train` against (issue: equal sample quality at equal budgets).

It trains the mirror of src/model/mlp.rs or src/model/unet.rs (tools/mirror.py: same network, same
parameter names) with the recipe `cdl train` runs, written from math.md (`docs/math.md`)
and torch's own building blocks, never from CDL's Rust code:

- losses: ddpm (t ~ U{0..999} of Ho's schedule, plain ε-MSE summed over the coordinates, §4.1),
  itd (truncated-logistic log-SNR with importance weights, §1.5 and §2.2) and cdl (ITD + the
  contrastive loss with K anchors, M points, paired draws and Σ/B normalisation, §3.4);
- the network's noise input is α/8 (math.md §8);
- torch.optim.Adam, linear learning-rate warm-up, an EMA with the (1+s)/(10+s) warm-up,
  optional global-norm clipping (torch.nn.utils.clip_grad_norm_);
- mini-batches from a fresh random permutation every epoch.

Then it draws samples with DDPM ancestral sampling (math.md §6.1: variance β_t, no noise on the last
step) from the EMA weights, in float64, and writes one safetensors file holding the samples and
the trained weights under CDL's checkpoint names (`model.*`, `ema.*`), so `cdl sample` can read the
same weights.

    python tools/reference_train.py --data D.safetensors --arch mlp|unet --config JSON \
        --loss ddpm|itd|cdl --steps N --out O.safetensors [--n 2000 --sample-steps 1000]
        [--levels=MU,S,C --zeta=MU,S,C]

D holds `x`: (N, dim) points or (N, C, S, S) images, already standardised as `cdl train` sees them.
For itd and cdl, `--levels mu,s,c` and `--zeta mu,s,c` give the logistics of α and ζ (`cdl bench
quality` passes the ones `cdl train` resolved); without them, the authors' ranges (§1.5).
Output tensors: `samples` (n, ...), `model.<param>`, `ema.<param>`; metadata: the CDL checkpoint
keys, the settings and the training loss of the first and the last step.
"""

import argparse
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mirror  # noqa: E402  (the models)

T_DDPM = 1000


def ddpm_alpha_bar(dtype=torch.float64):
    """ᾱ_t of Ho's linear schedule, β_t = linspace(1e-4, 0.02, 1000) (math.md §1.2)."""
    beta = torch.linspace(1e-4, 0.02, T_DDPM, dtype=torch.float64)
    return torch.cumprod(1.0 - beta, 0).to(dtype)


def logit(p):
    return torch.log(p) - torch.log1p(-p)


class Logistic:
    """Truncated logistic over log-SNR (math.md §1.5): α = μ + s·logit(u), u ~ U(σ(−c), σ(c)), with
    the importance weight w = s·tanh(c/2)/(σ(r)σ(−r)), r = (α−μ)/s."""

    def __init__(self, mu, s, c):
        self.mu, self.s, self.c = mu, s, c

    def sample(self, shape, gen):
        lo, hi = torch.sigmoid(torch.tensor(-self.c, dtype=torch.float64)), torch.sigmoid(
            torch.tensor(self.c, dtype=torch.float64))
        u = lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)
        alpha = self.mu + self.s * logit(u)
        r = (alpha - self.mu) / self.s
        w = self.s * math.tanh(self.c / 2) / (torch.sigmoid(r) * torch.sigmoid(-r))
        return alpha, w


def logistic_arg(text):
    """"μ,s,c" -> Logistic."""
    try:
        mu, s, c = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers mu,s,c, got {text!r}")
    if not (s > 0 and c > 0):
        raise argparse.ArgumentTypeError(f"scale and clip must be positive, got {text!r}")
    return Logistic(mu, s, c)


def integration_range(x, arch):
    """The authors' (μ, s, c) without `--levels`: for 2-D points μ = −mean ln var_i, s = 3, c = 3
    (math.md §1.5); for images math.md's CIFAR constants. `cdl bench quality` always passes the
    levels `cdl train` used, which are wider (they cover the samplers' range)."""
    if arch == "mlp":
        var = x.double().var(0, unbiased=False).clamp_min(1e-12)
        return Logistic(-torch.log(var).mean().item(), 3.0, 3.0)
    return Logistic(6.2614, 3.0976, 4.0)


def expand(v, like):
    """(B,) -> broadcastable over like's trailing dims."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def noisy(x, alpha, eps):
    """x_α = sqrt(σ(α)) x + sqrt(σ(−α)) ε (math.md §1.1)."""
    return expand(torch.sigmoid(alpha).sqrt(), x) * x + expand(torch.sigmoid(-alpha).sqrt(), x) * eps


def sq_err(a, b):
    return ((a - b) ** 2).flatten(1).sum(1)


def net_eps(model, z, alpha):
    return model(z, (alpha / 8.0).to(z.dtype))


def loss_fn(model, x, args, q, gen, alpha_bar_logsnr):
    b = x.shape[0]
    if args.loss == "ddpm":
        t = torch.randint(0, T_DDPM, (b,), generator=gen)
        alpha = alpha_bar_logsnr[t]
        eps = torch.randn(x.shape, generator=gen)
        err = sq_err(eps, net_eps(model, noisy(x, alpha, eps).float(), alpha))
        return err.mean()
    # ITD (the standard loss of itd and cdl): ½·mean(w·(mse − mmse_G)); the offset has no gradient.
    alpha, w = q.sample((b,), gen)
    eps = torch.randn(x.shape, generator=gen)
    err = sq_err(eps, net_eps(model, noisy(x, alpha, eps).float(), alpha))
    loss = 0.5 * (w.float() * err).mean()
    if args.loss == "itd":
        return loss
    # CDL (math.md §3.4), paired draws, ζ from --zeta (`cdl bench quality` passes cdl train's: the
    # authors' toy logistic for points, the CIFAR one for images), else the integration logistic.
    k, m = args.anchors, args.points
    zeta, _ = (args.zeta or q).sample((k,), gen)
    lab = torch.where(torch.rand(k, generator=gen) < 0.5, -1.0, 1.0).double()
    xa = x[:k]
    y = torch.where(expand(lab == -1, xa), noisy(xa, zeta, torch.randn(xa.shape, generator=gen)), xa)
    a, wa = q.sample((k, m), gen)
    e = torch.randn((k, m) + tuple(x.shape[1:]), generator=gen)
    ya = y[:, None].expand(k, m, *x.shape[1:]).reshape(k * m, *x.shape[1:])
    ef = e.reshape(k * m, *x.shape[1:])
    big = noisy(ya, a.reshape(-1), ef).float()
    ap = -torch.logsumexp(torch.stack([-a, -zeta[:, None].expand_as(a), -a - zeta[:, None]]), 0)
    cf = torch.exp(0.5 * (torch.nn.functional.logsigmoid(-a) - torch.nn.functional.logsigmoid(-ap)))
    out = net_eps(model, torch.cat([big, big]), torch.cat([a.reshape(-1), ap.reshape(-1)]))
    e_p, e_q = out[: k * m], out[k * m:] * expand(cf.reshape(-1).float(), out[k * m:])
    gap = (sq_err(ef, e_q) - sq_err(ef, e_p)).reshape(k, m)
    f = 0.5 * (wa.float() * gap).mean(1)
    return loss + args.lambda_cdl * torch.nn.functional.softplus(-lab.float() * f).sum() / b


@torch.no_grad()
def ddpm_sample(model, n, shape, steps, gen):
    """DDPM ancestral sampling (math.md §6.1) over the `steps`-step respacing of Ho's schedule
    (ᾱ at round(i·999/(steps−1))), variance β_t, no noise on the last step; float64 state."""
    ab_full = ddpm_alpha_bar()
    ts = [(i * 999 + (steps - 1) // 2) // (steps - 1) for i in range(steps)] if steps < T_DDPM else range(T_DDPM)
    ab = ab_full[list(ts)]
    x = torch.randn((n,) + tuple(shape), generator=gen, dtype=torch.float64)
    for i in reversed(range(len(ab))):
        ab_prev = ab[i - 1] if i > 0 else torch.tensor(1.0, dtype=torch.float64)
        beta = 1 - ab[i] / ab_prev
        alpha = logit(ab[i]).expand(n)
        eps = net_eps(model, x.float(), alpha).double()
        x = (x - beta / (1 - ab[i]).sqrt() * eps) / (1 - beta).sqrt()
        if i > 0:
            x = x + beta.sqrt() * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="safetensors with x: (N, dim) or (N, C, S, S), standardised")
    ap.add_argument("--arch", choices=["mlp", "unet"], required=True)
    ap.add_argument("--config", required=True, help="model config JSON, as stored in CDL checkpoints")
    ap.add_argument("--loss", choices=["ddpm", "itd", "cdl"], default="ddpm")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=0, help="linear learning-rate warm-up steps")
    ap.add_argument("--ema", type=float, default=0.0, help="EMA decay with (1+s)/(10+s) warm-up; 0: none")
    ap.add_argument("--clip", type=float, default=0.0, help="global gradient-norm clip; 0: none")
    ap.add_argument("--anchors", type=int, default=2)
    ap.add_argument("--points", type=int, default=32)
    ap.add_argument("--lambda-cdl", type=float, default=1.0)
    ap.add_argument("--levels", type=logistic_arg, help="ITD and CDL: the α logistic μ,s,c (default: the authors')")
    ap.add_argument("--zeta", type=logistic_arg, help="CDL: the ζ logistic μ,s,c (default: the α logistic)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=2000, help="samples to draw")
    ap.add_argument("--sample-steps", type=int, default=1000, help="DDPM sampling steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    cfg = json.loads(args.config)
    model = mirror.build(args.arch, cfg)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x_all = load_file(args.data)["x"].float()
    q = args.levels or integration_range(x_all, args.arch)
    logsnr = logit(ddpm_alpha_bar())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    n, perm, pos = x_all.shape[0], None, 0
    first, last = float("nan"), float("nan")
    for step in range(args.steps):
        if perm is None or pos + args.batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        x = x_all[perm[pos:pos + args.batch]].double()
        pos += args.batch
        for g in opt.param_groups:
            g["lr"] = args.lr * (min(1.0, (step + 1) / args.warmup) if args.warmup > 0 else 1.0)
        loss = loss_fn(model, x, args, q, gen, logsnr)
        opt.zero_grad()
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(decay).add_(v, alpha=1 - decay)
        last = loss.item()
        if step == 0:
            first = last
        if not math.isfinite(last):
            sys.exit(f"reference_train.py: non-finite loss at step {step}")
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(ema)
    model.eval()
    samples = ddpm_sample(model, args.n, x_all.shape[1:], args.sample_steps, gen)
    out = {"samples": samples.float()}
    out.update({f"model.{k}": v.float().contiguous() for k, v in trained.items()})
    out.update({f"ema.{k}": v.float().contiguous() for k, v in ema.items()})
    meta = {
        "cdl.format_version": "1",
        "cdl.arch": args.arch,
        "cdl.step": str(args.steps),
        "cdl.model_config": args.config,
        "reference": "tools/reference_train.py",
        "torch_version": torch.__version__,
        "settings": json.dumps({k: (vars(v) if isinstance(v, Logistic) else v)
                                for k, v in vars(args).items() if k not in ("data", "out")}),
        "first_loss": repr(first),
        "final_loss": repr(last),
    }
    save_file(out, args.out, metadata=meta)


if __name__ == "__main__":
    main()
