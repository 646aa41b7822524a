"""jaxsr clid --denoiser: single-frame CLID (network denoising, then Lanczos and RL) from files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from jaxsr.cli.main import main
from jaxsr.deconv import clid
from jaxsr.io import read_image, write_image
from jaxsr.nn import denoise, load_model, pretrained_path
from jaxsr.simulate import widefield_psf


@pytest.fixture
def raw_frame(tmp_path):
    """One noisy 48 x 48 frame of a line (65 nm pixels)."""
    rng = np.random.default_rng(2)
    clean = np.full((48, 48), 10.0, np.float32)
    clean[12:36, 20] += 150.0
    frame = rng.poisson(clean).astype(np.float32)
    write_image(tmp_path / "raw.tif", frame, pixel_size_nm=65.0)
    return tmp_path, frame


def test_clid_with_denoiser_model_dir(raw_frame, tiny_model, capsys):
    folder, frame = raw_frame
    src, out = folder / "raw.tif", folder / "sr.tif"
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    assert main(["clid", str(src), "-o", str(out), "--denoiser", str(tiny_model), "--iterations", "5"]) == 0
    assert "denoised by" in capsys.readouterr().out
    sr, meta = read_image(out, dtype=None)
    assert sr.shape == (144, 144) and sr.dtype == np.float32 and meta.pixel_size_nm == pytest.approx(65.0 / 3)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
    # The command is clid(frame, psf, denoiser=network) with the default Airy PSF on the fine grid.
    psf = widefield_psf(psf="airy", na=1.4, wavelength_nm=520.0, pixel_size_nm=65.0 / 3)
    model = load_model(tiny_model)
    expected = np.asarray(clid(frame, psf, num_iter=5, denoiser=lambda x: denoise(x, model=model)))
    np.testing.assert_allclose(sr, expected, rtol=1e-4, atol=1e-4 * expected.max())
    # ... and the denoiser made a difference.
    plain = np.asarray(clid(frame, psf, num_iter=5))
    assert not np.allclose(sr, plain, rtol=1e-2, atol=1e-2 * plain.max())


def test_clid_denoiser_errors(raw_frame, tiny_model, capsys, one_line_error):
    folder, frame = raw_frame
    src, out = str(folder / "raw.tif"), str(folder / "sr.tif")
    series = np.stack([frame, frame])
    write_image(folder / "on.tif", series, pixel_size_nm=65.0, axes="TYX")
    assert main(["clid", "--on", str(folder / "on.tif"), "--off", str(folder / "on.tif"), "-o", out,
                 "--denoiser", "3snet"]) == 2
    one_line_error("--denoiser")
    assert main(["clid", src, "-o", out, "--denoiser", str(folder / "nosuch")]) == 2
    one_line_error("--denoiser")
    (folder / "bad").mkdir()
    (folder / "bad" / "model.json").write_text("[]")
    assert main(["clid", src, "-o", out, "--denoiser", str(folder / "bad")]) == 2
    one_line_error("--denoiser")
    write_image(folder / "tiny.tif", frame[:3, :3], pixel_size_nm=65.0)
    assert main(["clid", str(folder / "tiny.tif"), "-o", out, "--denoiser", str(tiny_model)]) == 2
    one_line_error("INPUT")
    assert not (folder / "sr.tif").exists()


def test_clid_with_shipped_3snet(raw_frame, capsys):
    folder, _ = raw_frame
    out = folder / "sr.tif"
    assert main(["clid", str(folder / "raw.tif"), "-o", str(out), "--denoiser", "3snet", "--iterations", "10"]) == 0
    sr, meta = read_image(out)
    assert sr.shape == (144, 144) and meta.pixel_size_nm == pytest.approx(65.0 / 3)
    assert np.isfinite(sr).all() and sr.min() >= 0
    # The light stays on the line (camera column 20 -> fine columns 60-62).
    assert 58 <= int(np.argmax(sr[40:100].sum(axis=0))) <= 64


def test_clid_denoiser_dps_end_to_end(raw_frame, capsys, monkeypatch):
    """--denoiser dps runs 3Snet + DPS and writes the canonical grid with its pixel size.

    The whole pipeline runs for real, with a small network in place of the default
    ``DPS_CONFIG`` (whose training step alone takes 20-60 s to compile here); the default
    network is checked by tracing its training loss on the patch this run uses (shapes and
    dtypes, no compilation).
    """
    import sys

    import jax
    import jax.numpy as jnp

    from jaxsr.nn import DPS_CONFIG, UNetConfig, dps_loss, dps_psf, dps_resample_factor, unet_apply, unet_init

    dps_module = sys.modules["jaxsr.nn.dps"]  # the module (jaxsr.nn.dps is also the name of a function)

    def default_loss(patch):
        params = unet_init(jax.random.key(0), config=DPS_CONFIG)
        return jax.value_and_grad(lambda p: dps_loss(unet_apply(p, patch, config=DPS_CONFIG), patch,
                                                     dps_psf(max_size=39)))(params)

    loss, grads = jax.eval_shape(default_loss, jax.ShapeDtypeStruct((4, 48, 48), jnp.float32))
    assert loss.shape == () and loss.dtype == jnp.float32 and jax.tree_util.tree_leaves(grads)
    monkeypatch.setattr(dps_module, "DPS_CONFIG", UNetConfig(depth=1, features=4, decoder_features=4,
                                                             attention=True, back_projection=True))
    folder, _ = raw_frame
    out = folder / "dps.tif"
    assert main(["clid", str(folder / "raw.tif"), "-o", str(out), "--denoiser", "dps", "--dps-steps", "2",
                 "--na", "1.49", "--wavelength", "488"]) == 0
    assert "DPS trained 2 steps" in capsys.readouterr().out
    sr, meta = read_image(out, dtype=None)
    factor = dps_resample_factor(pixel_size_nm=65.0, na=1.49, wavelength_nm=488.0)
    assert meta.pixel_size_nm == pytest.approx(65.0 / factor, rel=1e-3)
    assert sr.dtype == np.float32 and abs(sr.shape[0] - 48 * factor) <= 1 and sr.shape[0] == sr.shape[1]
    assert np.isfinite(sr).all() and sr.min() >= 0


def test_clid_denoiser_dps_calls_the_library_with_the_flags(raw_frame, monkeypatch, capsys):
    """The wiring: dps_super_resolve(key(seed), INPUT, optics, 3Snet stage 1, steps) -> the TIFF."""
    import jax

    import jaxsr.nn
    from jaxsr.nn import DPSResult

    folder, frame = raw_frame
    seen = {}

    def spy(key, image, **kw):
        seen.update(kw, key=key, image=np.asarray(image))
        return DPSResult(image=np.full((7, 9), 2.5, np.float32), pixel_size_nm=31.0, factor=2.1), None

    monkeypatch.setattr(jaxsr.nn, "dps_super_resolve", spy)
    out = folder / "spy.tif"
    assert main(["clid", str(folder / "raw.tif"), "-o", str(out), "--denoiser", "dps", "--dps-steps", "5",
                 "--seed", "4", "--na", "1.3", "--wavelength", "600", "--pixel-size", "80"]) == 0
    assert (seen["pixel_size_nm"], seen["na"], seen["wavelength_nm"]) == (80.0, 1.3, 600.0)
    assert seen["train"].steps == 5 and seen["train"].seed == 4
    np.testing.assert_array_equal(jax.random.key_data(seen["key"]), jax.random.key_data(jax.random.key(4)))
    np.testing.assert_array_equal(seen["image"], frame)
    stage1 = np.asarray(seen["denoiser"](frame))  # the shipped 3Snet
    np.testing.assert_allclose(stage1, np.asarray(denoise(frame, model=load_model(pretrained_path()))), rtol=1e-5)
    img, meta = read_image(out)
    assert img.shape == (7, 9) and np.all(img == 2.5) and meta.pixel_size_nm == pytest.approx(31.0)


def test_clid_denoiser_dps_errors(raw_frame, one_line_error):
    folder, _ = raw_frame
    src, out = str(folder / "raw.tif"), str(folder / "sr.tif")
    assert main(["clid", src, "-o", out, "--dps-steps", "3"]) == 2
    one_line_error("--dps-steps")
    assert main(["clid", src, "-o", out, "--denoiser", "dps", "--psf", "clid-bessel"]) == 2
    one_line_error("--psf")
    assert not (folder / "sr.tif").exists()
