"""Super-resolution images from localization tables, and their FRC resolution.

Rendering grid: pixel ``(i, j)`` of size ``p`` covers ``[i p, (i + 1) p) x [j p, (j + 1) p)``
nm (jaxsr's convention: the outer corner of pixel ``(0, 0)`` at 0 nm); axis
order ``(y, x)``. Histogram rendering counts localizations per pixel; Gaussian
rendering adds, per localization, a unit-mass pixel-integrated Gaussian with
the localization's own precision (its CRLB, at least ``min_sigma_nm``) or a
fixed width, truncated at 3 standard deviations and renormalised.

FRC (Nieuwenhuizen et al., Nat. Methods 10, 557 (2013)): the localizations
are split into two halves by blocks of consecutive frames (so that the repeated
localizations of one blinking event stay in the same half, which a random split
would spread over both and so overestimate the resolution), each half is
rendered, and :func:`jaxsr.metrics.frc` gives the resolution at the 1/7 threshold.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr.metrics.resolution import FRCResult, frc
from jaxsr.smlm.localize import column_getter

__all__ = ["render_histogram", "render_gaussian", "frc_localizations"]


def _xy(locs: Any, name: str = "locs"):
    get = column_getter(locs)
    try:
        x = np.asarray(get("x_nm"), np.float64).reshape(-1)
        y = np.asarray(get("y_nm"), np.float64).reshape(-1)
    except KeyError:
        raise ValueError(f"argument '{name}': needs columns x_nm and y_nm") from None
    return x, y, get


def _grid(pixel_size_nm, shape, x, y):
    p = float(pixel_size_nm)
    if not (np.isfinite(p) and p > 0):
        raise ValueError(f"argument 'pixel_size_nm': expected a positive pixel size in nm, got {pixel_size_nm}")
    if shape is None:
        if len(x) == 0:
            raise ValueError("argument 'shape': needed when there are no localizations")
        shape = (int(np.ceil(np.max(y) / p)) + 1, int(np.ceil(np.max(x) / p)) + 1)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"argument 'shape': expected (ny, nx) >= 1, got {shape}")
    return p, shape


def render_histogram(locs: Any, *, pixel_size_nm: float, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Count localizations per render pixel.

    Args:
        locs: table with ``x_nm``, ``y_nm`` (a :class:`~jaxsr.smlm.localize.Localizations` or dict).
        pixel_size_nm: render pixel size (nm).
        shape: ``(ny, nx)`` output size; default: just large enough for every localization.

    Returns:
        ``(ny, nx)`` float32 counts (localizations outside the field are dropped).

    >>> render_histogram({"x_nm": [5.0, 15.0, 16.0], "y_nm": [5.0, 5.0, 5.0]}, pixel_size_nm=10.0, shape=(1, 3))
    array([[1., 2., 0.]], dtype=float32)
    """
    x, y, _ = _xy(locs)
    p, shape = _grid(pixel_size_nm, shape, x, y)
    h, _, _ = np.histogram2d(y, x, bins=shape, range=((0, shape[0] * p), (0, shape[1] * p)))
    return h.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("shape", "half"))
def _splat_gaussians(y_px, x_px, s_px, shape, half):
    k = jnp.arange(-half, half + 1)

    def one(cy, cx, s):
        iy = jnp.floor(cy).astype(jnp.int32) + k
        ix = jnp.floor(cx).astype(jnp.int32) + k
        sq = math.sqrt(2.0) * s

        def prof(i, c):  # pixel i covers [i, i + 1) in pixel units
            return 0.5 * (jax.scipy.special.erf((i + 1 - c) / sq) - jax.scipy.special.erf((i - c) / sq))

        py, px = prof(iy, cy), prof(ix, cx)
        w = jnp.outer(py, px)
        return iy, ix, w / jnp.maximum(jnp.sum(w), 1e-30)

    iy, ix, w = jax.vmap(one)(y_px, x_px, s_px)
    iy = jnp.broadcast_to(iy[:, :, None], w.shape)
    ix = jnp.broadcast_to(ix[:, None, :], w.shape)
    valid = (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1])
    image = jnp.zeros(shape, w.dtype)
    return image.at[jnp.where(valid, iy, shape[0]), jnp.where(valid, ix, shape[1])].add(w, mode="drop")


def render_gaussian(locs: Any, *, pixel_size_nm: float, shape: tuple[int, int] | None = None,
                    sigma_nm: float | None = None, min_sigma_nm: float = 0.0) -> np.ndarray:
    """Render each localization as a unit-mass Gaussian (its precision, or a fixed width).

    Args:
        locs: table with ``x_nm``, ``y_nm`` and, when ``sigma_nm`` is None, ``crlb_x_nm``/``crlb_y_nm``.
        pixel_size_nm: render pixel size (nm).
        shape: ``(ny, nx)`` output size; default: just large enough for every localization.
        sigma_nm: fixed Gaussian width (nm); None uses each localization's CRLB (rms of x and y).
        min_sigma_nm: lower bound on the width (nm), e.g. half the render pixel.

    Returns:
        ``(ny, nx)`` float32 image; it sums to the number of localizations well inside the field.
    """
    x, y, get = _xy(locs)
    p, shape = _grid(pixel_size_nm, shape, x, y)
    if sigma_nm is None:
        try:
            s = np.sqrt(0.5 * (np.square(np.asarray(get("crlb_x_nm"), np.float64))
                               + np.square(np.asarray(get("crlb_y_nm"), np.float64))))
        except KeyError:
            raise ValueError("argument 'sigma_nm': the table has no crlb_x_nm/crlb_y_nm; give a fixed width") from None
    else:
        if not (np.isfinite(sigma_nm) and sigma_nm > 0):
            raise ValueError(f"argument 'sigma_nm': expected a positive width in nm, got {sigma_nm}")
        s = np.full(len(x), float(sigma_nm))
    s = np.maximum(np.nan_to_num(s, nan=min_sigma_nm), max(min_sigma_nm, 1e-3 * p)) / p
    if len(x) == 0:
        return np.zeros(shape, np.float32)
    half = int(np.ceil(3.0 * float(np.max(s)))) + 1
    out = _splat_gaussians(jnp.asarray(y / p, jnp.float32), jnp.asarray(x / p, jnp.float32),
                           jnp.asarray(s, jnp.float32), shape, half)
    return np.asarray(out, np.float32)


def frc_localizations(locs: Any, *, pixel_size_nm: float = 10.0, shape: tuple[int, int] | None = None,
                      block_frames: int = 100, sigma_nm: float | None = None) -> FRCResult:
    """FRC resolution of a localization table from two halves split by blocks of frames.

    Args:
        locs: table with ``frame``, ``x_nm``, ``y_nm``.
        pixel_size_nm: render pixel size (nm; well below the expected resolution).
        shape: render size (default: the extent of the localizations).
        block_frames: frames per block; even blocks form one half, odd blocks the other.
        sigma_nm: render each half with Gaussians of this width; None renders histograms.

    Returns:
        :class:`~jaxsr.metrics.FRCResult` (resolution at the 1/7 threshold, nm).
    """
    x, y, get = _xy(locs)
    try:
        frame = np.asarray(get("frame")).reshape(-1)
    except KeyError:
        raise ValueError("argument 'locs': needs a frame column to split the halves") from None
    if int(block_frames) < 1:
        raise ValueError(f"argument 'block_frames': expected >= 1, got {block_frames}")
    p, shape = _grid(pixel_size_nm, shape, x, y)
    half = (frame // int(block_frames)) % 2 == 0
    if half.all() or (~half).all():
        raise ValueError("argument 'block_frames': all localizations fall in one half; use smaller blocks")
    images = []
    for m in (half, ~half):
        sub = {"x_nm": x[m], "y_nm": y[m]}
        images.append(render_histogram(sub, pixel_size_nm=p, shape=shape) if sigma_nm is None
                      else render_gaussian(sub, pixel_size_nm=p, shape=shape, sigma_nm=sigma_nm))
    return frc(images[0], images[1], pixel_size_nm=p)
