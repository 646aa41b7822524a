"""A physics-informed generative model of SMLM frames, learned from unlabeled movies.

Method (after Goldenberg et al., Technion, "physics-informed, self-supervised generative model"
for SMLM, which extends Deep Latent Particles, Daniel & Tamar, ICML 2022): latent *particles*
(emitters: position, photons) explain the frames through a decoder that renders them with a
differentiable physical PSF and adds what the physics does not fix -- here a static background
map and a per-pixel read-noise map -- under a camera noise model; once fitted to unlabeled
frames, the decoder renders *new* particles drawn from fitted priors into realistic, fully
labelled training windows for a localization network (:func:`generative_sampler` plugs into
:func:`jaxsr.smlm.net.train_locnet`).

What differs from the published model, and why:

* Likelihood: photon-calibrated Poisson-Gaussian (frames in counts, :func:`jaxsr.smlm.localize.
  camera_counts`; each pixel ``d ~ Poisson(mu) + N(0, v)``, in its moment-matched normal form
  ``N(mu, mu + v)``, :func:`poisson_gaussian_nll`) instead of a Gaussian on images scaled to
  [0, 1]: shot noise is fixed by the physics, only the read-noise map ``v`` is learned, and
  the photon counts of generated labels are calibrated.
* Decoder PSF: a scalar pupil with Noll Zernike aberrations (:func:`jaxsr.optics.pupil_psf_3d`)
  whose coefficients are learned, rendered on an oversampled grid (:func:`render_particles`), so
  the learned PSF stays physical (asymmetric, aberrated) rather than a free image.
* Encoder: amortised by a trained localization network (:func:`jaxsr.smlm.net.localize_net`),
  whose detections initialise the particles; their positions and photons are then refined
  jointly with the decoder by maximum likelihood (:func:`fit_generative`).
* Priors: the photons of the refined particles (log-normal), their density per frame and how
  often a molecule stays on in the next frame are fitted; the training windows draw new
  emitters from them, anywhere in the field, rather than jittering the detected ones.

Coordinates: pixels, pixel ``k`` centred at ``k`` (as in :mod:`jaxsr.smlm.fit`); counts per pixel.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsr._validate import as_float_array, check_int
from jaxsr.optics.psf import pupil_psf_3d
from jaxsr.smlm.net import draw_window_emitters, window_batch

__all__ = ["Microscope", "ParticlePriors", "GenerativeModel", "pupil_psf_grid", "render_particles",
           "poisson_gaussian_nll", "fit_generative", "fit_priors", "generative_sampler", "calibrate_density"]


class Microscope(NamedTuple):
    """The decoder's learned state (a pytree).

    Attributes:
        zernike_rad: ``(J,)`` Noll Zernike coefficients of the pupil phase (radians, Noll 1..J;
            piston and tilts have no effect on a localization model and stay 0).
        background: ``(y, x)`` static background, counts per pixel.
        read_variance: ``(y, x)`` Gaussian read-noise variance, counts^2.
    """

    zernike_rad: jax.Array
    background: jax.Array
    read_variance: jax.Array


class ParticlePriors(NamedTuple):
    """Fitted priors of the emitters (see :func:`fit_priors`).

    Attributes:
        log_photons_mean, log_photons_sd: log-normal prior of a molecule's counts per frame.
        density: emitters on per frame per pixel^2.
        p_stay_on: probability that a molecule on in one frame is on in the next.
    """

    log_photons_mean: float
    log_photons_sd: float
    density: float
    p_stay_on: float


class GenerativeModel(NamedTuple):
    """A fitted generative model: decoder, priors and the fixed optics.

    Attributes:
        microscope: the learned :class:`Microscope`.
        priors: the :class:`ParticlePriors`.
        optics: dict of ``na``, ``wavelength_nm``, ``refractive_index``, ``pixel_size_nm``,
            ``oversample``, ``psf_size`` (camera pixels): the keyword arguments of :func:`pupil_psf_grid`.
        history: the negative log-likelihood per pixel during the fit.
        particles: the refined particles: ``frame``, ``y``, ``x`` (pixels), ``photons`` (counts),
            ``snr`` and ``used`` (counted in the priors), 1D numpy arrays; empty for a model built
            by hand.
    """

    microscope: Microscope
    priors: ParticlePriors
    optics: dict
    history: list
    particles: dict = {}


def pupil_psf_grid(zernike_rad, *, na: float, wavelength_nm: float, pixel_size_nm: float,
                   refractive_index: float = 1.518, oversample: int = 4, psf_size: int = 15) -> jax.Array:
    """The in-focus pupil PSF on an ``oversample``-times finer grid, unit sum.

    Args:
        zernike_rad: ``(J,)`` Noll coefficients (radians; see :func:`jaxsr.optics.pupil_psf_3d`).
        na, wavelength_nm, refractive_index: objective NA, emission wavelength (nm), immersion index.
        pixel_size_nm: camera pixel size in the sample (nm).
        oversample: static fine samples per camera pixel per axis.
        psf_size: static PSF footprint in camera pixels (odd).

    Returns:
        ``(psf_size * oversample, psf_size * oversample)`` PSF, optical axis at index ``n // 2``.
    """
    n = psf_size * oversample
    psf = pupil_psf_3d((1, n, n), na=na, wavelength_nm=wavelength_nm, pixel_size_nm=pixel_size_nm / oversample,
                       z_step_nm=1.0, refractive_index=refractive_index, zernike_rad=zernike_rad, pad_factor=2)
    return psf[0] / psf[0].sum()


def render_particles(y, x, photons, psf_fine, *, shape: tuple[int, int], oversample: int, margin: int = 8):
    """Expected counts of point emitters imaged with a fine-grid PSF, integrated over camera pixels.

    Each emitter's counts are split bilinearly over the four nearest fine-grid points (so its
    centroid is exact), the fine image is convolved with ``psf_fine`` (FFT) and summed over each
    camera pixel's ``oversample x oversample`` fine samples. Differentiable in positions, photons
    and the PSF.

    Args:
        y, x: ``(t, k)`` positions in camera pixels (pixel ``m`` centred at ``m``); emitters up to
            ``margin`` pixels outside the frame still shine into it.
        photons: ``(t, k)`` counts (0 for unused slots).
        psf_fine: ``(m, m)`` fine-grid PSF (unit sum, axis at ``m // 2``), e.g. :func:`pupil_psf_grid`.
        shape: static ``(ny, nx)`` frame size.
        oversample: static fine samples per camera pixel.
        margin: static border (camera pixels) of the working field.

    Returns:
        ``(t, ny, nx)`` expected counts.
    """
    ny, nx = shape
    os_ = oversample
    fy, fx = (ny + 2 * margin) * os_, (nx + 2 * margin) * os_
    u = (y + margin + 0.5) * os_ - 0.5
    v = (x + margin + 0.5) * os_ - 0.5
    u0, v0 = jnp.floor(u), jnp.floor(v)
    wu, wv = u - u0, v - v0
    t = y.shape[0]
    frame_idx = jnp.broadcast_to(jnp.arange(t)[:, None], y.shape)
    fine = jnp.zeros((t, fy, fx), photons.dtype)
    for du, wu_ in ((0, 1.0 - wu), (1, wu)):
        for dv, wv_ in ((0, 1.0 - wv), (1, wv)):
            iu = (u0 + du).astype(jnp.int32)
            iv = (v0 + dv).astype(jnp.int32)
            ok = (iu >= 0) & (iu < fy) & (iv >= 0) & (iv < fx)
            fine = fine.at[frame_idx, jnp.clip(iu, 0, fy - 1), jnp.clip(iv, 0, fx - 1)].add(
                jnp.where(ok, photons * wu_ * wv_, 0.0))
    m = psf_fine.shape[0]
    kernel = jnp.zeros((fy, fx), psf_fine.dtype).at[:m, :m].set(psf_fine)
    kernel = jnp.roll(kernel, (-(m // 2), -(m // 2)), axis=(0, 1))  # optical axis to the origin
    img = jnp.fft.irfft2(jnp.fft.rfft2(fine) * jnp.fft.rfft2(kernel)[None], s=(fy, fx))
    img = img.reshape(t, ny + 2 * margin, os_, nx + 2 * margin, os_).sum(axis=(2, 4))
    return img[:, margin:margin + ny, margin:margin + nx]


def poisson_gaussian_nll(counts, expected, read_variance):
    """Mean negative log-likelihood per pixel of counts under shot + read noise.

    ``d ~ Poisson(mu) + N(0, v)`` in its moment-matched normal form ``N(mu, mu + v)``:
    ``0.5 (d - mu)^2 / (mu + v) + 0.5 log(2 pi (mu + v))``; ``mu`` is floored at 1e-3 counts.

    Args:
        counts: ``(..., y, x)`` data (counts).
        expected: ``(..., y, x)`` model mean (counts).
        read_variance: ``(y, x)`` or scalar read-noise variance (counts^2).
    """
    var = jnp.maximum(expected, 1e-3) + read_variance
    return jnp.mean(0.5 * (counts - expected) ** 2 / var + 0.5 * jnp.log(2.0 * math.pi * var))


def _padded_particles(frame, y, x, photons, n_frames):
    """Detections as ``(t, k)`` arrays, ``k`` the most in one frame, with a validity mask."""
    frame = np.asarray(frame, np.int64)
    counts = np.bincount(frame, minlength=n_frames)
    k = max(1, int(counts.max()) if counts.size else 1)
    slot = np.zeros_like(frame)
    order = np.argsort(frame, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot[order] = np.arange(frame.size) - starts[frame[order]]
    out = [np.zeros((n_frames, k), np.float32) for _ in range(3)]
    mask = np.zeros((n_frames, k), bool)
    for arr, val in zip(out, (y, x, photons)):
        arr[frame, slot] = val
    mask[frame, slot] = True
    return out[0], out[1], out[2], mask


def fit_generative(counts, particles: dict, *, na: float, wavelength_nm: float, pixel_size_nm: float,
                   refractive_index: float = 1.518, n_zernike: int = 11, oversample: int = 4,
                   psf_size: int = 15, steps: int = 150, learning_rate: float = 0.05,
                   variance_every: int = 25, min_snr: float = 5.0, callback=None) -> GenerativeModel:
    """Fit the decoder (PSF aberrations, background, read noise) and refine the particles.

    Maximises the Poisson-Gaussian likelihood (:func:`poisson_gaussian_nll`) of the unlabeled
    frames under ``render_particles(particles, pupil PSF) + background`` with Adam, full batch:
    Zernike coefficients (Noll 4..``n_zernike``), the background map (per pixel, positive
    through a log), and every particle's position (within +-1 pixel of its proposal) and
    photons. The read-noise variance map is updated in closed form every ``variance_every``
    steps: per pixel, the robust (median absolute deviation) variance of the residuals over the
    frames minus the shot noise where it stands out from the median over pixels by 3 standard
    errors (hot pixels), else that median. (Learned by gradient it would soak up the light of
    every molecule the encoder missed.) Then fits the priors (:func:`fit_priors`) to the particles
    with a signal-to-noise ratio of at least ``min_snr``.

    Pupil phase and its point reflection with opposite sign give the same in-focus intensity, so
    the even Zernike modes (astigmatism, spherical) come out with either sign; the rendered PSF
    is the same.

    Args:
        counts: ``(t, y, x)`` frames in counts (:func:`jaxsr.smlm.localize.camera_counts`).
        particles: the encoder's proposals: ``frame`` (0-based), ``y``, ``x`` (pixels, pixel ``k``
            centred at ``k``), ``photons`` (counts), 1D arrays.
        na, wavelength_nm, pixel_size_nm, refractive_index, oversample, psf_size: optics of the
            decoder PSF (:func:`pupil_psf_grid`).
        n_zernike: highest Noll index fitted.
        steps, learning_rate: Adam settings.
        variance_every: steps between read-variance updates.
        min_snr: particles whose fitted spot has a lower signal-to-noise ratio (see the code) are
            left out of the priors (they are the encoder's false positives).
        callback: optional ``callback(step, nll)``.

    Returns:
        :class:`GenerativeModel`.
    """
    counts = as_float_array(counts, "counts")
    if counts.ndim != 3:
        raise ValueError(f"argument 'counts': expected (t, y, x) frames, got shape {tuple(counts.shape)}")
    n_zernike = check_int(n_zernike, "n_zernike", minimum=4)
    steps = check_int(steps, "steps", minimum=1)
    variance_every = check_int(variance_every, "variance_every", minimum=1)
    try:
        f, py, px, pn = (np.asarray(particles[k]) for k in ("frame", "y", "x", "photons"))
    except (KeyError, TypeError):
        raise ValueError("argument 'particles': expected a dict with frame, y, x, photons") from None
    if f.size == 0:
        raise ValueError("argument 'particles': no proposals (the encoder detected nothing)")
    t, ny, nx = counts.shape
    y0, x0, n0, mask = _padded_particles(f, py, px, pn, t)
    optics = {"na": float(na), "wavelength_nm": float(wavelength_nm), "pixel_size_nm": float(pixel_size_nm),
              "refractive_index": float(refractive_index), "oversample": int(oversample), "psf_size": int(psf_size)}
    # Initial background: the temporal 20th percentile (background under blinking emitters).
    bg0 = np.maximum(np.percentile(np.asarray(counts), 20, axis=0), 0.1)
    params = {
        "zernike": jnp.zeros(n_zernike - 3),
        "log_bg": jnp.log(jnp.asarray(bg0, jnp.float32)),
        "dy": jnp.zeros(y0.shape), "dx": jnp.zeros(y0.shape),
        "log_n": jnp.log(jnp.maximum(jnp.asarray(n0), 1.0)),
    }
    y0, x0, maskj = jnp.asarray(y0), jnp.asarray(x0), jnp.asarray(mask)

    def mean_image(p):
        psf = pupil_psf_grid(jnp.concatenate([jnp.zeros(3), p["zernike"]]), **optics)
        y = y0 + jnp.tanh(p["dy"])
        x = x0 + jnp.tanh(p["dx"])
        n = jnp.where(maskj, jnp.exp(p["log_n"]), 0.0)
        return render_particles(y, x, n, psf, shape=(ny, nx), oversample=optics["oversample"]) + jnp.exp(p["log_bg"])

    def loss(p, variance):
        return poisson_gaussian_nll(counts, mean_image(p), variance)

    @jax.jit
    def robust_variance(p):
        # Read variance per pixel: the robust (MAD) variance of the residuals over frames minus the
        # shot noise; the median ignores the frames where a molecule the encoder missed shines.
        # Next to tens of counts of shot noise a few counts^2 of read noise are not measurable pixel
        # by pixel from a few hundred frames, so a pixel keeps the median over pixels unless its
        # estimate exceeds that by 3 standard errors (a hot pixel).
        mu = mean_image(p)
        r = counts - mu
        mad = jnp.median(jnp.abs(r - jnp.median(r, axis=0)), axis=0)
        shot = jnp.median(mu, axis=0)
        est = (1.4826 * mad) ** 2 - shot
        common = jnp.maximum(jnp.median(est), 1e-2)
        se = 1.65 * jnp.sqrt(2.0 / counts.shape[0]) * (shot + common)  # MAD variance: 1.65x the SD's
        return jnp.where(est > common + 3.0 * se, est, common)

    opt = optax.adam(learning_rate)
    state = opt.init(params)

    @jax.jit
    def step(p, s, variance):
        value, g = jax.value_and_grad(loss)(p, variance)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, value

    history = []
    variance = robust_variance(params)
    for i in range(steps):
        if i and i % variance_every == 0:
            variance = robust_variance(params)
        params, state, value = step(params, state, variance)
        history.append(float(value))
        if callback is not None:
            callback(i + 1, float(value))
    variance = robust_variance(params)

    def microscope_of(p):
        return Microscope(jnp.concatenate([jnp.zeros(3), p["zernike"]]), jnp.exp(p["log_bg"]), variance)

    micro = microscope_of(params)
    # _padded_particles put particle i at (frame[i], slot[i]); boolean indexing walks frames in order.
    refined = {"frame": np.sort(f, kind="stable"), "y": np.asarray(y0 + jnp.tanh(params["dy"]))[mask],
               "x": np.asarray(x0 + jnp.tanh(params["dx"]))[mask],
               "photons": np.asarray(jnp.exp(params["log_n"]))[mask]}
    # Priors from the significant particles only: the encoder's false positives (on background
    # structure or hot pixels) end up with few photons, and would drag the photon prior down and
    # the density up. Signal-to-noise of a spot: N / sqrt(N + b A), b the local background and
    # A = 1 / sum(psf^2) the PSF's noise-equivalent area in camera pixels.
    psf_cam = np.asarray(pupil_psf_grid(micro.zernike_rad, **optics))
    m_ = psf_cam.shape[0] // optics["oversample"]
    psf_cam = psf_cam.reshape(m_, optics["oversample"], m_, optics["oversample"]).sum(axis=(1, 3))
    area = 1.0 / float(np.sum(psf_cam**2))
    iy = np.clip(np.round(refined["y"]).astype(int), 0, ny - 1)
    ix = np.clip(np.round(refined["x"]).astype(int), 0, nx - 1)
    b = np.asarray(micro.background)[iy, ix]
    snr = refined["photons"] / np.sqrt(refined["photons"] + b * area)
    keep = snr >= min_snr
    if keep.sum() < 2:
        raise ValueError(f"argument 'particles': fewer than two proposals reach min_snr={min_snr} after the fit")
    priors = fit_priors({k: v[keep] for k, v in refined.items()}, n_frames=t, shape=(ny, nx))
    return GenerativeModel(micro, priors, optics, history, {**refined, "snr": snr, "used": keep})


def fit_priors(particles: dict, *, n_frames: int, shape: tuple[int, int], link_px: float = 1.0) -> ParticlePriors:
    """Priors of the emitters from a table of (refined) particles.

    Photons: log-normal (mean and standard deviation of the log counts). Density: particles per
    frame per pixel^2. ``p_stay_on``: the fraction of particles with a particle within ``link_px``
    in the next frame (a molecule that stays on), less the fraction expected by chance at that
    density.

    Args:
        particles: ``frame``, ``y``, ``x``, ``photons`` 1D arrays.
        n_frames: frames of the movie.
        shape: ``(ny, nx)`` frame size.
        link_px: linking radius between consecutive frames (pixels).
    """
    from scipy.spatial import cKDTree

    f = np.asarray(particles["frame"], np.int64)
    y, x = np.asarray(particles["y"], np.float64), np.asarray(particles["x"], np.float64)
    n = np.asarray(particles["photons"], np.float64)
    if f.size < 2:
        raise ValueError("argument 'particles': need at least two particles to fit priors")
    log_n = np.log(np.maximum(n, 1.0))
    density = f.size / n_frames / float(shape[0] * shape[1])
    linked = total = 0
    for t in range(n_frames - 1):
        a, b = f == t, f == t + 1
        if a.sum() == 0:
            continue
        total += int(a.sum())
        if b.sum() == 0:
            continue
        d, _ = cKDTree(np.stack([y[b], x[b]], 1)).query(np.stack([y[a], x[a]], 1))
        linked += int((d <= link_px).sum())
    chance = 1.0 - math.exp(-density * math.pi * link_px**2)
    p_stay = (linked / total - chance) / (1.0 - chance) if total else 0.0
    return ParticlePriors(float(log_n.mean()), float(log_n.std()), float(density),
                          float(np.clip(p_stay, 0.0, 1.0)))


def generative_sampler(model: GenerativeModel, *, size: int = 40, max_emitters: int = 128, window: int = 3,
                       density_spread: float = 0.5, p_edge: float = 0.1):
    """Training windows rendered by the fitted decoder, with new emitters drawn from the priors.

    Each window: a random ``size``-pixel crop of the learned background and read-noise maps, a
    density drawn uniformly within ``(1 +- density_spread)`` times the fitted one, log-normal
    photons, blinking across the window with the fitted ``p_stay_on`` (and as many molecules on
    only in a neighbouring frame as the stay-on statistics imply), rendered through the learned
    pupil PSF, then Poisson shot noise and the learned per-pixel read noise.

    Args:
        model: a :class:`GenerativeModel` (its maps must be at least ``size`` pixels).
        size, max_emitters, window, p_edge: as in :class:`jaxsr.smlm.net.LocNetSimulation`.
        density_spread: relative range of the density around the fitted one.

    Returns:
        ``sampler(key, batch) -> LocNetBatch``, jittable (for :func:`jaxsr.smlm.net.train_locnet`).
    """
    micro, pri, opt = model.microscope, model.priors, model.optics
    ny, nx = micro.background.shape
    size = check_int(size, "size", minimum=8)
    if size > min(ny, nx):
        raise ValueError(f"argument 'size': {size} exceeds the fitted maps ({ny} x {nx})")
    psf = pupil_psf_grid(micro.zernike_rad, **opt)
    bg, var = jnp.asarray(micro.background), jnp.asarray(micro.read_variance)
    density = (pri.density * (1 - density_spread), pri.density * (1 + density_spread))
    mean, sd = pri.log_photons_mean, pri.log_photons_sd

    def one(key):
        k_em, k_crop, k_noise = jax.random.split(key, 3)
        y, x, counts, middle = draw_window_emitters(
            k_em, size=size, max_emitters=max_emitters, window=window, density=density,
            photons=lambda k, shape: jnp.exp(mean + sd * jax.random.normal(k, shape)),
            # Stationary blinking: as many molecules switch on between two frames as switch off,
            # (1 - p_stay_on) per molecule on; the neighbour-only ones are on in one neighbour, and
            # in the other one too with probability 0.2 (draw_window_emitters).
            neighbour_fraction=2.0 * (1.0 - pri.p_stay_on) / 1.2, p_stay_on=pri.p_stay_on)
        oy = jax.random.randint(k_crop, (), 0, ny - size + 1)
        ox = jax.random.randint(jax.random.fold_in(k_crop, 1), (), 0, nx - size + 1)
        b = jax.lax.dynamic_slice(bg, (oy, ox), (size, size))
        v = jax.lax.dynamic_slice(var, (oy, ox), (size, size))
        spots = render_particles(jnp.broadcast_to(y, counts.shape), jnp.broadcast_to(x, counts.shape), counts, psf,
                                 shape=(size, size), oversample=opt["oversample"])
        return window_batch(k_noise, spots, b, jnp.sqrt(v), y, x, counts, middle, p_edge=p_edge)

    @functools.partial(jax.jit, static_argnums=1)
    def generative_windows(key, batch):
        return jax.vmap(one)(jax.random.split(key, batch))

    return generative_windows


def calibrate_density(key: jax.Array, model: GenerativeModel, encoder, *, n_windows: int = 32,
                      threshold: float = 0.5) -> GenerativeModel:
    """Correct the density prior for the molecules the encoder misses.

    The fitted density counts only what the encoder detected. Windows rendered by the model itself
    (with the current priors) have known emitters, so the encoder's recall ``r`` on them is
    measured (SMLM Challenge matching within 250 nm) and the density divided by it.

    Args:
        key: PRNG key of the windows.
        model: a fitted :class:`GenerativeModel`.
        encoder: the :class:`~jaxsr.smlm.net.LocNetModel` that proposed the particles.
        n_windows: windows of the full map size to render.
        threshold: the encoder's detection threshold.

    Returns:
        The model with ``priors.density`` corrected (the recall is the ratio of the densities).
    """
    from jaxsr.smlm.evaluate import match_localizations
    from jaxsr.smlm.net import locnet_detect, locnet_outputs

    n_windows = check_int(n_windows, "n_windows", minimum=1)
    ny, nx = model.microscope.background.shape
    sampler = generative_sampler(model, size=min(ny, nx), density_spread=0.0)
    b = sampler(key, n_windows)
    det = locnet_detect(locnet_outputs(encoder, b.frames), threshold=threshold)
    px = model.optics["pixel_size_nm"]
    m = np.asarray(b.mask)
    w, k = np.nonzero(m)
    truth = {"frame": w, "y_nm": (np.asarray(b.y)[w, k] + 0.5) * px, "x_nm": (np.asarray(b.x)[w, k] + 0.5) * px}
    found = {"frame": det["index"], "y_nm": (det["y"] + 0.5) * px, "x_nm": (det["x"] + 0.5) * px}
    recall = max(match_localizations(found, truth).recall, 0.05)
    priors = model.priors._replace(density=model.priors.density / recall)
    return model._replace(priors=priors)
