"""SMLM movie simulation: blinking emitters, PSF, background, camera; with a ground-truth table.

Photophysics: every emitter is a two-state Markov chain over frames (off -> on
with probability ``p_on`` per frame, on -> off with probability ``p_off``),
started from its stationary distribution ``p_on / (p_on + p_off)``; an on
frame emits a Gamma-distributed number of photons (mean ``photons``,
coefficient of variation ``photon_cv``), an off frame none.

Image: each emitter is a pixel-integrated Gaussian spot; ``"gaussian2d"`` has a
fixed width ``sigma_nm``, ``"astigmatic3d"`` widths ``sigma_x(z), sigma_y(z)`` from
the astigmatic calibration (:func:`jaxsr.optics.astigmatic_sigma`, Huang et al.
2008). Because the spots are separable, a frame is one matrix product
``E_y^T diag(photons) E_x`` over the emitters. A background (photons per pixel:
a scalar or a ``(y, x)`` map) is added, and the camera
(:func:`jaxsr.forward.apply_camera`) turns photons into ADU.

Positions are ``(y, x)`` or ``(y, x, z)`` in nm with the outer corner of pixel
``(0, 0)`` at the origin (the convention of :func:`jaxsr.simulate.render_points`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import as_float_array, check_choice, check_finite, check_int, check_nonnegative
from jaxsr.forward import CameraModel, apply_camera
from jaxsr.optics.psf import astigmatic_sigma

__all__ = ["SMLM_PSFS", "EMITTER_STRUCTURES", "SMLMMovie", "blink", "emitter_positions", "render_emitters",
           "simulate_smlm"]

EMITTER_STRUCTURES = ("uniform", "filaments", "npc")

SMLM_PSFS = ("gaussian2d", "astigmatic3d")

# Default astigmatic calibration: widths in nm at 100 nm pixels, foci at +-200 nm.
DEFAULT_ASTIGMATISM = {"sigma0_x_nm": 130.0, "sigma0_y_nm": 130.0, "gamma_nm": 200.0, "depth_nm": 400.0}


class SMLMMovie(NamedTuple):
    """Result of :func:`simulate_smlm`.

    Attributes:
        frames: ``(t, y, x)`` camera frames in ADU (float32).
        truth: dict of NumPy columns, one row per emitter per on frame: ``frame``, ``id``,
            ``x_nm``, ``y_nm``, ``z_nm``, ``photons`` (incident photons in that frame),
            ``background`` (photons per pixel under the emitter).
        expected: ``(t, y, x)`` expected photons per pixel (noise-free, background included).
    """

    frames: jax.Array
    truth: dict
    expected: jax.Array


def blink(key: jax.Array, n_emitters: int, n_frames: int, *, p_on: float = 0.05, p_off: float = 0.5) -> jax.Array:
    """On/off states of emitters over frames: a two-state Markov chain per emitter.

    Args:
        key: PRNG key.
        n_emitters: number of emitters (static).
        n_frames: number of frames (static).
        p_on: probability per frame of switching off -> on, in (0, 1].
        p_off: probability per frame of switching on -> off, in (0, 1].

    Returns:
        ``(n_frames, n_emitters)`` bool states; each emitter is on in a fraction
        ``p_on / (p_on + p_off)`` of frames on average, for ``1 / p_off`` frames at a time.
    """
    for name, p in (("p_on", p_on), ("p_off", p_off)):
        if not 0.0 < float(p) <= 1.0:
            raise ValueError(f"argument '{name}': expected a probability in (0, 1], got {p}")
    n_emitters = check_int(n_emitters, "n_emitters", minimum=0)
    n_frames = check_int(n_frames, "n_frames", minimum=1)
    k0, k1 = jax.random.split(key)
    start = jax.random.uniform(k0, (n_emitters,)) < p_on / (p_on + p_off)
    u = jax.random.uniform(k1, (n_frames - 1, n_emitters))

    def step(state, ui):
        nxt = jnp.where(state, ui >= p_off, ui < p_on)
        return nxt, nxt

    _, rest = jax.lax.scan(step, start, u)
    return jnp.concatenate([start[None], rest], axis=0)


def emitter_positions(
    key: jax.Array,
    n: int,
    *,
    structure: str,
    field_nm: tuple[float, float],
    margin_nm: float = 300.0,
    n_filaments: int = 6,
    npc_radius_nm: float = 53.5,
    npc_ring_separation_nm: float = 50.0,
    z_range_nm: tuple[float, float] | None = None,
) -> jax.Array:
    """Emitter positions of a synthetic structure, ``(n, 2)`` ``(y, x)`` or ``(n, 3)`` with z, in nm.

    Structures:

    - ``"uniform"``: uniform in the field (inside ``margin_nm``);
    - ``"filaments"``: uniform along ``n_filaments`` worm-like filaments
      (:func:`jaxsr.simulate.filaments`, length 1.5 field heights);
    - ``"npc"``: nuclear-pore-like particles, ``ceil(n / 16)`` pores at random
      positions and rotations, each with 8 corners on a ring of radius
      ``npc_radius_nm`` in two rings ``npc_ring_separation_nm`` apart in z
      (cytoplasmic and nuclear rings), one emitter per corner; the first ``n``.

    Args:
        key: PRNG key.
        n: number of emitters.
        structure: one of :data:`EMITTER_STRUCTURES`.
        field_nm: ``(height, width)`` of the field (nm).
        margin_nm: keep emitters this far from the edge (nm).
        n_filaments, npc_radius_nm, npc_ring_separation_nm: structure parameters.
        z_range_nm: ``(low, high)``: add a uniform z (for ``"npc"``: the pore's centre z)
            and return ``(n, 3)``; None returns ``(n, 2)`` (``"npc"`` always has z).

    Returns:
        ``(n, 2)`` or ``(n, 3)`` positions in nm.
    """
    from jaxsr.simulate import filaments

    check_choice(structure, "structure", EMITTER_STRUCTURES)
    n = check_int(n, "n", minimum=1)
    h, w = (float(v) for v in field_nm)
    if not (h > 2 * margin_nm and w > 2 * margin_nm):
        raise ValueError(f"argument 'field_nm': {field_nm} is not larger than twice the margin {margin_nm} nm")
    k1, k2, k3, k4 = jax.random.split(key, 4)
    lo = jnp.array([margin_nm, margin_nm])
    span = jnp.array([h - 2 * margin_nm, w - 2 * margin_nm])
    z = None
    if structure == "uniform":
        pos = lo + span * jax.random.uniform(k1, (n, 2))
    elif structure == "filaments":
        lines = filaments(k1, n_filaments=check_int(n_filaments, "n_filaments", minimum=1),
                          field_nm=(h - 2 * margin_nm, w - 2 * margin_nm), length_nm=1.5 * h) + lo
        n_pts = lines.shape[1]
        f = jax.random.randint(k2, (n,), 0, lines.shape[0])
        i = jax.random.randint(k3, (n,), 0, n_pts - 1)
        t = jax.random.uniform(k4, (n, 1))
        pos = lines[f, i] * (1 - t) + lines[f, i + 1] * t
        inside = (pos >= lo).all(axis=1) & (pos <= lo + span).all(axis=1)
        # filaments may leave the field: fold outside points back in (mirror at the margin box)
        rel = jnp.abs(jnp.mod(pos - lo, 2 * span) - span)
        pos = jnp.where(inside[:, None], pos, lo + span - rel)
    else:
        n_pores = -(-n // 16)
        centres = lo + npc_radius_nm + (span - 2 * npc_radius_nm) * jax.random.uniform(k1, (n_pores, 2))
        phase = jax.random.uniform(k2, (n_pores, 1)) * (2 * math.pi / 8)
        ang = phase + jnp.arange(8)[None, :] * (2 * math.pi / 8)
        ring = npc_radius_nm * jnp.stack([jnp.sin(ang), jnp.cos(ang)], -1)  # (pores, 8, 2)
        pos = (centres[:, None, None, :] + ring[:, None, :, :] * jnp.ones((1, 2, 1, 1))).reshape(-1, 2)[:n]
        zc = (jnp.zeros(n_pores) if z_range_nm is None
              else jax.random.uniform(k3, (n_pores,), minval=z_range_nm[0], maxval=z_range_nm[1]))
        dz = jnp.array([-0.5, 0.5]) * npc_ring_separation_nm
        z = (zc[:, None, None] + dz[None, :, None] + jnp.zeros((1, 1, 8))).reshape(-1)[:n]
        return jnp.concatenate([pos, z[:, None]], axis=1)
    if z_range_nm is not None:
        z = jax.random.uniform(k4, (n, 1), minval=z_range_nm[0], maxval=z_range_nm[1])
        pos = jnp.concatenate([pos, z], axis=1)
    return pos


def _profiles(centre_px, sigma_px, n):
    """Pixel-integrated Gaussian profiles ``(n_emitters, n)`` (pixel ``k`` centred at ``k``)."""
    k = jnp.arange(n, dtype=centre_px.dtype)
    s = math.sqrt(2.0) * sigma_px[:, None]
    d = k[None, :] - centre_px[:, None]
    return 0.5 * (jax.scipy.special.erf((d + 0.5) / s) - jax.scipy.special.erf((d - 0.5) / s))


def _widths(z_nm, psf, sigma_nm, astigmatism):
    if psf == "gaussian2d":
        s = jnp.full_like(z_nm, sigma_nm)
        return s, s
    sx, sy = astigmatic_sigma(z_nm, **astigmatism)
    return sx, sy


def render_emitters(
    positions_nm: Any,
    photons: Any,
    *,
    shape: tuple[int, int],
    pixel_size_nm: float,
    psf: str = "gaussian2d",
    sigma_nm: float = 130.0,
    astigmatism: dict | None = None,
) -> jax.Array:
    """Expected photons per pixel of emitters in frames (no background, no noise).

    Args:
        positions_nm: ``(n, 2)`` ``(y, x)`` or ``(n, 3)`` ``(y, x, z)`` positions in nm.
        photons: ``(t, n)`` photons of every emitter in every frame (0 = off), or ``(n,)`` for one frame.
        shape: static ``(ny, nx)`` frame size in pixels.
        pixel_size_nm: pixel size in nm.
        psf: ``"gaussian2d"`` (width ``sigma_nm``) or ``"astigmatic3d"`` (widths from ``z`` and
            ``astigmatism``, the keyword arguments of :func:`jaxsr.optics.astigmatic_sigma`;
            default :data:`DEFAULT_ASTIGMATISM`).
        sigma_nm: PSF standard deviation for ``"gaussian2d"`` (nm).

    Returns:
        ``(t, ny, nx)`` (or ``(ny, nx)``) expected photons; differentiable in positions and photons.
    """
    check_choice(psf, "psf", SMLM_PSFS)
    pos = as_float_array(positions_nm, "positions_nm")
    if pos.ndim != 2 or pos.shape[1] not in (2, 3):
        raise ValueError(f"argument 'positions_nm': expected (n, 2) or (n, 3) positions, got {tuple(pos.shape)}")
    photons = as_float_array(photons, "photons").astype(pos.dtype)
    single = photons.ndim == 1
    photons = photons[None] if single else photons
    if photons.ndim != 2 or photons.shape[1] != pos.shape[0]:
        raise ValueError(f"argument 'photons': expected (frames, {pos.shape[0]}), got {tuple(photons.shape)}")
    z = pos[:, 2] if pos.shape[1] == 3 else jnp.zeros(pos.shape[0], pos.dtype)
    sx, sy = _widths(z, psf, sigma_nm, DEFAULT_ASTIGMATISM if astigmatism is None else astigmatism)
    p = float(pixel_size_nm)
    ey = _profiles(pos[:, 0] / p - 0.5, sy / p, shape[0])
    ex = _profiles(pos[:, 1] / p - 0.5, sx / p, shape[1])
    out = jnp.einsum("ey,te,ex->tyx", ey, photons, ex)
    return out[0] if single else out


def simulate_smlm(
    key: jax.Array,
    positions_nm: Any,
    *,
    n_frames: int,
    shape: tuple[int, int],
    pixel_size_nm: float = 100.0,
    psf: str = "gaussian2d",
    sigma_nm: float = 130.0,
    astigmatism: dict | None = None,
    photons: float = 2000.0,
    photon_cv: float = 0.3,
    background: Any = 20.0,
    p_on: float = 0.05,
    p_off: float = 0.5,
    camera: CameraModel | None = None,
) -> SMLMMovie:
    """Simulate an SMLM movie of blinking emitters and its ground-truth table.

    Args:
        key: PRNG key (everything is deterministic from it).
        positions_nm: ``(n, 2)`` ``(y, x)`` or ``(n, 3)`` ``(y, x, z)`` emitter positions in nm.
        n_frames: number of frames.
        shape: ``(ny, nx)`` frame size in pixels.
        pixel_size_nm: camera pixel size in the sample (nm).
        psf, sigma_nm, astigmatism: see :func:`render_emitters`.
        photons: mean photons per on frame; ``photon_cv`` their coefficient of variation (Gamma).
        background: photons per pixel, a scalar or a ``(ny, nx)`` map (e.g. out-of-focus haze).
        p_on, p_off: blinking probabilities per frame (see :func:`blink`).
        camera: :class:`~jaxsr.forward.CameraModel` (``camera_preset("emccd")`` ...); ``None`` gives
            Poisson photon counts (an ideal camera).

    Returns:
        :class:`SMLMMovie`.
    """
    check_choice(psf, "psf", SMLM_PSFS)
    pos = as_float_array(positions_nm, "positions_nm")
    if pos.ndim != 2 or pos.shape[1] not in (2, 3):
        raise ValueError(f"argument 'positions_nm': expected (n, 2) or (n, 3) positions, got {tuple(pos.shape)}")
    check_finite(pos, "positions_nm")
    n_frames = check_int(n_frames, "n_frames", minimum=1)
    shape = tuple(check_int(s, "shape", minimum=1) for s in shape)
    if len(shape) != 2:
        raise ValueError(f"argument 'shape': expected (ny, nx), got {shape}")
    for name, v in (("pixel_size_nm", pixel_size_nm), ("sigma_nm", sigma_nm), ("photons", photons)):
        if not (np.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"argument '{name}': expected a positive number, got {v}")
    if not (np.isfinite(float(photon_cv)) and float(photon_cv) >= 0):
        raise ValueError(f"argument 'photon_cv': expected a non-negative number, got {photon_cv}")
    bg = as_float_array(background, "background").astype(pos.dtype)
    check_finite(bg, "background")
    check_nonnegative(bg, "background")
    if bg.ndim not in (0, 2) or (bg.ndim == 2 and tuple(bg.shape) != shape):
        raise ValueError(f"argument 'background': expected a scalar or a {shape} map, got shape {tuple(bg.shape)}")
    n = pos.shape[0]
    k_blink, k_ph, k_cam = jax.random.split(key, 3)
    on = blink(k_blink, n, n_frames, p_on=p_on, p_off=p_off)
    if photon_cv > 0:
        a = 1.0 / photon_cv**2
        ph = jax.random.gamma(k_ph, a, (n_frames, n), dtype=pos.dtype) * (photons / a)
    else:
        ph = jnp.full((n_frames, n), photons, pos.dtype)
    ph = jnp.where(on, ph, 0.0)
    expected = render_emitters(pos, ph, shape=shape, pixel_size_nm=pixel_size_nm, psf=psf, sigma_nm=sigma_nm,
                               astigmatism=astigmatism) + bg
    if camera is None:
        frames = jax.random.poisson(k_cam, expected).astype(jnp.float32)
    else:
        frames = apply_camera(k_cam, expected, camera=camera).astype(jnp.float32)
    t, e = np.nonzero(np.asarray(on))
    p_np = np.asarray(pos, np.float64)
    iy = np.clip((p_np[e, 0] / pixel_size_nm).astype(int), 0, shape[0] - 1)
    ix = np.clip((p_np[e, 1] / pixel_size_nm).astype(int), 0, shape[1] - 1)
    bg_np = np.broadcast_to(np.asarray(bg), shape)
    truth = {
        "frame": t.astype(np.int64), "id": e.astype(np.int64),
        "x_nm": p_np[e, 1].astype(np.float32), "y_nm": p_np[e, 0].astype(np.float32),
        "z_nm": (p_np[e, 2] if pos.shape[1] == 3 else np.zeros(len(e))).astype(np.float32),
        "photons": np.asarray(ph)[t, e].astype(np.float32), "background": bg_np[iy, ix].astype(np.float32),
    }
    return SMLMMovie(frames, truth, expected)
