"""3Snet: a U-Net denoiser trained on ON/OFF series of a reversibly switchable fluorophore.

Recipe (Xue et al., Nat Commun 2026): from ``n`` ON and ``n`` OFF frames of a
fixed sample, the ground truth is the 3S image ``GT = AVG(ON) - AVG(OFF)``;
self-supervised pairs are two averages of ``k`` randomly chosen ON frames (the
two sets disjoint here, so their noise is independent) for ``k`` in
``{1, 2, 4, 8, 16}``, ``n_combinations`` (50) random pairs per ``k``. The loss
mixes the Noise2Noise term and the supervised term,
``[||f(x) - y||^2 + lam ||f(x) - GT||^2] / (1 + lam)``, with ``lam = inf``
meaning the supervised term alone; ``lam`` is chosen from
``{0, 1, 2, 4, 8, 16, inf}`` by the test pSNR of single frames on a held-out
part of the field (:func:`lambda_sweep`).

Normalisation: every network input ``x`` (a ``k``-average, or at inference a
single frame) is mapped to ``(x - offset) / s`` with ``s`` the 99.9th
percentile of ``x - offset`` over its whole frame, and its targets are divided
by the same ``s``; the output is multiplied back by ``s``. So training sees
inputs normalised exactly as single frames are at inference (the release uses
the frame maximum; a high percentile is the same idea, robust to a hot pixel).

Axis order: ``(n, y, x)`` series (or ``(samples, n, y, x)`` for several
fields of view of one size), images ``(..., y, x)``; intensities in camera
units (ADU or grey levels).

References:
    Xue et al., "High-fidelity single-frame computational super-resolution using
    signal-preserving denoising-enabled deconvolution" (3Snet-CLID),
    Nat. Commun. (2026).
    Lehtinen et al., "Noise2Noise", ICML (2018).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import as_float_array, check_finite, check_int
from jaxsr.metrics.quality import psnr
from jaxsr.nn.data import augment_d4
from jaxsr.nn.model import DenoiserModel, _frame_scale, denoise
from jaxsr.nn.train import TrainConfig, data_fingerprint, fit, resolve_configs
from jaxsr.nn.unet import UNet, UNetConfig, unet_init

__all__ = [
    "three_snet_loss",
    "ThreeSNetData",
    "three_snet_data",
    "train_3snet",
    "lambda_sweep",
    "LAMBDAS",
    "DEFAULT_KS",
]

LAMBDAS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf)
DEFAULT_KS = (1, 2, 4, 8, 16)


def three_snet_loss(prediction, target, ground_truth, *, lam):
    """The 3Snet hybrid loss ``[mean (f(x) - y)^2 + lam mean (f(x) - GT)^2] / (1 + lam)``.

    Args:
        prediction: ``(..., y, x)`` network output ``f(x)``.
        target: ``(..., y, x)`` self-supervised target ``y`` (another average of ON frames).
        ground_truth: ``(..., y, x)`` 3S ground truth ``GT`` (broadcastable).
        lam: weight of the supervised term, >= 0; ``math.inf`` gives the
            supervised loss alone, ``0`` the Noise2Noise loss alone.

    Returns:
        Scalar mean loss.

    >>> import jax.numpy as jnp
    >>> p, y, g = jnp.ones(4), jnp.zeros(4), jnp.full(4, 3.0)
    >>> float(three_snet_loss(p, y, g, lam=0.0)), float(three_snet_loss(p, y, g, lam=math.inf))
    (1.0, 4.0)
    >>> float(three_snet_loss(p, y, g, lam=1.0))
    2.5
    """
    lam = float(lam)
    if not lam >= 0:
        raise ValueError(f"argument 'lam': expected a number >= 0 (or math.inf), got {lam}")
    sup = jnp.mean(jnp.square(prediction - ground_truth))
    if math.isinf(lam):
        return sup
    selfsup = jnp.mean(jnp.square(prediction - target))
    return (selfsup + lam * sup) / (1.0 + lam)


class ThreeSNetData(NamedTuple):
    """Training data of :func:`train_3snet` (see :func:`three_snet_data`).

    Attributes:
        on: ``(s, n, y, x)`` ON series of the training region, offset removed.
        ground_truth: ``(s, y, x)`` 3S ground truth of the training region.
        weights_x: ``(P, n)`` frame weights of the pair inputs (``1/k`` on ``k`` frames).
        weights_y: ``(P, n)`` frame weights of the pair targets (disjoint frames).
        scale: ``(s, P)`` normalisation of each pair input (99.9th percentile over the frame).
        test_on: ``(s, m, yt, x)`` held-out single ON frames (offset removed), or ``None``.
        test_ground_truth: ``(s, yt, x)`` their 3S ground truth, or ``None``.
    """

    on: jax.Array
    ground_truth: jax.Array
    weights_x: jax.Array
    weights_y: jax.Array
    scale: jax.Array
    test_on: Any
    test_ground_truth: Any


def _series(x, name):
    x = as_float_array(x, name)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"argument '{name}': expected (n, y, x) or (samples, n, y, x), got shape {tuple(x.shape)}")
    if x.shape[1] < 2:
        raise ValueError(f"argument '{name}': needs at least 2 frames, got {x.shape[1]}")
    check_finite(x, name)
    return x


def _pair_weights(key, n, ks, n_combinations):
    wx, wy = [], []
    for i, k in enumerate(ks):
        for j in range(n_combinations):
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, i * 100003 + j), n))
            a = np.zeros(n, np.float32)
            b = np.zeros(n, np.float32)
            a[perm[:k]] = 1.0 / k
            b[perm[k:2 * k]] = 1.0 / k
            wx.append(a)
            wy.append(b)
    return np.stack(wx), np.stack(wy)


def three_snet_data(key, on, off, *, ks=DEFAULT_KS, n_combinations=50, test_fraction=0.2, offset=0.0,
                    test_frames=4):
    """Build the 3Snet training set from ON/OFF series (pairs, ground truth, test split).

    The bottom ``test_fraction`` of the rows of every field of view is held out:
    its single ON frames and 3S ground truth are the test set for the ``lam``
    sweep. ``k`` values with ``2 k`` > the number of frames are dropped.

    Args:
        key: JAX PRNG key (the random frame combinations).
        on: ``(n, y, x)`` or ``(samples, n, y, x)`` ON frames, ``n >= 2``.
        off: OFF frames of the same shape.
        ks: frames per average (default ``(1, 2, 4, 8, 16)``).
        n_combinations: random pairs per ``k`` (50).
        test_fraction: fraction of rows held out for testing, in ``[0, 0.5]``
            (0 disables the test set).
        offset: camera offset subtracted from the ON frames before normalising.
        test_frames: ON frames per field of view used as test inputs.

    Returns:
        :class:`ThreeSNetData`.

    >>> import jax, jax.numpy as jnp
    >>> on = jax.random.uniform(jax.random.key(0), (8, 40, 32)) + 1.0
    >>> d = three_snet_data(jax.random.key(1), on, on - 1.0, ks=(1, 2), n_combinations=3)
    >>> d.on.shape, d.weights_x.shape, d.scale.shape, d.test_on.shape
    ((1, 8, 32, 32), (6, 8), (1, 6), (1, 4, 8, 32))
    """
    on = _series(on, "on")
    off = _series(off, "off")
    if off.shape != on.shape:
        raise ValueError(f"argument 'off': expected the shape of 'on' {tuple(on.shape)}, got {tuple(off.shape)}")
    n_combinations = check_int(n_combinations, "n_combinations", minimum=1)
    test_frames = check_int(test_frames, "test_frames", minimum=1)
    if not 0.0 <= float(test_fraction) <= 0.5:
        raise ValueError(f"argument 'test_fraction': expected a number in [0, 0.5], got {test_fraction}")
    n = on.shape[1]
    ks = tuple(check_int(k, "ks", minimum=1) for k in ks)
    usable = tuple(k for k in ks if 2 * k <= n)
    if not usable:
        raise ValueError(f"argument 'ks': no k with 2k <= {n} frames in {ks}")
    gt = jnp.mean(on, axis=1) - jnp.mean(off, axis=1)
    on = on - offset
    ny = on.shape[2]
    n_test = _test_rows(ny, test_fraction)
    if n_test and ny - n_test < 8:
        raise ValueError(f"argument 'test_fraction': leaves fewer than 8 training rows of {ny}")
    train_on, train_gt = on[:, :, : ny - n_test], gt[:, : ny - n_test]
    wx, wy = _pair_weights(key, n, usable, n_combinations)
    wx, wy = jnp.asarray(wx, on.dtype), jnp.asarray(wy, on.dtype)
    # Per-pair input scale over the whole training frame (lax.map keeps memory at one frame per pair).
    scale = jax.lax.map(lambda s: jax.lax.map(lambda w: _frame_scale(jnp.tensordot(w, s, axes=1)), wx), train_on)
    test_on = test_gt = None
    if n_test:
        test_on = on[:, : min(test_frames, n), ny - n_test:]
        test_gt = gt[:, ny - n_test:]
    return ThreeSNetData(train_on, train_gt, wx, wy, scale, test_on, test_gt)


def _test_rows(ny: int, test_fraction) -> int:
    """Rows of a field of ``ny`` rows that :func:`three_snet_data` holds out for testing."""
    return int(round(ny * float(test_fraction)))


def _check_test_split(ny: int, nx: int, n_test: int, test_fraction, config: UNetConfig):
    """The held-out rows must be a frame the network can denoise (at least ``2**depth`` on each side).

    Raises before training: otherwise the first evaluation (step ``eval_every``) fails in :func:`denoise`.
    """
    if not n_test:
        return
    m = config.multiple
    if nx < m:
        raise ValueError(
            f"argument 'on': frames {nx} pixels wide are narrower than the network's minimum of {m} "
            f"(2**depth, depth {config.depth}); use a network of smaller depth"
        )
    if n_test < m:
        tf = float(test_fraction)
        rows = max(1, math.ceil((m - 0.5) / tf) - 1)
        while _test_rows(rows, tf) < m:
            rows += 1
        raise ValueError(
            f"argument 'test_fraction': {tf:g} of {ny} rows holds out {n_test} test rows, fewer than the "
            f"network's minimum of {m} (2**depth, depth {config.depth}); the test pSNR needs fields of at "
            f"least {rows} rows, a larger test_fraction or a network of smaller depth"
        )


def _check_patch(data: ThreeSNetData, patch_size):
    ny, nx = data.on.shape[-2:]
    if min(ny, nx) < patch_size:
        raise ValueError(
            f"argument 'patch_size': {patch_size} is larger than the training region {(ny, nx)}"
        )


def _mixture_loss(prediction, target, ground_truth, lam):
    """:func:`three_snet_loss` for a finite, traced ``lam`` (a scalar array), with the same arithmetic."""
    sup = jnp.mean(jnp.square(prediction - ground_truth))
    selfsup = jnp.mean(jnp.square(prediction - target))
    # times the reciprocal: what XLA made of the division by 1 + lam when lam was a constant
    return (selfsup + lam * sup) * (1.0 / (1.0 + lam))


@functools.lru_cache(maxsize=8)
def _step_functions(config: UNetConfig, patch_size: int, batch_size: int, supervised: bool):
    """The loss and the batch sampler of a 3Snet training, with the data (and ``lam``) as arguments.

    Cached per configuration and holding no arrays, so :func:`jaxsr.nn.train.fit` compiles the training
    step once per data shape for every finite ``lam`` (``loss_fn(params, batch, key, lam)``) and once for
    ``lam = inf`` (``supervised``: ``loss_fn(params, batch, key)``, the supervised term alone): a sweep
    over the 7 default ``lam`` compiles it twice, not 7 times. ``inf`` keeps its own step: in a step
    shared with the mixture, XLA rounds its gradient differently (the output bias, by about 1e-7) from
    the step it compiled for the constant ``lam = inf``; with two steps every ``lam`` trains to the same
    bits as when ``lam`` was a constant.
    """
    net = UNet(config)

    def predict(params, x):
        return net.apply(params, x[..., None])[..., 0]

    if supervised:
        def loss_fn(params, batch, key):
            x, y, g = batch
            return three_snet_loss(predict(params, x), y, g, lam=math.inf)
    else:
        def loss_fn(params, batch, key, lam):
            x, y, g = batch
            return _mixture_loss(predict(params, x), y, g, lam)

    def sample(key, data):
        s, n, ny, nx = data.on.shape
        n_pairs = data.weights_x.shape[0]
        ks, kp, ky, kx, ka = jax.random.split(key, 5)
        si = jax.random.randint(ks, (batch_size,), 0, s)
        pi = jax.random.randint(kp, (batch_size,), 0, n_pairs)
        y0 = jax.random.randint(ky, (batch_size,), 0, ny - patch_size + 1)
        x0 = jax.random.randint(kx, (batch_size,), 0, nx - patch_size + 1)

        def one(si, pi, y0, x0):
            stack = jax.lax.dynamic_slice(data.on[si], (0, y0, x0), (n, patch_size, patch_size))
            g = jax.lax.dynamic_slice(data.ground_truth[si], (y0, x0), (patch_size, patch_size))
            sc = data.scale[si, pi]
            x = jnp.tensordot(data.weights_x[pi], stack, axes=1) / sc
            y = jnp.tensordot(data.weights_y[pi], stack, axes=1) / sc
            return x, y, g / sc

        x, y, g = jax.vmap(one)(si, pi, y0, x0)
        return augment_d4(ka, x, y, g)

    return loss_fn, sample


def _test_psnr(model: DenoiserModel, data: ThreeSNetData):
    out = denoise(data.test_on, model=model, offset=0.0)  # test_on already has the offset removed
    if not bool(jnp.all(jnp.isfinite(out))):
        return float("nan")  # a diverging network; fit() stops at the next non-finite loss
    gt = data.test_ground_truth[:, None]
    rng = jnp.max(data.test_ground_truth) - jnp.minimum(jnp.min(data.test_ground_truth), 0.0)
    return float(jnp.mean(psnr(out, jnp.broadcast_to(gt, out.shape), data_range=rng)))


def train_3snet(
    key,
    on,
    off,
    *,
    lam=math.inf,
    config: UNetConfig | None = None,
    train: TrainConfig | None = None,
    ks=DEFAULT_KS,
    n_combinations=50,
    test_fraction=0.2,
    offset=0.0,
    checkpoint_dir=None,
    callback: Callable | None = None,
    data: ThreeSNetData | None = None,
    init: DenoiserModel | None = None,
):
    """Train a 3Snet denoiser on ON/OFF series.

    Args:
        key: JAX PRNG key (pair combinations and the network's initial weights;
            batches come from ``train.seed``).
        on: ``(n, y, x)`` or ``(samples, n, y, x)`` ON frames (camera units).
        off: OFF frames of the same shape.
        lam: weight of the supervised term (``math.inf``: supervised only).
        config: the network (:class:`UNetConfig`, default the 3Snet/N2N U-Net).
        train: :class:`TrainConfig` (default 2000 steps, batch 16, 64 px patches).
        ks, n_combinations, test_fraction, offset: see :func:`three_snet_data`.
        checkpoint_dir: resumable checkpoints (see :func:`jaxsr.nn.train.fit`).
        callback: progress callback; gets ``step``, ``loss`` and ``test_psnr``.
        data: a prebuilt :class:`ThreeSNetData` (skips building it; ``on``/``off``
            are then ignored and may be ``None``).
        init: a trained :class:`DenoiserModel` with the same ``config`` to start
            from (fine-tuning, e.g. the shipped model on your own ON/OFF data);
            ``None`` starts from random weights.

    Returns:
        ``(model, result)``: the trained :class:`jaxsr.nn.model.DenoiserModel`
        and the :class:`jaxsr.nn.train.TrainResult` (history with ``test_psnr``).

    References:
        Xue et al., Nat. Commun. (2026) (3Snet-CLID).
    """
    config, train = resolve_configs(config, train, default_config=UNetConfig(), default_train=TrainConfig())
    lam = float(lam)
    if not lam >= 0:
        raise ValueError(f"argument 'lam': expected a number >= 0 (or inf), got {lam}")
    k_data, k_init = jax.random.split(key)
    if data is None:
        shape = np.shape(on)
        if len(shape) >= 2 and 0.0 <= float(test_fraction) <= 0.5:  # else three_snet_data says what is wrong
            ny, nx = shape[-2:]
            _check_test_split(ny, nx, _test_rows(ny, test_fraction), test_fraction, config)
        data = three_snet_data(k_data, on, off, ks=ks, n_combinations=n_combinations,
                               test_fraction=test_fraction, offset=offset)
    elif data.test_on is not None:
        n_test, nx = data.test_on.shape[-2:]
        ny = n_test + data.on.shape[-2]
        _check_test_split(ny, nx, n_test, n_test / ny, config)
    _check_patch(data, train.patch_size)
    supervised = math.isinf(lam)
    loss_fn, sample = _step_functions(config, train.patch_size, train.batch_size, supervised)

    def make_model(params):
        return DenoiserModel(kind="3snet", unet=config, params=params, offset=float(offset),
                             info={"lambda": "inf" if math.isinf(lam) else lam, "train": train.to_dict()})

    evaluate = None
    if data.test_on is not None:
        evaluate = lambda params: {"test_psnr": _test_psnr(make_model(params), data)}  # noqa: E731
    if init is None:
        params = unet_init(k_init, config=config)
    else:
        if not isinstance(init, DenoiserModel) or init.unet != config:
            raise ValueError("argument 'init': expected a DenoiserModel with the same UNetConfig as 'config'")
        params = init.params
    meta = {"kind": "3snet", "unet": config.to_dict(), "lambda": "inf" if math.isinf(lam) else lam,
            "offset": float(offset), "init": None if init is None else init.info.get("fingerprint", "model"),
            # the training data, pairs and test split (so also ks, n_combinations, test_fraction and offset):
            # a checkpoint of a run on other data is refused, never resumed
            "data": data_fingerprint(data)}
    # data and lam are arguments of the compiled step, not constants: see _step_functions
    result = fit(loss_fn, params, sample, config=train, checkpoint_dir=checkpoint_dir, meta=meta,
                 evaluate=evaluate, callback=callback, data=data._replace(test_on=None, test_ground_truth=None),
                 hyper=None if supervised else lam)
    model = make_model(result.params)
    if result.history and "test_psnr" in result.history[-1]:
        model = model._replace_info(test_psnr=result.history[-1]["test_psnr"])
    return model, result


def lambda_sweep(key, on, off, *, lambdas=LAMBDAS, config=None, train=None, ks=DEFAULT_KS, n_combinations=50,
                 test_fraction=0.2, offset=0.0, callback=None):
    """Train one 3Snet per ``lam`` and keep the one with the best held-out single-frame pSNR.

    Every candidate uses the same data, initial weights and batches, so they
    differ only in ``lam``.

    Args:
        key, on, off, config, train, ks, n_combinations, offset: as :func:`train_3snet`.
        lambdas: candidate weights (default ``(0, 1, 2, 4, 8, 16, inf)``).
        test_fraction: held-out rows, in ``(0, 0.5]``.
        callback: ``callback(info)`` with an extra ``"lambda"`` entry.

    Returns:
        ``(best_model, table)``: the best :class:`DenoiserModel` and a list of
        ``{"lambda", "test_psnr"}`` for every candidate.
    """
    if not 0.0 < float(test_fraction) <= 0.5:
        raise ValueError(f"argument 'test_fraction': the sweep needs a test split in (0, 0.5], got {test_fraction}")
    if len(tuple(lambdas)) == 0:
        raise ValueError("argument 'lambdas': expected at least one candidate")
    config, _ = resolve_configs(config, train, default_config=UNetConfig(), default_train=TrainConfig())
    shape = np.shape(on)
    if len(shape) >= 2:  # before building the data; three_snet_data checks the rest
        ny, nx = shape[-2:]
        _check_test_split(ny, nx, _test_rows(ny, test_fraction), test_fraction, config)
    k_data, k_train = jax.random.split(key)
    data = three_snet_data(k_data, on, off, ks=ks, n_combinations=n_combinations,
                           test_fraction=test_fraction, offset=offset)
    best, table = None, []
    for lam in lambdas:
        cb = None if callback is None else (lambda info, lam=lam: callback({**info, "lambda": lam}))
        model, _ = train_3snet(k_train, None, None, lam=lam, config=config, train=train, offset=offset,
                               callback=cb, data=data)
        score = _test_psnr(model, data)
        table.append({"lambda": "inf" if math.isinf(float(lam)) else float(lam), "test_psnr": score})
        if best is None or score > best[0]:
            best = (score, model)
    return best[1], table
