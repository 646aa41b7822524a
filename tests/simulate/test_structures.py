"""Synthetic structures: geometry laws, determinism, statistics of the random walk."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxsr.simulate import bead_pairs, filaments, line_pairs, random_beads, ring


def turning_angles(paths):
    d = np.diff(np.asarray(paths, dtype=np.float64), axis=-2)
    theta = np.arctan2(d[..., 0], d[..., 1])
    return np.angle(np.exp(1j * np.diff(theta, axis=-1)))  # wrapped to (-pi, pi]


# --------------------------------------------------------------------------- filaments
def test_filament_steps_and_curvature_bound(x64, key):
    kmax, step = 0.003, 4.0
    f = filaments(key, n_filaments=5, field_nm=(3000.0, 2000.0), length_nm=1000.0, step_nm=step,
                  persistence_nm=2000.0, max_curvature_per_nm=kmax)
    assert f.shape == (5, 251, 2) and f.dtype == jnp.float64
    steps = np.linalg.norm(np.diff(np.asarray(f), axis=1), axis=-1)
    np.testing.assert_allclose(steps, step, rtol=1e-10)
    angles = turning_angles(f)
    assert np.abs(angles).max() <= kmax * step + 1e-9
    assert np.abs(angles).max() > 0.9 * kmax * step  # the bound is reached, not just respected
    start = np.asarray(f[:, 0])
    assert np.all((start >= 0) & (start < np.array([3000.0, 2000.0])))


def test_filament_float32_step_length(key):
    f = filaments(key, n_filaments=3, field_nm=(2000.0, 2000.0), length_nm=500.0)
    assert f.dtype == jnp.float32 and f.shape == (3, 101, 2)
    steps = np.linalg.norm(np.diff(np.asarray(f, np.float64), axis=1), axis=-1)
    np.testing.assert_allclose(steps, 5.0, atol=2e-3)


def test_filament_turning_statistics_match_truncated_normal(x64, key):
    # Angles are a truncated normal: sigma^2 = step / persistence, bound kmax * step.
    step, lp, kmax = 5.0, 1000.0, 0.01
    f = filaments(key, n_filaments=40, field_nm=(1e4, 1e4), length_nm=2000.0, step_nm=step,
                  persistence_nm=lp, max_curvature_per_nm=kmax)
    angles = turning_angles(f).ravel()
    sigma = np.sqrt(step / lp)
    a = kmax * step / sigma
    ref = stats.truncnorm(-a, a, scale=sigma)
    n = angles.size
    assert abs(angles.mean()) <= 5 * ref.std() / np.sqrt(n)
    var_se = np.sqrt((ref.moment(4) - ref.var() ** 2) / n)
    assert abs(angles.var() - ref.var()) <= 5 * var_se
    assert stats.kstest(angles, ref.cdf).pvalue > 1e-3


def test_filament_determinism(key):
    kw = dict(n_filaments=2, field_nm=(1000.0, 1000.0), length_nm=200.0)
    a = filaments(key, **kw)
    np.testing.assert_array_equal(a, filaments(key, **kw))
    b = filaments(jax.random.fold_in(key, 1), **kw)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1.0


def test_filament_bad_inputs(key):
    kw = dict(n_filaments=2, field_nm=(1000.0, 1000.0), length_nm=200.0)
    with pytest.raises(ValueError, match="n_filaments"):
        filaments(key, **{**kw, "n_filaments": 0})
    with pytest.raises(TypeError, match="n_filaments"):
        filaments(key, **{**kw, "n_filaments": 2.5})
    with pytest.raises(ValueError, match="field_nm"):
        filaments(key, **{**kw, "field_nm": (-1.0, 10.0)})
    with pytest.raises(ValueError, match="field_nm"):
        filaments(key, **{**kw, "field_nm": (10.0,)})
    with pytest.raises(ValueError, match="length_nm"):
        filaments(key, **{**kw, "length_nm": 1.0})
    with pytest.raises(ValueError, match="persistence_nm"):
        filaments(key, **kw, persistence_nm=0.0)
    with pytest.raises(ValueError, match="max_curvature_per_nm"):
        filaments(key, **kw, max_curvature_per_nm=-1.0)


# --------------------------------------------------------------------------- line pairs
def test_line_pairs_geometry():
    seps = (30.0, 90.0, 150.0)
    lines = np.asarray(line_pairs(separations_nm=seps, length_nm=1000.0, gap_nm=500.0, step_nm=3.0,
                                  centre_nm=(100.0, -50.0)), dtype=np.float64)
    n_points = int(np.ceil(1000.0 / 3.0)) + 1
    assert lines.shape == (6, n_points, 2)
    xs = lines[:, 0, 1]
    np.testing.assert_allclose(lines[..., 1], xs[:, None] * np.ones(n_points))  # straight along y
    np.testing.assert_allclose(np.diff(xs), [30, 500, 90, 500, 150], atol=1e-3)
    np.testing.assert_allclose((xs[0] + xs[-1]) / 2, -50.0, atol=1e-3)
    np.testing.assert_allclose(lines[:, 0, 0], 100.0 - 500.0, atol=1e-3)
    np.testing.assert_allclose(lines[:, -1, 0], 100.0 + 500.0, atol=1e-3)
    spacing = np.diff(lines[..., 0], axis=1)
    assert spacing.max() <= 3.0 + 1e-4 and np.allclose(spacing, spacing[0, 0], atol=1e-3)


def test_line_pairs_defaults_and_bad_inputs():
    lines = line_pairs()
    assert lines.shape[0] == 14
    with pytest.raises(ValueError, match="separations_nm"):
        line_pairs(separations_nm=(30.0, -1.0))
    with pytest.raises(ValueError, match="separations_nm"):
        line_pairs(separations_nm=())
    with pytest.raises(ValueError, match="gap_nm"):
        line_pairs(gap_nm=0.0)
    with pytest.raises(ValueError, match="centre_nm"):
        line_pairs(centre_nm=(0.0, np.nan))


# --------------------------------------------------------------------------- bead pairs
def test_bead_pairs_geometry():
    seps = np.array([20.0, 50.0, 80.0, 110.0])
    pts = np.asarray(bead_pairs(separations_nm=seps, spacing_nm=700.0, centre_nm=(10.0, 20.0)), np.float64)
    assert pts.shape == (8, 2)
    pairs = pts.reshape(4, 2, 2)
    np.testing.assert_allclose(np.linalg.norm(pairs[:, 1] - pairs[:, 0], axis=-1), seps, rtol=1e-6)
    centres = pairs.mean(axis=1)
    np.testing.assert_allclose(np.diff(centres[:, 1]), 700.0, rtol=1e-6)
    np.testing.assert_allclose(centres.mean(axis=0), [10.0, 20.0], atol=1e-4)
    with pytest.raises(ValueError, match="spacing_nm"):
        bead_pairs(spacing_nm=-5.0)


# --------------------------------------------------------------------------- ring
def test_ring_geometry_and_symmetry():
    pts = np.asarray(ring(diameter_nm=107.0, n_subunits=8, centre_nm=(5.0, -3.0), rotation_rad=0.3,
                          copies_per_subunit=2, copy_spacing_nm=12.0), dtype=np.float64)
    assert pts.shape == (16, 2)
    rel = pts - np.array([5.0, -3.0])
    np.testing.assert_allclose(np.linalg.norm(rel, axis=-1), 53.5, rtol=1e-6)
    # 8-fold symmetry: a rotation by 2 pi / 8 maps the set onto itself.
    c, s = np.cos(2 * np.pi / 8), np.sin(2 * np.pi / 8)
    rotated = np.stack([s * rel[:, 1] + c * rel[:, 0], c * rel[:, 1] - s * rel[:, 0]], axis=-1)
    dist = np.linalg.norm(rotated[:, None] - rel[None], axis=-1).min(axis=1)
    assert dist.max() < 1e-4
    # Copies within a subunit: arc length 12 nm apart, centred on the subunit angle 0.3 + 2 pi k / 8.
    angles = np.arctan2(rel[:, 0], rel[:, 1]).reshape(8, 2)
    arc = np.angle(np.exp(1j * (angles[:, 1] - angles[:, 0]))) * 53.5
    np.testing.assert_allclose(arc, 12.0, rtol=1e-5)
    mid = np.angle(np.exp(1j * angles).mean(axis=1))
    np.testing.assert_allclose(np.angle(np.exp(1j * (mid - 0.3 - 2 * np.pi * np.arange(8) / 8))), 0.0, atol=1e-5)


def test_ring_defaults_and_bad_inputs():
    pts = ring()
    assert pts.shape == (8, 2)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(pts), axis=-1), 53.5, rtol=1e-6)
    with pytest.raises(ValueError, match="diameter_nm"):
        ring(diameter_nm=0.0)
    with pytest.raises(ValueError, match="n_subunits"):
        ring(n_subunits=0)
    with pytest.raises(ValueError, match="copies_per_subunit"):
        ring(copies_per_subunit=0)
    with pytest.raises(ValueError, match="rotation_rad"):
        ring(rotation_rad=np.inf)


# --------------------------------------------------------------------------- random beads
def test_random_beads(key):
    pts = np.asarray(random_beads(key, n=20000, field_nm=(300.0, 1200.0)), np.float64)
    assert pts.shape == (20000, 2)
    assert np.all(pts >= 0) and np.all(pts < [300.0, 1200.0])
    # Uniform: mean h/2, w/2 with standard error size/sqrt(12 n).
    se = np.array([300.0, 1200.0]) / np.sqrt(12 * 20000)
    assert np.all(np.abs(pts.mean(axis=0) - [150.0, 600.0]) <= 5 * se)
    assert stats.kstest(pts[:, 1] / 1200.0, "uniform").pvalue > 1e-3
    np.testing.assert_array_equal(random_beads(key, n=5, field_nm=(1.0, 1.0)),
                                  random_beads(key, n=5, field_nm=(1.0, 1.0)))
    with pytest.raises(ValueError, match="n"):
        random_beads(key, n=0, field_nm=(1.0, 1.0))
    with pytest.raises(ValueError, match="field_nm"):
        random_beads(key, n=3, field_nm=(0.0, 1.0))
