"""Tests for jaxsr.deconv.upsample: Lanczos / bicubic against PIL, Fourier against closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from jaxsr.deconv.upsample import bicubic_upsample, fourier_upsample, lanczos_upsample

Image = pytest.importorskip("PIL.Image")

UPSAMPLERS = [lanczos_upsample, bicubic_upsample, fourier_upsample]
PIL_FILTERS = [(lanczos_upsample, "LANCZOS"), (bicubic_upsample, "BICUBIC")]


def _pil_resize(a: np.ndarray, factor: int, name: str) -> np.ndarray:
    img = Image.fromarray(np.asarray(a, np.float32))
    assert img.mode == "F"  # float32 images are resampled in floating point
    out = img.resize((a.shape[1] * factor, a.shape[0] * factor), getattr(Image.Resampling, name))
    return np.asarray(out)


# --------------------------------------------------------------------------- 1. references


@pytest.mark.parametrize("fn,name", PIL_FILTERS)
@pytest.mark.parametrize("shape", [(12, 17), (3, 2), (1, 6)])
@pytest.mark.parametrize("factor", [2, 3])
def test_matches_pil_everywhere(rng, fn, name, shape, factor):
    a = rng.random(shape).astype(np.float32)
    ref = _pil_resize(a, factor, name)
    out = np.asarray(fn(a, factor))
    assert out.shape == ref.shape
    # PIL computes its weights in float64 and stores float32 between its two passes;
    # agreement is at float32 round-off (observed <= 2.4e-7 on values in [0, 1]).
    np.testing.assert_allclose(out, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("fn,name", PIL_FILTERS)
def test_matches_pil_interior_and_border_separately(rng, fn, name):
    a = rng.normal(100.0, 30.0, (20, 20)).astype(np.float32)
    ref = _pil_resize(a, 3, name)
    out = np.asarray(fn(a, 3))
    border = np.ones_like(ref, bool)
    border[9:-9, 9:-9] = False  # within 3 coarse pixels of the edge the support is clipped
    # values ~100: float32 round-off, relative 1e-6 (a few ulp)
    np.testing.assert_allclose(out[~border], ref[~border], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(out[border], ref[border], rtol=1e-6, atol=1e-5)


def test_lanczos_kernel_weights_closed_form():
    # Away from borders one output sample is sum_i sinc(d) sinc(d/3) x_i / sum of weights.
    n, f, j = 16, 3, 25  # fine sample j at coarse coordinate (j + 0.5)/3 - 0.5 = 7.8333
    c = (j + 0.5) / f - 0.5
    i = np.arange(n)
    d = i - c
    w = np.where(np.abs(d) < 3, np.sinc(d) * np.sinc(d / 3), 0.0)
    x = np.cos(0.7 * i) + 0.1 * i**2
    expected = np.sum(w * x) / np.sum(w)
    out = np.asarray(lanczos_upsample(jnp.asarray(np.tile(x, (4, 1)), jnp.float32), f))
    np.testing.assert_allclose(out[5, j], expected, rtol=1e-5)


@pytest.mark.parametrize("n", [16, 15])
def test_fourier_exact_for_band_limited_periodic(n):
    f = 3
    m = np.arange(n)
    xj = (np.arange(n * f) + 0.5) / f - 0.5  # fine sample positions in coarse pixels

    def signal(t, s):
        # frequencies below Nyquist along y, and the Nyquist term cos(pi t) for even n along x
        nyq = np.cos(np.pi * s) if n % 2 == 0 else np.cos(2 * np.pi * 7 * s / n)
        return (np.cos(2 * np.pi * 3 * t / n + 0.3)[:, None] * np.sin(2 * np.pi * 2 * s / n + 0.1)[None, :]
                + 0.5 * np.cos(2 * np.pi * 5 * t / n)[:, None] * nyq[None, :] + 2.0)

    out = np.asarray(fourier_upsample(jnp.asarray(signal(m, m), jnp.float32), f))
    np.testing.assert_allclose(out, signal(xj, xj), atol=2e-6)


@pytest.mark.parametrize("fn", UPSAMPLERS)
@pytest.mark.parametrize("factor", [2, 3])
def test_odd_and_even_geometry_matches_fine_grid_convention(rng, fn, factor):
    """Camera pixel i covers fine pixels factor*i ... factor*i + factor - 1."""
    a = rng.random((10, 10)).astype(np.float32)
    out = np.asarray(fn(a, factor))
    if factor % 2:  # odd: the coarse centre is a fine centre; interpolators reproduce the samples
        np.testing.assert_allclose(out[factor // 2::factor, factor // 2::factor], a, atol=2e-6)
    # any factor: a mirror-symmetric image gives a mirror-symmetric result (the fine grid is
    # centred on the coarse one; sampling at j / factor instead would break the symmetry)
    sym = np.exp(-0.5 * ((np.arange(11.0) - 5.0) / 1.5) ** 2)
    img = (np.outer(rng.random(11), sym) + rng.random((11, 1))).astype(np.float32)  # rows symmetric in x
    out = np.asarray(fn(img, factor))
    np.testing.assert_allclose(out, out[:, ::-1], atol=2e-6)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bicubic_reproduces_linear_ramp(factor):
    # Keys' kernel with a = -0.5 reproduces polynomials up to degree 2 (away from the borders)
    ramp = np.tile(np.arange(10.0, dtype=np.float32), (6, 1))
    r = np.asarray(bicubic_upsample(ramp, factor))[3]
    c = (np.arange(10 * factor) + 0.5) / factor - 0.5
    inner = slice(2 * factor, 8 * factor)
    np.testing.assert_allclose(r[inner], c[inner], atol=1e-5)


# --------------------------------------------------------------------------- flux / identity / laws


@pytest.mark.parametrize("fn", UPSAMPLERS)
def test_flat_image_stays_flat_and_mean_preserved(rng, fn):
    flat = jnp.full((7, 9), 3.5)
    np.testing.assert_allclose(np.asarray(fn(flat, 3)), 3.5, rtol=1e-6)
    # smooth image: the mean is preserved (exactly for Fourier, to <0.2 % for the others)
    yy, xx = np.mgrid[:24, :24]
    smooth = (10 + np.sin(yy / 4.0) + np.cos(xx / 5.0)).astype(np.float32)
    out = np.asarray(fn(smooth, 3))
    np.testing.assert_allclose(out.mean(), smooth.mean(), rtol=2e-3 if fn is not fourier_upsample else 1e-6)


@pytest.mark.parametrize("fn", UPSAMPLERS)
def test_factor_one_is_identity(rng, fn):
    a = rng.random((5, 6)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(fn(a, 1)), a)


@settings(max_examples=10)
@given(st.floats(-3, 3), st.floats(-3, 3))
def test_linearity(alpha, beta):
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.random((2, 6, 7)), jnp.float32)
    for fn in UPSAMPLERS:
        lhs = fn(alpha * x[0] + beta * x[1], 2)
        rhs = alpha * fn(x[0], 2) + beta * fn(x[1], 2)
        np.testing.assert_allclose(np.asarray(lhs), np.asarray(rhs), atol=1e-5)


# --------------------------------------------------------------------------- 2. jit / vmap / batch


@pytest.mark.parametrize("fn", UPSAMPLERS)
def test_jit_vmap_batch_invariance(rng, fn):
    batch = jnp.asarray(rng.random((3, 8, 6)), jnp.float32)
    plain = np.stack([np.asarray(fn(b, 3)) for b in batch])
    batched = np.asarray(fn(batch, 3))
    jitted = np.asarray(jax.jit(fn, static_argnums=1)(batch, 3))
    vmapped = np.asarray(jax.vmap(lambda b: fn(b, 3))(batch))
    assert batched.shape == (3, 24, 18)
    for other in (batched, jitted, vmapped):
        np.testing.assert_allclose(other, plain, atol=1e-6)


def test_float64_dtype_preserved(x64, rng):
    a = jnp.asarray(rng.random((4, 5)), jnp.float64)
    for fn in UPSAMPLERS:
        assert fn(a, 2).dtype == jnp.float64


# --------------------------------------------------------------------------- 3. gradients


@pytest.mark.parametrize("fn", UPSAMPLERS)
def test_check_grads_float64(x64, rng, fn):
    a = jnp.asarray(rng.random((5, 4)), jnp.float64)
    check_grads(lambda x: fn(x, 3), (a,), order=1, modes=["rev"])


@pytest.mark.parametrize("fn", UPSAMPLERS)
def test_gradient_finite_at_zero_image(fn):
    g = jax.grad(lambda x: jnp.sum(fn(x, 2) ** 2))(jnp.zeros((4, 4)))
    assert bool(jnp.all(jnp.isfinite(g)))


# --------------------------------------------------------------------------- 4. bad input


@pytest.mark.parametrize("fn", UPSAMPLERS)
def test_bad_input(fn):
    img = jnp.ones((4, 4))
    with pytest.raises(ValueError, match="factor"):
        fn(img, 0)
    with pytest.raises(TypeError, match="factor"):
        fn(img, 2.0)
    with pytest.raises(TypeError, match="factor"):
        fn(img, True)
    with pytest.raises(ValueError, match="image"):
        fn(jnp.ones(4), 2)
    with pytest.raises(ValueError, match="image"):
        fn(img.at[1, 1].set(jnp.nan), 2)
    with pytest.raises(TypeError, match="image"):
        fn("abc", 2)


def test_lanczos_bad_order():
    with pytest.raises(ValueError, match="'a'"):
        lanczos_upsample(jnp.ones((4, 4)), 2, a=0)
    with pytest.raises(TypeError, match="'a'"):
        lanczos_upsample(jnp.ones((4, 4)), 2, a=2.5)


def test_integer_image_converted_to_float():
    out = lanczos_upsample(np.arange(12, dtype=np.int32).reshape(3, 4), 2)
    assert out.dtype == jnp.float32
