"""The Fréchet distance as pytorch-fid computes it and KID as torch-fidelity computes it, on given
features, for tests/native/eval_fd.rs (which runs `$CDL_PYTHON tools/fid_reference.py IN.npz OUT.npz [STATS.npz]`).

IN.npz (written by the Rust test): x (n, d) and y (m, d) float64 features; kid_x and kid_y
(subsets, s), the row indices of each KID subset (as float64), drawn on the Rust side so that
both sides average the same subsets. STATS.npz, optional: a (mu, sigma) .npz written by Rust,
loaded the way pytorch-fid loads reference statistics.

OUT.npz: mu1, sigma1 (np.mean / np.cov(rowvar=False) of x), fd (pytorch-fid's
calculate_frechet_distance on the moments of x and y), fd_offset (its eps branch, taken
unconditionally), kid_mean, kid_std (torch-fidelity's mmd2 with polynomial_kernel, unbiased,
np.mean / np.std over the subsets), fd_stats (fd with the loaded stats in place of x's).
OUT.npz is written with np.savez, so reading it also checks our reader on numpy's own files.

Needs numpy and scipy (scripts/test installs them into the mirror venv). The formulas follow
pytorch-fid (src/pytorch_fid/fid_score.py) and torch-fidelity (torch_fidelity/metric_kid.py).
"""

import sys

import numpy as np
from scipy import linalg


def sqrtm(a):
    # scipy < 1.16 returns (root, error estimate) with disp=False; newer versions deprecate disp.
    r = linalg.sqrtm(a)
    return r[0] if isinstance(r, tuple) else r


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6, force_offset=False):
    """pytorch-fid's calculate_frechet_distance: sqrtm of the (non-symmetric) product, eps on
    the diagonals when it is not finite, the real part when the imaginary one is negligible."""
    diff = mu1 - mu2
    covmean = sqrtm(sigma1.dot(sigma2))
    if force_offset or not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError("Imaginary component {}".format(np.max(np.abs(covmean.imag))))
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def polynomial_kernel(x, y, degree=3, gamma=None, coef0=1):
    """torch-fidelity's kernel: (x·y·gamma + coef0)^degree with gamma = 1/d."""
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    return (np.matmul(x, y.T) * gamma + coef0) ** degree


def mmd2_unbiased(k_xx, k_xy, k_yy):
    """torch-fidelity's mmd2(mmd_est="unbiased"): within-set sums without the diagonal over
    m(m-1), the cross sum with it over m²."""
    m = k_xx.shape[0]
    kt_xx = k_xx.sum() - np.trace(k_xx)
    kt_yy = k_yy.sum() - np.trace(k_yy)
    return (kt_xx + kt_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m)


def moments(x):
    return np.mean(x, axis=0), np.cov(x, rowvar=False)


def main():
    src, dst = sys.argv[1], sys.argv[2]
    f = np.load(src)
    x, y = f["x"], f["y"]
    mu1, sigma1 = moments(x)
    mu2, sigma2 = moments(y)
    out = {
        "mu1": mu1,
        "sigma1": sigma1,
        "fd": np.float64(frechet_distance(mu1, sigma1, mu2, sigma2)),
        "fd_offset": np.float64(frechet_distance(mu1, sigma1, mu2, sigma2, force_offset=True)),
    }
    if "kid_x" in f.files:
        ix, iy = f["kid_x"].astype(np.int64), f["kid_y"].astype(np.int64)
        mmds = []
        for a, b in zip(ix, iy):
            xs, ys = x[a], y[b]
            mmds.append(mmd2_unbiased(polynomial_kernel(xs, xs), polynomial_kernel(xs, ys), polynomial_kernel(ys, ys)))
        out["kid_mean"] = np.float64(np.mean(mmds))
        out["kid_std"] = np.float64(np.std(mmds))
    if len(sys.argv) > 3:
        s = np.load(sys.argv[3])
        m, c = s["mu"][:], s["sigma"][:]
        out["fd_stats"] = np.float64(frechet_distance(m, c, mu2, sigma2))
    np.savez(dst, **out)
    print("fd {:.12g} fd_offset {:.12g} kid {}".format(out["fd"], out["fd_offset"], out.get("kid_mean")))


if __name__ == "__main__":
    main()
