"""jaxsr.smlm.net: the DECODE-style localization network, its simulator, loss, post-processing and I/O."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.test_util as jtu
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jaxsr.forward import camera_preset
from jaxsr.nn.unet import UNetConfig
from jaxsr.smlm import emitter_positions, localize, match_localizations, simulate_smlm
from jaxsr.smlm.net import (
    LOCNET_CHANNELS,
    LocNetBatch,
    LocNetSimulation,
    load_locnet,
    localize_net,
    locnet_detect,
    locnet_init,
    locnet_loss,
    locnet_simulate,
    pretrained_locnet_path,
    save_locnet,
)

# make test runs a file on one worker (--dist loadfile): the compiled functions (simulator, loss, tiny
# U-Net) are shared by this module's tests.

TINY = UNetConfig(depth=1, features=4, decoder_features=4, in_channels=3, out_channels=len(LOCNET_CHANNELS))

# The simulator is compiled once per settings (a static argument; about 4 s), so both simulator tests
# draw the same batch: windows of 32 x 32 px without read noise, edge frames or neighbour-only and
# lingering emitters (exact expectations), a fixed PSF width and density 0.01 per px^2.
WINDOW_SIM = LocNetSimulation(size=32, read_noise=(0.0, 0.0), p_edge=0.0, density=(0.01, 0.01),
                              neighbour_fraction=0.0, p_stay_on=0.0, sigma_px=(1.0, 1.0))
WINDOW_BATCH = 128
"""Windows drawn (about 1300 emitters in their middle frames)."""


@pytest.fixture(scope="module")
def windows():
    return locnet_simulate(jax.random.key(0), sim=WINDOW_SIM, batch=WINDOW_BATCH)


# The loss, compiled once for the (1, 8, 8) maps of the loss tests (eagerly, every primitive compiles).
_loss = jax.jit(lambda out, batch: locnet_loss(out, batch, photon_scale=1000.0))


# ----------------------------------------------------------------------------- simulator
def test_simulated_windows_are_poisson_around_the_spot_model(windows):
    b = windows
    expected, frames, bg = np.asarray(b.expected), np.asarray(b.frames), np.asarray(b.background)
    # The middle frame's spots are exactly the masked emitters rendered by an independent erf model
    # (scipy), away from the border where emitters outside the field (not targets) add light.
    m = np.asarray(b.mask)
    k = np.arange(32)

    def profile(c):
        return 0.5 * (special.erf((k - c + 0.5) / math.sqrt(2)) - special.erf((k - c - 0.5) / math.sqrt(2)))

    core = (slice(6, 26), slice(6, 26))
    for i in range(8):
        ref = sum(n * np.outer(profile(y), profile(x))
                  for y, x, n in zip(np.asarray(b.y)[i][m[i]], np.asarray(b.x)[i][m[i]], np.asarray(b.photons)[i][m[i]]))
        np.testing.assert_allclose((expected[i, 1] - bg[i])[core], np.asarray(ref)[core], rtol=1e-4, atol=1e-2)
        # No molecule on in the neighbouring frames (p_stay_on 0, no neighbour-only ones).
        np.testing.assert_allclose((expected[i, 0] - bg[i])[core], 0.0, atol=1e-2)
    # Frames are Poisson draws of the expectation: mean and variance of the standardized residual.
    z = (frames - expected) / np.sqrt(expected)
    assert abs(z.mean()) < 0.01 and z.var() == pytest.approx(1.0, abs=0.02)
    # The density of middle-frame emitters: Poisson with mean 0.01 per pixel^2 (over 128 windows the
    # standard errors are 2.8 % of the mean and 12.5 % of the variance: the bounds are 3.6 and 3.2 of them).
    assert m.sum(axis=1).mean() == pytest.approx(0.01 * 32 * 32, rel=0.1)
    assert m.sum(axis=1).var() == pytest.approx(0.01 * 32 * 32, rel=0.4)


def test_simulated_positions_are_uniform_inside_the_frame_and_deterministic():
    # The default settings (neighbour-only and lingering emitters, edge frames, read noise): emitters
    # are also placed up to 3 px outside the frame and in neighbouring frames only; none is a target.
    sim = LocNetSimulation(size=24)
    b = locnet_simulate(jax.random.key(3), sim=sim, batch=128)
    m = np.asarray(b.mask)
    y, x = np.asarray(b.y)[m], np.asarray(b.x)[m]
    assert y.size > 500
    assert y.min() >= -0.5 and y.max() < 23.5 and x.min() >= -0.5 and x.max() < 23.5
    # Sub-pixel offsets uniform (KS test): the network must not learn a grid bias.
    assert stats.kstest(np.mod(x + 0.5, 1.0), "uniform").pvalue > 1e-3
    assert stats.kstest(np.mod(y + 0.5, 1.0), "uniform").pvalue > 1e-3
    b2 = locnet_simulate(jax.random.key(3), sim=sim, batch=128)
    np.testing.assert_array_equal(np.asarray(b.frames), np.asarray(b2.frames))
    np.testing.assert_array_equal(np.asarray(b.y), np.asarray(b2.y))


def test_simulation_settings_reject_bad_ranges_and_round_trip_json():
    with pytest.raises(ValueError, match="argument 'density'"):
        LocNetSimulation(density=(0.05, 0.01))
    with pytest.raises(ValueError, match="argument 'window'"):
        LocNetSimulation(window=2)
    with pytest.raises(ValueError, match="argument 'p_edge'"):
        LocNetSimulation(p_edge=1.5)
    s = LocNetSimulation(photons=[100, 200])
    assert LocNetSimulation.from_dict(s.to_dict()) == s


# ----------------------------------------------------------------------------- loss
def _maps(b, ny, nx, **fill):
    base = {"p": 1e-6, "dy": 0.0, "dx": 0.0, "photons": 1000.0, "s_y": 0.1, "s_x": 0.1, "s_photons": 100.0,
            "background": 10.0}
    base.update(fill)
    return {k: jnp.full((b, ny, nx), v, jnp.float32) for k, v in base.items()}


def _one_emitter_batch(y, x, n, ny=8, nx=8):
    return LocNetBatch(frames=jnp.zeros((1, 3, ny, nx)), y=jnp.array([[y, 0.0]]), x=jnp.array([[x, 0.0]]),
                       photons=jnp.array([[n, 0.0]]), mask=jnp.array([[True, False]]),
                       background=jnp.full((1, ny, nx), 10.0), expected=jnp.zeros((1, 3, ny, nx)))


def test_loss_is_the_closed_form_for_one_confident_pixel():
    # One pixel with p ~ 1 predicting (3.2, 4.1, 900 +- sd): the mixture is that one Gaussian, the count
    # term is N(1; ~1, floor 0.1), the background term is zero.
    out = _maps(1, 8, 8)
    out["p"] = out["p"].at[0, 3, 4].set(1.0 - 1e-6)
    out["dy"] = out["dy"].at[0, 3, 4].set(0.2)
    out["dx"] = out["dx"].at[0, 3, 4].set(0.1)
    out["photons"] = out["photons"].at[0, 3, 4].set(900.0)
    batch = _one_emitter_batch(3.25, 4.05, 1000.0)
    loss = float(_loss(out, batch))  # photon_scale 1000
    ref_gmm = -(stats.norm.logpdf(3.25, 3.2, 0.1) + stats.norm.logpdf(4.05, 4.1, 0.1)
                + stats.norm.logpdf(1.0, 0.9, 0.1))
    ref_count = 0.5 * math.log(2 * math.pi * 0.1)  # (1 - sum p)^2 / var ~ 0
    assert loss == pytest.approx(ref_gmm + ref_count, abs=2e-3)


def test_loss_prefers_the_right_position_and_punishes_missed_and_extra_emitters():
    batch = _one_emitter_batch(3.0, 4.0, 1000.0)

    def loss_at(i, j, p=0.999):
        out = _maps(1, 8, 8)
        out["p"] = out["p"].at[0, i, j].set(p)
        return float(_loss(out, batch))

    right, wrong = loss_at(3, 4), loss_at(3, 5)
    assert right < wrong - 10
    assert loss_at(3, 4, p=0.5) > right            # under-confident
    out = _maps(1, 8, 8)
    out["p"] = out["p"].at[0, 3, 4].set(0.999).at[0, 6, 6].set(0.999)
    assert float(_loss(out, batch)) > right  # an extra emitter


def test_loss_gradients_match_finite_differences(x64):
    rng = np.random.default_rng(0)
    batch = _one_emitter_batch(3.3, 4.2, 800.0, ny=6, nx=6)
    batch = batch._replace(y=batch.y.astype(jnp.float64), x=batch.x.astype(jnp.float64),
                           photons=batch.photons.astype(jnp.float64), background=batch.background.astype(jnp.float64))
    maps = {"p": rng.uniform(0.05, 0.9, (1, 6, 6)), "dy": rng.uniform(-0.9, 0.9, (1, 6, 6)),
            "dx": rng.uniform(-0.9, 0.9, (1, 6, 6)), "photons": rng.uniform(500, 1500, (1, 6, 6)),
            "s_y": rng.uniform(0.2, 1.0, (1, 6, 6)), "s_x": rng.uniform(0.2, 1.0, (1, 6, 6)),
            "s_photons": rng.uniform(100, 500, (1, 6, 6)), "background": rng.uniform(5, 15, (1, 6, 6))}
    maps = {k: jnp.asarray(v, jnp.float64) for k, v in maps.items()}
    # jit-compiled: one compile instead of one per primitive; the same function and derivative rules.
    jtu.check_grads(jax.jit(lambda m: locnet_loss(m, batch)), (maps,), order=1, modes=("rev",), eps=1e-5)


# ----------------------------------------------------------------------------- post-processing
def test_detect_merges_a_split_pixel_pair_and_keeps_adjacent_confident_ones():
    out = _maps(1, 12, 12)
    # Molecule A split over two pixels (0.5 / 0.45): one detection at the larger.
    out["p"] = out["p"].at[0, 2, 2].set(0.5).at[0, 2, 3].set(0.45)
    # Molecules B and C in adjacent pixels, both confident: two detections.
    out["p"] = out["p"].at[0, 8, 8].set(0.95).at[0, 8, 9].set(0.9)
    out["dx"] = out["dx"].at[0, 8, 9].set(0.25)
    det = locnet_detect(out, threshold=0.5)
    got = sorted(zip(det["y"].round(3), det["x"].round(3)))
    assert got == [(2.0, 2.0), (8.0, 8.0), (8.0, 9.25)]
    a = det["score"][(det["y"] == 2) & (det["x"] == 2)]
    assert a == pytest.approx(0.95, abs=1e-5)  # the summed probability mass
    with pytest.raises(ValueError, match="argument 'threshold'"):
        locnet_detect(out, threshold=0.0)


# ----------------------------------------------------------------------------- I/O and localize_net
def test_save_load_round_trip_and_bad_model_dirs(tmp_path):
    m = locnet_init(jax.random.key(0), unet=TINY)
    d = save_locnet(tmp_path / "m", m)
    back = load_locnet(d)
    assert back.unet == m.unet and back.sim == m.sim and back.input_scale == m.input_scale
    for a, b in zip(jax.tree_util.tree_leaves(back.params), jax.tree_util.tree_leaves(m.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileExistsError, match="already holds a model"):
        save_locnet(d, m)
    with pytest.raises(FileNotFoundError, match="argument 'model'"):
        load_locnet(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="argument 'model': corrupt"):
        load_locnet(tmp_path / "bad")


def _blinking_movie(seed, n_frames, size, n_emitters, photons=2000.0, background=20.0, p_on=0.3):
    """Poisson frames of blinking pixel-integrated Gaussian spots (sigma 1.3 px), drawn with NumPy."""
    rng = np.random.default_rng(seed)
    k = np.arange(size)

    def profile(c):
        return 0.5 * (special.erf((k - c[:, None] + 0.5) / (1.3 * math.sqrt(2)))
                      - special.erf((k - c[:, None] - 0.5) / (1.3 * math.sqrt(2))))

    yx = rng.uniform(-0.5, size - 0.5, (n_emitters, 2))
    on = rng.uniform(size=(n_frames, n_emitters)) < p_on
    expected = background + np.einsum("ey,te,ex->tyx", profile(yx[:, 0]), photons * on, profile(yx[:, 1]))
    return rng.poisson(expected).astype(np.float32)


def test_localize_net_in_chunks_equals_whole_movie():
    m = locnet_init(jax.random.key(0), unet=TINY)
    # 16 x 16 frames, 3 per network call: the compiled network of test_localize_net_bad_input.
    frames = _blinking_movie(2, 6, 16, 12)
    whole = localize_net(frames, pixel_size_nm=100.0, model=m, threshold=0.01, batch=3)
    a = localize_net(frames[:3], pixel_size_nm=100.0, model=m, threshold=0.01, batch=3, after=frames[3])
    b = localize_net(frames[3:], pixel_size_nm=100.0, model=m, threshold=0.01, batch=3, before=frames[2])
    assert whole.n > 0 and whole.n == a.n + b.n
    np.testing.assert_allclose(np.concatenate([a.x_nm, b.x_nm]), whole.x_nm, atol=1e-3)
    np.testing.assert_array_equal(np.concatenate([a.frame, b.frame + 3]), whole.frame)


def test_localize_net_bad_input():
    m = locnet_init(jax.random.key(0), unet=TINY)
    with pytest.raises(ValueError, match="argument 'pixel_size_nm'"):
        localize_net(np.zeros((3, 16, 16)), pixel_size_nm=0.0, model=m)
    with pytest.raises(ValueError, match="argument 'frames'"):
        localize_net(np.zeros((2, 3, 16, 16)), pixel_size_nm=100.0, model=m)
    with pytest.raises(ValueError, match="argument 'after'"):
        localize_net(np.zeros((3, 16, 16)), pixel_size_nm=100.0, model=m, after=np.zeros((8, 8)))
    with pytest.warns(UserWarning, match="outside the widths"):
        localize_net(np.ones((3, 16, 16)), pixel_size_nm=100.0, model=m, sigma_nm=400.0, threshold=1.9)
    # A network that never detects anything (output bias of p at -50): an empty table and a warning.
    params = jax.tree_util.tree_map(lambda a: a, m.params)
    params["params"]["out"]["bias"] = params["params"]["out"]["bias"].at[0].set(-50.0)
    params["params"]["out"]["kernel"] = params["params"]["out"]["kernel"].at[..., 0].set(0.0)
    with pytest.warns(UserWarning, match="no molecules detected"):
        t = localize_net(np.ones((3, 16, 16)), pixel_size_nm=100.0, model=dataclasses.replace(m, params=params))
    assert t.n == 0


@pytest.mark.skipif(not (pretrained_locnet_path() / "model.json").is_file(), reason="no shipped network")
def test_shipped_network_beats_the_fitter_at_high_density():
    # 1.6 emitters per um^2 (EMCCD, 100 nm pixels, sigma 130 nm, 2000 photons): the fitter's isolated-spot
    # model breaks down where spots overlap, the network's does not (issue 5: better JI and efficiency).
    cam = camera_preset("emccd")
    pos = emitter_positions(jax.random.key(7), 280, structure="uniform", field_nm=(4800.0, 4800.0))
    mov = simulate_smlm(jax.random.key(8), pos, n_frames=10, shape=(48, 48), photons=2000.0, background=20.0,
                        p_on=0.05, p_off=0.5, camera=cam)
    net = match_localizations(localize_net(mov.frames, pixel_size_nm=100.0, camera=cam), mov.truth)
    mle = match_localizations(localize(mov.frames, pixel_size_nm=100.0, sigma_nm=130.0, camera=cam), mov.truth)
    assert net.jaccard > mle.jaccard + 10
    assert net.efficiency_lateral > mle.efficiency_lateral + 10
    assert net.rmse_lateral_nm < 40.0


def test_localize_net_refuses_non_finite_neighbour_frames():
    """A NaN 'before'/'after' frame spread NaN into the first/last frames' maps and silently dropped
    their molecules; it is now an error naming the argument."""
    m = locnet_init(jax.random.key(0), unet=TINY)
    for name in ("before", "after"):
        for bad in (np.nan, np.inf):
            with pytest.raises(ValueError, match=f"argument '{name}'.*NaN or infinite"):
                localize_net(np.zeros((3, 16, 16)), pixel_size_nm=100.0, model=m, **{name: np.full((16, 16), bad)})
