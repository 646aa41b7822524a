"""jaxsr train-denoiser: a tiny lambda sweep that is interrupted and resumed, divergence, one-line errors."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

import jaxsr.nn
from jaxsr.cli import train_denoiser
from jaxsr.cli.main import main
from jaxsr.io import read_image, write_image
from jaxsr.nn import CHECKPOINT_FILE, TrainConfig, UNetConfig, load_model

# --depth 2 --features 4: a U-Net of depth 2 with 4/8 channels, the same tiny network as the denoise tests.
TINY = ["--depth", "2", "--features", "4", "--patch-size", "16", "--batch-size", "4"]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def series(tmp_path):
    """ON/OFF series (6 frames of 48 x 48) of a fixed line sample: ON has the structure, OFF the background."""
    rng = np.random.default_rng(1)
    clean = np.full((48, 48), 30.0, np.float32)
    clean[8:40, 24] += 80.0
    clean[30, 5:40] += 60.0
    on = rng.poisson(clean, size=(6, 48, 48)).astype(np.float32)
    off = rng.poisson(30.0, size=(6, 48, 48)).astype(np.float32)
    write_image(tmp_path / "on.tif", on, pixel_size_nm=65.0, axes="TYX")
    write_image(tmp_path / "off.tif", off, pixel_size_nm=65.0, axes="TYX")
    return tmp_path, on, off


def test_defaults_are_the_library_defaults():
    d = TrainConfig()
    assert train_denoiser.DEFAULTS == {"steps": d.steps, "batch_size": d.batch_size, "patch_size": d.patch_size,
                                       "learning_rate": d.learning_rate}


def test_sweep_interrupted_then_resumed(series, monkeypatch, capsys, one_line_error):
    folder, on, _ = series
    out = folder / "model"
    hashes = {name: digest(folder / name) for name in ("on.tif", "off.tif")}
    # A sweep over two candidates keeps the test short (the command sweeps all of jaxsr.nn.LAMBDAS).
    monkeypatch.setattr(jaxsr.nn, "LAMBDAS", (0.0, math.inf))
    args = ["train-denoiser", "--on", str(folder / "on.tif"), "--off", str(folder / "off.tif"), "-o", str(out),
            "--lambda", "auto", "--steps", "4", *TINY]

    # Ctrl-C at step 2 of the first candidate: exit 130, one line saying how to resume, no model yet.
    real_call = train_denoiser.TrainProgress.__call__

    def interrupt(self, info):
        real_call(self, info)
        if info["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_denoiser.TrainProgress, "__call__", interrupt)
    assert main(args) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step 2/4" in err[0] and "resume" in err[0], err
    assert not (out / "model.json").exists()
    assert (out / "checkpoint" / "lambda-0" / CHECKPOINT_FILE).is_file()

    # The same command again resumes the first candidate from its checkpoint and finishes the sweep.
    monkeypatch.setattr(train_denoiser.TrainProgress, "__call__", real_call)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "lambda 0: resumed from step 2" in printed
    table = [ln.split() for ln in printed.splitlines() if ln.split()[:1] in (["0"], ["inf"])]
    assert [row[0] for row in table] == ["0", "inf"] and all(math.isfinite(float(row[1])) for row in table)

    model = load_model(out)
    assert model.kind == "3snet" and model.unet == UNetConfig(depth=2, features=4, decoder_features=8)
    assert model.info["train"]["steps"] == 4 and len(model.info["lambda_sweep"]) == 2
    best = max(model.info["lambda_sweep"], key=lambda r: r["test_psnr"])
    assert model.info["lambda"] == ("inf" if best["lambda"] == "inf" else float(best["lambda"]))
    assert {name: digest(folder / name) for name in ("on.tif", "off.tif")} == hashes

    # The checkpoints belong to this command: other settings (more steps) are refused, naming the flag.
    assert main([*args, "--overwrite"] + ["--steps", "6"]) == 2
    one_line_error("--checkpoint-dir")
    assert load_model(out).info["train"]["steps"] == 4  # the model written before is still there

    # The trained model denoises a frame with `jaxsr denoise --model`.
    assert main(["denoise", str(folder / "on.tif"), "-o", str(folder / "dn.tif"), "--model", str(out)]) == 0
    capsys.readouterr()
    denoised, meta = read_image(folder / "dn.tif")
    assert denoised.shape == on.shape and meta.pixel_size_nm == pytest.approx(65.0)


def test_refuses_existing_model_and_other_settings(series, capsys, one_line_error):
    folder, _, _ = series
    out = folder / "model"
    base = ["train-denoiser", "--on", str(folder / "on.tif"), "--off", str(folder / "off.tif"), "-o", str(out)]
    (out / "checkpoint").mkdir(parents=True)
    # A corrupt checkpoint is reported (and kept), not silently replaced.
    (out / "checkpoint" / CHECKPOINT_FILE).write_bytes(b"\x80not a checkpoint")
    assert main(base + ["--steps", "5", *TINY]) == 2
    one_line_error("--checkpoint-dir")
    assert (out / "checkpoint" / CHECKPOINT_FILE).read_bytes() == b"\x80not a checkpoint"
    (out / "model.json").write_text("{}")
    assert main(base + ["--steps", "5", *TINY]) == 2
    one_line_error("--overwrite")


def test_diverged_training(series, capsys):
    folder, _, _ = series
    out = folder / "model"
    assert main(["train-denoiser", "--on", str(folder / "on.tif"), "--off", str(folder / "off.tif"), "-o", str(out),
                 "--steps", "3", "--learning-rate", "1e30", *TINY]) == train_denoiser.EXIT_DIVERGED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diverged" in err[0] and "--learning-rate" in err[0], err
    assert not (out / "model.json").exists()


def test_bad_series(series, capsys, one_line_error):
    folder, on, off = series
    out = str(folder / "model")
    write_image(folder / "off5.tif", off[:5], axes="TYX")
    write_image(folder / "one.tif", on[:1], axes="TYX")
    write_image(folder / "frame.tif", on[0])
    nan = on.copy()
    nan[2, 3, 4] = np.nan
    write_image(folder / "nan.tif", nan, axes="TYX")

    def run(on_name, off_name, *extra):
        return main(["train-denoiser", "--on", str(folder / on_name), "--off", str(folder / off_name), "-o", out,
                     *TINY, *extra])

    assert run("on.tif", "off5.tif") == 2
    one_line_error("--off")
    assert run("one.tif", "one.tif") == 2
    one_line_error("--on")
    assert run("frame.tif", "frame.tif") == 2
    one_line_error("--on")
    assert run("nan.tif", "off.tif") == 2
    one_line_error("--on")
    assert run("on.tif", "nosuch.tif") == 2
    one_line_error("--off")
    assert run("on.tif", "off.tif", "--patch-size", "40") == 2  # larger than the 38 training rows
    one_line_error("--patch-size")
    assert run("on.tif", "off.tif", "--depth", "9") == 2
    one_line_error("--depth")
    with pytest.raises(SystemExit):
        run("on.tif", "off.tif", "--lambda", "-1")
    capsys.readouterr()
    assert not (folder / "model" / "model.json").exists()


def test_test_rows_smaller_than_the_network_are_refused_before_training(series, capsys, one_line_error):
    """48-row frames hold out 10 test rows: the default network (depth 5, 32 px) cannot denoise them."""
    folder, _, _ = series
    out = folder / "model"
    base = ["train-denoiser", "--on", str(folder / "on.tif"), "--off", str(folder / "off.tif"), "-o", str(out),
            "--steps", "2", "--patch-size", "16", "--batch-size", "2"]
    assert main(base) == 2
    one_line_error("--on")
    assert not out.exists()  # refused before any training or checkpoint
    assert main(base + ["--depth", "4"]) == 2  # 16 px: still more than the 10 test rows
    err = capsys.readouterr().err
    assert "10 of the 48 rows" in err and "at least 78 rows" in err and "--depth" in err, err


def test_other_data_into_the_same_model_dir_is_not_resumed(series, capsys, one_line_error):
    """--overwrite with other ON/OFF data into the same MODEL_DIR: its checkpoint is refused, not resumed."""
    folder, on, off = series
    out = folder / "model"
    write_image(folder / "on2.tif", on[::-1].copy() + 5.0, axes="TYX")

    def args(on_name):
        return ["train-denoiser", "--on", str(folder / on_name), "--off", str(folder / "off.tif"), "-o", str(out),
                "--steps", "2", "--overwrite", *TINY]

    assert main(args("on.tif")) == 0
    first = (out / "params.msgpack").read_bytes()
    capsys.readouterr()
    assert main(args("on2.tif")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--checkpoint-dir" in err[0] and "different training data" in err[0], err
    assert (out / "params.msgpack").read_bytes() == first  # the model of the first data stays
