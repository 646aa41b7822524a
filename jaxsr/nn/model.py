"""Denoising models on disk and the :func:`denoise` entry point.

A model is a directory with two files:

* ``model.json``: the format version, the method (``kind``: ``"3snet"`` or
  ``"n2v"``), the :class:`~jaxsr.nn.unet.UNetConfig`, the normalisation and
  free-form training information (lambda, steps, test pSNR, data);
* ``params.msgpack``: the weights, :func:`flax.serialization.to_bytes` of the
  parameter pytree.

Both are written atomically; the configuration travels with the weights, so a
model directory is all that :func:`load_model` needs. The package ships one
trained 3Snet (``jaxsr/nn/pretrained/3snet``, trained by
``benchmarks/train_3snet.py`` on the project's own simulations only), the
default of :func:`denoise`.

Normalisation: a frame ``x`` (camera units) is fed to the network as
``(x - offset) / s``, ``s`` the 99.9th percentile of ``x - offset`` over the
whole frame (computed before any tiling), and the output is multiplied by
``s``; ``"meanstd"`` models (self-supervised) use ``(x - mean) / std`` and
add the mean back.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict

from jaxsr._validate import as_float_array, check_finite, check_ndim
from jaxsr.io.atomic import atomic_path, write_json
from jaxsr.nn.predict import predict_tiled
from jaxsr.nn.unet import UNet, UNetConfig, unet_init

__all__ = ["DenoiserModel", "save_model", "load_model", "pretrained_path", "denoise", "MODEL_KINDS",
           "NORMALIZATIONS"]

MODEL_KINDS = ("3snet", "n2v")
NORMALIZATIONS = ("percentile", "meanstd")
_FORMAT = 1
_PERCENTILE = 99.9
_WHOLE_FRAME_PIXELS = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class DenoiserModel:
    """A trained single-frame denoiser: method, network shape, normalisation and weights.

    Attributes:
        kind: ``"3snet"`` or ``"n2v"``.
        unet: the :class:`UNetConfig` of the network.
        params: the Flax variables (``{"params": ...}``).
        normalization: ``"percentile"`` (3Snet) or ``"meanstd"`` (self-supervised).
        offset: camera offset subtracted before normalising (camera units).
        info: JSON-serialisable training information.
    """

    kind: str
    unet: UNetConfig
    params: Any
    normalization: str = "percentile"
    offset: float = 0.0
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"argument 'kind': expected one of {MODEL_KINDS}, got {self.kind!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"argument 'normalization': expected one of {NORMALIZATIONS}, got {self.normalization!r}")
        if not isinstance(self.unet, UNetConfig):
            raise TypeError(f"argument 'unet': expected a UNetConfig, got {type(self.unet).__name__}")

    @property
    def min_size(self) -> int:
        """Smallest image side the network accepts (``2**depth`` pixels)."""
        return self.unet.multiple

    def _replace_info(self, **kw) -> "DenoiserModel":
        return dataclasses.replace(self, info={**self.info, **kw})

    def metadata(self) -> dict:
        """The ``model.json`` content."""
        return {"format": _FORMAT, "kind": self.kind, "input_ndim": 2, "unet": self.unet.to_dict(),
                "normalization": self.normalization, "offset": float(self.offset), "info": self.info}


def save_model(path, model: DenoiserModel, *, overwrite=False) -> Path:
    """Write ``model`` to the directory ``path`` (``model.json`` + ``params.msgpack``), atomically.

    Args:
        path: directory (created; its parent must exist).
        model: the :class:`DenoiserModel`.
        overwrite: replace the files of an existing model; without it an
            existing ``model.json`` raises ``FileExistsError``.

    Returns:
        The directory as a :class:`~pathlib.Path`.

    >>> import jax, tempfile, os
    >>> cfg = UNetConfig(depth=1, features=2, decoder_features=2)
    >>> m = DenoiserModel("3snet", cfg, unet_init(jax.random.key(0), config=cfg))
    >>> d = save_model(os.path.join(tempfile.mkdtemp(), "m"), m)
    >>> load_model(d).unet == cfg
    True
    """
    if not isinstance(model, DenoiserModel):
        raise TypeError(f"argument 'model': expected a DenoiserModel, got {type(model).__name__}")
    return write_model_dir(path, model.metadata(), model.params, overwrite=overwrite)


def write_model_dir(path, meta: dict, params, *, overwrite: bool = False) -> Path:
    """Write ``model.json`` (``meta``) and ``params.msgpack`` (``params``) into the directory ``path``, atomically.

    Shared by every kind of network jaxsr stores (denoisers, the localization network).

    Raises:
        FileExistsError: ``path`` already holds a ``model.json`` and ``overwrite`` is False.
        ValueError: ``path`` is a file.
    """
    path = Path(os.fspath(path))
    if path.exists() and not path.is_dir():
        raise ValueError(f"argument 'path': {path} exists and is not a directory")
    if (path / "model.json").exists() and not overwrite:
        raise FileExistsError(f"argument 'path': {path} already holds a model (pass overwrite=True to replace it)")
    json.dumps(meta)
    data = flax.serialization.to_bytes(jax.device_get(params))
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / "params.msgpack", overwrite=True) as tmp:
        tmp.write_bytes(data)
    write_json(path / "model.json", meta, overwrite=True)
    return path


def read_model_meta(path) -> tuple[Path, dict]:
    """The directory and parsed ``model.json`` of a model written by :func:`write_model_dir`.

    Raises:
        FileNotFoundError: no model at ``path``; ValueError: unreadable JSON (both name ``model``).
    """
    path = Path(os.fspath(path))
    if path.name == "model.json":
        path = path.parent
    if not (path / "model.json").is_file():
        raise FileNotFoundError(f"argument 'model': no model at {path} (expected {path / 'model.json'})")
    try:
        return path, json.loads((path / "model.json").read_text())
    except Exception as exc:
        raise ValueError(f"argument 'model': corrupt model.json in {path} ({exc})") from None


def read_model_params(path: Path, unet: UNetConfig | None = None, *, init=None):
    """The weights of a :class:`UNet` of configuration ``unet`` from ``path/params.msgpack``, checked for shape.

    ``init``: instead of ``unet``, a function ``key -> params`` of any other network (its shapes, from
    :func:`jax.eval_shape`, are the template the file must match).
    """
    if not (path / "params.msgpack").is_file():
        raise ValueError(f"argument 'model': {path} has model.json but no params.msgpack")
    if init is None:
        init = lambda key: unet_init(key, config=unet)  # noqa: E731
    template = jax.eval_shape(lambda: init(jax.random.key(0)))
    template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), template)
    try:
        state = flax.serialization.msgpack_restore((path / "params.msgpack").read_bytes())
        params = flax.serialization.from_state_dict(template, state)
        # from_state_dict ignores entries the template lacks: a file with more layers is another network
        stored = set(flatten_dict(state, sep="/"))
    except Exception as exc:
        raise ValueError(f"argument 'model': corrupt params.msgpack in {path} ({exc})") from None
    extra = sorted(stored - set(flatten_dict(flax.serialization.to_state_dict(template), sep="/")))
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        raise ValueError(f"argument 'model': params.msgpack in {path} does not match its model.json (weights it "
                         f"does not declare: {', '.join(extra[:3])}{more})")
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(template)):
        if np.shape(a) != np.shape(b):
            raise ValueError(f"argument 'model': params.msgpack in {path} does not match its model.json")
    if not all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(params)):
        raise ValueError(f"argument 'model': params.msgpack in {path} holds NaN or infinite weights")
    return jax.tree_util.tree_map(jnp.asarray, params)


def pretrained_path(*, name: str = "3snet") -> Path:
    """Directory of a model shipped inside the package (``"3snet"``).

    >>> pretrained_path().name
    '3snet'
    """
    if name != "3snet":
        raise ValueError(f"argument 'name': expected '3snet', got {name!r}")
    return Path(__file__).parent / "pretrained" / name


def load_model(path) -> DenoiserModel:
    """Read a model directory written by :func:`save_model`.

    Args:
        path: the model directory (or its ``model.json``).

    Returns:
        :class:`DenoiserModel`.

    Raises:
        FileNotFoundError: no model at ``path``.
        ValueError: a corrupt or incomplete model, an unknown format, or a
            model for another input rank; the message names ``model``.
    """
    path, meta = read_model_meta(path)
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if isinstance(kind, str) and kind not in MODEL_KINDS:  # a valid model of another network, not a corrupt one
        raise ValueError(f"argument 'model': {path} is not a denoiser (kind {kind!r}); denoising takes a model of "
                         f"kind {' or '.join(repr(k) for k in MODEL_KINDS)}")
    try:
        unet = UNetConfig.from_dict(meta["unet"])
        kind, norm = meta["kind"], meta["normalization"]
        fmt, ndim = meta["format"], meta["input_ndim"]
    except Exception as exc:
        raise ValueError(f"argument 'model': corrupt model.json in {path} ({exc})") from None
    if fmt != _FORMAT:
        raise ValueError(f"argument 'model': unknown model format {fmt!r} in {path} (this jaxsr reads {_FORMAT})")
    if ndim != 2 or unet.in_channels != 1 or unet.out_channels != 1:
        raise ValueError(
            f"argument 'model': {path} is a model for {ndim}-D input with {unet.in_channels} channel(s); "
            "denoising takes single-channel 2-D frames"
        )
    params = read_model_params(path, unet)
    return DenoiserModel(kind=kind, unet=unet, params=params, normalization=norm,
                         offset=float(meta.get("offset", 0.0)), info=meta.get("info", {}))


@functools.lru_cache(maxsize=1)
def _default_model() -> DenoiserModel:
    return load_model(pretrained_path(name="3snet"))


def _frame_scale(frames):
    """99.9th percentile of each ``(..., y, x)`` frame, floored so a flat or empty frame stays finite."""
    flat = frames.reshape(frames.shape[:-2] + (-1,))
    s = jnp.percentile(flat, _PERCENTILE, axis=-1)
    return jnp.maximum(s, 1e-6 * jnp.maximum(jnp.max(jnp.abs(flat), axis=-1), 1.0))


def _normalize(frames, normalization, offset):
    x = frames - offset
    if normalization == "percentile":
        s = _frame_scale(x)
        return x / s[..., None, None], jnp.zeros_like(s), s
    flat = x.reshape(x.shape[:-2] + (-1,))
    m = jnp.mean(flat, axis=-1)
    s = jnp.std(flat, axis=-1)
    s = jnp.maximum(s, 1e-6 * jnp.maximum(jnp.abs(m), 1.0))
    return (x - m[..., None, None]) / s[..., None, None], m, s


@functools.partial(jax.jit, static_argnames=("unet",))
def _apply(params, x, *, unet):
    return UNet(unet).apply(params, x[..., None])[..., 0]


def _d4(x, k):
    """k-th of the 8 flips/rotations of the last two axes, and its inverse."""
    f = x[..., ::-1] if k >= 4 else x
    return jnp.rot90(f, k % 4, axes=(-2, -1))


def _d4_inverse(y, k):
    r = jnp.rot90(y, -(k % 4), axes=(-2, -1))
    return r[..., ::-1] if k >= 4 else r


def _whole_frames(params, x, unet, tta, batch_size):
    outs = []
    for i in range(0, x.shape[0], batch_size):
        chunk = x[i:i + batch_size]
        if tta:
            outs.append(sum(_d4_inverse(_apply(params, _d4(chunk, k), unet=unet), k) for k in range(8)) / 8.0)
        else:
            outs.append(_apply(params, chunk, unet=unet))
    return jnp.concatenate(outs)


# predict_tiled compiles once per apply function object: keep one per parameter set.
_TILE_FNS: dict = {}


def _tile_fn(params, unet):
    key = (id(params), unet)
    if key not in _TILE_FNS:
        if len(_TILE_FNS) > 8:
            _TILE_FNS.clear()
        _TILE_FNS[key] = (params, lambda t: UNet(unet).apply(params, t[..., None])[..., 0])
    return _TILE_FNS[key][1]


def denoise(image, *, model: DenoiserModel | str | os.PathLike | None = None, offset=None, tile=None, overlap=32,
            tta=False, batch_size=4):
    """Denoise single frames with a trained network (3Snet by default).

    Args:
        image: ``(..., y, x)`` frame(s) in camera units; leading axes are
            frames (a time-lapse), each denoised on its own. Both sides at
            least ``model.min_size`` pixels (``2**depth`` of the model's
            U-Net; see :attr:`DenoiserModel.min_size`). Finite.
        model: a :class:`DenoiserModel`, a model directory, or ``None`` for the
            shipped 3Snet (:func:`pretrained_path`).
        offset: camera offset to subtract (camera units): a finite number, or
            an array broadcastable to the frame axes ``(...)`` (one offset per
            frame); ``None`` uses the model's (0 for the shipped model, which
            expects background-including frames without a camera offset, 0-255
            or photon-like units).
        tile: tile side for tiled inference, or ``None``: the whole frame at once
            up to 1024 x 1024 pixels, 512 px tiles above.
        overlap: tile overlap in pixels (blended smoothly).
        tta: average the network over the 8 flips/rotations of the input.
        batch_size: tiles per network call when tiling.

    Returns:
        ``(..., y, x)`` denoised frames, same units as ``image`` (3Snet removes
        the background as it was trained to; self-supervised models keep it).

    References:
        Xue et al., Nat. Commun. (2026) (3Snet-CLID).

    >>> import jax.numpy as jnp
    >>> out = denoise(jnp.full((2, 40, 48), 90.0))
    >>> out.shape
    (2, 40, 48)
    """
    if model is None:
        model = _default_model()
    elif not isinstance(model, DenoiserModel):
        model = load_model(model)
    image = as_float_array(image, "image")
    check_ndim(image, "image", 2, min_ndim=2)
    if min(image.shape[-2:]) < model.min_size:
        raise ValueError(
            f"argument 'image': frames of {tuple(image.shape[-2:])} pixels are smaller than this network's "
            f"minimum of {model.min_size} x {model.min_size}"
        )
    check_finite(image, "image")
    batch_shape, spatial = image.shape[:-2], image.shape[-2:]
    offset = as_float_array(model.offset if offset is None else offset, "offset")
    check_finite(offset, "offset")
    try:
        offset = jnp.broadcast_to(offset.astype(image.dtype), batch_shape)
    except ValueError:
        raise ValueError(f"argument 'offset': expected a number or an array broadcastable to the frame axes "
                         f"{tuple(batch_shape)}, got shape {tuple(offset.shape)}") from None
    frames = image.reshape((-1,) + spatial)
    x, m, s = _normalize(frames, model.normalization, offset.reshape(-1)[:, None, None])
    if tile is None and spatial[0] * spatial[1] <= _WHOLE_FRAME_PIXELS:
        out = _whole_frames(model.params, x, model.unet, bool(tta), batch_size)
    else:
        out = jnp.asarray(predict_tiled(_tile_fn(model.params, model.unet), x, tile=512 if tile is None else tile,
                                        overlap=overlap, multiple=model.unet.multiple, batch_size=batch_size,
                                        tta=bool(tta)))
    out = out * s[:, None, None] + m[:, None, None]
    return out.reshape(batch_shape + spatial).astype(image.dtype)
