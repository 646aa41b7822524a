"""convolve, bin_image and expected_image against scipy / scikit-image references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy import ndimage, signal
from skimage.measure import block_reduce

from jaxsr.forward import bin_image, convolve, expected_image

RTOL = 1e-4  # float32 FFT against float64 scipy


def gaussian_psf(shape, sigma):
    """Unit-sum Gaussian centred at n // 2 on each axis (package convention)."""
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    r2 = sum((g / s) ** 2 for g, s in zip(grids, np.broadcast_to(sigma, len(shape))))
    psf = np.exp(-0.5 * r2)
    return (psf / psf.sum()).astype(np.float32)


def assert_close(actual, desired, rtol=RTOL):
    desired = np.asarray(desired, dtype=np.float64)
    scale = np.abs(desired).max()
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), desired, rtol=rtol, atol=rtol * scale)


def scipy_same_centred(image, psf):
    """fftconvolve 'full' cropped so the kernel centre is index k // 2 on each axis."""
    full = signal.fftconvolve(image.astype(np.float64), psf.astype(np.float64), mode="full")
    index = tuple(slice(k // 2, k // 2 + n) for k, n in zip(psf.shape, image.shape))
    return full[index]


# --------------------------------------------------------------------------- references
@pytest.mark.parametrize("kshape", [(5, 5), (3, 7), (1, 1), (16, 24)])
def test_zero_boundary_matches_fftconvolve_same_for_odd(rng, kshape):
    image = rng.random((16, 24)).astype(np.float32)
    psf = rng.random(kshape).astype(np.float32)
    if all(k % 2 for k in kshape):
        ref = signal.fftconvolve(image.astype(np.float64), psf.astype(np.float64), mode="same")
    else:
        ref = scipy_same_centred(image, psf)
    assert_close(convolve(image, psf), ref)


@pytest.mark.parametrize("kshape", [(4, 4), (2, 6), (4, 5)])
def test_zero_boundary_even_psf_is_centred_at_n_over_2(rng, kshape):
    image = rng.random((16, 24)).astype(np.float32)
    psf = rng.random(kshape).astype(np.float32)
    out = convolve(image, psf)
    assert_close(out, scipy_same_centred(image, psf))
    # scipy.ndimage uses the same k // 2 centre for even kernels.
    assert_close(out, ndimage.convolve(image.astype(np.float64), psf.astype(np.float64), mode="constant"))
    # A delta PSF at index n // 2 leaves the image in place (no half-pixel shift).
    delta = np.zeros(kshape, np.float32)
    delta[kshape[0] // 2, kshape[1] // 2] = 1.0
    np.testing.assert_allclose(convolve(image, delta), image, atol=1e-5)


@pytest.mark.parametrize("boundary,mode", [("reflect", "reflect"), ("periodic", "wrap")])
@pytest.mark.parametrize("kshape", [(5, 5), (4, 6), (16, 24), (1, 3)])
def test_boundaries_match_ndimage(rng, boundary, mode, kshape):
    image = rng.random((16, 24)).astype(np.float32)
    psf = rng.random(kshape).astype(np.float32)
    ref = ndimage.convolve(image.astype(np.float64), psf.astype(np.float64), mode=mode)
    assert_close(convolve(image, psf, boundary=boundary), ref)


def test_reflect_is_not_mirror(rng):
    # Documented: jaxsr 'reflect' == scipy.ndimage 'reflect' (edge repeated), not 'mirror'.
    image = rng.random((12, 12)).astype(np.float32)
    psf = rng.random((5, 5)).astype(np.float32)
    mirror = ndimage.convolve(image.astype(np.float64), psf.astype(np.float64), mode="mirror")
    assert np.abs(np.asarray(convolve(image, psf, boundary="reflect")) - mirror).max() > 1e-3


def test_signed_kernel_is_allowed(rng):
    image = rng.random((12, 12)).astype(np.float32)
    laplace = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)
    ref = ndimage.convolve(image.astype(np.float64), laplace.astype(np.float64), mode="wrap")
    np.testing.assert_allclose(convolve(image, laplace, boundary="periodic"), ref, atol=1e-5)


@pytest.mark.parametrize("boundary,mode", [("zero", "constant"), ("reflect", "reflect"), ("periodic", "wrap")])
def test_3d_matches_ndimage(rng, boundary, mode):
    image = rng.random((6, 10, 12)).astype(np.float32)
    psf = rng.random((3, 4, 5)).astype(np.float32)
    ref = ndimage.convolve(image.astype(np.float64), psf.astype(np.float64), mode=mode)
    assert_close(convolve(image, psf, boundary=boundary), ref)


def test_batch_axes_are_independent(rng):
    images = rng.random((2, 3, 12, 12)).astype(np.float32)
    psf = gaussian_psf((5, 5), 1.2)
    out = convolve(images, psf, boundary="reflect")
    assert out.shape == images.shape
    for i in range(2):
        for j in range(3):
            ref = ndimage.convolve(images[i, j].astype(np.float64), psf.astype(np.float64), mode="reflect")
            assert_close(out[i, j], ref)


def test_2d_psf_on_3d_stack_convolves_each_plane(rng):
    stack = rng.random((4, 12, 12)).astype(np.float32)
    psf = gaussian_psf((5, 5), 1.0)
    out = convolve(stack, psf)
    for z in range(4):
        assert_close(out[z], signal.fftconvolve(stack[z].astype(np.float64), psf, mode="same"))


# --------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("boundary", ["zero", "reflect", "periodic"])
def test_jit_and_vmap_agree(rng, boundary):
    images = rng.random((3, 12, 16)).astype(np.float32)
    psfs = rng.random((3, 4, 5)).astype(np.float32)
    eager = convolve(images, psfs[0], boundary=boundary)
    jitted = jax.jit(convolve, static_argnames="boundary")(images, psfs[0], boundary=boundary)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
    # vmap over images with a shared PSF, and over (image, psf) pairs.
    vm = jax.vmap(lambda im: convolve(im, psfs[0], boundary=boundary))(images)
    np.testing.assert_allclose(vm, eager, rtol=1e-5, atol=1e-6)
    pairs = jax.vmap(lambda im, p: convolve(im, p, boundary=boundary))(images, psfs)
    for i in range(3):
        np.testing.assert_allclose(pairs[i], convolve(images[i], psfs[i], boundary=boundary), rtol=1e-5, atol=1e-6)


def test_float64_input_stays_float64(x64, rng):
    image = rng.random((8, 8))
    psf = rng.random((3, 3))
    out = convolve(image, psf)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, signal.fftconvolve(image, psf, mode="same"), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("boundary", ["zero", "reflect", "periodic"])
@pytest.mark.parametrize("kshape", [(3, 3), (2, 4)])
def test_check_grads_image_and_psf(x64, rng, boundary, kshape):
    image = jnp.asarray(rng.random((6, 7)))
    psf = jnp.asarray(rng.random(kshape))
    weights = jnp.asarray(rng.random((6, 7)))

    def f(im, p):
        return jnp.sum(weights * convolve(im, p, boundary=boundary) ** 2)

    check_grads(f, (image, psf), order=1, modes=["rev"])


def test_gradient_finite_on_zero_image(rng):
    psf = gaussian_psf((5, 5), 1.0)
    g_im, g_psf = jax.grad(lambda im, p: jnp.sum(convolve(im, p) ** 2), argnums=(0, 1))(
        jnp.zeros((8, 8)), jnp.asarray(psf)
    )
    assert np.all(np.isfinite(g_im)) and np.all(np.isfinite(g_psf))


# --------------------------------------------------------------------------- properties
SEEDS = st.integers(0, 2**31 - 1)
_PSF = gaussian_psf((5, 5), (1.0, 1.7))
_conv_periodic = jax.jit(lambda im, p: convolve(im, p, boundary="periodic"))
_conv_zero = jax.jit(lambda im, p: convolve(im, p, boundary="zero"))


@settings(max_examples=10)
@given(seed=SEEDS)
def test_flux_conservation_periodic(seed):
    image = np.random.default_rng(seed).random((16, 16)).astype(np.float32) * 100
    out = _conv_periodic(image, _PSF)
    np.testing.assert_allclose(float(out.sum()), float(image.astype(np.float64).sum()), rtol=1e-5)


@settings(max_examples=10)
@given(seed=SEEDS, a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_linearity(seed, a, b):
    r = np.random.default_rng(seed)
    u, v = r.random((2, 16, 16)).astype(np.float32)
    lhs = _conv_zero(a * u + b * v, _PSF)
    rhs = a * _conv_zero(u, _PSF) + b * _conv_zero(v, _PSF)
    np.testing.assert_allclose(lhs, rhs, atol=1e-5 * (abs(a) + abs(b) + 1))


@settings(max_examples=10)
@given(seed=SEEDS, dy=st.integers(-16, 16), dx=st.integers(-16, 16))
def test_shift_equivariance_periodic(seed, dy, dx):
    image = np.random.default_rng(seed).random((16, 16)).astype(np.float32)
    shifted_first = _conv_periodic(np.roll(image, (dy, dx), axis=(0, 1)), _PSF)
    shifted_after = jnp.roll(_conv_periodic(image, _PSF), (dy, dx), axis=(0, 1))
    np.testing.assert_allclose(shifted_first, shifted_after, atol=1e-5)


def test_point_source_flux_and_position_zero_boundary():
    image = np.zeros((15, 15), np.float32)
    image[7, 5] = 10.0
    out = np.asarray(convolve(image, gaussian_psf((6, 6), 1.0)))
    assert np.unravel_index(out.argmax(), out.shape) == (7, 5)
    np.testing.assert_allclose(out.sum(), 10.0, rtol=1e-5)


# --------------------------------------------------------------------------- bad input
def test_bad_inputs():
    image = jnp.ones((8, 8))
    with pytest.raises(ValueError, match="psf"):
        convolve(image, jnp.ones((9, 3)))
    with pytest.raises(ValueError, match="psf"):
        convolve(image, jnp.ones(3))
    with pytest.raises(ValueError, match="psf"):
        convolve(jnp.ones((8, 8, 8, 8)), jnp.ones((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="psf"):
        convolve(image, jnp.full((3, 3), jnp.nan))
    with pytest.raises(ValueError, match="psf"):
        convolve(image, jnp.full((3, 3), jnp.inf))
    with pytest.raises(ValueError, match="image"):
        convolve(image.at[0, 0].set(jnp.nan), jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="image"):
        convolve(jnp.ones((8, 8)), jnp.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="boundary"):
        convolve(image, jnp.ones((3, 3)), boundary="mirror")
    with pytest.raises(TypeError, match="image"):
        convolve("abc", jnp.ones((3, 3)))


def test_tiny_image_and_psf_equal_size():
    out = convolve(jnp.ones((1, 1)), jnp.full((1, 1), 2.0))
    np.testing.assert_allclose(out, [[2.0]])


# =========================================================================== bin_image
@pytest.mark.parametrize("factor", [1, 2, 4])
def test_bin_image_matches_block_reduce(rng, factor):
    image = rng.random((2, 8, 16)).astype(np.float32)
    ref = block_reduce(image.astype(np.float64), (1, factor, factor), np.sum)
    np.testing.assert_allclose(bin_image(image, factor=factor), ref, rtol=1e-6)


def test_bin_image_3d_tuple_and_int_on_stack(rng):
    stack = rng.random((4, 6, 8)).astype(np.float32)
    out = bin_image(stack, factor=(2, 3, 2))
    np.testing.assert_allclose(out, block_reduce(stack.astype(np.float64), (2, 3, 2), np.sum), rtol=1e-6)
    lateral = bin_image(stack, factor=2)  # an int bins (y, x) only
    assert lateral.shape == (4, 3, 4)
    np.testing.assert_allclose(float(lateral.sum()), float(stack.astype(np.float64).sum()), rtol=1e-6)


def test_bin_image_jit_vmap_grad(x64, rng):
    image = jnp.asarray(rng.random((3, 4, 6)))
    f = jax.jit(lambda im: bin_image(im, factor=2))
    np.testing.assert_allclose(f(image), bin_image(image, factor=2))
    np.testing.assert_allclose(jax.vmap(f)(image), bin_image(image, factor=2))
    check_grads(lambda im: jnp.sum(bin_image(im, factor=(2, 3)) ** 2), (image,), order=1, modes=["rev"])


def test_bin_image_bad_factor():
    with pytest.raises(ValueError, match="factor.*axis x"):
        bin_image(jnp.ones((4, 6)), factor=4)
    with pytest.raises(ValueError, match="factor.*axis y"):
        bin_image(jnp.ones((5, 6)), factor=(2, 3))
    with pytest.raises(ValueError, match="factor"):
        bin_image(jnp.ones((4, 4)), factor=0)
    with pytest.raises(ValueError, match="factor"):
        bin_image(jnp.ones((4, 4)), factor=(1, 1, 1, 1))
    with pytest.raises(TypeError, match="factor"):
        bin_image(jnp.ones((4, 4)), factor=2.0)
    with pytest.raises(ValueError, match="image"):
        bin_image(jnp.ones((4, 4)), factor=(2, 2, 2))


# =========================================================================== expected_image
def test_expected_image_matches_scipy_pipeline(rng):
    obj = (rng.random((16, 16)) * 50).astype(np.float32)
    psf = gaussian_psf((7, 7), 1.5)
    background = (rng.random((8, 8)) * 3).astype(np.float32)
    ref = block_reduce(signal.fftconvolve(obj.astype(np.float64), psf, mode="same"), (2, 2), np.sum) + background
    out = expected_image(obj, psf, background_photons=background, binning=2)
    assert_close(out, ref)


def test_expected_image_3d_and_non_negative(rng):
    obj = np.zeros((6, 8, 8), np.float32)
    obj[3, 4, 4] = 1000.0
    psf = gaussian_psf((5, 5, 5), (1.5, 1.0, 1.0))
    out = expected_image(obj, psf, binning=2)
    assert out.shape == (6, 4, 4)
    assert float(out.min()) >= 0.0  # FFT round-off clipped
    np.testing.assert_allclose(float(out.sum()), 1000.0, rtol=1e-4)


def test_expected_image_bad_inputs():
    obj = jnp.ones((8, 8))
    psf = jnp.ones((3, 3)) / 9
    with pytest.raises(ValueError, match="obj"):
        expected_image(-obj, psf)
    with pytest.raises(ValueError, match="psf"):
        expected_image(obj, -psf)
    with pytest.raises(ValueError, match="psf"):
        expected_image(obj, jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="background_photons"):
        expected_image(obj, psf, background_photons=-1.0)
    with pytest.raises(ValueError, match="background_photons"):
        expected_image(obj, psf, background_photons=jnp.ones((3, 3)), binning=2)
    with pytest.raises(ValueError, match="factor"):
        expected_image(obj, psf, binning=3)


def test_expected_image_background_may_not_grow_the_image():
    """The background broadcasts *to* the binned image: one that would add an axis or enlarge one (a
    (2, 4, 4) background on a (4, 4) image used to return two images) is refused naming it, in
    expected_image and in form_image; smaller ones (a scalar, a row, a column, one per frame) still add."""
    from jaxsr.forward import form_image

    obj, psf = jnp.ones((8, 8)), jnp.ones((3, 3)) / 9
    for bad in (jnp.ones((2, 4, 4)), jnp.ones((1, 4, 4)), jnp.ones((4, 1, 1))):
        with pytest.raises(ValueError, match="argument 'background_photons'.*binned image shape \\(4, 4\\)"):
            expected_image(obj, psf, background_photons=bad, binning=2)
        with pytest.raises(ValueError, match="argument 'background_photons'"):
            form_image(jax.random.key(0), obj, psf, background_photons=bad, binning=2)
    with pytest.raises(ValueError, match="argument 'background_photons'"):    # a (3, 1, 1) on 2 frames
        expected_image(jnp.ones((2, 8, 8)), psf, background_photons=jnp.ones((3, 1, 1)), binning=2)
    base = np.asarray(expected_image(obj, psf, binning=2))
    for good in (2.0, jnp.full((4,), 2.0), jnp.full((4, 1), 2.0), jnp.full((1, 4), 2.0), jnp.full((4, 4), 2.0)):
        out = expected_image(obj, psf, background_photons=good, binning=2)
        assert out.shape == (4, 4)
        np.testing.assert_allclose(out, base + 2.0, rtol=1e-6)
    frames = expected_image(jnp.ones((2, 8, 8)), psf, background_photons=jnp.array([1.0, 3.0])[:, None, None],
                            binning=2)
    np.testing.assert_allclose(frames[1] - frames[0], 2.0, rtol=1e-6)
