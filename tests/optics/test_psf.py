"""Tests for jaxsr.optics.psf: Gaussian, Airy, scalar pupil and astigmatic PSFs."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy import integrate, special, stats

from jaxsr.optics import (
    airy_psf_2d,
    astigmatic_psf_3d,
    astigmatic_sigma,
    gaussian_psf_2d,
    gaussian_psf_3d,
    pupil_psf_3d,
)
from jaxsr.optics.psf import _pupil_fields

PIX = 100.0


def _coords(n, step):
    return (np.arange(n) - n // 2) * step


def _moments(img):
    """Centroid (y, x) and central second moments (yy, xx, xy) in pixels."""
    img = np.asarray(img, np.float64)
    y = np.arange(img.shape[0]) - img.shape[0] // 2
    x = np.arange(img.shape[1]) - img.shape[1] // 2
    m = img.sum()
    cy, cx = img.sum(1) @ y / m, img.sum(0) @ x / m
    yy = img.sum(1) @ (y - cy) ** 2 / m
    xx = img.sum(0) @ (x - cx) ** 2 / m
    xy = (y - cy) @ img @ (x - cx) / m
    return cy, cx, yy, xx, xy


def _peak(img):
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(img)), img.shape))


def _gauss_mass_ref(n, p, sigma, offset, integrate):
    """Independent 1D reference with scipy.stats: pixel masses (exact, or midpoint rule)."""
    c = _coords(n, p) - offset
    if integrate:
        return stats.norm.cdf((c + p / 2) / sigma) - stats.norm.cdf((c - p / 2) / sigma)
    return stats.norm.pdf(c / sigma) * p / sigma


def _airy_ref(y, x, na, wl):
    v = 2 * np.pi / wl * na * np.hypot(y, x)
    safe = np.where(v == 0, 1.0, v)
    return np.where(v == 0, 1.0, (2 * special.j1(safe) / safe) ** 2)


# ============================================================== Gaussian 2D / 3D


@pytest.mark.parametrize("integrate_pixel", [True, False])
def test_gaussian_2d_reference(integrate_pixel):
    shape, sigma, off = (9, 12), (130.0, 85.0), (37.0, -61.0)
    psf = np.asarray(gaussian_psf_2d(shape, sigma_nm=sigma, pixel_size_nm=PIX, offset_nm=off,
                                     integrate_pixel=integrate_pixel))
    ref = np.outer(_gauss_mass_ref(shape[0], PIX, sigma[0], off[0], integrate_pixel),
                   _gauss_mass_ref(shape[1], PIX, sigma[1], off[1], integrate_pixel))
    np.testing.assert_allclose(psf, ref / ref.sum(), rtol=1e-5, atol=1e-8)


def test_gaussian_2d_dblquad():
    # Pixel masses by 2D numerical integration of the density (no separability assumed).
    sy, sx, oy, ox = 120.0, 90.0, 23.0, -41.0
    n = 5
    psf = np.asarray(gaussian_psf_2d((n, n), sigma_nm=(sy, sx), pixel_size_nm=PIX, offset_nm=(oy, ox)))

    def dens(y, x):
        return math.exp(-0.5 * ((y - oy) / sy) ** 2 - 0.5 * ((x - ox) / sx) ** 2)

    half = n * PIX / 2
    total = integrate.dblquad(dens, -half, half, -half, half, epsabs=1e-10)[0]
    for i, j in [(2, 2), (1, 3), (4, 0), (0, 0)]:
        y0, x0 = (i - n // 2) * PIX, (j - n // 2) * PIX
        mass = integrate.dblquad(dens, x0 - PIX / 2, x0 + PIX / 2, y0 - PIX / 2, y0 + PIX / 2, epsabs=1e-12)[0]
        np.testing.assert_allclose(psf[i, j], mass / total, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("integrate_pixel", [True, False])
def test_gaussian_moments(x64, integrate_pixel):
    # Pixel integration adds the box variance p^2/12 (Sheppard's correction), sampling adds nothing.
    s, off = 1.5 * PIX, (0.37 * PIX, -0.81 * PIX)
    psf = gaussian_psf_2d((41, 41), sigma_nm=s, pixel_size_nm=PIX, offset_nm=off, integrate_pixel=integrate_pixel)
    cy, cx, yy, xx, xy = _moments(psf)
    extra = 1.0 / 12.0 if integrate_pixel else 0.0
    np.testing.assert_allclose([cy, cx], [0.37, -0.81], atol=1e-9)
    np.testing.assert_allclose([yy, xx], [1.5**2 + extra] * 2, rtol=1e-9)
    assert abs(xy) < 1e-12


@pytest.mark.parametrize("shape", [(8, 8), (9, 9), (8, 9), (1, 6), (2, 2)])
def test_gaussian_2d_centre_and_sum(shape):
    psf = gaussian_psf_2d(shape, sigma_nm=80.0, pixel_size_nm=PIX)
    assert psf.shape == shape and psf.dtype == jnp.float32
    assert abs(float(psf.sum()) - 1.0) < 1e-6
    assert _peak(psf) == (shape[0] // 2, shape[1] // 2)
    assert _peak(gaussian_psf_2d(shape, sigma_nm=80.0, pixel_size_nm=PIX, offset_nm=(0.0, -PIX)))[1] == max(
        shape[1] // 2 - 1, 0)


def test_gaussian_far_offset_stays_finite():
    # Emitter 60 sigma outside the field: the log-space pixel masses keep a normalised PSF.
    psf = gaussian_psf_2d((7, 7), sigma_nm=50.0, pixel_size_nm=PIX, offset_nm=(0.0, 3000.0))
    assert np.all(np.isfinite(np.asarray(psf))) and abs(float(psf.sum()) - 1.0) < 1e-6
    assert _peak(psf) == (3, 6)
    g = jax.grad(lambda o: gaussian_psf_2d((7, 7), sigma_nm=50.0, pixel_size_nm=PIX, offset_nm=o)[3, 6])(
        jnp.array([0.0, 3000.0]))
    assert np.all(np.isfinite(np.asarray(g)))


def test_gaussian_3d_reference():
    shape, sigma, off = (5, 7, 8), (400.0, 110.0, 140.0), (-120.0, 30.0, 55.0)
    zs = 250.0
    psf = np.asarray(gaussian_psf_3d(shape, sigma_nm=sigma, pixel_size_nm=PIX, z_step_nm=zs, offset_nm=off))
    pz = stats.norm.pdf((_coords(shape[0], zs) - off[0]) / sigma[0])  # planes are sampled in z
    py = _gauss_mass_ref(shape[1], PIX, sigma[1], off[1], True)
    px = _gauss_mass_ref(shape[2], PIX, sigma[2], off[2], True)
    ref = pz[:, None, None] * py[None, :, None] * px[None, None, :]
    np.testing.assert_allclose(psf, ref / ref.sum(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("shape", [(4, 6, 6), (5, 7, 7)])
def test_gaussian_3d_centre_and_offset(shape):
    psf = gaussian_psf_3d(shape, sigma_nm=100.0, pixel_size_nm=PIX, z_step_nm=200.0)
    assert abs(float(psf.sum()) - 1.0) < 1e-6
    assert _peak(psf) == tuple(n // 2 for n in shape)
    moved = gaussian_psf_3d(shape, sigma_nm=100.0, pixel_size_nm=PIX, z_step_nm=200.0, offset_nm=(200.0, 0.0, 0.0))
    assert _peak(moved)[0] == shape[0] // 2 + 1


def test_gaussian_jit_vmap():
    sig = jnp.array([60.0, 90.0, 150.0])
    f = functools.partial(gaussian_psf_2d, (9, 9), pixel_size_nm=PIX)
    batch = jax.vmap(lambda s: f(sigma_nm=s))(sig)
    jitted = jax.jit(lambda s: f(sigma_nm=s))
    for i, s in enumerate(sig):
        np.testing.assert_allclose(np.asarray(batch[i]), np.asarray(f(sigma_nm=s)), atol=1e-7)
        np.testing.assert_allclose(np.asarray(jitted(s)), np.asarray(f(sigma_nm=s)), atol=1e-7)
    offs = jnp.array([[0.0, 0.0], [10.0, -20.0]])
    b3 = jax.vmap(lambda o: gaussian_psf_3d((3, 5, 5), sigma_nm=(200.0, 90.0, 90.0), pixel_size_nm=PIX,
                                            z_step_nm=150.0, offset_nm=o))(jnp.pad(offs, ((0, 0), (1, 0))))
    assert b3.shape == (2, 3, 5, 5)
    one = gaussian_psf_3d((3, 5, 5), sigma_nm=(200.0, 90.0, 90.0), pixel_size_nm=PIX, z_step_nm=150.0,
                          offset_nm=(0.0, 10.0, -20.0))
    np.testing.assert_allclose(np.asarray(b3[1]), np.asarray(one), atol=1e-7)


@pytest.mark.parametrize("integrate_pixel", [True, False])
def test_gaussian_2d_check_grads(x64, integrate_pixel):
    def f(sig, pix, off):
        return gaussian_psf_2d((9, 9), sigma_nm=sig, pixel_size_nm=pix, offset_nm=off, integrate_pixel=integrate_pixel)

    check_grads(f, (jnp.array([110.0, 80.0]), 95.0, jnp.array([0.0, 0.0])), order=1, modes=["rev"])
    check_grads(f, (jnp.array([110.0, 80.0]), 95.0, jnp.array([23.0, -61.0])), order=1, modes=["rev"])


def test_gaussian_3d_check_grads(x64):
    def f(sig, pix, dz, off):
        return gaussian_psf_3d((5, 9, 9), sigma_nm=sig, pixel_size_nm=pix, z_step_nm=dz, offset_nm=off)

    check_grads(f, (jnp.array([300.0, 110.0, 80.0]), 95.0, 150.0, jnp.array([10.0, 0.0, -30.0])),
                order=1, modes=["rev"])


def test_gaussian_tuple_of_tracers():
    # fit code passes (sigma_y, sigma_x) as a tuple of traced scalars.
    g = jax.grad(lambda sy, sx: gaussian_psf_2d((5, 5), sigma_nm=(sy, sx), pixel_size_nm=PIX)[2, 2],
                 argnums=(0, 1))(100.0, 120.0)
    assert all(float(v) < 0 for v in g)  # wider -> lower peak


@settings(max_examples=15)
@given(st.floats(-1.5, 1.5), st.floats(-1.5, 1.5))
def test_gaussian_centroid_equals_offset(oy, ox):
    psf = gaussian_psf_2d((31, 31), sigma_nm=1.4 * PIX, pixel_size_nm=PIX, offset_nm=(oy * PIX, ox * PIX))
    cy, cx, *_ = _moments(psf)
    assert abs(cy - oy) < 2e-4 and abs(cx - ox) < 2e-4


def test_gaussian_bad_input():
    with pytest.raises(ValueError, match="shape"):
        gaussian_psf_2d((5, 5, 5), sigma_nm=1.0, pixel_size_nm=1.0)
    with pytest.raises(ValueError, match="shape"):
        gaussian_psf_2d((0, 5), sigma_nm=1.0, pixel_size_nm=1.0)
    with pytest.raises(ValueError, match="sigma_nm"):
        gaussian_psf_2d((5, 5), sigma_nm=-1.0, pixel_size_nm=1.0)
    with pytest.raises(ValueError, match="sigma_nm"):
        gaussian_psf_2d((5, 5), sigma_nm=(1.0, 2.0, 3.0), pixel_size_nm=1.0)
    with pytest.raises(ValueError, match="pixel_size_nm"):
        gaussian_psf_2d((5, 5), sigma_nm=1.0, pixel_size_nm=0.0)
    with pytest.raises(ValueError, match="offset_nm"):
        gaussian_psf_2d((5, 5), sigma_nm=1.0, pixel_size_nm=1.0, offset_nm=(0.0, np.nan))
    with pytest.raises(ValueError, match="offset_nm"):
        gaussian_psf_2d((5, 5), sigma_nm=1.0, pixel_size_nm=1.0, offset_nm=(0.0, 0.0, 0.0))
    with pytest.raises(TypeError, match="integrate_pixel"):
        gaussian_psf_2d((5, 5), sigma_nm=1.0, pixel_size_nm=1.0, integrate_pixel=1)
    with pytest.raises(TypeError):
        gaussian_psf_2d((5, 5), 1.0, 1.0)  # options are keyword-only
    with pytest.raises(ValueError, match="z_step_nm"):
        gaussian_psf_3d((3, 5, 5), sigma_nm=1.0, pixel_size_nm=1.0, z_step_nm=-2.0)
    with pytest.raises(ValueError, match="sigma_nm"):
        gaussian_psf_3d((3, 5, 5), sigma_nm=(1.0, 2.0), pixel_size_nm=1.0, z_step_nm=1.0)


def test_float64_dtype(x64):
    assert gaussian_psf_2d((5, 5), sigma_nm=100.0, pixel_size_nm=PIX).dtype == jnp.float64
    assert airy_psf_2d((5, 5), na=1.0, wavelength_nm=500.0, pixel_size_nm=PIX).dtype == jnp.float64
    assert pupil_psf_3d((1, 4, 4), na=0.5, wavelength_nm=500.0, pixel_size_nm=PIX, z_step_nm=1.0).dtype == jnp.float64


# ============================================================== Airy


def test_airy_sampled_reference():
    na, wl, px, off = 1.3, 520.0, 45.0, (17.0, -29.0)
    shape = (15, 16)
    psf = np.asarray(airy_psf_2d(shape, na=na, wavelength_nm=wl, pixel_size_nm=px, offset_nm=off,
                                 integrate_pixel=False))
    y, x = np.meshgrid(_coords(shape[0], px) - off[0], _coords(shape[1], px) - off[1], indexing="ij")
    ref = _airy_ref(y, x, na, wl)
    np.testing.assert_allclose(psf, ref / ref.sum(), rtol=0, atol=1e-6 * psf.max())


def test_airy_first_zero_and_fwhm(x64):
    na, wl = 1.0, 500.0
    r0 = special.jn_zeros(1, 1)[0] / (2 * np.pi / wl * na)  # 3.8317 / (k NA)
    assert abs(r0 / (wl / na) - 0.6098) < 1e-3  # the 0.61 lambda / NA rule
    # Pixel such that pixel (c, c + 3) sits exactly on the first dark ring.
    psf = np.asarray(airy_psf_2d((9, 9), na=na, wavelength_nm=wl, pixel_size_nm=r0 / 3, integrate_pixel=False))
    assert psf[4, 7] < 1e-12 * psf[4, 4] and psf[1, 4] < 1e-12 * psf[4, 4]
    # FWHM along x by linear interpolation on a fine sampling.
    step = wl / na / 200
    prof = np.asarray(airy_psf_2d((3, 201), na=na, wavelength_nm=wl, pixel_size_nm=step, integrate_pixel=False))[1]
    prof = prof / prof.max()
    right = prof[100:]
    k = int(np.argmax(right < 0.5))
    x_half = (k - 1) + (right[k - 1] - 0.5) / (right[k - 1] - right[k])
    fwhm = 2 * x_half * step
    assert abs(fwhm / (wl / na) - 0.5145) < 1e-3


def test_airy_pixel_integration_dblquad():
    na, wl, px, off = 1.2, 520.0, 80.0, (10.0, -20.0)
    n = 5

    def dens(y, x):
        return float(_airy_ref(y, x, na, wl))

    ref = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            y0, x0 = (i - n // 2) * px - off[0], (j - n // 2) * px - off[1]
            ref[i, j] = integrate.dblquad(dens, x0 - px / 2, x0 + px / 2, y0 - px / 2, y0 + px / 2,
                                          epsabs=1e-11, epsrel=1e-9)[0]
    ref /= ref.sum()
    errs = {}
    for s in (3, 15):
        psf = np.asarray(airy_psf_2d((n, n), na=na, wavelength_nm=wl, pixel_size_nm=px, offset_nm=off, oversample=s))
        errs[s] = np.abs(psf - ref).max() / ref.max()
    # Midpoint rule: error ~ 1/s^2 (measured 6e-3 at s=3, 2.4e-4 at s=15).
    assert errs[15] < 5e-4
    assert errs[15] < errs[3] / 15


@pytest.mark.parametrize("shape", [(8, 8), (9, 9), (6, 9)])
def test_airy_centre_and_sum(shape):
    psf = airy_psf_2d(shape, na=1.4, wavelength_nm=600.0, pixel_size_nm=60.0)
    assert psf.shape == shape and abs(float(psf.sum()) - 1.0) < 1e-6
    assert _peak(psf) == (shape[0] // 2, shape[1] // 2)
    moved = airy_psf_2d(shape, na=1.4, wavelength_nm=600.0, pixel_size_nm=60.0, offset_nm=(60.0, 0.0))
    assert _peak(moved) == (shape[0] // 2 + 1, shape[1] // 2)


def test_airy_symmetric_odd():
    psf = np.asarray(airy_psf_2d((9, 9), na=1.1, wavelength_nm=500.0, pixel_size_nm=50.0))
    # float32: reflection reverses the order of the sub-pixel sums (a few ulp).
    np.testing.assert_allclose(psf, psf[::-1], rtol=2e-6, atol=0)
    np.testing.assert_allclose(psf, psf.T, rtol=2e-6, atol=0)


def test_airy_jit_vmap():
    nas = jnp.array([0.8, 1.1, 1.4])
    f = jax.jit(lambda na: airy_psf_2d((9, 9), na=na, wavelength_nm=520.0, pixel_size_nm=50.0, oversample=3))
    batch = jax.vmap(f)(nas)
    for i, na in enumerate(nas):
        eager = airy_psf_2d((9, 9), na=float(na), wavelength_nm=520.0, pixel_size_nm=50.0, oversample=3)
        np.testing.assert_allclose(np.asarray(batch[i]), np.asarray(eager), atol=1e-7)
        np.testing.assert_allclose(np.asarray(f(na)), np.asarray(eager), atol=1e-7)


@pytest.mark.parametrize("integrate_pixel", [True, False])
def test_airy_check_grads(x64, integrate_pixel):
    def f(na, wl, px, off):
        return airy_psf_2d((9, 9), na=na, wavelength_nm=wl, pixel_size_nm=px, offset_nm=off, oversample=3,
                           integrate_pixel=integrate_pixel)

    check_grads(f, (1.2, 520.0, 60.0, jnp.array([0.0, 0.0])), order=1, modes=["rev"])
    check_grads(f, (1.2, 520.0, 60.0, jnp.array([13.0, -7.0])), order=1, modes=["rev"])


def test_airy_gradient_at_axis_float32():
    # The centre pixel sits at r = 0 when sampled: gradient w.r.t. offset is finite (and 0 by symmetry).
    def centre(off):
        return airy_psf_2d((5, 5), na=1.2, wavelength_nm=500.0, pixel_size_nm=50.0, offset_nm=off,
                           integrate_pixel=False)[2, 2]

    g = np.asarray(jax.grad(centre)(jnp.zeros(2)))
    assert np.all(np.isfinite(g)) and np.all(np.abs(g) < 1e-7)
    gna = jax.grad(lambda na: airy_psf_2d((5, 5), na=na, wavelength_nm=500.0, pixel_size_nm=50.0)[2, 2])(1.2)
    assert np.isfinite(float(gna)) and float(gna) > 0  # higher NA -> sharper peak


def test_airy_bad_input():
    kw = dict(na=1.0, wavelength_nm=500.0, pixel_size_nm=50.0)
    for name, bad in [("na", 0.0), ("wavelength_nm", -1.0), ("pixel_size_nm", np.inf)]:
        with pytest.raises(ValueError, match=name):
            airy_psf_2d((5, 5), **{**kw, name: bad})
    with pytest.raises(ValueError, match="oversample"):
        airy_psf_2d((5, 5), **kw, oversample=0)
    with pytest.raises(TypeError, match="oversample"):
        airy_psf_2d((5, 5), **kw, oversample=2.5)
    with pytest.raises(ValueError, match="shape"):
        airy_psf_2d((5,), **kw)
    with pytest.raises(ValueError, match="na"):
        airy_psf_2d((5, 5), **{**kw, "na": np.array([1.0, 1.2])})


# ============================================================== scalar pupil PSF

PUP = dict(wavelength_nm=500.0, z_step_nm=200.0, refractive_index=1.33)


def test_pupil_in_focus_matches_airy():
    # Fraunhofer: the in-focus plane of a clear circular pupil is the Airy pattern. Differences
    # come from the discretised pupil on the k-grid and periodic wrap; both shrink with pad_factor.
    n, na, px = 33, 0.3, 100.0
    airy = np.asarray(airy_psf_2d((n, n), na=na, wavelength_nm=500.0, pixel_size_nm=px, integrate_pixel=False))
    errs = {}
    for pad in (2, 4):
        p = np.asarray(pupil_psf_3d((1, n, n), na=na, pixel_size_nm=px, pad_factor=pad, **PUP))[0]
        errs[pad] = np.abs(p / p.max() - airy / airy.max()).max()
    assert errs[4] < 3e-3  # measured 1.5e-3
    assert errs[4] < errs[2]
    # High NA (scalar theory): same statement.
    hp = np.asarray(pupil_psf_3d((1, n, n), na=1.2, pixel_size_nm=40.0, pad_factor=4, **PUP))[0]
    ha = np.asarray(airy_psf_2d((n, n), na=1.2, wavelength_nm=500.0, pixel_size_nm=40.0, integrate_pixel=False))
    assert np.abs(hp / hp.max() - ha / ha.max()).max() < 2e-3


def test_pupil_z_symmetry_and_focus():
    psf = np.asarray(pupil_psf_3d((7, 16, 16), na=1.0, pixel_size_nm=60.0, **PUP))
    np.testing.assert_allclose(psf, psf[::-1], rtol=0, atol=1e-6 * psf.max())
    peaks = psf.max(axis=(1, 2))
    assert int(np.argmax(peaks)) == 3 and np.all(np.diff(peaks[:4]) > 0)
    assert _peak(psf[3]) == (8, 8)
    assert abs(psf.sum() - 1.0) < 1e-5


def test_pupil_defocus_and_offset_z_are_opposite_shifts(x64):
    a = pupil_psf_3d((5, 12, 12), na=1.0, pixel_size_nm=60.0, defocus_nm=130.0, **PUP)
    b = pupil_psf_3d((5, 12, 12), na=1.0, pixel_size_nm=60.0, offset_nm=(-130.0, 0.0, 0.0), **PUP)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-14)
    c = np.asarray(pupil_psf_3d((5, 12, 12), na=1.0, pixel_size_nm=60.0, defocus_nm=-200.0, **PUP))
    assert int(np.argmax(c.max(axis=(1, 2)))) == 3  # in-focus plane at z = -defocus


@pytest.mark.parametrize("j,axis", [(2, 1), (3, 0)])
def test_pupil_tilt_equals_lateral_offset(x64, j, axis):
    # Z2 = 2 rho cos(theta) -> shift along x, Z3 -> along y: c_j Z_j == phase ramp of -c lambda / (pi NA).
    na, c = 1.0, 0.7
    coef = np.zeros(j)
    coef[j - 1] = c
    tilt = pupil_psf_3d((3, 12, 12), na=na, pixel_size_nm=60.0, zernike_rad=coef, **PUP)
    off = [0.0, 0.0, 0.0]
    off[1 + axis] = -c * 500.0 / (np.pi * na)
    shift = pupil_psf_3d((3, 12, 12), na=na, pixel_size_nm=60.0, offset_nm=tuple(off), **PUP)
    np.testing.assert_allclose(np.asarray(tilt), np.asarray(shift), atol=1e-13)


def test_pupil_integer_offset_is_a_shift():
    base = np.asarray(pupil_psf_3d((3, 16, 16), na=1.0, pixel_size_nm=60.0, **PUP))
    moved = np.asarray(pupil_psf_3d((3, 16, 16), na=1.0, pixel_size_nm=60.0, offset_nm=(0.0, 60.0, -120.0), **PUP))
    # moved[z, y, x] = base[z, y - 1, x + 2] on the overlap, up to the crop normalisation.
    a, b = moved[:, 1:, :-2], base[:, :-1, 2:]
    np.testing.assert_allclose(a / a.sum(), b / b.sum(), rtol=0, atol=2e-6 * b.max())


def test_pupil_astigmatism_elongation():
    nz, c = 5, 2
    z6 = np.zeros(6)
    z6[5] = 1.0  # vertical astigmatism cos(2 theta)
    psf = np.asarray(pupil_psf_3d((nz, 33, 33), na=1.0, pixel_size_nm=50.0, z_step_nm=300.0,
                                  wavelength_nm=500.0, refractive_index=1.33, zernike_rad=z6))
    m = [_moments(p) for p in psf]
    # Paraxially the quadratic phase along x is (sqrt6 c - pi z NA^2 / (n lambda)) rho_x^2, so the
    # x line focus lies at z = +sqrt6 c n lambda / (pi NA^2) = +518 nm: narrow in x, long in y above
    # focus; the y line focus mirrors it below focus.
    for i in (1, 2):
        assert m[c + i][2] > 1.5 * m[c + i][3] and m[c - i][3] > 1.5 * m[c - i][2]
        np.testing.assert_allclose(psf[c + i], psf[c - i].T, atol=1e-6 * psf.max())
    assert abs(m[c][2] - m[c][3]) < 1e-3 * m[c][2]
    z5 = np.zeros(5)
    z5[4] = 1.0  # oblique astigmatism sin(2 theta): elongation along the diagonals
    psf5 = np.asarray(pupil_psf_3d((nz, 33, 33), na=1.0, pixel_size_nm=50.0, z_step_nm=300.0,
                                   wavelength_nm=500.0, refractive_index=1.33, zernike_rad=z5))
    xy = [_moments(p)[4] for p in psf5]
    assert xy[c + 1] * xy[c - 1] < 0 and abs(xy[c + 1]) > 0.3 * _moments(psf5[c + 1])[2]
    assert abs(xy[c]) < 1e-6


def test_pupil_energy_conserved_per_plane(x64):
    # Phase-only propagation and aberration: Parseval gives the same energy on the full grid per plane.
    args = [jnp.asarray(v) for v in (1.1, 500.0, 60.0, 250.0, 1.33, 40.0)]
    fields = _pupil_fields((7, 12, 12), 2, 1, *args, jnp.array([0.0, 0.3, -0.2, 0.5, 0.8, -0.4, 0.2]),
                           jnp.array([30.0, 11.0, -7.0]))
    energy = np.asarray(jnp.sum(jnp.abs(fields) ** 2, axis=(1, 2)))
    clear = _pupil_fields((7, 12, 12), 2, 1, *args, None, jnp.zeros(3))
    np.testing.assert_allclose(energy, energy[0], rtol=1e-12)
    np.testing.assert_allclose(energy, np.asarray(jnp.sum(jnp.abs(clear) ** 2, axis=(1, 2))), rtol=1e-12)
    # On a large crop the per-plane sums of the returned PSF are nearly equal too.
    psf = np.asarray(pupil_psf_3d((3, 48, 48), na=1.1, pixel_size_nm=60.0, wavelength_nm=500.0,
                                  z_step_nm=150.0, refractive_index=1.33))
    sums = psf.sum(axis=(1, 2))
    assert np.abs(sums / sums.mean() - 1).max() < 1e-2


@pytest.mark.parametrize("n,s,shift", [(9, 3, 0.0), (8, 2, 0.5)])
def test_pupil_oversample_equals_binned_fine_grid(x64, n, s, shift):
    # oversample=s on pixel p == binning s x s a fine-grid PSF (pixel p/s) centred on sub-pixel centres.
    px = 150.0
    kw = dict(na=1.0, z_step_nm=200.0, wavelength_nm=500.0, refractive_index=1.33)
    off = (30.0, 17.0, -40.0)
    coarse = np.asarray(pupil_psf_3d((3, n, n), pixel_size_nm=px, oversample=s, offset_nm=off, **kw))
    fine_off = (off[0], off[1] + shift * px / s, off[2] + shift * px / s)
    fine = np.asarray(pupil_psf_3d((3, s * n, s * n), pixel_size_nm=px / s, offset_nm=fine_off, **kw))
    binned = fine.reshape(3, n, s, n, s).sum(axis=(2, 4))
    np.testing.assert_allclose(coarse, binned / binned.sum(), atol=1e-14)


@pytest.mark.parametrize("shape", [(3, 8, 8), (3, 9, 9), (1, 7, 10)])
def test_pupil_centre_odd_even(shape):
    psf = pupil_psf_3d(shape, na=1.0, pixel_size_nm=60.0, **PUP)
    assert psf.shape == shape and abs(float(psf.sum()) - 1.0) < 1e-5
    c = shape[0] // 2
    assert _peak(psf[c]) == (shape[1] // 2, shape[2] // 2)


def test_pupil_jit_vmap():
    f = jax.jit(lambda na, z: pupil_psf_3d((3, 8, 8), na=na, pixel_size_nm=60.0, zernike_rad=z, **PUP))
    nas = jnp.array([0.9, 1.2])
    zs = jnp.array([[0.0, 0.0, 0.0, 0.0, 0.5], [0.0, 0.1, 0.0, 0.3, -0.5]])
    batch = jax.vmap(f)(nas, zs)
    for i in range(2):
        eager = pupil_psf_3d((3, 8, 8), na=float(nas[i]), pixel_size_nm=60.0, zernike_rad=np.asarray(zs[i]), **PUP)
        np.testing.assert_allclose(np.asarray(batch[i]), np.asarray(eager), atol=1e-6)


def test_pupil_check_grads(x64):
    def f(na, wl, px, zern, off, defocus, n_imm, dz):
        return pupil_psf_3d((3, 8, 8), na=na, wavelength_nm=wl, pixel_size_nm=px, z_step_nm=dz,
                            refractive_index=n_imm, defocus_nm=defocus, zernike_rad=zern, offset_nm=off)

    zern = jnp.array([0.1, -0.2, 0.3, 0.4, 0.5, -0.3])
    check_grads(f, (1.1, 520.0, 80.0, zern, jnp.zeros(3), 0.0, 1.33, 150.0), order=1, modes=["rev"])
    check_grads(f, (1.1, 520.0, 80.0, zern, jnp.array([40.0, 13.0, -21.0]), 30.0, 1.33, 150.0),
                order=1, modes=["rev"])


def test_pupil_na_gradient_is_physical():
    # The soft pupil edge makes the PSF depend smoothly on NA: a larger NA sharpens the focus.
    g = jax.grad(lambda na: pupil_psf_3d((1, 9, 9), na=na, pixel_size_nm=60.0, **PUP)[0, 4, 4])(1.0)
    assert np.isfinite(float(g)) and float(g) > 0


def test_pupil_bad_input():
    kw = dict(na=1.0, pixel_size_nm=60.0, **PUP)
    with pytest.raises(ValueError, match="'na'"):
        pupil_psf_3d((3, 8, 8), **{**kw, "na": 1.33})
    with pytest.raises(ValueError, match="'na'"):
        pupil_psf_3d((3, 8, 8), **{**kw, "na": 1.5})
    for name in ("na", "wavelength_nm", "pixel_size_nm", "z_step_nm", "refractive_index"):
        with pytest.raises(ValueError, match=name):
            pupil_psf_3d((3, 8, 8), **{**kw, name: 0.0})
    with pytest.raises(ValueError, match="pixel_size_nm"):
        pupil_psf_3d((3, 8, 8), **{**kw, "pixel_size_nm": 400.0})  # pupil beyond Nyquist
    pupil_psf_3d((1, 4, 4), **{**kw, "pixel_size_nm": 400.0}, oversample=3)  # ... fine with oversampling
    with pytest.raises(ValueError, match="zernike_rad"):
        pupil_psf_3d((3, 8, 8), **kw, zernike_rad=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="zernike_rad"):
        pupil_psf_3d((3, 8, 8), **kw, zernike_rad=[0.0, np.nan])
    with pytest.raises(ValueError, match="pad_factor"):
        pupil_psf_3d((3, 8, 8), **kw, pad_factor=0)
    with pytest.raises(ValueError, match="offset_nm"):
        pupil_psf_3d((3, 8, 8), **kw, offset_nm=(0.0, 0.0))
    with pytest.raises(ValueError, match="shape"):
        pupil_psf_3d((8, 8), **kw)
    with pytest.raises(ValueError, match="defocus_nm"):
        pupil_psf_3d((3, 8, 8), **kw, defocus_nm=np.inf)
    with pytest.raises(ValueError, match="normalize"):
        pupil_psf_3d((3, 8, 8), **kw, normalize="sum")


def test_pupil_plane_normalisation_is_the_light_inside_the_crop():
    # normalize="plane": each plane holds unit light on the unbounded field, so a crop sums to the
    # light inside it. In focus that is the Airy encircled energy 1 - J0(v)^2 - J1(v)^2 (Born & Wolf
    # 8.5.2), between that of the inscribed and that of the circumscribed circle of the square crop.
    n, na, px = 25, 1.0, 60.0
    kw = dict(na=na, pixel_size_nm=px, oversample=3, **PUP)
    plane = np.asarray(pupil_psf_3d((3, n, n), normalize="plane", **kw), np.float64)
    stack = np.asarray(pupil_psf_3d((3, n, n), **kw), np.float64)
    np.testing.assert_allclose(plane / plane.sum(), stack, rtol=1e-4, atol=1e-9)  # same shape, another scale
    sums = plane.sum(axis=(1, 2))
    assert np.all(sums < 1.0) and sums[1] > max(sums[0], sums[2])  # defocused planes spill more light

    def ee(r):
        v = 2 * np.pi * na / 500.0 * r
        return 1.0 - special.j0(v) ** 2 - special.j1(v) ** 2

    # The pupil edge is smoothed over one k-grid cell, which keeps a little more light in the core
    # than the ideal disc (about 0.26 / R, R = pupil radius in k-cells = pad n px NA / wavelength):
    # the sums converge from above as the k-grid refines (measured 0.976, 0.961, 0.951 for pad 2,
    # 4, 8), into the closed-form bounds [0.936, 0.952].
    half = n * px / 2
    got = [float(np.asarray(pupil_psf_3d((1, n, n), normalize="plane", pad_factor=pad, **kw)).sum())
           for pad in (2, 4, 8)]
    assert got[0] > got[1] > got[2]
    assert ee(half) < got[2] < ee(half * math.sqrt(2))


# ============================================================== astigmatic model

AST = dict(sigma0_x_nm=130.0, sigma0_y_nm=115.0, gamma_nm=250.0, depth_nm=400.0)


def test_astigmatic_sigma_reference(rng):
    z = rng.uniform(-600, 600, 50)
    a_x, b_x, a_y, b_y = 0.2, 0.05, -0.1, 0.08
    sx, sy = astigmatic_sigma(z, **AST, a_x=a_x, b_x=b_x, a_y=a_y, b_y=b_y)
    tx, ty = (z - 250.0) / 400.0, (z + 250.0) / 400.0
    ref_x = 130.0 * np.sqrt(1 + tx**2 + a_x * tx**3 + b_x * tx**4)
    ref_y = 115.0 * np.sqrt(1 + ty**2 + a_y * ty**3 + b_y * ty**4)
    np.testing.assert_allclose(np.asarray(sx), ref_x, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(sy), ref_y, rtol=1e-6)


def test_astigmatic_sigma_foci():
    z = np.linspace(-500, 500, 1001)
    sx, sy = (np.asarray(s) for s in astigmatic_sigma(z, **AST))
    assert z[np.argmin(sx)] == 250.0 and z[np.argmin(sy)] == -250.0
    assert abs(sx.min() - 130.0) < 1e-4 and abs(sy.min() - 115.0) < 1e-4


@pytest.mark.parametrize("integrate_pixel", [True, False])
def test_astigmatic_psf_reference(integrate_pixel):
    shape, zs, off = (5, 9, 10), 200.0, (-50.0, 20.0, -35.0)
    psf = np.asarray(astigmatic_psf_3d(shape, pixel_size_nm=PIX, z_step_nm=zs, **AST, a_x=0.1, b_y=0.05,
                                       offset_nm=off, integrate_pixel=integrate_pixel))
    z = _coords(shape[0], zs) - off[0]
    tx, ty = (z - 250.0) / 400.0, (z + 250.0) / 400.0
    sx = 130.0 * np.sqrt(1 + tx**2 + 0.1 * tx**3)
    sy = 115.0 * np.sqrt(1 + ty**2 + 0.05 * ty**4)
    ref = np.stack([
        np.outer(_gauss_mass_ref(shape[1], PIX, sy[k], off[1], integrate_pixel),
                 _gauss_mass_ref(shape[2], PIX, sx[k], off[2], integrate_pixel))
        for k in range(shape[0])
    ])
    np.testing.assert_allclose(psf, ref / ref.sum(), rtol=1e-5, atol=1e-9)


def test_astigmatic_psf_shape_and_moments(x64):
    psf = np.asarray(astigmatic_psf_3d((5, 41, 41), pixel_size_nm=PIX, z_step_nm=250.0, **AST))
    assert abs(psf.sum() - 1.0) < 1e-12
    sx, sy = (np.asarray(s) for s in astigmatic_sigma(_coords(5, 250.0), **AST))
    for k in range(5):
        _, _, yy, xx, xy = _moments(psf[k])
        np.testing.assert_allclose([yy, xx], [(sy[k] / PIX) ** 2 + 1 / 12, (sx[k] / PIX) ** 2 + 1 / 12], rtol=1e-6)
    # plane at z = +gamma (k = 3) is in x focus: narrow in x, wide in y; the reverse at z = -gamma.
    assert _moments(psf[3])[3] < _moments(psf[3])[2] and _moments(psf[1])[2] < _moments(psf[1])[3]
    # Every plane holds (almost) the same mass: the stack is normalised as a whole.
    np.testing.assert_allclose(psf.sum(axis=(1, 2)), 0.2, rtol=1e-6)


@pytest.mark.parametrize("shape", [(4, 8, 8), (3, 9, 9)])
def test_astigmatic_centre(shape):
    psf = astigmatic_psf_3d(shape, pixel_size_nm=PIX, z_step_nm=200.0, sigma0_x_nm=120.0, sigma0_y_nm=120.0,
                            gamma_nm=0.0, depth_nm=300.0)
    assert _peak(psf) == tuple(n // 2 for n in shape)


def test_astigmatic_jit_vmap():
    f = jax.jit(lambda g: astigmatic_psf_3d((3, 7, 7), pixel_size_nm=PIX, z_step_nm=200.0, sigma0_x_nm=120.0,
                                            sigma0_y_nm=110.0, gamma_nm=g, depth_nm=350.0))
    gs = jnp.array([0.0, 150.0, 300.0])
    batch = jax.vmap(f)(gs)
    for i in range(3):
        eager = astigmatic_psf_3d((3, 7, 7), pixel_size_nm=PIX, z_step_nm=200.0, sigma0_x_nm=120.0,
                                  sigma0_y_nm=110.0, gamma_nm=float(gs[i]), depth_nm=350.0)
        np.testing.assert_allclose(np.asarray(batch[i]), np.asarray(eager), atol=1e-7)
    sx, sy = jax.vmap(lambda z: astigmatic_sigma(z, **AST))(jnp.array([-100.0, 0.0, 100.0]))
    assert sx.shape == (3,) and sy.shape == (3,)


def test_astigmatic_check_grads(x64):
    def f(s0x, s0y, gamma, depth, ax, bx, ay, by, off, pix, dz):
        return astigmatic_psf_3d((5, 9, 9), pixel_size_nm=pix, z_step_nm=dz, sigma0_x_nm=s0x, sigma0_y_nm=s0y,
                                 gamma_nm=gamma, depth_nm=depth, a_x=ax, b_x=bx, a_y=ay, b_y=by, offset_nm=off)

    check_grads(f, (130.0, 115.0, 250.0, 400.0, 0.1, 0.05, -0.1, 0.02, jnp.zeros(3), PIX, 200.0),
                order=1, modes=["rev"])
    check_grads(f, (130.0, 115.0, 250.0, 400.0, 0.1, 0.05, -0.1, 0.02, jnp.array([33.0, -12.0, 41.0]), PIX, 200.0),
                order=1, modes=["rev"])
    check_grads(lambda z, g: astigmatic_sigma(z, sigma0_x_nm=130.0, sigma0_y_nm=115.0, gamma_nm=g, depth_nm=400.0,
                                              a_x=0.1, b_y=0.03),
                (jnp.array([-300.0, 0.0, 250.0]), 250.0), order=1, modes=["rev"])


def test_astigmatic_bad_input():
    with pytest.raises(ValueError, match="depth_nm"):
        astigmatic_sigma(0.0, **{**AST, "depth_nm": 0.0})
    with pytest.raises(ValueError, match="sigma0_x_nm"):
        astigmatic_psf_3d((3, 5, 5), pixel_size_nm=PIX, z_step_nm=100.0, **{**AST, "sigma0_x_nm": -1.0})
    with pytest.raises(ValueError, match="a_x"):  # 1 + t^2 - 3 t^3 < 0 at t = 1
        astigmatic_sigma(650.0, **AST, a_x=-3.0)
    with pytest.raises(ValueError, match="a_y"):
        astigmatic_psf_3d((5, 5, 5), pixel_size_nm=PIX, z_step_nm=400.0, **AST, a_y=3.0, b_y=-1.0)
    with pytest.raises(ValueError, match="gamma_nm"):
        astigmatic_psf_3d((3, 5, 5), pixel_size_nm=PIX, z_step_nm=100.0, **{**AST, "gamma_nm": np.nan})
    with pytest.raises(ValueError, match="offset_nm"):
        astigmatic_psf_3d((3, 5, 5), pixel_size_nm=PIX, z_step_nm=100.0, **AST, offset_nm=(0.0, 0.0))
    with pytest.raises(ValueError, match="shape"):
        astigmatic_psf_3d((5, 5), pixel_size_nm=PIX, z_step_nm=100.0, **AST)
