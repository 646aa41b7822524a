"""Fit a PSF model to images of sub-diffraction beads by gradient descent.

The model image of bead ``b`` is ``amplitude_b * psf(shape_params, offset_b) +
background_b``; the PSF's shape parameters (NA, wavelength, Gaussian widths,
Zernike coefficients, ...) are shared by all beads, while each bead has its own
sub-pixel offset, photon count and background. The negative log-likelihood
(Poisson, or Gaussian least squares) is minimised with L-BFGS from optax
through the differentiable PSF models of :mod:`jaxsr.optics.psf`, so any of
their parameters can be fitted or held fixed.

Axis order: a single bead is ``(y, x)`` (2D models) or ``(z, y, x)`` (3D
models); a leading axis ``(n_beads, ...)`` fits several bead crops together.
Lengths are in nm, Zernike coefficients in radians of pupil phase (Noll
indexing, rms-normalised).

Which parameters are identifiable: a 2D in-focus image constrains only the
ratio NA / wavelength (the Airy pattern scales with wavelength / NA), so
``airy2d`` holds the wavelength fixed by default and fits NA; a 3D stack also
sees the axial scale ``refractive_index / wavelength``, but the refractive
index and wavelength are usually known and held fixed. Piston, tip, tilt and
defocus (Noll 1-4) duplicate the amplitude and the bead offset and are never
fitted.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsr._validate import as_float_array, check_choice, check_finite, check_int, check_positive
from jaxsr.optics.psf import (
    airy_psf_2d,
    astigmatic_psf_3d,
    gaussian_psf_2d,
    gaussian_psf_3d,
    pupil_psf_3d,
)

__all__ = ["fit_psf", "PSFFitResult", "PSF_MODELS"]

# Parameter transforms from an unconstrained value u to the physical value.
_POSITIVE = "positive"  # exp(u) * scale
_NA = "na"  # refractive_index * sigmoid(u)
_FREE = "free"  # u * scale


@dataclasses.dataclass(frozen=True)
class _Model:
    ndim: int
    shared: dict[str, str]  # parameter name -> transform
    defaults: dict[str, float]  # default initial values (None: estimated from the data)
    fixed: tuple[str, ...]  # held fixed unless the user asks to fit them
    render: Callable[..., jax.Array]


def _offsets(p, ndim):
    return tuple(p["offset_nm"][i] for i in range(ndim))


def _gaussian2d(shape, p, pixel_size_nm, z_step_nm):
    return gaussian_psf_2d(shape, sigma_nm=(p["sigma_y_nm"], p["sigma_x_nm"]), pixel_size_nm=pixel_size_nm,
                           offset_nm=_offsets(p, 2))


def _gaussian3d(shape, p, pixel_size_nm, z_step_nm):
    return gaussian_psf_3d(shape, sigma_nm=(p["sigma_z_nm"], p["sigma_y_nm"], p["sigma_x_nm"]),
                           pixel_size_nm=pixel_size_nm, z_step_nm=z_step_nm, offset_nm=_offsets(p, 3))


def _airy2d(shape, p, pixel_size_nm, z_step_nm):
    return airy_psf_2d(shape, na=p["na"], wavelength_nm=p["wavelength_nm"], pixel_size_nm=pixel_size_nm,
                       offset_nm=_offsets(p, 2))


def _pupil3d(shape, p, pixel_size_nm, z_step_nm):
    return pupil_psf_3d(shape, na=p["na"], wavelength_nm=p["wavelength_nm"], pixel_size_nm=pixel_size_nm,
                        z_step_nm=z_step_nm, refractive_index=p["refractive_index"],
                        zernike_rad=p["zernike_rad"], offset_nm=_offsets(p, 3))


def _astig3d(shape, p, pixel_size_nm, z_step_nm):
    return astigmatic_psf_3d(shape, pixel_size_nm=pixel_size_nm, z_step_nm=z_step_nm,
                             sigma0_x_nm=p["sigma0_x_nm"], sigma0_y_nm=p["sigma0_y_nm"],
                             gamma_nm=p["gamma_nm"], depth_nm=p["depth_nm"], a_x=p["a_x"], b_x=p["b_x"],
                             a_y=p["a_y"], b_y=p["b_y"], offset_nm=_offsets(p, 3))


PSF_MODELS: dict[str, _Model] = {
    "gaussian2d": _Model(2, {"sigma_y_nm": _POSITIVE, "sigma_x_nm": _POSITIVE},
                         {"sigma_y_nm": None, "sigma_x_nm": None}, (), _gaussian2d),
    "gaussian3d": _Model(3, {"sigma_z_nm": _POSITIVE, "sigma_y_nm": _POSITIVE, "sigma_x_nm": _POSITIVE},
                         {"sigma_z_nm": None, "sigma_y_nm": None, "sigma_x_nm": None}, (), _gaussian3d),
    "airy2d": _Model(2, {"na": _NA, "wavelength_nm": _POSITIVE},
                     {"na": 1.0, "wavelength_nm": 520.0, "refractive_index": 1.515}, ("wavelength_nm",), _airy2d),
    "pupil3d": _Model(3, {"na": _NA, "wavelength_nm": _POSITIVE, "refractive_index": _POSITIVE, "zernike_rad": _FREE},
                      {"na": 1.0, "wavelength_nm": 520.0, "refractive_index": 1.515, "zernike_rad": 0.0},
                      ("wavelength_nm", "refractive_index"), _pupil3d),
    "astigmatic3d": _Model(3, {"sigma0_x_nm": _POSITIVE, "sigma0_y_nm": _POSITIVE, "gamma_nm": _FREE,
                               "depth_nm": _POSITIVE, "a_x": _FREE, "b_x": _FREE, "a_y": _FREE, "b_y": _FREE},
                           {"sigma0_x_nm": None, "sigma0_y_nm": None, "gamma_nm": 250.0, "depth_nm": 400.0,
                            "a_x": 0.0, "b_x": 0.0, "a_y": 0.0, "b_y": 0.0}, (), _astig3d),
}
"""Model name -> spec. Shared shape parameters per model (all in nm, NA unitless):
``gaussian2d``: sigma_y_nm, sigma_x_nm; ``gaussian3d``: sigma_z_nm, sigma_y_nm, sigma_x_nm;
``airy2d``: na, wavelength_nm (fixed by default); ``pupil3d``: na, wavelength_nm, refractive_index
(both fixed by default), zernike_rad (Noll 1..num_zernike, 1-4 never fitted); ``astigmatic3d``:
sigma0_x_nm, sigma0_y_nm, gamma_nm, depth_nm, a_x, b_x, a_y, b_y."""


@dataclasses.dataclass(frozen=True)
class PSFFitResult:
    """Result of :func:`fit_psf`.

    Attributes:
        model: model name.
        params: fitted shared PSF parameters (floats; ``zernike_rad`` an array, Noll 1..K).
        offset_nm: ``(n_beads, ndim)`` fitted bead positions relative to the crop centre (index n//2), nm.
        amplitude: ``(n_beads,)`` total counts in each bead.
        background: ``(n_beads,)`` background per pixel.
        loss: final objective: mean Poisson deviance per pixel (``loss="poisson"``) or mean squared
            residual (``loss="gaussian"``).
        history: objective after each iteration.
        psf: the fitted unit-sum PSF on the crop grid, centred (zero offset).
        model_image: the fitted model of every bead, the input's shape.
        timings: ``{"compile_s", "run_s"}``: XLA compilation and optimisation wall time (s).
    """

    model: str
    params: dict[str, Any]
    offset_nm: np.ndarray
    amplitude: np.ndarray
    background: np.ndarray
    loss: float
    history: np.ndarray
    psf: np.ndarray
    model_image: np.ndarray
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


def _to_physical(u, transform, scale, n_index=None):
    if transform == _POSITIVE:
        return scale * jnp.exp(u)
    if transform == _NA:
        return n_index * jax.nn.sigmoid(u)
    return scale * u


def _to_unconstrained(v, transform, scale, n_index=None):
    v = np.asarray(v, dtype=np.float64)
    if transform == _POSITIVE:
        return np.log(v / scale)
    if transform == _NA:
        r = v / n_index
        return np.log(r / (1.0 - r))
    return v / scale


def _moment_sigma(img, axis_sizes, spacing):
    """Per-axis standard deviation (nm) of a background-subtracted bead crop."""
    w = np.clip(img - np.percentile(img, 20), 0, None)
    w = w / max(w.sum(), 1e-12)
    sig = []
    for ax, (n, d) in enumerate(zip(axis_sizes, spacing)):
        coord = (np.arange(n) - n // 2) * d
        marg = w.sum(axis=tuple(i for i in range(w.ndim) if i != ax))
        mu = (marg * coord).sum()
        sig.append(float(np.sqrt(max((marg * (coord - mu) ** 2).sum(), (0.3 * d) ** 2))))
    return sig


def fit_psf(
    image: Any,
    *,
    model: str,
    pixel_size_nm: float,
    z_step_nm: float | None = None,
    init: Mapping[str, Any] | None = None,
    fit: Iterable[str] | None = None,
    num_zernike: int = 15,
    loss: str = "poisson",
    num_steps: int = 150,
) -> PSFFitResult:
    """Fit a PSF model to one or several bead images.

    Args:
        image: bead crop(s), ``(y, x)`` / ``(n_beads, y, x)`` for 2D models or ``(z, y, x)`` /
            ``(n_beads, z, y, x)`` for 3D models; counts (photons or camera ADU, non-negative
            after offset removal is not required: the background is fitted). The bead should sit
            near the crop centre (index n//2).
        model: one of ``"gaussian2d"``, ``"gaussian3d"``, ``"airy2d"``, ``"pupil3d"``, ``"astigmatic3d"``
            (see :data:`PSF_MODELS` for their parameters).
        pixel_size_nm: lateral pixel size (nm).
        z_step_nm: axial step (nm), required for 3D models.
        init: initial values of shared parameters (e.g. ``{"na": 1.2, "wavelength_nm": 600,
            "refractive_index": 1.33}``); values not given are defaults or estimated from the data.
        fit: names of shared parameters to fit; default all but the model's fixed ones
            (``airy2d``: wavelength; ``pupil3d``: wavelength, refractive index).
        num_zernike: ``pupil3d`` only: Zernike modes Noll 1..num_zernike in the pupil phase.
        loss: ``"poisson"`` (maximum likelihood for counts) or ``"gaussian"`` (least squares).
        num_steps: L-BFGS iterations.

    Returns:
        :class:`PSFFitResult`.

    References:
        Hanser et al., "Phase-retrieved pupil functions in wide-field fluorescence microscopy",
        J. Microsc. 216 (2004) (pupil model); Liu et al., Opt. Express 21 (2013) (Poisson
        maximum-likelihood PSF fitting); Huang et al., Science 319 (2008) (astigmatic model).

    >>> import jax, numpy as np
    >>> from jaxsr.optics import gaussian_psf_2d
    >>> truth = 1000.0 * np.asarray(gaussian_psf_2d((15, 15), sigma_nm=130.0, pixel_size_nm=100.0)) + 2.0
    >>> res = fit_psf(truth, model="gaussian2d", pixel_size_nm=100.0, num_steps=60)
    >>> round(res.params["sigma_x_nm"], 1), round(res.params["sigma_y_nm"], 1)
    (130.0, 130.0)
    """
    check_choice(model, "model", list(PSF_MODELS))
    check_choice(loss, "loss", ["poisson", "gaussian"])
    spec = PSF_MODELS[model]
    num_steps = check_int(num_steps, "num_steps", minimum=1)
    num_zernike = check_int(num_zernike, "num_zernike", minimum=1)
    check_positive(pixel_size_nm, "pixel_size_nm")
    if spec.ndim == 3:
        if z_step_nm is None:
            raise ValueError(f"argument 'z_step_nm': required for the 3D model '{model}'")
        check_positive(z_step_nm, "z_step_nm")
    data = as_float_array(image, "image")
    if data.ndim not in (spec.ndim, spec.ndim + 1):
        raise ValueError(
            f"argument 'image': model '{model}' expects {spec.ndim} dims (one bead) or {spec.ndim + 1} "
            f"(a stack of beads), got shape {tuple(data.shape)}"
        )
    check_finite(data, "image")
    if data.ndim == spec.ndim:
        data = data[None]
    if min(data.shape[1:]) < 3:
        raise ValueError(f"argument 'image': each bead crop must be at least 3 pixels per axis, got {tuple(data.shape[1:])}")
    dtype = data.dtype
    np_data = np.asarray(data, dtype=np.float64)
    n_beads = np_data.shape[0]
    shape = tuple(np_data.shape[1:])
    spacing = (z_step_nm, pixel_size_nm, pixel_size_nm)[-spec.ndim:]

    init = dict(init or {})
    unknown = set(init) - set(spec.shared) - {"refractive_index"}
    if unknown:
        raise ValueError(f"argument 'init': unknown parameter(s) {sorted(unknown)} for model '{model}'; "
                         f"expected some of {sorted(spec.shared)}")
    fit_names = set(spec.shared) - set(spec.fixed) if fit is None else set(fit)
    bad = fit_names - set(spec.shared)
    if bad:
        raise ValueError(f"argument 'fit': unknown parameter(s) {sorted(bad)} for model '{model}'; "
                         f"expected some of {sorted(spec.shared)}")

    # Initial values of shared parameters.
    sig = _moment_sigma(np_data.mean(0), shape, spacing)
    estimates = {"sigma_z_nm": sig[0], "sigma_y_nm": sig[-2], "sigma_x_nm": sig[-1],
                 "sigma0_x_nm": sig[-1], "sigma0_y_nm": sig[-2]}
    values: dict[str, Any] = {}
    for name in list(spec.shared) + (["refractive_index"] if "refractive_index" in spec.defaults else []):
        default = spec.defaults.get(name)
        values[name] = init.get(name, estimates.get(name) if default is None else default)
    n_index = float(values.get("refractive_index", 1.0))
    if "na" in values:
        check_positive(values["na"], "init['na']")
        if not values["na"] < n_index:
            raise ValueError(f"argument 'init': na={values['na']} must be below refractive_index={n_index}")
    if model == "pupil3d":
        z = np.zeros(num_zernike)
        given = np.atleast_1d(np.asarray(values["zernike_rad"], dtype=np.float64))
        if given.size > 1 or given[0] != 0:
            if given.size > num_zernike:
                raise ValueError(f"argument 'init': zernike_rad has {given.size} terms, more than num_zernike={num_zernike}")
            z[: given.size] = given
        values["zernike_rad"] = z

    scales = {name: float(np.mean(np.abs(values[name]))) if spec.shared[name] == _POSITIVE else 1.0
              for name in spec.shared}
    theta_shared = {name: jnp.asarray(_to_unconstrained(values[name], spec.shared[name], scales[name], n_index),
                                      dtype=dtype) for name in fit_names}
    fixed_values = {name: jnp.asarray(values[name], dtype=dtype) for name in values if name not in fit_names}
    zernike_mask = None
    if model == "pupil3d":
        zernike_mask = jnp.asarray(np.arange(1, num_zernike + 1) > 4, dtype=dtype)

    # Per-bead initial values: background, amplitude, centroid offset (offsets in pixel units internally).
    bg0 = np.percentile(np_data.reshape(n_beads, -1), 10, axis=1)
    amp0 = np.maximum((np_data - bg0.reshape((-1,) + (1,) * spec.ndim)).clip(min=0).reshape(n_beads, -1).sum(1), 1.0)
    off0 = np.zeros((n_beads, spec.ndim))
    for b in range(n_beads):
        w = np.clip(np_data[b] - bg0[b], 0, None)
        w = w / max(w.sum(), 1e-12)
        for ax in range(spec.ndim):
            coord = np.arange(shape[ax]) - shape[ax] // 2
            marg = w.sum(axis=tuple(i for i in range(spec.ndim) if i != ax))
            off0[b, ax] = float((marg * coord).sum())
    theta_bead = {
        "log_amp": jnp.asarray(np.log(amp0), dtype=dtype),
        "log_bg": jnp.asarray(np.log(np.maximum(bg0, 1e-3 * amp0 / np.prod(shape) + 1e-6)), dtype=dtype),
        "offset_px": jnp.asarray(off0, dtype=dtype),
    }
    spacing_arr = jnp.asarray(spacing, dtype=dtype)
    y = jnp.asarray(np_data, dtype=dtype)

    def shared_physical(theta):
        p = {}
        for name in spec.shared:
            if name in theta:
                p[name] = _to_physical(theta[name], spec.shared[name], scales[name], n_index)
            else:
                p[name] = fixed_values[name]
        if "refractive_index" in fixed_values:
            p.setdefault("refractive_index", fixed_values["refractive_index"])
        if zernike_mask is not None:
            p["zernike_rad"] = p["zernike_rad"] * zernike_mask
        return p

    def render_all(theta):
        p = shared_physical(theta["shared"])

        def one(offset_px):
            return spec.render(shape, {**p, "offset_nm": offset_px * spacing_arr}, pixel_size_nm, z_step_nm)

        psfs = jax.vmap(one)(theta["bead"]["offset_px"])
        expand = (-1,) + (1,) * spec.ndim
        amp = jnp.exp(theta["bead"]["log_amp"]).reshape(expand)
        bg = jnp.exp(theta["bead"]["log_bg"]).reshape(expand)
        return amp * psfs + bg

    def objective(theta):
        mu = render_all(theta)
        if loss == "poisson":
            # Poisson deviance per pixel: 0 for a perfect fit, well scaled in float32.
            yy = jnp.clip(y, 0.0, None)
            dev = mu - yy + jnp.where(yy > 0, yy * (jnp.log(jnp.where(yy > 0, yy, 1.0)) - jnp.log(mu)), 0.0)
            return 2.0 * jnp.mean(dev)
        return jnp.mean((mu - y) ** 2)

    theta0 = {"shared": theta_shared, "bead": theta_bead}
    history, theta, timings = _run_lbfgs(objective, theta0, num_steps)
    p = shared_physical(theta["shared"])
    params = {name: (np.asarray(v) if np.ndim(v) else float(v)) for name, v in p.items()}
    zero_off = {**p, "offset_nm": jnp.zeros(spec.ndim, dtype=dtype)}
    psf = np.asarray(spec.render(shape, zero_off, pixel_size_nm, z_step_nm))
    model_image = np.asarray(render_all(theta))
    squeeze = np.ndim(image) == spec.ndim
    return PSFFitResult(
        model=model,
        params=params,
        offset_nm=np.asarray(theta["bead"]["offset_px"] * spacing_arr),
        amplitude=np.asarray(jnp.exp(theta["bead"]["log_amp"])),
        background=np.asarray(jnp.exp(theta["bead"]["log_bg"])),
        loss=float(history[-1]),
        history=np.asarray(history),
        psf=psf,
        model_image=model_image[0] if squeeze else model_image,
        timings=timings,
    )


def _run_lbfgs(objective, theta0, num_steps):
    """Minimise ``objective`` with optax L-BFGS (zoom line search) in one jitted scan."""
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def run(theta):
        state = opt.init(theta)

        def step(carry, _):
            theta, state = carry
            value, grad = value_and_grad(theta, state=state)
            updates, state = opt.update(grad, state, theta, value=value, grad=grad, value_fn=objective)
            theta_new = optax.apply_updates(theta, updates)
            # Never accept a non-finite step (keeps the previous iterate instead).
            ok = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(theta_new)]))
            theta = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), theta_new, theta)
            return (theta, state), value

        (theta, state), hist = jax.lax.scan(step, (theta, state), None, length=num_steps)
        return jnp.append(hist, objective(theta)), theta

    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(theta0).compile()
    t1 = time.perf_counter()
    history, theta = compiled(theta0)
    jax.block_until_ready(history)
    t2 = time.perf_counter()
    return history, theta, {"compile_s": t1 - t0, "run_s": t2 - t1}
