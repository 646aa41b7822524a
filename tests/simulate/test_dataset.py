"""simulate_widefield: geometry, scaling laws, camera statistics, determinism, bad input."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxsr.forward import adu_variance, bin_image, camera_preset, convolve, expected_adu
from jaxsr.metrics import fwhm
from jaxsr.simulate import STRUCTURES, simulate_widefield, widefield_psf


@pytest.fixture(scope="module")
def sim():
    return simulate_widefield(jax.random.key(3), structure="filaments", shape=(48, 48), camera="scmos")


def test_geometry(sim):
    assert sim.image.shape == (48, 48)
    assert sim.object.shape == (144, 144)
    assert sim.fine_pixel_size_nm == pytest.approx(65.0 / 3)
    assert sim.psf.shape[0] % 2 == 1 and sim.psf.sum() == pytest.approx(1.0, rel=1e-5)
    assert sim.image.dtype == np.float32


def test_expected_is_forward_model_of_object(sim):
    # Independent recomputation: blur the ground truth on the fine grid, integrate onto camera pixels.
    recomputed = np.asarray(bin_image(convolve(sim.object, sim.psf), factor=3)) + sim.background_photons
    np.testing.assert_allclose(sim.expected, recomputed, rtol=1e-4, atol=1e-3)
    # Peak signal above background is the requested one.
    assert float(sim.expected.max() - sim.background_photons) == pytest.approx(200.0, rel=1e-5)


def test_camera_statistics(sim):
    # The recorded ADU image is unbiased for the expected ADU: z-score of the summed residual.
    cam = sim.camera
    mean = np.asarray(expected_adu(sim.expected, camera=cam), dtype=np.float64)
    var = np.asarray(adu_variance(sim.expected, camera=cam), dtype=np.float64)
    z = (sim.image - mean).sum() / np.sqrt(var.sum())
    assert abs(z) < 5
    # ... and its per-pixel variance matches the camera model (chi-square per pixel ~ 1).
    chi2 = ((sim.image - mean) ** 2 / var).mean()
    assert 0.9 < chi2 < 1.1


def test_deterministic_from_key():
    a = simulate_widefield(jax.random.key(1), shape=(32, 32), camera="ideal")
    b = simulate_widefield(jax.random.key(1), shape=(32, 32), camera="ideal")
    c = simulate_widefield(jax.random.key(2), shape=(32, 32), camera="ideal")
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.object, b.object)
    assert not np.array_equal(a.object, c.object)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_every_structure(structure):
    s = simulate_widefield(jax.random.key(0), structure=structure, shape=(120, 120), camera="ideal")
    assert s.object.sum() > 0 and np.isfinite(s.image).all()
    if structure in ("lines", "beads"):
        assert len(s.separations_nm) == 9


def test_airy_psf_width():
    # Airy FWHM = 0.5145 lambda / NA (closed form); measured with the Gaussian-fit FWHM on a fine grid.
    psf = np.asarray(widefield_psf(psf="airy", na=1.4, wavelength_nm=520.0, pixel_size_nm=10.0))
    c = psf.shape[0] // 2
    w = fwhm(psf[c], pixel_size_nm=10.0).fwhm_nm
    # A Gaussian fit of an Airy core is within a few % of the true FWHM (191 nm).
    assert w == pytest.approx(0.5145 * 520.0 / 1.4, rel=0.05)


@pytest.mark.parametrize(
    "kwargs,exc,word",
    [
        (dict(structure="stars"), ValueError, "structure"),
        (dict(shape=(4, 4)), ValueError, "shape"),
        (dict(shape=(64, 64, 3)), ValueError, "shape"),
        (dict(signal_photons=-1.0), ValueError, "signal_photons"),
        (dict(background_photons=float("nan")), ValueError, "background_photons"),
        (dict(na=0.0), ValueError, "na"),
        (dict(camera=3), TypeError, "camera"),
        (dict(camera="ccd"), ValueError, "name"),
        (dict(structure="lines", shape=(40, 40)), ValueError, "shape"),
        (dict(upsample=0), ValueError, "upsample"),
    ],
)
def test_bad_input(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        simulate_widefield(jax.random.key(0), **kwargs)


def test_camera_object_accepted():
    cam = camera_preset("scmos").replace(offset_adu=10.0)
    s = simulate_widefield(jax.random.key(0), shape=(24, 24), camera=cam)
    assert s.camera.offset_adu == 10.0
