"""Render a super-resolution image from a localization table (ThunderSTORM CSV or Picasso HDF5).

--method histogram counts localizations per render pixel; --method gaussian
(default) draws each as a unit-mass Gaussian with its own precision (CRLB, at
least half a render pixel) or with --sigma NM. The image is written as float32
TIFF with the render pixel size; --frc also prints the FRC resolution from two
halves of the table split by blocks of frames. A table with a NaN or infinite
x or y position is refused.
"""

from __future__ import annotations

import argparse

import numpy as np

from jaxsr.cli._common import check_output, positive_float, positive_int, require_input

HELP = "render a localization table as a super-resolution image"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", help="localizations: .csv (ThunderSTORM) or .hdf5 (Picasso)")
    p.add_argument("-o", "--output", required=True, help="output TIFF")
    p.add_argument("--pixel-size", type=positive_float, required=True, help="render pixel size, nm")
    p.add_argument("--method", choices=["gaussian", "histogram"], default="gaussian",
                   help="rendering (default gaussian)")
    p.add_argument("--sigma", type=positive_float, default=None, help="fixed Gaussian width, nm (default: CRLB)")
    p.add_argument("--camera-pixel-size", type=positive_float, default=None,
                   help="camera pixel of a Picasso file without YAML metadata, nm")
    p.add_argument("--frc", action="store_true", help="also print the FRC resolution of two halves")
    p.add_argument("--frc-block", type=positive_int, default=100, help="frames per FRC block (default 100)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def run(args: argparse.Namespace) -> int:
    from jaxsr.io import write_image
    from jaxsr.smlm import frc_localizations, read_localizations, render_gaussian, render_histogram

    require_input(args.table, "TABLE")
    check_output(args, [args.table])
    locs = read_localizations(args.table, pixel_size_nm=args.camera_pixel_size)
    if not locs.n:
        raise ValueError(f"TABLE: {args.table} holds no localizations")
    bad = int(np.sum(~(np.isfinite(locs.x_nm) & np.isfinite(locs.y_nm))))
    if bad:
        raise ValueError(f"TABLE: {bad} of {locs.n} localizations in {args.table} have a non-finite x or y "
                         "position (NaN or infinite); drop them first")
    p = args.pixel_size
    if args.method == "histogram":
        img = render_histogram(locs, pixel_size_nm=p)
    else:
        if args.sigma is None and np.isnan(locs.crlb_x_nm).all():
            raise ValueError("--sigma: the table has no precision (CRLB/uncertainty) column; give --sigma NM")
        img = render_gaussian(locs, pixel_size_nm=p, sigma_nm=args.sigma, min_sigma_nm=0.5 * p)
    write_image(args.output, img.astype(np.float32), pixel_size_nm=p, overwrite=args.overwrite)
    print(f"wrote {args.output}: {img.shape[0]} x {img.shape[1]} px at {p:g} nm from {locs.n} localizations "
          f"({args.method})")
    if args.frc:
        r = frc_localizations(locs, pixel_size_nm=p, shape=img.shape, block_frames=args.frc_block)
        text = f"{r.resolution_nm:.1f} nm" if r.crossed else "not reached (curve stays above 1/7)"
        print(f"FRC resolution (1/7, halves by blocks of {args.frc_block} frames): {text}")
    return 0
