"""Tests for jaxsr.optics.bessel: J0, J1, Airy kernel against scipy.special."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy import special

from jaxsr.optics import airy_kernel, bessel_j0, bessel_j1

FUNCS = [(bessel_j0, special.j0), (bessel_j1, special.j1)]
# Points straddling the branch switch at |x| = 8 and the Taylor branch near 0.
EDGE_X = [0.0, 1e-4, 0.7, 3.0, 5.65, 5.66, 7.99, 8.0, 8.01, 20.0, 150.0]


def _airy_ref(v):
    v = np.asarray(v, dtype=np.float64)
    safe = np.where(v == 0, 1.0, v)
    return np.where(v == 0, 1.0, (2 * special.j1(safe) / safe) ** 2)


# ---------------------------------------------------------------- (1) references


@pytest.mark.parametrize("f,ref", FUNCS, ids=["j0", "j1"])
def test_reference_float64(x64, f, ref):
    # Module claims ~2e-15 absolute; assert 1e-13 over [-200, 200] and far out.
    x = np.concatenate([np.linspace(-200.0, 200.0, 40001), np.linspace(200.0, 1e4, 2001)])
    got = np.asarray(f(x))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref(x), rtol=0, atol=1e-13)


@pytest.mark.parametrize("f,ref", FUNCS, ids=["j0", "j1"])
def test_reference_float32(f, ref):
    # Float32 inputs are exact; compare with the float64 reference at those inputs (2e-7 measured).
    x = np.linspace(0.0, 200.0, 40001).astype(np.float32)
    got = np.asarray(f(x))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref(x.astype(np.float64)), rtol=0, atol=5e-7)


def test_known_zeros_and_values(x64):
    z0 = special.jn_zeros(0, 5)
    z1 = special.jn_zeros(1, 5)
    np.testing.assert_allclose(np.asarray(bessel_j0(z0)), 0.0, atol=1e-14)
    np.testing.assert_allclose(np.asarray(bessel_j1(z1)), 0.0, atol=1e-14)
    assert float(bessel_j0(0.0)) == 1.0
    assert float(bessel_j1(0.0)) == 0.0


def test_parity(x64):
    x = np.linspace(0.0, 50.0, 1001)
    np.testing.assert_array_equal(np.asarray(bessel_j0(-x)), np.asarray(bessel_j0(x)))
    np.testing.assert_array_equal(np.asarray(bessel_j1(-x)), -np.asarray(bessel_j1(x)))


def test_derivatives_match_scipy(x64):
    x = np.concatenate([np.linspace(-60.0, 60.0, 2401), [0.0]])
    d0 = jax.vmap(jax.grad(bessel_j0))(jnp.asarray(x))
    d1 = jax.vmap(jax.grad(bessel_j1))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(d0), special.jvp(0, x), atol=1e-13)
    np.testing.assert_allclose(np.asarray(d1), special.jvp(1, x), atol=1e-13)
    assert float(jax.grad(bessel_j1)(0.0)) == 0.5


def test_airy_kernel_reference(x64):
    v = np.concatenate([[0.0, 1e-5, 1e-3], np.linspace(0.01, 120.0, 12001)])
    np.testing.assert_allclose(np.asarray(airy_kernel(v)), _airy_ref(v), rtol=0, atol=1e-14)


def test_airy_kernel_closed_form_points():
    assert float(airy_kernel(0.0)) == 1.0
    first_zero = special.jn_zeros(1, 1)[0]  # 3.8317...
    assert abs(float(airy_kernel(first_zero))) < 1e-7
    # Half maximum at v = 1.6163 (FWHM = 0.514 lambda / NA).
    assert abs(float(airy_kernel(1.616339948)) - 0.5) < 1e-6


# ---------------------------------------------------------------- (2) transforms


@pytest.mark.parametrize("f", [bessel_j0, bessel_j1, airy_kernel])
def test_jit_vmap_invariance(f):
    x = jnp.linspace(-30.0, 30.0, 64).reshape(4, 16)
    eager = f(x)
    np.testing.assert_allclose(np.asarray(jax.jit(f)(x)), np.asarray(eager), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(jax.vmap(f)(x)), np.asarray(eager), rtol=1e-6, atol=1e-7)
    assert eager.shape == (4, 16)


# ---------------------------------------------------------------- (3) gradients


@pytest.mark.parametrize("f", [bessel_j0, bessel_j1, airy_kernel])
def test_check_grads(x64, f):
    x = jnp.asarray(EDGE_X)
    check_grads(f, (x,), order=1, modes=["rev", "fwd"])


def test_check_grads_second_order_airy(x64):
    # PSF fits may use Hessians (Fisher information); the Airy kernel is smooth to 2nd order.
    check_grads(airy_kernel, (jnp.asarray(EDGE_X),), order=2, modes=["rev"])


@pytest.mark.parametrize("f", [bessel_j0, bessel_j1, airy_kernel])
def test_finite_gradient_at_zero_float32(f):
    g = jax.grad(f)(jnp.float32(0.0))
    assert np.isfinite(float(g))


def test_airy_gradient_at_zero_is_zero():
    assert float(jax.grad(airy_kernel)(0.0)) == 0.0
    # Second derivative at 0 of [2J1(v)/v]^2 = 1 - v^2/4 + ... is -1/2.
    assert abs(float(jax.grad(jax.grad(airy_kernel))(0.0)) + 0.5) < 1e-6


# ---------------------------------------------------------------- properties


@settings(max_examples=25)
@given(st.floats(min_value=-500.0, max_value=500.0, allow_nan=False))
def test_airy_kernel_bounded(v):
    a = float(airy_kernel(np.float32(v)))
    assert -1e-7 <= a <= 1.0 + 1e-7


@settings(max_examples=25)
@given(st.floats(min_value=0.05, max_value=300.0, allow_nan=False))
def test_recurrence_identity(x):
    # Independent recurrence J0 + J2 = 2 J1 / x (A&S 9.1.27)
    # with J2 from scipy.
    j0 = float(bessel_j0(np.float32(x)))
    j1 = float(bessel_j1(np.float32(x)))
    xx = float(np.float32(x))
    assert abs(j0 + special.jv(2, xx) - 2 * j1 / xx) < 2e-6 * max(1.0, 1.0 / xx)


# ---------------------------------------------------------------- (4) bad input


@pytest.mark.parametrize("f,name", [(bessel_j0, "x"), (bessel_j1, "x"), (airy_kernel, "v")])
def test_bad_input(f, name):
    with pytest.raises(TypeError, match=name):
        f("abc")
    with pytest.raises(TypeError, match=name):
        f(np.array([1.0 + 2.0j]))


def test_integer_input_is_float():
    out = bessel_j0(np.arange(3))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), special.j0(np.arange(3.0)), atol=5e-7)
