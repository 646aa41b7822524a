"""Super-resolution images from localization tables, and their FRC resolution.

Rendering grid: pixel ``(i, j)`` of size ``p`` covers ``[i p, (i + 1) p) x [j p, (j + 1) p)``
nm (jaxsr's convention: the outer corner of pixel ``(0, 0)`` at 0 nm); axis
order ``(y, x)``. Histogram rendering counts localizations per pixel; Gaussian
rendering adds, per localization, a unit-mass pixel-integrated Gaussian with
the localization's own precision (its CRLB, at least ``min_sigma_nm``) or a
fixed width, truncated to the ``(2 h + 1)^2`` pixels around the localization's
pixel, ``h = ceil(3 s) + 1`` for the width ``s`` in render pixels, and
renormalised. The localizations are drawn in groups of similar ``h`` (powers of
two) and in chunks, so memory follows the typical width, not the widest. Every
localization needs finite ``x_nm`` and ``y_nm`` (one-line ``ValueError`` naming
``locs`` otherwise).

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
    except (TypeError, ValueError):
        raise ValueError(f"argument '{name}': columns x_nm and y_nm must be numeric") from None
    if x.shape != y.shape:
        raise ValueError(f"argument '{name}': x_nm and y_nm differ in length ({x.size} and {y.size})")
    bad = int(np.sum(~(np.isfinite(x) & np.isfinite(y))))
    if bad:
        raise ValueError(f"argument '{name}': {bad} of {x.size} localizations have a non-finite x_nm or y_nm "
                         "(drop them first)")
    return x, y, get


def _grid(pixel_size_nm, shape, x, y):
    p = float(pixel_size_nm)
    if not (np.isfinite(p) and p > 0):
        raise ValueError(f"argument 'pixel_size_nm': expected a positive pixel size in nm, got {pixel_size_nm}")
    if shape is None:
        if len(x) == 0:
            raise ValueError("argument 'shape': needed when there are no localizations")
        if np.max(y) < 0 or np.max(x) < 0:
            raise ValueError("argument 'locs': every localization lies at a negative x_nm or y_nm (outside any "
                             "image); give shape")
        shape = (int(np.ceil(np.max(y) / p)) + 1, int(np.ceil(np.max(x) / p)) + 1)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"argument 'shape': expected (ny, nx) >= 1, got {shape}")
    return p, shape


def render_histogram(locs: Any, *, pixel_size_nm: float, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Count localizations per render pixel.

    Args:
        locs: table with ``x_nm``, ``y_nm`` (a :class:`~jaxsr.smlm.localize.Localizations` or dict),
            finite.
        pixel_size_nm: render pixel size (nm).
        shape: ``(ny, nx)`` output size; default: just large enough for every localization.

    Returns:
        ``(ny, nx)`` float32 counts (localizations outside the field are dropped).

    Raises:
        ValueError: a NaN or infinite ``x_nm``/``y_nm`` (naming ``locs``), or a bad pixel size or shape.

    >>> render_histogram({"x_nm": [5.0, 15.0, 16.0], "y_nm": [5.0, 5.0, 5.0]}, pixel_size_nm=10.0, shape=(1, 3))
    array([[1., 2., 0.]], dtype=float32)
    """
    x, y, _ = _xy(locs)
    p, shape = _grid(pixel_size_nm, shape, x, y)
    h, _, _ = np.histogram2d(y, x, bins=shape, range=((0, shape[0] * p), (0, shape[1] * p)))
    return h.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("shape", "half"))
def _splat_gaussians(y_px, x_px, s_px, h_px, shape, half):
    """Sum of unit-mass Gaussians, each over the pixels within ``h_px <= half`` of its own pixel."""
    k = jnp.arange(-half, half + 1)

    def one(cy, cx, s, h):
        iy = jnp.floor(cy).astype(jnp.int32) + k
        ix = jnp.floor(cx).astype(jnp.int32) + k
        sq = math.sqrt(2.0) * s

        def prof(i, c):  # pixel i covers [i, i + 1) in pixel units; zero beyond the localization's own h
            p = 0.5 * (jax.scipy.special.erf((i + 1 - c) / sq) - jax.scipy.special.erf((i - c) / sq))
            return jnp.where(jnp.abs(k) <= h, p, 0.0)

        py, px = prof(iy, cy), prof(ix, cx)
        w = jnp.outer(py, px)
        return iy, ix, w / jnp.maximum(jnp.sum(w), 1e-30)

    iy, ix, w = jax.vmap(one)(y_px, x_px, s_px, h_px)
    iy = jnp.broadcast_to(iy[:, :, None], w.shape)
    ix = jnp.broadcast_to(ix[:, None, :], w.shape)
    valid = (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1])
    image = jnp.zeros(shape, w.dtype)
    return image.at[jnp.where(valid, iy, shape[0]), jnp.where(valid, ix, shape[1])].add(w, mode="drop")


_SPLAT_BUDGET = 1 << 22  # window pixels per call (each a weight and two indices): about 50 MB


def _splat_grouped(y_px: np.ndarray, x_px: np.ndarray, s_px: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """:func:`_splat_gaussians` by groups of half-widths (the next power of two of each ``ceil(3 s) + 1``)
    and chunks of at most ``_SPLAT_BUDGET`` window pixels, padded to powers of two of rows (few compiled
    shapes); a localization's weights do not depend on the group it is drawn in."""
    own = np.ceil(3.0 * s_px).astype(np.int64) + 1
    group = 1 << np.ceil(np.log2(own)).astype(np.int64)
    image = jnp.zeros(shape, jnp.float32)
    for half in np.unique(group):
        idx = np.nonzero(group == half)[0]
        side = 2 * int(half) + 1
        rows = min(max(1, _SPLAT_BUDGET // side**2), 1 << int(np.ceil(np.log2(idx.size))))
        for start in range(0, idx.size, rows):
            take = idx[start:start + rows]
            pad = rows - take.size  # padding rows far outside the field: dropped
            cols = [np.concatenate([a[take], np.full(pad, fill)]) for a, fill in
                    ((y_px, -4.0 * half - 8.0), (x_px, -4.0 * half - 8.0), (s_px, 1.0), (own, 1))]
            image = image + _splat_gaussians(jnp.asarray(cols[0], jnp.float32), jnp.asarray(cols[1], jnp.float32),
                                             jnp.asarray(cols[2], jnp.float32), jnp.asarray(cols[3], jnp.int32),
                                             shape, int(half))
    return np.asarray(image, np.float32)


def render_gaussian(locs: Any, *, pixel_size_nm: float, shape: tuple[int, int] | None = None,
                    sigma_nm: float | None = None, min_sigma_nm: float = 0.0) -> np.ndarray:
    """Render each localization as a unit-mass Gaussian (its precision, or a fixed width).

    Args:
        locs: table with finite ``x_nm``, ``y_nm`` and, when ``sigma_nm`` is None,
            ``crlb_x_nm``/``crlb_y_nm`` (finite or NaN; a NaN width becomes ``min_sigma_nm``).
        pixel_size_nm: render pixel size (nm).
        shape: ``(ny, nx)`` output size; default: just large enough for every localization.
        sigma_nm: fixed Gaussian width (nm); None uses each localization's CRLB (rms of x and y).
        min_sigma_nm: lower bound on the width (nm, finite, >= 0), e.g. half the render pixel.

    Returns:
        ``(ny, nx)`` float32 image; it sums to the number of localizations well inside the field.

    Raises:
        ValueError: a NaN or infinite ``x_nm``/``y_nm`` or an infinite CRLB (naming ``locs``), a
            non-positive or non-finite ``sigma_nm``, a negative or non-finite ``min_sigma_nm``.
    """
    x, y, get = _xy(locs)
    p, shape = _grid(pixel_size_nm, shape, x, y)
    try:
        min_sigma = float(min_sigma_nm)
    except (TypeError, ValueError):
        raise ValueError(f"argument 'min_sigma_nm': expected a number of nm, got {min_sigma_nm!r}") from None
    if not (np.isfinite(min_sigma) and min_sigma >= 0):
        raise ValueError(f"argument 'min_sigma_nm': expected a finite width >= 0 nm, got {min_sigma_nm}")
    if sigma_nm is None:
        try:
            s = np.sqrt(0.5 * (np.square(np.asarray(get("crlb_x_nm"), np.float64))
                               + np.square(np.asarray(get("crlb_y_nm"), np.float64)))).reshape(-1)
        except KeyError:
            raise ValueError("argument 'sigma_nm': the table has no crlb_x_nm/crlb_y_nm; give a fixed width") from None
        if s.shape != x.shape:
            raise ValueError(f"argument 'locs': crlb_x_nm/crlb_y_nm hold {s.size} values for {x.size} localizations")
        if np.isinf(s).any():
            raise ValueError(f"argument 'locs': {int(np.isinf(s).sum())} localizations have an infinite "
                             "crlb_x_nm or crlb_y_nm (give sigma_nm, or drop them)")
    else:
        try:
            width = float(sigma_nm)
        except (TypeError, ValueError):
            raise ValueError(f"argument 'sigma_nm': expected a positive width in nm, got {sigma_nm!r}") from None
        if not (np.isfinite(width) and width > 0):
            raise ValueError(f"argument 'sigma_nm': expected a positive width in nm, got {sigma_nm}")
        s = np.full(len(x), width)
    s = np.maximum(np.nan_to_num(s, nan=min_sigma), max(min_sigma, 1e-3 * p)) / p
    if len(x) == 0:
        return np.zeros(shape, np.float32)
    return _splat_grouped(y / p, x / p, s, shape)


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
