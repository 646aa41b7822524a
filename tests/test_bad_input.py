"""Bad input over the public API: one table of (function, arguments, error, word).

Issue section 8: every bad input gives a ``ValueError``/``TypeError`` that names
the argument, never a silent NaN. Each row calls a public function of
``jaxsr`` with one bad argument and asserts the exception type and that the
message names that argument. The arrays are tiny and every row fails in the
input checks, before any heavy computation. A few regression tests below
cover values that used to give a silent NaN or a wrong silent result.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsr

NAN = float("nan")
IMG = np.ones((16, 16), np.float32)
IMG_NAN = IMG.copy()
IMG_NAN[3, 4] = NAN
PSF = np.full((3, 3), 1.0 / 9.0, np.float32)
PSF_NAN = PSF.copy()
PSF_NAN[1, 1] = NAN
KEY = jax.random.key(0)
SCMOS = jaxsr.camera_preset("scmos")
PROFILE = np.exp(-0.5 * ((np.arange(40.0) - 20.0) / 3.0) ** 2)
NOISE = np.random.default_rng(0).random((16, 16))
LINES = np.array([[[10.0, 10.0], [40.0, 10.0]], [[10.0, 20.0], [40.0, 20.0]]])

G2 = dict(sigma_nm=100.0, pixel_size_nm=65.0)
G3 = dict(sigma_nm=100.0, pixel_size_nm=65.0, z_step_nm=200.0)
AIRY = dict(na=1.4, wavelength_nm=520.0, pixel_size_nm=40.0)
PUPIL = dict(na=1.2, wavelength_nm=520.0, pixel_size_nm=65.0, z_step_nm=200.0, refractive_index=1.33)
ASTIG = dict(sigma0_x_nm=120.0, sigma0_y_nm=120.0, gamma_nm=200.0, depth_nm=400.0)
WPSF = dict(psf="airy", na=1.4, wavelength_nm=520.0, pixel_size_nm=65.0)


def row(fn, args, kwargs, exc, word, id):
    return pytest.param(fn, args, kwargs, exc, word, id=id)


F = jaxsr
CASES = [
    # ---------------------------------------------------------------- optics.psf
    row(F.gaussian_psf_2d, ((7, 7),), dict(G2, sigma_nm=0.0), ValueError, "sigma_nm", "gauss2d-sigma-zero"),
    row(F.gaussian_psf_2d, ((7, 7),), dict(G2, sigma_nm=NAN), ValueError, "sigma_nm", "gauss2d-sigma-nan"),
    row(F.gaussian_psf_2d, ((7, 7),), dict(G2, pixel_size_nm=-1.0), ValueError, "pixel_size_nm", "gauss2d-pixel-neg"),
    row(F.gaussian_psf_2d, ((7, 7, 7),), G2, ValueError, "shape", "gauss2d-shape-rank"),
    row(F.gaussian_psf_2d, ((7, 7),), dict(G2, sigma_nm="a"), TypeError, "sigma_nm", "gauss2d-sigma-str"),
    row(F.gaussian_psf_2d, ((7, 7),), dict(G2, offset_nm=(NAN, 0.0)), ValueError, "offset_nm", "gauss2d-offset-nan"),
    row(F.gaussian_psf_3d, ((3, 7, 7),), dict(G3, z_step_nm=0.0), ValueError, "z_step_nm", "gauss3d-zstep-zero"),
    row(F.airy_psf_2d, ((7, 7),), dict(AIRY, na=0.0), ValueError, "na", "airy-na-zero"),
    row(F.airy_psf_2d, ((7, 7),), dict(AIRY, na=NAN), ValueError, "na", "airy-na-nan"),
    row(F.airy_psf_2d, ((7, 7),), dict(AIRY, wavelength_nm=-520.0), ValueError, "wavelength_nm", "airy-wl-neg"),
    row(F.airy_psf_2d, ((7, 7),), dict(AIRY, pixel_size_nm=0.0), ValueError, "pixel_size_nm", "airy-pixel-zero"),
    row(F.airy_psf_2d, ((7, 7),), dict(AIRY, oversample=0), ValueError, "oversample", "airy-oversample"),
    row(F.pupil_psf_3d, ((3, 8, 8),), dict(PUPIL, na=1.4), ValueError, "refractive_index", "pupil-na-above-n"),
    row(F.pupil_psf_3d, ((3, 8, 8),), dict(PUPIL, na=0.0), ValueError, "na", "pupil-na-zero"),
    row(F.pupil_psf_3d, ((3, 8, 8),), dict(PUPIL, wavelength_nm=0.0), ValueError, "wavelength_nm", "pupil-wl-zero"),
    row(F.pupil_psf_3d, ((3, 8, 8),), dict(PUPIL, pixel_size_nm=-65.0), ValueError, "pixel_size_nm", "pupil-pixel-neg"),
    row(F.pupil_psf_3d, ((3, 8, 8),), dict(PUPIL, refractive_index=0.0), ValueError, "refractive_index", "pupil-n-zero"),
    row(F.pupil_psf_3d, ((3, 8, 8),), dict(PUPIL, zernike_rad=[0.0, NAN]), ValueError, "zernike_rad", "pupil-zern-nan"),
    row(F.pupil_psf_3d, ((8, 8),), PUPIL, ValueError, "shape", "pupil-shape-rank"),
    row(F.astigmatic_sigma, (0.0,), dict(ASTIG, depth_nm=0.0), ValueError, "depth_nm", "astig-depth-zero"),
    row(F.astigmatic_sigma, (NAN,), ASTIG, ValueError, "z_nm", "astig-z-nan"),
    row(F.astigmatic_psf_3d, ((3, 7, 7),), dict(ASTIG, pixel_size_nm=0.0, z_step_nm=100.0), ValueError,
        "pixel_size_nm", "astig3d-pixel-zero"),
    # ---------------------------------------------------------------- forward
    row(F.convolve, (IMG, PSF_NAN), {}, ValueError, "psf", "convolve-psf-nan"),
    row(F.convolve, (IMG_NAN, PSF), {}, ValueError, "image", "convolve-image-nan"),
    row(F.convolve, (IMG[:2, :2], PSF), {}, ValueError, "larger", "convolve-psf-larger"),
    row(F.convolve, (IMG, np.ones(3)), {}, ValueError, "psf", "convolve-psf-rank"),
    row(F.convolve, (IMG, np.ones((0, 3))), {}, ValueError, "psf", "convolve-psf-empty"),
    row(F.convolve, (np.ones(16), PSF), {}, ValueError, "image", "convolve-image-rank"),
    row(F.convolve, (IMG, PSF.astype(np.complex64)), {}, TypeError, "psf", "convolve-psf-complex"),
    row(F.convolve, (IMG, PSF), dict(boundary="wrap"), ValueError, "boundary", "convolve-boundary"),
    row(F.bin_image, (IMG_NAN,), dict(factor=2), ValueError, "image", "bin-nan"),
    row(F.bin_image, (IMG,), dict(factor=3), ValueError, "factor", "bin-not-divisible"),
    row(F.bin_image, (IMG,), dict(factor=2.0), TypeError, "factor", "bin-float-factor"),
    row(F.expected_image, (IMG, -PSF), {}, ValueError, "psf", "expected-psf-negative"),
    row(F.expected_image, (IMG, 0 * PSF), {}, ValueError, "psf", "expected-psf-zero-sum"),
    row(F.expected_image, (IMG, PSF_NAN), {}, ValueError, "psf", "expected-psf-nan"),
    row(F.expected_image, (IMG[:2, :2], PSF), {}, ValueError, "psf", "expected-psf-larger"),
    row(F.expected_image, (IMG_NAN, PSF), {}, ValueError, "obj", "expected-obj-nan"),
    row(F.expected_image, (np.ones(16), PSF), {}, ValueError, "obj", "expected-obj-rank"),
    row(F.expected_image, (-IMG, PSF), {}, ValueError, "obj", "expected-obj-negative"),
    row(F.expected_image, (IMG, PSF), dict(background_photons=NAN), ValueError, "background_photons",
        "expected-background-nan"),
    row(F.form_image, (KEY, IMG, PSF), dict(camera="scmos"), TypeError, "camera", "form-camera-str"),
    row(F.form_image, (KEY, IMG_NAN, PSF), {}, ValueError, "obj", "form-obj-nan"),
    row(F.poisson_noise, (KEY, -IMG), {}, ValueError, "rate", "poisson-negative"),
    row(F.poisson_noise, (KEY, IMG_NAN), {}, ValueError, "rate", "poisson-nan"),
    row(F.apply_camera, (KEY, IMG_NAN), dict(camera=SCMOS), ValueError, "photons", "camera-nan"),
    row(F.apply_camera, (KEY, IMG), dict(camera=SCMOS, differentiable="yes"), TypeError, "differentiable",
        "camera-differentiable-str"),
    row(F.expected_adu, (NAN,), dict(camera=SCMOS), ValueError, "photons", "expected-adu-nan"),
    row(F.adu_variance, (NAN,), dict(camera=SCMOS), ValueError, "photons", "adu-variance-nan"),
    row(F.photons_from_adu, (NAN,), dict(camera=SCMOS), ValueError, "adu", "photons-from-adu-nan"),
    row(F.camera_preset, ("ccd",), {}, ValueError, "name", "preset-unknown"),
    row(F.CameraModel, (), dict(qe=0.0), ValueError, "qe", "cameramodel-qe-zero"),
    row(F.CameraModel, (), dict(gain_e_per_adu=NAN), ValueError, "gain_e_per_adu", "cameramodel-gain-nan"),
    row(F.CameraModel, (), dict(bit_depth=100), ValueError, "bit_depth", "cameramodel-bit-depth"),
    # ---------------------------------------------------------------- simulate
    row(F.render_points, (np.array([[NAN, 0.0]]),), dict(shape=(4, 4), pixel_size_nm=10.0), ValueError,
        "points_nm", "render-points-nan"),
    row(F.render_points, (np.zeros((1, 2)),), dict(shape=(4, 4), pixel_size_nm=0.0), ValueError,
        "pixel_size_nm", "render-points-pixel-zero"),
    row(F.render_points, (np.zeros((1, 2)),), dict(shape=(4, 4), pixel_size_nm=1.0, weights=-1.0), ValueError,
        "weights", "render-points-weights-neg"),
    row(F.render_polyline, (np.zeros((1, 2)),), dict(shape=(4, 4), pixel_size_nm=1.0, photons_per_nm=1.0),
        ValueError, "points_nm", "render-polyline-one-vertex"),
    row(F.render_polyline, (np.zeros((2, 2)),), dict(shape=(4, 4), pixel_size_nm=NAN, photons_per_nm=1.0),
        ValueError, "pixel_size_nm", "render-polyline-pixel-nan"),
    row(F.filaments, (KEY,), dict(n_filaments=0, field_nm=(100.0, 100.0), length_nm=50.0), ValueError,
        "n_filaments", "filaments-n-zero"),
    row(F.filaments, (KEY,), dict(n_filaments=1, field_nm=(100.0, 100.0), length_nm="50"), TypeError,
        "length_nm", "filaments-length-str"),
    row(F.line_pairs, (), dict(separations_nm=(NAN,)), ValueError, "separations_nm", "line-pairs-nan"),
    row(F.line_pairs, (), dict(separations_nm="abc"), TypeError, "separations_nm", "line-pairs-str"),
    row(F.line_pairs, (), dict(separations_nm=[[1.0, 2.0], [3.0, 4.0]]), ValueError, "separations_nm",
        "line-pairs-2d"),
    row(F.bead_pairs, (), dict(separations_nm=()), ValueError, "separations_nm", "bead-pairs-empty"),
    row(F.ring, (), dict(diameter_nm=0.0), ValueError, "diameter_nm", "ring-diameter-zero"),
    row(F.ring, (), dict(centre_nm=5.0), TypeError, "centre_nm", "ring-centre-scalar"),
    row(F.ring, (), dict(centre_nm="12"), TypeError, "centre_nm", "ring-centre-str"),
    row(F.random_beads, (KEY,), dict(n=3, field_nm=(0.0, 1.0)), ValueError, "field_nm", "beads-field-zero"),
    row(F.widefield_psf, (), dict(WPSF, na=0.0), ValueError, "na", "wpsf-na-zero"),
    row(F.widefield_psf, (), dict(WPSF, na="1.4"), TypeError, "na", "wpsf-na-str"),
    row(F.widefield_psf, (), dict(WPSF, wavelength_nm=NAN), ValueError, "wavelength_nm", "wpsf-wl-nan"),
    row(F.widefield_psf, (), dict(WPSF, pixel_size_nm=[65.0, 65.0]), TypeError, "pixel_size_nm",
        "wpsf-pixel-list"),
    row(F.widefield_psf, (), dict(WPSF, max_size=1), ValueError, "max_size", "wpsf-max-size-small"),
    row(F.widefield_psf, (), dict(WPSF, max_size=7.5), TypeError, "max_size", "wpsf-max-size-float"),
    row(F.simulate_widefield, (KEY,), dict(na=0.0), ValueError, "na", "sim-na-zero"),
    row(F.simulate_widefield, (KEY,), dict(wavelength_nm=-1.0), ValueError, "wavelength_nm", "sim-wl-neg"),
    row(F.simulate_widefield, (KEY,), dict(pixel_size_nm=NAN), ValueError, "pixel_size_nm", "sim-pixel-nan"),
    row(F.simulate_widefield, (KEY,), dict(background_photons=NAN), ValueError, "background_photons",
        "sim-background-nan"),
    row(F.simulate_widefield, (KEY,), dict(background_photons=IMG), TypeError, "background_photons",
        "sim-background-array"),
    row(F.simulate_widefield, (KEY,), dict(structure="beads", separations_nm=()), ValueError, "separations_nm",
        "sim-beads-no-separations"),
    row(F.simulate_widefield, (KEY,), dict(camera="ccd"), ValueError, "camera", "sim-camera-unknown"),
    # ---------------------------------------------------------------- metrics
    row(F.psnr, (IMG_NAN, IMG), dict(data_range=1.0), ValueError, "image", "psnr-nan"),
    row(F.psnr, (IMG, IMG), dict(data_range=0.0), ValueError, "data_range", "psnr-range-zero"),
    row(F.psnr, (np.ones(5), np.ones(5)), dict(data_range=1.0), ValueError, "image", "psnr-rank"),
    row(F.ssim, (IMG, IMG_NAN), dict(data_range=1.0), ValueError, "reference", "ssim-nan"),
    row(F.ssim, (IMG, IMG), dict(data_range=1.0, sigma=0.0), ValueError, "sigma", "ssim-sigma-zero"),
    row(F.ssim, (IMG, IMG), dict(data_range=1.0, k1=NAN), ValueError, "k1", "ssim-k1-nan"),
    row(F.ssim, (IMG, IMG), dict(data_range=1.0, k2=0.0), ValueError, "k2", "ssim-k2-zero"),
    row(F.ssim, (IMG, IMG), dict(data_range=1.0, k1=np.ones(3)), ValueError, "k1", "ssim-k1-array"),
    row(F.fwhm, (PROFILE + 1j,), {}, TypeError, "profile", "fwhm-complex"),
    row(F.fwhm, (PROFILE,), dict(pixel_size_nm="10"), TypeError, "pixel_size_nm", "fwhm-pixel-str"),
    row(F.fwhm, (PROFILE,), dict(pixel_size_nm=0.0), ValueError, "pixel_size_nm", "fwhm-pixel-zero"),
    row(F.two_peak_separation, (PROFILE,), dict(min_dip="a"), TypeError, "min_dip", "two-peak-min-dip-str"),
    row(F.two_peak_separation, (PROFILE,), dict(min_dip=1.0), ValueError, "min_dip", "two-peak-min-dip-one"),
    row(F.line_profile, (IMG_NAN, (0, 0), (4, 4)), {}, ValueError, "image", "line-profile-nan"),
    row(F.line_profile, (IMG + 1j, (0, 0), (4, 4)), {}, TypeError, "image", "line-profile-complex"),
    row(F.line_profile, (IMG, ("a", 0), (4, 4)), {}, TypeError, "start", "line-profile-start-str"),
    row(F.resolve_line_pairs, (IMG,), dict(lines_nm=LINES, pixel_size_nm=0.0), ValueError, "pixel_size_nm",
        "line-pairs-pixel-zero"),
    row(F.resolve_line_pairs, (np.ones((50, 50)), LINES * NAN), dict(pixel_size_nm=1.0), ValueError, "lines_nm",
        "line-pairs-lines-nan"),
    row(F.resolve_line_pairs, (np.ones((50, 50)), LINES), dict(pixel_size_nm=1.0, min_dip=2.0, margin_nm=5.0),
        ValueError, "min_dip", "line-pairs-min-dip"),
    row(F.frc, (IMG_NAN, IMG), dict(pixel_size_nm=1.0), ValueError, "image1", "frc-nan"),
    row(F.frc, (NOISE, NOISE), dict(pixel_size_nm="1"), TypeError, "pixel_size_nm", "frc-pixel-str"),
    row(F.frc, (NOISE, NOISE), dict(pixel_size_nm=1.0, apodize="no"), TypeError, "apodize", "frc-apodize-str"),
    row(F.frc_single, (NOISE + 1j,), dict(pixel_size_nm=1.0), TypeError, "image", "frc-single-complex"),
    row(F.decorrelation, (NOISE,), dict(pixel_size_nm=NAN), ValueError, "pixel_size_nm", "decorrelation-pixel-nan"),
    row(F.decorrelation, (NOISE + 1j,), dict(pixel_size_nm=1.0), TypeError, "image", "decorrelation-complex"),
]


@pytest.mark.parametrize("fn,args,kwargs,exc,word", CASES)
def test_bad_input_names_the_argument(fn, args, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        fn(*args, **kwargs)


# ------------------------------------------------------------------ silent NaN / wrong result regressions
@pytest.mark.parametrize("integrate", [True, False])
@pytest.mark.parametrize("sigma", [1e-30, 1e-20])
def test_gaussian_psf_tiny_sigma_is_a_finite_delta(sigma, integrate):
    # sigma many orders below the pixel used to give inf - inf = NaN everywhere.
    psf = np.asarray(jaxsr.gaussian_psf_2d((5, 5), sigma_nm=sigma, pixel_size_nm=100.0, integrate_pixel=integrate))
    assert np.all(np.isfinite(psf))
    assert psf[2, 2] == pytest.approx(1.0, abs=1e-6)
    psf3 = np.asarray(jaxsr.gaussian_psf_3d((3, 5, 5), sigma_nm=sigma, pixel_size_nm=100.0, z_step_nm=100.0))
    assert psf3[1, 2, 2] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("integrate", [True, False])
def test_gaussian_psf_degenerate_geometry_stays_finite(integrate):
    # An emitter between pixel centres with a vanishing width, or absurdly far
    # off the grid, used to give -inf log masses on a whole axis (NaN after the
    # softmax). The result is now finite and still sums to one.
    for offset in ((50.0, 0.0), (1e25, 0.0)):
        psf = np.asarray(jaxsr.gaussian_psf_2d((5, 5), sigma_nm=1e-30, pixel_size_nm=100.0, offset_nm=offset,
                                               integrate_pixel=integrate))
        assert np.all(np.isfinite(psf)) and np.all(psf >= 0)
        assert psf.sum() == pytest.approx(1.0, abs=1e-5)


def test_psnr_identical_images_inf_with_zero_gradient():
    ref = jnp.asarray(NOISE, jnp.float32)
    assert float(jaxsr.psnr(ref, ref, data_range=1.0)) == np.inf
    grad = jax.grad(lambda a: jaxsr.psnr(a, ref, data_range=1.0))(ref)
    assert np.all(np.asarray(grad) == 0.0)
    # Away from equality the gradient is unchanged: d/da of 10 log10(1 / mse).
    a = ref + 0.1 * jnp.asarray(np.random.default_rng(1).standard_normal((16, 16)), jnp.float32)
    g = np.asarray(jax.grad(lambda x: jaxsr.psnr(x, ref, data_range=1.0))(a), np.float64)
    d = np.asarray(a, np.float64) - np.asarray(ref, np.float64)
    expected = -10.0 / np.log(10.0) * 2.0 * d / np.sum(d**2)
    np.testing.assert_allclose(g, expected, rtol=1e-3, atol=1e-6)


def test_resolve_line_pairs_bad_min_dip_is_not_swallowed():
    # Used to be caught per pair and reported as "not resolved".
    with pytest.raises(ValueError, match="min_dip"):
        jaxsr.resolve_line_pairs(np.ones((50, 50)), LINES, pixel_size_nm=1.0, min_dip=-0.5, margin_nm=5.0)


def test_convolve_accepts_any_finite_real_kernel():
    # Negative (difference) kernels are allowed by convolve, unlike expected_image.
    img = jnp.zeros((8, 8)).at[4, 4].set(1.0)
    kernel = jnp.array([[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    out = np.asarray(jaxsr.convolve(img, kernel))
    assert out[4, 3] == pytest.approx(-1.0) and out[4, 5] == pytest.approx(1.0)


def test_nan_propagates_through_special_functions():
    # A NaN argument must give NaN, never a plausible number.
    import jax.numpy as jnp

    from jaxsr.optics import bessel_j0, bessel_j1, zernike

    x = jnp.asarray([jnp.nan, 1.0])
    assert np.isnan(np.asarray(bessel_j0(x))[0]) and np.isfinite(np.asarray(bessel_j0(x))[1])
    assert np.isnan(np.asarray(bessel_j1(x))[0])
    assert np.isnan(float(zernike(4, jnp.nan, 0.0)))
    assert float(zernike(4, 2.0, 0.0)) == 0.0


@pytest.mark.parametrize("value", ["1.0", "abc", 1 + 2j])
def test_validate_rejects_non_real(value):
    from jaxsr._validate import check_finite, check_nonnegative, check_positive

    for check in (check_positive, check_finite, check_nonnegative):
        with pytest.raises(TypeError, match="pixel_size_nm"):
            check(value, "pixel_size_nm")


@pytest.mark.parametrize("shape", [(9.5, 9), (True, 9), ("9", 9), (9, None)])
def test_shape_is_never_truncated(shape):
    from jaxsr.optics import gaussian_psf_2d

    with pytest.raises(TypeError, match="shape"):
        gaussian_psf_2d(shape, sigma_nm=100.0, pixel_size_nm=50.0)


def test_shape_accepts_integral_floats_and_numpy_ints():
    from jaxsr.optics import gaussian_psf_2d

    a = gaussian_psf_2d((np.int64(9), 9.0), sigma_nm=100.0, pixel_size_nm=50.0)
    assert a.shape == (9, 9)
