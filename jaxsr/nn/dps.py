"""DPS: deep-physics-informed sparsity, an unsupervised resolution-extending network.

DPS (Ye et al., Intelligent Computing 2025) trains a U-Net on the images it is
to improve, without ground truth: the network output ``g`` must, once blurred
by the PSF, look like the input ``f`` (an SSIM term), while being sparse (L1)
and continuous (a Hessian penalty, the prior of sparse deconvolution). It runs
in two stages: an optional denoiser (any callable, e.g. a 3Snet model), then
the DPS network. Its claim to serve other microscopes without retraining rests
on resampling every input so that the PSF has one canonical width in pixels,
after rolling-ball-like background subtraction.

The pieces, in the order an image meets them:

1. :func:`dps_background` - background estimate (grey-scale morphological
   opening, a flat-window stand-in for the rolling ball; or Sparse-SIM's
   low-frequency estimate from :mod:`jaxsr.deconv.sparse`).
2. :func:`dps_resample_factor`, :func:`to_canonical_grid`,
   :func:`from_canonical_grid` - resampling to and from the grid where the PSF's
   Gaussian-equivalent standard deviation is ``canonical_sigma_px`` pixels.
3. :func:`dps_prepare` - denoise, remove the background, resample, scale to a
   maximum of 1.
4. :func:`dps_loss` - the training objective; :func:`dps_psf` - the PSF on
   the canonical grid.
5. :func:`train_dps` - unsupervised training with :func:`jaxsr.nn.train.fit`;
   :func:`dps_apply` - inference on images of any size;
   :func:`dps_super_resolve` - all of it on one image or stack (train on it, apply).

Weights: the loss is computed on images scaled to a maximum of 1, so the
defaults (SSIM 1, L1 0.05, Hessian 0.02) carry over between microscopes once
the image is on the canonical grid. A larger L1 weight suppresses noise but
breaks filaments into dots; a larger Hessian weight blurs. Noisy data needs
stage 1 (a denoiser); DPS alone then amplifies the noise into speckles.

Grid. The network (:class:`~jaxsr.nn.unet.UNetConfig` with ``attention=True,
back_projection=True``; its error-feedback unit works at unit scale) maps an
image to an image of the same shape, so the DPS output lies on the canonical
grid of its (resampled) input. That grid is what carries the extra
resolution: with the default ``canonical_sigma_px=2`` the pixel is about
``0.105 wavelength / NA`` (39 nm for 520 nm at NA 1.4), fine enough to hold a
1.67x gain over the widefield limit. :func:`dps_loss` also accepts an output on
an integer-times finer grid (``factor``), blurred then averaged back by binning.

Axis order ``(..., y, x)``; lengths in nm.

References:
    Ye, Z. et al. Universal and high-fidelity resolution extending for
    fluorescence microscopy using a single-training physics-informed sparse
    neural network (deep-physics-informed sparsity, DPS). Intelligent
    Computing 3, 0082 (2024/2025). https://doi.org/10.34133/icomputing.0082

    Zhao, W. et al. Sparse deconvolution improves the resolution of live-cell
    super-resolution fluorescence microscopy. Nat. Biotechnol. 40, 606-617
    (2022) (Hessian + L1 priors).

    Wang, Z. et al. Image quality assessment: from error visibility to
    structural similarity. IEEE Trans. Image Process. 13, 600-612 (2004).

    Sternberg, S. R. Biomedical image processing. Computer 16, 22-34 (1983)
    (rolling-ball background).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import (
    as_float_array,
    check_choice,
    check_finite,
    check_int,
    check_ndim,
    check_nonnegative,
    check_positive,
    check_psf,
    positive_float,
    real_float,
)
from jaxsr.deconv.sparse import BACKGROUNDS, _apply, _background, _component_weights, _components
from jaxsr.forward import bin_image, convolve
from jaxsr.metrics.quality import ssim
from jaxsr.nn.data import augment_d4, random_patches
from jaxsr.nn.train import TrainConfig, TrainResult, data_fingerprint, fit, resolve_configs
from jaxsr.nn.unet import UNetConfig, unet_apply, unet_init
from jaxsr.optics.psf import airy_psf_2d, gaussian_psf_2d

__all__ = [
    "DPS_CONFIG",
    "DPS_TRAIN",
    "DPS_BACKGROUNDS",
    "DPSPrepared",
    "DPSResult",
    "dps_resample_factor",
    "to_canonical_grid",
    "from_canonical_grid",
    "dps_psf",
    "dps_background",
    "dps_loss",
    "dps_prepare",
    "train_dps",
    "dps",
]

#: Sigma of the Gaussian approximation of a widefield PSF, in units of wavelength / NA
#: (Zhang et al., Appl. Opt. 46, 1819 (2007)); the width measure of the canonical grid.
_SIGMA_PER_LAMBDA_NA = 0.21
#: Default canonical PSF width: Gaussian-equivalent sigma in pixels of the canonical grid.
_CANONICAL_SIGMA_PX = 2.0
_METHODS = ("lanczos3", "lanczos5", "cubic", "linear")
_LOSS_WEIGHTS = {"ssim_weight": 1.0, "l1_weight": 0.05, "hessian_weight": 0.02}

DPS_CONFIG = UNetConfig(depth=3, features=16, decoder_features=32, attention=True, back_projection=True,
                        residual=True)
"""Default DPS network (164,504 parameters): attention-gated U-Net (3 poolings, 16/32 channels) with the
error-feedback unit, learning a correction added to its input (``residual=True``); small enough to train
in minutes on a CPU."""

DPS_TRAIN = TrainConfig(steps=200, batch_size=4, patch_size=48, learning_rate=1e-3, schedule="onecycle",
                        checkpoint_every=50, eval_every=25)
"""Default training settings of :func:`train_dps`: 200 Adam steps (one-cycle, peak 1e-3) on 4 random
48 x 48 patches (about 3 minutes on 2 CPU cores)."""

DPS_BACKGROUNDS = ("opening",) + tuple(BACKGROUNDS)
"""Background modes of :func:`dps_background`: ``"opening"`` and the Sparse-SIM modes of
:data:`jaxsr.deconv.sparse.BACKGROUNDS`."""


# --------------------------------------------------------------------------- #
# Canonical grid
# --------------------------------------------------------------------------- #
def dps_resample_factor(*, pixel_size_nm: Any, na: Any, wavelength_nm: Any,
                        canonical_sigma_px: Any = _CANONICAL_SIGMA_PX) -> float:
    """Resampling factor that gives the PSF a canonical width in pixels.

    The Gaussian-equivalent standard deviation of a widefield PSF is
    ``0.21 wavelength / NA`` (Zhang et al. 2007), i.e.
    ``0.21 wavelength_nm / (na * pixel_size_nm)`` pixels. Resampling by
    ``factor`` (new pixel ``pixel_size_nm / factor``) multiplies that by
    ``factor``, so

    ``factor = canonical_sigma_px * pixel_size_nm * na / (0.21 * wavelength_nm)``

    (proportional to pixel size x NA / wavelength). ``factor > 1`` upsamples.

    Args:
        pixel_size_nm: camera pixel in the sample (nm), > 0.
        na: numerical aperture, > 0.
        wavelength_nm: emission wavelength (nm), > 0.
        canonical_sigma_px: target PSF sigma on the canonical grid (pixels), > 0.

    Returns:
        The factor (Python float; it fixes array shapes, so it is static).

    Raises:
        ValueError: a non-positive or non-finite parameter (the message names it).
        TypeError: a non-numeric parameter.

    >>> round(dps_resample_factor(pixel_size_nm=65.0, na=1.4, wavelength_nm=520.0), 4)
    1.6667
    """
    px = positive_float(pixel_size_nm, "pixel_size_nm")
    na = positive_float(na, "na")
    lam = positive_float(wavelength_nm, "wavelength_nm")
    canon = positive_float(canonical_sigma_px, "canonical_sigma_px")
    return canon * px * na / (_SIGMA_PER_LAMBDA_NA * lam)


def _check_factor(factor: Any) -> float:
    f = positive_float(factor, "factor")
    if not 1e-3 <= f <= 1e3:
        raise ValueError(f"argument 'factor': expected a value between 1e-3 and 1e3, got {factor!r}")
    return f


@functools.partial(jax.jit, static_argnames=("shape", "factor", "method"))
def _resample(image: jax.Array, *, shape: tuple[int, int], factor: float, method: str) -> jax.Array:
    """Resample the last two axes: output pixel ``j`` samples input coordinate ``(j + 0.5) / factor - 0.5``.

    The input is mirror-padded first, so every output pixel (borders included)
    has its full kernel support and no sample falls outside the input.
    """
    ny, nx = image.shape[-2:]
    support = {"lanczos3": 3, "lanczos5": 5, "cubic": 2, "linear": 1}[method]
    pad = int(math.ceil(support * max(1.0, 1.0 / factor))) + 2
    pad = min(pad, ny - 1, nx - 1) if min(ny, nx) > 1 else 0
    lead = [(0, 0)] * (image.ndim - 2)
    padded = jnp.pad(image, lead + [(pad, pad), (pad, pad)], mode="symmetric") if pad else image
    out_shape = image.shape[:-2] + tuple(shape)
    dtype = image.dtype
    scale = jnp.asarray([factor, factor], dtype)
    translation = jnp.asarray([-pad * factor, -pad * factor], dtype)
    return jax.image.scale_and_translate(padded, out_shape, (image.ndim - 2, image.ndim - 1), scale, translation,
                                         method, antialias=True).astype(dtype)


def _check_image(image: Any, name: str = "image", *, min_side: int = 1) -> jax.Array:
    image = as_float_array(image, name)
    check_ndim(image, name, (), min_ndim=2)
    if min(image.shape[-2:]) < min_side:
        raise ValueError(f"argument '{name}': expected (y, x) sides of at least {min_side}, got shape "
                         f"{tuple(image.shape)}")
    check_finite(image, name)
    return image


def to_canonical_grid(image: Any, *, factor: Any, method: str = "lanczos3") -> jax.Array:
    """Resample images onto the canonical grid (pixel ``pixel_size_nm / factor``).

    Output pixel ``j`` samples the input at pixel coordinate ``(j + 0.5) /
    factor - 0.5`` (pixel-centre convention of :mod:`jaxsr.deconv.upsample`,
    so for an integer factor the grid is the one of
    :func:`~jaxsr.deconv.upsample.lanczos_upsample`), by
    :func:`jax.image.scale_and_translate` (Lanczos-3 by default, antialiased
    when ``factor < 1``) on the mirror-padded image. The output covers the
    input's field of view up to a fraction of a pixel: ``floor(n * factor)``
    samples per axis. Values are interpolated *intensities*: the mean
    intensity (flux per area) is kept, so the sum scales by about ``factor**2``.

    Args:
        image: ``(..., y, x)`` real array, finite; leading axes are batch.
        factor: static resampling factor (> 0; > 1 upsamples), e.g. from
            :func:`dps_resample_factor`.
        method: ``"lanczos3"`` (default), ``"lanczos5"``, ``"cubic"`` or ``"linear"``.

    Returns:
        ``(..., floor(y * factor), floor(x * factor))``, dtype of ``image``.

    Raises:
        ValueError: rank < 2, NaN/inf, a factor outside [1e-3, 1e3] or one that
            leaves fewer than one pixel, unknown ``method``.

    >>> import jax.numpy as jnp
    >>> out = to_canonical_grid(jnp.ones((10, 12)), factor=1.5)
    >>> out.shape, round(float(out.mean()), 5)
    ((15, 18), 1.0)
    """
    image = _check_image(image)
    f = _check_factor(factor)
    check_choice(method, "method", _METHODS)
    ny, nx = image.shape[-2:]
    shape = (int(math.floor(ny * f + 1e-6)), int(math.floor(nx * f + 1e-6)))
    if min(shape) < 1:
        raise ValueError(f"argument 'factor': {f:.4g} leaves no pixel of a {ny} x {nx} image")
    return _resample(image, shape=shape, factor=f, method=method)


def from_canonical_grid(image: Any, *, factor: Any, shape: Any, method: str = "lanczos3") -> jax.Array:
    """Resample images from the canonical grid back to the camera grid (the inverse of :func:`to_canonical_grid`).

    Camera pixel ``i`` takes the canonical-grid intensity at coordinate
    ``(i + 0.5) * factor - 0.5`` (antialiased Lanczos when ``factor > 1``).

    Args:
        image: ``(..., y, x)`` canonical-grid images.
        factor: the factor used by :func:`to_canonical_grid`.
        shape: static ``(y, x)`` of the camera-grid output (the original shape).
        method: as in :func:`to_canonical_grid`.

    Returns:
        ``(..., *shape)``, dtype of ``image``.

    Raises:
        ValueError: as :func:`to_canonical_grid`; a ``shape`` that is not two positive ints.

    >>> import jax.numpy as jnp
    >>> from_canonical_grid(jnp.ones((15, 18)), factor=1.5, shape=(10, 12)).shape
    (10, 12)
    """
    image = _check_image(image)
    f = _check_factor(factor)
    check_choice(method, "method", _METHODS)
    try:
        shape = tuple(int(check_int(s, "shape", minimum=1)) for s in shape)
    except TypeError as err:
        raise TypeError(f"argument 'shape': expected (y, x) ints, got {shape!r}") from err
    if len(shape) != 2:
        raise ValueError(f"argument 'shape': expected (y, x), got {shape!r}")
    return _resample(image, shape=shape, factor=1.0 / f, method=method)


def dps_psf(*, canonical_sigma_px: Any = _CANONICAL_SIGMA_PX, psf: str = "airy", max_size: int | None = 39):
    """The widefield PSF on the canonical grid (unit sum, centre at ``n // 2``).

    On the canonical grid the PSF depends on nothing else: wavelength / NA is
    ``canonical_sigma_px / 0.21`` pixels. ``"airy"``: the pixel-integrated Airy
    pattern (:func:`jaxsr.optics.airy_psf_2d`), the PSF of
    :func:`jaxsr.simulate.simulate_widefield`; ``"gaussian"``: a Gaussian of
    sigma ``canonical_sigma_px`` (:func:`jaxsr.optics.gaussian_psf_2d`). A measured
    PSF can be brought to the canonical pixel ``pixel_size_nm / factor`` with
    :func:`jaxsr.deconv.resample_psf` instead.

    Args:
        canonical_sigma_px: the canonical width (pixels), > 0.
        psf: ``"airy"`` or ``"gaussian"``.
        max_size: largest side (static; the default 39 fits the 48-pixel
            training patches of :data:`DPS_TRAIN` and holds 96 % of the Airy
            energy at the default width); ``None`` for radius 3 wavelength / NA.

    Returns:
        ``(n, n)`` float32 PSF, ``n`` odd.

    >>> dps_psf(psf="gaussian").shape
    (39, 39)
    """
    canon = positive_float(canonical_sigma_px, "canonical_sigma_px")
    check_choice(psf, "psf", ("airy", "gaussian"))
    lam_na = canon / _SIGMA_PER_LAMBDA_NA  # wavelength / NA in canonical pixels
    half = int(math.ceil(3.0 * lam_na))
    if max_size is not None:
        half = max(1, min(half, (check_int(max_size, "max_size", minimum=3) - 1) // 2))
    shape = (2 * half + 1, 2 * half + 1)
    if psf == "airy":
        return airy_psf_2d(shape, na=1.0, wavelength_nm=lam_na, pixel_size_nm=1.0)
    return gaussian_psf_2d(shape, sigma_nm=canon, pixel_size_nm=1.0)


# --------------------------------------------------------------------------- #
# Background
# --------------------------------------------------------------------------- #
def _smooth(x: jax.Array, sigma: float) -> jax.Array:
    half = max(1, int(math.ceil(3.0 * sigma)))
    half = min(half, (min(x.shape[-2:]) - 1) // 2)
    if half < 1:
        return x
    kernel = gaussian_psf_2d((2 * half + 1, 2 * half + 1), sigma_nm=sigma, pixel_size_nm=1.0).astype(x.dtype)
    return convolve(x, kernel, boundary="reflect")


def _window(x: jax.Array, size: int, op: str) -> jax.Array:
    init = jnp.asarray(jnp.inf if op == "min" else -jnp.inf, x.dtype)
    fn = jax.lax.min if op == "min" else jax.lax.max
    dims = (1,) * (x.ndim - 2) + (size, size)
    return jax.lax.reduce_window(x, init, fn, dims, (1,) * x.ndim, "SAME")


@functools.partial(jax.jit, static_argnames=("radius", "mode"))
def _background_jit(x: jax.Array, *, radius: float, mode: str) -> jax.Array:
    if mode == "opening":
        size = 2 * int(round(radius)) + 1
        pre = _smooth(x, max(1.0, radius / 10.0))
        opened = _window(_window(pre, size, "min"), size, "max")
        return jnp.minimum(_smooth(opened, radius / 2.0), x.max(axis=(-2, -1), keepdims=True))
    scale = jnp.max(x, axis=(-2, -1), keepdims=True)
    scale = jnp.where(scale > 0, scale, jnp.ones_like(scale))
    return _background(x / scale, mode) * scale


def dps_background(image: Any, *, radius_px: Any = 25.0, mode: str = "opening") -> jax.Array:
    """Estimate the slowly varying background of images (subtract it before DPS).

    ``"opening"`` (default) is a flat-window stand-in for the rolling ball
    (Sternberg 1983; ImageJ's "Subtract Background"): the image is smoothed by
    a Gaussian of ``max(1, radius_px / 10)`` pixels (so noise does not drag the
    minimum down), opened by a ``(2 r + 1)``-pixel square window (running minimum
    then running maximum, ``r = round(radius_px)``), which removes every
    structure narrower than the window and keeps the floor under it, and the
    result is smoothed by a Gaussian of ``radius_px / 2`` to remove the
    window's blockiness. ``radius_px`` should exceed the half-width of the
    largest structure to keep (the default 25 pixels is about 5 wavelength / NA
    on a Nyquist-sampled camera grid).

    The other modes (:data:`jaxsr.deconv.sparse.BACKGROUNDS`: ``"weak"``,
    ``"strong"``, ``"weak_low"``, ``"strong_low"``) are Sparse-SIM's iterative
    low-frequency estimate (see :func:`jaxsr.deconv.sparse_deconvolution`),
    applied to each frame scaled to a maximum of 1 and scaled back; they are
    conservative (they remove a fraction of the background) and ignore ``radius_px``.

    Args:
        image: ``(..., y, x)`` real array, finite; every frame separately.
        radius_px: window radius in pixels (``"opening"`` only), >= 1.
        mode: one of :data:`DPS_BACKGROUNDS` (static).

    Returns:
        ``(..., y, x)`` background, dtype of ``image``.

    Raises:
        ValueError: rank < 2, NaN/inf, unknown ``mode``, ``radius_px`` < 1.

    >>> import jax.numpy as jnp
    >>> img = jnp.full((40, 40), 10.0).at[20, 20].set(100.0)
    >>> round(float(dps_background(img, radius_px=5)[20, 20]), 3)
    10.0
    """
    image = _check_image(image, min_side=2)
    check_choice(mode, "mode", DPS_BACKGROUNDS)
    radius = real_float(radius_px, "radius_px")
    if not (np.isfinite(radius) and radius >= 1.0):
        raise ValueError(f"argument 'radius_px': expected a finite number >= 1, got {radius_px!r}")
    return _background_jit(image, radius=radius, mode=mode)


# --------------------------------------------------------------------------- #
# Loss
# --------------------------------------------------------------------------- #
def _hessian_l1(x: jax.Array) -> jax.Array:
    """Mean over the interior of ``|g_xx| + |g_yy| + 2 |g_xy|`` per image, shape ``x.shape[:-2]``.

    The finite differences are Sparse-SIM's (:mod:`jaxsr.deconv.sparse`:
    ``g[i+1] - 2 g[i] + g[i-1]`` and the forward-forward mixed difference) with
    its component weights 1, 1, 2; they are periodic there, so the first and
    last rows and columns are dropped here (which removes every entry the
    wrap-around touches).
    """
    weights = _component_weights(2, 1.0, 1.0)
    out = 0.0
    for (kind, axes), w in zip(_components(2), weights):
        d = _apply(kind, tuple(a + x.ndim - 2 for a in axes), x)
        out = out + w * jnp.mean(jnp.abs(d[..., 1:-1, 1:-1]), axis=(-2, -1))
    return out


def _dps_terms(output, image, psf, data_range, factor: int, boundary: str):
    blurred = convolve(output, psf, boundary=boundary)
    if factor > 1:
        blurred = bin_image(blurred, factor=factor) / (factor * factor)
    ssim_term = 1.0 - ssim(blurred, image, data_range=data_range)
    l1 = jnp.mean(jnp.abs(output), axis=(-2, -1))
    return ssim_term, l1, _hessian_l1(output)


def dps_loss(
    output: Any,
    image: Any,
    psf: Any,
    *,
    ssim_weight: Any = _LOSS_WEIGHTS["ssim_weight"],
    l1_weight: Any = _LOSS_WEIGHTS["l1_weight"],
    hessian_weight: Any = _LOSS_WEIGHTS["hessian_weight"],
    data_range: Any = 1.0,
    factor: int = 1,
    boundary: str = "reflect",
    return_terms: bool = False,
):
    """The DPS objective: physics (SSIM of the re-blurred output) + L1 sparsity + Hessian continuity.

    For an output ``g`` and input ``f`` (both scaled to about ``[0, 1]``):

    ``loss = ssim_weight * (1 - SSIM(B(g * psf), f)) + l1_weight * mean|g|
    + hessian_weight * mean(|g_xx| + |g_yy| + 2 |g_xy|)``

    * ``g * psf`` is :func:`jaxsr.forward.convolve` (``boundary="reflect"``
      by default, so a training patch is not darkened at its edges as zero
      padding would; SSIM then ignores a further ``5``-pixel border, its
      window's half-width). ``B`` is the identity for ``factor == 1`` (output on
      the input grid, the DPS network's case) and the mean over
      ``factor x factor`` blocks (:func:`jaxsr.forward.bin_image` / factor**2)
      for an output on a ``factor``-times finer grid.
    * SSIM is :func:`jaxsr.metrics.ssim` (Gaussian window 11/1.5, equal to
      scikit-image's), averaged over images.
    * The Hessian term is the L1 (not squared) norm of the second differences
      of sparse deconvolution (Zhao et al. 2022), with Sparse-SIM's stencils
      and 1/1/2 weights (imported from :mod:`jaxsr.deconv.sparse`), averaged over
      the interior pixels (the outermost row/column is dropped). The L1 norm
      is the mean absolute value. Means rather than sums keep the weights
      independent of the patch size.

    Default weights (1, 0.05, 0.02) were chosen on simulated widefield images
    scaled to a maximum of 1 on the default canonical grid (PSF sigma 2 pixels);
    see :func:`train_dps`.

    Args:
        output: ``(..., Y, X)`` network output, ``Y = factor * y``, ``X = factor * x``.
        image: ``(..., y, x)`` input the output must explain; at least 11 x 11.
        psf: ``(py, px)`` non-negative PSF on the output grid (unit sum), centre at
            ``n // 2``, not larger than the output.
        ssim_weight, l1_weight, hessian_weight: non-negative weights (traced).
        data_range: SSIM data range of ``image`` (1 for images scaled to [0, 1]).
        factor: static int >= 1, output grid / input grid.
        boundary: ``"reflect"``, ``"zero"`` or ``"periodic"`` boundary of the blur.
        return_terms: also return ``{"ssim": ..., "l1": ..., "hessian": ...}``
            (unweighted, each averaged over the batch).

    Returns:
        Scalar loss (mean over leading axes); with ``return_terms`` the tuple
        ``(loss, terms)``. Differentiable in ``output`` (and ``psf``, ``image``).

    Raises:
        ValueError: ``psf`` not 2D / negative / zero sum / NaN; ``output`` or
            ``image`` with NaN; shapes that do not match ``factor``; an image
            smaller than 11 x 11; a negative weight.

    >>> import jax.numpy as jnp
    >>> from jaxsr.forward import convolve
    >>> psf = dps_psf(psf="gaussian", max_size=9)
    >>> g = jnp.zeros((32, 32)).at[16, 16].set(1.0)
    >>> f = convolve(g, psf, boundary="reflect")
    >>> loss, terms = dps_loss(g, f, psf, data_range=float(f.max()), return_terms=True)
    >>> round(float(terms["ssim"]), 5), round(float(terms["l1"]), 6)
    (0.0, 0.000977)
    """
    factor = check_int(factor, "factor", minimum=1)
    check_choice(boundary, "boundary", ("reflect", "zero", "periodic"))
    psf = as_float_array(psf, "psf")
    check_ndim(psf, "psf", 2)
    check_psf(psf, "psf")
    output = _check_image(output, "output")
    image = _check_image(image, "image", min_side=11)
    want = image.shape[:-2] + (image.shape[-2] * factor, image.shape[-1] * factor)
    if tuple(output.shape) != want:
        raise ValueError(f"argument 'output': expected shape {want} (image shape x factor {factor}), "
                         f"got {tuple(output.shape)}")
    weights = []
    for name, value in (("ssim_weight", ssim_weight), ("l1_weight", l1_weight),
                        ("hessian_weight", hessian_weight), ("data_range", data_range)):
        v = as_float_array(value, name)
        check_ndim(v, name, 0)
        (check_positive if name == "data_range" else check_nonnegative)(v, name)
        weights.append(v)
    w_ssim, w_l1, w_hess, dr = weights
    s, l1, h = _dps_terms(output, image, psf, dr, factor, boundary)
    s, l1, h = jnp.mean(s), jnp.mean(l1), jnp.mean(h)
    loss = w_ssim * s + w_l1 * l1 + w_hess * h
    if return_terms:
        return loss, {"ssim": s, "l1": l1, "hessian": h}
    return loss


# --------------------------------------------------------------------------- #
# Preparation, training, inference
# --------------------------------------------------------------------------- #
class DPSPrepared(NamedTuple):
    """Images ready for the DPS network (see :func:`dps_prepare`).

    Attributes:
        image: ``(..., Y, X)`` background-free images on the canonical grid, each scaled to a maximum of 1.
        scale: ``(...)`` the per-frame factor the images were divided by (input units).
        factor: the resampling factor (camera grid -> canonical grid).
        pixel_size_nm: canonical pixel size, ``pixel_size_nm / factor`` (nm).
        shape: ``(y, x)`` of the camera-grid input.
    """

    image: jax.Array
    scale: jax.Array
    factor: float
    pixel_size_nm: float
    shape: tuple[int, int]


class DPSResult(NamedTuple):
    """Output of :func:`dps_apply` and :func:`dps_super_resolve`.

    Attributes:
        image: ``(..., Y, X)`` DPS reconstruction in the input's intensity units (background removed).
        pixel_size_nm: its pixel size (nm): the canonical pixel, or the camera pixel with ``grid="camera"``.
        factor: the camera-to-canonical resampling factor used.
    """

    image: jax.Array
    pixel_size_nm: float
    factor: float


def _run_denoiser(denoiser, image):
    if denoiser is None:
        return image
    if not callable(denoiser):
        raise TypeError(f"argument 'denoiser': expected a callable or None, got {type(denoiser).__name__}")
    out = as_float_array(denoiser(image), "denoiser")
    if tuple(out.shape) != tuple(image.shape):
        raise ValueError(f"argument 'denoiser': returned shape {tuple(out.shape)} for an image of shape "
                         f"{tuple(image.shape)}")
    check_finite(out, "denoiser")
    return out


def dps_prepare(
    image: Any,
    *,
    pixel_size_nm: Any,
    na: Any,
    wavelength_nm: Any,
    canonical_sigma_px: Any = _CANONICAL_SIGMA_PX,
    background: str | None = "opening",
    background_radius_px: Any = None,
    denoiser: Callable | None = None,
    method: str = "lanczos3",
) -> DPSPrepared:
    """Stage 1 and the input normalisation of DPS: denoise, remove the background, resample, scale.

    Steps: ``denoiser(image)`` on the camera grid (stage 1; skipped when
    ``None``); subtract :func:`dps_background` (``background`` mode) and clip at 0;
    :func:`to_canonical_grid` with :func:`dps_resample_factor`; clip the
    interpolation's ringing at 0; divide each frame by its maximum.

    Args:
        image: ``(..., y, x)`` camera frames (photons or ADU minus offset; any
            constant offset goes with the background), finite, at least 8 x 8.
        pixel_size_nm, na, wavelength_nm: the microscope (nm, -, nm), > 0.
        canonical_sigma_px: canonical PSF sigma (pixels) of the network's grid.
        background: a :data:`DPS_BACKGROUNDS` mode, or ``None`` to keep the background.
        background_radius_px: radius of the ``"opening"`` window in camera
            pixels; default ``5 wavelength / (NA pixel)``.
        denoiser: optional ``denoiser(image) -> image`` of the same shape (e.g. a
            trained 3Snet via :func:`jaxsr.nn.unet.unet_apply`).
        method: resampling kernel (see :func:`to_canonical_grid`).

    Returns:
        :class:`DPSPrepared`.

    Raises:
        ValueError: NaN/inf, rank < 2 or an image under 8 x 8; non-positive
            optical parameters; unknown ``background``/``method``; a denoiser
            output of another shape or with NaN.

    >>> import jax.numpy as jnp
    >>> p = dps_prepare(jnp.ones((16, 16)).at[8, 8].set(5.0), pixel_size_nm=65.0, na=1.4, wavelength_nm=520.0)
    >>> p.image.shape, round(float(p.image.max()), 4), round(p.pixel_size_nm, 2)
    ((26, 26), 1.0, 39.0)
    """
    image = _check_image(image, min_side=8)
    factor = dps_resample_factor(pixel_size_nm=pixel_size_nm, na=na, wavelength_nm=wavelength_nm,
                                 canonical_sigma_px=canonical_sigma_px)
    check_choice(method, "method", _METHODS)
    if background is not None:
        check_choice(background, "background", DPS_BACKGROUNDS)
    if background_radius_px is None:
        background_radius_px = max(1.0, 5.0 * float(wavelength_nm) / (float(na) * float(pixel_size_nm)))
    x = _run_denoiser(denoiser, image)
    if background is not None:
        x = x - dps_background(x, radius_px=background_radius_px, mode=background)
    x = jnp.maximum(x, 0.0)
    x = jnp.maximum(to_canonical_grid(x, factor=factor, method=method), 0.0)
    scale = jnp.max(x, axis=(-2, -1))
    scale = jnp.where(scale > 0, scale, jnp.ones_like(scale))
    return DPSPrepared(image=x / scale[..., None, None], scale=scale, factor=factor,
                       pixel_size_nm=float(pixel_size_nm) / factor, shape=tuple(int(n) for n in image.shape[-2:]))


def _loss_weights(ssim_weight, l1_weight, hessian_weight) -> dict[str, float]:
    out = {}
    for name, value in (("ssim_weight", ssim_weight), ("l1_weight", l1_weight), ("hessian_weight", hessian_weight)):
        v = real_float(value, name)
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"argument '{name}': must be finite and non-negative, got {value!r}")
        out[name] = v
    return out


def train_dps(
    key: jax.Array,
    images: Any,
    psf: Any,
    *,
    config: UNetConfig | None = None,
    train: TrainConfig | None = None,
    ssim_weight: Any = _LOSS_WEIGHTS["ssim_weight"],
    l1_weight: Any = _LOSS_WEIGHTS["l1_weight"],
    hessian_weight: Any = _LOSS_WEIGHTS["hessian_weight"],
    checkpoint_dir=None,
    callback: Callable | None = None,
    evaluate: Callable | None = None,
) -> TrainResult:
    """Stage 2 of DPS: train the network on the images themselves by :func:`dps_loss` (no ground truth).

    Every step draws ``train.batch_size`` random ``train.patch_size`` patches
    (:func:`jaxsr.nn.data.random_patches`, one random frame each for a stack)
    with a random flip/rot90 (:func:`jaxsr.nn.data.augment_d4`; the loss is
    D4-equivariant for a symmetric PSF), runs the network and minimises
    :func:`dps_loss` of its output against the patch (reflect boundary for the
    blur). Training runs through :func:`jaxsr.nn.train.fit`: checkpoints,
    exact resume, divergence detection.

    Defaults: :data:`DPS_CONFIG` (164,504 parameters), :data:`DPS_TRAIN` (200
    steps of 4 patches of 48 x 48, Adam 1e-3 one-cycle) and weights 1 / 0.05 /
    0.02. On simulated 128 x 128 widefield filaments (65 nm pixels, NA 1.4,
    520 nm; canonical pixel 39 nm) they raise the decorrelation resolution
    from 222 nm to about 123 nm (1.8x) for a noise-free or 3S-denoised input,
    and from 230 nm to about 112 nm for a noisy frame (200 photons peak)
    denoised by the shipped 3Snet first, without visible artefacts; training
    takes 2-3 minutes on 2 CPU cores. Noisy input without stage 1 gains in
    FRC too (about 1.7x) but its background noise turns into speckles.

    Args:
        key: PRNG key of the parameter initialisation (the batches follow ``train.seed``).
        images: ``(y, x)`` or ``(n, y, x)`` prepared images (:func:`dps_prepare`:
            canonical grid, maximum about 1), each side >= ``train.patch_size``.
        psf: ``(py, px)`` PSF on the same grid (:func:`dps_psf`), not larger than a patch.
        config: the network (default :data:`DPS_CONFIG`; must map 1 channel to 1).
        train: the :class:`~jaxsr.nn.train.TrainConfig` (default :data:`DPS_TRAIN`).
        ssim_weight, l1_weight, hessian_weight: the :func:`dps_loss` weights (>= 0).
        checkpoint_dir: optional directory for resumable checkpoints.
        callback: optional ``callback(info)`` per step (see :func:`~jaxsr.nn.train.fit`).
        evaluate: optional ``evaluate(params) -> dict`` every ``train.eval_every`` steps.

    Returns:
        :class:`~jaxsr.nn.train.TrainResult` (``params`` are Flax variables for
        :func:`~jaxsr.nn.unet.unet_apply` with ``config``).

    Raises:
        ValueError: images of the wrong rank, with NaN, or smaller than a patch;
            a bad ``psf`` (rank, sign, sum, larger than a patch); negative weights;
            a network with more than one input or output channel.
        TypeError: ``config``/``train`` of the wrong type.

    >>> import jax, jax.numpy as jnp
    >>> from jaxsr.nn.train import TrainConfig
    >>> img = jnp.zeros((32, 32)).at[10:20, 16].set(1.0)
    >>> cfg = UNetConfig(depth=1, features=2, decoder_features=2)  # tiny; DPS_CONFIG in practice
    >>> r = train_dps(jax.random.key(0), img, dps_psf(max_size=9), config=cfg,
    ...               train=TrainConfig(steps=2, batch_size=2, patch_size=16))
    >>> r.step
    2
    """
    config, train = resolve_configs(config, train, default_config=DPS_CONFIG, default_train=DPS_TRAIN)
    if config.in_channels != 1 or config.out_channels != 1:
        raise ValueError("argument 'config': DPS needs a single-channel network (in_channels = out_channels = 1)")
    images = as_float_array(images, "images")
    check_ndim(images, "images", (2, 3))
    check_finite(images, "images")
    psf = as_float_array(psf, "psf")
    check_ndim(psf, "psf", 2)
    check_psf(psf, "psf")
    p = train.patch_size
    if p < 11:
        raise ValueError(f"argument 'train': patch_size must be >= 11 (the SSIM window), got {p}")
    if min(images.shape[-2:]) < p:
        raise ValueError(f"argument 'images': (y, x) {tuple(images.shape[-2:])} is smaller than the patch size {p}")
    if max(psf.shape) > p:
        raise ValueError(f"argument 'psf': shape {tuple(psf.shape)} is larger than the patch size {p}")
    weights = _loss_weights(ssim_weight, l1_weight, hessian_weight)
    psf = (psf / jnp.sum(psf)).astype(images.dtype)
    params = unet_init(key, config=config, dtype=images.dtype)

    loss_fn, sample_batch = _dps_step_functions(config, p, train.batch_size, tuple(weights.items()))
    meta = {"kind": "dps", "unet": config.to_dict(), "weights": weights, "psf_shape": list(psf.shape),
            "data": data_fingerprint(images, psf)}  # a checkpoint of a run on other images or PSF is refused
    # the images and the PSF are arguments of the compiled step: see _dps_step_functions
    return fit(loss_fn, params, sample_batch, config=train, checkpoint_dir=checkpoint_dir, meta=meta,
               evaluate=evaluate, callback=callback, data=images, hyper=psf)


@functools.lru_cache(maxsize=8)
def _dps_step_functions(config: UNetConfig, patch_size: int, batch_size: int, weights: tuple):
    """The loss ``(params, batch, key, psf)`` and the sampler ``(key, images)`` of :func:`train_dps`.

    Cached per configuration and holding no arrays, so :func:`jaxsr.nn.train.fit` compiles the training
    step once for every run on images and a PSF of the same shapes (e.g. :func:`dps_super_resolve` on
    every frame of a series, one at a time).
    """

    def sample_batch(k, images):
        kp, ka = jax.random.split(k)
        return augment_d4(ka, *random_patches(kp, images, patch_size=patch_size, batch_size=batch_size))

    def loss_fn(prm, batch, _k, psf):
        (x,) = batch
        out = unet_apply(prm, x, config=config)
        return dps_loss(out, x, psf, **dict(weights))

    return loss_fn, sample_batch


_apply_jit = jax.jit(unet_apply, static_argnames=("config",))


def dps_apply(
    image: Any,
    params: Any,
    *,
    pixel_size_nm: Any,
    na: Any,
    wavelength_nm: Any,
    config: UNetConfig = DPS_CONFIG,
    canonical_sigma_px: Any = _CANONICAL_SIGMA_PX,
    background: str | None = "opening",
    background_radius_px: Any = None,
    denoiser: Callable | None = None,
    grid: str = "canonical",
    tile: int | None = None,
    overlap: int = 32,
    tta: bool = False,
) -> DPSResult:
    """Run a trained DPS network on camera images of any size.

    :func:`dps_prepare` (stage 1 denoiser, background, canonical grid, scale to
    max 1), the network (:func:`~jaxsr.nn.unet.unet_apply`; whole frames, or
    overlapping tiles with :func:`jaxsr.nn.predict.predict_tiled` when ``tile``
    is given), negative values clipped to 0, and the frame scale restored.

    Args:
        image: ``(..., y, x)`` camera frames (leading axes: frames), finite, >= 8 x 8.
        params: trained variables (e.g. ``train_dps(...).params``).
        pixel_size_nm, na, wavelength_nm: the microscope of ``image`` (nm, -, nm).
        config: the network configuration of ``params``.
        canonical_sigma_px: the canonical width the network was trained at.
        background, background_radius_px, denoiser: see :func:`dps_prepare`.
        grid: ``"canonical"`` (default: the network's finer grid, which holds the
            gained resolution) or ``"camera"`` (resampled back to ``(y, x)``).
        tile: tile side for tiled inference (:func:`jaxsr.nn.predict.predict_tiled`,
            blended overlapping tiles), or ``None`` for whole frames.
        overlap: tile overlap in pixels (tiled inference only).
        tta: average the outputs over the 8 flips/rotations of each frame (or tile).

    Returns:
        :class:`DPSResult` ``(image, pixel_size_nm, factor)``.

    Raises:
        ValueError: as :func:`dps_prepare`; unknown ``grid``.

    >>> import jax, jax.numpy as jnp
    >>> cfg = UNetConfig(depth=1, features=2, decoder_features=2)  # untrained, tiny: shapes only
    >>> prm = unet_init(jax.random.key(0), config=cfg)
    >>> r = dps_apply(jnp.ones((16, 20)), prm, config=cfg, pixel_size_nm=65.0, na=1.4, wavelength_nm=520.0)
    >>> r.image.shape, round(r.pixel_size_nm, 2)
    ((26, 33), 39.0)
    """
    check_choice(grid, "grid", ("canonical", "camera"))
    if not isinstance(config, UNetConfig):
        raise TypeError(f"argument 'config': expected a UNetConfig, got {type(config).__name__}")
    prep = dps_prepare(image, pixel_size_nm=pixel_size_nm, na=na, wavelength_nm=wavelength_nm,
                       canonical_sigma_px=canonical_sigma_px, background=background,
                       background_radius_px=background_radius_px, denoiser=denoiser)
    return _apply_prepared(prep, params, config=config, grid=grid, tile=tile, overlap=overlap, tta=tta,
                           pixel_size_nm=pixel_size_nm)


def _apply_prepared(prep: DPSPrepared, params, *, config, grid, tile, overlap, tta, pixel_size_nm) -> DPSResult:
    """The network on already prepared images (:func:`dps_prepare`), back to the input's intensity units."""
    x = prep.image
    if tile is None and not tta:
        out = _apply_jit(params, x, config=config)
    else:
        from jaxsr.nn.predict import predict_tiled

        m = config.multiple
        if tile is None:  # one tile per frame: only test-time augmentation
            tile, overlap = tuple(-(-n // m) * m for n in x.shape[-2:]), 0
        out = predict_tiled(functools.partial(_apply_jit, params, config=config), x, tile=tile, overlap=overlap,
                            multiple=m, tta=tta)
        out = jnp.asarray(out)
    out = jnp.maximum(out, 0.0) * prep.scale[..., None, None]
    if grid == "camera":
        out = jnp.maximum(from_canonical_grid(out, factor=prep.factor, shape=prep.shape), 0.0)
        return DPSResult(image=out, pixel_size_nm=float(pixel_size_nm), factor=prep.factor)
    return DPSResult(image=out, pixel_size_nm=prep.pixel_size_nm, factor=prep.factor)


def dps_super_resolve(
    key: jax.Array,
    image: Any,
    *,
    pixel_size_nm: Any,
    na: Any,
    wavelength_nm: Any,
    denoiser: Callable | None = None,
    config: UNetConfig | None = None,
    train: TrainConfig | None = None,
    background: str | None = "opening",
    checkpoint_dir=None,
    callback: Callable | None = None,
) -> tuple[DPSResult, TrainResult]:
    """Single-frame DPS end to end: prepare, train on the images themselves, apply.

    Runs :func:`dps_prepare` (stage 1 ``denoiser``, background removal, the
    canonical grid), :func:`train_dps` on the prepared frames (no ground truth:
    the DPS objective only needs the image and the PSF) and :func:`dps_apply`
    with the trained network. The patch size is reduced to the image when the
    canonical-grid frames are smaller than ``train.patch_size``, and the PSF
    is cropped to fit a patch.

    Args:
        key: PRNG key of the network initialisation.
        image: ``(y, x)`` or ``(n, y, x)`` raw camera frames (finite; at least
            about 16 x 16 pixels after resampling).
        pixel_size_nm, na, wavelength_nm: the microscope of ``image`` (nm, -, nm).
        denoiser: optional stage 1, ``frames -> frames`` of the same shape
            (e.g. ``lambda x: denoise(x, model=load_model(pretrained_path()))``).
        config: the network (default :data:`DPS_CONFIG`).
        train: training settings (default :data:`DPS_TRAIN`).
        background: see :func:`dps_prepare`.
        checkpoint_dir: optional directory for resumable checkpoints.
        callback: optional ``callback(info)`` per training step.

    Returns:
        ``(DPSResult, TrainResult)``: the reconstruction on the canonical grid
        (pixel ``pixel_size_nm / factor``) and the training record.

    References:
        Ye et al., "Deep-physics-informed sparsity for universal super-resolution
        fluorescence microscopy", Intelligent Computing (2025).
    """
    config, train = resolve_configs(config, train, default_config=DPS_CONFIG, default_train=DPS_TRAIN)
    prep = dps_prepare(image, pixel_size_nm=pixel_size_nm, na=na, wavelength_nm=wavelength_nm,
                       background=background, denoiser=denoiser)
    side = min(prep.image.shape[-2:])
    patch = min(train.patch_size, side)
    if patch < 11:
        raise ValueError(f"argument 'image': {tuple(prep.image.shape[-2:])} pixels on the canonical grid is "
                         "smaller than the 11-pixel SSIM window of the DPS loss")
    if patch != train.patch_size:
        train = TrainConfig(**{**train.to_dict(), "patch_size": patch})
    psf = dps_psf(max_size=min(39, patch - 1 + patch % 2))
    result = train_dps(key, prep.image, psf, config=config, train=train, checkpoint_dir=checkpoint_dir,
                       callback=callback)
    out = _apply_prepared(prep, result.params, config=config, grid="canonical", tile=None, overlap=0, tta=False,
                          pixel_size_nm=pixel_size_nm)  # the prepared frames once: stage 1 runs once
    return out, result
