"""Image resolution from the data: Fourier ring/shell correlation and decorrelation analysis.

NumPy (float64), for 2-D images with axis order ``(y, x)``; :func:`frc` also
takes 3-D volumes ``(z, y, x)`` with cubic voxels (Fourier shell correlation).
Results are in physical units: frequencies in cycles/nm and resolutions in
nm, given the pixel (voxel) size ``pixel_size_nm``.

Apodisation. The image edges are tapered before any Fourier transform so that
the jump between opposite edges (implicit in the periodic DFT) does not put a
bright cross on the frequency axes. :func:`frc` and :func:`frc_single` use a
periodic ("DFT-even") Hann window: its DFT has exactly three non-zero taps,
so the windowed spectrum is the original spectrum smoothed over +/-1
frequency pixel and a sharp spectral cut-off moves by at most about one ring.
For volumes the window is the same Hann window along each of the three axes.
Flat-topped tapers (Tukey) leak more (their spectrum has slowly decaying
side lobes) and shift the FRC crossing outwards by several rings on sharply
band-limited data. :func:`decorrelation` follows Descloux et al. and tapers
only the border (a cosine over 1/8 of each side, i.e. a Tukey window with
alpha = 1/4).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from jaxsr._validate import check_choice, check_finite, check_int, check_ndim
from jaxsr.metrics.profile import _positive_scalar, _real_array

__all__ = ["FRCResult", "DecorrelationResult", "frc", "frc_single", "decorrelation"]

#: FRC thresholds accepted by :func:`frc` and :func:`frc_single`.
_THRESHOLDS = ("1/7", "half-bit")
#: The crossing search starts at this ring (or shell): ring 0 (DC) and rings
#: 1-2, which hold only 1-12 frequency pixels each (18-62 voxels for shells),
#: are too noisy to decide anything.
_FIRST_RING = 3


class FRCResult(NamedTuple):
    """Fourier ring (2-D) or shell (3-D) correlation curve and the resolution read from it.

    Attributes:
        resolution_nm: ``1 / crossing_frequency`` in nm; ``nan`` when the curve
            never falls below the threshold (``crossed`` is then False).
        frequencies: ``(n_rings,)`` ring (shell) frequencies in cycles/nm, ring
            ``i`` at ``i / (n * pixel_size_nm)``, from 0 to the Nyquist frequency.
        curve: ``(n_rings,)`` FRC (FSC) values in ``[-1, 1]``.
        threshold_curve: ``(n_rings,)`` threshold per ring (shell).
        crossing_frequency: first frequency (from ring 3 up) where the curve
            falls below the threshold, linearly interpolated between rings, in
            cycles/nm; ``nan`` when it never does.
        crossed: whether a crossing was found.
    """

    resolution_nm: float
    frequencies: np.ndarray
    curve: np.ndarray
    threshold_curve: np.ndarray
    crossing_frequency: float
    crossed: bool


class DecorrelationResult(NamedTuple):
    """Image decorrelation analysis (see :func:`decorrelation`).

    Attributes:
        resolution_nm: ``2 * pixel_size_nm / kc``; ``nan`` when no valid peak.
        kc: cut-off frequency in units of the Nyquist frequency (``0 < kc <= 1``),
            the highest valid peak position; ``nan`` when no peak reached A >= 0.05.
        A0: amplitude of the peak of the unfiltered decorrelation curve ``d0``
            (an SNR-like figure in ``[0, 1]``); 0 when it has no peak.
        d_curve: ``(num_radii,)`` unfiltered decorrelation function ``d0(r)``.
        radii: ``(num_radii,)`` sampling ``r = linspace(0, 1, num_radii)`` in
            units of the Nyquist frequency.
        peaks: ``(1 + 2 * num_highpass, 3)`` rows ``(sigma_px, r_i, A_i)``: row 0 is
            the unfiltered curve (``sigma_px = inf``), then the first and the
            refined series of Gaussian high-pass filters (``sigma_px`` = standard
            deviation of the Gaussian removed, in pixels). A curve without a peak
            has ``r_i = A_i = 0``.
    """

    resolution_nm: float
    kc: float
    A0: float
    d_curve: np.ndarray
    radii: np.ndarray
    peaks: np.ndarray


# --------------------------------------------------------------------- helpers
def _as_image(x: Any, name: str, ndim: int | tuple[int, ...] = 2) -> np.ndarray:
    arr = _real_array(x, name)
    check_ndim(arr, name, ndim)
    check_finite(arr, name)
    return arr


def _check_pixel_size(pixel_size_nm: Any) -> float:
    return _positive_scalar(pixel_size_nm, "pixel_size_nm")


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"argument '{name}': expected a bool, got {type(value).__name__}")
    return bool(value)


def _centre_crop(a: np.ndarray, side: int) -> np.ndarray:
    """The central ``side x ... x side`` square (cube) of ``a``."""
    return a[tuple(slice((s - side) // 2, (s - side) // 2 + side) for s in a.shape)]


def _hann(n: int) -> np.ndarray:
    """Periodic (DFT-even) Hann window of length n."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _edge_taper(n: int, border: int) -> np.ndarray:
    """1 in the middle, a raised-cosine ramp over ``border`` samples at each end."""
    w = np.ones(n)
    if border > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(border) + 0.5) / border)
        w[:border] = ramp
        w[n - border :] = ramp[::-1]
    return w


def _hann_window(n: int, ndim: int) -> np.ndarray:
    """Separable periodic Hann window on an n x ... x n grid (``ndim`` axes)."""
    h = _hann(n)
    window = h
    for _ in range(ndim - 1):
        window = np.multiply.outer(window, h)
    return window


def _ring_index(n: int, ndim: int = 2) -> np.ndarray:
    """Integer ring (shell) index round(|k|) of each DFT sample of an n^ndim grid (k in frequency pixels)."""
    k = np.fft.fftfreq(n) * n
    if ndim == 2:
        return np.rint(np.hypot(k[:, None], k[None, :])).astype(np.int64)
    # |k|^2 is a sum of squared integers (exact in float64); round(sqrt(m)) for an
    # integer m is never a tie, so this matches np.hypot in 2-D as well.
    k2 = np.zeros((n,) * ndim)
    for axis in range(ndim):
        k2 = k2 + (k**2).reshape((n,) + (1,) * (ndim - 1 - axis))
    return np.rint(np.sqrt(k2)).astype(np.int64)


def _ring_correlation(f1: np.ndarray, f2: np.ndarray, rings: np.ndarray, n_rings: int):
    """Per-ring (per-shell) correlation of two spectra and the number of pixels (voxels) per ring."""
    flat = rings.ravel()
    inside = flat < n_rings
    idx = flat[inside]
    cross = np.bincount(idx, (f1 * np.conj(f2)).real.ravel()[inside], minlength=n_rings)
    p1 = np.bincount(idx, (np.abs(f1) ** 2).ravel()[inside], minlength=n_rings)
    p2 = np.bincount(idx, (np.abs(f2) ** 2).ravel()[inside], minlength=n_rings)
    counts = np.bincount(idx, minlength=n_rings).astype(np.float64)
    denom = np.sqrt(p1 * p2)
    curve = np.divide(cross, denom, out=np.zeros(n_rings), where=denom > 0)
    return np.clip(curve, -1.0, 1.0), counts


def _threshold_curve(threshold: str, counts: np.ndarray) -> np.ndarray:
    if threshold == "1/7":
        return np.full(counts.shape, 1.0 / 7.0)
    # Half-bit information threshold (van Heel & Schatz 2005, Eq. 17) with n
    # the number of Fourier pixels in the ring (voxels in the shell).
    root = np.sqrt(np.maximum(counts, 1.0))
    return (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root)


def _first_crossing(curve: np.ndarray, thresh: np.ndarray, rings_below: int = 1) -> float:
    """Fractional ring index of the first fall below the threshold (ring >= 3) that lasts ``rings_below``
    rings (or to the last ring), or nan."""
    g = curve - thresh
    for i in range(_FIRST_RING, curve.size):
        if g[i] < 0 and np.all(g[i:i + rings_below] < 0):
            if g[i - 1] > 0:
                return (i - 1) + g[i - 1] / (g[i - 1] - g[i])
            return float(i)
    return float("nan")


def _result(curve, counts, threshold, freq_step_per_nm, rings_below: int = 1) -> FRCResult:
    thresh = _threshold_curve(threshold, counts)
    ring = _first_crossing(curve, thresh, rings_below)
    crossed = bool(np.isfinite(ring))
    crossing = ring * freq_step_per_nm if crossed else float("nan")
    return FRCResult(
        resolution_nm=float(1.0 / crossing) if crossed else float("nan"),
        frequencies=np.arange(curve.size) * freq_step_per_nm,
        curve=curve,
        threshold_curve=thresh,
        crossing_frequency=float(crossing),
        crossed=crossed,
    )


def _prepare_for_fft(a: np.ndarray, window: np.ndarray | None, name: str) -> np.ndarray:
    a = a - a.mean()
    if not np.any(a):
        raise ValueError(f"argument '{name}': is constant (no signal to correlate)")
    return a * window if window is not None else a


# ------------------------------------------------------------------------- FRC
def frc(
    image1: Any, image2: Any, *, pixel_size_nm: Any, threshold: str = "1/7", apodize: bool = True,
    rings_below: int = 1,
) -> FRCResult:
    """Fourier ring (2-D) or shell (3-D) correlation of two independent images of the same object.

    ``FRC(r) = Re sum_ring F1 F2* / sqrt(sum_ring |F1|^2 sum_ring |F2|^2)`` over
    rings of width one frequency pixel (ring ``i`` holds the DFT samples with
    ``round(|k|) = i``, ``k`` in frequency pixels), up to the Nyquist ring
    ``n // 2``. Each image has its mean subtracted and, with ``apodize``, is
    multiplied by a separable periodic Hann window (see the module notes).
    The resolution is ``1 / f`` at the first frequency ``f`` where the curve
    drops below the threshold, linearly interpolated between the two rings
    around the drop. Rings 0-2 (the DC term and two rings of at most 12 pixels)
    are ignored in that search; if ring 3 is already below the threshold the
    crossing is placed by interpolation from ring 2, or at ring 3.

    Volumes ``(z, y, x)`` give the Fourier shell correlation (FSC) by the same
    rules: shells of width one frequency voxel (shell ``i`` holds the voxels
    with ``round(|k|) = i``, ``|k|^2 = kz^2 + ky^2 + kx^2``), the Hann window
    along all three axes, the half-bit threshold with the number of voxels per
    shell, shells 0-2 skipped in the crossing search. Voxels must be cubic (one
    ``pixel_size_nm`` for z, y and x): resample an anisotropic stack first.

    Non-square images (non-cubic volumes) are cropped to their central
    ``n x n`` square (``n x n x n`` cube), ``n`` = the smallest side. A ring
    where either image has no power (possible only for noise-free synthetic
    data) gets the value 0.

    Args:
        image1: ``(y, x)`` image (at least 8 x 8) or ``(z, y, x)`` volume (at
            least 8 x 8 x 8).
        image2: second image (volume) of the same field with independent noise,
            same shape as ``image1``.
        pixel_size_nm: pixel (cubic voxel) size in nm (positive scalar).
        threshold: ``"1/7"`` (fixed 0.143) or ``"half-bit"`` (van Heel & Schatz 2005,
            with the number of pixels per ring or voxels per shell).
        apodize: taper the edges with a Hann window before the FFT.
        rings_below: the crossing is the first fall below the threshold after which the
            curve stays below for this many rings (shells); 1 (default): the first fall.
            Sparse or periodic objects (a fused DNA-origami grid) have almost no power
            between their envelope and their first spectral peak, where the curve of even
            a perfect reconstruction can dip below the threshold for a ring or two and the
            first fall lands at a meaninglessly low frequency; 3 skips such dips.

    Returns:
        :class:`FRCResult` ``(resolution_nm, frequencies, curve, threshold_curve,
        crossing_frequency, crossed)``; frequencies in cycles/nm, ``n // 2 + 1``
        rings (shells).

    Raises:
        ValueError: an image neither 2-D nor 3-D, smaller than 8 along an axis,
            constant or with NaN; shapes that differ; a non-positive pixel size;
            an unknown threshold; ``rings_below`` below 1.
        TypeError: a complex or non-numeric image or pixel size; a non-bool ``apodize``.

    References:
        W. O. Saxton and W. Baumeister, J. Microsc. 127, 127-138 (1982);
        R. P. J. Nieuwenhuizen et al., "Measuring image resolution in optical
        nanoscopy", Nat. Methods 10, 557-562 (2013) (the 1/7 threshold);
        G. Harauz and M. van Heel, "Exact filters for general geometry three
        dimensional reconstruction", Optik 73, 146-156 (1986) (FSC);
        M. van Heel and M. Schatz, "Fourier shell correlation threshold
        criteria", J. Struct. Biol. 151, 250-262 (2005) (half-bit, FSC).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> a = rng.random((32, 32))
        >>> r = frc(a, a, pixel_size_nm=10.0)
        >>> r.crossed, r.frequencies.shape
        (False, (17,))
        >>> v = rng.random((16, 16, 16))  # a volume: Fourier shell correlation
        >>> r = frc(v, v, pixel_size_nm=10.0, threshold="half-bit")
        >>> r.crossed, r.frequencies.shape
        (False, (9,))
    """
    a = _as_image(image1, "image1", (2, 3))
    b = _as_image(image2, "image2", (2, 3))
    if a.shape != b.shape:
        raise ValueError(f"argument 'image2': shape {b.shape} does not match argument 'image1' of shape {a.shape}")
    px = _check_pixel_size(pixel_size_nm)
    check_choice(threshold, "threshold", _THRESHOLDS)
    apodize = _check_bool(apodize, "apodize")
    rings_below = check_int(rings_below, "rings_below", minimum=1)
    ndim = a.ndim
    n = min(a.shape)
    if n < 8:
        unit = "pixels" if ndim == 2 else "voxels"
        raise ValueError(f"argument 'image1': needs at least {' x '.join(['8'] * ndim)} {unit}, got shape {a.shape}")
    a, b = _centre_crop(a, n), _centre_crop(b, n)
    window = _hann_window(n, ndim) if apodize else None
    fa = np.fft.fftn(_prepare_for_fft(a, window, "image1"))
    fb = np.fft.fftn(_prepare_for_fft(b, window, "image2"))
    n_rings = n // 2 + 1
    curve, counts = _ring_correlation(fa, fb, _ring_index(n, ndim), n_rings)
    return _result(curve, counts, threshold, 1.0 / (n * px), rings_below)


def frc_single(image: Any, *, pixel_size_nm: Any, threshold: str = "1/7", apodize: bool = True) -> FRCResult:
    """Single-image FRC by checkerboard (diagonal) splitting.

    The image (cropped to its central even square, side ``n``) is split into
    four ``n/2 x n/2`` sub-images by taking every other pixel: the diagonal pair
    (even rows, even columns) / (odd rows, odd columns) and the anti-diagonal
    pair (even, odd) / (odd, even). Pixels of different sub-images carry
    independent shot noise, so each pair acts as two independent images with
    pixel size ``2 * pixel_size_nm`` (Koho et al. 2019). The FRC of the two
    pairs is averaged.

    The two sub-images of a pair are offset by one original pixel along both
    axes, ``sqrt(2)`` pixels along the diagonal (half a sub-image pixel per
    axis). Left as is, this shift multiplies the cross-spectrum by
    ``cos(2 pi p (fx +/- fy))``, which on a ring of radius ``f`` averages to
    ``J0(2 sqrt(2) pi p f)`` and drags the curve down at high frequency (to ~0.08
    at the sub-image Nyquist). Koho et al. compensate it with an empirical
    correction; here the offset is removed exactly by a Fourier phase ramp on the
    second sub-image before correlating (with a noise-free band-limited image the
    corrected curve is 1 up to the band limit). The frequency axis is that of the
    sub-images, ring ``i`` at ``i / (n * pixel_size_nm)`` cycles/nm in original
    units (sub-image side ``n/2``, pixel ``2 * pixel_size_nm``), so it reaches
    half the original Nyquist frequency. Signal above that frequency aliases
    in the sub-images: the method needs images sampled finer than twice the
    Nyquist rate of their resolution (resolution above ~4 pixels).

    Args:
        image: ``(y, x)`` image, at least 16 x 16 (shot-noise limited, unfiltered).
        pixel_size_nm: pixel size of ``image`` in nm.
        threshold: ``"1/7"`` or ``"half-bit"`` (pixel counts of the sub-image rings).
        apodize: taper each sub-image with a periodic Hann window.

    Returns:
        :class:`FRCResult` in the original physical units (cycles/nm, nm).

    Raises:
        ValueError: image not 2-D, smaller than 16 x 16, constant or with NaN;
            non-positive pixel size; unknown threshold.
        TypeError: a complex or non-numeric image or pixel size; a non-bool ``apodize``.

    References:
        S. Koho et al., "Fourier ring correlation simplifies image restoration
        in fluorescence microscopy", Nat. Commun. 10, 3103 (2019).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> r = frc_single(rng.poisson(20.0, (64, 64)), pixel_size_nm=10.0)
        >>> r.frequencies.shape, round(float(r.frequencies[-1]), 4)  # up to 1 / (4 * 10 nm)
        ((17,), 0.025)
    """
    img = _as_image(image, "image")
    px = _check_pixel_size(pixel_size_nm)
    check_choice(threshold, "threshold", _THRESHOLDS)
    apodize = _check_bool(apodize, "apodize")
    n = min(img.shape) // 2 * 2
    if n < 16:
        raise ValueError(f"argument 'image': needs at least 16 x 16 pixels, got shape {img.shape}")
    img = _centre_crop(img, n)
    m = n // 2
    window = _hann_window(m, 2) if apodize else None
    f = np.fft.fftfreq(m)  # cycles per sub-image pixel
    rings = _ring_index(m)
    n_rings = m // 2 + 1
    curves = []
    counts = None
    for (ya, xa), (yb, xb) in (((0, 0), (1, 1)), ((0, 1), (1, 0))):
        sub_a = _prepare_for_fft(img[ya::2, xa::2], window, "image")
        sub_b = _prepare_for_fft(img[yb::2, xb::2], window, "image")
        fa = np.fft.fft2(sub_a)
        fb = np.fft.fft2(sub_b)
        # sub_b samples the object (yb - ya, xb - xa) original pixels = half that
        # in sub-image pixels further on; shift it back onto sub_a's grid.
        dy, dx = (yb - ya) / 2.0, (xb - xa) / 2.0
        fb = fb * np.exp(-2j * np.pi * (f[:, None] * dy + f[None, :] * dx))
        curve, counts = _ring_correlation(fa, fb, rings, n_rings)
        curves.append(curve)
    return _result(np.mean(curves, axis=0), counts, threshold, 1.0 / (n * px))


# --------------------------------------------------------------- decorrelation
def _find_peak(d: np.ndarray, significance: float = 1e-3) -> int | None:
    """Index of the decorrelation peak on the sampled curve, or None.

    The peak is the highest sample, excluding the last one (r = 1), after which
    the curve decreases by more than ``significance`` (a curve still rising at
    the Nyquist frequency has not decorrelated).
    """
    if d.size < 3:
        return None
    tail_min = np.minimum.accumulate(d[::-1])[::-1]  # min(d[i:]) for every i
    valid = (d[:-1] - tail_min[:-1]) > significance
    valid[0] = False  # r = 0 holds no frequency
    if not np.any(valid):
        return None
    candidates = np.where(valid, d[:-1], -np.inf)
    return int(np.argmax(candidates))


def decorrelation(
    image: Any, *, pixel_size_nm: Any, num_radii: int = 50, num_highpass: int = 10
) -> DecorrelationResult:
    """Resolution from a single image by decorrelation analysis (Descloux et al. 2019).

    Steps (frequencies ``r`` in units of the Nyquist frequency, the analysis
    restricted to the disc ``r < 1``; the DC term is excluded throughout):

    1. Subtract the mean and taper the border (cosine over 1/8 of each side).
    2. ``I(k)`` = FFT of the image; ``In(k) = I(k) / |I(k)|`` its normalised
       (phase-only) spectrum.
    3. For a circular mask ``M_r`` of radius ``r``, the decorrelation function
       ``d(r) = sum Re(I In* M_r) / (||I|| ||In M_r||)`` (``||I||`` over the whole
       disc). It rises while the mask adds frequencies with signal and falls when
       it adds noise-dominated ones; its peak ``(r_0, A_0)`` is read on the grid
       ``linspace(0, 1, num_radii)`` and then refined to the exact frequency by
       evaluating ``d`` at every distinct ``|k|`` between the neighbouring grid
       points (cheap: ``d`` is a cumulative sum over the sorted radii).
    4. Repeat with ``I`` high-pass filtered by ``1 - exp(-2 pi^2 sigma^2 |f|^2)``
       (subtracting a Gaussian blur of ``sigma`` pixels), for ``num_highpass``
       sigmas spaced geometrically from ``2 / r_0`` down to 0.15 pixels, then for
       ``num_highpass`` sigmas refined between the neighbours of the filter that
       gave the highest peak.
    5. Peaks with amplitude ``A_i < 0.05`` are discarded; ``kc = max r_i`` and
       ``resolution = 2 * pixel_size_nm / kc``.

    Args:
        image: ``(y, x)`` image, at least 16 x 16, any aspect ratio (``r`` is
            normalised to each axis' Nyquist frequency).
        pixel_size_nm: pixel size in nm.
        num_radii: number of radii sampled in ``[0, 1]`` (>= 10).
        num_highpass: number of high-pass filters per series (>= 1).

    Returns:
        :class:`DecorrelationResult` ``(resolution_nm, kc, A0, d_curve, radii, peaks)``;
        ``resolution_nm`` and ``kc`` are ``nan`` when no curve has a valid peak
        (pure noise or a featureless image).

    Raises:
        ValueError: image not 2-D, smaller than 16 x 16, constant or with NaN;
            non-positive pixel size; ``num_radii < 10`` or ``num_highpass < 1``.
        TypeError: a complex or non-numeric image or pixel size.

    References:
        A. Descloux, K. S. Grussmayer and A. Radenovic, "Parameter-free image
        resolution estimation based on decorrelation analysis", Nat. Methods 16,
        918-924 (2019).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> r = decorrelation(rng.poisson(50.0, (64, 64)), pixel_size_nm=10.0)
        >>> r.d_curve.shape, r.peaks.shape
        ((50,), (21, 3))
    """
    img = _as_image(image, "image")
    px = _check_pixel_size(pixel_size_nm)
    num_radii = check_int(num_radii, "num_radii", minimum=10)
    num_highpass = check_int(num_highpass, "num_highpass", minimum=1)
    ny, nx = img.shape
    if min(ny, nx) < 16:
        raise ValueError(f"argument 'image': needs at least 16 x 16 pixels, got shape {img.shape}")
    window = np.outer(_edge_taper(ny, ny // 8), _edge_taper(nx, nx // 8))
    spectrum = np.fft.fft2(_prepare_for_fft(img, window, "image"))

    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.fftfreq(nx)[None, :]
    rho = np.hypot(fy / 0.5, fx / 0.5)  # |k| in units of the Nyquist frequency
    magnitude = np.abs(spectrum)
    keep = (rho < 1.0) & (rho > 0.0)
    order = np.argsort(rho[keep], kind="stable")
    rho_sorted = rho[keep][order]
    mag_sorted = magnitude[keep][order]
    f2_sorted = (fy**2 + fx**2)[keep][order]  # |f|^2 in (cycles/pixel)^2
    # ||In M_r||^2 = number of non-zero normalised coefficients with rho < r.
    nonzero_count = np.cumsum(mag_sorted > 0)

    radii = np.linspace(0.0, 1.0, num_radii)

    def d_of(weights: np.ndarray, r: np.ndarray) -> np.ndarray:
        # With Ir = H I and In = I/|I| (H real, >= 0): Re(Ir In*) = H |I|.
        numerator = np.cumsum(weights)
        norm = np.sqrt(np.sum(weights**2))
        k = np.searchsorted(rho_sorted, r, side="left")  # number of samples with rho < r
        out = np.zeros(r.shape)
        has = k > 0
        count = nonzero_count[np.maximum(k - 1, 0)]
        ok = has & (count > 0) & (norm > 0)
        out[ok] = numerator[k[ok] - 1] / (norm * np.sqrt(count[ok]))
        return out

    def analyse(sigma: float) -> tuple[float, float, np.ndarray]:
        if np.isinf(sigma):
            weights = mag_sorted
        else:
            weights = (1.0 - np.exp(-2.0 * np.pi**2 * sigma**2 * f2_sorted)) * mag_sorted
        d = d_of(weights, radii)
        i = _find_peak(d)
        if i is None:
            return 0.0, 0.0, d
        lo, hi = radii[i - 1], radii[min(i + 1, radii.size - 1)]
        inner = np.unique(rho_sorted[(rho_sorted > lo) & (rho_sorted < hi)])
        # d at each distinct radius in (lo, hi), evaluated just above it so that
        # the samples at that radius are included, plus the grid point itself.
        reported = np.concatenate([[radii[i]], inner])
        values = d_of(weights, np.concatenate([[radii[i]], np.nextafter(inner, np.inf)]))
        j = int(np.argmax(values))
        return float(reported[j]), float(values[j]), d

    r0, a0, d0 = analyse(np.inf)
    rows = [(np.inf, r0, a0)]
    sigma_max = 2.0 / r0 if r0 > 0 else max(ny, nx) / 2.0
    sigmas = np.exp(np.linspace(np.log(sigma_max), np.log(0.15), num_highpass))
    first = [analyse(s)[:2] for s in sigmas]
    rows += [(s, r, a) for s, (r, a) in zip(sigmas, first)]
    # Refine the filter strength around the filter with the highest valid peak.
    r_valid = np.array([r if a >= 0.05 else 0.0 for r, a in first])
    best = int(np.argmax(r_valid))
    lo_s = sigmas[max(best - 1, 0)]
    hi_s = sigmas[min(best + 1, num_highpass - 1)]
    refined = np.exp(np.linspace(np.log(lo_s), np.log(hi_s), num_highpass))
    rows += [(s, *analyse(s)[:2]) for s in refined]

    peaks = np.array(rows, dtype=np.float64)
    valid = (peaks[:, 2] >= 0.05) & (peaks[:, 1] > 0)
    if np.any(valid):
        kc = float(np.max(peaks[valid, 1]))
        resolution = 2.0 * px / kc
    else:
        kc = float("nan")
        resolution = float("nan")
    return DecorrelationResult(
        resolution_nm=float(resolution), kc=kc, A0=float(a0), d_curve=d0, radii=radii, peaks=peaks
    )
