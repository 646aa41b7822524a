"""`jaxsr denoise` on the real confocal pair in ../shared/data/denoise/fmd_bpae_b (skipped when absent).

The FMD dataset (Zhang et al., CVPR 2019; BPAE nuclei, blue channel): one raw frame and the average of
50 frames of the same field (512 x 512, 8-bit scale). Each mode of the command line runs on the raw
frame exactly as a user would (the shipped 3Snet, and --self-supervised with its defaults, seed 0), and
its output is scored against the 50-frame average with scikit-image's pSNR and SSIM (data range 255),
next to the raw frame's own scores. Also reported: the fraction of the raw frame's intensity each output
keeps (the 3Snet learned AVG(ON) - AVG(OFF) and removes what does not switch) and the wall time.

Usage: python benchmarks/real_data_denoise.py [--out benchmarks/results/real_data_denoise.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jaxsr  # noqa: E402
from jaxsr.cli.main import main as cli  # noqa: E402
from jaxsr.io import read_image, write_json  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "denoise" / "fmd_bpae_b"


def score(x: np.ndarray, ref: np.ndarray, raw: np.ndarray) -> dict:
    return {"psnr_db": float(peak_signal_noise_ratio(ref, x, data_range=255)),
            "ssim": float(structural_similarity(ref, x, data_range=255)),
            "mean": float(x.mean()), "intensity_kept": float(x.sum() / raw.sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "real_data_denoise.json"))
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: {DATA} not present")
        return 0
    raw = read_image(DATA / "noisy.tif")[0].astype(np.float64)
    ref = read_image(DATA / "avg50.tif")[0].astype(np.float64)
    report = {"benchmark": "real_data_denoise", "jaxsr_version": jaxsr.__version__, "jax": jax.__version__,
              "device": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(), "data": str(DATA),
              "reference": "avg50.tif (50-frame average)", "raw_frame": score(raw, ref, raw)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("shipped_3snet", []), ("self_supervised", ["--self-supervised"])):
            out = os.path.join(tmp, f"{name}.tif")
            t0 = time.perf_counter()
            assert cli(["denoise", str(DATA / "noisy.tif"), "-o", out, *extra]) == 0
            wall = time.perf_counter() - t0
            report[name] = dict(score(read_image(out)[0].astype(np.float64), ref, raw), wall_s=wall,
                                command=" ".join(["jaxsr denoise noisy.tif -o OUT.tif", *extra]))
    for k in ("raw_frame", "shipped_3snet", "self_supervised"):
        r = report[k]
        print(f"{k:16s} pSNR {r['psnr_db']:.2f} dB  SSIM {r['ssim']:.3f}  mean {r['mean']:.2f}  "
              f"kept {100 * r['intensity_kept']:.0f} %" + (f"  {r['wall_s']:.0f} s" if "wall_s" in r else ""))
    write_json(args.out, report, overwrite=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
