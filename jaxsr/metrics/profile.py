"""Line profiles and their widths: FWHM by Gaussian fit, two-peak separation.

NumPy/SciPy (not traced by JAX): these are measurement tools applied to a
finished image, not losses. Positions along a profile are in units of its
sample spacing, converted to nm with ``pixel_size_nm`` (the spacing of the
profile samples, which :func:`line_profile` documents). Image coordinates are
``(y, x)`` in pixels, pixel centres at integers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import scipy.ndimage as ndi
import scipy.optimize
import scipy.signal

from jaxsr._validate import check_finite, check_int, check_ndim, check_positive

__all__ = ["FWHMResult", "TwoPeakResult", "fwhm", "two_peak_separation", "line_profile"]

#: FWHM of a Gaussian in units of its standard deviation, 2 sqrt(2 ln 2).
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


class FWHMResult(NamedTuple):
    """Gaussian fit to a line profile (see :func:`fwhm`).

    Attributes:
        fwhm_nm: full width at half maximum, ``2 sqrt(2 ln 2) * sigma_nm``.
        center_nm: fitted peak position from the first sample, in nm.
        amplitude: fitted peak height above the background (profile units).
        background: fitted constant background (profile units).
        sigma_nm: fitted Gaussian standard deviation in nm (positive).
    """

    fwhm_nm: float
    center_nm: float
    amplitude: float
    background: float
    sigma_nm: float


class TwoPeakResult(NamedTuple):
    """Two-Gaussian fit to a line profile (see :func:`two_peak_separation`).

    Attributes:
        separation_nm: distance between the two fitted centres in nm.
        dip: ``1 - (minimum of the fitted peaks between the centres) /
            (smaller of the fitted peak values at the centres)``, background
            removed; 0 when the sum has no dip, in ``[0, 1]``.
        resolved: ``dip >= min_dip``.
        centers_nm: ``(2,)`` fitted centres in nm, ascending.
        fwhm_nm: ``(2,)`` FWHM of each fitted Gaussian in nm, same order.
    """

    separation_nm: float
    dip: float
    resolved: bool
    centers_nm: np.ndarray
    fwhm_nm: np.ndarray


def _gauss(x: np.ndarray, amplitude: float, center: float, sigma: float) -> np.ndarray:
    return amplitude * np.exp(-0.5 * ((x - center) / sigma) ** 2)


def _one_gauss_model(x, amplitude, center, sigma, background):
    return _gauss(x, amplitude, center, sigma) + background


def _two_gauss_model(x, a1, c1, s1, a2, c2, s2, background):
    return _gauss(x, a1, c1, s1) + _gauss(x, a2, c2, s2) + background


def _real_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a float64 NumPy array; TypeError naming ``name`` unless real and numeric.

    ``np.asarray(x, dtype=np.float64)`` alone would drop the imaginary part of a
    complex input with only a warning, and give unnamed errors for strings.
    """
    try:
        arr = np.asarray(x)
    except Exception as err:  # noqa: BLE001 - re-raised with a clear message
        raise TypeError(f"argument '{name}': expected a real numeric array, got {type(x).__name__}") from err
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"argument '{name}': expected a real numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _positive_scalar(x: Any, name: str) -> float:
    """A finite positive real scalar as a Python float, or a named TypeError/ValueError."""
    arr = _real_array(x, name)
    if arr.ndim != 0:
        raise ValueError(f"argument '{name}': expected a scalar, got shape {arr.shape}")
    check_positive(arr, name)
    return float(arr)


def _check_min_dip(min_dip: Any) -> float:
    try:
        value = float(min_dip)
    except (TypeError, ValueError) as err:
        raise TypeError(f"argument 'min_dip': expected a number in [0, 1), got {min_dip!r}") from err
    if np.ndim(min_dip) != 0 or not (np.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"argument 'min_dip': expected a number in [0, 1), got {min_dip!r}")
    return value


def _clean_profile(profile: Any, pixel_size_nm: Any, min_samples: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Validate a 1-D profile; return the finite samples' positions and values."""
    y = _real_array(profile, "profile")
    check_ndim(y, "profile", 1)
    pixel_size_nm = _positive_scalar(pixel_size_nm, "pixel_size_nm")
    x = np.arange(y.size, dtype=np.float64)
    keep = np.isfinite(y)
    if int(keep.sum()) < min_samples:
        raise ValueError(
            f"argument 'profile': needs at least {min_samples} finite samples, got {int(keep.sum())} "
            f"of {y.size}"
        )
    x, y = x[keep], y[keep]
    span = float(y.max() - y.min())
    if not span > 1e-12 * max(1.0, float(np.abs(y).max())):
        raise ValueError("argument 'profile': is flat (no peak to fit)")
    return x, y, float(pixel_size_nm)


def _single_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares fit of one Gaussian + constant; returns (A, x0, s, b)."""
    background0 = float(np.min(y))
    amplitude0 = float(np.max(y)) - background0
    # Centre: intensity-weighted mean of the samples above half maximum around the maximum.
    above = y >= background0 + 0.5 * amplitude0
    weights = (y - background0) * above
    center0 = float(np.sum(weights * x) / np.sum(weights))
    spacing = float(np.median(np.diff(x))) if x.size > 1 else 1.0
    sigma0 = max(0.5 * spacing, float(above.sum()) * spacing / _FWHM_PER_SIGMA)
    p0 = [amplitude0, center0, sigma0, background0]
    try:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            params, _ = scipy.optimize.curve_fit(_one_gauss_model, x, y, p0=p0, maxfev=20000)
    except (RuntimeError, scipy.optimize.OptimizeWarning) as err:
        raise ValueError(f"argument 'profile': the Gaussian fit did not converge ({err})") from err
    params[2] = abs(params[2])
    if not np.all(np.isfinite(params)) or params[0] <= 0 or params[2] == 0:
        raise ValueError("argument 'profile': no peak found (the fitted Gaussian has no positive amplitude)")
    return params


def fwhm(profile: Any, *, pixel_size_nm: Any = 1.0) -> FWHMResult:
    """Full width at half maximum of a peak, by a Gaussian + background fit.

    Fits ``I(x) = A exp(-(x - x0)^2 / (2 s^2)) + b`` by least squares
    (``scipy.optimize.curve_fit``, Levenberg-Marquardt) and reports
    ``FWHM = 2 sqrt(2 ln 2) s``. Initial guesses: ``b`` = profile minimum,
    ``A`` = maximum minus minimum, ``x0`` = weighted centre of the samples above
    half maximum, ``s`` = their extent / 2.355. Non-finite samples (e.g. a
    profile that ran off the image) are ignored.

    Args:
        profile: ``(n,)`` line profile (a single peak on a flat background).
        pixel_size_nm: spacing of the profile samples in nm.

    Returns:
        :class:`FWHMResult` ``(fwhm_nm, center_nm, amplitude, background, sigma_nm)``;
        ``center_nm`` counts from the first sample.

    Raises:
        ValueError: not 1-D, fewer than 5 finite samples (e.g. all NaN), a flat
            profile, a fit that does not converge or finds no positive peak, or
            a non-positive ``pixel_size_nm``.
        TypeError: a complex or non-numeric ``profile`` or ``pixel_size_nm``.

    References:
        Xue et al., CLID, Nat. Commun. (2026), Eqs. 7-8: the Gaussian-fit FWHM
        of line profiles, ``I(x) = A exp(-(x-x0)^2/(2 s^2)) + b``,
        ``FWHM = 2 sqrt(2 ln 2) s``.

    Example:
        >>> import numpy as np
        >>> x = np.arange(41.0)
        >>> p = 5.0 * np.exp(-0.5 * ((x - 20.0) / 3.0) ** 2) + 1.0
        >>> r = fwhm(p, pixel_size_nm=10.0)
        >>> round(r.fwhm_nm, 2), round(r.center_nm, 2)
        (70.64, 200.0)
    """
    x, y, px = _clean_profile(profile, pixel_size_nm, 5)
    amplitude, center, sigma, background = _single_fit(x, y)
    return FWHMResult(
        fwhm_nm=float(_FWHM_PER_SIGMA * sigma * px),
        center_nm=float(center * px),
        amplitude=float(amplitude),
        background=float(background),
        sigma_nm=float(sigma * px),
    )


def _two_peak_guess(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Initial (a1, c1, s1, a2, c2, s2, b) for a two-Gaussian fit."""
    background0 = float(np.min(y))
    # Look for two maxima in a lightly smoothed copy (robust to pixel noise).
    smooth = ndi.gaussian_filter1d(y, 1.0, mode="nearest")
    peaks, props = scipy.signal.find_peaks(smooth, prominence=0.05 * float(np.ptp(smooth)))
    if peaks.size >= 2:
        best = np.sort(peaks[np.argsort(props["prominences"])[-2:]])
        c1, c2 = float(x[best[0]]), float(x[best[1]])
        # Half-maximum widths of the smoothed maxima, corrected for the smoothing
        # (sigma 1 sample) and capped so the two starting peaks do not swallow each other.
        widths = scipy.signal.peak_widths(smooth, best, rel_height=0.5)[0]
        sigma_s = np.sqrt(np.maximum((widths / _FWHM_PER_SIGMA) ** 2 - 1.0, 0.25))
        sigma0 = float(np.clip(np.min(sigma_s), 0.5, max(0.5, 0.5 * (c2 - c1))))
        return [
            float(y[best[0]]) - background0, c1, sigma0,
            float(y[best[1]]) - background0, c2, sigma0,
            background0,
        ]
    # One visible maximum: start from a single-Gaussian fit and split it.
    amplitude, center, sigma, background = _single_fit(x, y)
    half = 0.6 * sigma
    return [amplitude, center - half, 0.8 * sigma, amplitude, center + half, 0.8 * sigma, background]


def two_peak_separation(profile: Any, *, pixel_size_nm: Any = 1.0, min_dip: Any = 0.26) -> TwoPeakResult:
    """Separation of two peaks and whether they are resolved (Rayleigh-like dip).

    Fits two Gaussians plus a constant background,
    ``I(x) = A1 g(x; c1, s1) + A2 g(x; c2, s2) + b``, by bounded least squares
    (``scipy.optimize.curve_fit``, trust-region reflective; amplitudes >= 0,
    widths >= 0.3 samples, centres within the profile). Initial centres are the
    two most prominent maxima of a lightly smoothed profile, or, when only one
    maximum is visible, a single-Gaussian fit split symmetrically.

    The dip is measured on the fitted curve with the background removed:
    ``dip = 1 - min_{c1 <= x <= c2} f(x) / min(f(c1), f(c2))`` with
    ``f = A1 g1 + A2 g2``. The pair is ``resolved`` when ``dip >= min_dip``; the
    default 0.26 is the ~26 % intensity dip of the Rayleigh criterion. For two
    equal Gaussians of standard deviation ``s`` the dip reaches 0.26 at a
    separation of about ``2.79 s``.

    Args:
        profile: ``(n,)`` line profile across two peaks.
        pixel_size_nm: spacing of the profile samples in nm.
        min_dip: dip required to call the pair resolved, in ``[0, 1)``.

    Returns:
        :class:`TwoPeakResult` ``(separation_nm, dip, resolved, centers_nm, fwhm_nm)``.

    Raises:
        ValueError: not 1-D, fewer than 8 finite samples, flat, a failed fit,
            ``min_dip`` outside ``[0, 1)``, or a non-positive ``pixel_size_nm``.
        TypeError: a complex or non-numeric ``profile``, ``pixel_size_nm`` or ``min_dip``.

    References:
        Lord Rayleigh, "Investigations in optics, with special reference to the
        spectroscope", Phil. Mag. 8, 261-274 (1879) (the ~26 % dip criterion).

    Example:
        >>> import numpy as np
        >>> x = np.arange(60.0)
        >>> g = lambda c: np.exp(-0.5 * ((x - c) / 3.0) ** 2)
        >>> r = two_peak_separation(g(25.0) + g(35.0), pixel_size_nm=1.0)
        >>> round(r.separation_nm, 3), r.resolved
        (10.0, True)
    """
    x, y, px = _clean_profile(profile, pixel_size_nm, 8)
    min_dip = _check_min_dip(min_dip)
    p0 = np.asarray(_two_peak_guess(x, y), dtype=np.float64)
    x_lo, x_hi = float(x[0]), float(x[-1])
    span = float(np.ptp(y))
    lower = [0.0, x_lo, 0.3, 0.0, x_lo, 0.3, float(np.min(y)) - span]
    upper = [np.inf, x_hi, x_hi - x_lo + 1.0, np.inf, x_hi, x_hi - x_lo + 1.0, float(np.max(y))]
    p0 = np.clip(p0, np.asarray(lower) + 1e-9, np.asarray(upper) - 1e-9)
    try:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            params, _ = scipy.optimize.curve_fit(
                _two_gauss_model, x, y, p0=p0, bounds=(lower, upper), method="trf", maxfev=20000,
                x_scale="jac",
            )
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"argument 'profile': the two-Gaussian fit did not converge ({err})") from err
    if not np.all(np.isfinite(params)):
        raise ValueError("argument 'profile': the two-Gaussian fit returned non-finite parameters")
    a1, c1, s1, a2, c2, s2, _ = params
    if c2 < c1:
        a1, c1, s1, a2, c2, s2 = a2, c2, s2, a1, c1, s1
    if a1 <= 0 or a2 <= 0:
        raise ValueError("argument 'profile': the fit found fewer than two peaks (zero amplitude)")

    def peaks_only(t):
        return _gauss(t, a1, c1, s1) + _gauss(t, a2, c2, s2)

    if c2 - c1 > 0:
        between = peaks_only(np.linspace(c1, c2, 2001))
        top = min(float(peaks_only(np.asarray(c1))), float(peaks_only(np.asarray(c2))))
        dip = float(np.clip(1.0 - between.min() / top, 0.0, 1.0))
    else:
        dip = 0.0
    return TwoPeakResult(
        separation_nm=float((c2 - c1) * px),
        dip=dip,
        resolved=bool(dip >= min_dip),
        centers_nm=np.array([c1, c2]) * px,
        fwhm_nm=np.array([s1, s2]) * _FWHM_PER_SIGMA * px,
    )


def line_profile(image: Any, start: Any, end: Any, *, width: int = 1, num: int | None = None) -> np.ndarray:
    """Intensity profile along a straight segment, averaged over a width.

    Samples ``num`` equally spaced points from ``start`` to ``end`` (both
    included) by bilinear interpolation (``scipy.ndimage.map_coordinates``,
    order 1). With ``width > 1``, ``width`` parallel lines one pixel apart,
    centred on the segment, are sampled and averaged. The default ``num`` is
    ``ceil(length) + 1``, the sampling of ``skimage.measure.profile_line``; the
    spacing between samples is then ``length / (num - 1)`` pixels (1 pixel for
    an integer length), which is the ``pixel_size`` to give :func:`fwhm` (in nm:
    times the image pixel size).

    Args:
        image: ``(y, x)`` image.
        start: ``(y, x)`` start point in pixels (pixel centres at integers).
        end: ``(y, x)`` end point in pixels.
        width: number of parallel lines averaged (>= 1), perpendicular spacing 1 px.
        num: number of samples (>= 2); default ``ceil(length) + 1``.

    Returns:
        ``(num,)`` float64 profile, from ``start`` to ``end``.

    Raises:
        ValueError: image not 2-D or containing NaN, a zero-length segment,
            or sample points (including the width) outside ``[0, size - 1]``.
        TypeError: a complex or non-numeric ``image``, ``start`` or ``end``.

    Example:
        >>> import numpy as np
        >>> img = np.arange(25.0).reshape(5, 5)
        >>> line_profile(img, (2, 0), (2, 4)).tolist()
        [10.0, 11.0, 12.0, 13.0, 14.0]
    """
    img = _real_array(image, "image")
    check_ndim(img, "image", 2)
    check_finite(img, "image")
    width = check_int(width, "width", minimum=1)
    p0 = _real_array(start, "start")
    p1 = _real_array(end, "end")
    for name, p in (("start", p0), ("end", p1)):
        if p.shape != (2,) or not np.all(np.isfinite(p)):
            raise ValueError(f"argument '{name}': expected a finite (y, x) pair, got {p.tolist()!r}")
    delta = p1 - p0
    length = float(np.hypot(*delta))
    if length == 0.0:
        raise ValueError("argument 'end': equals 'start' (zero-length segment)")
    if num is None:
        num = int(np.ceil(length)) + 1
    num = check_int(num, "num", minimum=2)
    t = np.linspace(0.0, 1.0, num)
    centre = p0[:, None] + delta[:, None] * t[None, :]  # (2, num)
    normal = np.array([delta[1], -delta[0]]) / length  # unit vector perpendicular to the segment
    offsets = np.arange(width, dtype=np.float64) - (width - 1) / 2.0
    coords = centre[:, None, :] + normal[:, None, None] * offsets[None, :, None]  # (2, width, num)
    upper = np.array(img.shape, dtype=np.float64)[:, None, None] - 1.0
    tol = 1e-9
    if np.any(coords < -tol) or np.any(coords > upper + tol):
        name = "width" if width > 1 and np.all(centre >= -tol) and np.all(centre <= upper[:, :, 0] + tol) else "end"
        if name == "end" and (np.any(p0 < -tol) or np.any(p0 > upper[:, 0, 0] + tol)):
            name = "start"
        raise ValueError(
            f"argument '{name}': the sampled segment leaves the image of shape {img.shape} "
            "(coordinates must lie in [0, size - 1])"
        )
    coords = np.clip(coords, 0.0, upper)
    values = ndi.map_coordinates(img, coords.reshape(2, -1), order=1, mode="nearest")
    return values.reshape(width, num).mean(axis=0)
