"""SMLM movie simulation: blinking emitters, PSF, background, camera; with a ground-truth table.

Photophysics: every emitter is a two-state Markov chain over frames (off -> on
with probability ``p_on`` per frame, on -> off with probability ``p_off``),
started from its stationary distribution ``p_on / (p_on + p_off)``; an on
frame emits a Gamma-distributed number of photons (mean ``photons``,
coefficient of variation ``photon_cv``), an off frame none.

Image: with ``"gaussian2d"`` and ``"astigmatic3d"`` each emitter is a
pixel-integrated Gaussian spot; ``"gaussian2d"`` has a fixed width ``sigma_nm``,
``"astigmatic3d"`` widths ``sigma_x(z), sigma_y(z)`` from the astigmatic
calibration (:func:`jaxsr.optics.astigmatic_sigma`, Huang et al. 2008). Because
these spots are separable, a frame is one matrix product
``E_y^T diag(photons) E_x`` over the emitters. With ``"pupil"`` each emitter is
the scalar pupil PSF of :func:`jaxsr.optics.pupil_psf_3d` (circular pupil,
Zernike aberrations, defocus by the emitter's z), computed once per emitter on a
small patch around it at its sub-pixel offset (an exact phase ramp in the
pupil), pixel-integrated by oversampling and binning, and scatter-added into
every frame with that frame's photon count. A background (photons per pixel: a
scalar or a ``(y, x)`` map) is added, and the camera
(:func:`jaxsr.forward.apply_camera`) turns photons into ADU.

Positions are ``(y, x)`` or ``(y, x, z)`` in nm with the outer corner of pixel
``(0, 0)`` at the origin (the convention of :func:`jaxsr.simulate.render_points`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import as_float_array, check_choice, check_finite, check_int, check_nonnegative
from jaxsr.forward import CameraModel, apply_camera
from jaxsr.optics.psf import astigmatic_sigma, pupil_psf_3d

__all__ = ["SMLM_PSFS", "EMITTER_STRUCTURES", "DEFAULT_PUPIL", "SMLMMovie", "blink", "emitter_positions",
           "render_emitters", "simulate_smlm"]

EMITTER_STRUCTURES = ("uniform", "filaments", "npc")

SMLM_PSFS = ("gaussian2d", "astigmatic3d", "pupil")

# Default astigmatic calibration: widths in nm at 100 nm pixels, foci at +-200 nm.
DEFAULT_ASTIGMATISM = {"sigma0_x_nm": 130.0, "sigma0_y_nm": 130.0, "gamma_nm": 200.0, "depth_nm": 400.0}

# Default pupil: oil-immersion objective, far-red dye (e.g. Alexa 647), no aberration.
DEFAULT_PUPIL = {"na": 1.4, "wavelength_nm": 670.0, "refractive_index": 1.518}
PUPIL_KEYS = ("na", "wavelength_nm", "refractive_index", "zernike_rad", "defocus_nm", "patch_px", "oversample",
              "pad_factor")


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
    check_choice(structure, "structure", EMITTER_STRUCTURES)
    n = check_int(n, "n", minimum=1)
    h, w = (float(v) for v in field_nm)
    margin_nm = float(margin_nm)
    if not (h > 2 * margin_nm and w > 2 * margin_nm):
        raise ValueError(f"argument 'field_nm': {field_nm} is not larger than twice the margin {margin_nm} nm")
    if structure == "filaments":
        n_filaments = check_int(n_filaments, "n_filaments", minimum=1)
    z_range = None if z_range_nm is None else tuple(float(v) for v in z_range_nm)
    if z_range is not None and len(z_range) != 2:
        raise ValueError(f"argument 'z_range_nm': expected (low, high), got {z_range_nm}")
    return _emitter_positions(key, n=n, structure=structure, h=h, w=w, margin_nm=margin_nm,
                              n_filaments=int(n_filaments), npc_radius_nm=float(npc_radius_nm),
                              npc_ring_separation_nm=float(npc_ring_separation_nm), z_range_nm=z_range)


@functools.partial(jax.jit, static_argnames=("n", "structure", "h", "w", "margin_nm", "n_filaments", "npc_radius_nm",
                                             "npc_ring_separation_nm", "z_range_nm"))
def _emitter_positions(key, *, n, structure, h, w, margin_nm, n_filaments, npc_radius_nm, npc_ring_separation_nm,
                       z_range_nm):
    """The sampling of :func:`emitter_positions`, compiled once per configuration."""
    from jaxsr.simulate import filaments

    k1, k2, k3, k4 = jax.random.split(key, 4)
    lo = jnp.array([margin_nm, margin_nm])
    span = jnp.array([h - 2 * margin_nm, w - 2 * margin_nm])
    z = None
    if structure == "uniform":
        pos = lo + span * jax.random.uniform(k1, (n, 2))
    elif structure == "filaments":
        lines = filaments(k1, n_filaments=n_filaments, field_nm=(h - 2 * margin_nm, w - 2 * margin_nm),
                          length_nm=1.5 * h) + lo
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


def _concrete_float(v):
    """``float(v)`` for a concrete real scalar, None for a tracer (checks are skipped under tracing)."""
    if isinstance(v, jax.core.Tracer):
        return None
    a = np.asarray(v)
    if a.ndim != 0 or a.dtype.kind not in "biuf" or a.dtype == np.bool_:
        return float("nan")
    return float(a)


def _zernike_vector(z):
    """Noll coefficients (radians) as a ``(J,)`` array from an array-like or a ``{j: rad}`` dict."""
    if isinstance(z, dict):
        if not z:
            return None
        for j in z:
            if isinstance(j, (bool, np.bool_)) or not isinstance(j, (int, np.integer)) or j < 1:
                raise ValueError(f"argument 'pupil': unknown Zernike index {j!r} in 'zernike_rad' "
                                 f"(Noll indices are ints >= 1: 4 defocus, 5/6 astigmatism, 7/8 coma, 11 spherical)")
        n = max(int(j) for j in z)
        vals = [jnp.asarray(z.get(j, 0.0)) for j in range(1, n + 1)]
        for j, v in z.items():
            f = _concrete_float(v)
            if f is not None and not np.isfinite(f):
                raise ValueError(f"argument 'pupil': 'zernike_rad' of Noll index {j} must be a finite number "
                                 f"(radians), got {v!r}")
        return jnp.stack(vals) * 1.0  # ints -> float; cast to the positions' dtype when rendering
    a = as_float_array(z, "pupil")
    if a.ndim != 1 or a.shape[0] < 1:
        raise ValueError(f"argument 'pupil': 'zernike_rad' must be a dict {{noll_index: radians}} or a 1D array "
                         f"of Noll coefficients j = 1..J, got shape {tuple(a.shape)}")
    if not isinstance(a, jax.core.Tracer) and not bool(np.all(np.isfinite(np.asarray(a)))):
        raise ValueError("argument 'pupil': 'zernike_rad' contains NaN or infinite values")
    return a


def _pupil_options(pupil, pixel_size_nm):
    """Validated pupil options: (traced params dict, patch, oversample, pad_factor)."""
    opts = dict(DEFAULT_PUPIL)
    if pupil is not None:
        if not isinstance(pupil, dict):
            raise TypeError(f"argument 'pupil': expected a dict of options, got {type(pupil).__name__}")
        unknown = [k for k in pupil if k not in PUPIL_KEYS]
        if unknown:
            raise ValueError(f"argument 'pupil': unknown option {unknown[0]!r} (expected some of "
                             f"{', '.join(PUPIL_KEYS)})")
        opts.update(pupil)
    p = float(pixel_size_nm)
    if not (np.isfinite(p) and p > 0):
        raise ValueError(f"argument 'pixel_size_nm': expected a positive number, got {pixel_size_nm}")
    vals = {k: _concrete_float(opts[k]) for k in ("na", "wavelength_nm", "refractive_index")}
    for k, v in vals.items():
        if v is not None and not (np.isfinite(v) and v > 0):
            raise ValueError(f"argument 'pupil': {k!r} must be a positive number, got {opts[k]!r}")
    na, n_imm, wl = vals["na"], vals["refractive_index"], vals["wavelength_nm"]
    if na is not None and n_imm is not None and not na < n_imm:
        raise ValueError(f"argument 'pupil': 'na' ({na:g}) must be smaller than 'refractive_index' ({n_imm:g})")
    defocus = opts.get("defocus_nm", 0.0)
    f = _concrete_float(defocus)
    if f is not None and not np.isfinite(f):
        raise ValueError(f"argument 'pupil': 'defocus_nm' must be a finite number (nm), got {defocus!r}")
    zern = _zernike_vector(opts["zernike_rad"]) if opts.get("zernike_rad") is not None else None
    statics = {}
    default_patch = 2 * math.ceil(1500.0 / p) + 1
    s_default = math.ceil(p / 40.0)
    s_default += 1 - s_default % 2
    for k, default, minimum in (("patch_px", default_patch, 3), ("oversample", s_default, 1), ("pad_factor", 2, 1)):
        v = opts.get(k, default)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < minimum:
            raise ValueError(f"argument 'pupil': {k!r} must be an int >= {minimum}, got {v!r}")
        statics[k] = int(v)
    if statics["patch_px"] % 2 == 0:
        raise ValueError(f"argument 'pupil': 'patch_px' must be odd (the emitter's pixel at its centre), "
                         f"got {statics['patch_px']}")
    if na is not None and wl is not None:
        n_grid = statics["pad_factor"] * statics["patch_px"] * statics["oversample"]
        if na / wl * p / statics["oversample"] > 0.5 - 1.0 / n_grid:
            raise ValueError(f"argument 'pupil': 'oversample' {statics['oversample']} is too small for "
                             f"{p:g} nm pixels at NA {na:g} and {wl:g} nm (the pupil does not fit the k-grid)")
    params = {"na": opts["na"], "wavelength_nm": opts["wavelength_nm"],
              "refractive_index": opts["refractive_index"], "defocus_nm": defocus, "zernike_rad": zern}
    return params, statics["patch_px"], statics["oversample"], statics["pad_factor"]


@functools.partial(jax.jit, static_argnames=("shape", "patch", "oversample", "pad_factor", "frame_batch"))
def _render_pupil(pos, photons, pixel, params, *, shape, patch, oversample, pad_factor, frame_batch):
    """Pupil-PSF frames ``(t, ny, nx)``: one PSF patch per emitter, scatter-added per frame."""
    dtype = pos.dtype
    pixel = jnp.asarray(pixel, dtype)
    cell = jnp.floor(pos[:, :2] / pixel)  # the pixel holding the emitter
    frac = pos[:, :2] - (cell + 0.5) * pixel  # offset from that pixel's centre, nm, in [-p/2, p/2)
    offsets = jnp.concatenate([pos[:, 2:3], frac], axis=1)  # (n, 3) (z, y, x) for pupil_psf_3d
    cast = {k: (None if v is None else jnp.asarray(v, dtype)) for k, v in params.items()}

    def one(offset):
        return pupil_psf_3d((1, patch, patch), na=cast["na"], wavelength_nm=cast["wavelength_nm"],
                            pixel_size_nm=pixel, z_step_nm=jnp.ones((), dtype),
                            refractive_index=cast["refractive_index"], defocus_nm=cast["defocus_nm"],
                            zernike_rad=cast["zernike_rad"], offset_nm=offset, pad_factor=pad_factor,
                            oversample=oversample, normalize="plane")[0]

    psfs = jax.lax.map(one, offsets, batch_size=16)  # (n, patch, patch), each <= 1 (light inside the patch)
    half = jnp.arange(patch) - patch // 2
    iy = cell[:, 0].astype(jnp.int32)[:, None] + half[None]  # (n, patch)
    ix = cell[:, 1].astype(jnp.int32)[:, None] + half[None]
    iy = jnp.where((iy >= 0) & (iy < shape[0]), iy, shape[0])  # out of the frame -> dropped
    ix = jnp.where((ix >= 0) & (ix < shape[1]), ix, shape[1])

    def frame(ph):
        return jnp.zeros(shape, dtype).at[iy[:, :, None], ix[:, None, :]].add(
            ph[:, None, None] * psfs, mode="drop")

    return jax.lax.map(frame, photons, batch_size=frame_batch)


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
    pupil: dict | None = None,
) -> jax.Array:
    """Expected photons per pixel of emitters in frames (no background, no noise).

    Args:
        positions_nm: ``(n, 2)`` ``(y, x)`` or ``(n, 3)`` ``(y, x, z)`` positions in nm (outer corner
            of pixel ``(0, 0)`` at the origin; ``z`` is the emitter's height above the focal plane).
        photons: ``(t, n)`` photons of every emitter in every frame (0 = off), or ``(n,)`` for one frame.
        shape: static ``(ny, nx)`` frame size in pixels.
        pixel_size_nm: pixel size in nm.
        psf: ``"gaussian2d"`` (width ``sigma_nm``), ``"astigmatic3d"`` (widths from ``z`` and
            ``astigmatism``, the keyword arguments of :func:`jaxsr.optics.astigmatic_sigma`;
            default :data:`DEFAULT_ASTIGMATISM`) or ``"pupil"`` (scalar pupil PSF with Zernike
            aberrations, options ``pupil``).
        sigma_nm: PSF standard deviation for ``"gaussian2d"`` (nm).
        astigmatism: calibration of ``"astigmatic3d"``.
        pupil: options of ``"pupil"`` (missing keys take :data:`DEFAULT_PUPIL`: NA 1.4, 670 nm,
            n = 1.518, no aberration):

            - ``na``, ``wavelength_nm`` (vacuum emission), ``refractive_index`` (immersion and
              sample, ``na < refractive_index``), ``defocus_nm`` (focus error added to every
              emitter's ``z``): traced scalars, as :func:`jaxsr.optics.pupil_psf_3d` takes them;
            - ``zernike_rad``: aberrations in radians of pupil phase, RMS-normalised Noll
              polynomials (:func:`jaxsr.optics.zernike`), a dict ``{noll_index: rad}`` (e.g.
              ``{6: 1.0}``: vertical astigmatism, ``{11: 0.5}``: spherical) or a ``(J,)`` array for
              ``j = 1..J``;
            - ``patch_px``: static odd side of the square patch (pixels) each emitter is computed
              on, centred on the pixel holding it (default ``2 ceil(1500 nm / pixel) + 1``: 31 at
              100 nm); ``oversample``: static fine samples per pixel per axis for the pixel
              integration (midpoint rule; default the smallest odd number giving <= 40 nm);
              ``pad_factor``: static k-grid padding of :func:`~jaxsr.optics.pupil_psf_3d` (default 2).

            Normalisation: each emitter's PSF carries unit light on an unbounded field
            (``normalize="plane"`` of :func:`~jaxsr.optics.pupil_psf_3d`: the light on the whole
            periodic k-grid), so ``photons`` is the expected count of an infinite camera. The light
            outside the patch is **dropped**: in focus the patch holds the Airy encircled energy
            ``1 - J0(v)^2 - J1(v)^2`` of its half-side or more, ``v = 2 pi NA r / wavelength``
            (about 97 % with the defaults at 100 nm pixels, NA 1.4, 670 nm), defocused spots less.

    Returns:
        ``(t, ny, nx)`` (or ``(ny, nx)``) expected photons; differentiable in positions and photons
        (and, for ``"pupil"``, in the traced pupil options).

    References:
        B. Huang et al., Science 319, 810 (2008) (astigmatic 3D); J. W. Goodman, *Introduction to
        Fourier Optics* (scalar pupil PSF); R. J. Noll, J. Opt. Soc. Am. 66, 207 (1976) (Zernike).

    >>> import jax.numpy as jnp
    >>> img = render_emitters(jnp.array([[650.0, 650.0, 0.0]]), jnp.array([1000.0]), shape=(13, 13),
    ...                       pixel_size_nm=100.0, psf="pupil", pupil={"na": 1.4, "zernike_rad": {6: 0.5}})
    >>> img.shape, bool(900.0 < float(img.sum()) < 1000.0), int(img.argmax()) == 6 * 13 + 6
    ((13, 13), True, True)
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
    p = float(pixel_size_nm)
    if psf == "pupil":
        shape = tuple(check_int(v, "shape", minimum=1) for v in shape)
        if len(shape) != 2:
            raise ValueError(f"argument 'shape': expected (ny, nx), got {shape}")
        params, patch, oversample, pad = _pupil_options(pupil, p)
        n = max(pos.shape[0], 1)
        frame_batch = max(1, min(photons.shape[0], (1 << 21) // (n * patch * patch)))
        out = _render_pupil(jnp.concatenate([pos[:, :2], z[:, None]], axis=1), photons, p, params, shape=shape,
                            patch=patch, oversample=oversample, pad_factor=pad, frame_batch=frame_batch)
        return out[0] if single else out
    sx, sy = _widths(z, psf, sigma_nm, DEFAULT_ASTIGMATISM if astigmatism is None else astigmatism)
    ey = _profiles(pos[:, 0] / p - 0.5, sy / p, shape[0])
    ex = _profiles(pos[:, 1] / p - 0.5, sx / p, shape[1])
    out = jnp.einsum("ey,te,ex->tyx", ey, photons, ex)
    return out[0] if single else out


@functools.partial(jax.jit, static_argnames=("n_frames", "shape", "pixel_size_nm", "psf", "sigma_nm", "astigmatism",
                                             "pupil_static", "photons", "photon_cv", "p_on", "p_off"))
def _simulate_core(key, pos, bg, camera, pupil_params, *, n_frames, shape, pixel_size_nm, psf, sigma_nm, astigmatism,
                   pupil_static, photons, photon_cv, p_on, p_off):
    """Blinking, photons, image and camera of :func:`simulate_smlm` in one compiled function.

    One compilation instead of one per eager operation (about a third less time for a first call).
    """
    n = pos.shape[0]
    k_blink, k_ph, k_cam = jax.random.split(key, 3)
    on = blink(k_blink, n, n_frames, p_on=p_on, p_off=p_off)
    if photon_cv > 0:
        a = 1.0 / photon_cv**2
        ph = jax.random.gamma(k_ph, a, (n_frames, n), dtype=pos.dtype) * (photons / a)
    else:
        ph = jnp.full((n_frames, n), photons, pos.dtype)
    ph = jnp.where(on, ph, 0.0)
    pupil = None
    if pupil_static is not None:
        pupil = {**{k: v for k, v in pupil_params.items() if v is not None},
                 **dict(zip(("patch_px", "oversample", "pad_factor"), pupil_static))}
    expected = render_emitters(pos, ph, shape=shape, pixel_size_nm=pixel_size_nm, psf=psf, sigma_nm=sigma_nm,
                               astigmatism=None if astigmatism is None else dict(astigmatism), pupil=pupil) + bg
    if camera is None:
        frames = jax.random.poisson(k_cam, expected).astype(jnp.float32)
    else:
        frames = apply_camera(k_cam, expected, camera=camera).astype(jnp.float32)
    return frames, on, ph, expected


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
    pupil: dict | None = None,
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
        psf, sigma_nm, astigmatism, pupil: see :func:`render_emitters` (``psf="pupil"``: the scalar
            pupil PSF with Zernike aberrations, e.g. frames whose PSF differs from the Gaussian a
            fitter assumes).
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
    for name, prob in (("p_on", p_on), ("p_off", p_off)):
        if not 0.0 < float(prob) <= 1.0:
            raise ValueError(f"argument '{name}': expected a probability in (0, 1], got {prob}")
    if camera is not None and not isinstance(camera, CameraModel):
        raise TypeError(f"argument 'camera': expected a CameraModel or None, got {type(camera).__name__}")
    astig = None
    if psf == "astigmatic3d":
        a = DEFAULT_ASTIGMATISM if astigmatism is None else astigmatism
        if not isinstance(a, dict):
            raise TypeError(f"argument 'astigmatism': expected a dict of calibration values, got {type(a).__name__}")
        z = np.asarray(pos[:, 2]) if pos.shape[1] == 3 else np.zeros(1, np.float32)
        astigmatic_sigma(z, **a)  # concrete checks (a non-positive width polynomial) before compiling
        astig = tuple(sorted((k, float(v)) for k, v in a.items()))  # static
    pupil_params, pupil_static = None, None
    if psf == "pupil":
        pupil_params, patch, oversample, pad = _pupil_options(pupil, pixel_size_nm)
        pupil_static = (patch, oversample, pad)
    frames, on, ph, expected = _simulate_core(
        key, pos, bg, camera, pupil_params, n_frames=n_frames, shape=shape, pixel_size_nm=float(pixel_size_nm),
        psf=psf, sigma_nm=float(sigma_nm), astigmatism=astig, pupil_static=pupil_static, photons=float(photons),
        photon_cv=float(photon_cv), p_on=float(p_on), p_off=float(p_off))
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
