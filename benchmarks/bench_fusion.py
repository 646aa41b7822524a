"""Particle-fusion speed (issue 6 performance targets): dynamic template vs all-to-all vs probreg, one run.

    python benchmarks/bench_fusion.py              # writes benchmarks/results/bench_fusion.json
    python benchmarks/bench_fusion.py --quick      # a smoke test (few particles)

Particles: simulated 3D nuclear pores (:func:`jaxsr.fusion.npc_sites`: two 8-fold rings, radius 53.5 nm,
50 nm apart, two sites per corner), 50 % labelling, 3 localizations per labelled site (about 48 per
particle, the issue's "~50"), 3 nm lateral / 9 nm axial precision, uniformly random orientations over
SO(3). Accuracy is the fraction of particles within 5 degrees of the true pose modulo the pore's D8
symmetry (:func:`jaxsr.fusion.pose_errors`).

1. **Registration of one particle** (``--reg-particles``, default 100) onto the true structure (a
   mixture with the simulation's 3 / 9 nm precision): jaxsr's :func:`jaxsr.fusion.register_particles`
   (2000-rotation grid, refinement; per-localization anisotropic uncertainty) against probreg's rigid
   Coherent Point Drift (``probreg.cpd.registration_cpd``, the peer the issue names; GMM-based, isotropic,
   no uncertainties; the structure's sites are the mixture, the particle's localizations the data, and its
   scale is left free, as by default: see the JSON's note). CPD is local, so it is run from ``S`` start
   rotations (``--probreg-starts``; an SO(3) grid) and the start with the lowest CPD objective is kept;
   reported: accuracy and time per particle for each ``S``, and jaxsr's speed-up against the cheapest
   ``S`` at least as accurate as jaxsr (else the cheapest of the most accurate). probreg is optional (skipped when it does
   not import; it needs ``pip install probreg``, which brings open3d).
2. **Fusion time** (``fuse``, dynamic template, ``symmetry=8, flip=True``, default settings, 5
   iterations) of 200 and 1000 particles: first call (compilation included) and a warm call at 200, then
   1000 (the registration's compiled batch shapes are the same, so it runs warm). Target: 1000 particles in
   under 5 minutes on this 2-core CPU.
3. **All-to-all baseline** (``fuse(init="all_to_all")``: every unordered pair registered once,
   ``P (P - 1) / 2`` registrations, poses synchronised modulo D8, then the same iterations) on the same
   200 particles (``--a2a-particles``). Target: the dynamic template at least 100x faster with equal or
   better accuracy.

Every time is wall-clock on JAX's default device (the probreg peer runs NumPy on the CPU). Writes JSON
with device, versions, settings, times, accuracies and targets; runs unchanged on a GPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxsr import __version__ as jaxsr_version  # noqa: E402
from jaxsr import fusion as F  # noqa: E402
from jaxsr.io import write_json  # noqa: E402

PRECISION_NM = (3.0, 9.0)
FUSE_KW = dict(symmetry=8, flip=True)


def simulate(key, n):
    return F.simulate_particles(key, F.npc_sites(), n_particles=n, labelling=0.5, locs_per_site=3.0,
                                precision_nm=PRECISION_NM)


def accuracy(rotations, sim):
    err, _ = F.pose_errors(rotations, sim.rotations, group=F.symmetry_group(8, flip=True))
    return {"fraction_within_5deg": float(np.mean(err < 5.0)), "median_error_deg": float(np.median(err))}


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def import_probreg():
    try:
        from probreg import cpd  # noqa: PLC0415

        import probreg  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001 - any import failure means: skip the peer
        return None, f"{type(exc).__name__}: {exc}"
    return cpd, probreg.__version__


def registration_section(key, n, probreg_starts):
    sim = simulate(key, n)
    centred, _ = F.centre_particles(sim.particles)
    sites = np.asarray(F.npc_sites(), np.float32)
    cov = np.diag(np.square(np.asarray([PRECISION_NM[0], PRECISION_NM[0], PRECISION_NM[1]], np.float32)))
    template = F.GMM(sites, np.broadcast_to(cov, (len(sites), 3, 3)).copy(),
                     np.full(len(sites), 1.0 / len(sites), np.float32))
    out = {"n_particles": n, "locs_per_particle_mean": float(np.asarray(sim.particles.mask).sum(1).mean())}
    reg, cold = timed(F.register_particles, centred, template)
    reg, warm = timed(F.register_particles, centred, template)
    out["jaxsr"] = {**accuracy(np.asarray(reg.rotations), sim), "first_call_s": cold, "warm_s": warm,
                    "per_particle_ms": 1e3 * warm / n, "grid_rotations": 2000}
    print(f"  jaxsr register_particles: within 5 deg {100 * out['jaxsr']['fraction_within_5deg']:.1f} %, "
          f"{out['jaxsr']['per_particle_ms']:.1f} ms per particle warm (first call {cold:.1f} s)", flush=True)
    cpd, version = import_probreg()
    if cpd is None:
        out["probreg"] = {"skipped": f"import failed: {version}"}
        print(f"  probreg skipped ({version})")
        return out
    out["probreg"] = {"version": version, "starts": {},
                      "method": "cpd rigid: the structure's sites (the mixture's centroids) registered onto the "
                                "particle's localizations (the data), w=0, scale estimated as by default; the "
                                "lowest CPD objective of S starts kept; pose = the inverse rotation",
                      "note": "with update_scale=False probreg 0.3.8's rigid CPD keeps sigma^2 from shrinking "
                              "(its fixed-scale update adds tr(Y'P1Y) instead of subtracting the cross term): "
                              "a noise-free pore rotated by 14 degrees ends 8.6 degrees off, so the scale is left "
                              "free. The roles are the ones CPD models well: every localization near some site "
                              "(unlabelled sites just get no data); the other way round, or with an outlier "
                              "weight w=0.05, fewer than 20 % of 20 test pores came within 5 degrees."}
    pts, mask = np.asarray(centred.points, np.float64), np.asarray(centred.mask)
    target = sites.astype(np.float64)
    for s in probreg_starts:
        starts = np.eye(3)[None] if s == 1 else np.asarray(F.rotation_grid(s, dim=3), np.float64)
        rots = np.zeros((n, 3, 3))
        t0 = time.perf_counter()
        for p in range(n):
            data = pts[p][mask[p]]
            best = None
            for r0 in starts:   # r0: a start pose (particle -> structure); CPD moves the structure: r0^T
                res = cpd.registration_cpd(target, data, tf_type_name="rigid", w=0.0, maxiter=50, tol=1e-4,
                                           tf_init_params={"rot": r0.T.copy(), "t": np.zeros(3)})
                if best is None or res.q < best.q:
                    best = res
            rots[p] = np.asarray(best.transformation.rot).T
        wall = time.perf_counter() - t0
        rec = {**accuracy(rots, sim), "wall_s": wall, "per_particle_ms": 1e3 * wall / n}
        out["probreg"]["starts"][str(s)] = rec
        print(f"  probreg CPD, {s:4d} starts: within 5 deg {100 * rec['fraction_within_5deg']:.1f} %, "
              f"{rec['per_particle_ms']:.1f} ms per particle", flush=True)
    # the reference: the cheapest probreg setting at least as accurate as jaxsr, else the cheapest of its
    # most accurate settings (jaxsr then has to be as accurate and faster)
    ours = out["jaxsr"]["fraction_within_5deg"]
    runs = [(int(s), r) for s, r in out["probreg"]["starts"].items()]
    equal = [e for e in runs if e[1]["fraction_within_5deg"] >= ours]
    if not equal:
        top = max(r["fraction_within_5deg"] for _, r in runs)
        equal = [e for e in runs if e[1]["fraction_within_5deg"] == top]
    s, r = min(equal, key=lambda e: e[1]["per_particle_ms"])
    out["speedup_at_equal_accuracy"] = {
        "probreg_starts": s, "probreg_fraction_within_5deg": r["fraction_within_5deg"],
        "jaxsr_fraction_within_5deg": ours, "value": r["per_particle_ms"] / out["jaxsr"]["per_particle_ms"]}
    return out


def fusion_record(res, sim, wall):
    return {**accuracy(res.rotations, sim), "wall_s": wall, "n_inliers": int(res.inliers.sum()),
            "iterations": len(res.history), "seconds_per_iteration": [h["seconds"] for h in res.history]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20/40 particles, 2 iterations, 8 for all-to-all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--sizes", default="200,1000", help="particle counts for the fusion time")
    ap.add_argument("--a2a-particles", type=int, default=None, help="all-to-all particles (default 200; 0 skips)")
    ap.add_argument("--reg-particles", type=int, default=None, help="particles for section 1 (default 100)")
    ap.add_argument("--probreg-starts", default="1,24,120", help="start rotations tried by probreg's CPD")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench_fusion.json"))
    args = ap.parse_args(argv)
    sizes = [20, 40] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    n_iter = 2 if args.quick else args.iterations
    n_a2a = (8 if args.quick else 200) if args.a2a_particles is None else args.a2a_particles
    n_reg = (10 if args.quick else 100) if args.reg_particles is None else args.reg_particles
    starts = [1, 24] if args.quick else [int(s) for s in args.probreg_starts.split(",") if s]
    k_reg, k_sim, k_fuse = jax.random.split(jax.random.key(args.seed), 3)
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, {os.cpu_count()} CPUs")
    t_start = time.perf_counter()
    report = {"benchmark": "bench_fusion", "device": str(device.device_kind), "backend": jax.default_backend(),
              "jax": jax.__version__, "jaxsr": jaxsr_version, "python": platform.python_version(),
              "cpu_count": os.cpu_count(), "load_average_before": list(os.getloadavg()), "quick": args.quick,
              "iterations": n_iter, "particles": {"structure": "npc_sites (D8)", "labelling": 0.5,
                                                 "locs_per_site": 3.0, "precision_nm": list(PRECISION_NM)}}

    print(f"== 1. registration of one particle onto the true structure ({n_reg} particles)")
    report["registration"] = registration_section(k_reg, n_reg, starts)

    print(f"== 2. dynamic-template fusion ({n_iter} iterations)")
    big = simulate(k_sim, max(sizes + [n_a2a]))
    report["fusion"] = {}
    for i, n in enumerate(sizes):
        sub = big.particles.subset(np.arange(n))
        sim = big._replace(particles=sub, rotations=big.rotations[:n])
        if i == 0:
            _, cold = timed(F.fuse, k_fuse, sub, n_iter=n_iter, **FUSE_KW)
        res, wall = timed(F.fuse, k_fuse, sub, n_iter=n_iter, **FUSE_KW)
        rec = fusion_record(res, sim, wall)
        if i == 0:
            rec["first_call_s"] = cold
        report["fusion"][str(n)] = rec
        print(f"  {n:5d} particles: {wall:.1f} s" + (f" (first call {cold:.1f} s)" if i == 0 else "")
              + f", within 5 deg {100 * rec['fraction_within_5deg']:.1f} %, median {rec['median_error_deg']:.2f} deg",
              flush=True)

    if n_a2a:
        print(f"== 3. all-to-all baseline ({n_a2a} particles, {n_a2a * (n_a2a - 1) // 2} pairs)")
        sub = big.particles.subset(np.arange(n_a2a))
        sim = big._replace(particles=sub, rotations=big.rotations[:n_a2a])
        dyn = report["fusion"].get(str(n_a2a))
        if dyn is None:
            res, wall = timed(F.fuse, k_fuse, sub, n_iter=n_iter, **FUSE_KW)
            dyn = fusion_record(res, sim, wall)
        res, wall = timed(F.fuse, k_fuse, sub, n_iter=n_iter, init="all_to_all", **FUSE_KW)
        rec = fusion_record(res, sim, wall)
        rec.update(pairs=res.history[0]["all_to_all_pairs"], pairs_seconds=res.history[0]["all_to_all_seconds"])
        report["all_to_all"] = {"n_particles": n_a2a, "all_to_all": rec, "dynamic": dyn,
                                "speedup": wall / dyn["wall_s"]}
        print(f"  all-to-all: {wall:.1f} s ({rec['pairs_seconds']:.1f} s for the pairs), within 5 deg "
              f"{100 * rec['fraction_within_5deg']:.1f} %; dynamic template {dyn['wall_s']:.1f} s, "
              f"{100 * dyn['fraction_within_5deg']:.1f} %; speed-up {report['all_to_all']['speedup']:.1f}x", flush=True)

    targets = {}
    if "1000" in report["fusion"]:
        targets["fuse_1000_under_300s"] = {"value": report["fusion"]["1000"]["wall_s"], "target": "< 300 s",
                                           "pass": report["fusion"]["1000"]["wall_s"] < 300.0}
    if "all_to_all" in report:
        a = report["all_to_all"]
        targets["dynamic_vs_all_to_all_speedup"] = {"value": a["speedup"], "target": ">= 100",
                                                    "pass": a["speedup"] >= 100.0}
        targets["dynamic_accuracy_at_least_all_to_all"] = {
            "value": [a["dynamic"]["fraction_within_5deg"], a["all_to_all"]["fraction_within_5deg"]],
            "pass": a["dynamic"]["fraction_within_5deg"] >= a["all_to_all"]["fraction_within_5deg"]}
    sp = report["registration"].get("speedup_at_equal_accuracy")
    if sp is not None:
        targets["registration_faster_than_probreg_at_equal_accuracy"] = {
            "value": sp["value"], "probreg_starts": sp["probreg_starts"], "target": "> 1 at >= probreg's accuracy",
            "pass": sp["value"] > 1.0 and sp["jaxsr_fraction_within_5deg"] >= sp["probreg_fraction_within_5deg"]}
    report["targets"] = targets
    report["load_average_after"] = list(os.getloadavg())
    report["wall_s"] = time.perf_counter() - t_start
    print("== targets")
    for name, t in targets.items():
        print(f"  {name:55s} {t['value']}  {t.get('target', '')}  {'PASS' if t['pass'] else 'MISS'}")
    out = Path(args.out)
    if args.quick:
        out = out.with_name(out.stem + "_quick.json")
    write_json(out, report, overwrite=True, nonfinite="null")
    print(f"wrote {out} ({report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
