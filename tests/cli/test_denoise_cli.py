"""jaxsr denoise: outputs on disk match the library, inputs untouched, one-line errors for bad models/images."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import jaxsr.nn
from jaxsr.cli.denoise import removed_fraction
from jaxsr.cli.main import main
from jaxsr.io import read_image, write_image
from jaxsr.nn import UNetConfig, denoise, save_model

# The network `jaxsr train-denoiser --depth 2 --features 4` builds (shared compilations across the CLI tests).
TINY = UNetConfig(depth=2, features=4, decoder_features=8)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def frames(tmp_path):
    """A noisy 48 x 48 line image (65 nm pixels) and a 3-frame time-lapse of it."""
    rng = np.random.default_rng(0)
    clean = np.full((48, 48), 20.0, np.float32)
    clean[10:38, 24] += 100.0
    frame = rng.poisson(clean).astype(np.float32)
    movie = rng.poisson(clean * np.array([1.0, 2.0, 3.0])[:, None, None]).astype(np.float32)
    write_image(tmp_path / "frame.tif", frame, pixel_size_nm=65.0)
    write_image(tmp_path / "movie.tif", movie, pixel_size_nm=65.0, axes="TYX")
    return tmp_path, frame, movie


def test_denoise_frame_matches_library(frames, tiny_model, capsys, one_line_error):
    folder, frame, _ = frames
    src, out = folder / "frame.tif", folder / "out.tif"
    before = digest(src)
    assert main(["denoise", str(src), "-o", str(out), "--model", str(tiny_model)]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text
    result, meta = read_image(out, dtype=None)
    assert result.dtype == np.float32 and result.shape == frame.shape
    assert meta.pixel_size_nm == pytest.approx(65.0)
    assert digest(src) == before
    # The command is the library call on the file's pixels (an independent path: no chunking, no padding).
    expected = np.asarray(denoise(frame, model=jaxsr.nn.load_model(tiny_model)))
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert not np.allclose(result, frame)
    # the note on removed intensity appears exactly when the output lost half of it or more
    assert ("note:" in text) == (removed_fraction(frame, result, 0.0) >= 0.5)

    # An existing output is refused without --overwrite (and left as it was); the input is never the output.
    written = digest(out)
    assert main(["denoise", str(src), "-o", str(out), "--model", str(tiny_model)]) == 2
    one_line_error("--overwrite")
    assert digest(out) == written
    assert main(["denoise", str(src), "-o", str(src), "--model", str(tiny_model), "--overwrite"]) == 2
    one_line_error("input")
    assert digest(src) == before


def test_denoise_timelapse_in_batches(frames, tiny_model, capsys):
    folder, _, movie = frames
    out = folder / "movie_dn.tif"
    # Batches of 2 frames: the last batch is padded, which must not leak into the frames kept.
    assert main(["denoise", str(folder / "movie.tif"), "-o", str(out), "--model", str(tiny_model),
                 "--batch", "2"]) == 0
    result, meta = read_image(out)
    assert result.shape == movie.shape and meta.axes == "TYX" and meta.pixel_size_nm == pytest.approx(65.0)
    model = jaxsr.nn.load_model(tiny_model)
    for t in range(3):  # each frame on its own equals the stack result
        expected = np.asarray(denoise(movie[t], model=model))
        np.testing.assert_allclose(result[t], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_denoise_tiled(frames, tiny_model, capsys, one_line_error):
    folder, frame, _ = frames
    out = folder / "tiled.tif"
    assert main(["denoise", str(folder / "frame.tif"), "-o", str(out), "--model", str(tiny_model),
                 "--tile", "32", "--overlap", "8"]) == 0
    result, _ = read_image(out)
    expected = np.asarray(denoise(frame, model=jaxsr.nn.load_model(tiny_model), tile=32, overlap=8))
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # The library's tile check comes back naming the flag.
    assert main(["denoise", str(folder / "frame.tif"), "-o", str(folder / "x.tif"), "--model", str(tiny_model),
                 "--tile", "16", "--overlap", "16"]) == 2
    one_line_error("--overlap")


def test_denoise_tta(frames, tiny_model, capsys):
    folder, frame, _ = frames
    out = folder / "tta.tif"
    assert main(["denoise", str(folder / "frame.tif"), "-o", str(out), "--model", str(tiny_model), "--tta"]) == 0
    result, _ = read_image(out)
    expected = np.asarray(denoise(frame, model=jaxsr.nn.load_model(tiny_model), tta=True))
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_denoise_bad_models(frames, tiny_model, capsys, one_line_error):
    folder, _, _ = frames
    src, out = str(folder / "frame.tif"), str(folder / "out.tif")
    assert main(["denoise", src, "-o", out, "--model", str(folder / "nosuch")]) == 2
    one_line_error("--model")

    bad = folder / "bad"
    bad.mkdir()
    (bad / "model.json").write_text("{not json")
    assert main(["denoise", src, "-o", out, "--model", str(bad)]) == 2
    one_line_error("--model")

    # A model for another input rank.
    three_d = folder / "three_d"
    save_model(three_d, jaxsr.nn.load_model(tiny_model))
    meta = json.loads((three_d / "model.json").read_text())
    meta["input_ndim"] = 3
    (three_d / "model.json").write_text(json.dumps(meta))
    assert main(["denoise", src, "-o", out, "--model", str(three_d)]) == 2
    one_line_error("--model")

    assert main(["denoise", src, "-o", out, "--model", str(tiny_model), "--save-model", str(folder / "m")]) == 2
    one_line_error("--save-model")
    with pytest.raises(SystemExit):  # --model and --self-supervised exclude each other
        main(["denoise", src, "-o", out, "--model", str(tiny_model), "--self-supervised"])
    capsys.readouterr()
    assert not (folder / "out.tif").exists()


def test_denoise_bad_images(tmp_path, tiny_model, capsys, one_line_error):
    out = str(tmp_path / "out.tif")
    cases = {
        "small.tif": np.ones((3, 40), np.float32),  # below the depth-2 network's 4 x 4 minimum
        "nan.tif": np.where(np.eye(16, dtype=bool), np.nan, 1.0).astype(np.float32),
        "4d.tif": np.ones((2, 2, 16, 16), np.float32),
    }
    for name, image in cases.items():
        write_image(tmp_path / name, image)
        assert main(["denoise", str(tmp_path / name), "-o", out, "--model", str(tiny_model)]) == 2
        one_line_error("INPUT")
    assert main(["denoise", str(tmp_path / "nosuch.tif"), "-o", out]) == 2
    one_line_error("INPUT")
    assert not (tmp_path / "out.tif").exists()


def test_denoise_missing_shipped_model(frames, monkeypatch, capsys, one_line_error):
    folder, _, _ = frames
    monkeypatch.setattr(jaxsr.nn, "pretrained_path", lambda name="3snet": folder / "not-installed")
    assert main(["denoise", str(folder / "frame.tif"), "-o", str(folder / "out.tif")]) == 2
    one_line_error("--model")


def test_denoise_with_shipped_model(frames, capsys):
    folder, frame, _ = frames
    out = folder / "out.tif"
    assert main(["denoise", str(folder / "frame.tif"), "-o", str(out)]) == 0
    result, meta = read_image(out)
    assert result.shape == frame.shape and meta.pixel_size_nm == pytest.approx(65.0)
    assert np.isfinite(result).all()
    # Denoising lowers the pixel-to-pixel noise along the flat background rows.
    assert np.std(np.diff(result[:6], axis=1)) < np.std(np.diff(frame[:6], axis=1))
    # The 3Snet drops the flat background of 20 (95 % of this frame's intensity) and says so.
    removed = removed_fraction(frame, result, 0.0)
    assert removed > 0.8
    out_text = capsys.readouterr().out
    assert f"holds {100 * (1 - removed):.0f} % of the input's intensity" in out_text and "--self-supervised" in out_text


def test_removed_fraction_closed_form():
    image = np.full((4, 5), 12.0)
    assert removed_fraction(image, np.full((4, 5), 3.0), 2.0) == pytest.approx(0.7)     # keeps 3 of 10 above 2
    assert removed_fraction(image, image - 2.0, 2.0) == pytest.approx(0.0)
    assert removed_fraction(image, image, 2.0) == 0.0                                   # more than all: clipped
    assert removed_fraction(image, -image, 0.0) == 1.0
    assert removed_fraction(np.zeros((3, 3)), np.ones((3, 3)), 0.0) == 0.0             # nothing to remove


def test_self_supervised_help_states_the_library_defaults(capsys):
    from jaxsr.nn.self_supervised import SELF_SUPERVISED_TRAIN, SELF_SUPERVISED_UNET

    with pytest.raises(SystemExit):
        main(["denoise", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"training steps (default {SELF_SUPERVISED_TRAIN.steps})" in text
    assert f"(default {SELF_SUPERVISED_TRAIN.patch_size})" in text
    assert f"U-Net poolings (default {SELF_SUPERVISED_UNET.depth})" in text
    assert f"twice as many (default {SELF_SUPERVISED_UNET.features})" in text
    assert SELF_SUPERVISED_UNET.decoder_features == 2 * SELF_SUPERVISED_UNET.features


def test_denoise_self_supervised(frames, capsys, one_line_error):
    folder, frame, _ = frames
    out, saved = folder / "ss.tif", folder / "ss_model"
    assert main(["denoise", str(folder / "frame.tif"), "-o", str(out), "--self-supervised", "--steps", "3",
                 "--patch-size", "16", "--depth", "2", "--features", "4", "--save-model", str(saved)]) == 0
    result, meta = read_image(out)
    assert result.shape == frame.shape and meta.pixel_size_nm == pytest.approx(65.0) and np.isfinite(result).all()
    model = jaxsr.nn.load_model(saved)
    assert model.kind == "n2v" and model.unet == TINY and model.info["steps"] == 3
    # The frame was denoised by the model that was trained and saved.
    expected = np.asarray(denoise(frame, model=model))
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert not np.allclose(result, frame)
    # Training options without --self-supervised are refused rather than ignored.
    assert main(["denoise", str(folder / "frame.tif"), "-o", str(folder / "x.tif"), "--steps", "3"]) == 2
    one_line_error("--steps")


def test_self_supervised_negative_seed_names_the_flag(frames, capsys):
    folder, _, _ = frames
    out = folder / "neg.tif"
    assert main(["denoise", str(folder / "frame.tif"), "-o", str(out), "--self-supervised", "--steps", "1",
                 "--patch-size", "16", "--depth", "2", "--features", "4", "--seed", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--seed" in err and "argument 'seed'" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
