"""Resample a measured PSF onto the image's pixel grid.

Axis order: ``(y, x)`` or ``(z, y, x)``; lengths in nm. The PSF's centre is index
``n // 2`` on every axis before and after (the package convention of
:mod:`jaxsr.optics.otf`).

Method (per axis, separable): the samples are taken as a band-limited signal,
represented by their trigonometric (DFT) interpolant, and the new samples are
evaluated from it at the new positions ``(j - m // 2) * new_step``:

* laterally (``y``, ``x``) the values are **pixel-integrated** intensities (a
  camera pixel collects the light falling on its area), so the input pixel's box
  is divided out in Fourier space (``sinc(f * psf_pixel_size_nm)``, which stays
  above ``2 / pi`` inside the input band) and the output pixel's box is applied
  (``sinc(f * pixel_size_nm)``): the result is the PSF integrated over the new
  pixels, exact for a band-limited PSF sampled finely enough;
* axially (``z``) the planes are **point samples** at their focal positions (a
  z-stack images planes), so the interpolant is evaluated there directly.

Output positions outside the measured PSF's extent are set to 0; small negative
ringing of the interpolant is clipped to 0 and the result is renormalised to
unit sum. This is the resampling pycudadecon and deconwolf apply to a PSF
measured with another voxel size; computing the PSF directly on the image grid
(a model PSF) is better when possible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import as_float_array, check_ndim, check_psf, check_shape, positive_float

__all__ = ["resample_psf"]


# Largest output size per axis: the resampling matrix costs (new size) x (old size)^2
# complex numbers to build, and a larger PSF means a pixel size off by orders of magnitude.
_MAX_SIDE = 4097


def _default_size(n: int, step_in: float, step_out: float) -> int:
    """Odd size whose samples all lie inside the input's extent."""
    half = int(math.floor(((n - 1) // 2) * step_in / step_out + 1e-9))
    return 2 * half + 1


def _resample_matrix(n: int, m: int, step_in: float, step_out: float, integrate: bool) -> np.ndarray:
    """``(m, n)`` matrix taking ``n`` samples at ``step_in`` to ``m`` samples at ``step_out`` (float64)."""
    x_in = (np.arange(n) - n // 2) * step_in
    x_out = (np.arange(m) - m // 2) * step_out
    k = np.arange(-(n // 2), n - n // 2)  # -n//2 .. (n-1)//2
    freq = k / (n * step_in)
    if integrate:
        gain = (step_out * np.sinc(freq * step_out)) / (step_in * np.sinc(freq * step_in))
    else:
        gain = np.ones_like(freq)
    phase = np.exp(2j * np.pi * freq[None, None, :] * (x_out[:, None, None] - x_in[None, :, None]))
    mat = np.real(np.sum(gain[None, None, :] * phase, axis=-1)) / n
    lo, hi = x_in[0] - 0.5 * step_in, x_in[-1] + 0.5 * step_in
    outside = (x_out < lo - 1e-9 * step_in) | (x_out > hi + 1e-9 * step_in)
    mat[outside, :] = 0.0
    return mat


def resample_psf(
    psf: Any,
    *,
    psf_pixel_size_nm: float,
    pixel_size_nm: float,
    psf_z_step_nm: float | None = None,
    z_step_nm: float | None = None,
    shape: Sequence[int] | None = None,
) -> jax.Array:
    """Resample a measured PSF to the image's pixel size (and z step), centre kept at ``n // 2``.

    See the module docstring for the method: lateral values are treated as
    pixel-integrated (the input pixel is divided out and the output pixel
    integrated, in Fourier space), axial planes as point samples.

    Args:
        psf: ``(y, x)`` or ``(z, y, x)`` non-negative PSF with a positive sum, centre at
            index ``n // 2``; values may be traced (the resampling is linear in them).
        psf_pixel_size_nm: lateral pixel size the PSF was recorded with (nm).
        pixel_size_nm: lateral pixel size of the image (nm).
        psf_z_step_nm: plane spacing of a 3D PSF (nm); required for 3D, rejected for 2D.
        z_step_nm: plane spacing of the image (nm); required for 3D, rejected for 2D.
        shape: static output shape (length ``psf.ndim``). Default: on each axis the
            largest odd size whose samples lie within the input PSF's extent.

    Returns:
        The resampled PSF (dtype of ``psf``), non-negative, unit sum, centre at
        index ``shape[i] // 2``.

    Raises:
        ValueError: ``psf`` not 2D/3D, with NaN/inf, negative values or a zero sum;
            a non-positive pixel size or z step; z steps missing for a 3D PSF or
            given for a 2D one; ``shape`` of the wrong length or over 4097 per axis
            (also for the default shape: message names ``pixel_size_nm``); nothing
            of the PSF inside ``shape``.
        TypeError: a non-numeric (or str/bool) pixel size.

    >>> import jax.numpy as jnp
    >>> from jaxsr.optics import gaussian_psf_2d
    >>> fine = gaussian_psf_2d((61, 61), sigma_nm=100.0, pixel_size_nm=20.0)
    >>> coarse = resample_psf(fine, psf_pixel_size_nm=20.0, pixel_size_nm=60.0)
    >>> coarse.shape, round(float(coarse.sum()), 5), [int(i) for i in jnp.unravel_index(jnp.argmax(coarse), coarse.shape)]
    ((21, 21), 1.0, [10, 10])
    """
    psf = as_float_array(psf, "psf")
    check_ndim(psf, "psf", (2, 3))
    check_psf(psf, "psf")
    nd = psf.ndim
    p_in = positive_float(psf_pixel_size_nm, "psf_pixel_size_nm")
    p_out = positive_float(pixel_size_nm, "pixel_size_nm")
    if nd == 3:
        if psf_z_step_nm is None:
            raise ValueError("argument 'psf_z_step_nm': required for a 3D psf")
        if z_step_nm is None:
            raise ValueError("argument 'z_step_nm': required for a 3D psf")
        steps_in = (positive_float(psf_z_step_nm, "psf_z_step_nm"), p_in, p_in)
        steps_out = (positive_float(z_step_nm, "z_step_nm"), p_out, p_out)
        integrate = (False, True, True)
    else:
        for name, value in (("psf_z_step_nm", psf_z_step_nm), ("z_step_nm", z_step_nm)):
            if value is not None:
                raise ValueError(f"argument '{name}': only applies to a 3D psf, got a 2D psf")
        steps_in, steps_out, integrate = (p_in, p_in), (p_out, p_out), (True, True)

    if shape is None:
        shape = tuple(_default_size(n, a, b) for n, a, b in zip(psf.shape, steps_in, steps_out))
        if max(shape) > _MAX_SIDE:
            raise ValueError(
                f"argument 'pixel_size_nm': resampling to {p_out:.4g} nm would give a psf of shape {shape} "
                f"(limit {_MAX_SIDE} per axis); check the pixel sizes, or pass shape"
            )
    else:
        shape = check_shape(shape, "shape", nd)
        if max(shape) > _MAX_SIDE:
            raise ValueError(f"argument 'shape': at most {_MAX_SIDE} per axis, got {shape}")

    out = psf
    for axis in range(nd):
        mat = _resample_matrix(psf.shape[axis], shape[axis], steps_in[axis], steps_out[axis], integrate[axis])
        out = jnp.moveaxis(jnp.tensordot(jnp.asarray(mat, psf.dtype), out, axes=([1], [axis])), 0, axis)
    out = jnp.maximum(out, 0.0)
    total = jnp.sum(out)
    if not isinstance(total, jax.core.Tracer) and not float(total) > 0:
        raise ValueError(f"argument 'shape': no part of the psf falls inside the output shape {shape}")
    return out / total
