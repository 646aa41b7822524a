"""FFT convolution benchmark: `jaxsr.forward.convolve` against SciPy, same process and run.

Peers (all given the same float32 NumPy inputs):

* ``scipy.signal.fftconvolve(mode="same")`` and ``scipy.signal.oaconvolve(mode="same")``
  against jaxsr ``boundary="zero"`` (identical results for odd PSF sizes);
* ``scipy.ndimage.convolve(mode="reflect")`` against jaxsr ``boundary="reflect"``,
  only for small kernels (``--ndimage-max-psf`` elements; it is a direct sum).

Cases (defaults sized so the whole run takes about 2 minutes on a 2-core CPU):

* ``2d_psf_small``: 512x512 image, 33x33 PSF;
* ``2d_psf_large``: 512x512 image, 129x129 PSF;
* ``2d_batch``: 16 frames of 256x256, 33x33 PSF; jaxsr in one call over the
  leading batch axis (and, for information, through ``jax.vmap``), SciPy looping
  over the frames;
* ``3d``: 64x256x256 stack, 33x65x65 PSF.

Protocol: the jaxsr call is ``jax.jit``-ed; its first call is timed apart
(trace + compile + one run, ``first_call_s``; ``compile_s`` is trace + lower +
compile alone) from the steady state. Every implementation gets one untimed
warm-up call, then ``--repeats`` timed calls (jaxsr inputs already on the
device, ``block_until_ready()`` inside the timed region); the median is
reported. Before anything is timed the outputs are compared: the error is
``max|jaxsr - peer| / max|peer|`` and the script exits 1 if any exceeds
``--tol`` (1e-4), so a wrong answer is never timed. Ratios are
``peer seconds / jaxsr seconds`` (> 1: jaxsr faster); on a CPU the ratios, not
the absolute seconds, are the claims. SciPy's FFTs run with
``scipy.fft.set_workers(--scipy-workers)`` (default -1: all CPU cores, so both
sides may use every core); ``scipy.ndimage.convolve`` is single-threaded.
Memory: XLA's compiled memory analysis of each jaxsr executable (argument,
output and temporary bytes), and the device's peak bytes in use where the
backend reports it (GPU); none is measured for SciPy.

Usage:
    python benchmarks/convolve.py [--repeats 5] [--quick] [--out benchmarks/results/convolve.json]

Prints a table and writes JSON (device kind, platform, versions, CPU count,
shapes, parameters, per-case times, ratios and errors). Runs unchanged on a GPU.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time

import jax
import jaxlib
import numpy as np
import scipy
import scipy.fft
import scipy.ndimage
import scipy.signal

import jaxsr
from jaxsr.forward import convolve
from jaxsr.io import write_json

HERE = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #
def gaussian_psf(shape, rng):
    """Unit-sum Gaussian-like PSF of ``shape`` (centre ``n // 2``), mildly noisy, float32."""
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    r2 = sum((g / (n / 6.0)) ** 2 for g, n in zip(grids, shape))
    psf = np.exp(-0.5 * r2) * (1.0 + 0.05 * rng.random(shape))
    return (psf / psf.sum()).astype(np.float32)


def make_inputs(image_shape, psf_shape, rng):
    image = (100.0 * rng.random(image_shape)).astype(np.float32)
    return image, gaussian_psf(psf_shape, rng)


# --------------------------------------------------------------------------- #
# Timing helpers
# --------------------------------------------------------------------------- #
def time_calls(fn, repeats):
    """``repeats`` timed calls of ``fn`` (which must block until its result is ready)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def memory_of(compiled):
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if ma is None:
        return None
    out = {}
    for field in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes"):
        value = getattr(ma, field, None)
        if value is not None:
            out[field.replace("_size_in_bytes", "_bytes")] = int(value)
    if out:
        out["total_bytes"] = sum(out.values())
    return out or None


def jaxsr_first_call(fn, image, psf):
    """Trace + lower + compile + one run of the jitted ``fn``, timed; returns (output, record)."""
    t0 = time.perf_counter()
    compiled = fn.lower(image, psf).compile()
    t1 = time.perf_counter()
    out = compiled(image, psf)
    out.block_until_ready()
    t2 = time.perf_counter()
    record = {"compile_s": t1 - t0, "first_call_s": t2 - t0, "memory": memory_of(compiled)}
    return out, record


def jaxsr_steady(fn, image, psf, repeats):
    fn(image, psf).block_until_ready()  # warm-up (untimed)
    times = time_calls(lambda: fn(image, psf).block_until_ready(), repeats)
    return {"s": statistics.median(times), "times_s": times}


def rel_error(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    scale = float(np.max(np.abs(ref)))
    return float(np.max(np.abs(ours - ref)) / (scale if scale > 0 else 1.0))


# --------------------------------------------------------------------------- #
# Peers
# --------------------------------------------------------------------------- #
def peer_functions(image, psf, batched, workers):
    """name -> (boundary it matches, callable returning a NumPy array)."""

    def per_frame(single):
        if not batched:
            return lambda: single(image)
        return lambda: np.stack([single(frame) for frame in image])

    def with_workers(f):
        def call():
            with scipy.fft.set_workers(workers):
                return f()
        return call

    return {
        "scipy.signal.fftconvolve": (
            "zero", with_workers(per_frame(lambda x: scipy.signal.fftconvolve(x, psf, mode="same")))),
        "scipy.signal.oaconvolve": (
            "zero", with_workers(per_frame(lambda x: scipy.signal.oaconvolve(x, psf, mode="same")))),
        "scipy.ndimage.convolve": (
            "reflect", per_frame(lambda x: scipy.ndimage.convolve(x, psf, mode="reflect"))),
    }


# --------------------------------------------------------------------------- #
# One case
# --------------------------------------------------------------------------- #
def run_case(name, image_shape, psf_shape, batched, args, rng):
    image, psf = make_inputs(image_shape, psf_shape, rng)
    image_dev, psf_dev = jax.device_put(image), jax.device_put(psf)
    use_ndimage = psf.size <= args.ndimage_max_psf
    peers = peer_functions(image, psf, batched, args.scipy_workers)
    if not use_ndimage:
        del peers["scipy.ndimage.convolve"]
    boundaries = sorted({b for b, _ in peers.values()}, key=("zero", "reflect").index)

    case = {
        "name": name,
        "image_shape": list(image_shape),
        "psf_shape": list(psf_shape),
        "dtype": "float32",
        "batched": batched,
        "jaxsr_call": ("one call over the leading batch axis" if batched else "one call"),
        "peer_call": ("python loop over frames" if batched else "one call"),
        "ndimage_included": use_ndimage,
        "jaxsr": {},
        "peers": {},
    }
    outputs = {}
    for b in boundaries:
        fn = jax.jit(functools.partial(convolve, boundary=b))
        out, record = jaxsr_first_call(fn, image_dev, psf_dev)
        outputs[b] = np.asarray(out)
        record.update(jaxsr_steady(fn, image_dev, psf_dev, args.repeats))
        case["jaxsr"][b] = record

    if batched:  # the same through jax.vmap over frames, for information
        fn = jax.jit(jax.vmap(functools.partial(convolve, boundary="zero"), in_axes=(0, None)))
        out, record = jaxsr_first_call(fn, image_dev, psf_dev)
        record["max_rel_error_vs_batch_axis"] = rel_error(out, outputs["zero"])
        record.update(jaxsr_steady(fn, image_dev, psf_dev, args.repeats))
        record["boundary"] = "zero"
        case["jaxsr_vmap"] = record

    for peer, (b, call) in peers.items():
        ref = call()  # warm-up (untimed); its output is the check
        err = rel_error(outputs[b], ref)
        entry = {"boundary": b, "max_rel_error": err, "agree": err <= args.tol}
        if entry["agree"]:
            times = time_calls(call, args.repeats)
            entry.update(s=statistics.median(times), times_s=times,
                         ratio=statistics.median(times) / case["jaxsr"][b]["s"])
        else:
            entry.update(s=None, times_s=None, ratio=None)
        case["peers"][peer] = entry

    case["compile_s"] = {b: r["compile_s"] for b, r in case["jaxsr"].items()}
    case["first_call_s"] = {b: r["first_call_s"] for b, r in case["jaxsr"].items()}
    case["jaxsr_s"] = {b: r["s"] for b, r in case["jaxsr"].items()}
    case["peers_s"] = {p: e["s"] for p, e in case["peers"].items()}
    case["ratios"] = {p: e["ratio"] for p, e in case["peers"].items()}
    case["max_rel_error"] = max(e["max_rel_error"] for e in case["peers"].values())
    if "jaxsr_vmap" in case:
        case["max_rel_error"] = max(case["max_rel_error"], case["jaxsr_vmap"]["max_rel_error_vs_batch_axis"])
    case["agree"] = case["max_rel_error"] <= args.tol
    return case


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def shape_arg(text):
    return tuple(int(v) for v in text.lower().replace("x", ",").split(",") if v)


def case_specs(args):
    if args.quick:
        n, k_small, k_large = 64, (9, 9), (17, 17)
        batch, frame, k_batch = 4, 32, (9, 9)
        stack, k3 = (8, 32, 32), (5, 9, 9)
    else:
        n, k_small, k_large = args.size, (args.psf_small,) * 2, (args.psf_large,) * 2
        batch, frame, k_batch = args.batch, args.frame, (args.psf_batch,) * 2
        stack, k3 = args.stack, args.psf3d
    specs = {
        "2d_psf_small": ((n, n), k_small, False),
        "2d_psf_large": ((n, n), k_large, False),
        "2d_batch": ((batch, frame, frame), k_batch, True),
        "3d": (tuple(stack), tuple(k3), False),
    }
    return {name: specs[name] for name in args.cases}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per implementation (median)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke test")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "convolve.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", nargs="+", default=["2d_psf_small", "2d_psf_large", "2d_batch", "3d"],
                        choices=["2d_psf_small", "2d_psf_large", "2d_batch", "3d"])
    parser.add_argument("--size", type=int, default=512, help="2D image side")
    parser.add_argument("--psf-small", type=int, default=33, help="small 2D PSF side")
    parser.add_argument("--psf-large", type=int, default=129, help="large 2D PSF side")
    parser.add_argument("--batch", type=int, default=16, help="frames in the batch case")
    parser.add_argument("--frame", type=int, default=256, help="frame side in the batch case")
    parser.add_argument("--psf-batch", type=int, default=33, help="PSF side in the batch case")
    parser.add_argument("--stack", type=shape_arg, default=(64, 256, 256), help="3D image shape z,y,x")
    parser.add_argument("--psf3d", type=shape_arg, default=(33, 65, 65), help="3D PSF shape z,y,x")
    parser.add_argument("--ndimage-max-psf", type=int, default=33 * 33,
                        help="include scipy.ndimage.convolve when the PSF has at most this many elements")
    parser.add_argument("--scipy-workers", type=int, default=-1,
                        help="scipy.fft workers for the SciPy FFT peers (-1: all CPU cores)")
    parser.add_argument("--tol", type=float, default=1e-4, help="max error relative to max|output|")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.quick:
        args.repeats = min(args.repeats, 2)
    rng = np.random.default_rng(args.seed)

    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"scipy {scipy.__version__}, {os.cpu_count()} CPUs, repeats {args.repeats}")

    t_start = time.perf_counter()
    cases = []
    for name, (image_shape, psf_shape, batched) in case_specs(args).items():
        case = run_case(name, image_shape, psf_shape, batched, args, rng)
        cases.append(case)
        shape = "x".join(map(str, image_shape))
        kshape = "x".join(map(str, psf_shape))
        print(f"\n{name}: image {shape}, psf {kshape}, max rel error {case['max_rel_error']:.2e}")
        for b, r in case["jaxsr"].items():
            print(f"  jaxsr {b:<8} compile {r['compile_s']:7.3f} s  first call {r['first_call_s']:7.3f} s  "
                  f"steady {r['s']:9.5f} s")
        if "jaxsr_vmap" in case:
            r = case["jaxsr_vmap"]
            print(f"  jaxsr vmap     compile {r['compile_s']:7.3f} s  first call {r['first_call_s']:7.3f} s  "
                  f"steady {r['s']:9.5f} s")
        for p, e in case["peers"].items():
            if e["s"] is None:
                print(f"  {p:<26} ({e['boundary']}) DISAGREES: error {e['max_rel_error']:.2e} > {args.tol}")
            else:
                print(f"  {p:<26} ({e['boundary']:<7}) {e['s']:9.5f} s  ratio {e['ratio']:6.2f}  "
                      f"error {e['max_rel_error']:.1e}")
    total_s = time.perf_counter() - t_start

    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - CPU backends may not implement it
        stats = None
    peak = int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None

    workers = args.scipy_workers if args.scipy_workers > 0 else os.cpu_count()
    result = {
        "benchmark": "convolve",
        "command": ("python benchmarks/convolve.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip(),
        "jaxsr_version": jaxsr.__version__,
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "scipy_version": scipy.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "device_kind": str(device.device_kind),
        "device_count": jax.device_count(),
        "backend": jax.default_backend(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "parameters": {
            "repeats": args.repeats, "quick": args.quick, "seed": args.seed, "tol": args.tol,
            "ndimage_max_psf": args.ndimage_max_psf, "scipy_fft_workers": workers,
            "statistic": "median of repeats, after one untimed warm-up call",
            "ratio": "peer seconds / jaxsr seconds at the matching boundary (> 1: jaxsr faster)",
            "error": "max|jaxsr - peer| / max|peer|",
            "compile_s": "jaxsr trace + lower + compile (jit(...).lower().compile())",
            "first_call_s": "compile_s plus the first run",
            "memory": "XLA compiled memory analysis of the jaxsr executable",
        },
        "device_peak_bytes_in_use": peak,
        "cases": cases,
        "total_s": total_s,
        "all_agree": all(c["agree"] for c in cases),
    }
    write_json(args.out, result, overwrite=True)
    print(f"\nwrote {os.path.relpath(args.out)} in {total_s:.1f} s; all outputs agree: {result['all_agree']}")
    return 0 if result["all_agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
