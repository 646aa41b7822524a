"""Drift correction (lateral, and axial for 3D tables) of localization tables by redundant cross-correlation (RCC).

The stage drifts by tens to hundreds of nm over an SMLM acquisition (minutes to
hours), which blurs the rendered image far beyond the localization precision.
Without fiducials, the drift is read off the localizations themselves (Wang et
al. 2014): the frames are cut into ``S`` segments of consecutive frames, each
segment rendered as an image, and **every pair** of segments cross-correlated
(not only each against the first): the peak of the cross-correlation of
segments ``i`` and ``j`` gives ``r_ij ~ d_j - d_i``, the drift of ``j``
relative to ``i``. The ``S (S - 1) / 2`` pair shifts over-determine the ``S``
segment drifts, which are solved by least squares (``d_0 = 0``); pairs whose
residual is far from the rest (a weak or wrong correlation peak) are dropped
one at a time, worst first, and the drifts solved again. A cubic spline through
the segment drifts (placed at each segment's mean localization frame) gives
the drift of every frame.

Conventions: positions in nm, ``x`` along image columns, ``y`` along rows; a
localization of frame ``f`` was recorded at ``true + drift[f]``, so
:func:`correct_drift` subtracts ``drift[f]``; ``drift[0] = 0``, so the
corrected table stays in the coordinates of the first frame.

Axial drift (3D tables with a finite ``z_nm`` column): once the lateral drift is
removed, each segment is binned into lateral voxels (a few render pixels wide)
by ``z`` bins, and every pair of segments is correlated along ``z`` only, summed
over the lateral voxels: ``c_ij(s) = sum_{v, z} h_i(v, z) h_j(v, z + s)``, the
3D cross-correlation at zero lateral shift, whose peak gives the ``z`` drift of
``j`` relative to ``i``. It is computed in Fourier space along ``z`` (the
spectra's Gram matrices over the voxels, all pairs at once), interpolated on a
grid ``upsample`` times finer by zero-padding the spectrum, refined by a
parabola, and solved over the pairs like the lateral drift.

Numerics: segments are rendered as histograms on a padded grid (``pixel_size_nm``),
their real FFTs kept, and each pair's cross-power spectrum blurred by a
Gaussian (``blur_nm`` on each image, so the peak is smooth); the integer peak
within ``max_drift_nm`` is refined on a grid ``upsample`` times finer by a
matrix-product DFT of the cross-power spectrum in a 1.5-pixel window around it
(Guizar-Sicairos et al. 2008, as ``skimage.registration.phase_cross_correlation``
with ``normalization=None``), then by a parabola through the finest grid's
peak and its neighbours.

References:
    Y. Wang et al., "Localization events-based sample drift correction for localization
    microscopy with redundant cross-correlation algorithm", Opt. Express 22, 15982-15991 (2014).
    M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient subpixel image registration
    algorithms", Opt. Lett. 33, 156-158 (2008).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

from jaxsr._mapping import map_items
from jaxsr._validate import as_float_array, check_finite, check_int, default_float_dtype, positive_float
from jaxsr.smlm.localize import Localizations, column_getter

__all__ = ["DriftResult", "estimate_drift", "correct_drift", "pair_shift"]

# longest side of the rendered segments (pixels) when the pixel size is left to estimate_drift
_MAX_SIDE = 2048


class DriftResult(NamedTuple):
    """Result of :func:`estimate_drift`.

    With the axial drift (``D = 3``) the last column of ``drift_nm``, ``segment_drift_nm`` and
    ``pair_shift_nm`` is ``z``; lateral only, ``D = 2``.

    Attributes:
        drift_nm: ``(n_frames, D)`` drift ``(x, y[, z])`` in nm at frames ``0 .. n_frames - 1``
            (``drift_nm[0] = 0``).
        segment_frame: ``(S,)`` each segment's mean localization frame (where its drift is placed).
        segment_drift_nm: ``(S, D)`` the solved drift of each segment, nm, relative to frame 0.
        pairs: ``(K, 2)`` int, the segment pairs ``(i, j)``, ``i < j``, that were correlated.
        pair_shift_nm: ``(K, D)`` measured ``d_j - d_i``, nm.
        pair_residual_nm: ``(K,)`` length of each pair's lateral residual against the solved drifts, nm.
        kept: ``(K,)`` bool, pairs used in the final lateral solution.
        pixel_size_nm: the render pixel size used (nm).
        pair_residual_z_nm: ``(K,)`` absolute axial residual of each pair, nm (``None`` when lateral only).
        kept_z: ``(K,)`` bool, pairs used in the final axial solution (``None`` when lateral only).
    """

    drift_nm: np.ndarray
    segment_frame: np.ndarray
    segment_drift_nm: np.ndarray
    pairs: np.ndarray
    pair_shift_nm: np.ndarray
    pair_residual_nm: np.ndarray
    kept: np.ndarray
    pixel_size_nm: float
    pair_residual_z_nm: np.ndarray | None = None
    kept_z: np.ndarray | None = None


def _z_column(locs: Any, n: int, axial: bool | None) -> np.ndarray | None:
    """The ``z_nm`` column when the axial drift is wanted (``axial=True``) or available (``None``: a
    finite, non-constant ``z_nm`` column), else ``None``."""
    if axial is not None and not isinstance(axial, bool):
        raise TypeError(f"argument 'axial': expected True, False or None, got {axial!r}")
    if axial is False:
        return None
    try:
        z = np.asarray(column_getter(locs)("z_nm"), np.float64).reshape(-1)
    except KeyError:
        z = None
    usable = z is not None and len(z) == n and bool(np.all(np.isfinite(z))) and n > 0 and np.ptp(z) > 0
    if axial and not usable:
        what = "no z_nm column" if z is None else "a z_nm column that is not finite, of another length or constant"
        raise ValueError(f"argument 'axial': the axial drift needs finite z_nm positions; the table has {what}")
    return z if usable else None


def _table(locs: Any, name: str = "locs") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    get = column_getter(locs)
    try:
        frame = np.asarray(get("frame")).reshape(-1)
        x = np.asarray(get("x_nm"), np.float64).reshape(-1)
        y = np.asarray(get("y_nm"), np.float64).reshape(-1)
    except KeyError:
        raise ValueError(f"argument '{name}': needs columns frame, x_nm and y_nm") from None
    if not (len(frame) == len(x) == len(y)):
        raise ValueError(f"argument '{name}': columns frame, x_nm and y_nm differ in length")
    if frame.dtype.kind not in "iuf" or not np.all(np.isfinite(frame)) or np.any(frame < 0) or \
            np.any(frame != np.round(frame)):
        raise ValueError(f"argument '{name}': the frame column must hold non-negative integers")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"argument '{name}': x_nm and y_nm must be finite (drop NaN rows first)")
    return frame.astype(np.int64), x, y


def _segments(frame: np.ndarray, segment_frames: int, n_frames: int) -> np.ndarray:
    """Segment index of every localization: blocks of ``segment_frames`` frames, a last block shorter
    than half a segment merged into the one before."""
    n_seg = max(1, n_frames // segment_frames + (n_frames % segment_frames >= segment_frames / 2))
    return np.minimum(frame // segment_frames, n_seg - 1)


@functools.partial(jax.jit, static_argnames=("width", "radius", "upsample"))
def _pair_shift_spectra(fa, fb, transfer, *, width, radius, upsample):
    """Shift ``(dy, dx)`` (pixels) of image ``b`` relative to ``a`` from their real FFTs ``(H, W // 2 + 1)``:
    the cross-correlation ``sum_r a(r) b(r + s)`` peaks at ``s``."""
    h = fa.shape[0]
    x = jnp.conj(fa) * fb * transfer
    cc = jnp.fft.irfft2(x, s=(h, width))
    n = 2 * radius + 1
    offs = jnp.arange(-radius, radius + 1)
    win = cc[(offs % h)[:, None], (offs % width)[None, :]]
    k = jnp.argmax(win)
    sy, sx = (k // n - radius).astype(fa.real.dtype), (k % n - radius).astype(fa.real.dtype)
    # the cross-correlation on a grid `upsample` times finer, 1.5 pixels wide, around the integer peak
    m = int(math.ceil(1.5 * upsample))
    fine = (jnp.arange(m) - m // 2).astype(fa.real.dtype) / upsample
    ky = jnp.fft.fftfreq(h, 1.0 / h).astype(fa.real.dtype)
    lx = jnp.arange(x.shape[1]).astype(fa.real.dtype)
    wl = jnp.where((lx == 0) | (2 * lx == width), 1.0, 2.0)                 # the half spectrum counted twice
    ey = jnp.exp(2j * jnp.pi * (sy + fine)[:, None] * ky[None, :] / h)
    ex = wl[:, None] * jnp.exp(2j * jnp.pi * lx[:, None] * (sx + fine)[None, :] / width)
    up = jnp.real(ey @ x @ ex) / (h * width)
    k2 = jnp.argmax(up)
    iy, ix = k2 // m, k2 % m

    def vertex(c_minus, c0, c_plus):
        den = c_minus - 2.0 * c0 + c_plus
        return jnp.clip(jnp.where(den < 0, 0.5 * (c_minus - c_plus) / jnp.where(den < 0, den, -1.0), 0.0), -0.5, 0.5)

    jy, jx = jnp.clip(iy, 1, m - 2), jnp.clip(ix, 1, m - 2)
    vy = jnp.where(iy == jy, vertex(up[jy - 1, ix], up[jy, ix], up[jy + 1, ix]), 0.0)
    vx = jnp.where(ix == jx, vertex(up[iy, jx - 1], up[iy, jx], up[iy, jx + 1]), 0.0)
    dy = sy + (fine[iy] + vy / upsample)
    dx = sx + (fine[ix] + vx / upsample)
    return jnp.stack([dy, dx])


def _gaussian_transfer(shape: tuple[int, int], sigma_px: float, dtype) -> jax.Array:
    """``|G|^2`` of a Gaussian of ``sigma_px`` on the rfft2 grid of ``shape`` (both images blurred)."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return jnp.asarray(np.exp(-4.0 * np.pi**2 * sigma_px**2 * (fy**2 + fx**2)), dtype)


def pair_shift(a: Any, b: Any, *, max_shift_px: int | None = None, upsample: int = 20,
               blur_px: float = 0.0) -> jax.Array:
    """Sub-pixel shift of image ``b`` relative to image ``a`` by cross-correlation.

    Args:
        a, b: ``(y, x)`` images of one shape (e.g. rendered localizations).
        max_shift_px: largest shift searched, pixels (default: a quarter of the smaller side).
            The images are correlated circularly: pad them by this much for a linear correlation.
        upsample: the peak is located on a grid this many times finer than a pixel, then by a parabola.
        blur_px: Gaussian smoothing (s.d., pixels) of each image before correlating.

    Returns:
        ``(2,)`` shift ``(dy, dx)`` in pixels: ``b(r) ~ a(r - shift)``; float32 (float64 for float64 input).

    >>> import numpy as np
    >>> a = np.zeros((32, 32)); a[10, 12] = 1.0; a[20, 5] = 2.0
    >>> b = np.roll(a, (3, -2), axis=(0, 1))
    >>> np.round(np.asarray(pair_shift(a, b, blur_px=1.0)), 3)
    array([ 3., -2.]...)
    """
    a = as_float_array(a, "a")
    b = as_float_array(b, "b")
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"arguments 'a' and 'b': expected two (y, x) images of one shape, got {a.shape} and "
                         f"{b.shape}")
    check_finite(a, "a")
    check_finite(b, "b")
    dtype = jnp.result_type(a, b)
    h, w = a.shape
    radius = min(h, w) // 4 if max_shift_px is None else check_int(max_shift_px, "max_shift_px", minimum=0)
    radius = min(radius, (h - 1) // 2, (w - 1) // 2)
    upsample = check_int(upsample, "upsample", minimum=1)
    blur = float(blur_px)
    if not (np.isfinite(blur) and blur >= 0):
        raise ValueError(f"argument 'blur_px': expected a non-negative width in pixels, got {blur_px!r}")
    fa, fb = jnp.fft.rfft2(a.astype(dtype)), jnp.fft.rfft2(b.astype(dtype))
    return _pair_shift_spectra(fa, fb, _gaussian_transfer((h, w), blur, dtype), width=w, radius=radius,
                               upsample=upsample)


def _solve(pairs: np.ndarray, shifts: np.ndarray, kept: np.ndarray, n_seg: int) -> np.ndarray:
    """Least-squares segment drifts ``(S, D)`` with ``d_0 = 0`` from ``d_j - d_i = shift`` ``(K, D)`` of the kept
    pairs."""
    rows = pairs[kept]
    a = np.zeros((len(rows), n_seg))
    a[np.arange(len(rows)), rows[:, 1]] = 1.0
    a[np.arange(len(rows)), rows[:, 0]] = -1.0
    sol, *_ = np.linalg.lstsq(a[:, 1:], shifts[kept], rcond=None)
    return np.concatenate([np.zeros((1, shifts.shape[1])), sol])


def _solve_robust(pairs: np.ndarray, shifts: np.ndarray, n_seg: int, threshold: float | None,
                  floor_nm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_solve`, then the worst-fitting pair dropped while its residual exceeds ``threshold``
    (``None``: three robust standard deviations of the kept residuals, at least ``floor_nm``) and the
    remaining pairs still connect every segment; ``(drifts (S, D), residuals (K,), kept (K,))``."""
    kept = np.ones(len(pairs), bool)
    while True:
        d = _solve(pairs, shifts, kept, n_seg)
        resid = np.linalg.norm(d[pairs[:, 1]] - d[pairs[:, 0]] - shifts, axis=1)
        r_kept = resid[kept]
        limit = threshold
        if limit is None:
            limit = max(3.0 * 1.4826 * float(np.median(np.abs(r_kept - np.median(r_kept)))), floor_nm)
        for k in np.flatnonzero(kept)[np.argsort(-r_kept, kind="stable")]:
            if resid[k] <= limit:
                return d, resid, kept
            trial = kept.copy()
            trial[k] = False
            if _connected(pairs[trial], n_seg):
                kept = trial
                break
        else:
            return d, resid, kept


def _axial_shifts(seg: np.ndarray, n_seg: int, x: np.ndarray, y: np.ndarray, z: np.ndarray, pairs: np.ndarray, *,
                  voxel_nm: float, bin_nm: float, blur_nm: float, max_drift_nm: float, upsample: int,
                  chunk_bytes: int = 1 << 26) -> np.ndarray:
    """``z`` shift (nm) of segment ``j`` relative to ``i`` for every pair: the peak of
    ``c_ij(s) = sum_{v, z} h_i(v, z) h_j(v, z + s)`` over lateral voxels ``v`` (``voxel_nm``) and ``z`` bins
    (``bin_nm``), each ``h`` blurred along ``z`` by a Gaussian of ``blur_nm``; ``x``, ``y`` drift-corrected."""
    radius = int(math.ceil(max_drift_nm / bin_nm))
    nz = int(math.ceil(np.ptp(z) / bin_nm)) + 1 + 2 * radius                 # padded: no wrap-around
    iz = np.floor((z - z.min()) / bin_nm).astype(np.int64) + radius
    vx = np.floor((x - x.min()) / voxel_nm).astype(np.int64)
    vy = np.floor((y - y.min()) / voxel_nm).astype(np.int64)
    _, v = np.unique(vy * (int(vx.max()) + 1) + vx, return_inverse=True)
    v = v.reshape(-1)
    freq = np.fft.rfftfreq(nz)
    transfer = np.exp(-4.0 * np.pi**2 * (blur_nm / bin_nm) ** 2 * freq**2)   # |G|^2, both segments blurred
    nk = max(2, int(np.count_nonzero(transfer > 1e-9)))                     # higher frequencies carry nothing
    gram = np.zeros((nk, n_seg, n_seg), np.complex128)
    order = np.argsort(v, kind="stable")
    v, seg_s, iz_s = v[order], seg[order], iz[order]
    n_vox = int(v[-1]) + 1 if v.size else 0
    step = max(1, chunk_bytes // (8 * n_seg * nz))
    for v0 in range(0, n_vox, step):
        lo, hi = np.searchsorted(v, [v0, v0 + step])
        h = np.zeros((min(step, n_vox - v0), n_seg, nz), np.float32)
        np.add.at(h, (v[lo:hi] - v0, seg_s[lo:hi], iz_s[lo:hi]), 1.0)
        f = np.fft.rfft(h, axis=-1)[..., :nk].transpose(2, 0, 1)                # (k, voxels, S)
        gram += np.conj(f).transpose(0, 2, 1) @ f                               # (k, S, S): sum_v conj(F_i) F_j
    spec = gram[:, pairs[:, 0], pairs[:, 1]].T * transfer[:nk]              # (K, k)
    m = nz * upsample
    cc = np.fft.irfft(spec, n=m, axis=-1)                                    # c(s) on a grid 1/upsample px
    offs = np.arange(-radius * upsample, radius * upsample + 1)
    win = cc[:, offs % m]
    i = np.clip(np.argmax(win, axis=1), 1, len(offs) - 2)
    rows = np.arange(len(pairs))
    c_minus, c0, c_plus = win[rows, i - 1], win[rows, i], win[rows, i + 1]
    den = c_minus - 2.0 * c0 + c_plus
    vertex = np.clip(np.where(den < 0, 0.5 * (c_minus - c_plus) / np.where(den < 0, den, -1.0), 0.0), -0.5, 0.5)
    return (offs[i] + vertex) / upsample * bin_nm


def _connected(pairs: np.ndarray, n_seg: int) -> bool:
    """Whether the pairs connect all segments (the drifts are then determined)."""
    graph = scipy.sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_seg, n_seg))
    return scipy.sparse.csgraph.connected_components(graph, directed=False)[0] == 1


def estimate_drift(
    locs: Any,
    *,
    segment_frames: int = 1000,
    pixel_size_nm: float | None = None,
    blur_nm: float | None = None,
    max_drift_nm: float = 1000.0,
    max_residual_nm: float | None = None,
    upsample: int = 20,
    n_frames: int | None = None,
    batch_size: int = 16,
    axial: bool | None = None,
) -> DriftResult:
    """Drift of every frame of a localization table by redundant cross-correlation (RCC).

    Args:
        locs: table with columns ``frame``, ``x_nm``, ``y_nm`` and, for the axial drift, ``z_nm``
            (a :class:`~jaxsr.smlm.Localizations` or a dict of arrays); at least 2 segments'
            worth of frames.
        segment_frames: frames per segment (a last segment shorter than half this is merged into
            the one before). Each segment must show the structure: a few localizations per
            structure element (Picasso's default is 1000 frames too).
        pixel_size_nm: render pixel size (nm); default 20 nm, coarser if the field would exceed
            2048 pixels on a side.
        blur_nm: Gaussian smoothing of each rendered segment (s.d., nm); default the pixel size
            (the correlation peak then spans a few pixels and the sub-pixel fit is smooth).
        max_drift_nm: largest drift between two segments searched (nm); the images are padded
            by this much, so the correlation does not wrap around.
        max_residual_nm: pairs whose residual exceeds this are dropped (worst first, as long as
            the remaining pairs connect every segment). Default: three times the residuals'
            robust spread (1.4826 MAD of their lengths), at least one pixel.
        upsample: sub-pixel refinement factor of each pair's correlation peak.
        n_frames: number of frames of the movie (default ``max(frame) + 1``).
        batch_size: segment pairs correlated at once (memory ~ batch x rendered image).
        axial: also estimate the ``z`` drift: ``None`` (default) when the table has a finite,
            non-constant ``z_nm`` column (a 2D table's NaN ``z_nm`` is not), ``True`` to require it,
            ``False`` for the lateral drift only. The ``z`` bins are ``pixel_size_nm`` wide and
            blurred by twice ``blur_nm``, at least one bin (axial precision is typically about
            twice the lateral); the lateral voxels are 2.5 render pixels wide; ``max_drift_nm``
            bounds the ``z`` drift between two segments and ``max_residual_nm`` its pair residuals too.

    Work grows with the number of pairs, ``S (S - 1) / 2``: 190 for 20 segments (3.5 s for 800k
    localizations at 20 nm on a 2-core CPU, ``benchmarks/bench_drift.py``), 4950 for 100. Longer
    segments or a coarser ``pixel_size_nm`` make it faster.

    Returns:
        :class:`DriftResult`.

    Raises:
        ValueError: missing or non-finite columns, fewer than 2 segments holding localizations,
            non-positive sizes, ``n_frames`` not above the largest frame, ``axial=True`` without
            finite ``z_nm``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> sites = rng.uniform(0, 4000, (200, 2))
        >>> frame = np.repeat(np.arange(4000), 10)
        >>> site = rng.integers(0, 200, frame.size)
        >>> f = np.arange(4000)
        >>> true = np.stack([0.05 * f, 30 * np.sin(f / 700)], 1)                  # (x, y) nm per frame
        >>> xy = sites[site] + true[frame] + rng.normal(0, 8, (frame.size, 2))
        >>> res = estimate_drift({"frame": frame, "x_nm": xy[:, 0], "y_nm": xy[:, 1]}, segment_frames=500)
        >>> bool(np.sqrt(np.mean((res.drift_nm - true) ** 2)) < 3.0)              # r.m.s. error, nm
        True
    """
    frame, x, y = _table(locs)
    if frame.size == 0:
        raise ValueError("argument 'locs': the table holds no localizations")
    z = _z_column(locs, frame.size, axial)
    segment_frames = check_int(segment_frames, "segment_frames", minimum=1)
    last = int(frame.max()) + 1
    n_frames = last if n_frames is None else check_int(n_frames, "n_frames", minimum=1)
    if n_frames < last:
        raise ValueError(f"argument 'n_frames': {n_frames} frames, but the table has frame {last - 1}")
    max_drift = positive_float(max_drift_nm, "max_drift_nm")
    upsample = check_int(upsample, "upsample", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seg = _segments(frame, segment_frames, n_frames)
    used = np.unique(seg)
    if used.size < 2:
        raise ValueError(f"argument 'segment_frames': {n_frames} frames in segments of {segment_frames} give "
                         f"{used.size} segment with localizations; at least 2 are needed (use shorter segments)")
    seg = np.searchsorted(used, seg)                  # empty segments dropped: their drift is interpolated
    n_seg = used.size

    extent = max(np.ptp(x), np.ptp(y))
    if pixel_size_nm is None:
        p = max(20.0, (extent + 2 * max_drift) / _MAX_SIDE)
    else:
        p = positive_float(pixel_size_nm, "pixel_size_nm")
    blur = p if blur_nm is None else float(blur_nm)
    if not (np.isfinite(blur) and blur >= 0):
        raise ValueError(f"argument 'blur_nm': expected a non-negative width in nm, got {blur_nm!r}")
    radius = int(math.ceil(max_drift / p))
    shape = (int(math.ceil(np.ptp(y) / p)) + 1 + 2 * radius, int(math.ceil(np.ptp(x) / p)) + 1 + 2 * radius)
    if shape[0] * shape[1] > 4 * _MAX_SIDE**2:
        raise ValueError(f"argument 'pixel_size_nm': {p:g} nm renders the field as {shape[0]} x {shape[1]} pixels; "
                         "use a coarser pixel (or leave it to the default)")
    iy = np.floor((y - y.min()) / p).astype(np.int64) + radius
    ix = np.floor((x - x.min()) / p).astype(np.int64) + radius
    images = np.zeros((n_seg,) + shape, np.float32)
    np.add.at(images, (seg, iy, ix), 1.0)
    dtype = default_float_dtype()                       # float32; float64 under jax_enable_x64
    spectra = jnp.fft.rfft2(jnp.asarray(images, dtype))
    transfer = _gaussian_transfer(shape, blur / p, dtype)
    pairs = np.array([(i, j) for i in range(n_seg) for j in range(i + 1, n_seg)], np.int64)

    def one(ij):
        return _pair_shift_spectra(spectra[ij[0]], spectra[ij[1]], transfer, width=shape[1], radius=radius,
                                   upsample=upsample)

    shift_px = map_items(one, jnp.asarray(pairs), batch_size=min(batch_size, len(pairs)))
    shifts = np.asarray(shift_px, np.float64)[:, ::-1] * p                   # (dy, dx) px -> (x, y) nm

    threshold = None if max_residual_nm is None else positive_float(max_residual_nm, "max_residual_nm")
    d, resid, kept = _solve_robust(pairs, shifts, n_seg, threshold, p)
    centre = np.array([frame[seg == s].mean() for s in range(n_seg)])
    drift = _interpolate(centre, d, n_frames)
    resid_z = kept_z = None
    if z is not None:
        dz_pairs = _axial_shifts(seg, n_seg, x - drift[frame, 0], y - drift[frame, 1], z, pairs, voxel_nm=2.5 * p,
                                 bin_nm=p, blur_nm=max(2.0 * blur, p), max_drift_nm=max_drift, upsample=upsample)
        dz, resid_z, kept_z = _solve_robust(pairs, dz_pairs[:, None], n_seg, threshold, p)
        d = np.concatenate([d, dz], axis=1)
        shifts = np.concatenate([shifts, dz_pairs[:, None]], axis=1)
        drift = np.concatenate([drift, _interpolate(centre, dz, n_frames)], axis=1)
    offset = drift[0].copy()
    return DriftResult(drift_nm=drift - offset, segment_frame=centre, segment_drift_nm=d - offset, pairs=pairs,
                       pair_shift_nm=shifts, pair_residual_nm=resid, kept=kept, pixel_size_nm=p,
                       pair_residual_z_nm=resid_z, kept_z=kept_z)


def _interpolate(centre: np.ndarray, d: np.ndarray, n_frames: int) -> np.ndarray:
    """Drift of frames ``0 .. n_frames - 1`` from the segment drifts ``d (S, D)`` at frames ``centre``:
    a cubic spline (not-a-knot; linear with fewer than 4 segments) inside, continued linearly
    with the end slopes outside."""
    from scipy.interpolate import make_interp_spline  # noqa: PLC0415

    f = np.arange(n_frames, dtype=np.float64)
    spline = make_interp_spline(centre, d, k=3 if len(centre) >= 4 else 1, axis=0)
    out = spline(np.clip(f, centre[0], centre[-1]))
    lo, hi = f < centre[0], f > centre[-1]
    out[lo] += (f[lo] - centre[0])[:, None] * spline(centre[0], nu=1)[None]
    out[hi] += (f[hi] - centre[-1])[:, None] * spline(centre[-1], nu=1)[None]
    return out


def correct_drift(locs: Any, drift_nm: Any) -> Any:
    """The table with each localization's drift subtracted: ``x -= drift[frame, 0]``, ``y -= drift[frame, 1]``
    (and ``z -= drift[frame, 2]`` for a 3-column drift).

    Args:
        locs: table with ``frame``, ``x_nm``, ``y_nm`` (and ``z_nm`` for an axial drift)
            (:class:`~jaxsr.smlm.Localizations` or a dict).
        drift_nm: a :class:`DriftResult` or an ``(n_frames, 2)`` ``(x, y)`` or ``(n_frames, 3)``
            ``(x, y, z)`` array of drift in nm covering every frame of the table.

    Returns:
        A new table of the same kind (the input is not modified); other columns unchanged
        (``z_nm`` too when the drift is lateral).

    >>> t = {"frame": np.array([0, 1]), "x_nm": np.array([10.0, 10.0]), "y_nm": np.array([5.0, 5.0])}
    >>> correct_drift(t, np.array([[0.0, 0.0], [2.0, -1.0]]))["x_nm"]
    array([10.,  8.])
    """
    frame, x, y = _table(locs)
    d = np.asarray(drift_nm.drift_nm if isinstance(drift_nm, DriftResult) else drift_nm, np.float64)
    if d.ndim != 2 or d.shape[1] not in (2, 3) or not np.all(np.isfinite(d)):
        raise ValueError(f"argument 'drift_nm': expected a finite (n_frames, 2) or (n_frames, 3) array, got shape "
                         f"{d.shape}")
    if frame.size and frame.max() >= d.shape[0]:
        raise ValueError(f"argument 'drift_nm': covers {d.shape[0]} frames, but the table has frame {frame.max()}")
    new = {"x_nm": x - d[frame, 0], "y_nm": y - d[frame, 1]}
    if d.shape[1] == 3:
        try:
            z = np.asarray(column_getter(locs)("z_nm"), np.float64).reshape(-1)
        except KeyError:
            raise ValueError("argument 'drift_nm': an axial (3-column) drift needs a z_nm column in 'locs'") from None
        new["z_nm"] = z - d[frame, 2]
    if isinstance(locs, Localizations):
        return locs._replace(**{k: v.astype(np.asarray(getattr(locs, k)).dtype) for k, v in new.items()})
    if isinstance(locs, dict):
        return {**locs, **new}
    if hasattr(locs, "_replace"):
        return locs._replace(**new)
    raise TypeError(f"argument 'locs': expected Localizations, a NamedTuple or a dict, got {type(locs).__name__}")
