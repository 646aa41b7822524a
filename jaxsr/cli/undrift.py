"""Correct the stage drift of a localization table (redundant cross-correlation, RCC).

The frames are cut into segments (--segment frames each), every segment rendered
at --pixel-size, every pair of segments cross-correlated, and the segment drifts
solved by least squares with badly fitting pairs dropped; a spline through them
gives each frame's drift, which is subtracted (frame 0 stays where it was). A 3D
table (finite z) gets its axial drift corrected too, from the pairs' correlation
along z (--lateral-only leaves z unchanged). Writes the corrected table (OUT.csv,
ThunderSTORM, or OUT.hdf5 with its OUT.yaml for a Picasso input) and, next to
it, OUT.drift.csv (frame, drift x, y and, in 3D, z in nm). Nothing is written if
any of them exists, unless --overwrite; the input (and a Picasso input's .yaml)
is never replaced.
"""

from __future__ import annotations

import argparse
import csv
import os

import numpy as np

from jaxsr.cli._common import check_outputs, positive_float, positive_int, require_input

HELP = "correct the stage drift of a localization table (redundant cross-correlation)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", help="localizations: .csv (ThunderSTORM) or .hdf5 (Picasso)")
    p.add_argument("-o", "--output", required=True,
                   help="corrected table (.csv, or .hdf5 for a Picasso input); OUTPUT.drift.csv is written next to it")
    p.add_argument("--segment", type=positive_int, default=1000,
                   help="frames per segment (default 1000); each segment must show the structure")
    p.add_argument("--pixel-size", type=positive_float, default=None,
                   help="render pixel of the segments, nm (default 20, coarser for fields over 2048 pixels)")
    p.add_argument("--max-drift", type=positive_float, default=1000.0,
                   help="largest drift between two segments searched, nm (default 1000)")
    p.add_argument("--lateral-only", action="store_true",
                   help="estimate and correct x and y only (default: z too when the table has finite z)")
    p.add_argument("--camera-pixel-size", type=positive_float, default=None,
                   help="camera pixel of a Picasso file without YAML metadata, nm")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def output_paths(output: str) -> dict[str, str]:
    """The corrected table, next to it ``OUTPUT.drift.csv`` and, for a Picasso table, its ``.yaml``."""
    stem, ext = os.path.splitext(output)
    paths = {"table": output, "drift": stem + ".drift.csv"}
    if ext.lower() in (".hdf5", ".h5"):
        paths["yaml"] = stem + ".yaml"
    return paths


def input_paths(table: str) -> tuple[str, ...]:
    """The input table and, for a Picasso table, its ``.yaml`` (never to be replaced either)."""
    stem, ext = os.path.splitext(table)
    return (table, stem + ".yaml") if ext.lower() in (".hdf5", ".h5") else (table,)


def write_drift_csv(path: str, drift_nm: np.ndarray, *, overwrite: bool = False) -> None:
    """``frame, drift_x_nm, drift_y_nm[, drift_z_nm]`` per frame, written atomically."""
    from jaxsr.io.atomic import atomic_path  # noqa: PLC0415

    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        d = np.asarray(drift_nm, np.float64)
        w.writerow(["frame", "drift_x_nm", "drift_y_nm", "drift_z_nm"][: 1 + d.shape[1]])
        for f, row in enumerate(d):
            w.writerow([f, *(f"{v:.3f}" for v in row)])


def run(args: argparse.Namespace) -> int:
    from jaxsr.smlm import read_picasso_hdf5, read_thunderstorm_csv, write_localizations  # noqa: PLC0415
    from jaxsr.smlm.drift import correct_drift, estimate_drift  # noqa: PLC0415

    require_input(args.table, "TABLE")
    in_kind = os.path.splitext(args.table)[1].lower()
    out_kind = os.path.splitext(args.output)[1].lower()
    if in_kind not in (".csv", ".hdf5", ".h5"):
        raise ValueError(f"TABLE: unknown localization format {in_kind!r} (expected .csv or .hdf5)")
    if out_kind not in (".csv", ".hdf5", ".h5"):
        raise ValueError(f"--output: expected a .csv or .hdf5 file, got {args.output}")
    if out_kind != ".csv" and in_kind == ".csv":
        raise ValueError("--output: a Picasso .hdf5 output needs a Picasso input (its YAML gives the camera "
                         "geometry); write a .csv")
    paths = output_paths(args.output)
    check_outputs(paths, overwrite=args.overwrite, inputs=input_paths(args.table))
    meta: dict = {}
    if in_kind == ".csv":
        locs = read_thunderstorm_csv(args.table)
    else:
        locs, meta = read_picasso_hdf5(args.table, pixel_size_nm=args.camera_pixel_size)
    if not locs.n:
        raise ValueError(f"TABLE: {args.table} holds no localizations")
    try:
        res = estimate_drift(locs, segment_frames=args.segment, pixel_size_nm=args.pixel_size,
                             max_drift_nm=args.max_drift, axial=False if args.lateral_only else None)
    except ValueError as err:     # the library names its arguments; name the flags
        msg = str(err)
        for arg, flag in (("segment_frames", "--segment"), ("pixel_size_nm", "--pixel-size"),
                          ("max_drift_nm", "--max-drift"), ("locs", "TABLE")):
            msg = msg.replace(f"argument '{arg}'", flag)
        raise ValueError(msg) from None
    corrected = correct_drift(locs, res)
    n_frames = res.drift_nm.shape[0]
    if out_kind == ".csv":
        write_localizations(paths["table"], corrected, overwrite=args.overwrite)
    else:
        p = float(args.camera_pixel_size or meta["Pixelsize"])
        width, height = meta.get("Width"), meta.get("Height")
        if width is None or height is None:
            raise ValueError(f"TABLE: {args.table}'s YAML has no Width/Height; write a .csv")
        write_localizations(paths["table"], corrected, pixel_size_nm=p, shape=(int(height), int(width)),
                            n_frames=int(meta.get("Frames", n_frames)), overwrite=args.overwrite)
    write_drift_csv(paths["drift"], res.drift_nm, overwrite=args.overwrite)
    span = np.ptp(res.drift_nm, axis=0)
    kept = res.pair_residual_nm[res.kept]
    print(f"{len(res.segment_frame)} segments of {args.segment} frames, {int(res.kept.sum())} of {len(res.kept)} "
          f"pairs kept (r.m.s. residual {np.sqrt(np.mean(kept**2)):.1f} nm), rendered at {res.pixel_size_nm:g} nm")
    axial = f", z {span[2]:.1f} nm" if len(span) == 3 else " (z not corrected)" if args.lateral_only else ""
    print(f"drift over {n_frames} frames: x {span[0]:.1f} nm, y {span[1]:.1f} nm{axial} (range)")
    print(f"wrote {paths['table']} ({locs.n} localizations) and {paths['drift']}")
    return 0
