"""Tests of jaxsr.nn.self_supervised: blind-spot masking, the Noise2Void loss, self-supervised training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import stats

from jaxsr.metrics import psnr
from jaxsr.nn.model import DenoiserModel, denoise
from jaxsr.nn.self_supervised import (
    blind_spot_corrupt,
    blind_spot_mask,
    cell_side,
    make_n2v_loss,
    masked_mse,
    train_self_supervised,
)
from jaxsr.nn.train import TrainConfig
from jaxsr.nn.unet import UNetConfig, unet_init


def _unique_image(shape):
    """Every pixel of every image holds a different value: value = flat index."""
    return jnp.arange(int(np.prod(shape)), dtype=jnp.float32).reshape(shape)


# ----------------------------------------------------------------------------- mask statistics


@pytest.mark.parametrize("fraction,g", [(1 / 64, 8), (0.002, 22), (0.01, 10), (0.25, 2), (0.5, 2)])
def test_cell_side(fraction, g):
    assert cell_side(fraction) == g


def test_one_masked_pixel_per_cell(key):
    g = 8
    m = np.asarray(blind_spot_mask(key, (16, 64, 64), fraction=1 / 64).mask)
    assert m.dtype == bool
    per_cell = m.reshape(16, 8, g, 8, g).sum(axis=(2, 4))
    np.testing.assert_array_equal(per_cell, 1)
    assert m.mean() == pytest.approx(1 / 64, abs=0)


def test_fraction_close_to_request(key):
    # 0.002 (N2V2 default) -> 22 x 22 cells -> 1 / 484 = 0.207 %, within 5 % of the request.
    m = np.asarray(blind_spot_mask(key, (8, 88, 88), fraction=0.002).mask)
    assert m.mean() == pytest.approx(0.002, rel=0.05)


def test_partial_cells_at_most_one(key):
    # 30 x 45 with 8 x 8 cells: the border cells are cut; full cells have exactly one masked pixel.
    m = np.asarray(blind_spot_mask(key, (32, 30, 45), fraction=1 / 64).mask)
    padded = np.zeros((32, 32, 48), bool)
    padded[:, :30, :45] = m
    per_cell = padded.reshape(32, 4, 8, 6, 8).sum(axis=(2, 4))
    assert per_cell.max() == 1
    np.testing.assert_array_equal(per_cell[:, :3, :5], 1)
    # Cut cells keep their pixel with probability (area inside) / 64.
    assert 0 < per_cell[:, 3, :].mean() < 1


def test_position_in_cell_is_uniform(key):
    # 16 x 64 x 64 with 8 x 8 cells: 1024 cells, 64 positions -> 16 expected per position.
    m = np.asarray(blind_spot_mask(key, (16, 64, 64), fraction=1 / 64).mask)
    counts = m.reshape(16, 8, 8, 8, 8).sum(axis=(0, 1, 3)).ravel()
    assert counts.sum() == 1024
    assert stats.chisquare(counts).pvalue > 1e-3


def test_deterministic_from_key(key):
    a = blind_spot_mask(key, (16, 64, 64))
    b = blind_spot_mask(key, (16, 64, 64))
    c = blind_spot_mask(jax.random.fold_in(key, 1), (16, 64, 64))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.mask, c.mask)
    # Leading axes are independent images: not the same mask twice.
    assert not np.array_equal(a.mask[0], a.mask[1])


# ----------------------------------------------------------------------------- replacement


@pytest.mark.parametrize("shape", [(5, 5), (3, 7, 13)])
def test_replacement_is_a_neighbour_not_the_centre(key, shape):
    x = _unique_image(shape)
    corrupted, mask = blind_spot_corrupt(key, x, fraction=0.25)
    corrupted, mask, x = np.asarray(corrupted), np.asarray(mask), np.asarray(x)
    assert mask.any()
    np.testing.assert_array_equal(corrupted[~mask], x[~mask])
    ny, nx = shape[-2:]
    # Decode the source of each value: flat index -> (image, y, x).
    src = corrupted.astype(np.int64)
    img, rem = np.divmod(src, ny * nx)
    sy, sx = np.divmod(rem, nx)
    own = np.indices(shape)
    own_img = np.ravel_multi_index(tuple(own[:-2]), shape[:-2]) if len(shape) > 2 else np.zeros(shape, int)
    np.testing.assert_array_equal(img, own_img)  # never from another image of the batch
    dy, dx = sy - own[-2], sx - own[-1]
    assert np.all(np.abs(dy[mask]) <= 2) and np.all(np.abs(dx[mask]) <= 2)
    assert np.all((dy[mask] != 0) | (dx[mask] != 0))  # never the pixel itself


def test_replacement_offsets_uniform_over_24_neighbours(key):
    shape = (64, 64, 64)
    x = _unique_image(shape)
    corrupted, mask = blind_spot_corrupt(key, x, fraction=1 / 16)
    src = np.asarray(corrupted).astype(np.int64) % (64 * 64)
    sy, sx = np.divmod(src, 64)
    yy, xx = np.indices((64, 64))
    m = np.asarray(mask)
    interior = m & (yy >= 2) & (yy < 62) & (xx >= 2) & (xx < 62)
    dy, dx = (sy - yy)[interior], (sx - xx)[interior]
    codes = (dy + 2) * 5 + (dx + 2)
    counts = np.bincount(codes, minlength=25)
    assert counts[12] == 0  # the centre
    assert stats.chisquare(np.delete(counts, 12)).pvalue > 1e-3


def test_corrupt_preserves_dtype_x64(x64, key):
    x = jnp.asarray(np.arange(2 * 16 * 16, dtype=np.float64).reshape(2, 16, 16))
    c, m = blind_spot_corrupt(key, x, fraction=1 / 16)
    assert c.dtype == jnp.float64 and m.dtype == jnp.bool_


def test_mask_jit_and_vmap_invariant(key):
    plain = blind_spot_corrupt(key, _unique_image((2, 32, 32)), fraction=1 / 16)
    jitted = jax.jit(lambda k, v: blind_spot_corrupt(k, v, fraction=1 / 16))(key, _unique_image((2, 32, 32)))
    for a, b in zip(plain, jitted):
        np.testing.assert_array_equal(a, b)
    keys = jax.random.split(key, 2)
    batched = jax.vmap(lambda k: blind_spot_corrupt(k, _unique_image((2, 32, 32)), fraction=1 / 16))(keys)
    for i in range(2):
        one = blind_spot_corrupt(keys[i], _unique_image((2, 32, 32)), fraction=1 / 16)
        np.testing.assert_array_equal(batched[0][i], one[0])
        np.testing.assert_array_equal(batched[1][i], one[1])


# ----------------------------------------------------------------------------- loss


def test_masked_mse_matches_numpy(rng):
    p = rng.normal(size=(3, 16, 16)).astype(np.float32)
    t = rng.normal(size=(3, 16, 16)).astype(np.float32)
    m = rng.random((3, 16, 16)) < 0.1
    ref = np.mean((p.astype(np.float64) - t)[m] ** 2)
    assert float(masked_mse(p, t, m)) == pytest.approx(ref, rel=1e-5)
    # An empty mask gives 0, not NaN.
    assert float(masked_mse(p, t, np.zeros_like(m))) == 0.0


def test_loss_is_mse_at_masked_pixels(rng, key):
    noisy = jnp.asarray(rng.normal(size=(2, 32, 32)).astype(np.float32))
    loss_fn = make_n2v_loss(apply_fn=lambda p, x: p * x + 0.5, fraction=1 / 16)
    # The loss masks with blind_spot_corrupt(key, ...) (documented), so the reference can rebuild it.
    corrupted, mask = blind_spot_corrupt(key, noisy, fraction=1 / 16)
    pred = 1.3 * np.asarray(corrupted, np.float64) + 0.5
    m = np.asarray(mask)
    ref = np.mean((pred - np.asarray(noisy, np.float64))[m] ** 2)
    assert float(loss_fn(1.3, noisy, key)) == pytest.approx(ref, rel=1e-5)
    # A tuple batch (as random_patches returns) uses its first element.
    assert float(loss_fn(1.3, (noisy,), key)) == pytest.approx(ref, rel=1e-5)


def test_loss_ignores_unmasked_outputs(rng, key):
    noisy = jnp.asarray(rng.normal(size=(2, 32, 32)).astype(np.float32))
    # "Network" whose output is its parameters: the gradient w.r.t. params is the gradient w.r.t. the output.
    loss_fn = make_n2v_loss(apply_fn=lambda p, x: p, fraction=1 / 16)
    out = jnp.asarray(rng.normal(size=(2, 32, 32)).astype(np.float32))
    grad = np.asarray(jax.grad(loss_fn)(out, noisy, key))
    _, mask = blind_spot_corrupt(key, noisy, fraction=1 / 16)
    m = np.asarray(mask)
    np.testing.assert_array_equal(grad[~m], 0.0)
    assert np.all(grad[m] != 0)
    # Changing (even to inf) the output at unmasked pixels leaves the loss and gradient unchanged.
    wild = jnp.where(mask, out, jnp.inf)
    assert float(loss_fn(wild, noisy, key)) == float(loss_fn(out, noisy, key))
    assert np.all(np.isfinite(np.asarray(jax.grad(loss_fn)(wild, noisy, key))))


def test_loss_jit_equals_eager(rng, key):
    noisy = jnp.asarray(rng.normal(size=(2, 32, 32)).astype(np.float32))
    loss_fn = make_n2v_loss(apply_fn=lambda p, x: jnp.tanh(p * x), fraction=1 / 16)
    eager = float(loss_fn(0.7, noisy, key))
    jitted = float(jax.jit(loss_fn)(0.7, noisy, key))
    assert jitted == pytest.approx(eager, rel=1e-6)


def test_loss_grads_x64(x64, key):
    noisy = jax.random.normal(key, (2, 16, 16), jnp.float64)
    loss_fn = make_n2v_loss(apply_fn=lambda p, x: jnp.tanh(p["a"] * x + p["b"]), fraction=1 / 16)
    check_grads(lambda p: loss_fn(p, noisy, key), ({"a": jnp.float64(0.8), "b": jnp.float64(0.1)},),
                order=1, modes=["rev"])


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fraction", [0.0, -0.1, 0.6, float("nan"), float("inf")])
def test_bad_fraction(key, fraction):
    with pytest.raises(ValueError, match="fraction"):
        blind_spot_mask(key, (16, 16), fraction=fraction)
    with pytest.raises(ValueError, match="fraction"):
        make_n2v_loss(apply_fn=lambda p, x: x, fraction=fraction)


def test_bad_fraction_type(key):
    with pytest.raises(TypeError, match="fraction"):
        blind_spot_mask(key, (16, 16), fraction="0.1")


def test_bad_shape_and_radius(key):
    with pytest.raises(ValueError, match="shape"):
        blind_spot_mask(key, (4, 16))  # side < 5 for the 5 x 5 window
    with pytest.raises(ValueError, match="shape"):
        blind_spot_mask(key, (16,))
    with pytest.raises(ValueError, match="radius"):
        blind_spot_mask(key, (16, 16), radius=0)
    with pytest.raises(ValueError, match="images"):
        blind_spot_corrupt(key, jnp.ones(16))


def test_make_loss_bad_arguments():
    with pytest.raises(ValueError, match="config"):
        make_n2v_loss()
    with pytest.raises(TypeError, match="apply_fn"):
        make_n2v_loss(apply_fn=3)
    with pytest.raises(ValueError, match="mask"):
        masked_mse(jnp.ones((4, 4)), jnp.ones((4, 4)), jnp.ones((4, 5), bool))


# ----------------------------------------------------------------------------- training

TINY = UNetConfig(depth=2, features=8, decoder_features=8)
TINY_TRAIN = TrainConfig(steps=60, batch_size=8, patch_size=32, learning_rate=3e-3, eval_every=20)


def _blobs(rng, n=64, count=14):
    """A smooth test structure: Gaussian blobs of 2-4 px sigma, peak about 1."""
    yy, xx = np.mgrid[:n, :n]
    img = np.zeros((n, n))
    for _ in range(count):
        cy, cx = rng.uniform(4, n - 4, 2)
        s = rng.uniform(2.0, 4.0)
        img += rng.uniform(0.5, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return img / img.max()


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(4)
    clean = _blobs(rng).astype(np.float32)
    noisy = (clean + rng.normal(0.0, 0.3, clean.shape)).astype(np.float32)
    model, result = train_self_supervised(jax.random.key(3), noisy, config=TINY, train=TINY_TRAIN, fraction=1 / 16)
    return clean, noisy, model, result


def test_training_returns_n2v_model(trained):
    _, noisy, model, result = trained
    assert isinstance(model, DenoiserModel)
    assert model.kind == "n2v" and model.normalization == "meanstd" and model.unet == TINY
    assert result.step == TINY_TRAIN.steps and len(result.history) == 3
    assert model.info["cell_side"] == 4 and model.info["steps"] == 60
    assert all(np.isfinite(h["loss"]) for h in result.history)


def test_training_reduces_the_loss(trained):
    _, noisy, model, _ = trained
    # The blind-spot loss on a fixed set of masked copies of the (normalised) image, before and after.
    x = (noisy - noisy.mean()) / noisy.std()
    batch = jnp.asarray(np.stack([x, x[::-1], x.T, x[:, ::-1]]))
    loss_fn = jax.jit(make_n2v_loss(config=TINY, fraction=1 / 16))
    k = jax.random.key(11)
    before = float(loss_fn(unet_init(jax.random.key(3), config=TINY), batch, k))
    after = float(loss_fn(model.params, batch, k))
    # The noise variance of the normalised image, 0.3**2 / var(noisy) (0.87 here), is the expected loss of the
    # clean image as predictor; a blind-spot network cannot beat it (an identity-like leak would reach 0).
    floor = 0.3**2 / noisy.var()
    assert after < before
    assert after - floor < 0.3 * (before - floor)  # most of the way from the initial loss to the floor
    assert after > 0.95 * floor


def test_trained_model_denoises(trained):
    clean, noisy, model, _ = trained
    out = np.asarray(denoise(noisy, model=model))
    assert out.shape == noisy.shape and np.all(np.isfinite(out))
    p_in = float(psnr(noisy, clean, data_range=1.0))
    p_out = float(psnr(out, clean, data_range=1.0))
    # Gaussian noise of sigma 0.3 on a unit-peak image: 10.5 dB; a local average of 25 pixels would give ~24 dB.
    assert p_out > p_in + 3.0, (p_in, p_out)
    # Mean intensity kept (meanstd normalisation adds the mean back).
    assert abs(out.mean() - clean.mean()) < 0.02


def test_train_bad_input(key):
    good = np.zeros((64, 64), np.float32) + np.arange(64.0, dtype=np.float32)
    bad = good.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="images"):
        train_self_supervised(key, bad, config=TINY, train=TINY_TRAIN)
    with pytest.raises(ValueError, match="patch_size"):
        train_self_supervised(key, good[:20, :40], config=TINY, train=TINY_TRAIN)
    with pytest.raises(ValueError, match="images"):
        train_self_supervised(key, good[0], config=TINY, train=TINY_TRAIN)
    with pytest.raises(ValueError, match="images"):
        train_self_supervised(key, good[None, None], config=TINY, train=TINY_TRAIN)
    for fraction in (0.0, 0.75, -1.0):
        with pytest.raises(ValueError, match="fraction"):
            train_self_supervised(key, good, config=TINY, train=TINY_TRAIN, fraction=fraction)
    with pytest.raises(ValueError, match="normalization"):
        train_self_supervised(key, good, config=TINY, train=TINY_TRAIN, normalization="minmax")
    with pytest.raises(ValueError, match="config"):
        train_self_supervised(key, good, config=UNetConfig(depth=2, features=8, decoder_features=8, residual=True),
                              train=TINY_TRAIN)
    with pytest.raises(ValueError, match="config"):
        train_self_supervised(key, good, config=UNetConfig(depth=2, features=8, decoder_features=8, in_channels=2),
                              train=TINY_TRAIN)
    with pytest.raises(TypeError, match="train"):
        train_self_supervised(key, good, config=TINY, train={"steps": 3})
    with pytest.raises(ValueError, match="images"):  # smaller than 2**depth of the network
        train_self_supervised(key, good[:16, :16], config=UNetConfig(depth=5, features=4, decoder_features=4),
                              train=TrainConfig(patch_size=8))


def test_a_checkpoint_of_other_frames_is_never_resumed(tmp_path):
    """The frames' fingerprint is part of the checkpoint identity: other data is refused, not resumed."""
    cfg = UNetConfig(depth=1, features=2, decoder_features=2)
    train = TrainConfig(steps=1, batch_size=2, patch_size=16, checkpoint_every=1)
    a = jax.random.normal(jax.random.key(0), (16, 16))
    train_self_supervised(jax.random.key(0), a, config=cfg, train=train, checkpoint_dir=tmp_path)
    _, again = train_self_supervised(jax.random.key(0), a, config=cfg, train=train, checkpoint_dir=tmp_path)
    assert again.resumed_from == 1
    with pytest.raises(ValueError, match=r"checkpoint_dir.*different training data"):
        train_self_supervised(jax.random.key(0), a + 1.0, config=cfg, train=train, checkpoint_dir=tmp_path)
