"""Tests for jaxsr.simulate.rsfp: the RSFP ON/OFF series simulator of the 3S/CLID experiment."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal, special

from jaxsr.optics import airy_psf_2d
from jaxsr.simulate import render_polyline
from jaxsr.simulate.rsfp import RSFPSeries, rsfp_background, simulate_rsfp_series

BIN = 3
FINE_PX = 65.0 / BIN
N_CYCLES = 50


@pytest.fixture(scope="module")
def scene():
    """Two crossing lines on a 96 x 96 fine grid (21.7 nm), Airy PSF at NA 1.49 / 488 nm."""
    lines = jnp.array([[[300.0, 200.0], [1800.0, 1900.0]], [[1500.0, 300.0], [400.0, 1700.0]]])
    obj = render_polyline(lines, shape=(96, 96), pixel_size_nm=FINE_PX, photons_per_nm=1.0,
                          samples_per_segment=400)
    psf = airy_psf_2d((21, 21), na=1.49, wavelength_nm=488.0, pixel_size_nm=FINE_PX)
    return np.asarray(obj), np.asarray(psf)


@pytest.fixture(scope="module")
def series(scene):
    obj, psf = scene
    return simulate_rsfp_series(jax.random.key(11), obj, psf, n_cycles=N_CYCLES, binning=BIN)


def _clean_reference(obj, psf, peak=255.0):
    blurred = signal.fftconvolve(obj.astype(np.float64), psf.astype(np.float64), mode="same")  # odd psf
    binned = blurred.reshape(32, BIN, 32, BIN).sum(axis=(1, 3))
    return binned * peak / binned.max()


# --------------------------------------------------------------------------- 1. references and statistics


def test_clean_is_blurred_binned_normalised(scene, series):
    obj, psf = scene
    assert isinstance(series, RSFPSeries)
    on, off, clean = series
    assert on.shape == off.shape == (N_CYCLES, 32, 32) and clean.shape == (32, 32)
    np.testing.assert_allclose(np.asarray(clean), _clean_reference(obj, psf), atol=2e-3)
    assert float(clean.max()) == pytest.approx(255.0)


def test_three_s_difference_is_unbiased_with_predicted_noise(series):
    on, off, clean = (np.asarray(a, np.float64) for a in series)
    resid = on.mean(0) - off.mean(0) - clean
    var = 2.0 * (5.0 + 5.0**2) / N_CYCLES  # Poisson(5) + N(0, 5^2) per frame, ON and OFF
    assert abs(resid.mean()) < 4.0 * np.sqrt(var / resid.size)
    assert resid.var() == pytest.approx(var, rel=0.15)  # 1024 samples: 4.4 sigma


def test_off_frames_hold_no_signal(series):
    _, off, clean = (np.asarray(a, np.float64) for a in series)
    bright = clean > 100
    dark = clean < 1
    assert bright.sum() > 20 and dark.sum() > 20
    # the background is smooth and unrelated to the lines: the OFF mean does not follow the signal
    off_mean = off.mean(0)
    corr = np.corrcoef(off_mean.ravel(), clean.ravel())[0, 1]
    assert abs(corr) < 0.3
    on_mean = np.asarray(series.on, np.float64).mean(0)
    assert np.corrcoef((on_mean - off_mean).ravel(), clean.ravel())[0, 1] > 0.99


def test_noise_free_structure(scene):
    """Without noise: OFF frames all equal the background, ON - OFF equals the clean signal."""
    obj, psf = scene
    # (same static configuration as the fixture: one compiled kernel)
    s = simulate_rsfp_series(jax.random.key(3), obj, psf, n_cycles=N_CYCLES, binning=BIN, poisson_lam=0.0,
                             gaussian_std=0.0)
    off = np.asarray(s.off)
    np.testing.assert_array_equal(off, np.broadcast_to(off[0], off.shape))
    np.testing.assert_allclose(np.asarray(s.on) - off, np.broadcast_to(np.asarray(s.clean), off.shape), atol=1e-4)
    # the drawn background is a smooth non-negative field with mean ~ 85
    assert off.min() >= 0 and 60 < off.mean() < 110
    # a given background pattern is used as is
    bg = np.linspace(0.0, 50.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    s2 = simulate_rsfp_series(jax.random.key(3), obj, psf, n_cycles=N_CYCLES, binning=BIN, poisson_lam=0.0,
                              gaussian_std=0.0, background_pattern=bg)
    np.testing.assert_allclose(np.asarray(s2.off), np.broadcast_to(bg, (N_CYCLES, 32, 32)), atol=1e-5)


def test_poisson_and_gaussian_noise_distributions(scene):
    obj, psf = scene
    zeros = np.zeros((32, 32), np.float32)
    s = simulate_rsfp_series(jax.random.key(5), obj, psf, n_cycles=N_CYCLES, binning=BIN, gaussian_std=0.0,
                             background_pattern=zeros)
    counts = np.asarray(s.off).ravel()
    np.testing.assert_array_equal(counts, np.round(counts))  # integer Poisson counts
    n = counts.size
    for k in range(12):  # frequencies against the Poisson(5) pmf, 5 binomial sigma
        p = np.exp(special.xlogy(k, 5.0) - 5.0 - special.gammaln(k + 1))
        assert abs(np.mean(counts == k) - p) < 5 * np.sqrt(p * (1 - p) / n)
    g = simulate_rsfp_series(jax.random.key(6), obj, psf, n_cycles=N_CYCLES, binning=BIN, poisson_lam=0.0,
                             background_pattern=zeros)
    vals = np.asarray(g.off, np.float64).ravel()
    assert abs(vals.mean()) < 5 * 5.0 / np.sqrt(vals.size)
    assert vals.std() == pytest.approx(5.0, rel=0.02)


def test_background_pattern_statistics():
    bg = np.asarray(rsfp_background(jax.random.key(0), (64, 48), level=100.0, contrast=0.2), np.float64)
    # standardised field: mean and std exact (no clipping at contrast 0.2, 5 sigma)
    assert bg.mean() == pytest.approx(100.0, rel=1e-4)
    assert bg.std() == pytest.approx(20.0, rel=1e-3)
    # smooth: neighbouring pixels are strongly correlated (correlation length 8 px)
    assert np.corrcoef(bg[:, :-1].ravel(), bg[:, 1:].ravel())[0, 1] > 0.95
    other = np.asarray(rsfp_background(jax.random.key(1), (64, 48), level=100.0, contrast=0.2))
    assert not np.allclose(bg, other)


# --------------------------------------------------------------------------- 2. determinism, jit, vmap


def test_deterministic_from_key(scene, series):
    obj, psf = scene
    again = simulate_rsfp_series(jax.random.key(11), obj, psf, n_cycles=N_CYCLES, binning=BIN)
    for a, b in zip(series, again):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = simulate_rsfp_series(jax.random.key(12), obj, psf, n_cycles=N_CYCLES, binning=BIN)
    assert not np.allclose(np.asarray(other.on), np.asarray(series.on))
    np.testing.assert_allclose(np.asarray(other.clean), np.asarray(series.clean))


def test_vmap_over_keys_equals_loop(scene):
    obj, psf = scene
    keys = jax.random.split(jax.random.key(0), 2)

    def sim(k):
        return simulate_rsfp_series(k, obj, psf, n_cycles=N_CYCLES, binning=BIN)

    batched = jax.vmap(sim)(keys)
    for i in range(2):
        single = sim(keys[i])
        np.testing.assert_allclose(np.asarray(batched.on[i]), np.asarray(single.on), rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(np.asarray(batched.off[i]), np.asarray(single.off), rtol=1e-6, atol=1e-4)


def test_background_jit_vmap():
    keys = jax.random.split(jax.random.key(2), 3)
    f = lambda k: rsfp_background(k, (64, 48), level=100.0, contrast=0.2)  # noqa: E731
    loop = np.stack([np.asarray(f(k)) for k in keys])
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(f))(keys)), loop, rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------- 4. bad input


def test_bad_input(scene):
    obj, psf = scene
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="obj"):
        simulate_rsfp_series(key, -obj, psf, binning=BIN)
    with pytest.raises(ValueError, match="obj"):
        simulate_rsfp_series(key, np.zeros_like(obj), psf, binning=BIN)
    with pytest.raises(ValueError, match="obj"):
        simulate_rsfp_series(key, obj[None], psf, binning=BIN)
    with pytest.raises(ValueError, match="obj"):
        simulate_rsfp_series(key, obj, psf, binning=5)  # 96 not divisible by 5
    with pytest.raises(ValueError, match="psf"):
        simulate_rsfp_series(key, obj, np.full((5, 5), np.nan), binning=BIN)
    with pytest.raises(ValueError, match="psf"):
        simulate_rsfp_series(key, np.ones((8, 8)), psf)
    with pytest.raises(ValueError, match="background_pattern"):
        simulate_rsfp_series(key, obj, psf, binning=BIN, background_pattern=np.zeros((96, 96)))
    with pytest.raises(ValueError, match="n_cycles"):
        simulate_rsfp_series(key, obj, psf, n_cycles=0)
    with pytest.raises(TypeError, match="binning"):
        simulate_rsfp_series(key, obj, psf, binning=1.5)
    with pytest.raises(ValueError, match="poisson_lam"):
        simulate_rsfp_series(key, obj, psf, poisson_lam=-1.0)
    with pytest.raises(ValueError, match="gaussian_std"):
        simulate_rsfp_series(key, obj, psf, gaussian_std=float("nan"))
    with pytest.raises(ValueError, match="peak"):
        simulate_rsfp_series(key, obj, psf, peak=0.0)
    with pytest.raises(ValueError, match="correlation_px"):
        rsfp_background(key, (8, 8), correlation_px=0.0)
    with pytest.raises(ValueError, match="shape"):
        rsfp_background(key, (8, 8, 8))
