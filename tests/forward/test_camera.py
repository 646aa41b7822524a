"""Camera model: validation, presets, closed-form moments vs sampled statistics, gradients."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxsr.forward import (
    CameraModel,
    adu_variance,
    apply_camera,
    camera_preset,
    expected_adu,
    expected_image,
    form_image,
    photons_from_adu,
)

N_FRAMES = 4000
PHOTONS = np.geomspace(0.05, 300.0, 48).reshape(6, 8).astype(np.float32)
PHOTONS[0, 0] = 0.0


def sample(camera, photons, n, *, seed=0, differentiable=False):
    """n independent frames: leading axes of ``photons`` are batch, so broadcast and call once.

    All statistics tests use the same (N_FRAMES, 6, 8) shape so the Poisson
    sampler compiles once for the module (eager calls cache by shape).
    """
    batch = jnp.broadcast_to(jnp.asarray(photons, jnp.float32), (n,) + np.shape(photons))
    out = apply_camera(jax.random.key(seed), batch, camera=camera, differentiable=differentiable)
    return np.asarray(out, dtype=np.float64)


def assert_moments(frames, mean, var):
    """Per-pixel sample mean/variance within 5 standard errors of the closed forms."""
    n = frames.shape[0]
    mean = np.broadcast_to(np.asarray(mean, np.float64), frames.shape[1:])
    var = np.broadcast_to(np.asarray(var, np.float64), frames.shape[1:])
    m = frames.mean(axis=0)
    s2 = frames.var(axis=0, ddof=1)
    m4 = ((frames - m) ** 4).mean(axis=0)
    se_mean = np.sqrt(var / n)
    se_var = np.sqrt(np.maximum(m4 - (n - 3) / (n - 1) * s2**2, 0.0) / n)
    zero = var == 0
    np.testing.assert_array_equal(m[zero], mean[zero])
    np.testing.assert_array_equal(s2[zero], 0.0)
    assert np.all(np.abs(m - mean)[~zero] <= 5 * se_mean[~zero]), np.max(np.abs(m - mean)[~zero] / se_mean[~zero])
    z_var = np.abs(s2 - var)[~zero] / se_var[~zero]
    assert np.all(z_var <= 5), z_var.max()


# --------------------------------------------------------------------------- model and presets
def test_presets():
    ideal = camera_preset("ideal")
    assert (ideal.qe, ideal.read_noise_e, ideal.em_gain, ideal.gain_e_per_adu, ideal.offset_adu, ideal.bit_depth) == (
        1.0, 0.0, 1.0, 1.0, 0.0, None)
    scmos = camera_preset("scmos")
    assert (scmos.qe, scmos.read_noise_e, scmos.gain_e_per_adu, scmos.offset_adu, scmos.bit_depth) == (
        0.8, 1.6, 0.46, 100.0, 16)
    emccd = camera_preset("emccd")
    assert emccd.em_gain > 100 and emccd.qe > 0.9 and emccd.read_noise_e / emccd.em_gain < 1.0
    assert emccd.name == "emccd"
    with pytest.raises(ValueError, match="name.*scmos"):
        camera_preset("ccd")


@pytest.mark.parametrize(
    "field,value",
    [("qe", 0.0), ("qe", 1.2), ("read_noise_e", -1.0), ("em_gain", 0.5), ("gain_e_per_adu", 0.0),
     ("offset_adu", np.nan), ("read_noise_e", np.ones(3)), ("bit_depth", 0), ("qe", np.ones((2, 2)))],
)
def test_camera_validation(field, value):
    with pytest.raises(ValueError, match=field):
        CameraModel(**{field: value})


def test_camera_type_errors():
    with pytest.raises(TypeError, match="qe"):
        CameraModel(qe="high")
    with pytest.raises(TypeError, match="bit_depth"):
        CameraModel(bit_depth=12.5)
    with pytest.raises(TypeError, match="camera"):
        apply_camera(jax.random.key(0), jnp.ones((2, 2)), camera={"qe": 1.0})


def test_camera_is_frozen_pytree_and_replace():
    cam = CameraModel(qe=0.9, read_noise_e=np.full((2, 2), 1.5), bit_depth=12, name="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cam.qe = 0.5
    leaves, tree = jax.tree_util.tree_flatten(cam)
    assert len(leaves) == 5
    back = jax.tree_util.tree_unflatten(tree, leaves)
    assert back.bit_depth == 12 and back.name == "x" and back.qe == 0.9
    assert cam.replace(qe=0.5).qe == 0.5
    with pytest.raises(ValueError, match="qe"):
        cam.replace(qe=2.0)


# --------------------------------------------------------------------------- closed forms
def test_closed_forms_match_hand_formulas(rng):
    p = rng.random((4, 5)) * 100
    rn_map = rng.random((4, 5)) * 3
    scmos = camera_preset("scmos").replace(read_noise_e=rn_map)
    np.testing.assert_allclose(expected_adu(p, camera=scmos), 0.8 * p / 0.46 + 100, rtol=1e-6)
    np.testing.assert_allclose(adu_variance(p, camera=scmos), (0.8 * p + rn_map**2) / 0.46**2 + 1 / 12, rtol=1e-5)
    em = camera_preset("emccd")
    g, q, k, rn = em.em_gain, em.qe, em.gain_e_per_adu, em.read_noise_e
    np.testing.assert_allclose(expected_adu(p, camera=em), q * g * p / k + em.offset_adu, rtol=1e-6)
    np.testing.assert_allclose(adu_variance(p, camera=em), (2 * g**2 * q * p + rn**2) / k**2 + 1 / 12, rtol=1e-5)
    ideal = camera_preset("ideal")
    np.testing.assert_allclose(adu_variance(p, camera=ideal), p, rtol=1e-6)


@pytest.mark.parametrize("name", ["ideal", "scmos", "emccd"])
def test_photons_from_adu_inverts_mean(rng, name):
    cam = camera_preset(name)
    p = (rng.random((3, 4)) * 500).astype(np.float32)
    np.testing.assert_allclose(photons_from_adu(expected_adu(p, camera=cam), camera=cam), p, rtol=1e-4, atol=1e-3)


def test_closed_form_gradients(x64):
    p = jnp.linspace(0.0, 50.0, 6)

    def f(p, qe, em, gain, offset, rn):
        cam = CameraModel(qe=qe, em_gain=em, gain_e_per_adu=gain, offset_adu=offset, read_noise_e=rn)
        return jnp.sum(expected_adu(p, camera=cam) * adu_variance(p, camera=cam)
                       + photons_from_adu(p * 3.0 + 1.0, camera=cam))

    check_grads(f, (p, 0.7, 20.0, 2.0, 10.0, 1.3), order=1, modes=["rev"])


# --------------------------------------------------------------------------- sampled statistics
def test_ideal_camera_statistics():
    cam = camera_preset("ideal")
    frames = sample(cam, PHOTONS, N_FRAMES, seed=1)
    assert np.all(frames == np.round(frames))
    assert_moments(frames, PHOTONS, PHOTONS)


def test_scmos_per_pixel_read_noise_statistics(rng):
    rn_map = (0.5 + 4.0 * rng.random(PHOTONS.shape)).astype(np.float32)
    cam = camera_preset("scmos").replace(read_noise_e=rn_map)
    frames = sample(cam, PHOTONS, N_FRAMES, seed=2)
    assert np.all(frames == np.round(frames))  # 16-bit ADC
    mean = 0.8 * PHOTONS / 0.46 + 100.0
    var = (0.8 * PHOTONS + rn_map.astype(np.float64) ** 2) / 0.46**2 + 1.0 / 12.0
    assert_moments(frames, mean, var)
    assert_moments(frames, expected_adu(PHOTONS, camera=cam), adu_variance(PHOTONS, camera=cam))


def test_emccd_statistics_and_excess_noise_factor():
    cam = camera_preset("emccd")
    frames = sample(cam, PHOTONS, N_FRAMES, seed=3)
    g, q, k, rn = cam.em_gain, cam.qe, cam.gain_e_per_adu, cam.read_noise_e
    mean = q * g * PHOTONS / k + cam.offset_adu
    var = (2.0 * g**2 * q * PHOTONS + rn**2) / k**2 + 1.0 / 12.0
    assert_moments(frames, mean, var)
    # Excess noise factor F^2 = Var_signal / (g^2 * lam) -> 2 for a high-gain EM register.
    bright = PHOTONS >= 5.0
    signal_var = frames.var(axis=0, ddof=1) * k**2 - rn**2 - k**2 / 12.0
    f2 = signal_var[bright] / (g**2 * q * PHOTONS[bright])
    assert np.all(np.abs(f2 - 2.0) < 5 * 2.0 * np.sqrt(2.0 * 3.0 / N_FRAMES)), f2
    assert abs(f2.mean() - 2.0) < 0.03, f2.mean()


def test_quantisation_clips_to_adc_range():
    cam = CameraModel(read_noise_e=2.0, gain_e_per_adu=1.0, offset_adu=5.0, bit_depth=8)
    photons = PHOTONS * 0.0
    photons[0, 1] = 1000.0
    frame = apply_camera(jax.random.key(0), photons, camera=cam)
    assert float(frame[0, 1]) == 255.0
    assert float(frame.min()) >= 0.0 and np.all(np.asarray(frame) == np.round(np.asarray(frame)))


def test_differentiable_path_moments():
    cam = camera_preset("emccd")
    frames = sample(cam, PHOTONS, N_FRAMES, seed=5, differentiable=True)
    assert not np.all(frames == np.round(frames))  # no quantisation on this path
    g, q, k, rn = cam.em_gain, cam.qe, cam.gain_e_per_adu, cam.read_noise_e
    assert_moments(frames, q * g * PHOTONS / k + cam.offset_adu, (2 * g**2 * q * PHOTONS + rn**2) / k**2)


# --------------------------------------------------------------------------- transforms
def test_jit_and_vmap():
    cam = CameraModel(qe=0.9, read_noise_e=1.2, gain_e_per_adu=2.0, offset_adu=50.0)
    key = jax.random.key(7)
    photons = jnp.asarray(PHOTONS)
    eager = apply_camera(key, photons, camera=cam)
    jitted = jax.jit(apply_camera, static_argnames="differentiable")(key, photons, camera=cam)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5)
    # vmap over a batch of images with one key == one call per image.
    # The EM flag survives jit (static pytree metadata): jitted EMCCD frames equal eager ones.
    em = camera_preset("emccd").replace(bit_depth=None)
    np.testing.assert_allclose(jax.jit(apply_camera)(key, photons, camera=em),
                               apply_camera(key, photons, camera=em), rtol=1e-5)
    batch = jnp.stack([photons, 2.0 * photons])
    batched = jax.vmap(lambda p: apply_camera(key, p, camera=cam))(batch)
    for i in range(2):
        np.testing.assert_allclose(batched[i], apply_camera(key, batch[i], camera=cam), rtol=1e-5)


# --------------------------------------------------------------------------- gradients
def test_differentiable_path_check_grads_camera_fields(x64):
    key = jax.random.key(11)
    photons = jnp.asarray(PHOTONS[:2], dtype=jnp.float64)

    def f(em, gain, offset, rn):
        cam = CameraModel(qe=0.9, em_gain=em, gain_e_per_adu=gain, offset_adu=offset, read_noise_e=rn)
        return jnp.sum(apply_camera(key, photons, camera=cam, differentiable=True) ** 2) * 1e-4

    check_grads(f, (30.0, 3.0, 100.0, 2.0), order=1, modes=["rev"])


@pytest.mark.parametrize("name", ["scmos", "emccd"])
def test_differentiable_path_mean_gradient(name):
    cam = camera_preset(name)
    photons = jnp.full((N_FRAMES,) + PHOTONS.shape, 20.0)
    g = jax.grad(lambda p: jnp.sum(apply_camera(jax.random.key(12), p, camera=cam, differentiable=True)))(photons)
    g = np.asarray(g, dtype=np.float64).ravel()
    slope = cam.qe * cam.em_gain / cam.gain_e_per_adu  # d expected_adu / d photons
    assert np.all(np.isfinite(g))
    assert abs(g.mean() / slope - 1.0) <= 5 * g.std() / slope / np.sqrt(g.size)


def test_differentiable_path_gradient_finite_at_zero_photons():
    for cam in (camera_preset("emccd"), camera_preset("scmos")):
        g = jax.grad(lambda p: jnp.sum(apply_camera(jax.random.key(0), p, camera=cam, differentiable=True) ** 2))(
            jnp.zeros(PHOTONS.shape))
        assert np.all(np.isfinite(g))


# --------------------------------------------------------------------------- form_image
def gaussian_psf(n, sigma):
    r = np.arange(n) - n // 2
    psf = np.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / sigma**2)
    return (psf / psf.sum()).astype(np.float32)


def test_form_image_mean_matches_expected_image():
    obj = np.zeros((12, 16), np.float32)
    obj[3:9, 8] = 200.0
    psf = gaussian_psf(7, 1.2)
    bg = 2.0
    objs = jnp.broadcast_to(obj, (N_FRAMES, 12, 16))  # leading axis: independent frames
    frames = np.asarray(form_image(jax.random.key(3), objs, psf, background_photons=bg, binning=2), np.float64)
    mean = np.asarray(expected_image(obj, psf, background_photons=bg, binning=2), np.float64)
    assert frames.shape == (N_FRAMES, 6, 8)
    assert_moments(frames, mean, mean)  # ideal camera: Poisson
    cam = camera_preset("scmos")
    frame = form_image(jax.random.key(0), obj, psf, camera=cam, background_photons=bg, binning=2)
    np.testing.assert_allclose(frame.mean(), expected_adu(mean, camera=cam).mean(), rtol=0.05)


def test_form_image_3d_and_determinism():
    obj = np.zeros((4, 8, 8), np.float32)
    obj[2, 4, 4] = 500.0
    psf = np.ones((3, 3, 3), np.float32) / 27
    a = form_image(jax.random.key(5), obj, psf, binning=2)
    b = form_image(jax.random.key(5), obj, psf, binning=2)
    assert a.shape == (4, 4, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, form_image(jax.random.key(6), obj, psf, binning=2))


def test_form_image_differentiable_gradient_unbiased():
    obj = jnp.full((N_FRAMES, 12, 16), 30.0)
    psf = gaussian_psf(5, 1.0)
    g = jax.grad(lambda o: jnp.sum(form_image(jax.random.key(9), o, psf, boundary="periodic", binning=2,
                                              differentiable=True)))(obj)
    g = np.asarray(g, dtype=np.float64)
    assert np.all(np.isfinite(g))
    # d sum(frame)/d obj_j = sum_I slope_I * (psf mass of obj pixel j landing in camera pixel I).
    # With a periodic unit-sum PSF, mean_j(g) = mean_I(slope_I), slope = 1/2 + n/(2 lam):
    # E = 1, Var = 1/(4 lam), lam = 4 * 30 photons per binned pixel (192000 of them).
    lam, n_binned = 4 * 30.0, g.size // 4
    assert abs(g.mean() - 1.0) <= 5 * np.sqrt(1.0 / (4 * lam) / n_binned)


def test_apply_camera_bad_inputs():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="photons"):
        apply_camera(key, jnp.array([[1.0, -1.0]]), camera=camera_preset("ideal"))
    with pytest.raises(ValueError, match="photons"):
        apply_camera(key, jnp.array([[1.0, jnp.nan]]), camera=camera_preset("ideal"))
    cam = camera_preset("scmos").replace(read_noise_e=np.ones((3, 3)))
    with pytest.raises(ValueError, match="camera.*read_noise_e"):
        apply_camera(key, jnp.ones((4, 4)), camera=cam)
    with pytest.raises(ValueError, match="camera"):
        adu_variance(jnp.ones((4,)), camera=cam)
    with pytest.raises(TypeError, match="camera"):
        form_image(key, jnp.ones((8, 8)), jnp.ones((3, 3)) / 9, camera="scmos")
