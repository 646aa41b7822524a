"""Learned pose initialisation for particle fusion: a PointNet-style network that proposes poses.

A particle (a padded set of localizations with their uncertainties and a mask,
:class:`jaxsr.fusion.Particles`) is centred on its centroid; every real
localization becomes the feature vector ``(x / scale, |x| / scale, log(sigma / 5 nm), 1)``
(``scale`` = :attr:`PoseNetConfig.scale_nm`, about the structure's radius), passed
through a shared per-point MLP; a first masked max-pool gives a global feature
that is appended to every point for a second shared MLP (PointNet's
segmentation-style local + global features), whose masked max and mean pools
feed an MLP head. Padding rows take no part in any pool, so the output does not
depend on the padding nor on the order of the localizations.

The head predicts ``K`` pose hypotheses (multiple-hypothesis prediction,
winner-takes-all training) and a confidence logit for each. A pose is the
rotation ``R`` and translation ``t`` (nm) that take the *centred* particle into
the class reference frame (the frame of the simulator's ``sites``):
``reference ~ R @ x + t``, the same convention as
:class:`jaxsr.fusion.FusionResult` (``R = Q^T`` for a particle simulated as
``Q @ site + shift``). In 2D the rotation is a unit ``(cos, sin)`` pair, in 3D
the continuous 6D representation (two 3-vectors, Gram-Schmidt to the first two
columns, their cross product the third).

Training (:func:`train_pose_net`) draws fresh particles at every step from a
jit-compiled simulator (:func:`pose_net_batch`, the statistics of
:func:`jaxsr.fusion.simulate_particles` with every parameter drawn at random:
degree of labelling 20-90 %, localizations per site, lateral precision, axial
precision in 3D, clutter, uniform rotations over SO(3)/SO(2)). The loss
(:func:`pose_loss`) is the chordal distance ``||R_k - S R||_F^2`` plus a
weighted translation error, minimised over the structure's symmetry group
(``S``: :func:`jaxsr.fusion.symmetry_group`, e.g. ``C_2`` for a 3 x 4 origami
grid, ``D_8`` for a nuclear pore) and over the hypotheses (the best one is
trained; a small weight on the others keeps them alive; the confidence head is
trained to pick the best).

:func:`adapt_pose_net` fine-tunes a network on a user's own particles without
ground truth: the loss is minus the Gaussian-mixture log-overlap
(:func:`jaxsr.fusion.gmm_log_overlap`) of each particle under its best
predicted pose with a fused template.

Shipped models: ``pretrained_pose_net("npc3d")`` (3D nuclear pores, ``D_8``)
and ``pretrained_pose_net("origami2d")`` (2D 3 x 4 origami grids, ``C_2``),
made by ``benchmarks/train_pose_net.py``.

Lengths in nm, angles in radians, the last axis of positions ``(x, y[, z])``.

References:
    W. Qiao et al., DeepSRFusion (2026) (a point-cloud network that gives sparse,
    noisy particles their initial poses);
    C. R. Qi et al., "PointNet: deep learning on point sets for 3D classification
    and segmentation", CVPR 2017;
    Y. Zhou et al., "On the continuity of rotation representations in neural
    networks", CVPR 2019 (the 6D representation);
    C. Rupprecht et al., "Learning in an uncertain world: representing ambiguity
    through multiple hypotheses", ICCV 2017 (winner-takes-all training).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import check_int, positive_float
from jaxsr.fusion.gmm import GMM, gmm_log_overlap
from jaxsr.fusion.particles import Particles, centre_particles
from jaxsr.fusion.rotations import _quaternion_matrix, _rotation_2d, symmetry_group
from jaxsr.fusion.simulate import npc_sites, origami_sites
from jaxsr.nn._config import JsonConfig
from jaxsr.nn.model import read_model_meta, read_model_params, write_model_dir
from jaxsr.nn.train import TrainConfig, fit

__all__ = [
    "PoseNetConfig",
    "PoseSimulation",
    "PoseNetModel",
    "PosePrediction",
    "POSE_NETS",
    "pose_net_init",
    "pose_net_batch",
    "pose_loss",
    "predict_poses",
    "train_pose_net",
    "adapt_pose_net",
    "save_pose_net",
    "load_pose_net",
    "pretrained_pose_net",
]

#: Names of the shipped models (``jaxsr/fusion/pretrained/<name>``).
POSE_NETS = ("npc3d", "origami2d")
_FORMAT = 1
_KIND = "posenet"
_SIGMA_REF_NM = 5.0


def _tuple_field(value, name):
    try:
        out = tuple(int(v) for v in value)
    except Exception as err:  # noqa: BLE001
        raise TypeError(f"argument '{name}': expected a sequence of ints, got {value!r}") from err
    if not out or min(out) < 1:
        raise ValueError(f"argument '{name}': expected positive layer widths, got {value!r}")
    return out


@dataclasses.dataclass(frozen=True)
class PoseNetConfig(JsonConfig):
    """Shape of a pose network and the class it is trained for (JSON-serialisable).

    Attributes:
        dim: 2 or 3 (particle dimension).
        n_fold: rotational symmetry of the class about z (1 = none).
        flip: the class also has the up/down flip (3D dihedral ``D_n``).
        scale_nm: coordinates are divided by this (about the structure's radius, nm).
        point_features: widths of the first shared per-point MLP.
        global_features: widths of the second shared MLP (on point + first global feature).
        head_features: widths of the head MLP.
        n_hypotheses: pose hypotheses ``K`` per particle.
        translation_weight: weight of the translation error (in units of ``scale_nm``) in the loss.
        structure: a name for the class (``"npc"``, ``"origami"``, ``"custom"``...).
    """

    _WHAT = "pose-network settings"

    dim: int = 3
    n_fold: int = 1
    flip: bool = False
    scale_nm: float = 60.0
    point_features: tuple = (64, 128)
    global_features: tuple = (128, 128)
    head_features: tuple = (128, 64)
    n_hypotheses: int = 6
    translation_weight: float = 1.0
    structure: str = "custom"

    def __post_init__(self):
        if self.dim not in (2, 3) or isinstance(self.dim, bool):
            raise ValueError(f"argument 'dim': expected 2 or 3, got {self.dim!r}")
        check_int(self.n_fold, "n_fold", minimum=1)
        check_int(self.n_hypotheses, "n_hypotheses", minimum=1)
        if self.flip and self.dim == 2:
            raise ValueError("argument 'flip': the up/down flip needs 3D (dim=3)")
        positive_float(self.scale_nm, "scale_nm")
        if not (np.isfinite(self.translation_weight) and self.translation_weight >= 0):
            raise ValueError(f"argument 'translation_weight': expected >= 0, got {self.translation_weight!r}")
        for name in ("point_features", "global_features", "head_features"):
            object.__setattr__(self, name, _tuple_field(getattr(self, name), name))

    @property
    def group(self) -> np.ndarray:
        """The symmetry rotations ``(G, d, d)`` of the class (:func:`jaxsr.fusion.symmetry_group`)."""
        return symmetry_group(self.n_fold, flip=self.flip, dim=self.dim)

    @property
    def rot_params(self) -> int:
        return 2 if self.dim == 2 else 6


def _range(value, name):
    lo, hi = (float(v) for v in value)
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo <= hi):
        raise ValueError(f"argument '{name}': expected a range (low, high) with 0 <= low <= high, got {value!r}")
    return (lo, hi)


@dataclasses.dataclass(frozen=True)
class PoseSimulation(JsonConfig):
    """Ranges of the simulated training particles (each particle draws its own values uniformly).

    Attributes:
        labelling: degree of labelling range.
        locs_per_site: mean localizations per labelled site (``1 + Binomial(max_locs - 1, .)``, mean ``m``).
        max_locs: localizations kept per site at most (fixed array size).
        precision_nm: lateral localization precision range (1 s.d., nm; log-uniform).
        axial_factor: 3D: axial precision = lateral x this (range).
        precision_spread: log-normal spread of each localization's precision.
        clutter: expected clutter localizations as a fraction of the real ones (range).
        clutter_slots: clutter localizations per particle at most (fixed array size).
        shift_nm: s.d. of the random translation (nm).
        rotations: ``"random"`` (uniform over SO(3)/SO(2)) or ``"inplane"`` (3D: about z, random flip).
    """

    _WHAT = "pose-simulation settings"

    labelling: tuple = (0.2, 0.9)
    locs_per_site: tuple = (1.5, 4.0)
    max_locs: int = 6
    precision_nm: tuple = (2.0, 6.0)
    axial_factor: tuple = (2.0, 3.5)
    precision_spread: float = 0.3
    clutter: tuple = (0.0, 0.25)
    clutter_slots: int = 24
    shift_nm: float = 5.0
    rotations: str = "random"

    def __post_init__(self):
        for name in ("labelling", "locs_per_site", "precision_nm", "axial_factor", "clutter"):
            object.__setattr__(self, name, _range(getattr(self, name), name))
        if not 0 < self.labelling[0] <= self.labelling[1] <= 1:
            raise ValueError(f"argument 'labelling': expected a range within (0, 1], got {self.labelling}")
        if self.locs_per_site[0] < 1:
            raise ValueError(f"argument 'locs_per_site': expected >= 1, got {self.locs_per_site}")
        if self.precision_nm[0] <= 0:
            raise ValueError(f"argument 'precision_nm': expected positive precisions, got {self.precision_nm}")
        check_int(self.max_locs, "max_locs", minimum=1)
        check_int(self.clutter_slots, "clutter_slots", minimum=1)
        if self.rotations not in ("random", "inplane"):
            raise ValueError(f"argument 'rotations': expected 'random' or 'inplane', got {self.rotations!r}")


@dataclasses.dataclass(frozen=True)
class PoseNetModel:
    """A pose network: its configuration, weights and training information.

    Attributes:
        config: the :class:`PoseNetConfig`.
        params: the Flax variables (``{"params": ...}``).
        info: JSON-serialisable information (structure, simulation, training time...).
    """

    config: PoseNetConfig
    params: Any
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.config, PoseNetConfig):
            raise TypeError(f"argument 'config': expected a PoseNetConfig, got {type(self.config).__name__}")


class PosePrediction(NamedTuple):
    """Pose hypotheses of particles, best first.

    Attributes:
        rotations: ``(P, k, d, d)``: ``reference ~ R @ x + t`` for the particle's input coordinates ``x``.
        translations: ``(P, k, d)`` nm.
        scores: ``(P, k)`` the network's confidence (softmax over all its hypotheses).
    """

    rotations: np.ndarray
    translations: np.ndarray
    scores: np.ndarray


class _PoseNet(nn.Module):
    config: PoseNetConfig

    @nn.compact
    def __call__(self, points, sigma, mask):
        c = self.config
        m = mask.astype(points.dtype)[..., None]                                     # (B, N, 1)
        x = points / c.scale_nm
        r = jnp.sqrt(jnp.sum(x * x, -1, keepdims=True) + 1e-12)
        s = jnp.log(jnp.maximum(sigma, 1e-3) / _SIGMA_REF_NM)
        h = jnp.concatenate([x, r, s, m], -1) * m

        def pool_max(h):
            return jnp.max(jnp.where(m > 0, h, -jnp.inf), axis=-2)

        for w in c.point_features:
            h = nn.gelu(nn.Dense(w)(h))
        g = pool_max(h)
        g = jnp.where(jnp.isfinite(g), g, 0.0)                                       # an empty particle
        h = jnp.concatenate([h, jnp.broadcast_to(g[..., None, :], h.shape[:-1] + g.shape[-1:])], -1)
        for w in c.global_features:
            h = nn.gelu(nn.Dense(w)(h))
        n = jnp.maximum(jnp.sum(m, -2), 1.0)
        gmax = pool_max(h)
        gmax = jnp.where(jnp.isfinite(gmax), gmax, 0.0)
        z = jnp.concatenate([gmax, jnp.sum(h * m, -2) / n, jnp.log(n) / 5.0], -1)
        for w in c.head_features:
            z = nn.gelu(nn.Dense(w)(z))
        k, rp, d = c.n_hypotheses, c.rot_params, c.dim
        out = nn.Dense(k * (rp + d + 1))(z)
        out = out.reshape(out.shape[:-1] + (k, rp + d + 1))
        rot = _rot_from_params(out[..., :rp], d)
        trans = out[..., rp:rp + d] * c.scale_nm
        return rot, trans, out[..., -1]


def _rot_from_params(p, d):
    """2D: ``(cos, sin)`` normalised; 3D: the 6D representation through Gram-Schmidt (Zhou et al. 2019)."""
    if d == 2:
        u = p / jnp.sqrt(jnp.sum(p * p, -1, keepdims=True) + 1e-12)
        c, s = u[..., 0], u[..., 1]
        return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)
    a1, a2 = p[..., :3], p[..., 3:]
    b1 = a1 / jnp.sqrt(jnp.sum(a1 * a1, -1, keepdims=True) + 1e-12)
    a2 = a2 - jnp.sum(b1 * a2, -1, keepdims=True) * b1
    b2 = a2 / jnp.sqrt(jnp.sum(a2 * a2, -1, keepdims=True) + 1e-12)
    b3 = jnp.cross(b1, b2)
    return jnp.stack([b1, b2, b3], -1)                                              # columns


def pose_net_init(key: jax.Array, *, config: PoseNetConfig | None = None) -> PoseNetModel:
    """A freshly initialised pose network.

    Args:
        key: JAX PRNG key (the initial weights).
        config: the :class:`PoseNetConfig` (default: 3D, no symmetry).

    Returns:
        :class:`PoseNetModel`.

    Example:
        >>> import jax
        >>> m = pose_net_init(jax.random.key(0), config=PoseNetConfig(dim=2, n_hypotheses=4))
        >>> m.config.n_hypotheses
        4
    """
    config = PoseNetConfig() if config is None else config
    if not isinstance(config, PoseNetConfig):
        raise TypeError(f"argument 'config': expected a PoseNetConfig, got {type(config).__name__}")
    return PoseNetModel(config, _init_fn(config)(key))


@functools.lru_cache(maxsize=16)
def _init_fn(config: PoseNetConfig):
    """A jitted initialiser per configuration (eager Flax init is seconds of op-by-op dispatch; same weights)."""
    d = config.dim

    def init(key):
        return _PoseNet(config).init(key, jnp.zeros((1, 4, d)), jnp.ones((1, 4, d)), jnp.ones((1, 4), bool))

    return jax.jit(init)


@functools.partial(jax.jit, static_argnames=("config",))
def _apply(params, points, sigma, mask, *, config):
    return _PoseNet(config).apply(params, points, sigma, mask)


# ----------------------------------------------------------------------------------------- simulation
class PoseBatch(NamedTuple):
    """A batch of simulated, centred particles with their true poses (see :func:`pose_net_batch`)."""

    points: jax.Array
    sigma: jax.Array
    mask: jax.Array
    rotations: jax.Array
    translations: jax.Array


def _random_rotation(key, dim, mode):
    if dim == 2:
        return _rotation_2d(jax.random.uniform(key, (), maxval=2 * jnp.pi), jnp)
    if mode == "inplane":
        ka, kf = jax.random.split(key)
        rz = _rotation_2d(jax.random.uniform(ka, (), maxval=2 * jnp.pi), jnp)
        r = jnp.eye(3).at[:2, :2].set(rz)
        flip = jax.random.bernoulli(kf)
        return jnp.where(flip, r @ jnp.diag(jnp.array([1.0, -1.0, -1.0])), r)
    return _quaternion_matrix(jax.random.normal(key, (4,)), jnp)   # Gaussian quaternions: uniform on SO(3)


def _simulate_one(key, sites, sim: PoseSimulation):
    """One simulated particle from two random draws (a uniform and a normal vector, sliced: one threefry
    each keeps the compile short)."""
    n_sites, d = sites.shape
    n_loc, n_c, extra = n_sites * sim.max_locs, sim.clutter_slots, max(sim.max_locs - 1, 1)
    n_pts = n_loc + n_c
    ku, kn = jax.random.split(key)
    sizes_u = [1, n_sites, 1, 1, n_sites * extra, 1, n_c, n_c, 1, 1, 1, 1]
    u_all = jax.random.uniform(ku, (sum(sizes_u),))
    u = jnp.split(u_all, np.cumsum(sizes_u)[:-1])
    sizes_n = [4, d, n_c * d, n_pts, n_pts * d]
    z = jnp.split(jax.random.normal(kn, (sum(sizes_n),)), np.cumsum(sizes_n)[:-1])

    def lerp(v, lo_hi):
        return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * v[0]

    dol = lerp(u[0], sim.labelling)
    lab = u[1] < dol
    forced = jnp.arange(n_sites) == jnp.minimum((u[2][0] * n_sites).astype(jnp.int32), n_sites - 1)
    lab = jnp.where(jnp.any(lab), lab, forced)                                      # never an empty particle
    lps = lerp(u[3], sim.locs_per_site)
    # extra localizations per site: Binomial(max_locs - 1, (m - 1) / (max_locs - 1)), mean m - 1 (a capped
    # stand-in for the simulator's Poisson(m - 1))
    cnt = 1 + jnp.sum(u[4].reshape(n_sites, extra) < (lps - 1.0) / extra, -1)
    real = (lab[:, None] & (jnp.arange(sim.max_locs)[None, :] < cnt[:, None])).reshape(-1)
    src = jnp.repeat(sites, sim.max_locs, axis=0)                                   # (S L, d)
    if d == 2:
        q = _rotation_2d(2 * jnp.pi * u[5][0], jnp)
    elif sim.rotations == "inplane":
        r = jnp.eye(3).at[:2, :2].set(_rotation_2d(2 * jnp.pi * u[5][0], jnp))
        q = jnp.where(u[11][0] < 0.5, r @ jnp.diag(jnp.array([1.0, -1.0, -1.0])), r)
    else:
        q = _quaternion_matrix(z[0], jnp)                                           # uniform on SO(3)
    shift = sim.shift_nm * z[1]
    clean = src @ q.T + shift
    # clutter: uniform in a ball of the structure's radius + 20 nm
    extent = jnp.max(jnp.linalg.norm(sites - jnp.mean(sites, 0), axis=-1)) + 20.0
    frac = lerp(u[8], sim.clutter)
    p_on = jnp.minimum(frac * jnp.sum(real) / n_c, 1.0)
    c_on = u[6] < p_on
    dirs = z[2].reshape(n_c, d)
    dirs = dirs / jnp.sqrt(jnp.sum(dirs * dirs, -1, keepdims=True) + 1e-12)
    clutter = dirs * (u[7] ** (1.0 / d))[:, None] * extent + shift
    pts = jnp.concatenate([clean, clutter], 0)
    mask = jnp.concatenate([real, c_on], 0)
    lat = jnp.exp(np.log(sim.precision_nm[0]) + (np.log(sim.precision_nm[1]) - np.log(sim.precision_nm[0])) * u[9][0])
    if d == 3:
        prec = jnp.stack([lat, lat, lat * lerp(u[10], sim.axial_factor)])
    else:
        prec = jnp.stack([lat, lat])
    factor = jnp.exp(sim.precision_spread * z[3])[:, None]
    sig = prec[None, :] * factor
    noisy = pts + sig * z[4].reshape(n_pts, d)
    w = mask.astype(noisy.dtype)
    centroid = jnp.sum(noisy * w[:, None], 0) / jnp.sum(w)
    x = jnp.where(mask[:, None], noisy - centroid, 0.0)
    sig = jnp.where(mask[:, None], sig, 1.0)
    rot = q.T
    return x, sig, mask, rot, rot @ (centroid - shift)


@functools.partial(jax.jit, static_argnames=("sim", "batch_size"))
def _simulate_batch(key, sites, *, sim, batch_size):
    keys = jax.random.split(key, batch_size)
    return PoseBatch(*jax.vmap(lambda kk: _simulate_one(kk, sites, sim))(keys))


def pose_net_batch(key: jax.Array, sites: Any, *, batch_size: int = 32,
                   sim: PoseSimulation | None = None) -> PoseBatch:
    """Simulated, centred particles of a structure with their true poses (jit-compiled; training data).

    Each particle draws a degree of labelling, mean localizations per site,
    precision (lateral; axial in 3D), clutter fraction, pose and shift from the
    ranges of ``sim``; localizations are displaced by Gaussian errors in the
    camera frame (as :func:`jaxsr.fusion.simulate_particles`) and the particle is
    centred on its centroid.

    Args:
        key: JAX PRNG key.
        sites: ``(S, d)`` the structure (nm), its own reference frame.
        batch_size: particles.
        sim: the :class:`PoseSimulation` ranges (default ones).

    Returns:
        :class:`PoseBatch`: ``points (B, N, d)`` nm (centred), ``sigma (B, N, d)``,
        ``mask (B, N)``, ``rotations (B, d, d)`` and ``translations (B, d)`` with
        ``site ~ rotations @ x + translations`` for every real localization ``x``
        (``N = S * max_locs + clutter_slots``; padding rows 0 with sigma 1).

    Example:
        >>> import jax
        >>> b = pose_net_batch(jax.random.key(0), origami_sites(), batch_size=2)
        >>> b.points.shape, b.rotations.shape
        ((2, 96, 2), (2, 2, 2))
    """
    sim = PoseSimulation() if sim is None else sim
    s = np.asarray(sites, np.float32)
    if s.ndim != 2 or s.shape[1] not in (2, 3) or s.shape[0] == 0:
        raise ValueError(f"argument 'sites': expected an (S, 2) or (S, 3) array, got shape {s.shape}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    return _simulate_batch(key, jnp.asarray(s), sim=sim, batch_size=batch_size)


# ------------------------------------------------------------------------------------------------ loss
def _pose_distances(rotations, translations, true_rotations, true_translations, group, scale, weight):
    """``(..., K)`` min over the group of chordal + weighted translation distance."""
    g = jnp.asarray(group, rotations.dtype)
    sr = jnp.einsum("gij,...jk->...gik", g, true_rotations)                          # (..., G, d, d)
    st = jnp.einsum("gij,...j->...gi", g, true_translations)                         # (..., G, d)
    dr = jnp.sum((rotations[..., :, None, :, :] - sr[..., None, :, :, :]) ** 2, axis=(-2, -1))   # (..., K, G)
    dt = jnp.sum((translations[..., :, None, :] - st[..., None, :, :]) ** 2, -1) / (scale * scale)
    return jnp.min(dr + weight * dt, axis=-1)


def pose_loss(rotations: Any, translations: Any, true_rotations: Any, true_translations: Any, *,
              group: Any = None, translation_scale_nm: float = 50.0, translation_weight: float = 1.0) -> jax.Array:
    """Symmetry-aware multi-hypothesis pose loss: min over hypotheses and symmetries of the pose distance.

    For hypothesis ``(R_k, t_k)`` and truth ``(R, t)`` the distance is
    ``||R_k - S R||_F^2 + w ||t_k - S t||^2 / scale^2`` (the chordal distance,
    ``4 (1 - cos angle)`` for a rotation by ``angle``), minimised over the
    rotations ``S`` of the structure's symmetry group (``S R`` is an equally true
    pose of a symmetric particle) and then over the hypotheses ``k``.

    Args:
        rotations: ``(..., K, d, d)`` predicted. translations: ``(..., K, d)`` nm.
        true_rotations: ``(..., d, d)``. true_translations: ``(..., d)`` nm.
        group: ``(G, d, d)`` symmetry rotations (default: the identity alone).
        translation_scale_nm: translations are compared in units of this.
        translation_weight: ``w``.

    Returns:
        ``(...)`` the loss per particle (0 at the truth or any symmetric copy of it).

    Example:
        >>> import numpy as np
        >>> g = symmetry_group(2, dim=2)
        >>> r = np.eye(2)[None, None]
        >>> float(pose_loss(r, np.zeros((1, 1, 2)), -np.eye(2)[None], np.zeros((1, 2)), group=g)[0])
        0.0
    """
    r = jnp.asarray(rotations)
    t = jnp.asarray(translations)
    qr = jnp.asarray(true_rotations)
    qt = jnp.asarray(true_translations)
    d = r.shape[-1]
    if r.ndim < 3 or r.shape[-2:] != (d, d) or d not in (2, 3):
        raise ValueError(f"argument 'rotations': expected (..., K, d, d) with d = 2 or 3, got shape {r.shape}")
    if t.shape != r.shape[:-1]:
        raise ValueError(f"argument 'translations': expected shape {r.shape[:-1]}, got {t.shape}")
    if qr.shape != r.shape[:-3] + (d, d) or qt.shape != r.shape[:-3] + (d,):
        raise ValueError(f"argument 'true_rotations': expected {r.shape[:-3] + (d, d)} and translations "
                         f"{r.shape[:-3] + (d,)}, got {qr.shape} and {qt.shape}")
    g = np.eye(d)[None] if group is None else np.asarray(group, np.float64)
    if g.ndim != 3 or g.shape[1:] != (d, d):
        raise ValueError(f"argument 'group': expected (G, {d}, {d}) rotations, got shape {g.shape}")
    scale = positive_float(translation_scale_nm, "translation_scale_nm")
    dist = _pose_distances(r, t, qr, qt, g, scale, float(translation_weight))
    return jnp.min(dist, axis=-1)


def _training_loss(rot, trans, logits, batch: PoseBatch, group, config: PoseNetConfig, relax: float = 0.05):
    dist = _pose_distances(rot, trans, batch.rotations, batch.translations, group, config.scale_nm,
                           config.translation_weight)                                  # (B, K)
    best = jnp.argmin(dist, -1)
    wta = jnp.take_along_axis(dist, best[:, None], -1)[:, 0]
    conf = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), best[:, None], -1)[:, 0]
    return jnp.mean(wta + relax * jnp.mean(dist, -1) + 0.1 * conf)


# ------------------------------------------------------------------------------------------- prediction
def _check_model(model) -> PoseNetModel:
    if model is None:
        raise ValueError("argument 'model': a pose model is needed (a PoseNetModel or a model directory)")
    if isinstance(model, (str, os.PathLike)):
        model = load_pose_net(model)
    if not isinstance(model, PoseNetModel):
        raise TypeError(f"argument 'model': expected a PoseNetModel or a model directory, got {type(model).__name__}")
    return model


def _check_particles(particles, model: PoseNetModel) -> Particles:
    if not isinstance(particles, Particles):
        raise TypeError(f"argument 'particles': expected Particles, got {type(particles).__name__}")
    d = particles.dim
    if d not in (2, 3) or np.ndim(particles.points) != 3:
        raise ValueError(f"argument 'particles': expected (P, N, 2) or (P, N, 3) points, got shape "
                         f"{np.shape(particles.points)}")
    if d != model.config.dim:
        raise ValueError(f"argument 'particles': {d}D particles for a pose model of {model.config.dim}D particles")
    return particles


def predict_poses(model: Any, particles: Particles, *, top_k: int | None = None,
                  batch_size: int = 256) -> PosePrediction:
    """The network's pose hypotheses for every particle, most confident first.

    Args:
        model: a :class:`PoseNetModel` or a model directory.
        particles: :class:`jaxsr.fusion.Particles` of the model's dimension (any
            position: each is centred here, and the poses apply to the input coordinates).
        top_k: hypotheses kept per particle (default all ``K``).
        batch_size: particles per network call.

    Returns:
        :class:`PosePrediction`: ``rotations (P, k, d, d)``, ``translations (P, k, d)`` nm,
        ``scores (P, k)``, with ``reference ~ R @ x + t``.

    Raises:
        ValueError: no model, a model of another dimension, ``top_k`` above ``K``.

    Example:
        >>> import jax
        >>> from jaxsr.fusion.simulate import simulate_particles
        >>> m = pose_net_init(jax.random.key(0), config=PoseNetConfig(dim=2, n_hypotheses=4))
        >>> sim = simulate_particles(jax.random.key(1), origami_sites(), n_particles=3)
        >>> predict_poses(m, sim.particles, top_k=2).rotations.shape
        (3, 2, 2, 2)
    """
    model = _check_model(model)
    particles = _check_particles(particles, model)
    k_all = model.config.n_hypotheses
    top_k = k_all if top_k is None else check_int(top_k, "top_k", minimum=1)
    if top_k > k_all:
        raise ValueError(f"argument 'top_k': {top_k} hypotheses asked of a network that makes {k_all}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    centred, centroids = centre_particles(particles)
    pts = np.asarray(centred.points, np.float32)
    sig = np.asarray(centred.sigma, np.float32)
    msk = np.asarray(centred.mask, bool)
    n_p = pts.shape[0]
    bs = min(batch_size, n_p)
    rots, trans, logits = [], [], []
    for i in range(0, n_p, bs):
        sl = slice(i, i + bs)
        p, s, m = pts[sl], sig[sl], msk[sl]
        if p.shape[0] < bs:   # pad the last chunk: one compiled shape
            pad = bs - p.shape[0]
            p = np.concatenate([p, np.zeros((pad,) + p.shape[1:], p.dtype)])
            s = np.concatenate([s, np.ones((pad,) + s.shape[1:], s.dtype)])
            m = np.concatenate([m, np.zeros((pad,) + m.shape[1:], bool)])
        r, t, lg = _apply(model.params, p, s, m, config=model.config)
        n = min(bs, n_p - i)
        rots.append(np.asarray(r)[:n])
        trans.append(np.asarray(t)[:n])
        logits.append(np.asarray(lg)[:n])
    rot = np.concatenate(rots).astype(np.float64)
    tr = np.concatenate(trans).astype(np.float64)
    lg = np.concatenate(logits).astype(np.float64)
    prob = np.exp(lg - lg.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    order = np.argsort(-prob, axis=-1, kind="stable")[:, :top_k]
    rot = np.take_along_axis(rot, order[..., None, None], 1)
    tr = np.take_along_axis(tr, order[..., None], 1)
    # poses of the centred particle -> of the input coordinates: R (x - c) + t
    tr = tr - np.einsum("pkij,pj->pki", rot, centroids)
    return PosePrediction(rot, tr, np.take_along_axis(prob, order, 1))


# ----------------------------------------------------------------------------------------------- training
def _structure(structure, sites, config):
    if sites is None:
        if structure == "npc":
            return npc_sites(), PoseNetConfig(dim=3, n_fold=8, flip=True, scale_nm=60.0, structure="npc")
        if structure == "origami":
            return origami_sites(), PoseNetConfig(dim=2, n_fold=2, flip=False, scale_nm=35.0, structure="origami")
        raise ValueError(f"argument 'structure': expected 'npc' or 'origami' (or pass sites=), got {structure!r}")
    s = np.asarray(sites, np.float64)
    if s.ndim != 2 or s.shape[1] not in (2, 3) or s.shape[0] == 0:
        raise ValueError(f"argument 'sites': expected an (S, 2) or (S, 3) array, got shape {s.shape}")
    if config is None:
        radius = float(np.max(np.linalg.norm(s - s.mean(0), axis=1)))
        config = PoseNetConfig(dim=s.shape[1], scale_nm=max(radius, 1.0), structure=structure or "custom")
    return s, config


def _seed_from(key) -> int:
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


def train_pose_net(
    key: jax.Array,
    *,
    structure: str | None = "npc",
    sites: Any = None,
    config: PoseNetConfig | None = None,
    sim: PoseSimulation | None = None,
    train: TrainConfig | None = None,
    model: PoseNetModel | None = None,
    checkpoint_dir: Any = None,
    callback: Any = None,
    evaluate: Any = None,
) -> PoseNetModel:
    """Train a pose network on simulated particles of one structure (fresh particles at every step).

    Args:
        key: JAX PRNG key: the initial weights and (through ``train.seed``, which it
            replaces) every training batch; the same key gives the same network.
        structure: ``"npc"`` (:func:`jaxsr.fusion.npc_sites`, ``D_8``, 3D) or ``"origami"``
            (:func:`jaxsr.fusion.origami_sites`, ``C_2``, 2D), or a name for ``sites``.
        sites: ``(S, d)`` a custom structure (nm, centred; its frame is the reference).
        config: the :class:`PoseNetConfig` (default: the structure's; its ``n_fold``/``flip``
            set the symmetry group of the loss, ``dim`` must match the sites).
        sim: the :class:`PoseSimulation` ranges.
        train: :class:`jaxsr.nn.TrainConfig` (``steps``, ``batch_size``, ``learning_rate``...;
            ``patch_size`` is unused).
        model: continue from this network instead of a fresh one.
        checkpoint_dir: checkpoints (resumed when present), see :func:`jaxsr.nn.fit`.
        callback, evaluate: see :func:`jaxsr.nn.fit`.

    Returns:
        :class:`PoseNetModel` (``info`` records the simulation, training settings, steps, loss history).

    Raises:
        ValueError: an unknown structure, sites of the wrong shape or dimension.

    References:
        W. Qiao et al., DeepSRFusion (2026); C. R. Qi et al., PointNet, CVPR 2017;
        Y. Zhou et al., CVPR 2019.
    """
    s, default = _structure(structure, sites, config)
    config = default if config is None else config
    if not isinstance(config, PoseNetConfig):
        raise TypeError(f"argument 'config': expected a PoseNetConfig, got {type(config).__name__}")
    if config.dim != s.shape[1]:
        raise ValueError(f"argument 'config': a {config.dim}D network for {s.shape[1]}D sites")
    sim = PoseSimulation() if sim is None else sim
    if sim.rotations == "inplane" and config.dim == 2:
        raise ValueError("argument 'sim': 'inplane' rotations are for 3D structures")
    train = TrainConfig(steps=2000, batch_size=32, learning_rate=1e-3, schedule="onecycle") if train is None else train
    if not isinstance(train, TrainConfig):
        raise TypeError(f"argument 'train': expected a TrainConfig, got {type(train).__name__}")
    k_init, k_data = jax.random.split(key)
    train = dataclasses.replace(train, seed=_seed_from(k_data))
    if model is None:
        model = pose_net_init(k_init, config=config)
    elif model.config != config:
        raise ValueError("argument 'model': its configuration differs from 'config'")
    sites_j = jnp.asarray(s, jnp.float32)
    group = jnp.asarray(config.group, jnp.float32)
    bs = train.batch_size

    def sample(k):
        return _simulate_batch(k, sites_j, sim=sim, batch_size=bs)

    def loss_fn(params, batch, _key):
        rot, trans, logits = _PoseNet(config).apply(params, batch.points, batch.sigma, batch.mask)
        return _training_loss(rot, trans, logits, batch, group, config)

    meta = {"config": config.to_dict(), "sim": sim.to_dict(), "sites": np.round(s, 6).tolist()}
    res = fit(loss_fn, model.params, sample, config=train, checkpoint_dir=checkpoint_dir, meta=meta,
              callback=callback, evaluate=evaluate)
    info = {**model.info, "structure": config.structure, "sim": sim.to_dict(), "train": train.to_dict(),
            "steps": res.step, "history": res.history}
    return PoseNetModel(config, res.params, info)


def _adapt_batch(key, data, *, batch_size, dim, augment):
    pts, sig, msk = data[:3]
    kidx, krot = jax.random.split(key)
    idx = jax.random.randint(kidx, (batch_size,), 0, pts.shape[0])
    p, s, m = pts[idx], sig[idx], msk[idx]
    if augment:   # a random rotation of the particle (labels are not needed: the loss is the overlap)
        a = jax.vmap(lambda k: _random_rotation(k, dim, "random"))(jax.random.split(krot, batch_size))
        p = jnp.einsum("bij,bnj->bni", a, p)
        # sigma is per camera axis; under a rotation keep the isotropic mean (a mild approximation)
        s = jnp.broadcast_to(jnp.sqrt(jnp.mean(s * s, -1, keepdims=True)), s.shape)
    return p, s, m


def adapt_pose_net(
    key: jax.Array,
    model: Any,
    particles: Particles,
    template: GMM,
    *,
    steps: int = 200,
    batch_size: int = 16,
    learning_rate: float = 1e-4,
    blur_nm: float = 5.0,
    augment: bool = True,
    checkpoint_dir: Any = None,
) -> PoseNetModel:
    """Self-supervised fine-tuning on a user's own particles: no ground truth, a fused template instead.

    The loss of a particle is ``min_k -log <T_k f, g>``: minus the Gaussian-mixture
    log-overlap (:func:`jaxsr.fusion.gmm_log_overlap`, blurred by ``blur_nm``) of
    the particle ``f`` moved by its hypothesis ``k`` with the template ``g`` (e.g.
    :attr:`jaxsr.fusion.FusionResult.template` from a grid fusion); the
    confidence head learns to pick the best hypothesis. With ``augment`` each
    particle is also seen under a random rotation (its true pose then changes
    with it, which the loss does not need to know). A structure the simulator
    never produced can then be fused with ``init="learned"``.

    Args:
        key: JAX PRNG key (batches and augmentations).
        model: a :class:`PoseNetModel` or model directory.
        particles: :class:`jaxsr.fusion.Particles` of the model's dimension.
        template: the fused template :class:`jaxsr.fusion.GMM` (its frame becomes the reference).
        steps, batch_size, learning_rate: the optimisation (Adam, cosine decay).
        blur_nm: extra blur of the overlap (nm), widening its basin.
        augment: random rotations of the particles.
        checkpoint_dir: see :func:`jaxsr.nn.fit`.

    Returns:
        The fine-tuned :class:`PoseNetModel` (``info["adapted"]`` records the run).

    References:
        W. Qiao et al., DeepSRFusion (2026) (self-supervised adaptation to the fused template).
    """
    model = _check_model(model)
    particles = _check_particles(particles, model)
    if not isinstance(template, tuple) or len(template) != 3:
        raise TypeError(f"argument 'template': expected a GMM, got {type(template).__name__}")
    if np.shape(template.means)[-1] != model.config.dim:
        raise ValueError(f"argument 'template': a {np.shape(template.means)[-1]}D mixture for a "
                         f"{model.config.dim}D pose model")
    steps = check_int(steps, "steps", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    blur = positive_float(blur_nm, "blur_nm") if blur_nm != 0 else 0.0
    centred, _ = centre_particles(particles)
    config = model.config
    tmpl = GMM(*(jnp.asarray(a, jnp.float32) for a in template))
    data = (jnp.asarray(centred.points, jnp.float32), jnp.asarray(centred.sigma, jnp.float32),
            jnp.asarray(centred.mask), tmpl)
    dim = config.dim

    def sample(k, data):
        return _adapt_batch(k, data, batch_size=batch_size, dim=dim, augment=augment)

    def loss_fn(params, batch, _key):
        p, s, m = batch
        rot, trans, logits = _PoseNet(config).apply(params, p, s, m)               # (B, K, d, d) ...

        def one(pts, sg, mk, r, t):
            w = mk.astype(pts.dtype)
            covs = jax.vmap(jnp.diag)(sg * sg)
            part = GMM(pts, covs, w / jnp.maximum(jnp.sum(w), 1.0))

            def hyp(rk, tk):
                moved = GMM(part.means @ rk.T + tk, rk @ part.covs @ rk.T, part.weights)
                return -gmm_log_overlap(moved, tmpl, blur_nm=blur)

            return jax.vmap(hyp)(r, t)

        dist = jax.vmap(one)(p, s, m, rot, trans)                                     # (B, K)
        best = jnp.argmin(dist, -1)
        wta = jnp.take_along_axis(dist, best[:, None], -1)[:, 0]
        conf = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), best[:, None], -1)[:, 0]
        return jnp.mean(wta + 0.1 * conf)

    train = TrainConfig(steps=steps, batch_size=batch_size, learning_rate=float(learning_rate), schedule="cosine",
                        seed=_seed_from(key), checkpoint_every=max(steps // 4, 1), eval_every=max(steps // 10, 1))
    res = fit(loss_fn, model.params, lambda k: sample(k, data), config=train, checkpoint_dir=checkpoint_dir,
              meta={"config": config.to_dict(), "adapt": True})
    info = {**model.info, "adapted": {"particles": particles.n_particles, "steps": steps, "blur_nm": blur,
                                      "learning_rate": float(learning_rate), "history": res.history}}
    return PoseNetModel(config, res.params, info)


# ----------------------------------------------------------------------------------------------- storage
def save_pose_net(path: Any, model: PoseNetModel, *, overwrite: bool = False) -> Path:
    """Write a pose network to the directory ``path`` (``model.json`` + ``params.msgpack``, atomically).

    Args:
        path: directory (created). model: the :class:`PoseNetModel`.
        overwrite: replace an existing model.

    Returns:
        The directory.

    Example:
        >>> import jax, tempfile, os
        >>> m = pose_net_init(jax.random.key(0), config=PoseNetConfig(dim=2))
        >>> d = save_pose_net(os.path.join(tempfile.mkdtemp(), "pose"), m)
        >>> load_pose_net(d).config == m.config
        True
    """
    if not isinstance(model, PoseNetModel):
        raise TypeError(f"argument 'model': expected a PoseNetModel, got {type(model).__name__}")
    meta = {"format": _FORMAT, "kind": _KIND, "config": model.config.to_dict(), "info": model.info}
    return write_model_dir(path, meta, model.params, overwrite=overwrite)


def load_pose_net(path: Any) -> PoseNetModel:
    """Read a pose network written by :func:`save_pose_net`.

    Raises:
        FileNotFoundError: no model at ``path``.
        ValueError: a corrupt model or a model of another kind (the message names ``model``).
    """
    path, meta = read_model_meta(path)
    try:
        kind, fmt = meta["kind"], meta["format"]
        config = PoseNetConfig.from_dict(meta["config"]) if kind == _KIND else None
    except Exception as exc:
        raise ValueError(f"argument 'model': corrupt model.json in {path} ({exc})") from None
    if kind != _KIND or fmt != _FORMAT:
        raise ValueError(f"argument 'model': {path} is not a pose network (kind {kind!r}, format {fmt!r})")
    params = read_model_params(path, init=lambda key: pose_net_init(key, config=config).params)
    return PoseNetModel(config, params, meta.get("info", {}))


def _pretrained_dir(name: str) -> Path:
    if name not in POSE_NETS:
        raise ValueError(f"argument 'name': expected one of {POSE_NETS}, got {name!r}")
    return Path(__file__).parent / "pretrained" / name


@functools.lru_cache(maxsize=4)
def _pretrained(name: str) -> PoseNetModel:
    return load_pose_net(_pretrained_dir(name))


def pretrained_pose_net(name: str) -> PoseNetModel:
    """A pose network shipped in the package: ``"npc3d"`` (3D nuclear pores, ``D_8``) or ``"origami2d"``
    (2D 3 x 4 origami grids, ``C_2``), trained by ``benchmarks/train_pose_net.py``.

    Raises:
        ValueError: an unknown name. FileNotFoundError: the model is missing from this installation.
    """
    return _pretrained(_pretrained_dir(name).name)
