"""jaxsr.smlm.simulate with psf="pupil": the scalar pupil PSF (Zernike aberrations) in SMLM movies.

References used here, independent of jaxsr: the pixel-integrated Airy pattern and its encircled
energy ``1 - J0(v)^2 - J1(v)^2`` (Born & Wolf, Principles of Optics, 8.5.2) from scipy.special, the
Gaussian approximation ``sigma = 0.21 wavelength / NA`` (Zhang et al., Appl. Opt. 46, 1819 (2007)),
and scipy.ndimage's centre of mass.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import ndimage, special

from jaxsr.smlm import render_emitters, simulate_smlm

PIXEL = 100.0
PUP = {"na": 1.4, "wavelength_nm": 670.0, "refractive_index": 1.518}


def _airy_pixels(shape, y_nm, x_nm, *, na, wavelength_nm, pixel_nm, sub=15):
    """Unit-light in-focus Airy pattern integrated over pixels (midpoint rule, sub x sub per pixel).

    Intensity of a clear circular pupil of radius kc = NA / wavelength, normalised to unit light:
    ``pi kc^2 (2 J1(v) / v)^2`` per nm^2 with ``v = 2 pi kc r``.
    """
    kc = na / wavelength_nm
    ny, nx = shape
    yy = (np.arange(ny * sub) + 0.5) / sub * pixel_nm - y_nm
    xx = (np.arange(nx * sub) + 0.5) / sub * pixel_nm - x_nm
    v = 2 * np.pi * kc * np.maximum(np.hypot(yy[:, None], xx[None, :]), 1e-9)
    density = np.pi * kc**2 * (2 * special.j1(v) / v) ** 2
    return density.reshape(ny, sub, nx, sub).mean(axis=(1, 3)) * pixel_nm**2


def _encircled(r_nm, *, na=1.4, wavelength_nm=670.0):
    v = 2 * np.pi * na / wavelength_nm * r_nm
    return 1.0 - special.j0(v) ** 2 - special.j1(v) ** 2


def _second_moments(img):
    img = np.asarray(img, np.float64) / np.sum(img)
    y, x = np.mgrid[: img.shape[0], : img.shape[1]]
    cy, cx = (img * y).sum(), (img * x).sum()
    return (img * (y - cy) ** 2).sum(), (img * (x - cx) ** 2).sum()


def _render(pos, photons=(1.0,), shape=(31, 31), **pupil):
    return np.asarray(render_emitters(jnp.asarray(pos, jnp.float32), jnp.asarray(photons, jnp.float32), shape=shape,
                                      pixel_size_nm=PIXEL, psf="pupil", pupil={**PUP, **pupil}))


# ----------------------------------------------------------------------------- 1. references
def test_in_focus_pupil_psf_is_the_pixel_integrated_airy_pattern():
    y, x = 1537.0, 1468.0  # sub-pixel, off the pixel centre
    ref = _airy_pixels((31, 31), y, x, na=1.4, wavelength_nm=670.0, pixel_nm=PIXEL)
    errs = {pad: np.abs(_render([[y, x, 0.0]], pad_factor=pad) - ref).max() / ref.max() for pad in (2, 4)}
    # The pupil edge is smoothed over one k-grid cell (jaxsr.optics.pupil_psf_3d), which lifts the
    # peak by about 0.26 / R, R = pad * patch * pixel * NA / wavelength k-cells (13 at the defaults);
    # measured 2.8 % and 1.6 % of the peak.
    assert errs[2] < 0.035 and errs[4] < 0.02 and errs[4] < errs[2]


def test_low_na_large_pixel_pupil_psf_is_close_to_the_gaussian_approximation():
    na, wl, px = 0.7, 600.0, 160.0
    pos = jnp.array([[12.3 * px, 12.6 * px, 0.0]])
    pupil = np.asarray(render_emitters(pos, jnp.ones(1), shape=(25, 25), pixel_size_nm=px, psf="pupil",
                                       pupil={"na": na, "wavelength_nm": wl, "refractive_index": 1.0}))
    gauss = np.asarray(render_emitters(pos[:, :2], jnp.ones(1), shape=(25, 25), pixel_size_nm=px,
                                       sigma_nm=0.21 * wl / na))
    # measured 7.4 % of the peak (the Gaussian misses the Airy rings)
    assert np.abs(pupil / pupil.sum() - gauss).max() < 0.09 * gauss.max()
    assert np.unravel_index(pupil.argmax(), pupil.shape) == np.unravel_index(gauss.argmax(), gauss.shape)


def test_photons_are_the_light_of_an_infinite_field_and_the_patch_keeps_the_encircled_energy():
    # Frame larger than the patch: the frame holds exactly the patch, whose in-focus light lies
    # between the Airy encircled energy of its inscribed and of its circumscribed circle.
    pos = [[3050.0, 3050.0, 0.0]]
    kept = {}
    for patch in (21, 41):
        kept[patch] = float(_render(pos, [1.0], shape=(61, 61), patch_px=patch, pad_factor=4).sum())
        half = patch * PIXEL / 2
        assert _encircled(half) < kept[patch] < _encircled(half * math.sqrt(2)) + 0.012, (patch, kept[patch])
    assert kept[21] < kept[41] < 1.0
    # Linear in photons over frames and emitters: frame sums are photons @ per-emitter light.
    pos2 = jnp.array([[1234.0, 2345.0, -200.0], [3000.0, 1000.0, 150.0]])
    ph = jnp.array([[1000.0, 0.0], [500.0, 700.0], [0.0, 0.0]])
    frames = np.asarray(render_emitters(pos2, ph, shape=(48, 40), pixel_size_nm=PIXEL, psf="pupil", pupil=PUP))
    single = [float(np.asarray(render_emitters(pos2[i:i + 1], jnp.ones(1), shape=(48, 40), pixel_size_nm=PIXEL,
                                               psf="pupil", pupil=PUP)).sum()) for i in range(2)]
    np.testing.assert_allclose(frames.sum(axis=(1, 2)), np.asarray(ph) @ np.asarray(single), rtol=1e-4)
    assert frames[2].max() == 0.0


# ----------------------------------------------------------------------------- symmetry, aberrations
def test_aberration_free_psf_is_centred_on_the_emitter():
    # Mirror symmetry: an emitter at +d from its pixel centre gives the mirror image of one at -d.
    c = 15.5 * PIXEL
    a = _render([[c + 23.0, c - 41.0, 120.0]])
    b = _render([[c - 23.0, c + 41.0, 120.0]])
    np.testing.assert_allclose(a, b[::-1, ::-1], atol=2e-6 * a.max())
    # Centroid (scipy) at the emitter: the patch is centred on the emitter's pixel, not on the emitter,
    # so its truncated tails pull the centroid by ~1.4 % of the sub-pixel offset (< 1 nm).
    for dy, dx in ((20.0, -35.0), (-45.0, 10.0), (49.0, 49.0), (0.0, 0.0)):
        img = _render([[c + dy, c + dx, 0.0]])
        cy, cx = ndimage.center_of_mass(img)
        assert abs((cy + 0.5) * PIXEL - (c + dy)) < 1.0 and abs((cx + 0.5) * PIXEL - (c + dx)) < 1.0


def test_astigmatism_elongates_the_spot_with_a_sign_flip_across_focus():
    c = 15.5 * PIXEL
    vy = {}
    for z in (-400.0, 0.0, 400.0):
        vy[z] = _second_moments(_render([[c, c, z]], zernike_rad={6: 1.0}))  # vertical astigmatism
    assert vy[-400.0][0] > 2 * vy[-400.0][1]  # below focus: long in y
    assert vy[400.0][1] > 2 * vy[400.0][0]  # above focus: long in x
    assert vy[0.0][0] == pytest.approx(vy[0.0][1], rel=1e-3)  # round in focus
    np.testing.assert_allclose(vy[-400.0], vy[400.0][::-1], rtol=1e-3)  # mirror images across focus
    # Without aberration, defocus keeps the spot round; the array form of zernike_rad equals the dict.
    sy, sx = _second_moments(_render([[c, c, 400.0]]))
    assert sy == pytest.approx(sx, rel=1e-3)
    np.testing.assert_allclose(_render([[c, c, 400.0]], zernike_rad=[0, 0, 0, 0, 0, 1.0]),
                               _render([[c, c, 400.0]], zernike_rad={6: 1.0}), rtol=1e-5, atol=1e-9)


# ----------------------------------------------------------------------------- 2. transforms
def test_pupil_render_is_the_same_under_jit_and_vmap():
    pos = jnp.array([[[700.0, 820.0, 0.0], [1300.0, 400.0, 200.0]], [[450.0, 1250.0, -150.0], [900.0, 900.0, 50.0]]])
    ph = jnp.array([[800.0, 300.0], [0.0, 1000.0]])
    kw = dict(shape=(18, 17), pixel_size_nm=PIXEL, psf="pupil", pupil={**PUP, "patch_px": 11})
    eager = np.stack([np.asarray(render_emitters(p, ph, **kw)) for p in pos])
    jitted = jax.jit(lambda p, q: render_emitters(p, q, **kw))
    np.testing.assert_allclose(np.asarray(jitted(pos[0], ph)), eager[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(jax.vmap(lambda p: render_emitters(p, ph, **kw))(pos)), eager,
                               rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------------------- 3. gradients
def test_pupil_render_gradients(x64):
    pos = jnp.array([[330.0, 370.0, 100.0]], jnp.float64)

    def f(pos, ph, na, astig):
        return render_emitters(pos, ph, shape=(7, 7), pixel_size_nm=PIXEL, psf="pupil",
                               pupil={"na": na, "zernike_rad": {6: astig}, "patch_px": 5, "oversample": 1})

    def g(theta):  # every parameter O(1): position in 100 nm, photons in 100
        return f(100.0 * theta[None, :3], 100.0 * theta[3:4], theta[4], theta[5])

    theta = jnp.array([3.3, 3.7, 1.0, 1.0, 1.3, 0.3], jnp.float64)  # emitter off its pixel centre
    # jit-compiled: one compile instead of one per primitive; the same function and derivative rules
    # (the dtype check runs the same compiled function that check_grads evaluates).
    g_jit = jax.jit(g)
    assert g_jit(theta).dtype == jnp.float64
    check_grads(g_jit, (theta,), order=1, modes=["rev"])
    # finite (zero) gradient at zero photons
    grad = jax.jit(jax.grad(lambda p: f(p, jnp.zeros(1), 1.3, 0.3).sum()))(pos)
    assert np.all(np.isfinite(np.asarray(grad)))


# ----------------------------------------------------------------------------- 4. edge cases, bad input
def test_emitters_off_the_frame_and_at_its_edge():
    img = _render([[-2000.0, 500.0, 0.0], [500.0, 9000.0, 0.0]], photons=[1000.0, 1000.0], shape=(16, 16))
    assert np.all(img == 0.0)
    corner = _render([[20.0, 30.0, 0.0]], photons=[1000.0], shape=(16, 16))
    assert np.all(np.isfinite(corner)) and 150.0 < corner.sum() < 500.0  # about a quarter of the light


def test_simulate_smlm_with_the_pupil_psf_is_deterministic_from_the_key():
    pos = jnp.array([[800.0, 900.0, -100.0], [1900.0, 2100.0, 250.0], [2600.0, 700.0, 0.0]])
    kw = dict(n_frames=12, shape=(32, 32), psf="pupil", pupil={"zernike_rad": {6: 0.5, 11: 0.3}}, p_on=0.5,
              photons=1500.0, photon_cv=0.0, background=5.0)
    a = simulate_smlm(jax.random.key(3), pos, **kw)
    b = simulate_smlm(jax.random.key(3), pos, **kw)
    c = simulate_smlm(jax.random.key(4), pos, **kw)
    np.testing.assert_array_equal(np.asarray(a.frames), np.asarray(b.frames))
    assert not np.array_equal(np.asarray(a.frames), np.asarray(c.frames))
    ph = np.zeros((12, 3), np.float32)
    ph[a.truth["frame"], a.truth["id"]] = a.truth["photons"]
    ref = np.asarray(render_emitters(pos, ph, shape=(32, 32), pixel_size_nm=100.0, psf="pupil",
                                     pupil={"zernike_rad": {6: 0.5, 11: 0.3}})) + 5.0
    np.testing.assert_allclose(np.asarray(a.expected), ref, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(np.unique(a.truth["z_nm"]), np.unique(np.asarray(pos[:, 2])[a.truth["id"]]))


@pytest.mark.parametrize("pupil, word", [
    ({"zernike_rad": {0: 1.0}}, "Zernike index 0"),
    ({"zernike_rad": {"astigmatism": 1.0}}, "Zernike index"),
    ({"zernike_rad": {-3: 1.0}}, "Zernike index"),
    ({"zernike_rad": {6: float("nan")}}, "zernike_rad"),
    ({"zernike_rad": np.zeros((2, 3))}, "zernike_rad"),
    ({"na": -1.0}, "'na'"),
    ({"na": 1.6}, "'na'"),
    ({"na": 1.2, "refractive_index": 1.0}, "refractive_index"),
    ({"wavelength_nm": 0.0}, "wavelength_nm"),
    ({"NA": 1.4}, "unknown option 'NA'"),
    ({"patch_px": 20}, "patch_px"),
    ({"patch_px": 21.0}, "patch_px"),
    ({"oversample": 1, "na": 1.45, "wavelength_nm": 250.0}, "oversample"),
    ({"defocus_nm": float("inf")}, "defocus_nm"),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_pupil_bad_input(pupil, word):
    for call in (lambda: render_emitters(jnp.ones((1, 3)), jnp.ones(1), shape=(8, 8), pixel_size_nm=PIXEL,
                                         psf="pupil", pupil=pupil),
                 lambda: simulate_smlm(jax.random.key(0), jnp.ones((1, 3)), n_frames=2, shape=(8, 8), psf="pupil",
                                       pupil=pupil)):
        with pytest.raises(ValueError, match="pupil") as err:
            call()
        assert word in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(TypeError, match="pupil"):
        render_emitters(jnp.ones((1, 3)), jnp.ones(1), shape=(8, 8), pixel_size_nm=PIXEL, psf="pupil", pupil=1.4)
