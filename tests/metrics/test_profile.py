"""FWHM and two-peak fits against closed forms and statistics; line profiles vs scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.measure import profile_line

from jaxsr.metrics import FWHMResult, TwoPeakResult, fwhm, line_profile, two_peak_separation

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def gauss(x, amplitude, center, sigma):
    return amplitude * np.exp(-0.5 * ((x - center) / sigma) ** 2)


def closed_form_dip(u):
    """Dip of two equal Gaussians separated by u sigmas: the sum at the midpoint over its value at a centre."""
    return 1.0 - 2.0 * np.exp(-(u**2) / 8.0) / (1.0 + np.exp(-(u**2) / 2.0))


# ------------------------------------------------------------------------ fwhm
@pytest.mark.parametrize(
    "amplitude,center,sigma,background,n",
    [(5.0, 20.0, 3.0, 1.0, 41), (100.0, 13.37, 1.2, 0.0, 30), (0.02, 40.5, 7.5, 3.0, 90), (1.0, 9.9, 0.8, -2.0, 20)],
)
def test_fwhm_exact_gaussian(amplitude, center, sigma, background, n):
    x = np.arange(n, dtype=float)
    r = fwhm(gauss(x, amplitude, center, sigma) + background, pixel_size_nm=12.5)
    assert isinstance(r, FWHMResult)
    assert r.fwhm_nm == pytest.approx(FWHM_PER_SIGMA * sigma * 12.5, rel=1e-4)
    assert r.sigma_nm == pytest.approx(sigma * 12.5, rel=1e-4)
    assert r.center_nm == pytest.approx(center * 12.5, rel=1e-4)
    assert r.amplitude == pytest.approx(amplitude, rel=1e-4)
    assert r.background == pytest.approx(background, abs=1e-4 * amplitude)


def test_fwhm_noisy_is_unbiased(rng):
    """Poisson profiles (peak 200 + background 20 photons): the mean FWHM is within 4 standard errors."""
    x = np.arange(64.0)
    sigma = 3.0
    lam = gauss(x, 200.0, 31.3, sigma) + 20.0
    est = np.array([fwhm(rng.poisson(lam)).fwhm_nm for _ in range(200)])
    truth = FWHM_PER_SIGMA * sigma
    standard_error = est.std(ddof=1) / np.sqrt(est.size)
    assert abs(est.mean() - truth) < 4 * standard_error
    # And the scatter is a few percent at this SNR, not a broken fit.
    assert est.std() / truth < 0.06


def test_fwhm_ignores_nan_samples():
    x = np.arange(40.0)
    p = gauss(x, 4.0, 18.2, 2.5) + 0.5
    holey = p.copy()
    holey[[0, 1, 30]] = np.nan
    assert fwhm(holey).fwhm_nm == pytest.approx(FWHM_PER_SIGMA * 2.5, rel=1e-4)


@settings(max_examples=15)
@given(shift=st.floats(-8.0, 8.0), scale=st.floats(0.01, 1000.0), sigma=st.floats(1.0, 4.0))
def test_fwhm_shift_equivariant_scale_invariant(shift, scale, sigma):
    x = np.arange(60.0)
    r0 = fwhm(gauss(x, 1.0, 30.0, sigma) + 0.2)
    r1 = fwhm(scale * (gauss(x, 1.0, 30.0 + shift, sigma) + 0.2))
    assert r1.center_nm == pytest.approx(r0.center_nm + shift, abs=1e-5)
    assert r1.fwhm_nm == pytest.approx(r0.fwhm_nm, rel=1e-5)
    assert r1.amplitude == pytest.approx(scale * r0.amplitude, rel=1e-5)


def test_fwhm_bad_input():
    x = np.arange(20.0)
    with pytest.raises(ValueError, match="flat"):
        fwhm(np.full(20, 3.0))
    with pytest.raises(ValueError, match="profile"):
        fwhm(np.full(20, np.nan))
    with pytest.raises(ValueError, match="profile"):
        fwhm(np.array([0.0, 1.0, 3.0, 1.0]))  # too short for 4 parameters
    with pytest.raises(ValueError, match="profile"):
        fwhm(np.ones((4, 5)))
    with pytest.raises(ValueError, match="pixel_size_nm"):
        fwhm(gauss(x, 1.0, 10.0, 2.0), pixel_size_nm=0.0)
    with pytest.raises(ValueError, match="profile"):
        fwhm(-gauss(x, 1.0, 10.0, 2.0))  # a dip, not a peak


# ------------------------------------------------------------- two peaks
def _pair_profile(d_over_s, sigma=3.0, n=80, a1=10.0, a2=10.0, background=2.0, offset=0.37):
    x = np.arange(float(n))
    c = n / 2 + offset
    return gauss(x, a1, c - d_over_s * sigma / 2, sigma) + gauss(x, a2, c + d_over_s * sigma / 2, sigma) + background


def test_two_peak_verdict_flips_at_closed_form_rayleigh_distance():
    u_star = scipy.optimize.brentq(lambda u: closed_form_dip(u) - 0.26, 1.0, 6.0)
    assert u_star == pytest.approx(2.79, abs=0.01)
    below = two_peak_separation(_pair_profile(0.97 * u_star))
    above = two_peak_separation(_pair_profile(1.03 * u_star))
    assert isinstance(above, TwoPeakResult)
    assert not below.resolved and above.resolved
    assert below.dip < 0.26 <= above.dip


@pytest.mark.parametrize("u", [1.0, 2.0, 2.5, 2.79, 3.0, 4.0])
def test_two_peak_dip_matches_closed_form(u):
    r = two_peak_separation(_pair_profile(u))
    assert r.dip == pytest.approx(max(closed_form_dip(u), 0.0), abs=1e-5)


@pytest.mark.parametrize("u", [2.5, 3.0, 4.0, 6.0])
@pytest.mark.parametrize("ratio", [1.0, 0.6])
def test_two_peak_separation_within_one_percent(u, ratio):
    sigma = 2.5
    r = two_peak_separation(_pair_profile(u, sigma=sigma, a2=10.0 * ratio), pixel_size_nm=20.0)
    assert r.separation_nm == pytest.approx(u * sigma * 20.0, rel=0.01)
    np.testing.assert_allclose(r.fwhm_nm, FWHM_PER_SIGMA * sigma * 20.0, rtol=0.01)
    assert r.centers_nm[0] < r.centers_nm[1]


def test_two_peak_noisy_unbiased(rng):
    """Poisson profiles (peaks of 1000 photons, 2.5 sigma apart): mean separation within 0.5 %."""
    lam = 100.0 * _pair_profile(2.5, sigma=3.0, background=0.5, n=64)  # peaks 1000, background 50
    seps = np.array([two_peak_separation(rng.poisson(lam)).separation_nm for _ in range(60)])
    assert np.mean(seps) == pytest.approx(7.5, rel=0.005)
    assert np.std(seps) / 7.5 < 0.03


def test_two_peak_min_dip_parameter():
    p = _pair_profile(3.0)  # dip ~0.36
    assert two_peak_separation(p, min_dip=0.3).resolved
    assert not two_peak_separation(p, min_dip=0.4).resolved


def test_two_peak_bad_input():
    with pytest.raises(ValueError, match="flat"):
        two_peak_separation(np.zeros(30))
    with pytest.raises(ValueError, match="profile"):
        two_peak_separation(np.arange(6.0))
    with pytest.raises(ValueError, match="min_dip"):
        two_peak_separation(_pair_profile(3.0), min_dip=1.5)
    with pytest.raises(ValueError, match="pixel_size_nm"):
        two_peak_separation(_pair_profile(3.0), pixel_size_nm=-1.0)


# ------------------------------------------------------------- line profile
@pytest.mark.parametrize(
    "start,end,width",
    [((5, 5), (30, 40), 1), ((5, 5), (30, 40), 3), ((10, 10), (10, 30), 5), ((3.5, 7.2), (35.1, 20.4), 4),
     ((30, 40), (5, 5), 2)],
)
def test_line_profile_matches_skimage(rng, start, end, width):
    img = rng.random((40, 50))
    got = line_profile(img, start, end, width=width)
    want = profile_line(img, start, end, linewidth=width, order=1, mode="reflect")
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_line_profile_along_a_row_is_the_row(rng):
    img = rng.random((10, 12))
    np.testing.assert_allclose(line_profile(img, (4, 0), (4, 11)), img[4], atol=1e-12)
    np.testing.assert_allclose(line_profile(img, (4, 0), (4, 11), width=3), img[3:6].mean(axis=0), atol=1e-12)
    # num resamples the same segment.
    assert line_profile(img, (4, 0), (4, 11), num=23).shape == (23,)
    np.testing.assert_allclose(line_profile(img, (4, 0), (4, 11), num=23)[::2], img[4], atol=1e-12)


def test_line_profile_then_fwhm():
    y, x = np.mgrid[:41, :41].astype(float)
    spot = 50.0 * np.exp(-((y - 20.0) ** 2 + (x - 20.3) ** 2) / (2 * 2.0**2)) + 5.0
    prof = line_profile(spot, (20, 0), (20, 40))
    assert fwhm(prof, pixel_size_nm=10.0).fwhm_nm == pytest.approx(FWHM_PER_SIGMA * 20.0, rel=1e-2)


def test_line_profile_bad_input(rng):
    img = rng.random((20, 20))
    with pytest.raises(ValueError, match="end"):
        line_profile(img, (5, 5), (5, 25))
    with pytest.raises(ValueError, match="start"):
        line_profile(img, (-3, 5), (5, 5))
    with pytest.raises(ValueError, match="width"):
        line_profile(img, (0, 2), (0, 15), width=3)
    with pytest.raises(ValueError, match="end"):
        line_profile(img, (5, 5), (5, 5))
    with pytest.raises(ValueError, match="image"):
        line_profile(img[0], (0, 0), (0, 5))
    with pytest.raises(ValueError, match="width"):
        line_profile(img, (5, 5), (5, 10), width=0)
    with pytest.raises(ValueError, match="num"):
        line_profile(img, (5, 5), (5, 10), num=1)
    with pytest.raises(ValueError, match="start"):
        line_profile(img, (5, 5, 1), (5, 10))
