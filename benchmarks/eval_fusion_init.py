"""Learned versus grid pose initialisation for particle fusion (issue 8 targets), in one run.

    python benchmarks/eval_fusion_init.py            # writes benchmarks/results/eval_fusion_init.json
    python benchmarks/eval_fusion_init.py --quick    # fewer particles and iterations (a smoke test)

Sections (simulated with :func:`jaxsr.fusion.simulate_particles`, seeds fixed):

1. **3D NPC, 30 % and 60 % labelling**: 200 Nup96-like pores (two 8-fold rings, radius 53.5 nm,
   50 nm apart), 2 localizations per labelled site, 3 nm lateral / 9 nm axial precision, uniformly
   random orientations over SO(3); fused with ``symmetry=8, flip=True`` (``D_8``).
2. **2D origami**: 200 3 x 4 DNA-origami grids (20 nm pitch), 30 % labelling, 4 localizations per
   labelled site, 4 nm precision, random in-plane rotations; fused with ``symmetry=2``.

For each: the pose network's own error before any refinement (its top hypothesis and the best of its
hypotheses, modulo the symmetry group, in the class reference frame), and for ``fuse(init="learned")``
(shipped network, :func:`jaxsr.fusion.pretrained_pose_net`) and ``fuse(init="grid")``: the fraction of
particles within 5 degrees of the truth modulo the symmetry group and a global frame
(:func:`jaxsr.fusion.pose_errors`), the median error, that fraction binned by the true rotation angle,
and the wall time. Each fusion is timed twice, first call (with compilation) and warm, and the
speed-ups compare warm times (on a GPU compilation is most of a first call; on this CPU a small
part). ``learned_fast`` is the learned path with fewer iterations and refinement steps (``--fast``,
default 3 iterations of 10 steps per scale, against the grid's 5 of 20): a good initial pose needs
less polishing. Training time comes from
``benchmarks/results/train_pose_net_*.json``.

Targets (issue 8): learned accuracy >= grid accuracy, learned fusion >= 5x faster at 200 particles.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxsr import fusion as F  # noqa: E402
from jaxsr.io import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BINS_DEG = [0, 30, 60, 90, 120, 150, 180]


def _timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def network_errors(model, sim, group):
    """The network's own pose error (deg) modulo the group, no refinement: ``(P, K)``, best first by confidence."""
    pred = F.predict_poses(model, sim.particles)
    m = np.einsum("pkij,pjl->pkil", pred.rotations, sim.rotations)
    return np.degrees(np.min(F.rotation_angle(m[:, :, None] @ np.asarray(group)[None, None]), -1))


def binned(err, angle_deg):
    out = []
    for lo, hi in zip(BINS_DEG[:-1], BINS_DEG[1:]):
        sel = (angle_deg >= lo) & (angle_deg < hi + (1e-9 if hi == 180 else 0))
        out.append({"true_angle_deg": [lo, hi], "n": int(sel.sum()),
                    "fraction_within_5deg": float(np.mean(err[sel] < 5.0)) if sel.any() else None})
    return out


def fusion_summary(res, sim, group, wall, angle_deg):
    err, _ = F.pose_errors(res.rotations, sim.rotations, group=group)
    return {"fraction_within_5deg": float(np.mean(err < 5.0)), "median_error_deg": float(np.median(err)),
            "p90_error_deg": float(np.percentile(err, 90)), "n_inliers": int(np.sum(res.inliers)),
            "n_fallback": int(sum(h.get("n_fallback", 0) for h in res.history)),
            "learned_fallback_to_grid": bool(res.history and res.history[0].get("learned_fallback", False)),
            "wall_s": wall, "by_true_angle": binned(err, angle_deg),
            "history": res.history}


def section(name, key, sim, model, fuse_kw, group, n_iter, fast=None):
    print(f"== {name}: {sim.particles.n_particles} particles, "
          f"{float(np.asarray(sim.particles.mask).sum(1).mean()):.1f} localizations each", flush=True)
    net = network_errors(model, sim, group)
    angle = np.degrees(F.rotation_angle(sim.rotations))
    out = {"n_particles": sim.particles.n_particles,
           "locs_per_particle_mean": float(np.asarray(sim.particles.mask).sum(1).mean()),
           "network": {"median_top1_deg": float(np.median(net[:, 0])),
                       "median_best_of_3_deg": float(np.median(net[:, :3].min(1))),
                       "median_best_of_all_deg": float(np.median(net.min(1))),
                       "top1_within_15deg": float(np.mean(net[:, 0] < 15)),
                       "best_of_all_within_30deg": float(np.mean(net.min(1) < 30)),
                       "top1_within_15deg_by_true_angle": [
                           {"true_angle_deg": [lo, hi],
                            "fraction": float(np.mean(net[(angle >= lo) & (angle <= hi), 0] < 15))
                            if np.any((angle >= lo) & (angle <= hi)) else None}
                           for lo, hi in zip(BINS_DEG[:-1], BINS_DEG[1:])]}}
    print(f"  network alone: top-1 median {out['network']['median_top1_deg']:.1f} deg, best of "
          f"{net.shape[1]} median {out['network']['median_best_of_all_deg']:.1f} deg", flush=True)
    res, wall_cold = _timed(F.fuse, key, sim.particles, n_iter=n_iter, init="learned", pose_model=model, **fuse_kw)
    res, wall = _timed(F.fuse, key, sim.particles, n_iter=n_iter, init="learned", pose_model=model, **fuse_kw)
    out["learned"] = fusion_summary(res, sim, group, wall, angle)
    out["learned"]["wall_first_call_s"] = wall_cold
    r = out["learned"]
    print(f"  learned: within 5 deg {100 * r['fraction_within_5deg']:.1f} %  median {r['median_error_deg']:.2f} deg  "
          f"{wall:.1f} s warm ({wall_cold:.1f} s first call)  fallback {r['n_fallback']}", flush=True)
    if fast is not None:   # the learned path with fewer iterations and steps (its initial poses are close)
        f_iter, f_steps = fast
        kw = dict(n_iter=f_iter, steps=f_steps, init="learned", pose_model=model, **fuse_kw)
        _, wall_cold = _timed(F.fuse, key, sim.particles, **kw)
        res, wall = _timed(F.fuse, key, sim.particles, **kw)
        out["learned_fast"] = fusion_summary(res, sim, group, wall, angle)
        out["learned_fast"].update(wall_first_call_s=wall_cold, iterations=f_iter, steps=f_steps)
        r = out["learned_fast"]
        print(f"  learned, {f_iter} iterations of {f_steps} steps: within 5 deg {100 * r['fraction_within_5deg']:.1f} %"
              f"  median {r['median_error_deg']:.2f} deg  {wall:.1f} s warm  fallback {r['n_fallback']}", flush=True)
    _, wall_cold = _timed(F.fuse, key, sim.particles, n_iter=n_iter, init="grid", **fuse_kw)
    res, wall_g = _timed(F.fuse, key, sim.particles, n_iter=n_iter, init="grid", **fuse_kw)
    out["grid"] = fusion_summary(res, sim, group, wall_g, angle)
    out["grid"]["wall_first_call_s"] = wall_cold
    g, r = out["grid"], out["learned"]
    print(f"  grid:    within 5 deg {100 * g['fraction_within_5deg']:.1f} %  median {g['median_error_deg']:.2f} deg  "
          f"{g['wall_s']:.1f} s warm ({g['wall_first_call_s']:.1f} s first call)", flush=True)
    out["speedup"] = g["wall_s"] / r["wall_s"]
    out["speedup_first_calls"] = g["wall_first_call_s"] / r["wall_first_call_s"]
    out["targets"] = {"accuracy_at_least_grid": r["fraction_within_5deg"] >= g["fraction_within_5deg"],
                      "at_least_5x_faster": out["speedup"] >= 5.0}
    print(f"  speed-up {out['speedup']:.1f}x (first calls {out['speedup_first_calls']:.1f}x); targets "
          f"{out['targets']}", flush=True)
    if "learned_fast" in out:
        f = out["learned_fast"]
        out["speedup_fast"] = g["wall_s"] / f["wall_s"]
        out["targets_fast"] = {"accuracy_at_least_grid": f["fraction_within_5deg"] >= g["fraction_within_5deg"],
                               "at_least_5x_faster": out["speedup_fast"] >= 5.0}
        print(f"  fast learned: speed-up {out['speedup_fast']:.1f}x; targets {out['targets_fast']}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="60 particles, 3 iterations (smoke test)")
    ap.add_argument("--particles", type=int, default=None, help="particles per section (default 200; quick 60)")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sections", default="npc30,npc60,origami")
    ap.add_argument("--fast", default="3,10", metavar="ITER,STEPS",
                    help="also run the learned path with these iterations and steps per scale ('' to skip)")
    ap.add_argument("--out", default=str(RESULTS / "eval_fusion_init.json"))
    args = ap.parse_args(argv)
    n = args.particles or (60 if args.quick else 200)
    n_iter = 3 if args.quick else args.iterations
    fast = tuple(int(v) for v in args.fast.split(",")) if args.fast else None
    keys = jax.random.split(jax.random.key(args.seed), 6)
    report = {"benchmark": "eval_fusion_init", "device": jax.devices()[0].device_kind, "jax": jax.__version__,
              "cpu_count": os.cpu_count(), "quick": args.quick, "iterations": n_iter, "n_particles": n,
              "note": "CPU shared with other jobs; ratios measured in the same process and run"}
    training = {}
    for s in ("npc", "origami"):
        path = RESULTS / f"train_pose_net_{s}.json"
        if path.is_file():
            t = json.loads(path.read_text())
            training[s] = {k: t.get(k) for k in ("training_seconds", "device", "parameters", "model_bytes",
                                                 "validation")}
            training[s]["steps"] = t.get("train", {}).get("steps")
    report["training"] = training
    t0 = time.perf_counter()
    d8 = F.symmetry_group(8, flip=True)
    c2 = F.symmetry_group(2, dim=2)
    wanted = args.sections.split(",")
    for i, dol in enumerate((0.3, 0.6)):
        name = f"npc{int(dol * 100)}"
        if name not in wanted:
            continue
        sim = F.simulate_particles(keys[2 * i], F.npc_sites(radius_nm=53.5, ring_separation_nm=50.0), n_particles=n,
                                   labelling=dol, locs_per_site=2.0, precision_nm=(3.0, 9.0))
        report[f"npc_3d_{int(dol * 100)}"] = section(f"3D NPC, {int(dol * 100)} % labelling", keys[2 * i + 1], sim,
                                                     F.pretrained_pose_net("npc3d"), dict(symmetry=8, flip=True),
                                                     d8, n_iter, fast)
    if "origami" in wanted:
        sim = F.simulate_particles(keys[4], F.origami_sites(rows=3, cols=4, pitch_nm=20.0), n_particles=n,
                                   labelling=0.3, locs_per_site=4.0, precision_nm=4.0)
        report["origami_2d"] = section("2D origami, 30 % labelling", keys[5], sim, F.pretrained_pose_net("origami2d"),
                                       dict(symmetry=2), c2, n_iter, fast)
    report["wall_s"] = time.perf_counter() - t0
    out = Path(args.out)
    if args.quick:
        out = out.with_name(out.stem + "_quick.json")
    write_json(out, report, overwrite=True, nonfinite="null")
    print(f"wrote {out} ({report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
