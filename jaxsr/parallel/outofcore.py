"""Larger than memory: Richardson-Lucy over Zarr/TIFF chunks with Dask ``map_overlap``.

Axis order: a 2D PSF ``(y, x)`` goes with a 2D image ``(y, x)``, a 3D PSF
``(z, y, x)`` with a volume ``(z, y, x)``; the source and the PSF have the same
number of axes (process a time series frame by frame, or with
:mod:`jaxsr.parallel.batch`).

The volume is cut into chunks; each chunk is read together with a *halo* of
``depth`` pixels from its neighbours (:func:`dask.array.map_overlap` with
``boundary="none"``: no halo, and no invented data, beyond the volume's true
edges), deconvolved by the jitted single-device Richardson-Lucy kernel of
:func:`jaxsr.deconv.richardson_lucy` (``boundary="pad"``: NumPy block -> JAX ->
NumPy block), trimmed back to the chunk and streamed to the output store. Only
a few chunks (one per Dask worker, plus their halos and the RL work arrays) are
in memory at any time; nothing of the size of the volume is ever allocated.

Why the result can equal whole-volume RL
    One RL iteration ``x <- x H^T(d / (H x + b)) / H^T 1`` reads the estimate
    within the PSF radius ``r`` (forward projection) of the pixels within ``r``
    (back-projection): ``2 r`` pixels. A chunk's artificial edge (where its halo
    ends) therefore corrupts at most ``2 r`` more pixels per iteration, and after
    ``num_iter`` iterations the chunk core is untouched when the halo is
    ``num_iter x 2 x r`` (``depth="exact"``). At the volume's true edges no halo
    is added and the chunk is deconvolved with the same padded-boundary model as
    the whole volume (Bertero-Boccacci weights on the unmeasured border), so those
    edges behave exactly as in whole-volume RL. Two more things are global in
    :func:`~jaxsr.deconv.richardson_lucy` and are made global here: the flat
    initial estimate (the mean of ``max(data - background, 0)`` over the image)
    and the floor of the predicted mean (``1e-6`` of the mean data). Both are
    computed over the *whole* volume in one streamed pass before the chunks are
    processed and passed to every chunk (with ``background > 0`` RL is not
    invariant to the scale of its start, and a per-chunk mean would leave an
    error of ~1e-3 of the maximum everywhere, halo or not). With these,
    ``depth="exact"`` reproduces whole-volume RL to float32 round-off (measured
    below: <= 1e-6 of the maximum; each chunk has its own FFT grid, hence not bit
    for bit).

Why a smaller halo is enough in practice (``depth="auto"``)
    The padded-boundary model already absorbs most of what a missing neighbour
    does (light from outside the chunk is modelled, not forced into the edge
    pixels), so the error made at an artificial edge decays quickly inward, on
    the scale of the PSF's width rather than of its array's size. ``"auto"`` is
    5 PSF widths per axis, ``ceil(5 x FWHM)`` with ``FWHM = 2.355 x`` the RMS
    width (second central moment) of the PSF along that axis, capped at the
    exact halo; e.g. 18 pixels for a Gaussian PSF of sigma 1.5 pixels whatever
    its support. A rule in PSF *radii* (array half-sizes) was measured too and
    rejected: at 3 radii the seam error ranged from 2e-4 (2D, 9 x 9 support of
    sigma 1.5) to 4e-3 (3D, 3 x 5 x 5 support of sigma 0.7/1/1 px, 25 iterations),
    because a tightly cropped PSF reaches further than its radius suggests after
    a few iterations, and a generously cropped one wastes halo. The exact halo
    grows with the iterations (50 iterations of a radius-8 PSF: 800 pixels each
    side); "auto" does not, and its error grows only slowly with them.

Seam error, max ``|chunked - whole| / max(whole)`` over the image, split into
"seams" (pixels within one PSF radius of an internal chunk border) and chunk
"interiors" (the rest); Poisson images of point sources on a background of 2
photons, Gaussian PSFs (sigma in pixels), float32 on CPU. For scale: float32
round-off of 50 whole-image iterations is a few 1e-6, and the Poisson noise of
a pixel with 10^4 photons is 1e-2.

==============================  ==========  ====  ============  =========  =========
image, chunks                   PSF         iter  depth         interiors  seams
==============================  ==========  ====  ============  =========  =========
2D 96 x 80, 48 x 40 (tests)     5 x 5, 1    6     exact 24      4.5e-07    2.7e-07
                                                  auto 12       9.5e-07    4.1e-07
3D 24 x 48 x 48, 8 x 24 x 24    3 x 5 x 5,  4     exact 8/16    9.7e-07    4.1e-07
(tests)                         0.7/1/1           auto 8/12     4.8e-07    6.2e-07
2D 128 x 128, 64 x 64           9 x 9, 1.5  10    auto 18       1.1e-06    1.0e-06
                                            25    auto 18       2.3e-06    4.5e-06
                                            50    auto 18       3.8e-06    1.6e-05
2D 128 x 128, 64 x 64           15 x 15,    50    auto 18       4.4e-06    1.5e-05
                                1.5
3D 32 x 64 x 64, 16 x 32 x 32   3 x 5 x 5,  10    auto 8/12     9.7e-07    1.3e-06
                                0.7/1/1     25    auto 8/12     4.8e-06    1.2e-05
                                            50    auto 8/12     7.6e-06    5.4e-05
3D 48 x 64 x 64, 24 x 32 x 32   7 x 9 x 9,  10    auto 17/18    2.7e-06    5.6e-06
                                1.5         25    auto 17/18    8.0e-06    4.7e-05
                                            50    auto 17/18    3.0e-05    1.4e-04
==============================  ==========  ====  ============  =========  =========

So ``depth="auto"`` stays below 1.5e-4 of the maximum up to 50 iterations in
these cases (2D: below 3e-5), and ``depth="exact"`` is at round-off. (An exact
halo larger than the chunks makes Dask merge neighbouring chunks until each is
at least as large as the halo, since it takes halos from adjacent chunks only;
the output is split back to the requested chunks.)
``benchmarks/bench_outofcore.py`` measures the seam error on a larger volume
together with the memory use.

Not supported chunk-wise (not local, so no halo makes them exact): Biggs-Andrews
acceleration (its extrapolation factor is an inner product over the whole
image), the stopping rules, and the periodic boundary; total variation is left
out for now. The background is a scalar.

The chunk kernel is the iteration of :func:`~jaxsr.deconv.richardson_lucy`
itself (its private pieces ``_shared``, ``_item_consts``, ``_init_state``,
``_advance``, ``_finish``, jitted together), with the flat start and the floor
replaced by the whole volume's; the tests hold it equal to the public function.
(An ``init=`` option of :func:`~jaxsr.deconv.richardson_lucy` would let it call
the public function instead.)

Cost: the chunk shapes differ at the volume's edges (no outer halo, and a shorter
last chunk), and every distinct shape compiles the kernel once (jit cache): at
most 4 sizes per axis; at most 2 when the chunk size divides the volume (first
and last chunk then have the same size), i.e. at most 4 compilations in 2D and
8 in 3D (:attr:`ChunkedResult.block_shapes` lists them). Padding the edge chunks
to one shape would change the boundary model, so it is not done. The input is
read twice (once for the global mean, once for the chunks), halos are re-read
and recomputed by every chunk that needs them (an interior chunk of ``c`` pixels
per axis processes ``(c + 2 depth)`` per axis), and TIFF pages are decoded once
for every chunk that overlaps them (convert a TIFF to Zarr first when it is
processed more than once).

Memory is set by the chunk and halo sizes and the number of worker threads, not
by the volume. Measured by ``benchmarks/bench_outofcore.py`` (CPU, 3D, PSF 7 x 7
x 7, halo 14/12/12, 10 iterations; peak resident memory minus that of the
runtime after import, compilation included): a 54 MiB volume in 1 MiB chunks
(54 chunks) needs 332 MB with the synchronous scheduler (431 MB with 2 threads),
and 354 MB for half the volume; in 4 MiB chunks 693 MB. Whole-volume
:func:`~jaxsr.deconv.richardson_lucy` needs 929 MB (450 MB for half the volume),
about 17 bytes per byte of volume. In time, the halo (3.9x the voxels of an
interior chunk here) made the chunked run 1.8x slower than the whole-volume call
once compiled, with 2 threads on 2 cores.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import math
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import check_choice, check_int, check_psf, real_float
from jaxsr.forward import _fast_len
from jaxsr.io.atomic import _fsync_dir, _remove, as_path, atomic_path

__all__ = [
    "ChunkedResult",
    "chunk_depth",
    "map_chunks",
    "richardson_lucy_dask",
    "deconvolve_chunked",
]

logger = logging.getLogger(__name__)
# The module (jaxsr.deconv re-exports the function under the same name): the chunk kernel reuses its pieces.
_rl = importlib.import_module("jaxsr.deconv.richardson_lucy")

_INSTALL_HINT = "pip install jaxsr[dask]"
# "auto" halo, in PSF widths (FWHM) per axis (see the module docstring for the measured seam error).
_AUTO_WIDTHS = 5
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_TIFF_SUFFIXES = (".tif", ".tiff")
_SCHEDULERS = ("threads", "synchronous")
# Default chunk size (elements) for inputs without a chunking of their own (TIFF, NumPy): 2^21 float32
# values (8 MiB, 128^3), whose RL work arrays (padded grid, OTF, ratio, ...) stay around 100-200 MB.
_DEFAULT_CHUNK_ELEMENTS = 2**21


# --------------------------------------------------------------------------- #
# Optional dependencies
# --------------------------------------------------------------------------- #
def _import_dask():
    try:
        import dask
        import dask.array as da
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f"jaxsr.parallel.outofcore needs dask: {_INSTALL_HINT} (import failed: {err})"
        ) from err
    return dask, da


def _import_zarr():
    try:
        import zarr
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f"jaxsr.parallel.outofcore needs zarr for Zarr and TIFF files: {_INSTALL_HINT} (import failed: {err})"
        ) from err
    return zarr


# --------------------------------------------------------------------------- #
# Halo
# --------------------------------------------------------------------------- #
def _psf_array(psf: Any, ndim: int | None = None) -> np.ndarray:
    if hasattr(psf, "dask") or callable(psf):
        raise TypeError(f"argument 'psf': expected a numeric array, got {type(psf).__name__}")
    try:
        arr = np.asarray(psf)
    except Exception as err:  # noqa: BLE001 - re-raised with a clear message
        raise TypeError(f"argument 'psf': expected a numeric array, got {type(psf).__name__}") from err
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"argument 'psf': expected a real numeric array, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"argument 'psf': expected 2 or 3 dimensions, got shape {arr.shape}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(
            f"argument 'psf': a {arr.ndim}D psf needs a {arr.ndim}D source (same number of axes), "
            f"got a {ndim}D source"
        )
    check_psf(arr, "psf")
    return arr.astype(np.float32)


def _psf_radius(psf: np.ndarray) -> tuple[int, ...]:
    """Per axis: the largest distance of a non-zero PSF value from the centre index ``n // 2``."""
    radius = []
    for axis, n in enumerate(psf.shape):
        other = tuple(a for a in range(psf.ndim) if a != axis)
        idx = np.flatnonzero(np.any(psf != 0, axis=other))
        c = n // 2
        radius.append(int(max(c - idx.min(), idx.max() - c)))
    return tuple(radius)


def _psf_fwhm(psf: np.ndarray) -> tuple[float, ...]:
    """Per axis: ``2 sqrt(2 ln 2)`` times the RMS width (second central moment) of the PSF, in pixels."""
    p = psf.astype(np.float64) / float(psf.sum())
    fwhm = []
    for axis, n in enumerate(psf.shape):
        other = tuple(a for a in range(psf.ndim) if a != axis)
        marginal = p.sum(axis=other)
        k = np.arange(n, dtype=np.float64)
        mean = float(np.sum(k * marginal))
        fwhm.append(_FWHM_PER_SIGMA * math.sqrt(max(float(np.sum((k - mean) ** 2 * marginal)), 0.0)))
    return tuple(fwhm)


def chunk_depth(psf: Any, *, num_iter: int = 50, depth: Any = "auto") -> tuple[int, ...]:
    """The halo, per axis in pixels, that :func:`deconvolve_chunked` adds around every chunk.

    With ``r`` the PSF radius along an axis (the largest distance, in pixels, of a
    non-zero PSF value from its centre index ``n // 2``; ``n // 2`` for a PSF
    without zero borders):

    * ``"exact"``: ``num_iter * 2 * r``, the reach of ``num_iter`` RL iterations,
      so the chunked result equals whole-volume RL up to round-off;
    * ``"auto"``: ``ceil(5 * FWHM)``, five PSF widths, with ``FWHM = 2.355 x``
      the RMS width (second central moment) of the PSF along the axis, capped
      at the exact halo; seam error below 1.5e-4 of the image maximum up to 50
      iterations in the module docstring's measurements;
    * an int ``>= 0``: that many pixels on every axis; a sequence of ints: one per axis.

    Args:
        psf: ``(y, x)`` or ``(z, y, x)`` non-negative PSF with a positive sum,
            centre at index ``n // 2``.
        num_iter: number of RL iterations (>= 1).
        depth: ``"auto"`` (default), ``"exact"``, an int or a sequence of ints.

    Returns:
        The halo per axis, a tuple of ``psf.ndim`` ints (pixels).

    Raises:
        ValueError: ``depth`` an unknown string, negative, or of the wrong length;
            ``psf`` not 2D/3D, negative, non-finite or with a zero sum; ``num_iter`` < 1.
        TypeError: ``depth`` neither a string nor int(s); non-int ``num_iter``.

    >>> import numpy as np
    >>> g = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    >>> psf = np.outer(g, g)  # sigma 1.5 px: FWHM 3.5 px; 9 x 9 support: radius 4 px
    >>> chunk_depth(psf, num_iter=10), chunk_depth(psf, num_iter=10, depth="exact")
    ((18, 18), (80, 80))
    >>> chunk_depth(psf, num_iter=2)  # "auto" never exceeds the exact halo
    (16, 16)
    """
    psf = _psf_array(psf)
    num_iter = check_int(num_iter, "num_iter", minimum=1)
    return _depth_from(depth, psf, num_iter)


def _depth_from(depth: Any, psf: np.ndarray, num_iter: int) -> tuple[int, ...]:
    nd = psf.ndim
    exact = tuple(num_iter * 2 * r for r in _psf_radius(psf))
    if isinstance(depth, str):
        check_choice(depth, "depth", ["auto", "exact"])
        if depth == "exact":
            return exact
        return tuple(min(math.ceil(_AUTO_WIDTHS * w - 1e-9), e) for w, e in zip(_psf_fwhm(psf), exact))
    return _int_tuple(depth, "depth", nd, minimum=0, extra="'auto', 'exact', ")


def _int_tuple(value: Any, name: str, nd: int, *, minimum: int, extra: str = "") -> tuple[int, ...]:
    """An int (every axis) or a sequence of ``nd`` ints, each ``>= minimum``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        items: tuple = (value,) * nd
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        items = tuple(value)
    else:
        raise TypeError(f"argument '{name}': expected {extra}an int or a sequence of {nd} ints, got {value!r}")
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"argument '{name}': expected {extra}an int or a sequence of {nd} ints, got {value!r}")
    if len(items) != nd:
        raise ValueError(f"argument '{name}': expected {nd} values (one per axis), got {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"argument '{name}': every value must be >= {minimum}, got {value!r}")
    return tuple(int(v) for v in items)


# --------------------------------------------------------------------------- #
# Generic driver
# --------------------------------------------------------------------------- #
def _as_dask(array: Any, name: str, chunks: Any = None):
    """A dask array from a dask, Zarr or NumPy array (``chunks`` only for NumPy input)."""
    _, da = _import_dask()
    if isinstance(array, da.Array):
        return array
    if type(array).__module__.startswith("zarr"):
        return da.from_zarr(array)
    try:
        arr = np.asarray(array)
    except Exception as err:  # noqa: BLE001 - re-raised with a clear message
        raise TypeError(f"argument '{name}': expected an array, got {type(array).__name__}") from err
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"argument '{name}': expected a real numeric array, got dtype {arr.dtype}")
    return da.from_array(arr, chunks=chunks if chunks is not None else "auto")


def _normalise_chunks(x, chunks: Any):
    """Rechunk ``x`` to ``chunks`` (an int or one per axis, clipped to the shape); None keeps its chunks."""
    if chunks is None:
        return x
    sizes = _int_tuple(chunks, "chunks", x.ndim, minimum=1)
    sizes = tuple(min(c, n) for c, n in zip(sizes, x.shape))
    return x.rechunk(sizes)


def _default_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Dask's "auto" chunking with a limit of ``_DEFAULT_CHUNK_ELEMENTS`` float32 values."""
    _import_dask()
    from dask.array.core import normalize_chunks

    normal = normalize_chunks("auto", shape, limit=_DEFAULT_CHUNK_ELEMENTS * 4, dtype=np.dtype("float32"))
    return tuple(c[0] for c in normal)


def _processing_chunks(x, depth: tuple[int, ...]):
    """Clip the halo to the array and merge chunks smaller than it (Dask takes halos from neighbours only)."""
    from dask.array.overlap import ensure_minimum_chunksize

    depth = tuple(min(d, n) for d, n in zip(depth, x.shape))
    merged = tuple(
        ensure_minimum_chunksize(d, c) if d > 0 and len(c) > 1 else c for d, c in zip(depth, x.chunks)
    )
    return depth, merged


def _block_shapes(chunks: tuple[tuple[int, ...], ...], depth: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Distinct shapes of the chunks with their halos (no halo beyond the volume's edges)."""
    per_axis = []
    for c, d in zip(chunks, depth):
        sizes = {n + (d if i > 0 else 0) + (d if i < len(c) - 1 else 0) for i, n in enumerate(c)}
        per_axis.append(sorted(sizes))
    shapes = [()]
    for sizes in per_axis:
        shapes = [s + (n,) for s in shapes for n in sizes]
    return shapes


def map_chunks(fn: Callable[[np.ndarray], np.ndarray], array: Any, *, depth: Any, chunks: Any = None,
               dtype: Any = np.float32):
    """Apply ``fn`` to every chunk of ``array`` with a halo of ``depth`` pixels; lazy (Dask).

    A thin layer over :func:`dask.array.map_overlap` with ``boundary="none"``:
    each call of ``fn`` receives a NumPy block, the chunk extended by ``depth``
    pixels on every side that has a neighbour (none beyond the array's edges, so
    blocks at the edges are smaller), and returns an array of the block's shape;
    the halo is trimmed from the result. A halo larger than a chunk makes Dask
    merge neighbouring chunks until every chunk is at least as large as the halo;
    the result is then split back to the requested chunks. Nothing is computed
    until the result is (``.compute()``, :func:`dask.array.store`, ``to_zarr``).

    Args:
        fn: ``fn(block) -> block``, a NumPy array in and one of the same shape out.
        array: the input, ``(..., y, x)``: a dask array, a Zarr array or an array-like.
        depth: halo in pixels: an int (every axis) or one int per axis (>= 0);
            clipped to the array's size.
        chunks: chunk size, an int or one int per axis; default: the input's
            chunking (a dask or Zarr array) or Dask's ``"auto"`` chunking.
        dtype: dtype of ``fn``'s output (default float32).

    Returns:
        A dask array of ``array``'s shape, chunked as requested.

    Raises:
        ValueError: ``depth`` or ``chunks`` negative/zero or of the wrong length.
        TypeError: ``fn`` not callable, ``depth``/``chunks`` not ints, non-numeric ``array``.
        ImportError: dask is not installed (``pip install jaxsr[dask]``).

    >>> import numpy as np
    >>> x = np.arange(48.0).reshape(6, 8)
    >>> out = map_chunks(lambda b: 2 * b, x, depth=1, chunks=(3, 4))
    >>> out.chunks, bool(np.array_equal(out.compute(), 2 * x))
    (((3, 3), (4, 4)), True)
    """
    if not callable(fn):
        raise TypeError(f"argument 'fn': expected a callable, got {type(fn).__name__}")
    _, da = _import_dask()
    x = _as_dask(array, "array")
    depth = _int_tuple(depth, "depth", x.ndim, minimum=0)
    x = _normalise_chunks(x, chunks)
    target = x.chunks
    depth, merged = _processing_chunks(x, depth)
    if merged != target:
        x = x.rechunk(merged)
    dtype = np.dtype(dtype)
    out = da.map_overlap(
        fn, x, depth=dict(enumerate(depth)), boundary="none", trim=True, allow_rechunk=False,
        dtype=dtype, meta=np.empty((0,) * x.ndim, dtype),
    )
    if out.chunks != target:
        out = out.rechunk(target)
    return out


# --------------------------------------------------------------------------- #
# Richardson-Lucy on one chunk
# --------------------------------------------------------------------------- #
def _rl_config(spatial: tuple[int, ...], psf_shape: tuple[int, ...], num_iter: int) -> Any:
    """The configuration :func:`jaxsr.deconv.richardson_lucy` builds for plain, fixed-count, pad-boundary RL."""
    return _rl._Config(
        nd=len(spatial), boundary="pad", accelerate=False, use_tv=False, stop=None, tol=0.0, blur=False,
        need_stats=False, keep_history=False, num_iter=num_iter, spatial=spatial,
        grid=tuple(_fast_len(n + k - 1) for n, k in zip(spatial, psf_shape)),
        offset=tuple(k - 1 - k // 2 for k in psf_shape), batched=False, bg_scalar=True,
    )


@functools.partial(jax.jit, static_argnames=("cfg",))
def _rl_block(block: jax.Array, psf: jax.Array, background: jax.Array, c0: jax.Array, floor: jax.Array, cfg):
    """Plain pad-boundary RL of one block, as in ``richardson_lucy``, with the whole volume's start and floor."""
    data = jnp.maximum(block, 0.0)
    shared = _rl._shared(psf, cfg)
    consts = dict(_rl._item_consts(data, background, cfg))
    consts["c0"] = c0
    consts["floor"] = floor
    state = _rl._init_state(consts, shared, None, cfg)
    state = _rl._advance(state, consts, shared, jnp.zeros((), data.dtype), cfg.num_iter, cfg)
    return _rl._finish(state, cfg)[0]


class _Stats(NamedTuple):
    c0: float
    floor: float


def _global_stats(x, background: float, **compute_kwargs) -> _Stats:
    """The whole image's flat start and likelihood floor, as richardson_lucy computes them, in one pass."""
    dask, da = _import_dask()
    data = da.maximum(x.astype(np.float32), 0.0)
    mean_d, c0 = dask.compute(
        data.mean(dtype=np.float64), da.maximum(data - np.float32(background), 0.0).mean(dtype=np.float64),
        **compute_kwargs,
    )
    mean_d, c0 = float(mean_d), float(c0)
    if not (math.isfinite(mean_d) and math.isfinite(c0)):
        raise ValueError("argument 'source': contains NaN or infinite values")
    return _Stats(c0=c0, floor=_rl._FLOOR_REL * mean_d + 1e-12)


def _make_block_fn(psf: np.ndarray, *, num_iter: int, background: float, stats: _Stats):
    psf_dev = jnp.asarray(psf, jnp.float32)
    scalars = tuple(jnp.asarray(v, jnp.float32) for v in (background, stats.c0, stats.floor))

    def block_fn(block: np.ndarray) -> np.ndarray:
        data = np.asarray(block, dtype=np.float32)
        if not np.all(np.isfinite(data)):
            raise ValueError(f"argument 'source': contains NaN or infinite values (in a chunk of shape {data.shape})")
        cfg = _rl_config(tuple(int(n) for n in data.shape), tuple(psf.shape), num_iter)
        return np.asarray(_rl_block(jnp.asarray(data), psf_dev, *scalars, cfg=cfg))

    return block_fn


def _check_background(background: Any) -> float:
    if isinstance(background, (np.ndarray, jax.Array)) and np.ndim(background) != 0:
        raise ValueError(
            f"argument 'background': out-of-core RL takes a scalar background, got shape {np.shape(background)}"
        )
    value = real_float(background, "background", "a non-negative number")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"argument 'background': must be finite and non-negative, got {background!r}")
    return value


def richardson_lucy_dask(image: Any, psf: Any, *, num_iter: int = 50, background: Any = 0.0, depth: Any = "auto",
                         chunks: Any = None, scheduler: str = "threads", num_workers: int | None = None):
    """Richardson-Lucy deconvolution chunk by chunk, as a lazy dask array.

    The chunked counterpart of :func:`jaxsr.deconv.richardson_lucy` with
    ``boundary="pad"``: every chunk plus its halo (see :func:`chunk_depth`) is
    deconvolved by the same jitted kernel with the whole image's flat start and
    likelihood floor. The image is read once, now, for those two numbers (a
    streamed mean); the deconvolution runs when the result is computed or stored
    (see :func:`deconvolve_chunked` to stream it to a file).

    Args:
        image: ``(y, x)`` or ``(z, y, x)`` photon counts: a dask array, a Zarr
            array or an array-like; negative values are clipped to 0.
        psf: ``(y, x)`` or ``(z, y, x)`` non-negative PSF (as many axes as ``image``),
            centre at index ``n // 2``; normalised to unit sum.
        num_iter: RL iterations (>= 1).
        background: expected background photons per pixel, a scalar >= 0.
        depth: halo: ``"auto"`` (5 PSF widths), ``"exact"`` (``num_iter * 2 *``
            radius: equal to whole-image RL up to round-off), or int(s) in pixels.
        chunks: chunk size, an int or one per axis; default: the input's own
            chunking (dask/Zarr), else Dask's ``"auto"`` chunking limited to 2^21
            elements per chunk.
        scheduler: Dask scheduler of the pass that computes the global mean:
            ``"threads"`` (default) or ``"synchronous"``.
        num_workers: threads of that pass (default: Dask's, one per core).

    Returns:
        A float32 dask array of ``image``'s shape (photons per pixel).

    Raises:
        ValueError: bad ``psf`` (wrong number of axes, negative, zero sum), ``depth``,
            ``chunks``, ``background`` or ``num_iter``; NaN/inf in ``image``.
        TypeError: arguments of the wrong type.
        ImportError: dask is not installed (``pip install jaxsr[dask]``).

    >>> import numpy as np
    >>> from jaxsr.deconv import richardson_lucy
    >>> psf = np.ones((3, 3)) / 9.0
    >>> image = np.random.default_rng(0).poisson(20.0, (32, 32)).astype(np.float32)
    >>> lazy = richardson_lucy_dask(image, psf, num_iter=5, depth="exact", chunks=16)
    >>> whole = np.asarray(richardson_lucy(image, psf, num_iter=5))
    >>> bool(np.abs(lazy.compute() - whole).max() < 1e-4 * whole.max())
    True
    """
    num_iter = check_int(num_iter, "num_iter", minimum=1)
    background = _check_background(background)
    check_choice(scheduler, "scheduler", _SCHEDULERS)
    if num_workers is not None:
        num_workers = check_int(num_workers, "num_workers", minimum=1)
    x = _as_dask(image, "image")
    if x.ndim not in (2, 3):
        raise ValueError(f"argument 'image': expected 2 or 3 dimensions, got shape {x.shape}")
    if 0 in x.shape:
        raise ValueError(f"argument 'image': is empty, got shape {x.shape}")
    psf = _psf_array(psf, x.ndim)
    halo = _depth_from(depth, psf, num_iter)
    if chunks is None and x.npartitions == 1 and x.size > _DEFAULT_CHUNK_ELEMENTS:
        chunks = _default_chunks(x.shape)
    compute_kwargs = {"scheduler": scheduler}
    if num_workers is not None:
        compute_kwargs["num_workers"] = num_workers
    stats = _global_stats(x, background, **compute_kwargs)
    block_fn = _make_block_fn(psf, num_iter=num_iter, background=background, stats=stats)
    return map_chunks(block_fn, x, depth=halo, chunks=chunks, dtype=np.float32)


# --------------------------------------------------------------------------- #
# Files
# --------------------------------------------------------------------------- #
class ChunkedResult(NamedTuple):
    """What :func:`deconvolve_chunked` did.

    Attributes:
        destination: the output written (Zarr directory or TIFF file).
        shape: the image's shape.
        chunks: output chunk size per axis (the Zarr chunks; the last chunk may be shorter).
        depth: halo per axis in pixels, after clipping to the image.
        num_chunks: number of chunks processed (after merging chunks smaller than the halo).
        block_shapes: the distinct shapes of chunk plus halo; the kernel is
            compiled once for each.
    """

    destination: Path
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    depth: tuple[int, ...]
    num_chunks: int
    block_shapes: list[tuple[int, ...]]


def _is_tiff(path: Path) -> bool:
    return path.name.lower().endswith(_TIFF_SUFFIXES)


def _zarr_store_path(array: Any) -> Path | None:
    """The local directory of a Zarr array's store, if it has one."""
    store = getattr(array, "store", None)
    root = getattr(store, "root", None)
    if root is None:
        return None
    try:
        return Path(os.fspath(root))
    except TypeError:
        return None


@contextlib.contextmanager
def _open_source(source: Any):
    """Yield ``(dask array, path or None)`` for a path, Zarr array, dask array or array-like."""
    dask, da = _import_dask()
    if isinstance(source, (str, os.PathLike)):
        path = as_path(source, "source")
        if not os.path.exists(path):
            raise FileNotFoundError(f"argument 'source': '{path}' does not exist")
        zarr = _import_zarr()
        if _is_tiff(path):
            import tifffile

            store = tifffile.imread(os.fspath(path), aszarr=True, series=0, level=0)
            try:
                arr = zarr.open_array(store, mode="r")
                yield da.from_zarr(arr), path
            finally:
                store.close()
            return
        try:
            arr = zarr.open_array(os.fspath(path), mode="r")
        except Exception as err:  # noqa: BLE001 - re-raised with a clear message
            raise ValueError(
                f"argument 'source': '{path}' is not a Zarr array (or a .tif/.tiff file): {err}"
            ) from err
        yield da.from_zarr(arr), path
        return
    if isinstance(source, da.Array):
        yield source, None
        return
    if type(source).__module__.startswith("zarr"):
        yield da.from_zarr(source), _zarr_store_path(source)
        return
    yield _as_dask(source, "source"), None


def _check_destination(destination: Any, source_path: Path | None, overwrite: bool) -> Path:
    target = as_path(destination, "destination")
    if source_path is not None:
        src = source_path.resolve()
        dst = target.resolve()
        if dst == src or dst in src.parents or src in dst.parents:
            raise ValueError(
                f"argument 'destination': '{target}' is the source, inside it or contains it; "
                "the input is never written to: choose another path"
            )
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"argument 'destination': directory '{target.parent}' does not exist (it is not created automatically)"
        )
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(
            f"argument 'destination': '{target}' already exists; pass overwrite=True to replace it"
        )
    return target


def _swap_into_place(tmp: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished temporary directory onto ``target`` (the old one removed only afterwards)."""
    old = None
    if os.path.lexists(target):
        if not overwrite:
            raise FileExistsError(
                f"argument 'destination': '{target}' already exists; pass overwrite=True to replace it"
            )
        old = target.parent / f".{target.name}.old-{secrets.token_hex(6)}"
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    _fsync_dir(target.parent)
    if old is not None:
        _remove(old)


def _write_zarr(out, target: Path, chunks: tuple[int, ...], attrs: dict, overwrite: bool, compute_kwargs: dict):
    zarr = _import_zarr()
    _, da = _import_dask()
    tmp = target.parent / f".{target.name}.tmp-{secrets.token_hex(6)}"
    try:
        arr = zarr.create_array(store=os.fspath(tmp), shape=out.shape, chunks=chunks, dtype="float32",
                                fill_value=0.0, attributes=attrs)
        da.store(out, arr, lock=False, **compute_kwargs)
        _swap_into_place(tmp, target, overwrite)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _tiff_calibration(path: Path) -> tuple[float | None, float | None]:
    """Pixel size and z step (nm) of a TIFF's first series, from its metadata only (no pixel data read)."""
    import tifffile

    from jaxsr.io import tiff as _tiff

    extra: dict[str, Any] = {}
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome and tif.ome_metadata:
                pixel, _, z_step, _ = _tiff._ome_metadata(tif.ome_metadata, extra)
            elif tif.is_imagej:
                pixel, _, z_step = _tiff._imagej_metadata(tif, tif.pages.first, extra)
            else:
                return None, None
    except Exception:  # noqa: BLE001 - calibration is optional; unreadable metadata means none
        return None, None
    return pixel, z_step


# TIFF outputs from this size up are written as BigTIFF with OME-XML (ImageJ TIFF is limited to 4 GB).
IMAGEJ_MAX_BYTES = 2**32 - 2**25


def _write_tiff(out, target: Path, overwrite: bool, compute_kwargs: dict, pixel_size_nm: float | None,
                z_step_nm: float | None):
    """Stream chunks into a memory-mapped (uncompressed, contiguous) TIFF written atomically."""
    import tifffile

    from jaxsr.io import tiff as _tiff

    _, da = _import_dask()
    nbytes = math.prod(out.shape) * 4
    axes = "ZYX" if out.ndim == 3 else "YX"
    z_step_nm = z_step_nm if out.ndim == 3 else None
    options: dict[str, Any] = {"photometric": "minisblack"}
    metadata: dict[str, Any] = {"axes": axes}
    if nbytes < IMAGEJ_MAX_BYTES:
        options["imagej"] = True
        # ImageJ calibration, as jaxsr.io.write_image writes it (a z step alone leaves x and y uncalibrated)
        metadata.update(_tiff._imagej_calibration(pixel_size_nm, z_step_nm))
        if pixel_size_nm is not None:
            options["resolution"] = (1e3 / pixel_size_nm, 1e3 / pixel_size_nm)
    else:  # ImageJ TIFF cannot hold it: BigTIFF with OME-XML, which carries the calibration in nm
        options.update(bigtiff=True, ome=True)
        for name, value in (("X", pixel_size_nm), ("Y", pixel_size_nm), ("Z", z_step_nm)):
            if value is not None:
                metadata[f"PhysicalSize{name}"] = value
                metadata[f"PhysicalSize{name}Unit"] = "nm"
    options["metadata"] = metadata
    with atomic_path(target, overwrite=overwrite) as tmp:
        mm = tifffile.memmap(os.fspath(tmp), shape=out.shape, dtype=np.float32, **options)
        try:
            da.store(out, mm, lock=False, **compute_kwargs)
            mm.flush()
        finally:
            del mm


def deconvolve_chunked(source: Any, destination: str | os.PathLike, psf: Any, *, num_iter: int = 50,
                       background: Any = 0.0, depth: Any = "auto", chunks: Any = None, overwrite: bool = False,
                       scheduler: str = "threads", num_workers: int | None = None,
                       pixel_size_nm: float | None = None, z_step_nm: float | None = None) -> ChunkedResult:
    """Richardson-Lucy deconvolution of an image larger than memory, chunk by chunk, file to file.

    Reads ``source`` lazily, deconvolves every chunk with a halo (see the module
    docstring and :func:`chunk_depth`) with the jitted kernel of
    :func:`jaxsr.deconv.richardson_lucy` (``boundary="pad"``), and streams the
    chunks to ``destination``. Memory holds a few chunks at a time (one per
    worker thread, with halos and RL work arrays), never the whole image.

    Inputs: a Zarr array (path or ``zarr.Array``), a TIFF file (``.tif``/``.tiff``,
    read page- or tile-wise through tifffile's Zarr store, first series, full
    resolution), a dask array, or an in-memory array. Outputs, chosen by the
    suffix: ``.tif``/``.tiff`` writes an uncompressed float32 TIFF (ImageJ axes
    ``YX``/``ZYX``; BigTIFF with OME-XML above 4 GB) through a memory map; anything else a
    Zarr v3 array (float32, chunked as processed, attributes under ``"jaxsr"``:
    method, iterations, background, halo, PSF shape, version, calibration). The
    pixel size and z step of a TIFF source (OME or ImageJ metadata) are carried
    over to the output unless given.

    Writing is atomic: everything goes to a hidden temporary sibling of
    ``destination``, renamed onto it only when complete; an error leaves no output
    and any existing ``destination`` untouched. An existing ``destination`` is
    replaced only with ``overwrite=True``, and never when it is the source, inside
    it or contains it.

    Args:
        source: ``(y, x)`` or ``(z, y, x)`` photon counts (see Inputs).
        destination: output path, a Zarr directory or a ``.tif``/``.tiff`` file;
            its parent directory must exist.
        psf: ``(y, x)`` or ``(z, y, x)`` non-negative PSF, as many axes as the
            source, centre at index ``n // 2``; normalised to unit sum.
        num_iter: RL iterations (>= 1).
        background: expected background photons per pixel, a scalar >= 0.
        depth: halo: ``"auto"`` (default, 5 PSF widths (FWHM) per axis, seam
            error below 1.5e-4 of the maximum), ``"exact"`` (``num_iter * 2 *`` radius, equal to
            whole-image RL up to round-off), an int or one int per axis (pixels).
        chunks: chunk size, an int or one per axis; default: the source's own
            chunking (Zarr, dask), else Dask's ``"auto"`` chunking limited to 2^21
            elements (TIFF pages are merged into chunks of that size).
        overwrite: replace an existing ``destination``. Default ``False``.
        scheduler: ``"threads"`` (default; chunks in parallel threads, each
            calling the jitted kernel) or ``"synchronous"`` (one chunk at a time,
            least memory, easiest to debug).
        num_workers: threads with ``scheduler="threads"`` (default: one per core).
        pixel_size_nm: lateral pixel size (nm) to record in the output; default:
            the TIFF source's, else none.
        z_step_nm: axial step (nm) to record in the output; default as ``pixel_size_nm``.

    Returns:
        A :class:`ChunkedResult` (destination, shape, chunks, halo, number of
        chunks, shapes compiled).

    Raises:
        ValueError: ``destination`` is the source (or inside it, or contains it);
            a source that is neither Zarr nor TIFF; bad ``psf``, ``depth``,
            ``chunks``, ``background``, ``num_iter`` or ``scheduler``; NaN/inf
            in the source.
        FileExistsError: ``destination`` exists and ``overwrite`` is ``False``.
        FileNotFoundError: ``source`` or the directory of ``destination`` does not exist.
        TypeError: arguments of the wrong type.
        ImportError: dask or zarr is not installed (``pip install jaxsr[dask]``).

    >>> import os, shutil, tempfile
    >>> import numpy as np, zarr
    >>> folder = tempfile.mkdtemp()
    >>> src = zarr.create_array(os.path.join(folder, "in.zarr"), shape=(40, 40), chunks=(20, 20), dtype="float32")
    >>> src[:] = np.random.default_rng(0).poisson(30.0, (40, 40))
    >>> psf = np.ones((3, 3)) / 9.0
    >>> res = deconvolve_chunked(os.path.join(folder, "in.zarr"), os.path.join(folder, "out.zarr"), psf, num_iter=5)
    >>> res.chunks, res.depth, res.num_chunks  # depth: 5 FWHM of the 3 x 3 box, capped at 5 x 2 x 1
    ((20, 20), (10, 10), 4)
    >>> zarr.open_array(os.path.join(folder, "out.zarr")).shape
    (40, 40)
    >>> shutil.rmtree(folder)
    """
    num_iter = check_int(num_iter, "num_iter", minimum=1)
    background = _check_background(background)
    check_choice(scheduler, "scheduler", _SCHEDULERS)
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"argument 'overwrite': expected a bool, got {type(overwrite).__name__}")
    if num_workers is not None:
        num_workers = check_int(num_workers, "num_workers", minimum=1)
    compute_kwargs: dict[str, Any] = {"scheduler": scheduler}
    if num_workers is not None:
        compute_kwargs["num_workers"] = num_workers

    from jaxsr.io.tiff import _as_length_nm

    pixel_size_nm = _as_length_nm(pixel_size_nm, "pixel_size_nm")
    z_step_nm = _as_length_nm(z_step_nm, "z_step_nm")
    with _open_source(source) as (x, source_path):
        target = _check_destination(destination, source_path, bool(overwrite))
        if source_path is not None and _is_tiff(source_path) and (pixel_size_nm is None or z_step_nm is None):
            pixel_src, z_src = _tiff_calibration(source_path)
            pixel_size_nm = pixel_size_nm if pixel_size_nm is not None else pixel_src
            z_step_nm = z_step_nm if z_step_nm is not None else z_src
        if x.ndim not in (2, 3):
            raise ValueError(f"argument 'source': expected 2 or 3 dimensions, got shape {x.shape}")
        if 0 in x.shape:
            raise ValueError(f"argument 'source': is empty, got shape {x.shape}")
        psf_arr = _psf_array(psf, x.ndim)
        halo = _depth_from(depth, psf_arr, num_iter)
        if chunks is not None:
            chunk_sizes = tuple(min(c, n) for c, n in zip(_int_tuple(chunks, "chunks", x.ndim, minimum=1), x.shape))
        elif (source_path is not None and _is_tiff(source_path)) \
                or (x.npartitions == 1 and x.size > _DEFAULT_CHUNK_ELEMENTS):
            chunk_sizes = _default_chunks(x.shape)
        else:
            chunk_sizes = tuple(c[0] for c in x.chunks)
        out = richardson_lucy_dask(x, psf_arr, num_iter=num_iter, background=background, depth=halo,
                                   chunks=chunk_sizes, **compute_kwargs)
        clipped, merged = _processing_chunks(x.rechunk(chunk_sizes), halo)
        shapes = _block_shapes(merged, clipped)
        num_chunks = math.prod(len(c) for c in merged)
        logger.info("deconvolve_chunked: shape %s, chunks %s, halo %s, %d chunks, %d block shapes",
                    x.shape, chunk_sizes, clipped, num_chunks, len(shapes))
        attrs = {"jaxsr": {
            "method": "richardson_lucy", "boundary": "pad", "num_iter": num_iter, "background": background,
            "depth": list(clipped), "psf_shape": list(psf_arr.shape), "version": _version(),
            "pixel_size_nm": pixel_size_nm, "z_step_nm": z_step_nm,
        }}
        if _is_tiff(target):
            _write_tiff(out, target, bool(overwrite), compute_kwargs, pixel_size_nm, z_step_nm)
        else:
            _write_zarr(out, target, chunk_sizes, attrs, bool(overwrite), compute_kwargs)
    return ChunkedResult(destination=target, shape=tuple(int(n) for n in x.shape), chunks=chunk_sizes,
                         depth=clipped, num_chunks=num_chunks, block_shapes=shapes)


def _version() -> str:
    from jaxsr._version import __version__

    return __version__
