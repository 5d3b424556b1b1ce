"""pytorch-fid's own Inception-v3 feature network (InceptionV3([3]): 2048-d pool3 features,
bilinear resize to 299x299, inputs mapped from [0, 1] to [-1, 1], the FID blocks), built without
a download, for the mirror test of our WGSL network (tests/native/mirror_inception.rs).

  make-weights OUT.pth [SEED]      a random state dict with pytorch-fid's names and shapes: seeded
                                   He-normal convolutions, random BatchNorm scales and shifts, and
                                   running statistics calibrated on random images (train-mode
                                   passes with cumulative averages, then eval) so that every
                                   activation stays O(1) as with the trained weights.
  features WEIGHTS.pth IN.npz OUT.npz
                                   IN.npz: `images` (n, 3, h, w) float32 in [0, 1], optionally a
                                   second set `images_b`. OUT.npz: `features` (n, 2048) float32
                                   (`features_b` likewise) and, with two sets, `fd`: pytorch-fid's
                                   calculate_frechet_distance on the np.mean / np.cov moments of
                                   the two feature sets, as its calculate_activation_statistics.

pytorch-fid's fid_inception_v3() downloads its weights through load_state_dict_from_url; this
script replaces that one function, so pytorch-fid's own classes, block layout and forward run.
`features` hands it WEIGHTS.pth exactly as the download would, so with the real weights file it
is pytorch-fid. Needs torch, torchvision, pytorch-fid, numpy, scipy.
"""

import sys

import numpy as np
import torch
import torch.nn as nn

import pytorch_fid.inception as pfi
from pytorch_fid.fid_score import calculate_frechet_distance

USAGE = (
    "usage: python tools/inception_mirror.py make-weights OUT.pth [SEED]\n"
    "       python tools/inception_mirror.py features WEIGHTS.pth IN.npz OUT.npz"
)
# Random images of the BatchNorm calibration, and their side (resized to 299 by the network): the
# side of the tests' images. Statistics depend on it through the resize's smoothness: weights
# calibrated at 64 px give features of up to ~60 on 32 px noise, against ~2 at the calibrated side.
CALIBRATION_IMAGES = 8
CALIBRATION_SIDE = 32


def fail(msg):
    print("error: " + " ".join(str(msg).split()), file=sys.stderr)
    sys.exit(2)


def build(state_dict):
    """pytorch-fid's InceptionV3([3]) with `state_dict` served in place of the download (pytorch-fid
    loads it strictly, as the download); None keeps the freshly initialised parameters. Returns
    (InceptionV3, the Inception3 backbone it was cut from, whose state dict has the file's names)."""
    keep = object()
    backbone = []
    original_url, original_load = pfi.load_state_dict_from_url, nn.Module.load_state_dict

    def from_url(*args, **kwargs):
        return keep if state_dict is None else state_dict

    def load(module, sd, *args, **kwargs):
        backbone.append(module)
        if sd is keep:
            return None
        return original_load(module, sd, *args, **kwargs)

    pfi.load_state_dict_from_url, nn.Module.load_state_dict = from_url, load
    try:
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
    except RuntimeError as e:  # load_state_dict's missing / unexpected keys and shape mismatches
        fail(f"the weights do not fit pytorch-fid's Inception: {e}")
    finally:
        pfi.load_state_dict_from_url, nn.Module.load_state_dict = original_url, original_load
    if len(backbone) != 1:
        fail("internal: pytorch-fid did not load its backbone exactly once")
    return model, backbone[0]


def make_weights(out, seed):
    torch.manual_seed(seed)
    model, backbone = build(None)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in backbone.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
            bn.reset_running_stats()
            bn.momentum = None  # running statistics: the plain average over the calibration passes
        model.train()
        gen = torch.Generator().manual_seed(seed + 1)
        images = torch.rand(CALIBRATION_IMAGES, 3, CALIBRATION_SIDE, CALIBRATION_SIDE, generator=gen)
        for batch in images.split(4):
            model(batch)
        for bn in bns:
            bn.momentum = 0.1
    model.eval()
    # The backbone's names (Conv2d_1a_3x3.conv.weight, Mixed_5b.branch1x1.bn.running_var, fc.weight,
    # ...), as in pytorch-fid's weights file.
    state = {k: t.clone() for k, t in backbone.state_dict().items()}
    torch.save(state, out)
    n = sum(t.numel() for k, t in state.items() if not k.endswith("num_batches_tracked"))
    print(f"{out}: {len(state)} tensors, {n} values, seed {seed}")


def features(weights, src, dst):
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        fail(f"{weights}: not a PyTorch weights file ({type(e).__name__}: {e})")
    model, _ = build(state)
    model.eval()
    f = np.load(src)
    out = {}
    for key, name in (("images", "features"), ("images_b", "features_b")):
        if key not in f.files:
            continue
        x = torch.from_numpy(np.ascontiguousarray(f[key], dtype=np.float32))
        if x.ndim != 4 or x.shape[1] != 3:
            fail(f"{src}: {key} has shape {tuple(x.shape)}, expected (n, 3, h, w)")
        with torch.no_grad():
            y = model(x)[0].squeeze(3).squeeze(2)
        out[name] = y.numpy().astype(np.float32)
    if "features" not in out:
        fail(f"{src}: no `images` array")
    if "features_b" in out:
        a, b = out["features"].astype(np.float64), out["features_b"].astype(np.float64)
        mu1, s1 = np.mean(a, axis=0), np.cov(a, rowvar=False)
        mu2, s2 = np.mean(b, axis=0), np.cov(b, rowvar=False)
        out["fd"] = np.float64(calculate_frechet_distance(mu1, s1, mu2, s2))
    np.savez(dst, **out)
    print(f"{dst}: features {out['features'].shape}" + (f", fd {out['fd']:.9g}" if "fd" in out else ""))


def main():
    args = sys.argv[1:]
    if args[:1] == ["make-weights"] and len(args) in (2, 3):
        make_weights(args[1], int(args[2]) if len(args) == 3 else 0)
    elif args[:1] == ["features"] and len(args) == 4:
        features(args[1], args[2], args[3])
    else:
        print(USAGE, file=sys.stderr)
        sys.exit(0 if args[:1] in (["-h"], ["--help"]) else 2)


if __name__ == "__main__":
    main()
