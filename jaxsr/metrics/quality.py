"""Full-reference image quality: PSNR and SSIM, in JAX (differentiable).

Axis order: ``(..., y, x)``. The last two axes are the image; any leading axes
are a batch, and the functions also work under ``jax.vmap`` and ``jax.jit``.
Both functions return one value per image (shape ``(...)``).

Both metrics are differentiable with respect to ``image`` and ``reference``
(and to the physical options ``data_range``, ``sigma``, ``k1``, ``k2``), so
they can serve as training losses. The window size of SSIM is static.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from jaxsr._validate import as_float_array, check_finite, check_int, check_ndim, check_positive

__all__ = ["psnr", "ssim"]


def _prepare_pair(image: Any, reference: Any) -> tuple[jax.Array, jax.Array]:
    """Convert both inputs to a common float dtype and check rank, shape and values."""
    image = as_float_array(image, "image")
    reference = as_float_array(reference, "reference")
    check_ndim(image, "image", 2, min_ndim=2)
    check_ndim(reference, "reference", 2, min_ndim=2)
    if image.shape != reference.shape:
        raise ValueError(
            f"argument 'reference': shape {tuple(reference.shape)} does not match "
            f"argument 'image' of shape {tuple(image.shape)}"
        )
    check_finite(image, "image")
    check_finite(reference, "reference")
    dtype = jnp.result_type(image.dtype, reference.dtype)
    return image.astype(dtype), reference.astype(dtype)


def _prepare_data_range(data_range: Any, dtype) -> jax.Array:
    if data_range is None:
        raise TypeError("argument 'data_range': required (the peak-to-peak range of the reference), got None")
    data_range = as_float_array(data_range, "data_range")
    check_positive(data_range, "data_range")
    return data_range.astype(dtype)


def psnr(image: Any, reference: Any, *, data_range: Any) -> jax.Array:
    """Peak signal-to-noise ratio in decibels.

    ``PSNR = 10 log10(data_range**2 / MSE)`` with the mean squared error taken
    over the last two axes; the same definition as
    ``skimage.metrics.peak_signal_noise_ratio``. Identical images give ``+inf``.

    Args:
        image: ``(..., y, x)`` float array, the image to score.
        reference: ``(..., y, x)`` float array of the same shape, the ground truth.
        data_range: peak-to-peak range of the data (e.g. ``1.0`` for images in
            ``[0, 1]``, ``reference.max() - reference.min()`` for photon counts).
            Required, positive; a scalar or an array broadcastable to the batch
            shape ``(...)``.

    Returns:
        ``(...)`` array of PSNR values in dB (dtype of the inputs); ``+inf`` where
        the images are identical (with a zero gradient there, not NaN).

    Raises:
        ValueError: rank below 2, shape mismatch, NaN/inf in an input, or a
            non-positive ``data_range``.

    References:
        Z. Wang and A. C. Bovik, "Mean squared error: love it or leave it?",
        IEEE Signal Processing Magazine 26(1), 98-117 (2009).

    Example:
        >>> import jax.numpy as jnp
        >>> ref = jnp.zeros((4, 4))
        >>> round(float(psnr(ref + 0.1, ref, data_range=1.0)), 3)
        20.0
    """
    image, reference = _prepare_pair(image, reference)
    data_range = _prepare_data_range(data_range, image.dtype)
    return _psnr_core(image, reference, data_range)


@jax.jit
def _psnr_core(image: jax.Array, reference: jax.Array, data_range: jax.Array) -> jax.Array:
    mse = jnp.mean((image - reference) ** 2, axis=(-2, -1))
    # Identical images: the value is +inf and the gradient is set to 0 (the
    # maximum) instead of the 0/0 = NaN of the plain formula.
    positive = mse > 0
    safe = jnp.where(positive, mse, 1.0)
    return jnp.where(positive, 10.0 * jnp.log10(data_range**2 / safe), jnp.inf)


def _gaussian_taps(win_size: int, sigma: jax.Array) -> jax.Array:
    """Normalised 1-D Gaussian of ``win_size`` taps centred on the middle tap."""
    radius = (win_size - 1) // 2
    offsets = jnp.arange(-radius, radius + 1, dtype=sigma.dtype)
    taps = jnp.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / jnp.sum(taps)


def _filter_axis(x: jax.Array, taps: jax.Array, axis: int) -> jax.Array:
    """Correlate ``x`` with ``taps`` along ``axis`` (-2 or -1), mirror-padded ('symmetric').

    Symmetric padding repeats the edge sample (``d c b a | a b c d``), which is
    what ``scipy.ndimage`` calls ``mode='reflect'``. Leading axes are folded into
    the batch of one ``conv_general_dilated`` (full precision, also on GPU).
    """
    win_size = taps.shape[0]
    radius = (win_size - 1) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    xp = jnp.pad(x, pad, mode="symmetric")
    lead = xp.shape[:-2]
    xp = xp.reshape((-1, 1) + xp.shape[-2:])
    kernel = taps.reshape((1, 1, win_size, 1) if axis % x.ndim == x.ndim - 2 else (1, 1, 1, win_size))
    out = jax.lax.conv_general_dilated(
        xp, kernel.astype(xp.dtype), (1, 1), "VALID", precision=jax.lax.Precision.HIGHEST
    )
    return out.reshape(lead + out.shape[-2:])


def ssim(
    image: Any,
    reference: Any,
    *,
    data_range: Any,
    win_size: int = 11,
    sigma: Any = 1.5,
    k1: Any = 0.01,
    k2: Any = 0.03,
    return_map: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Structural similarity index (Wang et al. 2004) with a Gaussian window.

    Local means, variances and the covariance are Gaussian-weighted averages
    (``win_size`` taps, standard deviation ``sigma``, normalised to sum 1),
    computed with mirror-padded borders (``scipy.ndimage`` mode ``'reflect'``).
    The SSIM map ``(2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``,
    with ``C1 = (k1 * data_range)**2`` and ``C2 = (k2 * data_range)**2``, is
    averaged over the interior of the image, i.e. after cropping
    ``(win_size - 1) // 2`` pixels from every edge, where the window does not
    reach the padding. The variances are population (biased) moments.

    With the defaults this equals
    ``skimage.metrics.structural_similarity(image, reference, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=data_range)``
    (skimage truncates its Gaussian at ``3.5 * sigma``; to match it with another
    ``sigma`` pass ``win_size = 2 * int(3.5 * sigma + 0.5) + 1``).

    Args:
        image: ``(..., y, x)`` float array, the image to score.
        reference: ``(..., y, x)`` float array of the same shape.
        data_range: peak-to-peak range of the data; required, positive; scalar or
            broadcastable to the batch shape ``(...)``.
        win_size: odd number of Gaussian taps per axis (static), ``>= 3``; each
            of the last two axes must be at least this long.
        sigma: standard deviation of the Gaussian window in pixels (traced).
        k1: constant of the luminance term (traced scalar, > 0).
        k2: constant of the contrast/structure term (traced scalar, > 0). Zero
            constants would give 0/0 on flat regions.
        return_map: also return the full-size SSIM map.

    Returns:
        ``(...)`` mean SSIM per image; with ``return_map=True`` the tuple
        ``(mean_ssim, ssim_map)`` where ``ssim_map`` is ``(..., y, x)``.

    Raises:
        ValueError: rank below 2, shape mismatch, NaN/inf in an input, an image
            smaller than the window, an even or too small ``win_size``, or a
            non-positive (or non-scalar) ``sigma``/``k1``/``k2``, or a non-positive
            ``data_range``.

    References:
        Z. Wang, A. C. Bovik, H. R. Sheikh and E. P. Simoncelli, "Image quality
        assessment: from error visibility to structural similarity", IEEE Trans.
        Image Process. 13(4), 600-612 (2004).

    Example:
        >>> import jax.numpy as jnp
        >>> ref = jnp.linspace(0.0, 1.0, 256).reshape(16, 16)
        >>> float(ssim(ref, ref, data_range=1.0))
        1.0
    """
    image, reference = _prepare_pair(image, reference)
    win_size = check_int(win_size, "win_size", minimum=3)
    if win_size % 2 != 1:
        raise ValueError(f"argument 'win_size': must be odd, got {win_size}")
    if min(image.shape[-2:]) < win_size:
        raise ValueError(
            f"argument 'image': each of the last two axes must be >= win_size={win_size}, "
            f"got shape {tuple(image.shape)}"
        )
    dtype = image.dtype
    data_range = _prepare_data_range(data_range, dtype)
    sigma = as_float_array(sigma, "sigma").astype(dtype)
    check_ndim(sigma, "sigma", 0)
    check_positive(sigma, "sigma")
    k1 = as_float_array(k1, "k1").astype(dtype)
    check_ndim(k1, "k1", 0)
    check_positive(k1, "k1")
    k2 = as_float_array(k2, "k2").astype(dtype)
    check_ndim(k2, "k2", 0)
    check_positive(k2, "k2")
    mean, ssim_map = _ssim_core(image, reference, data_range, sigma, k1, k2, win_size=win_size)
    if return_map:
        return mean, ssim_map
    return mean


@partial(jax.jit, static_argnames=("win_size",))
def _ssim_core(image, reference, data_range, sigma, k1, k2, *, win_size):
    """Mean SSIM over the interior and the full SSIM map (inputs already checked)."""
    taps = _gaussian_taps(win_size, sigma)
    # Filter the five moment images in one pass over a stacked leading axis.
    stack = jnp.stack([image, reference, image * image, reference * reference, image * reference])
    filtered = _filter_axis(_filter_axis(stack, taps, -2), taps, -1)
    mu_x, mu_y, m_xx, m_yy, m_xy = filtered
    var_x = m_xx - mu_x * mu_x
    var_y = m_yy - mu_y * mu_y
    cov_xy = m_xy - mu_x * mu_y

    dr = jnp.asarray(data_range)[..., None, None]
    c1 = (k1 * dr) ** 2
    c2 = (k2 * dr) ** 2
    numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    ssim_map = numerator / denominator

    pad = (win_size - 1) // 2
    interior = ssim_map[..., pad : ssim_map.shape[-2] - pad, pad : ssim_map.shape[-1] - pad]
    return jnp.mean(interior, axis=(-2, -1)), ssim_map
