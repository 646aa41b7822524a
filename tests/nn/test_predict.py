"""Tests of jaxsr.nn.predict: per-frame normalisation and tiled, blended prediction.

References used: ``numpy.percentile``/``mean``/``std`` for the statistics,
``scipy.ndimage.correlate`` (whole image, mirror boundary) for local filters,
direct NumPy D4 symmetrisation and its closed form (4-neighbour mean) for
test-time augmentation, and the whole-frame ``unet_apply`` for the U-Net.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from jaxsr.nn.predict import (
    Normalization,
    denormalize,
    normalize_meanstd,
    normalize_offset_max,
    normalize_percentile,
    predict_tiled,
)
from jaxsr.nn.unet import UNetConfig, unet_apply, unet_init

# --------------------------------------------------------------------------- helpers

KERNEL3 = np.array([[0.1, -0.3, 0.2], [0.5, 1.0, -0.4], [0.05, 0.3, -0.15]], np.float32)  # no symmetry
BLUR3 = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 16  # D4-symmetric


def _correlate_mirror(kernel):
    """Tile-wise 'mirror' correlation with ``kernel`` (odd square), as a batched jnp function."""
    k = jnp.asarray(kernel)
    r = kernel.shape[0] // 2

    def fn(t):
        p = jnp.pad(t, ((0, 0), (r, r), (r, r)), mode="reflect")
        out = jax.lax.conv_general_dilated(p[:, None], k[None, None], (1, 1), "VALID")
        return out[:, 0]

    return fn


conv3 = _correlate_mirror(KERNEL3)
blur3 = _correlate_mirror(BLUR3)
KERNEL5 = np.outer([1, -2, 3, 0.5, 1], [0.2, 1, -1, 0.3, 2]).astype(np.float32) / 10
conv5 = _correlate_mirror(KERNEL5)


def shift_right(t):
    """Shift one pixel along x with zero fill: local, not D4-equivariant."""
    return jnp.pad(t[..., :-1], ((0, 0), (0, 0), (1, 0)))


def identity(t):
    return t


def tile_mean(t):
    """Each tile replaced by its mean: the blend of per-tile constants."""
    return jnp.broadcast_to(jnp.mean(t, axis=(-2, -1), keepdims=True), t.shape)


TINY = UNetConfig(depth=2, features=8, decoder_features=8)


@pytest.fixture(scope="module")
def unet_fn():
    """The tiny U-Net with random LeCun-normal weights (and random biases).

    Shapes come from ``jax.eval_shape(unet_init)``; the values are drawn with NumPy,
    because running ``unet_init`` itself costs ~7 s of CPU on this machine.
    """
    shapes = jax.eval_shape(functools.partial(unet_init, config=TINY), jax.random.key(0))
    rng = np.random.default_rng(3)

    def draw(s):
        std = 0.1 if len(s.shape) == 1 else 1 / np.sqrt(np.prod(s.shape[:-1]))
        return jnp.asarray(rng.normal(0.0, std, s.shape), s.dtype)

    params = jax.tree_util.tree_map(draw, shapes)
    return jax.jit(functools.partial(unet_apply, params, config=TINY))


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("low,high", [(1.0, 99.8), (0.0, 100.0), (3.0, 50.0)])
def test_percentile_matches_numpy(rng, low, high):
    x = rng.gamma(2.0, 30.0, size=(3, 20, 24)).astype(np.float32)
    normed, norm = normalize_percentile(x, low=low, high=high)
    lo, hi = np.percentile(x.astype(np.float64), [low, high], axis=(-2, -1))
    np.testing.assert_allclose(norm.offset, lo, rtol=1e-5)
    np.testing.assert_allclose(norm.scale, hi - lo, rtol=1e-5)
    ref = (x - lo[:, None, None]) / (hi - lo)[:, None, None]
    np.testing.assert_allclose(normed, ref, rtol=1e-5, atol=1e-5)
    assert normed.shape == x.shape and normed.dtype == jnp.float32


@settings(max_examples=10)
@given(low=st.floats(0.0, 99.0), width=st.floats(0.01, 100.0), n=st.sampled_from([1, 7, 40]))
def test_percentile_property(low, width, n):
    """Any percentile pair, ranks near the ends (top_k) or in the middle (sort): numpy's value."""
    high = min(low + width, 100.0)
    x = np.random.default_rng(n).normal(size=(2, n, 33)).astype(np.float32)
    _, norm = normalize_percentile(x, low=low, high=high)
    lo, hi = np.percentile(x.astype(np.float64), [low, high], axis=(-2, -1))
    np.testing.assert_allclose(norm.offset, lo, atol=1e-5)
    np.testing.assert_allclose(norm.scale, np.where(hi > lo, hi - lo, 1.0), atol=1e-5)


def test_offset_max_matches_formula(rng):
    x = (100 + rng.poisson(50, size=(2, 3, 16, 12))).astype(np.uint16)
    offset = np.array([100.0, 90.0, 95.0])  # one camera offset per frame along the last leading axis
    normed, norm = normalize_offset_max(x, offset=offset)
    xf = x.astype(np.float64)
    ref = (xf - offset[:, None, None]) / (xf.max(axis=(-2, -1)) - offset)[..., None, None]
    np.testing.assert_allclose(normed, ref, rtol=1e-5)
    np.testing.assert_allclose(normed.max(axis=(-2, -1)), 1.0, rtol=1e-6)
    assert norm.offset.shape == (2, 3) and normed.dtype == jnp.float32


def test_meanstd_matches_numpy(rng):
    x = rng.normal(5.0, 3.0, size=(4, 10, 14)).astype(np.float32)
    normed, norm = normalize_meanstd(x)
    np.testing.assert_allclose(norm.offset, x.mean(axis=(-2, -1)), rtol=1e-5)
    np.testing.assert_allclose(norm.scale, x.astype(np.float64).std(axis=(-2, -1)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(normed).mean(axis=(-2, -1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(normed).std(axis=(-2, -1)), 1.0, rtol=1e-4)


@pytest.mark.parametrize("method", ["percentile", "offset_max", "meanstd"])
def test_round_trip(rng, method):
    x = rng.gamma(2.0, 30.0, size=(3, 9, 11)).astype(np.float32)
    fn = {"percentile": normalize_percentile, "offset_max": functools.partial(normalize_offset_max, offset=7.0),
          "meanstd": normalize_meanstd}[method]
    normed, norm = fn(x)
    np.testing.assert_allclose(denormalize(normed, norm), x, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(norm.invert(normed), x, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(norm.apply(x), normed, rtol=1e-6, atol=1e-6)
    assert np.all(np.asarray(norm.scale) > 0)


@pytest.mark.parametrize("method", ["percentile", "offset_max", "meanstd"])
def test_flat_frame_no_nan(method):
    x = np.stack([np.full((6, 5), 3.0, np.float32), np.arange(30.0, dtype=np.float32).reshape(6, 5)])
    fn = {"percentile": normalize_percentile, "offset_max": functools.partial(normalize_offset_max, offset=3.0),
          "meanstd": normalize_meanstd}[method]
    normed, norm = fn(x)
    assert np.all(np.isfinite(normed))
    np.testing.assert_array_equal(normed[0], 0.0)  # flat frame -> offset subtracted, scale 1
    assert float(norm.scale[0]) == 1.0 and float(norm.scale[1]) != 1.0
    np.testing.assert_allclose(denormalize(normed, norm), x, rtol=1e-6, atol=1e-5)


def test_normalisation_jit_vmap_invariance(rng):
    x = jnp.asarray(rng.normal(size=(3, 8, 9)).astype(np.float32))
    for fn in (normalize_meanstd, functools.partial(normalize_percentile, low=2.0, high=98.0),
               functools.partial(normalize_offset_max, offset=-1.0)):
        normed, norm = fn(x)
        for other in (jax.jit(fn), jax.vmap(fn)):
            n2, s2 = other(x)
            np.testing.assert_allclose(n2, normed, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(s2.scale, norm.scale, rtol=1e-6)


def test_normalisation_grads(x64, rng):
    x = jnp.asarray(rng.normal(size=(2, 5, 6)))
    check_grads(lambda v: normalize_meanstd(v)[0], (x,), order=1, modes=["rev"])
    check_grads(lambda v: normalize_percentile(v, low=10.0, high=90.0)[0], (x,), order=1, modes=["rev"])
    check_grads(lambda v, o: normalize_offset_max(v, offset=o)[0], (x, jnp.asarray(-3.0)), order=1, modes=["rev"])


def test_flat_frame_finite_gradient():
    x = jnp.full((4, 4), 2.0)
    for fn in (normalize_meanstd, normalize_percentile, functools.partial(normalize_offset_max, offset=2.0)):
        def loss(v, fn=fn):
            normed, norm = fn(v)
            return jnp.sum(normed ** 2) + jnp.sum(norm.scale)
        g = jax.grad(loss)(x)
        assert np.all(np.isfinite(g))


def test_normalisation_bad_input():
    with pytest.raises(ValueError, match="image"):
        normalize_meanstd(np.ones(5))
    with pytest.raises(ValueError, match="image"):
        normalize_percentile(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="image"):
        normalize_offset_max(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="high"):
        normalize_percentile(np.ones((3, 3)), low=50.0, high=40.0)
    with pytest.raises(ValueError, match="low"):
        normalize_percentile(np.ones((3, 3)), low=-1.0)
    with pytest.raises(TypeError, match="low"):
        normalize_percentile(np.ones((3, 3)), low="1")
    with pytest.raises(ValueError, match="offset"):
        normalize_offset_max(np.ones((3, 3)), offset=np.inf)
    with pytest.raises(ValueError, match="offset"):
        normalize_offset_max(np.ones((2, 3, 3)), offset=np.zeros(3))
    with pytest.raises(TypeError, match="norm"):
        denormalize(np.ones((3, 3)), (0.0, 1.0))
    assert isinstance(normalize_meanstd(np.ones((2, 2)))[1], Normalization)


# --------------------------------------------------------------------------- tiling: exactness


@pytest.mark.parametrize("shape", [(37, 53), (20, 12), (64, 64), (2, 45, 70), (1, 7)])
def test_identity_is_exact(rng, shape):
    x = rng.normal(size=shape).astype(np.float32)
    for multiple in (1, 8):
        out = predict_tiled(identity, x, tile=32, overlap=12, multiple=multiple, batch_size=3)
        np.testing.assert_array_equal(out, x)
        assert out.dtype == np.float32 and out.shape == x.shape


@pytest.mark.parametrize("shape", [(37, 53), (20, 12), (64, 64), (3, 45, 70)])
@pytest.mark.parametrize("multiple", [1, 4])
def test_local_filter_equals_untiled(rng, shape, multiple):
    # 3x3 (radius 1) and 5x5 (radius 2) correlations with overlap 8: zero margin 8 // 4 = 2 >= radius.
    x = rng.random(shape).astype(np.float32)
    for fn, kernel in ((conv3, KERNEL3), (conv5, KERNEL5)):
        out = predict_tiled(fn, x, tile=(24, 32), overlap=8, multiple=multiple, batch_size=4)
        ref = ndi.correlate(x.astype(np.float64), kernel.reshape((1,) * (x.ndim - 2) + kernel.shape), mode="mirror")
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


@settings(max_examples=10)
@given(
    ny=st.integers(2, 70), nx=st.integers(2, 70), tile=st.sampled_from([16, 24, 32]),
    overlap=st.sampled_from([4, 6, 8]), multiple=st.sampled_from([1, 2, 4]),
)
def test_local_filter_exact_property(ny, nx, tile, overlap, multiple):
    """Law: an equivariant filter of radius <= overlap // 4 is reproduced exactly by tiling.

    The reference is the filter on the whole frame padded at its end to a multiple of
    ``multiple`` as UNet pads (reflect, or edge when a pad is not shorter than the side).
    """
    x = np.random.default_rng(ny * 100 + nx).random((ny, nx)).astype(np.float32)
    out = predict_tiled(conv3, x, tile=tile, overlap=overlap, multiple=multiple, batch_size=4)
    py, px = -ny % multiple, -nx % multiple
    mode = "reflect" if py < ny and px < nx else "edge"
    padded = np.pad(x.astype(np.float64), ((0, py), (0, px)), mode=mode)
    ref = ndi.correlate(padded, KERNEL3, mode="mirror")[:ny, :nx]
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


def test_blend_has_no_seams(rng):
    """Per-tile constants (tile means) are blended smoothly: no step at a tile border.

    With overlap 16 the raised-cosine rise spans 16 - 2 * 4 = 8 pixels, so the
    largest step between neighbouring pixels of the blended constants is
    about pi / (2 * 8) ~ 0.2 of the largest difference between tile means;
    hard-edged tiles would step by the whole difference.
    """
    yy, xx = np.mgrid[:80, :96]
    x = (yy / 10.0 + (xx / 12.0) ** 2).astype(np.float32)  # tile means differ a lot
    out = predict_tiled(tile_mean, x, tile=32, overlap=16)
    steps = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    spread = out.max() - out.min()
    assert steps <= 0.25 * spread / 2  # neighbouring tiles differ by at most about half the spread
    # Reference: every pixel is a convex combination of the means of the tiles that cover it.
    assert out.min() >= x.min() - 1e-5 and out.max() <= x.max() + 1e-5


# --------------------------------------------------------------------------- test-time augmentation


@pytest.mark.parametrize("tile", [32, (24, 40)])
def test_tta_equivariant_equals_plain(rng, tile):
    x = rng.random((2, 50, 61)).astype(np.float32)
    plain = predict_tiled(blur3, x, tile=tile, overlap=8)
    tta = predict_tiled(blur3, x, tile=tile, overlap=8, tta=True)
    np.testing.assert_allclose(tta, plain, atol=1e-6)
    np.testing.assert_allclose(plain, ndi.correlate(x, BLUR3[None], mode="mirror"), atol=1e-5)


def _d4_symmetrised_shift(x):
    """Direct NumPy: mean over the 8 g in D4 of g^-1 shift(g x) on the whole image."""
    def shift(a):
        return np.pad(a[:, :-1], ((0, 0), (1, 0)))
    total = np.zeros_like(x, dtype=np.float64)
    for flip in (False, True):
        for k in range(4):
            g = np.rot90(x[:, ::-1] if flip else x, k)
            y = np.rot90(shift(g), -k)
            total += y[:, ::-1] if flip else y
    return total / 8


@pytest.mark.parametrize("tile", [32, (24, 40)])
def test_tta_symmetrises_a_shift(rng, tile):
    x = rng.random((45, 58)).astype(np.float32)
    out = predict_tiled(shift_right, x, tile=tile, overlap=8, tta=True)
    np.testing.assert_allclose(out, _d4_symmetrised_shift(x.astype(np.float64)), atol=1e-6)
    # Closed form: the shift's 8 conjugates are the 4 unit shifts, twice each -> 4-neighbour mean.
    p = np.pad(x.astype(np.float64), 1)
    four = (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]) / 4
    np.testing.assert_allclose(out, four, atol=1e-6)
    plain = predict_tiled(shift_right, x, tile=tile, overlap=8)
    np.testing.assert_allclose(plain[:, 1:], x[:, :-1], atol=0)  # without TTA the shift is kept


# --------------------------------------------------------------------------- U-Net


def test_unet_tiled_exact_with_large_overlap(rng, unet_fn):
    """Tiles on the pooling grid + zero margin >= receptive-field radius -> the whole-frame result.

    The tiny U-Net's impulse response reaches 18 pixels (measured), so overlap
    80 (zero margin 20) must reproduce the whole frame to float32 rounding.
    """
    x = rng.random((2, 100, 130)).astype(np.float32)
    whole = np.asarray(unet_fn(x))
    out = predict_tiled(unet_fn, x, tile=96, overlap=80, multiple=TINY.multiple, batch_size=8)
    np.testing.assert_allclose(out, whole, atol=1e-5, rtol=0)


def test_unet_tiled_seams_small(rng, unet_fn):
    """Overlap 32 (zero margin 8, below the 18-pixel receptive radius): small error, no step.

    The error ``tiled - whole`` lives near tile borders. Two measures, relative to the
    whole-frame output's range: its maximum, and its largest jump between neighbouring
    pixels (a visible seam is such a jump). Verified on three input seeds: overlap 32
    gives 0.23-0.31 % and 0.30-0.42 %; the same 64-px tiles without overlap give
    28-34 % and 41-45 %. Bounds: 1 % for the blend, > 10 % for the hard-edged tiles.
    """
    x = rng.random((100, 130)).astype(np.float32)
    whole = np.asarray(unet_fn(x))
    scale = whole.max() - whole.min()
    for overlap in (32, 0):
        err = predict_tiled(unet_fn, x, tile=64, overlap=overlap, multiple=TINY.multiple, batch_size=8) - whole
        step = max(np.abs(np.diff(err, axis=0)).max(), np.abs(np.diff(err, axis=1)).max())
        if overlap:
            assert np.abs(err).max() < 0.01 * scale and step < 0.01 * scale
            # Far from every tile border (the frame's top-left corner) the result is the whole-frame one.
            np.testing.assert_allclose(err[:5, :5], 0.0, atol=1e-5)
        else:
            assert np.abs(err).max() > 0.1 * scale and step > 0.1 * scale


def test_unet_tta_tiled_matches_whole_tta(rng, unet_fn):
    x = rng.random((40, 56)).astype(np.float32)
    whole = predict_tiled(unet_fn, x, tile=64, overlap=0, multiple=4, tta=True)  # one tile per frame
    tiled = predict_tiled(unet_fn, x, tile=(32, 40), overlap=28, multiple=4, tta=True, batch_size=8)
    # Radius 18 > zero margin 7: not exact; measured 0.40-0.50 % of the range on three seeds.
    assert np.abs(tiled - whole).max() < 0.01 * (whole.max() - whole.min())
    assert np.abs(whole - np.asarray(unet_fn(x))).max() > 1e-3  # TTA changes a random U-Net's output


# --------------------------------------------------------------------------- frames, out, dtypes


def test_frames_batched_equal_per_frame(rng):
    x = rng.random((2, 3, 30, 41)).astype(np.float32)
    stacked = predict_tiled(conv3, x, tile=16, overlap=4, batch_size=5)  # batches straddle frames
    for idx in np.ndindex(2, 3):
        single = predict_tiled(conv3, x[idx], tile=16, overlap=4, batch_size=5)
        np.testing.assert_allclose(stacked[idx], single, atol=1e-6)


def test_memmap_in_and_out(tmp_path, rng):
    x = rng.random((3, 30, 41)).astype(np.float32)
    src = np.lib.format.open_memmap(tmp_path / "in.npy", mode="w+", dtype=np.float32, shape=x.shape)
    src[:] = x
    src.flush()
    image = np.load(tmp_path / "in.npy", mmap_mode="r")
    out = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32, shape=x.shape)
    ret = predict_tiled(conv3, image, tile=16, overlap=4, out=out)
    assert ret is out
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), ndi.correlate(x, KERNEL3[None], mode="mirror"),
                               atol=1e-5)


def test_lazy_nan_check_names_frame(tmp_path):
    x = np.ones((3, 8, 8), np.float32)
    x[2, 4, 4] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(ValueError, match=r"image.*frame \(2,\)"):
        predict_tiled(identity, np.load(tmp_path / "nan.npy", mmap_mode="r"), tile=8, overlap=2)


def test_input_types(rng):
    x = rng.integers(0, 1000, size=(21, 18)).astype(np.uint16)
    ref = predict_tiled(identity, x.astype(np.float32), tile=8, overlap=4)
    for img in (x, jnp.asarray(x, jnp.float32), x.tolist()):
        out = predict_tiled(identity, img, tile=8, overlap=4)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, ref)


def test_float64_kept_under_x64(x64, rng):
    x = rng.random((20, 20))
    out = predict_tiled(identity, x, tile=8, overlap=4)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, x, rtol=1e-15, atol=0)


def test_predict_bad_input():
    img = np.ones((20, 20), np.float32)
    with pytest.raises(ValueError, match="image"):
        predict_tiled(identity, np.ones(5))
    with pytest.raises(ValueError, match="image"):
        predict_tiled(identity, np.where(np.eye(20) > 0, np.nan, 1.0))
    with pytest.raises(ValueError, match="image"):
        predict_tiled(identity, np.ones((0, 4)))
    with pytest.raises(TypeError, match="image"):
        predict_tiled(identity, np.ones((4, 4), complex))
    with pytest.raises(TypeError, match="apply_fn"):
        predict_tiled("unet", img)
    with pytest.raises(ValueError, match="overlap"):
        predict_tiled(identity, img, tile=16, overlap=16)
    with pytest.raises(ValueError, match="overlap"):
        predict_tiled(identity, img, tile=16, overlap=-1)
    with pytest.raises(ValueError, match="overlap"):
        predict_tiled(identity, img, tile=40, overlap=20, multiple=16)  # 32 - 16 < 20
    with pytest.raises(ValueError, match="tile"):
        predict_tiled(identity, img, tile=8, overlap=2, multiple=16)
    with pytest.raises(ValueError, match="tile"):
        predict_tiled(identity, img, tile=0, overlap=0)
    with pytest.raises(ValueError, match="tile"):
        predict_tiled(identity, img, tile=(8, 8, 8), overlap=2)
    with pytest.raises(TypeError, match="tile"):
        predict_tiled(identity, img, tile=16.5)
    with pytest.raises(ValueError, match="multiple"):
        predict_tiled(identity, img, multiple=0)
    with pytest.raises(ValueError, match="batch_size"):
        predict_tiled(identity, img, tile=8, overlap=2, batch_size=0)
    with pytest.raises(TypeError, match="tta"):
        predict_tiled(identity, img, tile=8, overlap=2, tta=1)
    with pytest.raises(ValueError, match="out"):
        predict_tiled(identity, img, tile=8, overlap=2, out=np.empty((20, 21)))
    with pytest.raises(ValueError, match="apply_fn"):
        predict_tiled(lambda t: t[:, :-1], img, tile=8, overlap=2)
