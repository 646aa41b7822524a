"""U-Net: shape handling, size agnosticism, parameter count, transforms, gradients, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.nn.unet import UNet, UNetConfig, count_params, unet_apply, unet_init

TINY = UNetConfig(depth=2, features=4, decoder_features=8)


@pytest.fixture(scope="module")
def tiny_params():
    return unet_init(jax.random.key(0), config=TINY)


def _n2n_param_count(c_in=1, enc=48, dec=96, depth=5, c_out=1):
    """Closed-form parameter count of the Noise2Noise U-Net (3x3 convs with bias)."""
    conv = lambda i, o: 9 * i * o + o  # noqa: E731
    n = conv(c_in, enc) + conv(enc, enc)            # enc0, enc1 (+pool)
    n += (depth - 1) * conv(enc, enc)               # enc2..enc{depth} (+pool)
    n += conv(enc, enc)                             # bottleneck enc{depth+1}
    n += conv(2 * enc, dec) + conv(dec, dec)        # deepest decoder: up(enc) ++ skip(enc)
    n += (depth - 2) * (conv(dec + enc, dec) + conv(dec, dec))
    n += conv(dec + c_in, 64) + conv(64, 32) + conv(32, c_out)
    return n


def test_default_is_the_3snet_n2n_unet():
    params = jax.eval_shape(lambda: unet_init(jax.random.key(0), config=UNetConfig()))
    n = count_params(params)
    assert n == _n2n_param_count() == 988609  # "about 0.99 M parameters" (issue / released model)


@pytest.mark.parametrize("shape", [(16, 16), (13, 21), (5, 40), (64, 3)])
def test_any_size_gives_same_size(tiny_params, shape):
    out = unet_apply(tiny_params, jnp.ones(shape), config=TINY)
    assert out.shape == shape
    assert bool(jnp.all(jnp.isfinite(out)))


def test_padding_is_cropped_consistently(tiny_params, rng):
    # An image already a multiple of 2**depth is not padded: a crop of the padded-size output
    # must equal running on the exact-size image (checks that the crop takes the right corner).
    x = jnp.asarray(rng.normal(size=(16, 16)), jnp.float32)
    full = unet_apply(tiny_params, x, config=TINY)
    direct = UNet(TINY).apply(tiny_params, x[None, :, :, None])[0, :, :, 0]
    np.testing.assert_allclose(full, direct, rtol=0, atol=0)


def test_batch_axes_and_vmap_and_jit_agree(tiny_params, rng):
    x = jnp.asarray(rng.normal(size=(2, 3, 12, 20)), jnp.float32)
    batched = unet_apply(tiny_params, x, config=TINY)
    single = jnp.stack([jnp.stack([unet_apply(tiny_params, x[i, j], config=TINY) for j in range(3)])
                        for i in range(2)])
    vm = jax.vmap(lambda f: unet_apply(tiny_params, f, config=TINY))(x.reshape(6, 12, 20)).reshape(x.shape)
    jt = jax.jit(lambda f: unet_apply(tiny_params, f, config=TINY))(x)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_allclose(vm, batched, atol=1e-5)
    np.testing.assert_allclose(jt, batched, atol=1e-5)


def test_multichannel_and_variants(rng):
    cfg = UNetConfig(depth=2, features=4, decoder_features=4, in_channels=3, out_channels=2,
                     attention=True, back_projection=True, residual=True)
    params = unet_init(jax.random.key(1), config=cfg)
    out = unet_apply(params, jnp.ones((5, 3, 8, 12)), config=cfg)
    assert out.shape == (5, 2, 8, 12)
    with pytest.raises(ValueError, match="channels"):
        unet_apply(params, jnp.ones((5, 2, 8, 12)), config=cfg)


def test_residual_zero_weights_is_identity():
    cfg = UNetConfig(depth=1, features=2, decoder_features=2, residual=True)
    params = unet_init(jax.random.key(2), config=cfg)
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    x = jnp.arange(24.0).reshape(4, 6)
    np.testing.assert_array_equal(unet_apply(zero, x, config=cfg), x)


def test_gradients_match_finite_differences(x64):
    from jax.test_util import check_grads

    cfg = UNetConfig(depth=1, features=2, decoder_features=2)
    params = unet_init(jax.random.key(3), config=cfg, dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(4), (6, 6), jnp.float64)
    check_grads(lambda v: jnp.sum(unet_apply(params, v, config=cfg) ** 2), (x,), order=1, modes=["rev"])
    g = jax.grad(lambda p: jnp.sum(unet_apply(p, jnp.zeros((4, 4)), config=cfg)))(params)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(g))


def test_float64_parameters_stay_float64(x64):
    params = unet_init(jax.random.key(0), config=TINY, dtype=jnp.float64)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float64")}
    assert unet_apply(params, jnp.ones((8, 8), jnp.float64), config=TINY).dtype == jnp.float64


def test_config_round_trip_and_bad_settings():
    cfg = UNetConfig(depth=3, attention=True)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        UNetConfig.from_dict({**cfg.to_dict(), "dropout": 0.1})
    with pytest.raises(ValueError, match="depth"):
        UNetConfig(depth=0)
    with pytest.raises(ValueError, match="negative_slope"):
        UNetConfig(negative_slope=1.5)
    with pytest.raises(TypeError, match="attention"):
        UNetConfig(attention=1)
    with pytest.raises(TypeError, match="config"):
        unet_init(jax.random.key(0), config={"depth": 2})


def test_bad_images(tiny_params):
    with pytest.raises(ValueError, match="images"):
        unet_apply(tiny_params, jnp.ones(5), config=TINY)
    with pytest.raises(ValueError, match="x"):
        UNet(TINY).apply(tiny_params, jnp.ones((1, 8, 8, 2)))


def test_max_pool_matches_block_reduce_and_flax_gradient():
    """The reshape max-pool equals skimage's 2x2 block max, and its gradient equals flax's windowed max's."""
    import flax.linen as nn
    from skimage.measure import block_reduce

    from jaxsr.nn.unet import _max_pool2

    x = jax.random.normal(jax.random.key(3), (2, 8, 6, 3))  # continuous: no ties
    ref = block_reduce(np.asarray(x), (1, 2, 2, 1), np.max)
    np.testing.assert_array_equal(np.asarray(_max_pool2(x)), ref)
    w = jax.random.normal(jax.random.key(4), ref.shape)
    g = jax.grad(lambda v: jnp.sum(_max_pool2(v) * w))(x)
    g_ref = jax.grad(lambda v: jnp.sum(nn.max_pool(v, (2, 2), strides=(2, 2)) * w))(x)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(g_ref))
    assert int(np.count_nonzero(np.asarray(g))) == ref.size  # one winner per window
