"""jaxsr.deconv.estimate_background against scipy.ndimage + numpy, on Poisson fields with a known floor,
under jit/vmap, in float64, and with bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxsr.deconv import estimate_background


def _reference(image, sigma, q, spatial):
    """scipy's Gaussian filter (mirror boundary 'reflect', truncate 4) and numpy's percentile, per image."""
    a = np.asarray(image, np.float64)
    lead = a.shape[:-spatial]
    flat = a.reshape((-1,) + a.shape[-spatial:])
    out = [np.percentile(ndimage.gaussian_filter(f, sigma, mode="reflect", truncate=4.0), q) for f in flat]
    return np.asarray(out).reshape(lead)


@pytest.mark.parametrize("shape,spatial,sigma,q", [((40, 52), 2, 2.0, 5.0), ((3, 33, 20), 2, 1.3, 1.0),
                                                    ((2, 9, 24, 30), 3, 1.5, 10.0), ((6, 7), 2, 3.0, 50.0)])
def test_matches_scipy_and_numpy(rng, shape, spatial, sigma, q):
    """Including a side (6, 7) shorter than the kernel radius (12 taps each way)."""
    image = rng.gamma(2.0, 10.0, size=shape)
    got = estimate_background(image.astype(np.float32), sigma_px=sigma, percentile=q, spatial=spatial)
    assert got.shape == shape[:-spatial] and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), _reference(image.astype(np.float32), sigma, q, spatial), rtol=2e-5)


def test_finds_the_floor_of_a_poisson_field():
    """A 100-photon floor under sparse bright spots, Poisson noise: the default estimate lies just below the
    floor (by about 1.6 standard deviations of the smoothed noise, ~1.4 photons), never above it."""
    from jaxsr.optics import gaussian_psf_2d

    psf = np.asarray(gaussian_psf_2d((15, 15), sigma_nm=130.0, pixel_size_nm=65.0))
    for seed in range(4):
        r = np.random.default_rng(seed)
        spots = np.zeros((128, 128))
        spots[r.integers(0, 128, 25), r.integers(0, 128, 25)] = r.uniform(2e3, 2e4, 25)
        clean = ndimage.convolve(spots, psf, mode="constant") + 100.0
        noisy = r.poisson(clean).astype(np.float32)
        b = float(estimate_background(noisy))
        assert 100.0 - 4.0 < b < 100.0, (seed, b)
        assert b > float(np.percentile(noisy, 5))          # smoothing: far closer than a raw percentile


def test_jit_vmap_and_batch_agree(rng):
    frames = jnp.asarray(rng.gamma(3.0, 5.0, size=(4, 30, 36)), jnp.float32)
    batch = estimate_background(frames)
    np.testing.assert_allclose(jax.jit(estimate_background)(frames), batch, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(estimate_background)(frames), batch, rtol=1e-6)
    np.testing.assert_allclose([float(estimate_background(f)) for f in frames], batch, rtol=1e-6)


def test_float64(x64, rng):
    image = rng.gamma(2.0, 10.0, size=(25, 31))
    got = estimate_background(jnp.asarray(image, jnp.float64), sigma_px=1.7, percentile=3.0)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(float(got), float(_reference(image, 1.7, 3.0, 2)), rtol=1e-12)


@pytest.mark.parametrize("kw,word", [({"sigma_px": 0.0}, "sigma_px"), ({"sigma_px": float("nan")}, "sigma_px"),
                                     ({"percentile": -1.0}, "percentile"), ({"percentile": 101.0}, "percentile"),
                                     ({"spatial": 1}, "spatial")])
def test_bad_options(kw, word):
    with pytest.raises(ValueError, match=word):
        estimate_background(np.ones((8, 8), np.float32), **kw)


def test_bad_image():
    with pytest.raises(ValueError, match="image"):
        estimate_background(np.ones(8, np.float32))
    with pytest.raises(ValueError, match="image"):
        estimate_background(np.ones((8, 8), np.float32), spatial=3)
    with pytest.raises(ValueError, match="image"):
        estimate_background(np.full((8, 8), np.nan, np.float32))
    with pytest.raises(TypeError, match="image"):
        estimate_background("not an image")


def test_gradient_matches_finite_differences(x64, rng):
    """Differentiable in the image (a percentile is piecewise linear in the smoothed values): the directional
    derivative equals a central finite difference."""
    image = jnp.asarray(rng.gamma(2.0, 10.0, size=(20, 24)), jnp.float64)
    direction = jnp.asarray(rng.normal(size=(20, 24)), jnp.float64)
    grad = jax.grad(lambda a: estimate_background(a, percentile=7.0))(image)
    eps = 1e-6
    fd = (estimate_background(image + eps * direction, percentile=7.0)
          - estimate_background(image - eps * direction, percentile=7.0)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.vdot(grad, direction)), float(fd), rtol=1e-6)
    assert float(jnp.sum(grad)) == pytest.approx(1.0)     # shifting the image shifts the estimate


def test_flat_and_zero_images(x64):
    """Edge cases: a flat image's background is its level, with a finite gradient summing to 1; zeros give 0."""
    flat = jnp.full((12, 9), 3.5, jnp.float64)
    assert float(estimate_background(flat)) == pytest.approx(3.5, rel=1e-12)
    grad = jax.grad(estimate_background)(flat)
    assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.sum(grad)) == pytest.approx(1.0)
    assert float(estimate_background(jnp.zeros((5, 5)))) == 0.0


@pytest.mark.parametrize("kw,word", [({"sigma_px": "2"}, "sigma_px"), ({"sigma_px": True}, "sigma_px"),
                                     ({"sigma_px": [1.0, 2.0]}, "sigma_px"), ({"percentile": [5, 10]}, "percentile"),
                                     ({"percentile": "5"}, "percentile"), ({"spatial": 2.0}, "spatial"),
                                     ({"spatial": True}, "spatial"), ({"spatial": "2"}, "spatial")])
def test_bad_option_types_name_the_argument(kw, word):
    """A string, a bool, a list or a float where an int is meant: a one-line TypeError naming the argument (a
    string sigma was parsed, a list percentile or a float spatial raised unnamed errors)."""
    with pytest.raises(TypeError, match=f"argument '{word}'") as exc:
        estimate_background(np.ones((8, 8), np.float32), **kw)
    assert "\n" not in str(exc.value)


def test_numpy_scalar_options_still_accepted(rng):
    image = rng.gamma(2.0, 10.0, size=(2, 9, 9)).astype(np.float32)
    want = np.asarray(estimate_background(image, sigma_px=1.5, percentile=10.0, spatial=2))
    got = estimate_background(image, sigma_px=np.float32(1.5), percentile=np.int64(10), spatial=np.int64(2))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(want, [_reference(f, 1.5, 10.0, 2) for f in image], rtol=1e-5)
