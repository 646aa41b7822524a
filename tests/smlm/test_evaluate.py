"""jaxsr.smlm.evaluate: SMLM Challenge matching, Jaccard, RMSE, efficiency, precision-recall."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jaxsr.smlm.evaluate import efficiency, match_localizations, precision_recall_curve


def _table(frames, xs, ys, zs=None, **extra):
    t = {"frame": np.asarray(frames), "x_nm": np.asarray(xs, float), "y_nm": np.asarray(ys, float)}
    if zs is not None:
        t["z_nm"] = np.asarray(zs, float)
    t.update({k: np.asarray(v) for k, v in extra.items()})
    return t


def _brute_force(loc, tru, tol):
    """Optimal one-to-one matching by enumeration: most pairs, then least total distance."""
    best = (0, 0.0)
    n_l, n_t = len(loc), len(tru)
    for k in range(min(n_l, n_t), 0, -1):
        for ls in itertools.combinations(range(n_l), k):
            for ts in itertools.permutations(range(n_t), k):
                d = [np.hypot(*(loc[a] - tru[b])) for a, b in zip(ls, ts)]
                if max(d) <= tol and (k > best[0] or sum(d) < best[1]):
                    best = (k, sum(d))
        if best[0]:
            return best
    return best


def test_hungarian_matches_brute_force_and_beats_greedy(rng):
    for _ in range(20):
        loc = rng.uniform(0, 600, (4, 2))
        tru = rng.uniform(0, 600, (4, 2))
        r = match_localizations(_table([0] * 4, loc[:, 0], loc[:, 1]), _table([0] * 4, tru[:, 0], tru[:, 1]))
        k, total = _brute_force(loc, tru, 250.0)
        assert r.tp == k
        d = np.hypot(r.errors_nm[:, 0], r.errors_nm[:, 1])
        assert d.sum() == pytest.approx(total, rel=1e-9, abs=1e-9)
        g = match_localizations(_table([0] * 4, loc[:, 0], loc[:, 1]), _table([0] * 4, tru[:, 0], tru[:, 1]),
                                assignment="greedy")
        assert g.tp <= r.tp and g.assignment == "greedy" and r.assignment == "hungarian"
    # A case where closest-first loses a pair: L0 sits between T0 and T1, L1 only reaches T0.
    loc = _table([0, 0], [200.0, 0.0], [0.0, 0.0])
    tru = _table([0, 0], [100.0, 400.0], [0.0, 0.0])
    assert match_localizations(loc, tru, assignment="greedy").tp == 1
    assert match_localizations(loc, tru).tp == 2


def test_scores_follow_the_definitions():
    truth = _table([0, 0, 1, 1], [100, 1000, 100, 1000], [100, 100, 100, 100])
    loc = _table([0, 0, 1, 2], [110, 5000, 100, 100], [100, 100, 130, 100])
    r = match_localizations(loc, truth)
    assert (r.tp, r.fp, r.fn) == (2, 2, 2)  # frames are matched separately
    assert r.jaccard == pytest.approx(100 * 2 / 6)
    assert r.recall == 0.5 and r.precision == 0.5
    assert r.rmse_lateral_nm == pytest.approx(np.sqrt((10**2 + 30**2) / 2))
    assert r.efficiency_lateral == pytest.approx(100 - np.sqrt((100 - r.jaccard) ** 2 + r.rmse_lateral_nm**2))
    assert efficiency(100.0, 0.0) == 100.0 and efficiency(100.0, 20.0, alpha=0.5) == pytest.approx(90.0)
    assert np.isnan(r.rmse_axial_nm)


def test_axial_tolerance_and_border_exclusion():
    truth = _table([0, 0], [500, 2000], [500, 500], [0.0, 0.0])
    loc = _table([0, 0], [520, 2000], [500, 500], [100.0, 700.0])
    r = match_localizations(loc, truth)
    assert r.tp == 1 and r.rmse_axial_nm == pytest.approx(100.0)
    assert r.efficiency_axial == pytest.approx(efficiency(r.jaccard, 100.0, alpha=0.5))
    edge_truth = _table([0, 0], [50, 2000], [500, 500])
    edge_loc = _table([0, 0], [60, 2000], [500, 500])
    r = match_localizations(edge_loc, edge_truth, border_nm=100.0, field_nm=(3000.0, 3000.0))
    assert (r.tp, r.fp, r.fn) == (1, 0, 0)


def test_precision_recall_curve_is_monotone_in_recall():
    rng = np.random.default_rng(0)
    truth = _table(np.repeat(np.arange(10), 5), rng.uniform(0, 5000, 50), rng.uniform(0, 5000, 50))
    good = {k: v.copy() for k, v in truth.items()}
    good["x_nm"] = good["x_nm"] + rng.normal(0, 10, 50)
    fp = _table(np.arange(10), rng.uniform(0, 5000, 10), rng.uniform(0, 5000, 10))
    loc = {k: np.concatenate([good[k], fp[k]]) for k in truth}
    loc["score"] = np.concatenate([rng.uniform(5, 10, 50), rng.uniform(0, 5, 10)])  # true ones score higher
    pr = precision_recall_curve(loc, truth, n_thresholds=10)
    assert np.all(np.diff(pr["recall"]) <= 1e-12)
    assert pr["precision"][-1] >= pr["precision"][0]
    assert pr["recall"][0] == 1.0


def test_match_bad_input():
    t = _table([0], [1.0], [1.0])
    with pytest.raises(ValueError, match="y_nm"):
        match_localizations({"frame": [0], "x_nm": [1.0]}, t)
    with pytest.raises(ValueError, match="assignment"):
        match_localizations(t, t, assignment="nearest")
    with pytest.raises(ValueError, match="tolerance_nm"):
        match_localizations(t, t, tolerance_nm=0.0)
    with pytest.raises(ValueError, match="field_nm"):
        match_localizations(t, t, border_nm=10.0)
    with pytest.raises(ValueError, match="localizations"):
        match_localizations(_table([0], [np.nan], [1.0]), t)
    with pytest.raises(ValueError, match="score"):
        precision_recall_curve(t, t)
    empty = match_localizations(_table([], [], []), t)
    assert (empty.tp, empty.fp, empty.fn) == (0, 0, 1) and empty.jaccard == 0.0
