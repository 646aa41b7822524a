"""Measure the resolution of an image or a localization table: Fourier ring correlation and decorrelation.

With two images (independent acquisitions of the same field) the classical
two-image FRC is computed; with one image, the single-image FRC
(checkerboard split) and image decorrelation analysis. A localization table
(.csv as ThunderSTORM, .hdf5 as Picasso) gets the FRC of its two halves split
by blocks of --block-frames frames, each rendered as a histogram at
--pixel-size (default 10 nm). Results in nm.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from jaxsr.cli._common import pixel_size_from, positive_float, positive_int, require_input

TABLES = (".csv", ".hdf5", ".h5")

HELP = "FRC / decorrelation resolution of an image, or FRC of a localization table (nm)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="2D TIFF/OME-TIFF image (y, x; a 3D stack is averaged over its leading axes), "
                                 "or a localization table (.csv, .hdf5)")
    p.add_argument("second", nargs="?", help="optional second, independent image of the same field (two-image FRC)")
    p.add_argument("--pixel-size", type=positive_float, default=None,
                   help="pixel size in nm (default: from the file's metadata; for a table, the render "
                        "pixel, 10)")
    p.add_argument("--block-frames", type=positive_int, default=100,
                   help="a table's halves: alternate blocks of this many frames (default 100)")
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


def _table(args: argparse.Namespace) -> dict[str, float | None]:
    """FRC of a localization table's two halves (blocks of frames), rendered at --pixel-size."""
    from jaxsr.smlm import frc_localizations, read_localizations

    require_input(args.image, "IMAGE")
    if args.second:
        raise ValueError("SECOND: a localization table is split into its own two halves; give one table")
    if args.threshold != "1/7":
        raise ValueError("--threshold: a table's FRC uses the 1/7 threshold")
    try:
        locs = read_localizations(args.image)
    except (ValueError, KeyError) as err:
        raise ValueError(f"IMAGE: {str(err).replace('argument ' + repr('path') + ': ', '')}") from None
    pixel = 10.0 if args.pixel_size is None else args.pixel_size
    try:
        res = frc_localizations(locs, pixel_size_nm=pixel, block_frames=args.block_frames)
    except ValueError as err:
        raise ValueError(str(err).replace("argument 'block_frames'", "--block-frames")
                         .replace("argument 'locs'", "IMAGE")) from None
    return {"pixel_size_nm": pixel, "block_frames": args.block_frames, "frc_nm": _finite(res.resolution_nm)}


def run(args: argparse.Namespace) -> int:
    from jaxsr.metrics import decorrelation, frc, frc_single

    if args.image.lower().endswith(TABLES):
        _print(_table(args), args.json)
        return 0
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
    _print(out, args.json)
    return 0


def _print(out: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(out, indent=2))
        return
    for name, value in out.items():
        label = name.replace("_nm", "").replace("_", " ")
        if name == "block_frames":
            text = f"{value}"
        else:
            text = "not reached (no crossing)" if value is None else f"{value:.1f} nm"
        print(f"{label:>22}: {text}")


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None
