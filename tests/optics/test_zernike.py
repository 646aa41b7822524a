"""Tests for jaxsr.optics.zernike: Noll indexing, closed forms, orthonormality."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from jaxsr.optics import noll_to_nm, zernike, zernike_basis

# Noll (1976), Table 1: j -> (n, m), with m > 0 the cos mode and m < 0 the sin mode.
NOLL_TABLE = {
    1: (0, 0), 2: (1, 1), 3: (1, -1), 4: (2, 0), 5: (2, -2), 6: (2, 2), 7: (3, -1), 8: (3, 1),
    9: (3, -3), 10: (3, 3), 11: (4, 0), 12: (4, 2), 13: (4, -2), 14: (4, 4), 15: (4, -4),
    16: (5, 1), 17: (5, -1), 18: (5, 3), 19: (5, -3), 20: (5, 5), 21: (5, -5), 22: (6, 0),
}

S3, S5, S6, S8 = math.sqrt(3), math.sqrt(5), math.sqrt(6), math.sqrt(8)
CLOSED_FORMS = {
    1: lambda r, t: np.ones_like(r),
    2: lambda r, t: 2 * r * np.cos(t),
    3: lambda r, t: 2 * r * np.sin(t),
    4: lambda r, t: S3 * (2 * r**2 - 1),
    5: lambda r, t: S6 * r**2 * np.sin(2 * t),
    6: lambda r, t: S6 * r**2 * np.cos(2 * t),
    7: lambda r, t: S8 * (3 * r**3 - 2 * r) * np.sin(t),
    8: lambda r, t: S8 * (3 * r**3 - 2 * r) * np.cos(t),
    9: lambda r, t: S8 * r**3 * np.sin(3 * t),
    10: lambda r, t: S8 * r**3 * np.cos(3 * t),
    11: lambda r, t: S5 * (6 * r**4 - 6 * r**2 + 1),
    12: lambda r, t: math.sqrt(10) * (4 * r**4 - 3 * r**2) * np.cos(2 * t),
    13: lambda r, t: math.sqrt(10) * (4 * r**4 - 3 * r**2) * np.sin(2 * t),
    22: lambda r, t: math.sqrt(7) * (20 * r**6 - 30 * r**4 + 12 * r**2 - 1),
}


def _disc_quadrature(n_rho=24, n_theta=64):
    """Exact quadrature of polynomials of degree < 2 n_rho in rho (weight rho) and trig < n_theta."""
    x, w = np.polynomial.legendre.leggauss(n_rho)
    rho = 0.5 * (x + 1.0)
    w_rho = 0.5 * w * rho  # int_0^1 f(rho) rho drho
    theta = 2 * np.pi * np.arange(n_theta) / n_theta
    w_theta = np.full(n_theta, 2 * np.pi / n_theta)
    r, t = np.meshgrid(rho, theta, indexing="ij")
    weights = np.outer(w_rho, w_theta) / np.pi  # disc average
    return r, t, weights


# ---------------------------------------------------------------- indexing


def test_noll_table():
    for j, nm in NOLL_TABLE.items():
        assert noll_to_nm(j) == nm, j


def test_noll_bijection_and_parity():
    seen = set()
    for j in range(1, 232):  # rows n = 0..20
        n, m = noll_to_nm(j)
        assert abs(m) <= n and (n - abs(m)) % 2 == 0
        if m != 0:
            assert (m > 0) == (j % 2 == 0), j  # even j -> cos, odd j -> sin
        seen.add((n, m))
    expected = {(n, m) for n in range(21) for m in range(-n, n + 1, 2)}
    assert seen == expected  # every allowed (n, m) exactly once (231 modes)


# ---------------------------------------------------------------- (1) references


@pytest.mark.parametrize("j", sorted(CLOSED_FORMS))
def test_closed_forms(rng, j):
    r = rng.uniform(0.0, 1.0, 200)
    t = rng.uniform(-np.pi, np.pi, 200)
    got = np.asarray(zernike(j, r.astype(np.float32), t.astype(np.float32)))
    np.testing.assert_allclose(got, CLOSED_FORMS[j](r, t), rtol=0, atol=2e-5)


def test_orthonormal_exact_quadrature(x64):
    r, t, w = _disc_quadrature()
    basis = np.asarray(zernike_basis(range(1, 37), r, t)).reshape(36, -1)  # n <= 7
    gram = (basis * w.reshape(1, -1)) @ basis.T
    np.testing.assert_allclose(gram, np.eye(36), atol=1e-12)


def test_orthonormal_cartesian_disc_grid():
    # A plain fine Cartesian grid over the disc: errors come only from the pixelated rim.
    n = 801
    y, x = np.mgrid[-1 : 1 : n * 1j, -1 : 1 : n * 1j]
    r, t = np.hypot(y, x), np.arctan2(y, x)
    inside = r <= 1.0
    basis = np.asarray(zernike_basis(range(1, 16), r.astype(np.float32), t.astype(np.float32)))
    basis = basis.reshape(15, -1).astype(np.float64)
    gram = basis @ basis.T / inside.sum()
    # Rim error ~ 1/n (7e-4 measured at n = 801).
    np.testing.assert_allclose(gram, np.eye(15), atol=3e-3)


def test_zero_outside_disc():
    r = np.array([1.0, 1.0001, 1.5, 3.0], np.float32)
    z = np.asarray(zernike_basis(range(1, 12), r, np.zeros_like(r)))
    assert np.all(z[:, 1:] == 0.0)
    assert z[0, 0] == 1.0 and abs(z[3, 0] - S3) < 1e-6  # rho = 1 is inside the pupil


def test_rms_is_one(x64):
    r, t, w = _disc_quadrature()
    for j in (4, 7, 11, 22, 37):
        z = np.asarray(zernike(j, r, t))
        assert abs(np.sqrt(np.sum(w * z * z)) - 1.0) < 1e-12


# ---------------------------------------------------------------- (2) transforms


def test_basis_matches_single_and_transforms(rng):
    r = jnp.asarray(rng.uniform(0, 1.2, (4, 8)), jnp.float32)
    t = jnp.asarray(rng.uniform(-3, 3, (4, 8)), jnp.float32)
    stack = zernike_basis([4, 5, 11], r, t)
    assert stack.shape == (3, 4, 8)
    for i, j in enumerate([4, 5, 11]):
        np.testing.assert_allclose(np.asarray(stack[i]), np.asarray(zernike(j, r, t)), atol=1e-6)
    jitted = jax.jit(lambda r, t: zernike_basis([4, 5, 11], r, t))(r, t)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(stack), atol=1e-6)
    vm = jax.vmap(lambda r, t: zernike(5, r, t))(r, t)
    np.testing.assert_allclose(np.asarray(vm), np.asarray(stack[1]), atol=1e-6)


def test_broadcasting():
    out = zernike(6, np.linspace(0, 1, 5)[:, None], np.linspace(0, np.pi, 3)[None, :])
    assert out.shape == (5, 3)


# ---------------------------------------------------------------- (3) gradients


@pytest.mark.parametrize("j", [1, 4, 5, 8, 11, 16])
def test_check_grads(x64, j):
    r = jnp.asarray([0.0, 0.3, 0.7, 0.95])
    t = jnp.asarray([0.0, 1.0, -2.0, 2.5])
    check_grads(lambda r, t: zernike(j, r, t), (r, t), order=1, modes=["rev"])


def test_gradient_closed_form(x64):
    r = jnp.asarray([0.0, 0.25, 0.5, 0.9])
    g = jax.vmap(jax.grad(lambda r: zernike(4, r, 0.0)))(r)
    np.testing.assert_allclose(np.asarray(g), 4 * S3 * np.asarray(r), atol=1e-12)
    g6 = jax.grad(lambda t: zernike(6, 0.5, t))(0.3)
    assert abs(float(g6) - (-2 * S6 * 0.25 * np.sin(0.6))) < 1e-12


# ---------------------------------------------------------------- properties


@settings(max_examples=25)
@given(st.integers(min_value=2, max_value=60), st.floats(0.0, 1.0), st.floats(-np.pi, np.pi))
def test_rotation_law(j, rho, theta):
    # Z_j(rho, theta + pi/|m|) = -Z_j(rho, theta) for m != 0 (cos/sin of |m| theta flips sign).
    n, m = noll_to_nm(j)
    if m == 0:
        return
    a = float(zernike(j, np.float64(rho), np.float64(theta)))
    b = float(zernike(j, np.float64(rho), np.float64(theta + np.pi / abs(m))))
    assert abs(a + b) < 2e-4 * max(1.0, math.sqrt(2 * (n + 1)))


# ---------------------------------------------------------------- (4) bad input


def test_bad_input():
    with pytest.raises(ValueError, match="'j'"):
        noll_to_nm(0)
    with pytest.raises(TypeError, match="'j'"):
        noll_to_nm(2.0)
    with pytest.raises(TypeError, match="'j'"):
        zernike(True, 0.5, 0.0)
    with pytest.raises(ValueError, match="indices"):
        zernike_basis([], 0.5, 0.0)
    with pytest.raises(ValueError, match="indices"):
        zernike_basis([1, 0], 0.5, 0.0)
    with pytest.raises(TypeError, match="indices"):
        zernike_basis([1, 2.5], 0.5, 0.0)
    with pytest.raises(ValueError, match="theta"):
        zernike(4, np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError, match="rho"):
        zernike(4, "a", 0.0)
