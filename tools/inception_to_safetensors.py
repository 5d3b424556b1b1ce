"""Converts pytorch-fid's Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth, a plain
PyTorch state dict) into the safetensors file that `cdl fid --inception` reads: every float tensor
as contiguous f32 under its state-dict name, BatchNorm's `num_batches_tracked` counters left out.

Usage: python tools/inception_to_safetensors.py IN.pth OUT.safetensors
Needs torch and safetensors (scripts/test installs both into the mirror venv).
"""

import sys

USAGE = "usage: python tools/inception_to_safetensors.py IN.pth OUT.safetensors"


def fail(msg):
    print("error: " + " ".join(str(msg).split()), file=sys.stderr)
    sys.exit(2)


def convert(src, dst):
    import torch
    from safetensors.torch import save_file

    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        fail(f"{src}: no such file")
    except Exception as e:  # torch raises many kinds for a file that is not a checkpoint
        fail(f"{src}: not a PyTorch weights file ({type(e).__name__}: {e})")
    if not isinstance(state, dict) or not state:
        fail(f"{src}: not a state dict (holds a {type(state).__name__}, expected a dict of tensors)")
    out = {}
    for name, t in state.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            fail(f"{src}: not a state dict (entry {name!r} is a {type(t).__name__}, not a tensor)")
        if name.endswith("num_batches_tracked"):
            continue
        if not t.is_floating_point():
            fail(f"{src}: tensor {name} has dtype {t.dtype}, expected a float tensor")
        out[name] = t.detach().to(torch.float32).contiguous()
    if not out:
        fail(f"{src}: the state dict holds no float tensors")
    try:
        save_file(out, dst)
    except OSError as e:
        fail(f"cannot write {dst}: {e}")
    print(f"{dst}: {len(out)} tensors, {sum(t.numel() for t in out.values())} parameters")


def main():
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        sys.exit(0 if len(sys.argv) == 2 and sys.argv[1] in ("-h", "--help") else 2)
    convert(sys.argv[1], sys.argv[2])


if __name__ == "__main__":
    main()
