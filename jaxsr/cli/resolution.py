"""Measure the resolution of an image: Fourier ring correlation and decorrelation analysis.

With two images (independent acquisitions of the same field) the classical
two-image FRC is computed; with one image, the single-image FRC
(checkerboard split) and image decorrelation analysis. Results in nm.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from jaxsr.cli._common import pixel_size_from, positive_float, require_input

HELP = "FRC / decorrelation resolution of an image (nm)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="2D TIFF/OME-TIFF image (y, x); a 3D stack is averaged over its leading axes")
    p.add_argument("second", nargs="?", help="optional second, independent image of the same field (two-image FRC)")
    p.add_argument("--pixel-size", type=positive_float, default=None,
                   help="pixel size in nm (default: from the file's metadata)")
    p.add_argument("--threshold", choices=["1/7", "half-bit"], default="1/7", help="FRC threshold (default 1/7)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def _load(path: str, flag: str):
    from jaxsr.io import read_image

    require_input(path, flag)
    data, meta = read_image(path)
    data = np.asarray(data, dtype=np.float64)
    if data.ndim < 2:
        raise ValueError(f"{flag}: expected a 2D image, got shape {data.shape}")
    if data.ndim > 2:
        data = data.reshape((-1,) + data.shape[-2:]).mean(axis=0)
    return data, meta


def run(args: argparse.Namespace) -> int:
    from jaxsr.metrics import decorrelation, frc, frc_single

    image, meta = _load(args.image, "IMAGE")
    pixel = pixel_size_from(args.pixel_size, meta.pixel_size_nm)
    out: dict[str, float | None] = {"pixel_size_nm": pixel}
    if args.second:
        second, _ = _load(args.second, "SECOND")
        if second.shape != image.shape:
            raise ValueError(f"SECOND: shape {second.shape} differs from IMAGE's {image.shape}")
        res = frc(image, second, pixel_size_nm=pixel, threshold=args.threshold)
        out["frc_nm"] = _finite(res.resolution_nm)
    else:
        res = frc_single(image, pixel_size_nm=pixel, threshold=args.threshold)
        out["frc_single_nm"] = _finite(res.resolution_nm)
    dec = decorrelation(image, pixel_size_nm=pixel)
    out["decorrelation_nm"] = _finite(dec.resolution_nm)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name, value in out.items():
            label = name.replace("_nm", "").replace("_", " ")
            text = "not reached (no crossing)" if value is None else f"{value:.1f} nm"
            print(f"{label:>22}: {text}")
    return 0


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None
