"""Rigid registration of particles to a Gaussian-mixture template: multi-start grid, then gradient refinement.

For one particle (localizations ``x_i`` with covariances ``S_i``) and a template
mixture, the pose ``(R, t)`` maximises the closed-form overlap
``log <T_(R,t) f, g>`` (:mod:`jaxsr.fusion.gmm`), i.e. minimises the L2 distance
between the moved particle and the template:

1. **Multi-start**: the overlap is evaluated for every rotation of a near-uniform
   grid on SO(3) (or SO(2)) at once (a batched matrix product), at the coarsest
   scale and with each covariance replaced by its isotropic mean (a faithful
   approximation once the coarse blur dominates). The best ``n_starts`` grid
   rotations (plus any given starts, e.g. the previous pose) are kept.
2. **Refinement**: from each start, Adam on ``(omega, t)`` with
   ``R = exp(omega) R_start`` (no singularity: ``omega`` stays near 0), through a
   coarse-to-fine schedule of blurs (``blur_nm``, e.g. 12, 6, 0 nm) with the full
   anisotropic covariances; the start with the best final overlap wins.

Particles are expected centred (their centroid at 0, :func:`centre_particles`)
and the template centred too, so translations start at 0, unless given with the
starts or searched on a lattice of ``shifts`` together with the rotation grid (for
particles that show only part of the structure, whose centroid is off its centre). Everything is
``jit``-compiled and mapped over particles with ``lax.map`` in batches (bounded
memory). Lengths in nm, angles in radians.

References:
    W. Qiao et al., DeepSRFusion (2026) (Gaussian-mixture particles, dynamic template);
    B. Jian and B. C. Vemuri, IEEE TPAMI 33, 1633-1645 (2011) (GMM L2 registration);
    H. Heydarian et al., Nat. Methods 15, 781-784 (2018).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._mapping import map_items, vmap_items
from jaxsr._validate import check_choice, check_int
from jaxsr.fusion.gmm import GMM, _log_weights, _pose_loss_and_grad, gmm_correlation
from jaxsr.fusion.particles import Particles, _validate_particles
from jaxsr.fusion.rotations import rotation_matrix, so2_grid, so3_grid, symmetry_group

COSTS = ("likelihood", "l2")

__all__ = ["COSTS", "Registration", "register_particles", "rotation_grid", "pad_gmm", "shift_grid"]


class Registration(NamedTuple):
    """Poses of particles in the template frame: ``template ~ points @ rotations[p].T + translations[p]``.

    Attributes:
        rotations: ``(P, d, d)``.
        translations: ``(P, d)`` nm.
        log_overlap: ``(P,)`` final ``log <moved particle, template>`` (unblurred).
        correlation: ``(P,)`` normalised overlap in ``[0, 1]`` (quality, for outlier rejection).
    """

    rotations: Any
    translations: Any
    log_overlap: Any
    correlation: Any


def rotation_grid(n: int, *, dim: int, inplane: bool = False, flip: bool = True) -> np.ndarray:
    """Start rotations for the multi-start search.

    Args:
        n: grid size (3D: rotations on SO(3); 2D and ``inplane``: angles about z).
        dim: 2 or 3.
        inplane: 3D particles lying in a plane (e.g. nuclear pores in the nuclear
            envelope): rotations about z only, times ``{identity, up/down flip}``
            when ``flip`` (the particle may be seen from either side).
        flip: see ``inplane``.

    Returns:
        ``(G, d, d)`` float32.
    """
    n = check_int(n, "n", minimum=1)
    if dim == 2:
        return so2_grid(n).astype(np.float32)
    if not inplane:
        return so3_grid(n).astype(np.float32)
    rz = symmetry_group(n, dim=3)
    if flip:
        rz = np.concatenate([rz, rz @ np.diag([1.0, -1.0, -1.0])], 0)
    return rz.astype(np.float32)


def pad_gmm(gmm: GMM, *, size: int | None = None, multiple: int = 64) -> GMM:
    """Pad a mixture with weight-0 components to ``size`` (default: the next multiple of ``multiple``)
    so that templates of slightly different sizes share one compiled registration."""
    m = int(np.shape(gmm.weights)[0])
    size = int(-(-m // multiple) * multiple) if size is None else int(size)
    if size < m:
        raise ValueError(f"argument 'size': {size} is smaller than the mixture ({m} components)")
    d = int(np.shape(gmm.means)[-1])
    pad = size - m
    means = np.concatenate([np.asarray(gmm.means, np.float32), np.zeros((pad, d), np.float32)])
    covs = np.concatenate([np.asarray(gmm.covs, np.float32), np.broadcast_to(np.eye(d, dtype=np.float32), (pad, d, d))])
    weights = np.concatenate([np.asarray(gmm.weights, np.float32), np.zeros(pad, np.float32)])
    return GMM(means, covs, weights)


def _isotropic_terms(var, logw, tmpl: GMM, blur):
    """The grid stage's per-pair variances ``v (N, M)`` (point and component variances averaged over
    axes, plus the blur) and log-normalisers ``base (N, M)``."""
    d = tmpl.means.shape[-1]
    tvar = jnp.trace(tmpl.covs, axis1=-2, axis2=-1) / d
    v = var[:, None] + tvar[None, :] + 2.0 * blur * blur
    base = logw[:, None] + _log_weights(tmpl.weights)[None, :] - 0.5 * d * jnp.log(2.0 * jnp.pi * v)
    return v, base


def _pose_scores(ln, logw, cost):
    """Scores ``(P,)`` of ``P`` poses from their log pair terms ``ln (P, N, M)``."""
    if cost == "l2":
        return jax.nn.logsumexp(ln.reshape(ln.shape[0], -1), axis=-1)
    w = jnp.exp(logw)
    per_point = jax.nn.logsumexp(ln - logw[None, :, None], axis=-1)          # (P, N)
    return jnp.sum(jnp.where(w > 0, w * per_point, 0.0), axis=-1)


def _grid_scores(pts, var, logw, tmpl: GMM, grid, blur, cost):
    """log-overlap at every grid rotation with isotropic covariances: ``(G,)``.

    One ``(G N, d) @ (d, M)`` matrix product gives every rotated point against
    every template mean; the variances are the per-point and per-component means
    over axes plus the blur."""
    d = pts.shape[-1]
    g = grid.shape[0]
    xr = (grid.reshape(g * d, d) @ pts.T).reshape(g, d, -1)              # (G, d, N)
    x2 = jnp.sum(pts * pts, -1)                                         # |R x|^2 = |x|^2
    cross = jnp.einsum("gkn,mk->gnm", xr, tmpl.means)
    d2 = jnp.maximum(x2[None, :, None] + jnp.sum(tmpl.means**2, -1)[None, None, :] - 2.0 * cross, 0.0)
    v, base = _isotropic_terms(var, logw, tmpl, blur)
    return _pose_scores(base[None] - 0.5 * d2 / v[None], logw, cost)


def _grid_scores_shifted(pts, var, logw, tmpl: GMM, grid, shifts, blur, cost):
    """:func:`_grid_scores` at every grid rotation and every translation of ``shifts`` ``(K, d)``: ``(G, K)``.

    Mapped over the rotations (memory ``K N M`` at a time)."""
    v, base = _isotropic_terms(var, logw, tmpl, blur)
    m2 = jnp.sum(tmpl.means**2, -1)

    def one(rot):
        moved = (pts @ rot.T)[None] + shifts[:, None, :]                       # (K, N, d)
        d2 = jnp.sum(moved * moved, -1)[..., None] + m2 - 2.0 * moved @ tmpl.means.T
        return _pose_scores(base[None] - 0.5 * jnp.maximum(d2, 0.0) / v[None], logw, cost)

    return map_items(one, grid, batch_size=8)


def _distinct_top(scores, grid, shifts, n, rot_cos, shift_nm):
    """The ``n`` best ``(rotation, shift)`` cells of ``scores (G, K)``, greedily, each at least
    ``acos(rot_cos)`` in rotation or ``shift_nm`` in translation away from those already taken
    (non-maximum suppression: the top cells of a smooth score are otherwise neighbours of one peak)."""
    d = grid.shape[-1]

    def pick(s, _):
        i = jnp.argmax(s)
        g, k = i // s.shape[1], i % s.shape[1]
        cos = (jnp.einsum("gij,ij->g", grid, grid[g]) - (d - 2)) / 2.0       # trace = d - 2 + 2 cos(angle)
        near = (cos[:, None] > rot_cos) & (jnp.linalg.norm(shifts - shifts[k], axis=-1)[None, :] < shift_nm)
        return jnp.where(near, -jnp.inf, s), (g, k)

    _, (g, k) = jax.lax.scan(pick, scores, None, length=n)
    return grid[g], shifts[k]


def _moved(pts, sig2, rot, t):
    means = pts @ rot.T + t
    covs = jnp.einsum("ij,nj,kj->nik", rot, sig2, rot)
    return means, covs


def _tangent(g_rot, rot):
    """Gradient with respect to a left rotation increment ``R <- exp(w) R``: ``vee(B - B^T)``, ``B = dL/dR R^T``."""
    b = g_rot @ rot.T
    if rot.shape[-1] == 2:
        return (b[1, 0] - b[0, 1])[None]
    return jnp.stack([b[2, 1] - b[1, 2], b[0, 2] - b[2, 0], b[1, 0] - b[0, 1]])


def _refine(pts, sig2, logw, tmpl, start, start_t, blurs, *, steps, lr_rot, lr_shift_nm, cost):
    """Adam on the rotation's tangent space and the translation, from one start, through the blur schedule.

    The rotation is updated multiplicatively, ``R <- exp(-lr_rot step) R``, so it
    never leaves SO(d) and has no singular parametrisation; the loss gradient is
    the hand-written one of :func:`jaxsr.fusion.gmm._pose_loss_and_grad`.
    """
    d = pts.shape[-1]
    frac = jnp.arange(steps, dtype=pts.dtype) / max(steps - 1, 1)
    schedule = 0.05 + 0.95 * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))   # cosine decay to 5 % per scale
    n_rot = 1 if d == 2 else 3

    def scale(carry, blur):
        def step(state, lr):
            rot, t, m, v, k = state
            _, g_rot, g_t = _pose_loss_and_grad(pts, sig2, logw, tmpl, rot, t, blur, cost)
            g = jnp.concatenate([_tangent(g_rot, rot), g_t])
            g = jnp.where(jnp.isfinite(g), g, 0.0)
            k = k + 1.0
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            direction = (m / (1.0 - 0.9**k)) / (jnp.sqrt(v / (1.0 - 0.999**k)) + 1e-12)
            w = -lr * lr_rot * direction[:n_rot]
            rot = rotation_matrix(w[0] if d == 2 else w, dim=d) @ rot
            t = t - lr * lr_shift_nm * direction[n_rot:]
            return (rot, t, m, v, k), None

        rot, t = carry
        z = jnp.zeros(n_rot + d, pts.dtype)
        (rot, t, _, _, _), _ = jax.lax.scan(step, (rot, t, z, z, jnp.zeros((), pts.dtype)), schedule)
        return (rot, t), None

    (rot, t), _ = jax.lax.scan(scale, (start, start_t), blurs)
    loss, _, _ = _pose_loss_and_grad(pts, sig2, logw, tmpl, rot, t, blurs[-1], cost)
    return rot, t, -loss


def _register_one(pts, sig, msk, extra, grid_tmpl, tmpl, grid, blurs, lr_rot, lr_shift_nm, extra_t=None,
                  shifts=None, nms=None, *, n_starts, steps, cost):
    """The pose of one particle: grid scores, the best ``n_starts`` (plus ``extra``) refined, the best kept.

    ``extra (E, d, d)`` and ``extra_t (E, d)`` (default 0): given starts. ``shifts (K, d)``: translations
    tried with every grid rotation (``None``: only 0), the ``n_starts`` best cells kept distinct by
    ``nms = (rot_cos, shift_nm)`` (see :func:`_distinct_top`)."""
    m = msk.astype(pts.dtype)
    logw = _log_weights(m / jnp.maximum(jnp.sum(m), 1.0))
    sig2 = sig * sig
    var = jnp.mean(sig2, -1)
    d = pts.shape[-1]
    if shifts is None:
        scores = _grid_scores(pts, var, logw, grid_tmpl, grid, blurs[0], cost)
        _, top = jax.lax.top_k(scores, n_starts)
        cand, cand_t = grid[top], jnp.zeros((n_starts, d), pts.dtype)
    else:
        scores = _grid_scores_shifted(pts, var, logw, grid_tmpl, grid, shifts, blurs[0], cost)
        cand, cand_t = _distinct_top(scores, grid, shifts, n_starts, nms[0], nms[1])
    if extra_t is None:
        extra_t = jnp.zeros(extra.shape[:1] + (d,), pts.dtype)
    cand = jnp.concatenate([cand, extra], 0)
    cand_t = jnp.concatenate([cand_t, extra_t], 0)
    # grid cells go through the whole blur schedule; given starts (a previous pose) stay at the finest
    # scale, where the coarse ones would pull a sparse particle onto the template's dense centre
    sched = jnp.concatenate([jnp.broadcast_to(blurs, (n_starts,) + blurs.shape),
                             jnp.broadcast_to(blurs[-1], (extra.shape[0],) + blurs.shape)], 0)
    rots, ts, vals = vmap_items(
        lambda s, t0, b: _refine(pts, sig2, logw, tmpl, s, t0, b, steps=steps, lr_rot=lr_rot,
                                 lr_shift_nm=lr_shift_nm, cost=cost)
    )(cand, cand_t, sched)
    vals = jnp.where(jnp.isfinite(vals), vals, -jnp.inf)
    best = jnp.argmax(vals)
    rot, t = rots[best], ts[best]
    # quality: normalised correlation at the finest scale
    means, covs = _moved(pts, sig2, rot, t)
    moved = GMM(means, covs, jnp.exp(logw))
    corr = gmm_correlation(moved, tmpl, blur_nm=blurs[-1])
    return rot, t, vals[best], corr


@functools.partial(jax.jit, static_argnames=("n_starts", "steps", "batch_size", "cost"))
def _register_batch(points, sigma, mask, grid_tmpl, tmpl, grid, starts, blurs, lr_rot, lr_shift_nm, starts_t,
                    shifts, nms, *, n_starts, steps, batch_size, cost):
    def one(args):
        pts, sig, msk, extra, extra_t = args
        return _register_one(pts, sig, msk, extra, grid_tmpl, tmpl, grid, blurs, lr_rot, lr_shift_nm, extra_t,
                             shifts, nms, n_starts=n_starts, steps=steps, cost=cost)

    return map_items(one, (points, sigma, mask, starts, starts_t), batch_size=batch_size)


@functools.lru_cache(maxsize=16)
def _sharded_register(n_starts, steps, batch_size, cost, mesh):
    """:func:`_register_one` over particles spread on the ``"batch"`` axis of ``mesh``, ``batch_size`` at a
    time on each device (one compiled function per settings and mesh)."""
    from jaxsr.parallel.batch import sharded_vmap  # noqa: PLC0415 (jaxsr.parallel imports the methods)

    one = functools.partial(_register_one, n_starts=n_starts, steps=steps, cost=cost)
    return sharded_vmap(one, in_axes=(0, 0, 0, 0) + (None,) * 6 + (0, None, None), mesh=mesh, batch_size=batch_size)


def _grid_step(grid: np.ndarray) -> float:
    """Median angle (rad) from each grid rotation to its nearest neighbour."""
    g = np.asarray(grid, np.float64)
    d = g.shape[-1]
    tr = np.einsum("aij,bij->ab", g, g)
    cos = np.clip((tr - (d - 2)) / 2.0, -1.0, 1.0)
    np.fill_diagonal(cos, -1.0)
    return float(np.median(np.arccos(cos.max(axis=1)))) if len(g) > 1 else np.pi


def _shift_step(shifts: np.ndarray) -> float:
    """Median distance (nm) from each shift to its nearest neighbour."""
    s = np.asarray(shifts, np.float64)
    if len(s) < 2:
        return 0.0
    dist = np.linalg.norm(s[:, None] - s[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    return float(np.median(dist.min(axis=1)))


def shift_grid(radius_nm: float, step_nm: float, *, dim: int) -> np.ndarray:
    """Translations on a square (cubic) lattice of pitch ``step_nm`` inside a ball of ``radius_nm``:
    ``(K, dim)`` nm, 0 included (for ``register_particles(shifts=...)``)."""
    radius, step = float(radius_nm), float(step_nm)
    if not (np.isfinite(radius) and radius >= 0):
        raise ValueError(f"argument 'radius_nm': expected a finite radius >= 0, got {radius_nm}")
    if not (np.isfinite(step) and step > 0):
        raise ValueError(f"argument 'step_nm': expected a positive step, got {step_nm}")
    n = int(np.floor(radius / step))
    axis = np.arange(-n, n + 1) * step
    pts = np.stack(np.meshgrid(*([axis] * dim), indexing="ij"), -1).reshape(-1, dim)
    return pts[np.linalg.norm(pts, axis=1) <= radius + 1e-9].astype(np.float32)


def register_particles(
    particles: Particles,
    template: GMM,
    *,
    coarse_template: GMM | None = None,
    grid: Any = None,
    starts: Any = None,
    n_starts: int = 4,
    blur_nm: Any = (12.0, 6.0, 0.0),
    steps: int = 30,
    lr_rot: float = 0.03,
    lr_shift_nm: float = 1.0,
    batch_size: int = 8,
    cost: str = "likelihood",
    mesh: Any = None,
    start_translations: Any = None,
    shifts: Any = None,
) -> Registration:
    """Register every particle to a template mixture (``jit`` + ``lax.map`` over particles).

    Args:
        particles: centred :class:`Particles` (``points (P, N, d)``).
        template: the template :class:`GMM` (centred), used for refinement.
        coarse_template: a smaller mixture of the same template for the grid stage
            (default: ``template``).
        grid: ``(G, d, d)`` start rotations (default :func:`rotation_grid` with 2000
            rotations in 3D, 72 angles in 2D).
        starts: ``(P, E, d, d)`` extra starts per particle (e.g. the previous pose), always refined,
            at the finest scale only (``blur_nm[-1]``, for as many steps as the whole schedule): they
            are meant to be near their basin already, and the coarse scales would pull a sparse
            particle onto the template's dense centre (measured on 2D DNA-origami grids, 20 localizations
            per site, registered to the template of their true poses with the true pose as a start
            and 4 grid cells through 20/10/5/0 nm: 89 % stay within 5 degrees, 7 % when the start
            went through the whole schedule too).
        start_translations: ``(P, E, d)`` nm, the translations of ``starts`` (default 0).
        shifts: ``(K, d)`` nm, translations tried with every grid rotation at the grid stage
            (``None``, the default: only 0, the particle's centroid on the template's centre). A
            sparse particle's centroid can lie far from the structure's centre (a few labelled
            sites of a DNA-origami grid: 15 nm r.m.s. on a 60 x 40 nm grid), too far for the
            refinement to find the right basin from 0; the ``n_starts`` best (rotation, shift)
            cells are then kept apart by non-maximum suppression (at least 1.5 grid steps in
            rotation or 1.5 shift steps in translation from each other). The grid stage's blur
            (``blur_nm[0]``) must then be fine, about the shift step: blurred, the overlap
            prefers the particle's centroid on the template's dense centre whatever its shape
            (measured on half-visible asymmetric particles 20 nm off centre: 0 of 12 registered
            at 4 or 8 nm blur with 5 nm shifts, 12 of 12 within 1.5 degrees at 3 nm blur with
            3 nm shifts, 0 of 12 without shifts). Work: ``G x K`` cells instead of ``G``.
        n_starts: grid rotations refined per particle (the best by coarse overlap).
        blur_nm: the coarse-to-fine schedule (nm), ``(S,)``; the grid stage uses the first.
        steps: Adam steps per scale.
        lr_rot: largest rotation step (rad) of Adam (cosine-decayed to 5 % within each scale).
        lr_shift_nm: largest translation step (nm).
        batch_size: particles registered at once (memory ~ batch x starts x N x M); with a
            ``mesh``, on each device.
        mesh: ``None`` (default): one device. A :class:`jax.sharding.Mesh` with a ``"batch"``
            axis (:func:`jaxsr.parallel.batch.batch_mesh`): the particles are spread over its
            devices (:func:`jaxsr.parallel.batch.sharded_vmap`, padded to a multiple of the
            device count by repeating the last particle), each registered by the same
            computation; poses equal the one-device poses to float32 round-off (a start whose
            final overlap ties another's to round-off may win instead).

    Returns:
        :class:`Registration` (NumPy arrays).

    Raises:
        TypeError: ``particles`` is not a :class:`jaxsr.fusion.Particles`.
        ValueError: ``particles`` with inconsistent shapes, a NaN or infinite position or a
            non-positive uncertainty in a masked row; mismatched dimensions, an empty grid, more
            starts than grid rotations, a ``mesh`` without a ``"batch"`` axis.
    """
    if mesh is not None:
        from jaxsr.parallel.batch import check_mesh  # noqa: PLC0415

        n_dev = check_mesh(mesh)
    _validate_particles(particles)
    pts = jnp.asarray(particles.points, jnp.float32)
    d = pts.shape[-1]
    if np.shape(template.means)[-1] != d:
        raise ValueError(f"argument 'template': {np.shape(template.means)[-1]}-D mixture for {d}-D particles")
    grid = rotation_grid(2000 if d == 3 else 72, dim=d) if grid is None else np.asarray(grid, np.float32)
    if grid.ndim != 3 or grid.shape[1:] != (d, d) or grid.shape[0] == 0:
        raise ValueError(f"argument 'grid': expected a (G, {d}, {d}) array of rotations, got shape {grid.shape}")
    n_starts = check_int(n_starts, "n_starts", minimum=1)
    if n_starts > grid.shape[0]:
        raise ValueError(f"argument 'n_starts': {n_starts} starts from a grid of {grid.shape[0]} rotations")
    steps = check_int(steps, "steps", minimum=1)
    check_choice(cost, "cost", COSTS)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    blurs = np.atleast_1d(np.asarray(blur_nm, np.float32))
    if blurs.ndim != 1 or not np.all(np.isfinite(blurs)) or np.any(blurs < 0):
        raise ValueError("argument 'blur_nm': expected a sequence of non-negative blurs (nm)")
    n_p = pts.shape[0]
    if starts is None:
        starts = np.broadcast_to(grid[:1], (n_p, 1, d, d))   # the grid's first rotation, harmless
    starts = np.asarray(starts, np.float32)
    if starts.ndim != 4 or starts.shape[0] != n_p or starts.shape[2:] != (d, d):
        raise ValueError(f"argument 'starts': expected ({n_p}, E, {d}, {d}), got shape {starts.shape}")
    if start_translations is None:
        start_t = np.zeros(starts.shape[:2] + (d,), np.float32)
    else:
        start_t = np.asarray(start_translations, np.float32)
        if start_t.shape != starts.shape[:2] + (d,) or not np.all(np.isfinite(start_t)):
            raise ValueError(f"argument 'start_translations': expected finite ({n_p}, {starts.shape[1]}, {d}) "
                             f"translations, got shape {start_t.shape}")
    nms = None
    if shifts is not None:
        shifts = np.asarray(shifts, np.float32)
        if shifts.ndim != 2 or shifts.shape[1] != d or shifts.shape[0] == 0 or not np.all(np.isfinite(shifts)):
            raise ValueError(f"argument 'shifts': expected a finite (K, {d}) array of translations (nm), "
                             f"got shape {shifts.shape}")
        nms = (jnp.float32(np.cos(1.5 * _grid_step(grid))), jnp.float32(1.5 * _shift_step(shifts)))
        shifts = jnp.asarray(shifts)
    tmpl = pad_gmm(template)
    gt = pad_gmm(coarse_template if coarse_template is not None else template)
    sigma, mask = jnp.asarray(particles.sigma, jnp.float32), jnp.asarray(particles.mask)
    grid, starts, blurs = jnp.asarray(grid), jnp.asarray(starts), jnp.asarray(blurs)
    lr_rot, lr_shift_nm = jnp.float32(lr_rot), jnp.float32(lr_shift_nm)
    if mesh is None:
        out = _register_batch(pts, sigma, mask, gt, tmpl, grid, starts, blurs, lr_rot, lr_shift_nm,
                              jnp.asarray(start_t), shifts, nms, n_starts=n_starts, steps=steps,
                              batch_size=min(batch_size, n_p), cost=cost)
    else:  # each device maps over its own particles, batch_size at a time
        run = _sharded_register(n_starts, steps, min(batch_size, -(-n_p // n_dev)), cost, mesh)
        out = run(pts, sigma, mask, starts, gt, tmpl, grid, blurs, lr_rot, lr_shift_nm, jnp.asarray(start_t),
                  shifts, nms)
    return Registration(*(np.asarray(o) for o in out))
