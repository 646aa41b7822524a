"""From raw SMLM frames to a localization table: camera conversion, detection, ROI fits.

Coordinates follow jaxsr's convention (:func:`jaxsr.simulate.render_points`):
the outer corner of pixel ``(0, 0)`` is at ``(0, 0)`` nm, so the centre of
pixel ``(i, j)`` is at ``((i + 1/2) p, (j + 1/2) p)`` nm for pixel size ``p``.

Camera: ADU are converted to Poisson-distributed counts,
``c = (adu - offset) * gain_e_per_adu / (em_gain * F^2)`` with the EM excess
noise factor ``F^2 = 2`` for an EMCCD (``em_gain > 1``) and 1 otherwise, and
the read-noise variance in the same units, ``(read_noise_e / (em_gain * F^2))^2``
(a per-pixel map for sCMOS), enters the likelihood (:func:`fit_spots`).
Reported photons are incident photons, ``c * F^2 / qe``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import as_float_array, check_int
from jaxsr.forward import CameraModel
from jaxsr.smlm.detect import as_movie, detect_spots, extract_rois
from jaxsr.smlm.fit import fit_spots

__all__ = ["Localizations", "LOCALIZATION_COLUMNS", "camera_counts", "localize"]

LOCALIZATION_COLUMNS = ("frame", "x_nm", "y_nm", "photons", "background", "sigma_nm", "crlb_x_nm",
                        "crlb_y_nm", "crlb_photons", "score", "deviance", "z_nm", "crlb_z_nm")


class Localizations(NamedTuple):
    """A localization table: NumPy columns of equal length ``n`` (one row per molecule per frame).

    Attributes:
        frame: int frame index (0-based).
        x_nm, y_nm: position in nm (pixel ``(0, 0)``'s outer corner at 0).
        photons: incident photons of the spot (QE and EM excess noise corrected).
        background: incident photons per pixel.
        sigma_nm: PSF standard deviation in nm (fixed or fitted).
        crlb_x_nm, crlb_y_nm: Cramér-Rao bounds of the position (nm, 1 s.d.).
        crlb_photons: Cramér-Rao bound of ``photons``.
        score: detection score (band-passed peak, counts); higher = more confident.
        deviance: likelihood-ratio goodness of fit (about the ROI pixel count when good).
        z_nm: axial position (nm; astigmatic 3D fits), NaN in 2D.
        crlb_z_nm: Cramér-Rao bound of ``z_nm`` (nm), NaN in 2D.
    """

    frame: np.ndarray
    x_nm: np.ndarray
    y_nm: np.ndarray
    photons: np.ndarray
    background: np.ndarray
    sigma_nm: np.ndarray
    crlb_x_nm: np.ndarray
    crlb_y_nm: np.ndarray
    crlb_photons: np.ndarray
    score: np.ndarray
    deviance: np.ndarray
    z_nm: np.ndarray
    crlb_z_nm: np.ndarray

    @property
    def n(self) -> int:
        """Number of localizations (rows); ``len()`` of the tuple is the number of columns."""
        return int(np.shape(self.frame)[0])

    def select(self, mask: Any) -> "Localizations":
        """Rows where ``mask`` is True (or the given indices)."""
        return Localizations(*(np.asarray(c)[mask] for c in self))

    @staticmethod
    def empty() -> "Localizations":
        z = np.zeros(0, np.float32)
        return Localizations(np.zeros(0, np.int64), *([z] * (len(LOCALIZATION_COLUMNS) - 1)))


def column_getter(table: Any):
    """``get(name) -> array`` for a table given as a dict of columns or as :class:`Localizations`
    (any NamedTuple); a missing column raises ``KeyError`` either way."""
    if isinstance(table, dict):
        return table.__getitem__

    def get(name: str):
        try:
            return getattr(table, name)
        except AttributeError:
            raise KeyError(name) from None

    return get


def _excess(camera: CameraModel) -> float:
    return 2.0 if float(np.max(np.asarray(camera.em_gain))) > 1.0 else 1.0


def camera_counts(frames: Any, *, camera: CameraModel) -> tuple[jax.Array, jax.Array]:
    """Poisson-like counts and their read-noise variance from camera ADU.

    Args:
        frames: ``(..., y, x)`` ADU.
        camera: the :class:`~jaxsr.forward.CameraModel` of the movie.

    Returns:
        ``(counts, variance)``: counts of the shape of ``frames``; variance (counts^2),
        a scalar or a ``(y, x)`` map.
    """
    if not isinstance(camera, CameraModel):
        raise TypeError(f"argument 'camera': expected a CameraModel, got {type(camera).__name__}")
    frames = as_float_array(frames, "frames")
    f2 = _excess(camera)
    scale = camera.gain_e_per_adu / (camera.em_gain * f2)
    counts = (frames - camera.offset_adu) * scale
    variance = jnp.square(jnp.asarray(camera.read_noise_e, frames.dtype) / (camera.em_gain * f2))
    return counts, variance


_FIT_BLOCK = 256


def _fit_in_blocks(rois, variance, sigma_px, iterations, block=_FIT_BLOCK, astigmatism=None, pixel_size_nm=None,
                   mesh=None):
    """:func:`fit_spots` over fixed-size blocks of ROIs (the last one padded).

    One compiled shape serves every chunk of a movie (no recompilation per chunk), and a ROI's fit
    does not depend on how many others share its call, so a movie localized in chunks gives the
    same table as localized whole.
    """
    n = rois.shape[0]
    variance = jnp.broadcast_to(jnp.asarray(variance, rois.dtype), rois.shape)
    parts = []
    for start in range(0, n, block):
        r, v = rois[start:start + block], variance[start:start + block]
        m = r.shape[0]
        if m < block:
            pad = block - m
            r = jnp.concatenate([r, jnp.broadcast_to(r[:1], (pad,) + r.shape[1:])])
            v = jnp.concatenate([v, jnp.broadcast_to(v[:1], (pad,) + v.shape[1:])])
        f = fit_spots(r, sigma_px=sigma_px, variance=v, iterations=iterations, astigmatism=astigmatism,
                      pixel_size_nm=pixel_size_nm, mesh=mesh)
        parts.append([np.asarray(a)[:m] for a in f])
    return type(f)(*(np.concatenate(c) for c in zip(*parts)))


def localize(
    frames: Any,
    *,
    pixel_size_nm: float,
    sigma_nm: float | None,
    camera: CameraModel | None = None,
    threshold: float = 5.0,
    roi_size: int | None = None,
    iterations: int = 10,
    batch: int = 64,
    max_shift_px: float = 1.5,
    max_crlb_px: float = 1.0,
    sigma_guess_nm: float | None = None,
    astigmatism: dict | None = None,
    mesh: Any = None,
) -> Localizations:
    """Localize single molecules in frames: detect, cut ROIs, fit by Poisson MLE, filter.

    Args:
        frames: ``(t, y, x)`` (or ``(y, x)``) movie: ADU when ``camera`` is given, else photon counts.
        pixel_size_nm: camera pixel size projected into the sample (nm, > 0).
        sigma_nm: PSF standard deviation in nm (fixed in the fit), or ``None`` to fit it per spot
            (then ``sigma_guess_nm`` sets the detection filter; default 1.3 pixels).
        camera: :class:`~jaxsr.forward.CameraModel` (e.g. ``camera_preset("emccd")``), or ``None``
            for frames already in photons with Poisson noise only.
        threshold: detection threshold in robust noise standard deviations (see
            :func:`~jaxsr.smlm.detect.detect_spots`).
        roi_size: odd ROI side in pixels (default ``2 * round(2 sigma) + 1``, at least 7: Picasso's
            7-pixel box for sigma ~ 1.3 px; larger ROIs gain little precision and take in more light
            of neighbouring molecules).
        iterations: fit iterations (see :func:`~jaxsr.smlm.fit.fit_spots`).
        batch: frames per detection call.
        max_shift_px: drop fits that moved farther than this from their candidate pixel (pixels,
            finite, > 0; they belong to a neighbour or to noise).
        max_crlb_px: drop fits whose position CRLB exceeds this (pixels, finite, > 0): noise, not
            molecules.
        sigma_guess_nm: detection PSF width when ``sigma_nm`` is ``None``.
        astigmatism: fit the astigmatic 3D model (the keyword arguments of
            :func:`jaxsr.optics.astigmatic_sigma`, nm) instead of a 2D Gaussian; ``sigma_nm`` must
            then be None, and the table gets ``z_nm`` and ``crlb_z_nm``.
        mesh: ``None`` (default) or a :class:`jax.sharding.Mesh` with a ``"batch"`` axis: the
            ROI fits are spread over its devices (see :func:`~jaxsr.smlm.fit.fit_spots`); detection
            stays on one device.

    Returns:
        :class:`Localizations` (empty, with a warning, when nothing is detected; empty without one
        for a movie of 0 frames).

    Raises:
        ValueError: frames that are not 2D/3D or hold NaN; non-positive pixel or PSF size; a NaN,
            infinite or non-positive ``max_shift_px`` or ``max_crlb_px``.
    """
    import warnings

    frames = as_movie(frames)
    pixel = float(pixel_size_nm)
    if not (np.isfinite(pixel) and pixel > 0):
        raise ValueError(f"argument 'pixel_size_nm': expected a positive pixel size in nm, got {pixel_size_nm}")
    for name, v in (("sigma_nm", sigma_nm), ("sigma_guess_nm", sigma_guess_nm)):
        if v is not None and not (np.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"argument '{name}': expected a positive PSF standard deviation in nm, got {v}")
    iterations = check_int(iterations, "iterations", minimum=1)
    for name, v in (("max_shift_px", max_shift_px), ("max_crlb_px", max_crlb_px)):
        try:
            ok = np.isfinite(float(v)) and float(v) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:  # NaN or <= 0 would silently drop every fit
            raise ValueError(f"argument '{name}': expected a finite positive number of pixels, got {v!r}")
    if mesh is not None:
        from jaxsr.parallel.batch import check_mesh  # noqa: PLC0415 (jaxsr.parallel imports the methods)

        check_mesh(mesh)
    if astigmatism is not None and sigma_nm is not None:
        raise ValueError("argument 'sigma_nm': give either sigma_nm or astigmatism (3D), not both")
    sigma_px = None if sigma_nm is None else float(sigma_nm) / pixel
    if astigmatism is not None and sigma_guess_nm is None and isinstance(astigmatism, dict):
        sigma_guess_nm = 1.2 * float(astigmatism.get("sigma0_x_nm", 1.3 * pixel))
    guess_px = sigma_px if sigma_px is not None else (1.3 if sigma_guess_nm is None else float(sigma_guess_nm) / pixel)
    if roi_size is None:
        roi_size = max(7, 2 * int(round(2.0 * guess_px)) + 1)
    roi_size = check_int(roi_size, "roi_size", minimum=5)
    if roi_size % 2 == 0:
        raise ValueError(f"argument 'roi_size': expected an odd number of pixels, got {roi_size}")
    if camera is None:
        counts, variance, f2, qe = frames, jnp.asarray(0.0, frames.dtype), 1.0, 1.0
    else:
        counts, variance = camera_counts(frames, camera=camera)
        f2, qe = _excess(camera), float(camera.qe)
    cand = detect_spots(counts, sigma_px=guess_px, threshold=threshold, batch=batch)
    if frames.shape[0] == 0:  # a movie of no frames: nothing to find, nothing to warn about
        return Localizations.empty()
    if cand.frame.size == 0:
        warnings.warn("localize: no spots detected (lower 'threshold'?); returning an empty table", stacklevel=2)
        return Localizations.empty()
    rois, origin = extract_rois(counts, cand.frame, cand.y, cand.x, size=roi_size)
    if variance.ndim == 2:
        var_rois, _ = extract_rois(variance[None], np.zeros_like(cand.frame), cand.y, cand.x, size=roi_size)
    else:
        var_rois = variance
    fit = _fit_in_blocks(rois, var_rois, sigma_px, iterations, astigmatism=astigmatism, pixel_size_nm=pixel,
                         mesh=mesh)
    params, crlb = np.asarray(fit.params), np.asarray(fit.crlb)
    y_px = origin[:, 0] + params[:, 0]
    x_px = origin[:, 1] + params[:, 1]
    shift = np.hypot(y_px - cand.y, x_px - cand.x)
    ok = (np.asarray(fit.converged) & (shift <= max_shift_px) & (params[:, 2] > 0)
          & np.all(np.isfinite(crlb), axis=1) & (np.maximum(crlb[:, 0], crlb[:, 1]) <= max_crlb_px))
    three_d = astigmatism is not None
    if sigma_px is not None:
        sigma_col = np.full(len(params), sigma_px)
    elif three_d:
        sigma_col = np.full(len(params), np.nan)
    else:
        sigma_col = params[:, 4]
    nan = np.full(len(params), np.nan, np.float32)
    scale = f2 / qe
    table = Localizations(
        frame=cand.frame, x_nm=((x_px + 0.5) * pixel).astype(np.float32),
        y_nm=((y_px + 0.5) * pixel).astype(np.float32), photons=(params[:, 2] * scale).astype(np.float32),
        background=(params[:, 3] * scale).astype(np.float32), sigma_nm=(sigma_col * pixel).astype(np.float32),
        crlb_x_nm=(crlb[:, 1] * pixel).astype(np.float32), crlb_y_nm=(crlb[:, 0] * pixel).astype(np.float32),
        crlb_photons=(crlb[:, 2] * scale).astype(np.float32), score=cand.score,
        deviance=np.asarray(fit.deviance).astype(np.float32),
        z_nm=params[:, 4].astype(np.float32) if three_d else nan,
        crlb_z_nm=crlb[:, 4].astype(np.float32) if three_d else nan,
    )
    return table.select(ok)
