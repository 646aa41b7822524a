"""Candidate detection and ROI extraction for single-molecule frames.

Detection: a difference-of-Gaussians band-pass (``G(sigma) - G(2.5 sigma)``,
``sigma`` the PSF standard deviation, reflect boundary) suppresses pixel noise
and the slowly varying background; candidates are its local maxima over a
``(2 r + 1)^2`` window above a threshold. The threshold is given in units of
the band-passed noise, estimated per frame robustly as 1.4826 x the median
absolute deviation of the band-passed image (so "5" means five standard
deviations whatever the brightness), or as an absolute value in photons.
The band-passed value at the maximum is each candidate's ``score`` (a
detection confidence for precision-recall curves).

The filtering and the local-maximum mask run jitted over a batch of frames;
the variable-length list of candidates is gathered on the host.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import as_float_array, check_finite, check_int, check_ndim

__all__ = ["Candidates", "detect_spots", "extract_rois"]


class Candidates(NamedTuple):
    """Detected spot candidates (host NumPy arrays of length ``n``).

    Attributes:
        frame: ``(n,)`` int frame index.
        y, x: ``(n,)`` int pixel of the local maximum (row, column).
        score: ``(n,)`` band-passed value at the maximum (photons).
        threshold: ``(frames,)`` the absolute threshold used per frame (photons).
    """

    frame: np.ndarray
    y: np.ndarray
    x: np.ndarray
    score: np.ndarray
    threshold: np.ndarray


def as_movie(frames: Any, name: str = "frames") -> jax.Array:
    """``(t, y, x)`` finite float frames from a movie or a single ``(y, x)`` frame (one-line errors)."""
    frames = as_float_array(frames, name)
    check_ndim(frames, name, (2, 3))
    if frames.ndim == 2:
        frames = frames[None]
    check_finite(frames, name)
    return frames


def _gauss_kernel(sigma: float, dtype) -> jax.Array:
    r = max(1, int(np.ceil(3.0 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return jnp.asarray(k / k.sum(), dtype)


def _separable(img: jax.Array, kernel: jax.Array) -> jax.Array:
    r = kernel.shape[0] // 2
    pad = jnp.pad(img, ((0, 0), (r, r), (r, r)), mode="reflect" if min(img.shape[-2:]) > r else "edge")
    out = jax.vmap(lambda f: jax.scipy.signal.convolve2d(f, kernel[:, None], mode="valid"))(pad)
    return jax.vmap(lambda f: jax.scipy.signal.convolve2d(f, kernel[None, :], mode="valid"))(out)


@functools.partial(jax.jit, static_argnames=("sigma", "radius"))
def _bandpass_maxima(frames, sigma, radius):
    dog = _separable(frames, _gauss_kernel(sigma, frames.dtype)) - _separable(
        frames, _gauss_kernel(2.5 * sigma, frames.dtype))
    w = 2 * radius + 1
    local_max = jax.lax.reduce_window(dog, -jnp.inf, jax.lax.max, (1, w, w), (1, 1, 1), "SAME")
    med = jnp.median(dog, axis=(-2, -1), keepdims=True)
    mad = jnp.median(jnp.abs(dog - med), axis=(-2, -1))
    # A noise-free (e.g. constant) frame has a zero noise estimate: a floor far above float rounding.
    floor = 1e-5 * jnp.max(jnp.abs(frames), axis=(-2, -1)) + 1e-12
    return dog, dog >= local_max, 1.4826 * mad, floor


def detect_spots(
    frames: Any,
    *,
    sigma_px: float,
    threshold: float = 5.0,
    absolute: bool = False,
    radius: int | None = None,
    border: int = 0,
    batch: int = 64,
) -> Candidates:
    """Find single-molecule candidates in frames.

    Args:
        frames: ``(t, y, x)`` or ``(y, x)`` frames in photons (or any linear unit), finite.
        sigma_px: PSF standard deviation in pixels (> 0).
        threshold: minimum band-passed value, in robust noise standard deviations of
            each frame (default 5), or in photons when ``absolute=True``.
        absolute: interpret ``threshold`` as photons instead of noise units.
        radius: local-maximum window half-width in pixels (default ``ceil(2 sigma_px)``);
            two candidates are at least this far apart.
        border: drop candidates closer than this to the frame edge (pixels).
        batch: frames per jitted call.

    Returns:
        :class:`Candidates`, ordered by frame, then row, then column.

    >>> import numpy as np
    >>> img = np.zeros((32, 32), np.float32); img[10, 20] = 100.0
    >>> c = detect_spots(img, sigma_px=1.0, threshold=1.0, absolute=True)
    >>> list(zip(c.frame.tolist(), c.y.tolist(), c.x.tolist()))
    [(0, 10, 20)]
    """
    frames = as_movie(frames)
    sigma = float(sigma_px)
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"argument 'sigma_px': expected a positive number of pixels, got {sigma_px}")
    thr = float(threshold)
    if not np.isfinite(thr):
        raise ValueError(f"argument 'threshold': expected a finite number, got {threshold}")
    radius = max(1, int(np.ceil(2.0 * sigma))) if radius is None else check_int(radius, "radius", minimum=1)
    border = check_int(border, "border", minimum=0)
    batch = check_int(batch, "batch", minimum=1)
    if min(frames.shape[-2:]) < 3:
        raise ValueError(f"argument 'frames': frames of {frames.shape[-2:]} pixels are too small to search")
    out_f, out_y, out_x, out_s, thresholds = [], [], [], [], []
    ny, nx = frames.shape[-2:]
    for start in range(0, frames.shape[0], batch):
        chunk = frames[start:start + batch]
        m = chunk.shape[0]
        if frames.shape[0] > batch and m < batch:  # one compiled shape (and the same rounding) for every batch
            chunk = jnp.concatenate([chunk, jnp.zeros((batch - m,) + chunk.shape[1:], chunk.dtype)])
        dog, is_max, noise, floor = (np.asarray(a)[:m] for a in _bandpass_maxima(chunk, sigma, radius))
        t_abs = np.maximum(np.full(m, thr) if absolute else thr * noise, floor)
        keep = is_max & (dog > t_abs[:, None, None]) & (dog > 0)
        if border:
            keep[:, :border] = False
            keep[:, ny - border:] = False
            keep[:, :, :border] = False
            keep[:, :, nx - border:] = False
        f, y, x = np.nonzero(keep)
        out_f.append(f + start)
        out_y.append(y)
        out_x.append(x)
        out_s.append(dog[f, y, x])
        thresholds.append(t_abs)
    return Candidates(np.concatenate(out_f).astype(np.int64), np.concatenate(out_y).astype(np.int64),
                      np.concatenate(out_x).astype(np.int64), np.concatenate(out_s).astype(np.float32),
                      np.concatenate(thresholds).astype(np.float32))


@functools.partial(jax.jit, static_argnames=("size",))
def _gather(frames, f, y0, x0, size):
    return jax.vmap(lambda i, a, b: jax.lax.dynamic_slice(frames[i], (a, b), (size, size)))(f, y0, x0)


def extract_rois(frames: Any, frame: Any, y: Any, x: Any, *, size: int) -> tuple[jax.Array, np.ndarray]:
    """Cut ``size x size`` ROIs centred on candidate pixels, shifted inside the frame at its edges.

    Args:
        frames: ``(t, y, x)`` frames (or one ``(y, x)`` frame).
        frame, y, x: ``(n,)`` integer candidate frame indices and pixels.
        size: odd ROI side in pixels, at most the frame's smaller side.

    Returns:
        ``(rois, origin)``: ``(n, size, size)`` ROIs and ``(n, 2)`` int ``(row, column)`` of each
        ROI's pixel ``(0, 0)`` in the frame (add it to a position fitted in the ROI).
    """
    frames = as_float_array(frames, "frames")
    check_ndim(frames, "frames", (2, 3))
    if frames.ndim == 2:
        frames = frames[None]
    size = check_int(size, "size", minimum=3)
    if size % 2 == 0:
        raise ValueError(f"argument 'size': expected an odd ROI side, got {size}")
    ny, nx = frames.shape[-2:]
    if size > min(ny, nx):
        raise ValueError(f"argument 'size': ROI side {size} exceeds the frame ({ny} x {nx})")
    frame, y, x = (np.asarray(a, np.int64).reshape(-1) for a in (frame, y, x))
    if not (frame.shape == y.shape == x.shape):
        raise ValueError("argument 'frame': frame, y and x must have the same length")
    if frame.size and (frame.min() < 0 or frame.max() >= frames.shape[0]):
        raise ValueError(f"argument 'frame': indices must be in [0, {frames.shape[0]})")
    half = size // 2
    y0 = np.clip(y - half, 0, ny - size)
    x0 = np.clip(x - half, 0, nx - size)
    origin = np.stack([y0, x0], axis=1)
    if frame.size == 0:
        return jnp.zeros((0, size, size), frames.dtype), origin.reshape(0, 2)
    rois = _gather(frames, jnp.asarray(frame), jnp.asarray(y0), jnp.asarray(x0), size)
    return rois, origin
