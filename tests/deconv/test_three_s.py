"""Tests for jaxsr.deconv.three_s: 3S denoising and per-pixel series statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from jaxsr.deconv.three_s import series_average, series_median, three_s_denoise


# --------------------------------------------------------------------------- 1. references


def test_three_s_matches_numpy(rng):
    on = rng.normal(50, 10, (7, 6, 5)).astype(np.float32)
    off = rng.normal(20, 10, (7, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(three_s_denoise(on, off)), on.mean(0) - off.mean(0), rtol=1e-5, atol=1e-5)


def test_three_s_3d_stacks(rng):
    on = rng.random((4, 3, 6, 5))
    off = rng.random((4, 3, 6, 5))
    out = np.asarray(three_s_denoise(on, off))
    assert out.shape == (3, 6, 5)
    np.testing.assert_allclose(out, on.mean(0) - off.mean(0), atol=1e-6)


def test_fixed_pattern_background_cancels_and_noise_averages(rng):
    """Signal + identical background in ON and OFF: the clear image is unbiased, noise ~ 1/sqrt(n)."""
    n, shape = 64, (32, 32)
    signal = np.zeros(shape)
    signal[10:20, 5:25] = 40.0
    background = 100.0 + 30.0 * rng.random(shape)
    sigma = 5.0
    on = signal + background + rng.normal(0, sigma, (n, *shape))
    off = background + rng.normal(0, sigma, (n, *shape))
    residual = np.asarray(three_s_denoise(on.astype(np.float32), off.astype(np.float32))) - signal
    expected_std = sigma * np.sqrt(2.0 / n)
    assert abs(residual.mean()) < 4 * expected_std / np.sqrt(residual.size)
    assert residual.std() == pytest.approx(expected_std, rel=0.1)
    # the raw difference keeps negative noise values (it is not clipped)
    assert residual.min() < 0


def test_series_statistics_match_numpy(rng):
    frames = rng.normal(0, 1, (9, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(series_average(frames)), frames.mean(0), atol=1e-6)
    np.testing.assert_allclose(np.asarray(series_median(frames)), np.median(frames, 0), atol=1e-6)
    even = frames[:8]
    np.testing.assert_allclose(np.asarray(series_median(even)), np.median(even, 0), atol=1e-6)


def test_median_is_robust_to_outlier_frames(rng):
    frames = np.ones((7, 4, 4), np.float32)
    frames[0] = 1000.0
    assert np.allclose(np.asarray(series_median(frames)), 1.0)
    assert not np.allclose(np.asarray(series_average(frames)), 1.0)


@settings(max_examples=10)
@given(st.floats(-50, 50), st.floats(0.1, 10))
def test_affine_equivariance(shift, scale):
    rng = np.random.default_rng(3)
    on = rng.random((5, 4, 4)).astype(np.float32)
    off = rng.random((5, 4, 4)).astype(np.float32)
    base = np.asarray(three_s_denoise(on, off))
    # a common offset cancels; a common gain scales the result
    np.testing.assert_allclose(np.asarray(three_s_denoise(on + shift, off + shift)), base, atol=1e-4)
    np.testing.assert_allclose(np.asarray(three_s_denoise(on * scale, off * scale)), base * scale, atol=1e-4)


# --------------------------------------------------------------------------- 2. jit / vmap


def test_jit_and_vmap(rng):
    on = jnp.asarray(rng.random((3, 5, 4, 4)), jnp.float32)  # 3 series of 5 frames
    off = jnp.asarray(rng.random((3, 5, 4, 4)), jnp.float32)
    loop = np.stack([np.asarray(three_s_denoise(a, b)) for a, b in zip(on, off)])
    np.testing.assert_allclose(np.asarray(jax.vmap(three_s_denoise)(on, off)), loop, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(three_s_denoise)(on[0], off[0])), loop[0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.vmap(series_median)(on)), np.median(np.asarray(on), 1), atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(series_average)(on[0])), np.asarray(on[0]).mean(0), atol=1e-6)


# --------------------------------------------------------------------------- 3. gradients


def test_check_grads_float64(x64, rng):
    on = jnp.asarray(rng.random((3, 4, 4)))
    off = jnp.asarray(rng.random((3, 4, 4)))
    check_grads(three_s_denoise, (on, off), order=1, modes=["rev"])
    check_grads(series_average, (on,), order=1, modes=["rev"])
    check_grads(series_median, (on,), order=1, modes=["rev"])  # distinct values: median is smooth
    g = jax.grad(lambda a: jnp.sum(three_s_denoise(a, jnp.zeros_like(a))))(jnp.zeros((2, 3, 3)))
    np.testing.assert_allclose(np.asarray(g), 0.5)  # d mean / d frame = 1 / n


# --------------------------------------------------------------------------- 4. edge cases and bad input


def test_single_frame_and_integer_input():
    on = np.full((1, 3, 3), 7, np.uint16)
    off = np.full((1, 3, 3), 2, np.uint16)
    out = three_s_denoise(on, off)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), 5.0)  # no unsigned wrap-around


def test_bad_input():
    on = jnp.ones((4, 5, 5))
    with pytest.raises(ValueError, match="off_frames"):
        three_s_denoise(on, jnp.ones((4, 5, 6)))
    with pytest.raises(ValueError, match="off_frames"):
        three_s_denoise(on, jnp.ones((3, 5, 5)))
    with pytest.raises(ValueError, match="on_frames"):
        three_s_denoise(jnp.ones((0, 5, 5)), jnp.ones((0, 5, 5)))
    with pytest.raises(ValueError, match="on_frames"):
        three_s_denoise(jnp.ones((5, 5)), jnp.ones((5, 5)))
    with pytest.raises(ValueError, match="on_frames"):
        three_s_denoise(on.at[0, 0, 0].set(jnp.nan), on)
    with pytest.raises(ValueError, match="off_frames"):
        three_s_denoise(on, on.at[0, 0, 0].set(jnp.inf))
    with pytest.raises(ValueError, match="frames"):
        series_median(jnp.ones((5, 5)))
    with pytest.raises(ValueError, match="frames"):
        series_average(jnp.ones((0, 2, 2)))
    with pytest.raises(TypeError, match="on_frames"):
        three_s_denoise("on", on)
