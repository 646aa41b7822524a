"""One image across devices: halo-exchange Richardson-Lucy against single-device RL, over 1..N devices.

For each device count (default 1, 2, 4, 8) the same image is deconvolved by
:func:`jaxsr.deconv.richardson_lucy` on one device and by
:func:`jaxsr.parallel.halo.richardson_lucy_sharded` with the image split into one slab
per device (a halo of ``psf // 2`` rows exchanged twice per iteration with
``lax.ppermute``), both with the default ``boundary="pad"``.

Cases (defaults; ``--quick`` in brackets): ``2d`` = 1024 x 1024 image [256 x 256], 31 x 31
PSF; ``3d`` = 64 x 256 x 256 stack [32 x 64 x 64], 9 x 31 x 31 PSF [9 x 15 x 15], split
along z. ``--iterations`` RL iterations (100 [20]). The image is a Poisson-noisy blurred
random scene (seeded), float32.

Protocol: each function is ``jax.jit``-ed and compiled apart (``compile_s`` = trace + lower
+ compile), then called once untimed (warm-up), then ``--repeats`` timed calls with
``block_until_ready()``; the median is reported. Before timing, the sharded result is
compared with the single-device result: ``rel_diff = max|sharded - single| / max|single|``;
the script exits 1 if it exceeds ``--tol``. For scale, both float32 results are also compared
with single-device RL in float64 (``rel_diff_*_to_float64``): the sharded result is as close
to it as the single-device float32 result is (float32 round-off, growing with iterations). Also recorded: XLA's
compiled memory analysis per device (argument, output and temporary bytes: the per-device
footprint is what sharding one image buys) and the collectives in the compiled program.

Devices: ``--device cpu`` (default) runs each device count in its own subprocess with that
many fake CPU devices (``jax_num_cpu_devices``). Fake devices share the same CPU cores, so
on a CPU the numbers show correctness and the overhead of the halo exchange and of the
redundant halo rows, not a speed-up. ``--device gpu`` (or ``tpu``) runs in this process on
the first 1, 2, 4, ... real accelerators (counts above the available number are skipped):
there the times show the speed-up.

Usage:
    python benchmarks/bench_halo.py [--quick] [--device cpu|gpu|tpu] [--devices 1,2,4,8]
        [--repeats 5] [--iterations N] [--out benchmarks/results/bench_halo.json]

Prints a table and writes JSON (device kind and count, JAX/jaxlib versions, shapes, times,
ratios, differences) with :func:`jaxsr.io.write_json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NOTE_CPU = ("fake CPU devices (jax_num_cpu_devices) share the same CPU cores: these numbers show that the "
            "sharded result equals the single-device one and what the halo exchange and the redundant halo "
            "rows cost, not a speed-up; run with --device gpu on a multi-GPU machine for scaling")


def _cases(quick: bool):
    if quick:
        return {"2d": ((256, 256), (31, 31)), "3d": ((32, 64, 64), (9, 15, 15))}
    return {"2d": ((1024, 1024), (31, 31)), "3d": ((64, 256, 256), (9, 31, 31))}


# --------------------------------------------------------------------------- #
# One device count (in a worker process on CPU, in this process on GPU/TPU)
# --------------------------------------------------------------------------- #
def _scene(shape, psf, seed):
    import numpy as np

    from jaxsr.forward import convolve

    rng = np.random.default_rng(seed)
    obj = np.zeros(shape, np.float32)
    n_points = max(10, int(np.prod(shape) // 2000))
    idx = tuple(rng.integers(0, n, n_points) for n in shape)
    obj[idx] = rng.uniform(200.0, 1000.0, n_points)
    blurred = np.asarray(convolve(obj, psf, boundary="zero"), np.float64) + 10.0
    return rng.poisson(blurred).astype(np.float32)


def _gaussian(shape):
    import numpy as np

    sigmas = [max(1.0, k / 6.0) for k in shape]
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    psf = np.exp(-0.5 * sum((g / s) ** 2 for g, s in zip(grids, sigmas)))
    return (psf / psf.sum()).astype(np.float32)


def _memory(compiled):
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None
    if m is None:
        return None
    return {k: int(getattr(m, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                             "temp_size_in_bytes") if hasattr(m, k)}


def _collectives(hlo: str):
    ops = re.findall(r"(all-gather|collective-permute|all-reduce|all-to-all|reduce-scatter)(?:-start)?[(]", hlo)
    return {op: ops.count(op) for op in sorted(set(ops))}


def _timed(compiled, args, repeats):
    import jax

    jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def run_count(n_dev: int, quick: bool, iterations: int, repeats: int, cases: list[str]) -> dict:
    """Single-device RL and sharded RL on ``n_dev`` devices, for each case."""
    import jax
    import numpy as np

    from jaxsr.deconv import richardson_lucy
    from jaxsr.parallel.halo import default_slab_mesh, richardson_lucy_sharded

    mesh = default_slab_mesh(num_devices=n_dev)
    out = {"n_devices": n_dev, "device_kind": str(jax.devices()[0].device_kind),
           "backend": jax.default_backend(), "cases": {}}
    for name in cases:
        shape, psf_shape = _cases(quick)[name]
        psf = _gaussian(psf_shape)
        image = _scene(shape, psf, seed=20261121)
        args = (jax.device_put(image, jax.devices()[0]), jax.device_put(psf, jax.devices()[0]))
        rec = {"image_shape": list(shape), "psf_shape": list(psf_shape), "iterations": iterations,
               "halo_rows": psf_shape[0] // 2}
        results = {}
        for label, fn in (("single", lambda im, p: richardson_lucy(im, p, num_iter=iterations)),
                          ("sharded", lambda im, p: richardson_lucy_sharded(im, p, num_iter=iterations, mesh=mesh))):
            host_args = (image, psf) if label == "sharded" else args
            t0 = time.perf_counter()
            compiled = jax.jit(fn).lower(*host_args).compile()
            compile_s = time.perf_counter() - t0
            results[label] = np.asarray(compiled(*host_args))
            med, times = _timed(compiled, host_args, repeats)
            rec[label] = {"compile_s": compile_s, "s": med, "times_s": times, "per_iter_s": med / iterations,
                          "memory_per_device": _memory(compiled)}
            if label == "sharded":
                rec[label]["collectives"] = _collectives(compiled.as_text())
        ref = results["single"].astype(np.float64)
        rec["rel_diff"] = float(np.max(np.abs(results["sharded"] - ref)) / np.max(np.abs(ref)))
        # scale of float32 round-off: both float32 results against single-device RL in float64
        with jax.enable_x64(True):
            exact = np.asarray(richardson_lucy(image.astype(np.float64), psf.astype(np.float64),
                                               num_iter=iterations))
        for label in ("single", "sharded"):
            rec[f"rel_diff_{label}_to_float64"] = float(np.max(np.abs(results[label] - exact)) / np.max(exact))
        rec["time_ratio_sharded_to_single"] = rec["sharded"]["s"] / rec["single"]["s"]
        line = shape[0] + psf_shape[0] - 1
        slab = -(-line // n_dev)
        rec["slab_rows"] = slab
        rec["fft_rows_per_device"] = slab + 2 * rec["halo_rows"]
        out["cases"][name] = rec
    return out


# --------------------------------------------------------------------------- #
# Driver
# --------------------------------------------------------------------------- #
def _worker_main(args) -> int:
    import jax

    if args.device == "cpu":
        jax.config.update("jax_num_cpu_devices", args.worker)
    res = run_count(args.worker, args.quick, args.iterations, args.repeats, args.cases)
    print(json.dumps(res))
    return 0


def _spawn(n_dev, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n_dev), "--device", "cpu",
           "--iterations", str(args.iterations), "--repeats", str(args.repeats), "--cases", *args.cases]
    if args.quick:
        cmd.append("--quick")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker for {n_dev} devices failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small images, 20 iterations")
    parser.add_argument("--device", choices=["cpu", "gpu", "tpu"], default="cpu")
    parser.add_argument("--devices", default="1,2,4,8", help="comma-separated device counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=None, help="RL iterations (default 100; 20 with --quick)")
    parser.add_argument("--cases", nargs="+", default=["2d", "3d"], choices=["2d", "3d"])
    parser.add_argument("--tol", type=float, default=1e-4, help="max rel. difference sharded vs single device")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "bench_halo.json"))
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.iterations is None:
        args.iterations = 20 if args.quick else 100
    if args.worker is not None:
        return _worker_main(args)

    import jax
    import jaxlib

    import jaxsr
    from jaxsr.io import write_json

    counts = sorted({int(c) for c in args.devices.split(",")})
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    runs = []
    if args.device == "cpu":
        for n in counts:
            print(f"-- {n} fake CPU device(s)", flush=True)
            runs.append(_spawn(n, args))
    else:
        available = len(jax.devices())
        skipped = [n for n in counts if n > available]
        if skipped:
            print(f"skipping device counts {skipped}: only {available} {args.device} device(s)")
        for n in counts:
            if n <= available:
                print(f"-- {n} {args.device} device(s)", flush=True)
                runs.append(run_count(n, args.quick, args.iterations, args.repeats, args.cases))

    failed = False
    print(f"\n{'case':5s} {'devices':>7s} {'single s':>9s} {'sharded s':>10s} {'ratio':>6s} {'compile s':>18s} "
          f"{'rel diff':>9s} {'vs f64 (1/N)':>17s} {'temp MB/dev':>18s}")
    for run in runs:
        for name, rec in run["cases"].items():
            mem = [rec[k]["memory_per_device"] for k in ("single", "sharded")]
            mem_txt = " / ".join(f"{m['temp_size_in_bytes'] / 1e6:.1f}" if m else "-" for m in mem)
            print(f"{name:5s} {run['n_devices']:7d} {rec['single']['s']:9.3f} {rec['sharded']['s']:10.3f} "
                  f"{rec['time_ratio_sharded_to_single']:6.2f} "
                  f"{rec['single']['compile_s']:8.2f} / {rec['sharded']['compile_s']:6.2f} "
                  f"{rec['rel_diff']:9.1e} {rec['rel_diff_single_to_float64']:8.1e}/"
                  f"{rec['rel_diff_sharded_to_float64']:7.1e} {mem_txt:>18s}")
            if rec["rel_diff"] > args.tol:
                failed = True
                print(f"ERROR: sharded and single-device RL differ by {rec['rel_diff']:.2e} > {args.tol:.0e}")

    result = {
        "benchmark": "bench_halo",
        "command": "python benchmarks/bench_halo.py" + (" --quick" if args.quick else "")
                   + (f" --device {args.device}" if args.device != "cpu" else ""),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "jaxsr_version": jaxsr.__version__,
        "python_version": platform.python_version(),
        "device": args.device,
        "device_kind": runs[0]["device_kind"] if runs else None,
        "device_counts": [r["n_devices"] for r in runs],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "parameters": {
            "quick": bool(args.quick), "iterations": args.iterations, "repeats": args.repeats,
            "boundary": "pad", "split_axis": 0, "dtype": "float32", "tol": args.tol,
            "statistic": "median of repeats after one untimed warm-up call, block_until_ready",
            "compile_s": "trace + lower + compile (jax.jit(f).lower(...).compile())",
            "rel_diff": "max|sharded - single| / max|single|",
            "rel_diff_to_float64": "max|float32 result - float64 single-device RL| / max|float64 RL|",
            "time_ratio_sharded_to_single": "sharded seconds / single-device seconds (< 1: sharded faster)",
            "memory_per_device": "XLA compiled memory analysis of each executable (bytes per device)",
            "fft_rows_per_device": "rows along the split axis each device transforms: slab + 2 halo",
        },
        "runs": runs,
        "notes": [NOTE_CPU] if args.device == "cpu" else [],
        "wall_s": time.perf_counter() - t_start,
    }
    write_json(args.out, result, overwrite=True)
    print(f"\nwrote {args.out} ({result['wall_s']:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
