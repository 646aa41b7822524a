"""poisson_noise: exact Poisson values, reparametrised (finite, unbiased) gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxsr.forward import poisson_noise

N = 20000
# One small shape shared by the small tests, so the sampler compiles once for them.
RATE = jnp.concatenate([jnp.zeros(4), jnp.array([1e-8, 0.7]), jnp.linspace(0.5, 100.0, 58)])


@pytest.mark.parametrize("rate", [0.0, 0.3, 4.0, 60.0])
def test_moments_and_pmf_match_poisson(key, rate):
    samples = np.asarray(poisson_noise(key, jnp.full((N,), rate)))
    assert np.all(samples == np.round(samples)) and samples.min() >= 0
    mean_se = np.sqrt(max(rate, 1e-12) / N)
    assert abs(samples.mean() - rate) <= 5 * mean_se + 1e-12
    # Var of the sample variance for Poisson: (mu4 - (N-3)/(N-1) sigma^4) / N, mu4 = lam + 3 lam^2.
    var_se = np.sqrt((rate + 3 * rate**2 - (N - 3) / (N - 1) * rate**2) / N)
    assert abs(samples.var(ddof=1) - rate) <= 5 * var_se + 1e-12
    p0 = stats.poisson.pmf(0, rate)
    assert abs((samples == 0).mean() - p0) <= 5 * np.sqrt(p0 * (1 - p0) / N) + 1e-12


def test_value_is_the_jax_poisson_sample(key):
    expected = jax.random.poisson(key, RATE, shape=RATE.shape)
    np.testing.assert_array_equal(poisson_noise(key, RATE), expected.astype(jnp.float32))


def test_jit_vmap_invariance(key):
    rate = RATE
    eager = poisson_noise(key, rate)
    np.testing.assert_array_equal(jax.jit(poisson_noise)(key, rate), eager)
    keys = jax.random.split(key, 3)
    batched = jax.vmap(poisson_noise, in_axes=(0, None))(keys, rate)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], poisson_noise(keys[i], rate))


@pytest.mark.parametrize("rate", [0.5, 5.0, 40.0])
def test_expected_derivative_is_one(key, rate):
    rates = jnp.full((N,), rate)
    grads = np.asarray(jax.grad(lambda r: jnp.sum(poisson_noise(key, r)))(rates))
    # d sample / d rate = 1/2 + s/(2 rate): mean 1, variance 1/(4 rate).
    se = np.sqrt(1.0 / (4 * rate) / N)
    assert abs(grads.mean() - 1.0) <= 5 * se


def test_derivative_is_gaussian_reparametrisation(key):
    sample = poisson_noise(key, RATE)[4:]
    rate = RATE[4:]  # positive rates
    z = (sample - rate) / jnp.sqrt(rate)
    reparam = jax.grad(lambda r: jnp.sum(r + jnp.sqrt(r) * z))(rate)
    grads = jax.grad(lambda r: jnp.sum(poisson_noise(key, r)))(RATE)[4:]
    np.testing.assert_allclose(grads, reparam, rtol=1e-5)


def test_gradient_finite_at_zero_rate(key):
    grads = jax.grad(lambda r: jnp.sum(poisson_noise(key, r) ** 2 + poisson_noise(key, r)))(RATE)
    assert np.all(np.isfinite(grads))
    g0 = jax.grad(lambda r: jnp.sum(poisson_noise(key, r)))(RATE)[:4]
    np.testing.assert_allclose(g0, 1.0)


def test_float64_and_shape_preserved(x64, key):
    rate = jnp.full((2, 3, 4), 3.0, dtype=jnp.float64)
    out = poisson_noise(key, rate)
    assert out.shape == (2, 3, 4) and out.dtype == jnp.float64


def test_bad_rate(key):
    with pytest.raises(ValueError, match="rate"):
        poisson_noise(key, jnp.array([1.0, -0.5]))
    with pytest.raises(ValueError, match="rate"):
        poisson_noise(key, jnp.array([jnp.nan]))
    with pytest.raises(TypeError, match="rate"):
        poisson_noise(key, "a")
