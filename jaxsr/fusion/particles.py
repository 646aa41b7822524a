"""Particles as padded point clouds: ``points (P, N, d)``, ``sigma (P, N, d)``, ``mask (P, N)``.

Every particle is a set of localizations (nm) with each localization's own
uncertainty: the standard deviation along each axis of the camera frame the
particle was imaged in (``(x, y)`` in 2D, ``(x, y, z)`` in 3D: lateral, lateral,
axial). Particles have different numbers of localizations; they are padded to
the largest, and ``mask`` marks the real rows (padded rows hold position 0 and
sigma 1 so that no computation on them produces NaN). Axis order of the last
axis: ``(x, y[, z])``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import scipy.spatial

from jaxsr._validate import check_int, positive_float

log = logging.getLogger(__name__)

__all__ = [
    "Particles",
    "make_particles",
    "particles_from_table",
    "cluster_particles",
    "pick_particles",
    "centre_particles",
]


class Particles(NamedTuple):
    """A batch of particles, padded (NumPy or JAX arrays).

    Attributes:
        points: ``(P, N, d)`` localizations in nm, ``d`` = 2 or 3, axes ``(x, y[, z])``.
        sigma: ``(P, N, d)`` localization uncertainty (1 s.d., nm) along each axis
            of the particle's own (camera) frame.
        mask: ``(P, N)`` bool, True for real localizations.
        ids: ``(P,)`` int particle identifiers (from the input table).
    """

    points: Any
    sigma: Any
    mask: Any
    ids: Any

    @property
    def dim(self) -> int:
        return int(np.shape(self.points)[-1])

    @property
    def counts(self) -> np.ndarray:
        """Localizations per particle ``(P,)``."""
        return np.asarray(self.mask).sum(axis=1)

    @property
    def n_particles(self) -> int:
        return int(np.shape(self.points)[0])

    def subset(self, index: Any) -> "Particles":
        """The particles at ``index`` (an int array or a boolean mask over particles)."""
        index = np.asarray(index)
        return Particles(*(np.asarray(a)[index] for a in self))


def _sigma_rows(sig: Any, n: int, dim: int, name: str) -> np.ndarray:
    """Per-localization uncertainty as ``(n, dim)``: a scalar, ``(n,)`` isotropic, ``(n, 2)``
    (lateral, axial) in 3D, or ``(n, dim)``."""
    s = np.asarray(sig, dtype=np.float64)
    if s.ndim == 0:
        s = np.full((n, dim), float(s))
    elif s.ndim == 1 and s.shape[0] == n:
        s = np.repeat(s[:, None], dim, axis=1)
    elif s.ndim == 2 and s.shape == (n, 2) and dim == 3:
        s = s[:, [0, 0, 1]]
    elif not (s.ndim == 2 and s.shape == (n, dim)):
        raise ValueError(
            f"argument '{name}': expected a scalar, ({n},), ({n}, {dim})"
            + (f" or ({n}, 2) lateral/axial" if dim == 3 else "") + f" uncertainties, got shape {s.shape}"
        )
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"argument '{name}': uncertainties must be finite and positive")
    return s


def make_particles(points: Sequence[Any], sigma: Sequence[Any] | float, *, ids: Any = None) -> Particles:
    """Pad a list of per-particle localizations into :class:`Particles`.

    Args:
        points: sequence of ``(n_i, d)`` arrays (nm), ``d`` = 2 or 3, the same for all.
        sigma: the localization uncertainty (nm, 1 s.d.): one number for all, or a
            sequence with one entry per particle: a scalar, ``(n_i,)`` isotropic,
            ``(n_i, 2)`` lateral/axial (3D) or ``(n_i, d)``.
        ids: ``(P,)`` particle identifiers (default ``0 .. P-1``).

    Returns:
        :class:`Particles` with float32 ``points``/``sigma`` padded to the largest ``n_i``.

    Raises:
        ValueError: no particles, an empty particle, mixed or unsupported ``d``,
            non-finite positions, bad uncertainties.

    Example:
        >>> import numpy as np
        >>> p = make_particles([np.zeros((3, 2)), np.ones((5, 2))], 4.0)
        >>> p.points.shape, p.counts.tolist()
        ((2, 5, 2), [3, 5])
    """
    pts = [np.asarray(p, dtype=np.float64) for p in points]
    if len(pts) == 0:
        raise ValueError("argument 'points': no particles")
    dims = {p.shape[-1] if p.ndim == 2 else -1 for p in pts}
    if len(dims) != 1 or dims.pop() not in (2, 3):
        raise ValueError("argument 'points': every particle must be an (n, 2) or (n, 3) array of the same d")
    dim = pts[0].shape[1]
    scalar = isinstance(sigma, (int, float, np.number)) or (isinstance(sigma, np.ndarray) and sigma.ndim == 0)
    sig_list = [sigma] * len(pts) if scalar else list(sigma)
    if len(sig_list) != len(pts):
        raise ValueError(f"argument 'sigma': {len(sig_list)} entries for {len(pts)} particles")
    n_max = max(p.shape[0] for p in pts)
    big_p = len(pts)
    out_pts = np.zeros((big_p, n_max, dim), np.float32)
    out_sig = np.ones((big_p, n_max, dim), np.float32)
    mask = np.zeros((big_p, n_max), bool)
    for i, (p, s) in enumerate(zip(pts, sig_list)):
        if p.shape[0] == 0:
            raise ValueError(f"argument 'points': particle {i} has no localizations")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"argument 'points': particle {i} has NaN or infinite positions")
        out_pts[i, : len(p)] = p
        out_sig[i, : len(p)] = _sigma_rows(s, len(p), dim, "sigma")
        mask[i, : len(p)] = True
    ids = np.arange(big_p) if ids is None else np.asarray(ids)
    if ids.shape != (big_p,):
        raise ValueError(f"argument 'ids': expected shape ({big_p},), got {ids.shape}")
    return Particles(out_pts, out_sig, mask, ids)



def _validate_particles(particles: Any, name: str = "particles") -> Particles:
    """Validate a :class:`Particles` at the entry of a function: consistent shapes ``points (P, N, d)``
    with ``d`` = 2 or 3, ``sigma (P, N, d)``, ``mask (P, N)``, ``ids (P,)``; finite positions and finite,
    positive uncertainties in the rows ``mask`` marks (padding rows are not looked at).

    Raises:
        TypeError: not a :class:`Particles`.
        ValueError: one line naming ``name``, the field and the first bad particle.
    """
    if not isinstance(particles, Particles):
        raise TypeError(f"argument '{name}': expected Particles, got {type(particles).__name__}")
    pts, sig, mask = (np.asarray(a) for a in particles[:3])
    shape = pts.shape
    if pts.ndim != 3 or shape[-1] not in (2, 3):
        raise ValueError(f"argument '{name}': points must be (P, N, 2) or (P, N, 3), got shape {shape}")
    if sig.shape != shape:
        raise ValueError(f"argument '{name}': sigma has shape {sig.shape}, points {shape}")
    if mask.shape != shape[:2]:
        raise ValueError(f"argument '{name}': mask has shape {mask.shape}, expected {shape[:2]}")
    if np.shape(particles.ids) != shape[:1]:
        raise ValueError(f"argument '{name}': ids has shape {np.shape(particles.ids)}, expected {shape[:1]}")
    mask = mask.astype(bool)
    for field, values, ok, what in (("points", pts, np.isfinite, "finite"),
                                    ("sigma", sig, lambda v: np.isfinite(v) & (v > 0), "finite and positive")):
        bad = ~np.all(ok(values.astype(np.float64)), axis=-1) & mask
        if bad.any():
            p, n = np.argwhere(bad)[0]
            raise ValueError(f"argument '{name}': {field} must be {what} where mask is True, got "
                             f"{values[p, n].tolist()} at particle {p}, localization {n} ({int(bad.sum())} such)")
    return particles

# a "sigma" column with a larger median is a PSF width (ThunderSTORM, jaxsr.smlm), not a localization uncertainty
_MAX_SIGMA_AS_UNCERTAINTY_NM = 50.0


def _column(table: Any, names: Sequence[str]) -> np.ndarray | None:
    for name in names:
        try:
            col = table[name] if isinstance(table, dict) else getattr(table, name)
        except (KeyError, AttributeError):
            continue
        col = np.asarray(col, dtype=np.float64)
        if col.size and np.any(np.isfinite(col)):
            return col
    return None


def _lateral_columns(table: Any, default: float | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The lateral uncertainty columns ``(x, y)`` of a table, as a pair from one source (or ``None``)."""
    unc = _column(table, ["uncertainty_nm"])
    if unc is not None:
        return unc, unc
    cx, cy = _column(table, ["crlb_x_nm"]), _column(table, ["crlb_y_nm"])
    if (cx is None) != (cy is None):
        have, lack = ("crlb_x_nm", "crlb_y_nm") if cx is not None else ("crlb_y_nm", "crlb_x_nm")
        raise ValueError(f"argument 'table': has {have} but no {lack} (with values); the lateral uncertainties "
                         "come as a pair (or give uncertainty_nm)")
    if cx is not None:
        return cx, cy
    sxy = _column(table, ["sigma_xy_nm"])
    if sxy is not None:
        return sxy, sxy
    sig = _column(table, ["sigma_nm"])
    if sig is None:
        return None, None
    # the last resort, sigma_nm, is a PSF width in ThunderSTORM's and jaxsr.smlm's tables
    med = float(np.nanmedian(sig))
    if med <= _MAX_SIGMA_AS_UNCERTAINTY_NM:
        return sig, sig
    if default is None:
        raise ValueError(f"argument 'table': its only uncertainty-like column, sigma_nm, has a median of "
                         f"{med:.4g} nm: a PSF width, not a localization uncertainty; give uncertainty_nm "
                         "(or crlb_x_nm and crlb_y_nm, sigma_xy_nm) or pass default_sigma_nm")
    log.warning("ignored the column sigma_nm (median %.4g nm: a PSF width, not a localization uncertainty); "
                "the lateral uncertainty is default_sigma_nm = %g nm", med, default)
    return None, None


def particles_from_table(
    table: Any, *, ids: Any = None, id_column: str = "particle", min_points: int = 1,
    default_sigma_nm: float | None = None,
) -> Particles:
    """Group a localization table into particles by a particle-id column.

    Positions come from ``x_nm``, ``y_nm`` (and ``z_nm`` when it has finite values:
    a 3D table). Uncertainties (1 s.d., nm), the first source present: lateral from
    ``uncertainty_nm``, the pair ``crlb_x_nm`` and ``crlb_y_nm`` (one without the other
    is refused), ``sigma_xy_nm`` or ``sigma_nm``; axial from ``uncertainty_z_nm``,
    ``crlb_z_nm`` or ``sigma_z_nm``; else ``default_sigma_nm``. A ``sigma_nm`` with a
    median above 50 nm is a PSF width (ThunderSTORM and :func:`jaxsr.smlm.localize`
    write it under that name), not an uncertainty: it is ignored, with a warning on
    the ``jaxsr.fusion.particles`` logger, when ``default_sigma_nm`` is given, and
    refused otherwise.

    Args:
        table: a dict of columns or a :class:`jaxsr.smlm.Localizations`.
        ids: ``(n,)`` particle id per row (overrides ``id_column``); rows with a
            negative id (unassigned, e.g. from :func:`cluster_particles`) are dropped,
            a NaN or infinite numeric id is refused.
        id_column: the table's particle-id column when ``ids`` is not given.
        min_points: drop particles with fewer localizations (how many is logged at
            INFO level on the ``jaxsr.fusion.particles`` logger).
        default_sigma_nm: uncertainty for tables without uncertainty columns.

    Returns:
        :class:`Particles` with ``ids`` the distinct particle ids, sorted.

    Raises:
        ValueError: missing position/id/uncertainty columns, ``crlb_x_nm`` without
            ``crlb_y_nm`` (or the reverse), a PSF-width ``sigma_nm`` as the only lateral
            uncertainty and no ``default_sigma_nm``, a NaN or infinite particle id, lengths that differ,
            a NaN or infinite position or a non-positive uncertainty in a row that is
            kept (the message names the column and the first such row), no particle
            with at least ``min_points`` localizations.
    """
    x, y = _column(table, ["x_nm"]), _column(table, ["y_nm"])
    if x is None or y is None:
        raise ValueError("argument 'table': needs 'x_nm' and 'y_nm' columns")
    z = _column(table, ["z_nm"])
    cols = [x, y] + ([z] if z is not None else [])
    n = len(x)
    ids_given = ids
    if ids is None:
        ids = _column(table, [id_column])
        if ids is None:
            raise ValueError(f"argument 'table': no particle-id column {id_column!r} (or pass ids=)")
    ids = np.asarray(ids)
    if any(len(c) != n for c in cols) or len(ids) != n:
        raise ValueError("argument 'table': columns (and ids) must all have the same length")
    min_points = check_int(min_points, "min_points", minimum=1)
    default = None if default_sigma_nm is None else positive_float(default_sigma_nm, "default_sigma_nm")
    lat_x, lat_y = _lateral_columns(table, default)
    ax = _column(table, ["uncertainty_z_nm", "crlb_z_nm", "sigma_z_nm"]) if z is not None else None
    if default is not None:
        lat_x = np.full(n, default) if lat_x is None else lat_x
        lat_y = np.full(n, default) if lat_y is None else lat_y
        ax = (np.full(n, default) if ax is None else ax) if z is not None else None
    if lat_x is None or lat_y is None or (z is not None and ax is None):
        raise ValueError("argument 'table': no uncertainty columns (uncertainty_nm / crlb_x_nm ...); "
                         "pass default_sigma_nm")
    sig_cols = [lat_x, lat_y] + ([ax] if z is not None else [])
    pos = np.stack(cols, 1)
    sig = np.stack(sig_cols, 1)
    if np.issubdtype(ids.dtype, np.number):
        if not np.all(np.isfinite(ids)):
            row = int(np.flatnonzero(~np.isfinite(ids))[0])
            raise ValueError(f"argument '{'table' if ids_given is None else 'ids'}': a particle id must be finite, "
                             f"got {ids[row]} in data row {row + 1} (1-based; {int((~np.isfinite(ids)).sum())} "
                             "such rows)")
        keep = ids >= 0
    else:
        keep = np.ones(n, bool)
    checks = ((pos, ~np.isfinite(pos), ["x_nm", "y_nm", "z_nm"], "finite"),
              (sig, ~(np.isfinite(sig) & (sig > 0)), ["lateral uncertainty"] * 2 + ["axial uncertainty"], "positive"))
    for values, bad, labels, what in checks:
        bad = bad & keep[:, None]                       # unassigned rows (negative ids) are not checked
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(f"argument 'table': {labels[col]} must be {what}, got {float(values[row, col])} in "
                             f"data row {row + 1} (1-based; {int(bad.any(1).sum())} such rows)")
    pos, sig, ids = pos[keep], sig[keep], ids[keep]
    uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    good = np.flatnonzero(counts >= min_points)
    if good.size == 0:
        raise ValueError(f"argument 'table': no particle has at least {min_points} localizations")
    log_dropped(len(uniq) - good.size, len(uniq), int(counts.sum() - counts[good].sum()), min_points)
    order = np.argsort(inverse, kind="stable")
    splits = np.split(order, np.cumsum(counts)[:-1])
    return make_particles([pos[splits[g]] for g in good], [sig[splits[g]] for g in good], ids=uniq[good])


def log_dropped(n_dropped: int, n_total: int, n_locs: int, min_points: int) -> None:
    """Log (INFO) how many particles a reader dropped for having fewer than ``min_points`` localizations."""
    if n_dropped:
        log.info("dropped %d of %d particles with fewer than %d localizations (%d localizations)",
                 n_dropped, n_total, min_points, n_locs)


def cluster_particles(points: Any, *, distance_nm: float, min_points: int = 5) -> np.ndarray:
    """Particle ids by single-linkage clustering: localizations closer than ``distance_nm`` join a cluster.

    Args:
        points: ``(n, d)`` localization positions (nm).
        distance_nm: linkage distance; choose it above the localization spread within
            a particle and below the gap between particles.
        min_points: clusters with fewer localizations get id -1.

    Returns:
        ``(n,)`` int64 ids, ``0 .. K-1`` in order of first appearance, -1 for unassigned rows.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3):
        raise ValueError(f"argument 'points': expected an (n, 2) or (n, 3) array, got shape {pts.shape}")
    dist = positive_float(distance_nm, "distance_nm")
    min_points = check_int(min_points, "min_points", minimum=1)
    n = len(pts)
    pairs = scipy.spatial.cKDTree(pts).query_pairs(dist, output_type="ndarray")
    graph = scipy.sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    counts = np.bincount(labels)
    labels = np.where(counts[labels] >= min_points, labels, -1)
    out = np.full(n, -1, np.int64)
    _, first = np.unique(labels, return_index=True)
    next_id = 0
    for lab in labels[np.sort(first)]:
        if lab >= 0:
            out[labels == lab] = next_id
            next_id += 1
    return out


def pick_particles(points: Any, centres_nm: Any, *, radius_nm: float) -> np.ndarray:
    """Particle ids from given centres: a localization within ``radius_nm`` of centre ``k`` gets id ``k``
    (the nearest centre when several are in reach; -1 when none).

    Args:
        points: ``(n, d)`` positions (nm).
        centres_nm: ``(K, d)`` particle centres (nm), e.g. picked by hand in a rendering.
        radius_nm: pick radius.

    Returns:
        ``(n,)`` int64 ids.
    """
    pts = np.asarray(points, dtype=np.float64)
    c = np.asarray(centres_nm, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3):
        raise ValueError(f"argument 'points': expected an (n, 2) or (n, 3) array, got shape {pts.shape}")
    if c.ndim != 2 or c.shape[1] != pts.shape[1]:
        raise ValueError(f"argument 'centres_nm': expected a (K, {pts.shape[1]}) array, got shape {c.shape}")
    radius = positive_float(radius_nm, "radius_nm")
    dist, idx = scipy.spatial.cKDTree(c).query(pts, distance_upper_bound=radius)
    return np.where(np.isfinite(dist), idx, -1).astype(np.int64)


def centre_particles(particles: Particles) -> tuple[Particles, np.ndarray]:
    """Subtract each particle's centroid (mean of its localizations).

    Returns:
        ``(centred, centroids)`` with ``centroids (P, d)`` in nm.
    """
    pts, mask = np.asarray(particles.points), np.asarray(particles.mask)
    w = mask / np.maximum(mask.sum(1, keepdims=True), 1)
    c = np.einsum("pn,pnd->pd", w, pts)
    out = np.where(mask[..., None], pts - c[:, None, :], 0.0).astype(np.float32)
    return particles._replace(points=out), c
