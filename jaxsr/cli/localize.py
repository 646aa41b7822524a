"""Localize single molecules in a raw SMLM movie (multi-page TIFF) and write the table.

Pipeline per chunk of frames (the movie is streamed, never read whole):
camera ADU -> Poisson counts (offset, gain, EM excess noise; sCMOS read noise
in the likelihood) -> difference-of-Gaussians candidates above --threshold
robust noise standard deviations -> --roi x --roi ROIs -> Poisson
maximum-likelihood fit of a pixel-integrated 2D Gaussian (Levenberg-Marquardt
Fisher scoring, vmap-ed and jit-compiled) with its Cramér-Rao bound.

With --astigmatism SIGMA0_X SIGMA0_Y GAMMA DEPTH (nm) the fit is the
astigmatic 3D model (widths sigma_x(z), sigma_y(z) of Huang et al. 2008) and
the table gets z in nm.

With --method net the DECODE-style localization network (jaxsr.smlm.net; the
shipped weights, or --model DIR) localizes instead: each frame is seen with
its two neighbours (across chunk boundaries too), and a molecule is kept when
its detection probability mass reaches --net-threshold. Its table holds the
network's predicted standard deviations in the CRLB columns.

The camera is a preset (--camera) whose fields --gain, --offset, --em-gain,
--qe, --read-noise override. Without --camera, the preset recorded in the
movie's metadata by jaxsr simulate-smlm is used, else ideal (photon counts).
The PSF width is fixed with --sigma NM, or fitted per spot (default),
detection then using 0.21 wavelength / NA.

The output is ThunderSTORM CSV (.csv, frames from 1, nm) or Picasso HDF5
(.hdf5 + .yaml, camera pixels), chosen by the extension; an existing .yaml
next to an .hdf5 output stops the command before any work, as an existing
output does (unless --overwrite). A movie without detections writes an empty
table and warns.
"""

from __future__ import annotations

import argparse

import numpy as np

from jaxsr.cli._common import (
    CAMERAS,
    Progress,
    nonnegative_float,
    pixel_size_from,
    positive_float,
    positive_int,
    recorded_camera,
)

HELP = "localize single molecules in a raw movie (MLE at the Cramér-Rao bound, or the localization network)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("movie", help="raw movie, multi-page TIFF (t, y, x) in ADU")
    p.add_argument("-o", "--output", required=True, help="localization table: .csv (ThunderSTORM) or .hdf5 (Picasso)")
    p.add_argument("--pixel-size", type=positive_float, default=None,
                   help="camera pixel size in the sample, nm (default: from the TIFF metadata)")
    p.add_argument("--camera", choices=CAMERAS, default=None,
                   help="camera preset (default: the one jaxsr simulate-smlm recorded in the movie's metadata, "
                        "else ideal: the movie is photon counts)")
    p.add_argument("--gain", type=positive_float, default=None, help="conversion gain, electrons per ADU")
    p.add_argument("--offset", type=float, default=None, help="camera offset (baseline), ADU")
    p.add_argument("--em-gain", type=positive_float, default=None, help="EM gain (>= 1; 1 = no EM register)")
    p.add_argument("--qe", type=positive_float, default=None, help="quantum efficiency in (0, 1]")
    p.add_argument("--read-noise", type=nonnegative_float, default=None, help="read noise, electrons rms")
    p.add_argument("--sigma", type=positive_float, default=None,
                   help="PSF standard deviation, nm (fixed in the fit; default: fitted per spot)")
    p.add_argument("--astigmatism", type=float, nargs=4, default=None,
                   metavar=("SIGMA0_X", "SIGMA0_Y", "GAMMA", "DEPTH"),
                   help="3D: fit the astigmatic model with this calibration (nm; Huang et al. 2008)")
    p.add_argument("--na", type=positive_float, default=1.4, help="numerical aperture, for the detection width")
    p.add_argument("--wavelength", type=positive_float, default=670.0, help="emission wavelength nm (default 670)")
    p.add_argument("--threshold", type=positive_float, default=5.0,
                   help="detection threshold in robust noise standard deviations (default 5)")
    p.add_argument("--roi", type=positive_int, default=None, help="odd ROI side in pixels (default from the PSF)")
    p.add_argument("--method", choices=["mle", "net"], default="mle",
                   help="mle: detection + Poisson MLE fits (default); net: the localization network")
    p.add_argument("--model", default=None, help="--method net: a trained network directory (default: shipped)")
    p.add_argument("--net-threshold", type=positive_float, default=0.5,
                   help="--method net: detection probability threshold (default 0.5)")
    p.add_argument("--chunk", type=positive_int, default=256, help="frames read and processed at a time")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def camera_name(args: argparse.Namespace, info) -> tuple[str, bool]:
    """The preset to use: --camera, else the movie's ``jaxsr_camera`` annotation (written by jaxsr
    simulate-smlm), else ideal; and whether it came from the annotation."""
    recorded = None if args.camera is not None else recorded_camera(info.annotations, "MOVIE")
    return (recorded, True) if recorded is not None else (args.camera or "ideal", False)


def camera_from_args(args: argparse.Namespace, name: str):
    """The preset ``name`` with any overriding flags (validated by CameraModel: one-line errors)."""
    from jaxsr.forward import camera_preset

    changes = {k: v for k, v in (("gain_e_per_adu", args.gain), ("offset_adu", args.offset),
                                 ("em_gain", args.em_gain), ("qe", args.qe),
                                 ("read_noise_e", args.read_noise)) if v is not None}
    cam = camera_preset(name)
    if changes:
        try:
            cam = cam.replace(**changes)
        except ValueError as err:
            flag = {"gain_e_per_adu": "--gain", "offset_adu": "--offset", "em_gain": "--em-gain", "qe": "--qe",
                    "read_noise_e": "--read-noise"}
            name = next((f for k, f in flag.items() if k in str(err)), "--camera")
            raise ValueError(f"{name}: {err}") from None
    return cam


def _load_net(args: argparse.Namespace):
    """The network of --model (or the shipped one), with one-line errors naming --model."""
    from jaxsr.smlm.net import _default_locnet, load_locnet

    if args.model is None:
        return _default_locnet()
    try:
        return load_locnet(args.model)
    except (FileNotFoundError, ValueError) as err:
        message = str(err).replace("argument 'model': ", "")
        raise ValueError(f"--model: {message}") from None


def _with_neighbours(chunks):
    """``(start, frames, before, after)`` per chunk: the frames just outside it (None at the ends)."""
    previous, before = None, None
    for start, frames in chunks:
        if previous is not None:
            p_start, p_frames = previous
            yield p_start, p_frames, before, frames[0]
            before = p_frames[-1]
        previous = (start, frames)
    if previous is not None:
        yield previous[0], previous[1], before, None


def run(args: argparse.Namespace) -> int:
    import warnings

    import os

    from jaxsr.cli._common import check_output, check_outputs, require_input
    from jaxsr.smlm import Localizations, localize, write_localizations
    from jaxsr.smlm.net import localize_net
    from jaxsr.smlm.movie import movie_chunks, movie_info

    require_input(args.movie, "MOVIE")
    check_output(args, [args.movie], suffixes=(".csv", ".hdf5", ".h5"))
    stem, ext = os.path.splitext(args.output)
    if ext.lower() in (".hdf5", ".h5"):  # the Picasso table's metadata, written next to it: checked up front too
        check_outputs({"yaml": stem + ".yaml"}, overwrite=args.overwrite, inputs=(args.movie,))
    if args.roi is not None and (args.roi % 2 == 0 or args.roi < 5):
        raise ValueError(f"--roi: expected an odd side >= 5 pixels, got {args.roi}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = movie_info(args.movie)
    pixel = pixel_size_from(args.pixel_size, info.pixel_size_nm)
    name, recorded = camera_name(args, info)
    camera = camera_from_args(args, name)
    cam = None if name == "ideal" and not any(
        v is not None for v in (args.gain, args.offset, args.em_gain, args.qe, args.read_noise)) else camera
    if recorded:
        print(f"camera {name} (from the movie's metadata; --camera overrides it)")
    astig = None
    if args.astigmatism is not None:
        if args.sigma is not None:
            raise ValueError("--astigmatism: the 3D model sets the widths; do not give --sigma as well")
        s0x, s0y, gamma, depth = args.astigmatism
        if min(s0x, s0y, depth) <= 0:
            raise ValueError(f"--astigmatism: SIGMA0_X, SIGMA0_Y and DEPTH must be positive, got {args.astigmatism}")
        astig = {"sigma0_x_nm": s0x, "sigma0_y_nm": s0y, "gamma_nm": gamma, "depth_nm": depth}
    guess = 0.21 * args.wavelength / args.na if astig is None else 1.2 * astig["sigma0_x_nm"]
    if args.method == "net":
        model = _load_net(args)
        if astig is not None:
            raise ValueError("--astigmatism: the localization network is 2D; use --method mle for 3D")
    bar = Progress(info.n_frames, "localizing")
    parts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for start, frames, before, after in _with_neighbours(movie_chunks(args.movie, chunk=args.chunk)):
            if args.method == "net":
                locs = localize_net(frames, pixel_size_nm=pixel, camera=cam, model=model,
                                    threshold=args.net_threshold, before=before, after=after)
            else:
                locs = localize(frames, pixel_size_nm=pixel, sigma_nm=args.sigma, camera=cam,
                                threshold=args.threshold, roi_size=args.roi, sigma_guess_nm=guess, astigmatism=astig)
            if locs.n:
                parts.append(locs._replace(frame=locs.frame + start))
            bar(start + len(frames))
    bar.close()
    table = Localizations(*(np.concatenate(c) for c in zip(*parts))) if parts else Localizations.empty()
    if not table.n:
        print(f"jaxsr localize: warning: no molecules detected in {info.n_frames} frames (lower --threshold?)")
    write_localizations(args.output, table, pixel_size_nm=pixel, shape=info.shape, n_frames=info.n_frames,
                        overwrite=args.overwrite)
    prec = float(np.median(table.crlb_x_nm)) if table.n else float("nan")
    what = "CRLB" if args.method == "mle" else "predicted sd"
    print(f"wrote {args.output}: {table.n} localizations in {info.n_frames} frames "
          f"(median {what} {prec:.1f} nm, pixel {pixel:g} nm, camera {name}, method {args.method})")
    return 0
