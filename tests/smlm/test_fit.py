"""jaxsr.smlm.fit: the Gaussian spot model, its Fisher information / CRLB and the Poisson MLE fitter.

Most of this module's time is XLA compilation (one ``fit_spots`` compile per ROI count, ROI shape and
option set), not fitting, so the tests share shapes: every fit of many ROIs uses ``N_SPOTS`` 11 x 11
ROIs, every single-ROI fit sigma 1.3 px, and the simulated spot sets are drawn once per module
(module-scoped fixtures) with NumPy (scipy model + NumPy Poisson: nothing to compile). ``make test``
runs a file on one worker (``--dist loadfile``), so these compiled functions are shared.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import optimize, special

from jaxsr.smlm import fit_spots, gaussian_spot, spot_crlb, spot_fisher

SHAPE = (11, 11)
N_SPOTS = 2400
"""Spots of every many-ROI fit. The efficiency tests assert RMSE / sqrt(mean CRLB^2) in [0.9, 1.15] and
|bias| < 0.1 sqrt(mean CRLB^2): at n = 2400 the RMSE ratio has a standard error of about
1 / sqrt(2 n) = 1.4 % (bounds >= 7 standard errors from the expected ~1.0-1.03) and the bias one of
1 / sqrt(n) = 2.0 % of the CRLB (bound at 5 standard errors)."""


def _profile(m, c, s):
    """``(..., m)`` integrals over pixels ``0..m-1`` of unit 1D Gaussians centred at ``c`` (...), width ``s``."""
    k = np.arange(m)
    c, s = np.asarray(c, np.float64)[..., None], np.asarray(s, np.float64)[..., None]
    return 0.5 * (special.erf((k - c + 0.5) / (np.sqrt(2) * s)) - special.erf((k - c - 0.5) / (np.sqrt(2) * s)))


def _scipy_spot(theta, shape, sigma):
    """Independent reference of the pixel-integrated Gaussian (scipy erf, float64), ``(..., p) -> (..., ny, nx)``."""
    theta = np.asarray(theta, np.float64)
    y, x, n, b = (theta[..., i] for i in range(4))
    s = sigma if sigma is not None else theta[..., 4]
    return (b[..., None, None]
            + n[..., None, None] * _profile(shape[0], y, s)[..., :, None] * _profile(shape[1], x, s)[..., None, :])


def _numerical_crlb(model, theta, rel_step=1e-5, variance=0.0):
    """CRLB from a central-difference Jacobian of a NumPy ``model(theta (..., p)) -> (..., ny, nx)``.

    Independent of the JAX derivatives; vectorised over the leading axes of ``theta``.
    """
    theta = np.asarray(theta, np.float64)
    mu = model(theta) + variance
    jac = []
    for i in range(theta.shape[-1]):
        h = rel_step * np.maximum(1.0, np.abs(theta[..., i]))
        d = np.zeros_like(theta)
        d[..., i] = h
        jac.append(((model(theta + d) - model(theta - d)) / (2 * h[..., None, None])).reshape(theta.shape[:-1] + (-1,)))
    jac = np.stack(jac, axis=-2)  # (..., p, pixels)
    info = np.einsum("...ak,...bk->...ab", jac / mu.reshape(mu.shape[:-2] + (1, -1)), jac)
    return np.sqrt(np.diagonal(np.linalg.inv(info), axis1=-2, axis2=-1))


def _scipy_crlb(theta, shape, sigma, variance=0.0):
    """CRLB of the scipy model (independent of the JAX derivatives)."""
    return _numerical_crlb(lambda t: _scipy_spot(t, shape, sigma), theta, variance=variance)


def _spot_set(seed, n, photons, background, shape=SHAPE):
    """``n`` spots near the ROI centre (uniform +-0.5 px), drawn with NumPy: ``(truth (n, 4), rng)``."""
    rng = np.random.default_rng(seed)
    pos = (np.asarray(shape, np.float64) - 1) / 2 + rng.uniform(-0.5, 0.5, (n, 2))
    return np.concatenate([pos, np.full((n, 1), photons), np.full((n, 1), background)], axis=1), rng


@pytest.fixture(scope="module")
def poisson_spots():
    """Issue 5's isolated spots: N 1000, b 10, sigma 1.3 px, Poisson counts; ``(truth, data)``."""
    truth, rng = _spot_set(5, N_SPOTS, 1000.0, 10.0)
    return truth, rng.poisson(_scipy_spot(truth, SHAPE, 1.3)).astype(np.float32)


@pytest.fixture(scope="module")
def scmos_spots():
    """sCMOS spots (Poisson + Gaussian read noise 1-5 e- rms per pixel), N 600, b 5, and their
    variance-aware fit with the one shared variance map: ``(truth, var, data, fit)``."""
    truth, rng = _spot_set(9, N_SPOTS, 600.0, 5.0)
    var = rng.uniform(1.0, 25.0, SHAPE).astype(np.float32)
    mu = _scipy_spot(truth, SHAPE, 1.3)
    data = (rng.poisson(mu) + np.sqrt(var) * rng.standard_normal(mu.shape)).astype(np.float32)
    return truth, var, data, fit_spots(data, sigma_px=1.3, variance=var)


# ----------------------------------------------------------------------------- references
def test_model_matches_scipy_and_integrates_to_the_photons():
    theta = np.array([4.3, 6.1, 1500.0, 7.0])
    mu = np.asarray(gaussian_spot(jnp.asarray(theta, jnp.float32), shape=SHAPE, sigma_px=1.3))
    np.testing.assert_allclose(mu, _scipy_spot(theta, SHAPE, 1.3), rtol=1e-5)
    # On a large ROI the spot holds all N photons above the background (31 x 31, 11.9 sigma from the
    # spot to the edge: the ROI of the CRLB test's Gaussian limit, which reuses these compiled primitives).
    big = np.asarray(gaussian_spot(jnp.array([15.0, 15.0, 1000.0, 0.0]), shape=(31, 31), sigma_px=1.3))
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
def test_fit_is_efficient_at_the_crlb(sigma_px, poisson_spots):
    """Issue 5: >= 2000 isolated spots (N 1000, b 10, sigma 1.3 px): RMSE / sqrt(CRLB) in [0.9, 1.15], |bias| < 0.1."""
    truth, data = poisson_spots
    fit = fit_spots(data, sigma_px=sigma_px)
    assert float(jnp.mean(fit.converged)) > 0.99
    crlb = _scipy_crlb(truth, SHAPE, 1.3) if sigma_px else \
        _scipy_crlb(np.concatenate([truth, np.full((len(truth), 1), 1.3)], 1), SHAPE, None)
    err = np.asarray(fit.params[:, :4]) - truth
    for i, name in enumerate(("y", "x", "photons", "background")):
        ratio = np.sqrt(np.mean(err[:, i] ** 2)) / np.sqrt(np.mean(crlb[:, i] ** 2))
        bias = np.mean(err[:, i]) / np.sqrt(np.mean(crlb[:, i] ** 2))
        assert 0.9 <= ratio <= 1.15, (name, ratio)
        assert abs(bias) < 0.1, (name, bias)
    # The reported CRLB (at the fitted values) agrees with the one at the truth.
    np.testing.assert_allclose(np.median(np.asarray(fit.crlb[:, 1])), np.median(crlb[:, 1]), rtol=0.02)


def test_scmos_variance_term_keeps_the_fit_efficient(scmos_spots):
    """sCMOS data (Poisson + Gaussian read noise per pixel): the variance-aware fit reaches its CRLB."""
    truth, var, _, fit = scmos_spots
    crlb = _scipy_crlb(truth, SHAPE, 1.3, var)
    err = np.asarray(fit.params[:, 1]) - truth[:, 1]
    ratio = np.sqrt(np.mean(err**2)) / np.sqrt(np.mean(crlb[:, 1] ** 2))
    assert 0.9 <= ratio <= 1.15, ratio
    assert abs(np.mean(err)) < 0.1 * np.sqrt(np.mean(crlb[:, 1] ** 2))


# ----------------------------------------------------------------------------- transforms, gradients
def test_fit_under_jit_and_single_roi_equals_batch(poisson_spots):
    data = jnp.asarray(poisson_spots[1])
    batch = fit_spots(data, sigma_px=1.3)
    for i in (1, 700, N_SPOTS - 1):
        one = fit_spots(data[i], sigma_px=1.3)
        np.testing.assert_allclose(np.asarray(one.params), np.asarray(batch.params[i]), rtol=1e-5)
    jitted = jax.jit(lambda d: fit_spots(d, sigma_px=1.3).params)(data)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(batch.params), rtol=1e-5)
    # The spot model: vmap of one spot (under jit) = the batched call (under jit) = spot by spot without
    # either transform (the eager calls share their compiled primitives with the other tests' single spots).
    truth = jnp.array([[5.2, 4.9, 900.0, 8.0], [4.1, 6.3, 400.0, 3.0]])
    vm = jax.jit(jax.vmap(lambda t: gaussian_spot(t, shape=SHAPE, sigma_px=1.2)))(truth)
    batched = jax.jit(lambda t: gaussian_spot(t, shape=SHAPE, sigma_px=1.2))(truth)
    one_by_one = np.stack([np.asarray(gaussian_spot(t, shape=SHAPE, sigma_px=1.2)) for t in truth])
    np.testing.assert_allclose(np.asarray(vm), np.asarray(batched), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(vm), one_by_one, rtol=1e-6)


def test_fit_with_one_variance_map_equals_a_map_per_roi(scmos_spots):
    _, var, data, shared = scmos_spots
    per_roi = fit_spots(data, sigma_px=1.3, variance=jnp.broadcast_to(var, data.shape) + 0.0)
    np.testing.assert_allclose(np.asarray(shared.params), np.asarray(per_roi.params), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(shared.crlb), np.asarray(per_roi.crlb), rtol=1e-6)


def test_border_median_sorting_network_equals_numpy_median(rng):
    """The fitter's start value uses a Batcher sorting network for the median: exact, with ties and padding."""
    from jaxsr.smlm.fit import _median

    sizes = (1, 2, 3, 16, 17, 40, 44, 63, 64, 65)
    values = [rng.integers(0, 6, (50, n)).astype(np.float32) + rng.choice([0.0, 0.5], (50, n)).astype(np.float32)
              for n in sizes]
    # Every size in one compiled function (one compile instead of one per size; the same networks).
    got = jax.jit(lambda vs: [jax.vmap(_median)(v) for v in vs])([jnp.asarray(v) for v in values])
    for n, v, g in zip(sizes, values, got):
        np.testing.assert_array_equal(np.asarray(g), np.median(v, axis=1).astype(np.float32), err_msg=str(n))


def test_model_and_fisher_gradients(x64):
    # jit-compiled (one compile each instead of one per primitive of the eager function); the
    # derivative rules and the finite differences are those of the same function.
    theta = jnp.array([5.3, 4.4, 900.0, 6.0, 1.4], jnp.float64)
    check_grads(jax.jit(lambda t: gaussian_spot(t, shape=(7, 9))), (theta,), order=1, modes=["rev"])
    check_grads(jax.jit(lambda t: spot_fisher(t, shape=(7, 9))[..., 0, 0]), (theta,), order=1, modes=["rev"])


# ----------------------------------------------------------------------------- edge cases, bad input
def test_fit_edge_cases():
    # A flat ROI (no spot): finite parameters, photons near zero, background = the level.
    fit = fit_spots(jnp.full(SHAPE, 4.0, jnp.float32), sigma_px=1.3)  # not weak-typed: the compiled 1-ROI fit
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
    """Independent astigmatic model: widths from Huang et al.'s formula, scipy erf profiles.

    ``theta`` ``(..., 5)`` -> ``(..., ny, nx)``.
    """
    theta = np.asarray(theta, np.float64)
    y, x, n, b, z = (theta[..., i] for i in range(5))
    sx = ASTIG["sigma0_x_nm"] * np.sqrt(1 + ((z - ASTIG["gamma_nm"]) / ASTIG["depth_nm"]) ** 2) / pixel
    sy = ASTIG["sigma0_y_nm"] * np.sqrt(1 + ((z + ASTIG["gamma_nm"]) / ASTIG["depth_nm"]) ** 2) / pixel
    return (b[..., None, None]
            + n[..., None, None] * _profile(shape[0], y, sy)[..., :, None] * _profile(shape[1], x, sx)[..., None, :])


def test_astigmatic_model_and_crlb_match_scipy():
    theta = np.array([6.3, 5.8, 2000.0, 10.0, 150.0])
    # Model and CRLB jit-compiled: one compile each instead of one per primitive of the eager call.
    mu = np.asarray(jax.jit(lambda t: gaussian_spot(t, shape=(13, 13), astigmatism=ASTIG, pixel_size_nm=100.0))(
        jnp.asarray(theta, jnp.float32)))
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
        c = np.asarray(jax.jit(lambda t: spot_crlb(t, shape=(13, 13), astigmatism=ASTIG, pixel_size_nm=100.0))(
            jnp.asarray(theta)))
    np.testing.assert_allclose(c, ref, rtol=1e-3)


def test_astigmatic_fit_is_efficient_in_xyz():
    """2000 spots, z uniform in [-400, 400] nm: RMSE / sqrt(CRLB) in [0.9, 1.15] for x, y and z, no bias."""
    n, shape = 2000, (13, 13)
    truth, rng = _spot_set(11, n, 2000.0, 10.0, shape)
    truth = np.concatenate([truth, rng.uniform(-400.0, 400.0, (n, 1))], axis=1)

    def model(t):
        return _scipy_astig_spot(t, shape, 100.0)

    fit = fit_spots(rng.poisson(model(truth)).astype(np.float32), astigmatism=ASTIG, pixel_size_nm=100.0)
    crlb = _numerical_crlb(model, truth, rel_step=1e-4)
    err = np.asarray(fit.params) - truth
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


def test_spot_fisher_and_crlb_validate_the_variance():
    """As fit_spots: a negative or non-finite read-noise variance is an error (a negative one gave a finite,
    too optimistic CRLB), and a variance that does not broadcast is named."""
    theta = jnp.array([5.0, 5.0, 1000.0, 10.0])
    for bad in (-20.0, float("nan"), float("inf"), np.full((11, 11), -1.0)):
        for f in (spot_fisher, spot_crlb):
            with pytest.raises(ValueError, match="argument 'variance'"):
                f(theta, shape=(11, 11), sigma_px=1.3, variance=bad)
    with pytest.raises(ValueError, match="argument 'variance'.*broadcast"):
        spot_crlb(theta, shape=(11, 11), sigma_px=1.3, variance=np.ones((5, 5)))
    # a valid map still works, and equals the scalar where they agree
    np.testing.assert_allclose(spot_crlb(theta, shape=(11, 11), sigma_px=1.3, variance=np.full((11, 11), 2.0)),
                               spot_crlb(theta, shape=(11, 11), sigma_px=1.3, variance=2.0), rtol=1e-5)
    # under jit (traced variance) the value checks are skipped and the function still traces
    assert np.isfinite(np.asarray(jax.jit(lambda v: spot_crlb(theta, shape=(11, 11), sigma_px=1.3,
                                                                variance=v))(2.0))).all()
