"""Candidate detection and ROI extraction for single-molecule frames.

Detection: a difference-of-Gaussians band-pass (``G(sigma) - G(2.5 sigma)``,
``sigma`` the PSF standard deviation, reflect boundary) suppresses pixel noise
and the slowly varying background; candidates are its local maxima over a
``(2 r + 1)^2`` window above a threshold (of equal maxima closer than that, the
first in row-major order). The threshold is given in units of the band-passed
noise, or as an absolute value in photons. The band-passed noise is estimated per
frame from the pixel noise, which is taken where spots barely reach: 1.4826 x the
median absolute deviation of the frame's second differences along both axes
(the kernel ``[1, -2, 1]`` (x) ``[1, -2, 1]``, divided by its L2 norm 6), which
cancel any background linear in x or in y and most of a spot's smooth profile.
White noise of that s.d. through the band-pass has the s.d. times the band-pass
kernel's L2 norm, the noise unit of the threshold; so "5" means five standard
deviations of the background's band-passed noise, whatever the brightness or
density of the molecules. (The median absolute deviation of the band-passed
image itself, the estimate before, grew with them: the band-pass's wide negative
lobes spread every spot over many pixels.) Near the frame edges the reflected
boundary folds the band-pass kernel onto itself, so its noise is higher there (about
1.25 x on an edge, 1.5 x in a corner): the threshold follows it pixel by pixel.
The band-passed value at the maximum is each candidate's ``score`` (a detection
confidence for precision-recall curves).

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
        threshold: ``(frames,)`` the absolute threshold used per frame (photons); with a threshold
            in noise units, the one away from the edges (within about ``7.5 sigma`` of an edge it
            rises with the band-passed noise there, see the module docstring).
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


def _gauss_kernel_np(sigma: float) -> np.ndarray:
    r = max(1, int(np.ceil(3.0 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return k / k.sum()


def _gauss_kernel(sigma: float, dtype) -> jax.Array:
    return jnp.asarray(_gauss_kernel_np(sigma), dtype)


def _separable(img: jax.Array, kernel: jax.Array) -> jax.Array:
    r = kernel.shape[0] // 2
    pad = jnp.pad(img, ((0, 0), (r, r), (r, r)), mode="reflect" if min(img.shape[-2:]) > r else "edge")
    out = jax.vmap(lambda f: jax.scipy.signal.convolve2d(f, kernel[:, None], mode="valid"))(pad)
    return jax.vmap(lambda f: jax.scipy.signal.convolve2d(f, kernel[None, :], mode="valid"))(out)


@functools.lru_cache(maxsize=32)
def _dog_norm(sigma: float) -> float:
    """L2 norm of the 2D band-pass kernel ``G(sigma) (x) G(sigma) - G(2.5 sigma) (x) G(2.5 sigma)``.

    White noise of s.d. ``s`` through the band-pass has the s.d. ``s`` times this norm (away from
    the frame edges).
    """
    g1, g2 = _gauss_kernel_np(sigma), _gauss_kernel_np(2.5 * sigma)
    pad = (g2.size - g1.size) // 2
    g1 = np.pad(g1, (pad, pad))
    return float(np.sqrt(np.sum(np.square(np.outer(g1, g1) - np.outer(g2, g2)))))


def _filter_matrix(kernel: np.ndarray, n: int, mode: str) -> np.ndarray:
    """``(n, n)`` matrix of the 1D filter :func:`_separable` applies along an axis of ``n`` pixels."""
    r = kernel.size // 2
    padded = np.pad(np.eye(n), ((r, r), (0, 0)), mode=mode)
    return sum(kernel[k] * padded[k:k + n] for k in range(kernel.size))


@functools.lru_cache(maxsize=16)
def _edge_gain(sigma: float, ny: int, nx: int) -> np.ndarray:
    """``(ny, nx)`` s.d. of white noise through the band-pass per pixel, relative to :func:`_dog_norm`.

    1 away from the edges; near them the reflected boundary folds the kernel onto itself and the
    ratio rises (to about 1.25 on an edge and 1.5 in a corner for ``sigma`` 1.3), which the detection
    threshold follows. Row ``i`` of ``A = Y1 (x) X1 - Y2 (x) X2`` (the 1D filter matrices of the two
    Gaussians) has the squared norm ``sum over k of A[i, k]^2``, a sum of products of 1D terms.
    """
    g1, g2 = _gauss_kernel_np(sigma), _gauss_kernel_np(2.5 * sigma)
    terms = []
    for n in (ny, nx):
        m1, m2 = (_filter_matrix(g, n, "reflect" if min(ny, nx) > g.size // 2 else "edge") for g in (g1, g2))
        terms.append((np.sum(m1 * m1, 1), np.sum(m1 * m2, 1), np.sum(m2 * m2, 1)))
    (a11, a12, a22), (b11, b12, b22) = terms
    var = np.outer(a11, b11) - 2.0 * np.outer(a12, b12) + np.outer(a22, b22)
    return (np.sqrt(np.maximum(var, 0.0)) / _dog_norm(sigma)).astype(np.float32)


def _pixel_noise(frames: jax.Array) -> jax.Array:
    """Per-frame robust s.d. of the pixel noise, ``(t,)``, from the frames' second differences.

    The kernel ``[1, -2, 1]`` (x) ``[1, -2, 1]`` has the L2 norm 6: white noise of s.d. ``s`` gives
    differences of s.d. ``6 s``, estimated as 1.4826 x their median absolute deviation. A background
    linear in x or in y cancels exactly, a spot's smooth profile mostly (its second differences are
    small next to the noise's but within a few pixels of a bright spot's centre, a minority of pixels
    unless the frame is crowded with bright molecules), and on integer photon counts the 9-pixel
    combination has a fine enough spread for a median.
    """
    d = frames[:, :-2, :] - 2.0 * frames[:, 1:-1, :] + frames[:, 2:, :]
    d = d[:, :, :-2] - 2.0 * d[:, :, 1:-1] + d[:, :, 2:]
    med = jnp.median(d, axis=(-2, -1), keepdims=True)
    return 1.4826 / 6.0 * jnp.median(jnp.abs(d - med), axis=(-2, -1))


@functools.partial(jax.jit, static_argnames=("sigma", "radius"))
def _bandpass_maxima(frames, sigma, radius):
    """Band-passed frames, their local-maximum mask (one pixel per window: ties go to the first in
    row-major order), the band-passed noise s.d. per frame and a floor for it."""
    dog = _separable(frames, _gauss_kernel(sigma, frames.dtype)) - _separable(
        frames, _gauss_kernel(2.5 * sigma, frames.dtype))
    w = 2 * radius + 1
    local_max = jax.lax.reduce_window(dog, -jnp.inf, jax.lax.max, (1, w, w), (1, 1, 1), "SAME")
    is_max = dog >= local_max
    # Two maxima within one window hold equal values (each is in the other's window): keep the one of
    # the smallest row-major index, so candidates are more than `radius` apart (Chebyshev distance).
    ny, nx = dog.shape[-2:]
    index = jnp.broadcast_to(jnp.arange(ny * nx, dtype=jnp.int32).reshape(ny, nx), dog.shape)
    key = jnp.where(is_max, index, ny * nx)
    first = jax.lax.reduce_window(key, jnp.int32(ny * nx), jax.lax.min, (1, w, w), (1, 1, 1), "SAME")
    is_max = is_max & (first == index)
    noise = _pixel_noise(frames) * _dog_norm(sigma)
    # A noise-free (e.g. constant) frame has a zero noise estimate: a floor far above float rounding.
    floor = 1e-5 * jnp.max(jnp.abs(frames), axis=(-2, -1)) + 1e-12
    return dog, is_max, noise, floor


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
        threshold: minimum band-passed value, in standard deviations of each frame's
            band-passed background noise (default 5; estimated robustly from the pixel noise,
            see the module docstring), or in photons when ``absolute=True``.
        absolute: interpret ``threshold`` as photons instead of noise units.
        radius: local-maximum window half-width in pixels (default ``ceil(2 sigma_px)``);
            two candidates are more than this far apart along a row or a column (of equal
            maxima closer than that, the first in row-major order is kept).
        border: drop candidates closer than this to the frame edge (pixels).
        batch: frames per jitted call.

    Returns:
        :class:`Candidates`, ordered by frame, then row, then column (empty for a movie of 0 frames).

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
    out_f, out_y, out_x, out_s, thresholds = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], \
        [np.zeros(0, np.int64)], [np.zeros(0, np.float32)], [np.zeros(0, np.float32)]
    ny, nx = frames.shape[-2:]
    gain = None if absolute else _edge_gain(sigma, ny, nx)
    for start in range(0, frames.shape[0], batch):
        chunk = frames[start:start + batch]
        m = chunk.shape[0]
        if frames.shape[0] > batch and m < batch:  # one compiled shape (and the same rounding) for every batch
            chunk = jnp.concatenate([chunk, jnp.zeros((batch - m,) + chunk.shape[1:], chunk.dtype)])
        dog, is_max, noise, floor = (np.asarray(a)[:m] for a in _bandpass_maxima(chunk, sigma, radius))
        t_abs = np.maximum(np.full(m, thr) if absolute else thr * noise, floor)
        # In noise units the threshold follows the band-passed noise, which is higher near the edges.
        t_map = t_abs[:, None, None] if absolute else np.maximum(t_abs[:, None, None] * gain, floor[:, None, None])
        keep = is_max & (dog > t_map) & (dog > 0)
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
