"""jaxsr.smlm.fit: the Gaussian spot model, its Fisher information / CRLB and the Poisson MLE fitter."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import optimize, special

from jaxsr.smlm import fit_spots, gaussian_spot, spot_crlb, spot_fisher

SHAPE = (11, 11)


def _scipy_spot(theta, shape, sigma):
    """Independent reference of the pixel-integrated Gaussian (scipy erf, float64)."""
    y, x, n, b = theta[:4]
    s = sigma if sigma is not None else theta[4]

    def profile(m, c):
        k = np.arange(m)
        return 0.5 * (special.erf((k - c + 0.5) / (np.sqrt(2) * s)) - special.erf((k - c - 0.5) / (np.sqrt(2) * s)))

    return b + n * np.outer(profile(shape[0], y), profile(shape[1], x))


def _scipy_crlb(theta, shape, sigma, variance=0.0):
    """CRLB from a central-difference Jacobian of the scipy model (independent of the JAX derivatives)."""
    theta = np.asarray(theta, np.float64)
    mu = _scipy_spot(theta, shape, sigma) + variance
    jac = []
    for i in range(theta.size):
        h = 1e-5 * max(1.0, abs(theta[i]))
        d = np.zeros_like(theta)
        d[i] = h
        jac.append(((_scipy_spot(theta + d, shape, sigma) - _scipy_spot(theta - d, shape, sigma)) / (2 * h)).ravel())
    jac = np.asarray(jac)
    info = (jac / mu.ravel()) @ jac.T
    return np.sqrt(np.diag(np.linalg.inv(info)))


# ----------------------------------------------------------------------------- references
def test_model_matches_scipy_and_integrates_to_the_photons():
    theta = np.array([4.3, 6.1, 1500.0, 7.0])
    mu = np.asarray(gaussian_spot(jnp.asarray(theta, jnp.float32), shape=SHAPE, sigma_px=1.3))
    np.testing.assert_allclose(mu, _scipy_spot(theta, SHAPE, 1.3), rtol=1e-5)
    # On a large ROI the spot holds all N photons above the background.
    big = np.asarray(gaussian_spot(jnp.array([20.0, 20.0, 1000.0, 0.0]), shape=(41, 41), sigma_px=1.3))
    assert big.sum() == pytest.approx(1000.0, rel=1e-5)
    free = np.asarray(gaussian_spot(jnp.asarray([4.3, 6.1, 1500.0, 7.0, 1.7]), shape=SHAPE))
    np.testing.assert_allclose(free, _scipy_spot(theta, SHAPE, 1.7), rtol=1e-5)


def test_crlb_matches_the_closed_form_and_a_numerical_fisher():
    # The reference point: N = 1000, b = 10, sigma = 1.3 px, 100 nm pixels -> about 5.63 nm.
    c = np.asarray(spot_crlb(jnp.array([5.0, 5.0, 1000.0, 10.0]), shape=SHAPE, sigma_px=1.3))
    assert c[1] * 100.0 == pytest.approx(5.626, abs=0.005)
    np.testing.assert_allclose(c, _scipy_crlb([5.0, 5.0, 1000.0, 10.0], SHAPE, 1.3), rtol=1e-4)
    # Without background and for a large ROI: the Gaussian limit (1 px pixelation correction
    # of Thompson/Mortensen: sigma_a^2 = s^2 + 1/12), sqrt(sigma_a^2 / N).
    c0 = np.asarray(spot_crlb(jnp.array([15.0, 15.0, 1000.0, 1e-6]), shape=(31, 31), sigma_px=1.3))
    assert c0[1] == pytest.approx(np.sqrt((1.3**2 + 1 / 12) / 1000.0), rel=0.02)
    # With sCMOS read noise and a free sigma, against the numerical reference.
    var = np.linspace(0.5, 9.0, 121).reshape(SHAPE)
    theta5 = [5.3, 4.6, 800.0, 12.0, 1.4]
    c5 = np.asarray(spot_crlb(jnp.asarray(theta5), shape=SHAPE, variance=jnp.asarray(var)))
    np.testing.assert_allclose(c5, _scipy_crlb(theta5, SHAPE, None, var), rtol=1e-3)
    assert c5[1] > np.asarray(spot_crlb(jnp.asarray(theta5), shape=SHAPE))[1]  # read noise costs precision


def test_fit_matches_scipy_minimize_on_the_same_likelihood(rng):
    truth = np.array([5.4, 4.8, 700.0, 15.0])
    data = rng.poisson(_scipy_spot(truth, SHAPE, 1.3)).astype(np.float64)

    def nll(t):
        mu = _scipy_spot(t, SHAPE, 1.3)
        return float(np.sum(mu - data * np.log(mu)))

    ref = optimize.minimize(nll, truth * 1.05, method="Nelder-Mead",
                            options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20000, "maxfev": 40000}).x
    fit = fit_spots(jnp.asarray(data, jnp.float32), sigma_px=1.3)
    assert bool(fit.converged)
    np.testing.assert_allclose(np.asarray(fit.params[:2]), ref[:2], atol=2e-3)
    np.testing.assert_allclose(np.asarray(fit.params[2:]), ref[2:], rtol=2e-3)


@pytest.mark.parametrize("sigma_px", [1.3, None], ids=["fixed_sigma", "free_sigma"])
def test_fit_is_efficient_at_the_crlb(sigma_px):
    """Issue 5: >= 2000 isolated spots (N 1000, b 10, sigma 1.3 px): RMSE / sqrt(CRLB) in [0.9, 1.15], |bias| < 0.1."""
    n = 2400
    k1, k2 = jax.random.split(jax.random.key(5))
    pos = 5.0 + jax.random.uniform(k1, (n, 2), minval=-0.5, maxval=0.5)
    truth = jnp.concatenate([pos, jnp.full((n, 1), 1000.0), jnp.full((n, 1), 10.0)], axis=1)
    data = jax.random.poisson(k2, gaussian_spot(truth, shape=SHAPE, sigma_px=1.3)).astype(jnp.float32)
    fit = fit_spots(data, sigma_px=sigma_px)
    assert float(jnp.mean(fit.converged)) > 0.99
    crlb = np.asarray(spot_crlb(truth, shape=SHAPE, sigma_px=1.3 if sigma_px else None)) if sigma_px else \
        np.asarray(spot_crlb(jnp.concatenate([truth, jnp.full((n, 1), 1.3)], 1), shape=SHAPE))
    err = np.asarray(fit.params[:, :4]) - np.asarray(truth)
    for i, name in enumerate(("y", "x", "photons", "background")):
        ratio = np.sqrt(np.mean(err[:, i] ** 2)) / np.sqrt(np.mean(crlb[:, i] ** 2))
        bias = np.mean(err[:, i]) / np.sqrt(np.mean(crlb[:, i] ** 2))
        assert 0.9 <= ratio <= 1.15, (name, ratio)
        assert abs(bias) < 0.1, (name, bias)
    # The reported CRLB (at the fitted values) agrees with the one at the truth.
    np.testing.assert_allclose(np.median(np.asarray(fit.crlb[:, 1])), np.median(crlb[:, 1]), rtol=0.02)


def test_scmos_variance_term_keeps_the_fit_efficient():
    """sCMOS data (Poisson + Gaussian read noise per pixel): the variance-aware fit reaches its CRLB."""
    n = 2000
    k1, k2, k3, k4 = jax.random.split(jax.random.key(9), 4)
    var = jax.random.uniform(k4, SHAPE, minval=1.0, maxval=25.0)  # read noise 1-5 e- rms per pixel
    pos = 5.0 + jax.random.uniform(k1, (n, 2), minval=-0.5, maxval=0.5)
    truth = jnp.concatenate([pos, jnp.full((n, 1), 600.0), jnp.full((n, 1), 5.0)], axis=1)
    mu = gaussian_spot(truth, shape=SHAPE, sigma_px=1.3)
    data = jax.random.poisson(k2, mu).astype(jnp.float32) + jnp.sqrt(var) * jax.random.normal(k3, mu.shape)
    fit = fit_spots(data, sigma_px=1.3, variance=var)
    crlb = np.asarray(spot_crlb(truth, shape=SHAPE, sigma_px=1.3, variance=var))
    err = np.asarray(fit.params[:, 1]) - np.asarray(truth[:, 1])
    ratio = np.sqrt(np.mean(err**2)) / np.sqrt(np.mean(crlb[:, 1] ** 2))
    assert 0.9 <= ratio <= 1.15, ratio
    assert abs(np.mean(err)) < 0.1 * np.sqrt(np.mean(crlb[:, 1] ** 2))


# ----------------------------------------------------------------------------- transforms, gradients
def test_fit_under_jit_and_single_roi_equals_batch(rng):
    truth = jnp.array([[5.2, 4.9, 900.0, 8.0], [4.1, 6.3, 400.0, 3.0]])
    data = jnp.asarray(rng.poisson(np.asarray(gaussian_spot(truth, shape=SHAPE, sigma_px=1.2))), jnp.float32)
    batch = fit_spots(data, sigma_px=1.2)
    one = fit_spots(data[1], sigma_px=1.2)
    np.testing.assert_allclose(np.asarray(one.params), np.asarray(batch.params[1]), rtol=1e-5)
    jitted = jax.jit(lambda d: fit_spots(d, sigma_px=1.2).params)(data)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(batch.params), rtol=1e-5)
    vm = jax.vmap(lambda t: gaussian_spot(t, shape=SHAPE, sigma_px=1.2))(truth)
    np.testing.assert_allclose(np.asarray(vm), np.asarray(gaussian_spot(truth, shape=SHAPE, sigma_px=1.2)), rtol=1e-6)


def test_fit_with_one_variance_map_equals_a_map_per_roi(rng):
    truth = jnp.array([[5.2, 4.9, 900.0, 8.0], [4.1, 6.3, 400.0, 3.0], [5.5, 5.0, 600.0, 5.0]])
    data = jnp.asarray(rng.poisson(np.asarray(gaussian_spot(truth, shape=SHAPE, sigma_px=1.3))), jnp.float32)
    var = jnp.asarray(rng.uniform(1.0, 9.0, SHAPE), jnp.float32)
    shared = fit_spots(data, sigma_px=1.3, variance=var)
    per_roi = fit_spots(data, sigma_px=1.3, variance=jnp.broadcast_to(var, data.shape) + 0.0)
    np.testing.assert_allclose(np.asarray(shared.params), np.asarray(per_roi.params), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(shared.crlb), np.asarray(per_roi.crlb), rtol=1e-6)


def test_border_median_sorting_network_equals_numpy_median(rng):
    """The fitter's start value uses a Batcher sorting network for the median: exact, with ties and padding."""
    from jaxsr.smlm.fit import _median

    for n in (1, 2, 3, 16, 17, 40, 44, 63, 64, 65):
        values = rng.integers(0, 6, (50, n)).astype(np.float32) + rng.choice([0.0, 0.5], (50, n)).astype(np.float32)
        got = np.asarray(jax.jit(jax.vmap(_median))(jnp.asarray(values)))
        np.testing.assert_array_equal(got, np.median(values, axis=1).astype(np.float32), err_msg=str(n))


def test_model_and_fisher_gradients(x64):
    theta = jnp.array([5.3, 4.4, 900.0, 6.0, 1.4], jnp.float64)
    check_grads(lambda t: gaussian_spot(t, shape=(7, 9)), (theta,), order=1, modes=["rev"])
    check_grads(lambda t: spot_fisher(t, shape=(7, 9))[..., 0, 0], (theta,), order=1, modes=["rev"])


# ----------------------------------------------------------------------------- edge cases, bad input
def test_fit_edge_cases():
    # A flat ROI (no spot): finite parameters, photons near zero, background = the level.
    fit = fit_spots(jnp.full(SHAPE, 4.0), sigma_px=1.3)
    assert np.isfinite(np.asarray(fit.params)).all()
    assert float(fit.params[3]) == pytest.approx(4.0, rel=0.05) and float(fit.params[2]) < 20.0
    # All zeros: still finite.
    assert np.isfinite(np.asarray(fit_spots(jnp.zeros(SHAPE), sigma_px=1.3).params)).all()
    # A spot near the ROI edge stays inside the ROI bounds.
    mu = gaussian_spot(jnp.array([0.2, 9.8, 2000.0, 2.0]), shape=SHAPE, sigma_px=1.3)
    p = np.asarray(fit_spots(mu, sigma_px=1.3).params)
    np.testing.assert_allclose(p[:2], [0.2, 9.8], atol=1e-3)


def test_fit_bad_input():
    with pytest.raises(ValueError, match="rois"):
        fit_spots(jnp.ones((2, 3, 11, 11)), sigma_px=1.3)
    with pytest.raises(ValueError, match="rois"):
        fit_spots(jnp.ones((4, 4)), sigma_px=1.3)
    with pytest.raises(ValueError, match="rois"):
        fit_spots(jnp.ones(SHAPE).at[3, 3].set(jnp.nan), sigma_px=1.3)
    with pytest.raises(ValueError, match="sigma_px"):
        fit_spots(jnp.ones(SHAPE), sigma_px=0.0)
    with pytest.raises(ValueError, match="variance"):
        fit_spots(jnp.ones(SHAPE), sigma_px=1.3, variance=-1.0)
    with pytest.raises(ValueError, match="variance"):
        fit_spots(jnp.ones((2, 11, 11)), sigma_px=1.3, variance=jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="iterations"):
        fit_spots(jnp.ones(SHAPE), sigma_px=1.3, iterations=0)
    with pytest.raises(ValueError, match="params"):
        gaussian_spot(jnp.ones(3), shape=SHAPE, sigma_px=1.3)


# ----------------------------------------------------------------------------- astigmatic 3D
ASTIG = {"sigma0_x_nm": 130.0, "sigma0_y_nm": 125.0, "gamma_nm": 200.0, "depth_nm": 400.0}


def _scipy_astig_spot(theta, shape, pixel):
    """Independent astigmatic model: widths from Huang et al.'s formula, scipy erf profiles."""
    y, x, n, b, z = theta
    sx = ASTIG["sigma0_x_nm"] * np.sqrt(1 + ((z - ASTIG["gamma_nm"]) / ASTIG["depth_nm"]) ** 2) / pixel
    sy = ASTIG["sigma0_y_nm"] * np.sqrt(1 + ((z + ASTIG["gamma_nm"]) / ASTIG["depth_nm"]) ** 2) / pixel

    def profile(m, c, s):
        k = np.arange(m)
        return 0.5 * (special.erf((k - c + 0.5) / (np.sqrt(2) * s)) - special.erf((k - c - 0.5) / (np.sqrt(2) * s)))

    return b + n * np.outer(profile(shape[0], y, sy), profile(shape[1], x, sx))


def test_astigmatic_model_and_crlb_match_scipy():
    theta = np.array([6.3, 5.8, 2000.0, 10.0, 150.0])
    mu = np.asarray(gaussian_spot(jnp.asarray(theta, jnp.float32), shape=(13, 13), astigmatism=ASTIG,
                                  pixel_size_nm=100.0))
    np.testing.assert_allclose(mu, _scipy_astig_spot(theta, (13, 13), 100.0), rtol=2e-5)
    jac = []
    for i in range(5):
        h = 1e-4 * max(1.0, abs(theta[i]))
        d = np.zeros(5)
        d[i] = h
        jac.append(((_scipy_astig_spot(theta + d, (13, 13), 100.0)
                     - _scipy_astig_spot(theta - d, (13, 13), 100.0)) / (2 * h)).ravel())
    jac = np.asarray(jac)
    ref = np.sqrt(np.diag(np.linalg.inv((jac / _scipy_astig_spot(theta, (13, 13), 100.0).ravel()) @ jac.T)))
    with jax.enable_x64(True):
        c = np.asarray(spot_crlb(jnp.asarray(theta), shape=(13, 13), astigmatism=ASTIG, pixel_size_nm=100.0))
    np.testing.assert_allclose(c, ref, rtol=1e-3)


def test_astigmatic_fit_is_efficient_in_xyz():
    """2000 spots, z uniform in [-400, 400] nm: RMSE / sqrt(CRLB) in [0.9, 1.15] for x, y and z, no bias."""
    n, shape = 2000, (13, 13)
    k1, k2, k3 = jax.random.split(jax.random.key(11), 3)
    pos = 6.0 + jax.random.uniform(k1, (n, 2), minval=-0.5, maxval=0.5)
    z = jax.random.uniform(k3, (n, 1), minval=-400.0, maxval=400.0)
    truth = jnp.concatenate([pos, jnp.full((n, 1), 2000.0), jnp.full((n, 1), 10.0), z], axis=1)
    mu = gaussian_spot(truth, shape=shape, astigmatism=ASTIG, pixel_size_nm=100.0)
    fit = fit_spots(jax.random.poisson(k2, mu).astype(jnp.float32), astigmatism=ASTIG, pixel_size_nm=100.0)
    crlb = np.asarray(spot_crlb(truth, shape=shape, astigmatism=ASTIG, pixel_size_nm=100.0))
    err = np.asarray(fit.params) - np.asarray(truth)
    for i, name in ((0, "y"), (1, "x"), (4, "z")):
        rms = np.sqrt(np.mean(crlb[:, i] ** 2))
        assert 0.9 <= np.sqrt(np.mean(err[:, i] ** 2)) / rms <= 1.15, name
        assert abs(np.mean(err[:, i])) < 0.1 * rms, name
    assert float(jnp.mean(fit.converged)) > 0.99


def test_astigmatic_bad_input():
    roi = jnp.ones((9, 9))
    with pytest.raises(ValueError, match="pixel_size_nm"):
        fit_spots(roi, astigmatism=ASTIG)
    with pytest.raises(ValueError, match="sigma_px"):
        fit_spots(roi, sigma_px=1.3, astigmatism=ASTIG, pixel_size_nm=100.0)
    with pytest.raises(ValueError, match="depth_nm"):
        fit_spots(roi, astigmatism={"sigma0_x_nm": 130.0, "sigma0_y_nm": 130.0, "gamma_nm": 0.0},
                  pixel_size_nm=100.0)
    with pytest.raises(ValueError, match="unknown"):
        fit_spots(roi, astigmatism={**ASTIG, "c_x": 1.0}, pixel_size_nm=100.0)
    with pytest.raises(ValueError, match="params"):
        gaussian_spot(jnp.ones(4), shape=(9, 9), astigmatism=ASTIG, pixel_size_nm=100.0)
