"""3D Richardson-Lucy on the real and benchmark data in ../shared/data/decon (skipped when absent).

- flowdec_bead: a real widefield image of a large fluorescent bead (the EPFL "Fluorescent Bead"
  dataset) with its measured PSF (64^3). The deconvolved bead must be more compact than the input,
  especially in z (half-maximum widths, see profiles_fwhm).
- flowdec_bars: the EPFL "hollow bars" benchmark (blurred, noisy, with ground truth): pSNR and mean
  per-slice SSIM against the ground truth versus iterations, for plain and Biggs-Andrews RL, with
  scikit-image's richardson_lucy (same PSF, same iterations) side by side.

Deconvolved volumes have an arbitrary scale, so they are compared with the ground truth (scaled to
[0, 1]) after the least-squares affine fit a x + b, as in jaxsr/deconv/experiment.py.

Usage: python benchmarks/real_data_deconv.py [--out benchmarks/results/real_data_deconv.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxsr
from jaxsr.deconv import richardson_lucy
from jaxsr.deconv.experiment import _affine_fit
from jaxsr.io import read_image, write_json
from jaxsr.metrics import psnr, ssim

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "shared", "data", "decon")


def half_max_width(profile):
    """Width (samples) of the region above half the maximum, edges linearly interpolated."""
    p = np.asarray(profile, dtype=np.float64)
    p = p - p.min()
    half = 0.5 * p.max()
    above = np.nonzero(p >= half)[0]
    lo, hi = above[0], above[-1]
    left = lo - (p[lo] - half) / (p[lo] - p[lo - 1]) if lo > 0 else float(lo)
    right = hi + (p[hi] - half) / (p[hi] - p[hi + 1]) if hi < p.size - 1 else float(hi)
    return float(right - left)


def profiles_fwhm(vol):
    """Half-maximum widths (voxels) of the bead: lateral ones from its projections onto y and x, the
    axial one from the z profile through its lateral centre (3x3 average); a z projection is useless
    in widefield, where every plane carries the same total light."""
    vol = np.asarray(vol, dtype=np.float64)
    proj_y, proj_x = vol.sum(axis=(0, 2)), vol.sum(axis=(0, 1))
    yc, xc = int(np.argmax(proj_y)), int(np.argmax(proj_x))
    z_profile = vol[:, yc - 1:yc + 2, xc - 1:xc + 2].mean(axis=(1, 2))
    return {"z": half_max_width(z_profile), "y": half_max_width(proj_y), "x": half_max_width(proj_x)}


def bead(iterations):
    data, _ = read_image(os.path.join(DATA, "flowdec_bead", "data.tif"))
    psf, _ = read_image(os.path.join(DATA, "flowdec_bead", "kernel.tif"))
    background = float(np.percentile(data, 1))
    t0 = time.perf_counter()
    out = np.asarray(richardson_lucy(data, psf / psf.sum(), num_iter=iterations, background=background,
                                     accelerate=True))
    elapsed = time.perf_counter() - t0
    before, after = profiles_fwhm(data - background), profiles_fwhm(out)
    return {"iterations": iterations, "accelerate": True, "background": background, "seconds": elapsed,
            "fwhm_voxels_before": before, "fwhm_voxels_after": after,
            "fwhm_ratio_after_over_before": {k: after[k] / before[k] for k in before},
            "min_over_max_after": float(out.min() / out.max())}


def mean_ssim(vol, ref):
    return float(np.mean([float(ssim(jnp.asarray(v, jnp.float32), jnp.asarray(r, jnp.float32), data_range=1.0))
                          for v, r in zip(vol, ref)]))


def score(vol, truth_unit):
    fit = _affine_fit(vol, truth_unit)
    # Volume pSNR: one MSE over every voxel (the (z*y, x) reshape makes psnr see one 2D image).
    flat = (-1, truth_unit.shape[-1])
    p = float(psnr(jnp.asarray(fit.reshape(flat)), jnp.asarray(truth_unit.reshape(flat)), data_range=1.0))
    return p, mean_ssim(fit, truth_unit)


def bars(iteration_list):
    from skimage.restoration import richardson_lucy as sk_rl

    data, _ = read_image(os.path.join(DATA, "flowdec_bars", "data.tif"))
    psf, _ = read_image(os.path.join(DATA, "flowdec_bars", "kernel.tif"))
    truth, _ = read_image(os.path.join(DATA, "flowdec_bars", "actual.tif"))
    psf = psf / psf.sum()
    truth_unit = (truth - truth.min()) / (truth.max() - truth.min())
    rows = [{"method": "input", "iterations": 0, **dict(zip(("psnr_db", "ssim"), score(data, truth_unit)))}]
    scale = float(data.max())
    for n in iteration_list:
        for name, kw in (("jaxsr", {}), ("jaxsr_accelerated", {"accelerate": True})):
            out = np.asarray(richardson_lucy(data, psf, num_iter=n, **kw))
            rows.append({"method": name, "iterations": n, **dict(zip(("psnr_db", "ssim"), score(out, truth_unit)))})
        # scikit-image works on [0, 1] data (clip=True clips the estimate to [-1, 1]); give it data / max.
        sk = sk_rl(data / scale, psf, num_iter=n, clip=False)
        rows.append({"method": "skimage", "iterations": n, **dict(zip(("psnr_db", "ssim"), score(sk, truth_unit)))})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(HERE, "results", "real_data_deconv.json"))
    parser.add_argument("--bead-iterations", type=int, default=50)
    args = parser.parse_args(argv)
    if not os.path.isdir(DATA):
        print("shared/data/decon is absent: nothing to do")
        return 0
    b = bead(args.bead_iterations)
    print(f"flowdec bead, {b['iterations']} accelerated RL iterations ({b['seconds']:.1f} s):")
    for ax in ("z", "y", "x"):
        print(f"  FWHM {ax}: {b['fwhm_voxels_before'][ax]:.2f} -> {b['fwhm_voxels_after'][ax]:.2f} voxels "
              f"(x{b['fwhm_ratio_after_over_before'][ax]:.2f})")
    rows = bars([10, 25, 50, 100])
    print("\nEPFL hollow bars (vs ground truth, affine-fitted):")
    print(f"  {'method':<19}{'iter':>5}{'pSNR':>8}{'SSIM':>7}")
    for r in rows:
        print(f"  {r['method']:<19}{r['iterations']:>5}{r['psnr_db']:>8.2f}{r['ssim']:>7.3f}")
    write_json(args.out, {"benchmark": "real_data_deconv", "jaxsr_version": jaxsr.__version__,
                          "jax_version": jax.__version__, "device": str(jax.devices()[0].device_kind),
                          "bead": b, "bars": rows}, overwrite=True)
    print(f"\nwrote {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
