"""Tests for jaxsr.optics.otf: PSF <-> OTF conversion and the n // 2 centring convention."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from jaxsr.optics import centre_pad_psf, gaussian_psf_2d, otf_to_psf, psf_to_otf


def _circular_convolve_ref(image, psf):
    """Direct definition: out[i] = sum_j psf[j] image[(i - (j - c)) mod N], c = n // 2 per axis."""
    out = np.zeros_like(image, dtype=np.float64)
    centre = [n // 2 for n in psf.shape]
    for j in itertools.product(*(range(n) for n in psf.shape)):
        shift = tuple(jj - c for jj, c in zip(j, centre))
        out += psf[j] * np.roll(image, shift, axis=tuple(range(image.ndim)))
    return out


def _convolve_otf(image, psf):
    otf = psf_to_otf(psf, image.shape)
    return jnp.fft.irfftn(jnp.fft.rfftn(image) * otf, s=image.shape)


# ---------------------------------------------------------------- (1) references


@pytest.mark.parametrize("img_shape,psf_shape", [((12, 13), (5, 5)), ((12, 13), (4, 6)), ((11, 10), (7, 4)),
                                                 ((6, 7, 8), (3, 4, 5))])
def test_convolution_matches_direct_circular(rng, img_shape, psf_shape):
    image = rng.random(img_shape)
    psf = rng.random(psf_shape)
    got = np.asarray(_convolve_otf(jnp.asarray(image, jnp.float32), jnp.asarray(psf, jnp.float32)))
    np.testing.assert_allclose(got, _circular_convolve_ref(image, psf), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(8, 8), (9, 9), (8, 9), (5, 6, 7)])
def test_centred_delta_has_unit_otf(shape):
    # A delta at index n // 2 is "no blur, no shift": its OTF is exactly 1.
    for grid in (shape, tuple(s + 3 for s in shape)):
        delta = np.zeros(shape, np.float32)
        delta[tuple(s // 2 for s in shape)] = 1.0
        otf = np.asarray(psf_to_otf(delta, grid))
        assert otf.shape == (*grid[:-1], grid[-1] // 2 + 1)
        np.testing.assert_allclose(otf, np.ones_like(otf), atol=1e-6)


def test_shifted_delta_is_linear_phase():
    n = 10
    delta = np.zeros((n, n), np.float32)
    delta[n // 2, n // 2 + 1] = 1.0  # one pixel right of centre
    otf = np.asarray(psf_to_otf(delta, (n, n)))
    fx = np.fft.rfftfreq(n)
    np.testing.assert_allclose(otf, np.broadcast_to(np.exp(-2j * np.pi * fx), otf.shape), atol=1e-6)


def test_symmetric_psf_has_real_otf():
    psf = gaussian_psf_2d((9, 9), sigma_nm=(120.0, 90.0), pixel_size_nm=100.0)
    otf = np.asarray(psf_to_otf(psf, (16, 20)))
    assert np.abs(otf.imag).max() < 1e-6
    assert abs(otf[0, 0].real - 1.0) < 1e-6  # unit sum -> OTF(0) = 1


# ---------------------------------------------------------------- roundtrips and padding


@pytest.mark.parametrize("psf_shape,grid", [((5, 5), (5, 5)), ((4, 4), (4, 4)), ((5, 4), (12, 9)),
                                            ((4, 5), (11, 12)), ((3, 4, 5), (6, 7, 8))])
def test_roundtrip(rng, psf_shape, grid):
    psf = jnp.asarray(rng.random(psf_shape), jnp.float32)
    back = otf_to_psf(psf_to_otf(psf, grid), grid)
    assert back.shape == grid
    np.testing.assert_allclose(np.asarray(back), np.asarray(centre_pad_psf(psf, grid)), atol=1e-6)
    # ... and the PSF sits in the padded grid with its centre n // 2 -> grid // 2.
    c_in = tuple(s // 2 for s in psf_shape)
    c_out = tuple(g // 2 for g in grid)
    np.testing.assert_allclose(float(back[c_out]), float(psf[c_in]), atol=1e-6)
    np.testing.assert_allclose(float(jnp.sum(back)), float(jnp.sum(psf)), rtol=1e-5)


@pytest.mark.parametrize("n,target", [(5, 9), (5, 8), (6, 9), (6, 10), (9, 5), (8, 5), (9, 4), (8, 4)])
def test_centre_pad_moves_centre_to_centre(n, target):
    psf = np.zeros((n, n), np.float32)
    psf[n // 2, n // 2] = 1.0
    out = np.asarray(centre_pad_psf(psf, (target, target)))
    assert out.shape == (target, target)
    assert np.unravel_index(np.argmax(out), out.shape) == (target // 2, target // 2)


@pytest.mark.parametrize("n,target", [(5, 9), (6, 9), (6, 10), (5, 8)])
def test_pad_then_crop_is_identity(rng, n, target):
    psf = jnp.asarray(rng.random((2, n, n)), jnp.float32)  # with a batch axis
    padded = centre_pad_psf(psf, (target, target))
    assert padded.shape == (2, target, target)
    np.testing.assert_array_equal(np.asarray(centre_pad_psf(padded, (n, n))), np.asarray(psf))


def test_batch_axes(rng):
    psf = jnp.asarray(rng.random((3, 5, 5)), jnp.float32)
    otf = psf_to_otf(psf, (8, 8))
    assert otf.shape == (3, 8, 5)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(otf[i]), np.asarray(psf_to_otf(psf[i], (8, 8))), atol=1e-6)


@settings(max_examples=10)
@given(st.integers(0, 7), st.integers(0, 8))
def test_shift_equivariance(dy, dx):
    # Convolution through the OTF commutes with circular shifts of the image (fixed shapes: one compile).
    rng = np.random.default_rng(dy * 31 + dx)
    image = jnp.asarray(rng.random((8, 9)), jnp.float32)
    psf = jnp.asarray(rng.random((4, 5)), jnp.float32)
    a = jnp.roll(_convolve_otf(image, psf), (dy, dx), axis=(0, 1))
    b = _convolve_otf(jnp.roll(image, (dy, dx), axis=(0, 1)), psf)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


# ---------------------------------------------------------------- (2) transforms, (3) gradients


def test_jit_vmap(rng):
    psf = jnp.asarray(rng.random((2, 5, 6)), jnp.float32)
    f = jax.jit(lambda p: psf_to_otf(p, (8, 9)))
    np.testing.assert_allclose(np.asarray(f(psf)), np.asarray(psf_to_otf(psf, (8, 9))), atol=1e-6)
    vm = jax.vmap(lambda p: psf_to_otf(p, (8, 9)))(psf)
    np.testing.assert_allclose(np.asarray(vm), np.asarray(psf_to_otf(psf, (8, 9))), atol=1e-6)
    g = jax.jit(lambda o: otf_to_psf(o, (8, 9)))
    np.testing.assert_allclose(np.asarray(g(f(psf))), np.asarray(otf_to_psf(f(psf), (8, 9))), atol=1e-6)


def test_check_grads(x64, rng):
    image = jnp.asarray(rng.random((8, 9)))
    psf = jnp.asarray(rng.random((5, 4)))
    check_grads(lambda p: _convolve_otf(image, p), (psf,), order=1, modes=["rev"])
    check_grads(lambda p: otf_to_psf(psf_to_otf(p, (8, 7)), (8, 7)), (psf,), order=1, modes=["rev"])


# ---------------------------------------------------------------- (4) bad input


def test_bad_input():
    with pytest.raises(ValueError, match="psf"):
        psf_to_otf(jnp.ones((9, 9)), (8, 8))  # PSF larger than the grid
    with pytest.raises(ValueError, match="shape"):
        psf_to_otf(jnp.ones((3, 3)), (0, 8))
    with pytest.raises(ValueError, match="psf"):
        psf_to_otf(jnp.ones((3, 3)), (8, 8, 8))  # fewer PSF axes than grid axes
    with pytest.raises(TypeError, match="psf"):
        psf_to_otf("abc", (8, 8))
    with pytest.raises(ValueError, match="otf"):
        otf_to_psf(jnp.ones((8, 8), jnp.complex64), (8, 8))  # not an rfft half-spectrum of (8, 8)
    with pytest.raises(ValueError, match="psf"):
        centre_pad_psf(jnp.ones((4,)), (4, 4))
