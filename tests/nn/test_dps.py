"""Tests of jaxsr.nn.dps: the DPS loss, canonical resampling, background, training and inference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from skimage.metrics import structural_similarity

from jaxsr.deconv.upsample import lanczos_upsample
from jaxsr.forward import convolve
from jaxsr.nn.dps import (
    DPS_BACKGROUNDS,
    dps_apply,
    dps_background,
    dps_loss,
    dps_prepare,
    dps_psf,
    dps_resample_factor,
    from_canonical_grid,
    to_canonical_grid,
    train_dps,
)
from jaxsr.nn.train import TrainConfig
from jaxsr.nn.unet import UNetConfig, unet_apply, unet_init
from jaxsr.optics.psf import gaussian_psf_2d

TINY = UNetConfig(depth=2, features=8, decoder_features=8, attention=True, back_projection=True)
OPTICS = dict(pixel_size_nm=65.0, na=1.4, wavelength_nm=520.0)
PSF9 = np.asarray(dps_psf(psf="gaussian", max_size=9), dtype=np.float64)


def _smooth_image(rng, shape=(40, 40), sigma=2.0):
    return ndi.gaussian_filter(rng.random(shape), sigma, mode="wrap") + 0.2


def _hessian_reference(x):
    """Mean |f_xx| + |f_yy| + 2 |f_xy| over pixels 1 .. n-2, with NumPy differences.

    f_xx, f_yy are centred second differences at the pixel, f_xy the forward-forward
    mixed difference x[i+1, j+1] - x[i+1, j] - x[i, j+1] + x[i, j] at pixel (i, j).
    """
    fxx = np.diff(x, 2, axis=-1)[..., 1:-1, :]
    fyy = np.diff(x, 2, axis=-2)[..., :, 1:-1]
    fxy = np.diff(np.diff(x, axis=-2), axis=-1)[..., 1:, 1:]
    return np.abs(fxx).mean() + np.abs(fyy).mean() + 2.0 * np.abs(fxy).mean()


# --------------------------------------------------------------------------- canonical grid
@pytest.mark.parametrize("px, na, lam, canon", [(65.0, 1.4, 520.0, 2.0), (100.0, 0.95, 600.0, 1.5), (30.0, 1.2, 450.0, 3.0)])
def test_resample_factor_closed_form(px, na, lam, canon):
    f = dps_resample_factor(pixel_size_nm=px, na=na, wavelength_nm=lam, canonical_sigma_px=canon)
    assert f == pytest.approx(canon * px * na / (0.21 * lam), rel=1e-12)
    # The PSF sigma in canonical pixels is the canonical value.
    assert 0.21 * lam / na / (px / f) == pytest.approx(canon, rel=1e-12)
    # Proportional to pixel x NA / wavelength.
    f2 = dps_resample_factor(pixel_size_nm=2 * px, na=na, wavelength_nm=2 * lam, canonical_sigma_px=canon)
    assert f2 == pytest.approx(f, rel=1e-12)


def test_resampled_psf_has_canonical_width():
    """A widefield (Gaussian) PSF on the camera grid measures ~canonical_sigma_px after resampling."""
    px, na, lam = 100.0, 1.0, 600.0  # sigma = 1.26 camera pixels
    f = dps_resample_factor(pixel_size_nm=px, na=na, wavelength_nm=lam, canonical_sigma_px=2.5)
    psf = gaussian_psf_2d((31, 31), sigma_nm=0.21 * lam / na, pixel_size_nm=px)
    up = np.asarray(to_canonical_grid(psf, factor=f), dtype=np.float64)
    yy, xx = np.indices(up.shape)
    w = up / up.sum()
    cy, cx = (w * yy).sum(), (w * xx).sum()
    sigma = np.sqrt((w * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / 2.0)
    # Pixel integration on the camera grid adds 1/12 camera px^2 of variance.
    expected = np.sqrt(2.5**2 + f**2 / 12.0)
    assert sigma == pytest.approx(expected, rel=0.03)


def test_integer_factor_matches_lanczos_upsample(rng):
    x = _smooth_image(rng, (24, 30)).astype(np.float32)
    ours = np.asarray(to_canonical_grid(x, factor=3))
    ref = np.asarray(lanczos_upsample(x, 3))
    assert ours.shape == ref.shape == (72, 90)
    b = 9  # 3 coarse pixels: where the reference clips its support at the border
    np.testing.assert_allclose(ours[b:-b, b:-b], ref[b:-b, b:-b], atol=2e-5)


@pytest.mark.parametrize("factor", [1.37, 2.0, 0.7])
def test_resampling_keeps_mean_and_round_trips(rng, factor):
    x = _smooth_image(rng, (48, 40), sigma=3.0).astype(np.float32)
    up = to_canonical_grid(x, factor=factor)
    assert up.shape == (int(48 * factor + 1e-6), int(40 * factor + 1e-6))
    assert float(up.mean()) == pytest.approx(float(x.mean()), rel=5e-3)
    back = np.asarray(from_canonical_grid(up, factor=factor, shape=x.shape))
    assert back.shape == x.shape
    tol = 0.01 if factor >= 1 else 0.05  # downsampling first loses the finest detail
    np.testing.assert_allclose(back[4:-4, 4:-4], x[4:-4, 4:-4], atol=tol * float(x.max()))


def test_resampling_jit_vmap_invariance(rng):
    x = _smooth_image(rng, (3, 20, 20)).astype(np.float32)
    batched = np.asarray(to_canonical_grid(x, factor=1.5))
    single = np.stack([np.asarray(to_canonical_grid(x[i], factor=1.5)) for i in range(3)])
    vm = np.asarray(jax.vmap(lambda v: to_canonical_grid(v, factor=1.5))(jnp.asarray(x)))
    np.testing.assert_allclose(batched, single, atol=1e-6)
    np.testing.assert_allclose(vm, single, atol=1e-6)


@pytest.mark.parametrize("canon", [1.5, 2.0])
def test_dps_psf_width(canon):
    for kind in ("gaussian", "airy"):
        psf = np.asarray(dps_psf(canonical_sigma_px=canon, psf=kind, max_size=None), dtype=np.float64)
        n = psf.shape[0]
        assert psf.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.unravel_index(psf.argmax(), psf.shape) == (n // 2, n // 2)
        if kind == "gaussian":  # second moment = sigma^2 + 1/12 (pixel integration)
            r2 = (np.arange(n) - n // 2) ** 2
            assert np.sqrt((psf.sum(axis=0) * r2).sum()) == pytest.approx(np.sqrt(canon**2 + 1 / 12), rel=1e-3)
        else:  # first Airy zero at 0.61 wavelength / NA = 0.61 canon / 0.21 pixels
            prof = psf[n // 2, n // 2:]
            zero = 0.61 * canon / 0.21
            assert prof[int(round(zero))] < 0.02 * prof[0]
            assert prof[int(round(zero / 2))] > 0.3 * prof[0]


# --------------------------------------------------------------------------- background
def test_background_constant_and_spots():
    flat = np.full((48, 48), 7.0, np.float32)
    np.testing.assert_allclose(np.asarray(dps_background(flat, radius_px=6)), 7.0, rtol=1e-5)
    spots = flat.copy()
    spots[10:13, 10:13] += 50.0
    spots[30, 20] += 80.0
    bg = np.asarray(dps_background(spots, radius_px=8))
    np.testing.assert_allclose(bg, 7.0, rtol=0.05)
    # Sparse-SIM "weak" mode on a constant: the estimate of the image / 2.5.
    np.testing.assert_allclose(np.asarray(dps_background(flat, mode="weak")), 7.0 / 2.5, rtol=1e-4)


def test_background_follows_a_slow_ramp():
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    ramp = 5.0 + 0.05 * xx
    img = ramp.copy()
    img[20:23, :] += 40.0  # a horizontal line, 3 px wide
    bg = np.asarray(dps_background(img, radius_px=6))
    np.testing.assert_allclose(bg[8:-8, 8:-8], ramp[8:-8, 8:-8], atol=0.3)


# --------------------------------------------------------------------------- loss: references
def test_loss_terms_match_independent_references(rng):
    out = rng.random((2, 24, 24)).astype(np.float64) ** 3
    img = rng.random((2, 24, 24)).astype(np.float64)
    loss, terms = dps_loss(out.astype(np.float32), img.astype(np.float32), PSF9, ssim_weight=0.7,
                           l1_weight=0.3, hessian_weight=0.2, data_range=1.0, return_terms=True)
    blurred = np.stack([ndi.convolve(o, PSF9, mode="reflect") for o in out])
    ssim_ref = np.mean([structural_similarity(b, i, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                              data_range=1.0) for b, i in zip(blurred, img)])
    assert float(terms["ssim"]) == pytest.approx(1.0 - ssim_ref, abs=2e-5)
    assert float(terms["l1"]) == pytest.approx(np.abs(out).mean(), rel=1e-5)
    hess_ref = np.mean([_hessian_reference(o) for o in out])
    assert float(terms["hessian"]) == pytest.approx(hess_ref, rel=1e-5)
    total_ref = 0.7 * (1.0 - ssim_ref) + 0.3 * np.abs(out).mean() + 0.2 * hess_ref
    assert float(loss) == pytest.approx(total_ref, rel=1e-4)


def test_loss_on_finer_output_grid(rng):
    out = rng.random((32, 32)).astype(np.float32)
    img = rng.random((16, 16)).astype(np.float32)
    _, terms = dps_loss(out, img, PSF9.astype(np.float32), factor=2, return_terms=True)
    blurred = ndi.convolve(out.astype(np.float64), PSF9, mode="reflect")
    binned = blurred.reshape(16, 2, 16, 2).mean(axis=(1, 3))
    ref = structural_similarity(binned, img.astype(np.float64), gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0)
    assert float(terms["ssim"]) == pytest.approx(1.0 - ref, abs=2e-5)


def test_ssim_term_zero_when_blurred_output_equals_input(rng):
    g = np.zeros((40, 40), np.float32)
    g[rng.integers(0, 40, 12), rng.integers(0, 40, 12)] = 1.0
    psf = dps_psf(psf="airy", max_size=15)
    f = convolve(g, psf, boundary="reflect")
    _, terms = dps_loss(g, f, psf, data_range=1.0, return_terms=True)
    assert abs(float(terms["ssim"])) < 1e-5


@settings(max_examples=10)
@given(a=st.floats(-2, 2), b=st.floats(-2, 2), c=st.floats(0, 3))
def test_hessian_term_vanishes_on_affine_images(a, b, c):
    yy, xx = np.mgrid[0:16, 0:16]
    plane = (a * yy / 16 + b * xx / 16 + c).astype(np.float32)
    _, terms = dps_loss(plane, np.ones((16, 16), np.float32), PSF9.astype(np.float32), return_terms=True)
    assert float(terms["hessian"]) < 1e-5


def test_loss_jit_vmap_invariance(rng):
    out = rng.random((3, 20, 20)).astype(np.float32)
    img = rng.random((3, 20, 20)).astype(np.float32)
    psf = PSF9.astype(np.float32)
    batch = float(dps_loss(out, img, psf))
    jitted = float(jax.jit(lambda o, i: dps_loss(o, i, psf))(out, img))
    per = jax.vmap(lambda o, i: dps_loss(o, i, psf))(out, img)
    singles = [float(dps_loss(out[k], img[k], psf)) for k in range(3)]
    assert jitted == pytest.approx(batch, rel=1e-5)
    np.testing.assert_allclose(np.asarray(per), singles, rtol=1e-5)
    assert batch == pytest.approx(np.mean(singles), rel=1e-5)


def test_loss_gradients(x64, rng):
    out = jnp.asarray(rng.random((14, 14)) + 0.1)
    img = jnp.asarray(rng.random((14, 14)))
    psf = jnp.asarray(PSF9[2:-2, 2:-2] / PSF9[2:-2, 2:-2].sum())
    check_grads(lambda o: dps_loss(o, img, psf, l1_weight=0.3, hessian_weight=0.2), (out,), order=1, modes=["rev"])
    # finite gradients at edge cases: zero output, flat input
    for o, i in ((jnp.zeros((14, 14)), img), (out, jnp.ones((14, 14)))):
        g = jax.grad(lambda v: dps_loss(v, i, psf))(o)
        assert bool(jnp.all(jnp.isfinite(g)))


# --------------------------------------------------------------------------- prepare, training, inference
def test_prepare_removes_background_and_scales():
    img = np.full((2, 40, 40), 30.0, np.float32)
    img[:, 20, 5:35] += 100.0
    img[1] *= 3.0
    p = dps_prepare(img, **OPTICS)
    f = dps_resample_factor(**OPTICS)
    assert p.factor == pytest.approx(f)
    assert p.image.shape == (2, int(40 * f), int(40 * f))
    np.testing.assert_allclose(np.asarray(p.image.max(axis=(-2, -1))), 1.0, rtol=1e-6)
    assert float(jnp.median(p.image)) < 0.02  # the 30-photon floor is gone
    assert float(p.scale[1] / p.scale[0]) == pytest.approx(3.0, rel=1e-4)
    assert p.pixel_size_nm == pytest.approx(65.0 / f)


def test_tiny_training_reduces_loss(key):
    img = np.zeros((48, 48), np.float32)
    img[np.arange(48), np.arange(48)] = 1.0
    img[10, :] = 1.0
    psf = dps_psf(max_size=11)
    img = np.asarray(convolve(img, psf, boundary="reflect"))
    img = img / img.max()
    train = TrainConfig(steps=20, batch_size=4, patch_size=32, learning_rate=3e-3, schedule="constant", eval_every=10)
    params0 = unet_init(key, config=TINY)
    before = float(dps_loss(unet_apply(params0, img, config=TINY), img, psf))
    res = train_dps(key, img, psf, config=TINY, train=train)
    after = float(dps_loss(unet_apply(res.params, img, config=TINY), img, psf))
    assert res.step == 20 and np.isfinite(after)
    assert after < 0.8 * before
    # inference: canonical grid by default, camera grid on request, frames independent
    frames = np.stack([img[:40, :40] * 50 + 10, img[8:, 8:] * 80 + 10])
    r = dps_apply(frames, res.params, config=TINY, **OPTICS)
    f = dps_resample_factor(**OPTICS)
    assert r.image.shape == (2, int(40 * f), int(40 * f))
    assert bool(jnp.all(r.image >= 0)) and r.pixel_size_nm == pytest.approx(65.0 / f)
    swapped = dps_apply(frames[::-1], res.params, config=TINY, **OPTICS)
    np.testing.assert_allclose(np.asarray(swapped.image[0]), np.asarray(r.image[1]), rtol=1e-5, atol=1e-6)
    cam = dps_apply(frames, res.params, config=TINY, grid="camera", **OPTICS)
    assert cam.image.shape == frames.shape and cam.pixel_size_nm == 65.0


# --------------------------------------------------------------------------- bad input
def test_bad_inputs():
    img = np.ones((20, 20), np.float32)
    with pytest.raises(ValueError, match="psf"):
        dps_loss(img, img, np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="psf"):
        dps_loss(img, img, -np.ones((3, 3)))
    bad = img.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="image"):
        dps_loss(img, bad, PSF9)
    with pytest.raises(ValueError, match="output"):
        dps_loss(bad, img, PSF9)
    with pytest.raises(ValueError, match="output"):
        dps_loss(np.ones((21, 20)), img, PSF9)
    with pytest.raises(ValueError, match="l1_weight"):
        dps_loss(img, img, PSF9, l1_weight=-1.0)
    with pytest.raises(ValueError, match="image"):
        dps_prepare(bad, **OPTICS)
    for name in ("pixel_size_nm", "na", "wavelength_nm"):
        for value in (0.0, -1.0, float("nan")):
            with pytest.raises(ValueError, match=name):
                dps_resample_factor(**{**OPTICS, name: value})
    with pytest.raises(ValueError, match="canonical_sigma_px"):
        dps_resample_factor(**OPTICS, canonical_sigma_px=0.0)
    with pytest.raises(ValueError, match="factor"):
        to_canonical_grid(img, factor=-2.0)
    with pytest.raises(ValueError, match="mode"):
        dps_background(img, mode="rolling")
    with pytest.raises(ValueError, match="background"):
        dps_prepare(img, **OPTICS, background="nope")
    with pytest.raises(ValueError, match="denoiser"):
        dps_prepare(img, **OPTICS, denoiser=lambda v: v[:10])
    with pytest.raises(ValueError, match="images"):
        train_dps(jax.random.key(0), bad, PSF9, config=TINY)
    with pytest.raises(ValueError, match="psf"):
        train_dps(jax.random.key(0), img, np.ones(9), config=TINY)
    with pytest.raises(ValueError, match="psf"):
        train_dps(jax.random.key(0), np.ones((64, 64)), np.ones((41, 41)), config=TINY,
                  train=TrainConfig(patch_size=32))
    with pytest.raises(ValueError, match="images"):
        train_dps(jax.random.key(0), img, PSF9, config=TINY, train=TrainConfig(patch_size=32))
    with pytest.raises(ValueError, match="grid"):
        dps_apply(img, {}, config=TINY, **OPTICS, grid="fine")
    assert "opening" in DPS_BACKGROUNDS


def test_dps_super_resolve_trains_on_the_image_and_adapts_the_patch():
    """dps_super_resolve = prepare + train_dps + dps_apply; a small image shrinks the patch to fit."""
    from jaxsr.nn import dps_super_resolve

    SMALL = UNetConfig(depth=1, features=2, decoder_features=2)  # noqa: N806 - compile-cheap

    img = jnp.zeros((20, 22)).at[6:14, 11].set(50.0) + 2.0
    train = TrainConfig(steps=2, batch_size=2, patch_size=48)
    out, res = dps_super_resolve(jax.random.key(0), img, config=SMALL, train=train, background=None, **OPTICS)
    factor = dps_resample_factor(**OPTICS)
    assert res.step == 2 and out.factor == pytest.approx(factor)
    assert abs(out.image.shape[0] - 20 * factor) <= 1 and abs(out.image.shape[1] - 22 * factor) <= 1
    assert out.pixel_size_nm == pytest.approx(OPTICS["pixel_size_nm"] / factor)
    # The same as running the three steps by hand.
    prep = dps_prepare(img, background=None, **OPTICS)
    patch = min(48, *prep.image.shape[-2:])
    again = train_dps(jax.random.key(0), prep.image, dps_psf(max_size=min(39, patch - 1 + patch % 2)), config=SMALL,
                      train=TrainConfig(steps=2, batch_size=2, patch_size=patch))
    ref = dps_apply(img, again.params, config=SMALL, background=None, **OPTICS)
    np.testing.assert_allclose(np.asarray(out.image), np.asarray(ref.image), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="image"):
        dps_super_resolve(jax.random.key(0), jnp.ones((5, 5)), config=SMALL, train=train, **OPTICS)


def test_a_checkpoint_of_other_images_or_psf_is_never_resumed(tmp_path):
    """The images' and the PSF's fingerprint is part of the checkpoint identity."""
    cfg = UNetConfig(depth=1, features=2, decoder_features=2)
    train = TrainConfig(steps=1, batch_size=2, patch_size=16, checkpoint_every=1)
    img = np.asarray(jax.random.uniform(jax.random.key(0), (16, 16)))
    psf = dps_psf(max_size=9)
    train_dps(jax.random.key(0), img, psf, config=cfg, train=train, checkpoint_dir=tmp_path)
    assert train_dps(jax.random.key(0), img, psf, config=cfg, train=train, checkpoint_dir=tmp_path).resumed_from == 1
    with pytest.raises(ValueError, match=r"checkpoint_dir.*different training data"):
        train_dps(jax.random.key(0), img[::-1], psf, config=cfg, train=train, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint_dir.*different training data"):
        train_dps(jax.random.key(0), img, dps_psf(max_size=9, canonical_sigma_px=1.5), config=cfg, train=train,
                  checkpoint_dir=tmp_path)
