"""Drift correction by redundant cross-correlation (jaxsr.smlm.drift)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.registration import phase_cross_correlation

from jaxsr.smlm import Localizations, correct_drift, estimate_drift, pair_shift
from jaxsr.smlm.drift import _solve_robust
from jaxsr.smlm.simulate import emitter_positions


def _drifting_table(seed=0, n_frames=6000, per_frame=12, precision=10.0, structure="filaments",
                    field=(6000.0, 6000.0)):
    """Localizations of a static structure (emitters blinking at random) recorded with a known drift:
    ``(table as a dict, true drift (n_frames, 2) (x, y) nm)``."""
    rng = np.random.default_rng(seed)
    yx = np.asarray(emitter_positions(jax.random.key(seed), 400, structure=structure, field_nm=field))
    frame = np.repeat(np.arange(n_frames), per_frame)
    site = rng.integers(0, len(yx), frame.size)
    f = np.arange(n_frames, dtype=np.float64)
    true = np.stack([0.04 * f + 25.0 * np.sin(f / 900.0), -0.02 * f + 40.0 * (1 - np.cos(f / 1500.0))], 1)
    x = yx[site, 1] + true[frame, 0] + rng.normal(0, precision, frame.size)
    y = yx[site, 0] + true[frame, 1] + rng.normal(0, precision, frame.size)
    return {"frame": frame, "x_nm": x, "y_nm": y}, true


def _rms(a):
    return float(np.sqrt(np.mean(np.asarray(a) ** 2)))


def test_pair_shift_matches_skimage_phase_cross_correlation(rng):
    """Sub-pixel shifts equal scikit-image's (cross-correlation without normalisation), opposite sign
    convention: skimage returns the shift that registers the moving image onto the reference."""
    base = gaussian_filter(rng.random((96, 80)) ** 6, 1.5)
    for shift in [(0.0, 0.0), (3.0, -7.0), (2.35, -4.6), (-6.8, 1.15)]:
        moved = np.real(np.fft.ifft2(np.fft.fft2(base) * np.exp(
            -2j * np.pi * (np.fft.fftfreq(96)[:, None] * shift[0] + np.fft.fftfreq(80)[None, :] * shift[1]))))
        ours = np.asarray(pair_shift(base, moved, upsample=20))
        ref, _, _ = phase_cross_correlation(base, moved, upsample_factor=20, normalization=None)
        np.testing.assert_allclose(ours, -ref, atol=1.0 / 20 + 1e-6)
        np.testing.assert_allclose(ours, shift, atol=0.03)      # the parabola beats the 1/20 grid


def test_pair_shift_integer_rolls_exact_and_float64(x64, rng):
    a = rng.random((40, 52))
    for s in [(0, 0), (5, -3), (-11, 12)]:
        b = np.roll(a, s, axis=(0, 1))
        out = pair_shift(a, b, upsample=10, max_shift_px=15)
        assert out.dtype == np.float64
        np.testing.assert_allclose(np.asarray(out), s, atol=1e-9)


def test_recovers_a_known_drift_and_the_corrected_table_has_none():
    table, true = _drifting_table()
    res = estimate_drift(table, segment_frames=500)
    assert res.drift_nm.shape == true.shape and res.drift_nm.dtype == np.float64
    np.testing.assert_array_equal(res.drift_nm[0], 0.0)
    # 12 segments; the drift spans about 250 nm in x and 80 nm in y over the movie
    assert _rms(res.drift_nm - true) < 1.5, _rms(res.drift_nm - true)     # measured 0.6 nm
    assert res.kept.sum() >= 0.9 * len(res.kept)
    fixed = correct_drift(table, res)
    assert fixed is not table and table["x_nm"] is not fixed["x_nm"]
    again = estimate_drift(fixed, segment_frames=500)
    assert np.max(np.abs(again.drift_nm)) < 2.5 and _rms(again.drift_nm) < 1.0


def test_float64_agrees_with_float32(request):
    table, true = _drifting_table(seed=6, n_frames=2400, structure="uniform")
    single = estimate_drift(table, segment_frames=400)
    request.getfixturevalue("x64")
    double = estimate_drift(table, segment_frames=400)
    np.testing.assert_allclose(double.drift_nm, single.drift_nm, atol=0.05)
    assert _rms(double.drift_nm - true) < 1.5


def test_translation_invariance_and_batching():
    table, _ = _drifting_table(seed=1, n_frames=3000, structure="uniform")
    res = estimate_drift(table, segment_frames=600)
    moved = dict(table, x_nm=table["x_nm"] + 4096.0, y_nm=table["y_nm"] - 2048.0)
    res2 = estimate_drift(moved, segment_frames=600)
    np.testing.assert_allclose(res2.drift_nm, res.drift_nm, atol=1e-6)
    one = estimate_drift(table, segment_frames=600, batch_size=1)           # pair by pair
    np.testing.assert_allclose(one.drift_nm, res.drift_nm, atol=1e-4)


def test_localizations_table_round_trip_keeps_the_other_columns():
    table, true = _drifting_table(seed=2, n_frames=2000, structure="uniform")
    n = len(table["frame"])
    locs = Localizations(frame=table["frame"], x_nm=table["x_nm"].astype(np.float32),
                         y_nm=table["y_nm"].astype(np.float32), photons=np.arange(n, dtype=np.float32),
                         **{k: np.full(n, np.nan, np.float32) for k in Localizations._fields[4:]})
    out = correct_drift(locs, true)
    assert isinstance(out, Localizations)
    np.testing.assert_array_equal(out.photons, locs.photons)
    np.testing.assert_allclose(out.x_nm, locs.x_nm - true[locs.frame, 0], atol=1e-3)
    np.testing.assert_allclose(out.y_nm, locs.y_nm - true[locs.frame, 1], atol=1e-3)


def test_few_segments_interpolate_linearly():
    """With 3 segments the drift is piecewise linear and continues with the end slopes: a linear drift
    is recovered at every frame, the first and last included."""
    rng = np.random.default_rng(3)
    sites = rng.uniform(0, 3000, (300, 2))
    frame = np.repeat(np.arange(900), 20)
    true = np.stack([0.1 * np.arange(900.0), -0.05 * np.arange(900.0)], 1)
    xy = sites[rng.integers(0, 300, frame.size)] + true[frame] + rng.normal(0, 6, (frame.size, 2))
    res = estimate_drift({"frame": frame, "x_nm": xy[:, 0], "y_nm": xy[:, 1]}, segment_frames=300)
    assert len(res.segment_frame) == 3
    assert np.max(np.abs(res.drift_nm - true)) < 1.5


def test_robust_solution_drops_wrong_pairs():
    """Pair shifts consistent with true segment drifts plus noise, two of them wrong by 300 nm: the
    wrong pairs are dropped and the drifts recovered to the noise."""
    rng = np.random.default_rng(4)
    n_seg = 8
    d = np.concatenate([np.zeros((1, 2)), rng.normal(0, 50, (n_seg - 1, 2))])
    pairs = np.array([(i, j) for i in range(n_seg) for j in range(i + 1, n_seg)])
    shifts = d[pairs[:, 1]] - d[pairs[:, 0]] + rng.normal(0, 0.5, (len(pairs), 2))
    bad = [3, 17]
    shifts[bad] += [300.0, -200.0]
    sol, resid, kept = _solve_robust(pairs, shifts, n_seg, None, 20.0)
    assert not kept[bad].any() and kept.sum() == len(pairs) - 2
    assert np.max(np.abs(sol - d)) < 1.0
    # without rejection the wrong pairs pull the drifts by tens of nm
    plain, _, _ = _solve_robust(pairs, shifts, n_seg, 1e9, 20.0)
    assert np.max(np.abs(plain - d)) > 20.0


def test_bad_input():
    table, _ = _drifting_table(seed=5, n_frames=1200, structure="uniform")
    with pytest.raises(ValueError, match="segment_frames"):
        estimate_drift(table, segment_frames=5000)
    with pytest.raises(ValueError, match="frame, x_nm and y_nm"):
        estimate_drift({"x_nm": table["x_nm"], "y_nm": table["y_nm"]})
    with pytest.raises(ValueError, match="finite"):
        estimate_drift(dict(table, x_nm=np.where(np.arange(len(table["x_nm"])) == 7, np.nan, table["x_nm"])))
    with pytest.raises(ValueError, match="non-negative integers"):
        estimate_drift(dict(table, frame=table["frame"] - 1))
    with pytest.raises(ValueError, match="n_frames"):
        estimate_drift(table, n_frames=100)
    with pytest.raises(ValueError, match="pixel_size_nm"):
        estimate_drift(table, segment_frames=400, pixel_size_nm=-2.0)
    with pytest.raises(ValueError, match="no localizations"):
        estimate_drift({"frame": np.zeros(0, int), "x_nm": np.zeros(0), "y_nm": np.zeros(0)})
    with pytest.raises(ValueError, match="drift_nm"):
        correct_drift(table, np.zeros((10, 2)))
    with pytest.raises(ValueError, match="'a' and 'b'"):
        pair_shift(np.ones((8, 8)), np.ones((8, 9)))


def _drifting_table_3d(seed=0, n_frames=6000, per_frame=12, precision=(10.0, 25.0)):
    """A 3D structure (filaments on a curved sheet plus a second layer 350 nm above part of it) with a
    known lateral and axial drift: ``(table as a dict, true drift (n_frames, 3) (x, y, z) nm)``."""
    rng = np.random.default_rng(seed)
    yx = np.asarray(emitter_positions(jax.random.key(seed), 400, structure="filaments", field_nm=(6000.0, 6000.0)))
    z_site = 250.0 * np.sin(yx[:, 1] / 1400.0) + 150.0 * np.cos(yx[:, 0] / 2100.0)
    z_site = z_site + np.where(rng.random(len(yx)) < 0.3, 350.0, 0.0)
    frame = np.repeat(np.arange(n_frames), per_frame)
    site = rng.integers(0, len(yx), frame.size)
    f = np.arange(n_frames, dtype=np.float64)
    true = np.stack([0.04 * f + 25.0 * np.sin(f / 900.0), -0.02 * f + 40.0 * (1 - np.cos(f / 1500.0)),
                     0.012 * f + 45.0 * np.sin(f / 1300.0)], 1)
    x = yx[site, 1] + true[frame, 0] + rng.normal(0, precision[0], frame.size)
    y = yx[site, 0] + true[frame, 1] + rng.normal(0, precision[0], frame.size)
    z = z_site[site] + true[frame, 2] + rng.normal(0, precision[1], frame.size)
    return {"frame": frame, "x_nm": x, "y_nm": y, "z_nm": z}, true


def test_recovers_a_known_axial_drift_with_the_lateral_one():
    table, true = _drifting_table_3d()
    res = estimate_drift(table, segment_frames=500)                 # z_nm present: axial by default
    assert res.drift_nm.shape == true.shape and res.segment_drift_nm.shape[1] == 3
    np.testing.assert_array_equal(res.drift_nm[0], 0.0)
    assert res.kept_z is not None and res.pair_residual_z_nm.shape == res.kept.shape
    err = res.drift_nm - true
    assert _rms(err[:, :2]) < 1.5, _rms(err[:, :2])
    assert _rms(err[:, 2]) < 2.5, _rms(err[:, 2])                   # the z drift spans about 120 nm
    fixed = correct_drift(table, res)
    np.testing.assert_array_equal(fixed["frame"], table["frame"])
    np.testing.assert_allclose(fixed["z_nm"], table["z_nm"] - res.drift_nm[table["frame"], 2])
    again = estimate_drift(fixed, segment_frames=500)
    assert _rms(again.drift_nm[:, 2]) < 1.5 and _rms(again.drift_nm[:, :2]) < 1.0
    # lateral only on request: the same x, y drift, z untouched by the correction
    lateral = estimate_drift(table, segment_frames=500, axial=False)
    assert lateral.drift_nm.shape == (true.shape[0], 2) and lateral.kept_z is None
    np.testing.assert_allclose(lateral.drift_nm, res.drift_nm[:, :2], atol=1e-9)
    np.testing.assert_array_equal(correct_drift(table, lateral)["z_nm"], table["z_nm"])


def test_axial_pair_shift_of_a_displaced_copy():
    """Two segments holding the same localizations, the second raised by a known dz: the pair's z shift
    is dz (closed form: the correlation is symmetric about it), whatever the bin grid's phase."""
    rng = np.random.default_rng(3)
    n = 4000
    xy = rng.uniform(0, 3000, (n, 2))
    z0 = rng.uniform(-300, 300, n)
    for dz in (37.3, -61.85, 0.0, 128.0):
        table = {"frame": np.concatenate([np.zeros(n, int), np.full(n, 19)]),
                 "x_nm": np.concatenate([xy[:, 0], xy[:, 0]]), "y_nm": np.concatenate([xy[:, 1], xy[:, 1]]),
                 "z_nm": np.concatenate([z0, z0 + dz])}
        res = estimate_drift(table, segment_frames=10, max_drift_nm=300.0)
        np.testing.assert_allclose(res.pair_shift_nm[0, :2], 0.0, atol=0.05)
        assert abs(res.pair_shift_nm[0, 2] - dz) < 0.25, (dz, res.pair_shift_nm[0])   # measured <= 0.1
        np.testing.assert_allclose(res.drift_nm[19], [0.0, 0.0, res.pair_shift_nm[0, 2]], atol=1e-9)


def test_axial_drift_choice_and_bad_input():
    table, _ = _drifting_table(seed=2, n_frames=1200, per_frame=8)
    assert estimate_drift(table, segment_frames=400).drift_nm.shape[1] == 2         # no z column
    with pytest.raises(ValueError, match="argument 'axial'.*no z_nm"):
        estimate_drift(table, segment_frames=400, axial=True)
    nan_z = dict(table, z_nm=np.full(table["x_nm"].shape, np.nan))                 # a 2D fit's NaN z
    assert estimate_drift(nan_z, segment_frames=400).drift_nm.shape[1] == 2
    with pytest.raises(ValueError, match="argument 'axial'"):
        estimate_drift(nan_z, segment_frames=400, axial=True)
    with pytest.raises(TypeError, match="argument 'axial'"):
        estimate_drift(table, segment_frames=400, axial="yes")
    with pytest.raises(ValueError, match="argument 'drift_nm'.*z_nm"):
        correct_drift(table, np.zeros((1200, 3)))
    with pytest.raises(ValueError, match="argument 'drift_nm'"):
        correct_drift(table, np.zeros((1200, 4)))
