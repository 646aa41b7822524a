"""Richardson-Lucy benchmark: jaxsr against scikit-image, a SciPy FFT RL and RedLionfish, same process and run.

Cases (defaults): ``2d`` = 1024 x 1024 image, 31 x 31 PSF; ``3d`` = 64 x 256 x 256 stack,
17 x 31 x 31 PSF; ``--iterations`` (100) RL iterations each. The image is a blurred random
scene (points and lines) plus background, with Poisson noise (seeded), float32.

Implementations (all given the same float32 NumPy image and unit-sum PSF):

* ``jaxsr``: :func:`jaxsr.deconv.richardson_lucy`, default ``boundary="pad"`` (estimate on the
  padded grid, Bertero-Boccacci weights), jitted; first call timed apart (``compile_s`` = trace +
  lower + compile). Also ``jaxsr_periodic`` (circular, on the unpadded grid: the boundary
  RedLionfish uses) and, in 2D, ``jaxsr_accelerated`` (Biggs-Andrews), for information.
* ``scipy_fft``: the same padded/weighted RL written here with ``scipy.fft.rfftn``/``irfftn``
  (two real FFT pairs per iteration, the OTF computed once, ``workers=--scipy-workers``).
* ``skimage``: ``skimage.restoration.richardson_lucy(image, psf, num_iter, clip=False)`` (two
  ``scipy.signal.convolve(mode="same")`` per iteration; zero fill outside the image).
* ``fft_pair_s``: one ``rfftn``/``irfftn`` pair on the padded grid with XLA and with SciPy at
  1 and all workers (XLA's CPU FFT runs on one thread; SciPy's uses ``workers`` threads).
* ``redlionfish``: RedLionfish CPU (``doRLDeconvolutionFromNpArrays(method="cpu")``) when the
  package imports; circular RL on the unpadded grid (smaller FFTs than the padded methods).
  2D images are passed as a ``(1, y, x)`` stack.

SciPy-based peers run inside ``scipy.fft.set_workers(--scipy-workers)`` (default -1: every CPU
core), so they may use all cores as XLA does.

FFT floor: a jitted ``fori_loop`` of ``min(--iterations, 20)`` steps, each ``rfftn -> irfftn`` twice on
jaxsr's padded grid (the two real FFT pairs an RL iteration needs, nothing else), per iteration.
``floor_with_otf`` adds the two spectrum x OTF products, for information. Each method's
per-iteration time is divided by the floor (``ratio_to_floor``; the target uses ``jaxsr``).

Protocol: every implementation gets one untimed warm-up call (jaxsr: the first call after
compiling, timed apart as ``first_call_s``; NumPy peers: a 2-iteration call, there is nothing
to compile), then ``--repeats``
timed calls; the median is reported. Before any timing is reported, jaxsr (pad) is compared
with the SciPy RL (same algorithm, ``max|diff| / max``); the script exits 1 if that exceeds ``--tol``.

Biggs-Andrews target: a filament scene from :func:`jaxsr.simulate.simulate_widefield`
(128 x 128 camera pixels, 3x fine grid); the fine-grid noise-free image (object blurred by the
fine-grid PSF, plus background) gets Poisson noise and is deconvolved on the fine grid (384 x
384) with the true PSF. ``plain``: 200 plain iterations with history; ``accelerated``: 60
Biggs-Andrews iterations, the estimate recorded after every iteration (callback, chunk 1).
Reported: pSNR against the ground-truth object (``data_range`` = its maximum) and the Poisson
likelihood (half deviance) per iteration; the first accelerated iteration that reaches the pSNR
and the likelihood of 100 plain iterations (target <= 25), and how many plain iterations the
likelihood of 25 accelerated ones corresponds to.

Usage:
    python benchmarks/bench_deconv.py [--quick] [--repeats 3] [--out benchmarks/results/bench_deconv.json]

Prints a table and writes JSON (device kind, versions, CPU count, load average, shapes, all
timings, ratios, targets and whether each passes). Runs unchanged on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import scipy
import scipy.fft

import jaxsr
from jaxsr.deconv.richardson_lucy import richardson_lucy
from jaxsr.forward import _fast_len, convolve
from jaxsr.io import write_json
from jaxsr.metrics import psnr
from jaxsr.simulate import simulate_widefield

HERE = os.path.dirname(os.path.abspath(__file__))

TARGETS = {
    "ratio_to_floor_max": 1.2,
    "speedup_vs_skimage_2d_min": 2.0,
    "speedup_vs_skimage_3d_min": 3.0,
    "accelerated_iterations_max": 25,
}


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #
def gaussian_psf(shape, sigmas):
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    psf = np.exp(-0.5 * sum((g / s) ** 2 for g, s in zip(grids, sigmas)))
    return (psf / psf.sum()).astype(np.float32)


def make_scene(shape, psf, rng):
    obj = np.zeros(shape, np.float32)
    n_points = max(10, int(np.prod(shape) // 2000))
    idx = tuple(rng.integers(0, n, n_points) for n in shape)
    obj[idx] = rng.uniform(200.0, 1000.0, n_points)
    obj[(slice(None),) * (len(shape) - 1) + (shape[-1] // 3,)] += 50.0  # a line / sheet
    blurred = np.asarray(convolve(obj, psf, boundary="zero"), np.float64) + 10.0
    return rng.poisson(blurred).astype(np.float32)


# --------------------------------------------------------------------------- #
# Peers
# --------------------------------------------------------------------------- #
def scipy_rl_pad(image, psf, num_iter, workers):
    """Padded/weighted RL (same algorithm as jaxsr's default) with scipy.fft, float32."""
    nd = psf.ndim
    grid = tuple(_fast_len(n + k - 1) for n, k in zip(image.shape, psf.shape))
    offset = tuple(k - 1 - k // 2 for k in psf.shape)
    region = tuple(slice(o, o + n) for o, n in zip(offset, image.shape))
    kernel = np.zeros(grid, np.float32)
    kernel[tuple(slice(0, k) for k in psf.shape)] = psf / psf.sum()
    kernel = np.roll(kernel, tuple(-(k // 2) for k in psf.shape), axis=tuple(range(nd)))
    otf = scipy.fft.rfftn(kernel, workers=workers)
    otf_conj = np.conj(otf)

    def conv(u, h):
        return scipy.fft.irfftn(scipy.fft.rfftn(u, workers=workers) * h, s=grid, workers=workers)

    data = np.zeros(grid, np.float32)
    data[region] = np.maximum(image, 0)
    mask = np.zeros(grid, np.float32)
    mask[region] = 1.0
    weight = conv(mask, otf_conj)
    inv_w = np.where(weight > 1e-3, 1.0 / np.where(weight > 1e-3, weight, 1.0), 0.0).astype(np.float32)
    x = np.where(inv_w > 0, image.mean(), 0.0).astype(np.float32)
    fx = conv(x, otf)
    floor = np.float32(1e-6 * image.mean())
    for _ in range(num_iter):
        ratio = np.where(data > 0, data / np.maximum(fx, floor), 0.0).astype(np.float32)
        x = np.maximum(x * conv(ratio, otf_conj) * inv_w, 0.0)
        fx = conv(x, otf)
    return x[region]


def load_redlionfish():
    try:
        import RedLionfishDeconv  # noqa: PLC0415 - optional peer
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        return None, f"import failed: {type(err).__name__}: {err}"
    return RedLionfishDeconv, None


def redlionfish_rl(module, image, psf, num_iter):
    data = image if image.ndim == 3 else image[None]
    kernel = psf if psf.ndim == 3 else psf[None]
    out = module.doRLDeconvolutionFromNpArrays(data, kernel, niter=num_iter, method="cpu")
    return np.asarray(out)[: data.shape[0]].reshape(data.shape)[0 if image.ndim == 2 else slice(None)]


# --------------------------------------------------------------------------- #
# Timing (all methods of a case are timed round-robin, so a change of machine load
# during the run affects every method alike; the ratios are the claims)
# --------------------------------------------------------------------------- #
def fft_floor_fn(grid, num_iter, with_otf):
    axes = tuple(range(len(grid)))
    otf = jnp.asarray(np.random.default_rng(0).random((*grid[:-1], grid[-1] // 2 + 1)), jnp.complex64)

    @jax.jit
    def loop(x):
        def body(_, u):
            for _pair in range(2):
                spec = jnp.fft.rfftn(u, axes=axes)
                if with_otf:
                    spec = spec * otf
                u = jnp.fft.irfftn(spec, s=grid, axes=axes)
            return u
        return jax.lax.fori_loop(0, num_iter, body, x)

    x = jnp.asarray(np.random.default_rng(1).random(grid), jnp.float32)
    loop(x).block_until_ready()  # compile + warm-up
    return lambda: loop(x).block_until_ready()


def fft_engines(grid, repeats):
    """One rfftn + irfftn pair on ``grid``: XLA (jitted) and SciPy with 1 and all workers (context)."""
    x = np.random.default_rng(2).random(grid).astype(np.float32)
    xd = jnp.asarray(x)
    pair = jax.jit(lambda u: jnp.fft.irfftn(jnp.fft.rfftn(u), s=grid))
    pair(xd).block_until_ready()
    out = {"xla": round_robin({"x": lambda: pair(xd).block_until_ready()}, repeats)["x"][0]}
    for workers in (1, -1):
        out[f"scipy_workers_{workers}"] = round_robin(
            {"s": lambda w=workers: scipy.fft.irfftn(scipy.fft.rfftn(x, workers=w), s=grid, workers=w)},
            repeats)["s"][0]
    return out


def prepare_jaxsr(image, psf, num_iter, **kw):
    """Compile (timed) and run once (the warm-up, timed as ``first_call_s``); returns (output, record, call)."""
    fn = jax.jit(lambda im, p: richardson_lucy(im, p, num_iter=num_iter, **kw))
    image_d, psf_d = jax.device_put(image), jax.device_put(psf)
    t0 = time.perf_counter()
    compiled = fn.lower(image_d, psf_d).compile()
    t1 = time.perf_counter()
    out = compiled(image_d, psf_d)
    out.block_until_ready()
    t2 = time.perf_counter()
    record = {"compile_s": t1 - t0, "first_call_s": t2 - t0}
    return np.asarray(out), record, lambda: compiled(image_d, psf_d).block_until_ready()


def round_robin(calls, repeats):
    """name -> callable; ``repeats`` rounds, each timing every callable once; name -> (median, times)."""
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t), t) for name, t in times.items()}


def rel_error(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


# --------------------------------------------------------------------------- #
# Cases
# --------------------------------------------------------------------------- #
def run_case(name, image_shape, psf_shape, args, rng, redlionfish):
    n_iter = args.iterations
    sigmas = tuple(max(1.0, k / 6.0) for k in psf_shape)
    psf = gaussian_psf(psf_shape, sigmas)
    image = make_scene(image_shape, psf, rng)
    grid = tuple(_fast_len(n + k - 1) for n, k in zip(image_shape, psf_shape))
    print(f"\n== {name}: image {image_shape}, psf {psf_shape}, padded grid {grid}, {n_iter} iterations")
    workers = args.scipy_workers
    record = {"image_shape": list(image_shape), "psf_shape": list(psf_shape), "padded_grid": list(grid),
              "iterations": n_iter, "methods": {}}
    methods = record["methods"]
    calls = {}
    per_call_iters = {}

    n_floor = min(n_iter, 20)  # the per-iteration cost does not depend on the loop length
    calls["fft_floor"] = fft_floor_fn(grid, n_floor, with_otf=False)
    calls["fft_floor_with_otf"] = fft_floor_fn(grid, n_floor, with_otf=True)
    per_call_iters.update(fft_floor=n_floor, fft_floor_with_otf=n_floor)

    ours, methods["jaxsr"], calls["jaxsr"] = prepare_jaxsr(image, psf, n_iter)
    variants = [("jaxsr_periodic", {"boundary": "periodic"})]
    if len(image_shape) == 2:
        variants.insert(0, ("jaxsr_accelerated", {"accelerate": True}))
    for vname, kw in variants:
        _, methods[vname], calls[vname] = prepare_jaxsr(image, psf, n_iter, **kw)

    outputs = {}

    def numpy_peer(pname, fn):
        def call():
            with scipy.fft.set_workers(workers):
                outputs[pname] = fn(n_iter)
        with scipy.fft.set_workers(workers):
            fn(2)  # warm-up (nothing to compile)
        methods[pname] = {}
        calls[pname] = call

    numpy_peer("scipy_fft", lambda n: scipy_rl_pad(image, psf, n, workers))
    if not args.skip_skimage:
        from skimage.restoration import richardson_lucy as sk_rl  # noqa: PLC0415

        numpy_peer("skimage", lambda n: sk_rl(image, psf, num_iter=n, clip=False))
    if redlionfish[0] is None:
        methods["redlionfish_cpu"] = {"skipped": redlionfish[1]}
    elif not args.skip_redlionfish:
        try:
            numpy_peer("redlionfish_cpu", lambda n: redlionfish_rl(redlionfish[0], image, psf, n))
            methods["redlionfish_cpu"]["note"] = "circular RL on the unpadded grid" + (
                " (2D as a (1, y, x) stack)" if len(image_shape) == 2 else "")
        except Exception as exc:  # noqa: BLE001 - record why the peer failed
            methods["redlionfish_cpu"] = {"error": f"{type(exc).__name__}: {exc}"}

    timed = round_robin(calls, args.repeats)
    # correctness before any timing is reported: the same algorithm in SciPy
    err = rel_error(ours, outputs["scipy_fft"])
    record["jaxsr_vs_scipy_fft_rel_error"] = err
    if err > args.tol:
        print(f"ERROR: jaxsr and the SciPy RL differ by {err:.2e} > {args.tol:.0e}")
        sys.exit(1)
    for fname in ("fft_floor", "fft_floor_with_otf"):
        med, times = timed.pop(fname)
        record[fname] = {"s": med, "iterations": n_floor, "per_iter_s": med / n_floor, "times_s": times}
    floor, floor_otf = record["fft_floor"]["per_iter_s"], record["fft_floor_with_otf"]["per_iter_s"]
    print(f"  FFT floor (2 rfftn/irfftn pairs): {1e3 * floor:.2f} ms/iter (with OTF products {1e3 * floor_otf:.2f})")
    record["fft_pair_s"] = fft_engines(grid, args.repeats)
    print("  one rfftn+irfftn pair: " + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in record["fft_pair_s"].items()))
    base = timed["jaxsr"][0]
    for mname, (med, times) in timed.items():
        rec = methods[mname]
        rec.update(s=med, times_s=times, per_iter_s=med / n_iter)
        rec["ratio_to_floor"] = rec["per_iter_s"] / floor
        rec["ratio_to_floor_with_otf"] = rec["per_iter_s"] / floor_otf
        rec["speedup_of_jaxsr"] = med / base
        extra = f", compile {rec['compile_s']:.2f} s" if "compile_s" in rec else ""
        print(f"  {mname:18s} {med:8.3f} s  {1e3 * rec['per_iter_s']:8.2f} ms/iter  "
              f"x{rec['ratio_to_floor']:.2f} floor  jaxsr speed-up x{med / base:.2f}{extra}")
    for mname, rec in methods.items():
        if "s" not in rec:
            print(f"  {mname:18s} {rec}")
    return record


# --------------------------------------------------------------------------- #
# Biggs-Andrews target
# --------------------------------------------------------------------------- #
def acceleration_target(args):
    shape = (48, 48) if args.quick else (128, 128)
    sim = simulate_widefield(jax.random.key(3), structure="filaments", shape=shape, upsample=3,
                             camera="ideal", signal_photons=200.0, background_photons=20.0)
    obj = np.asarray(sim.object, np.float32)
    bg_fine = sim.background_photons / 9.0
    expected = np.asarray(convolve(obj, sim.psf, boundary="zero"), np.float64) + bg_fine
    data = np.random.default_rng(4).poisson(expected).astype(np.float32)
    data_range = float(obj.max())
    n_plain, n_acc = 200, 60

    _, plain = richardson_lucy(data, sim.psf, num_iter=n_plain, background=bg_fine, return_history=True)
    plain_psnr = []
    for k in (100,):
        est = richardson_lucy(data, sim.psf, num_iter=k, background=bg_fine)
        plain_psnr.append(float(psnr(est, obj, data_range=data_range)))
    acc_psnr = []
    acc_nll = []

    def record(i, info):
        acc_psnr.append(float(psnr(info["estimate"], obj, data_range=data_range)))
        acc_nll.append(float(info["neg_log_likelihood"]))

    richardson_lucy(data, sim.psf, num_iter=n_acc, background=bg_fine, accelerate=True, callback=record, chunk=1)
    plain_nll = np.asarray(plain.neg_log_likelihood, np.float64)
    target_nll, target_psnr = float(plain_nll[99]), plain_psnr[0]
    hit_nll = [i + 1 for i, v in enumerate(acc_nll) if v <= target_nll]
    hit_psnr = [i + 1 for i, v in enumerate(acc_psnr) if v >= target_psnr]
    nll25 = acc_nll[24]
    plain_equiv = int(np.sum(plain_nll >= nll25))  # plain iterations whose likelihood is still worse
    res = {
        "image": "simulate_widefield filaments, fine grid (expected image + Poisson noise)",
        "fine_shape": list(obj.shape),
        "psf_shape": list(sim.psf.shape),
        "plain_iterations": 100,
        "plain100_psnr_db": target_psnr,
        "plain100_neg_log_likelihood": target_nll,
        "accelerated_psnr_db": acc_psnr,
        "accelerated_neg_log_likelihood": acc_nll,
        "plain_neg_log_likelihood": plain_nll.tolist(),
        "accelerated_iterations_to_plain100_psnr": hit_psnr[0] if hit_psnr else None,
        "accelerated_iterations_to_plain100_likelihood": hit_nll[0] if hit_nll else None,
        "plain_iterations_matching_25_accelerated_likelihood": (
            plain_equiv if plain_equiv < n_plain else f">= {n_plain}"),
    }
    print(f"\n== Biggs-Andrews on {obj.shape} filaments: plain 100 -> pSNR {target_psnr:.2f} dB, "
          f"NLL {target_nll:.1f}; accelerated reaches that pSNR at iteration "
          f"{res['accelerated_iterations_to_plain100_psnr']} and that likelihood at "
          f"{res['accelerated_iterations_to_plain100_likelihood']}; 25 accelerated = "
          f"{res['plain_iterations_matching_25_accelerated_likelihood']} plain (likelihood)")
    return res


def _median_time(fn, repeats):
    jax.block_until_ready(fn())  # warm-up (compilation)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def clid_vs_sparse(args):
    """CLID step vs the sparse-deconvolution baseline on the same image (section 6).

    Both run in jaxsr on the same device: a 128x128 clear image (NA 1.49, 488 nm, 65 nm pixels)
    upsampled 3x to 384x384. CLID: Lanczos + 100 accelerated RL iterations. Sparse baseline
    (Zhao et al. 2022), published defaults: fidelity 150, sparsity 10, 100 split-Bregman
    iterations, then 10 accelerated RL iterations, at the same upsampled size. With
    --paper-scale (default on a GPU) also the paper-scale CLID step: a 512x512 frame upsampled 3x,
    1000 accelerated iterations (GPU target < 0.3 s).
    """
    from jaxsr.deconv import clid, clid_psf, sparse_deconvolution
    from jaxsr.simulate import simulate_widefield

    size = 64 if args.quick else 128
    sim = simulate_widefield(jax.random.key(0), shape=(size, size), na=1.49, wavelength_nm=488.0,
                             pixel_size_nm=65.0, camera="ideal", background_photons=0.0)
    image = jnp.asarray(sim.image)
    psf = clid_psf("airy", na=1.49, wavelength_nm=488.0, pixel_size_nm=65.0, upsample=3)
    t_clid = _median_time(lambda: clid(image, psf, upsample=3, num_iter=100, accelerate=True), args.repeats)
    t_sparse = _median_time(lambda: sparse_deconvolution(image, psf, upsample=3, fidelity=150.0, sparsity=10.0,
                                                         num_iter=100, rl_iter=10, accelerate=True),
                            args.repeats)
    out = {"image_shape": [size, size], "fine_shape": [3 * size, 3 * size], "clid_iterations": 100,
           "clid_s": t_clid, "sparse_s": t_sparse, "speedup_of_clid": t_sparse / t_clid,
           "sparse_config": "fidelity 150, sparsity 10, 100 split-Bregman iterations + 10 accelerated RL",
           "note": "both are jaxsr implementations on the same device; the paper's 50-240x compares "
                   "against the authors' MATLAB/numpy Sparse-SIM, which is not installable here"}
    print(f"\n== CLID vs sparse deconvolution ({size}x{size} -> {3 * size}x{3 * size}): "
          f"CLID {t_clid * 1e3:.1f} ms, sparse {t_sparse * 1e3:.1f} ms, CLID {t_sparse / t_clid:.2f}x faster")
    if args.paper_scale or jax.default_backend() == "gpu":
        big = simulate_widefield(jax.random.key(1), shape=(512, 512), na=1.49, wavelength_nm=488.0,
                                 pixel_size_nm=65.0, camera="ideal", background_photons=0.0)
        big_image = jnp.asarray(big.image)
        t_big = _median_time(lambda: clid(big_image, psf, upsample=3, num_iter=1000, accelerate=True),
                             max(1, args.repeats - 1))
        out["paper_scale"] = {"image_shape": [512, 512], "fine_shape": [1536, 1536], "iterations": 1000,
                              "seconds": t_big, "gpu_target_s": 0.3}
        print(f"== paper-scale CLID step (512x512 -> 1536x1536, 1000 accelerated iterations): {t_big:.2f} s")
    return out


# --------------------------------------------------------------------------- #
def shape_arg(text):
    return tuple(int(v) for v in text.lower().split("x"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and 20 iterations (smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=None, help="RL iterations (default 100; 20 with --quick)")
    parser.add_argument("--shape-2d", type=shape_arg, default=None, help="e.g. 1024x1024")
    parser.add_argument("--shape-3d", type=shape_arg, default=None, help="e.g. 64x256x256")
    parser.add_argument("--scipy-workers", type=int, default=-1)
    parser.add_argument("--tol", type=float, default=1e-3, help="max rel. difference jaxsr vs SciPy RL")
    parser.add_argument("--skip-skimage", action="store_true")
    parser.add_argument("--skip-redlionfish", action="store_true")
    parser.add_argument("--skip-3d", action="store_true")
    parser.add_argument("--paper-scale", action="store_true",
                        help="also time the paper-scale CLID step (512x512 x3, 1000 iterations; default on GPU)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "bench_deconv.json"))
    args = parser.parse_args(argv)
    if args.iterations is None:
        args.iterations = 20 if args.quick else 100
    shape_2d = args.shape_2d or ((256, 256) if args.quick else (1024, 1024))
    shape_3d = args.shape_3d or ((16, 64, 64) if args.quick else (64, 256, 256))
    psf_2d, psf_3d = (31, 31), (17, 31, 31)
    if args.quick:
        psf_3d = (9, 15, 15)

    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()}")
    redlionfish = load_redlionfish()
    rng = np.random.default_rng(20261121)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    cases = {"2d": run_case("2d", shape_2d, psf_2d, args, rng, redlionfish)}
    if not args.skip_3d:
        cases["3d"] = run_case("3d", shape_3d, psf_3d, args, rng, redlionfish)
    accel = acceleration_target(args)
    hook = clid_vs_sparse(args)

    checks = {}
    for name, case in cases.items():
        methods = case["methods"]
        checks[f"{name}_ratio_to_floor"] = {
            "value": methods["jaxsr"]["ratio_to_floor"], "target": f"<= {TARGETS['ratio_to_floor_max']}",
            "pass": methods["jaxsr"]["ratio_to_floor"] <= TARGETS["ratio_to_floor_max"]}
        if "skimage" in methods:
            key = f"speedup_vs_skimage_{name}_min"
            value = methods["skimage"]["speedup_of_jaxsr"]
            checks[f"{name}_speedup_vs_skimage"] = {"value": value, "target": f">= {TARGETS[key]}",
                                                    "pass": value >= TARGETS[key]}
    checks["clid_speedup_vs_sparse"] = {"value": hook["speedup_of_clid"], "target": ">= 50",
                                        "pass": hook["speedup_of_clid"] >= 50}
    if "paper_scale" in hook and jax.default_backend() == "gpu":
        checks["gpu_paper_scale_clid_s"] = {"value": hook["paper_scale"]["seconds"], "target": "<= 0.3",
                                            "pass": hook["paper_scale"]["seconds"] <= 0.3}
    for crit in ("psnr", "likelihood"):
        value = accel[f"accelerated_iterations_to_plain100_{crit}"]
        checks[f"accelerated_iterations_to_plain100_{crit}"] = {
            "value": value, "target": f"<= {TARGETS['accelerated_iterations_max']}",
            "pass": value is not None and value <= TARGETS["accelerated_iterations_max"]}

    print("\n== targets")
    for name, c in checks.items():
        print(f"  {name:45s} {c['value']!s:>22}  {c['target']:8s} {'PASS' if c['pass'] else 'MISS'}")

    result = {
        "benchmark": "bench_deconv",
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "jaxsr_version": jaxsr.__version__,
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "python_version": platform.python_version(),
        "device_kind": str(device.device_kind),
        "backend": jax.default_backend(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "quick": bool(args.quick),
        "repeats": args.repeats,
        "scipy_workers": args.scipy_workers,
        "cases": cases,
        "acceleration": accel,
        "clid_vs_sparse": hook,
        "targets": checks,
        "notes": [
            "XLA:CPU runs an FFT on a single thread when the op before it ran on the intra-op thread "
            "pool (openxla/xla#46345, jax-ml/jax#39081, fixed upstream after this jaxlib). Inside the RL "
            "loop every FFT follows a parallel elementwise fusion, so jaxsr's FFTs (and the FFT floor "
            "loop) use one core, while SciPy-based peers use all workers; fft_pair_s shows one pair "
            "standalone (XLA, multi-threaded there) against SciPy with 1 and all workers.",
            "skimage.restoration.richardson_lucy uses scipy.signal.convolve, which picks FFT convolution "
            "on the same padded grid: 3 FFTs per convolution (6 per iteration) against jaxsr's 4, so its "
            "time is bounded by about 1.5x jaxsr's FFT floor at equal FFT speed.",
            "redlionfish_cpu and jaxsr_periodic are circular RL on the unpadded grid (smaller, "
            "power-of-two FFTs here); compare them with each other, the padded methods with each other.",
        ],
        "wall_s": time.perf_counter() - t_start,
    }
    with contextlib.suppress(Exception):
        import skimage  # noqa: PLC0415

        result["skimage_version"] = skimage.__version__
    if redlionfish[0] is not None:
        from importlib.metadata import version  # noqa: PLC0415

        with contextlib.suppress(Exception):
            result["redlionfish_version"] = version("redlionfish")
    write_json(args.out, result, overwrite=True)
    print(f"\nwrote {args.out} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
