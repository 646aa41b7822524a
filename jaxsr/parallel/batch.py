"""Many items over many devices: ``vmap`` a single-item function and shard the batch axis with ``shard_map``.

The "many items" mode of scale-out (frames of a time-lapse, ROIs, particles,
PSF variants): write the function for *one* item, and :func:`sharded_vmap`
maps it over the leading axis of its arguments, with that axis split over the
devices of a one-axis mesh named ``"batch"`` (:func:`batch_mesh`). Each device
runs the plain ``vmap`` of the function on its own slice, inside
:func:`jax.shard_map`, so everything inside stays local: an FFT is never
all-gathered (under implicit GSPMD sharding XLA may gather FFT inputs), and
there is no communication at all while the items are processed.

Batch sizes that are not a multiple of the device count are padded by
repeating the last item (not with zeros: a zero image can make a function
produce NaN or inf, e.g. a Poisson likelihood or a normalisation, which would
trip ``jax_debug_nans`` and poison a gradient taken through the call), and
the padding is stripped from the outputs. Stripping needs the outputs gathered
(replicated) first, since an uneven split over devices is not an array layout
XLA keeps: the one collective of a padded call is that all-gather of the
*outputs*, after every item has been computed; a batch that divides evenly has
none, and its outputs stay sharded over the mesh.

The mesh is used with automatic axis types (:func:`auto_axes`), whatever the
type of the mesh passed in (:func:`jax.make_mesh` makes explicit axes), so the
outputs behave like ordinary arrays.

Data-parallel training (replicated parameters, sharded batch, gradients
summed over devices) is :func:`jaxsr.nn.train.fit` with ``mesh=``. It is not a
``shard_map`` with ``lax.pmean`` of per-device gradients: a loss evaluated on
each device's slice of the batch differs from the one-device loss whenever it is
not a plain mean over items (a masked mean divides by the mask count of the
whole batch) or draws noise of the batch's shape from its key (every device
would draw the same noise). Instead the step is jitted with replicated
parameters and the batch constrained to the ``"batch"`` axis (:func:`constrain`);
XLA partitions the loss and its gradient by items and all-reduces the
gradient: the same function of the same batch and keys as on one device.

Multi-host: after :func:`jax.distributed.initialize`, :func:`batch_mesh` spans
every process's devices and the same code runs unchanged on every process. Each
process passes the same whole inputs (NumPy or ordinary single-device arrays,
identical on every process: each device reads its slice from its own process's
copy, so inputs that differ between processes silently give a different batch).
On a mesh that spans several processes the outputs are always gathered
(replicated, as for a padded batch), so every process can read the whole result
(``np.asarray``); an output left sharded over other processes' devices could
not be read there.

References:
    JAX documentation, "Manual parallelism with shard_map" and "Distributed
    arrays and automatic parallelization" (jax.readthedocs.io).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsr._mapping import map_items, vmap_items
from jaxsr._validate import check_int

__all__ = ["BATCH_AXIS", "auto_axes", "batch_mesh", "check_mesh", "constrain", "sharded_vmap"]

#: Name of the mesh axis the items are sharded over.
BATCH_AXIS = "batch"


def batch_mesh(*, n_devices: int | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """A one-axis device mesh named ``"batch"``, for :func:`sharded_vmap` and the ``mesh=`` options.

    Args:
        n_devices: number of devices (default: all of ``devices``).
        devices: the devices to use (default :func:`jax.devices`, every device of
            every host after :func:`jax.distributed.initialize`); the first
            ``n_devices`` of them are taken.

    Returns:
        ``jax.make_mesh((n,), ("batch",))`` over those devices (JAX's default,
        explicit axis type).

    Raises:
        ValueError: ``n_devices`` below 1 or above the number of devices; an empty ``devices``.
        TypeError: a non-int ``n_devices``.

    >>> mesh = batch_mesh(n_devices=1)
    >>> mesh.axis_names, mesh.shape["batch"]
    (('batch',), 1)
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("argument 'devices': expected at least one device, got none")
    n = len(devices) if n_devices is None else check_int(n_devices, "n_devices", minimum=1)
    if n > len(devices):
        raise ValueError(f"argument 'n_devices': {n} devices requested, only {len(devices)} available")
    return jax.make_mesh((n,), (BATCH_AXIS,), devices=devices[:n])


def check_mesh(mesh: Any, *, name: str = "mesh") -> int:
    """Require a :class:`jax.sharding.Mesh` with a ``"batch"`` axis; return that axis' size.

    Args:
        mesh: the value to check.
        name: the argument name used in error messages.

    Returns:
        The number of devices along ``"batch"``.

    Raises:
        TypeError: ``mesh`` is not a Mesh.
        ValueError: the mesh has no ``"batch"`` axis.

    >>> check_mesh(batch_mesh(n_devices=1))
    1
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"argument '{name}': expected a jax.sharding.Mesh (see batch_mesh), got {type(mesh).__name__}")
    if BATCH_AXIS not in mesh.axis_names:
        raise ValueError(
            f"argument '{name}': expected a mesh with a {BATCH_AXIS!r} axis (e.g. batch_mesh()), "
            f"got axes {tuple(mesh.axis_names)}"
        )
    return int(mesh.shape[BATCH_AXIS])


def auto_axes(mesh: Mesh) -> Mesh:
    """The same mesh with every axis of the automatic (GSPMD) type.

    :func:`jax.make_mesh` makes explicit axes by default: arrays sharded over them carry
    the sharding in their type, and some ordinary operations on them (iterating over
    the sharded axis, reshaping it) are then errors. :func:`sharded_vmap` and data-parallel
    training run on the automatic version, so what they return behaves like any array.

    >>> auto_axes(batch_mesh(n_devices=1)).axis_types == (jax.sharding.AxisType.Auto,)
    True
    """
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def _explicit(mesh: Mesh) -> bool:
    return mesh.axis_types[mesh.axis_names.index(BATCH_AXIS)] == AxisType.Explicit


def constrain(tree: Any, spec: P, *, mesh: Mesh) -> Any:
    """Lay every array of ``tree`` out as ``NamedSharding(mesh, spec)`` inside a traced function.

    ``jax.sharding.reshard`` on a mesh whose batch axis is explicit (the default of
    :func:`jax.make_mesh`), :func:`jax.lax.with_sharding_constraint` on an auto one.

    Args:
        tree: pytree of arrays.
        spec: e.g. ``PartitionSpec("batch")`` (leading axis split) or ``PartitionSpec()`` (replicated).
        mesh: a mesh with a ``"batch"`` axis.

    Returns:
        ``tree`` with the layout constraint applied.

    >>> import jax, jax.numpy as jnp
    >>> mesh = batch_mesh(n_devices=1)
    >>> f = jax.jit(lambda x: constrain(x, jax.sharding.PartitionSpec("batch"), mesh=mesh))
    >>> f(jnp.ones((4, 2))).sharding.spec[0]
    'batch'
    """
    sharding = NamedSharding(mesh, spec)
    if _explicit(mesh):
        return jax.tree_util.tree_map(lambda x: jax.sharding.reshard(x, sharding), tree)
    return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def _leaf_axes(prefix: Any, tree: Any, what: str) -> list:
    """One axis (int or None) per leaf of ``tree``, from an axis or a pytree prefix of axes."""
    n_leaves = len(jax.tree_util.tree_leaves(tree))
    if prefix is None or isinstance(prefix, int):
        return [prefix] * n_leaves
    out: list = []
    try:
        jax.tree_util.tree_map(
            lambda ax, sub: out.extend([ax] * len(jax.tree_util.tree_leaves(sub))), prefix, tree,
            is_leaf=lambda x: x is None,
        )
    except (ValueError, TypeError) as err:
        raise ValueError(f"argument '{what}': is not a pytree prefix of the arguments ({err})") from None
    for ax in out:
        if not (ax is None or (isinstance(ax, int) and not isinstance(ax, bool))):
            raise ValueError(f"argument '{what}': expected ints or None, got {ax!r}")
    return out


def _arg_names(fn: Callable, n: int) -> list[str]:
    """Names of the first ``n`` positional parameters of ``fn`` (``args[i]`` where unknown)."""
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params[:n]]
    return names + [f"args[{i}]" for i in range(len(names), n)]


def sharded_vmap(
    fn: Callable,
    *,
    in_axes: Any = 0,
    out_axes: Any = 0,
    mesh: Mesh | None = None,
    batch_size: int | None = None,
) -> Callable:
    """``vmap`` a single-item function and shard the mapped axis over the ``"batch"`` axis of a mesh.

    The returned function takes the same positional arguments as ``vmap(fn,
    in_axes=in_axes)`` would and returns the same result (to float32 round-off;
    bit for bit on one device in the cases tested): ``fn`` must be a pure,
    jittable function of arrays (close over static options with
    :func:`functools.partial`). It is itself jitted and works under an outer
    ``jit``. Mapped arguments are padded to a multiple of the device count by
    repeating their last item, each device applies ``vmap(fn)`` to its slice
    inside :func:`jax.shard_map` (no communication while computing, FFTs stay
    local), and the padding is stripped from the outputs (which then are
    replicated; with no padding they stay sharded over ``"batch"``, except on a
    mesh spanning several processes, where they are always replicated so that
    every process can read them).

    Args:
        fn: ``fn(*item_args) -> pytree of arrays``, for one item.
        in_axes: as in :func:`jax.vmap`: an int or ``None`` for every argument, or a
            tuple with one entry per argument, each an int, ``None`` (not mapped:
            replicated on every device) or a pytree prefix of that argument.
            Every mapped array must have the same size along its mapped axis.
        out_axes: an int, or a pytree prefix of the output with ints: where the
            item axis goes in each output (no ``None``: every output is per item).
        mesh: a :class:`jax.sharding.Mesh` with a ``"batch"`` axis (other axes, if
            any, hold replicas); default :func:`batch_mesh` over every device,
            built at call time.
        batch_size: ``None`` (default): each device ``vmap`` s over all its items at
            once; an int: each device maps over its items ``batch_size`` at a time
            (:func:`jax.lax.map`), bounding the memory of a large function.

    Returns:
        The sharded, jitted, batched function ``f(*args) -> pytree of arrays``.

    Raises:
        ValueError: a mesh without a ``"batch"`` axis (message names ``mesh``); at
            call time, mapped arguments of different sizes along the mapped axis or
            a scalar mapped (message names the argument), no mapped argument, or a
            bad ``in_axes``/``out_axes``.
        TypeError: ``fn`` not callable, ``mesh`` not a Mesh, a non-int ``batch_size``.

    References:
        JAX documentation, "Manual parallelism with shard_map" (jax.shard_map).

    >>> import jax.numpy as jnp
    >>> f = sharded_vmap(lambda x, w: jnp.sum(x * w), in_axes=(0, None), mesh=batch_mesh(n_devices=1))
    >>> [float(v) for v in f(jnp.arange(6.0).reshape(3, 2), jnp.array([1.0, 10.0]))]
    [10.0, 32.0, 54.0]
    """
    if not callable(fn):
        raise TypeError(f"argument 'fn': expected a callable, got {type(fn).__name__}")
    if mesh is not None:
        check_mesh(mesh)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", minimum=1)
    if isinstance(out_axes, bool) or not (isinstance(out_axes, int) or out_axes is not None):
        raise ValueError(f"argument 'out_axes': expected an int or a pytree of ints, got {out_axes!r}")

    @jax.jit
    def mapped(*args):
        the_mesh = auto_axes(batch_mesh() if mesh is None else mesh)
        n_dev = int(the_mesh.shape[BATCH_AXIS])
        if isinstance(in_axes, (tuple, list)):
            if len(in_axes) != len(args):
                raise ValueError(f"argument 'in_axes': {len(in_axes)} entries for {len(args)} arguments")
            per_arg = list(in_axes)
        else:
            per_arg = [in_axes] * len(args)
        names = _arg_names(fn, len(args))
        leaves, treedef = jax.tree_util.tree_flatten(list(args))
        axes: list = []
        owner: list = []
        for i, (arg, prefix) in enumerate(zip(args, per_arg)):
            a = _leaf_axes(prefix, arg, "in_axes")
            axes += a
            owner += [names[i]] * len(a)
        mapped_idx = [k for k, ax in enumerate(axes) if ax is not None]
        if not mapped_idx:
            raise ValueError("argument 'in_axes': no argument is mapped (every entry is None)")
        n_items = None
        first = None
        for k in mapped_idx:
            x = jnp.asarray(leaves[k])
            if x.ndim == 0:
                raise ValueError(f"argument '{owner[k]}': cannot map over an axis of a scalar")
            ax = axes[k]
            if not -x.ndim <= ax < x.ndim:
                raise ValueError(f"argument 'in_axes': axis {ax} out of range for '{owner[k]}' of shape {x.shape}")
            x = jnp.moveaxis(x, ax, 0)
            leaves[k] = x
            if n_items is None:
                n_items, first = x.shape[0], owner[k]
            elif x.shape[0] != n_items:
                raise ValueError(
                    f"argument '{owner[k]}': leading (batch) size {x.shape[0]} differs from {n_items} of '{first}'"
                )
        fixed_idx = [k for k, ax in enumerate(axes) if ax is None]

        def item(mapped_leaves, fixed_leaves):
            full = list(leaves)
            for k, v in zip(mapped_idx, mapped_leaves):
                full[k] = v
            for k, v in zip(fixed_idx, fixed_leaves):
                full[k] = v
            return fn(*jax.tree_util.tree_unflatten(treedef, full))

        mapped_in = [leaves[k] for k in mapped_idx]
        fixed_in = [leaves[k] for k in fixed_idx]
        if n_items == 0:  # nothing to shard: the plain vmap gives the right (empty) shapes
            return _place(jax.vmap(item, in_axes=(0, None))(mapped_in, fixed_in), out_axes)
        total = -(-n_items // n_dev) * n_dev
        pad = total - n_items
        if pad:
            index = jnp.minimum(jnp.arange(total), n_items - 1)  # the last item repeated
            mapped_in = [jnp.take(x, index, axis=0) for x in mapped_in]
        mapped_in = constrain(mapped_in, P(BATCH_AXIS), mesh=the_mesh)
        fixed_in = constrain(fixed_in, P(), mesh=the_mesh)
        local = total // n_dev

        def body(mapped_local, fixed_local):
            if batch_size is None:
                return vmap_items(lambda m: item(m, fixed_local))(mapped_local)
            return map_items(lambda xs: item(xs, fixed_local), mapped_local, batch_size=min(batch_size, local))

        # check_vma=False: fn is any single-item function; a loop in it whose carry starts from a replicated
        # value (a constant, an unmapped argument) and becomes per-item would fail the varying-axes type check.
        out = jax.shard_map(body, mesh=the_mesh, in_specs=(P(BATCH_AXIS), P()), out_specs=P(BATCH_AXIS),
                            check_vma=False)(mapped_in, fixed_in)
        if pad or _spans_processes(the_mesh):  # replicated: strippable, and readable on every process
            out = constrain(out, P(), mesh=the_mesh)
        if pad:
            out = jax.tree_util.tree_map(lambda y: y[:n_items], out)
        return _place(out, out_axes)

    return mapped


def _spans_processes(mesh: Mesh) -> bool:
    """Whether ``mesh`` holds devices of other processes (multi-host, after :func:`jax.distributed.initialize`).

    An array sharded over such a mesh is not fully addressable: this process cannot read the
    other processes' pieces, so :func:`sharded_vmap` and
    :func:`~jaxsr.parallel.halo.richardson_lucy_sharded` replicate their outputs there.

    >>> _spans_processes(batch_mesh(n_devices=1))
    False
    """
    me = jax.process_index()
    return any(d.process_index != me for d in mesh.devices.flat)


def _place(out: Any, out_axes: Any) -> Any:
    """Move the item axis (0) of every output leaf to its ``out_axes`` position."""
    axes = _leaf_axes(out_axes, out, "out_axes")
    leaves, treedef = jax.tree_util.tree_flatten(out)
    moved = []
    for y, ax in zip(leaves, axes):
        if ax is None:
            raise ValueError("argument 'out_axes': None is not supported (every output is per item)")
        moved.append(y if ax == 0 else jnp.moveaxis(y, 0, ax))
    return jax.tree_util.tree_unflatten(treedef, moved)
