"""A constant background estimate for Richardson-Lucy: a low percentile of the smoothed image.

Richardson-Lucy models the image as ``H x + b``; a background ``b`` left out (a camera offset, the
out-of-focus and autofluorescence floor) is deconvolved as signal and lowers the contrast of the
result. :func:`estimate_background` takes, per image, the ``percentile``-th percentile of the image
smoothed by a Gaussian of ``sigma_px`` pixels: smoothing averages the shot noise of the dark pixels
down (a percentile of the raw pixels would sit several noise standard deviations below the floor),
and a low percentile stays on the floor wherever some of the field is empty. Where no part of the
field is free of structure the estimate includes the dimmest structure; the estimate errs low by
about the smoothed noise, the safe side for RL (a background set too high clips real signal).

Measured on ``jaxsr simulate`` fields (128 x 128, sCMOS, true floor 134.8 ADU: 100 offset plus 20
photons): filaments, lines, beads and rings gave 132.7-134.2 ADU with the defaults.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import as_float_array, check_finite, check_int, positive_float, real_float

__all__ = ["estimate_background"]


def _gauss_1d(sigma: float, dtype) -> jax.Array:
    """Normalised Gaussian taps out to ``int(4 sigma + 0.5)`` (scipy.ndimage's default truncation)."""
    r = max(1, int(4.0 * sigma + 0.5))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return jnp.asarray(k / k.sum(), dtype)


def _smooth_axis(x: jax.Array, kernel: jax.Array, axis: int) -> jax.Array:
    """Convolution along ``axis`` with mirror ('symmetric', scipy's 'reflect') boundaries."""
    r = kernel.shape[0] // 2
    x = jnp.moveaxis(x, axis, -1)
    n = x.shape[-1]
    m = np.arange(-r, n + r) % (2 * n)                           # ... b a | a b ... y z | z y ..., repeated
    idx = jnp.asarray(np.where(m < n, m, 2 * n - 1 - m))         # (also for sides shorter than the radius)
    padded = jnp.take(x, idx, axis=-1)
    out = sum(kernel[k] * padded[..., k:k + n] for k in range(kernel.shape[0]))   # shifted copies: O(image) memory
    return jnp.moveaxis(out, -1, axis)


def estimate_background(image: Any, *, sigma_px: float = 2.0, percentile: float = 5.0, spatial: int = 2) -> jax.Array:
    """Constant background of each image: a low percentile of the image smoothed by a Gaussian.

    Args:
        image: ``(..., y, x)`` images (``spatial=2``) or ``(..., z, y, x)`` stacks (``spatial=3``),
            any units (photons, ADU); finite.
        sigma_px: standard deviation of the smoothing Gaussian, pixels (> 0), along every spatial axis.
        percentile: the percentile of the smoothed image, in ``[0, 100]``.
        spatial: number of trailing spatial axes, 2 or 3.

    Returns:
        ``image.shape[:-spatial]`` array (a scalar for one image): the background in the image's units,
        float32 (float64 for float64 input).

    Raises:
        ValueError: a non-positive or non-finite ``sigma_px``, ``percentile`` outside ``[0, 100]``,
            ``spatial`` not 2 or 3, fewer than ``spatial`` axes, non-finite values.
        TypeError: ``sigma_px`` or ``percentile`` not a real number (a string, a list), ``spatial`` not an
            int, ``image`` not numeric.

    >>> import jax.numpy as jnp
    >>> float(estimate_background(jnp.full((16, 16), 7.0)))
    7.0
    """
    spatial = check_int(spatial, "spatial")
    if spatial not in (2, 3):
        raise ValueError(f"argument 'spatial': expected 2 or 3 spatial axes, got {spatial!r}")
    sigma = positive_float(sigma_px, "sigma_px")
    q = real_float(percentile, "percentile", "a number in [0, 100]")
    if not (0.0 <= q <= 100.0):
        raise ValueError(f"argument 'percentile': expected a value in [0, 100], got {percentile!r}")
    x = as_float_array(image, "image")
    if x.ndim < spatial:
        raise ValueError(f"argument 'image': expected at least {spatial} axes, got shape {tuple(x.shape)}")
    check_finite(x, "image")
    kernel = _gauss_1d(sigma, x.dtype)
    for axis in range(x.ndim - spatial, x.ndim):
        x = _smooth_axis(x, kernel, axis)
    flat = x.reshape(x.shape[:-spatial] + (-1,))
    return jnp.percentile(flat, q, axis=-1)
