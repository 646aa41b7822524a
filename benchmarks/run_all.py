"""Run every benchmark of jaxsr with one flag set; write one JSON per benchmark, summary.json and SUMMARY.md.

Usage:
    python benchmarks/run_all.py --quick                  # smoke run, < 10 min on a 2-core CPU
    python benchmarks/run_all.py                          # full run (hours on a 2-core CPU)
    python benchmarks/run_all.py --device gpu             # the same scripts on the GPU
    python benchmarks/run_all.py --quick --only deconv,localize
    python benchmarks/run_all.py --quick --skip fusion --timeout 300
    python benchmarks/run_all.py --list                   # the registry: name -> command

Each benchmark is its own script (``benchmarks/<script>.py``), run here as a subprocess with
its own flags (``--quick`` when asked; ``--out <out-dir>/<file>.json``; ``--device`` for the
scripts that spread work over devices) and ``JAX_PLATFORMS`` set from ``--device`` (``cpu``,
``cuda``/``rocm`` for ``gpu``, ``tpu``). Its stdout and stderr go to
``<out-dir>/logs/<name>.log``. A benchmark that exits non-zero, writes no JSON, or runs past
``--timeout`` is recorded as failed (or timed out) and the runner goes on with the next one; the
runner exits 1 at the end if any failed. Benchmarks whose optional peer is not importable get
the script's own ``--skip-<peer>`` flag; benchmarks that need the shared development data
(``../shared/data``) or a shipped model that is absent are skipped, with the reason recorded.

Registry (``--list`` prints the exact commands): ``deconv`` (bench_deconv.py; its CLID-vs-sparse
section is also shown as its own row, ``clid_vs_sparse``), ``convolve``, ``denoise``
(bench_denoise.py: U-Net train step and inference vs PyTorch), ``localize`` (bench_localize.py:
MLE fitter vs Picasso/SciPy, network frames/s), ``smlm`` (eval_smlm.py --skip-generative: CRLB
and MLE vs localization network), ``generative`` (eval_generative.py), ``fusion``
(eval_fusion.py), ``fusion_speed`` (bench_fusion.py), ``clid_fig1`` (reproduce_clid_fig1.py),
``eval_denoise``, ``psf_fit``, ``real_deconv``, ``real_smlm`` and ``real_denoise``
(real_data_*.py, shared data), ``scaling`` (bench_scaling.py), ``halo`` (bench_halo.py),
``outofcore`` (bench_outofcore.py, needs the ``dask`` extra). With ``--quick`` the runner passes
smaller sizes where the scripts take them, and leaves out ``generative``, ``eval_denoise``,
``psf_fit``, ``real_smlm``, ``real_denoise`` and ``fusion_speed`` (50-90 s each even at their
smallest: accuracy evaluations, not timings) unless they are named in ``--only``.
``clid_fig1`` runs at its full (paper) size in both modes: smaller images miss its checks.
``eval_denoise`` exits 1 when its accuracy checks miss, which they do at ``--quick`` sizes: there
that counts as run, not failed (the reason is recorded).

Output directory (``--out-dir``): ``benchmarks/results/`` for a full CPU run (the committed
results the README quotes), ``benchmarks/results/quick/`` with ``--quick`` (so a smoke run never
overwrites them), ``benchmarks/results/gpu/`` and ``benchmarks/results/gpu-quick/`` with
``--device gpu`` (``tpu/`` and ``tpu-quick/`` for TPUs).

After the runs: ``summary.json`` (device kind and count, JAX/jaxlib/jaxsr versions, platform,
CPU count, load average before/after, start/end time, and per benchmark the status, wall seconds,
command line, JSON file, log file and headline numbers) and ``SUMMARY.md`` (one Markdown table, a
row per benchmark: status, wall seconds, compile vs steady-state seconds of the timed jaxsr call
where the JSON has them, and 1-3 headline numbers taken from its JSON by a small extractor per
benchmark; a missing key reads "n/a"). Ratios, not absolute seconds, are the claims on a CPU.
``--quick`` numbers are smoke-test sizes: they show that everything runs, not the claims.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED_DATA = ROOT.parent / "shared" / "data"  # what the scripts use: benchmarks/../../shared/data
PRETRAINED = {
    "3snet": ROOT / "jaxsr" / "nn" / "pretrained" / "3snet",
    "locnet": ROOT / "jaxsr" / "smlm" / "pretrained" / "locnet",
}
# JAX_PLATFORMS values tried for each --device, in order (JAX_PLATFORMS=gpu would also
# require every other GPU plugin, e.g. ROCm's, to initialise, so a concrete name is used).
PLATFORMS = {"cpu": ["cpu"], "gpu": ["cuda", "rocm"], "tpu": ["tpu"]}
DEFAULT_TIMEOUT = {True: 300.0, False: 3 * 3600.0}  # seconds per benchmark: quick, full


# --------------------------------------------------------------------------- #
# Helpers for extractors: tolerant lookups and formatting
# --------------------------------------------------------------------------- #
def get(obj: Any, path: str, default: Any = None) -> Any:
    """``obj["a"]["b"][0]`` for ``path="a.b.0"``; ``default`` when any step is missing.

    Keys that contain dots can be given in brackets: ``get(d, "timings.[jax[none/flax]].train_step")``.
    """
    for key in _split_path(path):
        if isinstance(obj, dict):
            if key not in obj:
                return default
            obj = obj[key]
        elif isinstance(obj, list):
            try:
                obj = obj[int(key)]
            except (ValueError, IndexError):
                return default
        else:
            return default
    return default if obj is None else obj


def _split_path(path: str) -> list[str]:
    parts, cur, depth = [], "", 0
    for ch in path:
        if ch == "[" and depth == 0 and not cur:
            depth = 1
            continue
        if ch == "]" and depth == 1:
            depth = 0
            continue
        if ch == "." and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return parts


def num(x: Any) -> float | None:
    """``x`` as a finite float, else None."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt(x: Any, spec: str = ".3g", suffix: str = "") -> str:
    v = num(x)
    return "n/a" if v is None else f"{format(v, spec)}{suffix}"


def scaled(x: Any, k: float) -> float | None:
    v = num(x)
    return None if v is None else k * v


def ratio(a: Any, b: Any) -> float | None:
    a, b = num(a), num(b)
    return a / b if a is not None and b not in (None, 0.0) else None


def shape_txt(shape: Any) -> str:
    return "x".join(str(s) for s in shape) if isinstance(shape, list) and shape else "?"


def yes_no(x: Any) -> str:
    return "n/a" if not isinstance(x, bool) else ("yes" if x else "NO")


def count_pass(checks: Any) -> str:
    """'k/n' of truthy values (or of ``.pass`` fields) in a dict of checks."""
    if not isinstance(checks, dict) or not checks:
        return "n/a"
    vals = [c.get("pass") if isinstance(c, dict) else c for c in checks.values()]
    vals = [v for v in vals if isinstance(v, bool)]
    return f"{sum(vals)}/{len(vals)}" if vals else "n/a"


def row_by(rows: Any, key: str, value: Any) -> dict:
    if isinstance(rows, list):
        for r in rows:
            if isinstance(r, dict) and r.get(key) == value:
                return r
    return {}


# Each extractor takes the benchmark's JSON (a dict) and returns
# {"compile_s": float|None, "steady_s": float|None, "timed": str, "headlines": [str, ...]}.
Extract = Callable[[dict], dict]


def _out(compile_s=None, steady_s=None, timed="", headlines=()):
    return {"compile_s": num(compile_s), "steady_s": num(steady_s), "timed": timed, "headlines": list(headlines)}


def x_deconv(d: dict) -> dict:
    c2 = get(d, "cases.2d", {})
    m2, m3 = get(c2, "methods", {}), get(d, "cases.3d.methods", {})
    heads = [f"speed-up vs scikit-image: 2D {fmt(get(m2, 'skimage.speedup_of_jaxsr'), '.2f', 'x')}, "
             f"3D {fmt(get(m3, 'skimage.speedup_of_jaxsr'), '.2f', 'x')}",
             f"time / FFT floor: 2D {fmt(get(m2, 'jaxsr.ratio_to_floor'), '.2f')}, "
             f"3D {fmt(get(m3, 'jaxsr.ratio_to_floor'), '.2f')}"]
    rlf = ratio(get(m3, "redlionfish_cpu.s"), get(m3, "jaxsr_periodic.s"))
    if rlf is not None:
        heads.append(f"3D circular RL vs RedLionfish {fmt(rlf, '.2f', 'x')}")
    else:
        heads.append(f"Biggs-Andrews: {fmt(get(d, 'acceleration.accelerated_iterations_to_plain100_psnr'), 'g')} "
                     "it. = 100 plain (pSNR)")
    return _out(get(m2, "jaxsr.compile_s"), get(m2, "jaxsr.s"),
                f"RL 2D {shape_txt(get(c2, 'image_shape'))}, {fmt(get(c2, 'iterations'), 'g')} it.", heads)


def x_clid_vs_sparse(d: dict) -> dict:
    h = get(d, "clid_vs_sparse", {})
    return _out(None, get(h, "clid_s"),
                f"CLID {shape_txt(get(h, 'image_shape'))} -> {shape_txt(get(h, 'fine_shape'))}, "
                f"{fmt(get(h, 'clid_iterations'), 'g')} it.",
                [f"speed-up of CLID vs sparse deconvolution {fmt(get(h, 'speedup_of_clid'), '.2f', 'x')} "
                 f"(CLID {fmt(scaled(get(h, 'clid_s'), 1e3), '.0f')} ms, sparse "
                 f"{fmt(scaled(get(h, 'sparse_s'), 1e3), '.0f')} ms)",
                 *([f"paper-scale CLID step {fmt(get(h, 'paper_scale.seconds'), '.3g', ' s')}"]
                   if "paper_scale" in h else [])])


def x_convolve(d: dict) -> dict:
    cases = get(d, "cases", [])
    parts, first = [], cases[0] if cases else {}
    for c in cases:
        r = get(c, "ratios.[scipy.signal.fftconvolve]")
        parts.append(f"{get(c, 'name', '?')} {fmt(r, '.2f', 'x')}")
    heads = ["vs scipy fftconvolve (peer s / jaxsr s): " + (", ".join(parts) if parts else "n/a"),
             f"all outputs agree: {yes_no(get(d, 'all_agree'))}"]
    return _out(get(first, "compile_s.zero"), get(first, "jaxsr_s.zero"),
                f"{get(first, 'name', '?')} {shape_txt(get(first, 'image_shape'))}", heads)


def x_denoise(d: dict) -> dict:
    jax_sets = get(d, "jax", {})
    fs = next(iter(jax_sets), "none")
    key = f"jax[{fs}/flax]"
    r = get(d, f"ratios_jax_over_torch.[{key}]", {})
    heads = [f"train step JAX/PyTorch time {fmt(get(r, 'train_vs_best_torch'), '.2f')} "
             f"(vs {get(r, 'best_torch_train', 'n/a')})",
             f"1-frame inference JAX/PyTorch time {fmt(get(r, 'infer_vs_torch'), '.2f')}"]
    best = [(num(get(v, "train_vs_best_torch")), k) for k, v in get(d, "ratios_jax_over_torch", {}).items()
            if isinstance(v, dict) and num(get(v, "train_vs_best_torch")) is not None]
    if best and min(best)[1] != key:
        b = min(best)
        heads.append(f"best JAX variant {b[1]}: {b[0]:.2f}")
    if not get(d, "torch"):
        heads = ["PyTorch peer not run"] + heads[2:]
    shape = f"batch {get(d, 'sizes.batch', '?')} x {get(d, 'sizes.patch', '?')}^2"
    return _out(get(jax_sets, f"{fs}.variants.flax.train_compile_s"),
                get(d, f"timings.[{key}].train_step.median_s"), f"U-Net train step, {shape}", heads)


def x_localize(d: dict) -> dict:
    m = get(d, "methods", {})
    heads = [f"{fmt(get(m, 'jaxsr_fixed_sigma.fits_per_s'), ',.0f')} fits/s (sigma fixed), "
             f"{fmt(get(m, 'jaxsr_free_sigma.fits_per_s'), ',.0f')} (free)"]
    sr = get(d, "targets.free_sigma_vs_fastest_picasso.value.speed_ratio")
    peer = get(d, "targets.free_sigma_vs_fastest_picasso.value.peer", "Picasso")
    heads.append(f"speed vs {peer} {fmt(sr, '.2f', 'x')}" if sr is not None else
                 f"Picasso: {get(m, 'picasso_lm_mle.skipped', 'n/a')}")
    heads.append(f"RMSE/sqrt(CRLB) {fmt(get(m, 'jaxsr_free_sigma.precision.mean_rmse_over_sqrt_crlb'), '.3f')}")
    return _out(get(m, "jaxsr_fixed_sigma.compile_s"), get(m, "jaxsr_fixed_sigma.seconds"),
                f"fit_spots, {fmt(get(d, 'data.n_rois'), 'g')} ROIs {shape_txt(get(d, 'data.roi_shape'))}", heads)


def x_drift(d: dict) -> dict:
    m = get(d, "methods", {})
    heads = [f"r.m.s. drift error {fmt(get(m, 'jaxsr.rms_nm'), '.2f', ' nm')} "
             f"(40 nm pixels: {fmt(get(m, 'jaxsr_40nm.rms_nm'), '.2f', ' nm')})"]
    heads.append(f"Picasso {fmt(get(m, 'picasso.rms_nm'), '.2f', ' nm')} in "
                 f"{fmt(get(m, 'picasso.seconds_median'), '.2f', ' s')}" if get(m, "picasso.rms_nm") is not None
                 else f"Picasso: {get(m, 'picasso.skipped', 'n/a')}")
    return _out(get(m, "jaxsr.compile_s"), get(m, "jaxsr.seconds_median"),
                f"estimate_drift, {fmt(get(d, 'localizations'), ',.0f')} localizations, "
                f"{fmt(get(d, 'frames'), 'g')} frames", heads)


def x_drift_axial(d: dict) -> dict:
    m = get(d, "methods", {})
    heads = [f"r.m.s. z error {fmt(get(m, 'jaxsr_axial.z.rms_nm'), '.2f', ' nm')} "
             f"(uncorrected {fmt(get(m, 'jaxsr_lateral.z.rms_nm'), '.1f', ' nm')}), lateral "
             f"{fmt(get(m, 'jaxsr_axial.rms_nm'), '.2f', ' nm')}",
             f"lateral only {fmt(get(m, 'jaxsr_lateral.seconds_median'), '.2f', ' s')}"]
    return _out(get(m, "jaxsr_axial.compile_s"), get(m, "jaxsr_axial.seconds_median"),
                f"estimate_drift (x, y, z), {fmt(get(d, 'localizations'), ',.0f')} localizations, "
                f"{fmt(get(d, 'frames'), 'g')} frames", heads)


def x_smlm(d: dict) -> dict:
    pipe = get(d, "pipeline", {})
    dense = max(pipe.values(), key=lambda r: num(get(r, "density_per_um2")) or -1.0) if pipe else {}
    heads = [f"CRLB ratio x (fixed sigma) {fmt(get(d, 'crlb.fixed_sigma.params.x.ratio'), '.3f')}",
             f"Jaccard at {fmt(get(dense, 'density_per_um2'), '.1f')}/um^2: net "
             f"{fmt(get(dense, 'net.hungarian.jaccard'), '.1f')} % vs MLE "
             f"{fmt(get(dense, 'mle.hungarian.jaccard'), '.1f')} %",
             f"net beats fitter at >= 1/um^2: {yes_no(get(d, 'network_beats_fitter_at_high_density'))}"]
    return _out(None, None, "", heads)


def x_fusion(d: dict) -> dict:
    n = get(d, "npc_3d", {})
    heads = [f"NPC within 5 deg {fmt(scaled(get(n, 'fraction_within_5deg'), 100), '.1f', ' %')} "
             f"({fmt(get(n, 'n_particles'), 'g')} particles)",
             f"ring radius {fmt(get(n, 'radius_nm'), '.1f')} nm (53.5), separation "
             f"{fmt(get(n, 'ring_separation_nm'), '.1f')} nm (50)",
             f"origami within 5 deg {fmt(scaled(get(d, 'origami_2d.fraction_within_5deg'), 100), '.1f', ' %')}"]
    return _out(None, get(n, "wall_s"), f"fuse() of {fmt(get(n, 'n_particles'), 'g')} NPCs (incl. compile)", heads)


def x_fusion_speed(d: dict) -> dict:
    f = get(d, "fusion", {})
    small = min(f, key=int) if f else None
    big = max(f, key=int) if f else None
    a2a = get(d, "all_to_all", {})
    heads = [f"fuse {big} particles {fmt(get(f, f'{big}.wall_s'), '.1f', ' s')}",
             f"dynamic vs all-to-all ({fmt(get(a2a, 'n_particles'), 'g')} particles) "
             f"{fmt(get(a2a, 'speedup'), '.1f', 'x')}",
             f"registration vs probreg {fmt(get(d, 'registration.speedup_at_equal_accuracy.value'), '.2f', 'x')}"]
    first, warm = get(f, f"{small}.first_call_s"), get(f, f"{small}.wall_s")
    comp = first - warm if isinstance(first, (int, float)) and isinstance(warm, (int, float)) else None
    return _out(comp, warm, f"fuse() of {small} NPCs (warm)", heads)


def x_scaling(d: dict) -> dict:
    res = get(d, "results", {})
    parts = []
    for user, rows in res.items():
        if isinstance(rows, list) and rows:
            parts.append(f"{user} {fmt(get(rows[-1], 'speedup_vs_1'), '.2f', 'x')}")
    last = (get(res, "clid") or [{}])[-1]
    n_max = get(last, "n_devices", "?")
    heads = [f"speed-up at {n_max} {'fake ' if get(d, 'fake_cpu_devices') else ''}devices: " +
             (", ".join(parts) if parts else "n/a"),
             f"sharded == 1 device: {yes_no(get(d, 'all_equal_to_1_device'))}"]
    return _out(get(last, "compile_s"), get(last, "run_s"),
                f"clid x {fmt(get(last, 'items'), 'g')} frames on {n_max} devices", heads)


def x_halo(d: dict) -> dict:
    runs = get(d, "runs", [])
    last = runs[-1] if runs else {}
    n = get(last, "n_devices", "?")
    heads, c2 = [], get(last, "cases.2d", {})
    for name, rec in get(last, "cases", {}).items():
        heads.append(f"{name} on {n} dev: sharded/single time {fmt(get(rec, 'time_ratio_sharded_to_single'), '.2f')}, "
                     f"rel. diff {fmt(get(rec, 'rel_diff'), '.1e')}")
    t_single = get(c2, "single.memory_per_device.temp_size_in_bytes")
    t_shard = get(c2, "sharded.memory_per_device.temp_size_in_bytes")
    if ratio(t_shard, t_single) is not None:
        heads.append(f"2D temp memory/device sharded/single {fmt(ratio(t_shard, t_single), '.2f')}")
    return _out(get(c2, "sharded.compile_s"), get(c2, "sharded.s"),
                f"halo RL 2D {shape_txt(get(c2, 'image_shape'))} on {n} devices", heads[:3] or ["n/a"])


def x_outofcore(d: dict) -> dict:
    s = get(d, "summary", {})
    heads = [f"working memory whole/chunked {fmt(get(s, 'working_ratio_whole_to_chunked_sync'), '.2f', 'x')} "
             f"({fmt(get(d, 'volume_mb'), '.1f')} MiB volume)",
             f"chunked/whole time warm {fmt(get(s, 'warm_time_ratio_chunked_threads_to_whole'), '.2f')}, "
             f"cold {fmt(get(s, 'cold_time_ratio_chunked_threads_to_whole'), '.2f')}",
             f"seam error {fmt(get(d, 'seam_error_full_volume_auto.max'), '.1e')} (rel.)"]
    return _out(None, get(d, "runs.chunked_threads.warm_s"),
                f"Dask RL {shape_txt(get(d, 'volume_shape'))} in {shape_txt(get(d, 'chunks'))} chunks", heads)


def x_psf_fit(d: dict) -> dict:
    syn = get(d, "synthetic", [])
    ok = [r.get("pass") for r in syn if isinstance(r, dict) and isinstance(r.get("pass"), bool)]
    heads = [f"synthetic recoveries within tolerance {sum(ok)}/{len(ok)}" if ok else "synthetic: n/a",
             f"all pass: {yes_no(get(d, 'all_pass'))}"]
    starts = get(d, "measured.starts", {})
    if isinstance(starts, dict) and starts:
        heads.append(f"measured bead: NA {fmt(get(next(iter(starts.values())), 'na'), '.3f')} "
                     f"(nominal {fmt(get(d, 'measured.nominal_na'), 'g')})")
    return _out(get(d, "timings_s.airy2d_na.compile_s"), get(d, "timings_s.airy2d_na.run_s"),
                "fit_psf, Airy 2D (NA)", heads)


def x_real_deconv(d: dict) -> dict:
    bars = get(d, "bars", [])
    its = [r.get("iterations") for r in bars if isinstance(r, dict) and isinstance(r.get("iterations"), int)]
    n = max(its) if its else None
    best = {m: row_by([r for r in bars if r.get("iterations") == n], "method", m) for m in
            ("jaxsr", "jaxsr_accelerated", "skimage")} if n else {}
    heads = [f"bead FWHM after/before z {fmt(get(d, 'bead.fwhm_ratio_after_over_before.z'), '.2f')}, "
             f"x {fmt(get(d, 'bead.fwhm_ratio_after_over_before.x'), '.2f')}",
             f"bars pSNR at {fmt(n, 'g')} it.: jaxsr {fmt(get(best, 'jaxsr.psnr_db'), '.1f')}, accelerated "
             f"{fmt(get(best, 'jaxsr_accelerated.psnr_db'), '.1f')}, "
             f"skimage {fmt(get(best, 'skimage.psnr_db'), '.1f')} dB"]
    return _out(None, get(d, "bead.seconds"), f"bead, {fmt(get(d, 'bead.iterations'), 'g')} accelerated it.", heads)


def x_real_smlm(d: dict) -> dict:
    heads = []
    for name, ds in get(d, "datasets", {}).items():
        if "skipped" in ds:
            heads.append(f"{name}: skipped")
            continue
        heads.append(f"{name}: Jaccard net {fmt(get(ds, 'methods.net.jaccard'), '.1f')} % vs MLE "
                     f"{fmt(get(ds, 'methods.mle.jaccard'), '.1f')} %")
    return _out(None, get(d, "datasets.storm_analysis_test.methods.mle.seconds_median"),
                "MLE localize, storm_analysis_test", heads or ["n/a"])


def x_real_denoise(d: dict) -> dict:
    kept = fmt(get(d, "shipped_3snet.intensity_kept"), ".0%")
    heads = [f"FMD confocal vs 50-frame average: raw {fmt(get(d, 'raw_frame.psnr_db'), '.1f')} dB, shipped 3Snet "
             f"{fmt(get(d, 'shipped_3snet.psnr_db'), '.1f')} dB (keeps {kept} of the intensity), "
             f"--self-supervised {fmt(get(d, 'self_supervised.psnr_db'), '.1f')} dB"]
    return _out(None, get(d, "self_supervised.wall_s"), "jaxsr denoise --self-supervised, 512x512", heads)


def x_clid_fig1(d: dict) -> dict:
    airy = get(d, "results.airy", {})
    table = get(airy, "table", [])
    s3, gt, raw = row_by(table, "input", "3S clear"), row_by(table, "input", "GT_blur"), row_by(table, "input", "Raw")
    heads = [f"CLID pSNR/SSIM: 3S {fmt(get(s3, 'clid_psnr_db'), '.1f')}/{fmt(get(s3, 'clid_ssim'), '.2f')}, "
             f"noise-free {fmt(get(gt, 'clid_psnr_db'), '.1f')}/{fmt(get(gt, 'clid_ssim'), '.2f')}, "
             f"raw {fmt(get(raw, 'clid_psnr_db'), '.1f')}/{fmt(get(raw, 'clid_ssim'), '.2f')}",
             f"checks (Airy) {count_pass(get(airy, 'checks'))}"]
    return _out(None, get(airy, "seconds"), f"whole experiment {fmt(get(d, 'settings.size'), 'g')} px (incl. compile)",
                heads)


def x_eval_denoise(d: dict) -> dict:
    t = get(d, "table", [])
    net, s3, raw = row_by(t, "method", "3Snet"), row_by(t, "method", "3S"), row_by(t, "method", "Raw")
    heads = [f"CLID pSNR: 3Snet {fmt(get(net, 'clid_psnr_db'), '.1f')}, 3S {fmt(get(s3, 'clid_psnr_db'), '.1f')}, "
             f"raw {fmt(get(raw, 'clid_psnr_db'), '.1f')} dB",
             f"DPS resolution gain {fmt(get(d, 'dps.mean_gain'), '.2f', 'x')}",
             f"checks {count_pass(get(d, 'checks'))}"]
    frame = get(d, "inference_time.frame")
    return _out(get(d, "inference_time.compile_s_estimate"), get(d, "inference_time.median_s"),
                f"3Snet inference {shape_txt(frame)}", heads)


def x_generative(d: dict) -> dict:
    heads = [f"Jaccard fine-tuned on generative {fmt(get(d, 'generative.jaccard'), '.1f')} % vs naive "
             f"{fmt(get(d, 'naive.jaccard'), '.1f')} %",
             f"efficiency {fmt(get(d, 'generative.efficiency_lateral'), '.1f')} vs "
             f"{fmt(get(d, 'naive.efficiency_lateral'), '.1f')}",
             f"generative beats naive: {yes_no(get(d, 'generative_beats_naive'))}"]
    return _out(None, get(d, "generative_model.seconds"), "generative-model fit", heads)


# --------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------- #
@dataclasses.dataclass
class Ctx:
    device: str
    quick: bool
    out_dir: Path


@dataclasses.dataclass
class Bench:
    name: str
    script: str | None                      # file in benchmarks/; None: a view of another entry's JSON
    what: str
    json: str                               # file name in the output directory (full run)
    extract: Extract
    args: Callable[[Ctx], list[str]] = lambda ctx: []
    quick_json: str | None = None           # file name in quick mode when it differs
    optional: dict[str, str] = dataclasses.field(default_factory=dict)   # module -> flag when absent
    needs: dict[str, Path] = dataclasses.field(default_factory=dict)     # label -> path that must exist
    needs_modules: tuple[str, ...] = ()     # modules without which the benchmark cannot run
    from_entry: str | None = None           # for views: the entry whose JSON is read
    checks_exit_quick: bool = True          # False: in --quick, exit 1 with a fresh JSON = checks missed, not a failure
    quick_s: float | None = None            # set: left out of --quick unless named in --only (its smallest run, s)

    def json_name(self, quick: bool) -> str:
        return (self.quick_json if quick and self.quick_json else self.json)


def _q(ctx: Ctx, quick_args=(), full_args=()) -> list[str]:
    return list(quick_args if ctx.quick else full_args)


REGISTRY: list[Bench] = [
    Bench("deconv", "bench_deconv.py", "Richardson-Lucy vs scikit-image, SciPy FFT RL, RedLionfish (+ CLID vs sparse)",
          "bench_deconv.json", x_deconv,
          args=lambda ctx: _q(ctx, ["--quick", "--repeats", "2"]),
          optional={"skimage": "--skip-skimage", "RedLionfishDeconv": "--skip-redlionfish"}),
    Bench("clid_vs_sparse", None, "CLID step vs sparse deconvolution (section of bench_deconv.py)",
          "bench_deconv.json", x_clid_vs_sparse, from_entry="deconv"),
    Bench("convolve", "convolve.py", "FFT convolution vs scipy.signal / scipy.ndimage", "convolve.json", x_convolve,
          args=lambda ctx: _q(ctx, ["--quick", "--repeats", "3"])),
    Bench("denoise", "bench_denoise.py", "denoising U-Net train step and inference vs PyTorch", "bench_denoise.json",
          x_denoise, args=lambda ctx: _q(ctx, ["--quick", "--jax-variants", "flax", "--flag-sets", "none"]),
          optional={"torch": "--skip-torch"}),
    Bench("localize", "bench_localize.py", "MLE spot fitting vs Picasso and SciPy", "bench_localize.json", x_localize,
          args=lambda ctx: _q(ctx, ["--quick", "--repeats", "2"]), optional={"picasso": "--skip-picasso"},
          needs={"shipped localization network": PRETRAINED["locnet"]}),
    Bench("drift", "bench_drift.py", "RCC drift correction vs Picasso's undrift", "bench_drift.json", x_drift,
          args=lambda ctx: _q(ctx, ["--quick"]), quick_json="bench_drift_quick.json"),
    Bench("drift_axial", "bench_drift.py", "RCC drift correction of a 3D table (x, y and z)", "bench_drift_axial.json",
          x_drift_axial, args=lambda ctx: ["--axial"] + _q(ctx, ["--quick"]), quick_json="bench_drift_axial_quick.json"),
    Bench("smlm", "eval_smlm.py", "CRLB efficiency; MLE vs localization network on simulated movies",
          "eval_smlm.json", x_smlm, args=lambda ctx: ["--skip-generative"] + _q(ctx, ["--quick"]),
          needs={"shipped localization network": PRETRAINED["locnet"]}),
    Bench("generative", "eval_generative.py", "network fine-tuned on generative-model vs naive frames",
          "eval_generative.json", x_generative, args=lambda ctx: _q(ctx, ["--quick"]),
          needs={"shipped localization network": PRETRAINED["locnet"]}, quick_s=90),
    Bench("fusion", "eval_fusion.py", "particle fusion accuracy (3D NPC, 2D origami, shared Nup107)",
          "eval_fusion.json", x_fusion, args=lambda ctx: _q(ctx, ["--quick", "--shared-particles", "0"]),
          quick_json="eval_fusion_quick.json"),
    Bench("fusion_speed", "bench_fusion.py", "particle fusion time (200/1000 NPCs), all-to-all mode, probreg CPD",
          "bench_fusion.json", x_fusion_speed, args=lambda ctx: _q(ctx, ["--quick"]),
          quick_json="bench_fusion_quick.json", quick_s=60),
    Bench("clid_fig1", "reproduce_clid_fig1.py", "3Snet-CLID Fig. 1 reproduction (CLID accuracy)", "clid_fig1.json",
          # no smaller size: below the paper's 192 px the 65 nm line pair is not resolved (26 s in all)
          x_clid_fig1),
    Bench("eval_denoise", "eval_denoise.py", "3Snet-CLID vs raw/Gaussian/blind-spot/3S, DPS, inference time",
          "eval_denoise.json", x_eval_denoise, args=lambda ctx: _q(ctx, ["--quick"], ["--sweep"]),
          needs={"shipped 3Snet model": PRETRAINED["3snet"]}, checks_exit_quick=False, quick_s=75),
    Bench("psf_fit", "psf_fit.py", "PSF model fitting recovers known parameters (+ measured bead)", "psf_fit.json",
          x_psf_fit, quick_s=75),
    Bench("real_deconv", "real_data_deconv.py", "3D RL on shared real data (bead, hollow bars)",
          "real_data_deconv.json", x_real_deconv, args=lambda ctx: _q(ctx, ["--bead-iterations", "10"]),
          needs={"shared data decon/": SHARED_DATA / "decon"}),
    Bench("real_smlm", "real_data_smlm.py", "localization on shared SMLM movies (SMLM Challenge scoring)",
          "real_data_smlm.json", x_real_smlm, args=lambda ctx: _q(ctx, ["--repeats", "1"]),
          needs={"shared data smlm/": SHARED_DATA / "smlm",
                 "shipped localization network": PRETRAINED["locnet"]}, quick_s=50),
    Bench("real_denoise", "real_data_denoise.py", "jaxsr denoise on the shared FMD confocal pair (vs 50-frame average)",
          "real_data_denoise.json", x_real_denoise,
          needs={"shared data denoise/fmd_bpae_b": SHARED_DATA / "denoise" / "fmd_bpae_b",
                 "shipped 3Snet model": PRETRAINED["3snet"]}, quick_s=90),
    Bench("scaling", "bench_scaling.py", "many-items helpers: throughput vs device count", "bench_scaling.json",
          x_scaling,
          # fake CPU devices: one process per count, so fewer counts; real devices: every count that exists
          args=lambda ctx: ["--device", ctx.device] + _q(ctx, ["--quick", "--repeats", "3"] + (
              ["--counts", "1,8"] if ctx.device == "cpu" else []))),
    Bench("halo", "bench_halo.py", "one image across devices: halo-exchange RL vs single device", "bench_halo.json",
          x_halo,
          args=lambda ctx: ["--device", ctx.device] + _q(ctx, ["--quick", "--repeats", "3"] + (
              ["--devices", "2,8"] if ctx.device == "cpu" else []))),
    Bench("outofcore", "bench_outofcore.py", "larger than memory: Dask/Zarr chunked RL, peak memory and seams",
          "bench_outofcore.json", x_outofcore, args=lambda ctx: _q(ctx, ["--quick"]),
          needs_modules=("dask", "zarr")),
]
BY_NAME = {b.name: b for b in REGISTRY}
# script stems are accepted as aliases by --only/--skip
ALIASES = {Path(b.script).stem: b.name for b in REGISTRY if b.script}


# --------------------------------------------------------------------------- #
# Running
# --------------------------------------------------------------------------- #
def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def probe_device(device: str) -> dict:
    """Devices of ``device`` as seen by a fresh process (so this process never holds an accelerator)."""
    code = ("import json, jax, jaxlib, platform; d = jax.devices(); "
            "print(json.dumps({'platform': d[0].platform, 'device_kind': str(d[0].device_kind), "
            "'device_count': len(d), 'devices': [str(x) for x in d], 'jax_version': jax.__version__, "
            "'jaxlib_version': jaxlib.__version__}))")
    errors = []
    for plat in PLATFORMS[device]:
        env = dict(os.environ, JAX_PLATFORMS=plat)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode == 0:
            info = json.loads(proc.stdout.strip().splitlines()[-1])
            info["jax_platforms"] = plat
            return info
        errors.append(f"JAX_PLATFORMS={plat}: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
    raise SystemExit(f"run_all.py: --device {device}: no {device} devices found by JAX.\n  " + "\n  ".join(errors))


def jaxsr_version() -> str | None:
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return version("jaxsr")
    except Exception:  # noqa: BLE001
        return None


def load_avg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def run_one(b: Bench, ctx: Ctx, env: dict, timeout: float, logs_dir: Path, python: str) -> dict:
    rec: dict[str, Any] = {"what": b.what, "script": f"benchmarks/{b.script}" if b.script else None}
    missing = {label: str(p) for label, p in b.needs.items() if not Path(p).exists()}
    missing_mods = [m for m in b.needs_modules if not has_module(m)]
    if missing or missing_mods:
        why = [f"{label} absent ({p})" for label, p in missing.items()]
        why += [f"module {m} not importable (pip install jaxsr[dask])" for m in missing_mods]
        rec.update(status="skipped", reason="; ".join(why), wall_s=0.0)
        return rec
    out_json = ctx.out_dir / b.json_name(ctx.quick)
    extra = []
    for mod, flag in b.optional.items():
        if not has_module(mod):
            extra.append(flag)
            rec.setdefault("notes", []).append(f"{mod} not importable: {flag}")
    out_flag = ["--out-dir", str(ctx.out_dir)] if b.script in ("reproduce_clid_fig1.py", "eval_denoise.py") \
        else ["--out", str(ctx.out_dir / b.json)]
    cmd = [python, str(HERE / b.script), *b.args(ctx), *extra, *out_flag]
    shown = ["python", f"benchmarks/{b.script}", *b.args(ctx), *extra,
             *[rel(Path(a)) if a.startswith("/") else a for a in out_flag]]
    rec["command"] = shlex.join(shown)
    rec["json"] = rel(out_json)
    log_path = logs_dir / f"{b.name}.log"
    rec["log"] = rel(log_path)
    rec["load_average_before"] = load_avg()
    t_start = time.time()
    t0 = time.perf_counter()
    timed_out = False
    with open(log_path, "w") as log:
        log.write(f"# {rec['command']}\n# JAX_PLATFORMS={env.get('JAX_PLATFORMS')}  started {now_iso()}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)  # own process group: a timeout ends its workers too
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            rc = proc.returncode
        wall = time.perf_counter() - t0
        log.write(f"\n# exit code {rc}, {wall:.1f} s{' (timed out)' if timed_out else ''}\n")
    rec["returncode"] = rc
    rec["wall_s"] = round(wall, 2)
    rec["load_average_after"] = load_avg()
    fresh = out_json.is_file() and out_json.stat().st_mtime >= t_start - 1.0
    if timed_out:
        rec.update(status="timeout", reason=f"ran past --timeout {timeout:.0f} s")
    elif rc != 0 and fresh and ctx.quick and not b.checks_exit_quick:
        rec.update(status="ok", reason=f"exit {rc}: accuracy checks missed at --quick sizes (not a failure)")
    elif rc != 0:
        rec.update(status="failed", reason=f"exit code {rc}" + ("" if fresh else ", no JSON written") +
                   f"; see {rec['log']}")
    elif not fresh:
        rec.update(status="failed", reason=f"exit 0 but {rec['json']} was not written")
    else:
        rec["status"] = "ok"
    rec["json_fresh"] = fresh
    return rec


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def extract(b: Bench, d: dict | None) -> dict:
    if d is None:
        return _out(headlines=["n/a"])
    try:
        return b.extract(d)
    except Exception as exc:  # noqa: BLE001 - a broken extractor must not lose the run
        return _out(headlines=[f"n/a (extractor error: {type(exc).__name__}: {exc})"])


def read_json(path: Path) -> dict | None:
    try:
        with open(path) as f:
            d = json.load(f)
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- #
# Summary
# --------------------------------------------------------------------------- #
def md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def write_summary_md(path: Path, summary: dict) -> None:
    dev = summary["device"]
    lines = [
        f"# Benchmark summary ({'quick' if summary['quick'] else 'full'} run, {dev['requested']})",
        "",
        f"`{summary['command']}` on {dev.get('device_count', '?')} x {dev.get('device_kind', '?')} "
        f"({dev.get('platform', '?')}), jax {summary['versions'].get('jax')}, jaxlib "
        f"{summary['versions'].get('jaxlib')}, jaxsr {summary['versions'].get('jaxsr')}, Python "
        f"{summary['versions'].get('python')}; {summary['host']['cpu_count']} CPUs; "
        f"{summary['start']} to {summary['end']} ({summary['wall_s']:.0f} s); load average "
        f"{summary['host']['load_average_start']} at the start, {summary['host']['load_average_end']} at the end"
        f"{' (shared machine: times vary with load; compare the ratios)' if dev['requested'] == 'cpu' else ''}.",
        "",
        "Compile / steady: seconds of one jaxsr call (trace + compile, then the median steady-state call) "
        "named in *timed*; headline ratios are peer time / jaxsr time unless they say otherwise. "
        + ("`--quick` sizes are smoke tests: they show that everything runs, not the claims (see the full "
           "results in `benchmarks/results/`)." if summary["quick"] else ""),
        "",
        "| benchmark | status | wall s | compile s | steady s | timed | headline numbers |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    notes = []
    for name, r in summary["benchmarks"].items():
        h = r.get("headline") or {}
        status = r["status"]
        if r.get("reason"):
            notes.append(f"- **{name}** ({status}): {r['reason']}")
        heads = "; ".join(h.get("headlines") or []) or "n/a"
        if status == "skipped":
            wall, heads = "-", "(see notes)"
        elif r.get("script"):
            wall = fmt(r.get("wall_s"), ".0f")
        else:
            wall = f"in {r.get('from')}"
        lines.append(
            f"| {name} | {status} | {wall} "
            f"| {fmt(h.get('compile_s'), '.3g')} | {fmt(h.get('steady_s'), '.3g')} "
            f"| {md_escape(h.get('timed') or '')} | {md_escape(heads)} |")
    if notes:
        lines += ["", "Notes:", "", *notes]
    lines += ["", "Commands (run from the repository root; JSON and logs in this folder):", ""]
    for name, r in summary["benchmarks"].items():
        if r.get("command"):
            lines.append(f"- {name}: `{r['command']}`")
    path.write_text("\n".join(lines) + "\n")


def default_out_dir(device: str, quick: bool) -> Path:
    base = HERE / "results"
    if device == "cpu":
        return base / "quick" if quick else base
    return base / (f"{device}-quick" if quick else device)


def select(names: list[str] | None, skip: list[str] | None) -> list[Bench]:
    def parse(items):
        out = []
        for item in items or []:
            for n in item.split(","):
                n = n.strip()
                if not n:
                    continue
                n = ALIASES.get(n, n)
                if n not in BY_NAME:
                    raise SystemExit(f"run_all.py: unknown benchmark {n!r}; known: {', '.join(BY_NAME)}")
                out.append(n)
        return out

    only, skipped = parse(names), set(parse(skip))
    # a view (no script of its own) comes with the entry whose JSON it reads
    chosen = [b for b in REGISTRY if b.name not in skipped and (
        (b.from_entry is None and (not only or b.name in only))
        or (b.from_entry is not None and b.from_entry not in skipped and (not only or b.from_entry in only)))]
    return chosen, set(only)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Benchmarks: " + ", ".join(BY_NAME) + " (script stems work too).")
    parser.add_argument("--device", choices=sorted(PLATFORMS), default="cpu",
                        help="JAX platform for every benchmark (JAX_PLATFORMS); default cpu")
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (< 10 min on a 2-core CPU)")
    parser.add_argument("--only", action="append", metavar="NAME[,NAME]",
                        help="run only these benchmarks (named here, they also run with --quick)")
    parser.add_argument("--skip", action="append", metavar="NAME[,NAME]", help="leave these benchmarks out")
    parser.add_argument("--out-dir", default=None,
                        help="where JSONs, logs/, summary.json and SUMMARY.md go (default: benchmarks/results/, "
                             "results/quick/ with --quick, results/<device>[-quick]/ for gpu/tpu)")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds per benchmark (default {DEFAULT_TIMEOUT[True]:.0f} quick, "
                             f"{DEFAULT_TIMEOUT[False]:.0f} full)")
    parser.add_argument("--list", action="store_true", help="print the registry (name -> command) and exit")
    args = parser.parse_args(argv)

    out_dir = Path(args.out_dir).resolve() if args.out_dir else default_out_dir(args.device, args.quick)
    ctx = Ctx(device=args.device, quick=args.quick, out_dir=out_dir)
    chosen, named = select(args.only, args.skip)
    if args.list:
        for b in REGISTRY:
            if b.script:
                out = (["--out-dir", rel(out_dir)] if b.script in ("reproduce_clid_fig1.py", "eval_denoise.py")
                       else ["--out", rel(out_dir / b.json)])
                extra = [flag for mod, flag in b.optional.items() if not has_module(mod)]
                note = "   [--quick: full runs only, unless named in --only]" if args.quick and b.quick_s else ""
                print(f"{b.name:15s} python benchmarks/{b.script} {shlex.join([*b.args(ctx), *extra, *out])}{note}")
            else:
                print(f"{b.name:15s} (read from the JSON of {b.from_entry})")
        return 0
    if not chosen:
        raise SystemExit("run_all.py: no benchmark selected")

    dev = probe_device(args.device)
    timeout = args.timeout or DEFAULT_TIMEOUT[args.quick]
    out_dir.mkdir(parents=True, exist_ok=True)
    logs_dir = out_dir / "logs"
    logs_dir.mkdir(exist_ok=True)
    env = dict(os.environ, JAX_PLATFORMS=dev["jax_platforms"], PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    start, load_start = now_iso(), load_avg()
    t0 = time.perf_counter()
    print(f"run_all: {len(chosen)} benchmark(s) on {dev['device_count']} x {dev['device_kind']} "
          f"(JAX_PLATFORMS={dev['jax_platforms']}), {'quick' if args.quick else 'full'}, out {rel(out_dir)}, "
          f"timeout {timeout:.0f} s each, load average {load_start}", flush=True)

    results: dict[str, dict] = {}
    for i, b in enumerate(chosen, 1):
        if b.script is None:
            src = results.get(b.from_entry, {})
            rec = {"what": b.what, "script": None, "from": b.from_entry, "status": src.get("status", "skipped"),
                   "json": src.get("json"), "wall_s": None}
            if rec["status"] != "ok":
                rec["reason"] = f"{b.from_entry} did not produce its JSON"
            print(f"[{i}/{len(chosen)}] {b.name}: {rec['status']} (from {b.from_entry})", flush=True)
        else:
            print(f"[{i}/{len(chosen)}] {b.name}: ", end="", flush=True)
            if args.quick and b.quick_s and b.name not in named:
                rec = {"what": b.what, "script": f"benchmarks/{b.script}", "status": "skipped", "wall_s": 0.0,
                       "reason": f"full runs only: about {b.quick_s:.0f} s even at its smallest on 2 cores, "
                                 f"over the --quick budget (run it with --quick --only {b.name})"}
            else:
                rec = run_one(b, ctx, env, timeout, logs_dir, sys.executable)
            print(f"{rec['status']} ({rec.get('wall_s', 0):.0f} s)"
                  + (f" - {rec['reason']}" if rec.get("reason") else ""), flush=True)
        data = read_json(ROOT / rec["json"]) if rec.get("json") and rec["status"] == "ok" else None
        rec["headline"] = extract(b, data)
        results[b.name] = rec

    failed = [n for n, r in results.items() if r["status"] in ("failed", "timeout")]
    summary = {
        "runner": "benchmarks/run_all.py",
        "command": shlex.join(["python", "benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "device": {"requested": args.device, **dev},
        "versions": {"jax": dev.get("jax_version"), "jaxlib": dev.get("jaxlib_version"), "jaxsr": jaxsr_version(),
                     "python": platform.python_version()},
        "host": {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
                 "load_average_start": load_start, "load_average_end": load_avg()},
        "start": start,
        "end": now_iso(),
        "wall_s": round(time.perf_counter() - t0, 1),
        "timeout_s": timeout,
        "out_dir": rel(out_dir),
        "failed": failed,
        "benchmarks": results,
    }
    with open(out_dir / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    write_summary_md(out_dir / "SUMMARY.md", summary)
    print(f"\nrun_all: {len(results)} entries in {summary['wall_s']:.0f} s; "
          f"{sum(r['status'] == 'ok' for r in results.values())} ok, "
          f"{sum(r['status'] == 'skipped' for r in results.values())} skipped, {len(failed)} failed"
          f"{' (' + ', '.join(failed) + ')' if failed else ''}; wrote {rel(out_dir / 'SUMMARY.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
