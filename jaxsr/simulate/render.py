"""Render point clouds and polylines (nm) onto pixel grids, conserving photons.

Coordinates are in **nm**, last axis ``(y, x)``; images are ``(y, x)`` in
photons. Grid convention: pixel ``(i, j)`` covers
``[oy + i p, oy + (i + 1) p) x [ox + j p, ox + (j + 1) p)`` with ``(oy, ox) =
origin_nm`` (the outer corner of pixel ``(0, 0)``) and ``p = pixel_size_nm``;
its centre is at ``origin_nm + (index + 0.5) * p``.

Each point is splatted bilinearly onto the four pixel centres around it, so
the intensity-weighted centroid of the image (pixel-centre coordinates)
equals the weighted mean position of the points. Points outside the field of
view ``[oy, oy + ny p) x [ox, ox + nx p)`` are dropped (they contribute
nothing); points inside it but within half a pixel of the border, beyond the
outermost pixel centres, are deposited on the edge pixels, so every point
inside the field of view deposits exactly its weight. The result is
differentiable with respect to positions and weights (the derivative is zero
for dropped points and across the half-pixel border).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import (
    as_float_array,
    check_finite,
    check_int,
    check_ndim,
    check_nonnegative,
    check_positive,
    check_shape,
    is_concrete,
)

__all__ = ["render_points", "render_polyline"]


def _check_geometry(shape: Any, pixel_size_nm: Any, origin_nm: Any):
    shape = check_shape(shape, "shape", 2)
    pixel = as_float_array(pixel_size_nm, "pixel_size_nm")
    if pixel.ndim != 0:
        raise ValueError(f"argument 'pixel_size_nm': expected a scalar, got shape {tuple(pixel.shape)}")
    check_positive(pixel, "pixel_size_nm")
    origin = as_float_array(origin_nm, "origin_nm")
    if origin.shape != (2,):
        raise ValueError(f"argument 'origin_nm': expected a (y, x) pair, got shape {tuple(origin.shape)}")
    check_finite(origin, "origin_nm")
    return shape, pixel, origin


@functools.partial(jax.jit, static_argnums=2)
def _splat(points: jax.Array, weights: jax.Array, shape: tuple[int, int], pixel, origin) -> jax.Array:
    """Bilinear splat of (N, 2) points with (N,) weights onto a (ny, nx) grid."""
    dtype = points.dtype
    sizes = jnp.asarray(shape, dtype=dtype)
    pos = (points - origin.astype(dtype)) / pixel.astype(dtype)  # in pixel units from the corner
    inside = jnp.all((pos >= 0) & (pos < sizes), axis=-1)
    u = jnp.clip(pos - 0.5, 0.0, sizes - 1)  # pixel-centre coordinates, clamped to the centres
    maxlo = jnp.asarray([max(n - 2, 0) for n in shape], dtype=jnp.int32)
    lo = jnp.minimum(jnp.floor(jax.lax.stop_gradient(u)).astype(jnp.int32), maxlo)
    frac = u - lo.astype(dtype)
    hi = jnp.minimum(lo + 1, jnp.asarray([n - 1 for n in shape], dtype=jnp.int32))
    w = jnp.where(inside, weights, 0.0)
    image = jnp.zeros(shape, dtype=dtype)
    for iy, wy in ((lo[:, 0], 1.0 - frac[:, 0]), (hi[:, 0], frac[:, 0])):
        for ix, wx in ((lo[:, 1], 1.0 - frac[:, 1]), (hi[:, 1], frac[:, 1])):
            image = image.at[iy, ix].add(w * wy * wx, mode="drop")
    return image


def render_points(
    points_nm: Any,
    *,
    shape: Sequence[int],
    pixel_size_nm: Any,
    weights: Any = None,
    origin_nm: Any = (0.0, 0.0),
) -> jax.Array:
    """Photon-conserving bilinear rendering of points onto a ``(y, x)`` grid.

    Args:
        points_nm: ``(..., 2)`` positions ``(y, x)`` in nm; all leading axes
            index points.
        shape: ``(ny, nx)`` output size in pixels (static).
        pixel_size_nm: pixel size in nm (scalar, > 0).
        weights: photons per point, ``points_nm.shape[:-1]`` (or broadcastable),
            non-negative; ``None`` means one photon per point.
        origin_nm: ``(y, x)`` position in nm of the outer corner of pixel ``(0, 0)``.

    Returns:
        ``(ny, nx)`` image in photons; it sums to the total weight of the points
        inside the field of view (see the module notes for the border rule).

    Raises:
        ValueError: bad rank, NaN positions, negative weights, bad geometry.

    >>> import jax.numpy as jnp
    >>> img = render_points(jnp.array([[15.0, 10.0]]), shape=(3, 3), pixel_size_nm=10.0)
    >>> img.tolist()  # centres of pixels (1, 0) and (1, 1) are at x = 5 and 15 nm
    [[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]
    """
    points = as_float_array(points_nm, "points_nm")
    check_ndim(points, "points_nm", (), min_ndim=1)
    if points.shape[-1] != 2:
        raise ValueError(f"argument 'points_nm': last axis must be (y, x) of size 2, got shape {tuple(points.shape)}")
    check_finite(points, "points_nm")
    shape, pixel, origin = _check_geometry(shape, pixel_size_nm, origin_nm)
    if weights is None:
        weights = jnp.ones(points.shape[:-1], dtype=points.dtype)
    else:
        weights = as_float_array(weights, "weights")
        check_nonnegative(weights, "weights")
        try:
            weights = jnp.broadcast_to(weights, points.shape[:-1])
        except ValueError as err:
            raise ValueError(
                f"argument 'weights': shape {tuple(weights.shape)} does not broadcast to the "
                f"points' shape {tuple(points.shape[:-1])}"
            ) from err
    dtype = jnp.result_type(points.dtype, weights.dtype)
    flat = points.reshape(-1, 2).astype(dtype)
    return _splat(flat, weights.reshape(-1).astype(dtype), shape, pixel, origin)


def render_polyline(
    points_nm: Any,
    *,
    shape: Sequence[int],
    pixel_size_nm: Any,
    photons_per_nm: Any,
    origin_nm: Any = (0.0, 0.0),
    samples_per_segment: int | None = None,
) -> jax.Array:
    """Render polylines (filaments, lines) with a uniform photon density per nm.

    Every segment between consecutive vertices is cut into
    ``samples_per_segment`` equal pieces; a point at the middle of each piece
    carries ``photons_per_nm * piece_length`` photons and is splatted with
    :func:`render_points`. The image therefore sums to ``photons_per_nm`` times
    the contour length inside the field of view.

    Args:
        points_nm: ``(..., n_vertices, 2)`` vertices ``(y, x)`` in nm, ``n_vertices
            >= 2``; leading axes index separate polylines (e.g. the output of
            :func:`jaxsr.simulate.filaments`).
        shape: ``(ny, nx)`` output size in pixels (static).
        pixel_size_nm: pixel size in nm.
        photons_per_nm: linear photon density, a scalar or one value per
            polyline (broadcastable to ``points_nm.shape[:-2]``), non-negative.
        origin_nm: ``(y, x)`` of the outer corner of pixel ``(0, 0)`` in nm.
        samples_per_segment: pieces per segment (static). ``None`` chooses the
            smallest count that makes pieces at most a tenth of a pixel long
            (the midpoint rule then deviates from the exact line integral of the
            bilinear kernel by a few tenths of a percent of the peak); it needs
            concrete ``points_nm``, so pass it explicitly under ``jit``/``vmap``.

    Returns:
        ``(ny, nx)`` image in photons.

    >>> import jax.numpy as jnp
    >>> line = jnp.array([[5.0, 0.0], [5.0, 40.0]])
    >>> img = render_polyline(line, shape=(1, 4), pixel_size_nm=10.0, photons_per_nm=1.0)
    >>> [round(v, 4) for v in img[0].tolist()]
    [10.0, 10.0, 10.0, 10.0]
    """
    points = as_float_array(points_nm, "points_nm")
    check_ndim(points, "points_nm", (), min_ndim=2)
    if points.shape[-1] != 2 or points.shape[-2] < 2:
        raise ValueError(
            f"argument 'points_nm': expected (..., n_vertices >= 2, 2), got shape {tuple(points.shape)}"
        )
    check_finite(points, "points_nm")
    shape, pixel, origin = _check_geometry(shape, pixel_size_nm, origin_nm)
    density = as_float_array(photons_per_nm, "photons_per_nm")
    check_nonnegative(density, "photons_per_nm")
    try:
        density = jnp.broadcast_to(density, points.shape[:-2])
    except ValueError as err:
        raise ValueError(
            f"argument 'photons_per_nm': shape {tuple(density.shape)} does not broadcast to the "
            f"number of polylines {tuple(points.shape[:-2])}"
        ) from err
    if samples_per_segment is None:
        if not (is_concrete(points) and is_concrete(pixel)):
            raise ValueError(
                "argument 'samples_per_segment': required when 'points_nm' or 'pixel_size_nm' is traced"
            )
        longest = float(np.max(np.linalg.norm(np.diff(np.asarray(points), axis=-2), axis=-1)))
        samples_per_segment = max(1, int(np.ceil(longest / (float(pixel) / 10.0))))
    m = check_int(samples_per_segment, "samples_per_segment", minimum=1)
    return _polyline(points, density, shape, pixel, origin, m)


@functools.partial(jax.jit, static_argnums=(2, 5))
def _polyline(points, density, shape, pixel, origin, m):
    dtype = jnp.result_type(points.dtype, density.dtype)
    start = points[..., :-1, :]
    delta = points[..., 1:, :] - start
    sq = jnp.sum(delta**2, axis=-1)
    seg_len = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    t = (jnp.arange(m, dtype=dtype) + 0.5) / m  # (m,)
    samples = start[..., None, :] + t[:, None] * delta[..., None, :]  # (..., n_seg, m, 2)
    w = density[..., None, None] * seg_len[..., None] / m  # (..., n_seg, 1)
    w = jnp.broadcast_to(w, samples.shape[:-1])
    return _splat(samples.reshape(-1, 2).astype(dtype), w.reshape(-1).astype(dtype), shape, pixel, origin)
