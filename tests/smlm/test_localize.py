"""jaxsr.smlm: the movie simulator, detection, ROI extraction and the localize pipeline."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxsr.forward import CameraModel, camera_preset
from jaxsr.smlm import (
    blink,
    camera_counts,
    detect_spots,
    extract_rois,
    gaussian_spot,
    localize,
    render_emitters,
    simulate_smlm,
)

# The three camera presets share their compiled detection and fit (make test runs a file on one worker).

# simulate_smlm compiles once per frame count, frame shape, photon and blinking settings, number of
# emitters and camera class (static): the truth-table test uses the settings of the sCMOS localize movie.
SCMOS_MOVIE = {"n_frames": 60, "shape": (60, 60), "photons": 1500.0, "photon_cv": 0.3, "p_on": 0.3, "p_off": 0.5,
               "camera": camera_preset("scmos")}


def _grid_positions(n_side=5, spacing_nm=1100.0, start_nm=700.0, jitter_key=None):
    """Well separated emitters on a grid (isolated spots), with sub-pixel jitter."""
    g = start_nm + spacing_nm * np.arange(n_side)
    pos = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    if jitter_key is not None:
        pos = pos + np.asarray(jax.random.uniform(jitter_key, pos.shape, minval=-50.0, maxval=50.0))
    return jnp.asarray(pos, jnp.float32)


# ----------------------------------------------------------------------------- simulator
def test_blink_matches_the_markov_chain_statistics():
    p_on, p_off = 0.1, 0.4
    s = np.asarray(blink(jax.random.key(0), 2000, 400, p_on=p_on, p_off=p_off))
    assert s.mean() == pytest.approx(p_on / (p_on + p_off), abs=0.01)  # stationary duty cycle
    was_on, was_off = s[:-1], ~s[:-1]
    assert (~s[1:][was_on]).mean() == pytest.approx(p_off, abs=0.01)   # on -> off rate
    assert s[1:][was_off].mean() == pytest.approx(p_on, abs=0.01)       # off -> on rate


def test_render_emitters_matches_the_spot_model_and_conserves_photons():
    pos = jnp.array([[1234.0, 2345.0], [3000.0, 1000.0]])
    ph = jnp.array([[1000.0, 0.0], [500.0, 700.0]])
    img = np.asarray(render_emitters(pos, ph, shape=(48, 40), pixel_size_nm=100.0, sigma_nm=130.0))
    assert img.shape == (2, 48, 40)
    np.testing.assert_allclose(img.sum(axis=(1, 2)), [1000.0, 1200.0], rtol=1e-4)
    # Emitter 0 in frame 0 equals the fitter's spot model at (y, x) = nm / pixel - 1/2.
    # (the reference model jit-compiled: one compile instead of one per primitive)
    ref = np.asarray(jax.jit(lambda t: gaussian_spot(t, shape=(48, 40), sigma_px=1.3))(
        jnp.array([11.84, 22.95, 1000.0, 0.0])))
    np.testing.assert_allclose(img[0], ref, atol=1e-3)
    # Centroid (scipy) at the emitter position.
    cy, cx = ndimage.center_of_mass(img[0])
    assert (cy + 0.5) * 100 == pytest.approx(1234.0, abs=0.5) and (cx + 0.5) * 100 == pytest.approx(2345.0, abs=0.5)


def test_astigmatic_widths_follow_z():
    pos = jnp.array([[2000.0, 2000.0, -300.0], [2000.0, 2000.0, 300.0]])
    frames = np.asarray(render_emitters(pos, jnp.eye(2) * 1000.0, shape=(40, 40), pixel_size_nm=100.0,
                                        psf="astigmatic3d"))

    def widths(f):
        yy, xx = np.mgrid[:40, :40]
        cy, cx = ndimage.center_of_mass(f)
        return np.sqrt((f * (yy - cy) ** 2).sum() / f.sum()), np.sqrt((f * (xx - cx) ** 2).sum() / f.sum())

    (sy_lo, sx_lo), (sy_hi, sx_hi) = widths(frames[0]), widths(frames[1])
    assert sy_lo < sx_lo and sy_hi > sx_hi  # the y focus is below, the x focus above


def test_simulate_smlm_truth_table_and_camera():
    pos = _grid_positions(5)  # 25 emitters, all at least 7 px (5 sigma) inside the 60 x 60 px frame
    mov = simulate_smlm(jax.random.key(1), pos, background=10.0, **SCMOS_MOVIE)
    assert mov.frames.shape == (60, 60, 60) and mov.frames.dtype == jnp.float32
    t = mov.truth
    assert set(t) == {"frame", "id", "x_nm", "y_nm", "z_nm", "photons", "background"}
    assert len(t["frame"]) > 0 and np.all(t["photons"] > 0) and np.all(t["background"] == 10.0)
    # Expected image = background + the on emitters' photons.
    total = np.asarray(mov.expected).sum(axis=(1, 2)) - 10.0 * 3600
    per_frame = np.bincount(t["frame"], weights=t["photons"], minlength=60)
    np.testing.assert_allclose(total, per_frame, rtol=2e-3, atol=1.0)
    # Same key, same movie.
    again = simulate_smlm(jax.random.key(1), pos, background=10.0, **SCMOS_MOVIE)
    np.testing.assert_array_equal(np.asarray(again.frames), np.asarray(mov.frames))


def test_simulate_smlm_bad_input():
    pos = _grid_positions(2)
    with pytest.raises(ValueError, match="positions_nm"):
        simulate_smlm(jax.random.key(0), jnp.ones((3, 4)), n_frames=2, shape=(16, 16))
    with pytest.raises(ValueError, match="background"):
        simulate_smlm(jax.random.key(0), pos, n_frames=2, shape=(16, 16), background=jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="p_on"):
        simulate_smlm(jax.random.key(0), pos, n_frames=2, shape=(16, 16), p_on=0.0)
    with pytest.raises(ValueError, match="psf"):
        simulate_smlm(jax.random.key(0), pos, n_frames=2, shape=(16, 16), psf="airy")
    with pytest.raises(ValueError, match="photons"):
        simulate_smlm(jax.random.key(0), pos, n_frames=2, shape=(16, 16), photons=-1.0)
    with pytest.raises(ValueError, match="em_gain"):
        CameraModel(em_gain=0.5)
    with pytest.raises(ValueError, match="gain_e_per_adu"):
        CameraModel(gain_e_per_adu=-1.0)


# ----------------------------------------------------------------------------- detection
def test_detect_spots_finds_isolated_spots_and_ignores_noise():
    pos = _grid_positions(4, jitter_key=jax.random.key(3))
    # Input frames: the spots rendered by one compiled call, Poisson counts drawn with NumPy (nothing to compile).
    img = np.asarray(jax.jit(lambda p: render_emitters(p, jnp.full(16, 800.0), shape=(48, 48), pixel_size_nm=100.0))(
        pos)) + 10.0
    frames = jnp.asarray(np.random.default_rng(4).poisson(np.stack([img, np.full_like(img, 10.0)])), jnp.float32)
    c = detect_spots(frames, sigma_px=1.3)
    assert np.sum(c.frame == 0) == 16 and np.sum(c.frame == 1) == 0
    found = np.stack([c.y[c.frame == 0], c.x[c.frame == 0]], 1)
    truth = np.asarray(pos) / 100.0 - 0.5
    d = np.min(np.linalg.norm(found[:, None] - truth[None], axis=2), axis=0)
    assert np.all(d <= 1.0)
    # A noise-free flat frame has no candidates (the noise estimate is 0 there).
    assert detect_spots(jnp.full((16, 16), 10.0), sigma_px=1.3).frame.size == 0
    # Scores rise with brightness: the threshold sweeps a precision-recall curve.
    assert np.all(c.score[c.frame == 0] > c.threshold[0])


def _dog_reference(frames, sigma):
    """The band-pass G(sigma) - G(2.5 sigma) by scipy (mirror boundary = NumPy's reflect, 3-sigma kernels)."""
    f = np.asarray(frames, np.float64)
    return np.stack([ndimage.gaussian_filter(a, sigma, mode="mirror", truncate=3.0)
                     - ndimage.gaussian_filter(a, 2.5 * sigma, mode="mirror", truncate=3.0) for a in f])


@pytest.mark.parametrize("kind", ["poisson2", "poisson20", "poisson200", "gauss_ramp"])
def test_detect_noise_unit_is_the_background_s_d_of_the_band_passed_frame(kind):
    """On background-only frames the threshold's noise unit (threshold / 5) is the s.d. of the band-passed
    frame (scipy's band-pass, away from the edges), within a few %, at any background level."""
    rng = np.random.default_rng(11)
    shape = (4, 96, 96)
    if kind == "gauss_ramp":  # continuous noise on an offset and a slope (the differences cancel the slope)
        frames = 100.0 + 3.0 * rng.normal(size=shape) + np.linspace(0.0, 60.0, 96)[None, None]
    else:
        frames = rng.poisson(float(kind[7:]), shape)
    c = detect_spots(jnp.asarray(frames, jnp.float32), sigma_px=1.3)
    actual = _dog_reference(frames, 1.3)[:, 12:-12, 12:-12].std(axis=(1, 2))
    # (the sample s.d. of one frame's band-passed noise itself scatters by a few %)
    np.testing.assert_allclose(c.threshold / 5.0, actual, rtol=0.1)
    assert abs(np.mean(c.threshold / 5.0) / np.mean(actual) - 1.0) < 0.05


def test_detect_threshold_does_not_grow_with_brightness_or_density():
    """The noise unit comes from the background, not from the molecules (it was 1.4826 x the MAD of the
    band-passed frame, which bright or dense spots inflated up to 30-fold)."""
    rng = np.random.default_rng(0)
    bg = rng.poisson(10.0, (1, 64, 64)).astype(np.float32)
    noise0 = detect_spots(bg, sigma_px=1.3).threshold[0] / 5.0
    # 16 spots of 10000 photons, 1.6 um apart, and the same grid with 4 dim (600 photon) ones in the middle
    yy, xx = np.meshgrid(np.arange(8, 64, 16), np.arange(8, 64, 16), indexing="ij")
    pos = jnp.asarray(np.stack([yy.ravel(), xx.ravel()], 1) * 100.0 + 30.0, jnp.float32)
    ph = np.full(16, 10000.0)
    dim = [5, 6, 9, 10]
    ph_dim = ph.copy()
    ph_dim[dim] = 600.0
    render = jax.jit(lambda p, n: render_emitters(p, n, shape=(64, 64), pixel_size_nm=100.0))
    frames = rng.poisson(np.stack([np.asarray(render(pos, jnp.asarray(ph, jnp.float32))),
                                   np.asarray(render(pos, jnp.asarray(ph_dim, jnp.float32)))]) + 10.0)
    c = detect_spots(frames.astype(np.float32), sigma_px=1.3)
    assert np.all(c.threshold / 5.0 < 1.3 * noise0)  # was 30 x
    truth = np.asarray(pos) / 100.0 - 0.5
    for f in (0, 1):
        found = np.stack([c.y[c.frame == f], c.x[c.frame == f]], 1)
        d = np.linalg.norm(found[:, None] - truth[None], axis=2)
        assert len(found) == 16 and np.all(d.min(axis=0) <= 1.0)  # the 4 dim ones too (0 of 4 before)
    # A crowded grid: one emitter every 8 px at 2000 photons (21 of 49 found before).
    g = np.arange(6, 58, 8)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2) + rng.uniform(0, 1, (49, 2))
    img = np.asarray(jax.jit(lambda p: render_emitters(p, jnp.full(49, 2000.0), shape=(64, 64), pixel_size_nm=100.0))(
        jnp.asarray(grid * 100.0, jnp.float32)))
    c = detect_spots(rng.poisson(img + 10.0).astype(np.float32), sigma_px=1.3)
    d = np.linalg.norm(np.stack([c.y, c.x], 1)[:, None] - (grid - 0.5)[None], axis=2)
    assert c.frame.size == 49 and np.all(d.min(axis=0) <= 1.0)


def test_detect_false_positives_are_rare_and_not_at_the_edges():
    """Background only: the reflected boundary raises the band-passed noise on the edges (1.25 x, corners
    1.5 x); the threshold follows it, so false positives are rare and not piled up on the edge pixels."""
    rng = np.random.default_rng(5)
    frames = rng.poisson(15.0, (300, 60, 60)).astype(np.float32)
    c = detect_spots(frames, sigma_px=1.3, threshold=4.0)
    edge = np.minimum(np.minimum(c.y, 59 - c.y), np.minimum(c.x, 59 - c.x)) == 0
    # 43 here, 5 of them on the edge pixels (6.5 % of the pixels); without the edge factor 81, 45 on the edges
    assert c.frame.size <= 60 and edge.sum() <= 10


def test_detect_ties_give_one_candidate_per_window():
    img = np.zeros((32, 32), np.float32)
    img[10, 20] = img[10, 21] = 100.0
    c = detect_spots(img, sigma_px=1.0, threshold=1.0, absolute=True)
    assert list(zip(c.y.tolist(), c.x.tolist())) == [(10, 20)]  # the first in row-major order
    # Many ties (small integers): every two candidates of a frame are more than `radius` apart.
    frames = np.random.default_rng(2).integers(0, 3, (4, 40, 40)).astype(np.float32)
    frames[:, 5:15, 5:15] = 50.0  # and a plateau
    c = detect_spots(frames, sigma_px=0.5, threshold=1e-3, absolute=True, radius=2)
    assert c.frame.size > 20
    for f in range(4):
        yx = np.stack([c.y[c.frame == f], c.x[c.frame == f]], 1)
        cheb = np.abs(yx[:, None] - yx[None]).max(axis=2) + 3 * np.eye(len(yx), dtype=int)
        assert cheb.min() > 2


def test_detect_and_localize_a_movie_of_no_frames():
    c = detect_spots(np.zeros((0, 32, 32), np.float32), sigma_px=1.3)
    assert c.frame.size == 0 and c.threshold.shape == (0,) and c.frame.dtype == np.int64
    locs = localize(np.zeros((0, 32, 32), np.float32), pixel_size_nm=100.0, sigma_nm=130.0)
    assert locs.n == 0 and len(locs) == 13


def test_extract_rois_matches_numpy_slicing_and_shifts_at_edges(rng):
    frames = jnp.asarray(rng.normal(size=(3, 20, 24)), jnp.float32)
    rois, origin = extract_rois(frames, [0, 2, 1], [10, 0, 19], [5, 23, 12], size=7)
    np.testing.assert_array_equal(origin, [[7, 2], [0, 17], [13, 9]])
    for k, (f, (y0, x0)) in enumerate(zip([0, 2, 1], origin)):
        np.testing.assert_array_equal(np.asarray(rois[k]), np.asarray(frames[f, y0:y0 + 7, x0:x0 + 7]))
    with pytest.raises(ValueError, match="size"):
        extract_rois(frames, [0], [1], [1], size=6)
    with pytest.raises(ValueError, match="frame"):
        extract_rois(frames, [5], [1], [1], size=7)


# ----------------------------------------------------------------------------- pipeline
@pytest.mark.parametrize("preset", [None, "emccd", "scmos"])
def test_localize_recovers_isolated_emitters_at_the_crlb(preset):
    """Isolated blinking emitters through every camera: positions within ~CRLB, photons unbiased."""
    camera = None if preset is None else camera_preset(preset)
    pos = _grid_positions(5, jitter_key=jax.random.key(7))
    # Every emitter 1500 photons per on-frame, except on the sCMOS camera: there Gamma-distributed
    # (cv 0.3; the movie settings of the truth-table test, one compiled simulator for both).
    movie = SCMOS_MOVIE if preset == "scmos" else {**SCMOS_MOVIE, "photon_cv": 0.0, "camera": camera}
    mov = simulate_smlm(jax.random.key(8), pos, background=15.0, **movie)
    locs = localize(mov.frames, pixel_size_nm=100.0, sigma_nm=130.0, camera=camera)
    t = mov.truth
    key_t = {(f, i): k for k, (f, i) in enumerate(zip(t["frame"], np.rint(t["x_nm"] / 1100.0).astype(int)
                                                        * 10 + np.rint(t["y_nm"] / 1100.0).astype(int)))}
    errs, ph, true_ph, crlb = [], [], [], []
    for k in range(locs.n):
        idx = key_t.get((locs.frame[k], int(np.rint(locs.x_nm[k] / 1100.0)) * 10 + int(np.rint(locs.y_nm[k] / 1100.0))))
        assert idx is not None  # no false positives
        errs.append([locs.x_nm[k] - t["x_nm"][idx], locs.y_nm[k] - t["y_nm"][idx]])
        ph.append(locs.photons[k])
        true_ph.append(t["photons"][idx])
        crlb.append([locs.crlb_x_nm[k], locs.crlb_y_nm[k]])
    errs, crlb = np.asarray(errs), np.asarray(crlb)
    assert locs.n >= 0.97 * len(t["frame"])  # recall on isolated bright spots
    ratio = np.sqrt(np.mean(errs**2, axis=0)) / np.sqrt(np.mean(crlb**2, axis=0))
    assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio
    assert np.mean(ph) == pytest.approx(np.mean(true_ph), rel=0.03)  # = 1500 without photon_cv


def test_localize_empty_and_bad_input():
    with pytest.warns(UserWarning, match="no spots"):
        # a flat movie of the presets' shape (60 frames of 60 x 60 px: the compiled detection is shared)
        locs = localize(jnp.full((60, 60, 60), 10.0, jnp.float32), pixel_size_nm=100.0, sigma_nm=130.0)
    assert locs.n == 0
    with pytest.raises(ValueError, match="frames"):
        localize(jnp.ones((2, 3, 32, 32)), pixel_size_nm=100.0, sigma_nm=130.0)
    with pytest.raises(ValueError, match="pixel_size_nm"):
        localize(jnp.ones((2, 32, 32)), pixel_size_nm=0.0, sigma_nm=130.0)
    with pytest.raises(ValueError, match="sigma_nm"):
        localize(jnp.ones((2, 32, 32)), pixel_size_nm=100.0, sigma_nm=-1.0)
    with pytest.raises(ValueError, match="frames"):
        localize(jnp.ones((2, 32, 32)).at[0, 1, 1].set(jnp.nan), pixel_size_nm=100.0, sigma_nm=130.0)
    with pytest.raises(TypeError, match="camera"):
        camera_counts(jnp.ones((2, 8, 8)), camera="emccd")


def test_localize_refuses_nan_or_non_positive_filters():
    """max_crlb_px=nan or max_shift_px <= 0 silently dropped every fit; now one-line errors."""
    frames = np.ones((1, 16, 16), np.float32)
    for name, bad in (("max_crlb_px", float("nan")), ("max_crlb_px", 0.0), ("max_crlb_px", float("inf")),
                      ("max_shift_px", -1.0), ("max_shift_px", float("nan")), ("max_shift_px", "a")):
        with pytest.raises(ValueError, match=f"argument '{name}'"):
            localize(frames, pixel_size_nm=100.0, sigma_nm=130.0, **{name: bad})
