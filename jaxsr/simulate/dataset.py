"""Ready-made synthetic widefield datasets with ground truth.

One recipe that the CLI (``jaxsr simulate``, ``jaxsr demo``), notebooks and
benchmarks share: a structure in nm is rendered on a fine grid (the ground
truth), blurred by a PSF sampled on that grid, integrated onto camera pixels
(binning by ``upsample``), given a background, and recorded by a camera
model. The fine grid is ``pixel_size_nm / upsample``; with ``upsample=3`` it
is the grid of the CLID pipeline (3x Lanczos upsampling, Xue et al., Nat
Commun 2026), so a super-resolved result can be compared pixel for pixel with
the ground truth.

Axis order ``(y, x)``; lengths in nm; object, expected image and background
in photons per pixel; the recorded image in camera ADU.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import check_choice, check_int, check_shape, positive_float, real_float
from jaxsr.forward import _PRESETS, CameraModel, apply_camera, camera_preset, expected_image
from jaxsr.optics.psf import airy_psf_2d, gaussian_psf_2d
from jaxsr.simulate.render import render_points, render_polyline
from jaxsr.simulate.structures import _separations, bead_pairs, filaments, line_pairs, ring

__all__ = ["STRUCTURES", "WidefieldSimulation", "simulate_widefield", "widefield_psf"]

STRUCTURES = ("filaments", "lines", "beads", "rings")
"""Structure names understood by :func:`simulate_widefield`."""


@dataclasses.dataclass(frozen=True)
class WidefieldSimulation:
    """A simulated widefield acquisition and its ground truth.

    Attributes:
        image: ``(y, x)`` recorded image in ADU (camera model applied).
        expected: ``(y, x)`` noise-free expected photons per camera pixel (signal + background).
        object: ``(y * upsample, x * upsample)`` ground-truth photons per fine pixel.
        psf: ``(py, px)`` unit-sum PSF on the fine grid (centre at index n // 2).
        pixel_size_nm: camera pixel size (nm).
        fine_pixel_size_nm: ground-truth grid pixel size, ``pixel_size_nm / upsample`` (nm).
        background_photons: background per camera pixel (photons).
        camera: the camera model used.
        structure: structure name.
        features_nm: the structure's geometry in nm, ``(y, x)`` last axis: polylines
            ``(n_lines, n_points, 2)`` for filaments and lines, points ``(n, 2)`` otherwise.
        separations_nm: line/bead pair separations (nm) for ``lines``/``beads``, else empty.
    """

    image: np.ndarray
    expected: np.ndarray
    object: np.ndarray
    psf: np.ndarray
    pixel_size_nm: float
    fine_pixel_size_nm: float
    background_photons: float
    camera: CameraModel
    structure: str
    features_nm: np.ndarray
    separations_nm: tuple[float, ...] = ()


def widefield_psf(*, psf: str, na: float, wavelength_nm: float, pixel_size_nm: float,
                  max_size: int | None = None) -> jax.Array:
    """The PSF of a widefield recipe on a grid of ``pixel_size_nm``, sized to hold 99 %+ of its energy.

    Args:
        psf: ``"airy"`` (the CLID Bessel PSF) or ``"gaussian"`` (its Gaussian approximation,
            sigma = 0.21 wavelength / NA, Zhang et al., Appl. Opt. 46, 2007).
        na: numerical aperture.
        wavelength_nm: emission wavelength (nm).
        pixel_size_nm: grid pixel size (nm).
        max_size: largest allowed side (pixels, >= 3); the side is odd.

    Returns:
        ``(n, n)`` unit-sum PSF, ``n`` odd, radius about 3 wavelength / NA.

    Raises:
        ValueError: unknown ``psf``; ``na``, ``wavelength_nm`` or ``pixel_size_nm``
            not finite and positive; ``max_size`` below 3.
        TypeError: a non-numeric parameter or a non-integer ``max_size``.

    >>> widefield_psf(psf="gaussian", na=1.4, wavelength_nm=520.0, pixel_size_nm=65.0).shape
    (37, 37)
    """
    check_choice(psf, "psf", ["airy", "gaussian"])
    na = positive_float(na, "na")
    wavelength_nm = positive_float(wavelength_nm, "wavelength_nm")
    pixel_size_nm = positive_float(pixel_size_nm, "pixel_size_nm")
    half = int(math.ceil(3.0 * wavelength_nm / na / pixel_size_nm))
    if max_size is not None:
        max_size = check_int(max_size, "max_size", minimum=3)
        half = max(1, min(half, (max_size - 1) // 2))
    shape = (2 * half + 1, 2 * half + 1)
    if psf == "airy":
        return airy_psf_2d(shape, na=na, wavelength_nm=wavelength_nm, pixel_size_nm=pixel_size_nm)
    return gaussian_psf_2d(shape, sigma_nm=0.21 * wavelength_nm / na, pixel_size_nm=pixel_size_nm)


def _structure(key, structure, field_nm, *, separations_nm):
    h, w = field_nm
    centre = (h / 2.0, w / 2.0)
    if structure == "filaments":
        n = max(2, int(round(h * w / 4e6)))  # about one filament per 2 x 2 um
        lines = filaments(key, n_filaments=n, field_nm=(h, w), length_nm=1.5 * max(h, w))
        return "polyline", lines, ()
    if structure == "lines":
        seps = tuple(separations_nm)
        length = min(2000.0, 0.6 * h)
        lines = line_pairs(separations_nm=seps, length_nm=length, gap_nm=600.0, centre_nm=centre)
        span = float(lines[-1, 0, 1] - lines[0, 0, 1])
        if span > 0.9 * w:
            raise ValueError(f"argument 'shape': the line-pair pattern ({span:.0f} nm wide) does not fit a "
                             f"field {w:.0f} nm wide; use a larger image")
        return "polyline", lines, seps
    if structure == "beads":
        seps = tuple(separations_nm)
        spacing = min(1000.0, 0.9 * w / len(seps))
        if spacing < 600.0:
            raise ValueError(f"argument 'shape': {len(seps)} bead pairs at least 600 nm apart do not fit a field "
                             f"{w:.0f} nm wide; use a larger image")
        pts = bead_pairs(separations_nm=seps, spacing_nm=spacing, centre_nm=centre)
        return "points", pts, seps
    # rings: a grid of nuclear-pore-like rings, 1 um apart, random in-plane rotations
    ny, nx = max(1, int(h // 1000) - 1), max(1, int(w // 1000) - 1)
    rots = jax.random.uniform(key, (ny * nx,), maxval=2 * np.pi / 8)
    pts = []
    for i in range(ny):
        for j in range(nx):
            c = ((i + 1) * h / (ny + 1), (j + 1) * w / (nx + 1))
            pts.append(ring(diameter_nm=107.0, n_subunits=8, centre_nm=c, rotation_rad=float(rots[i * nx + j])))
    return "points", jnp.concatenate(pts), ()


def simulate_widefield(
    key: jax.Array,
    *,
    structure: str = "filaments",
    shape: Sequence[int] = (128, 128),
    pixel_size_nm: float = 65.0,
    upsample: int = 3,
    psf: str = "airy",
    na: float = 1.4,
    wavelength_nm: float = 520.0,
    signal_photons: float = 200.0,
    background_photons: float = 20.0,
    camera: str | CameraModel = "scmos",
    separations_nm: Sequence[float] = (30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 210.0, 240.0, 270.0),
) -> WidefieldSimulation:
    """Simulate a widefield image of a synthetic structure, with its ground truth.

    Args:
        key: JAX PRNG key (structure randomness and camera noise).
        structure: one of :data:`STRUCTURES`: ``"filaments"`` (curvature-bounded random walks,
            microtubule-like), ``"lines"`` (line pairs at ``separations_nm``, Argo-SIM-like),
            ``"beads"`` (point pairs at ``separations_nm``), ``"rings"`` (8-fold, 107 nm rings).
        shape: camera image ``(y, x)`` in pixels.
        pixel_size_nm: camera pixel size in the sample (nm).
        upsample: fine-grid factor of the ground truth (odd values keep pixel centres aligned).
        psf: ``"airy"`` or ``"gaussian"`` (see :func:`widefield_psf`).
        na: numerical aperture.
        wavelength_nm: emission wavelength (nm).
        signal_photons: peak expected signal per camera pixel above background (photons).
        background_photons: uniform background per camera pixel (photons).
        camera: a :class:`~jaxsr.forward.CameraModel` or a preset name (``"ideal"``, ``"scmos"``, ``"emccd"``).
        separations_nm: pair separations for ``lines`` and ``beads`` (nm).

    Returns:
        :class:`WidefieldSimulation`.

    Raises:
        ValueError: unknown ``structure``/``psf``/camera preset; a non-2D or too small
            ``shape``; non-positive or non-finite ``pixel_size_nm``, ``na``,
            ``wavelength_nm``, ``signal_photons``; negative ``background_photons``;
            empty or negative ``separations_nm`` (lines, beads); a pattern that does
            not fit the field.
        TypeError: non-numeric parameters or a ``camera`` that is neither a name nor
            a :class:`~jaxsr.forward.CameraModel`.

    >>> import jax
    >>> sim = simulate_widefield(jax.random.key(0), shape=(32, 32), camera="ideal")
    >>> sim.image.shape, sim.object.shape, round(sim.fine_pixel_size_nm, 2)
    ((32, 32), (96, 96), 21.67)
    """
    check_choice(structure, "structure", STRUCTURES)
    shape = check_shape(shape, "shape", ndim=2)
    upsample = check_int(upsample, "upsample", minimum=1)
    pixel_size_nm = positive_float(pixel_size_nm, "pixel_size_nm")
    na = positive_float(na, "na")
    wavelength_nm = positive_float(wavelength_nm, "wavelength_nm")
    signal_photons = positive_float(signal_photons, "signal_photons")
    background_photons = real_float(background_photons, "background_photons")
    if not (np.isfinite(background_photons) and background_photons >= 0):
        raise ValueError(f"argument 'background_photons': must be finite and non-negative, got {background_photons!r}")
    if structure in ("lines", "beads"):
        separations_nm = tuple(float(v) for v in _separations(separations_nm, "separations_nm"))
    if isinstance(camera, str):
        if camera not in _PRESETS:
            raise ValueError(f"argument 'camera': expected a CameraModel or a preset name, one of "
                             f"{list(_PRESETS)}, got {camera!r}")
        camera = camera_preset(camera)
    elif not isinstance(camera, CameraModel):
        raise TypeError(f"argument 'camera': expected a CameraModel or a preset name, got {type(camera).__name__}")
    if min(shape) < 8:
        raise ValueError(f"argument 'shape': need at least 8 x 8 pixels, got {shape}")

    k_struct, k_noise = jax.random.split(key)
    fine = pixel_size_nm / upsample
    fine_shape = (shape[0] * upsample, shape[1] * upsample)
    field = (shape[0] * pixel_size_nm, shape[1] * pixel_size_nm)
    kind, features, seps = _structure(k_struct, structure, field, separations_nm=separations_nm)
    if kind == "polyline":
        obj = render_polyline(features, shape=fine_shape, pixel_size_nm=fine, photons_per_nm=1.0)
    else:
        obj = render_points(features, shape=fine_shape, pixel_size_nm=fine)
    kernel = widefield_psf(psf=psf, na=na, wavelength_nm=wavelength_nm, pixel_size_nm=fine,
                           max_size=min(fine_shape) - (1 - min(fine_shape) % 2))
    blurred = expected_image(obj, kernel, binning=upsample)
    peak = float(jnp.max(blurred))
    if not peak > 0:
        raise ValueError("argument 'shape': the structure falls outside the field of view; use a larger image")
    scale = signal_photons / peak
    obj = obj * scale
    expected = blurred * scale + background_photons
    image = apply_camera(k_noise, expected, camera=camera)
    return WidefieldSimulation(
        image=np.asarray(image, dtype=np.float32),
        expected=np.asarray(expected, dtype=np.float32),
        object=np.asarray(obj, dtype=np.float32),
        psf=np.asarray(kernel, dtype=np.float32),
        pixel_size_nm=float(pixel_size_nm),
        fine_pixel_size_nm=float(fine),
        background_photons=float(background_photons),
        camera=camera,
        structure=structure,
        features_nm=np.asarray(features),
        separations_nm=tuple(float(s) for s in seps),
    )
