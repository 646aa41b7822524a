"""Image formation: convolution, binning, background and camera noise.

Axis order: 2D images are ``(..., y, x)``, 3D stacks ``(..., z, y, x)``; the
PSF's rank (2 or 3) says how many trailing axes are spatial, and every leading
axis is a batch axis (the functions also work under :func:`jax.vmap`).

Units: objects, backgrounds and expected images are in **photons** (expected
counts per pixel); camera output is in **ADU** (analog-to-digital units);
camera noise parameters are in **electrons** (``read_noise_e``) and
electrons per ADU (``gain_e_per_adu``).

The PSF centring convention is the package's: the centre of a PSF of size
``n`` on an axis is index ``n // 2`` (see :mod:`jaxsr.optics.otf`), so a
point source convolved with a PSF stays where it was, for odd and even PSFs.

The pipeline is::

    obj --convolve--> blurred --bin_image--> + background --apply_camera--> ADU

:func:`expected_image` gives the noise-free mean in photons and
:func:`form_image` draws one noisy camera frame.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import (
    as_float_array,
    check_choice,
    check_finite,
    check_int,
    check_ndim,
    check_nonnegative,
    check_positive,
    check_psf,
    is_concrete,
)
from jaxsr.optics.otf import psf_to_otf

__all__ = [
    "convolve",
    "bin_image",
    "CameraModel",
    "camera_preset",
    "expected_adu",
    "adu_variance",
    "photons_from_adu",
    "poisson_noise",
    "apply_camera",
    "form_image",
    "expected_image",
]

_BOUNDARIES = ("zero", "reflect", "periodic")


# --------------------------------------------------------------------------- #
# Convolution
# --------------------------------------------------------------------------- #
def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer (2^a 3^b 5^c) >= n: a fast FFT length."""
    best = None
    p5 = 1
    while p5 < 2 * n:
        p35 = p5
        while p35 < 2 * n:
            m = p35
            while m < n:
                m *= 2
            if best is None or m < best:
                best = m
            p35 *= 3
        p5 *= 5
    return int(best)


def _check_image_psf(image: Any, psf: Any, image_name: str = "image") -> tuple[jax.Array, jax.Array]:
    image = as_float_array(image, image_name)
    psf = as_float_array(psf, "psf")
    check_ndim(psf, "psf", (2, 3))
    if image.ndim < psf.ndim:
        raise ValueError(
            f"argument '{image_name}': expected at least {psf.ndim} dimensions to match a "
            f"{psf.ndim}D 'psf', got shape {tuple(image.shape)}"
        )
    if 0 in psf.shape:
        raise ValueError(f"argument 'psf': every size must be >= 1, got shape {tuple(psf.shape)}")
    nd = psf.ndim
    for i in range(nd):
        k, n = psf.shape[i], image.shape[image.ndim - nd + i]
        if k > n:
            raise ValueError(
                f"argument 'psf': size {k} on spatial axis {i} is larger than the "
                f"'{image_name}' size {n}"
            )
    check_finite(psf, "psf")
    check_finite(image, image_name)
    return image, psf


def convolve(image: Any, psf: Any, *, boundary: str = "zero") -> jax.Array:
    """Convolve ``image`` with ``psf`` by real FFTs; the output has the image's shape.

    The PSF is any finite real kernel (it need not be non-negative or sum to
    one; a physical PSF normalised to unit sum conserves flux). Its centre is
    index ``n // 2`` on each axis (package convention), so
    ``out[i] = sum_d psf[k//2 + d] * image[i - d]`` per axis.

    Boundary handling (``image`` is extended beyond its edges by):

    * ``"zero"``: zeros. Equals ``scipy.signal.fftconvolve(image, psf,
      mode="same")`` for odd PSF sizes. For an even size ``k`` scipy centres the
      kernel at ``(k - 1) // 2`` instead of ``k // 2``, so the result equals
      ``fftconvolve(image, psf, mode="full")[k // 2 : k // 2 + n]`` (one pixel
      shifted from scipy's ``"same"``). It also equals
      ``scipy.ndimage.convolve(image, psf, mode="constant")`` for any size.
    * ``"reflect"``: the mirror image including the edge sample
      (``d c b a | a b c d | d c b a``), i.e. ``numpy.pad(mode="symmetric")``.
      Equals ``scipy.ndimage.convolve(image, psf, mode="reflect")`` (scipy's
      ``"reflect"``, not its ``"mirror"``).
    * ``"periodic"``: circular convolution on the image grid. Equals
      ``scipy.ndimage.convolve(image, psf, mode="wrap")``.

    Args:
        image: ``(..., y, x)`` or ``(..., z, y, x)`` real array; leading axes are batch.
        psf: ``(y, x)`` or ``(z, y, x)`` finite real kernel, not larger than the
            image on any spatial axis; ``psf.ndim`` fixes the number of spatial axes.
        boundary: ``"zero"``, ``"reflect"`` or ``"periodic"`` (static).

    Returns:
        Array of ``image.shape``, floating dtype of ``image`` and ``psf`` combined.
        Differentiable with respect to both ``image`` and ``psf``.

    Raises:
        ValueError: ``psf`` not 2D/3D, larger than the image, or with NaN/inf;
            ``image`` of too low rank or with NaN/inf; unknown ``boundary``.

    >>> import jax.numpy as jnp
    >>> img = jnp.zeros((5, 5)).at[2, 2].set(1.0)
    >>> out = convolve(img, jnp.ones((3, 3)) / 9.0)
    >>> round(float(out.sum()), 5), round(float(out[1, 1]), 5)
    (1.0, 0.11111)
    """
    check_choice(boundary, "boundary", _BOUNDARIES)
    image, psf = _check_image_psf(image, psf)
    return _convolve(image, psf, boundary)


@functools.partial(jax.jit, static_argnums=2)
def _convolve(image: jax.Array, psf: jax.Array, boundary: str) -> jax.Array:
    dtype = jnp.result_type(image.dtype, psf.dtype)
    image = image.astype(dtype)
    psf = psf.astype(dtype)
    nd = psf.ndim
    spatial = image.shape[-nd:]
    axes = tuple(range(image.ndim - nd, image.ndim))
    ksize = psf.shape

    if boundary == "periodic":
        grid = spatial
        padded = image
        starts = (0,) * nd
    else:
        # Output i needs image[i - d] for d in [-(k//2), k - 1 - k//2].
        before = tuple(k - 1 - k // 2 for k in ksize)
        after = tuple(k // 2 for k in ksize)
        widths = [(0, 0)] * (image.ndim - nd) + list(zip(before, after))
        mode = "constant" if boundary == "zero" else "symmetric"
        padded = jnp.pad(image, widths, mode=mode)
        # Extra zeros up to a fast FFT length never reach the cropped output.
        grid = tuple(_fast_len(n + k - 1) for n, k in zip(spatial, ksize))
        extra = [(0, 0)] * (image.ndim - nd) + [
            (0, g - p) for g, p in zip(grid, padded.shape[-nd:])
        ]
        padded = jnp.pad(padded, extra)
        starts = before

    otf = psf_to_otf(psf, grid)
    spec = jnp.fft.rfftn(padded, s=grid, axes=axes)
    out = jnp.fft.irfftn(spec * otf, s=grid, axes=axes)
    if boundary != "periodic":
        index = (Ellipsis,) + tuple(slice(s, s + n) for s, n in zip(starts, spatial))
        out = out[index]
    return out.astype(dtype)


# --------------------------------------------------------------------------- #
# Binning
# --------------------------------------------------------------------------- #
def _factor_tuple(factor: Any) -> tuple[int, ...]:
    if isinstance(factor, (int, np.integer)) and not isinstance(factor, bool):
        f = check_int(factor, "factor", minimum=1)
        return (f, f)
    if isinstance(factor, (tuple, list)):
        if len(factor) not in (2, 3):
            raise ValueError(f"argument 'factor': expected 2 or 3 entries, got {tuple(factor)}")
        return tuple(check_int(f, "factor", minimum=1) for f in factor)
    raise TypeError(f"argument 'factor': expected an int or a tuple of ints, got {type(factor).__name__}")


def bin_image(image: Any, *, factor: int | Sequence[int]) -> jax.Array:
    """Sum non-overlapping blocks on the trailing axes (photon-conserving binning).

    Args:
        image: ``(..., y, x)`` or ``(..., z, y, x)`` array in photons.
        factor: an int bins the last two axes ``(y, x)`` by ``factor x factor``
            (for a 3D stack, z is left alone); a tuple ``(fy, fx)`` or
            ``(fz, fy, fx)`` bins the last 2 or 3 axes. Static.

    Returns:
        ``(..., y // fy, x // fx)`` (or ``(..., z // fz, y // fy, x // fx)``),
        each value the sum of its block, so ``out.sum() == image.sum()``.

    Raises:
        ValueError: a factor below 1, an axis size not divisible by its factor,
            or NaN/inf in ``image``.

    >>> import jax.numpy as jnp
    >>> bin_image(jnp.ones((4, 6)), factor=2)
    Array([[4., 4., 4.],
           [4., 4., 4.]], dtype=float32)
    """
    image = as_float_array(image, "image")
    fac = _factor_tuple(factor)
    nd = len(fac)
    check_ndim(image, "image", (), min_ndim=nd)
    check_finite(image, "image")
    lead = image.shape[:-nd]
    spatial = image.shape[-nd:]
    names = ("y", "x") if nd == 2 else ("z", "y", "x")
    for n, f, name in zip(spatial, fac, names):
        if n % f:
            raise ValueError(
                f"argument 'factor': axis {name} of size {n} is not divisible by {f}"
            )
    if all(f == 1 for f in fac):
        return image
    shape = lead + tuple(s for n, f in zip(spatial, fac) for s in (n // f, f))
    sum_axes = tuple(len(lead) + 2 * i + 1 for i in range(nd))
    return image.reshape(shape).sum(axis=sum_axes)


# --------------------------------------------------------------------------- #
# Camera model
# --------------------------------------------------------------------------- #
_DATA_FIELDS = ("qe", "read_noise_e", "em_gain", "gain_e_per_adu", "offset_adu")
_META_FIELDS = ("bit_depth", "name")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CameraModel:
    """A camera: quantum efficiency, EM gain, read noise, conversion gain, offset, ADC.

    The model of one pixel, in order: photons are detected with probability
    ``qe`` (binomial thinning of Poisson light is Poisson), the photo-electrons
    are multiplied by the EM register when ``em_gain > 1`` (EMCCD; modelled as
    ``Gamma(shape=n, scale=em_gain)`` for ``n > 0`` electrons, which gives the
    high-gain excess noise factor ``F^2 = 2``), Gaussian read noise of
    ``read_noise_e`` electrons rms is added at the output (after the EM
    register), electrons are converted to ADU by dividing by
    ``gain_e_per_adu`` and adding ``offset_adu``, and finally, when
    ``bit_depth`` is set, rounded and clipped to ``[0, 2**bit_depth - 1]``.

    A ``CameraModel`` is a JAX pytree: the numeric fields are leaves (traced
    under ``jit``, differentiable), ``bit_depth`` and ``name`` are static, and
    so is whether the camera has an EM register, decided when it is built
    (``em_gain`` equal to 1 means none; a traced ``em_gain`` means one, active
    where ``em_gain > 1``). Pass it as an ordinary (non-static) argument through
    ``jax.jit``; to vary ``em_gain`` away from 1 under a transformation, build
    the camera with a traced or non-unit ``em_gain``.

    Attributes:
        qe: quantum efficiency in ``(0, 1]``.
        read_noise_e: read noise in electrons rms (output-referred), a scalar or
            a ``(y, x)`` per-pixel map (sCMOS) matching the image's last two axes.
        em_gain: EM multiplication gain, ``>= 1``; ``1`` means no EM register.
        gain_e_per_adu: conversion gain in electrons per ADU, ``> 0``.
        offset_adu: baseline added to every pixel, in ADU.
        bit_depth: ADC bits (e.g. 16, at most 64), or ``None`` for no quantisation.
        name: a label.

    >>> cam = CameraModel(qe=0.9, read_noise_e=1.5, gain_e_per_adu=0.5, offset_adu=100.0)
    >>> float(expected_adu(10.0, camera=cam))
    118.0
    """

    qe: Any = 1.0
    read_noise_e: Any = 0.0
    em_gain: Any = 1.0
    gain_e_per_adu: Any = 1.0
    offset_adu: Any = 0.0
    bit_depth: int | None = None
    name: str = ""

    def __post_init__(self):
        for field in ("qe", "em_gain", "gain_e_per_adu", "offset_adu"):
            value = getattr(self, field)
            if np.ndim(value) != 0:
                raise ValueError(f"argument '{field}': expected a scalar, got shape {np.shape(value)}")
            _check_numeric(value, field)
        rn = self.read_noise_e
        if np.ndim(rn) not in (0, 2):
            raise ValueError(
                f"argument 'read_noise_e': expected a scalar or a (y, x) map, got shape {np.shape(rn)}"
            )
        _check_numeric(rn, "read_noise_e")
        if isinstance(rn, (list, tuple)):
            object.__setattr__(self, "read_noise_e", np.asarray(rn, dtype=float))
        check_positive(self.qe, "qe")
        if is_concrete(self.qe) and float(np.asarray(self.qe)) > 1.0:
            raise ValueError(f"argument 'qe': must be in (0, 1], got {float(np.asarray(self.qe))!r}")
        check_nonnegative(self.read_noise_e, "read_noise_e")
        check_positive(self.em_gain, "em_gain")
        if is_concrete(self.em_gain) and float(np.asarray(self.em_gain)) < 1.0:
            raise ValueError(f"argument 'em_gain': must be >= 1, got {float(np.asarray(self.em_gain))!r}")
        check_positive(self.gain_e_per_adu, "gain_e_per_adu")
        check_finite(self.offset_adu, "offset_adu")
        if self.bit_depth is not None:
            check_int(self.bit_depth, "bit_depth", minimum=1)
            if self.bit_depth > 64:
                raise ValueError(f"argument 'bit_depth': must be <= 64, got {self.bit_depth}")
        if not isinstance(self.name, str):
            raise TypeError(f"argument 'name': expected a str, got {type(self.name).__name__}")

    def replace(self, **changes: Any) -> "CameraModel":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _is_constant(value: Any, constant: float) -> bool:
    """True when ``value`` is concrete and equal to ``constant`` everywhere."""
    return is_concrete(value) and bool(np.all(np.asarray(value) == constant))


def _check_numeric(value: Any, name: str) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, bool):
        raise TypeError(f"argument '{name}': expected a number, got bool")
    arr = np.asarray(value) if not isinstance(value, jax.Array) else value
    if arr.dtype == object or not jnp.issubdtype(arr.dtype, jnp.number) or jnp.issubdtype(
        arr.dtype, jnp.complexfloating
    ):
        raise TypeError(f"argument '{name}': expected a real number, got {value!r}")


def _camera_flags(cam: CameraModel) -> bool:
    """Static flag: does the camera have an EM register (``em_gain != 1``)?

    Computed from the concrete value when the camera is built; a traced
    ``em_gain`` counts as an EM register (the sampler then selects at run time
    with ``em_gain > 1``). The flag travels as static pytree metadata, so a
    camera passed through ``jax.jit`` keeps it and a camera without EM gain
    never compiles the Gamma sampler.
    """
    flag = getattr(cam, "_has_em", None)
    if flag is None:
        flag = not _is_constant(cam.em_gain, 1.0)
    return flag


def _camera_flatten(cam: CameraModel):
    data = tuple(getattr(cam, f) for f in _DATA_FIELDS)
    meta = tuple(getattr(cam, f) for f in _META_FIELDS) + (_camera_flags(cam),)
    return data, meta


def _camera_unflatten(meta, data) -> CameraModel:
    # Bypass __init__ validation: leaves may be tracers or placeholders here.
    cam = object.__new__(CameraModel)
    for f, v in zip(_DATA_FIELDS, data):
        object.__setattr__(cam, f, v)
    for f, v in zip(_META_FIELDS, meta[:-1]):
        object.__setattr__(cam, f, v)
    object.__setattr__(cam, "_has_em", meta[-1])
    return cam


jax.tree_util.register_pytree_node(CameraModel, _camera_flatten, _camera_unflatten)

_PRESETS = {
    # Noise-free detector: only photon shot noise remains.
    "ideal": dict(qe=1.0, read_noise_e=0.0, em_gain=1.0, gain_e_per_adu=1.0, offset_adu=0.0,
                  bit_depth=None),
    # Back-illuminated EMCCD in the range of an Andor iXon Ultra 897 data sheet:
    # peak QE ~95 %, EM gain 300, ~50 e- rms output read noise (0.17 e- input
    # referred), 12 e-/ADU pre-amplifier, 100 ADU baseline, 16-bit ADC.
    "emccd": dict(qe=0.95, read_noise_e=50.0, em_gain=300.0, gain_e_per_adu=12.0,
                  offset_adu=100.0, bit_depth=16),
    # sCMOS in the range of a Hamamatsu ORCA-Flash4.0 V3 data sheet: QE ~80 %,
    # 1.6 e- rms median read noise, 0.46 e-/ADU, 100 ADU offset, 16-bit.
    "scmos": dict(qe=0.8, read_noise_e=1.6, em_gain=1.0, gain_e_per_adu=0.46, offset_adu=100.0,
                  bit_depth=16),
}


def camera_preset(name: str) -> CameraModel:
    """A :class:`CameraModel` with representative values for a camera class.

    Presets (typical data-sheet figures, not a calibration of any one device):

    * ``"ideal"``: qe 1, no read noise, no EM gain, 1 e-/ADU, no offset, no ADC.
    * ``"emccd"``: qe 0.95, EM gain 300, read noise 50 e- rms at the output
      (about 0.17 e- referred to the input), 12 e-/ADU, offset 100 ADU, 16 bit
      (an Andor iXon-class camera).
    * ``"scmos"``: qe 0.8, read noise 1.6 e- rms, 0.46 e-/ADU, offset 100 ADU,
      16 bit (a Hamamatsu ORCA-Flash4.0-class camera).

    Args:
        name: one of ``"ideal"``, ``"emccd"``, ``"scmos"``.

    Returns:
        The camera model, with ``name`` set.

    Raises:
        ValueError: unknown ``name``.

    >>> camera_preset("scmos").gain_e_per_adu
    0.46
    """
    check_choice(name, "name", tuple(_PRESETS))
    return CameraModel(name=name, **_PRESETS[name])


def _check_camera(camera: Any) -> CameraModel:
    if not isinstance(camera, CameraModel):
        raise TypeError(f"argument 'camera': expected a CameraModel, got {type(camera).__name__}")
    return camera


def _check_read_noise_shape(camera: CameraModel, shape: tuple[int, ...]) -> None:
    rn_shape = tuple(np.shape(camera.read_noise_e))
    if len(rn_shape) == 2 and (len(shape) < 2 or tuple(shape[-2:]) != rn_shape):
        raise ValueError(
            f"argument 'camera': read_noise_e map of shape {rn_shape} does not match the "
            f"image's last two axes {tuple(shape[-2:])}"
        )


def expected_adu(photons: Any, *, camera: CameraModel) -> jax.Array:
    """Mean camera output in ADU for an expected photon count per pixel.

    ``E[ADU] = qe * em_gain * photons / gain_e_per_adu + offset_adu``
    (rounding is unbiased on average and saturation is ignored).

    Args:
        photons: expected photons per pixel, any shape.
        camera: the :class:`CameraModel`.

    Returns:
        Mean ADU, same shape as ``photons``.

    Raises:
        ValueError: a concrete ``photons`` with NaN or infinite entries.

    >>> float(expected_adu(100.0, camera=camera_preset("ideal")))
    100.0
    """
    camera = _check_camera(camera)
    photons = as_float_array(photons, "photons")
    check_finite(photons, "photons")
    gain = camera.qe * camera.em_gain / camera.gain_e_per_adu
    return photons * gain + camera.offset_adu


def adu_variance(photons: Any, *, camera: CameraModel) -> jax.Array:
    """Variance of the camera output in ADU^2 for an expected photon count.

    With ``lam = qe * photons`` photo-electrons (Poisson), EM excess noise
    factor ``F^2 = 2`` when ``em_gain > 1`` (the Gamma register model) else 1,
    and read noise ``s`` electrons:
    ``Var = (F^2 * em_gain^2 * lam + s^2) / gain_e_per_adu^2``, plus ``1/12`` for
    rounding when ``bit_depth`` is set (clipping ignored).

    Args:
        photons: expected photons per pixel, ``(..., y, x)`` when the read noise is
            a per-pixel map, else any shape.
        camera: the :class:`CameraModel`.

    Returns:
        Variance in ADU^2, ``photons`` broadcast with the read-noise map.

    Raises:
        ValueError: a concrete ``photons`` with NaN or infinite entries, or a
            read-noise map whose shape is not the last two axes of ``photons``.
            (The formula is applied as is to negative ``photons``, e.g. the
            finite-difference probes of a gradient check.)

    References:
        Basden, Haniff & Mackay, "Photon counting strategies with low-light-level
        CCDs", MNRAS 345, 985 (2003) (EM register statistics).
        Huang et al., "Video-rate nanoscopy using sCMOS camera-specific
        single-molecule localization algorithms", Nat. Methods 10, 653 (2013).

    >>> float(adu_variance(100.0, camera=camera_preset("ideal")))
    100.0
    """
    camera = _check_camera(camera)
    photons = as_float_array(photons, "photons")
    check_finite(photons, "photons")
    _check_read_noise_shape(camera, photons.shape)
    lam = camera.qe * photons
    em = jnp.asarray(camera.em_gain, dtype=photons.dtype)
    excess = jnp.where(em > 1.0, 2.0, 1.0)
    rn = jnp.asarray(camera.read_noise_e, dtype=photons.dtype)
    var = (excess * em**2 * lam + rn**2) / camera.gain_e_per_adu**2
    if camera.bit_depth is not None:
        var = var + 1.0 / 12.0
    return var


def photons_from_adu(adu: Any, *, camera: CameraModel) -> jax.Array:
    """Invert the mean of the camera: expected photons from ADU.

    ``photons = (adu - offset_adu) * gain_e_per_adu / (qe * em_gain)``; the
    inverse of :func:`expected_adu` (noise and saturation aside). Values below
    the offset give negative photon estimates; they are not clipped.

    Args:
        adu: camera output, any shape.
        camera: the :class:`CameraModel`.

    Returns:
        Photons, same shape as ``adu``.

    Raises:
        ValueError: a concrete ``adu`` with NaN or infinite entries.

    >>> cam = camera_preset("scmos")
    >>> round(float(photons_from_adu(expected_adu(50.0, camera=cam), camera=cam)), 4)
    50.0
    """
    camera = _check_camera(camera)
    adu = as_float_array(adu, "adu")
    check_finite(adu, "adu")
    return (adu - camera.offset_adu) * camera.gain_e_per_adu / (camera.qe * camera.em_gain)


# --------------------------------------------------------------------------- #
# Noise
# --------------------------------------------------------------------------- #
def poisson_noise(key: jax.Array, rate: Any) -> jax.Array:
    """Poisson counts with a usable gradient with respect to the rate.

    The value is an exact Poisson sample (``jax.random.poisson``). The
    derivative is that of the Gaussian reparametrisation
    ``rate + sqrt(rate) * z`` with ``z = (sample - rate) / sqrt(rate)`` held fixed,
    i.e. ``d sample / d rate = 1/2 + sample / (2 rate)``, whose expectation is 1
    (the derivative of the mean). At ``rate == 0`` the sample is 0 and the
    derivative is defined as 1, so gradients are always finite.

    Args:
        key: a ``jax.random`` key.
        rate: expected counts, non-negative, any shape.

    Returns:
        Counts as floats of ``rate``'s dtype and shape.

    Raises:
        ValueError: a concrete ``rate`` with negative, NaN or infinite entries.

    References:
        The shot-noise gradient trick of chromatix (Deb et al., "Chromatix: a
        differentiable wave optics library", 2023).

    >>> import jax, jax.numpy as jnp
    >>> counts = poisson_noise(jax.random.key(0), jnp.zeros(3))
    >>> counts.tolist()
    [0.0, 0.0, 0.0]
    """
    rate = as_float_array(rate, "rate")
    check_nonnegative(rate, "rate")
    return _poisson_noise(key, rate)


def _poisson_noise(key: jax.Array, rate: jax.Array) -> jax.Array:
    sample = jax.random.poisson(key, jax.lax.stop_gradient(rate), shape=rate.shape).astype(rate.dtype)
    positive = rate > 0
    safe = jnp.where(positive, rate, 1.0)
    slope = jnp.where(positive, 0.5 + sample / (2.0 * safe), 1.0)
    slope = jax.lax.stop_gradient(slope)
    # Value: exactly `sample` (the second term is slope * 0); derivative: slope.
    return sample + slope * (rate - jax.lax.stop_gradient(rate))


def _em_register(key: jax.Array, electrons: jax.Array, em_gain: Any, differentiable: bool) -> jax.Array:
    """Electrons after the EM register (identity where em_gain <= 1)."""
    dtype = electrons.dtype
    g = jnp.asarray(em_gain, dtype=dtype)
    positive = electrons > 0
    if differentiable:
        # Gamma(n, g) has mean g n and variance g^2 n: Gaussian approximation.
        root = jnp.where(positive, jnp.sqrt(jnp.where(positive, electrons, 1.0)), 0.0)
        z = jax.random.normal(key, electrons.shape, dtype=dtype)
        amplified = g * electrons + g * root * z
    else:
        shape = jnp.where(positive, electrons, 1.0)
        amplified = jnp.where(positive, g * jax.random.gamma(key, shape, dtype=dtype), 0.0)
    return jnp.where(g > 1.0, amplified, electrons)


def apply_camera(
    key: jax.Array, photons: Any, *, camera: CameraModel, differentiable: bool = False
) -> jax.Array:
    """Draw a camera frame in ADU from expected photons per pixel.

    Steps: detected electrons ``~ Poisson(qe * photons)`` (QE thinning of Poisson
    light); EM register ``~ Gamma(n, em_gain)`` when ``em_gain > 1``; plus
    Gaussian read noise (scalar or per-pixel ``(y, x)`` map); divide by
    ``gain_e_per_adu``; add ``offset_adu``; round and clip to the ADC range when
    ``bit_depth`` is set. Mean and variance follow :func:`expected_adu` and
    :func:`adu_variance`.

    With ``differentiable=True`` the Poisson step uses :func:`poisson_noise`
    (exact sample, reparametrised gradient), the EM register is replaced by its
    Gaussian approximation ``em_gain * n + em_gain * sqrt(n) * z`` (same mean and
    variance, can be slightly negative at low counts), and quantisation is
    skipped (rounding has zero gradient). Gradients with respect to the photons
    and the camera's numeric fields are then finite everywhere.

    Args:
        key: a ``jax.random`` key.
        photons: ``(..., y, x)`` expected photons per camera pixel, non-negative.
        camera: the :class:`CameraModel` (a pytree; may be traced).
        differentiable: static bool, the switch described above.

    Returns:
        ADU frame of ``photons``' shape and dtype.

    Raises:
        ValueError: negative/NaN photons, or a read-noise map whose shape is not
            the image's last two axes.
        TypeError: ``camera`` is not a :class:`CameraModel`, or ``differentiable``
            is not a bool.

    >>> import jax, jax.numpy as jnp
    >>> frame = apply_camera(jax.random.key(0), jnp.full((4, 4), 20.0), camera=camera_preset("scmos"))
    >>> frame.shape, bool(frame.min() >= 0)
    ((4, 4), True)
    """
    camera = _check_camera(camera)
    photons = as_float_array(photons, "photons")
    check_nonnegative(photons, "photons")
    _check_read_noise_shape(camera, photons.shape)
    if not isinstance(differentiable, (bool, np.bool_)):
        raise TypeError(f"argument 'differentiable': expected a bool, got {type(differentiable).__name__}")
    use_em = _camera_flags(camera)
    return _apply_camera(key, photons, camera, use_em=use_em, differentiable=bool(differentiable))


def _apply_camera(key, photons, camera, *, use_em, differentiable):
    dtype = photons.dtype
    k_shot, k_em, k_read = jax.random.split(key, 3)
    rate = camera.qe * photons
    if differentiable:
        electrons = _poisson_noise(k_shot, rate)
    else:
        electrons = jax.random.poisson(k_shot, rate, shape=rate.shape).astype(dtype)
    if use_em:
        electrons = _em_register(k_em, electrons, camera.em_gain, differentiable)
    rn = jnp.asarray(camera.read_noise_e, dtype=dtype)
    electrons = electrons + rn * jax.random.normal(k_read, electrons.shape, dtype=dtype)
    adu = electrons / camera.gain_e_per_adu + camera.offset_adu
    if camera.bit_depth is not None and not differentiable:
        adu = jnp.clip(jnp.round(adu), 0.0, float(2**camera.bit_depth - 1))
    return adu.astype(dtype)


# --------------------------------------------------------------------------- #
# Whole pipeline
# --------------------------------------------------------------------------- #
def expected_image(
    obj: Any,
    psf: Any,
    *,
    background_photons: Any = 0.0,
    binning: int | Sequence[int] = 1,
    boundary: str = "zero",
) -> jax.Array:
    """Noise-free mean image in photons per camera pixel.

    ``bin_image(max(convolve(obj, psf), 0), factor=binning) + background_photons``.
    The clip at zero removes the tiny negative FFT round-off of a non-negative
    convolution so the result is a valid Poisson rate.

    Args:
        obj: ``(..., y, x)`` or ``(..., z, y, x)`` expected photons per fine
            (object-grid) pixel, non-negative.
        psf: ``(y, x)`` or ``(z, y, x)`` PSF (non-negative, positive sum), centre
            at ``n // 2``; normalise it to unit sum to conserve photons.
        background_photons: photons per camera pixel added after binning, a
            scalar or an array that broadcasts to the binned image's shape
            (it may not add or enlarge axes); non-negative.
        binning: camera binning factor (see :func:`bin_image`), static.
        boundary: convolution boundary (see :func:`convolve`), static.

    Returns:
        Binned mean image in photons.

    Raises:
        ValueError: ``obj`` of too low rank, negative or with NaN/inf; ``psf`` not
            2D/3D, larger than ``obj``, negative, with NaN/inf or a zero sum;
            negative/NaN ``background_photons`` or a shape that does not broadcast
            to the binned image's; bad ``binning`` or ``boundary``.

    >>> import jax.numpy as jnp
    >>> obj = jnp.zeros((8, 8)).at[4, 4].set(100.0)
    >>> img = expected_image(obj, jnp.ones((3, 3)) / 9.0, background_photons=1.0, binning=2)
    >>> img.shape, round(float(img.sum()), 3)
    ((4, 4), 116.0)
    """
    check_choice(boundary, "boundary", _BOUNDARIES)
    obj, psf = _check_image_psf(obj, psf, image_name="obj")
    check_psf(psf, "psf")
    check_nonnegative(obj, "obj")
    background_photons = as_float_array(background_photons, "background_photons")
    check_nonnegative(background_photons, "background_photons")
    blurred = jnp.maximum(_convolve(obj, psf, boundary), 0.0)
    binned = bin_image(blurred, factor=binning)
    _check_background_shape(background_photons.shape, binned.shape)
    return binned + background_photons.astype(binned.dtype)


def _check_background_shape(background_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> None:
    """The background must broadcast *to* the binned image's shape: adding it may not grow the image
    (a ``(2, 4, 4)`` background on a ``(4, 4)`` image would silently return two images)."""
    try:
        ok = np.broadcast_shapes(tuple(background_shape), tuple(image_shape)) == tuple(image_shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"argument 'background_photons': shape {tuple(background_shape)} does not "
            f"broadcast to the binned image shape {tuple(image_shape)}"
        )


def form_image(
    key: jax.Array,
    obj: Any,
    psf: Any,
    *,
    background_photons: Any = 0.0,
    binning: int | Sequence[int] = 1,
    camera: CameraModel | None = None,
    boundary: str = "zero",
    differentiable: bool = False,
) -> jax.Array:
    """Simulate one camera frame in ADU: blur, bin, add background, camera noise.

    ``apply_camera(key, expected_image(obj, psf, ...), camera=camera)``. With the
    default ideal camera the output is a Poisson draw of the expected image
    (ADU == detected photons).

    Args:
        key: a ``jax.random`` key.
        obj: ``(..., y, x)`` or ``(..., z, y, x)`` expected photons per fine pixel.
        psf: ``(y, x)`` or ``(z, y, x)`` PSF, centre at ``n // 2``.
        background_photons: photons per camera pixel (scalar or an array that
            broadcasts to the binned image's shape, see :func:`expected_image`).
        binning: camera binning factor (see :func:`bin_image`), static.
        camera: a :class:`CameraModel`; ``None`` means ``camera_preset("ideal")``.
        boundary: convolution boundary, ``"zero"``, ``"reflect"`` or ``"periodic"``.
        differentiable: use the differentiable camera path (see :func:`apply_camera`).

    Returns:
        The noisy frame in ADU, shape of :func:`expected_image`.

    >>> import jax, jax.numpy as jnp
    >>> obj = jnp.zeros((8, 8)).at[4, 4].set(100.0)
    >>> frame = form_image(jax.random.key(0), obj, jnp.ones((3, 3)) / 9.0, binning=2)
    >>> frame.shape
    (4, 4)
    """
    if camera is None:
        camera = camera_preset("ideal")
    camera = _check_camera(camera)
    mean = expected_image(
        obj, psf, background_photons=background_photons, binning=binning, boundary=boundary
    )
    return apply_camera(key, mean, camera=camera, differentiable=differentiable)
