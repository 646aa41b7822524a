"""jaxsr.smlm.generative: the decoder's renderer and likelihood, the fit, the priors and the sampler."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal, stats

from jaxsr.smlm.generative import (
    GenerativeModel,
    Microscope,
    ParticlePriors,
    fit_generative,
    fit_priors,
    generative_sampler,
    poisson_gaussian_nll,
    pupil_psf_grid,
    render_particles,
)

STEPS = 120
OPTICS = {"na": 1.4, "wavelength_nm": 670.0, "refractive_index": 1.518, "pixel_size_nm": 100.0, "oversample": 4,
          "psf_size": 9}

# The renderer jit-compiled, as fit_generative and the sampler run it (eagerly, every one of its
# primitives compiles, about 1 s per particle / frame shape).
_render = jax.jit(render_particles, static_argnames=("shape", "oversample", "margin"))


def _psf(z=None):
    z = jnp.zeros(6) if z is None else jnp.asarray(z, jnp.float32)
    return pupil_psf_grid(z, **OPTICS)


def test_render_particles_matches_scipy_convolution_and_binning():
    psf = np.asarray(_psf([0, 0, 0, 0, 0.4, 0.0]))
    # An emitter on a fine-grid point: the render is the PSF placed there, binned 4 x 4 (scipy reference).
    y, x = 10.0 + 1.5 / 4, 12.0 - 0.5 / 4  # fine-grid points: (k + 0.5) / 4 - 0.5 camera px
    img = np.asarray(_render(jnp.array([[y]]), jnp.array([[x]]), jnp.array([[1000.0]]), jnp.asarray(psf),
                             shape=(24, 28), oversample=4))[0]
    fine = np.zeros((24 * 4, 28 * 4))
    fine[int(round((y + 0.5) * 4 - 0.5)), int(round((x + 0.5) * 4 - 0.5))] = 1000.0
    ref = signal.fftconvolve(fine, psf[::-1, ::-1][::-1, ::-1], mode="full")
    c = psf.shape[0] // 2
    ref = ref[c:c + 96, c:c + 112].reshape(24, 4, 28, 4).sum(axis=(1, 3))
    np.testing.assert_allclose(img, ref, atol=1e-3 * 1000 * psf.max())
    assert img.sum() == pytest.approx(1000.0, rel=1e-3)  # the 9-px PSF lies inside the frame


def test_render_particles_centroid_is_the_position_for_a_symmetric_psf():
    psf = _psf()
    rng = np.random.default_rng(1)
    pos = rng.uniform(8, 14, (5, 2))
    img = np.asarray(_render(jnp.asarray(pos[:, :1].T), jnp.asarray(pos[:, 1:].T), jnp.full((1, 5), 0.0)
                             .at[0, 0].set(500.0), psf, shape=(24, 24), oversample=4))[0]
    yy, xx = np.mgrid[0:24, 0:24]
    cy, cx = (img * yy).sum() / img.sum(), (img * xx).sum() / img.sum()
    assert cy == pytest.approx(pos[0, 0], abs=0.01) and cx == pytest.approx(pos[0, 1], abs=0.01)


def test_poisson_gaussian_nll_is_the_normal_closed_form():
    rng = np.random.default_rng(2)
    d, mu, v = rng.normal(30, 5, (3, 4, 4)), rng.uniform(10, 40, (3, 4, 4)), rng.uniform(0.5, 3, (4, 4))
    ref = -np.mean(stats.norm.logpdf(d, mu, np.sqrt(mu + v)))
    assert float(poisson_gaussian_nll(jnp.asarray(d), jnp.asarray(mu), jnp.asarray(v))) == pytest.approx(ref, rel=1e-5)


def test_fit_generative_recovers_background_psf_and_hot_pixels():
    # Known particles, a flat background of 20 with a bright corner, one hot pixel, an astigmatic PSF:
    # the fit (encoder = the true positions, jittered) finds the background, the hot pixel and a PSF
    # whose image matches the true one (up to the sign of even modes, which the intensity cannot tell).
    t, n = 40, 24
    rng = np.random.default_rng(3)
    true_z = jnp.array([0, 0, 0, 0, 0.0, 0.5], jnp.float32)
    psf_true = _psf(true_z)
    pos = rng.uniform(2, n - 3, (t, 3, 2)).astype(np.float32)
    pos[..., 1] = np.minimum(pos[..., 1], 16.0)  # molecules leave a dark strip at x > 20
    ph = rng.uniform(1500, 3000, (t, 3)).astype(np.float32)
    bg = np.full((n, n), 20.0, np.float32)
    bg[:8, :8] = 35.0
    var = np.full((n, n), 1.0, np.float32)
    var[12, 5] = 400.0
    mu = np.asarray(_render(jnp.asarray(pos[..., 0]), jnp.asarray(pos[..., 1]), jnp.asarray(ph), psf_true,
                            shape=(n, n), oversample=4)) + bg
    data = rng.poisson(mu) + np.sqrt(var) * rng.standard_normal(mu.shape)
    f = np.repeat(np.arange(t), 3)
    parts = {"frame": f, "y": pos[..., 0].ravel() + rng.normal(0, 0.2, f.size),
             "x": pos[..., 1].ravel() + rng.normal(0, 0.2, f.size), "photons": ph.ravel() * 0.8}
    # Plus false positives in 8 frames, each in another place of the dark strip: the fit drains
    # their photons and the priors leave them out. (False positives in the same place in many
    # frames could trade their light against the background map there.)
    fake = np.stack([np.linspace(2.0, 21.0, 8), rng.uniform(20.5, 22.5, 8)])
    parts = {k: np.concatenate([v, fill]) for (k, v), fill in
             zip(parts.items(), (np.arange(0, t, 5), fake[0], fake[1], np.full(8, 500.0)))}
    gm = fit_generative(data.astype(np.float32), parts, n_zernike=6, steps=STEPS, learning_rate=0.05, **OPTICS)
    assert gm.history[-1] < gm.history[0]
    got_bg = np.asarray(gm.microscope.background)
    assert np.median(np.abs(got_bg - bg) / bg) < 0.05
    v = np.asarray(gm.microscope.read_variance)
    assert v[12, 5] > 100 and np.median(v) < 5
    psf_fit = np.asarray(pupil_psf_grid(gm.microscope.zernike_rad, **OPTICS))
    assert np.corrcoef(psf_fit.ravel(), np.asarray(psf_true).ravel())[0, 1] > 0.98
    assert abs(float(gm.microscope.zernike_rad[5])) == pytest.approx(0.5, abs=0.1)
    assert gm.priors.density == pytest.approx(3 / n**2, rel=0.05)  # the false positives left out
    assert gm.priors.log_photons_mean == pytest.approx(np.log(ph).mean(), abs=0.1)


def test_fit_priors_recovers_photons_density_and_stay_on():
    rng = np.random.default_rng(4)
    t, n, k = 400, 64, 20
    rows, prev = [], None
    for f in range(t):
        if prev is None:
            cur = rng.uniform(0, n, (k, 2))
        else:  # each molecule stays on with p = 0.6 (same place), else a new one elsewhere
            stay = rng.uniform(size=k) < 0.6
            cur = np.where(stay[:, None], prev, rng.uniform(0, n, (k, 2)))
        rows.append(np.column_stack([np.full(k, f), cur]))
        prev = cur
    tab = np.concatenate(rows)
    photons = np.exp(rng.normal(7.0, 0.4, len(tab)))
    pri = fit_priors({"frame": tab[:, 0], "y": tab[:, 1], "x": tab[:, 2], "photons": photons}, n_frames=t,
                     shape=(n, n))
    assert pri.log_photons_mean == pytest.approx(7.0, abs=0.02)
    assert pri.log_photons_sd == pytest.approx(0.4, abs=0.02)
    assert pri.density == pytest.approx(k / n**2)
    assert pri.p_stay_on == pytest.approx(0.6, abs=0.03)


def _model(n=48):
    micro = Microscope(jnp.zeros(6), jnp.full((n, n), 20.0), jnp.full((n, n), 2.0))
    return GenerativeModel(micro, ParticlePriors(math.log(1000.0), 0.3, 0.01, 0.5), OPTICS, [])


def test_generative_sampler_draws_labelled_windows_from_the_priors():
    sampler = generative_sampler(_model(), size=32)
    b = sampler(jax.random.key(0), 64)
    assert b.frames.shape == (64, 3, 32, 32)
    m = np.asarray(b.mask)
    # Middle-frame density within +-50 % of the prior 0.01 per px^2 (mean 0.01).
    assert m.sum(axis=1).mean() == pytest.approx(0.01 * 32 * 32, rel=0.15)
    assert np.log(np.asarray(b.photons)[m]).mean() == pytest.approx(math.log(1000.0), abs=0.05)
    # Middle frames (neighbours may be replaced by the middle one, p_edge) scatter around their
    # expectation with variance mu + read variance.
    z = (np.asarray(b.frames)[:, 1] - np.asarray(b.expected)[:, 1]) / np.sqrt(np.asarray(b.expected)[:, 1] + 2.0)
    assert abs(z.mean()) < 0.02 and z.var() == pytest.approx(1.0, abs=0.03)
    np.testing.assert_array_equal(np.asarray(sampler(jax.random.key(0), 64).frames), np.asarray(b.frames))


def test_bad_input():
    with pytest.raises(ValueError, match="argument 'counts'"):
        fit_generative(np.zeros((8, 8)), {"frame": [0], "y": [1.0], "x": [1.0], "photons": [1.0]}, **OPTICS)
    with pytest.raises(ValueError, match="argument 'particles'"):
        fit_generative(np.zeros((2, 8, 8)), {"frame": [], "y": [], "x": [], "photons": []}, **OPTICS)
    with pytest.raises(ValueError, match="argument 'particles'"):
        fit_generative(np.zeros((2, 8, 8)), {"y": [1.0]}, **OPTICS)
    with pytest.raises(ValueError, match="argument 'size'"):
        generative_sampler(_model(16), size=32)
    with pytest.raises(ValueError, match="argument 'particles'"):
        fit_priors({"frame": [0], "y": [1.0], "x": [1.0], "photons": [1.0]}, n_frames=1, shape=(8, 8))
