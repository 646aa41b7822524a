"""Train the 3Snet shipped inside the package, from the project's own simulations only.

Training data: fields of the four structure families the issue names, from
sparse to crowded: synthetic microtubules (filaments), beads, filaments and
beads together, hollow vesicle-like rings and ER-like tubular networks, imaged
as ON/OFF series of a reversibly switchable protein with the 3Snet-CLID Fig. 1
protocol (:func:`jaxsr.simulate.rsfp.simulate_rsfp_series`: 65 nm pixels, NA
1.49, 488 nm, 50 cycles, fixed-pattern background, Poisson (5) + Gaussian (5)
noise), at varied brightness (peak 60-255 grey levels) and background (level
20-140, contrast 0.2-0.7, correlation 6-32 px); see :func:`training_fields`.
``benchmarks/eval_denoise.py`` and the mean-preservation test score the model on
held-out fields (other seeds, so other geometry, background and noise).

The shipped model is three runs on 2 cores (17 min, 20 min and 17 min): a training, a fine-tuning at a
lower learning rate with larger batches, and a second fine-tuning on 150 fields instead of 60 (the
first 60 are the same fields; more background patterns halved the rings' mean error):

    python benchmarks/train_3snet.py --out /tmp/3snet-stage1 --checkpoint-dir /tmp/ck1 \
        --results benchmarks/results/train_3snet_stage1.json
    python benchmarks/train_3snet.py --init /tmp/3snet-stage1 --steps 1500 --learning-rate 3e-4 \
        --batch-size 16 --out /tmp/3snet-stage2 --checkpoint-dir /tmp/ck2 \
        --results benchmarks/results/train_3snet_stage2.json
    python benchmarks/train_3snet.py --init /tmp/3snet-stage2 --steps 2400 --learning-rate 2e-4 \
        --batch-size 16 --fields 150 --checkpoint-dir /tmp/ck3

    python benchmarks/train_3snet.py --lam auto           # lambda sweep first, then the full training
    python benchmarks/train_3snet.py --steps 200 --fields 8 --out /tmp/m  # a quick one

Everything is deterministic from ``--seed``; the run writes checkpoints into
``--checkpoint-dir`` and resumes from them when restarted (Ctrl-C is safe).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxsr.io.atomic import write_json  # noqa: E402
from jaxsr.nn import (  # noqa: E402
    LAMBDAS,
    TrainConfig,
    UNetConfig,
    count_params,
    load_model,
    save_model,
    three_snet_data,
    train_3snet,
)
from jaxsr.nn.three_snet import _test_psnr  # noqa: E402
from jaxsr.simulate import (  # noqa: E402
    filaments,
    hollow_rings,
    random_beads,
    render_points,
    render_polyline,
    tubular_network,
)
from jaxsr.simulate.dataset import widefield_psf  # noqa: E402
from jaxsr.simulate.rsfp import rsfp_background, simulate_rsfp_series  # noqa: E402

SHIPPED_UNET = UNetConfig(depth=4, features=32, decoder_features=64)
PIXEL_NM, NA, WAVELENGTH_NM, UPSAMPLE = 65.0, 1.49, 488.0, 3


def _log_uniform(u, lo, hi):
    return float(lo * (hi / lo) ** u)


def training_fields(key, *, n_fields=60, size=128, n_cycles=50):
    """ON/OFF series of filament, bead, mixed, ring and network fields: ``(s, n, y, x)`` each.

    Field ``i`` cycles through five kinds: filaments, beads, filaments + beads,
    hollow rings, tubular networks. Density is drawn log-uniformly from sparse
    to crowded, scaled with the area (per 128 px field: 3-48 filaments of 1.5
    field lengths, 20-1200 beads, 4-40 rings, networks of mean polygon size
    450-1800 nm), so the network sees the dense haze of overlapping PSF tails
    as signal, not as background. Rings: diameters uniform in ``(d, 2.5 d)``
    with ``d`` 150-400 nm, at least 50-250 nm apart. Networks: 0-30 % of the
    edges pruned, bowed by up to 0-200 nm. Brightness (peak 60-255 grey
    levels), background level (20-140), background contrast (0.2-0.7) and
    background correlation length (6-32 px) are drawn uniformly per field.
    """
    fine = PIXEL_NM / UPSAMPLE
    psf = widefield_psf(psf="airy", na=NA, wavelength_nm=WAVELENGTH_NM, pixel_size_nm=fine)
    field = (size * PIXEL_NM, size * PIXEL_NM)
    fine_shape = (size * UPSAMPLE, size * UPSAMPLE)
    area = (size / 128.0) ** 2
    ons, offs = [], []
    for i in range(n_fields):
        k_struct, k_bg, k_series, k_par, k_beads = jax.random.split(jax.random.fold_in(key, i), 5)
        u = np.asarray(jax.random.uniform(k_par, (9,)))
        kind = i % 5
        lines = None  # the polylines of the field's structure (kinds 0, 2, 3, 4), drawn with one renderer
        if kind in (0, 2):
            n_fil = max(1, int(round(_log_uniform(u[0], 3, 48) * area)))
            lines = filaments(k_struct, n_filaments=n_fil, field_nm=field, length_nm=1.5 * field[0])
        elif kind == 3:
            d = 150.0 + 250.0 * float(u[6])
            lines = hollow_rings(k_struct, n=max(1, int(round(_log_uniform(u[0], 4, 40) * area))), field_nm=field,
                                 diameter_nm=(d, 2.5 * d), min_gap_nm=50.0 + 200.0 * float(u[7]))
        elif kind == 4:
            lines = tubular_network(k_struct, field_nm=field, mean_spacing_nm=_log_uniform(u[0], 450.0, 1800.0),
                                    prune_fraction=0.3 * float(u[6]), bend_nm=200.0 * float(u[7]), points_per_edge=9)
        truth = jnp.zeros(fine_shape, jnp.float32)
        if lines is not None:
            truth = truth + render_polyline(lines, shape=fine_shape, pixel_size_nm=fine, photons_per_nm=1.0)
        if kind in (1, 2):
            n_beads = max(1, int(round(_log_uniform(u[5], 20, 1200) * area)))
            pts = random_beads(k_beads, n=n_beads, field_nm=field)
            beads = render_points(pts, shape=fine_shape, pixel_size_nm=fine)
            if kind == 2:  # beads as bright (per fine pixel) as the brightest filament pixel
                beads = beads * (float(truth.max()) / max(float(beads.max()), 1e-12))
            truth = truth + beads
        peak = float(60.0 + 195.0 * u[1])
        level = float(20.0 + 120.0 * u[2])
        contrast = float(0.2 + 0.5 * u[3])
        correlation = float(6.0 + 26.0 * u[4])
        bg = rsfp_background(k_bg, (size, size), level=level, contrast=contrast, correlation_px=correlation)
        on, off, _ = simulate_rsfp_series(k_series, truth, psf, n_cycles=n_cycles, binning=UPSAMPLE,
                                          background_pattern=bg, peak=peak)
        ons.append(on)
        offs.append(off)
    return jnp.stack(ons), jnp.stack(offs)


def _describe(model, args):
    if args.init is not None:  # a fine-tuning: keep how the starting model was trained
        start = load_model(args.init).info
        model = model._replace_info(fine_tuned_from={k: start[k] for k in ("train", "test_psnr", "lambda",
                                                                         "training_data", "fine_tuned_from")
                                                     if k in start})
    return model._replace_info(
        training_data="jaxsr simulations: filaments, beads, both, hollow rings and tubular networks, sparse to "
                      "crowded, 3Snet-CLID Fig. 1 "
                      f"protocol ({args.fields} fields of {args.size} px, 50 ON/OFF cycles, peak 60-255, background "
                      "level 20-140, contrast 0.2-0.7, correlation 6-32 px)",
        script="benchmarks/train_3snet.py", seed=args.seed, pixel_size_nm=PIXEL_NM, na=NA,
        wavelength_nm=WAVELENGTH_NM,
    )


def export_checkpoint(args, data, cfg, k_net):
    """Save the model of the latest checkpoint of an interrupted (resumable) run."""
    from jaxsr.nn import DenoiserModel, load_train_state, unet_init

    lam = math.inf if args.lam in ("inf", "auto") else float(args.lam)
    tc = TrainConfig(steps=args.steps, batch_size=args.batch_size, patch_size=args.patch_size,
                     learning_rate=args.learning_rate, eval_every=100, checkpoint_every=50, seed=args.seed)
    loaded = load_train_state(args.checkpoint_dir, params=unet_init(k_net, config=cfg), config=tc)
    if loaded is None:
        raise SystemExit(f"no checkpoint in {args.checkpoint_dir}")
    params, _, step, history, _ = loaded
    model = DenoiserModel(kind="3snet", unet=cfg, params=params, offset=0.0,
                          info={"lambda": "inf" if math.isinf(lam) else lam, "train": tc.to_dict(),
                                "steps_done": step})
    model = _describe(model._replace_info(test_psnr=_test_psnr(model, data)), args)
    save_model(args.out, model, overwrite=True)
    report = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "unet": cfg.to_dict(),
              "lambda": model.info["lambda"], "sweep": [], "steps": args.steps, "steps_done": step,
              "stopped_early": step < args.steps, "test_psnr_db": model.info["test_psnr"], "history": history,
              "fields": args.fields, "size": args.size, "seed": args.seed}
    write_json(args.results, report, overwrite=True, nonfinite="null")
    print(f"exported step {step}/{args.steps} (test pSNR {model.info['test_psnr']:.2f} dB) to {args.out}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "jaxsr/nn/pretrained/3snet"))
    p.add_argument("--checkpoint-dir", default="/tmp/jaxsr-train-3snet")
    p.add_argument("--lam", default="inf", help="'inf' (default, the shipped model), a number, or 'auto' (sweep)")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--sweep-steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--fields", type=int, default=60)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None, help="a model directory to fine-tune from (same network)")
    p.add_argument("--export-checkpoint", action="store_true",
                   help="write the model from the latest checkpoint in --checkpoint-dir (a run stopped early) and exit")
    p.add_argument("--results", default=str(Path(__file__).resolve().parent / "results/train_3snet.json"))
    args = p.parse_args(argv)

    key = jax.random.key(args.seed)
    k_fields, k_train = jax.random.split(key)
    t0 = time.perf_counter()
    on, off = training_fields(k_fields, n_fields=args.fields, size=args.size)
    print(f"simulated {on.shape[0]} fields of {on.shape[1]} ON/OFF frames {on.shape[2:]} "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    k_data, k_net = jax.random.split(k_train)
    data = three_snet_data(k_data, on, off)
    cfg = SHIPPED_UNET
    print(f"network: {count_params(jax.eval_shape(lambda: __import__('jaxsr').nn.unet_init(k_net, config=cfg)))} "
          "parameters", flush=True)

    def progress(prefix):
        def cb(info):
            if info["step"] % 25 == 0 or info["step"] == info["steps"]:
                extra = f" test pSNR {info['test_psnr']:.2f} dB" if "test_psnr" in info else ""
                print(f"{prefix} step {info['step']}/{info['steps']} loss {info['loss']:.5f}{extra}", flush=True)
        return cb

    if args.export_checkpoint:
        return export_checkpoint(args, data, cfg, k_net)
    sweep = []
    if args.lam == "auto":
        for lam in LAMBDAS:
            tc = TrainConfig(steps=args.sweep_steps, batch_size=args.batch_size, patch_size=args.patch_size,
                             learning_rate=args.learning_rate, eval_every=args.sweep_steps, seed=args.seed)
            t = time.perf_counter()
            m, _ = train_3snet(k_net, None, None, lam=lam, config=cfg, train=tc, data=data,
                               callback=progress(f"[sweep lambda={lam}]"))
            score = _test_psnr(m, data)
            sweep.append({"lambda": "inf" if math.isinf(lam) else lam, "test_psnr_db": score,
                          "seconds": time.perf_counter() - t})
            print(f"lambda {lam}: test pSNR {score:.2f} dB", flush=True)
        best = max(sweep, key=lambda r: r["test_psnr_db"])
        lam = math.inf if best["lambda"] == "inf" else float(best["lambda"])
    else:
        lam = float(args.lam)
    print(f"training lambda={lam} for {args.steps} steps", flush=True)
    tc = TrainConfig(steps=args.steps, batch_size=args.batch_size, patch_size=args.patch_size,
                     learning_rate=args.learning_rate, eval_every=100, checkpoint_every=50, seed=args.seed)
    t = time.perf_counter()
    init = None if args.init is None else load_model(args.init)
    model, result = train_3snet(k_net, None, None, lam=lam, config=cfg, train=tc, data=data, init=init,
                                checkpoint_dir=args.checkpoint_dir, callback=progress("[train]"))
    seconds = time.perf_counter() - t
    model = _describe(model, args)
    save_model(args.out, model, overwrite=True)
    report = {
        "device": jax.devices()[0].device_kind, "jax": jax.__version__, "unet": cfg.to_dict(),
        "lambda": "inf" if math.isinf(lam) else lam, "sweep": sweep, "steps": args.steps,
        "resumed_from": result.resumed_from, "train_seconds": seconds, "history": result.history,
        "fields": args.fields, "size": args.size, "seed": args.seed, "init": args.init,
        "batch_size": args.batch_size, "patch_size": args.patch_size,
        "command": "python benchmarks/train_3snet.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    write_json(args.results, report, overwrite=True, nonfinite="null")
    print(json.dumps({k: report[k] for k in ("lambda", "sweep", "steps", "train_seconds")}, indent=1))


if __name__ == "__main__":
    main()
