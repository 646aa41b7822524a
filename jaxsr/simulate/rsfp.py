"""ON/OFF image series of a reversibly switchable fluorescent protein (RSFP) sample (3S / CLID simulation).

Follows the simulation protocol of the 3Snet-CLID paper (Xue et al., Nat.
Commun. 2026) as described in its text: the ground truth is blurred by the PSF
and normalised to the 0-255 range; every ON frame holds that signal plus a
fixed-pattern background plus fresh noise (Poisson with ``lam = 5`` and
Gaussian with ``std = 5``); every OFF frame holds the same background and
fresh noise but no signal; 50 ON/OFF cycles at 65 nm camera pixels, NA 1.49,
488 nm. Interpretation choices made here (the released simulation code was not
available): the noise is *additive* and independent of the signal (a
``Poisson(lam)`` count, mean ``lam``, plus zero-mean Gaussian noise, drawn
independently for every pixel of every frame); the normalisation divides by
the maximum of the blurred image (so zero stays zero); values are neither
clipped nor quantised.

Axis order ``(y, x)`` per image; series are ``(n_cycles, y, x)``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from jaxsr._validate import (
    as_float_array,
    check_finite,
    check_int,
    check_ndim,
    check_nonnegative,
    check_positive,
    check_psf,
    check_shape,
    is_concrete,
)
from jaxsr.forward import bin_image, convolve

__all__ = ["simulate_rsfp_series", "rsfp_background", "RSFPSeries"]


class RSFPSeries(NamedTuple):
    """Result of :func:`simulate_rsfp_series` (a tuple ``(on, off, clean)``).

    Attributes:
        on: ``(n_cycles, y, x)`` ON-state frames (signal + background + noise).
        off: ``(n_cycles, y, x)`` OFF-state frames (background + noise).
        clean: ``(y, x)`` noise-free blurred signal normalised to ``[0, peak]``
            ("GT_blur"), on the camera grid; the expectation of ``AVG(ON) - AVG(OFF)``.
    """

    on: jax.Array
    off: jax.Array
    clean: jax.Array


# Above this Poisson rate the inverse-CDF table (about lam + 12 sqrt(lam) entries)
# would be needlessly large: jax.random.poisson is used instead.
_MAX_TABLE_LAM = 1e4


def _check_key(key):
    """A JAX PRNG key: a typed key array or a raw ``uint32[2]`` key, else a one-line TypeError."""
    ok = isinstance(key, jax.Array) and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape == (2,))
    )
    if not ok and not isinstance(key, jax.core.Tracer):
        raise TypeError(f"argument 'key': expected a JAX PRNG key, e.g. jax.random.key(0), got {type(key).__name__}")


def _scalar(x, name, *, positive):
    a = as_float_array(x, name)
    if a.ndim != 0:
        raise ValueError(f"argument '{name}': expected a scalar, got shape {tuple(a.shape)}")
    (check_positive if positive else check_nonnegative)(a, name)
    return a


@functools.partial(jax.jit, static_argnames=("shape",))
def _background(key, shape, level, contrast, correlation):
    ny, nx = shape
    white = jax.random.normal(key, shape, dtype=level.dtype)
    fy = jnp.fft.fftfreq(ny, dtype=level.dtype)[:, None]
    fx = jnp.fft.rfftfreq(nx, dtype=level.dtype)[None, :]
    transfer = jnp.exp(-2.0 * jnp.square(jnp.pi * correlation) * (jnp.square(fy) + jnp.square(fx)))
    field = jnp.fft.irfft2(jnp.fft.rfft2(white) * transfer, s=shape)
    field = field - jnp.mean(field)
    field = field / jnp.maximum(jnp.std(field), jnp.finfo(field.dtype).tiny)
    return jnp.maximum(level * (1.0 + contrast * field), 0.0)


def rsfp_background(key, shape, *, level=85.0, contrast=0.5, correlation_px=None):
    """A smooth random fixed-pattern background, ``max(level * (1 + contrast * z), 0)``.

    ``z`` is white Gaussian noise low-pass filtered (periodically, by FFT) with a
    Gaussian kernel of standard deviation ``correlation_px`` pixels and then
    standardised to zero mean and unit variance over the image, so the
    background has mean about ``level`` and standard deviation about
    ``level * contrast``, varying smoothly over ``correlation_px`` pixels.

    The default ``level`` is chosen for the 3Snet-CLID Fig. 1 simulation: the
    paper reports a single raw frame at 8.2 dB pSNR against the 0-255
    blurred ground truth, i.e. an RMS difference of about 99 grey levels, which
    the noise alone (RMS about 7.7 including the Poisson mean of 5) cannot
    explain; a background of mean 85 and standard deviation 42.5 gives about
    8.2 dB.

    Args:
        key: JAX PRNG key.
        shape: static ``(ny, nx)``.
        level: mean background (same units as the 0-255 signal), >= 0.
        contrast: relative standard deviation of the pattern, >= 0.
        correlation_px: correlation length in pixels (> 0); default ``max(shape) / 8``.

    Returns:
        ``(ny, nx)`` non-negative background, float32 (float64 under x64 with float64 ``level``).

    References:
        Xue et al., "High-fidelity single-frame computational super-resolution
        using signal-preserving denoising-enabled deconvolution" (3Snet-CLID),
        Nat. Commun. (2026), Fig. 1 simulation.

    >>> import jax
    >>> bg = rsfp_background(jax.random.key(0), (32, 32))
    >>> bg.shape, bool(bg.min() >= 0)
    ((32, 32), True)
    """
    _check_key(key)
    shape = check_shape(shape, "shape", 2)
    level = _scalar(level, "level", positive=False)
    contrast = _scalar(contrast, "contrast", positive=False)
    corr = max(shape) / 8.0 if correlation_px is None else correlation_px
    corr = _scalar(corr, "correlation_px", positive=True)
    dtype = jnp.result_type(level, contrast, corr)
    return _background(key, shape, level.astype(dtype), contrast.astype(dtype), corr.astype(dtype))


def _poisson_cdf(lam: float) -> np.ndarray:
    """CDF of Poisson(lam) at 0..K-1 (float64), K >= lam + 12 sqrt(lam) + 20 (tail beyond < 1e-15).

    K is rounded up to a power of two (at least 64) so that nearby rates share a
    compiled kernel; entries past the support are exactly 1 and are never selected.
    """
    need = int(math.ceil(lam + 12.0 * math.sqrt(lam) + 20.0))
    k = np.arange(max(64, 1 << (need - 1).bit_length()), dtype=np.float64)
    log_pmf = special.xlogy(k, lam) - lam - special.gammaln(k + 1.0)
    return np.minimum(np.cumsum(np.exp(log_pmf)), 1.0)


def _poisson(key, lam, cdf, shape, dtype):
    """Poisson(lam) counts: inverse-CDF sampling when the CDF table is known (fast to compile)."""
    if cdf is None:
        return jax.random.poisson(key, lam, shape).astype(dtype)
    u = jax.random.uniform(key, shape, dtype=cdf.dtype)
    return jnp.searchsorted(cdf, u, side="right").astype(dtype)


@functools.partial(jax.jit, static_argnames=("n_cycles", "binning", "generate_background"))
def _simulate(key, obj, psf, background, n_cycles, binning, generate_background, lam, cdf, std, peak, level):
    k_bg, k_p, k_g = jax.random.split(key, 3)
    blurred = convolve(obj, psf, boundary="zero")
    if binning > 1:
        blurred = bin_image(blurred, factor=binning)
    clean = blurred * (peak / jnp.max(blurred))
    dtype = clean.dtype
    if generate_background:
        background = _background(k_bg, clean.shape, level.astype(dtype), jnp.asarray(0.5, dtype),
                                 jnp.asarray(max(clean.shape) / 8.0, dtype))
    # One draw of each kind for both series (index 0: ON, 1: OFF).
    shape = (2, n_cycles) + clean.shape
    noise = _poisson(k_p, lam, cdf, shape, dtype) + std * jax.random.normal(k_g, shape, dtype)
    on = clean + background + noise[0]
    off = background + noise[1]
    return RSFPSeries(on, off, clean)


def simulate_rsfp_series(
    key,
    obj,
    psf,
    *,
    n_cycles=50,
    background_pattern=None,
    background_level=85.0,
    poisson_lam=5.0,
    gaussian_std=5.0,
    peak=255.0,
    binning=1,
):
    """Simulate the ON and OFF image series of an RSFP sample (the 3S input).

    Protocol (3Snet-CLID, Fig. 1 simulation):

    1. ``clean = bin(convolve(obj, psf)) * peak / max(...)``: the object is
       blurred with the PSF (zero boundary, :func:`jaxsr.forward.convolve`),
       summed over ``binning x binning`` blocks onto the camera grid
       (:func:`jaxsr.forward.bin_image`; camera pixel ``i`` covers fine pixels
       ``binning * i ... binning * i + binning - 1``), and normalised so its
       maximum is ``peak`` (0-255 by default).
    2. A fixed-pattern background ``B`` (``background_pattern``, or a smooth
       random field from :func:`rsfp_background` with mean ``background_level``,
       drawn from ``key``) is the same in every ON and OFF frame.
    3. ``on[t] = clean + B + Poisson(poisson_lam) + Normal(0, gaussian_std^2)`` and
       ``off[t] = B + Poisson(poisson_lam) + Normal(0, gaussian_std^2)``, with
       independent noise for every pixel of every frame. The noise is additive
       and does not depend on the signal; the Poisson term has mean
       ``poisson_lam``, which cancels in ``AVG(ON) - AVG(OFF)``.

    So ``E[AVG(ON) - AVG(OFF)] = clean`` exactly, and its noise variance per
    pixel is ``2 (poisson_lam + gaussian_std^2) / n_cycles`` (1.2 grey levels^2
    for the defaults, about 47.4 dB pSNR at peak 255).

    Args:
        key: JAX PRNG key (background pattern and all noise).
        obj: ``(Y, X)`` non-negative ground truth on the simulation grid (e.g.
            the fine grid, ``binning`` times finer than the camera), with a
            positive sum; ``Y`` and ``X`` divisible by ``binning``.
        psf: ``(ky, kx)`` PSF at the pixel size of ``obj`` (centre ``k // 2``),
            non-negative with positive sum, not larger than ``obj``.
        n_cycles: static int >= 1, number of ON/OFF cycles (frames per series).
        background_pattern: ``(Y // binning, X // binning)`` fixed background on the
            camera grid, or ``None`` to draw one from ``key``.
        background_level: mean of the drawn background (ignored when
            ``background_pattern`` is given).
        poisson_lam: rate of the additive Poisson noise (>= 0).
        gaussian_std: standard deviation of the additive Gaussian noise (>= 0).
        peak: maximum of the normalised clean signal (> 0).
        binning: static int >= 1, simulation pixels per camera pixel per axis.

    Returns:
        :class:`RSFPSeries` ``(on, off, clean)``: ``(n_cycles, y, x)``,
        ``(n_cycles, y, x)`` and ``(y, x)`` on the camera grid, float32 (or the
        dtype of ``obj``).

    Raises:
        ValueError: bad ranks or shapes, negative/NaN values, an all-zero
            ``obj``, a size not divisible by ``binning``, a background of the
            wrong shape, an empty ``obj``.
        TypeError: ``key`` not a JAX PRNG key; non-numeric arrays.

    References:
        Xue et al., "High-fidelity single-frame computational super-resolution
        using signal-preserving denoising-enabled deconvolution" (3Snet-CLID),
        Nat. Commun. (2026).

    >>> import jax, jax.numpy as jnp
    >>> obj = jnp.zeros((12, 12)).at[6, 6].set(1.0)
    >>> s = simulate_rsfp_series(jax.random.key(0), obj, jnp.ones((3, 3)) / 9, n_cycles=4, binning=3)
    >>> s.on.shape, s.off.shape, s.clean.shape, float(s.clean.max())
    ((4, 4, 4), (4, 4, 4), (4, 4), 255.0)
    """
    _check_key(key)
    n_cycles = check_int(n_cycles, "n_cycles", minimum=1)
    binning = check_int(binning, "binning", minimum=1)
    obj = as_float_array(obj, "obj")
    check_ndim(obj, "obj", 2)
    if obj.size == 0:
        raise ValueError(f"argument 'obj': is empty, got shape {tuple(obj.shape)}")
    check_nonnegative(obj, "obj")
    if is_concrete(obj) and not float(jnp.max(obj)) > 0:
        raise ValueError("argument 'obj': must have a positive sum (an empty object has no signal to normalise)")
    psf = as_float_array(psf, "psf")
    check_psf(psf, "psf", ndim=2)
    if psf.shape[0] > obj.shape[0] or psf.shape[1] > obj.shape[1]:
        raise ValueError(f"argument 'psf': larger than 'obj' {tuple(obj.shape)}, got {tuple(psf.shape)}")
    if obj.shape[0] % binning or obj.shape[1] % binning:
        raise ValueError(f"argument 'obj': shape {tuple(obj.shape)} is not divisible by binning={binning}")
    cam_shape = (obj.shape[0] // binning, obj.shape[1] // binning)
    lam = _scalar(poisson_lam, "poisson_lam", positive=False)
    std = _scalar(gaussian_std, "gaussian_std", positive=False)
    peak = _scalar(peak, "peak", positive=True)
    level = _scalar(background_level, "background_level", positive=False)
    dtype = jnp.result_type(obj, psf)
    # Poisson counts by inverse-CDF sampling from a table built here when the rate is
    # concrete (compiles in a fraction of the time of jax.random.poisson); traced
    # rates and rates above _MAX_TABLE_LAM fall back to jax.random.poisson.
    cdf = jnp.asarray(_poisson_cdf(float(lam)), dtype) if is_concrete(lam) and float(lam) <= _MAX_TABLE_LAM else None
    if background_pattern is None:
        background = jnp.zeros((), dtype)
    else:
        background = as_float_array(background_pattern, "background_pattern")
        if background.shape != cam_shape:
            raise ValueError(
                f"argument 'background_pattern': expected the camera-grid shape {cam_shape}, "
                f"got {tuple(background.shape)}"
            )
        check_finite(background, "background_pattern")
        background = background.astype(dtype)
    return _simulate(
        key, obj.astype(dtype), psf.astype(dtype), background, n_cycles, binning, background_pattern is None,
        lam.astype(dtype), cdf, std.astype(dtype), peak.astype(dtype), level.astype(dtype),
    )
