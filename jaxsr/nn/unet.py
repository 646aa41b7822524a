"""A size-agnostic 2D U-Net in Flax Linen, with the variants 3Snet and DPS use.

Axis order: the module works on ``(batch, y, x, channels)`` (NHWC, the layout
XLA's CPU and GPU convolutions prefer); :func:`unet_apply` takes the
microscopy convention ``(..., y, x)`` for single-channel images and handles
the channel axis. Any image size works: the input is mirror-padded up to a
multiple of ``2**depth`` and the output cropped back, so a frame of 97 x 203
pixels needs no preparation.

The default configuration is the Noise2Noise U-Net that the 3Snet release
uses (5 poolings, 48 encoder / 96 decoder channels, LeakyReLU 0.1, no
normalisation, the input concatenated before the last block; about 0.99 M
parameters). ``attention=True`` adds additive attention gates on the skip
connections and ``back_projection=True`` ends the network with an
error-feedback (back-projection) unit, the two changes the DPS network makes.

References:
    Lehtinen et al., "Noise2Noise: learning image restoration without clean
    data", ICML (2018) (architecture).
    Xue et al., "High-fidelity single-frame computational super-resolution using
    signal-preserving denoising-enabled deconvolution" (3Snet-CLID), Nat. Commun.
    (2026).
    Ye et al., "Deep-physics-informed sparsity" (DPS), Intelligent Computing (2025).
    Oktay et al., "Attention U-Net", MIDL (2018) (attention gates).
    Haris et al., "Deep back-projection networks for super-resolution", CVPR (2018)
    (back-projection unit).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import as_float_array, check_int
from jaxsr.nn._config import JsonConfig

__all__ = ["UNetConfig", "UNet", "unet_init", "unet_apply", "count_params"]


@dataclasses.dataclass(frozen=True)
class UNetConfig(JsonConfig):
    """Shape of a :class:`UNet` (hashable, JSON-serialisable with :meth:`to_dict`).

    Attributes:
        depth: number of 2x2 max-poolings (5 in Noise2Noise / 3Snet); the
            smallest useful image side is ``2**depth`` pixels.
        features: channels of every encoder convolution (48).
        decoder_features: channels of the decoder convolutions (96).
        in_channels: input channels (1 for a single frame; more for stacks).
        out_channels: output channels.
        negative_slope: LeakyReLU slope (0.1).
        attention: additive attention gates on the skip connections (DPS).
        back_projection: end with a back-projection (error-feedback) unit (DPS).
        residual: add the (first channel of the) input to the output, so the
            network learns a correction; off for 3Snet, whose output drops the
            background the input carries.
    """

    _WHAT = "U-Net settings"

    depth: int = 5
    features: int = 48
    decoder_features: int = 96
    in_channels: int = 1
    out_channels: int = 1
    negative_slope: float = 0.1
    attention: bool = False
    back_projection: bool = False
    residual: bool = False

    def __post_init__(self):
        for name, minimum in (("depth", 1), ("features", 1), ("decoder_features", 1),
                              ("in_channels", 1), ("out_channels", 1)):
            check_int(getattr(self, name), name, minimum=minimum)
        if self.depth > 8:
            raise ValueError(f"argument 'depth': expected at most 8 poolings, got {self.depth}")
        slope = self.negative_slope
        if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not 0.0 <= slope < 1.0:
            raise ValueError(f"argument 'negative_slope': expected a number in [0, 1), got {slope!r}")
        for name in ("attention", "back_projection", "residual"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"argument '{name}': expected a bool, got {type(getattr(self, name)).__name__}")

    @property
    def multiple(self) -> int:
        """Image sides are padded to a multiple of this (``2**depth``)."""
        return 2 ** self.depth


class _AttentionGate(nn.Module):
    """Additive attention (Oktay et al. 2018): skip * sigmoid(psi(relu(Wx skip + Wg gate)))."""

    features: int

    @nn.compact
    def __call__(self, skip, gate):
        q = nn.relu(nn.Conv(self.features, (1, 1), name="wx")(skip) + nn.Conv(self.features, (1, 1), name="wg")(gate))
        alpha = nn.sigmoid(nn.Conv(1, (1, 1), name="psi")(q))
        return skip * alpha


class _BackProjection(nn.Module):
    """Back-projection unit at unit scale: h0 = up(x), l0 = down(h0), e = l0 - x, out = h0 + up(e).

    ``up`` and ``down`` are a transposed 2x convolution and a strided 2x
    convolution, so the unit compares what the features predict on a finer grid
    with the features themselves and feeds the error back (Haris et al. 2018);
    a final strided convolution returns to the input grid.
    """

    features: int
    negative_slope: float

    @nn.compact
    def __call__(self, x):
        act = lambda v: nn.leaky_relu(v, self.negative_slope)  # noqa: E731
        x = act(nn.Conv(self.features, (3, 3), name="project")(x))
        h0 = act(nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), name="up0")(x))
        l0 = act(nn.Conv(self.features, (4, 4), strides=(2, 2), name="down0")(h0))
        h1 = act(nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), name="up1")(l0 - x))
        return act(nn.Conv(self.features, (4, 4), strides=(2, 2), name="down1")(h0 + h1))


def _max_pool2(v):
    """2x2 max-pooling with stride 2 of ``(batch, y, x, c)`` with even ``y``, ``x``.

    The same values as ``flax.linen.max_pool(v, (2, 2), strides=(2, 2))``, written
    as a reshape and a max-reduction: its gradient is a cheap elementwise select
    where XLA's CPU backend lowers the gradient of a windowed max (select-and-scatter)
    to a slower loop. On the 2-core CPU this took the training step of the
    default U-Net from 0.505 to 0.485 s (``benchmarks/bench_denoise.py``).
    """
    b, ny, nx, c = v.shape
    return jnp.max(v.reshape(b, ny // 2, 2, nx // 2, 2, c), axis=(2, 4))


class UNet(nn.Module):
    """The U-Net; call it on ``(batch, y, x, in_channels)`` arrays of any ``y, x``.

    Returns ``(batch, y, x, out_channels)`` in the input's dtype.
    """

    config: UNetConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
            raise ValueError(
                f"argument 'x': expected (batch, y, x, {cfg.in_channels}), got shape {tuple(x.shape)}"
            )
        ny, nx = x.shape[1], x.shape[2]
        m = cfg.multiple
        py, px = (-ny) % m, (-nx) % m
        if py or px:
            # Mirror padding (needs the pad to be smaller than the side; edge beyond that).
            mode = "reflect" if py < ny and px < nx else "edge"
            x = jnp.pad(x, ((0, 0), (0, py), (0, px), (0, 0)), mode=mode)
        inputs = x
        act = lambda v: nn.leaky_relu(v, cfg.negative_slope)  # noqa: E731
        conv = lambda f, name: nn.Conv(f, (3, 3), padding="SAME", name=name)  # noqa: E731
        pool = _max_pool2

        # Encoder: conv, conv, pool; then (conv, pool) per level, as in Noise2Noise.
        h = act(conv(cfg.features, "enc0")(x))
        h = act(conv(cfg.features, "enc1")(h))
        h = pool(h)
        skips = [inputs, h]
        for level in range(2, cfg.depth + 1):
            h = pool(act(conv(cfg.features, f"enc{level}")(h)))
            skips.append(h)
        h = act(conv(cfg.features, f"enc{cfg.depth + 1}")(skips.pop()))

        # Decoder: upsample, (gate), concat, two convs.
        for level in range(cfg.depth, 0, -1):
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
            skip = skips.pop()
            if cfg.attention:
                skip = _AttentionGate(max(1, skip.shape[-1] // 2), name=f"gate{level}")(skip, h)
            h = jnp.concatenate([h, skip], axis=-1)
            if level > 1:
                h = act(conv(cfg.decoder_features, f"dec{level}a")(h))
                h = act(conv(cfg.decoder_features, f"dec{level}b")(h))
            else:
                h = act(conv(64, "dec1a")(h))
                h = act(conv(32, "dec1b")(h))
        if cfg.back_projection:
            h = h + _BackProjection(32, cfg.negative_slope, name="feedback")(h)
        out = nn.Conv(cfg.out_channels, (3, 3), padding="SAME", name="out")(h)
        if cfg.residual:
            out = out + inputs[..., :1]
        return out[:, :ny, :nx, :].astype(inputs.dtype)


def unet_init(key: jax.Array, *, config: UNetConfig, dtype=jnp.float32) -> dict:
    """Initial parameters of a :class:`UNet` (a pytree of arrays).

    Args:
        key: JAX PRNG key.
        config: the :class:`UNetConfig`.
        dtype: parameter dtype (float32 by default).

    Returns:
        The ``{"params": ...}`` variables dict, ``dtype`` leaves.

    >>> import jax
    >>> params = unet_init(jax.random.key(0), config=UNetConfig(depth=2, features=4, decoder_features=8))
    >>> count_params(params)
    25653
    """
    if not isinstance(config, UNetConfig):
        raise TypeError(f"argument 'config': expected a UNetConfig, got {type(config).__name__}")
    dtype = jnp.dtype(dtype)
    if not isinstance(key, jax.core.Tracer):
        try:
            return _init_fn(config, dtype, True)(key)
        except ValueError:  # JAX takes compiler options on top-level jits only: a concrete key inside a jit
            pass  # (any other error comes back from the call below)
    return _init_fn(config, dtype, False)(key)  # traced into the caller's computation


#: XLA options of the initialiser compiled on the CPU: LLVM optimisation level 1 instead of XLA's default.
#: The initialiser (a threefry + inverse-erf draw per weight) runs once, in milliseconds, but took 6-10 s
#: to compile at the default level even for a tiny U-Net (2-core CPU, jaxlib 0.10.2: 108 s -> 33 s over
#: 19 configurations), with bit-identical weights at levels 1 and 2 for every configuration checked (the
#: default, DPS, shipped and test networks, float32 and float64; level 0 changes them).
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


@functools.lru_cache(maxsize=32)
def _init_fn(config: UNetConfig, dtype, top_level: bool):
    """A jitted initialiser per configuration (eager Flax init costs seconds of op-by-op dispatch).

    ``top_level``: compiled with :data:`_INIT_COMPILER_OPTIONS` on the CPU (JAX refuses compiler options
    on a jit traced inside another transformation, so that one has none).
    """
    m = config.multiple

    def init(key):
        # built inside the traced function: a cached array made under an outer trace would leak a tracer
        dummy = jnp.zeros((1, m, m, config.in_channels), dtype)
        variables = UNet(config).init(key, dummy)
        return jax.tree_util.tree_map(lambda p: p.astype(dtype), variables)

    options = _INIT_COMPILER_OPTIONS if top_level and jax.default_backend() == "cpu" else None
    return jax.jit(init, compiler_options=options)


def unet_apply(params: dict, images, *, config: UNetConfig):
    """Run the U-Net on single- or multi-channel images in ``(..., y, x)`` order.

    Args:
        params: variables from :func:`unet_init` (or a loaded model).
        images: ``(..., y, x)`` when ``config.in_channels == 1``, else
            ``(..., in_channels, y, x)``; leading axes are a batch (frames).
            Any ``y, x``; floats (integers are converted to float32).
        config: the :class:`UNetConfig` the parameters belong to.

    Returns:
        ``(..., y, x)`` when ``config.out_channels == 1``, else
        ``(..., out_channels, y, x)``; the batch axes of ``images``.

    >>> import jax, jax.numpy as jnp
    >>> cfg = UNetConfig(depth=2, features=4, decoder_features=8)
    >>> params = unet_init(jax.random.key(0), config=cfg)
    >>> unet_apply(params, jnp.ones((3, 13, 21)), config=cfg).shape
    (3, 13, 21)
    """
    images = as_float_array(images, "images")
    chan = config.in_channels > 1
    min_ndim = 3 if chan else 2
    if images.ndim < min_ndim:
        what = "(..., channels, y, x)" if chan else "(..., y, x)"
        raise ValueError(f"argument 'images': expected {what}, got shape {tuple(images.shape)}")
    if chan and images.shape[-3] != config.in_channels:
        raise ValueError(
            f"argument 'images': expected {config.in_channels} channels on axis -3, got shape {tuple(images.shape)}"
        )
    spatial = images.shape[-2:]
    batch = images.shape[:-3] if chan else images.shape[:-2]
    x = images.reshape((-1, config.in_channels) + spatial) if chan else images.reshape((-1, 1) + spatial)
    out = _apply_nhwc(params, x, config)
    if config.out_channels == 1:
        return out[:, 0].reshape(batch + spatial)
    return out.reshape(batch + (config.out_channels,) + spatial)


@functools.partial(jax.jit, static_argnums=2)
def _apply_nhwc(params, x, config: UNetConfig):
    """The network on ``(b, c, y, x)``, compiled once per configuration and shape (an eager Flax apply
    dispatches every operation on its own, seconds for a tiny network; inside an outer ``jit`` this
    inlines)."""
    out = UNet(config).apply(params, jnp.moveaxis(x, 1, -1))
    return jnp.moveaxis(out, -1, 1)


def count_params(params) -> int:
    """Number of scalar parameters in a pytree.

    >>> count_params({"a": np.zeros((2, 3)), "b": [np.zeros(4)]})
    10
    """
    return int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))
