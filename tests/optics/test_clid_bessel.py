"""Tests for jaxsr.optics.clid_bessel_psf (the PSF of the released CLID code)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import integrate, special

from jaxsr.forward import bin_image
from jaxsr.optics.clid_bessel import clid_bessel_psf
from jaxsr.optics.psf import airy_psf_2d

NA, WL = 1.49, 488.0


def _reference_amplitude(r_nm: np.ndarray, na: float, wl: float) -> np.ndarray:
    """2 * int_0^1 J0(2 pi NA r p / wl) dp by adaptive quadrature (scipy)."""
    k = 2 * np.pi * na / wl
    out = [2 * integrate.quad(lambda p, v=k * r: special.j0(v * p), 0.0, 1.0, limit=200)[0] for r in r_nm]
    return np.asarray(out)


def _half_max_width(profile: np.ndarray, centre: int, step_nm: float) -> float:
    """Full width at half maximum by linear interpolation of the half-max crossing (symmetric profile)."""
    half = profile[centre] / 2.0
    i = centre + int(np.argmax(profile[centre:] < half))
    x = (i - 1) + (profile[i - 1] - half) / (profile[i - 1] - profile[i])
    return 2.0 * (x - centre) * step_nm


@pytest.fixture(scope="module")
def radial_cut():
    """A 1-row PSF: a radial cut through the centre at 2 nm steps, to 600 nm."""
    return np.asarray(clid_bessel_psf((1, 601), na=NA, wavelength_nm=WL, pixel_size_nm=2.0))[0]


# --------------------------------------------------------------------------- 1. references


def test_matches_scipy_quadrature_2d():
    shape, px = (17, 16), 21.67  # odd and even sides, centre (8, 8)
    psf = np.asarray(clid_bessel_psf(shape, na=NA, wavelength_nm=WL, pixel_size_nm=px))
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(yy - shape[0] // 2, xx - shape[1] // 2) * px
    radii, inverse = np.unique(np.round(r, 9), return_inverse=True)
    ref = (_reference_amplitude(radii, NA, WL) ** 2)[inverse.reshape(shape)]
    ref /= ref.sum()
    np.testing.assert_allclose(psf, ref, rtol=2e-5, atol=1e-6 * ref.max())


def test_radial_cut_matches_scipy(radial_cut):
    r = np.abs(np.arange(601) - 300) * 2.0
    ref = _reference_amplitude(r, NA, WL) ** 2
    ref /= ref.sum()
    np.testing.assert_allclose(radial_cut, ref, rtol=1e-4, atol=1e-6 * ref.max())


def test_fwhm_is_25_percent_broader_than_airy(radial_cut):
    """The released code's PSF: FWHM 211 nm at 488 nm / NA 1.49, versus 168.5 nm for Airy."""
    fw = _half_max_width(radial_cut, 300, 2.0)
    airy = np.asarray(airy_psf_2d((1, 601), na=NA, wavelength_nm=WL, pixel_size_nm=2.0, integrate_pixel=False))[0]
    fw_airy = _half_max_width(airy, 300, 2.0)
    assert fw == pytest.approx(211.0, abs=0.5)
    assert fw_airy == pytest.approx(168.5, abs=0.5)  # 0.514 wavelength / NA
    assert fw / fw_airy == pytest.approx(1.252, abs=0.005)
    # closed form of the half-max point: 0.644 wavelength / NA
    assert fw == pytest.approx(0.6443 * WL / NA, rel=2e-3)


def test_no_true_zeros_where_airy_has_them():
    # cut to 2 um at 5 nm steps; the Airy pattern vanishes at 0.61 wavelength / NA = 199.8 nm
    cut = np.asarray(clid_bessel_psf((1, 801), na=NA, wavelength_nm=WL, pixel_size_nm=5.0))[0]
    airy = np.asarray(airy_psf_2d((1, 801), na=NA, wavelength_nm=WL, pixel_size_nm=5.0, integrate_pixel=False))[0]
    rel = cut[400:] / cut[400]
    rel_airy = airy[400:] / airy[400]
    assert rel_airy[40] < 1e-4  # r = 200 nm, next to the Airy zero
    assert rel[40] > 1e-2
    assert rel.min() > 4e-4  # deepest minimum of the cut ~5.5e-4 of the peak, never 0
    # the amplitude 2/v int_0^v J0 decays like 1/v: intensity ~ 1/r^2 far out
    assert rel[-1] * 2000.0**2 == pytest.approx(rel[200] * 1000.0**2, rel=0.3)


def test_unit_sum_centre_and_symmetry():
    for shape in [(33, 33), (32, 31), (8, 8)]:
        psf = np.asarray(clid_bessel_psf(shape, na=1.4, wavelength_nm=520.0, pixel_size_nm=30.0))
        assert psf.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.unravel_index(psf.argmax(), shape) == (shape[0] // 2, shape[1] // 2)
        assert psf.min() > 0
    sq = np.asarray(clid_bessel_psf((33, 33), na=1.4, wavelength_nm=520.0, pixel_size_nm=30.0))
    np.testing.assert_allclose(sq, sq.T, atol=1e-9)
    np.testing.assert_allclose(sq, sq[::-1, ::-1], atol=1e-9)


def test_normalisation_depends_on_grid_size():
    # tails ~ 1/r^2: the energy in a disc grows like log(R), so a larger grid lowers the peak
    small = clid_bessel_psf((33, 33), na=NA, wavelength_nm=WL, pixel_size_nm=21.67)
    large = clid_bessel_psf((129, 129), na=NA, wavelength_nm=WL, pixel_size_nm=21.67)
    ratio = float(large.max() / small.max())
    assert 0.6 < ratio < 0.95
    # same shape up to the normalisation constant
    inner = np.asarray(large)[48:81, 48:81]
    np.testing.assert_allclose(inner / inner.sum(), np.asarray(small), rtol=1e-4, atol=1e-9)


def test_integrate_pixel_equals_binned_fine_sampling():
    s = 5
    coarse = clid_bessel_psf((9, 9), na=NA, wavelength_nm=WL, pixel_size_nm=50.0, oversample=s,
                             integrate_pixel=True)
    fine = clid_bessel_psf((45, 45), na=NA, wavelength_nm=WL, pixel_size_nm=10.0)
    binned = np.asarray(bin_image(fine, factor=s))
    np.testing.assert_allclose(np.asarray(coarse), binned / binned.sum(), rtol=1e-4, atol=1e-8)


# --------------------------------------------------------------------------- 2. jit / vmap


def test_jit_and_vmap_over_na():
    nas = jnp.array([1.2, 1.4, 1.49])
    loop = np.stack([np.asarray(clid_bessel_psf((15, 15), na=float(n), wavelength_nm=WL, pixel_size_nm=30.0))
                     for n in nas])
    f = lambda n: clid_bessel_psf((15, 15), na=n, wavelength_nm=WL, pixel_size_nm=30.0)  # noqa: E731
    np.testing.assert_allclose(np.asarray(jax.vmap(f)(nas)), loop, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(np.asarray(jax.jit(f)(nas[1])), loop[1], rtol=1e-5, atol=1e-9)


# --------------------------------------------------------------------------- 3. gradients


def test_check_grads_float64(x64):
    def f(na, wl, px):
        return clid_bessel_psf((9, 9), na=na, wavelength_nm=wl, pixel_size_nm=px)

    check_grads(f, (jnp.float64(1.3), jnp.float64(520.0), jnp.float64(40.0)), order=1, modes=["rev"])


def test_gradient_sign_and_finiteness():
    # a larger NA concentrates the PSF: d(peak)/dNA > 0; finite at a 1x1 grid (centre only)
    g = jax.grad(lambda n: clid_bessel_psf((15, 15), na=n, wavelength_nm=WL, pixel_size_nm=30.0)[7, 7])(1.3)
    assert np.isfinite(float(g)) and float(g) > 0
    g1 = jax.grad(lambda n: clid_bessel_psf((1, 1), na=n, wavelength_nm=WL, pixel_size_nm=30.0)[0, 0])(1.3)
    assert float(g1) == 0.0


# --------------------------------------------------------------------------- 4. bad input


def test_bad_input():
    kw = dict(na=NA, wavelength_nm=WL, pixel_size_nm=20.0)
    with pytest.raises(ValueError, match="na"):
        clid_bessel_psf((9, 9), **{**kw, "na": 0.0})
    with pytest.raises(ValueError, match="wavelength_nm"):
        clid_bessel_psf((9, 9), **{**kw, "wavelength_nm": float("nan")})
    with pytest.raises(ValueError, match="pixel_size_nm"):
        clid_bessel_psf((9, 9), **{**kw, "pixel_size_nm": 400.0})  # > wavelength / NA = 327 nm
    with pytest.raises(ValueError, match="shape"):
        clid_bessel_psf((9, 0), **kw)
    with pytest.raises(ValueError, match="shape"):
        clid_bessel_psf((9, 9, 9), **kw)
    with pytest.raises(TypeError, match="integrate_pixel"):
        clid_bessel_psf((9, 9), integrate_pixel=1, **kw)
    with pytest.raises(ValueError, match="oversample"):
        clid_bessel_psf((9, 9), oversample=0, **kw)
