"""Richardson-Lucy deconvolution of a TIFF image, stack or time-lapse.

A 2D image or a time-lapse of 2D frames (T, Y, X) is deconvolved with a 2D
PSF; frames go through in batches (one vectorised call per batch, not one per
frame). A 3D stack (Z, Y, X) is deconvolved with a 3D PSF (--psf pupil or a 3D
PSF TIFF). The PSF is a model with parameters or a measured TIFF, resampled to
the working grid if its pixel size differs. A PSF TIFF whose pixel size neither
its metadata nor --psf-pixel-size gives is taken as sampled at the image's
(camera) pixel size, said on stdout, and resampled to the upsampled grid with
--upsample; with no pixel size anywhere (and no --upsample) it is used as
sampled on the image grid.
Input values are photon counts
(subtract the camera offset first, or give it as --background; an image from
jaxsr simulate records its camera, whose offset is then the default;
--background auto estimates offset and background floor together); negative
pixels are clipped to zero, integer images are converted to float32. The result
is written atomically as float32 TIFF with the (upsampled) pixel size; the input
is never modified.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

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
    require_input,
)
from jaxsr.cli._psf import add_psf_arguments, build_psf, read_psf_file

HELP = "Richardson-Lucy deconvolution of an image, stack or time-lapse (TIFF)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="input TIFF/OME-TIFF: (y, x), (t, y, x) frames, or a (z, y, x) stack")
    p.add_argument("-o", "--output", required=True, help="output TIFF path")
    p.add_argument("--iterations", type=positive_int, default=50, help="RL iterations (default 50)")
    p.add_argument("--background", type=background_value, default=None,
                   help="constant background per pixel, same units as the image, or auto (a low percentile of "
                        "the smoothed image; jaxsr.deconv.estimate_background) (default: the camera offset "
                        "jaxsr simulate recorded in the image's metadata, else 0)")
    p.add_argument("--upsample", type=positive_int, default=1,
                   help="Lanczos upsampling factor before deconvolution, 2D only (default 1)")
    p.add_argument("--accelerate", action="store_true", help="Biggs-Andrews acceleration")
    p.add_argument("--boundary", choices=["pad", "periodic"], default="pad",
                   help="edge handling: pad (no ringing, default) or periodic")
    p.add_argument("--batch", type=positive_int, default=8, help="frames per vectorised batch (default 8)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_psf_arguments(p, default_psf="airy")


def check_upsample(image_shape: tuple[int, ...], upsample: int) -> None:
    """Refuse an --upsample factor whose output frames would be absurdly large."""
    from jaxsr.deconv.upsample import MAX_OUTPUT_PIXELS

    ny, nx = image_shape[-2:]
    if ny * upsample * nx * upsample > MAX_OUTPUT_PIXELS:
        raise ValueError(f"--upsample: {ny} x {nx} frames upsampled by {upsample} would be {ny * upsample} x "
                         f"{nx * upsample} pixels each, more than the limit of 2**30")


@contextlib.contextmanager
def one_line_warnings(command: str):
    """Show the library's warnings (e.g. a PSF cropped to the image) as one line each, once, on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            messages = dict.fromkeys(str(w.message).splitlines()[0] for w in caught if str(w.message))
            for msg in messages:
                print(f"jaxsr {command}: warning: {msg}", file=sys.stderr)


def deconvolve_frames(frames: np.ndarray, psf: np.ndarray, *, batch: int, label: str, run_one) -> np.ndarray:
    """Apply ``run_one(batch_array, progress)`` to ``frames`` (leading axis) in batches, with a progress bar."""
    results = []
    n = frames.shape[0]
    for start in range(0, n, batch):
        chunk = frames[start:start + batch]
        tag = f"{label} frames {start + 1}-{start + chunk.shape[0]}/{n}" if n > 1 else label
        results.append(np.asarray(run_one(chunk, tag)))
    return np.concatenate(results, axis=0)


def on_image_grid(args: argparse.Namespace, meta, psf_meta) -> bool:
    """Whether a PSF TIFF (metadata ``psf_meta``; None for a model) is used as sampled on the image grid:
    nothing gives a physical scale (no pixel size or z step in the image's or the PSF's metadata, no flag
    setting one) and nothing is upsampled, so no resampling is possible or needed (as deconwolf and
    skimage take a measured PSF)."""
    if psf_meta is None or args.upsample != 1:
        return False
    return not any(v for v in (args.pixel_size, args.z_step, args.psf_pixel_size, args.psf_z_step,
                               meta.pixel_size_nm, meta.z_step_nm, psf_meta.pixel_size_nm, psf_meta.z_step_nm))


def run(args: argparse.Namespace) -> int:
    from jaxsr.deconv import clid, richardson_lucy
    from jaxsr.io import read_image, write_image

    require_input(args.input, "INPUT")
    check_output(args, [args.input, args.psf])
    image, meta = read_image(args.input)
    auto = args.background == "auto"
    background = 0.0 if auto else offset_or_recorded(args.background, meta, "--background") or 0.0
    psf_file = read_psf_file(args)
    same_grid = on_image_grid(args, meta, None if psf_file is None else psf_file[1])
    # without any physical scale, a measured PSF is taken as sampled on the image grid (unit pixels)
    pixel = 1.0 if same_grid else pixel_size_from(args.pixel_size, meta.pixel_size_nm)
    z_step = 1.0 if same_grid else args.z_step or meta.z_step_nm
    psf_is_3d = args.psf == "pupil" or (psf_file is not None and psf_file[0].ndim == 3)
    if image.ndim < (3 if psf_is_3d else 2):
        raise ValueError(f"INPUT: a {'3D' if psf_is_3d else '2D'} PSF needs an image with at least "
                         f"{3 if psf_is_3d else 2} axes, got shape {image.shape}")
    if psf_is_3d and args.upsample != 1:
        raise ValueError("--upsample: only 2D images and time-lapses can be upsampled")
    check_upsample(image.shape, args.upsample)
    fine = pixel / args.upsample
    # a PSF TIFF without a pixel size is taken at the image's (camera) pixel, then resampled to the fine one
    psf = build_psf(args, pixel_size_nm=fine, z_step_nm=z_step, image_shape=image.shape,
                    image_pixel_size_nm=None if same_grid else pixel, psf_file=psf_file)

    spatial = psf.ndim
    lead = image.shape[:-spatial]
    frames = image.reshape((-1,) + image.shape[-spatial:])
    if auto:
        background = auto_background(frames, spatial)

    def run_one(chunk, tag):
        bar = Progress(args.iterations, tag)
        if args.upsample > 1:
            out = clid(chunk, psf, upsample=args.upsample, num_iter=args.iterations, accelerate=args.accelerate,
                       background=background, boundary=args.boundary)
            bar(args.iterations)
        else:
            out = richardson_lucy(chunk, psf, num_iter=args.iterations, background=background,
                                  boundary=args.boundary, accelerate=args.accelerate,
                                  callback=lambda done, info: bar(done), chunk=max(1, args.iterations // 20))
        bar.close()
        return out

    with one_line_warnings("deconvolve"):
        result = deconvolve_frames(frames, psf, batch=args.batch, label="deconvolving", run_one=run_one)
    result = result.reshape(lead + result.shape[1:]).astype(np.float32)
    axes = output_axes(meta.axes, result.ndim, spatial)
    write_image(args.output, result, pixel_size_nm=None if same_grid else fine,
                z_step_nm=z_step if spatial == 3 and not same_grid else None, axes=axes, overwrite=args.overwrite)
    scale = "no pixel size (the PSF on the image grid)" if same_grid else f"pixel {fine:.2f} nm"
    print(f"wrote {args.output}: {result.shape} float32, {scale}, {args.iterations} iterations, "
          f"PSF {args.psf} {psf.shape}")
    return 0
