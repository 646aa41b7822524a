"""Simulated particles for fusion: nuclear pores and DNA-origami grids as localization point clouds.

A structure is a set of labelled sites (nm, ``(x, y[, z])``, centred). Each
simulated particle is the structure in a random pose, each site labelled with
probability ``labelling`` (the degree of labelling), each labelled site giving
``1 + Poisson(locs_per_site - 1)`` localizations (repeated blinks / binding
events), each displaced by Gaussian localization error drawn in the camera frame
(lateral ``x, y`` and axial ``z`` precision; the particle is rotated, the
camera is not), plus optional clutter localizations uniform in a ball around the
particle.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from jaxsr._validate import check_choice, check_int, positive_float, real_float
from jaxsr.fusion.particles import Particles, make_particles
from jaxsr.fusion.rotations import _np_quaternion_to_matrix, _np_rotation_2d

__all__ = ["npc_sites", "origami_sites", "ParticleSimulation", "simulate_particles"]


def npc_sites(*, radius_nm: float = 53.5, ring_separation_nm: float = 50.0, site_separation_nm: float = 12.0,
              n_fold: int = 8) -> np.ndarray:
    """Labelled sites of a Nup96/Nup107-like nuclear pore: two ``n_fold`` rings, two sites per corner.

    The rings (radius ``radius_nm``, diameter ~107 nm) sit at ``z = +-ring_separation_nm / 2``;
    each corner holds two sites ``site_separation_nm`` apart along the ring. The
    bottom ring mirrors the top one, so the structure has the dihedral symmetry
    ``D_n`` (the n-fold rotations about z and the up/down flip).

    Returns:
        ``(4 n_fold, 3)`` sites in nm, centred.

    References:
        J. V. Thevathasan et al., "Nuclear pores as versatile reference standards for
        quantitative superresolution microscopy", Nat. Methods 16, 1045-1053 (2019).
    """
    r = positive_float(radius_nm, "radius_nm")
    sep = positive_float(ring_separation_nm, "ring_separation_nm")
    site = positive_float(site_separation_nm, "site_separation_nm")
    n_fold = check_int(n_fold, "n_fold", minimum=1)
    half = site / (2.0 * r)
    out = []
    for z in (sep / 2, -sep / 2):
        for k in range(n_fold):
            for s in (-half, half):
                a = 2.0 * np.pi * k / n_fold + s
                out.append([r * np.cos(a), r * np.sin(a), z])
    return np.asarray(out)


def origami_sites(*, rows: int = 3, cols: int = 4, pitch_nm: float = 20.0) -> np.ndarray:
    """Sites of a rectangular DNA-origami grid, ``(rows * cols, 2)`` nm, centred (symmetry ``C_2``)."""
    rows = check_int(rows, "rows", minimum=1)
    cols = check_int(cols, "cols", minimum=1)
    pitch = positive_float(pitch_nm, "pitch_nm")
    yy, xx = np.meshgrid(np.arange(rows) - (rows - 1) / 2, np.arange(cols) - (cols - 1) / 2, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], 1) * pitch


class ParticleSimulation(NamedTuple):
    """Simulated particles with their ground truth.

    Attributes:
        particles: :class:`jaxsr.fusion.Particles` in the camera frame.
        rotations: ``(P, d, d)`` true rotations: ``particle = sites @ R.T + t`` (+ noise).
        translations: ``(P, d)`` nm.
        site_index: ``(P, N)`` int, the site each localization came from (-1: clutter or padding).
        sites: ``(S, d)`` the structure (nm).
    """

    particles: Particles
    rotations: np.ndarray
    translations: np.ndarray
    site_index: np.ndarray
    sites: np.ndarray


def _random_rotations(rng: np.random.Generator, n: int, dim: int, mode: str) -> np.ndarray:
    if mode == "none":
        return np.broadcast_to(np.eye(dim), (n, dim, dim)).copy()
    if dim == 2 or mode == "inplane":
        rz = _np_rotation_2d(rng.uniform(0, 2 * np.pi, n))
        if dim == 2:
            return rz
        out = np.zeros((n, 3, 3))
        out[:, :2, :2] = rz
        out[:, 2, 2] = 1.0
        flip = rng.random(n) < 0.5
        out[flip] = out[flip] @ np.diag([1.0, -1.0, -1.0])
        return out
    q = rng.normal(size=(n, 4))   # normalised Gaussian quaternions are uniform on SO(3)
    return _np_quaternion_to_matrix(q)


def _finite_at_least(value: Any, name: str, minimum: float) -> float:
    """A finite real number ``>= minimum`` as a Python float, or an error naming ``name``."""
    out = real_float(value, name)
    if not (np.isfinite(out) and out >= minimum):
        raise ValueError(f"argument '{name}': expected a finite number >= {minimum:g}, got {value!r}")
    return out


def simulate_particles(
    key: jax.Array,
    sites: Any,
    *,
    n_particles: int,
    labelling: float = 0.5,
    locs_per_site: float = 2.0,
    precision_nm: Any = None,
    precision_spread: float = 0.3,
    rotations: str = "random",
    shift_nm: float = 5.0,
    clutter: float = 0.0,
) -> ParticleSimulation:
    """Simulate sparse, noisy localization point clouds of a structure in random poses.

    Args:
        key: JAX PRNG key (seeds a NumPy generator: counts are ragged).
        sites: ``(S, d)`` labelled sites (nm), ``d`` = 2 or 3 (:func:`npc_sites`, :func:`origami_sites`).
        n_particles: number of particles.
        labelling: degree of labelling, the probability that a site carries a dye.
        locs_per_site: mean localizations per labelled site (``>= 1``).
        precision_nm: localization precision (1 s.d., nm): a number, or ``(lateral, axial)`` in 3D
            (default 3 nm lateral, 9 nm axial).
        precision_spread: log-normal spread (``>= 0``) of each localization's precision
            around ``precision_nm`` (photon counts vary); 0 = all equal. The
            localization's reported ``sigma`` is its true precision.
        rotations: ``"random"`` (uniform over SO(3) / SO(2)), ``"inplane"`` (3D: about
            z, with a random up/down flip) or ``"none"``.
        shift_nm: s.d. of a random translation per particle (nm, ``>= 0``).
        clutter: expected clutter localizations per particle as a fraction (``>= 0``) of its
            real ones (uniform in a ball of the structure's radius + 20 nm).

    Returns:
        :class:`ParticleSimulation`. Particles left with no localization are re-drawn.

    Example:
        >>> import jax
        >>> sim = simulate_particles(jax.random.key(0), npc_sites(), n_particles=4)
        >>> sim.particles.points.shape[0], sim.rotations.shape
        (4, (4, 3, 3))
    """
    s = np.asarray(sites, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] not in (2, 3) or s.shape[0] == 0:
        raise ValueError(f"argument 'sites': expected an (S, 2) or (S, 3) array, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"argument 'sites': must be finite, got {int((~np.isfinite(s)).any(1).sum())} sites "
                         "with NaN or infinite coordinates")
    dim = s.shape[1]
    n_particles = check_int(n_particles, "n_particles", minimum=1)
    dol = real_float(labelling, "labelling")
    if not 0.0 < dol <= 1.0:
        raise ValueError(f"argument 'labelling': expected a degree of labelling in (0, 1], got {dol}")
    lps = _finite_at_least(locs_per_site, "locs_per_site", 1.0)
    if precision_nm is None:
        precision_nm = (3.0, 9.0) if dim == 3 else 3.0
    prec = np.atleast_1d(np.asarray(precision_nm, np.float64))
    if prec.size == 1:
        prec = np.repeat(prec, dim)
    elif dim == 3 and prec.size == 2:
        prec = prec[[0, 0, 1]]
    else:
        raise ValueError("argument 'precision_nm': expected a number or (lateral, axial) in 3D")
    if not np.all(np.isfinite(prec) & (prec > 0)):
        raise ValueError("argument 'precision_nm': must be finite and positive")
    spread = _finite_at_least(precision_spread, "precision_spread", 0.0)
    check_choice(rotations, "rotations", ("random", "inplane", "none"))
    if rotations == "inplane" and dim == 2:
        raise ValueError("argument 'rotations': 'inplane' is for 3D structures")
    shift = _finite_at_least(shift_nm, "shift_nm", 0.0)
    clut = _finite_at_least(clutter, "clutter", 0.0)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    rots = _random_rotations(rng, n_particles, dim, rotations)
    trans = rng.normal(scale=shift, size=(n_particles, dim))
    extent = np.max(np.linalg.norm(s - s.mean(0), axis=1)) + 20.0
    pts_list, sig_list, idx_list = [], [], []
    for p in range(n_particles):
        while True:
            labelled = np.flatnonzero(rng.random(len(s)) < dol)
            counts = 1 + rng.poisson(lps - 1.0, size=len(labelled))
            src = np.repeat(labelled, counts)
            n_clutter = rng.poisson(clut * len(src)) if clut > 0 else 0
            if len(src) + n_clutter > 0:
                break
        clean = s[src] @ rots[p].T + trans[p]
        if n_clutter:
            u = rng.normal(size=(n_clutter, dim))
            u *= (rng.random(n_clutter) ** (1.0 / dim) * extent / np.linalg.norm(u, axis=1))[:, None]
            clean = np.concatenate([clean, u + trans[p]])
            src = np.concatenate([src, np.full(n_clutter, -1)])
        factor = np.exp(spread * rng.normal(size=(len(src), 1))) if spread > 0 else np.ones((len(src), 1))
        sig = prec[None, :] * factor
        pts_list.append(clean + sig * rng.normal(size=sig.shape))
        sig_list.append(sig)
        idx_list.append(src)
    particles = make_particles(pts_list, sig_list)
    site_index = np.full(particles.mask.shape, -1, np.int64)
    for p, src in enumerate(idx_list):
        site_index[p, : len(src)] = src
    return ParticleSimulation(particles, rots, trans, site_index, s)
