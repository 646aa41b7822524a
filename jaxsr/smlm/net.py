"""A DECODE-style localization network: consecutive frames in, per-pixel emitter maps out.

The network (Speiser et al., "Deep learning enables fast and dense single-molecule
localization with high accuracy", Nat. Methods 18, 1082 (2021)) sees a window of
``2 r + 1`` consecutive frames (``r = 1``: the frame before, the frame, the frame
after; a molecule's blinking spans frames, so its neighbours help to separate
it from noise) and predicts for every pixel ``(i, j)`` of the middle frame:

==========  ==================================================================
channel     meaning
==========  ==================================================================
p           probability that an emitter's nearest pixel is ``(i, j)``
dy, dx      its sub-pixel offset from the pixel centre (pixels, in ``[-1, 1]``)
photons     its detected counts
s_y, s_x    predicted standard deviations of ``y`` and ``x`` (pixels)
s_photons   predicted standard deviation of the counts
background  background counts per pixel
==========  ==================================================================

It is trained on frames drawn from the physical image model of
:mod:`jaxsr.smlm.simulate` (pixel-integrated Gaussian spots of random widths,
blinking across the window, a smooth random background, Poisson shot noise and
Gaussian read noise; :func:`locnet_simulate`) with DECODE's likelihood loss
(:func:`locnet_loss`): a Gaussian approximation of the Poisson-binomial count of
emitters, a Gaussian-mixture likelihood of the true ``(y, x, photons)`` under the
per-pixel predictions (so the network learns its own uncertainties), and a
squared error on the background.

Units: the network works in camera *counts*, the Poisson-like units of
:func:`jaxsr.smlm.localize.camera_counts` (ADU minus offset, times gain, over EM
gain and excess noise), so one set of weights serves every camera that
conversion describes; coordinates are in pixels inside the network (pixel ``k``
centred at ``k``) and in nm (outer corner of pixel ``(0, 0)`` at the origin) in
the tables of :func:`localize_net`, as in :func:`jaxsr.smlm.localize.localize`.

The package ships one trained network (``jaxsr/smlm/pretrained/locnet``, made by
``python benchmarks/train_locnet.py`` from the project's own simulations): 2D
Gaussian-like PSFs of 1.0-1.7 pixels standard deviation (130 nm at 100 nm
pixels is 1.3), 150-6000 counts per molecule, 2-60 counts of background, read
noise up to 2 counts, up to 5 emitters per 100 pixel^2 (5 per um^2 at 100 nm).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr._validate import as_float_array, check_finite, check_int
from jaxsr.forward import CameraModel
from jaxsr.nn._config import JsonConfig
from jaxsr.nn.model import read_model_meta, read_model_params, write_model_dir
from jaxsr.nn.train import TrainConfig, TrainResult, fit
from jaxsr.nn.unet import UNetConfig, unet_apply, unet_init
from jaxsr.smlm.detect import as_movie
from jaxsr.smlm.localize import Localizations, _excess, camera_counts
from jaxsr.smlm.simulate import _profiles

__all__ = [
    "LOCNET_CHANNELS", "LocNetSimulation", "LocNetBatch", "LocNetModel", "locnet_init", "locnet_simulate",
    "locnet_outputs", "locnet_loss", "locnet_detect", "train_locnet", "save_locnet", "load_locnet",
    "pretrained_locnet_path", "localize_net", "draw_window_emitters", "window_batch",
]

LOCNET_CHANNELS = ("p", "dy", "dx", "photons", "s_y", "s_x", "s_photons", "background")
"""Output channels of the localization network, in order (see the module docstring)."""

_FORMAT = 1
_MIN_SIGMA_PX = 0.01
_MIN_COUNT_VARIANCE = 0.1
_PIXELS_PER_CALL = 4 * 1024 * 1024


def _range(value, name: str, *, minimum: float = 0.0) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except Exception:
        raise ValueError(f"argument '{name}': expected a (low, high) pair, got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and minimum <= lo <= hi):
        raise ValueError(f"argument '{name}': expected finite {minimum} <= low <= high, got {value!r}")
    return lo, hi


@dataclasses.dataclass(frozen=True)
class LocNetSimulation(JsonConfig):
    """What the training frames of a localization network look like (hashable, JSON round trip).

    Attributes:
        size: side of a training frame (pixels).
        max_emitters: emitter slots per training window (static; draws beyond it are dropped).
        density: range of emitters on in the middle frame per pixel^2 (0.05 = 5 per um^2 at 100 nm).
        sigma_px: range of the PSF standard deviation (pixels), one draw per window.
        photons: range of a molecule's counts in the middle frame (log-uniform draws).
        background: range of the mean background counts per pixel (log-uniform draws); a smooth
            random modulation of up to +-50 % is added.
        read_noise: range of the Gaussian read-noise standard deviation (counts).
        neighbour_fraction: emitters on only in a neighbouring frame, per emitter on in the middle.
        p_stay_on: probability that a molecule on in the middle frame is on in a neighbouring one.
        p_edge: probability that a neighbouring frame is replaced by the middle one (the first and
            last frame of a movie have no neighbour on one side; :func:`localize_net` repeats the
            frame there).
        window: frames per input (odd: the middle frame and ``window // 2`` on either side).
    """

    _WHAT = "localization-network simulation settings"

    size: int = 40
    max_emitters: int = 128
    density: tuple = (0.0, 0.05)
    sigma_px: tuple = (1.0, 1.7)
    photons: tuple = (150.0, 6000.0)
    background: tuple = (2.0, 60.0)
    read_noise: tuple = (0.0, 2.0)
    neighbour_fraction: float = 0.5
    p_stay_on: float = 0.5
    p_edge: float = 0.1
    window: int = 3

    def __post_init__(self):
        check_int(self.size, "size", minimum=8)
        check_int(self.max_emitters, "max_emitters", minimum=1)
        window = check_int(self.window, "window", minimum=1)
        if window % 2 == 0:
            raise ValueError(f"argument 'window': expected an odd number of frames, got {window}")
        for name, minimum in (("density", 0.0), ("sigma_px", 0.3), ("photons", 1.0), ("background", 0.0),
                              ("read_noise", 0.0)):
            object.__setattr__(self, name, _range(getattr(self, name), name, minimum=minimum))
        for name in ("neighbour_fraction",):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise ValueError(f"argument '{name}': expected a non-negative number, got {v!r}")
        for name in ("p_stay_on", "p_edge"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise ValueError(f"argument '{name}': expected a probability in [0, 1], got {v!r}")

    def to_dict(self):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


class LocNetBatch(NamedTuple):
    """A batch of training windows (:func:`locnet_simulate`).

    Attributes:
        frames: ``(b, window, y, x)`` noisy counts.
        y, x: ``(b, k)`` positions of the emitters on in the middle frame (pixels, pixel ``k``
            centred at ``k``; padded slots hold 0).
        photons: ``(b, k)`` their counts in the middle frame.
        mask: ``(b, k)`` True for real emitters inside the frame.
        background: ``(b, y, x)`` background counts per pixel.
        expected: ``(b, window, y, x)`` the noiseless frames (spots + background).
    """

    frames: jax.Array
    y: jax.Array
    x: jax.Array
    photons: jax.Array
    mask: jax.Array
    background: jax.Array
    expected: jax.Array


def _log_uniform(key, shape, lo, hi):
    lo, hi = math.log(max(lo, 1e-6)), math.log(max(hi, 1e-6))
    return jnp.exp(jax.random.uniform(key, shape, minval=lo, maxval=hi))


def _smooth_background(key, size, level):
    """A positive smooth map: ``level`` times (1 + a gradient + two broad Gaussian blobs), clipped."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    c = jnp.arange(size, dtype=jnp.float32) / size - 0.5
    yy, xx = c[:, None], c[None, :]
    g = jax.random.uniform(k1, (2,), minval=-0.3, maxval=0.3)
    mod = g[0] * yy + g[1] * xx
    centres = jax.random.uniform(k2, (2, 2), minval=-0.5, maxval=0.5)
    widths = jax.random.uniform(k3, (2,), minval=0.15, maxval=0.6)
    amps = jax.random.uniform(k4, (2,), minval=-0.25, maxval=0.5)
    for i in range(2):
        r2 = (yy - centres[i, 0]) ** 2 + (xx - centres[i, 1]) ** 2
        mod = mod + amps[i] * jnp.exp(-0.5 * r2 / widths[i] ** 2)
    return level * jnp.clip(1.0 + mod, 0.3, None)


def draw_window_emitters(key, *, size: int, max_emitters: int, window: int, density, photons,
                         neighbour_fraction: float, p_stay_on: float, margin: float = 3.0):
    """Emitters of one training window: positions, on-states and counts per frame (jittable).

    The number of molecules in the (``margin``-extended) field is Poisson; a fraction
    ``1 / (1 + neighbour_fraction)`` of them is on in the middle frame (and stays on in each
    neighbouring frame with ``p_stay_on``), the others are on only in neighbouring frames. A
    neighbouring on-frame carries a uniform 20-100 % of the molecule's light (it switched during
    the frame).

    Args:
        key: PRNG key.
        size, max_emitters, window: static frame side (pixels), emitter slots and frames.
        density: ``(low, high)`` range of middle-frame emitters per pixel^2 (uniform draw).
        photons: ``photons(key, shape) -> counts``, the molecules' middle-frame counts.
        neighbour_fraction, p_stay_on: see :class:`LocNetSimulation`.
        margin: emitters are placed up to this far outside the frame (pixels).

    Returns:
        ``(y, x, counts, middle)``: ``(k,)`` positions (pixels, pixel ``m`` centred at ``m``),
        ``(window, k)`` counts per frame (0 = off) and the ``(k,)`` middle-frame mask.
    """
    k_max, w = max_emitters, window
    half = w // 2
    keys = jax.random.split(key, 8)
    rate = jax.random.uniform(keys[0], (), minval=density[0], maxval=density[1])
    area = (size + 2 * margin) ** 2
    n_total = jax.random.poisson(keys[1], rate * area * (1.0 + neighbour_fraction))
    active = jnp.arange(k_max) < n_total
    middle = active & (jax.random.uniform(keys[2], (k_max,)) < 1.0 / (1.0 + neighbour_fraction))
    y = jax.random.uniform(keys[3], (k_max,), minval=-0.5 - margin, maxval=size - 0.5 + margin)
    x = jax.random.uniform(keys[4], (k_max,), minval=-0.5 - margin, maxval=size - 0.5 + margin)
    level = photons(keys[5], (k_max,))
    # On-states per frame of the window: middle-frame molecules stay on in a neighbour with p_stay_on;
    # the others are on in at least one neighbour (never in the middle).
    u = jax.random.uniform(keys[6], (w, k_max))
    side = jax.random.randint(keys[7], (k_max,), 0, w - 1) if w > 1 else jnp.zeros((k_max,), jnp.int32)
    idx = jnp.arange(w)[:, None]
    neighbour_idx = jnp.where(side < half, side, side + 1)  # a frame other than the middle one
    on_mid = jnp.where(idx == half, middle, middle & (u < p_stay_on))
    on_other = (~middle) & active & ((idx == neighbour_idx[None]) | ((idx != half) & (u < 0.2)))
    on = jnp.where(middle[None], on_mid, on_other) & active[None]
    frac = jnp.where(idx == half, 1.0, jax.random.uniform(jax.random.fold_in(key, 7), (w, k_max), minval=0.2,
                                                          maxval=1.0))
    return y, x, jnp.where(on, level[None] * frac, 0.0), middle


def window_batch(key, spots, background, read_sd, y, x, photons, middle, *, p_edge: float) -> LocNetBatch:
    """Noisy frames and targets of one window from its expected spots (jittable).

    ``spots`` ``(window, y, x)`` and ``background`` ``(y, x)`` are expected counts; ``read_sd`` the
    Gaussian read-noise standard deviation (a scalar or a ``(y, x)`` map); each neighbouring frame
    is replaced by the middle one with probability ``p_edge``.
    """
    w, ny, nx = spots.shape
    half = w // 2
    kn, ks, ke = jax.random.split(key, 3)
    expected = spots + background[None]
    frames = jax.random.poisson(kn, expected).astype(jnp.float32)
    frames = frames + read_sd * jax.random.normal(ks, frames.shape)
    if w > 1:
        idx = jnp.arange(w)
        edge = (jax.random.uniform(ke, (w,)) < p_edge) & (idx != half)
        frames = jnp.where(edge[:, None, None], frames[half][None], frames)
    inside = middle & (y >= -0.5) & (y < ny - 0.5) & (x >= -0.5) & (x < nx - 0.5)
    zero = jnp.zeros_like(y)
    return LocNetBatch(frames, jnp.where(inside, y, zero), jnp.where(inside, x, zero),
                       jnp.where(inside, photons[half], zero), inside, background, expected)


def _simulate_one(key, sim: LocNetSimulation):
    size, k_max = sim.size, sim.max_emitters
    k_em, k_sig, k_bg, k_map, k_read, k_noise = jax.random.split(key, 6)
    y, x, counts, middle = draw_window_emitters(
        k_em, size=size, max_emitters=k_max, window=sim.window, density=sim.density,
        photons=lambda k, shape: _log_uniform(k, shape, *sim.photons),
        neighbour_fraction=sim.neighbour_fraction, p_stay_on=sim.p_stay_on)
    sigma = jax.random.uniform(k_sig, (), minval=sim.sigma_px[0], maxval=sim.sigma_px[1])
    ey = _profiles(y, jnp.full((k_max,), sigma), size)
    ex = _profiles(x, jnp.full((k_max,), sigma), size)
    spots = jnp.einsum("ky,tk,kx->tyx", ey, counts, ex)
    background = _smooth_background(k_map, size, _log_uniform(k_bg, (), *sim.background))
    read = jax.random.uniform(k_read, (), minval=sim.read_noise[0], maxval=sim.read_noise[1])
    return window_batch(k_noise, spots, background, read, y, x, counts, middle, p_edge=sim.p_edge)


def locnet_simulate(key: jax.Array, *, sim: LocNetSimulation | None = None, batch: int = 16) -> LocNetBatch:
    """Draw training windows from the physical SMLM image model (jittable, deterministic from ``key``).

    Every window has its own emitter density, PSF width, background level and read noise, drawn
    from the ranges of ``sim``; molecules blink across the window (see :class:`LocNetSimulation`).

    Args:
        key: PRNG key.
        sim: the :class:`LocNetSimulation` (default settings when ``None``).
        batch: windows to draw.

    Returns:
        :class:`LocNetBatch` with ``batch`` windows of ``sim.window`` frames of ``sim.size``^2 pixels.

    >>> b = locnet_simulate(jax.random.key(0), batch=2)
    >>> b.frames.shape, b.y.shape
    ((2, 3, 40, 40), (2, 128))
    """
    sim = LocNetSimulation() if sim is None else sim
    if not isinstance(sim, LocNetSimulation):
        raise TypeError(f"argument 'sim': expected a LocNetSimulation, got {type(sim).__name__}")
    batch = check_int(batch, "batch", minimum=1)
    return _simulate_jit(key, sim, batch)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _simulate_jit(key, sim, batch):
    return jax.vmap(lambda k: _simulate_one(k, sim))(jax.random.split(key, batch))


@dataclasses.dataclass(frozen=True)
class LocNetModel:
    """A localization network: its U-Net, the scales of its inputs and outputs, and weights.

    Attributes:
        unet: the :class:`~jaxsr.nn.unet.UNetConfig` (``in_channels`` = frames per window,
            ``out_channels`` = 8, :data:`LOCNET_CHANNELS`).
        params: the Flax variables.
        sim: the :class:`LocNetSimulation` it was trained on (its validity range).
        input_scale: counts are divided by this before the network.
        photon_scale: the photon channel is in units of this many counts.
        info: JSON-serialisable training information.
    """

    unet: UNetConfig
    params: Any
    sim: LocNetSimulation = LocNetSimulation()
    input_scale: float = 50.0
    photon_scale: float = 1000.0
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.unet, UNetConfig):
            raise TypeError(f"argument 'unet': expected a UNetConfig, got {type(self.unet).__name__}")
        if self.unet.out_channels != len(LOCNET_CHANNELS) or self.unet.in_channels != self.sim.window:
            raise ValueError(f"argument 'unet': expected {self.sim.window} input and {len(LOCNET_CHANNELS)} "
                             f"output channels, got {self.unet.in_channels} and {self.unet.out_channels}")

    @property
    def window(self) -> int:
        """Frames per input window."""
        return self.sim.window


def locnet_init(key: jax.Array, *, unet: UNetConfig | None = None, sim: LocNetSimulation | None = None,
                input_scale: float = 50.0, photon_scale: float = 1000.0) -> LocNetModel:
    """An untrained :class:`LocNetModel` (default U-Net: 3 poolings, 48/64 channels).

    >>> tiny = UNetConfig(depth=1, features=2, decoder_features=2, in_channels=3, out_channels=8)
    >>> m = locnet_init(jax.random.key(0), unet=tiny)
    >>> m.unet.in_channels, m.window
    (3, 3)
    """
    sim = LocNetSimulation() if sim is None else sim
    unet = UNetConfig(depth=3, features=48, decoder_features=64, in_channels=sim.window,
                      out_channels=len(LOCNET_CHANNELS)) if unet is None else unet
    return LocNetModel(unet=unet, params=unet_init(key, config=unet), sim=sim, input_scale=float(input_scale),
                       photon_scale=float(photon_scale))


def _outputs(params, frames, unet: UNetConfig, input_scale, photon_scale):
    o = unet_apply(params, frames / input_scale, config=unet)  # (b, 8, y, x)
    sp = jax.nn.softplus
    return {
        "logit": o[:, 0],
        "p": jax.nn.sigmoid(o[:, 0]),
        "dy": jnp.tanh(o[:, 1]),
        "dx": jnp.tanh(o[:, 2]),
        "photons": sp(o[:, 3]) * photon_scale,
        "s_y": _MIN_SIGMA_PX + 0.3 * sp(o[:, 4]),
        "s_x": _MIN_SIGMA_PX + 0.3 * sp(o[:, 5]),
        "s_photons": (0.01 + 0.3 * sp(o[:, 6])) * photon_scale,
        "background": sp(o[:, 7]) * input_scale,
    }


def locnet_outputs(model: LocNetModel, frames) -> dict:
    """The network's per-pixel maps for windows of frames.

    Args:
        model: a :class:`LocNetModel`.
        frames: ``(b, window, y, x)`` counts (any ``y, x``).

    Returns:
        dict of ``(b, y, x)`` maps: ``p``, ``dy``, ``dx`` (pixels), ``photons`` (counts), ``s_y``,
        ``s_x`` (pixels), ``s_photons`` (counts), ``background`` (counts per pixel), and ``logit``.
    """
    frames = as_float_array(frames, "frames")
    if frames.ndim != 4 or frames.shape[1] != model.window:
        raise ValueError(f"argument 'frames': expected (batch, {model.window}, y, x), got {tuple(frames.shape)}")
    return _outputs(model.params, frames, model.unet, model.input_scale, model.photon_scale)


def locnet_loss(out: dict, batch: LocNetBatch, *, photon_scale: float = 1000.0, input_scale: float = 50.0,
                background_weight: float = 1.0) -> jax.Array:
    """DECODE's loss of per-pixel predictions against the true emitters (mean over the batch).

    Per window: (1) the count term ``-log N(K; sum p, sum p (1 - p))``, a Gaussian approximation of
    the Poisson-binomial number of emitters (variance floored at 0.1 so empty windows do not reward
    ever more certainty without bound); (2) the localization term ``-sum_k log sum_i (p_i / sum p)
    N((y_k, x_k, n_k); mu_i, diag(s_i^2))`` over the true emitters ``k``, a Gaussian mixture whose
    components are the pixels' predictions (``mu_i`` = pixel centre + offsets and the photon
    prediction, photons in units of ``photon_scale``); (3) ``background_weight`` times the sum over
    pixels of the squared background error in units of ``input_scale``.

    Args:
        out: the maps of :func:`locnet_outputs` for ``batch.frames``.
        batch: the :class:`LocNetBatch`.
        photon_scale, input_scale: the model's scales.
        background_weight: weight of the background term.

    Returns:
        Scalar loss.
    """
    p = out["p"]
    b, ny, nx = p.shape
    pf = p.reshape(b, -1)
    iy, ix = jnp.meshgrid(jnp.arange(ny, dtype=p.dtype), jnp.arange(nx, dtype=p.dtype), indexing="ij")
    mu_y = (iy[None] + out["dy"]).reshape(b, -1)
    mu_x = (ix[None] + out["dx"]).reshape(b, -1)
    mu_n = (out["photons"] / photon_scale).reshape(b, -1)
    s_y, s_x = out["s_y"].reshape(b, -1), out["s_x"].reshape(b, -1)
    s_n = (out["s_photons"] / photon_scale).reshape(b, -1)
    mask = batch.mask.astype(p.dtype)
    k = mask.sum(axis=1)
    mean = pf.sum(axis=1)
    var = jnp.maximum((pf * (1.0 - pf)).sum(axis=1), _MIN_COUNT_VARIANCE)
    count = 0.5 * (k - mean) ** 2 / var + 0.5 * jnp.log(2.0 * math.pi * var)
    # Gaussian mixture: (b, k, pixels) log-densities.
    z = lambda t, m, s: (t[:, :, None] - m[:, None, :]) / s[:, None, :]  # noqa: E731
    log_norm = -(jnp.log(s_y) + jnp.log(s_x) + jnp.log(s_n))[:, None, :] - 1.5 * math.log(2.0 * math.pi)
    logpdf = log_norm - 0.5 * (z(batch.y, mu_y, s_y) ** 2 + z(batch.x, mu_x, s_x) ** 2
                               + z(batch.photons / photon_scale, mu_n, s_n) ** 2)
    log_w = jnp.log(pf + 1e-12) - jnp.log(mean + 1e-12)[:, None]
    mix = jax.scipy.special.logsumexp(logpdf + log_w[:, None, :], axis=-1)  # (b, k)
    gmm = -(mix * mask).sum(axis=1)
    bg = ((out["background"] - batch.background) / input_scale) ** 2
    return jnp.mean(count + gmm + background_weight * bg.sum(axis=(1, 2)))


def _detect_maps(p, strong=0.6):
    """Detection scores: the 3x3 sum of ``p`` at its local maxima, or ``p`` itself where above ``strong``."""
    pad = jnp.pad(p, ((0, 0), (1, 1), (1, 1)))
    ny, nx = p.shape[1:]
    shifts = [pad[:, 1 + a:1 + a + ny, 1 + c:1 + c + nx] for a in (-1, 0, 1) for c in (-1, 0, 1)]
    stack = jnp.stack(shifts)
    local_max = p >= stack.max(axis=0)
    summed = jnp.minimum(stack.sum(axis=0), 2.0)
    return jnp.where(local_max, summed, jnp.where(p > strong, p, 0.0))


def locnet_detect(out: dict, *, threshold: float = 0.5) -> dict:
    """Turn per-pixel maps into detections (host side; one row per emitter).

    A pixel is an emitter when it is a local maximum of ``p`` in its 3x3 neighbourhood and the
    neighbourhood's summed ``p`` reaches ``threshold`` (a molecule near a pixel border spreads its
    probability over two pixels), or when its own ``p`` exceeds 0.6 (two molecules in adjacent
    pixels; DECODE's post-processing makes the same two cases).

    Args:
        out: maps of :func:`locnet_outputs`, ``(b, y, x)``.
        threshold: detection threshold on the score (probability mass, in (0, 2]).

    Returns:
        dict of 1D numpy arrays: ``index`` (window in the batch), ``y``, ``x`` (pixels, pixel ``k``
        centred at ``k``), ``photons``, ``s_y``, ``s_x``, ``s_photons``, ``background``, ``score``.
    """
    thr = float(threshold)
    if not (np.isfinite(thr) and thr > 0):
        raise ValueError(f"argument 'threshold': expected a positive detection threshold, got {threshold}")
    score = np.asarray(_detect_maps_jit(out["p"]))
    b, i, j = np.nonzero(score >= thr)
    pick = lambda name: np.asarray(out[name])[b, i, j]  # noqa: E731
    return {"index": b, "y": i + pick("dy"), "x": j + pick("dx"), "photons": pick("photons"),
            "s_y": pick("s_y"), "s_x": pick("s_x"), "s_photons": pick("s_photons"),
            "background": pick("background"), "score": score[b, i, j]}


_detect_maps_jit = jax.jit(_detect_maps)


def train_locnet(key: jax.Array, *, model: LocNetModel | None = None, train: TrainConfig | None = None,
                 sampler=None, checkpoint_dir=None, callback=None, evaluate=None) -> tuple[LocNetModel, TrainResult]:
    """Train a localization network on frames drawn from the simulator.

    Args:
        key: PRNG key of the initial weights (batches come from ``train.seed``).
        model: the untrained :class:`LocNetModel` (its U-Net, simulation ranges and scales);
            default :func:`locnet_init`.
        train: :class:`~jaxsr.nn.train.TrainConfig` (``patch_size`` is ignored: windows are
            ``model.sim.size`` pixels).
        sampler: ``sampler(key, batch_size) -> LocNetBatch``, a jittable source of training windows
            (e.g. :func:`jaxsr.smlm.generative.generative_sampler`); default: the physical simulator
            :func:`locnet_simulate` with ``model.sim``. To fine-tune, pass a trained ``model``.
        checkpoint_dir: checkpoints; an interrupted run resumes from it (see :func:`jaxsr.nn.train.fit`).
        callback, evaluate: see :func:`jaxsr.nn.train.fit`.

    Returns:
        ``(trained model, TrainResult)``.
    """
    model = locnet_init(key) if model is None else model
    if not isinstance(model, LocNetModel):
        raise TypeError(f"argument 'model': expected a LocNetModel, got {type(model).__name__}")
    train = TrainConfig(steps=4000, batch_size=16, learning_rate=1e-3) if train is None else train
    sim, unet, ins, phs = model.sim, model.unet, model.input_scale, model.photon_scale

    if sampler is not None and not callable(sampler):
        raise TypeError(f"argument 'sampler': expected a callable, got {type(sampler).__name__}")

    def sample(k):
        if sampler is not None:
            return sampler(k, train.batch_size)
        return _simulate_jit(k, sim, train.batch_size)

    def loss_fn(params, batch, _key):
        out = _outputs(params, batch.frames, unet, ins, phs)
        return locnet_loss(out, batch, photon_scale=phs, input_scale=ins)

    meta = {"kind": "locnet", "unet": unet.to_dict(), "sim": sim.to_dict(), "input_scale": ins, "photon_scale": phs}
    if sampler is not None:
        meta["sampler"] = getattr(sampler, "__name__", "custom")
    result = fit(loss_fn, model.params, sample, config=train, checkpoint_dir=checkpoint_dir, meta=meta,
                 evaluate=evaluate, callback=callback)
    trained = dataclasses.replace(model, params=result.params, info={**model.info, "train": train.to_dict()})
    return trained, result


def save_locnet(path, model: LocNetModel, *, overwrite: bool = False) -> Path:
    """Write ``model`` to the directory ``path`` (``model.json`` + ``params.msgpack``), atomically.

    Raises:
        FileExistsError: ``path`` already holds a model and ``overwrite`` is False.
    """
    if not isinstance(model, LocNetModel):
        raise TypeError(f"argument 'model': expected a LocNetModel, got {type(model).__name__}")
    meta = {"format": _FORMAT, "kind": "locnet", "unet": model.unet.to_dict(), "sim": model.sim.to_dict(),
            "input_scale": model.input_scale, "photon_scale": model.photon_scale, "info": model.info}
    return write_model_dir(path, meta, model.params, overwrite=overwrite)


def pretrained_locnet_path() -> Path:
    """Directory of the localization network shipped in the package.

    >>> pretrained_locnet_path().name
    'locnet'
    """
    return Path(__file__).parent / "pretrained" / "locnet"


def load_locnet(path) -> LocNetModel:
    """Read a localization network written by :func:`save_locnet`.

    Raises:
        FileNotFoundError: no model at ``path``.
        ValueError: a corrupt model or one of another kind (the message names ``model``).
    """
    path, meta = read_model_meta(path)
    try:
        kind, fmt = meta["kind"], meta["format"]
        unet = UNetConfig.from_dict(meta["unet"])
        sim = LocNetSimulation.from_dict(meta["sim"])
        ins, phs = float(meta["input_scale"]), float(meta["photon_scale"])
    except Exception as exc:
        raise ValueError(f"argument 'model': corrupt model.json in {path} ({exc})") from None
    if kind != "locnet" or fmt != _FORMAT:
        raise ValueError(f"argument 'model': {path} is not a localization network (kind {kind!r}, format {fmt!r})")
    params = read_model_params(path, unet)
    return LocNetModel(unet=unet, params=params, sim=sim, input_scale=ins, photon_scale=phs,
                       info=meta.get("info", {}))


@functools.lru_cache(maxsize=1)
def _default_locnet() -> LocNetModel:
    return load_locnet(pretrained_locnet_path())


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _maps_jit(params, frames, unet, input_scale, photon_scale):
    return _outputs(params, frames, unet, input_scale, photon_scale)


def localize_net(
    frames: Any,
    *,
    pixel_size_nm: float,
    camera: CameraModel | None = None,
    model: LocNetModel | str | os.PathLike | None = None,
    threshold: float = 0.5,
    batch: int = 16,
    sigma_nm: float | None = None,
    before: Any = None,
    after: Any = None,
) -> Localizations:
    """Localize single molecules with the localization network (DECODE-style).

    Args:
        frames: ``(t, y, x)`` (or ``(y, x)``) movie: ADU when ``camera`` is given, else photon counts.
        pixel_size_nm: camera pixel size in the sample (nm, > 0).
        camera: :class:`~jaxsr.forward.CameraModel` of the movie, or ``None`` for photon counts.
        model: a :class:`LocNetModel`, a model directory, or ``None`` for the shipped network.
        threshold: detection threshold on the summed probability (see :func:`locnet_detect`).
        batch: frames per network call (fewer for large frames: at most 4 Mpixel a call).
        sigma_nm: the PSF standard deviation (nm), if known: a warning is given when it lies outside
            the widths the network was trained on.
        before, after: ``(y, x)`` frames (same units as ``frames``) just before the first and after
            the last frame, when the movie is processed in chunks (finite); by default the first and
            last frame stand in for their missing neighbours.

    Returns:
        :class:`~jaxsr.smlm.localize.Localizations`; ``crlb_x_nm``, ``crlb_y_nm`` and
        ``crlb_photons`` hold the network's *predicted* standard deviations (not Cramér-Rao
        bounds), ``score`` the detection probability mass, ``sigma_nm``, ``deviance``, ``z_nm`` NaN.

    Raises:
        ValueError: frames that are not 2D/3D or hold NaN; a non-positive pixel size; a ``before``
            or ``after`` frame of another shape or holding NaN or infinite values.
    """
    frames = as_movie(frames)
    pixel = float(pixel_size_nm)
    if not (np.isfinite(pixel) and pixel > 0):
        raise ValueError(f"argument 'pixel_size_nm': expected a positive pixel size in nm, got {pixel_size_nm}")
    batch = check_int(batch, "batch", minimum=1)
    if model is None:
        model = _default_locnet()
    elif not isinstance(model, LocNetModel):
        model = load_locnet(model)
    if sigma_nm is not None:
        s = float(sigma_nm) / pixel
        lo, hi = model.sim.sigma_px
        if not (np.isfinite(s) and s > 0):
            raise ValueError(f"argument 'sigma_nm': expected a positive PSF standard deviation in nm, got {sigma_nm}")
        if not lo * 0.9 <= s <= hi * 1.1:
            warnings.warn(f"localize_net: the PSF ({s:.2f} pixels) lies outside the widths the network was trained "
                          f"on ({lo:g}-{hi:g} pixels); retrain it (benchmarks/train_locnet.py) for this PSF",
                          stacklevel=2)
    ny, nx = frames.shape[1:]
    if min(ny, nx) < 4:
        raise ValueError(f"argument 'frames': expected frames of at least 4 x 4 pixels, got {ny} x {nx}")
    # Missing neighbours of the first and last frame: the given ones, else the frame itself.
    edges = []
    for name, a, own in (("before", before, frames[0]), ("after", after, frames[-1])):
        a = own if a is None else as_float_array(a, name)
        if a.shape != (ny, nx):
            raise ValueError(f"argument '{name}': expected a ({ny}, {nx}) frame, got {tuple(a.shape)}")
        check_finite(a, name)  # a NaN neighbour would spread NaN over the frames it is a neighbour of
        edges.append(jnp.repeat(a[None].astype(frames.dtype), model.window // 2, axis=0))
    padded = jnp.concatenate([edges[0], frames, edges[1]])
    if camera is None:
        counts, f2, qe = padded, 1.0, 1.0
    else:
        counts, _ = camera_counts(padded, camera=camera)
        f2, qe = _excess(camera), float(camera.qe)
    counts = np.asarray(counts, np.float32)
    # Bound the activations (48 channels x 4 bytes per pixel at full resolution): at most 4 Mpixel a call.
    batch = max(1, min(batch, _PIXELS_PER_CALL // (ny * nx)))
    t_frames = frames.shape[0]
    windows = np.stack([counts[s:s + t_frames] for s in range(model.window)], axis=1)  # (t, window, y, x)
    cols: dict[str, list] = {}
    t_total = windows.shape[0]
    for start in range(0, t_total, batch):
        w = windows[start:start + batch]
        m = w.shape[0]
        if m < batch and t_total > batch:  # one compiled shape for every call
            w = np.concatenate([w, np.zeros((batch - m,) + w.shape[1:], w.dtype)])
        out = _maps_jit(model.params, jnp.asarray(w), model.unet, model.input_scale, model.photon_scale)
        det = locnet_detect(out, threshold=threshold)
        keep = det["index"] < m
        det = {k: v[keep] for k, v in det.items()}
        det["index"] = det["index"] + start
        for k, v in det.items():
            cols.setdefault(k, []).append(v)
    det = {k: np.concatenate(v) for k, v in cols.items()}
    if det["index"].size == 0:
        warnings.warn("localize_net: no molecules detected (lower 'threshold'?); returning an empty table",
                      stacklevel=2)
        return Localizations.empty()
    scale = f2 / qe
    nan = np.full(det["index"].size, np.nan, np.float32)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return Localizations(
        frame=det["index"].astype(np.int64), x_nm=f32((det["x"] + 0.5) * pixel), y_nm=f32((det["y"] + 0.5) * pixel),
        photons=f32(det["photons"] * scale), background=f32(det["background"] * scale), sigma_nm=nan,
        crlb_x_nm=f32(det["s_x"] * pixel), crlb_y_nm=f32(det["s_y"] * pixel),
        crlb_photons=f32(det["s_photons"] * scale), score=f32(det["score"]), deviance=nan, z_nm=nan, crlb_z_nm=nan,
    )
