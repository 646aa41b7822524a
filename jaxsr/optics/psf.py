"""Point-spread-function models: Gaussian, Airy (Bessel), scalar pupil, astigmatic.

Conventions shared by every function here:

- Axis order ``(y, x)`` for 2D and ``(z, y, x)`` for 3D PSFs; lengths in nm.
- Grid: the optical axis (the emitter for zero offset) sits at index ``n // 2``
  on every axis, odd or even ``n`` (the package-wide fftshift convention of
  :mod:`jaxsr.optics.otf`). Pixel ``i`` is centred at ``(i - n // 2) * step``.
- ``offset_nm`` is the emitter position ``(y, x)`` / ``(z, y, x)`` relative to
  that centre: a positive offset moves the pattern towards larger indices.
  Offsets may be sub-pixel.
- Every PSF is normalised to unit sum over its whole array (2D image or 3D
  stack), so it is a probability mass over the pixels/voxels.
- Sizes (``shape``), ``oversample``, ``pad_factor``, ``integrate_pixel`` are
  static; every physical parameter (sigmas, NA, wavelength, pixel size,
  z step, refractive index, defocus, Zernike coefficients, offsets) is a traced
  argument: differentiable with ``jax.grad`` and batchable with ``jax.vmap``.
  Tuples of traced scalars are accepted wherever a vector is expected, e.g.
  ``sigma_nm=(sy, sx)``.
- Values are checked (positive, finite, ``na < refractive_index``) only when
  they are concrete; under ``jit``/``grad``/``vmap`` the checks are skipped.
- dtype: float32 by default, float64 when the parameters are float64 under x64.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from jaxsr._validate import (
    as_float_array,
    check_finite,
    check_int,
    check_positive,
    check_shape,
    is_concrete,
)
from jaxsr.optics.bessel import airy_of_sq
from jaxsr.optics.zernike import zernike_unmasked

__all__ = [
    "gaussian_psf_2d",
    "gaussian_psf_3d",
    "airy_psf_2d",
    "pupil_psf_3d",
    "astigmatic_sigma",
    "astigmatic_psf_3d",
]

# Under tracing the astigmatism polynomial is clamped here (concrete values
# that reach it raise instead), so sigma never becomes 0 or NaN.
_ASTIG_MIN_INNER = 1e-6


# --------------------------------------------------------------------------- input handling


def _as_param(x, name):
    """Float array from a scalar/array/tuple (tuples may hold traced scalars)."""
    if isinstance(x, (tuple, list)) and any(isinstance(e, jax.Array) for e in x):
        try:
            x = jnp.stack([jnp.asarray(e) for e in x])
        except Exception as err:  # noqa: BLE001 - re-raised with the argument name
            raise TypeError(f"argument '{name}': expected a sequence of numbers, got {x!r}") from err
    return as_float_array(x, name)


def _scalar(x, name, *, positive=True):
    a = _as_param(x, name)
    if a.ndim != 0:
        raise ValueError(f"argument '{name}': expected a scalar, got shape {tuple(a.shape)}")
    (check_positive if positive else check_finite)(a, name)
    return a


def _vector(x, name, n, *, allow_scalar, positive):
    a = _as_param(x, name)
    if a.ndim == 0 and allow_scalar:
        a = jnp.broadcast_to(a, (n,))
    elif a.shape != (n,):
        want = f"a scalar or {n} values" if allow_scalar else f"{n} values"
        raise ValueError(f"argument '{name}': expected {want}, got shape {tuple(a.shape)}")
    (check_positive if positive else check_finite)(a, name)
    return a


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"argument '{name}': expected a bool, got {type(value).__name__}")
    return bool(value)


def _common_dtype(*arrays):
    dtype = jnp.result_type(*arrays)
    return [a.astype(dtype) for a in arrays]


# --------------------------------------------------------------------------- shared numerics


def _centred(n, dtype):
    """Pixel-centre coordinates in pixels: ``i - n // 2``."""
    return jnp.arange(n, dtype=dtype) - (n // 2)


def _log_ndtr_diff(a, b):
    """``log(Phi(b) - Phi(a))`` for ``a < b``, stable in both tails.

    The interval is reflected to the lower half (``Phi(b) - Phi(a) =
    Phi(-a) - Phi(-b)``) so both ends use ``log_ndtr`` where it is accurate.
    """
    flip = (a + b) > 0
    lo = jnp.where(flip, -b, a)
    hi = jnp.where(flip, -a, b)
    la = log_ndtr(lo)
    lb = log_ndtr(hi)
    tiny = jnp.finfo(la.dtype).tiny
    return lb + jnp.log(-jnp.expm1(jnp.minimum(la - lb, -tiny)))


def _gauss_log_mass(n, pixel, sigma, offset, integrate):
    """Log of the (unnormalised) 1D Gaussian mass per pixel along one axis.

    ``integrate``: exact integral over each pixel, ``Phi(b) - Phi(a)``;
    otherwise the density at the pixel centre times the pixel size (the
    midpoint-rule mass), so both modes give each profile unit mass on an
    infinite grid.
    ``sigma`` and ``offset`` may carry a leading batch axis (one per plane).
    """
    c = _centred(n, pixel.dtype) * pixel
    c = c - offset[..., None]
    s = sigma[..., None]
    # Standardised coordinates are clipped where their square would overflow
    # (a sigma many orders below the pixel size, or an emitter absurdly far
    # off the grid): otherwise log masses of -inf give inf - inf = NaN and the
    # softmax of an all -inf axis is NaN. The clip never binds in normal use.
    big = 0.5 * math.sqrt(float(jnp.finfo(c.dtype).max))
    if integrate:
        half = 0.5 * pixel
        a = jnp.clip((c - half) / s, -big, big)
        b = jnp.clip((c + half) / s, -big, big)
        return _log_ndtr_diff(a, b)
    u = jnp.clip(c / s, -big, big)
    return -0.5 * jnp.square(u) + jnp.log(pixel) - jnp.log(s) - 0.5 * math.log(2.0 * math.pi)


def _softmax(logits, axis=-1):
    return jax.nn.softmax(logits, axis=axis)


# --------------------------------------------------------------------------- Gaussian


@functools.partial(jax.jit, static_argnames=("shape", "integrate"))
def _gaussian_2d(shape, integrate, sigma, pixel, offset):
    ny, nx = shape
    py = _softmax(_gauss_log_mass(ny, pixel, sigma[0], offset[0], integrate))
    px = _softmax(_gauss_log_mass(nx, pixel, sigma[1], offset[1], integrate))
    return py[:, None] * px[None, :]


def gaussian_psf_2d(shape, *, sigma_nm, pixel_size_nm, offset_nm=(0.0, 0.0), integrate_pixel=True):
    """2D Gaussian PSF on a pixel grid, optionally integrated over each pixel.

    ``PSF(y, x) ~ exp(-(y - oy)^2 / (2 sy^2) - (x - ox)^2 / (2 sx^2))``. With
    ``integrate_pixel=True`` each pixel holds the exact integral of the
    Gaussian over its area (differences of the normal CDF, evaluated in log
    space so far tails and off-grid emitters stay finite), which is what a
    camera pixel records; otherwise the density is sampled at pixel centres.

    Args:
        shape: static ``(ny, nx)``.
        sigma_nm: standard deviation in nm, a scalar or ``(sigma_y, sigma_x)``.
        pixel_size_nm: pixel size in nm (square pixels).
        offset_nm: emitter position ``(y, x)`` in nm relative to pixel ``(ny//2, nx//2)``.
        integrate_pixel: static bool, integrate over pixels (default) or sample.

    Returns:
        ``(ny, nx)`` array, unit sum, float32 (float64 for float64 inputs under x64).

    References:
        B. Zhang, J. Zerubia and J.-C. Olivo-Marin, "Gaussian approximations of
        fluorescence microscope point-spread function models", Appl. Opt. 46,
        1819 (2007).

    >>> psf = gaussian_psf_2d((5, 5), sigma_nm=100.0, pixel_size_nm=100.0)
    >>> psf.shape, round(float(psf.sum()), 5), tuple(int(i) for i in divmod(int(psf.argmax()), 5))
    ((5, 5), 1.0, (2, 2))
    """
    shape = check_shape(shape, "shape", 2)
    integrate = _check_bool(integrate_pixel, "integrate_pixel")
    sigma = _vector(sigma_nm, "sigma_nm", 2, allow_scalar=True, positive=True)
    pixel = _scalar(pixel_size_nm, "pixel_size_nm")
    offset = _vector(offset_nm, "offset_nm", 2, allow_scalar=False, positive=False)
    sigma, pixel, offset = _common_dtype(sigma, pixel, offset)
    return _gaussian_2d(shape, integrate, sigma, pixel, offset)


@functools.partial(jax.jit, static_argnames=("shape", "integrate"))
def _gaussian_3d(shape, integrate, sigma, pixel, z_step, offset):
    nz, ny, nx = shape
    pz = _softmax(_gauss_log_mass(nz, z_step, sigma[0], offset[0], False))
    py = _softmax(_gauss_log_mass(ny, pixel, sigma[1], offset[1], integrate))
    px = _softmax(_gauss_log_mass(nx, pixel, sigma[2], offset[2], integrate))
    return pz[:, None, None] * py[None, :, None] * px[None, None, :]


def gaussian_psf_3d(shape, *, sigma_nm, pixel_size_nm, z_step_nm, offset_nm=(0.0, 0.0, 0.0), integrate_pixel=True):
    """3D Gaussian PSF on a voxel grid (a z-stack of 2D Gaussians).

    Laterally each pixel is integrated exactly (``integrate_pixel=True``) or
    sampled at its centre; axially each plane is *sampled* at its focal
    position ``(k - nz // 2) * z_step_nm``, as a z-stack images planes rather
    than integrating over z.

    Args:
        shape: static ``(nz, ny, nx)``.
        sigma_nm: standard deviation in nm, a scalar or ``(sigma_z, sigma_y, sigma_x)``.
        pixel_size_nm: lateral pixel size in nm.
        z_step_nm: axial plane spacing in nm.
        offset_nm: emitter position ``(z, y, x)`` in nm relative to voxel ``(nz//2, ny//2, nx//2)``.
        integrate_pixel: static bool, integrate laterally over pixels (default) or sample.

    Returns:
        ``(nz, ny, nx)`` array, unit sum over the whole stack.

    References:
        B. Zhang, J. Zerubia and J.-C. Olivo-Marin, Appl. Opt. 46, 1819 (2007).

    >>> psf = gaussian_psf_3d((3, 5, 5), sigma_nm=(300.0, 100.0, 100.0), pixel_size_nm=100.0, z_step_nm=200.0)
    >>> psf.shape, round(float(psf.sum()), 5)
    ((3, 5, 5), 1.0)
    """
    shape = check_shape(shape, "shape", 3)
    integrate = _check_bool(integrate_pixel, "integrate_pixel")
    sigma = _vector(sigma_nm, "sigma_nm", 3, allow_scalar=True, positive=True)
    pixel = _scalar(pixel_size_nm, "pixel_size_nm")
    z_step = _scalar(z_step_nm, "z_step_nm")
    offset = _vector(offset_nm, "offset_nm", 3, allow_scalar=False, positive=False)
    sigma, pixel, z_step, offset = _common_dtype(sigma, pixel, z_step, offset)
    return _gaussian_3d(shape, integrate, sigma, pixel, z_step, offset)


# --------------------------------------------------------------------------- Airy


@functools.partial(jax.jit, static_argnames=("shape", "oversample"))
def _airy_2d(shape, oversample, na, wavelength, pixel, offset):
    ny, nx = shape
    s = oversample
    dtype = pixel.dtype
    sub = (jnp.arange(s, dtype=dtype) - (s - 1) / 2.0) / s  # sub-pixel centres, in pixels
    y = ((_centred(ny, dtype)[:, None] + sub[None, :]) * pixel).reshape(-1) - offset[0]
    x = ((_centred(nx, dtype)[:, None] + sub[None, :]) * pixel).reshape(-1) - offset[1]
    kna = 2.0 * jnp.pi * na / wavelength
    v2 = jnp.square(kna) * (jnp.square(y)[:, None] + jnp.square(x)[None, :])
    img = airy_of_sq(v2)
    if s > 1:
        img = img.reshape(ny, s, nx, s).mean(axis=(1, 3))
    return img / jnp.sum(img)


def airy_psf_2d(
    shape, *, na, wavelength_nm, pixel_size_nm, offset_nm=(0.0, 0.0), oversample=5, integrate_pixel=True
):
    """2D Airy (Bessel) PSF ``H(r) = I0 [2 J1(k NA r) / (k NA r)]^2``, ``k = 2 pi / wavelength``.

    The in-focus intensity of an aberration-free circular pupil, the PSF model
    of CLID. Its first zero is at ``r = 3.8317 / (k NA) = 0.61 wavelength / NA``
    and its FWHM is ``0.514 wavelength / NA``. ``I0`` is fixed by the unit-sum
    normalisation. With ``integrate_pixel=True`` each pixel is the average of
    the kernel over an ``oversample x oversample`` grid of sub-pixel centres
    (midpoint-rule pixel integration); otherwise it is sampled at pixel
    centres.

    Args:
        shape: static ``(ny, nx)``.
        na: numerical aperture (> 0).
        wavelength_nm: emission wavelength in nm.
        pixel_size_nm: pixel size in nm (in the sample plane).
        offset_nm: emitter position ``(y, x)`` in nm relative to pixel ``(ny//2, nx//2)``.
        oversample: static int >= 1, sub-samples per pixel per axis when integrating.
        integrate_pixel: static bool, pixel-integrate (default) or sample at centres.

    Returns:
        ``(ny, nx)`` array, unit sum.

    References:
        G. B. Airy, Trans. Cambridge Philos. Soc. 5, 283 (1835); M. Born and
        E. Wolf, *Principles of Optics*, section 8.5.2; Xue et al., CLID,
        Nat. Commun. (2026).

    >>> psf = airy_psf_2d((9, 9), na=1.4, wavelength_nm=520.0, pixel_size_nm=40.0)
    >>> round(float(psf.sum()), 5), int(psf.argmax()) == 4 * 9 + 4
    (1.0, True)
    """
    shape = check_shape(shape, "shape", 2)
    integrate = _check_bool(integrate_pixel, "integrate_pixel")
    oversample = check_int(oversample, "oversample", minimum=1)
    na = _scalar(na, "na")
    wavelength = _scalar(wavelength_nm, "wavelength_nm")
    pixel = _scalar(pixel_size_nm, "pixel_size_nm")
    offset = _vector(offset_nm, "offset_nm", 2, allow_scalar=False, positive=False)
    na, wavelength, pixel, offset = _common_dtype(na, wavelength, pixel, offset)
    return _airy_2d(shape, oversample if integrate else 1, na, wavelength, pixel, offset)


# --------------------------------------------------------------------------- scalar pupil model


def _pupil_geometry(shape, pad_factor, oversample):
    """Static k-grid (cycles per fine sample), crop indices and half-sample shifts."""
    _, ny, nx = shape
    s = oversample
    n_grid = pad_factor * max(ny, nx) * s
    f = np.fft.fftfreq(n_grid)
    fy, fx = f[:, None], f[None, :]
    fr = np.hypot(fy, fx)
    theta = np.arctan2(np.broadcast_to(fy, fr.shape), np.broadcast_to(fx, fr.shape))
    crops, shifts = [], []
    for n in (ny, nx):
        centre = (n // 2) * s + (s - 1) / 2.0  # fine index of the coarse centre pixel's centre
        c_int = math.floor(centre)
        crops.append((np.arange(n * s) - c_int) % n_grid)
        shifts.append(centre - c_int)  # 0 (odd s) or 1/2 (even s), in fine samples
    return n_grid, fy, fx, fr, theta, crops, shifts


@functools.partial(jax.jit, static_argnames=("shape", "pad_factor", "oversample"))
def _pupil_fields(shape, pad_factor, oversample, na, wavelength, pixel, z_step, n_imm, defocus, zern, offset):
    """Complex amplitude on the full periodic fine grid, ``(nz, N, N)`` (internal)."""
    nz = shape[0]
    dtype = pixel.dtype
    n_grid, fy, fx, fr, theta, _, shifts = _pupil_geometry(shape, pad_factor, oversample)
    fy, fx, fr, theta = (jnp.asarray(a, dtype) for a in (fy, fx, fr, theta))
    pf = pixel / oversample  # fine sample size, nm
    kc = na / wavelength  # pupil radius, cycles/nm
    # Soft pupil edge: smoothstep over one grid cell across the radius NA/lambda,
    # so the PSF is a continuous, differentiable function of NA, wavelength, pixel.
    edge = n_grid * (kc * pf - fr) + 0.5
    t = jnp.clip(edge, 0.0, 1.0)
    amp = t * t * (3.0 - 2.0 * t)
    support = edge > 0.0
    phase = jnp.zeros_like(fr)
    if zern is not None:
        rho = jnp.where(support, fr / (pf * kc), 0.0)
        for j in range(zern.shape[0]):
            phase = phase + zern[j] * zernike_unmasked(j + 1, rho, theta)
    # Defocus: exp(2 pi i z (kz - n/lambda)); the constant n/lambda is a piston.
    kn = n_imm / wavelength
    k2 = jnp.square(fr / pf)
    arg = jnp.square(kn) - k2
    prop = arg > 0.0
    kz = jnp.sqrt(jnp.where(prop, arg, 1.0))
    dkz = jnp.where(prop, -k2 / (kn + kz), 0.0)
    z = _centred(nz, dtype) * z_step - offset[0] + defocus
    # Lateral position: shift by the offset plus half a fine sample for even oversampling.
    ramp = -2.0 * jnp.pi * (fy * (offset[1] / pf + shifts[0]) + fx * (offset[2] / pf + shifts[1]))
    total = phase[None] + ramp[None] + 2.0 * jnp.pi * z[:, None, None] * dkz[None]
    pupil = amp[None] * jnp.exp(1j * total)
    return jnp.fft.ifft2(pupil)


@functools.partial(jax.jit, static_argnames=("shape", "pad_factor", "oversample", "normalize"))
def _pupil_psf(shape, pad_factor, oversample, na, wavelength, pixel, z_step, n_imm, defocus, zern, offset,
               normalize="stack"):
    nz, ny, nx = shape
    s = oversample
    field = _pupil_fields(shape, pad_factor, s, na, wavelength, pixel, z_step, n_imm, defocus, zern, offset)
    intensity = jnp.square(field.real) + jnp.square(field.imag)
    _, _, _, _, _, (rows, cols), _ = _pupil_geometry(shape, pad_factor, s)
    img = intensity[:, rows][:, :, cols]
    if s > 1:
        img = img.reshape(nz, ny, s, nx, s).mean(axis=(2, 4))
    if normalize == "plane":
        # Every plane holds the same light on the periodic grid (Parseval); the binned
        # image of one whole plane sums to sum(intensity) / s^2.
        return img / (jnp.sum(intensity[0]) / (s * s))
    return img / jnp.sum(img)


def pupil_psf_3d(
    shape,
    *,
    na,
    wavelength_nm,
    pixel_size_nm,
    z_step_nm,
    refractive_index=1.0,
    defocus_nm=0.0,
    zernike_rad=None,
    offset_nm=(0.0, 0.0, 0.0),
    pad_factor=2,
    oversample=1,
    normalize="stack",
):
    """Scalar Fourier-optics 3D PSF from a circular pupil with Zernike aberrations.

    For each plane ``k`` at ``z_k = (k - nz//2) * z_step_nm - offset_z + defocus_nm``:

    ``PSF_k = |IFFT2[ P(f) exp(i (sum_j c_j Z_j(rho, theta) + 2 pi z_k kz(f) - 2 pi f.r0)) ]|^2``

    with ``P`` the pupil disc of radius ``NA / wavelength`` (cycles/nm, uniform
    amplitude, edge smoothed over one k-grid cell so the PSF is differentiable
    in NA, wavelength and pixel size), ``rho = |f| wavelength / NA``,
    ``theta = atan2(f_y, f_x)``, ``kz = sqrt((n / wavelength)^2 - |f|^2)``
    (angular-spectrum propagation in the immersion medium) and ``r0`` the
    lateral offset (a linear phase ramp: sub-pixel shifts are exact). The
    lateral k-grid has ``pad_factor * max(ny, nx) * oversample`` points
    (zero-padding limits the wrap-around of defocused planes); the field is
    cropped to ``(ny, nx)`` around the optical axis at index ``n // 2``. With
    ``oversample > 1`` the field is computed on ``oversample``-times finer
    samples and averaged over each pixel (pixel integration, also needed when
    ``pixel_size_nm`` is too coarse for the pupil to fit the k-grid). With
    ``normalize="stack"`` (default) the whole stack is normalised to unit sum;
    each plane carries the same energy on the full periodic grid (Parseval), so
    per-plane sums differ only by the light falling outside the crop. With
    ``normalize="plane"`` every plane is normalised to unit light on the full
    periodic k-grid (the light an infinite camera would collect, up to
    wrap-around of far tails), so the crop of a plane sums to the fraction of
    the emitter's light that falls inside it (< 1): photon counts times this
    PSF are expected photons per pixel, with the light outside the crop dropped.

    Zernike units: ``zernike_rad[j - 1]`` is the coefficient of Noll mode ``j``
    (``j = 1..len(zernike_rad)``) in **radians of pupil phase, RMS-normalised
    Noll** polynomials (:func:`jaxsr.optics.zernike`). Convert: waves =
    rad / (2 pi); nm of wavefront RMS = rad * wavelength_nm / (2 pi).
    Piston (j=1) has no effect; tilts (j=2, 3) shift the PSF; j=4 defocuses.

    Args:
        shape: static ``(nz, ny, nx)``.
        na: numerical aperture, ``0 < na < refractive_index``.
        wavelength_nm: vacuum emission wavelength in nm.
        pixel_size_nm: lateral pixel size in nm (sample plane).
        z_step_nm: plane spacing in nm (> 0, also for ``nz = 1``).
        refractive_index: immersion/sample refractive index ``n``.
        defocus_nm: propagation distance added to every plane (focus error);
            the in-focus plane moves to ``z = -defocus_nm``.
        zernike_rad: ``None`` or ``(J,)`` Noll coefficients in radians (see above).
        offset_nm: emitter position ``(z, y, x)`` in nm relative to voxel
            ``(nz//2, ny//2, nx//2)``; the pattern moves by ``+offset``.
        pad_factor: static int >= 1, k-grid size factor (default 2).
        oversample: static int >= 1, fine samples per pixel per axis (default 1:
            sample at pixel centres).
        normalize: static, ``"stack"`` (unit sum over the array) or ``"plane"`` (unit light per
            plane on an unbounded field; the crop sums to less).

    Returns:
        ``(nz, ny, nx)`` array, unit sum over the stack (``"stack"``), or per-plane sums <= 1
        (``"plane"``).

    Raises:
        ValueError: non-positive ``na``/``wavelength_nm``/``pixel_size_nm``/
            ``z_step_nm``/``refractive_index``, ``na >= refractive_index``, or a
            pupil that does not fit the k-grid (``pixel_size_nm / oversample``
            must be below about ``wavelength / (2 NA)``).

    References:
        J. W. Goodman, *Introduction to Fourier Optics*, ch. 3-6 (angular
        spectrum, pupil function); B. M. Hanser, M. G. L. Gustafsson,
        D. A. Agard and J. W. Sedat, "Phase-retrieved pupil functions in
        wide-field fluorescence microscopy", J. Microsc. 216, 32 (2004);
        R. J. Noll, J. Opt. Soc. Am. 66, 207 (1976).

    >>> psf = pupil_psf_3d((3, 16, 16), na=1.2, wavelength_nm=520.0, pixel_size_nm=65.0,
    ...                    z_step_nm=200.0, refractive_index=1.33)
    >>> psf.shape, round(float(psf.sum()), 5), int(psf[1].argmax()) == 8 * 16 + 8
    ((3, 16, 16), 1.0, True)
    """
    shape = check_shape(shape, "shape", 3)
    pad_factor = check_int(pad_factor, "pad_factor", minimum=1)
    oversample = check_int(oversample, "oversample", minimum=1)
    if normalize not in ("stack", "plane"):
        raise ValueError(f"argument 'normalize': expected 'stack' or 'plane', got {normalize!r}")
    na = _scalar(na, "na")
    wavelength = _scalar(wavelength_nm, "wavelength_nm")
    pixel = _scalar(pixel_size_nm, "pixel_size_nm")
    z_step = _scalar(z_step_nm, "z_step_nm")
    n_imm = _scalar(refractive_index, "refractive_index")
    defocus = _scalar(defocus_nm, "defocus_nm", positive=False)
    offset = _vector(offset_nm, "offset_nm", 3, allow_scalar=False, positive=False)
    params = [na, wavelength, pixel, z_step, n_imm, defocus, offset]
    zern = None
    if zernike_rad is not None:
        zern = _as_param(zernike_rad, "zernike_rad")
        if zern.ndim != 1 or zern.shape[0] < 1:
            raise ValueError(
                f"argument 'zernike_rad': expected a 1D array of Noll coefficients (j = 1..J), "
                f"got shape {tuple(zern.shape)}"
            )
        check_finite(zern, "zernike_rad")
        params.append(zern)
    params = _common_dtype(*params)
    na, wavelength, pixel, z_step, n_imm, defocus, offset = params[:7]
    if zern is not None:
        zern = params[7]
    if is_concrete((na, n_imm)) and not float(na) < float(n_imm):
        raise ValueError(
            f"argument 'na': must be smaller than refractive_index ({float(n_imm)!r}), got {float(na)!r}"
        )
    n_grid = pad_factor * max(shape[1], shape[2]) * oversample
    if is_concrete((na, wavelength, pixel)):
        cycles = float(na) / float(wavelength) * float(pixel) / oversample  # pupil radius per fine sample
        if cycles > 0.5 - 1.0 / n_grid:
            raise ValueError(
                f"argument 'pixel_size_nm': {float(pixel)!r} nm is too coarse for NA {float(na)!r} at "
                f"{float(wavelength)!r} nm (the pupil does not fit the k-grid); use a smaller pixel or "
                f"oversample > {oversample}"
            )
    return _pupil_psf(shape, pad_factor, oversample, na, wavelength, pixel, z_step, n_imm, defocus, zern, offset,
                      normalize=normalize)


# --------------------------------------------------------------------------- astigmatic SMLM model


def _astig_inner(t, a, b):
    return 1.0 + t * t + a * t**3 + b * t**4


def _astig_check(inner, name_a, name_b, z):
    if is_concrete(inner):
        bad = ~(np.asarray(inner) > 0)
        if bool(np.any(bad)):
            zz = np.broadcast_to(np.asarray(z), bad.shape)[bad]
            raise ValueError(
                f"argument '{name_a}': with '{name_b}' it makes the astigmatism polynomial "
                f"1 + t^2 + {name_a} t^3 + {name_b} t^4 non-positive (at z = {float(zz.ravel()[0])!r} nm)"
            )


def _astig_sigmas(z, s0x, s0y, gamma, depth, a_x, b_x, a_y, b_y):
    tx = (z - gamma) / depth
    ty = (z + gamma) / depth
    ix = _astig_inner(tx, a_x, b_x)
    iy = _astig_inner(ty, a_y, b_y)
    return ix, iy, s0x * jnp.sqrt(jnp.maximum(ix, _ASTIG_MIN_INNER)), s0y * jnp.sqrt(jnp.maximum(iy, _ASTIG_MIN_INNER))


def astigmatic_sigma(
    z_nm, *, sigma0_x_nm, sigma0_y_nm, gamma_nm, depth_nm, a_x=0.0, b_x=0.0, a_y=0.0, b_y=0.0
):
    """Widths ``(sigma_x, sigma_y)`` of an astigmatic PSF versus axial position.

    The calibration model of 3D STORM (Huang et al. 2008)::

        sigma_x(z) = sigma0_x sqrt(1 + tx^2 + a_x tx^3 + b_x tx^4),  tx = (z - gamma) / d
        sigma_y(z) = sigma0_y sqrt(1 + ty^2 + a_y ty^3 + b_y ty^4),  ty = (z + gamma) / d

    so the x focus lies at ``z = +gamma`` and the y focus at ``z = -gamma``.

    Args:
        z_nm: axial position(s) in nm, any shape.
        sigma0_x_nm: in-focus width along x, nm (> 0).
        sigma0_y_nm: in-focus width along y, nm (> 0).
        gamma_nm: half the distance between the x and y foci, nm.
        depth_nm: focal depth ``d`` in nm (> 0).
        a_x, b_x, a_y, b_y: higher-order (cubic, quartic) correction coefficients.

    Returns:
        ``(sigma_x, sigma_y)`` in nm, each of the broadcast shape. Under tracing
        the polynomial under the square root is clamped at 1e-6; concrete
        inputs that make it non-positive raise ``ValueError``.

    References:
        B. Huang, W. Wang, M. Bates and X. Zhuang, "Three-dimensional
        super-resolution imaging by stochastic optical reconstruction
        microscopy", Science 319, 810-813 (2008).

    >>> sx, sy = astigmatic_sigma(0.0, sigma0_x_nm=120.0, sigma0_y_nm=120.0, gamma_nm=0.0, depth_nm=400.0)
    >>> float(sx), float(sy)
    (120.0, 120.0)
    """
    z = _as_param(z_nm, "z_nm")
    check_finite(z, "z_nm")
    s0x = _as_param(sigma0_x_nm, "sigma0_x_nm")
    s0y = _as_param(sigma0_y_nm, "sigma0_y_nm")
    depth = _as_param(depth_nm, "depth_nm")
    for a, name in ((s0x, "sigma0_x_nm"), (s0y, "sigma0_y_nm"), (depth, "depth_nm")):
        check_positive(a, name)
    gamma = _as_param(gamma_nm, "gamma_nm")
    coefs = [_as_param(c, name) for c, name in ((a_x, "a_x"), (b_x, "b_x"), (a_y, "a_y"), (b_y, "b_y"))]
    for c, name in zip([gamma, *coefs], ("gamma_nm", "a_x", "b_x", "a_y", "b_y")):
        check_finite(c, name)
    args = _common_dtype(z, s0x, s0y, gamma, depth, *coefs)
    ix, iy, sx, sy = _astig_sigmas(*args)
    _astig_check(ix, "a_x", "b_x", args[0])
    _astig_check(iy, "a_y", "b_y", args[0])
    return sx, sy


@functools.partial(jax.jit, static_argnames=("shape", "integrate"))
def _astig_3d(shape, integrate, pixel, z_step, s0x, s0y, gamma, depth, a_x, b_x, a_y, b_y, offset):
    nz, ny, nx = shape
    z = _centred(nz, pixel.dtype) * z_step - offset[0]
    _, _, sx, sy = _astig_sigmas(z, s0x, s0y, gamma, depth, a_x, b_x, a_y, b_y)
    oy = jnp.broadcast_to(offset[1], (nz,))
    ox = jnp.broadcast_to(offset[2], (nz,))
    ly = _gauss_log_mass(ny, pixel, sy, oy, integrate)  # (nz, ny)
    lx = _gauss_log_mass(nx, pixel, sx, ox, integrate)  # (nz, nx)
    lse_y = jax.nn.logsumexp(ly, axis=1)
    lse_x = jax.nn.logsumexp(lx, axis=1)
    plane = _softmax(lse_y + lse_x)  # share of each plane in the stack
    py = jnp.exp(ly - lse_y[:, None])
    px = jnp.exp(lx - lse_x[:, None])
    return plane[:, None, None] * py[:, :, None] * px[:, None, :]


def astigmatic_psf_3d(
    shape,
    *,
    pixel_size_nm,
    z_step_nm,
    sigma0_x_nm,
    sigma0_y_nm,
    gamma_nm,
    depth_nm,
    a_x=0.0,
    b_x=0.0,
    a_y=0.0,
    b_y=0.0,
    offset_nm=(0.0, 0.0, 0.0),
    integrate_pixel=True,
):
    """3D astigmatic PSF stack: per plane an anisotropic 2D Gaussian (Huang et al. 2008).

    Plane ``k`` lies at ``z_k = (k - nz//2) * z_step_nm - offset_z``, the axial
    position of the focal plane relative to the emitter; it holds a 2D
    Gaussian with widths ``astigmatic_sigma(z_k, ...)``, centred on the
    lateral offset and integrated exactly over each pixel (or sampled at
    pixel centres). Each plane carries the Gaussian's mass that falls inside
    the ``(ny, nx)`` field (unit mass on an infinite field, as every plane of a
    z-stack collects all the light), then the **whole stack is normalised to
    unit sum**: planes where the spot is broad lose the light that leaves the
    field, but no plane is renormalised on its own.

    Args:
        shape: static ``(nz, ny, nx)``.
        pixel_size_nm: lateral pixel size in nm.
        z_step_nm: plane spacing in nm.
        sigma0_x_nm, sigma0_y_nm, gamma_nm, depth_nm, a_x, b_x, a_y, b_y:
            calibration parameters, see :func:`astigmatic_sigma`.
        offset_nm: emitter position ``(z, y, x)`` in nm relative to voxel ``(nz//2, ny//2, nx//2)``.
        integrate_pixel: static bool, integrate over pixels (default) or sample.

    Returns:
        ``(nz, ny, nx)`` array, unit sum over the stack.

    References:
        B. Huang, W. Wang, M. Bates and X. Zhuang, Science 319, 810 (2008).

    >>> psf = astigmatic_psf_3d((3, 9, 9), pixel_size_nm=100.0, z_step_nm=300.0, sigma0_x_nm=120.0,
    ...                         sigma0_y_nm=120.0, gamma_nm=300.0, depth_nm=400.0)
    >>> psf.shape, round(float(psf.sum()), 5)
    ((3, 9, 9), 1.0)
    """
    shape = check_shape(shape, "shape", 3)
    integrate = _check_bool(integrate_pixel, "integrate_pixel")
    pixel = _scalar(pixel_size_nm, "pixel_size_nm")
    z_step = _scalar(z_step_nm, "z_step_nm")
    s0x = _scalar(sigma0_x_nm, "sigma0_x_nm")
    s0y = _scalar(sigma0_y_nm, "sigma0_y_nm")
    depth = _scalar(depth_nm, "depth_nm")
    gamma = _scalar(gamma_nm, "gamma_nm", positive=False)
    coefs = [_scalar(c, name, positive=False) for c, name in ((a_x, "a_x"), (b_x, "b_x"), (a_y, "a_y"), (b_y, "b_y"))]
    offset = _vector(offset_nm, "offset_nm", 3, allow_scalar=False, positive=False)
    args = _common_dtype(pixel, z_step, s0x, s0y, gamma, depth, *coefs, offset)
    pixel, z_step, s0x, s0y, gamma, depth, a_x, b_x, a_y, b_y, offset = args
    if is_concrete(args):
        z = _centred(shape[0], pixel.dtype) * z_step - offset[0]
        ix, iy, _, _ = _astig_sigmas(z, s0x, s0y, gamma, depth, a_x, b_x, a_y, b_y)
        _astig_check(ix, "a_x", "b_x", z)
        _astig_check(iy, "a_y", "b_y", z)
    return _astig_3d(shape, integrate, pixel, z_step, s0x, s0y, gamma, depth, a_x, b_x, a_y, b_y, offset)
