"""resample_psf against closed-form Gaussians (pixel-integrated laterally, point-sampled in z)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.special import erf

from jaxsr.deconv.psf_resample import resample_psf


def integrated_gaussian(n, pixel, sigma):
    """Unit-sum Gaussian integrated over pixels of ``pixel`` nm, centre at index n // 2 (erf)."""
    x = (np.arange(n) - n // 2) * pixel
    v = erf((x + pixel / 2) / (np.sqrt(2) * sigma)) - erf((x - pixel / 2) / (np.sqrt(2) * sigma))
    return v / v.sum()


def sampled_gaussian(n, step, sigma):
    x = (np.arange(n) - n // 2) * step
    v = np.exp(-0.5 * (x / sigma) ** 2)
    return v / v.sum()


def gauss_2d(n, pixel, sigma):
    g = integrated_gaussian(n, pixel, sigma)
    return np.outer(g, g)


@pytest.mark.parametrize("n,p_in,p_out", [(65, 20.0, 65.0), (64, 20.0, 65.0), (21, 65.0, 20.0), (20, 65.0, 30.0)])
def test_gaussian_2d_matches_closed_form(n, p_in, p_out):
    # sigma = 120 nm is band-limited at both samplings, so the resampling is exact to float32 precision.
    out = resample_psf(gauss_2d(n, p_in, 120.0).astype(np.float32), psf_pixel_size_nm=p_in, pixel_size_nm=p_out)
    m = out.shape[0]
    assert out.shape == (m, m) and m % 2 == 1
    ref = gauss_2d(m, p_out, 120.0)
    np.testing.assert_allclose(np.asarray(out), ref, atol=2e-6 * ref.max())
    assert int(jnp.argmax(out)) == (m // 2) * m + m // 2


def test_gaussian_3d_point_sampled_in_z():
    lateral = integrated_gaussian(65, 20.0, 120.0)
    psf = np.einsum("i,j,k->ijk", sampled_gaussian(25, 100.0, 300.0), lateral, lateral).astype(np.float32)
    out = np.asarray(resample_psf(psf, psf_pixel_size_nm=20.0, pixel_size_nm=65.0,
                                  psf_z_step_nm=100.0, z_step_nm=250.0))
    nz, ny, nx = out.shape
    ref = np.einsum("i,j,k->ijk", sampled_gaussian(nz, 250.0, 300.0),
                    integrated_gaussian(ny, 65.0, 120.0), integrated_gaussian(nx, 65.0, 120.0))
    assert (nz, ny, nx) == (9, 19, 19)
    np.testing.assert_allclose(out, ref, atol=1e-5 * ref.max())


def test_same_pixel_size_is_identity(rng):
    psf = rng.random((9, 10)).astype(np.float32) + 0.1
    out = resample_psf(psf, psf_pixel_size_nm=50.0, pixel_size_nm=50.0, shape=(9, 10))
    np.testing.assert_allclose(np.asarray(out), psf / psf.sum(), rtol=1e-4, atol=1e-7)


def test_explicit_shape_even_and_zero_outside():
    psf = gauss_2d(21, 65.0, 120.0).astype(np.float32)
    out = np.asarray(resample_psf(psf, psf_pixel_size_nm=65.0, pixel_size_nm=65.0, shape=(30, 30)))
    # centre 21 // 2 = 10 -> 30 // 2 = 15; samples beyond the input extent are 0
    assert np.unravel_index(np.argmax(out), out.shape) == (15, 15)
    assert np.all(out[:5] == 0) and np.all(out[:, 26:] == 0)
    np.testing.assert_allclose(out[5:26, 5:26], psf / psf.sum(), atol=1e-6)


def test_nonnegative_unit_sum_with_ringing(rng):
    psf = np.zeros((15, 15), np.float32)
    psf[7, 7] = 1.0  # a delta: its interpolant rings, negatives are clipped
    psf += 0.001 * rng.random((15, 15)).astype(np.float32)
    out = np.asarray(resample_psf(psf, psf_pixel_size_nm=30.0, pixel_size_nm=47.0))
    assert out.min() >= 0 and abs(out.sum() - 1) < 1e-5


def test_jit_vmap_and_gradient(x64, rng):
    # smooth and decaying (no interpolation ringing reaches zero, so the clip at 0 is inactive)
    psf = jnp.asarray(gauss_2d(15, 40.0, 70.0) + 0.5 * np.roll(gauss_2d(15, 40.0, 60.0), 1, axis=1) + 0.002)
    fn = lambda p: resample_psf(p, psf_pixel_size_nm=40.0, pixel_size_nm=55.0)  # noqa: E731
    stack = jnp.stack([psf, psf[::-1], psf.T])
    loop = np.stack([np.asarray(fn(p)) for p in stack])
    np.testing.assert_allclose(np.asarray(jax.vmap(fn)(stack)), loop, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(psf)), loop[0], rtol=1e-12, atol=1e-15)
    weights = jnp.asarray(rng.random(fn(psf).shape))
    check_grads(lambda p: jnp.sum(weights * fn(p)), (psf,), order=1, modes=["rev"])


def test_bad_input():
    psf2 = gauss_2d(9, 50.0, 100.0)
    psf3 = np.ones((3, 9, 9))
    with pytest.raises(ValueError, match="psf_z_step_nm"):
        resample_psf(psf3, psf_pixel_size_nm=50.0, pixel_size_nm=60.0, z_step_nm=100.0)
    with pytest.raises(ValueError, match="z_step_nm"):
        resample_psf(psf3, psf_pixel_size_nm=50.0, pixel_size_nm=60.0, psf_z_step_nm=100.0)
    with pytest.raises(ValueError, match="z_step_nm"):
        resample_psf(psf2, psf_pixel_size_nm=50.0, pixel_size_nm=60.0, z_step_nm=100.0)
    with pytest.raises(ValueError, match="pixel_size_nm"):
        resample_psf(psf2, psf_pixel_size_nm=50.0, pixel_size_nm=0.0)
    with pytest.raises(TypeError, match="psf_pixel_size_nm"):
        resample_psf(psf2, psf_pixel_size_nm="a", pixel_size_nm=50.0)
    with pytest.raises(ValueError, match="psf"):
        resample_psf(np.ones(9), psf_pixel_size_nm=50.0, pixel_size_nm=60.0)
    with pytest.raises(ValueError, match="psf"):
        resample_psf(psf2 * np.nan, psf_pixel_size_nm=50.0, pixel_size_nm=60.0)
    with pytest.raises(ValueError, match="psf"):
        resample_psf(np.zeros((9, 9)), psf_pixel_size_nm=50.0, pixel_size_nm=60.0)
    with pytest.raises(ValueError, match="shape"):
        resample_psf(psf2, psf_pixel_size_nm=50.0, pixel_size_nm=60.0, shape=(5, 5, 5))
