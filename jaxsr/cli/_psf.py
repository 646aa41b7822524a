"""PSF flags shared by `jaxsr deconvolve` and `jaxsr clid`: a model with parameters, or a measured TIFF."""

from __future__ import annotations

import argparse
import math
import os

import numpy as np

from jaxsr.cli._common import positive_float

PSF_MODELS = ("airy", "gaussian", "pupil", "clid-bessel")
# Largest model PSF side (its support is about 3 wavelength / NA each side): beyond it the
# pixel size is absurdly small for the wavelength (a typo), and generating it would exhaust memory.
_MAX_PSF_SIDE = 4097


def add_psf_arguments(p: argparse.ArgumentParser, *, default_psf: str) -> None:
    g = p.add_argument_group("PSF (a model with parameters, or a measured PSF as TIFF)")
    g.add_argument("--psf", default=default_psf,
                   help=f"one of {', '.join(PSF_MODELS)} or a PSF TIFF file (default {default_psf}); "
                        "pupil is 3D, the others 2D; clid-bessel is the CLID authors' released PSF")
    g.add_argument("--na", type=positive_float, default=1.4, help="numerical aperture (default 1.4)")
    g.add_argument("--wavelength", type=positive_float, default=520.0, help="emission wavelength nm (default 520)")
    g.add_argument("--refractive-index", type=positive_float, default=1.515,
                   help="immersion refractive index for --psf pupil (default 1.515)")
    g.add_argument("--pixel-size", type=positive_float, default=None,
                   help="image pixel size nm (default: from the image's metadata)")
    g.add_argument("--z-step", type=positive_float, default=None,
                   help="image z step nm for 3D stacks (default: from the image's metadata)")
    g.add_argument("--psf-pixel-size", type=positive_float, default=None,
                   help="pixel size of a PSF TIFF nm (default: its metadata, else the image's); "
                        "a PSF recorded at another pixel size is resampled to the image grid")
    g.add_argument("--psf-z-step", type=positive_float, default=None, help="z step of a 3D PSF TIFF nm")


def build_psf(args: argparse.Namespace, *, pixel_size_nm: float, z_step_nm: float | None,
              image_shape: tuple[int, ...]) -> np.ndarray:
    """The PSF on the target grid (``pixel_size_nm``, ``z_step_nm``), unit sum, centre n // 2."""
    from jaxsr.deconv import clid_psf, resample_psf
    from jaxsr.io import read_image
    from jaxsr.optics import pupil_psf_3d
    from jaxsr.simulate import widefield_psf

    name = args.psf
    if name in PSF_MODELS:
        side = 2 * int(math.ceil(3.0 * args.wavelength / args.na / pixel_size_nm)) + 1
        if side > _MAX_PSF_SIDE:
            raise ValueError(f"--pixel-size: a {pixel_size_nm:.4g} nm (upsampled) pixel would need a {side} x {side} "
                             f"PSF (limit {_MAX_PSF_SIDE}); check --pixel-size, --upsample, --wavelength and --na")
    if name in ("airy", "gaussian"):
        return np.asarray(widefield_psf(psf=name, na=args.na, wavelength_nm=args.wavelength,
                                        pixel_size_nm=pixel_size_nm))
    if name == "clid-bessel":
        return np.asarray(clid_psf("clid-bessel", na=args.na, wavelength_nm=args.wavelength,
                                   pixel_size_nm=pixel_size_nm, upsample=1))
    if name == "pupil":
        if z_step_nm is None:
            raise ValueError("--z-step: the 3D pupil PSF needs the image's z step (flag or metadata)")
        if not args.na < args.refractive_index:
            raise ValueError(f"--na: {args.na} must be below --refractive-index {args.refractive_index}")
        half = int(math.ceil(3.0 * args.wavelength / args.na / pixel_size_nm))
        # Axial extent: a few depths of field, n lambda / NA^2, at most the stack depth.
        nz = 2 * int(math.ceil(3.0 * args.refractive_index * args.wavelength / args.na**2 / z_step_nm)) + 1
        nz = min(nz, image_shape[-3] if len(image_shape) >= 3 else nz)
        return np.asarray(pupil_psf_3d((nz, 2 * half + 1, 2 * half + 1), na=args.na, wavelength_nm=args.wavelength,
                                       pixel_size_nm=pixel_size_nm, z_step_nm=z_step_nm,
                                       refractive_index=args.refractive_index))
    if not os.path.exists(name):
        raise FileNotFoundError(f"--psf: neither a model ({', '.join(PSF_MODELS)}) nor an existing file: {name}")
    psf, meta = read_image(name)
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim not in (2, 3):
        raise ValueError(f"--psf: a PSF must be 2D or 3D, got shape {psf.shape}")
    psf_pixel = args.psf_pixel_size or meta.pixel_size_nm or pixel_size_nm
    if psf.ndim == 2:
        if abs(psf_pixel - pixel_size_nm) > 1e-6 * pixel_size_nm:
            psf = np.asarray(resample_psf(psf, psf_pixel_size_nm=psf_pixel, pixel_size_nm=pixel_size_nm))
        return psf
    psf_z = args.psf_z_step or meta.z_step_nm or z_step_nm
    if z_step_nm is None or psf_z is None:
        raise ValueError("--z-step: a 3D PSF needs the image's and the PSF's z steps (flags or metadata)")
    if abs(psf_pixel - pixel_size_nm) > 1e-6 * pixel_size_nm or abs(psf_z - z_step_nm) > 1e-6 * z_step_nm:
        psf = np.asarray(resample_psf(psf, psf_pixel_size_nm=psf_pixel, pixel_size_nm=pixel_size_nm,
                                      psf_z_step_nm=psf_z, z_step_nm=z_step_nm))
    return psf
