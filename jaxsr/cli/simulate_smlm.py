"""Simulate a raw SMLM movie of blinking emitters and write it with its ground truth.

Writes OUTPUT (the movie in ADU, (t, y, x) multi-page TIFF with the pixel size)
and OUTPUT_STEM_truth.csv (ThunderSTORM CSV: one row per emitter per on frame,
frames from 1, x/y/z in nm, photons, background). Emitters lie on a structure
(uniform, filaments, or nuclear-pore-like rings), blink as a two-state Markov
chain (--p-on, --p-off per frame), emit Gamma-distributed photons per on frame,
are imaged with a pixel-integrated Gaussian (or astigmatic 3D) PSF on a
background and through a camera preset. Nothing is written if a file exists,
unless --overwrite.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from jaxsr.cli._common import CAMERA_KEY, CAMERAS, check_outputs, nonnegative_float, positive_float, positive_int

HELP = "simulate an SMLM movie with ground truth (TIFF + CSV)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", help="output movie, .tif")
    p.add_argument("--structure", choices=["uniform", "filaments", "npc"], default="filaments",
                   help="where the emitters are (default filaments)")
    p.add_argument("--emitters", type=positive_int, default=400, help="number of emitters (default 400)")
    p.add_argument("--frames", type=positive_int, default=200, help="number of frames (default 200)")
    p.add_argument("--size", type=positive_int, default=64, help="frame side in pixels (default 64)")
    p.add_argument("--pixel-size", type=positive_float, default=100.0, help="camera pixel, nm (default 100)")
    p.add_argument("--psf", choices=["gaussian2d", "astigmatic3d"], default="gaussian2d",
                   help="PSF model; astigmatic3d uses sigma0 130 nm, foci at +-200 nm, depth 400 nm "
                        "(localize with --astigmatism 130 130 200 400)")
    p.add_argument("--sigma", type=positive_float, default=130.0, help="PSF standard deviation, nm (default 130)")
    p.add_argument("--z-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="uniform emitter z range in nm (3D, with --psf astigmatic3d)")
    p.add_argument("--photons", type=positive_float, default=2000.0, help="mean photons per on frame (default 2000)")
    p.add_argument("--background", type=nonnegative_float, default=20.0, help="photons per pixel (default 20)")
    p.add_argument("--p-on", type=positive_float, default=0.02, help="off->on probability per frame (default 0.02)")
    p.add_argument("--p-off", type=positive_float, default=0.5, help="on->off probability per frame (default 0.5)")
    p.add_argument("--camera", choices=CAMERAS, default="emccd", help="camera (default emccd)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run(args: argparse.Namespace) -> int:
    import jax

    from jaxsr.forward import camera_preset
    from jaxsr.io import write_image
    from jaxsr.smlm import Localizations, emitter_positions, simulate_smlm, write_thunderstorm_csv

    base = os.path.basename(args.output)
    if not base.lower().endswith((".tif", ".tiff")):
        raise ValueError(f"OUTPUT: expected a .tif/.tiff name, got {args.output!r}")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"OUTPUT: folder does not exist: {folder}")
    stem = base.rsplit(".", 1)[0]
    truth_path = os.path.join(os.path.dirname(args.output), f"{stem}_truth.csv")
    check_outputs({"movie": args.output, "truth": truth_path}, overwrite=args.overwrite)
    for flag, v in (("--p-on", args.p_on), ("--p-off", args.p_off)):
        if v > 1:
            raise ValueError(f"{flag}: expected a probability in (0, 1], got {v}")
    if args.z_range is not None and args.z_range[0] >= args.z_range[1]:
        raise ValueError(f"--z-range: LOW must be below HIGH, got {args.z_range}")
    field = args.size * args.pixel_size
    k_pos, k_mov = jax.random.split(jax.random.key(args.seed))
    pos = emitter_positions(k_pos, args.emitters, structure=args.structure, field_nm=(field, field),
                            margin_nm=min(300.0, 0.2 * field), z_range_nm=args.z_range)
    camera = None if args.camera == "ideal" else camera_preset(args.camera)
    mov = simulate_smlm(k_mov, pos, n_frames=args.frames, shape=(args.size, args.size),
                        pixel_size_nm=args.pixel_size, psf=args.psf, sigma_nm=args.sigma, photons=args.photons,
                        background=args.background, p_on=args.p_on, p_off=args.p_off, camera=camera)
    # the camera goes into the movie's metadata, where jaxsr localize finds it
    write_image(args.output, np.asarray(mov.frames), pixel_size_nm=args.pixel_size, axes="TYX",
                overwrite=args.overwrite, annotations={CAMERA_KEY: args.camera})
    t = mov.truth
    n = len(t["frame"])
    nan = np.full(n, np.nan, np.float32)
    table = Localizations(frame=t["frame"], x_nm=t["x_nm"], y_nm=t["y_nm"], photons=t["photons"],
                          background=t["background"], sigma_nm=np.full(n, args.sigma, np.float32),
                          crlb_x_nm=nan, crlb_y_nm=nan, crlb_photons=nan, score=nan, deviance=nan,
                          z_nm=t["z_nm"] if args.psf == "astigmatic3d" or args.z_range else nan, crlb_z_nm=nan)
    write_thunderstorm_csv(truth_path, table, overwrite=args.overwrite)
    print(f"wrote {args.output}: {args.frames} frames of {args.size} x {args.size} px ({args.pixel_size:g} nm), "
          f"{args.emitters} emitters on {args.structure}, {n} on-events, camera {args.camera} (recorded in its "
          f"metadata for jaxsr localize); truth {truth_path}")
    return 0
