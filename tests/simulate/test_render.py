"""render_points / render_polyline: flux, centroid, tent-function reference, gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from jaxsr.simulate import filaments, render_points, render_polyline

SHAPE = (12, 16)
PIXEL = 20.0
ORIGIN = np.array([-40.0, 30.0])


def tent_reference(points, weights, shape, pixel, origin):
    """Independent reference: sum of separable tent functions centred on pixel centres."""
    centres_y = origin[0] + (np.arange(shape[0]) + 0.5) * pixel
    centres_x = origin[1] + (np.arange(shape[1]) + 0.5) * pixel
    ty = np.maximum(0.0, 1.0 - np.abs(points[:, 0, None] - centres_y[None]) / pixel)
    tx = np.maximum(0.0, 1.0 - np.abs(points[:, 1, None] - centres_x[None]) / pixel)
    return np.einsum("n,ny,nx->yx", weights, ty, tx)


def interior_points(rng, n):
    """Points between the outermost pixel centres (no border rule involved)."""
    lo = ORIGIN + 0.5 * PIXEL
    hi = ORIGIN + (np.array(SHAPE) - 0.5) * PIXEL
    return lo + rng.random((n, 2)) * (hi - lo)


def test_matches_tent_reference(rng):
    pts = interior_points(rng, 50)
    w = rng.random(50) * 10
    img = render_points(pts, shape=SHAPE, pixel_size_nm=PIXEL, weights=w, origin_nm=ORIGIN)
    np.testing.assert_allclose(img, tent_reference(pts, w, SHAPE, PIXEL, ORIGIN), rtol=1e-4, atol=1e-4)


_render = jax.jit(lambda p, w: render_points(p, shape=SHAPE, pixel_size_nm=PIXEL, weights=w, origin_nm=ORIGIN))


@settings(max_examples=15)
@given(seed=st.integers(0, 2**31 - 1))
def test_flux_and_centroid(seed):
    r = np.random.default_rng(seed)
    pts = interior_points(r, 40).astype(np.float32)
    w = (r.random(40) * 5 + 0.1).astype(np.float32)
    img = np.asarray(_render(pts, w), dtype=np.float64)
    np.testing.assert_allclose(img.sum(), w.sum(), rtol=1e-5)
    cy = ORIGIN[0] + (np.arange(SHAPE[0]) + 0.5) * PIXEL
    cx = ORIGIN[1] + (np.arange(SHAPE[1]) + 0.5) * PIXEL
    centroid = np.array([(img.sum(1) * cy).sum(), (img.sum(0) * cx).sum()]) / img.sum()
    np.testing.assert_allclose(centroid, (w[:, None] * pts).sum(0) / w.sum(), atol=1e-3)


def test_outside_dropped_and_border_conserved():
    extent = np.array(SHAPE) * PIXEL
    outside = np.array([[ORIGIN[0] - 1.0, ORIGIN[1] + 50.0], [ORIGIN[0] + 50.0, ORIGIN[1] + extent[1] + 0.5],
                        [ORIGIN[0] + extent[0], ORIGIN[1]]])
    img = render_points(outside, shape=SHAPE, pixel_size_nm=PIXEL, origin_nm=ORIGIN)
    assert float(jnp.abs(img).sum()) == 0.0
    # Inside the field but within half a pixel of the corner: all weight on the corner pixel.
    corner = np.array([[ORIGIN[0] + 2.0, ORIGIN[1] + 3.0]])
    img = render_points(corner, shape=SHAPE, pixel_size_nm=PIXEL, weights=np.array([7.0]), origin_nm=ORIGIN)
    assert float(img[0, 0]) == pytest.approx(7.0) and float(img.sum()) == pytest.approx(7.0)


def test_batched_points_jit_vmap(rng):
    pts = interior_points(rng, 60).reshape(3, 20, 2).astype(np.float32)
    w = rng.random((3, 20)).astype(np.float32)
    together = render_points(pts, shape=SHAPE, pixel_size_nm=PIXEL, weights=w, origin_nm=ORIGIN)
    per_set = jax.vmap(_render)(pts, w)
    np.testing.assert_allclose(per_set.sum(0), together, rtol=1e-5, atol=1e-5)
    for i in range(3):
        np.testing.assert_allclose(per_set[i], render_points(pts[i], shape=SHAPE, pixel_size_nm=PIXEL,
                                                             weights=w[i], origin_nm=ORIGIN), rtol=1e-5, atol=1e-6)


def test_check_grads_positions_and_weights(x64, rng):
    pts = jnp.asarray(interior_points(rng, 6))
    # Keep away from pixel-centre kinks so finite differences see one linear piece.
    pts = jnp.asarray(np.floor(np.asarray(pts) / PIXEL) * PIXEL + 0.3 * PIXEL + 0.4 * rng.random((6, 2)) * PIXEL)
    w = jnp.asarray(rng.random(6) + 0.5)
    target = jnp.asarray(rng.random(SHAPE))

    def f(p, w):
        img = render_points(p, shape=SHAPE, pixel_size_nm=PIXEL, weights=w, origin_nm=ORIGIN)
        return jnp.sum((img - target) ** 2)

    check_grads(f, (pts, w), order=1, modes=["rev"], eps=1e-3)


def test_bad_inputs():
    pts = jnp.zeros((3, 2))
    with pytest.raises(ValueError, match="points_nm"):
        render_points(jnp.zeros((3, 3)), shape=SHAPE, pixel_size_nm=PIXEL)
    with pytest.raises(ValueError, match="points_nm"):
        render_points(pts.at[0, 0].set(jnp.nan), shape=SHAPE, pixel_size_nm=PIXEL)
    with pytest.raises(ValueError, match="weights"):
        render_points(pts, shape=SHAPE, pixel_size_nm=PIXEL, weights=-jnp.ones(3))
    with pytest.raises(ValueError, match="weights"):
        render_points(pts, shape=SHAPE, pixel_size_nm=PIXEL, weights=jnp.ones(4))
    with pytest.raises(ValueError, match="pixel_size_nm"):
        render_points(pts, shape=SHAPE, pixel_size_nm=0.0)
    with pytest.raises(ValueError, match="shape"):
        render_points(pts, shape=(4, 4, 4), pixel_size_nm=PIXEL)
    with pytest.raises(ValueError, match="origin_nm"):
        render_points(pts, shape=SHAPE, pixel_size_nm=PIXEL, origin_nm=(0.0,))


# --------------------------------------------------------------------------- polylines
def test_polyline_uniform_row():
    # A horizontal line through the pixel-centre row spanning the whole field: ppn * pixel per pixel.
    line = np.array([[55.0, 0.0], [55.0, 16 * 10.0]])  # centre of row 5 is at y = 55 nm
    img = render_polyline(line, shape=(8, 16), pixel_size_nm=10.0, photons_per_nm=0.5)
    np.testing.assert_allclose(img[5], 5.0, rtol=1e-5)
    assert float(jnp.abs(img).sum() - img[5].sum()) < 1e-5


def test_polyline_flux_equals_contour_length(key):
    fil = filaments(key, n_filaments=3, field_nm=(100.0, 100.0), length_nm=300.0, step_nm=5.0,
                    persistence_nm=2000.0)
    origin = np.asarray(fil).reshape(-1, 2).min(0) - 50.0  # field covers every filament
    ppn = jnp.array([1.0, 2.0, 0.5])
    img = render_polyline(fil, shape=(32, 32), pixel_size_nm=20.0, photons_per_nm=ppn, origin_nm=origin)
    np.testing.assert_allclose(float(img.sum()), float(ppn.sum()) * 300.0, rtol=1e-4)


def test_polyline_matches_dense_points(rng):
    # Reference: the same photons as dense points along the segments, rendered by the tent reference.
    verts = np.array([[15.0, 12.0], [95.0, 40.0], [60.0, 150.0]])
    m = 400
    t = (np.arange(m) + 0.5) / m
    seg = [verts[i] + t[:, None] * (verts[i + 1] - verts[i]) for i in range(2)]
    lens = np.linalg.norm(np.diff(verts, axis=0), axis=1)
    w = np.concatenate([np.full(m, 2.0 * lens[i] / m) for i in range(2)])
    ref = tent_reference(np.concatenate(seg), w, (10, 10), 20.0, np.zeros(2))
    img = render_polyline(verts, shape=(10, 10), pixel_size_nm=20.0, photons_per_nm=2.0)
    # Default sampling (pieces <= pixel / 10) is a midpoint rule: error well under 1 % of the peak.
    np.testing.assert_allclose(img, ref, rtol=0, atol=5e-3 * ref.max())
    np.testing.assert_allclose(float(img.sum()), 2.0 * lens.sum(), rtol=1e-5)
    fine = render_polyline(verts, shape=(10, 10), pixel_size_nm=20.0, photons_per_nm=2.0, samples_per_segment=200)
    np.testing.assert_allclose(fine, ref, rtol=0, atol=5e-4 * ref.max())


def test_polyline_grads_and_jit(x64):
    verts = jnp.array([[33.0, 27.0], [71.0, 88.0], [114.0, 57.0]])

    def f(v, ppn):
        img = render_polyline(v, shape=(8, 8), pixel_size_nm=20.0, photons_per_nm=ppn, samples_per_segment=3)
        return jnp.sum(img**2)

    check_grads(f, (verts, 1.5), order=1, modes=["rev"], eps=1e-4)
    jitted = jax.jit(lambda v: render_polyline(v, shape=(8, 8), pixel_size_nm=20.0, photons_per_nm=1.0,
                                               samples_per_segment=32))
    eager = render_polyline(verts, shape=(8, 8), pixel_size_nm=20.0, photons_per_nm=1.0, samples_per_segment=32)
    np.testing.assert_allclose(jitted(verts), eager, rtol=1e-10)
    # A zero-length segment has a finite gradient.
    g = jax.grad(lambda v: f(v, 1.0))(jnp.array([[33.0, 27.0], [33.0, 27.0], [60.0, 60.0]]))
    assert np.all(np.isfinite(g))


def test_polyline_bad_inputs():
    with pytest.raises(ValueError, match="points_nm"):
        render_polyline(jnp.zeros((1, 2)), shape=(4, 4), pixel_size_nm=1.0, photons_per_nm=1.0)
    with pytest.raises(ValueError, match="photons_per_nm"):
        render_polyline(jnp.zeros((3, 2)), shape=(4, 4), pixel_size_nm=1.0, photons_per_nm=-1.0)
    with pytest.raises(ValueError, match="photons_per_nm"):
        render_polyline(jnp.zeros((2, 3, 2)), shape=(4, 4), pixel_size_nm=1.0, photons_per_nm=jnp.ones(3))
    with pytest.raises(ValueError, match="samples_per_segment"):
        jax.jit(lambda v: render_polyline(v, shape=(4, 4), pixel_size_nm=1.0, photons_per_nm=1.0))(jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="samples_per_segment"):
        render_polyline(jnp.zeros((3, 2)), shape=(4, 4), pixel_size_nm=1.0, photons_per_nm=1.0, samples_per_segment=0)
