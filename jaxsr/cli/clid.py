"""CLID super-resolution (Xue et al., Nat Commun 2026): clear image -> 3x Lanczos -> Richardson-Lucy.

The clear (denoised) image is either INPUT itself (a denoised widefield or
spinning-disk image, or a time-lapse of them), or the 3S image of an RSFP
ON/OFF acquisition, AVG(ON) - AVG(OFF), from --on ON.tif --off OFF.tif. The
PSF is 2D, sampled on the fine (upsampled) grid: the pixel-integrated Airy
pattern by default, or `clid-bessel` (the authors' released PSF), or a measured
2D TIFF resampled to the fine grid (taken as sampled at INPUT's pixel size when
neither its metadata nor --psf-pixel-size gives one). The output is in photons
per fine pixel, written as float32 TIFF with the fine pixel size and INPUT's
axes. RL's constant background is --background (a number, or auto: estimated
from the clear image; default 0, or the camera offset that jaxsr simulate
recorded in a raw INPUT).

Single-frame super-resolution (3Snet-CLID): with --denoiser, INPUT is a raw,
noisy frame (or time-lapse of frames, each on its own) that a trained network
denoises first: `3snet` (the network shipped with jaxsr) or a model directory
written by `jaxsr train-denoiser`. --denoiser applies to INPUT only: the 3S
image of --on/--off is already clear, so the two are refused together.

--denoiser dps replaces the Lanczos + RL steps by DPS (Ye et al., Intelligent
Computing 2025): the shipped 3Snet denoises INPUT (stage 1), then a DPS
network is trained on INPUT itself without ground truth (--dps-steps, about
1 s per step on 2 CPU cores) and applied; the output is on DPS's canonical
grid, whose pixel size (pixel size x NA / wavelength scaled to a fixed PSF
width) is written into the TIFF. --na and --wavelength must describe INPUT.
"""

from __future__ import annotations

import argparse

import numpy as np

from jaxsr.cli._common import (
    Progress,
    auto_background,
    background_value,
    check_output,
    offset_or_recorded,
    output_axes,
    pixel_size_from,
    positive_int,
    recorded_offset,
    require_input,
    say_recorded_offset,
)
from jaxsr.cli._psf import add_psf_arguments, build_psf, read_psf_file
from jaxsr.cli.deconvolve import check_upsample, deconvolve_frames, one_line_warnings

HELP = "CLID super-resolution of a clear image or of an RSFP ON/OFF series (3S)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", nargs="?", help="clear image (y, x) or frames (t, y, x); omit with --on/--off")
    p.add_argument("-o", "--output", required=True, help="output TIFF path")
    p.add_argument("--on", default=None, help="ON series (t, y, x) of an RSFP sample: 3S input")
    p.add_argument("--off", default=None, help="OFF series (t, y, x), same shape as --on")
    p.add_argument("--upsample", type=positive_int, default=3, help="Lanczos upsampling factor (default 3)")
    p.add_argument("--iterations", type=positive_int, default=100,
                   help="accelerated RL iterations (default 100)")
    p.add_argument("--background", type=background_value, default=None,
                   help="constant background of the clear image, or auto (a low percentile of the smoothed "
                        "image; not with --denoiser) (default 0; for a raw INPUT from jaxsr simulate without "
                        "--denoiser, the camera offset recorded in its metadata)")
    p.add_argument("--batch", type=positive_int, default=8, help="frames per vectorised batch (default 8)")
    p.add_argument("--denoiser", default=None, metavar="3snet|dps|MODEL_DIR",
                   help="denoise the raw INPUT frame(s) first with a trained network: 3snet (shipped) or a "
                        "model directory from `jaxsr train-denoiser` (single-frame CLID); dps: 3snet, then DPS "
                        "trained on INPUT itself instead of Lanczos + RL")
    p.add_argument("--dps-steps", type=positive_int, default=None,
                   help="DPS training steps with --denoiser dps (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the DPS training (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_psf_arguments(p, default_psf="airy", three_d=False)   # CLID is 2D: no pupil, z or refractive-index flags


def run(args: argparse.Namespace) -> int:
    from jaxsr.deconv import clid, three_s_denoise
    from jaxsr.io import read_image, write_image

    if (args.on is None) != (args.off is None):
        raise ValueError("--on/--off: give both series (or neither, with INPUT)")
    if args.on is not None and args.input is not None:
        raise ValueError("INPUT: give either INPUT or --on/--off, not both")
    if args.on is None and args.input is None:
        raise ValueError("INPUT: missing (or give --on ON.tif --off OFF.tif)")
    if args.denoiser is not None and args.on is not None:
        raise ValueError("--denoiser: applies to a single-frame INPUT, not to --on/--off (their 3S image is "
                         "already clear)")
    check_output(args, [args.input, args.on, args.off, args.psf])
    psf_file = read_psf_file(args, two_d_only=True)   # CLID is 2D: a 3D PSF (pupil, a stack) is refused up front
    if args.on is not None:
        on, meta = read_image(require_input(args.on, "--on"))
        off, _ = read_image(require_input(args.off, "--off"))
        if on.shape != off.shape:
            raise ValueError(f"--off: shape {off.shape} differs from --on's {on.shape}")
        if on.ndim != 3:
            raise ValueError(f"--on: expected a (t, y, x) series, got shape {on.shape}")
        image = np.asarray(three_s_denoise(on, off))
    else:
        image, meta = read_image(require_input(args.input, "INPUT"))
    # a raw frame from jaxsr simulate records its camera: its offset is the RL background, or is subtracted
    # before a denoiser (whose output holds no offset)
    offset = None if args.on is not None else recorded_offset(meta, "INPUT")
    if image.ndim not in (2, 3):
        raise ValueError(f"INPUT: expected (y, x) or (t, y, x), got shape {image.shape}")
    if args.denoiser != "dps" and args.dps_steps is not None:
        raise ValueError("--dps-steps: only with --denoiser dps")
    if args.background == "auto" and args.denoiser is not None:
        raise ValueError("--background: auto estimates the background of a clear image; with --denoiser the "
                         "network removes it (give a number, the background left after denoising)")
    if args.denoiser is not None and offset is not None:
        say_recorded_offset(meta, offset, "offset", ", subtracted before denoising")
    if args.denoiser == "dps":
        return _run_dps(args, image, meta, offset)
    denoiser = None
    background = args.background
    if args.denoiser is not None:
        from jaxsr.cli.denoise import check_frames, load_denoiser
        from jaxsr.nn import denoise

        model = load_denoiser(args.denoiser, "--denoiser")
        check_frames(image, "INPUT", model)
        denoiser = lambda frames: denoise(frames, model=model, offset=offset)  # noqa: E731
    elif background == "auto":
        background = auto_background(image.reshape((-1,) + image.shape[-2:]), 2)
    elif offset is not None:
        background = offset_or_recorded(args.background, meta, "--background")
    background = 0.0 if background is None else background
    pixel = pixel_size_from(args.pixel_size, meta.pixel_size_nm)
    check_upsample(image.shape, args.upsample)
    fine = pixel / args.upsample
    # a PSF TIFF without a pixel size is taken at INPUT's (camera) pixel, then resampled to the fine one
    psf = build_psf(args, pixel_size_nm=fine, z_step_nm=None, image_shape=image.shape, image_pixel_size_nm=pixel,
                    psf_file=psf_file)
    frames = image.reshape((-1,) + image.shape[-2:])

    def run_one(chunk, tag):
        bar = Progress(args.iterations, tag)
        out = clid(chunk, psf, upsample=args.upsample, num_iter=args.iterations, accelerate=True,
                   background=background, denoiser=denoiser)
        bar(args.iterations)
        bar.close()
        return out

    with one_line_warnings("clid"):
        result = deconvolve_frames(frames, psf, batch=args.batch, label="CLID", run_one=run_one)
    result = result.reshape(image.shape[:-2] + result.shape[-2:]).astype(np.float32)
    write_image(args.output, result, pixel_size_nm=fine, axes=output_axes(meta.axes, result.ndim, 2),
                overwrite=args.overwrite)
    source = "3S of ON/OFF" if args.on else "clear input" if denoiser is None else f"denoised by {args.denoiser}"
    print(f"wrote {args.output}: {result.shape} float32, pixel {fine:.2f} nm "
          f"({source}, {args.iterations} accelerated RL iterations, PSF {args.psf})")
    return 0


def _run_dps(args: argparse.Namespace, image: np.ndarray, meta, offset: float | None) -> int:
    """3Snet stage 1, then DPS trained on INPUT itself; writes the canonical-grid result."""
    import dataclasses

    import jax

    from jaxsr.cli.denoise import check_frames, load_denoiser
    from jaxsr.cli.train_denoiser import TrainProgress
    from jaxsr.io import write_image
    from jaxsr.nn import DPS_TRAIN, denoise, dps_super_resolve

    if args.psf not in ("airy", "gaussian"):
        raise ValueError(f"--psf: DPS models the widefield PSF from --na and --wavelength; got --psf {args.psf}")
    model = load_denoiser("3snet", "--denoiser")
    check_frames(image, "INPUT", model)
    pixel = pixel_size_from(args.pixel_size, meta.pixel_size_nm)
    steps = DPS_TRAIN.steps if args.dps_steps is None else args.dps_steps
    every = max(1, min(25, steps // 10))
    train = dataclasses.replace(DPS_TRAIN, steps=steps, seed=args.seed, eval_every=every,
                                checkpoint_every=max(steps, 1))
    bar = TrainProgress(steps, "DPS training", every=every)
    try:
        out, _ = dps_super_resolve(jax.random.key(args.seed), image, pixel_size_nm=pixel, na=args.na,
                                   wavelength_nm=args.wavelength,
                                   denoiser=lambda x: denoise(x, model=model, offset=offset),
                                   train=train, callback=bar)
    finally:
        bar.close()
    result = np.asarray(out.image, dtype=np.float32)
    write_image(args.output, result, pixel_size_nm=out.pixel_size_nm, axes=output_axes(meta.axes, result.ndim, 2),
                overwrite=args.overwrite)
    print(f"wrote {args.output}: {result.shape} float32, pixel {out.pixel_size_nm:.2f} nm "
          f"(3Snet, then DPS trained {steps} steps on INPUT; grid factor {out.factor:.3f})")
    return 0
