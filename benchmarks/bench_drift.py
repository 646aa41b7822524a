"""Drift-correction benchmark: jaxsr's RCC (``jaxsr.smlm.estimate_drift``) against Picasso's ``undrift``.

Data: localization tables of a static structure recorded with a known lateral drift, made here with
NumPy from a seeded generator: 600 emitters on worm-like filaments (``jaxsr.smlm.emitter_positions``)
in a ``--field`` (20 um) square, ``--per-frame`` (40) localizations per frame drawn from random
emitters, Gaussian localization error of ``--precision`` (10 nm, reported as each localization's
``lpx``/``lpy``), and a drift of ``0.02 nm/frame + 40 nm sin(f / 2500)`` in x and
``-0.01 nm/frame + 60 nm (1 - cos(f / 4000))`` in y over ``--frames`` (20000) frames: 800k
localizations, about 400 nm x 200 nm of drift. Camera pixel 100 nm (for Picasso's units).

Methods, each on the same table, segments of ``--segment`` (1000) frames:

* ``jaxsr``: :func:`jaxsr.smlm.estimate_drift` with its defaults (segments rendered at 20 nm,
  blurred by 20 nm, every pair cross-correlated, peaks refined on a 20x finer grid and a parabola,
  least squares with outlier pairs dropped, cubic spline). ``compile_s``: its first call minus a
  warm call.
* ``jaxsr_40nm``, ``jaxsr_60nm``: the same with ``pixel_size_nm`` 40 and 60 (and the blur with it).
* ``picasso``: ``picasso.postprocess.undrift`` (Picasso's RCC: segments rendered at the camera pixel
  with each localization blurred by its precision, at least one pixel; ``imageprocess.rcc`` with
  ``max_shift`` 32 pixels; a cubic spline), ``display=False``. Optional: recorded as skipped when
  ``picassosr`` does not import (``pip install picassosr``, or the ``bench`` extra).

``--axial``: the same table made 3D (each emitter at ``z = 250 sin(x / 3 um) + 150 cos(y / 4 um)`` nm,
in 30 % of 200 nm cells 350 nm higher, a second layer; ``--axial-precision`` 25 nm; z drift
``0.004 nm/frame + 50 nm sin(f / 3000)``), jaxsr only (Picasso's ``undrift`` is lateral):
``jaxsr_axial`` (``estimate_drift`` with its defaults: x, y and z) against ``jaxsr_lateral``
(``axial=False``) on the same table, the z error and what the axial step costs. Writes
``bench_drift_axial.json``.

Accuracy: the r.m.s. and largest error of the per-frame drift against the truth after removing
the mean offset (a global translation does not matter for drift correction; the two tools anchor
their drift differently), in nm. Time: median of ``--repeats`` (3) warm calls, each tool timed in
turn within each round, table building (Picasso's DataFrame) outside the timing.

Usage:
    python benchmarks/bench_drift.py [--quick] [--frames 20000] [--repeats 3] [--out ...json]

Writes ``benchmarks/results/bench_drift.json`` (``_quick`` with ``--quick``): device, versions,
CPU count, load average, parameters, every time and error.

References:
    Y. Wang et al., Opt. Express 22, 15982 (2014) (RCC);
    J. Schnitzbauer et al., Nat. Protoc. 12, 1198 (2017) (Picasso).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import time
import warnings
from importlib import metadata

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxsr  # noqa: E402
from jaxsr.io import write_json  # noqa: E402
from jaxsr.smlm import estimate_drift  # noqa: E402
from jaxsr.smlm.simulate import emitter_positions  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CAMERA_PX = 100.0


def drifting_table(frames, per_frame, field, precision, seed):
    """``(table dict in nm, true drift (frames, 2) (x, y) nm)``."""
    rng = np.random.default_rng(seed)
    yx = np.asarray(emitter_positions(jax.random.key(seed), 600, structure="filaments", field_nm=(field, field)))
    frame = np.repeat(np.arange(frames), per_frame)
    f = np.arange(frames, dtype=np.float64)
    true = np.stack([0.02 * f + 40.0 * np.sin(f / 2500.0), -0.01 * f + 60.0 * (1.0 - np.cos(f / 4000.0))], 1)
    site = rng.integers(0, len(yx), frame.size)
    x = yx[site, 1] + true[frame, 0] + rng.normal(0, precision, frame.size)
    y = yx[site, 0] + true[frame, 1] + rng.normal(0, precision, frame.size)
    return {"frame": frame, "x_nm": x, "y_nm": y}, true


def axial_table(table, true, precision_z, seed):
    """The lateral table made 3D: ``(table with z_nm, true drift (frames, 3) (x, y, z) nm)``."""
    rng = np.random.default_rng(seed + 1)
    x0 = table["x_nm"] - true[table["frame"], 0]              # the emitter's position plus its error
    y0 = table["y_nm"] - true[table["frame"], 1]
    f = np.arange(true.shape[0], dtype=np.float64)
    dz = 0.004 * f + 50.0 * np.sin(f / 3000.0)
    # layer chosen per emitter: emitters are the rounded positions' neighbourhoods, so draw per 200 nm cell
    cell = (np.floor(x0 / 200.0) * 1000 + np.floor(y0 / 200.0)).astype(np.int64)
    _, inv = np.unique(cell, return_inverse=True)
    upper = rng.random(inv.max() + 1) < 0.3
    z = 250.0 * np.sin(x0 / 3000.0) + 150.0 * np.cos(y0 / 4000.0) + np.where(upper[inv], 350.0, 0.0)
    z = z + dz[table["frame"]] + rng.normal(0, precision_z, z.size)
    return {**table, "z_nm": z}, np.column_stack([true, dz])


def errors(est, true):
    """r.m.s. and largest error (nm) after removing the mean offset."""
    diff = est - true
    diff = diff - diff.mean(axis=0)
    dist = np.linalg.norm(diff, axis=1)
    return {"rms_nm": float(np.sqrt(np.mean(dist**2))), "max_nm": float(np.max(dist))}


def load_picasso():
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from picasso import postprocess  # noqa: PLC0415 - optional peer
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        return None, f"import failed: {type(err).__name__}: {err}"
    return postprocess, None


def picasso_call(postprocess, table, frames, field, precision, segment):
    import pandas as pd  # noqa: PLC0415 - Picasso's table type

    n = len(table["frame"])
    locs = pd.DataFrame({
        "frame": table["frame"].astype(np.uint32), "x": (table["x_nm"] / CAMERA_PX).astype(np.float32),
        "y": (table["y_nm"] / CAMERA_PX).astype(np.float32), "photons": np.full(n, 5000, np.float32),
        "sx": np.full(n, 1.0, np.float32), "sy": np.full(n, 1.0, np.float32), "bg": np.full(n, 10, np.float32),
        "lpx": np.full(n, precision / CAMERA_PX, np.float32), "lpy": np.full(n, precision / CAMERA_PX, np.float32),
        "ellipticity": np.zeros(n, np.float32), "net_gradient": np.full(n, 1000, np.float32)})
    side = int(np.ceil((field + 1000.0) / CAMERA_PX))
    info = [{"Width": side, "Height": side, "Frames": frames, "Pixelsize": CAMERA_PX}]

    def run():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            drift, _ = postprocess.undrift(locs, info, segment, display=False)
        return np.stack([np.asarray(drift["x"]), np.asarray(drift["y"])], 1) * CAMERA_PX

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4000 frames, 1 repeat (smoke test)")
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--per-frame", type=int, default=40)
    parser.add_argument("--field", type=float, default=20000.0, help="field side, nm")
    parser.add_argument("--precision", type=float, default=10.0, help="localization precision, nm")
    parser.add_argument("--segment", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--axial", action="store_true", help="the 3D case (x, y and z drift), jaxsr only")
    parser.add_argument("--axial-precision", type=float, default=25.0, help="axial localization precision, nm")
    parser.add_argument("--out", default=None, help="default results/bench_drift.json (bench_drift_axial.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.repeats = 4000, 1
    if args.out is None:
        args.out = os.path.join(HERE, "results", "bench_drift_axial.json" if args.axial else "bench_drift.json")
    table, true = drifting_table(args.frames, args.per_frame, args.field, args.precision, args.seed)
    if args.axial:
        table, true = axial_table(table, true, args.axial_precision, args.seed)
        calls = {"jaxsr_axial": lambda: estimate_drift(table, segment_frames=args.segment).drift_nm,
                 "jaxsr_lateral": lambda: np.column_stack([
                     estimate_drift(table, segment_frames=args.segment, axial=False).drift_nm,
                     np.zeros(true.shape[0])])}
    else:
        calls = {"jaxsr": lambda: estimate_drift(table, segment_frames=args.segment).drift_nm}
        for px in (40.0, 60.0):     # coarser renderings: faster, less accurate
            calls[f"jaxsr_{px:.0f}nm"] = (lambda px=px: estimate_drift(table, segment_frames=args.segment,
                                                                        pixel_size_nm=px).drift_nm)
    report = {"benchmark": "bench_drift", "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
              "cpu_count": os.cpu_count(), "load_average_before": list(os.getloadavg()),
              "quick": args.quick, "frames": args.frames, "localizations": int(len(table["frame"])),
              "field_nm": args.field, "precision_nm": args.precision, "segment_frames": args.segment,
              "true_drift_range_nm": np.ptp(true, axis=0).tolist(), "methods": {}}
    if args.axial:
        report["benchmark"], report["axial_precision_nm"] = "bench_drift_axial", args.axial_precision
    versions = {"jax": jax.__version__, "jaxsr": jaxsr.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    postprocess, reason = (None, "lateral only (no z drift)") if args.axial else load_picasso()
    if postprocess is None:
        report["methods"]["picasso"] = {"skipped": reason}
    else:
        calls["picasso"] = picasso_call(postprocess, table, args.frames, args.field, args.precision, args.segment)
        versions["picassosr"] = metadata.version("picassosr")
    report["versions"] = versions
    first = {}
    for name, fn in calls.items():
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    times = {name: [] for name in calls}
    out = {}
    for _ in range(args.repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - t0)
    for name in calls:
        med = statistics.median(times[name])
        report["methods"][name] = {**errors(out[name][:, :2], true[:, :2]), "seconds_median": med,
                                   "seconds": times[name], "first_call_s": first[name],
                                   "compile_s": max(first[name] - med, 0.0)}
        if args.axial:
            report["methods"][name]["z"] = errors(out[name][:, 2:], true[:, 2:])
    if "seconds_median" in report["methods"].get("picasso", {}):
        j, p = report["methods"]["jaxsr"], report["methods"]["picasso"]
        report["speedup_vs_picasso"] = p["seconds_median"] / j["seconds_median"]
        report["error_ratio_picasso_over_jaxsr"] = p["rms_nm"] / j["rms_nm"]
    report["load_average_after"] = list(os.getloadavg())
    print(f"{report['localizations']} localizations, {args.frames} frames, drift range "
          + " x ".join(f"{v:.0f}" for v in report["true_drift_range_nm"]) + " nm")
    for name, r in report["methods"].items():
        if "skipped" in r:
            print(f"  {name:10s} skipped: {r['skipped']}")
        else:
            z = f"  z {r['z']['rms_nm']:6.2f} nm" if "z" in r else ""
            print(f"  {name:10s} r.m.s. error {r['rms_nm']:6.2f} nm  max {r['max_nm']:6.2f} nm{z}  "
                  f"{r['seconds_median']:6.2f} s warm ({r['first_call_s']:.2f} s first call)")
    if "speedup_vs_picasso" in report:
        print(f"  jaxsr {report['speedup_vs_picasso']:.1f}x faster, Picasso's error "
              f"{report['error_ratio_picasso_over_jaxsr']:.1f}x jaxsr's")
    path = args.out
    if args.quick:
        path = path.replace(".json", "_quick.json")
    write_json(path, report, overwrite=True)
    print(f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
