"""jaxsr deconvolve / jaxsr clid on files: outputs, pixel sizes, batches, PSF sources, errors."""

from __future__ import annotations

import numpy as np
import pytest

from jaxsr.cli.main import main
from jaxsr.forward import convolve
from jaxsr.io import read_image, write_image
from jaxsr.optics import gaussian_psf_2d



@pytest.fixture
def beads(tmp_path):
    """Two point sources blurred by a known Gaussian PSF, 65 nm pixels; the PSF as TIFF at 32.5 nm."""
    obj = np.zeros((48, 48), np.float32)
    obj[20, 20] = obj[30, 28] = 5000.0
    psf = np.asarray(gaussian_psf_2d((15, 15), sigma_nm=130.0, pixel_size_nm=65.0))
    img = np.asarray(convolve(obj, psf)) + 1.0
    write_image(tmp_path / "img.tif", img.astype(np.float32), pixel_size_nm=65.0)
    fine_psf = np.asarray(gaussian_psf_2d((31, 31), sigma_nm=130.0, pixel_size_nm=32.5))
    write_image(tmp_path / "psf.tif", fine_psf.astype(np.float32), pixel_size_nm=32.5)
    return tmp_path, img, obj


def test_deconvolve_sharpens_with_measured_psf(beads, capsys):
    folder, img, obj = beads
    out = folder / "dec.tif"
    # The PSF TIFF is at 32.5 nm: it is resampled to the image's 65 nm grid.
    assert main(["deconvolve", str(folder / "img.tif"), "-o", str(out), "--psf", str(folder / "psf.tif"),
                 "--iterations", "200", "--background", "1", "--accelerate"]) == 0
    dec, meta = read_image(out)
    assert meta.pixel_size_nm == pytest.approx(65.0) and dec.shape == img.shape
    # Deconvolution concentrates each bead's light: the peak rises well above the blurred one, in place.
    assert dec[20, 20] > 4 * img[20, 20] and np.unravel_index(np.argmax(dec), dec.shape) in ((20, 20), (30, 28))
    assert abs(dec.sum() - obj.sum()) < 0.05 * obj.sum()


def test_deconvolve_without_any_pixel_size_uses_the_psf_on_the_image_grid(beads, capsys, one_line_error):
    folder, img, obj = beads
    psf = np.asarray(gaussian_psf_2d((15, 15), sigma_nm=130.0, pixel_size_nm=65.0))
    write_image(folder / "bare.tif", img.astype(np.float32))               # no pixel size anywhere
    write_image(folder / "bare_psf.tif", psf.astype(np.float32))
    out = folder / "bare_dec.tif"
    args = ["deconvolve", str(folder / "bare.tif"), "-o", str(out), "--psf", str(folder / "bare_psf.tif"),
            "--iterations", "30", "--background", "1"]
    assert main(args) == 0
    assert "no pixel size (the PSF on the image grid)" in capsys.readouterr().out
    dec, meta = read_image(out)
    assert meta.pixel_size_nm is None
    # the same as the library on the same arrays, and as the run told the same grid by flags
    from jaxsr.deconv import richardson_lucy

    ref = np.asarray(richardson_lucy(img.astype(np.float32), psf, num_iter=30, background=1.0))
    np.testing.assert_allclose(dec, ref, rtol=1e-4, atol=1e-4 * ref.max())
    assert main(args[:-4] + ["--iterations", "30", "--background", "1", "--pixel-size", "65", "--overwrite"]) == 0
    np.testing.assert_allclose(read_image(out)[0], ref, rtol=1e-4, atol=1e-4 * ref.max())
    # a scale on one side only is not guessed: the PSF's pixel size without the image's is an error
    assert main(args[:4] + ["--psf", str(folder / "psf.tif"), "--overwrite"]) == 2
    one_line_error("--pixel-size")
    # and upsampling needs the physical scale
    assert main(args + ["--upsample", "2", "--overwrite"]) == 2
    one_line_error("--pixel-size")


def test_output_axes():
    from jaxsr.cli._common import output_axes

    assert output_axes("TYX", 3, 2) == "TYX" and output_axes("ZYX", 3, 3) == "ZYX"   # valid: kept
    assert output_axes("QYX", 3, 3) == "ZYX" and output_axes("QYX", 3, 2) == "TYX"   # tifffile's unknown axis
    assert output_axes("QQYX", 4, 2) is None and output_axes("QYX", 4, 3) == "TZYX"
    assert output_axes("YX", 3, 2) == "TYX" and output_axes("YXS", 3, 2) == "TYX"


def test_deconvolve_stack_whose_axis_tifffile_cannot_name(beads, capsys):
    """A plain multi-page TIFF reads with axes 'QYX'; the output gets axes the writer accepts (the run
    used to fail after deconvolving, writing nothing)."""
    import tifffile

    folder, img, _ = beads
    tifffile.imwrite(folder / "pages.tif", np.stack([img, 2 * img]).astype(np.float32))
    assert read_image(folder / "pages.tif")[1].axes == "QYX"
    out = folder / "pages_dec.tif"
    assert main(["deconvolve", str(folder / "pages.tif"), "-o", str(out), "--psf", "gaussian", "--na", "1.2",
                 "--pixel-size", "65", "--iterations", "5"]) == 0
    dec, meta = read_image(out)
    assert dec.shape == (2, 48, 48) and meta.axes == "TYX" and meta.pixel_size_nm == pytest.approx(65.0)
    np.testing.assert_allclose(dec[1], 2 * dec[0], rtol=2e-3, atol=1e-3 * dec.max())


def test_deconvolve_timelapse_in_batches(beads, capsys):
    folder, img, _ = beads
    frames = np.stack([img, 2 * img, 3 * img]).astype(np.float32)
    write_image(folder / "movie.tif", frames, pixel_size_nm=65.0, axes="TYX")
    out = folder / "movie_dec.tif"
    assert main(["deconvolve", str(folder / "movie.tif"), "-o", str(out), "--psf", "gaussian", "--na", "1.2",
                 "--iterations", "10", "--batch", "2"]) == 0
    dec, meta = read_image(out)
    assert dec.shape == frames.shape and meta.axes == "TYX"
    # RL is equivariant to scaling: frame k is k times frame 1 (checks batches keep frames apart).
    np.testing.assert_allclose(dec[2], 3 * dec[0], rtol=2e-3, atol=1e-3 * dec.max())


def test_clid_on_off(tmp_path, capsys, one_line_error):
    rng = np.random.default_rng(0)
    clean = np.zeros((32, 32), np.float32)
    clean[10:22, 15] = 100.0
    on = rng.poisson(clean + 20.0, size=(6, 32, 32)).astype(np.float32)
    off = rng.poisson(20.0, size=(6, 32, 32)).astype(np.float32)
    write_image(tmp_path / "on.tif", on, pixel_size_nm=65.0, axes="TYX")
    write_image(tmp_path / "off.tif", off[:5], pixel_size_nm=65.0, axes="TYX")
    out = tmp_path / "sr.tif"
    assert main(["clid", "--on", str(tmp_path / "on.tif"), "--off", str(tmp_path / "off.tif"), "-o", str(out)]) == 2
    one_line_error("--off")
    write_image(tmp_path / "off.tif", off, pixel_size_nm=65.0, axes="TYX", overwrite=True)
    assert main(["clid", "--on", str(tmp_path / "on.tif"), "--off", str(tmp_path / "off.tif"), "-o", str(out),
                 "--iterations", "20", "--na", "1.49", "--wavelength", "488"]) == 0
    sr, meta = read_image(out)
    assert sr.shape == (96, 96) and meta.pixel_size_nm == pytest.approx(65.0 / 3)
    assert sr.min() >= 0 and np.isfinite(sr).all()
    # The line (column 15 on the camera grid) is where the light goes: fine columns 45-47.
    assert 44 <= int(np.argmax(sr[40:60].sum(axis=0))) <= 48


def test_errors(beads, capsys, one_line_error):
    folder, _, _ = beads
    img = str(folder / "img.tif")
    assert main(["deconvolve", img, "-o", img]) == 2
    one_line_error("input")
    assert main(["deconvolve", img, "-o", str(folder / "x.tif"), "--psf", "nosuch.tif"]) == 2
    one_line_error("--psf")
    assert main(["deconvolve", img, "-o", str(folder / "x.tif"), "--psf", "pupil"]) == 2
    one_line_error("INPUT")
    assert main(["clid", "-o", str(folder / "x.tif")]) == 2
    one_line_error("INPUT")
    assert main(["clid", img, "-o", str(folder / "x.tif"), "--on", img]) == 2
    one_line_error("--on")
    with pytest.raises(SystemExit):
        main(["deconvolve", img, "-o", str(folder / "x.tif"), "--iterations", "0"])
