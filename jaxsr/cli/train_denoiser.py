"""Train a 3Snet denoiser on ON/OFF series of a reversibly switchable fluorophore (Xue et al. 2026).

From ON.tif and OFF.tif, two (t, y, x) series of the same fixed sample (t >= 2,
the paper uses 50 each), the ground truth is AVG(ON) - AVG(OFF); the network
learns from pairs of averages of random ON frames mixed with that ground truth,
with the weight --lambda of the supervised term (inf: supervised only, 0:
Noise2Noise only). --lambda auto trains one network per lambda in
{0, 1, 2, 4, 8, 16, inf}, prints the single-frame test pSNR of each on the
held-out bottom fifth of the field, and keeps the best. The model directory
(model.json + params.msgpack) is what `jaxsr denoise --model` and `jaxsr clid
--denoiser` read.

Training is deterministic from --seed and checkpointed into --checkpoint-dir
(default MODEL_DIR/checkpoint; one sub-folder per lambda with --lambda auto).
Ctrl-C keeps a checkpoint of the last finished step: running the same command
again resumes exactly where it stopped (a command with other settings is
refused; use a new --checkpoint-dir). Exit codes: 0 done, 2 bad input, 3 the
loss diverged (NaN; the last good checkpoint is kept; retry with a lower
--learning-rate and a new --checkpoint-dir), 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys

import numpy as np

from jaxsr.cli._common import Progress, nonnegative_float, positive_float, positive_int, require_input
from jaxsr.cli.denoise import flag_errors

HELP = "train a 3Snet denoiser on ON/OFF series (lambda sweep, resumable checkpoints)"

EXIT_DIVERGED = 3
_TEST_FRACTION = 0.2  # the fraction of the rows held out (at the bottom) for the test pSNR
_FLAGS = {"on": "--on", "off": "--off", "patch_size": "--patch-size", "batch_size": "--batch-size",
          "lam": "--lambda", "checkpoint_dir": "--checkpoint-dir", "steps": "--steps",
          "learning_rate": "--learning-rate", "test_fraction": "--on", "ks": "--on", "path": "--output",
          "seed": "--seed"}


def lambda_arg(text: str) -> float | str:
    """argparse type: ``auto``, ``inf`` or a number >= 0."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, inf or a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected auto, inf or a number >= 0, got {text!r}")
    return value


# The defaults of jaxsr.nn.TrainConfig (not imported here: building the parser must not load flax).
DEFAULTS = {"steps": 2000, "batch_size": 16, "patch_size": 64, "learning_rate": 3e-4}


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = argparse.Namespace(**DEFAULTS)
    p.add_argument("--on", required=True, help="ON series (t, y, x), t >= 2, camera units")
    p.add_argument("--off", required=True, help="OFF series (t, y, x), same shape as --on")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="model directory to write")
    p.add_argument("--lambda", dest="lam", type=lambda_arg, default=math.inf, metavar="auto|NUMBER|inf",
                   help="weight of the supervised term: a number >= 0, inf (default: supervised only), "
                        "or auto (train every lambda in 0,1,2,4,8,16,inf and keep the best test pSNR)")
    p.add_argument("--steps", type=positive_int, default=d.steps, help=f"training steps (default {d.steps})")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help=f"patches per step (default {d.batch_size})")
    p.add_argument("--patch-size", type=positive_int, default=d.patch_size,
                   help=f"training patch side in pixels (default {d.patch_size})")
    p.add_argument("--learning-rate", type=positive_float, default=d.learning_rate,
                   help=f"peak Adam learning rate, one-cycle schedule (default {d.learning_rate:g})")
    p.add_argument("--offset", type=nonnegative_float, default=0.0,
                   help="camera offset in ADU, subtracted before normalising (default 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g = p.add_argument_group("network (default: the 3Snet/Noise2Noise U-Net, depth 5, 48/96 channels)")
    g.add_argument("--small", action="store_true",
                   help="a lighter U-Net: depth 4, 32/64 channels (the shipped model's shape)")
    g.add_argument("--depth", type=positive_int, default=None, help="U-Net poolings (overrides --small)")
    g.add_argument("--features", type=positive_int, default=None,
                   help="U-Net encoder channels; the decoder gets twice as many (overrides --small)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="resumable checkpoints (default MODEL_DIR/checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in MODEL_DIR")


class TrainProgress(Progress):
    """Progress bar of a training run showing the loss and the latest test pSNR.

    On a terminal it redraws one line; otherwise it prints a line every
    ``every`` steps (logs of long runs).
    """

    def __init__(self, total: int, label: str, every: int | None = None):
        super().__init__(total, label)
        self.every = every or max(1, total // 10)

    def __call__(self, info) -> None:
        done = int(info["step"])
        text = f"loss {info['loss']:.4g}"
        if "test_psnr" in info:
            text += f", test pSNR {info['test_psnr']:.2f} dB"
        if self.live:
            width = 30
            filled = int(width * min(done, self.total) / max(self.total, 1))
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {text}  ")
            self.stream.flush()
        elif done % self.every == 0 or done == self.total:
            print(f"{self.label}: step {done}/{self.total}, {text}", flush=True)


def _network(args: argparse.Namespace):
    from jaxsr.nn import UNetConfig

    base = UNetConfig(depth=4, features=32, decoder_features=64) if args.small else UNetConfig()
    depth = base.depth if args.depth is None else args.depth
    features = base.features if args.features is None else args.features
    decoder = base.decoder_features if args.features is None else 2 * args.features
    if depth > 8:
        raise ValueError(f"--depth: at most 8 poolings, got {depth}")
    return dataclasses.replace(base, depth=depth, features=features, decoder_features=decoder)


def _read_series(path: str, flag: str) -> np.ndarray:
    from jaxsr.io import read_image

    series, _ = read_image(require_input(path, flag))
    if series.ndim != 3:
        raise ValueError(f"{flag}: expected a (t, y, x) series of at least 2 frames, got shape {series.shape}")
    if series.shape[0] < 2:
        raise ValueError(f"{flag}: needs at least 2 frames, got {series.shape[0]}")
    if not np.isfinite(series).all():
        raise ValueError(f"{flag}: contains NaN or infinite pixels")
    return series


def _check_test_rows(shape: tuple[int, int], config) -> None:
    """Before training: the held-out bottom fifth of the frames must be large enough for the network
    (the test pSNR denoises it every few steps), else a one-line error naming --on and --depth."""
    from jaxsr.nn.three_snet import _test_rows

    ny, nx = shape
    m = config.multiple
    n_test = _test_rows(ny, _TEST_FRACTION)
    if nx < m:
        raise ValueError(f"--on: frames {nx} pixels wide are narrower than the network's minimum of {m} "
                         f"(--depth {config.depth}); use a smaller --depth")
    if n_test < m:
        rows = max(1, math.ceil((m - 0.5) / _TEST_FRACTION) - 1)
        while _test_rows(rows, _TEST_FRACTION) < m:
            rows += 1
        raise ValueError(f"--on: the test pSNR holds out the bottom {n_test} of the {ny} rows, fewer than the "
                         f"network's minimum of {m} (--depth {config.depth}); use frames of at least {rows} rows "
                         "or a smaller --depth")


def _fmt_lambda(lam: float) -> str:
    return "inf" if math.isinf(lam) else f"{lam:g}"


def run(args: argparse.Namespace) -> int:
    import jax

    from jaxsr.nn import (
        CHECKPOINT_FILE,
        LAMBDAS,
        TrainConfig,
        TrainingDiverged,
        save_model,
        three_snet_data,
        train_3snet,
    )

    out = args.output
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"--output: exists and is not a folder: {out}")
    if os.path.exists(os.path.join(out, "model.json")) and not args.overwrite:
        raise FileExistsError(f"--output: {out} already holds a model; pass --overwrite to replace it")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--output: folder does not exist: {parent}")
    for path, flag in ((args.on, "--on"), (args.off, "--off")):
        if os.path.abspath(path) == os.path.abspath(out):
            raise ValueError(f"--output: {out} is the {flag} file; inputs are never overwritten")
    config = _network(args)
    on = _read_series(args.on, "--on")
    off = _read_series(args.off, "--off")
    if on.shape != off.shape:
        raise ValueError(f"--off: shape {off.shape} differs from --on's {on.shape}")

    ckpt = args.checkpoint_dir or os.path.join(out, "checkpoint")
    every = max(1, min(100, args.steps // 20))
    with flag_errors(_FLAGS):
        train = TrainConfig(steps=args.steps, batch_size=args.batch_size, patch_size=args.patch_size,
                            learning_rate=args.learning_rate, eval_every=every, checkpoint_every=every,
                            seed=args.seed)
    _check_test_rows(on.shape[-2:], config)
    key = jax.random.key(args.seed)
    k_data, k_train = jax.random.split(key)
    with flag_errors(_FLAGS):
        data = three_snet_data(k_data, on, off, offset=args.offset, test_fraction=_TEST_FRACTION)
    sweep = args.lam == "auto"
    lambdas = LAMBDAS if sweep else (args.lam,)

    table, best = [], None
    for lam in lambdas:
        tag = f"lambda {_fmt_lambda(lam)}"
        where = os.path.join(ckpt, f"lambda-{_fmt_lambda(lam)}") if sweep else ckpt
        bar = TrainProgress(args.steps, f"training {tag}", every=every)
        last = {"step": 0}

        def callback(info, bar=bar, last=last):
            last["step"] = int(info["step"])
            bar(info)

        try:
            with flag_errors(_FLAGS):
                model, result = train_3snet(k_train, None, None, lam=lam, config=config, train=train,
                                            offset=args.offset, checkpoint_dir=where, callback=callback, data=data)
        except KeyboardInterrupt:
            bar.close()
            at = f"at step {last['step']}/{args.steps} " if last["step"] else ""
            saved = any(CHECKPOINT_FILE in files for _, _, files in os.walk(ckpt))
            then = f"checkpoint kept in {ckpt}; run the same command again to resume" if saved else (
                "no checkpoint yet; run the same command again to start")
            print(f"jaxsr train-denoiser: interrupted {at}({tag}); {then}", file=sys.stderr)
            return 130
        except TrainingDiverged as err:
            bar.close()
            what = str(err).splitlines()[0]
            print(f"jaxsr train-denoiser: error: {what} ({tag}); lower --learning-rate and use a new "
                  "--checkpoint-dir", file=sys.stderr)
            return EXIT_DIVERGED
        bar.close()
        score = model.info.get("test_psnr", float("nan"))
        if result.resumed_from:
            print(f"{tag}: resumed from step {result.resumed_from} of the checkpoint in {where}")
        table.append({"lambda": _fmt_lambda(lam), "test_psnr": score})
        if best is None or score > best[0]:
            best = (score, lam, model, result)

    score, lam, model, result = best
    if sweep:
        print("lambda   test pSNR (dB)")
        for row in table:
            mark = "  <- best" if row["lambda"] == _fmt_lambda(lam) else ""
            print(f"{row['lambda']:>6}   {row['test_psnr']:.2f}{mark}")
    info = {**model.info, "training_data": {"on": os.path.abspath(args.on), "off": os.path.abspath(args.off),
                                            "shape": list(on.shape)}, "seed": args.seed}
    if sweep:
        info["lambda_sweep"] = table
    model = dataclasses.replace(model, info=info)
    with flag_errors(_FLAGS):
        save_model(out, model, overwrite=args.overwrite)
    print(f"wrote {out}: 3snet, lambda {_fmt_lambda(lam)}, {result.step} steps, test pSNR {score:.2f} dB, "
          f"U-Net depth {config.depth} {config.features}/{config.decoder_features} channels (checkpoint in {ckpt})")
    return 0
