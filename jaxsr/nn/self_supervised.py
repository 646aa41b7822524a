"""Self-supervised denoising with a blind spot (Noise2Void / Noise2Self).

For users without ON/OFF series or clean targets: a U-Net is trained on the
noisy image (or stack) itself. In every training patch a sparse, stratified
set of pixels is *masked*: each masked pixel's value is replaced by the value
of a random neighbour, and the loss is the squared error between the network
output and the original noisy value at the masked pixels only. A network that
cannot see a pixel's own noise cannot predict it, so with noise that is
independent from pixel to pixel and zero-mean given the signal, the best it
can do is predict the expected (clean) value from the surroundings.

Axis order: images ``(..., y, x)``; a stack ``(n, y, x)`` is a set of
independent 2D frames (the network is 2D, each frame is masked and denoised on
its own). Patches are ``(batch, p, p)``.

Masking follows Noise2Void: the patch is divided into square cells of side
``g = max(2, round(fraction ** -0.5))`` and one pixel is drawn uniformly in
every cell (stratified sampling, so masked pixels are spread evenly; cells cut
by the patch border keep their pixel only when it falls inside). The replacement
value is drawn uniformly from the ``(2 radius + 1)^2 - 1`` neighbours in the
window around the pixel, the pixel itself excluded (N2V's "uniform without
centre"); a neighbour that would lie outside the patch is mirrored through the
pixel (offset ``-d`` instead of ``d``), so it is always a different pixel of
the same window.

References:
    Krull, Buchholz and Jug, "Noise2Void - learning denoising from single noisy
    images", CVPR (2019).
    Batson and Royer, "Noise2Self: blind denoising by self-supervision", ICML
    (2019).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import as_float_array, check_choice, check_finite, check_int, check_shape, real_float
from jaxsr.nn.data import augment_d4, random_patches
from jaxsr.nn.model import NORMALIZATIONS, DenoiserModel, _normalize
from jaxsr.nn.train import TrainConfig, data_fingerprint, fit, resolve_configs
from jaxsr.nn.unet import UNetConfig, unet_apply, unet_init

__all__ = [
    "BlindSpotMask",
    "blind_spot_mask",
    "blind_spot_corrupt",
    "cell_side",
    "masked_mse",
    "make_n2v_loss",
    "train_self_supervised",
    "SELF_SUPERVISED_UNET",
    "SELF_SUPERVISED_TRAIN",
]

#: Default fraction of masked pixels: one pixel per 8 x 8 cell (1.56 %), as in
#: the Noise2Void paper (64 pixels per 64 x 64 patch).
DEFAULT_FRACTION = 1.0 / 64.0


class BlindSpotMask(NamedTuple):
    """Which pixels are masked and where their replacement values come from.

    Attributes:
        mask: ``(..., y, x)`` bool, True at the masked pixels.
        source_y: ``(..., y, x)`` int32, row whose value fills each pixel (the
            pixel's own row where it is not masked).
        source_x: ``(..., y, x)`` int32, column likewise.
    """

    mask: jax.Array
    source_y: jax.Array
    source_x: jax.Array


def _check_fraction(fraction: Any) -> float:
    f = real_float(fraction, "fraction")
    if not (np.isfinite(f) and 0.0 < f <= 0.5):
        raise ValueError(f"argument 'fraction': expected a number in (0, 0.5], got {fraction!r}")
    return f


def cell_side(fraction: float) -> int:
    """Side ``g`` of the stratification cells for a masked ``fraction`` (one pixel per ``g x g``).

    ``g = max(2, round(fraction ** -0.5))``; the masked fraction is ``1 / g**2``
    on patches whose sides are multiples of ``g``.

    >>> cell_side(1 / 64), cell_side(0.002), cell_side(0.5)
    (8, 22, 2)
    """
    f = _check_fraction(fraction)
    return max(2, int(round(f ** -0.5)))


def _fold(i: jax.Array, d: jax.Array, n: int) -> jax.Array:
    """``i + d`` when inside ``[0, n)``, else ``i - d`` (needs ``n >= 2 |d| + 1``)."""
    j = i + d
    return jnp.where((j < 0) | (j >= n), i - d, j).astype(jnp.int32)


@partial(jax.jit, static_argnums=(1, 2, 3))
def _mask_impl(key, shape, g, radius):
    ny, nx = shape[-2:]
    batch = shape[:-2]
    cy, cx = -(-ny // g), -(-nx // g)
    w = 2 * radius + 1
    n_nb = w * w - 1
    # One draw of 32 random bits per cell and quantity (a single PRNG call compiles fastest);
    # the modulo bias is below g / 2**32 and n_nb / 2**32, negligible.
    bits = jax.random.bits(key, batch + (cy, cx, 3), jnp.uint32)
    oy = (bits[..., 0] % g).astype(jnp.int32)
    ox = (bits[..., 1] % g).astype(jnp.int32)
    j = (bits[..., 2] % n_nb).astype(jnp.int32)
    j = j + (j >= n_nb // 2)  # skip the centre of the window (index radius * w + radius)
    dy, dx = j // w - radius, j % w - radius

    ar = jnp.arange(g)
    in_y = ar == oy[..., None]  # (..., cy, cx, g)
    in_x = ar == ox[..., None]
    cells = in_y[..., :, None] & in_x[..., None, :]  # (..., cy, cx, g, g)
    nb = len(batch)
    perm = tuple(range(nb)) + (nb, nb + 2, nb + 1, nb + 3)
    mask = jnp.transpose(cells, perm).reshape(batch + (cy * g, cx * g))[..., :ny, :nx]

    def expand(d):
        full = jnp.broadcast_to(d[..., :, None, :, None], batch + (cy, g, cx, g))
        return full.reshape(batch + (cy * g, cx * g))[..., :ny, :nx]

    dy_full = jnp.where(mask, expand(dy), 0)
    dx_full = jnp.where(mask, expand(dx), 0)
    yy = jnp.arange(ny)[:, None]
    xx = jnp.arange(nx)[None, :]
    source_y = _fold(yy, dy_full, ny)
    source_x = _fold(xx, dx_full, nx)
    return BlindSpotMask(mask, source_y, source_x)


def blind_spot_mask(key: jax.Array, shape, *, fraction: float = DEFAULT_FRACTION, radius: int = 2) -> BlindSpotMask:
    """Draw a Noise2Void blind-spot mask: stratified masked pixels and their replacement sources.

    One pixel is masked per ``g x g`` cell (``g = max(2, round(fraction ** -0.5))``,
    see :func:`cell_side`), at a uniformly random place in the cell; each masked
    pixel gets a replacement source drawn uniformly from its
    ``(2 radius + 1) x (2 radius + 1)`` window without the centre, mirrored
    through the pixel where it would leave the image. Leading axes of ``shape``
    are independent images. Deterministic from ``key``; jittable with static
    ``shape``, ``fraction`` and ``radius``.

    Args:
        key: JAX PRNG key.
        shape: ``(..., y, x)`` static shape of the images to mask; ``y, x >= 2 radius + 1``.
        fraction: target fraction of masked pixels, in ``(0, 0.5]`` (default
            1/64; Noise2Void uses about 0.2 % to 2 %).
        radius: static int >= 1, half-width of the neighbour window (2: 5 x 5).

    Returns:
        :class:`BlindSpotMask` ``(mask, source_y, source_x)``, each of ``shape``.

    Raises:
        ValueError: ``fraction`` outside ``(0, 0.5]``, ``radius < 1``, fewer than
            2 dimensions, or an image side smaller than ``2 radius + 1``.

    References:
        Krull, Buchholz and Jug, "Noise2Void - learning denoising from single
        noisy images", CVPR (2019).

    >>> import jax
    >>> m = blind_spot_mask(jax.random.key(0), (2, 16, 16), fraction=1 / 16)
    >>> m.mask.shape, m.mask.sum(axis=(-2, -1)).tolist()
    ((2, 16, 16), [16, 16])
    """
    fraction = _check_fraction(fraction)
    radius = check_int(radius, "radius", minimum=1)
    shape = check_shape(shape, "shape")
    if len(shape) < 2:
        raise ValueError(f"argument 'shape': expected (..., y, x), got {shape}")
    ny, nx = shape[-2:]
    if min(ny, nx) < 2 * radius + 1:
        raise ValueError(
            f"argument 'shape': image sides must be at least 2 * radius + 1 = {2 * radius + 1}, got {(ny, nx)}"
        )
    return _mask_impl(key, shape, cell_side(fraction), radius)


@jax.jit
def _gather(images: jax.Array, spot: BlindSpotMask) -> jax.Array:
    ny, nx = images.shape[-2:]
    flat = (spot.source_y * nx + spot.source_x).reshape(-1, ny * nx)
    vals = jnp.take_along_axis(images.reshape(-1, ny * nx), flat, axis=1)
    return vals.reshape(images.shape)


def blind_spot_corrupt(
    key: jax.Array, images, *, fraction: float = DEFAULT_FRACTION, radius: int = 2
) -> tuple[jax.Array, jax.Array]:
    """Mask ``images`` for blind-spot training: replace masked pixels by random neighbours.

    Args:
        key: JAX PRNG key (mask positions and neighbour choice; see :func:`blind_spot_mask`).
        images: ``(..., y, x)`` float array (leading axes are independent images).
        fraction: target fraction of masked pixels, in ``(0, 0.5]``.
        radius: half-width of the neighbour window (2: 5 x 5 without the centre).

    Returns:
        ``(corrupted, mask)``: ``corrupted`` like ``images`` with every masked
        pixel replaced by a neighbour's value (other pixels unchanged), and the
        ``(..., y, x)`` bool ``mask``.

    Raises:
        ValueError: see :func:`blind_spot_mask`.

    References:
        Krull, Buchholz and Jug, "Noise2Void - learning denoising from single
        noisy images", CVPR (2019).

    >>> import jax, jax.numpy as jnp
    >>> x = jnp.arange(64.0).reshape(8, 8)
    >>> c, m = blind_spot_corrupt(jax.random.key(0), x, fraction=1 / 16)
    >>> int(m.sum()), bool(jnp.all(c[~m] == x[~m])), bool(jnp.all(c[m] != x[m]))
    (4, True, True)
    """
    images = as_float_array(images, "images")
    if images.ndim < 2:
        raise ValueError(f"argument 'images': expected (..., y, x), got shape {tuple(images.shape)}")
    spot = blind_spot_mask(key, images.shape, fraction=fraction, radius=radius)
    return _gather(images, spot), spot.mask


def masked_mse(prediction, target, mask) -> jax.Array:
    """Mean squared error over the masked pixels only (the Noise2Void loss).

    ``sum(mask * (prediction - target)**2) / max(sum(mask), 1)``; unmasked
    pixels contribute neither value nor gradient (even if they hold inf/NaN).

    Args:
        prediction: ``(..., y, x)`` network output.
        target: ``(..., y, x)`` the uncorrupted noisy images.
        mask: ``(..., y, x)`` bool, True where the loss is taken.

    Returns:
        Scalar, the dtype of ``prediction``.

    >>> import jax.numpy as jnp
    >>> float(masked_mse(jnp.array([1.0, 5.0]), jnp.array([0.0, 0.0]), jnp.array([True, False])))
    1.0
    """
    prediction = jnp.asarray(prediction)
    target = jnp.asarray(target)
    mask = jnp.asarray(mask, dtype=bool)
    if prediction.shape != target.shape or mask.shape != target.shape:
        raise ValueError(
            f"argument 'mask': prediction {tuple(prediction.shape)}, target {tuple(target.shape)} and "
            f"mask {tuple(mask.shape)} must have the same shape"
        )
    return _masked_mse(prediction, target, mask)


@jax.jit
def _masked_mse(prediction, target, mask):
    sq = jnp.where(mask, jnp.square(jnp.where(mask, prediction - target, 0)), 0)
    count = jnp.maximum(jnp.sum(mask), 1).astype(sq.dtype)
    return jnp.sum(sq) / count


def _noisy(batch):
    """The noisy patches of a batch: an array, or the first element of a tuple/list."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("argument 'batch': expected an array or a non-empty tuple of arrays")
        batch = batch[0]
    return jnp.asarray(batch)


def make_n2v_loss(
    *,
    config: UNetConfig | None = None,
    apply_fn: Callable[[Any, jax.Array], jax.Array] | None = None,
    fraction: float = DEFAULT_FRACTION,
    radius: int = 2,
) -> Callable[[Any, Any, jax.Array], jax.Array]:
    """Build the Noise2Void loss ``loss_fn(params, batch, key)`` for :func:`jaxsr.nn.train.fit`.

    ``loss_fn`` masks the noisy patches with :func:`blind_spot_corrupt` (from
    ``key``), runs the network on the corrupted patches, and returns
    :func:`masked_mse` of the output against the *uncorrupted* patches at the
    masked pixels. It is pure and jittable.

    Args:
        config: a :class:`~jaxsr.nn.unet.UNetConfig` (single-channel in and out);
            the network is then :func:`~jaxsr.nn.unet.unet_apply`.
        apply_fn: or any ``apply_fn(params, images) -> images`` on
            ``(batch, y, x)`` arrays (exactly one of ``config``/``apply_fn``).
        fraction: target fraction of masked pixels, in ``(0, 0.5]``.
        radius: half-width of the neighbour window.

    Returns:
        ``loss_fn(params, batch, key) -> scalar``, where ``batch`` is a
        ``(batch, y, x)`` array of noisy patches or a tuple whose first element
        is one.

    Raises:
        ValueError: both or neither of ``config``/``apply_fn``; a multi-channel
            ``config``; bad ``fraction``/``radius``.

    References:
        Krull, Buchholz and Jug, "Noise2Void - learning denoising from single
        noisy images", CVPR (2019).

    >>> import jax, jax.numpy as jnp
    >>> loss_fn = make_n2v_loss(apply_fn=lambda p, x: p * x, fraction=1 / 16)
    >>> float(loss_fn(1.0, jnp.ones((2, 8, 8)), jax.random.key(0)))
    0.0
    """
    if (config is None) == (apply_fn is None):
        raise ValueError("argument 'config': give exactly one of 'config' and 'apply_fn'")
    if config is not None:
        if not isinstance(config, UNetConfig):
            raise TypeError(f"argument 'config': expected a UNetConfig, got {type(config).__name__}")
        if config.in_channels != 1 or config.out_channels != 1:
            raise ValueError(
                f"argument 'config': blind-spot training needs in_channels = out_channels = 1, got "
                f"{config.in_channels} and {config.out_channels}"
            )
        cfg = config

        def apply_fn(params, images):
            return unet_apply(params, images, config=cfg)
    elif not callable(apply_fn):
        raise TypeError(f"argument 'apply_fn': expected a callable, got {type(apply_fn).__name__}")
    fraction = _check_fraction(fraction)
    radius = check_int(radius, "radius", minimum=1)
    net = apply_fn

    def loss_fn(params, batch, key):
        noisy = _noisy(batch)
        corrupted, mask = blind_spot_corrupt(key, noisy, fraction=fraction, radius=radius)
        prediction = net(params, corrupted)
        return masked_mse(prediction, jax.lax.stop_gradient(noisy), mask)

    return loss_fn


#: Default network of self-supervised training: a much smaller U-Net than 3Snet's
#: (3 poolings, 16/32 channels, 88,865 parameters), so that one 512 x 512 frame
#: trains in a few minutes on a 2-core CPU.
SELF_SUPERVISED_UNET = UNetConfig(depth=3, features=16, decoder_features=32)

#: Default training settings of :func:`train_self_supervised` (600 steps of 16
#: patches of 64 x 64, Adam with a one-cycle schedule peaking at 2e-3).
SELF_SUPERVISED_TRAIN = TrainConfig(steps=600, batch_size=16, patch_size=64, learning_rate=2e-3,
                                    schedule="onecycle", checkpoint_every=100, eval_every=50)


def train_self_supervised(
    key: jax.Array,
    images,
    *,
    config: UNetConfig | None = None,
    train: TrainConfig | None = None,
    fraction: float = DEFAULT_FRACTION,
    radius: int = 2,
    normalization: str = "meanstd",
    checkpoint_dir=None,
    callback: Callable | None = None,
):
    """Train a blind-spot (Noise2Void) denoiser on the noisy image or stack itself.

    No clean data and no second noisy copy are needed: every training batch is
    cut from ``images`` (random ``train.patch_size`` patches, a random frame of
    a stack, random flips/rotations), blind-spot masked (:func:`blind_spot_corrupt`)
    and the network learns to predict the masked pixels' noisy values from
    their surroundings (:func:`make_n2v_loss`). Training runs through
    :func:`jaxsr.nn.train.fit` (Adam, one-cycle schedule, resumable
    checkpoints, deterministic from ``train.seed``).

    Normalisation: each frame is fed to the network as ``(x - mean) / std``
    with its own mean and standard deviation (``"meanstd"``, as Noise2Void
    normalises) or divided by its 99.9th percentile (``"percentile"``), exactly
    as :func:`jaxsr.nn.model.denoise` will normalise the frames it denoises, so
    the returned model applies to these and to other frames of the same
    microscope. The noise must be independent from pixel to pixel (shot,
    Gaussian read noise); correlated noise (e.g. after demosaicing or
    interpolation) leaks through the blind spot.

    Args:
        key: JAX PRNG key of the network's initial weights (batches and masks
            come from ``train.seed``).
        images: ``(y, x)`` noisy frame or ``(n, y, x)`` stack of frames (camera
            units), finite; both sides at least ``train.patch_size`` and
            ``config.multiple``.
        config: the network, a single-channel :class:`~jaxsr.nn.unet.UNetConfig`
            (default :data:`SELF_SUPERVISED_UNET`); ``residual`` must be off.
        train: :class:`~jaxsr.nn.train.TrainConfig` (default
            :data:`SELF_SUPERVISED_TRAIN`: 600 steps of 16 patches of 64 x 64, lr 2e-3).
        fraction: target fraction of masked pixels per patch, in ``(0, 0.5]``
            (default 1/64, one per 8 x 8 cell).
        radius: half-width of the window the replacement neighbour is drawn from.
        normalization: ``"meanstd"`` or ``"percentile"``.
        checkpoint_dir: directory for resumable checkpoints, or ``None``.
        callback: progress callback ``callback(info)`` (see :func:`jaxsr.nn.train.fit`).

    Returns:
        ``(model, result)``: the trained :class:`jaxsr.nn.model.DenoiserModel`
        (``kind="n2v"``; denoise with :func:`jaxsr.nn.model.denoise`) and the
        :class:`jaxsr.nn.train.TrainResult` (its history holds the blind-spot loss).

    Raises:
        ValueError: ``images`` not 2-D/3-D, with NaN/inf, or smaller than the
            patch size or the network's minimum; bad ``fraction``/``radius``/
            ``normalization``; a residual or multi-channel ``config``.
        TypeError: ``config``/``train`` of the wrong type.

    References:
        Krull, Buchholz and Jug, "Noise2Void - learning denoising from single
        noisy images", CVPR (2019).
        Batson and Royer, "Noise2Self: blind denoising by self-supervision",
        ICML (2019).

    Example (not run as a doctest: compiling the training step takes ~10 s;
    ``tests/nn/test_self_supervised.py`` trains the same way):

    >>> import jax
    >>> from jaxsr.nn.model import denoise
    >>> noisy = jax.random.normal(jax.random.key(1), (64, 64))
    >>> cfg = UNetConfig(depth=2, features=8, decoder_features=8)
    >>> model, result = train_self_supervised(jax.random.key(0), noisy, config=cfg,  # doctest: +SKIP
    ...     train=TrainConfig(steps=60, batch_size=8, patch_size=32))
    >>> denoised = denoise(noisy, model=model)  # doctest: +SKIP
    """
    config, train = resolve_configs(config, train, default_config=SELF_SUPERVISED_UNET,
                                    default_train=SELF_SUPERVISED_TRAIN)
    if config.residual:
        raise ValueError("argument 'config': residual=True would pass each pixel's own noise to the output; "
                         "blind-spot training needs residual=False")
    check_choice(normalization, "normalization", NORMALIZATIONS)
    fraction = _check_fraction(fraction)
    radius = check_int(radius, "radius", minimum=1)
    loss_fn = make_n2v_loss(config=config, fraction=fraction, radius=radius)  # checks the channels
    images = as_float_array(images, "images")
    if images.ndim not in (2, 3):
        raise ValueError(f"argument 'images': expected (y, x) or (n, y, x), got shape {tuple(images.shape)}")
    ny, nx = images.shape[-2:]
    p = train.patch_size
    if min(ny, nx) < p:
        raise ValueError(
            f"argument 'images': frames of {(ny, nx)} pixels are smaller than the training patch_size {p}; "
            "use a smaller train.patch_size"
        )
    if min(ny, nx) < config.multiple:
        raise ValueError(
            f"argument 'images': frames of {(ny, nx)} pixels are smaller than the network's minimum "
            f"{config.multiple} (2**depth); use a smaller depth"
        )
    if p < 2 * radius + 1:
        raise ValueError(f"argument 'train': patch_size {p} is smaller than the blind-spot window 2 * radius + 1")
    check_finite(images, "images")

    frames = images.reshape((-1, ny, nx))
    x, _, _ = _normalize(frames, normalization, jnp.zeros((), frames.dtype))
    batch_size = train.batch_size

    def sample_batch(k):
        k_cut, k_aug = jax.random.split(k)
        (patches,) = random_patches(k_cut, x, patch_size=p, batch_size=batch_size)
        (patches,) = augment_d4(k_aug, patches)
        return patches

    params = unet_init(key, config=config)
    meta = {"kind": "n2v", "unet": config.to_dict(), "fraction": fraction, "radius": radius,
            "normalization": normalization, "data_shape": list(images.shape),
            "data": data_fingerprint(images)}  # a checkpoint of a run on other frames is refused
    result = fit(loss_fn, params, sample_batch, config=train, checkpoint_dir=checkpoint_dir, meta=meta,
                 callback=callback)
    info = {
        "method": "Noise2Void blind spot",
        "fraction": fraction,
        "cell_side": cell_side(fraction),
        "radius": radius,
        "train": train.to_dict(),
        "steps": int(result.step),
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "data_shape": list(images.shape),
    }
    model = DenoiserModel(kind="n2v", unet=config, params=result.params, normalization=normalization,
                          offset=0.0, info=info)
    return model, result
