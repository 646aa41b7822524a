"""Out-of-core Richardson-Lucy: peak memory and time, chunk by chunk (Zarr -> Zarr) vs whole volume in memory.

A Poisson volume of point sources (seeded; blurred by a Gaussian PSF, plus background) is
written to a Zarr store chunked as it will be processed, many times larger than one
chunk (default 96 x 384 x 768 float32 = 108 MiB in 32 x 128 x 128 chunks, 54 chunks;
``--quick``: 48 x 192 x 384 = 13.5 MiB in 16 x 64 x 64 chunks, 54 chunks), and its first
half along x to a second store. Each run below is a fresh Python process, so its peak
resident memory (``VmHWM`` from ``/proc/self/status``; ``ru_maxrss`` where there is no
``/proc``) is its own:

* ``chunked_threads``: :func:`jaxsr.parallel.outofcore.deconvolve_chunked`, Zarr -> Zarr, default
  halo (``depth="auto"``), Dask threaded scheduler with ``--workers`` threads;
* ``chunked_sync``: the same with the synchronous scheduler (one chunk at a time);
* ``chunked_sync_half``: the same on the half volume (at least 3 chunks along every axis
  in both, so both have the same set of block shapes): the peak memory of chunked
  processing must not grow with the volume;
* ``chunked_sync_big_chunks``: the full volume in chunks twice as large along y and x
  (4x the voxels): the peak memory follows the chunk size;
* ``whole`` and ``whole_half``: the volume (and its half) read into memory and
  deconvolved by :func:`jaxsr.deconv.richardson_lucy` in one call, written to Zarr.

Each process reports the resident memory after importing JAX and jaxsr and running a
tiny RL (``baseline_rss_mb``, the runtime's own footprint), its peak (``peak_rss_mb``,
compilation included) and the wall time of its call (``cold_s``, compilation included);
``chunked_threads`` and ``whole`` call twice and also report the second call
(``warm_s``, every kernel compiled). ``working_mb = peak - baseline`` is what the
processing itself needed; ``volume_mb`` and ``chunk_mb`` are the float32 sizes.

Seam error: the chunked (``depth="auto"``) and whole-volume outputs are compared
(max ``|chunked - whole| / max(whole)``, at the seams, i.e. within one PSF radius of
an internal chunk border, and in chunk interiors); and on a subvolume in this process,
``depth="auto"`` and ``depth="exact"`` against whole-subvolume RL at ``--seam-iterations``
(few, so that the exact halo stays smaller than the volume and is a real test).

Usage:
    python benchmarks/bench_outofcore.py [--quick] [--workers 2] [--iterations 50]
        [--shape 96x384x768] [--chunks 32x128x128] [--out benchmarks/results/bench_outofcore.json]

Prints a table and writes JSON (device kind, versions, CPU count, load average, shapes,
memory and times per run, seam errors). Runs unchanged on a GPU (the chunk kernel then runs
on the GPU; host memory is what is measured).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PSF_SIGMA = (1.2, 1.0, 1.0)  # pixels (z, y, x)
PSF_SHAPE = (7, 7, 7)
BACKGROUND = 2.0


def _rss_mb() -> float:
    """Peak resident memory of this process (MB): VmHWM on Linux, else ``ru_maxrss``.

    ``ru_maxrss`` survives ``execve``: a child started from a parent holding the volume would
    report at least the parent's resident memory at the fork. VmHWM belongs to the new image.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    scale = 2**20 if sys.platform == "darwin" else 2**10  # bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


# --------------------------------------------------------------------------- #
# Child processes (this script with --child SPEC)
# --------------------------------------------------------------------------- #
def child(spec: dict) -> dict:
    t_import = time.perf_counter()
    import jax
    import zarr  # noqa: F401 - imported before the baseline is taken

    from jaxsr.deconv import richardson_lucy
    from jaxsr.parallel import outofcore  # noqa: F401

    psf = np.load(spec["psf"])
    np.asarray(richardson_lucy(np.ones((8, 8, 8), np.float32), psf[:3, :3, :3], num_iter=1))
    out = {"import_s": time.perf_counter() - t_import, "baseline_rss_mb": _rss_mb(),
           "device_kind": str(jax.devices()[0].device_kind)}
    times = []
    for call in range(2 if spec["warm"] else 1):
        dst = f"{spec['dst']}.{call}.zarr"
        t0 = time.perf_counter()
        _run_once(spec, psf, dst, out)
        times.append(time.perf_counter() - t0)
        if call == 1:
            shutil.rmtree(dst)  # keep the first output for the comparison
    out.update(cold_s=times[0], warm_s=times[1] if len(times) > 1 else None, peak_rss_mb=_rss_mb())
    out["working_mb"] = out["peak_rss_mb"] - out["baseline_rss_mb"]
    return out


def _run_once(spec: dict, psf: np.ndarray, dst: str, out: dict) -> None:
    import zarr

    from jaxsr.deconv import richardson_lucy
    from jaxsr.parallel.outofcore import deconvolve_chunked

    if spec["mode"] == "chunked":
        res = deconvolve_chunked(spec["src"], dst, psf, num_iter=spec["num_iter"], background=BACKGROUND,
                                 depth=spec["depth"], chunks=spec["chunks"], scheduler=spec["scheduler"],
                                 num_workers=spec["workers"])
        out.update(depth=list(res.depth), num_chunks=res.num_chunks,
                   block_shapes=[list(s) for s in res.block_shapes])
    else:
        data = zarr.open_array(spec["src"], mode="r")[:]
        est = np.asarray(richardson_lucy(data, psf, num_iter=spec["num_iter"], background=BACKGROUND))
        zarr.create_array(dst, shape=est.shape, chunks=spec["chunks"], dtype="float32")[:] = est


def run_child(spec: dict, timeout: float) -> dict:
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec['mode']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
def gaussian_psf(shape, sigma):
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    p = np.exp(-sum(g**2 / (2.0 * s**2) for g, s in zip(grids, sigma)))
    return (p / p.sum()).astype(np.float32)


def make_volume(shape, rng):
    """Point sources (one per 400 voxels, 200-2000 photons) on 1 photon/voxel, blurred, + background, Poisson."""
    from scipy import ndimage

    obj = np.ones(shape, np.float32)
    n = int(np.prod(shape) // 400)
    idx = tuple(rng.integers(0, s, n) for s in shape)
    obj[idx] += rng.uniform(200.0, 2000.0, n).astype(np.float32)
    blurred = ndimage.gaussian_filter(obj, PSF_SIGMA, mode="constant", truncate=4.0)
    return rng.poisson(blurred + BACKGROUND).astype(np.float32)


def seam_mask(shape, chunks, radius):
    mask = np.zeros(shape, bool)
    for ax, (n, c, r) in enumerate(zip(shape, chunks, radius)):
        for b in range(c, n, c):
            sl = [slice(None)] * len(shape)
            sl[ax] = slice(max(b - r, 0), b + r)
            mask[tuple(sl)] = True
    return mask


def rel_errors(ours, ref, seams):
    err = np.abs(ours - ref) / ref.max()
    return {"max": float(err.max()), "seams": float(err[seams].max()) if seams.any() else None,
            "interiors": float(err[~seams].max())}


def seam_subvolume(volume, psf, shape, chunks, num_iter):
    """depth auto vs exact against whole-subvolume RL, in this process."""
    from jaxsr.deconv import richardson_lucy
    from jaxsr.parallel.outofcore import chunk_depth, richardson_lucy_dask

    sub = np.ascontiguousarray(volume[tuple(slice(0, n) for n in shape)])
    whole = np.asarray(richardson_lucy(sub, psf, num_iter=num_iter, background=BACKGROUND))
    seams = seam_mask(shape, chunks, tuple(k // 2 for k in psf.shape))
    out = {"shape": list(shape), "chunks": list(chunks), "num_iter": num_iter}
    for depth in ("auto", "exact"):
        got = richardson_lucy_dask(sub, psf, num_iter=num_iter, background=BACKGROUND, depth=depth, chunks=chunks,
                                   scheduler="synchronous").compute(scheduler="synchronous")
        out[depth] = {"depth": list(chunk_depth(psf, num_iter=num_iter, depth=depth)),
                      **rel_errors(got, whole, seams)}
    return out


def shape_arg(text):
    return tuple(int(v) for v in text.lower().split("x"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="13.5 MiB volume, 10 iterations (< 2 min on 2 cores)")
    parser.add_argument("--shape", type=shape_arg, default=None, help="volume, e.g. 96x384x768")
    parser.add_argument("--chunks", type=shape_arg, default=None, help="chunk, e.g. 32x128x128")
    parser.add_argument("--iterations", type=int, default=None, help="RL iterations (default 50; 10 with --quick)")
    parser.add_argument("--seam-iterations", type=int, default=3, help="RL iterations of the subvolume check")
    parser.add_argument("--workers", type=int, default=2, help="Dask threads of chunked_threads")
    parser.add_argument("--workdir", default=None, help="folder for the Zarr stores (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per child process")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "bench_outofcore.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    import dask
    import jax
    import jaxlib
    import tifffile
    import zarr

    import jaxsr
    from jaxsr.io import write_json
    from jaxsr.parallel.outofcore import chunk_depth

    shape = args.shape or ((48, 192, 384) if args.quick else (96, 384, 768))
    chunks = args.chunks or ((16, 64, 64) if args.quick else (32, 128, 128))
    num_iter = args.iterations or (10 if args.quick else 50)
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()}")
    load_before = os.getloadavg()
    t_start = time.perf_counter()

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_outofcore_")
    os.makedirs(workdir, exist_ok=True)
    try:
        rng = np.random.default_rng(20261121)
        psf = gaussian_psf(PSF_SHAPE, PSF_SIGMA)
        psf_path = os.path.join(workdir, "psf.npy")
        np.save(psf_path, psf)
        volume = make_volume(shape, rng)
        half = (*shape[:-1], shape[-1] // 2)
        sources = {}
        for name, data in (("full", volume), ("half", volume[..., : half[-1]])):
            path = os.path.join(workdir, f"{name}.zarr")
            zarr.create_array(path, shape=data.shape, chunks=chunks, dtype="float32")[:] = data
            sources[name] = path
        depth = chunk_depth(psf, num_iter=num_iter)
        print(f"volume {shape} ({volume.nbytes / 2**20:.0f} MiB), chunks {chunks}, "
              f"{int(np.prod([-(-n // c) for n, c in zip(shape, chunks)]))} chunks, PSF {PSF_SHAPE} "
              f"sigma {PSF_SIGMA}, {num_iter} iterations, halo {depth}")

        big_chunks = (chunks[0], *(2 * c for c in chunks[1:]))
        runs = {
            "chunked_threads": {"mode": "chunked", "src": sources["full"], "scheduler": "threads",
                                "workers": args.workers, "warm": True},
            "whole": {"mode": "whole", "src": sources["full"], "warm": True},
            "chunked_sync": {"mode": "chunked", "src": sources["full"], "scheduler": "synchronous"},
            "chunked_sync_half": {"mode": "chunked", "src": sources["half"], "scheduler": "synchronous"},
            "chunked_sync_big_chunks": {"mode": "chunked", "src": sources["full"], "scheduler": "synchronous",
                                        "chunks": list(big_chunks)},
            "whole_half": {"mode": "whole", "src": sources["half"]},
        }
        results = {}
        print(f"\n{'run':24s} {'volume MiB':>10s} {'chunk MiB':>9s} {'baseline':>9s} {'peak MB':>8s} "
              f"{'working':>8s} {'cold s':>7s} {'warm s':>7s}")
        for name, spec in runs.items():
            spec = {"workers": None, "warm": False, "chunks": list(chunks), **spec,
                    "dst": os.path.join(workdir, f"out_{name}"), "psf": psf_path, "num_iter": num_iter,
                    "depth": "auto"}
            res = run_child(spec, args.timeout)
            vol_shape = shape if spec["src"] == sources["full"] else half
            res.update(volume_shape=list(vol_shape), volume_mb=float(np.prod(vol_shape) * 4 / 2**20),
                       chunks=spec["chunks"], chunk_mb=float(np.prod(spec["chunks"]) * 4 / 2**20),
                       scheduler=spec.get("scheduler"), workers=spec.get("workers"))
            results[name] = res
            chunk_txt = f"{res['chunk_mb']:9.2f}" if spec["mode"] == "chunked" else f"{'-':>9s}"
            warm_txt = f"{res['warm_s']:7.1f}" if res["warm_s"] is not None else f"{'-':>7s}"
            print(f"{name:24s} {res['volume_mb']:10.1f} {chunk_txt} {res['baseline_rss_mb']:9.0f} "
                  f"{res['peak_rss_mb']:8.0f} {res['working_mb']:8.0f} {res['cold_s']:7.1f} {warm_txt}")

        whole_out = zarr.open_array(os.path.join(workdir, "out_whole.0.zarr"), mode="r")[:]
        chunk_out = zarr.open_array(os.path.join(workdir, "out_chunked_threads.0.zarr"), mode="r")[:]
        sync_out = zarr.open_array(os.path.join(workdir, "out_chunked_sync.0.zarr"), mode="r")[:]
        seams = seam_mask(shape, chunks, tuple(k // 2 for k in PSF_SHAPE))
        full_seam = {"depth": list(depth), "num_iter": num_iter, **rel_errors(chunk_out, whole_out, seams),
                     "threads_vs_sync_max_abs": float(np.abs(chunk_out - sync_out).max())}
        del whole_out, chunk_out, sync_out
        sub_shape = tuple(min(n, s) for n, s in zip(shape, (48, 96, 96)))
        sub_chunks = tuple(max(1, n // 2) for n in sub_shape)
        sub = seam_subvolume(volume, psf, sub_shape, sub_chunks, args.seam_iterations)
        print(f"\nseam error, full volume, depth auto {tuple(depth)}, {num_iter} it: max {full_seam['max']:.1e} "
              f"(seams {full_seam['seams']:.1e}, interiors {full_seam['interiors']:.1e})")
        for d in ("auto", "exact"):
            e = sub[d]
            print(f"seam error, subvolume {sub_shape} in {sub_chunks}, {args.seam_iterations} it, depth {d} "
                  f"{tuple(e['depth'])}: max {e['max']:.1e} (seams {e['seams']:.1e}, interiors {e['interiors']:.1e})")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    chunk_mb = float(np.prod(chunks) * 4 / 2**20)
    block_mb = float(np.prod([c + 2 * d for c, d in zip(chunks, depth)]) * 4 / 2**20)
    summary = {
        "chunked_sync_working_mb": results["chunked_sync"]["working_mb"],
        "chunked_threads_working_mb": results["chunked_threads"]["working_mb"],
        "chunked_sync_big_chunks_working_mb": results["chunked_sync_big_chunks"]["working_mb"],
        "whole_working_mb": results["whole"]["working_mb"],
        "working_ratio_whole_to_chunked_sync": results["whole"]["working_mb"]
        / max(results["chunked_sync"]["working_mb"], 1e-9),
        "chunked_sync_working_growth_half_to_full": results["chunked_sync"]["working_mb"]
        - results["chunked_sync_half"]["working_mb"],
        "whole_working_growth_half_to_full": results["whole"]["working_mb"] - results["whole_half"]["working_mb"],
        "warm_time_ratio_chunked_threads_to_whole": results["chunked_threads"]["warm_s"] / results["whole"]["warm_s"],
        "cold_time_ratio_chunked_threads_to_whole": results["chunked_threads"]["cold_s"] / results["whole"]["cold_s"],
        "halo_overhead_voxels": float(np.prod([c + 2 * d for c, d in zip(chunks, depth)]) / np.prod(chunks)),
    }
    print("\n" + "\n".join(f"  {k:45s} {v:10.2f}" for k, v in summary.items()))
    result = {
        "benchmark": "bench_outofcore",
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "jaxsr_version": jaxsr.__version__,
        "numpy_version": np.__version__,
        "dask_version": dask.__version__,
        "zarr_version": zarr.__version__,
        "tifffile_version": tifffile.__version__,
        "python_version": platform.python_version(),
        "device_kind": str(device.device_kind),
        "backend": jax.default_backend(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "quick": bool(args.quick),
        "volume_shape": list(shape),
        "volume_mb": float(np.prod(shape) * 4 / 2**20),
        "chunks": list(chunks),
        "chunk_mb": chunk_mb,
        "block_mb_interior": block_mb,
        "num_chunks": int(np.prod([-(-n // c) for n, c in zip(shape, chunks)])),
        "psf_shape": list(PSF_SHAPE),
        "psf_sigma_px": list(PSF_SIGMA),
        "background": BACKGROUND,
        "num_iter": num_iter,
        "depth_auto": list(depth),
        "runs": results,
        "seam_error_full_volume_auto": full_seam,
        "seam_error_subvolume": sub,
        "summary": summary,
        "notes": [
            "peak_rss_mb is the VmHWM (peak resident memory) of a fresh process per run (ru_maxrss is not "
            "used on Linux: it survives execve, so a child reports at least the parent's RSS at the fork); "
            "baseline_rss_mb is measured after importing "
            "JAX/jaxsr/zarr and one tiny RL call, so working_mb = peak - baseline is the processing's own memory, "
            "compilation (LLVM, once per block shape) included.",
            "chunked runs read the Zarr input twice (the global mean for RL's flat start, then the chunks); the "
            "halo is recomputed by every chunk that needs it (halo_overhead_voxels = voxels processed per chunk "
            "voxel for an interior chunk).",
            "cold_s includes compiling the kernel once per distinct block shape (edge chunks differ); warm_s is a "
            "second call in the same process.",
        ],
        "wall_s": time.perf_counter() - t_start,
    }
    write_json(args.out, result, overwrite=True)
    print(f"\nwrote {args.out} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
