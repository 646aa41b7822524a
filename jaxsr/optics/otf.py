"""PSF <-> OTF conversion with one centring convention for the whole package.

Convention: the centre of a PSF of size ``n`` along an axis is index ``n // 2``
(the ``numpy.fft.fftshift`` convention), for odd and even sizes alike. A PSF
built by :mod:`jaxsr.optics` puts the optical axis there, and every
convolution/deconvolution in jaxsr reads it there, so a point source stays
where it is (no half-pixel or one-pixel shift).

Axis order: the last ``psf.ndim`` axes, ``(y, x)`` or ``(z, y, x)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from jaxsr._validate import as_float_array, check_ndim, check_shape

__all__ = ["psf_to_otf", "otf_to_psf", "centre_pad_psf"]


def centre_pad_psf(psf: jnp.ndarray, shape: Sequence[int]) -> jnp.ndarray:
    """Zero-pad (or centre-crop) ``psf`` to ``shape`` keeping its centre at ``n // 2``.

    Args:
        psf: ``(..., y, x)`` or ``(..., z, y, x)`` PSF; its last ``len(shape)`` axes are resized.
        shape: target sizes of the last axes.

    Returns:
        The resized PSF, centre at index ``shape[i] // 2`` on each axis.
    """
    shape = check_shape(shape, "shape")
    nd = len(shape)
    psf = as_float_array(psf, "psf")
    check_ndim(psf, "psf", 0, min_ndim=nd)
    out = psf
    for i, target in enumerate(shape):
        axis = psf.ndim - nd + i
        n = out.shape[axis]
        c = n // 2
        tc = target // 2
        if target >= n:
            before = tc - c
            after = target - n - before
            widths = [(0, 0)] * out.ndim
            widths[axis] = (before, after)
            out = jnp.pad(out, widths)
        else:
            start = c - tc
            out = jnp.take(out, jnp.arange(start, start + target), axis=axis)
    return out


def psf_to_otf(psf: jnp.ndarray, shape: Sequence[int]) -> jnp.ndarray:
    """Real-FFT optical transfer function of ``psf`` on a grid of ``shape``.

    The PSF is zero-padded to ``shape`` (centre kept at ``n // 2``) and rolled so
    its centre sits at index 0, then ``rfftn`` is taken over the last
    ``len(shape)`` axes. Multiplying ``rfftn(image) * otf`` and inverting gives
    a circular convolution that does not shift the image.

    Args:
        psf: ``(..., y, x)`` or ``(..., z, y, x)`` PSF, not larger than ``shape``.
        shape: grid size of the last axes, e.g. the (padded) image shape.

    Returns:
        Complex array ``(..., shape[:-1]..., shape[-1] // 2 + 1)``.

    >>> import jax.numpy as jnp
    >>> otf = psf_to_otf(jnp.ones((3, 3)) / 9.0, (8, 8))
    >>> otf.shape, round(float(otf[0, 0].real), 6)
    ((8, 5), 1.0)
    """
    shape = check_shape(shape, "shape")
    nd = len(shape)
    psf = as_float_array(psf, "psf")
    check_ndim(psf, "psf", 0, min_ndim=nd)
    axes = tuple(range(psf.ndim - nd, psf.ndim))
    for ax, target in zip(axes, shape):
        if psf.shape[ax] > target:
            raise ValueError(
                f"argument 'psf': size {psf.shape[ax]} on axis {ax} is larger than the grid size {target}"
            )
    padded = centre_pad_psf(psf, shape)
    rolled = jnp.roll(padded, tuple(-(s // 2) for s in shape), axis=axes)
    return jnp.fft.rfftn(rolled, s=shape, axes=axes)


def otf_to_psf(otf: jnp.ndarray, shape: Sequence[int]) -> jnp.ndarray:
    """Inverse of :func:`psf_to_otf`: a real PSF of ``shape``, centre at ``n // 2``.

    Args:
        otf: complex ``(..., shape[:-1]..., shape[-1] // 2 + 1)`` array, as returned by
            :func:`psf_to_otf`.
        shape: real grid size of the last axes.

    Returns:
        Real ``(..., *shape)`` PSF with its centre at index ``shape[i] // 2``.

    >>> import jax.numpy as jnp
    >>> psf = otf_to_psf(jnp.ones((4, 3), jnp.complex64), (4, 4))
    >>> [int(i) for i in jnp.unravel_index(jnp.argmax(psf), psf.shape)]
    [2, 2]
    """
    shape = check_shape(shape, "shape")
    nd = len(shape)
    otf = jnp.asarray(otf)
    check_ndim(otf, "otf", 0, min_ndim=nd)
    want = (*shape[:-1], shape[-1] // 2 + 1)
    if tuple(otf.shape[otf.ndim - nd:]) != want:
        raise ValueError(
            f"argument 'otf': last axes {tuple(otf.shape[otf.ndim - nd:])} do not match the rfft of "
            f"shape {shape} (expected {want})"
        )
    axes = tuple(range(otf.ndim - nd, otf.ndim))
    psf = jnp.fft.irfftn(otf, s=shape, axes=axes)
    return jnp.roll(psf, tuple(s // 2 for s in shape), axis=axes)
