"""PSNR and SSIM against scikit-image, under jit/vmap, gradients, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxsr.metrics import psnr, ssim


def _pair(rng, shape, noise=0.15):
    a = rng.random(shape)
    b = np.clip(a + noise * rng.standard_normal(shape), 0.0, 1.0)
    return a, b


def _sk_ssim(a, b, data_range, sigma=1.5, full=False):
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=sigma, use_sample_covariance=False, data_range=data_range, full=full
    )


# ------------------------------------------------------------------ reference
@pytest.mark.parametrize("shape", [(11, 11), (12, 17), (33, 24)])
def test_ssim_matches_skimage_float64(x64, rng, shape):
    a, b = _pair(rng, shape)
    ref_mean, ref_map = _sk_ssim(a, b, 1.0, full=True)
    mean, ssim_map = ssim(a, b, data_range=1.0, return_map=True)
    assert mean.dtype == jnp.float64
    # skimage and jaxsr evaluate the same float64 formula: agreement far below 1e-5.
    np.testing.assert_allclose(float(mean), ref_mean, rtol=0, atol=1e-8)
    np.testing.assert_allclose(np.asarray(ssim_map), ref_map, rtol=0, atol=1e-8)


@pytest.mark.parametrize("sigma", [0.8, 2.0])
def test_ssim_other_sigma_matches_skimage(x64, rng, sigma):
    a, b = _pair(rng, (30, 30))
    win = 2 * int(3.5 * sigma + 0.5) + 1  # skimage's truncation of its Gaussian
    ref = _sk_ssim(a, b, 2.0, sigma=sigma)
    np.testing.assert_allclose(float(ssim(a, b, data_range=2.0, sigma=sigma, win_size=win)), ref, atol=1e-8)


def test_ssim_float32_matches_skimage(rng):
    a, b = _pair(rng, (32, 40))
    ref = _sk_ssim(a, b, 1.0)
    got = ssim(a.astype(np.float32), b.astype(np.float32), data_range=1.0)
    assert got.dtype == jnp.float32
    # float32 moments of [0, 1] data: ~1e-6 observed; stated tolerance 1e-5.
    np.testing.assert_allclose(float(got), ref, atol=1e-5)


def test_psnr_matches_skimage(x64, rng):
    a, b = _pair(rng, (20, 24))
    ref = peak_signal_noise_ratio(a, b, data_range=1.0)
    np.testing.assert_allclose(float(psnr(b, a, data_range=1.0)), ref, rtol=1e-12)


def test_psnr_float32_matches_skimage(rng):
    a, b = _pair(rng, (20, 24))
    ref = peak_signal_noise_ratio(a, b, data_range=255.0)
    got = psnr(b.astype(np.float32), a.astype(np.float32), data_range=255.0)
    np.testing.assert_allclose(float(got), ref, rtol=1e-5)


def test_identical_images():
    img = jnp.linspace(0.0, 1.0, 24 * 24).reshape(24, 24)
    assert float(ssim(img, img, data_range=1.0)) == pytest.approx(1.0, abs=1e-6)
    assert np.isposinf(float(psnr(img, img, data_range=1.0)))


def test_ssim_decreases_with_noise(rng):
    a = rng.random((32, 32))
    scores = [float(ssim(a + s * rng.standard_normal(a.shape), a, data_range=1.0)) for s in (0.01, 0.1, 0.5)]
    assert scores[0] > scores[1] > scores[2]


# ---------------------------------------------------------- jit / vmap / batch
def test_batch_jit_vmap_agree(rng):
    a = rng.random((3, 24, 24)).astype(np.float32)
    b = rng.random((3, 24, 24)).astype(np.float32)
    loop = np.array([float(ssim(a[i], b[i], data_range=1.0)) for i in range(3)])
    batched = ssim(a, b, data_range=1.0)
    jitted = jax.jit(lambda x, y: ssim(x, y, data_range=1.0))(a, b)
    vmapped = jax.vmap(lambda x, y: ssim(x, y, data_range=1.0))(a, b)
    assert batched.shape == (3,)
    for got in (batched, jitted, vmapped):
        np.testing.assert_allclose(np.asarray(got), loop, rtol=1e-6, atol=1e-6)
    p_loop = np.array([float(psnr(a[i], b[i], data_range=1.0)) for i in range(3)])
    for got in (psnr(a, b, data_range=1.0), jax.jit(lambda x, y: psnr(x, y, data_range=1.0))(a, b),
                jax.vmap(lambda x, y: psnr(x, y, data_range=1.0))(a, b)):
        np.testing.assert_allclose(np.asarray(got), p_loop, rtol=1e-6)


def test_two_batch_axes_and_per_image_data_range(rng):
    a = rng.random((2, 2, 16, 16)).astype(np.float32)
    b = rng.random((2, 2, 16, 16)).astype(np.float32)
    ranges = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    got = ssim(a, b, data_range=ranges)
    assert got.shape == (2, 2)
    want = float(ssim(a[1, 0], b[1, 0], data_range=3.0))
    np.testing.assert_allclose(float(got[1, 0]), want, rtol=1e-6)
    got_p = psnr(a, b, data_range=ranges)
    np.testing.assert_allclose(float(got_p[0, 1]), float(psnr(a[0, 1], b[0, 1], data_range=2.0)), rtol=1e-6)


def test_traced_physical_parameters(rng):
    a, b = _pair(rng, (20, 20))
    f = jax.jit(lambda s, r: ssim(a, b, data_range=r, sigma=s))
    np.testing.assert_allclose(float(f(1.2, 1.0)), float(ssim(a, b, data_range=1.0, sigma=1.2)), rtol=1e-6)


# ------------------------------------------------------------------ gradients
def test_ssim_gradients(x64, rng):
    a, b = _pair(rng, (12, 13))
    check_grads(lambda x: ssim(x, b, data_range=1.0), (a,), order=1, modes=["rev"])
    check_grads(lambda s, r: ssim(a, b, data_range=r, sigma=s), (1.5, 1.0), order=1, modes=["rev"])


def test_psnr_gradients(x64, rng):
    a, b = _pair(rng, (8, 9))
    check_grads(lambda x: psnr(x, b, data_range=1.0), (a,), order=1, modes=["rev"])
    check_grads(lambda r: psnr(a, b, data_range=r), (2.0,), order=1, modes=["rev"])


def test_gradients_finite_at_edge_cases():
    zeros = jnp.zeros((16, 16))
    flat = jnp.full((16, 16), 0.5)
    g = jax.grad(lambda x: ssim(x, zeros, data_range=1.0))(zeros)
    assert bool(jnp.all(jnp.isfinite(g)))
    g = jax.grad(lambda x: ssim(x, flat, data_range=1.0))(flat)
    assert bool(jnp.all(jnp.isfinite(g)))
    g = jax.grad(lambda x: psnr(x, flat, data_range=1.0))(zeros)
    assert bool(jnp.all(jnp.isfinite(g)))


# ------------------------------------------------------------------ properties
_ssim_jit = jax.jit(lambda x, y: ssim(x, y, data_range=1.0))
_psnr_jit = jax.jit(lambda x, y, r: psnr(x, y, data_range=r))


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1))
def test_ssim_symmetric_and_bounded(seed):
    r = np.random.default_rng(seed)
    a, b = _pair(r, (16, 16), noise=0.3)
    ab, ba = float(_ssim_jit(a, b)), float(_ssim_jit(b, a))
    assert ab == pytest.approx(ba, abs=1e-6)
    assert -1.0 <= ab <= 1.0
    assert float(_ssim_jit(a, a)) == pytest.approx(1.0, abs=1e-5)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.01, 100.0))
def test_psnr_scale_invariant(seed, scale):
    r = np.random.default_rng(seed)
    a, b = _pair(r, (16, 16))
    base = float(_psnr_jit(a, b, 1.0))
    scaled = float(_psnr_jit(scale * a, scale * b, scale))
    assert scaled == pytest.approx(base, rel=1e-4)


# ------------------------------------------------------------------ bad input
def test_bad_input(rng):
    a = rng.random((16, 16))
    with pytest.raises(ValueError, match="reference"):
        ssim(a, a[:15], data_range=1.0)
    with pytest.raises(ValueError, match="reference"):
        psnr(a, a[:, :15], data_range=1.0)
    with pytest.raises(ValueError, match="image"):
        ssim(a[0], a[0], data_range=1.0)
    with pytest.raises(ValueError, match="image"):
        psnr(a[0], a[0], data_range=1.0)
    nan = a.copy()
    nan[3, 3] = np.nan
    with pytest.raises(ValueError, match="image"):
        ssim(nan, a, data_range=1.0)
    with pytest.raises(ValueError, match="reference"):
        psnr(a, nan, data_range=1.0)
    with pytest.raises(ValueError, match="image"):
        ssim(a[:10], a[:10], data_range=1.0)  # 10 rows < 11-tap window
    with pytest.raises(ValueError, match="win_size"):
        ssim(a, a, data_range=1.0, win_size=4)
    with pytest.raises(ValueError, match="sigma"):
        ssim(a, a, data_range=1.0, sigma=0.0)


def test_data_range_required_and_positive(rng):
    a = rng.random((16, 16))
    with pytest.raises(TypeError, match="data_range"):
        ssim(a, a)  # keyword-only, no default
    with pytest.raises(TypeError, match="data_range"):
        psnr(a, a)
    with pytest.raises(TypeError, match="data_range"):
        psnr(a, a, data_range=None)
    for bad in (0.0, -1.0, np.nan):
        with pytest.raises(ValueError, match="data_range"):
            ssim(a, a, data_range=bad)
        with pytest.raises(ValueError, match="data_range"):
            psnr(a, a, data_range=bad)
