"""PSF flags shared by `jaxsr deconvolve` and `jaxsr clid`: a model with parameters, or a measured TIFF."""

from __future__ import annotations

import argparse
import math
import os

import numpy as np

from jaxsr.cli._common import positive_float

PSF_MODELS = ("airy", "gaussian", "pupil", "clid-bessel")
PSF_MODELS_2D = ("airy", "gaussian", "clid-bessel")
# Largest model PSF side (its support is about 3 wavelength / NA each side): beyond it the
# pixel size is absurdly small for the wavelength (a typo), and generating it would exhaust memory.
_MAX_PSF_SIDE = 4097


def add_psf_arguments(p: argparse.ArgumentParser, *, default_psf: str, three_d: bool = True) -> None:
    """The PSF flags; ``three_d=False`` (a 2D-only command such as clid) leaves out --psf pupil's
    --refractive-index and the z flags (--z-step, --psf-z-step)."""
    g = p.add_argument_group("PSF (a model with parameters, or a measured PSF as TIFF)")
    models = PSF_MODELS if three_d else PSF_MODELS_2D
    kinds = "pupil is 3D, the others 2D; " if three_d else "a TIFF must be 2D; "
    g.add_argument("--psf", default=default_psf,
                   help=f"one of {', '.join(models)} or a PSF TIFF file (default {default_psf}); "
                        f"{kinds}clid-bessel is the CLID authors' released PSF")
    g.add_argument("--na", type=positive_float, default=1.4, help="numerical aperture (default 1.4)")
    g.add_argument("--wavelength", type=positive_float, default=520.0, help="emission wavelength nm (default 520)")
    if three_d:
        g.add_argument("--refractive-index", type=positive_float, default=1.515,
                       help="immersion refractive index for --psf pupil (default 1.515)")
    g.add_argument("--pixel-size", type=positive_float, default=None,
                   help="image pixel size nm (default: from the image's metadata)")
    if three_d:
        g.add_argument("--z-step", type=positive_float, default=None,
                       help="image z step nm for 3D stacks (default: from the image's metadata)")
    g.add_argument("--psf-pixel-size", type=positive_float, default=None,
                   help="pixel size of a PSF TIFF nm (default: its metadata, else the image's, before any "
                        "--upsample); a PSF recorded at another pixel size is resampled to the working grid")
    if three_d:
        g.add_argument("--psf-z-step", type=positive_float, default=None, help="z step of a 3D PSF TIFF nm")


def read_psf_file(args: argparse.Namespace, *, two_d_only: bool = False):
    """``(psf, metadata)`` of a PSF TIFF named by --psf, or ``None`` for a model; one-line errors naming --psf
    for a missing file, a PSF that is not 2D/3D, and (``two_d_only``, for CLID) a 3D PSF."""
    from jaxsr.io import read_image

    name = args.psf
    if two_d_only and name == "pupil":
        raise ValueError(f"--psf: CLID needs a 2D PSF ({', '.join(PSF_MODELS_2D)} or a 2D PSF TIFF); "
                         "pupil is 3D")
    if name in PSF_MODELS:
        return None
    if not os.path.exists(name):
        raise FileNotFoundError(f"--psf: neither a model ({', '.join(PSF_MODELS)}) nor an existing file: {name}")
    if os.path.isdir(name):
        raise IsADirectoryError(f"--psf: is a directory, expected a PSF TIFF: {name}")
    psf, meta = read_image(name)
    if psf.ndim not in (2, 3):
        raise ValueError(f"--psf: a PSF must be 2D or 3D, got shape {psf.shape}")
    if two_d_only and psf.ndim != 2:
        raise ValueError(f"--psf: CLID needs a 2D PSF (y, x), got shape {psf.shape} from {name}")
    return psf, meta


def build_psf(args: argparse.Namespace, *, pixel_size_nm: float, z_step_nm: float | None,
              image_shape: tuple[int, ...], image_pixel_size_nm: float | None = None,
              psf_file=None) -> np.ndarray:
    """The PSF on the target grid (``pixel_size_nm``, ``z_step_nm``), unit sum, centre n // 2.

    ``image_pixel_size_nm`` is the input image's (camera) pixel size, before any upsampling: a PSF TIFF with
    no pixel size (in its metadata or --psf-pixel-size) is taken as sampled at it (said on stdout), then
    resampled to ``pixel_size_nm``. ``None``: the PSF TIFF is on the target grid itself (no physical scale
    anywhere). ``psf_file``: the ``(psf, metadata)`` of :func:`read_psf_file`, when already read.
    """
    from jaxsr.deconv import clid_psf, resample_psf
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
    psf, meta = read_psf_file(args) if psf_file is None else psf_file
    psf = np.asarray(psf, dtype=np.float64)
    psf_pixel = args.psf_pixel_size or meta.pixel_size_nm
    if not psf_pixel:
        # no scale in the file nor a flag: the PSF was recorded on the camera, at the image's own pixel
        psf_pixel = pixel_size_nm if image_pixel_size_nm is None else image_pixel_size_nm
        if image_pixel_size_nm is not None:
            resampled = "" if abs(psf_pixel - pixel_size_nm) <= 1e-6 * pixel_size_nm else \
                f", resampled to the {pixel_size_nm:.4g} nm working grid"
            print(f"--psf-pixel-size: {name} records no pixel size; taken as the image's {psf_pixel:.4g} nm"
                  f"{resampled} (pass --psf-pixel-size to change it)")
    if psf.ndim == 2:
        if abs(psf_pixel - pixel_size_nm) > 1e-6 * pixel_size_nm:
            psf = np.asarray(resample_psf(psf, psf_pixel_size_nm=psf_pixel, pixel_size_nm=pixel_size_nm))
        return psf
    psf_z = getattr(args, "psf_z_step", None) or meta.z_step_nm
    if not psf_z and z_step_nm is not None:
        psf_z = z_step_nm
        if image_pixel_size_nm is not None:
            print(f"--psf-z-step: {name} records no z step; taken as the image's {psf_z:.4g} nm "
                  "(pass --psf-z-step to change it)")
    if z_step_nm is None or psf_z is None:
        raise ValueError("--z-step: a 3D PSF needs the image's and the PSF's z steps (flags or metadata)")
    if abs(psf_pixel - pixel_size_nm) > 1e-6 * pixel_size_nm or abs(psf_z - z_step_nm) > 1e-6 * z_step_nm:
        psf = np.asarray(resample_psf(psf, psf_pixel_size_nm=psf_pixel, pixel_size_nm=pixel_size_nm,
                                      psf_z_step_nm=psf_z, z_step_nm=z_step_nm))
    return psf
