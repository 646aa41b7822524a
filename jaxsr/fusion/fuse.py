"""Particle fusion with a dynamic template (DeepSRFusion-style), symmetry priors and outlier rejection.

Algorithm (:func:`fuse`):

1. Every particle is centred on its centroid.
2. **Seed**: ``n_seed`` particles drawn from the best-labelled quarter are registered
   all-to-all (with the overlap, ``"l2"``, cost) and their poses are averaged
   (:func:`synchronise_poses`: spectral rotation synchronisation that drops inconsistent
   pairs, then translations by truncated least squares); the consistent half seeds the first
   template. A single random particle as the first template is fragile (it may be poorly
   labelled). For 3D particles with a symmetry the seed is the medoid of the all-to-all set
   (registered with the fusion's ``cost``; the particle that fits the others best): unfolding the
   pairs modulo a 3D point group (as ``init="all_to_all"`` does) needs more pairs than a few seeds give.
3. **Dynamic template**: every particle is registered to the template
   (:func:`jaxsr.fusion.register_particles`: multi-start grid + refinement, with
   the previous pose as an extra start), poorly fitting particles are rejected
   (robust z-score of their normalised overlap below ``-outlier_mad``), and the
   aligned localizations of the rest become the next template. With a known
   ``symmetry`` (n-fold, optionally with the up/down ``flip``), the template's
   symmetry axis is found and turned onto z, and the template is averaged over the
   symmetry group (the prior). Repeat ``n_iter`` times or until the median pose
   change is below ``tol_deg``.

**Learned initialisation** (``init="learned"``, :mod:`jaxsr.fusion.learned`): a pose network
proposes a few poses per particle in its class's reference frame, so the seed template is built
from them directly (no all-to-all seed) and the grid search is replaced by a local grid around each
proposal, scored coarsely, the best refined; particles that still fit poorly are re-registered with
the grid (counted in ``history``), and when a probe of particles fits the grid clearly better, the
network does not know the data and the fusion falls back to ``init="grid"``.

**All-to-all** (``init="all_to_all"``, the classical baseline of Heydarian et al.): every unordered
pair of particles is registered once (``P (P - 1) / 2`` registrations, with the overlap cost), the
absolute poses are found by synchronising all pairs (:func:`synchronise_poses`; for 3D particles with
a symmetry, each pair is first unfolded modulo the symmetry group against the current poses), and the
dynamic-template iterations then refine them (the baseline's "bootstrapping" step). Its cost grows as
``P^2``, the dynamic template's as ``P``.

Templates are mixtures reduced to one component per occupied voxel
(:func:`jaxsr.fusion.reduce_gmm`, ``voxel_nm`` for refinement and
``coarse_voxel_nm`` for the grid search), padded to a multiple of 64 components
so that successive iterations reuse one compiled registration.

References:
    W. Qiao et al., DeepSRFusion (2026) (dynamic template, Gaussian-mixture particles);
    H. Heydarian et al., Nat. Methods 15, 781-784 (2018) and
    H. Heydarian et al., "3D particle averaging and detection of macromolecular
    symmetry in localization microscopy", Nat. Commun. 12, 2847 (2021)
    (all-to-all registration, the classical baseline).
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._mapping import map_items
from jaxsr._validate import check_choice, check_int, positive_float, real_float
from jaxsr.fusion.gmm import GMM, _log_weights, gmm_correlation, gmm_log_overlap, reduce_gmm
from jaxsr.fusion.measure import _halves_frc, pose_errors
from jaxsr.fusion.particles import Particles, _validate_particles, centre_particles, make_particles
from jaxsr.fusion.register import COSTS, Registration, _register_one, pad_gmm, register_particles, rotation_grid
from jaxsr.fusion.rotations import _np_rotation_2d, rotation_angle, so3_exp, sphere_grid, symmetry_group

__all__ = ["FusionResult", "fuse", "build_template", "symmetry_frame", "apply_poses", "synchronise_poses", "INITS",
           "GoldStandardFRC", "gold_standard_frc"]

log = logging.getLogger(__name__)

#: rounds of unfolding the pairs modulo a 3D symmetry group and synchronising (init="all_to_all")
_UNFOLD_ROUNDS = 5

#: Initialisations of :func:`fuse`: the exhaustive multi-start grid, a pose network's proposals, or
#: the classical all-to-all registration of every pair with pose synchronisation (the baseline).
INITS = ("grid", "learned", "all_to_all")


class FusionResult(NamedTuple):
    """The fused particle and every particle's pose.

    Attributes:
        rotations: ``(P, d, d)``; a localization ``x`` of particle ``p`` (input
            coordinates, nm) lands at ``rotations[p] @ x + translations[p]`` in the fused frame.
        translations: ``(P, d)`` nm.
        correlation: ``(P,)`` normalised overlap (:func:`jaxsr.fusion.gmm_correlation`, at the
            finest registration blur) of each particle at its final pose with the final ``template``;
            the ``history`` entries' ``mean_correlation`` is that of each iteration's registration
            with the template it registered to.
        inliers: ``(P,)`` bool, particles used in the final template.
        template: the final template :class:`GMM` (fused frame; symmetry axis on z when
            a symmetry was given).
        points: ``(P, N, d)`` every localization in the fused frame (padding rows 0).
        history: one dict per iteration (``mean_correlation``, ``median_change_deg``, ``n_inliers``).
    """

    rotations: np.ndarray
    translations: np.ndarray
    correlation: np.ndarray
    inliers: np.ndarray
    template: GMM
    points: np.ndarray
    history: list


def apply_poses(particles: Particles, rotations: Any, translations: Any) -> np.ndarray:
    """Localizations moved into the fused frame: ``(P, N, d)``, ``x -> R_p x + t_p`` (padding rows 0)."""
    pts = np.asarray(particles.points, np.float64)
    out = np.einsum("pij,pnj->pni", np.asarray(rotations, np.float64), pts) + np.asarray(translations)[:, None, :]
    return np.where(np.asarray(particles.mask)[..., None], out, 0.0)


def _aligned_mixture(particles: Particles, rotations: np.ndarray, translations: np.ndarray, use: np.ndarray,
                     include_uncertainty: bool):
    """Means, covariances and weights of every localization of the particles in ``use``, aligned."""
    pts = apply_poses(particles, rotations, translations)
    mask = np.asarray(particles.mask) & use[:, None]
    d = pts.shape[-1]
    if include_uncertainty:
        sig2 = np.asarray(particles.sigma, np.float64) ** 2
        covs = np.einsum("pij,pnj,pkj->pnik", rotations, sig2, rotations)[mask]
    else:
        covs = np.broadcast_to(_FLOOR_NM2 * np.eye(d), (int(mask.sum()), d, d))
    return pts[mask], covs, np.ones(int(mask.sum()))


def _density_cap(value: Any) -> float | None:
    if value is None:
        return None
    cap = positive_float(value, "density_cap")
    if cap > 1.0:
        raise ValueError(f"argument 'density_cap': expected a fraction in (0, 1], got {value}")
    return cap


_FLOOR_NM2 = 0.25   # (0.5 nm)^2: keeps every template component positive definite


def build_template(
    particles: Particles, rotations: Any, translations: Any, *, use: Any = None, group: Any = None,
    voxel_nm: float = 4.0,
    max_components: int | None = 256,
    include_uncertainty: bool = False,
    density_cap: float | None = None,
) -> GMM:
    """The template mixture of aligned particles: their localizations, optionally averaged over a symmetry group.

    Args:
        particles: centred :class:`Particles`.
        rotations, translations: poses into the template frame ``(P, d, d)``, ``(P, d)``.
        use: ``(P,)`` bool, the particles to include (default all).
        group: ``(K, d, d)`` symmetry rotations (about the frame's origin) to average over.
        voxel_nm: components are merged per voxel of this size (moment matching).
        max_components: then clustered into at most this many (:func:`jaxsr.fusion.reduce_gmm`).
        include_uncertainty: add each localization's own (rotated) covariance to the
            template. Off by default: the aligned positions are already spread by
            their uncertainty once, and the registration cost adds the particle's
            uncertainty again, so including it would blur the template a third
            time (measured on simulated pores: median pose error 2.3 -> see
            ``benchmarks/eval_fusion.py``).
        density_cap: ``None`` (default) or a fraction in (0, 1]: every component's peak density, seen
            through the particles' median localization precision, is capped at this fraction of the
            highest, so that all well-populated sites weigh alike. Against rich-get-richer on sparse
            periodic structures: a particle showing a few sites of a DNA-origami grid fits many
            lattice positions equally, the centre sites collect the most, and with the template's
            own weights the next registration prefers them even more, until the template is two
            blobs (see :func:`fuse` and ``benchmarks/eval_fusion.py``).

    Returns:
        :class:`GMM`; every component's covariance is the spread of the
        localizations merged into it (plus their uncertainty with ``include_uncertainty``).
    """
    rotations = np.asarray(rotations, np.float64)
    translations = np.asarray(translations, np.float64)
    use = np.ones(rotations.shape[0], bool) if use is None else np.asarray(use, bool)
    means, covs, w = _aligned_mixture(particles, rotations, translations, use, include_uncertainty)
    if group is not None:
        g = np.asarray(group, np.float64)
        means = np.einsum("kij,nj->kni", g, means).reshape(-1, means.shape[1])
        covs = np.einsum("kij,njl,kml->knim", g, covs, g).reshape(-1, *covs.shape[1:])
        w = np.tile(w, g.shape[0])
    out = reduce_gmm(means, covs, w, voxel_nm=voxel_nm, max_components=max_components)
    cap = _density_cap(density_cap)
    if cap is None:
        return out
    sig = np.asarray(particles.sigma, np.float64)[np.asarray(particles.mask) & use[:, None]]
    s2 = float(np.median(np.mean(sig**2, axis=-1))) if sig.size else 0.0
    c = np.asarray(out.covs, np.float64)
    root_det = np.sqrt(np.linalg.det(c + s2 * np.eye(c.shape[-1])))
    height = np.asarray(out.weights, np.float64) / root_det
    w = np.minimum(height, cap * height.max()) * root_det
    return GMM(out.means, out.covs, (w / w.sum()).astype(np.asarray(out.weights).dtype))


def _rotation_to_z(u: np.ndarray) -> np.ndarray:
    """A rotation taking unit vector ``u`` onto +z."""
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(u, z)
    s = np.linalg.norm(axis)
    c = float(np.clip(u @ z, -1.0, 1.0))
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    return np.asarray(so3_exp(axis / s * np.arctan2(s, c)), np.float64)


def _axis_rotation(u: np.ndarray, angle: float) -> np.ndarray:
    return np.asarray(so3_exp(np.asarray(u, np.float64) * angle), np.float64)


@jax.jit
def _self_overlaps(tmpl: GMM, rots: jax.Array, blur: jax.Array) -> jax.Array:
    """``log <T, R_k T>`` for a batch of rotations about the origin."""
    def one(r):
        moved = GMM(tmpl.means @ r.T, r @ tmpl.covs @ r.T, tmpl.weights)
        return gmm_log_overlap(tmpl, moved, blur_nm=blur)
    return map_items(one, rots, batch_size=8)


@functools.lru_cache(maxsize=8)
def _hemisphere_rotations(n_fold: int) -> np.ndarray:
    """The rotations by ``2 pi / n_fold`` about 600 directions of the hemisphere (fixed: computed once)."""
    step = 2.0 * np.pi / n_fold
    out = np.stack([_axis_rotation(u, step) for u in sphere_grid(600, hemisphere=True)]).astype(np.float32)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8)
def _flip_rotations(n_fold: int) -> tuple[np.ndarray, np.ndarray]:
    """The flip axes searched by :func:`symmetry_frame` and the rotations by pi about them (fixed)."""
    half = np.pi / (2 * n_fold)
    phis = np.linspace(-half, half, 61)
    rots = np.stack([_axis_rotation(np.array([np.cos(p), np.sin(p), 0.0]), np.pi) for p in phis])
    phis.setflags(write=False)
    rots.setflags(write=False)
    return phis, rots


def symmetry_frame(template: GMM, *, n_fold: int, flip: bool = False, blur_nm: float = 4.0) -> np.ndarray:
    """The rotation that puts a 3D template's n-fold symmetry axis on z (and, with ``flip``, its
    two-fold flip axis on x).

    The axis maximises the overlap of the template with itself rotated by
    ``2 pi / n_fold`` about it: a search over 600 directions of the hemisphere,
    then about 100 directions within 6 degrees of the best. The flip axis maximises the
    overlap with the template rotated by pi about an in-plane axis (61 angles within +-pi/(2n)
    of x, so an already canonical frame stays put).

    Args:
        template: a centred 3D :class:`GMM` (its centroid on the axis).
        n_fold: the rotational symmetry (>= 2).
        flip: also align the up/down flip axis.
        blur_nm: blur for the overlaps (nm).

    Returns:
        ``(3, 3)`` rotation ``A``: ``A @ x`` is the symmetric frame.
    """
    n_fold = check_int(n_fold, "n_fold", minimum=2)
    if np.shape(template.means)[-1] != 3:
        raise ValueError("argument 'template': the symmetry axis search needs a 3D template")
    template = reduce_gmm(*template, voxel_nm=4.0, max_components=128)   # plenty for an axis
    tmpl = GMM(*(jnp.asarray(a, jnp.float32) for a in template))
    blur = jnp.float32(blur_nm)
    step = 2.0 * np.pi / n_fold

    def best(dirs, rots=None):
        if rots is None:
            rots = np.stack([_axis_rotation(u, step) for u in dirs]).astype(np.float32)
        vals = np.asarray(_self_overlaps(tmpl, jnp.asarray(rots), blur))
        return dirs[int(np.argmax(vals))]

    u = best(sphere_grid(600, hemisphere=True), _hemisphere_rotations(n_fold))
    cone = sphere_grid(3000, hemisphere=True)
    cone = cone[cone[:, 2] > np.cos(np.radians(6.0))]          # ~ 100 directions within 6 degrees of z
    u = best(cone @ _rotation_to_z(u))                         # ... turned to lie around u
    frame = _rotation_to_z(u / np.linalg.norm(u))
    if flip:
        moved = GMM(np.asarray(template.means) @ frame.T, frame @ np.asarray(template.covs) @ frame.T,
                    np.asarray(template.weights))
        # flip axes repeat every pi/n; search the period around x so that a frame that is already
        # canonical stays put (a jump of pi/(2n) would rotate the template between iterations)
        phis, rots = _flip_rotations(n_fold)
        vals = np.asarray(_self_overlaps(GMM(*(jnp.asarray(a, jnp.float32) for a in moved)),
                                         jnp.asarray(rots, jnp.float32), blur))
        phi = phis[int(np.argmax(vals))]
        frame = _axis_rotation(np.array([0.0, 0.0, 1.0]), -phi) @ frame
    return frame


def _robust_inliers(corr: np.ndarray, outlier_mad: float) -> np.ndarray:
    med = np.median(corr)
    mad = 1.4826 * np.median(np.abs(corr - med))
    if mad <= 0:
        return np.ones_like(corr, bool)
    return (corr - med) / mad > -outlier_mad


def _pose_change_deg(r_old: np.ndarray, r_new: np.ndarray, group: np.ndarray | None) -> np.ndarray:
    """Per-particle pose change between iterations, modulo the symmetry group and a common change of frame
    (re-canonicalising the template moves every pose alike; that is not a change of the fusion)."""
    return pose_errors(r_new, np.swapaxes(r_old, -1, -2), group=group)[0]


# at most this many rounds of the translation synchronisation's truncated least squares: the threshold
# halves from residuals of up to 10 um down to 5 nm in 11, two more for the kept pairs to settle
_TRANSLATION_ROUNDS = 13


def synchronise_poses(
    rotations: Any, translations: Any, weights: Any, *, n_fold: int = 1, n_reweight: int = 5,
    inlier_deg: float = 10.0, inlier_nm: float = 5.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Absolute poses from pairwise registrations (rotation averaging / synchronisation).

    ``rotations[i, j]``, ``translations[i, j]`` register particle ``i`` onto particle
    ``j`` (``x_j ~ R_ij x_i + t_ij``). Absolute poses ``(A_i, b_i)`` into a common
    frame satisfy ``A_j R_ij = A_i`` and ``A_j t_ij + b_j = b_i``. Rotations come
    from the leading eigenvectors of the weighted pairwise matrix (spectral
    synchronisation; in 2D the complex numbers ``exp(i n theta_ij)``, which also
    removes an ``n``-fold symmetry, in 3D the 3 x 3 blocks ``R_ij``), refined by
    ``n_reweight`` rounds that keep only the pairs consistent within ``inlier_deg``
    (a wrong pairwise registration is inconsistent with the rest); translations by
    truncated weighted least squares over the consistent pairs: pairs that agree in
    rotation may still disagree in translation (two sparse copies of a lattice
    registered one period apart), so pairs whose residual exceeds a threshold are
    dropped, the threshold halving each round from the largest residual down to
    ``inlier_nm`` (each particle keeps its best-fitting pair, so none is left floating).

    Args:
        rotations: ``(P, P, d, d)``. translations: ``(P, P, d)`` nm. weights: ``(P, P)`` >= 0
            (0 = no measurement).
        n_fold: rotational symmetry about z (2D only; 3D needs 1).
        n_reweight: consistency rounds.
        inlier_deg: a pair is consistent when its rotation agrees with the averaged poses within this.
        inlier_nm: the final translation threshold (nm) of the truncated least squares.

    Returns:
        ``(A (P, d, d), b (P, d), residual_deg (P,))`` with ``residual_deg`` each particle's
        median disagreement with its pairs (large = a particle that fits nothing).

    References:
        A. Singer, "Angular synchronization by eigenvectors and semidefinite programming",
        Appl. Comput. Harmon. Anal. 30, 20-36 (2011); X. Huang et al., "Translation synchronization
        via truncated least squares", NeurIPS (2017); H. Heydarian et al., Nat. Methods 15,
        781-784 (2018) (all-to-all registration + rotation averaging for particle fusion).
    """
    r = np.asarray(rotations, np.float64)
    t = np.asarray(translations, np.float64)
    w0 = np.asarray(weights, np.float64).copy()
    n_p, d = r.shape[0], r.shape[-1]
    inlier_nm = positive_float(inlier_nm, "inlier_nm")
    np.fill_diagonal(w0, 0.0)
    w0 = 0.5 * (w0 + w0.T)
    if d == 3 and n_fold != 1:
        raise ValueError("argument 'n_fold': 3D synchronisation modulo a symmetry is not supported")
    w = w0.copy()
    if d == 2:
        theta = np.arctan2(r[..., 1, 0], r[..., 0, 0])                    # theta_ij = alpha_i - alpha_j
        z = np.exp(1j * n_fold * theta)
    for _ in range(n_reweight + 1):
        if d == 2:
            h = w * z                                                     # H_ij = w e^{i n (a_i - a_j)}
            h = 0.5 * (h + h.conj().T)
            _, vec = np.linalg.eigh(h)
            v = vec[:, -1] / np.maximum(np.abs(vec[:, -1]), 1e-12)
            alpha = np.angle(v) / n_fold
            a = _np_rotation_2d(alpha)
        else:
            big = np.zeros((3 * n_p, 3 * n_p))
            for i in range(n_p):
                for j in range(n_p):
                    if w[i, j] > 0:
                        big[3 * j:3 * j + 3, 3 * i:3 * i + 3] = w[i, j] * r[i, j]      # A_j^T A_i
            big = 0.5 * (big + big.T)
            _, vec = np.linalg.eigh(big)
            m = np.swapaxes(vec[:, -3:].reshape(n_p, 3, 3), 1, 2)             # Q^T A_i, one frame Q
            if np.mean(np.linalg.det(m)) < 0:                                  # Q a reflection: undo it
                m = np.diag([1.0, 1.0, -1.0]) @ m
            u, _, vt = np.linalg.svd(m)
            fix = np.where(np.linalg.det(u @ vt) < 0, -1.0, 1.0)
            u[:, :, -1] *= fix[:, None]
            a = u @ vt
        # consistency of every pair with the averaged poses: A_j R_ij A_i^T = identity (mod symmetry)
        rel = np.einsum("jab,ijbc,idc->ijad", a, r, a)
        if d == 2:
            res = np.abs(np.angle(np.exp(1j * n_fold * np.arctan2(rel[..., 1, 0], rel[..., 0, 0])))) / n_fold
        else:
            res = rotation_angle(rel)
        res = np.degrees(res)
        w = np.where(res < inlier_deg, w0, 0.0)
    # translations: b_i - b_j = A_j t_ij over the consistent pairs, sum of b = 0, by truncated least
    # squares: pairs that agree in rotation can still disagree in translation (a lattice's pairs shifted by
    # one period), so the pairs whose residual exceeds a threshold that halves every round (down to
    # inlier_nm) are dropped; each particle keeps its best pair
    pi, pj = np.nonzero(w > 0)
    at = np.einsum("kab,kb->ka", a[pj], t[pi, pj])                        # A_j t_ij, (K, d)
    sw = np.sqrt(w[pi, pj])
    design = np.zeros((len(pi) + 1, n_p))
    design[np.arange(len(pi)), pi] = sw
    design[np.arange(len(pi)), pj] = -sw
    design[-1] = 1.0
    rhs = np.concatenate([sw[:, None] * at, np.zeros((1, d))])
    keep = np.ones(len(pi), bool)
    thresh = np.inf
    for _ in range(_TRANSLATION_ROUNDS):
        rows = np.concatenate([keep, [True]])
        b, *_ = np.linalg.lstsq(design[rows], rhs[rows], rcond=None)
        err = np.linalg.norm(b[pi] - b[pj] - at, axis=1)
        if not np.isfinite(thresh):
            thresh = float(err.max()) if err.size else inlier_nm
        thresh = max(0.5 * thresh, inlier_nm)
        new = err <= thresh
        for node in range(n_p):                                           # every particle keeps one pair
            touch = np.nonzero((pi == node) | (pj == node))[0]
            if touch.size and not new[touch].any():
                new[touch[np.argmin(err[touch])]] = True
        if np.array_equal(new, keep) and thresh <= inlier_nm:
            break
        keep = new
    masked = np.where(w0 > 0, res, np.nan)
    residual = np.nanmedian(np.where(np.eye(n_p, dtype=bool), np.nan, masked), axis=1)
    return a, b, residual


def _pairwise(register, template_from, parts: Particles, d: int, cost: str):
    """All-to-all registration of a few particles: ``(R (K, K, d, d), t (K, K, d), log_overlap (K, K))``,
    entry ``[i, j]`` registering particle ``i`` onto particle ``j`` with ``cost``.

    For pose synchronisation :func:`fuse` uses the ``"l2"`` (overlap) cost whatever its own ``cost``:
    both particles are incomplete, and the likelihood asks every localization of ``i`` to be explained
    by ``j``, which wrong poses that pile ``i`` onto ``j``'s few sites satisfy better than the true one
    (on 8 sparse DNA-origami seeds, 2-12 % of the pairs right with the likelihood, 39-52 % with the
    overlap). The medoid seed (3D with a symmetry) keeps the likelihood: with the overlap, 200 pores at
    30 % labelling fused with 1 % of poses within 5 degrees instead of 71.5 %."""
    k = parts.n_particles
    rots = np.zeros((k, k, d, d))
    trans = np.zeros((k, k, d))
    score = np.zeros((k, k))
    eye = np.eye(d)[None]
    for j in range(k):
        ref = template_from(parts.subset([j]), Registration(eye, np.zeros((1, d)), None, None))
        r = register(parts, ref, cost=cost)
        rots[:, j], trans[:, j], score[:, j] = r.rotations, r.translations, r.log_overlap
    return rots, trans, score


def _all_pairs(register, template_from, parts: Particles, d: int, cost: str):
    """Every unordered pair registered once: ``(R (P, P, d, d), t (P, P, d), correlation (P, P))``, entry
    ``[i, j]`` registering particle ``i`` onto ``j`` as in :func:`_pairwise`: ``i > j`` registered, ``[j, i]``
    its inverse. The score is the normalised overlap in ``[0, 1]`` (symmetric in the two particles), not the
    log-overlap, which grows with the particles' localization counts: picking the reference by summed
    log-overlaps chose one with 9 % of its pairs right among 100 pores, by correlation one with about half
    right. The diagonal holds the identity and 0 (no measurement)."""
    k = parts.n_particles
    rots = np.broadcast_to(np.eye(d), (k, k, d, d)).copy()
    trans = np.zeros((k, k, d))
    score = np.zeros((k, k))
    eye = np.eye(d)[None]
    for j in range(k - 1):
        idx = np.arange(j + 1, k)
        ref = template_from(parts.subset([j]), Registration(eye, np.zeros((1, d)), None, None))
        r = register(parts.subset(_padded_index(idx)), ref, cost=cost)     # few compiled batch sizes
        n = len(idx)
        rij, tij = np.asarray(r.rotations, np.float64)[:n], np.asarray(r.translations, np.float64)[:n]
        rots[idx, j], trans[idx, j] = rij, tij
        rots[j, idx] = np.swapaxes(rij, 1, 2)                            # x_i = R^T (x_j - t)
        trans[j, idx] = -np.einsum("kba,kb->ka", rij, tij)
        score[idx, j] = score[j, idx] = np.asarray(r.correlation, np.float64)[:n]
    return rots, trans, score


def _unfold_pairs(rotations: np.ndarray, translations: np.ndarray, a: np.ndarray, b: np.ndarray,
                  group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise registrations of symmetric particles made consistent with the poses ``(a, b)``.

    A pair may have matched particle ``i`` onto a symmetric copy of ``j``: ``A_j R_ij A_i^T = g`` for
    some ``g`` of the symmetry ``group`` (``(G, 3, 3)``, in the frame of ``a``, symmetry axis on z).
    Each pair gets the ``g`` nearest to it under the current poses and is replaced by the registration
    that ``g`` undoes: ``R' = A_j^T g^T A_j R_ij``, ``t' = A_j^T g^T (A_j t_ij + b_j) - A_j^T b_j``, so that
    :func:`synchronise_poses` sees one consistent set of pairs."""
    rel = np.einsum("jab,ijbc,idc->ijad", a, rotations, a)                   # A_j R_ij A_i^T
    ang = rotation_angle(np.einsum("gba,ijbc->ijgac", group, rel))         # angle of g^T rel
    g = group[np.argmin(ang, axis=-1)]                                      # (P, P, 3, 3)
    back = np.einsum("jba,ijcb,jcd->ijad", a, g, a)                         # A_j^T g^T A_j
    r2 = back @ rotations
    t2 = (np.einsum("ijab,ijb->ija", back, translations)
          + np.einsum("jba,ijcb,jc->ija", a, g, b) - np.einsum("jba,jb->ja", a, b)[None])
    return r2, t2


def _canonical_poses(centred: Particles, reg: Registration, inliers: np.ndarray, template_from, *, group,
                     symmetry: int, flip: bool, find_axis: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The registered poses with the fused frame put in a canonical place: the inliers' centroid at 0
    and (3D with an n-fold symmetry, when ``find_axis``) the symmetry axis on z.

    Returns ``(rotations (P, d, d), translations (P, d), frame (d, d))``, float64; ``frame`` is the
    rotation applied to the fused frame (the identity when none was).
    """
    d = centred.dim
    rots, trans = np.asarray(reg.rotations, np.float64), np.asarray(reg.translations, np.float64)
    pts = apply_poses(centred, rots, trans)
    m = np.asarray(centred.mask) & inliers[:, None]
    trans = trans - pts[m].mean(0)
    frame = np.eye(d)
    if find_axis and group is not None and d == 3 and symmetry > 1:
        plain = template_from(centred, Registration(rots, trans, None, None), use=inliers)
        frame = symmetry_frame(plain, n_fold=symmetry, flip=flip)
        rots = frame @ rots
        trans = trans @ frame.T
    return rots, trans, frame


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _correlations(points, sigma, mask, rots, trans, tmpl: GMM, blur, *, batch_size):
    """Normalised overlap of every particle, moved by its pose, with one template (as the registration
    scores its pose: :func:`jaxsr.fusion.gmm_correlation` at the finest blur, equal weights)."""
    def one(args):
        pts, sig, msk, rot, t = args
        m = msk.astype(pts.dtype)
        w = jnp.exp(_log_weights(m / jnp.maximum(jnp.sum(m), 1.0)))
        covs = jnp.einsum("ij,nj,kj->nik", rot, sig * sig, rot)
        return gmm_correlation(GMM(pts @ rot.T + t, covs, w), tmpl, blur_nm=blur)

    return map_items(one, (points, sigma, mask, rots, trans), batch_size=batch_size)


def _result(particles: Particles, centred: Particles, centroids: np.ndarray, rots: np.ndarray, trans: np.ndarray,
            inliers: np.ndarray, template: GMM, history: list, *, blur_nm: Any, batch_size: int) -> FusionResult:
    """The :class:`FusionResult` of poses on centred particles, moved to the input coordinates:
    ``x -> R (x - c_p) + t``; the correlations are measured anew against the final ``template`` (the
    last registration measured them against the template it registered to)."""
    translations = trans - np.einsum("pij,pj->pi", rots, centroids)
    blur = float(np.atleast_1d(np.asarray(blur_nm, np.float64))[-1])
    corr = _correlations(jnp.asarray(centred.points, jnp.float32), jnp.asarray(centred.sigma, jnp.float32),
                         jnp.asarray(centred.mask), jnp.asarray(rots, jnp.float32), jnp.asarray(trans, jnp.float32),
                         pad_gmm(template), jnp.float32(blur),
                         batch_size=min(batch_size, centred.n_particles))
    return FusionResult(
        rotations=rots, translations=translations, correlation=np.asarray(corr), inliers=inliers,
        template=template, points=apply_poses(particles, rots, translations), history=history,
    )


def _padded_templates(template: GMM, voxel_nm: float, max_components: int, coarse_components: int
                      ) -> tuple[GMM, GMM]:
    """The template for refinement and its reduction for the grid stage, padded to fixed sizes so that
    every iteration (and the seed) reuses one compiled registration."""
    coarse = reduce_gmm(*template, voxel_nm=voxel_nm, max_components=coarse_components)
    return (pad_gmm(template, size=max(max_components, np.shape(template.weights)[0])),
            pad_gmm(coarse, size=max(coarse_components, np.shape(coarse.weights)[0])))


def fuse(
    key: jax.Array,
    particles: Particles,
    *,
    n_iter: int = 5,
    symmetry: int = 1,
    flip: bool = False,
    inplane: bool = False,
    n_seed: int = 8,
    outlier_mad: float = 3.0,
    voxel_nm: float = 4.0,
    max_components: int = 256,
    coarse_components: int = 64,
    grid_size: int | None = None,
    n_starts: int = 4,
    blur_nm: Any = (20.0, 10.0, 5.0, 0.0),
    steps: int = 20,
    tol_deg: float = 0.2,
    seed: str = "sync",
    cost: str = "likelihood",
    batch_size: int = 8,
    mesh: Any = None,
    init: str = "grid",
    pose_model: Any = None,
    pose_top_k: int | None = None,
    pose_refine: int = 2,
    pose_rounds: int = 2,
    fallback_mad: float = 3.0,
    n_probe: int = 8,
    shifts: Any = None,
    density_cap: float | None = None,
    restarts: int = 1,
    restart_iter: int = 2,
    later_starts: int = 1,
) -> FusionResult:
    """Fuse particles into one super-particle with a dynamic template.

    Args:
        key: JAX PRNG key (picks the seed particles).
        particles: :class:`Particles`, 2D or 3D, in nm.
        n_iter: template iterations after the seed.
        symmetry: known n-fold rotational symmetry (1 = none), used as a prior: the
            template is averaged over it (about z, after the axis search in 3D).
        flip: the structure also has the up/down flip (dihedral ``D_n``; nuclear pores).
        inplane: 3D particles lying in a plane (rotations about z and the flip only).
        n_seed: particles in the all-to-all seed (>= 2; capped at the particle count).
        outlier_mad: reject particles whose correlation with the template is more than
            this many robust standard deviations below the median (``inf`` keeps all).
        voxel_nm: template voxel (nm) of the first merge (:func:`jaxsr.fusion.reduce_gmm`).
        max_components, coarse_components: template sizes for refinement and for the grid search.
        grid_size: start rotations (default 2000 on SO(3), 72 in 2D, 36 in-plane angles).
        n_starts, blur_nm, steps, cost, batch_size, mesh: see :func:`jaxsr.fusion.register_particles`
            (``mesh``: the particles of every registration spread over the devices of a mesh with a
            ``"batch"`` axis; ``None``, the default, keeps one device).
        tol_deg: stop when the median pose change between iterations falls below this.
        seed: ``"sync"``: the ``n_seed`` seed particles are registered all-to-all and their poses
            averaged (:func:`synchronise_poses`); ``"medoid"``: the seed that fits the others
            best is the reference. 3D particles with a symmetry always use the medoid
            (synchronisation modulo a 3D point group is left to ``init="all_to_all"``).
        init: ``"grid"`` (default): the all-to-all seed and a multi-start grid search over rotations at
            every iteration. ``"learned"``: a pose network (:mod:`jaxsr.fusion.learned`) proposes
            ``pose_top_k`` poses per particle in the class reference frame; the seed template is built
            directly from every particle's most confident pose (averaged over the symmetry group), the
            first iteration refines each particle from the proposed poses and later ones from the
            previous pose, with no grid search. Particles whose correlation after refinement is poor
            (robust z-score below ``-fallback_mad``) are re-registered with the grid (the better pose
            is kept), counted in the log and in each ``history`` entry (``n_fallback``). ``n_probe``
            particles are also registered with the grid at the first iteration: when the grid fits
            clearly better (correlation higher by more than 5 % on more than half of them), the
            network does not know these particles, and the whole fusion is redone with ``"grid"``
            (``history`` entries then carry ``learned_fallback: True``).
            ``"all_to_all"``: the classical baseline (Heydarian et al. 2018, 2021): every unordered
            pair of particles registered once with the overlap cost (``P (P - 1) / 2`` registrations,
            each with the full grid search), the poses synchronised over all pairs
            (:func:`synchronise_poses`, weighted by the pairs' normalised overlaps; 3D particles with a
            symmetry: starting from the poses relative to the particle with the highest summed overlap,
            each pair unfolded modulo the group against the current poses, 5 rounds), then the ``n_iter``
            template iterations (its bootstrapping step). ``history`` entries carry
            ``all_to_all_pairs`` and ``all_to_all_seconds``. For comparison: it costs ``O(P^2)``.
        pose_model: the pose network for ``init="learned"``: a :class:`jaxsr.fusion.PoseNetModel` or a
            model directory (e.g. :func:`jaxsr.fusion.pretrained_pose_net`).
        pose_top_k: proposed poses used per particle (default all the network makes): each with a local grid
            around it (rotations within 30 degrees), scored at the coarse scale like the grid search.
        pose_refine: of those candidates, the best this many are refined.
        pose_rounds: iterations that score the network's candidates (from the second on, together with
            the previous pose, against the sharper template) and, in 3D with a symmetry, re-find the
            symmetry axis; later iterations refine the previous pose alone.
        fallback_mad: the robust z-score below which a learned pose is re-registered with the grid.
        n_probe: particles checked against the grid at the first learned iteration (0: no check).
        shifts: ``(K, d)`` nm translations tried with every grid rotation (:func:`jaxsr.fusion.shift_grid`;
            see :func:`jaxsr.fusion.register_particles`); ``None`` (default): the particle's centroid
            on the template's centre only.
        density_cap: cap on the template's component densities (see :func:`build_template`);
            ``None`` (default): the template keeps the aligned localizations' own weights.
        restarts: independent seeds (``init="grid"``): each is fused for ``restart_iter``
            iterations, and the one whose inlier particles correlate best with its template (the
            last ``history`` entry's ``mean_correlation``) goes on for the remaining iterations.
            The first seed is the one ``restarts=1`` draws from ``key``, the others come from
            ``jax.random.split(key, restarts - 1)``. Every ``history`` entry then records the
            chosen ``restart`` (0-based) and the screened ``restart_correlations``. Costs about
            ``(restarts - 1) * restart_iter`` extra iterations; worth it where one seed can lock onto a
            wrong structure (a shifted or sheared lattice of a sparse periodic particle).
        restart_iter: iterations each restart is screened for (at least 1; capped at ``n_iter``).
        later_starts: grid cells refined per particle in the iterations that start from a previous pose
            (every iteration after the first; all of them after ``init="all_to_all"``), besides that
            pose, which is always refined (capped at ``n_starts``). The first iteration refines
            ``n_starts`` cells. Measured on 200 simulated pores (50 % labelling, D8 with flip): 1
            instead of 4 fused in 49 s instead of 80 s on two CPU cores at 99.5 % instead of 98.5 %
            within 5 degrees (same median error); a particle whose previous pose is wrong still gets
            the grid's best cell against the sharper template.

    For sparse periodic structures (DNA-origami grids at 30 % labelling) use ``shifts``,
    ``density_cap`` and ``restarts`` with a fine grid-stage blur: ``shifts=shift_grid(25, 5, dim=2),
    blur_nm=(5, 0), density_cap=0.25, restarts=4``. With the defaults the template collapses onto a
    few sites. Even with these settings such grids are often not resolved: a seed can settle on a
    sheared or shifted lattice that fits the particles almost as well as the true one, and on three
    simulations of 300 grids at 20 localizations per site, four restarts raised the final mean
    correlation on two (the third kept its first seed) but resolved none when later iterations
    refined 4 grid cells; with ``later_starts=1`` the benchmark's key resolves (unevenly bright
    sites) and two other keys on the same simulation do not (see the README's particle-fusion section).

    Returns:
        :class:`FusionResult`.

    Raises:
        TypeError: ``particles`` is not a :class:`Particles`.
        ValueError: ``particles`` with inconsistent shapes, a NaN or infinite position or a
            non-positive uncertainty where ``mask`` is True; fewer than 2 particles, ``flip``/``inplane``
            in 2D, bad options, ``init="learned"``
            without a ``pose_model``, with one of another dimension, or ``restarts > 1`` with an
            ``init`` other than ``"grid"``.

    References:
        W. Qiao et al., DeepSRFusion (2026).
    """
    _validate_particles(particles)
    n_p, d = particles.n_particles, particles.dim
    if n_p < 2:
        raise ValueError(f"argument 'particles': fusion needs at least 2 particles, got {n_p}")
    n_iter = check_int(n_iter, "n_iter", minimum=1)
    symmetry = check_int(symmetry, "symmetry", minimum=1)
    if d == 2 and (flip or inplane):
        raise ValueError("arguments 'flip' and 'inplane' are for 3D particles")
    n_seed = min(check_int(n_seed, "n_seed", minimum=2), n_p)
    outlier_mad = real_float(outlier_mad, "outlier_mad")
    voxel_nm = positive_float(voxel_nm, "voxel_nm")
    max_components = check_int(max_components, "max_components", minimum=1)
    coarse_components = check_int(coarse_components, "coarse_components", minimum=1)
    tol_deg = real_float(tol_deg, "tol_deg")
    check_choice(cost, "cost", COSTS)
    check_choice(seed, "seed", ("sync", "medoid"))
    check_choice(init, "init", INITS)
    restarts = check_int(restarts, "restarts", minimum=1)
    restart_iter = check_int(restart_iter, "restart_iter", minimum=1)
    later_starts = check_int(later_starts, "later_starts", minimum=1)
    if restarts > 1 and init != "grid":
        raise ValueError(f"argument 'restarts': restarts are for init='grid' (init={init!r} draws no random seed)")
    model = None
    if init == "learned":
        from jaxsr.fusion.learned import _check_model  # noqa: PLC0415 (learned imports fuse's neighbours)

        if pose_model is None:
            raise ValueError("argument 'pose_model': init='learned' needs a pose network "
                             "(a PoseNetModel or a model directory, e.g. pretrained_pose_net('npc3d'))")
        model = _check_model(pose_model)
        if model.config.dim != d:
            raise ValueError(f"argument 'pose_model': a network for {model.config.dim}D particles, "
                             f"the particles are {d}D")
        k_all = model.config.n_hypotheses
        pose_top_k = k_all if pose_top_k is None else min(check_int(pose_top_k, "pose_top_k", minimum=1), k_all)
        pose_refine = check_int(pose_refine, "pose_refine", minimum=1)
        pose_rounds = check_int(pose_rounds, "pose_rounds", minimum=1)
        fallback_mad = real_float(fallback_mad, "fallback_mad")
        n_probe = min(check_int(n_probe, "n_probe", minimum=0), n_p)
    if grid_size is None:
        grid_size = 72 if d == 2 else (36 if inplane else 2000)
    grid = rotation_grid(grid_size, dim=d, inplane=inplane)
    group = None
    if symmetry > 1 or flip:
        group = symmetry_group(symmetry, flip=flip, dim=d)
    if mesh is not None:
        from jaxsr.parallel.batch import check_mesh  # noqa: PLC0415 (jaxsr.parallel imports the methods)

        check_mesh(mesh)
    density_cap = _density_cap(density_cap)
    reg_kw = dict(grid=grid, n_starts=min(n_starts, grid.shape[0]), blur_nm=blur_nm, steps=steps, cost=cost,
                  batch_size=batch_size, mesh=mesh, shifts=shifts)
    centred, centroids = centre_particles(particles)

    def register(subset: Particles, template: GMM, starts=None, **over) -> Registration:
        template, coarse = _padded_templates(template, voxel_nm, max_components, coarse_components)
        if starts is None:
            starts = np.broadcast_to(np.eye(d, dtype=np.float32), (subset.n_particles, 1, d, d))
        return register_particles(subset, template, coarse_template=coarse, starts=starts, **{**reg_kw, **over})

    def template_from(subset, reg, use=None, sym=None):
        return build_template(subset, reg.rotations, reg.translations, use=use, group=sym, voxel_nm=voxel_nm,
                              max_components=max_components, density_cap=density_cap)

    if model is not None:
        out = _fuse_learned(key, particles, centred, centroids, model, register, template_from, group=group,
                            symmetry=symmetry, flip=flip, n_iter=n_iter, outlier_mad=outlier_mad, tol_deg=tol_deg,
                            pose_top_k=pose_top_k, fallback_mad=fallback_mad, n_probe=n_probe,
                            reg_kw=reg_kw, voxel_nm=voxel_nm, max_components=max_components,
                            coarse_components=coarse_components, n_refine=pose_refine, pose_rounds=pose_rounds)
        if out is not None:
            return out
        log.warning("learned initialisation: the grid fits the probe particles clearly better; "
                    "the pose network does not know these particles, fusing with init='grid'")
        res = fuse(key, particles, n_iter=n_iter, symmetry=symmetry, flip=flip, inplane=inplane, n_seed=n_seed,
                   outlier_mad=outlier_mad, voxel_nm=voxel_nm, max_components=max_components,
                   coarse_components=coarse_components, grid_size=grid_size, n_starts=n_starts, blur_nm=blur_nm,
                   steps=steps, tol_deg=tol_deg, seed=seed, cost=cost, batch_size=batch_size, mesh=mesh,
                   shifts=shifts, density_cap=density_cap, restarts=restarts, restart_iter=restart_iter,
                   later_starts=later_starts)
        for h in res.history:
            h.update(learned_fallback=True, n_fallback=n_p)
        return res

    sync = seed == "sync" and not (d == 3 and group is not None)

    def seed_template(k: jax.Array) -> GMM:
        """All-to-all registration of ``n_seed`` well-labelled particles drawn with ``k``."""
        rng = np.random.default_rng(np.asarray(jax.random.key_data(k)).ravel())
        # seeds from the best-labelled quarter: a sparse particle is the most ambiguous reference
        pool = np.argsort(-particles.counts, kind="stable")[: max(n_seed, n_p // 4)]
        seed_idx = np.sort(rng.choice(pool, size=n_seed, replace=False))
        seeds = centred.subset(seed_idx)
        pair_r, pair_t, pair_s = _pairwise(register, template_from, seeds, d, "l2" if sync else cost)
        if sync:
            # rotation averaging: wrong pairwise registrations are inconsistent with the rest and dropped
            weights = np.exp(pair_s - pair_s.max(axis=0, keepdims=True))           # relative fit per reference
            a, b, resid = synchronise_poses(pair_r, pair_t, weights, n_fold=symmetry if d == 2 else 1)
            use = resid <= np.median(resid)
            log.info("seed: %d particles synchronised, median residual %.1f deg", n_seed, float(np.median(resid)))
            return template_from(seeds, Registration(a, b, None, None), use=use)
        medoid = int(np.argmax(pair_s.sum(0) - np.diag(pair_s)))
        log.info("seed: %d particles, medoid %d", n_seed, int(seed_idx[medoid]))
        return template_from(seeds, Registration(pair_r[:, medoid], pair_t[:, medoid], None, None))

    def iterate(state: dict, n: int) -> dict:
        """``n`` more template iterations (fewer when the poses settle) from ``state``."""
        state = dict(state, history=list(state["history"]))
        history, rots, template = state["history"], state["rots"], state["template"]
        for _ in range(n):
            if state["settled"]:
                break
            tick = time.perf_counter()
            starts = None if rots is None else rots[:, None].astype(np.float32)
            over = {} if rots is None else {"n_starts": min(later_starts, reg_kw["n_starts"])}
            reg = register(centred, template, starts, **over)
            inliers = (_robust_inliers(reg.correlation, outlier_mad) if np.isfinite(outlier_mad)
                       else np.ones(n_p, bool))
            new_rots, new_trans, _ = _canonical_poses(centred, reg, inliers, template_from, group=group,
                                                      symmetry=symmetry, flip=flip, find_axis=True)
            change = None if rots is None else float(np.median(_pose_change_deg(rots, new_rots, group)))
            rots = new_rots
            template = template_from(centred, Registration(rots, new_trans, None, None), use=inliers, sym=group)
            history.append(dict(iteration=len(history) + 1, mean_correlation=float(np.mean(reg.correlation[inliers])),
                                median_change_deg=change, n_inliers=int(inliers.sum()),
                                n_components=int(np.shape(template.weights)[0]),
                                seconds=time.perf_counter() - tick))
            log.info("iteration %d: %s", len(history), history[-1])
            state.update(rots=rots, trans=new_trans, template=template, reg=reg, inliers=inliers,
                         settled=change is not None and change < tol_deg)
        return state

    start = dict(rots=None, trans=None, reg=None, inliers=None, history=[], settled=False)
    a2a = {}

    def all_to_all_start() -> dict:
        """Every pair registered, the poses synchronised: the first template and starting poses."""
        tick = time.perf_counter()
        pair_r, pair_t, weights = _all_pairs(register, template_from, centred, d, "l2")   # weights: correlations

        def canonical(a, b):
            tmpl = template_from(centred, Registration(a, b, None, None))
            frame = symmetry_frame(tmpl, n_fold=symmetry, flip=flip)
            return frame @ a, b @ frame.T

        if d == 3 and group is not None:
            # poses relative to the best-connected particle, then pairs unfolded modulo the group and synchronised
            ref = int(np.argmax(weights.sum(0)))
            a, b = pair_r[:, ref], pair_t[:, ref]
            for _ in range(_UNFOLD_ROUNDS):
                a, b = canonical(a, b)
                a, b, resid = synchronise_poses(*_unfold_pairs(pair_r, pair_t, a, b, group), weights)
            a, b = canonical(a, b)
        else:
            a, b, resid = synchronise_poses(pair_r, pair_t, weights, n_fold=symmetry if d == 2 else 1)
        use = resid <= np.median(resid)
        a2a.update(all_to_all_pairs=n_p * (n_p - 1) // 2, all_to_all_seconds=time.perf_counter() - tick)
        log.info("all-to-all: %d pairs synchronised in %.1f s, median residual %.1f deg",
                 a2a["all_to_all_pairs"], a2a["all_to_all_seconds"], float(np.median(resid)))
        return dict(start, rots=a, template=template_from(centred, Registration(a, b, None, None), use=use, sym=group))

    # each seed fused for restart_iter iterations, the best-fitting one goes on (with one seed: straight on).
    # The first seed is the one restarts=1 uses, so restarts can only pick a better-fitting start.
    runs = []
    for i, k in enumerate([key, *jax.random.split(key, restarts - 1)]):
        first = all_to_all_start() if init == "all_to_all" else dict(start, template=seed_template(k))
        runs.append(iterate(first, min(restart_iter, n_iter)))
        if restarts > 1:
            log.info("restart %d of %d: mean correlation %.4f after %d iterations", i + 1, restarts,
                     runs[-1]["history"][-1]["mean_correlation"], len(runs[-1]["history"]))
    scores = [r["history"][-1]["mean_correlation"] for r in runs]
    best = int(np.argmax(scores))
    state = iterate(runs[best], n_iter - len(runs[best]["history"]))
    for h in state["history"]:
        h.update(a2a)
        if restarts > 1:
            h.update(restart=best, restart_correlations=scores)
    return _result(particles, centred, centroids, state["rots"], state["trans"], state["inliers"],
                   state["template"], state["history"], blur_nm=reg_kw["blur_nm"], batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("n_starts", "steps", "batch_size", "cost"))
def _register_local_batch(points, sigma, mask, grids, grid_tmpl, tmpl, blurs, lr_rot, lr_shift_nm, *, n_starts,
                          steps, batch_size, cost):
    """:func:`jaxsr.fusion.register._register_one` with a grid of candidate rotations of each particle's own."""
    d = points.shape[-1]

    def one(args):
        pts, sig, msk, grid = args
        return _register_one(pts, sig, msk, jnp.zeros((0, d, d), pts.dtype), grid_tmpl, tmpl, grid, blurs, lr_rot,
                             lr_shift_nm, n_starts=n_starts, steps=steps, cost=cost)

    return map_items(one, (points, sigma, mask, grids), batch_size=batch_size)


def _local_offsets(d: int, max_deg: float = 30.0) -> np.ndarray:
    """Small rotations about the identity (the identity first): a local grid around a proposed pose
    (3D: the rotations of a 2000-rotation SO(3) grid within ``max_deg``, about 17; 2D: steps of 5 degrees)."""
    if d == 2:
        a = np.radians(np.arange(-max_deg, max_deg + 1e-9, 5.0))
        a = a[np.argsort(np.abs(a), kind="stable")]
        return _np_rotation_2d(a)
    g = rotation_grid(2000, dim=3).astype(np.float64)
    ang = rotation_angle(g)
    near = g[ang < np.radians(max_deg)]
    return np.concatenate([np.eye(3)[None], near[np.argsort(rotation_angle(near), kind="stable")]])


def _register_local(particles: Particles, template: GMM, coarse: GMM, cands: np.ndarray, n_refine: int,
                    reg_kw: dict) -> Registration:
    """Register every particle from its own candidate rotations ``cands (P, C, d, d)``: all scored at the
    coarse scale (as the grid is), the best ``n_refine`` refined (as :func:`register_particles` refines its
    best grid rotations). With a mesh: :func:`register_particles` refining the first ``n_refine`` candidates."""
    d = particles.dim
    blurs = np.atleast_1d(np.asarray(reg_kw["blur_nm"], np.float32))
    if blurs.ndim != 1 or not np.all(np.isfinite(blurs)) or np.any(blurs < 0):
        raise ValueError("argument 'blur_nm': expected a sequence of non-negative blurs (nm)")
    n_refine = min(n_refine, cands.shape[1])
    if reg_kw.get("mesh") is not None:
        kw = {**reg_kw, "grid": np.eye(d, dtype=np.float32)[None], "n_starts": 1}
        return register_particles(particles, template, coarse_template=coarse, starts=cands[:, :n_refine], **kw)
    n_p = particles.n_particles
    out = _register_local_batch(
        jnp.asarray(particles.points, jnp.float32), jnp.asarray(particles.sigma, jnp.float32),
        jnp.asarray(particles.mask), jnp.asarray(np.asarray(cands, np.float32)), pad_gmm(coarse), pad_gmm(template),
        jnp.asarray(blurs), jnp.float32(0.03), jnp.float32(1.0),
        n_starts=n_refine, steps=reg_kw["steps"], batch_size=min(reg_kw["batch_size"], n_p), cost=reg_kw["cost"])
    return Registration(*(np.asarray(o) for o in out))


def _padded_index(idx: np.ndarray, multiple: int = 8) -> np.ndarray:
    """``idx`` padded by repeating its last entry to a multiple of ``multiple`` (few compiled sizes)."""
    n = len(idx)
    size = -(-n // multiple) * multiple
    return np.concatenate([idx, np.full(size - n, idx[-1])])


def _fuse_learned(key, particles, centred, centroids, model, register, template_from, *, group, symmetry, flip,
                  n_iter, outlier_mad, tol_deg, pose_top_k, fallback_mad, n_probe, reg_kw, voxel_nm,
                  max_components, coarse_components, n_refine, pose_rounds):
    """The ``init="learned"`` path of :func:`fuse`; ``None`` when the probe says the network does not fit."""
    from jaxsr.fusion.learned import predict_poses  # noqa: PLC0415

    n_p, d = particles.n_particles, particles.dim
    tick = time.perf_counter()
    pred = predict_poses(model, centred, top_k=pose_top_k)
    # first iteration: a local grid around every hypothesis, scored coarsely; the best n_refine refined
    local = _local_offsets(d)
    hyp_r = np.einsum("lij,pkjm->pklim", local, pred.rotations).reshape(n_p, -1, d, d).astype(np.float32)
    # seed template: every particle's most confident pose, the more confident half, symmetrised
    conf = pred.scores[:, 0]
    use = conf >= np.median(conf)
    template = template_from(centred, Registration(pred.rotations[:, 0], pred.translations[:, 0], None, None),
                             use=use, sym=group)
    log.info("learned initialisation: %d particles, %d hypotheses each, %.1f s", n_p, pose_top_k,
             time.perf_counter() - tick)

    def refine(subset, tmpl, starts):
        tmpl, coarse = _padded_templates(tmpl, voxel_nm, max_components, coarse_components)
        return _register_local(subset, tmpl, coarse, starts, n_refine if starts.shape[1] > 1 else 1, reg_kw)

    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    tried = np.zeros(n_p, bool)
    rots = trans = None
    history: list[dict] = []
    inliers = np.ones(n_p, bool)
    reg = None
    frame_acc = np.eye(d)             # rotation from the network's reference frame to the current one
    for it in range(n_iter):
        tick = time.perf_counter()
        if rots is None:
            starts = hyp_r
        elif it < pose_rounds:        # the hypotheses again, against a sharper template, and the previous pose
            moved = np.einsum("ij,pcjk->pcik", frame_acc, hyp_r)
            starts = np.concatenate([rots[:, None], moved], 1).astype(np.float32)
        else:
            starts = rots[:, None].astype(np.float32)
        reg = refine(centred, template, starts)
        reg = Registration(*(np.array(a) for a in reg))
        if it == 0 and n_probe > 0:
            probe = np.sort(rng.choice(n_p, size=n_probe, replace=False))
            idx = _padded_index(probe)
            grid_reg = register(centred.subset(idx), template, starts[idx, :1])
            gain = np.asarray(grid_reg.correlation)[:n_probe] > 1.05 * reg.correlation[probe]
            log.info("learned initialisation: the grid fits %d of %d probe particles clearly better",
                     int(gain.sum()), n_probe)
            if gain.sum() * 2 > n_probe:
                return None
        poor = ~_robust_inliers(reg.correlation, fallback_mad) if np.isfinite(fallback_mad) else np.zeros(n_p, bool)
        redo = np.flatnonzero(poor & ~tried)
        if redo.size:
            idx = _padded_index(redo)
            grid_reg = register(centred.subset(idx), template, starts[idx, :1])
            better = np.asarray(grid_reg.correlation)[: redo.size] > reg.correlation[redo]
            for field, new in zip(reg, grid_reg):
                field[redo[better]] = np.asarray(new)[: redo.size][better]
            tried[redo] = True
            log.info("iteration %d: %d particles with a poor fit re-registered with the grid (%d improved)",
                     it + 1, redo.size, int(better.sum()))
        inliers = _robust_inliers(reg.correlation, outlier_mad) if np.isfinite(outlier_mad) else np.ones(n_p, bool)
        # the network's frame has the axis on z already; once settled (after pose_rounds), the frame stays put
        new_rots, new_trans, frame = _canonical_poses(centred, reg, inliers, template_from, group=group,
                                                      symmetry=symmetry, flip=flip, find_axis=it < pose_rounds)
        frame_acc = frame @ frame_acc
        change = None if rots is None else float(np.median(_pose_change_deg(rots, new_rots, group)))
        rots, trans = new_rots, new_trans
        template = template_from(centred, Registration(rots, trans, None, None), use=inliers, sym=group)
        history.append(dict(iteration=it + 1, mean_correlation=float(np.mean(reg.correlation[inliers])),
                            median_change_deg=change, n_inliers=int(inliers.sum()),
                            n_components=int(np.shape(template.weights)[0]), n_fallback=int(redo.size),
                            seconds=time.perf_counter() - tick))
        log.info("iteration %d: %s", it + 1, history[-1])
        if change is not None and change < tol_deg:
            break
    return _result(particles, centred, centroids, rots, trans, inliers, template, history,
                   blur_nm=reg_kw["blur_nm"], batch_size=reg_kw["batch_size"])


class GoldStandardFRC(NamedTuple):
    """Resolution of two independently fused halves (:func:`gold_standard_frc`).

    Attributes:
        frc: :class:`jaxsr.metrics.FRCResult` of the two halves' renderings (FSC in 3D).
        halves: the two :class:`FusionResult` (of the particles with ``split`` True, then False).
        rotation, translation: ``(d, d)``, ``(d,)`` nm: the second half's fused frame onto the
            first's (``x -> rotation @ x + translation``).
        points: the two halves' inlier localizations, ``(n_a, d)`` and ``(n_b, d)`` nm, both in
            the first half's fused frame.
    """

    frc: Any
    halves: tuple
    rotation: np.ndarray
    translation: np.ndarray
    points: tuple


def gold_standard_frc(
    key: jax.Array,
    particles: Particles,
    *,
    pixel_size_nm: float = 2.0,
    extent_nm: float | None = None,
    rings_below: int = 3,
    split: Any = None,
    max_points: int = 4000,
    **fuse_kwargs: Any,
) -> GoldStandardFRC:
    """FRC (2D) / FSC (3D) of two halves of the particles, each fused on its own, then aligned.

    :func:`jaxsr.fusion.fusion_frc` splits one fusion into halves that were both
    registered to the same template, so noise aligned to that template correlates in
    both and the figure is optimistic (on 2D DNA-origami grids whose fusion converged to
    a wrong structure it still reports 4-6 nm). Here, as in the "gold-standard" FSC of
    single-particle cryo-EM, each half is fused from its own seed with its own
    templates; the second half's fused localizations (at most ``max_points``, drawn at
    random, each with the isotropic r.m.s. of its uncertainty, as the particles' camera axes
    point every way in the fused frame) are then registered rigidly onto the first half's final
    template (:func:`jaxsr.fusion.register_particles`: rotation grid + refinement), and the two
    renderings are correlated. A fusion that does not converge to the same structure
    from independent halves gets a poor figure.

    Args:
        key: JAX PRNG key (the two fusions' seeds and the point subsample).
        particles: :class:`Particles`, 2D or 3D, nm (at least 4).
        pixel_size_nm: histogram bin (nm). extent_nm: half-width of the field (default: the
            99.5th percentile radius + 10 nm).
        rings_below: see :func:`jaxsr.fusion.fusion_frc` (1: the first fall below 1/7).
        split: ``(P,)`` bool, True for the first half (default: even particle indices).
        max_points: localizations of the second half used to align it.
        **fuse_kwargs: passed to both :func:`fuse` calls (``symmetry``, ``n_iter``, ...).

    Returns:
        :class:`GoldStandardFRC`.

    Raises:
        ValueError: a half with fewer than 2 particles, a ``split`` of the wrong shape.

    References:
        N. Grigorieff, "Resolution measurement in structures derived from single particles",
        Acta Cryst. D56, 1270-1277 (2000); S. H. W. Scheres and S. Chen, Nat. Methods 9,
        853-854 (2012) (independent half-sets).
    """
    _validate_particles(particles)
    n_p = particles.n_particles
    split = (np.arange(n_p) % 2 == 0) if split is None else np.asarray(split)
    if split.shape != (n_p,) or split.dtype != bool:
        raise ValueError(f"argument 'split': expected a ({n_p},) bool array, got {split.dtype} {split.shape}")
    if split.sum() < 2 or (~split).sum() < 2:
        raise ValueError(f"argument 'split': each half needs at least 2 particles, got {int(split.sum())} "
                         f"and {int((~split).sum())}")
    max_points = check_int(max_points, "max_points", minimum=8)
    k_a, k_b, k_s = jax.random.split(key, 3)
    halves, pts, sig = [], [], []
    for k, use in ((k_a, split), (k_b, ~split)):
        sub = particles.subset(np.flatnonzero(use))
        res = fuse(k, sub, **fuse_kwargs)
        m = np.asarray(sub.mask) & res.inliers[:, None]
        halves.append(res)
        pts.append(np.asarray(res.points)[m])
        # sigma is per axis of each particle's camera frame, the points are in the fused frame: keep the
        # isotropic r.m.s. (as the pose network's adaptation does), the same along every fused axis
        sig.append(np.sqrt(np.mean(np.asarray(sub.sigma, np.float64) ** 2, -1))[m])
    rng = np.random.default_rng(np.asarray(jax.random.key_data(k_s)).ravel())
    pick = rng.choice(len(pts[1]), size=min(max_points, len(pts[1])), replace=False)
    centre = pts[1][pick].mean(0)
    probe = make_particles([pts[1][pick] - centre], [sig[1][pick]])
    # the template sizes the fusions used (fuse's defaults unless given)
    opts = {name: par.default for name, par in inspect.signature(fuse).parameters.items()} | fuse_kwargs
    tmpl, coarse = _padded_templates(halves[0].template, opts["voxel_nm"], opts["max_components"],
                                     opts["coarse_components"])
    reg = register_particles(probe, tmpl, coarse_template=coarse, n_starts=4, batch_size=1)
    rot = np.asarray(reg.rotations[0], np.float64)
    trans = np.asarray(reg.translations[0], np.float64) - rot @ centre
    a, b = pts[0], pts[1] @ rot.T + trans
    result = _halves_frc(a, b, pixel_size_nm=pixel_size_nm, extent_nm=extent_nm, rings_below=rings_below)
    return GoldStandardFRC(result, tuple(halves), rot, trans, (a, b))
