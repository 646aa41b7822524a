"""A small, resumable training loop for the networks in :mod:`jaxsr.nn`.

One jit-compiled step draws its batch from ``sample_batch(key)`` with the key
``fold_in(seed_key, step)``, computes ``loss_fn(params, batch, key)`` and its
gradient, and applies an optax update (gradient clipping + Adam with a
one-cycle, cosine or constant schedule). Because the batch and the loss noise
of step ``s`` depend only on ``s`` and the seed, and the optimiser state is
saved with the parameters, a run interrupted at any checkpoint and resumed
gives the same parameters as an uninterrupted one.

Checkpoints live in a directory: ``train_state.msgpack`` (parameters,
optimiser state, step, history, the losses since the last history entry and
metadata, written atomically with
:func:`flax.serialization.msgpack_serialize` — no extra dependency, and the
file is replaced in one rename, so a crash leaves the previous checkpoint) and
``train_config.json`` (the human-readable settings).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsr._validate import check_choice, check_int
from jaxsr.nn._config import JsonConfig
from jaxsr._xla_flags import cpu_training_compiler_options
from jaxsr.io.atomic import atomic_path, write_json

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "fit",
    "make_optimizer",
    "resolve_configs",
    "load_train_state",
    "data_fingerprint",
    "CHECKPOINT_FILE",
    "SCHEDULES",
]

CHECKPOINT_FILE = "train_state.msgpack"
_CONFIG_FILE = "train_config.json"
SCHEDULES = ("onecycle", "cosine", "constant")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """Settings of a training run (JSON-serialisable with :meth:`to_dict`).

    Attributes:
        steps: total optimiser steps.
        batch_size: patches per step.
        patch_size: side of the square training patches (pixels).
        learning_rate: peak learning rate of Adam.
        schedule: ``"onecycle"`` (30 % warm-up then cosine decay, as the 3Snet
            release trains), ``"cosine"`` or ``"constant"``.
        grad_clip: global-norm gradient clipping (``0`` disables it).
        checkpoint_every: steps between checkpoints (when a directory is given).
        eval_every: steps between calls of ``evaluate``.
        seed: seed of every random draw of the run (batches, masks, noise).
    """

    _WHAT = "training settings"

    steps: int = 2000
    batch_size: int = 16
    patch_size: int = 64
    learning_rate: float = 3e-4
    schedule: str = "onecycle"
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    eval_every: int = 100
    seed: int = 0

    def __post_init__(self):
        for name, minimum in (("steps", 1), ("batch_size", 1), ("patch_size", 1),
                              ("checkpoint_every", 1), ("eval_every", 1), ("seed", 0)):
            check_int(getattr(self, name), name, minimum=minimum)
        check_choice(self.schedule, "schedule", SCHEDULES)
        for name, positive in (("learning_rate", True), ("grad_clip", False)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0 or (
                positive and v == 0
            ):
                kind = "a positive" if positive else "a non-negative"
                raise ValueError(f"argument '{name}': expected {kind} finite number, got {v!r}")


class TrainResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        params: the trained parameters (pytree).
        step: steps completed.
        history: one dict per evaluation/record: ``{"step", "loss", ...metrics}``
            (``loss`` is the mean training loss since the previous record).
        resumed_from: step the run resumed from (0 for a fresh run).
    """

    params: Any
    step: int
    history: list
    resumed_from: int


def resolve_configs(config, train, *, default_config, default_train):
    """The network and training configurations of a trainer: defaults for ``None``, type checks.

    Args:
        config: a :class:`~jaxsr.nn.unet.UNetConfig` or ``None``.
        train: a :class:`TrainConfig` or ``None``.
        default_config: the trainer's default network.
        default_train: the trainer's default training settings.

    Returns:
        ``(config, train)``.

    >>> from jaxsr.nn.unet import UNetConfig
    >>> resolve_configs(None, None, default_config=UNetConfig(), default_train=TrainConfig())[1].steps
    2000
    """
    from jaxsr.nn.unet import UNetConfig  # noqa: PLC0415 (train.py stays independent of the network)

    config = default_config if config is None else config
    train = default_train if train is None else train
    if not isinstance(config, UNetConfig):
        raise TypeError(f"argument 'config': expected a UNetConfig, got {type(config).__name__}")
    if not isinstance(train, TrainConfig):
        raise TypeError(f"argument 'train': expected a TrainConfig, got {type(train).__name__}")
    return config, train


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax optimiser of a run: global-norm clipping then Adam on the schedule.

    >>> opt = make_optimizer(TrainConfig(steps=10))
    >>> state = opt.init({"w": jnp.zeros(3)})
    """
    if config.schedule == "onecycle":
        lr = optax.cosine_onecycle_schedule(config.steps, config.learning_rate, pct_start=0.3)
    elif config.schedule == "cosine":
        lr = optax.cosine_decay_schedule(config.learning_rate, config.steps)
    else:
        lr = config.learning_rate
    parts = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip > 0 else []
    return optax.chain(*parts, optax.adam(lr))


def _encode(state: dict) -> bytes:
    return flax.serialization.msgpack_serialize(state)


def _load_state(directory, *, params, config: TrainConfig):
    """:func:`load_train_state` plus the losses of the steps since the last history entry (their mean is
    the next entry's ``loss``): ``(params, opt_state, step, history, meta, running)``."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        raw = flax.serialization.msgpack_restore(path.read_bytes())
        opt_state = make_optimizer(config).init(params)
        stored_params = flax.serialization.from_state_dict(params, raw["params"])
        opt_state = flax.serialization.from_state_dict(opt_state, raw["opt_state"])
        step = int(raw["step"])
        history = json.loads(raw["history"])
        meta = json.loads(raw["meta"])
        running = [float(v) for v in json.loads(raw.get("running", "[]"))]
    except Exception as exc:  # msgpack/structure errors come in many types
        raise ValueError(f"argument 'checkpoint_dir': cannot read the checkpoint {path} ({exc})") from None
    for a, b in zip(jax.tree_util.tree_leaves(stored_params), jax.tree_util.tree_leaves(params)):
        if np.shape(a) != np.shape(b):
            raise ValueError(
                f"argument 'checkpoint_dir': the checkpoint in {directory} holds another network "
                f"(a parameter of shape {np.shape(a)} where {np.shape(b)} is expected)"
            )
    return stored_params, opt_state, step, history, meta, running


def load_train_state(directory, *, params, config: TrainConfig):
    """Read a checkpoint written by :func:`fit`.

    Args:
        directory: the checkpoint directory.
        params: a parameter pytree of the right structure (e.g. fresh
            initial parameters), the template the stored arrays are restored into.
        config: the run's :class:`TrainConfig` (for the optimiser-state template).

    Returns:
        ``(params, opt_state, step, history, meta)``, or ``None`` when the
        directory has no checkpoint.

    Raises:
        ValueError: a corrupt checkpoint, or one whose parameters do not fit
            ``params`` (another network).
    """
    loaded = _load_state(directory, params=params, config=config)
    return None if loaded is None else loaded[:5]


def _save(directory: Path, params, opt_state, step, history, meta, running):
    state = {
        "params": flax.serialization.to_state_dict(jax.device_get(params)),
        "opt_state": flax.serialization.to_state_dict(jax.device_get(opt_state)),
        "step": step,
        "history": json.dumps(history),
        "meta": json.dumps(meta),
        "running": json.dumps([float(v) for v in running]),  # repr of a float: exact round trip
    }
    data = _encode(state)
    with atomic_path(directory / CHECKPOINT_FILE, overwrite=True) as tmp:
        tmp.write_bytes(data)


def _differences(stored: dict, current: dict) -> str:
    """The names of the settings in which a checkpoint's metadata differs from this run's (for the error)."""
    current = json.loads(json.dumps(current))
    names = []
    for part in ("train", "meta"):
        a, b = stored.get(part, {}), current.get(part, {})
        if isinstance(a, dict) and isinstance(b, dict):
            names += ["training data" if k == "data" else k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            names.append(part)
    return ", ".join(names) or "settings"


def data_fingerprint(*arrays) -> str:
    """A short hash of arrays (dtype, shape and every byte): the training data a checkpoint belongs to.

    Trainers put it in the ``meta`` of :func:`fit`, so a checkpoint is resumed only by a run on the
    same data. ``None`` leaves are allowed (hashed as absent); any pytree of arrays is accepted.

    >>> import numpy as np
    >>> a = data_fingerprint(np.zeros(3))
    >>> a == data_fingerprint(np.zeros(3)), a == data_fingerprint(np.ones(3)), a == data_fingerprint(np.zeros(4))
    (True, False, False)
    """
    h = hashlib.blake2b(digest_size=16)
    for leaf in jax.tree_util.tree_leaves(arrays, is_leaf=lambda x: x is None):
        if leaf is None:
            h.update(b"none;")
            continue
        a = np.asarray(jax.device_get(leaf))
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _optimizer_settings(config: TrainConfig) -> TrainConfig:
    """The fields of ``config`` that :func:`make_optimizer` reads (the others set to their defaults)."""
    return TrainConfig(steps=config.steps, learning_rate=config.learning_rate, schedule=config.schedule,
                       grad_clip=config.grad_clip)


def _jit_step(loss_fn, sample_batch, settings: TrainConfig, options: tuple, mesh=None):
    """The jitted training step ``(params, opt_state, step, seed_key, data, hyper) -> (params, opt_state, loss, ok)``.

    ``data`` goes to ``sample_batch`` and ``hyper`` to ``loss_fn`` only when they are
    not ``None`` (the two calling conventions of :func:`fit`). With a ``mesh`` (automatic axes,
    :func:`jaxsr.parallel.batch.auto_axes`) every input and output is replicated over it and the batch drawn inside
    the step is split along its leading axis over ``"batch"``: XLA partitions the loss and its
    gradient by items and sums the gradient over devices (an all-reduce).
    """
    opt = make_optimizer(settings)

    def step_fn(params, opt_state, i, seed_key, data, hyper):
        kd, kl = jax.random.split(jax.random.fold_in(seed_key, i))
        batch = sample_batch(kd) if data is None else sample_batch(kd, data)
        if mesh is not None:
            batch = _shard_batch(batch, mesh)
        extra = () if hyper is None else (hyper,)
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, kl, *extra)
        updates, new_opt = opt.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        ok = jnp.isfinite(loss) & _all_finite(grads)
        # On a non-finite loss keep the previous state (so the caller still has good parameters).
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
        return keep(new_params, params), keep(new_opt, opt_state), loss, ok

    if mesh is None:
        return jax.jit(step_fn, compiler_options=dict(options) or None)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(step_fn, compiler_options=dict(options) or None, in_shardings=replicated,
                   out_shardings=replicated)


def _shard_batch(batch, mesh):
    """Split every array of a batch along its leading axis over ``"batch"`` (scalars replicated)."""
    from jaxsr.parallel.batch import BATCH_AXIS, constrain  # noqa: PLC0415 (jaxsr.parallel imports the methods)

    P = jax.sharding.PartitionSpec  # noqa: N806
    return jax.tree_util.tree_map(
        lambda x: constrain(x, P(BATCH_AXIS) if jnp.ndim(x) else P(), mesh=mesh), batch)


def _check_batch_divides(sample_batch, data, n_devices: int):
    """The batch's leading sizes must be multiples of the device count (a ValueError naming ``batch_size``)."""
    key = jax.random.key(0)
    shapes = jax.eval_shape(sample_batch, key) if data is None else jax.eval_shape(sample_batch, key, data)
    for leaf in jax.tree_util.tree_leaves(shapes):
        if len(leaf.shape) and leaf.shape[0] % n_devices:
            raise ValueError(
                f"argument 'batch_size': data-parallel training splits the batch over the {n_devices} devices of "
                f"'mesh', so its size must be a multiple of {n_devices}; sample_batch gives a leading size of "
                f"{leaf.shape[0]}"
            )


@functools.lru_cache(maxsize=8)
def _shared_step(loss_fn, sample_batch, settings: TrainConfig, options: tuple, mesh=None):
    """:func:`_jit_step` kept across :func:`fit` calls (the ``data=`` convention: the functions hold no arrays)."""
    return _jit_step(loss_fn, sample_batch, settings, options, mesh)


def fit(
    loss_fn: Callable,
    params,
    sample_batch: Callable,
    *,
    config: TrainConfig,
    checkpoint_dir=None,
    meta: dict | None = None,
    evaluate: Callable | None = None,
    callback: Callable | None = None,
    data: Any = None,
    hyper: Any = None,
    mesh: Any = None,
) -> TrainResult:
    """Train ``params`` to minimise ``loss_fn`` on batches from ``sample_batch``.

    Args:
        loss_fn: ``loss_fn(params, batch, key) -> scalar``, pure and jittable
            (``loss_fn(params, batch, key, hyper)`` when ``hyper`` is given).
        params: initial parameter pytree (also the template when resuming).
        sample_batch: ``sample_batch(key) -> batch``, a pure, jittable function
            of a PRNG key (data arrays closed over; ``sample_batch(key, data)``
            when ``data`` is given), e.g. built on
            :func:`jaxsr.nn.data.random_patches` and :func:`jaxsr.nn.data.augment_d4`.
        config: the :class:`TrainConfig`.
        checkpoint_dir: directory for checkpoints (created if missing); when it
            already holds one of the same run settings, training resumes from
            it. ``None`` trains without checkpoints.
        meta: JSON-serialisable description stored with the checkpoint (e.g.
            the network configuration); resuming requires the same ``meta``.
        evaluate: optional host-side ``evaluate(params) -> dict[str, float]``,
            called every ``config.eval_every`` steps and at the end; its
            values go into the history and the callback.
        callback: optional ``callback(info)`` after every step, ``info`` a dict
            with ``step``, ``steps``, ``loss`` and the latest evaluation metrics
            (for progress bars).
        data: optional pytree of arrays the batches are drawn from, passed as
            ``sample_batch(key, data)``: arguments of the compiled step, not
            constants inside it. With ``data`` given, the compiled step is
            reused by every call with the same ``loss_fn`` and ``sample_batch``
            objects (which then must not close over arrays), the same optimiser
            settings (``steps``, ``learning_rate``, ``schedule``, ``grad_clip``)
            and arrays of the same shapes: whatever the data values, ``hyper``,
            ``seed`` or initial parameters, it compiles once (e.g. a sweep over
            a loss weight).
        hyper: optional pytree of numbers passed as ``loss_fn(params, batch,
            key, hyper)``, traced (e.g. a loss weight; not compiled in as a constant).
        mesh: ``None`` (default): one device. A :class:`jax.sharding.Mesh` with a
            ``"batch"`` axis (:func:`jaxsr.parallel.batch.batch_mesh`): data-parallel
            training. Parameters, optimiser state, ``data`` and ``hyper`` are
            replicated on every device; the batch drawn in the step is split along
            the leading axis of each of its arrays over ``"batch"`` (so the batch
            size must be a multiple of the device count); XLA partitions the loss
            and its gradient by items and sums the gradient across devices. The step
            computes the same function of the same batch and keys as on one device
            (any ``loss_fn``, random masks included), so the parameters equal the
            one-device ones to float32 round-off. ``evaluate`` and ``callback`` see
            parameters replicated on the mesh; the returned parameters are ordinary
            (uncommitted) arrays. Checkpoints are the same files either way.

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainingDiverged: the loss (or a gradient) became NaN or infinite; the
            checkpoint directory keeps the last good checkpoint, and the
            message names the step.
        ValueError: a checkpoint of another run (different settings or
            ``meta``) or a corrupt one in ``checkpoint_dir``; a ``mesh`` without a
            ``"batch"`` axis; with a ``mesh``, a batch whose size is not a multiple of
            the device count (message names ``batch_size``).
        KeyboardInterrupt: re-raised after writing a checkpoint of the last
            finished step (when ``checkpoint_dir`` is given); so is any error
            raised by ``evaluate`` or ``callback``. A step's checkpoint is
            written before its evaluation, and a resume from it evaluates then.

    >>> import jax, jax.numpy as jnp
    >>> loss = lambda p, b, k: jnp.mean((p["w"] * b[0] - b[1]) ** 2)
    >>> batch = lambda k: (x := jax.random.normal(k, (8,)), 3.0 * x)
    >>> r = fit(loss, {"w": jnp.zeros(())}, batch, config=TrainConfig(steps=200, learning_rate=0.1))
    >>> round(float(r.params["w"]), 2)
    3.0
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"argument 'config': expected a TrainConfig, got {type(config).__name__}")
    for name, fn in (("loss_fn", loss_fn), ("sample_batch", sample_batch)):
        if not callable(fn):
            raise TypeError(f"argument '{name}': expected a callable, got {type(fn).__name__}")
    if mesh is not None:
        from jaxsr.parallel.batch import auto_axes, check_mesh  # noqa: PLC0415 (jaxsr.parallel imports the methods)

        _check_batch_divides(sample_batch, data, check_mesh(mesh))
        mesh = auto_axes(mesh)  # XLA partitions the step (GSPMD); see _jit_step
    meta = {} if meta is None else meta
    full_meta = {"train": config.to_dict(), "meta": meta}
    json.dumps(full_meta)  # refuse non-JSON metadata before training, not at the first checkpoint
    opt = make_optimizer(config)
    opt_state = opt.init(params)
    step, history, resumed_from = 0, [], 0
    running: list[float] = []  # losses of the steps since the last history entry (checkpointed)
    directory = None
    if checkpoint_dir is not None:
        directory = Path(os.fspath(checkpoint_dir))
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"argument 'checkpoint_dir': {directory} exists and is not a directory")
        directory.mkdir(parents=True, exist_ok=True)
        loaded = _load_state(directory, params=params, config=config)
        if loaded is not None:
            l_params, l_opt, l_step, l_hist, l_meta, l_running = loaded
            if l_meta != json.loads(json.dumps(full_meta)):
                raise ValueError(
                    f"argument 'checkpoint_dir': {directory} holds a checkpoint of another run "
                    f"(different {_differences(l_meta, full_meta)}); use a new directory or delete it"
                )
            params, opt_state, step, history, resumed_from = l_params, l_opt, l_step, l_hist, l_step
            running = l_running
        write_json(directory / _CONFIG_FILE, full_meta, overwrite=True)

    seed_key = jax.random.key(config.seed)
    # On the CPU the step is compiled with multi-threaded convolutions (see jaxsr/_xla_flags.py).
    options = tuple(sorted(cpu_training_compiler_options().items()))
    if data is None:  # sample_batch (and maybe loss_fn) close over the data: a step for this call alone
        step_jit = _jit_step(loss_fn, sample_batch, _optimizer_settings(config), options, mesh)
    else:
        step_jit = _shared_step(loss_fn, sample_batch, _optimizer_settings(config), options, mesh)
    if mesh is not None:  # everything the step reads lives, replicated, on the mesh
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        params, opt_state, data, hyper = jax.device_put((params, opt_state, data, hyper), replicated)
    metrics: dict[str, float] = {}

    def record_due(i):
        return i % config.eval_every == 0 or i == config.steps

    def record():
        nonlocal metrics
        entry = {"step": step, "loss": float(np.mean(running)) if running else float("nan")}
        if evaluate is not None:
            metrics = {k: float(v) for k, v in evaluate(params).items()}
            entry.update(metrics)
        history.append(entry)
        running.clear()

    last_saved, saved_records = step, len(history)
    try:
        if step and record_due(step) and (not history or history[-1]["step"] != step):
            # the checkpoint is written before its step's record (so a failing evaluate() loses no
            # training): a resume from it makes that record now, from the same parameters and losses
            record()
        while step < config.steps:
            new_params, new_opt, loss, ok = step_jit(params, opt_state, jnp.asarray(step, jnp.int32), seed_key,
                                                     data, hyper)
            loss = float(loss)
            if not bool(ok):
                raise TrainingDiverged(
                    f"training diverged at step {step + 1}: loss {loss} (or a gradient) is not finite; "
                    + (f"the last good checkpoint (step {last_saved}) is kept in {directory}"
                       if directory is not None else "lower the learning rate")
                )
            params, opt_state = new_params, new_opt
            step += 1
            running.append(loss)
            # checkpoint first, then evaluate: an evaluate() that fails loses no training
            if directory is not None and (step % config.checkpoint_every == 0 or step == config.steps):
                _save(directory, params, opt_state, step, history, full_meta, running)
                last_saved, saved_records = step, len(history)
            if record_due(step):
                record()
            if callback is not None:
                callback({"step": step, "steps": config.steps, "loss": loss, **metrics})
    except TrainingDiverged:
        raise
    except BaseException:
        # Ctrl-C, or an error in evaluate() or callback(): keep the steps done since the last checkpoint
        # (params, optimiser state, step, history and running losses always belong together here)
        if directory is not None and step > last_saved:
            _save(directory, params, opt_state, step, history, full_meta, running)
        raise
    if directory is not None and len(history) > saved_records and last_saved == step:
        _save(directory, params, opt_state, step, history, full_meta, running)  # the final record, kept too
    if mesh is not None:  # hand back ordinary arrays, as one-device training does
        params = jax.tree_util.tree_map(jnp.asarray, jax.device_get(params))
    return TrainResult(params=params, step=step, history=history, resumed_from=resumed_from)
