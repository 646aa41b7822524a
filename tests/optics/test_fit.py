"""fit_psf recovers known PSF parameters from simulated beads (closed-form truth)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.optics import airy_psf_2d, fit_psf, gaussian_psf_2d, pupil_psf_3d


def test_gaussian_noiseless_exact():
    truth = 1e4 * np.asarray(gaussian_psf_2d((15, 15), sigma_nm=(150.0, 110.0), pixel_size_nm=100.0,
                                             offset_nm=(25.0, -40.0))) + 3.0
    r = fit_psf(truth, model="gaussian2d", pixel_size_nm=100.0, num_steps=80)
    assert r.params["sigma_y_nm"] == pytest.approx(150.0, rel=1e-3)
    assert r.params["sigma_x_nm"] == pytest.approx(110.0, rel=1e-3)
    np.testing.assert_allclose(r.offset_nm[0], [25.0, -40.0], atol=0.5)
    assert r.amplitude[0] == pytest.approx(1e4, rel=1e-3)
    assert r.background[0] == pytest.approx(3.0, rel=1e-2)
    assert r.psf.sum() == pytest.approx(1.0, rel=1e-5)
    assert r.model_image.shape == truth.shape
    # The history is a descent: the final objective is no worse than the start.
    assert r.history[-1] <= r.history[0]


def test_airy_na_from_noisy_beads(rng):
    na = 1.3
    mean = 3e4 * np.stack([np.asarray(airy_psf_2d((17, 17), na=na, wavelength_nm=520.0, pixel_size_nm=65.0,
                                                  offset_nm=tuple(rng.uniform(-20, 20, 2))))
                           for _ in range(3)]) + 8.0
    data = rng.poisson(mean).astype(np.float32)
    r = fit_psf(data, model="airy2d", pixel_size_nm=65.0, init={"na": 1.0, "wavelength_nm": 520.0},
                num_steps=80)
    assert r.params["na"] == pytest.approx(na, rel=0.01)
    assert r.params["wavelength_nm"] == 520.0  # held fixed by default (only NA/lambda is identifiable in 2D)
    assert r.offset_nm.shape == (3, 2)
    # Poisson deviance per pixel of a correct model is ~1 (chi-square-like), far from it otherwise.
    assert 0.7 < r.loss < 1.3


def test_pupil_zernike_recovery(rng):
    zern = np.zeros(8)
    zern[[4, 6]] = [0.25, -0.15]  # Noll 5 (oblique astigmatism), Noll 7 (coma)
    optics = dict(wavelength_nm=600.0, pixel_size_nm=100.0, z_step_nm=250.0, refractive_index=1.33)
    mean = 5e5 * np.asarray(pupil_psf_3d((7, 16, 16), na=1.0, zernike_rad=jnp.asarray(zern), **optics)) + 5.0
    data = rng.poisson(mean).astype(np.float32)
    r = fit_psf(data, model="pupil3d", pixel_size_nm=100.0, z_step_nm=250.0, num_zernike=8,
                init={"na": 0.9, "wavelength_nm": 600.0, "refractive_index": 1.33}, num_steps=80)
    assert r.params["na"] == pytest.approx(1.0, rel=0.01)
    np.testing.assert_allclose(r.params["zernike_rad"][4:], zern[4:], atol=0.02)
    np.testing.assert_array_equal(r.params["zernike_rad"][:4], 0.0)  # piston/tilt/defocus never fitted


@pytest.mark.parametrize(
    "kwargs,exc,word",
    [
        (dict(model="nope", pixel_size_nm=100.0), ValueError, "model"),
        (dict(model="gaussian3d", pixel_size_nm=100.0), ValueError, "z_step_nm"),
        (dict(model="gaussian2d", pixel_size_nm=-1.0), ValueError, "pixel_size_nm"),
        (dict(model="gaussian2d", pixel_size_nm=100.0, loss="l1"), ValueError, "loss"),
        (dict(model="gaussian2d", pixel_size_nm=100.0, init={"na": 1.0}), ValueError, "init"),
        (dict(model="gaussian2d", pixel_size_nm=100.0, fit=["na"]), ValueError, "fit"),
        (dict(model="airy2d", pixel_size_nm=100.0, init={"na": 1.6, "refractive_index": 1.5}), ValueError, "na"),
        (dict(model="gaussian2d", pixel_size_nm=100.0, num_steps=0), ValueError, "num_steps"),
    ],
)
def test_bad_options(kwargs, exc, word):
    img = np.ones((9, 9), np.float32)
    with pytest.raises(exc, match=word):
        fit_psf(img, **kwargs)


def test_bad_image():
    with pytest.raises(ValueError, match="image"):
        fit_psf(np.ones(9), model="gaussian2d", pixel_size_nm=100.0)
    with pytest.raises(ValueError, match="image"):
        fit_psf(np.full((9, 9), np.nan), model="gaussian2d", pixel_size_nm=100.0)
    with pytest.raises(ValueError, match="image"):
        fit_psf(np.ones((2, 9)), model="gaussian2d", pixel_size_nm=100.0)
