"""Tests for jaxsr.deconv.clid: the CLID pipeline (denoise -> Lanczos x3 -> Richardson-Lucy on the fine grid)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxsr.deconv.clid import CLID_PSF_MODELS, clid, clid_psf
from jaxsr.deconv.richardson_lucy import richardson_lucy
from jaxsr.forward import bin_image, convolve
from jaxsr.metrics import resolve_line_pairs
from jaxsr.optics import airy_psf_2d
from jaxsr.optics.clid_bessel import clid_bessel_psf
from jaxsr.simulate import line_pairs, render_polyline

Image = pytest.importorskip("PIL.Image")

F = 3
PX = 65.0
FINE = PX / F
N = 32


@pytest.fixture(scope="module")
def line_pair_scene():
    """Two lines 65 nm apart, rendered on the 21.7 nm fine grid, Airy-blurred (NA 1.49, 488 nm),
    binned to 65 nm camera pixels; noise-free, peak 1000 photons."""
    lines = line_pairs(separations_nm=(65.0,), length_nm=1200.0, centre_nm=(N * PX / 2, N * PX / 2))
    obj = render_polyline(lines, shape=(N * F, N * F), pixel_size_nm=FINE, photons_per_nm=1.0,
                          samples_per_segment=200)
    psf = airy_psf_2d((61, 61), na=1.49, wavelength_nm=488.0, pixel_size_nm=FINE)
    cam = bin_image(convolve(obj, psf), factor=F)
    cam = cam * (1000.0 / cam.max())
    return np.asarray(lines), np.asarray(cam), np.asarray(psf)


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(1)
    img = (rng.random((2, 10, 12)) * 50 + 5).astype(np.float32)
    img[0, 4:6, 5:7] += 400.0
    psf = np.asarray(airy_psf_2d((9, 9), na=1.2, wavelength_nm=520.0, pixel_size_nm=40.0))
    return img, psf


def _pil_lanczos(a: np.ndarray, f: int) -> np.ndarray:
    im = Image.fromarray(np.asarray(a, np.float32))
    return np.asarray(im.resize((a.shape[1] * f, a.shape[0] * f), Image.Resampling.LANCZOS))


# --------------------------------------------------------------------------- 1. the paper's claim and references


def test_resolves_65nm_line_pair_that_widefield_does_not(line_pair_scene):
    lines, cam, psf = line_pair_scene
    wide = resolve_line_pairs(cam, lines, pixel_size_nm=PX)[0]
    assert not wide.resolved
    out = clid(cam, psf, upsample=F, num_iter=300, accelerate=True)
    assert out.shape == (N * F, N * F)
    res = resolve_line_pairs(np.asarray(out), lines, pixel_size_nm=FINE)[0]
    assert res.resolved and res.dip >= 0.26
    assert res.measured_separation_nm == pytest.approx(65.0, abs=15.0)
    # photons are conserved (fine pixels carry 1/9 of a camera pixel's light)
    assert float(out.sum()) == pytest.approx(float(cam.sum()), rel=5e-3)
    assert float(out.min()) >= 0.0


def test_pipeline_equals_pil_lanczos_then_rl(small):
    img, psf = small
    frame = img[0] - 20.0  # some negative pixels: clipped before upsampling
    fine = np.maximum(_pil_lanczos(np.maximum(frame, 0.0), F), 0.0) / F**2
    ref = richardson_lucy(fine, psf, num_iter=15, accelerate=True, boundary="pad")
    out = clid(frame, psf, upsample=F, num_iter=15)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-4, atol=1e-4 * float(ref.max()))


def test_background_moves_to_fine_grid(small):
    img, psf = small
    fine = np.maximum(_pil_lanczos(img[0], 2), 0.0) / 4.0
    ref = richardson_lucy(fine, psf, num_iter=10, accelerate=False, background=8.0 / 4.0)
    out = clid(img[0], psf, upsample=2, num_iter=10, accelerate=False, background=8.0)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-4, atol=1e-4 * float(ref.max()))
    # an image-shaped background equal to the constant gives the same result
    same = clid(img[0], psf, upsample=2, num_iter=10, accelerate=False, background=np.full((10, 12), 8.0))
    np.testing.assert_allclose(np.asarray(same), np.asarray(out), rtol=1e-4, atol=1e-4 * float(ref.max()))


def test_denoiser_is_applied_first(small):
    img, psf = small
    calls = []

    def denoiser(x):
        calls.append(x.shape)
        return jnp.full_like(x, 7.0)

    out = clid(img[0], psf, num_iter=5, denoiser=denoiser)
    assert calls == [(10, 12)]
    flat = clid(np.full((10, 12), 7.0, np.float32), psf, num_iter=5)
    np.testing.assert_allclose(np.asarray(out), np.asarray(flat), rtol=1e-6)


def test_negative_pixels_are_clipped(small):
    img, psf = small
    shifted = img[0] - 30.0
    a = clid(shifted, psf, num_iter=5)
    b = clid(np.maximum(shifted, 0.0), psf, num_iter=5)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    assert bool(jnp.all(jnp.isfinite(a))) and float(a.min()) >= 0


def test_zero_image_gives_zero():
    out = clid(np.zeros((8, 8), np.float32), np.ones((3, 3), np.float32) / 9, num_iter=5)
    assert bool(jnp.all(out == 0))


def test_clid_psf_models():
    a = clid_psf("airy", na=1.49, wavelength_nm=488.0, pixel_size_nm=65.0, upsample=3)
    half = int(np.ceil(3 * 488.0 / 1.49 / (65.0 / 3)))
    assert a.shape == (2 * half + 1, 2 * half + 1)
    np.testing.assert_allclose(
        np.asarray(a), np.asarray(airy_psf_2d(a.shape, na=1.49, wavelength_nm=488.0, pixel_size_nm=65.0 / 3)),
        rtol=1e-6)
    b = clid_psf("clid-bessel", na=1.49, wavelength_nm=488.0, pixel_size_nm=65.0, upsample=3, shape=(129, 129))
    np.testing.assert_allclose(
        np.asarray(b),
        np.asarray(clid_bessel_psf((129, 129), na=1.49, wavelength_nm=488.0, pixel_size_nm=65.0 / 3)), rtol=1e-6)
    assert set(CLID_PSF_MODELS) == {"airy", "clid-bessel"}
    # the released-code PSF is broader: lower peak fraction on the same grid
    a129 = clid_psf("airy", na=1.49, wavelength_nm=488.0, pixel_size_nm=65.0, upsample=3, shape=(129, 129))
    assert float(b.max()) < float(a129.max())


def test_callable_psf(small):
    img, psf = small
    model = lambda shape: airy_psf_2d(shape, na=1.2, wavelength_nm=520.0, pixel_size_nm=40.0)  # noqa: E731
    a = clid(img[0], model, num_iter=5, psf_shape=(9, 9))
    b = clid(img[0], psf, num_iter=5)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- 2. batch / jit / vmap


def test_batch_jit_vmap(small):
    img, psf = small
    loop = np.stack([np.asarray(clid(frame, psf, num_iter=8)) for frame in img])
    batched = np.asarray(clid(img, psf, num_iter=8))
    jit_vmapped = np.asarray(jax.jit(jax.vmap(lambda x: clid(x, psf, num_iter=8)))(jnp.asarray(img)))
    assert batched.shape == (2, 30, 36)
    tol = dict(rtol=1e-4, atol=1e-5 * float(loop.max()))
    for other in (batched, jit_vmapped):
        np.testing.assert_allclose(other, loop, **tol)


# --------------------------------------------------------------------------- 3. gradients


def test_gradients(x64):
    rng = np.random.default_rng(2)
    img = jnp.asarray(rng.random((6, 6)) * 10 + 1.0)  # positive: away from the clip at 0
    psf = jnp.asarray(np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0)
    check_grads(lambda x: clid(x, psf, upsample=2, num_iter=3, accelerate=False), (img,), order=1, modes=["rev"])


# --------------------------------------------------------------------------- 4. bad input


def test_bad_input(small):
    img, psf = small
    frame = img[0]
    with pytest.raises(ValueError, match="upsample"):
        clid(frame, psf, upsample=0)
    with pytest.raises(TypeError, match="upsample"):
        clid(frame, psf, upsample=2.5)
    with pytest.raises(ValueError, match="num_iter"):
        clid(frame, psf, num_iter=0)
    with pytest.raises(ValueError, match="image"):
        clid(frame.ravel(), psf)
    with pytest.raises(ValueError, match="image"):
        clid(np.where(frame > 100, np.nan, frame), psf)
    with pytest.raises(ValueError, match="psf"):
        clid(frame, np.full((5, 5), np.nan))
    with pytest.raises(ValueError, match="psf"):
        clid(frame, np.zeros((5, 5)))
    with pytest.raises(ValueError, match="psf"):
        clid(frame, np.ones((3, 5, 5)))
    with pytest.raises(ValueError, match="background"):
        clid(frame, psf, background=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="background"):
        clid(frame, psf, background=-1.0)
    with pytest.raises(TypeError, match="denoiser"):
        clid(frame, psf, denoiser="unet")
    with pytest.raises(ValueError, match="denoiser"):
        clid(frame, psf, denoiser=lambda x: x[:5])
    with pytest.raises(ValueError, match="denoiser"):
        clid(frame, psf, denoiser=lambda x: x * jnp.nan)
    with pytest.raises(TypeError, match="accelerate"):
        clid(frame, psf, accelerate=1)
    with pytest.raises(ValueError, match="model"):
        clid_psf("gaussian", na=1.4, wavelength_nm=520.0, pixel_size_nm=65.0)
    with pytest.raises(ValueError, match="na"):
        clid_psf("airy", na=-1.4, wavelength_nm=520.0, pixel_size_nm=65.0)
