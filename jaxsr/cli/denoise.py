"""Denoise a single frame or a time-lapse with a trained network (the shipped 3Snet by default).

INPUT is a 2D frame (y, x) or frames (t, y, x) in camera units; every frame is
denoised on its own, a few frames per network call, and the result is written
atomically as float32 TIFF with the input's pixel size (the input is never
modified). The network is the 3Snet shipped inside jaxsr (trained on the
project's simulations only), a model directory written by `jaxsr
train-denoiser` (--model DIR), or, with --self-supervised, a blind-spot network
(Noise2Void) trained on INPUT itself first (no ON/OFF data or clean images
needed; --steps sets its length, --save-model keeps it). Frames larger than
1024 x 1024 pixels, or any frame with --tile, go through the network in
overlapping, smoothly blended tiles.

The 3Snet learned AVG(ON) - AVG(OFF): it returns the signal of the switching
fluorophore and drops what does not switch, so smooth background (haze,
autofluorescence) and diffuse structure wider than a few pixels leave with the
noise. That is what single-frame CLID needs; to denoise while keeping every
photon of signal (confocal, any camera), use --self-supervised. The command
says how much of the input's intensity a model removed when it is most of it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

import numpy as np

from jaxsr.cli._common import (
    Progress,
    check_output,
    nonnegative_float,
    offset_or_recorded,
    output_axes,
    positive_int,
    require_input,
)

HELP = "denoise a frame or time-lapse with a trained network (3Snet by default) or self-supervised"

# Names of library arguments -> the flags that set them, for one-line errors that name the flag.
_FLAGS = {"model": "--model", "image": "INPUT", "tile": "--tile", "overlap": "--overlap",
          "batch_size": "--batch", "offset": "--offset", "patch_size": "--patch-size", "steps": "--steps",
          "images": "INPUT", "train": "--patch-size", "path": "--save-model", "seed": "--seed"}


@contextlib.contextmanager
def flag_errors(flags: dict[str, str]) -> Iterator[None]:
    """Re-raise the library's ``argument 'name': ...`` errors as ``FLAG: ...`` (same exception type)."""
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        msg = str(err)
        new = msg
        for name, flag in flags.items():
            new = new.replace(f"argument '{name}'", flag)
        if new == msg:
            raise
        raise type(err)(new) from None


def load_denoiser(spec: str | None, flag: str):
    """The model named on the command line: ``None``/``"3snet"`` = the shipped 3Snet, else a model directory."""
    from jaxsr.nn import load_model, pretrained_path

    if spec is None or spec == "3snet":
        path = pretrained_path(name="3snet")
        if not (path / "model.json").is_file():
            raise FileNotFoundError(f"{flag}: the shipped 3Snet is missing from this installation ({path}); "
                                    "pass a model directory")
    else:
        path = spec
        if not os.path.exists(path):
            raise FileNotFoundError(f"{flag}: no such model directory: {path}")
    with flag_errors({"model": flag}):
        return load_model(path)


def check_frames(image: np.ndarray, name: str, model=None) -> None:
    """Refuse anything but finite (y, x) / (t, y, x) frames at least the network's minimum size."""
    if image.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a frame (y, x) or frames (t, y, x), got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"{name}: the image is empty, shape {image.shape}")
    if not np.isfinite(image).all():
        raise ValueError(f"{name}: contains NaN or infinite pixels")
    if model is not None and min(image.shape[-2:]) < model.min_size:
        raise ValueError(f"{name}: frames of {image.shape[-2]} x {image.shape[-1]} pixels are smaller than the "
                         f"network's minimum of {model.min_size} x {model.min_size}")


def removed_fraction(image: np.ndarray, result: np.ndarray, offset: float) -> float:
    """The fraction of the input's summed intensity above ``offset`` that ``result`` does not hold
    (0 when the output keeps it all, 1 when it keeps none; 0 for an input with none)."""
    total = float(np.sum(np.asarray(image, np.float64) - offset))
    return 0.0 if total <= 0 else float(np.clip(1.0 - np.sum(result, dtype=np.float64) / total, 0.0, 1.0))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="input TIFF: a frame (y, x) or frames (t, y, x), camera units")
    p.add_argument("-o", "--output", required=True, help="output TIFF path (float32)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None,
                     help="model directory (from `jaxsr train-denoiser`) or 3snet (default: the shipped 3Snet)")
    src.add_argument("--self-supervised", action="store_true",
                     help="train a blind-spot (Noise2Void) network on INPUT itself, then apply it")
    p.add_argument("--offset", type=nonnegative_float, default=None,
                   help="camera offset in ADU subtracted before normalising (default: the one jaxsr simulate "
                        "recorded in the image's metadata, else the model's, 0 for 3Snet)")
    p.add_argument("--tile", type=positive_int, default=None,
                   help="tile side in pixels for tiled inference (default: whole frames up to 1024 x 1024)")
    p.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels (default 32)")
    p.add_argument("--tta", action="store_true", help="average over the 8 flips/rotations (slower, smoother)")
    p.add_argument("--batch", type=positive_int, default=4, help="frames (or tiles) per network call (default 4)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    g = p.add_argument_group("self-supervised training (--self-supervised)")
    # defaults of jaxsr.nn.self_supervised (SELF_SUPERVISED_TRAIN / _UNET), not imported here so that
    # `jaxsr --help` does not load JAX; tests/cli/test_denoise_cli.py checks that they agree
    g.add_argument("--steps", type=positive_int, default=None, help="training steps (default 600)")
    g.add_argument("--patch-size", type=positive_int, default=None,
                   help="training patch side, reduced to the frame size if larger (default 64)")
    g.add_argument("--depth", type=positive_int, default=None, help="U-Net poolings (default 3)")
    g.add_argument("--features", type=positive_int, default=None,
                   help="U-Net encoder channels; the decoder gets twice as many (default 16)")
    g.add_argument("--seed", type=int, default=None, help="random seed of the training (default 0)")
    g.add_argument("--save-model", default=None, metavar="DIR", help="also save the trained model to DIR")


def _self_supervised_model(args: argparse.Namespace, image: np.ndarray):
    """Train a blind-spot model on the frames of ``image`` (with a progress bar); the DenoiserModel."""
    import dataclasses

    import jax

    from jaxsr.cli.train_denoiser import TrainProgress
    from jaxsr.nn.self_supervised import SELF_SUPERVISED_TRAIN, SELF_SUPERVISED_UNET, train_self_supervised

    cfg = SELF_SUPERVISED_UNET
    if args.depth is not None:
        if args.depth > 8:
            raise ValueError(f"--depth: at most 8 poolings, got {args.depth}")
        cfg = dataclasses.replace(cfg, depth=args.depth)
    if args.features is not None:
        cfg = dataclasses.replace(cfg, features=args.features, decoder_features=2 * args.features)
    if min(image.shape[-2:]) < cfg.multiple:
        raise ValueError(f"INPUT: frames of {image.shape[-2]} x {image.shape[-1]} pixels are smaller than the "
                         f"network's minimum of {cfg.multiple} x {cfg.multiple} (--depth {cfg.depth})")
    steps = SELF_SUPERVISED_TRAIN.steps if args.steps is None else args.steps
    patch = SELF_SUPERVISED_TRAIN.patch_size if args.patch_size is None else args.patch_size
    seed = args.seed or 0
    every = max(1, min(100, steps // 10))
    with flag_errors(_FLAGS):  # TrainConfig checks the seed (>= 0): the error names --seed
        train = dataclasses.replace(SELF_SUPERVISED_TRAIN, steps=steps, seed=seed, eval_every=every,
                                    patch_size=min(patch, *image.shape[-2:]))
    bar = TrainProgress(steps, "self-supervised training", every=every)
    try:
        with flag_errors(_FLAGS):
            model, _ = train_self_supervised(jax.random.key(seed), image, config=cfg, train=train,
                                             callback=bar)
    finally:
        bar.close()
    return model


def run(args: argparse.Namespace) -> int:
    from jaxsr.io import read_image, write_image
    from jaxsr.nn import denoise, save_model

    require_input(args.input, "INPUT")
    check_output(args, [args.input])
    if args.overlap < 0:
        raise ValueError(f"--overlap: expected a non-negative number of pixels, got {args.overlap}")
    if not args.self_supervised:
        for flag in ("steps", "patch_size", "depth", "features", "seed", "save_model"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')}: only with --self-supervised (it sets up the training)")
    if args.save_model is not None:
        if os.path.exists(os.path.join(args.save_model, "model.json")) and not args.overwrite:
            raise FileExistsError(f"--save-model: {args.save_model} already holds a model; pass --overwrite")
    image, meta = read_image(args.input)
    check_frames(image, "INPUT")
    offset = offset_or_recorded(args.offset, meta, "--offset")
    if args.self_supervised:
        model = _self_supervised_model(args, image)
        if args.save_model is not None:
            with flag_errors(_FLAGS):
                save_model(args.save_model, model, overwrite=args.overwrite)
        source = f"self-supervised {model.kind}, {model.info.get('steps')} steps"
    else:
        model = load_denoiser(args.model, "--model")
        source = args.model or "shipped 3Snet"
    check_frames(image, "INPUT", model)

    frames = image.reshape((-1,) + image.shape[-2:])
    result = np.empty(frames.shape, np.float32)
    n, batch = frames.shape[0], args.batch
    bar = Progress(n, "denoising")
    try:
        for start in range(0, n, batch):
            chunk = frames[start:start + batch]
            k = chunk.shape[0]
            if 1 < batch < n and k < batch:  # same batch shape as the others: no second compilation
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - k, axis=0)])
            with flag_errors(_FLAGS):
                out = denoise(chunk, model=model, offset=offset, tile=args.tile, overlap=args.overlap,
                              tta=args.tta, batch_size=batch)
            result[start:start + k] = np.asarray(out)[:k]
            bar(start + k)
    finally:
        bar.close()
    result = result.reshape(image.shape)
    axes = output_axes(meta.axes, result.ndim, 2)
    write_image(args.output, result, pixel_size_nm=meta.pixel_size_nm, z_step_nm=meta.z_step_nm, axes=axes,
                overwrite=args.overwrite)
    removed = removed_fraction(image, result, model.offset if offset is None else offset)
    if removed >= 0.5:
        print(f"note: the output holds {100 * (1 - removed):.0f} % of the input's intensity above the offset: "
              f"this model removes background{' (--self-supervised keeps it)' if not args.self_supervised else ''}")
    pixel = f"pixel {meta.pixel_size_nm:.2f} nm" if meta.pixel_size_nm else "no pixel size"
    saved = f"; model saved to {args.save_model}" if args.save_model else ""
    print(f"wrote {args.output}: {result.shape} float32, {pixel} (model: {source}{', TTA' if args.tta else ''})"
          f"{saved}")
    return 0
