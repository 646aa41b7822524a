"""One image across devices: Richardson-Lucy on slabs with a halo exchange.

Axis order: a 2D image ``(y, x)`` with a 2D PSF ``(y, x)``, or a 3D stack
``(z, y, x)`` with a 3D PSF ``(z, y, x)``. The image is cut along one spatial
axis (``split_axis``, default the first: ``y`` of an image, ``z`` of a stack)
into slabs, one per device of a one-axis mesh, and every Richardson-Lucy (RL)
iteration runs inside :func:`jax.shard_map`: each device convolves its own slab
with local FFTs and gets the rows it needs from its two neighbours with
:func:`jax.lax.ppermute` (a collective-permute: point-to-point, no all-gather).
The result equals :func:`jaxsr.deconv.richardson_lucy` on one device to float32
round-off, and it is differentiable (``jax.grad`` through the fixed-count loop,
also with respect to the parameters of a PSF built inside the differentiated
function).

Halo width and exchanges. With ``k`` the PSF size along the split axis and
``h = k // 2`` (the PSF half-width; the PSF centre is index ``k // 2``), the
forward projection ``H x`` at a slab's rows needs the estimate up to ``h`` rows
beyond the slab, and the back-projection ``H^T r`` needs the ratio ``r = d / (H x + b)``
up to ``h`` rows beyond it. There are two exact ways to get them:

* **twice per iteration, width h** (used here): exchange the estimate's edge
  rows, forward-project on the slab plus its halo (``s + 2h`` rows), compute the
  ratio on the slab, exchange the ratio's edge rows, back-project on ``s + 2h``
  rows. Two exchanges per iteration, each a pair of collective-permutes (one
  per direction) moving ``h`` rows.
* once per iteration, width 2h: exchange ``2h`` rows of the estimate, forward-
  project on ``s + 4h`` rows, form the ratio on ``s + 2h`` of them (the
  neighbours' ratio is recomputed locally from a halo of the data), back-project.
  One exchange per iteration but the same bytes, and the forward FFT runs on
  ``2h`` more rows.

Both move the same number of bytes; they differ in one collective's latency
(microseconds over NVLink or between fake CPU devices) against ``2h`` extra FFT
rows of redundant compute (e.g. +32 % for the forward FFT of 64-plane slabs with
a 31-plane PSF, milliseconds per iteration on a GPU). The slabs of an image too
large for one device are thick and its FFTs are long, so the exchange count does
not dominate and the smaller FFT wins: this module exchanges twice, width ``h``.
Either way every device transforms ``s + 2h`` rows (``s = n / D``) where one device
would transform ``n``, so the redundant work is ``2h / s``: slabs should be much
thicker than the PSF (pick ``split_axis`` accordingly). On a single device the
function is slower than :func:`~jaxsr.deconv.richardson_lucy` (the zero halos
lengthen its FFT): use that there.

Global boundary:

* ``boundary="pad"`` (default, as in :func:`~jaxsr.deconv.richardson_lucy`): the
  estimate lives on the image padded by ``k - 1`` pixels per axis, the
  likelihood counts only measured pixels and the update is divided by
  ``W = H^T(mask)`` (pixels with ``W < 1e-3`` set to 0). Along the split axis
  that padded line of ``n + k - 1`` rows is cut into equal slabs (with inert
  zero rows at the end when it does not divide the device count); the first and
  last device receive zero halos. Along the other axes each device uses the
  single-device padded FFT grid. ``W`` is computed per slab from the mask
  (known on every device without communication). This is the single-device
  computation, not an approximation of it: there the circular FFT on the padded
  grid never wraps light onto measured pixels, because the estimate is zero
  outside the ``n + k - 1`` line and the ratio zero outside the measured pixels,
  so it is a linear convolution, which the slabs reproduce piece by piece.
* ``boundary="periodic"``: the devices form a ring (the last sends to the
  first), so the convolution along the split axis is circular over the image's
  ``n`` rows. When ``n`` does not divide the device count the slabs hold
  ``n // D`` or ``n // D + 1`` rows (padded to equal arrays and masked; the halo
  is read from and written next to each slab's last real row).

Each slab must hold at least ``h`` rows (the halo comes from the immediate
neighbours only): a clear ``ValueError`` names ``mesh`` and the largest usable
device count otherwise.

Not supported here (use :func:`~jaxsr.deconv.richardson_lucy`): stopping rules,
total-variation regularisation, history and callbacks, batch axes (``vmap`` the
function, or deconvolve frames one after the other). Biggs-Andrews acceleration
is supported: its two inner products are global sums (``lax.psum`` of scalars).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsr._validate import as_float_array, check_choice, check_finite, check_int, check_nonnegative
from jaxsr.deconv.richardson_lucy import (
    _ALPHA_MAX,
    _FLOOR_REL,
    _WEIGHT_THRESHOLD,
    _fft_apply,
    _prepare_psf,
    _safe_div,
)
from jaxsr.forward import _fast_len
from jaxsr.optics.otf import psf_to_otf
from jaxsr.parallel.batch import _spans_processes

__all__ = ["richardson_lucy_sharded", "default_slab_mesh"]

_BOUNDARIES = ("pad", "periodic")
#: Axis name of the mesh built when ``mesh=None``.
SLAB_AXIS = "slab"


class _Geometry(NamedTuple):
    """Static layout of the slabs (everything a compiled function specialises on)."""

    nd: int
    boundary: str
    accelerate: bool
    num_iter: int
    n_dev: int
    axis_name: str
    spatial: tuple[int, ...]  # image shape (split axis first)
    psf_shape: tuple[int, ...]
    offset: tuple[int, ...]  # where the image sits in the padded grid (pad); zeros (periodic)
    other_grid: tuple[int, ...]  # FFT grid of the axes that are not split
    slab: int  # rows per slab (array size)
    valid: tuple[int, ...]  # real rows of each slab (periodic with n % D != 0: s or s - 1)
    start: tuple[int, ...]  # global row of each slab's first row
    halo: int
    block: int  # local FFT length along the split axis (>= slab + 2 halo)
    bg_scalar: bool
    split_axis: int  # of the caller's image; moved to the front inside the compiled function

    @property
    def uniform(self) -> bool:
        return all(v == self.slab for v in self.valid)


def default_slab_mesh(*, num_devices: int | None = None) -> Mesh:
    """A one-axis mesh ``("slab",)`` over the first ``num_devices`` devices (default all).

    Args:
        num_devices: number of devices (default ``len(jax.devices())``).

    Returns:
        ``jax.make_mesh((num_devices,), ("slab",))`` over the first ``num_devices`` devices.

    >>> dict(default_slab_mesh(num_devices=1).shape)
    {'slab': 1}
    """
    devices = jax.devices()
    n = len(devices) if num_devices is None else check_int(num_devices, "num_devices", minimum=1)
    if n > len(devices):
        raise ValueError(f"argument 'num_devices': only {len(devices)} devices are available, got {n}")
    return jax.make_mesh((n,), (SLAB_AXIS,), devices=devices[:n])


# --------------------------------------------------------------------------- #
# Geometry
# --------------------------------------------------------------------------- #
def _split_rows(n: int, n_dev: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Near-equal split of ``n`` rows: (rows per device, first row of each device)."""
    valid = tuple(n // n_dev + (1 if d < n % n_dev else 0) for d in range(n_dev))
    start = tuple(int(v) for v in np.concatenate([[0], np.cumsum(valid)[:-1]]))
    return valid, start


def _max_devices(line: int, halo: int, boundary: str) -> int:
    """Largest device count whose slabs hold at least ``halo`` rows."""
    best = 1
    for d in range(1, line + 1):
        rows = math.ceil(line / d) if boundary == "pad" else line // d
        if rows >= halo:
            best = d
    return best


def _geometry(spatial, psf_shape, boundary, accelerate, num_iter, n_dev, axis_name, bg_scalar,
              split_axis) -> _Geometry:
    nd = len(spatial)
    k0 = psf_shape[0]
    halo = k0 // 2
    if boundary == "pad":
        offset = tuple(k - 1 - k // 2 for k in psf_shape)
        other_grid = tuple(_fast_len(n + k - 1) for n, k in zip(spatial[1:], psf_shape[1:]))
        line = spatial[0] + k0 - 1  # the padded line the estimate lives on
        slab = math.ceil(line / n_dev)
        valid = (slab,) * n_dev
        start = tuple(d * slab for d in range(n_dev))
        thinnest = slab
    else:
        offset = (0,) * nd
        other_grid = tuple(spatial[1:])
        line = spatial[0]
        valid, start = _split_rows(line, n_dev)
        slab = max(valid)
        thinnest = min(valid)
    if thinnest < halo:
        raise ValueError(
            f"argument 'mesh': slabs of {thinnest} rows along the split axis are thinner than the halo of "
            f"{halo} rows (psf half-width, psf size {k0}); at least {halo} rows per slab are needed: use at "
            f"most {_max_devices(line, halo, boundary)} devices for this image"
        )
    return _Geometry(
        nd=nd, boundary=boundary, accelerate=accelerate, num_iter=num_iter, n_dev=n_dev, axis_name=axis_name,
        spatial=tuple(spatial), psf_shape=tuple(psf_shape), offset=offset, other_grid=other_grid, slab=slab,
        valid=valid, start=start, halo=halo, block=_fast_len(slab + 2 * halo), bg_scalar=bg_scalar,
        split_axis=split_axis,
    )


# --------------------------------------------------------------------------- #
# Layout: global image <-> equal slabs stacked along the split axis
# --------------------------------------------------------------------------- #
def _to_slabs(u: jax.Array, geo: _Geometry) -> jax.Array:
    """Image ``(n, ...)`` -> ``(n_dev * slab, ...)``: each device's rows at ``[d * slab, d * slab + valid[d])``."""
    n = geo.spatial[0]
    total = geo.n_dev * geo.slab
    if geo.boundary == "pad":
        before = geo.offset[0]
        return jnp.pad(u, [(before, total - n - before)] + [(0, 0)] * (u.ndim - 1))
    if geo.uniform:
        return u
    idx = np.zeros(total, np.int32)
    keep = np.zeros(total, bool)
    for d, (v, s0) in enumerate(zip(geo.valid, geo.start)):
        idx[d * geo.slab: d * geo.slab + v] = np.arange(s0, s0 + v)
        keep[d * geo.slab: d * geo.slab + v] = True
    rows = jnp.take(u, jnp.asarray(idx), axis=0)
    return jnp.where(jnp.asarray(keep).reshape((-1,) + (1,) * (u.ndim - 1)), rows, 0.0)


def _from_slabs(u: jax.Array, geo: _Geometry) -> jax.Array:
    """Inverse of :func:`_to_slabs` (the image's rows only)."""
    n = geo.spatial[0]
    if geo.boundary == "pad":
        return u[geo.offset[0]: geo.offset[0] + n]
    if geo.uniform:
        return u
    idx = np.concatenate([np.arange(d * geo.slab, d * geo.slab + v) for d, v in enumerate(geo.valid)])
    return jnp.take(u, jnp.asarray(idx, np.int32), axis=0)


# --------------------------------------------------------------------------- #
# Per-device work (inside shard_map)
# --------------------------------------------------------------------------- #
def _halo_exchange(u: jax.Array, geo: _Geometry, n_valid: Any) -> jax.Array:
    """Slab ``(slab, ...)`` -> block ``(block, ...)``: ``[halo from d-1 | slab | halo from d+1 | zeros]``.

    Each device sends the ``halo`` rows at each end of its real rows to the neighbour on that
    side (two ``ppermute``); the ends of the line receive zeros unless the ring wraps (periodic).
    """
    h, name, n_dev = geo.halo, geo.axis_name, geo.n_dev
    tail_zeros = geo.block - geo.slab - 2 * h
    if h == 0:
        return jnp.pad(u, [(0, geo.block - geo.slab)] + [(0, 0)] * (u.ndim - 1))
    wrap = geo.boundary == "periodic"
    down = [(d, d + 1) for d in range(n_dev - 1)] + ([(n_dev - 1, 0)] if wrap else [])
    up = [(d + 1, d) for d in range(n_dev - 1)] + ([(0, n_dev - 1)] if wrap else [])
    if geo.uniform:
        last = u[geo.slab - h:]
    else:
        last = jax.lax.dynamic_slice_in_dim(u, n_valid - h, h, axis=0)
    from_prev = jax.lax.ppermute(last, name, down)  # rows just above this slab
    from_next = jax.lax.ppermute(u[:h], name, up)  # rows just below this slab
    pad_shape = [(0, 0)] * (u.ndim - 1)
    if geo.uniform:
        return jnp.pad(jnp.concatenate([from_prev, u, from_next], axis=0), [(0, tail_zeros)] + pad_shape)
    block = jnp.pad(jnp.concatenate([from_prev, u], axis=0), [(0, h + tail_zeros)] + pad_shape)
    return jax.lax.dynamic_update_slice_in_dim(block, from_next, h + n_valid, axis=0)


def _pad_other_axes(u: jax.Array, geo: _Geometry) -> jax.Array:
    if geo.boundary != "pad":
        return u
    widths = [(0, 0)] + [(o, g - n - o) for o, g, n in zip(geo.offset[1:], geo.other_grid, geo.spatial[1:])]
    return jnp.pad(u, widths)


def _crop_other_axes(u: jax.Array, geo: _Geometry) -> jax.Array:
    if geo.boundary != "pad":
        return u
    return u[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(geo.offset[1:], geo.spatial[1:]))]


def _measured_mask(first_row: Any, rows: int, geo: _Geometry, dtype) -> jax.Array:
    """Mask of measured pixels on ``rows`` rows from global padded row ``first_row`` (pad boundary)."""
    g = first_row + jnp.arange(rows)
    row_ok = (g >= geo.offset[0]) & (g < geo.offset[0] + geo.spatial[0])
    other = np.zeros(geo.other_grid, dtype=np.dtype(dtype))
    other[tuple(slice(o, o + n) for o, n in zip(geo.offset[1:], geo.spatial[1:]))] = 1.0
    return row_ok.astype(dtype).reshape((rows,) + (1,) * (geo.nd - 1)) * jnp.asarray(other)


def _slab_rl(data: jax.Array, bg: jax.Array, psf: jax.Array, geo: _Geometry) -> jax.Array:
    """RL on one device's slab; ``data``/``bg`` are ``(slab, ...)`` with the other axes unpadded."""
    name, h, s = geo.axis_name, geo.halo, geo.slab
    dtype = data.dtype
    d = jax.lax.axis_index(name)
    n_valid = jnp.asarray(geo.valid, jnp.int32)[d]
    first = jnp.asarray(geo.start, jnp.int32)[d]
    row_ok = (jnp.arange(s) < n_valid).astype(dtype).reshape((s,) + (1,) * (geo.nd - 1))

    # Global scalars: psum of the slab sums. Rows outside the image hold zero data and zero (or a
    # non-negative scalar) background, so they add nothing to either sum.
    n_pix = float(math.prod(geo.spatial))
    mean_d = jax.lax.psum(jnp.sum(data), name) / n_pix
    c0 = jax.lax.psum(jnp.sum(jnp.maximum(data - bg, 0.0)), name) / n_pix
    floor = _FLOOR_REL * mean_d + jnp.asarray(1e-12, dtype)

    data = _pad_other_axes(data, geo)
    if not geo.bg_scalar:
        bg = _pad_other_axes(bg, geo)

    grid = (geo.block, *geo.other_grid)
    psf = psf / jnp.sum(psf)
    otf = psf_to_otf(psf, grid)
    otf_conj = jnp.conj(otf)

    def convolve(u, transfer):  # slab -> slab, through the halo exchange and one local FFT pair
        return _fft_apply(_halo_exchange(u, geo, n_valid), transfer, grid)[h: h + s]

    if geo.boundary == "pad":
        weight = _fft_apply(_measured_mask(first - h, geo.block, geo, dtype), otf_conj, grid)[h: h + s]
        ok = weight > _WEIGHT_THRESHOLD
        inv_w = jnp.where(ok, 1.0 / jnp.where(ok, weight, 1.0), 0.0)
        x0 = c0 * ok.astype(dtype)
    else:
        inv_w = None
        x0 = c0 * jnp.broadcast_to(row_ok, data.shape)

    def back(ratio):
        out = convolve(ratio, otf_conj)
        return out * inv_w if inv_w is not None else out

    if geo.accelerate:
        def step(it, st):
            x, hv, g, num, den = st
            alpha = _safe_div(num, den)
            alpha = jnp.where(it >= 2, jnp.clip(alpha, 0.0, _ALPHA_MAX), 0.0).astype(dtype)
            y = jnp.maximum(x + alpha * hv, 0.0)
            mu = jnp.maximum(convolve(y, otf) + bg, floor)
            x_new = jnp.maximum(y * back(data / mu), 0.0)
            g_new = x_new - y
            num_new = jax.lax.psum(jnp.sum(g_new * g), name)
            den_new = jax.lax.psum(jnp.sum(g * g), name)
            return x_new, x_new - x, g_new, num_new, den_new

        zero = jnp.zeros((), dtype)
        init = (x0, jnp.zeros_like(x0), jnp.zeros_like(x0), zero, zero)
        x = jax.lax.fori_loop(0, geo.num_iter, step, init)[0]
    else:
        def step(_, st):
            x, fx = st
            mu = jnp.maximum(fx + bg, floor)
            x_new = jnp.maximum(x * back(data / mu), 0.0)
            return x_new, convolve(x_new, otf)

        x = jax.lax.fori_loop(0, geo.num_iter, step, (x0, convolve(x0, otf)))[0]
    return _crop_other_axes(x, geo)


@functools.partial(jax.jit, static_argnames=("geo", "mesh"))
def _solve(image: jax.Array, psf: jax.Array, background: jax.Array, geo: _Geometry, mesh: Mesh) -> jax.Array:
    ax = geo.split_axis
    image, psf = jnp.moveaxis(image, ax, 0), jnp.moveaxis(psf, ax, 0)
    spec = P(geo.axis_name)
    slabs = _to_slabs(image, geo)
    if geo.bg_scalar:
        bg, bg_spec = background, P()
    else:
        bg, bg_spec = _to_slabs(jnp.moveaxis(background, ax, 0), geo), spec
    run = jax.shard_map(
        functools.partial(_slab_rl, geo=geo), mesh=mesh,
        in_specs=(spec, bg_spec, P()), out_specs=spec,
    )
    out = jnp.moveaxis(_from_slabs(run(slabs, bg, psf), geo), 0, ax)
    return jax.lax.with_sharding_constraint(out, NamedSharding(mesh, _out_spec(geo, mesh)))


def _out_spec(geo: _Geometry, mesh: Mesh) -> P:
    """The result stays spread over the devices along the split axis when its length divides the
    device count (a shift of rows between neighbours, no gather); otherwise it is replicated. On a
    mesh spanning several processes it is always replicated, so that every process can read it."""
    if geo.spatial[0] % geo.n_dev or _spans_processes(mesh):
        return P()
    return P(*([None] * geo.split_axis + [geo.axis_name]))


# --------------------------------------------------------------------------- #
# Public function
# --------------------------------------------------------------------------- #
def richardson_lucy_sharded(
    image: Any,
    psf: Any,
    *,
    num_iter: int = 50,
    background: Any = 0.0,
    boundary: str = "pad",
    accelerate: bool = False,
    mesh: Mesh | None = None,
    axis_name: str | None = None,
    split_axis: int = 0,
    psf_shape: tuple[int, ...] | None = None,
) -> jax.Array:
    """Richardson-Lucy deconvolution of one image split into slabs across devices.

    Same model, iteration and result as :func:`jaxsr.deconv.richardson_lucy`
    (fixed iteration count), computed with the image cut along ``split_axis``
    into one slab per device of ``mesh``. Every iteration exchanges a halo of
    ``psf.shape[split_axis] // 2`` rows with the two neighbouring devices twice
    (estimate before the forward projection, ratio before the back-projection)
    with :func:`jax.lax.ppermute`; the FFT convolutions run locally on slab plus
    halo, so the compiled program has collective-permutes and scalar all-reduces
    but no all-gather in the loop. See the module docstring for the halo choice
    and the boundaries.

    Memory per device: the slab plus ``2 * halo`` rows on the FFT grid of the
    other axes (a few such arrays), instead of the whole padded image.

    Args:
        image: ``(y, x)`` image or ``(z, y, x)`` stack in photons, finite (negative
            pixels are clipped to 0); no batch axes.
        psf: ``(y, x)`` or ``(z, y, x)`` PSF (same number of axes as ``image``),
            non-negative, positive sum (normalised here), centre at index ``n // 2``;
            may be built inside a function that is differentiated. Or a callable
            ``psf(shape)`` evaluated on ``psf_shape``.
        num_iter: number of iterations (static, >= 1).
        background: expected background photons per pixel, >= 0: a scalar or an
            array broadcastable to ``image.shape``.
        boundary: ``"pad"`` (default) or ``"periodic"`` (static), as in
            :func:`~jaxsr.deconv.richardson_lucy`.
        accelerate: Biggs-Andrews acceleration (static bool).
        mesh: a :class:`jax.sharding.Mesh` (Auto or Explicit axis types; inside
            ``jax.set_mesh(m)`` pass ``m``); default :func:`default_slab_mesh`
            (all devices, axis ``"slab"``).
        axis_name: the mesh axis the slabs are spread over; needed only when
            ``mesh`` has several axes (the others hold replicas).
        split_axis: spatial axis cut into slabs (0 = first: ``y`` of an image,
            ``z`` of a stack; negative counts from the end). Choose a long axis
            along which the PSF is short.
        psf_shape: grid a callable ``psf`` is evaluated on (as in ``richardson_lucy``).

    Returns:
        The estimate, shape of ``image``, floating dtype of ``image`` and ``psf``
        combined, photons per pixel (non-negative). It stays spread over the
        mesh along ``split_axis`` when that length is a multiple of the device
        count; otherwise it is gathered (replicated on the mesh's devices). On a
        mesh spanning several processes (multi-host, after
        :func:`jax.distributed.initialize`; every process passes the same
        ``image``) it is always gathered, so every process can read it.

    Raises:
        ValueError: the errors of ``richardson_lucy`` (bad ``psf``, NaN in
            ``image``, negative ``background``, ``num_iter`` < 1, unknown ``boundary``);
            ``image`` with a number of axes other than the PSF's; ``split_axis`` out of
            range; a ``mesh`` whose slabs would be thinner than the halo (the message
            gives the largest usable device count); an unknown ``axis_name``.
        TypeError: non-numeric ``image``/``psf``, a ``mesh`` that is not a Mesh,
            non-bool ``accelerate``.

    References:
        W. H. Richardson, J. Opt. Soc. Am. 62, 55-59 (1972); L. B. Lucy, Astron.
        J. 79, 745-754 (1974); M. Bertero and P. Boccacci, Astron. Astrophys.
        437, 369-374 (2005) (boundary weights); D. S. C. Biggs and M. Andrews,
        Appl. Opt. 36, 1766-1775 (1997) (acceleration). Halo (ghost-cell)
        exchange of a domain decomposition: e.g. W. Gropp, E. Lusk and A.
        Skjellum, "Using MPI", 3rd ed., MIT Press (2014), ch. 4.

    >>> import jax.numpy as jnp
    >>> from jaxsr.deconv import richardson_lucy
    >>> psf = jnp.ones((3, 3)) / 9.0
    >>> image = jnp.zeros((16, 12)).at[8, 6].set(90.0) + 1.0
    >>> est = richardson_lucy_sharded(image, psf, num_iter=20)   # all devices (here: one)
    >>> ref = richardson_lucy(image, psf, num_iter=20)
    >>> est.shape, bool(jnp.max(jnp.abs(est - ref)) < 1e-4 * jnp.max(ref))
    ((16, 12), True)
    """
    num_iter = check_int(num_iter, "num_iter", minimum=1)
    check_choice(boundary, "boundary", _BOUNDARIES)
    if not isinstance(accelerate, (bool, np.bool_)):
        raise TypeError(f"argument 'accelerate': expected a bool, got {type(accelerate).__name__}")
    if mesh is None:
        mesh = default_slab_mesh()
    elif not isinstance(mesh, Mesh):
        raise TypeError(f"argument 'mesh': expected a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis_name is None:
        if len(mesh.axis_names) != 1:
            raise ValueError(
                f"argument 'axis_name': required for a mesh with several axes {tuple(mesh.axis_names)}")
        axis_name = mesh.axis_names[0]
    elif axis_name not in mesh.axis_names:
        raise ValueError(f"argument 'axis_name': {axis_name!r} is not an axis of the mesh {tuple(mesh.axis_names)}")
    n_dev = int(mesh.shape[axis_name])
    # Auto axis types: XLA places the layout steps (padding, stripping) around the shard_map,
    # whatever the caller's mesh says (Explicit meshes refuse uneven slices of a sharded axis).
    mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))

    image = as_float_array(image, "image")
    check_finite(image, "image")
    psf = _prepare_psf(psf, image, psf_shape)
    nd = psf.ndim
    if image.ndim != nd:
        raise ValueError(
            f"argument 'image': expected {nd} dimensions for a {nd}D psf (no batch axes; vmap for a batch), "
            f"got shape {tuple(image.shape)}"
        )
    split_axis = check_int(split_axis, "split_axis")
    if not -nd <= split_axis < nd:
        raise ValueError(f"argument 'split_axis': must be in [{-nd}, {nd - 1}] for a {nd}D image, got {split_axis}")
    split_axis %= nd
    dtype = jnp.result_type(image.dtype, psf.dtype)
    image = jnp.maximum(image.astype(dtype), 0.0)
    psf = psf.astype(dtype)

    if not isinstance(background, jax.core.Tracer):
        check_nonnegative(np.asarray(background) if not isinstance(background, jax.Array) else background,
                          "background")
    background = as_float_array(background, "background")
    try:
        background = (jnp.broadcast_to(background.astype(dtype), image.shape) if background.ndim
                      else background.astype(dtype))
    except ValueError as err:
        raise ValueError(
            f"argument 'background': shape {tuple(background.shape)} does not broadcast to the image "
            f"shape {tuple(image.shape)}"
        ) from err
    bg_scalar = background.ndim == 0

    front = (split_axis, *(i for i in range(nd) if i != split_axis))
    geo = _geometry(tuple(int(image.shape[i]) for i in front), tuple(int(psf.shape[i]) for i in front),
                    boundary, bool(accelerate), num_iter, n_dev, axis_name, bg_scalar, split_axis)
    context = jax.sharding.get_abstract_mesh()
    if context.empty or all(t == AxisType.Auto for t in context.axis_types):
        return _solve(image, psf, background, geo, mesh)
    if dict(context.shape) != dict(mesh.shape):
        raise ValueError(
            f"argument 'mesh': {dict(mesh.shape)} differs from the mesh set with jax.set_mesh "
            f"{dict(context.shape)}; pass that mesh, or call outside the context"
        )
    # Under a context mesh with Explicit axes (jax.set_mesh), run with those axes switched to Auto.
    out_spec = _out_spec(geo, mesh)
    return jax.sharding.auto_axes(lambda a, b, c: _solve(a, b, c, geo, mesh), out_sharding=out_spec)(
        image, psf, background)
