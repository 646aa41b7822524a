"""Synthetic structures as point clouds and polylines in physical units.

Coordinates are in **nm**, last axis ``(y, x)``. Random structures are
deterministic functions of an explicit ``jax.random`` key. Sizes that set
array shapes (counts, lengths, step sizes) are static Python numbers.

* :func:`filaments`: curvature-bounded worm-like random walks (microtubules),
  ``(n_filaments, n_points, 2)``.
* :func:`line_pairs`: parallel line pairs of increasing separation (a
  resolution-test slide pattern), ``(2 * n_pairs, n_points, 2)``.
* :func:`bead_pairs`: point pairs of increasing separation, ``(2 * n_pairs, 2)``.
* :func:`ring`: an n-fold symmetric ring (nuclear-pore-like), ``(n, 2)``.
* :func:`random_beads`: uniform random points, ``(n, 2)``.
* :func:`tubular_network`: a Voronoi network of tubules (ER-like),
  ``(n_edges, points_per_edge, 2)``.
* :func:`hollow_rings`: non-overlapping circles (vesicles),
  ``(n, points_per_ring + 1, 2)``.

Render them with :func:`jaxsr.simulate.render_points` (points) or
:func:`jaxsr.simulate.render_polyline` (filaments, lines, networks, rings).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import check_int, default_float_dtype, positive_float, real_float

__all__ = ["filaments", "line_pairs", "bead_pairs", "ring", "random_beads", "tubular_network", "hollow_rings"]


def _pair(value: Any, name: str, *, positive: bool) -> tuple[float, float]:
    what = "a (y, x) pair of numbers"
    if isinstance(value, (str, bytes)):
        raise TypeError(f"argument '{name}': expected {what}, got {value!r}")
    try:
        items = list(value)
    except Exception as err:  # noqa: BLE001 - e.g. not iterable
        raise TypeError(f"argument '{name}': expected {what}, got {value!r}") from err
    vals = tuple(real_float(v, name, what) for v in items)
    if len(vals) != 2:
        raise ValueError(f"argument '{name}': expected a (y, x) pair, got {value!r}")
    if not all(np.isfinite(v) for v in vals):
        raise ValueError(f"argument '{name}': must be finite, got {vals}")
    if positive and not all(v > 0 for v in vals):
        raise ValueError(f"argument '{name}': must be positive, got {vals}")
    return vals


def _separations(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - re-raised with a clear message
        raise TypeError(f"argument '{name}': expected a sequence of numbers, got {value!r}") from err
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"argument '{name}': expected a sequence of numbers, got {value!r}")
    arr = arr.astype(float)
    if arr.ndim > 1:
        raise ValueError(f"argument '{name}': expected a 1D sequence of separations, got shape {arr.shape}")
    arr = arr.reshape(-1)
    if arr.size == 0:
        raise ValueError(f"argument '{name}': needs at least one separation")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"argument '{name}': must be finite and non-negative, got {arr.tolist()}")
    return arr


def filaments(
    key: jax.Array,
    *,
    n_filaments: int,
    field_nm: Sequence[float],
    length_nm: float,
    step_nm: float = 5.0,
    persistence_nm: float = 10000.0,
    max_curvature_per_nm: float = 0.004,
) -> jax.Array:
    """Curvature-bounded worm-like random walks (synthetic microtubules).

    Each filament starts at a uniform point of the field ``[0, h) x [0, w)``
    with a uniform direction and advances in steps of exactly ``step_nm``. At
    each step the direction turns by an angle drawn from a normal distribution
    of variance ``step_nm / persistence_nm`` (a 2D worm-like chain, whose
    tangent correlation decays as ``exp(-s / (2 persistence_nm))``), truncated to
    ``|angle| <= max_curvature_per_nm * step_nm`` so the curvature never exceeds
    ``max_curvature_per_nm`` (radius of curvature at least its inverse).
    The truncation reduces the turning variance, so the chain is stiffer than
    ``persistence_nm`` alone says: with ``a = max_curvature_per_nm * step_nm /
    sigma`` and ``sigma^2 = step_nm / persistence_nm``, the effective persistence
    length is ``persistence_nm / (1 - 2 a phi(a) / (2 Phi(a) - 1))`` (``phi``,
    ``Phi``: standard normal pdf and cdf). Filaments may leave the field;
    rendering drops what falls outside.

    The defaults (10 um, at most 0.004 rad/nm, i.e. radius of curvature
    >= 250 nm, with 5 nm steps) give an effective persistence length of about
    40 um: gently curved filaments over a few-micron field, as microtubules
    look in cells.

    Args:
        key: a ``jax.random`` key.
        n_filaments: number of filaments (static, >= 1).
        field_nm: ``(h, w)`` field size in nm where filaments start.
        length_nm: contour length of each filament in nm (static).
        step_nm: step length in nm (static).
        persistence_nm: persistence length in nm (> 0).
        max_curvature_per_nm: largest curvature in rad/nm (> 0).

    Returns:
        ``(n_filaments, n_points, 2)`` vertices ``(y, x)`` in nm, with
        ``n_points = round(length_nm / step_nm) + 1``; consecutive vertices are
        ``step_nm`` apart.

    References:
        Kratky & Porod, "Röntgenuntersuchung gelöster Fadenmoleküle",
        Recl. Trav. Chim. Pays-Bas 68, 1106 (1949) (worm-like chain).

    >>> import jax
    >>> f = filaments(jax.random.key(0), n_filaments=2, field_nm=(1000.0, 1000.0), length_nm=100.0)
    >>> f.shape
    (2, 21, 2)
    """
    n_filaments = check_int(n_filaments, "n_filaments", minimum=1)
    h, w = _pair(field_nm, "field_nm", positive=True)
    length = positive_float(length_nm, "length_nm")
    step = positive_float(step_nm, "step_nm")
    lp = positive_float(persistence_nm, "persistence_nm")
    kmax = positive_float(max_curvature_per_nm, "max_curvature_per_nm")
    n_steps = int(round(length / step))
    if n_steps < 1:
        raise ValueError(
            f"argument 'length_nm': must be at least one step ({step} nm), got {length}"
        )
    sigma = float(np.sqrt(step / lp))
    return _walk(key, n_filaments, n_steps, h, w, step, sigma, kmax * step / sigma)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _walk(key, n_filaments, n_steps, h, w, step, sigma, bound):
    dtype = default_float_dtype()
    k_start, k_dir, k_turn = jax.random.split(key, 3)
    start = jax.random.uniform(k_start, (n_filaments, 2), dtype=dtype) * jnp.stack([h, w]).astype(dtype)
    theta0 = jax.random.uniform(k_dir, (n_filaments, 1), dtype=dtype, maxval=2 * np.pi)
    turns = sigma * jax.random.truncated_normal(
        k_turn, -bound, bound, (n_filaments, n_steps - 1), dtype=dtype
    )
    theta = jnp.concatenate([theta0, theta0 + jnp.cumsum(turns, axis=1)], axis=1)
    steps = step * jnp.stack([jnp.sin(theta), jnp.cos(theta)], axis=-1)
    path = jnp.cumsum(steps, axis=1)
    return jnp.concatenate([start[:, None, :], start[:, None, :] + path], axis=1)


def _vertical_line(x: float, length: float, n_points: int) -> np.ndarray:
    y = np.linspace(-length / 2, length / 2, n_points)
    return np.stack([y, np.full_like(y, x)], axis=-1)


def line_pairs(
    *,
    separations_nm: Sequence[float] = (30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 210.0),
    length_nm: float = 2000.0,
    gap_nm: float = 600.0,
    step_nm: float = 5.0,
    centre_nm: Sequence[float] = (0.0, 0.0),
) -> jax.Array:
    """Pairs of parallel lines of increasing separation (resolution-test pattern).

    Like the line-pair patterns of resolution-test slides (e.g. Argolight
    Argo-SIM): each pair is two lines along y of ``length_nm``, the lines of
    pair ``i`` are ``separations_nm[i]`` apart in x, and consecutive pairs are
    ``gap_nm`` apart (right line of one pair to left line of the next). The
    pattern is centred on ``centre_nm``.

    Args:
        separations_nm: centre-to-centre line separations in nm.
        length_nm: line length in nm.
        gap_nm: distance between neighbouring pairs in nm.
        step_nm: largest sampling step along each line in nm (points are evenly
            spaced and include both ends).
        centre_nm: ``(y, x)`` centre of the pattern in nm.

    Returns:
        ``(2 * n_pairs, n_points, 2)`` polylines ``(y, x)`` in nm, lines ordered
        left to right; ``n_points = ceil(length_nm / step_nm) + 1``.

    >>> lines = line_pairs(separations_nm=(100.0, 200.0), length_nm=50.0, step_nm=10.0)
    >>> lines.shape, [float(v) for v in lines[:, 0, 1]]
    ((4, 6, 2), [-450.0, -350.0, 250.0, 450.0])
    """
    seps = _separations(separations_nm, "separations_nm")
    length = positive_float(length_nm, "length_nm")
    gap = positive_float(gap_nm, "gap_nm")
    step = positive_float(step_nm, "step_nm")
    cy, cx = _pair(centre_nm, "centre_nm", positive=False)
    n_points = int(np.ceil(length / step - 1e-9)) + 1
    xs = []
    x = 0.0
    for s in seps:
        xs += [x, x + s]
        x += s + gap
    xs = np.asarray(xs)
    xs = xs - 0.5 * (xs[0] + xs[-1]) + cx
    lines = np.stack([_vertical_line(float(x), length, n_points) for x in xs])
    lines[..., 0] += cy
    return jnp.asarray(lines, dtype=default_float_dtype())


def bead_pairs(
    *,
    separations_nm: Sequence[float] = (30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 210.0),
    spacing_nm: float = 1000.0,
    centre_nm: Sequence[float] = (0.0, 0.0),
) -> jax.Array:
    """Pairs of point emitters of increasing separation, in a row along x.

    Pair ``i`` is centred at ``x = (i - (n - 1) / 2) * spacing_nm`` (relative to
    ``centre_nm``) and its two beads are ``separations_nm[i]`` apart along y, so
    pairs never overlap whatever the separations.

    Args:
        separations_nm: bead separations in nm.
        spacing_nm: distance between neighbouring pair centres in nm.
        centre_nm: ``(y, x)`` centre of the row in nm.

    Returns:
        ``(2 * n_pairs, 2)`` points ``(y, x)`` in nm; rows ``2i`` and ``2i + 1``
        form pair ``i`` (upper bead first).

    >>> pts = bead_pairs(separations_nm=(40.0,), spacing_nm=500.0)
    >>> pts.tolist()
    [[-20.0, 0.0], [20.0, 0.0]]
    """
    seps = _separations(separations_nm, "separations_nm")
    spacing = positive_float(spacing_nm, "spacing_nm")
    cy, cx = _pair(centre_nm, "centre_nm", positive=False)
    n = seps.size
    pts = []
    for i, s in enumerate(seps):
        x = (i - (n - 1) / 2) * spacing + cx
        pts += [[cy - s / 2, x], [cy + s / 2, x]]
    return jnp.asarray(np.asarray(pts), dtype=default_float_dtype())


def ring(
    *,
    diameter_nm: float = 107.0,
    n_subunits: int = 8,
    centre_nm: Sequence[float] = (0.0, 0.0),
    rotation_rad: float = 0.0,
    copies_per_subunit: int = 1,
    copy_spacing_nm: float = 10.0,
) -> jax.Array:
    """An ``n_subunits``-fold symmetric ring of labels (nuclear-pore-like).

    Subunit ``k`` sits at angle ``rotation_rad + 2 pi k / n_subunits`` on a
    circle of ``diameter_nm``. With ``copies_per_subunit > 1`` each subunit
    carries several labels spread along the circle, ``copy_spacing_nm`` of arc
    apart and centred on the subunit angle. The default 107 nm, 8-fold ring is
    the projected Nup96 ring of the nuclear pore complex.

    Angles are measured from the +x axis towards +y (``y = r sin a``, ``x = r cos a``).

    Args:
        diameter_nm: ring diameter in nm.
        n_subunits: rotational symmetry (static, >= 1).
        centre_nm: ``(y, x)`` ring centre in nm.
        rotation_rad: rotation of the whole ring in radians.
        copies_per_subunit: labels per subunit (static, >= 1).
        copy_spacing_nm: arc length between copies of one subunit in nm.

    Returns:
        ``(n_subunits * copies_per_subunit, 2)`` points ``(y, x)`` in nm,
        subunit-major.

    References:
        Thevathasan et al., "Nuclear pores as versatile reference standards for
        quantitative superresolution microscopy", Nat. Methods 16, 1045 (2019).

    >>> pts = ring(diameter_nm=100.0, n_subunits=4)
    >>> [[round(float(v), 3) + 0.0 for v in p] for p in pts]
    [[0.0, 50.0], [50.0, 0.0], [0.0, -50.0], [-50.0, 0.0]]
    """
    d = positive_float(diameter_nm, "diameter_nm")
    n = check_int(n_subunits, "n_subunits", minimum=1)
    m = check_int(copies_per_subunit, "copies_per_subunit", minimum=1)
    spacing = positive_float(copy_spacing_nm, "copy_spacing_nm")
    cy, cx = _pair(centre_nm, "centre_nm", positive=False)
    rot = real_float(rotation_rad, "rotation_rad")
    if not np.isfinite(rot):
        raise ValueError(f"argument 'rotation_rad': must be finite, got {rot!r}")
    r = d / 2
    sub = rot + 2 * np.pi * np.arange(n) / n
    offsets = (np.arange(m) - (m - 1) / 2) * spacing / r
    angles = (sub[:, None] + offsets[None, :]).reshape(-1)
    pts = np.stack([cy + r * np.sin(angles), cx + r * np.cos(angles)], axis=-1)
    return jnp.asarray(pts, dtype=default_float_dtype())


def random_beads(key: jax.Array, *, n: int, field_nm: Sequence[float]) -> jax.Array:
    """``n`` points uniformly distributed in the field ``[0, h) x [0, w)``.

    Args:
        key: a ``jax.random`` key.
        n: number of points (static, >= 1).
        field_nm: ``(h, w)`` field size in nm.

    Returns:
        ``(n, 2)`` points ``(y, x)`` in nm.

    >>> import jax
    >>> random_beads(jax.random.key(0), n=5, field_nm=(100.0, 200.0)).shape
    (5, 2)
    """
    n = check_int(n, "n", minimum=1)
    h, w = _pair(field_nm, "field_nm", positive=True)
    dtype = default_float_dtype()
    return jax.random.uniform(key, (n, 2), dtype=dtype) * jnp.asarray([h, w], dtype=dtype)


# --------------------------------------------------------------------------- structures for held-out evaluation
def _numpy_rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded deterministically from a JAX key (for geometry built with SciPy)."""
    try:
        seed = jax.random.randint(key, (), 0, np.iinfo(np.int32).max)
    except Exception as err:  # noqa: BLE001 - re-raised with a clear message
        raise TypeError(f"argument 'key': expected a JAX PRNG key, e.g. jax.random.key(0), got {key!r}") from err
    return np.random.default_rng(int(seed))


def _fraction(value: Any, name: str, *, upper_open: bool) -> float:
    v = real_float(value, name)
    ok = np.isfinite(v) and v >= 0 and (v < 1 if upper_open else v <= 1)
    if not ok:
        bound = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"argument '{name}': must be in {bound}, got {value!r}")
    return v


def _clip_segments(p: np.ndarray, q: np.ndarray, h: float, w: float):
    """Liang-Barsky clipping of segments ``p -> q`` (``(n, 2)``, (y, x)) to ``[0, h] x [0, w]``."""
    d = q - p
    t0 = np.zeros(len(p))
    t1 = np.ones(len(p))
    keep = np.ones(len(p), dtype=bool)
    for axis, size in ((0, h), (1, w)):
        for pk, qk in ((-d[:, axis], p[:, axis]), (d[:, axis], size - p[:, axis])):
            parallel = pk == 0
            keep &= ~(parallel & (qk < 0))
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where(parallel, 0.0, qk / np.where(parallel, 1.0, pk))
            t0 = np.where(~parallel & (pk < 0), np.maximum(t0, r), t0)
            t1 = np.where(~parallel & (pk > 0), np.minimum(t1, r), t1)
    keep &= t0 < t1
    return p + t0[:, None] * d, p + t1[:, None] * d, keep


def tubular_network(
    key: jax.Array,
    *,
    field_nm: Sequence[float],
    mean_spacing_nm: float = 800.0,
    prune_fraction: float = 0.0,
    bend_nm: float = 0.0,
    points_per_edge: int = 8,
) -> jax.Array:
    """A polygonal network of tubules (endoplasmic-reticulum-like), as polylines.

    The edges of the Voronoi diagram of a Poisson point process of density
    ``1 / mean_spacing_nm**2``: polygons of mean area ``mean_spacing_nm**2``
    joined at three-way junctions, as the tubular ER looks in the cell
    periphery. The seeds are drawn in the field enlarged by ``2 *
    mean_spacing_nm`` on every side (so the diagram inside the field is that of
    an unbounded process), and every finite Voronoi edge is clipped to the
    field ``[0, h] x [0, w]``. For the Poisson-Voronoi tessellation the expected
    total edge length per unit area is ``2 / mean_spacing_nm`` and the mean
    edge length ``2 mean_spacing_nm / 3`` (Meijering 1953). Each edge is then
    removed independently with probability ``prune_fraction`` (open polygons,
    dead ends) and bowed sideways: its points move along the edge normal by
    ``4 t (1 - t) b``, ``t`` the position along the edge in ``[0, 1]`` and ``b``
    uniform in ``[-bend_nm, bend_nm]``, so junctions stay joined; points pushed
    out of the field are clamped to its border.

    The geometry is built with SciPy (``scipy.spatial.Voronoi``) from a NumPy
    generator seeded by ``key``: deterministic, not jittable, and the number
    of edges depends on the draw.

    Args:
        key: a ``jax.random`` key.
        field_nm: ``(h, w)`` field size in nm.
        mean_spacing_nm: ``1 / sqrt(seed density)``, the square root of the mean
            polygon area (nm, > 0).
        prune_fraction: probability of removing each edge, in ``[0, 1)``.
        bend_nm: largest sideways bow of an edge at its middle (nm, >= 0).
        points_per_edge: vertices per edge polyline (static, >= 2).

    Returns:
        ``(n_edges, points_per_edge, 2)`` polylines ``(y, x)`` in nm, inside
        ``[0, h] x [0, w]``; the first and last vertex of an edge are its
        junctions (or its crossings of the field border). Render with
        :func:`jaxsr.simulate.render_polyline`.

    Raises:
        ValueError: a bad ``field_nm``, non-positive ``mean_spacing_nm``,
            ``prune_fraction`` outside ``[0, 1)``, negative ``bend_nm``,
            ``points_per_edge < 2``, or no edge left in the field.
        TypeError: non-numeric arguments or a ``key`` that is not a PRNG key.

    References:
        Meijering, "Interface area, edge length, and number of vertices in
        crystal aggregates with random nucleation", Philips Res. Rep. 8, 270
        (1953) (Poisson-Voronoi statistics).
        Nixon-Abell et al., "Increased spatiotemporal resolution reveals highly
        dynamic dense tubular matrices in the peripheral ER", Science 354,
        aaf3928 (2016) (ER network geometry).

    >>> import jax
    >>> net = tubular_network(jax.random.key(0), field_nm=(3000.0, 3000.0), mean_spacing_nm=800.0)
    >>> net.ndim, net.shape[1:], bool((net >= 0).all() and (net <= 3000.0).all())
    (3, (8, 2), True)
    """
    from scipy.spatial import Voronoi  # noqa: PLC0415 - SciPy only where it is needed

    h, w = _pair(field_nm, "field_nm", positive=True)
    s = positive_float(mean_spacing_nm, "mean_spacing_nm")
    prune = _fraction(prune_fraction, "prune_fraction", upper_open=True)
    bend = real_float(bend_nm, "bend_nm")
    if not (np.isfinite(bend) and bend >= 0):
        raise ValueError(f"argument 'bend_nm': must be finite and non-negative, got {bend_nm!r}")
    m = check_int(points_per_edge, "points_per_edge", minimum=2)
    rng = _numpy_rng(key)
    margin = 2.0 * s
    hy, wx = h + 2 * margin, w + 2 * margin
    n_seeds = max(4, int(rng.poisson(hy * wx / s**2)))
    seeds = rng.uniform(size=(n_seeds, 2)) * np.array([hy, wx]) - margin
    vor = Voronoi(seeds)
    ridges = np.asarray([r for r in vor.ridge_vertices if -1 not in r], dtype=np.int64).reshape(-1, 2)
    p, q, keep = _clip_segments(vor.vertices[ridges[:, 0]], vor.vertices[ridges[:, 1]], h, w)
    keep &= np.linalg.norm(q - p, axis=1) > 1e-6 * s
    keep &= rng.uniform(size=len(p)) >= prune
    p, q = p[keep], q[keep]
    if len(p) == 0:
        raise ValueError(
            f"argument 'prune_fraction': no edge left in the field ({h:g} x {w:g} nm, spacing {s:g} nm, "
            f"prune_fraction {prune:g}); use a larger field or a lower prune_fraction"
        )
    d = q - p
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1) / np.linalg.norm(d, axis=1, keepdims=True)
    b = rng.uniform(-bend, bend, size=len(p)) if bend > 0 else np.zeros(len(p))
    t = np.linspace(0.0, 1.0, m)
    pts = p[:, None] + t[None, :, None] * d[:, None] + (4 * t * (1 - t))[None, :, None] * (b[:, None] * normal)[:, None]
    pts[..., 0] = np.clip(pts[..., 0], 0.0, h)
    pts[..., 1] = np.clip(pts[..., 1], 0.0, w)
    return jnp.asarray(pts, dtype=default_float_dtype())


def hollow_rings(
    key: jax.Array,
    *,
    n: int,
    field_nm: Sequence[float],
    diameter_nm: Sequence[float] = (200.0, 800.0),
    min_gap_nm: float = 100.0,
    points_per_ring: int = 64,
) -> jax.Array:
    """Non-overlapping circles of random diameter (membrane-labelled vesicles), as closed polylines.

    Diameters are uniform in ``diameter_nm = (low, high)``; centres are
    uniform over the positions that keep the whole circle inside the field
    ``[0, h] x [0, w]``, drawn one ring after the other and redrawn (up to
    1000 times per ring) while the ring would come closer than ``min_gap_nm``
    to a ring already placed. Each circle is the closed polygon of
    ``points_per_ring`` vertices on it (the first vertex repeated at the end).

    Deterministic from ``key`` (a NumPy generator seeded by it); not jittable.

    Args:
        key: a ``jax.random`` key.
        n: number of rings (>= 1).
        field_nm: ``(h, w)`` field size in nm.
        diameter_nm: ``(low, high)`` range of diameters in nm, ``0 < low <= high
            <= min(h, w)``.
        min_gap_nm: smallest distance between two rings (nm, >= 0).
        points_per_ring: polygon vertices per ring (static, >= 8).

    Returns:
        ``(n, points_per_ring + 1, 2)`` closed polylines ``(y, x)`` in nm.
        Render with :func:`jaxsr.simulate.render_polyline`.

    Raises:
        ValueError: bad ``n``, ``field_nm``, ``diameter_nm`` (order, sign, larger
            than the field), negative ``min_gap_nm``, ``points_per_ring < 8``, or
            ``n`` rings that cannot be placed without overlap (message names ``n``).
        TypeError: non-numeric arguments or a ``key`` that is not a PRNG key.

    >>> import jax, numpy as np
    >>> rings = hollow_rings(jax.random.key(0), n=3, field_nm=(4000.0, 4000.0))
    >>> rings.shape
    (3, 65, 2)
    >>> r = np.linalg.norm(np.asarray(rings) - np.asarray(rings).mean(axis=1, keepdims=True), axis=-1)
    >>> bool(((r > 99.0) & (r < 401.0)).all())
    True
    """
    n = check_int(n, "n", minimum=1)
    h, w = _pair(field_nm, "field_nm", positive=True)
    lo, hi = _pair(diameter_nm, "diameter_nm", positive=True)
    if lo > hi:
        raise ValueError(f"argument 'diameter_nm': expected (low, high) with low <= high, got {(lo, hi)}")
    if hi > min(h, w):
        raise ValueError(f"argument 'diameter_nm': the largest diameter {hi:g} nm does not fit the field {(h, w)}")
    gap = real_float(min_gap_nm, "min_gap_nm")
    if not (np.isfinite(gap) and gap >= 0):
        raise ValueError(f"argument 'min_gap_nm': must be finite and non-negative, got {min_gap_nm!r}")
    m = check_int(points_per_ring, "points_per_ring", minimum=8)
    rng = _numpy_rng(key)
    radii = rng.uniform(lo, hi, size=n) / 2
    centres = np.zeros((n, 2))
    for i, r in enumerate(radii):
        for _ in range(1000):
            c = np.array([rng.uniform(r, h - r), rng.uniform(r, w - r)])
            if i == 0 or np.all(np.linalg.norm(centres[:i] - c, axis=1) >= radii[:i] + r + gap):
                centres[i] = c
                break
        else:
            raise ValueError(
                f"argument 'n': could not place {n} rings of diameter {lo:g}-{hi:g} nm at least {gap:g} nm "
                f"apart in a {h:g} x {w:g} nm field (placed {i}); use fewer or smaller rings"
            )
    angle = np.linspace(0.0, 2 * np.pi, m + 1)
    angle[-1] = 0.0  # close the polygon exactly
    offsets = np.stack([np.sin(angle), np.cos(angle)], axis=-1)
    pts = centres[:, None, :] + radii[:, None, None] * offsets[None]
    return jnp.asarray(pts, dtype=default_float_dtype())
