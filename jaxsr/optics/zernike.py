"""Zernike polynomials on the unit disc, Noll (1976) indexing and normalisation.

Noll's single index ``j >= 1`` orders the modes by radial order ``n`` and,
within a row, by ``|m|``; for ``m != 0`` an even ``j`` is the ``cos(m theta)``
mode and an odd ``j`` the ``sin(m theta)`` mode. Here the azimuthal order is
returned *signed*: ``m > 0`` means ``cos(m theta)`` and ``m < 0`` means
``sin(|m| theta)``. Low orders:

====  =====  =========================================  ==================
 j    (n,m)  Z_j(rho, theta)                            name
====  =====  =========================================  ==================
 1    (0,0)  1                                          piston
 2    (1,1)  2 rho cos(theta)                           tilt (x)
 3    (1,-1) 2 rho sin(theta)                           tilt (y)
 4    (2,0)  sqrt(3) (2 rho^2 - 1)                      defocus
 5    (2,-2) sqrt(6) rho^2 sin(2 theta)                 oblique astigmatism
 6    (2,2)  sqrt(6) rho^2 cos(2 theta)                 vertical astigmatism
 7    (3,-1) sqrt(8) (3 rho^3 - 2 rho) sin(theta)       coma (y)
 8    (3,1)  sqrt(8) (3 rho^3 - 2 rho) cos(theta)       coma (x)
 11   (4,0)  sqrt(5) (6 rho^4 - 6 rho^2 + 1)            primary spherical
====  =====  =========================================  ==================

Normalisation: ``Z_j = sqrt(n + 1) R_n^0`` for ``m = 0`` and
``sqrt(2 (n + 1)) R_n^|m| cos/sin(|m| theta)`` otherwise, so every mode has
unit RMS over the unit disc and the modes are orthonormal under the
disc-averaged inner product ``(1/pi) int Z_i Z_j rho drho dtheta = delta_ij``.
Polar coordinates: ``rho`` is the radius normalised to the pupil edge,
``theta`` the angle from the x axis towards the y axis (radians).

References:
    R. J. Noll, "Zernike polynomials and atmospheric turbulence",
    J. Opt. Soc. Am. 66, 207-211 (1976).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from jaxsr._validate import as_float_array, check_int

__all__ = ["noll_to_nm", "zernike", "zernike_basis"]


def noll_to_nm(j: int) -> tuple[int, int]:
    """Radial and signed azimuthal order ``(n, m)`` of Noll index ``j``.

    Args:
        j: Noll index, an int ``>= 1``.

    Returns:
        ``(n, m)`` as Python ints: ``n >= 0``, ``|m| <= n``, ``n - |m|`` even;
        ``m > 0`` is the ``cos(m theta)`` mode (even ``j``), ``m < 0`` the
        ``sin(|m| theta)`` mode (odd ``j``), ``m = 0`` rotationally symmetric.

    Raises:
        TypeError: if ``j`` is not an int. ValueError: if ``j < 1``.

    References:
        R. J. Noll, J. Opt. Soc. Am. 66, 207 (1976).

    >>> [noll_to_nm(j) for j in (1, 2, 3, 4, 5, 6, 11)]
    [(0, 0), (1, 1), (1, -1), (2, 0), (2, -2), (2, 2), (4, 0)]
    """
    j = check_int(j, "j", minimum=1)
    n = 0
    while (n + 1) * (n + 2) // 2 < j:
        n += 1
    k = j - n * (n + 1) // 2 - 1  # position in row n, 0..n
    # |m| runs 0,2,2,4,4,... (n even) or 1,1,3,3,... (n odd) along a row.
    am = 2 * ((k + 1) // 2) if n % 2 == 0 else 2 * (k // 2) + 1
    m = am if (am == 0 or j % 2 == 0) else -am
    return n, m


def _radial_coefficients(n: int, am: int) -> list[float]:
    """Coefficients of R_n^|m| in powers of rho^2, highest first, times rho^|m|."""
    coeffs = []
    for k in range((n - am) // 2 + 1):
        c = (-1) ** k * math.factorial(n - k) / (
            math.factorial(k) * math.factorial((n + am) // 2 - k) * math.factorial((n - am) // 2 - k)
        )
        coeffs.append(float(c))  # multiplies rho^(n - 2k)
    return coeffs


def zernike_unmasked(j: int, rho, theta):
    """Noll-normalised ``Z_j`` without the ``rho <= 1`` cut (internal, no checks).

    Used for pupil phases, where a soft pupil edge needs the polynomial
    continued slightly beyond ``rho = 1``.
    """
    n, m = noll_to_nm(j)
    am = abs(m)
    r2 = rho * rho
    poly = jnp.zeros_like(rho)
    for c in _radial_coefficients(n, am):  # Horner in rho^2, highest power first
        poly = poly * r2 + c
    radial = poly * rho**am if am else poly
    if m == 0:
        return math.sqrt(n + 1) * radial * jnp.ones_like(theta)
    ang = jnp.cos(am * theta) if m > 0 else jnp.sin(am * theta)
    return math.sqrt(2.0 * (n + 1)) * radial * ang


def _polar(rho, theta):
    rho = as_float_array(rho, "rho")
    theta = as_float_array(theta, "theta")
    try:
        shape = np.broadcast_shapes(rho.shape, theta.shape)
    except ValueError as err:
        raise ValueError(
            f"argument 'theta': shape {theta.shape} does not broadcast with 'rho' shape {rho.shape}"
        ) from err
    dtype = jnp.result_type(rho, theta)
    return jnp.broadcast_to(rho.astype(dtype), shape), jnp.broadcast_to(theta.astype(dtype), shape)


def zernike(j: int, rho, theta):
    """Noll-normalised Zernike polynomial ``Z_j(rho, theta)``, zero outside the unit disc.

    Args:
        j: Noll index (static int ``>= 1``), see :func:`noll_to_nm`.
        rho: normalised radius, real array (``rho <= 1`` inside the pupil).
        theta: azimuth in radians from the x axis, broadcastable with ``rho``.

    Returns:
        ``Z_j`` on the broadcast shape, dtype of the inputs; unit RMS over the
        unit disc; exactly 0 where ``rho > 1``. Differentiable in ``rho`` and
        ``theta``.

    References:
        R. J. Noll, J. Opt. Soc. Am. 66, 207 (1976).

    >>> import math
    >>> round(float(zernike(4, 1.0, 0.0)), 6) == round(math.sqrt(3), 6)
    True
    """
    j = check_int(j, "j", minimum=1)
    rho, theta = _polar(rho, theta)
    outside = jnp.where(jnp.isnan(rho), jnp.nan, 0.0)  # NaN radius -> NaN, not a silent 0
    return jnp.where(rho <= 1.0, zernike_unmasked(j, rho, theta), outside)


def zernike_basis(indices: Sequence[int], rho, theta):
    """Stack of Noll-normalised Zernike polynomials, one per Noll index.

    Args:
        indices: non-empty sequence of Noll indices (static ints ``>= 1``),
            e.g. ``range(1, 16)``.
        rho: normalised radius, real array.
        theta: azimuth in radians, broadcastable with ``rho``.

    Returns:
        ``(len(indices), *broadcast_shape)`` array; entry ``i`` is
        ``zernike(indices[i], rho, theta)`` (0 outside the unit disc).

    References:
        R. J. Noll, J. Opt. Soc. Am. 66, 207 (1976).

    >>> zernike_basis([1, 2, 3], [0.0, 0.5], [0.0, 0.0]).shape
    (3, 2)
    """
    try:
        indices = [check_int(j, "indices") for j in indices]
    except TypeError as err:
        if "indices" in str(err):
            raise
        raise TypeError(f"argument 'indices': expected a sequence of ints, got {indices!r}") from err
    if not indices:
        raise ValueError("argument 'indices': must contain at least one Noll index")
    if min(indices) < 1:
        raise ValueError(f"argument 'indices': Noll indices must be >= 1, got {min(indices)}")
    rho, theta = _polar(rho, theta)
    inside = rho <= 1.0
    return jnp.stack([jnp.where(inside, zernike_unmasked(j, rho, theta), 0.0) for j in indices])
