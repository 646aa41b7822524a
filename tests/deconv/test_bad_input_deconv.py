"""Bad input across the deconvolution API (issue 3, section 7): one-line errors, never a NaN image.

One parametrized table (function, args, kwargs, exception type, a word of the
message), plus the documented non-error behaviours: integer images become
float32, negative pixels are clipped to zero, a PSF larger than the image is
cropped with a UserWarning.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxsr.cli.main import main as cli_main
from jaxsr.deconv import (
    bicubic_upsample,
    clid,
    clid_psf,
    fourier_upsample,
    lanczos_upsample,
    resample_psf,
    richardson_lucy,
    series_average,
    series_median,
    sparse_deconvolution,
    sparse_hessian_reconstruction,
    three_s_denoise,
)
from jaxsr.optics import clid_bessel_psf
from jaxsr.simulate import simulate_rsfp_series

_R = np.random.default_rng(3)
IMG = (_R.random((8, 8)) * 10 + 1).astype(np.float32)
VOL = (_R.random((4, 8, 8)) * 10).astype(np.float32)
PSF = np.full((3, 3), 1 / 9, np.float32)
PSF3 = np.full((3, 3, 3), 1 / 27, np.float32)
NAN_IMG = IMG.copy()
NAN_IMG[2, 2] = np.nan
NAN_PSF = PSF.copy()
NAN_PSF[1, 1] = np.nan
ZERO_PSF = np.zeros((3, 3), np.float32)
ON = VOL + 1.0
OFF = VOL * 0.5
OBJ = np.zeros((9, 9), np.float32)
OBJ[4, 4] = 1.0
KEY = jax.random.key(0)
OPT = dict(na=1.4, wavelength_nm=520.0, pixel_size_nm=130.0)

CASES = [
    # richardson_lucy
    ("rl 2D image, 3D psf", richardson_lucy, (IMG, PSF3), {}, ValueError, "psf"),
    ("rl nan psf", richardson_lucy, (IMG, NAN_PSF), {}, ValueError, "psf"),
    ("rl zero-sum psf", richardson_lucy, (IMG, ZERO_PSF), {}, ValueError, "sum"),
    ("rl nan image", richardson_lucy, (NAN_IMG, PSF), {}, ValueError, "image"),
    ("rl num_iter 0", richardson_lucy, (IMG, PSF), {"num_iter": 0}, ValueError, "num_iter"),
    ("rl num_iter float", richardson_lucy, (IMG, PSF), {"num_iter": 2.0}, TypeError, "num_iter"),
    ("rl num_iter str", richardson_lucy, (IMG, PSF), {"num_iter": "2"}, TypeError, "num_iter"),
    ("rl num_iter bool", richardson_lucy, (IMG, PSF), {"num_iter": True}, TypeError, "num_iter"),
    ("rl complex image", richardson_lucy, (IMG + 1j, PSF), {}, TypeError, "image"),
    ("rl str image", richardson_lucy, ("abc", PSF), {}, TypeError, "image"),
    ("rl empty image", richardson_lucy, (np.zeros((0, 8), np.float32), PSF), {}, ValueError, "image"),
    ("rl nan background", richardson_lucy, (IMG, PSF), {"background": np.nan}, ValueError, "background"),
    ("rl inf background", richardson_lucy, (IMG, PSF), {"background": np.inf}, ValueError, "background"),
    ("rl str background", richardson_lucy, (IMG, PSF), {"background": "a"}, TypeError, "background"),
    ("rl bad psf_shape", richardson_lucy, (IMG, lambda s: np.ones(s)), {"psf_shape": "ab"}, TypeError, "psf_shape"),
    # upsampling
    ("lanczos factor 0", lanczos_upsample, (IMG, 0), {}, ValueError, "factor"),
    ("lanczos factor float", lanczos_upsample, (IMG, 2.0), {}, TypeError, "factor"),
    ("lanczos huge factor", lanczos_upsample, (IMG, 100_000), {}, ValueError, "factor"),
    ("bicubic huge factor", bicubic_upsample, (IMG, 100_000), {}, ValueError, "factor"),
    ("fourier huge factor", fourier_upsample, (IMG, 100_000), {}, ValueError, "factor"),
    ("lanczos empty", lanczos_upsample, (np.zeros((0, 8)), 2), {}, ValueError, "image"),
    ("fourier empty", fourier_upsample, (np.zeros((8, 0)), 2), {}, ValueError, "image"),
    ("lanczos nan", lanczos_upsample, (NAN_IMG, 2), {}, ValueError, "image"),
    # 3S
    ("3s shapes differ", three_s_denoise, (ON, OFF[:3]), {}, ValueError, "off_frames"),
    ("3s nan", three_s_denoise, (ON, OFF * np.nan), {}, ValueError, "off_frames"),
    ("3s 2D", three_s_denoise, (ON[0], OFF[0]), {}, ValueError, "on_frames"),
    ("3s empty frames", three_s_denoise, (ON[:, :0], OFF[:, :0]), {}, ValueError, "empty"),
    ("avg empty", series_average, (ON[:0],), {}, ValueError, "frame"),
    ("median empty frames", series_median, (ON[:, :, :0],), {}, ValueError, "empty"),
    # clid / clid_psf
    ("clid upsample 0", clid, (IMG, PSF), {"upsample": 0}, ValueError, "upsample"),
    ("clid upsample str", clid, (IMG, PSF), {"upsample": "3"}, TypeError, "upsample"),
    ("clid huge upsample", clid, (IMG, PSF), {"upsample": 100_000}, ValueError, "upsample"),
    ("clid 3D psf", clid, (IMG, PSF3), {}, ValueError, "psf"),
    ("clid nan image", clid, (NAN_IMG, PSF), {}, ValueError, "image"),
    ("clid empty image", clid, (np.zeros((0, 8)), PSF), {}, ValueError, "image"),
    ("clid nan background", clid, (IMG, PSF), {"background": np.nan}, ValueError, "background"),
    ("clid_psf array na", clid_psf, ("airy",), {**OPT, "na": np.array([1.4, 1.2])}, ValueError, "na"),
    ("clid_psf tiny fine pixel", clid_psf, ("airy",), {**OPT, "upsample": 100_000}, ValueError, "upsample"),
    ("clid_psf upsample 0", clid_psf, ("airy",), {**OPT, "upsample": 0}, ValueError, "upsample"),
    # clid_bessel_psf
    ("bessel na 0", clid_bessel_psf, ((9, 9),), {**OPT, "na": 0.0, "pixel_size_nm": 43.0}, ValueError, "na"),
    ("bessel na str", clid_bessel_psf, ((9, 9),), {**OPT, "na": "x", "pixel_size_nm": 43.0}, TypeError, "na"),
    ("bessel na complex", clid_bessel_psf, ((9, 9),), {**OPT, "na": 1j, "pixel_size_nm": 43.0}, TypeError, "na"),
    ("bessel pixel too big", clid_bessel_psf, ((9, 9),), {**OPT, "pixel_size_nm": 430.0}, ValueError, "pixel_size_nm"),
    # resample_psf
    ("resample str pixel", resample_psf, (PSF,), {"psf_pixel_size_nm": "20", "pixel_size_nm": 60.0}, TypeError,
     "psf_pixel_size_nm"),
    ("resample bool pixel", resample_psf, (PSF,), {"psf_pixel_size_nm": True, "pixel_size_nm": 60.0}, TypeError,
     "psf_pixel_size_nm"),
    ("resample tiny pixel", resample_psf, (PSF,), {"psf_pixel_size_nm": 20.0, "pixel_size_nm": 1e-6}, ValueError,
     "pixel_size_nm"),
    ("resample nan psf", resample_psf, (NAN_PSF,), {"psf_pixel_size_nm": 20.0, "pixel_size_nm": 60.0}, ValueError,
     "psf"),
    # sparse
    ("sparse 2D image, 3D psf", sparse_deconvolution, (IMG, PSF3), {}, ValueError, "psf"),
    ("sparse zero psf", sparse_deconvolution, (IMG, ZERO_PSF), {}, ValueError, "psf"),
    ("sparse empty", sparse_deconvolution, (np.zeros((0, 8)), PSF), {}, ValueError, "image"),
    ("sparse huge upsample", sparse_deconvolution, (IMG, PSF), {"upsample": 100_000}, ValueError, "upsample"),
    ("sparse nan background", sparse_deconvolution, (IMG, PSF), {"background": np.nan}, ValueError, "background"),
    ("hessian empty", sparse_hessian_reconstruction, (np.zeros((8, 0)),), {}, ValueError, "image"),
    # simulate_rsfp_series
    ("rsfp int key", simulate_rsfp_series, (0, OBJ, PSF), {}, TypeError, "key"),
    ("rsfp str key", simulate_rsfp_series, ("k", OBJ, PSF), {}, TypeError, "key"),
    ("rsfp empty obj", simulate_rsfp_series, (KEY, np.zeros((0, 4)), np.ones((1, 1))), {}, ValueError, "obj"),
    ("rsfp nan psf", simulate_rsfp_series, (KEY, OBJ, NAN_PSF), {}, ValueError, "psf"),
    ("rsfp zero obj", simulate_rsfp_series, (KEY, OBJ * 0, PSF), {}, ValueError, "obj"),
    ("rsfp inf lam", simulate_rsfp_series, (KEY, OBJ, PSF), {"poisson_lam": np.inf}, ValueError, "poisson_lam"),
]


@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "error", "word"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_bad_input_is_a_one_line_error(fn, args, kwargs, error, word):
    kwargs = {"num_iter": 2, **kwargs} if fn in (richardson_lucy, clid, sparse_deconvolution) else kwargs
    with pytest.raises(error, match=word) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_huge_poisson_rate_samples_without_a_giant_table():
    # lam = 1e9 would need a CDF table of ~2**30 entries (it used to exhaust memory).
    s = simulate_rsfp_series(KEY, OBJ, PSF, n_cycles=2, poisson_lam=1e9, gaussian_std=0.0, background_level=0.0)
    noise = np.asarray(s.off)
    assert np.all(np.isfinite(noise))
    assert abs(noise.mean() / 1e9 - 1.0) < 1e-3


@pytest.mark.parametrize(
    "fn", [
        lambda x: richardson_lucy(x, PSF, num_iter=3),
        lambda x: clid(x, PSF, num_iter=3),
        lambda x: lanczos_upsample(x, 2),
        lambda x: series_average(x[None]),
    ],
    ids=["richardson_lucy", "clid", "lanczos", "series_average"],
)
def test_integer_image_gives_float32(fn):
    out = fn((IMG * 10).astype(np.uint16))
    assert out.dtype == np.float32
    assert np.all(np.isfinite(np.asarray(out)))


def test_negative_pixels_clipped_to_zero():
    shifted = IMG - 6.0  # some pixels negative, as after offset subtraction
    out = richardson_lucy(shifted, PSF, num_iter=3, boundary="periodic")
    ref = richardson_lucy(np.maximum(shifted, 0.0), PSF, num_iter=3, boundary="periodic")
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-6, atol=1e-6)
    out = np.asarray(clid(shifted, PSF, num_iter=3))
    assert out.min() >= 0 and np.all(np.isfinite(out))


def test_oversized_psf_cropped_with_warning():
    big = np.zeros((15, 15), np.float32)
    big[4:11, 4:11] = 1.0
    with pytest.warns(UserWarning, match="cropped"):
        out = richardson_lucy(IMG, big, num_iter=3)
    # cropping around the centre keeps the 7x7 block, which fits the 8x8 image
    ref = richardson_lucy(IMG, big[4:11, 4:11], num_iter=3)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("extra", "word"),
    [(["--upsample", "100000"], "--upsample"), (["--pixel-size", "1e-6"], "--pixel-size")],
)
def test_cli_absurd_sizes_are_one_line_errors(tmp_path, capsys, extra, word):
    from jaxsr.io import write_image

    src = tmp_path / "in.tif"
    write_image(str(src), IMG, pixel_size_nm=65.0)
    code = cli_main(["clid", str(src), "-o", str(tmp_path / "out.tif"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and word in err
    assert not (tmp_path / "out.tif").exists()
