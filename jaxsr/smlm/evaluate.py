"""Localization assessment following the SMLM Challenge protocol (Sage et al., Nat. Methods 16, 387 (2019)).

Per frame, localizations are paired with ground-truth emitters within a
lateral tolerance (250 nm) and, in 3D, an axial tolerance (500 nm); a pair is
one-to-one. Two assignments are offered and every result says which was used:

- ``"hungarian"``: the optimal one (minimum total lateral distance among the
  largest set of admissible pairs; :func:`scipy.optimize.linear_sum_assignment`
  on a cost matrix where inadmissible pairs cost more than any admissible set);
- ``"greedy"``: closest pairs first, as many challenge tools do.

From the pairs: TP, FP, FN, recall ``TP / (TP + FN)``, precision
``TP / (TP + FP)``, Jaccard index ``JI = TP / (TP + FP + FN)`` (in %), RMSE
lateral and axial (nm), and the efficiency
``E = 100 - sqrt((100 - JI)^2 + alpha^2 RMSE^2)`` with ``alpha = 1 nm^-1``
laterally and ``0.5 nm^-1`` axially. Ground truth and localizations closer than
``border_nm`` to the field edge are excluded before matching.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from jaxsr.smlm.localize import column_getter

__all__ = ["MatchResult", "match_localizations", "efficiency", "precision_recall_curve", "ASSIGNMENTS"]

ASSIGNMENTS = ("hungarian", "greedy")


class MatchResult(NamedTuple):
    """Result of :func:`match_localizations`.

    Attributes:
        tp, fp, fn: counts of true positives, false positives, false negatives.
        jaccard: Jaccard index in %.
        recall, precision: fractions in [0, 1].
        rmse_lateral_nm, rmse_axial_nm: RMSE of matched pairs (nm; axial NaN in 2D).
        efficiency_lateral, efficiency_axial: SMLM Challenge efficiencies in % (axial NaN in 2D).
        pairs: ``(tp, 2)`` int indices ``(localization, truth)`` of the matched pairs (into the
            inputs as given, before border exclusion).
        errors_nm: ``(tp, 3)`` localization minus truth ``(x, y, z)`` of the pairs (nm).
        assignment: ``"hungarian"`` or ``"greedy"``.
    """

    tp: int
    fp: int
    fn: int
    jaccard: float
    recall: float
    precision: float
    rmse_lateral_nm: float
    rmse_axial_nm: float
    efficiency_lateral: float
    efficiency_axial: float
    pairs: np.ndarray
    errors_nm: np.ndarray
    assignment: str


def efficiency(jaccard: float, rmse_nm: float, *, alpha: float = 1.0) -> float:
    """SMLM Challenge efficiency ``100 - sqrt((100 - JI)^2 + alpha^2 RMSE^2)`` (%, JI in %, RMSE in nm)."""
    return float(100.0 - np.sqrt((100.0 - jaccard) ** 2 + (alpha * rmse_nm) ** 2))


def _columns(table: Any, name: str):
    """(frame, x, y, z) float/int arrays from a dict-like or NamedTuple table."""
    get = column_getter(table)
    try:
        frame = np.asarray(get("frame")).astype(np.int64).reshape(-1)
        x = np.asarray(get("x_nm"), np.float64).reshape(-1)
        y = np.asarray(get("y_nm"), np.float64).reshape(-1)
    except KeyError as err:
        raise ValueError(f"argument '{name}': needs columns frame, x_nm, y_nm ({err} missing)") from None
    try:
        z = np.asarray(get("z_nm"), np.float64).reshape(-1)
        if len(z) and np.isnan(z).all():  # a 2D table with an empty z column
            z = None
    except KeyError:
        z = None
    if not (len(frame) == len(x) == len(y) and (z is None or len(z) == len(x))):
        raise ValueError(f"argument '{name}': columns have different lengths")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"argument '{name}': positions contain NaN or infinity")
    return frame, x, y, z


def _pairs_in_frame(d_lat, d_ax, tol_lat, tol_ax, assignment):
    ok = d_lat <= tol_lat
    if d_ax is not None:
        ok &= d_ax <= tol_ax
    if not ok.any():
        return np.zeros((0, 2), np.int64)
    if assignment == "greedy":
        li, ti = np.nonzero(ok)
        order = np.argsort(d_lat[li, ti], kind="stable")
        used_l, used_t, out = set(), set(), []
        for k in order:
            a, b = li[k], ti[k]
            if a not in used_l and b not in used_t:
                used_l.add(a)
                used_t.add(b)
                out.append((a, b))
        return np.asarray(out, np.int64).reshape(-1, 2)
    # Hungarian: maximise the number of pairs first, then minimise the distance.
    big = tol_lat * (min(d_lat.shape) + 1) + 1.0
    cost = np.where(ok, d_lat, big)
    rows, cols = linear_sum_assignment(cost)
    keep = ok[rows, cols]
    return np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)


def match_localizations(
    localizations: Any,
    truth: Any,
    *,
    tolerance_nm: float = 250.0,
    axial_tolerance_nm: float = 500.0,
    assignment: str = "hungarian",
    border_nm: float = 0.0,
    field_nm: tuple[float, float] | None = None,
) -> MatchResult:
    """Match localizations to ground truth frame by frame and score them (SMLM Challenge 2016).

    Args:
        localizations: table with columns ``frame``, ``x_nm``, ``y_nm`` (and ``z_nm`` in 3D):
            a :class:`~jaxsr.smlm.localize.Localizations` or a dict of arrays.
        truth: ground-truth table with the same columns (e.g. ``SMLMMovie.truth``).
        tolerance_nm: lateral matching radius (nm, default 250).
        axial_tolerance_nm: axial matching tolerance (nm, default 500), used when both
            tables have ``z_nm``.
        assignment: ``"hungarian"`` (optimal, default) or ``"greedy"``.
        border_nm: exclude truth and localizations closer than this to the field edge.
        field_nm: ``(height, width)`` of the field in nm, needed when ``border_nm > 0``.

    Returns:
        :class:`MatchResult`.

    >>> t = {"frame": [0, 0], "x_nm": [100.0, 900.0], "y_nm": [100.0, 100.0]}
    >>> loc = {"frame": [0, 0], "x_nm": [110.0, 2000.0], "y_nm": [100.0, 100.0]}
    >>> r = match_localizations(loc, t)
    >>> r.tp, r.fp, r.fn, round(r.jaccard, 1), r.rmse_lateral_nm
    (1, 1, 1, 33.3, 10.0)
    """
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"argument 'assignment': expected one of {ASSIGNMENTS}, got {assignment!r}")
    for name, v in (("tolerance_nm", tolerance_nm), ("axial_tolerance_nm", axial_tolerance_nm)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"argument '{name}': expected a positive distance in nm, got {v}")
    fl, xl, yl, zl = _columns(localizations, "localizations")
    ft, xt, yt, zt = _columns(truth, "truth")
    three_d = zl is not None and zt is not None
    keep_l = np.ones(len(xl), bool)
    keep_t = np.ones(len(xt), bool)
    if border_nm > 0:
        if field_nm is None:
            raise ValueError("argument 'field_nm': needed with border_nm > 0")
        h, w = field_nm

        def inside(x, y):
            return (x >= border_nm) & (x <= w - border_nm) & (y >= border_nm) & (y <= h - border_nm)

        keep_l, keep_t = inside(xl, yl), inside(xt, yt)
    idx_l, idx_t = np.nonzero(keep_l)[0], np.nonzero(keep_t)[0]
    pairs = []
    by_frame_t = {}
    for k in idx_t:
        by_frame_t.setdefault(ft[k], []).append(k)
    by_frame_l = {}
    for k in idx_l:
        by_frame_l.setdefault(fl[k], []).append(k)
    for f, ls in by_frame_l.items():
        ts = by_frame_t.get(f)
        if not ts:
            continue
        ls, ts = np.asarray(ls), np.asarray(ts)
        d_lat = np.hypot(xl[ls][:, None] - xt[ts][None], yl[ls][:, None] - yt[ts][None])
        d_ax = np.abs(zl[ls][:, None] - zt[ts][None]) if three_d else None
        p = _pairs_in_frame(d_lat, d_ax, tolerance_nm, axial_tolerance_nm, assignment)
        if len(p):
            pairs.append(np.stack([ls[p[:, 0]], ts[p[:, 1]]], axis=1))
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    tp = len(pairs)
    fp = len(idx_l) - tp
    fn = len(idx_t) - tp
    a, b = pairs[:, 0], pairs[:, 1]
    dz = (zl[a] - zt[b]) if three_d else np.full(tp, np.nan)
    errors = np.stack([xl[a] - xt[b], yl[a] - yt[b], dz], axis=1) if tp else np.zeros((0, 3))
    denom = tp + fp + fn
    jaccard = 100.0 * tp / denom if denom else 100.0
    rmse_lat = float(np.sqrt(np.mean(errors[:, 0] ** 2 + errors[:, 1] ** 2))) if tp else float("nan")
    rmse_ax = float(np.sqrt(np.mean(errors[:, 2] ** 2))) if (tp and three_d) else float("nan")
    return MatchResult(
        tp=tp, fp=fp, fn=fn, jaccard=jaccard,
        recall=tp / (tp + fn) if tp + fn else 1.0, precision=tp / (tp + fp) if tp + fp else 1.0,
        rmse_lateral_nm=rmse_lat, rmse_axial_nm=rmse_ax,
        efficiency_lateral=efficiency(jaccard, rmse_lat, alpha=1.0) if tp else float("nan"),
        efficiency_axial=efficiency(jaccard, rmse_ax, alpha=0.5) if (tp and three_d) else float("nan"),
        pairs=pairs, errors_nm=errors, assignment=assignment,
    )


def precision_recall_curve(localizations: Any, truth: Any, *, score: str = "score", n_thresholds: int = 20,
                           **match_kwargs) -> dict:
    """Precision, recall and Jaccard index as the detection threshold on ``score`` rises.

    Args:
        localizations: table with the columns of :func:`match_localizations` plus ``score``.
        truth: ground truth.
        score: the column thresholded (higher = more confident).
        n_thresholds: number of thresholds (quantiles of the scores, from keeping all to keeping few).
        match_kwargs: passed to :func:`match_localizations`.

    Returns:
        dict of arrays ``threshold``, ``precision``, ``recall``, ``jaccard``, ``n_localizations``.
    """
    get = column_getter(localizations)
    try:
        s = np.asarray(get(score), np.float64)
    except KeyError:
        raise ValueError(f"argument 'score': the localizations have no column {score!r}") from None
    cols = ("frame", "x_nm", "y_nm", "z_nm")
    table = {}
    for c in cols:
        try:
            table[c] = np.asarray(get(c))
        except KeyError:
            pass
    thresholds = np.quantile(s, np.linspace(0.0, 0.95, n_thresholds)) if len(s) else np.zeros(0)
    out = {k: [] for k in ("threshold", "precision", "recall", "jaccard", "n_localizations")}
    for t in thresholds:
        keep = s >= t
        r = match_localizations({k: v[keep] for k, v in table.items()}, truth, **match_kwargs)
        for k, v in (("threshold", t), ("precision", r.precision), ("recall", r.recall), ("jaccard", r.jaccard),
                     ("n_localizations", int(keep.sum()))):
            out[k].append(v)
    return {k: np.asarray(v) for k, v in out.items()}
