"""Scaling benchmark: throughput of the "many items" users versus device count (1, 2, 4, 8).

Each user of :func:`jaxsr.parallel.batch.sharded_vmap` is timed with its items spread over a
``batch_mesh(n_devices=k)`` for ``k`` = 1, 2, 4, 8:

* ``clid``: :func:`jaxsr.deconv.clid` over the frames of a time-lapse (``mesh=``);
* ``fit_spots``: :func:`jaxsr.smlm.fit_spots` over ROIs (fixed sigma, 10 iterations);
* ``register``: :func:`jaxsr.fusion.register_particles` over particles (a random asymmetric
  2D structure of 12 sites, so no two starts tie by symmetry and the poses can be compared).

Every device count runs in its own subprocess (JAX fixes its devices when it starts): with
``--device cpu`` (default) that process gets ``k`` fake CPU devices (``jax_num_cpu_devices``),
all sharing this machine's cores, so the numbers show correctness and the overhead of
sharding, not a speed-up; with ``--device gpu`` (or ``tpu``) it uses the first ``k`` real
devices, counts up to ``jax.device_count()``. The inputs are the same (seeded) in every process.

Protocol per user and count: one warm-up call, timed apart (``first_call_s``: trace +
compile + one run; ``compile_s`` = that minus the steady-state time), then ``--repeats``
calls, each ended by ``block_until_ready``; the median is ``run_s`` and
``items_per_s = items / run_s``. With one device the unsharded path (``mesh=None``) is timed
too (``unsharded``), so ``k = 1`` shows what ``shard_map`` itself costs. Each sharded output is
compared with the one-device sharded output (``max_abs_diff``, ``rel_diff`` = that over the
largest reference magnitude; ``equal`` when ``rel_diff <= 1e-4``).

Usage:
    python benchmarks/bench_scaling.py [--quick] [--device cpu|gpu|tpu] [--repeats 5]
        [--counts 1,2,4,8] [--out benchmarks/results/bench_scaling.json]

Prints a table and writes JSON (device kind and count, JAX/jaxlib versions, shapes, per-count
``compile_s``/``run_s``/``items_per_s``, the equality checks and a note on what the numbers mean).
``--quick`` (small sizes) takes about a minute on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

USERS = ("clid", "fit_spots", "register")
EQUAL_REL_TOL = 1e-4


def sizes(quick: bool) -> dict:
    """Problem sizes (items and per-item shapes) of each user."""
    if quick:
        return {
            "clid": {"frames": 16, "frame_shape": [32, 32], "upsample": 2, "num_iter": 10, "psf_shape": [13, 13]},
            "fit_spots": {"rois": 4096, "roi_shape": [9, 9], "iterations": 10},
            "register": {"particles": 32, "grid": 36, "n_starts": 2, "steps": 10, "blur_nm": [8.0, 0.0]},
        }
    return {
        "clid": {"frames": 64, "frame_shape": [128, 128], "upsample": 3, "num_iter": 50, "psf_shape": [31, 31]},
        "fit_spots": {"rois": 65536, "roi_shape": [11, 11], "iterations": 10},
        "register": {"particles": 256, "grid": 72, "n_starts": 4, "steps": 20, "blur_nm": [12.0, 6.0, 0.0]},
    }


# --------------------------------------------------------------------------- #
# Worker: one device count, in its own process
# --------------------------------------------------------------------------- #
def _inputs(size: dict):
    """Seeded inputs of every user (identical in every worker process)."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from jaxsr import fusion as F  # noqa: PLC0415
    from jaxsr.deconv import clid_psf  # noqa: PLC0415
    from jaxsr.smlm import gaussian_spot  # noqa: PLC0415

    c = size["clid"]
    frames = jax.random.poisson(jax.random.key(1), 50.0 * jax.random.uniform(
        jax.random.key(2), (c["frames"], *c["frame_shape"])) + 5.0).astype(jnp.float32)
    psf = clid_psf("airy", na=1.4, wavelength_nm=520.0, pixel_size_nm=130.0, upsample=c["upsample"],
                   shape=tuple(c["psf_shape"]))
    f = size["fit_spots"]
    n, (ny, nx) = f["rois"], f["roi_shape"]
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    theta = jnp.stack([(ny - 1) / 2 + jax.random.uniform(k1, (n,), minval=-1, maxval=1),
                       (nx - 1) / 2 + jax.random.uniform(k2, (n,), minval=-1, maxval=1),
                       jnp.full((n,), 1000.0), jnp.full((n,), 10.0)], 1)
    rois = jax.random.poisson(k3, gaussian_spot(theta, shape=(ny, nx), sigma_px=1.3)).astype(jnp.float32)
    r = size["register"]
    sites = np.random.default_rng(4).normal(size=(12, 2)) * np.array([25.0, 12.0])
    sites -= sites.mean(0)
    sim = F.simulate_particles(jax.random.key(5), sites, n_particles=r["particles"], labelling=0.8,
                               locs_per_site=3.0, precision_nm=3.0)
    centred, _ = F.centre_particles(sim.particles)
    tmpl = F.GMM(sites.astype(np.float32), np.broadcast_to(9.0 * np.eye(2, dtype=np.float32), (12, 2, 2)).copy(),
                 np.full(12, 1 / 12, np.float32))
    return {"clid": (frames, psf), "fit_spots": rois, "register": (centred, tmpl, F.rotation_grid(r["grid"], dim=2))}


def _calls(size: dict, inputs: dict):
    """``user -> (items, call(mesh) -> pytree of arrays)``."""
    from jaxsr import fusion as F  # noqa: PLC0415
    from jaxsr.deconv import clid  # noqa: PLC0415
    from jaxsr.smlm import fit_spots  # noqa: PLC0415

    c, f, r = size["clid"], size["fit_spots"], size["register"]
    frames, psf = inputs["clid"]
    centred, tmpl, grid = inputs["register"]
    return {
        "clid": (c["frames"], lambda mesh: clid(frames, psf, upsample=c["upsample"], num_iter=c["num_iter"],
                                                mesh=mesh)),
        "fit_spots": (f["rois"], lambda mesh: fit_spots(inputs["fit_spots"], sigma_px=1.3, iterations=f["iterations"],
                                                        mesh=mesh)),
        "register": (r["particles"], lambda mesh: tuple(F.register_particles(
            centred, tmpl, grid=grid, n_starts=r["n_starts"], steps=r["steps"], blur_nm=tuple(r["blur_nm"]),
            mesh=mesh))),
    }


def _time(call, mesh, repeats: int):
    import jax  # noqa: PLC0415

    t0 = time.perf_counter()
    out = jax.block_until_ready(call(mesh))
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(call(mesh))
        runs.append(time.perf_counter() - t0)
    run = statistics.median(runs)
    return out, {"first_call_s": first, "compile_s": max(first - run, 0.0), "run_s": run, "runs_s": runs}


def worker(args) -> int:
    """Time every user on ``args.n_devices`` devices; print one JSON line, save the outputs to ``args.dump``."""
    import jax  # noqa: PLC0415

    if args.device == "cpu":
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", args.n_devices)
    import jaxlib  # noqa: PLC0415

    import jaxsr  # noqa: PLC0415
    from jaxsr.parallel.batch import batch_mesh  # noqa: PLC0415

    size = sizes(args.quick)
    inputs = _inputs(size)
    mesh = batch_mesh(n_devices=args.n_devices)
    result = {"n_devices": args.n_devices, "device_kind": str(jax.devices()[0].device_kind),
              "backend": jax.default_backend(), "devices_visible": jax.device_count(),
              "jax_version": jax.__version__, "jaxlib_version": jaxlib.__version__, "jaxsr_version": jaxsr.__version__,
              "users": {}}
    arrays = {}
    for user, (items, call) in _calls(size, inputs).items():
        out, timing = _time(call, mesh, args.repeats)
        timing["items"] = items
        timing["items_per_s"] = items / timing["run_s"]
        if args.n_devices == 1:
            _, base = _time(call, None, args.repeats)
            base["items_per_s"] = items / base["run_s"]
            timing["unsharded"] = base
        result["users"][user] = timing
        for i, leaf in enumerate(jax.tree_util.tree_leaves(out)):
            arrays[f"{user}/{i}"] = np.asarray(leaf)
    np.savez(args.dump, **arrays)
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- #
# Driver
# --------------------------------------------------------------------------- #
def _run_worker(n: int, args, dump: str) -> dict:
    env = dict(os.environ)
    if args.device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        # the count is set with jax_num_cpu_devices in the worker; drop a stale XLA flag for it
        env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--n-devices", str(n), "--device", args.device,
           "--repeats", str(args.repeats), "--dump", dump] + (["--quick"] if args.quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker with {n} devices failed:\n{proc.stderr[-4000:]}")
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.strip()][-1])


def _available_devices(device: str) -> int:
    """Real devices of the backend (queried in a subprocess: the driver never initialises a GPU)."""
    code = "import jax; print(jax.device_count())"
    env = dict(os.environ)
    # JAX_PLATFORMS=gpu also requires every other GPU plugin (ROCm's on a CUDA machine) to load:
    # keep a concrete platform set by the caller (benchmarks/run_all.py), else name CUDA's
    env["JAX_PLATFORMS"] = os.environ.get("JAX_PLATFORMS") or ("cuda" if device == "gpu" else device)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"no {device} backend:\n{proc.stderr[-2000:]}")
    return int(proc.stdout.split()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute on a 2-core CPU)")
    parser.add_argument("--device", choices=("cpu", "gpu", "tpu"), default="cpu",
                        help="cpu: k fake CPU devices per count; gpu/tpu: the first k real devices")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--counts", default="1,2,4,8", help="device counts (comma-separated)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "bench_scaling.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n-devices", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--dump", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    counts = sorted({int(c) for c in args.counts.split(",")})
    if 1 not in counts:
        counts = [1] + counts   # the reference of the equality check
    available = None
    if args.device != "cpu":
        available = _available_devices(args.device)
        counts = [c for c in counts if c <= available]
    print(f"{args.device}: device counts {counts}; {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    per_count, outputs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            dump = os.path.join(tmp, f"out_{n}.npz")
            per_count[n] = _run_worker(n, args, dump)
            with np.load(dump) as z:
                outputs[n] = {k: z[k] for k in z.files}
            print(f"  {n} device(s): " + ", ".join(
                f"{u} {per_count[n]['users'][u]['items_per_s']:.4g} items/s" for u in USERS))

    ref = outputs[1]
    results = {}
    for user in USERS:
        rows = []
        for n in counts:
            t = per_count[n]["users"][user]
            keys = [k for k in ref if k.startswith(user + "/")]
            diff = max(float(np.max(np.abs(outputs[n][k].astype(np.float64) - ref[k]), initial=0.0)) for k in keys)
            scale = max(float(np.max(np.abs(ref[k].astype(np.float64)), initial=0.0)) for k in keys)
            row = {"n_devices": n, "items": t["items"], "compile_s": t["compile_s"], "first_call_s": t["first_call_s"],
                   "run_s": t["run_s"], "runs_s": t["runs_s"], "items_per_s": t["items_per_s"],
                   "speedup_vs_1": per_count[1]["users"][user]["run_s"] / t["run_s"],
                   "max_abs_diff_vs_1": diff, "rel_diff_vs_1": diff / scale if scale else diff,
                   "equal_to_1_device": (diff / scale if scale else diff) <= EQUAL_REL_TOL}
            if "unsharded" in t:
                u = t["unsharded"]
                row["unsharded"] = {"compile_s": u["compile_s"], "run_s": u["run_s"], "items_per_s": u["items_per_s"]}
            rows.append(row)
        results[user] = rows

    print(f"\n{'user':10s} {'devices':>7s} {'compile_s':>9s} {'run_s':>8s} {'items/s':>10s} {'speedup':>7s} "
          f"{'rel_diff':>9s}")
    for user, rows in results.items():
        for row in rows:
            print(f"{user:10s} {row['n_devices']:7d} {row['compile_s']:9.2f} {row['run_s']:8.4f} "
                  f"{row['items_per_s']:10.4g} {row['speedup_vs_1']:7.2f} {row['rel_diff_vs_1']:9.2e}")
            if "unsharded" in row:
                u = row["unsharded"]
                print(f"{'':10s} {'none':>7s} {u['compile_s']:9.2f} {u['run_s']:8.4f} {u['items_per_s']:10.4g}")

    first = per_count[counts[0]]
    fake = args.device == "cpu"
    result = {
        "benchmark": "bench_scaling",
        "jax_version": first["jax_version"],
        "jaxlib_version": first["jaxlib_version"],
        "jaxsr_version": first["jaxsr_version"],
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "device": args.device,
        "device_kind": first["device_kind"],
        "backend": first["backend"],
        "fake_cpu_devices": fake,
        "devices_available": available,
        "device_counts": counts,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "quick": bool(args.quick),
        "repeats": args.repeats,
        "shapes": sizes(args.quick),
        "results": results,
        "all_equal_to_1_device": all(r["equal_to_1_device"] for rows in results.values() for r in rows),
        "note": (
            "fake CPU devices (jax_num_cpu_devices) share this machine's "
            f"{os.cpu_count()} cores: these numbers show that sharded output equals the 1-device output and "
            "what sharding costs, not a speed-up; run with --device gpu on a multi-GPU machine for scaling."
            if fake else
            "real devices: items_per_s versus n_devices is the scaling of the many-items mode."
        ),
        "wall_s": time.perf_counter() - t_start,
    }
    from jaxsr.io import write_json  # noqa: PLC0415 (imported last: the driver leaves the devices to the workers)

    write_json(args.out, result, overwrite=True)
    print(f"\nall equal to the 1-device output: {result['all_equal_to_1_device']}; "
          f"wrote {args.out} ({result['wall_s']:.0f} s)")
    return 0 if result["all_equal_to_1_device"] else 1


if __name__ == "__main__":
    sys.exit(main())
