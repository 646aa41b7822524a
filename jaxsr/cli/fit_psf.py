"""Fit a PSF model to a bead image or z-stack (maximum likelihood through jax.grad).

The brightest voxel is taken as the bead; a crop of --crop pixels around it is
fitted (shared PSF parameters, the bead's position, photons and background).
Prints the fitted parameters; --json writes them, --psf-out writes the fitted
PSF as a TIFF (both atomically, never over an existing file without --overwrite,
never over IMAGE; both checked before the fit).
"""

from __future__ import annotations

import argparse

import numpy as np

from jaxsr.cli._common import check_flag_outputs, pixel_size_from, positive_float, positive_int, require_input

HELP = "fit a PSF model (pupil/Zernike, Airy, Gaussian, astigmatic) to a bead image"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from jaxsr.optics import PSF_MODELS

    p.add_argument("image", help="bead image (y, x) or z-stack (z, y, x), TIFF/OME-TIFF")
    p.add_argument("--model", choices=sorted(PSF_MODELS), default="pupil3d", help="PSF model (default pupil3d)")
    p.add_argument("--pixel-size", type=positive_float, default=None, help="lateral pixel size nm (default: metadata)")
    p.add_argument("--z-step", type=positive_float, default=None, help="z step nm for stacks (default: metadata)")
    p.add_argument("--na", type=positive_float, default=None, help="initial NA (airy2d/pupil3d)")
    p.add_argument("--wavelength", type=positive_float, default=None, help="emission wavelength nm (held fixed)")
    p.add_argument("--refractive-index", type=positive_float, default=None, help="immersion index (held fixed)")
    p.add_argument("--num-zernike", type=positive_int, default=15, help="pupil3d: Noll modes 1..N (default 15)")
    p.add_argument("--crop", type=positive_int, default=48, help="lateral crop side around the bead (default 48)")
    p.add_argument("--steps", type=positive_int, default=150, help="L-BFGS iterations (default 150)")
    p.add_argument("--json", dest="json_out", default=None, help="write the fitted parameters to this JSON file")
    p.add_argument("--psf-out", default=None, help="write the fitted PSF to this TIFF file")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run(args: argparse.Namespace) -> int:
    from jaxsr.io import read_image, write_image, write_json
    from jaxsr.optics import PSF_MODELS, fit_psf

    require_input(args.image, "IMAGE")
    # every output checked before the fit: never the input, a TIFF for --psf-out, its folder there
    check_flag_outputs({"--json": args.json_out, "--psf-out": args.psf_out}, overwrite=args.overwrite,
                       inputs=(args.image,), suffixes={"--psf-out": (".tif", ".tiff")})
    data, meta = read_image(args.image)
    spec = PSF_MODELS[args.model]
    if data.ndim != spec.ndim:
        raise ValueError(f"IMAGE: model {args.model} needs a {spec.ndim}D image, got shape {data.shape}")
    pixel = pixel_size_from(args.pixel_size, meta.pixel_size_nm)
    z_step = None
    if spec.ndim == 3:
        z_step = pixel_size_from(args.z_step, meta.z_step_nm, flag="--z-step")
    peak = np.unravel_index(int(np.argmax(data)), data.shape)
    half = args.crop // 2
    sl = tuple(slice(None) if ax < data.ndim - 2 else slice(max(0, c - half), c + half)
               for ax, c in enumerate(peak))
    crop = data[sl]
    init = {}
    for name, value in (("na", args.na), ("wavelength_nm", args.wavelength),
                        ("refractive_index", args.refractive_index)):
        if value is not None:
            init[name] = value
    res = fit_psf(crop, model=args.model, pixel_size_nm=pixel, z_step_nm=z_step, init=init,
                  num_zernike=args.num_zernike, num_steps=args.steps)
    print(f"model {args.model} on crop {crop.shape} around voxel {tuple(int(c) for c in peak)}")
    out = {"model": args.model, "crop_shape": list(crop.shape), "pixel_size_nm": pixel, "z_step_nm": z_step}
    for name, value in res.params.items():
        if np.ndim(value):
            nz = {f"noll{j + 1}": round(float(v), 4) for j, v in enumerate(value) if j >= 4}
            out[name] = nz
            print(f"  {name}: " + ", ".join(f"{k} {v:+.3f}" for k, v in nz.items()))
        else:
            out[name] = float(value)
            print(f"  {name}: {float(value):.4g}")
    out.update(bead_offset_nm=res.offset_nm[0].tolist(), photons=float(res.amplitude[0]),
               background=float(res.background[0]), loss=res.loss)
    print(f"  bead offset from crop centre (nm): {[round(float(v), 1) for v in res.offset_nm[0]]}")
    print(f"  amplitude {res.amplitude[0]:.4g}, background {res.background[0]:.4g}, deviance/pixel {res.loss:.3f}")
    if args.json_out:
        write_json(args.json_out, out, overwrite=args.overwrite)
    if args.psf_out:
        write_image(args.psf_out, res.psf.astype(np.float32), pixel_size_nm=pixel, z_step_nm=z_step,
                    overwrite=args.overwrite)
    return 0
