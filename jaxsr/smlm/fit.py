"""Maximum-likelihood fitting of single-molecule spots, with Cramér-Rao bounds.

Model (pixel-integrated 2D Gaussian; Smith et al., Nat. Methods 7, 373 (2010)):
the expected photon count in ROI pixel ``(i, j)`` (row ``i`` = y, column ``j`` = x;
pixel ``k`` covers ``[k - 1/2, k + 1/2)``, so the centre of pixel ``k`` is at ``k``) is

    mu_ij = b + N * E_y(i) * E_x(j),
    E_x(j) = (erf((j - x + 1/2) / (sqrt(2) s)) - erf((j - x - 1/2) / (sqrt(2) s))) / 2,

with position ``(y, x)`` in ROI pixels, ``N`` photons, ``b`` photons per pixel
and the PSF standard deviation ``s`` in pixels (given, or fitted when
``sigma_px=None``).

Likelihood: Poisson on photon counts. For sCMOS cameras a per-pixel read-noise
variance ``v_ij`` (photons^2, i.e. ADU variance / gain^2) is handled with the
shifted-Poisson approximation of Huang et al. (Nat. Methods 10, 653 (2013)):
data ``d + v`` is treated as Poisson with mean ``mu + v``. ``v = 0`` is the
plain Poisson model (EMCCD data converted to photons with the excess-noise
factor folded in, or an ideal camera).

Optimiser: Fisher scoring with Levenberg-Marquardt damping (Laurence & Chromy,
Nat. Methods 7, 338 (2010)): step ``(I + lam diag I)^-1 grad log L`` with the
expected information ``I = J^T diag(1 / (mu + v)) J``; a step is kept only if it
raises the likelihood (then ``lam`` shrinks 10x, else it grows 10x), so every
fit is monotone. The fits of many ROIs are one ``vmap`` in one ``jit``.

Cramér-Rao bound: ``sqrt(diag(I(theta)^-1))`` at the fitted parameters, the
same information matrix (so the sCMOS variance term is included).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import as_float_array, check_finite, check_int, check_ndim, check_nonnegative, is_concrete

__all__ = ["SpotFit", "SPOT_PARAMETERS", "gaussian_spot", "spot_fisher", "spot_crlb", "fit_spots"]

SPOT_PARAMETERS = ("y", "x", "photons", "background", "sigma | z_nm")
"""Parameter order of :func:`fit_spots`: the 5th is ``sigma`` (px) when it is fitted, or ``z`` (nm)
for the astigmatic 3D model; 2D fits with a fixed sigma have 4."""

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


class SpotFit(NamedTuple):
    """Result of :func:`fit_spots` for ``n`` ROIs.

    Attributes:
        params: ``(n, p)`` fitted ``(y, x, photons, background[, sigma | z])``: position in ROI
            pixels (pixel ``k`` centred at ``k``), photons per spot, photons per pixel, and the
            PSF standard deviation in pixels (sigma fitted) or z in nm (astigmatic model).
        crlb: ``(n, p)`` Cramér-Rao lower bounds (standard deviations) of the same parameters
            at the fitted values, same units.
        log_likelihood: ``(n,)`` Poisson log-likelihood of the fit (without the data-only term).
        deviance: ``(n,)`` likelihood-ratio statistic ``2 sum(mu - d + d log(d / mu))`` against
            the saturated model; about the number of pixels for a good fit.
        converged: ``(n,)`` True where one more Fisher-scoring (Newton) step would change every
            parameter by less than ``1e-2`` of its CRLB.
    """

    params: jax.Array
    crlb: jax.Array
    log_likelihood: jax.Array
    deviance: jax.Array
    converged: jax.Array


def _axis_profile(n: int, centre, sigma, dtype):
    """Integrated 1D Gaussian over pixels 0..n-1 and its derivatives w.r.t. centre and sigma."""
    k = jnp.arange(n, dtype=dtype)
    hi = k - centre + 0.5
    lo = k - centre - 0.5
    s2 = _SQRT2 * sigma
    e = 0.5 * (jax.scipy.special.erf(hi / s2) - jax.scipy.special.erf(lo / s2))
    g_hi = jnp.exp(-0.5 * jnp.square(hi / sigma))
    g_lo = jnp.exp(-0.5 * jnp.square(lo / sigma))
    de_dc = (g_lo - g_hi) / (_SQRT2PI * sigma)
    de_ds = (lo * g_lo - hi * g_hi) / (_SQRT2PI * jnp.square(sigma))
    return e, de_dc, de_ds


class _Astig(NamedTuple):
    """Astigmatic calibration in ROI units (static, hashable): widths in pixels, z in nm."""

    s0x: float
    s0y: float
    gamma: float
    depth: float
    a_x: float
    b_x: float
    a_y: float
    b_y: float

    @property
    def z_limit(self) -> float:
        return abs(self.gamma) + 1.5 * self.depth


def _astig_widths(z, spec: _Astig):
    """``sigma_x(z), d sigma_x / dz, sigma_y(z), d sigma_y / dz`` (pixels, pixels/nm); Huang et al. 2008."""

    def one(s0, t, a, b):
        inner = jnp.maximum(1.0 + t * t + a * t**3 + b * t**4, 1e-6)
        w = s0 * jnp.sqrt(inner)
        dw = s0 * (2 * t + 3 * a * t * t + 4 * b * t**3) / (2.0 * jnp.sqrt(inner) * spec.depth)
        return w, dw

    sx, dsx = one(spec.s0x, (z - spec.gamma) / spec.depth, spec.a_x, spec.b_x)
    sy, dsy = one(spec.s0y, (z + spec.gamma) / spec.depth, spec.a_y, spec.b_y)
    return sx, dsx, sy, dsy


def _model_and_jacobian(theta, shape, spec):
    """Expected counts ``(ny * nx,)`` and Jacobian ``(p, ny * nx)`` of one spot.

    ``spec``: a float (fixed sigma in pixels), None (sigma is ``theta[4]``) or an
    :class:`_Astig` (``theta[4]`` is z in nm).
    """
    ny, nx = shape
    y, x, n_ph, b = theta[0], theta[1], theta[2], theta[3]
    if isinstance(spec, _Astig):
        sx, dsx_dz, sy, dsy_dz = _astig_widths(theta[4], spec)
    else:
        sx = sy = spec if spec is not None else theta[4]
    ey, dey, dsy = _axis_profile(ny, y, sy, theta.dtype)
    ex, dex, dsx = _axis_profile(nx, x, sx, theta.dtype)
    shape_ = jnp.outer(ey, ex)
    mu = b + n_ph * shape_
    rows = [n_ph * jnp.outer(dey, ex), n_ph * jnp.outer(ey, dex), shape_, jnp.ones_like(shape_)]
    if isinstance(spec, _Astig):
        rows.append(n_ph * (jnp.outer(dsy * dsy_dz, ex) + jnp.outer(ey, dsx * dsx_dz)))
    elif spec is None:
        rows.append(n_ph * (jnp.outer(dsy, ex) + jnp.outer(ey, dsx)))
    return mu.reshape(-1), jnp.stack([r.reshape(-1) for r in rows])


def _check_sigma(sigma_px):
    if sigma_px is None:
        return None
    if not is_concrete(sigma_px):
        raise TypeError("argument 'sigma_px': must be a concrete number (it selects the compiled model)")
    s = float(sigma_px)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"argument 'sigma_px': expected a positive PSF standard deviation in pixels, got {sigma_px}")
    return s


def _spec(sigma_px, astigmatism, pixel_size_nm):
    """The static PSF spec and the number of parameters, with one-line errors."""
    if astigmatism is not None:
        if sigma_px is not None:
            raise ValueError("argument 'sigma_px': give either sigma_px or astigmatism, not both")
        if pixel_size_nm is None or not (np.isfinite(float(pixel_size_nm)) and float(pixel_size_nm) > 0):
            raise ValueError(f"argument 'pixel_size_nm': the astigmatic model needs the pixel size in nm, "
                             f"got {pixel_size_nm}")
        if not isinstance(astigmatism, dict):
            raise TypeError(f"argument 'astigmatism': expected a dict of astigmatic_sigma parameters, "
                            f"got {type(astigmatism).__name__}")
        need = ("sigma0_x_nm", "sigma0_y_nm", "gamma_nm", "depth_nm")
        missing = [k for k in need if k not in astigmatism]
        if missing:
            raise ValueError(f"argument 'astigmatism': missing {', '.join(missing)}")
        unknown = set(astigmatism) - set(need) - {"a_x", "b_x", "a_y", "b_y"}
        if unknown:
            raise ValueError(f"argument 'astigmatism': unknown key(s) {', '.join(sorted(unknown))}")
        p = float(pixel_size_nm)
        vals = {k: float(v) for k, v in astigmatism.items()}
        for k in ("sigma0_x_nm", "sigma0_y_nm", "depth_nm"):
            if not (np.isfinite(vals[k]) and vals[k] > 0):
                raise ValueError(f"argument 'astigmatism': {k} must be positive, got {vals[k]}")
        spec = _Astig(vals["sigma0_x_nm"] / p, vals["sigma0_y_nm"] / p, vals["gamma_nm"], vals["depth_nm"],
                      vals.get("a_x", 0.0), vals.get("b_x", 0.0), vals.get("a_y", 0.0), vals.get("b_y", 0.0))
        return spec, 5
    sigma = _check_sigma(sigma_px)
    return sigma, (4 if sigma is not None else 5)


def gaussian_spot(params: Any, *, shape: tuple[int, int], sigma_px: Any = None, astigmatism: dict | None = None,
                  pixel_size_nm: Any = None) -> jax.Array:
    """Expected photons of a pixel-integrated 2D Gaussian spot on a background.

    Args:
        params: ``(..., 4)`` ``(y, x, photons, background)`` with ``sigma_px`` given, or
            ``(..., 5)`` ``(y, x, photons, background, sigma)`` (``sigma_px=None``), or
            ``(..., 5)`` ``(y, x, photons, background, z_nm)`` with ``astigmatism``; positions
            in pixels of the ROI (pixel ``k`` centred at ``k``), background in photons per pixel.
        shape: static ``(ny, nx)`` ROI shape.
        sigma_px: PSF standard deviation in pixels, or ``None`` when it is the 5th parameter.
        astigmatism: astigmatic 3D model instead: the keyword arguments of
            :func:`jaxsr.optics.astigmatic_sigma` (``sigma0_x_nm``, ``sigma0_y_nm``, ``gamma_nm``,
            ``depth_nm``, optional ``a_x``...), widths ``sigma_x(z)``, ``sigma_y(z)``.
        pixel_size_nm: camera pixel size (nm), needed with ``astigmatism``.

    Returns:
        ``(..., ny, nx)`` expected photons per pixel, dtype of ``params``.

    >>> import jax.numpy as jnp
    >>> mu = gaussian_spot(jnp.array([5.0, 5.0, 1000.0, 0.0]), shape=(11, 11), sigma_px=1.3)
    >>> round(float(mu.sum()), 1)
    1000.0
    """
    params = as_float_array(params, "params")
    spec, need = _spec(sigma_px, astigmatism, pixel_size_nm)
    if params.ndim < 1 or params.shape[-1] != need:
        raise ValueError(f"argument 'params': expected (..., {need}) parameters, got shape {tuple(params.shape)}")
    shape = tuple(int(s) for s in shape)
    flat = params.reshape(-1, need)
    mu = jax.vmap(lambda t: _model_and_jacobian(t, shape, spec)[0])(flat)
    return mu.reshape(params.shape[:-1] + shape)


def _fisher(theta, variance, shape, sigma):
    mu, jac = _model_and_jacobian(theta, shape, sigma)
    w = 1.0 / jnp.maximum(mu + variance, jnp.finfo(mu.dtype).tiny)
    return (jac * w) @ jac.T


def spot_fisher(params: Any, *, shape: tuple[int, int], sigma_px: Any = None, variance: Any = 0.0,
                astigmatism: dict | None = None, pixel_size_nm: Any = None) -> jax.Array:
    """Fisher information matrix of the spot model under Poisson (+ sCMOS read-noise) statistics.

    ``I = J^T diag(1 / (mu + v)) J`` with ``J`` the Jacobian of :func:`gaussian_spot`
    and ``v`` the per-pixel read-noise variance in photons^2 (0 for a Poisson-only camera).

    Args:
        params: ``(..., p)`` spot parameters (see :func:`gaussian_spot`).
        shape: static ``(ny, nx)`` ROI shape.
        sigma_px: PSF standard deviation in pixels, or ``None`` when it is a parameter.
        variance: read-noise variance in photons^2, broadcastable to ``(..., ny, nx)``.
        astigmatism, pixel_size_nm: the astigmatic 3D model (see :func:`gaussian_spot`).

    Returns:
        ``(..., p, p)`` information matrices (units: inverse squared parameter units).
    """
    params = as_float_array(params, "params")
    sigma, p = _spec(sigma_px, astigmatism, pixel_size_nm)
    if params.ndim < 1 or params.shape[-1] != p:
        raise ValueError(f"argument 'params': expected (..., {p}), got shape {tuple(params.shape)}")
    shape = tuple(int(s) for s in shape)
    variance = jnp.broadcast_to(as_float_array(variance, "variance").astype(params.dtype),
                                params.shape[:-1] + shape)
    flat_t = params.reshape(-1, p)
    flat_v = variance.reshape(-1, shape[0] * shape[1])
    info = jax.vmap(lambda t, v: _fisher(t, v, shape, sigma))(flat_t, flat_v)
    return info.reshape(params.shape[:-1] + (p, p))


def spot_crlb(params: Any, *, shape: tuple[int, int], sigma_px: Any = None, variance: Any = 0.0,
              astigmatism: dict | None = None, pixel_size_nm: Any = None) -> jax.Array:
    """Cramér-Rao lower bounds ``sqrt(diag(I^-1))`` of the spot parameters (same units as ``params``).

    Args: as :func:`spot_fisher`.

    Returns:
        ``(..., p)`` standard deviations; multiply the first two by the pixel size for nm.

    >>> import jax.numpy as jnp
    >>> c = spot_crlb(jnp.array([5.0, 5.0, 1000.0, 10.0]), shape=(11, 11), sigma_px=1.3)
    >>> round(float(c[1]) * 100.0, 2)  # x in nm at 100 nm pixels
    5.63
    """
    info = spot_fisher(params, shape=shape, sigma_px=sigma_px, variance=variance, astigmatism=astigmatism,
                       pixel_size_nm=pixel_size_nm)
    return jnp.sqrt(jnp.diagonal(jnp.linalg.inv(info), axis1=-2, axis2=-1))


def _initial(roi, variance, sigma_fixed):
    """Moment-based start: border median background, centroid position, excess photons."""
    ny, nx = roi.shape
    border = jnp.concatenate([roi[0], roi[-1], roi[1:-1, 0], roi[1:-1, -1]])
    b = jnp.maximum(jnp.median(border), 1e-3)
    excess = jnp.maximum(roi - b, 0.0)
    total = jnp.sum(excess)
    yy = jnp.arange(ny, dtype=roi.dtype)[:, None]
    xx = jnp.arange(nx, dtype=roi.dtype)[None, :]
    safe = jnp.maximum(total, 1e-6)
    cy = jnp.where(total > 0, jnp.sum(excess * yy) / safe, (ny - 1) / 2.0)
    cx = jnp.where(total > 0, jnp.sum(excess * xx) / safe, (nx - 1) / 2.0)
    n_ph = jnp.maximum(total, 1.0)
    theta = [jnp.clip(cy, 0.0, ny - 1.0), jnp.clip(cx, 0.0, nx - 1.0), n_ph, b]
    if isinstance(sigma_fixed, _Astig):
        # z from the second moments: the grid z whose widths (sigma_x(z), sigma_y(z)) are nearest.
        vy = jnp.sum(excess * jnp.square(yy - cy)) / safe - 1.0 / 12.0
        vx = jnp.sum(excess * jnp.square(xx - cx)) / safe - 1.0 / 12.0
        my, mx = jnp.sqrt(jnp.maximum(vy, 0.04)), jnp.sqrt(jnp.maximum(vx, 0.04))
        grid = jnp.linspace(-sigma_fixed.z_limit, sigma_fixed.z_limit, 61, dtype=roi.dtype)
        gx, _, gy, _ = _astig_widths(grid, sigma_fixed)
        theta.append(grid[jnp.argmin(jnp.square(gx - mx) + jnp.square(gy - my))])
    elif sigma_fixed is None:
        var = jnp.sum(excess * (jnp.square(yy - cy) + jnp.square(xx - cx))) / (2.0 * safe)
        theta.append(jnp.clip(jnp.sqrt(jnp.maximum(var, 0.0)), 0.5, max(ny, nx) / 3.0))
    return jnp.stack(theta).astype(roi.dtype)


def _loglik(theta, data, variance, shape, sigma):
    mu, _ = _model_and_jacobian(theta, shape, sigma)
    m = jnp.maximum(mu + variance, jnp.finfo(mu.dtype).tiny)
    return jnp.sum(data * jnp.log(m) - m)


def _constrain(theta, shape, sigma_fixed):
    ny, nx = shape
    lo = [-0.5, -0.5, 1e-3, 1e-6]
    hi = [ny - 0.5, nx - 0.5, jnp.inf, jnp.inf]
    if isinstance(sigma_fixed, _Astig):
        lo.append(-sigma_fixed.z_limit)
        hi.append(sigma_fixed.z_limit)
    elif sigma_fixed is None:
        lo.append(0.3)
        hi.append(max(ny, nx))
    return jnp.clip(theta, jnp.asarray(lo, theta.dtype), jnp.asarray(hi, theta.dtype))


_STEP_TOL = 1e-2
"""A fit has converged when one more full (undamped) Fisher-scoring step would move every parameter by
less than this many CRLBs: the maximum is then known far better than the data determine it (a float32
likelihood cannot resolve much below about 1e-3)."""


def _fit_one(roi, variance, sigma, iterations):
    shape = roi.shape
    v = variance.reshape(-1)
    data = jnp.maximum(roi.reshape(-1) + v, 0.0)
    theta0 = _initial(roi, variance, sigma)
    ll0 = _loglik(theta0, data, v, shape, sigma)
    p = theta0.shape[0]
    eye = jnp.eye(p, dtype=roi.dtype)

    def body(_, state):
        theta, ll, lam, last_step = state
        mu, jac = _model_and_jacobian(theta, shape, sigma)
        m = jnp.maximum(mu + v, jnp.finfo(mu.dtype).tiny)
        grad = jac @ (data / m - 1.0)
        info = (jac / m) @ jac.T
        damped = info + lam * (jnp.diag(jnp.diag(info)) + 1e-12 * eye)
        step = jnp.linalg.solve(damped, grad)
        cand = _constrain(theta + step, shape, sigma)
        ll_c = _loglik(cand, data, v, shape, sigma)
        better = jnp.isfinite(ll_c) & (ll_c >= ll)
        theta = jnp.where(better, cand, theta)
        lam = jnp.where(better, jnp.maximum(lam * 0.1, 1e-7), jnp.minimum(lam * 10.0, 1e7))
        last_step = jnp.where(better, cand - state[0], jnp.zeros_like(theta))
        return theta, jnp.where(better, ll_c, ll), lam, last_step

    init = (theta0, ll0, jnp.asarray(1e-3, roi.dtype), jnp.full((p,), jnp.inf, roi.dtype))
    theta, ll, _, _ = jax.lax.fori_loop(0, iterations, body, init)
    mu, jac = _model_and_jacobian(theta, shape, sigma)
    m = jnp.maximum(mu + v, jnp.finfo(mu.dtype).tiny)
    info = (jac / m) @ jac.T
    inv = jnp.linalg.inv(info)
    crlb = jnp.sqrt(jnp.abs(jnp.diagonal(inv)))
    # Converged: the full Fisher-scoring step from here is below _STEP_TOL CRLB in every parameter.
    newton = inv @ (jac @ (data / m - 1.0))
    converged = jnp.all(jnp.abs(newton) <= _STEP_TOL * crlb)
    dev = 2.0 * jnp.sum(m - data + jnp.where(data > 0, data * jnp.log(jnp.maximum(data, 1e-30) / m), 0.0))
    return theta, crlb, ll, dev, converged


@functools.partial(jax.jit, static_argnames=("spec", "iterations"))
def _fit_batch(rois, variance, spec, iterations):
    return jax.vmap(lambda r, v: _fit_one(r, v, spec, iterations))(rois, variance)


def fit_spots(
    rois: Any,
    *,
    sigma_px: Any = None,
    variance: Any = 0.0,
    iterations: int = 10,
    astigmatism: dict | None = None,
    pixel_size_nm: Any = None,
) -> SpotFit:
    """Poisson maximum-likelihood fit of a 2D Gaussian spot in every ROI (vmap-ed, jit-compiled).

    Args:
        rois: ``(n, ny, nx)`` or ``(ny, nx)`` ROIs in photons (camera offset removed and
            divided by the gain; :func:`jaxsr.forward.photons_from_adu`), each at least 5 x 5,
            finite. Axis order ``(y, x)``.
        sigma_px: PSF standard deviation in pixels (fixed, known from a bead calibration or
            from ``0.21 wavelength / NA / pixel``); ``None`` fits it per spot as a 5th parameter.
        variance: sCMOS read-noise variance per pixel in photons^2 (``read_noise_adu^2 /
            gain^2``), broadcastable to ``rois``; 0 (default) for Poisson-only data.
        iterations: Levenberg-Marquardt Fisher-scoring iterations (default 10: on the CRLB test
            99.98 % of fixed-sigma fits, 99.7 % of free-sigma and 99.6 % of astigmatic 3D fits have
            converged by then, and 30 iterations change neither the precision nor those fractions
            by more than 0.05 %).
        astigmatism: fit the astigmatic 3D model instead (see :func:`gaussian_spot`); the 5th
            parameter is then z in nm, started from the second moments of the spot.
        pixel_size_nm: camera pixel size (nm), needed with ``astigmatism``.

    Returns:
        :class:`SpotFit` (positions in ROI pixels; add the ROI origin and multiply by the pixel
        size for nm).

    Raises:
        ValueError: ROIs of the wrong rank, smaller than 5 x 5, or with NaN/inf;
            a non-positive ``sigma_px``; a negative ``variance``.

    References:
        Smith, Joseph, Rieger & Lidke, Nat. Methods 7, 373 (2010) (model, CRLB);
        Laurence & Chromy, Nat. Methods 7, 338 (2010) (Poisson LM);
        Huang et al., Nat. Methods 10, 653 (2013) (sCMOS variance term).

    >>> import jax, jax.numpy as jnp
    >>> mu = gaussian_spot(jnp.array([5.2, 4.7, 2000.0, 5.0]), shape=(11, 11), sigma_px=1.3)
    >>> fit = fit_spots(mu, sigma_px=1.3)  # noise-free data: the truth is recovered
    >>> [round(float(v), 3) for v in fit.params]
    [5.2, 4.7, 2000.0, 5.0]
    """
    rois = as_float_array(rois, "rois")
    check_ndim(rois, "rois", (2, 3))
    single = rois.ndim == 2
    if single:
        rois = rois[None]
    if min(rois.shape[-2:]) < 5:
        raise ValueError(f"argument 'rois': each ROI must be at least 5 x 5 pixels, got {tuple(rois.shape[-2:])}")
    check_finite(rois, "rois")
    spec, _ = _spec(sigma_px, astigmatism, pixel_size_nm)
    iterations = check_int(iterations, "iterations", minimum=1)
    variance = as_float_array(variance, "variance")
    check_finite(variance, "variance")
    check_nonnegative(variance, "variance")
    try:
        variance = jnp.broadcast_to(variance.astype(rois.dtype), rois.shape)
    except ValueError:
        raise ValueError(f"argument 'variance': shape {tuple(variance.shape)} does not broadcast to the ROIs "
                         f"{tuple(rois.shape)}") from None
    out = _fit_batch(rois, variance, spec, iterations)
    fit = SpotFit(*out)
    if single:
        fit = SpotFit(*(a[0] for a in fit))
    return fit
