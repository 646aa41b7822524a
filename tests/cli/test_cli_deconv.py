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


@pytest.mark.parametrize("cmd", ["clid", "deconvolve"])
def test_psf_tiff_without_pixel_size_is_taken_at_the_camera_pixel(beads, capsys, cmd):
    """A PSF TIFF with no pixel size, measured on the camera (65 nm), with --upsample 3: it is taken at the
    image's 65 nm pixel (as --psf-pixel-size's help says) and resampled to the 21.7 nm grid, said on stdout;
    the same result as --psf-pixel-size 65 and as a PSF TIFF recording 65 nm (it was taken at the fine
    pixel, a PSF 3x too narrow)."""
    from jaxsr.optics import airy_psf_2d

    folder, _, _ = beads
    psf = np.asarray(airy_psf_2d((15, 15), na=1.4, wavelength_nm=520.0, pixel_size_nm=65.0), np.float32)
    write_image(folder / "psf_bare.tif", psf)                              # no pixel size
    write_image(folder / "psf_65.tif", psf, pixel_size_nm=65.0)
    assert read_image(folder / "psf_bare.tif")[1].pixel_size_nm is None
    base = [cmd, str(folder / "img.tif"), "--upsample", "3", "--iterations", "10", "--background", "1"]

    def run(name, *extra):
        out = folder / f"{cmd}_{name}.tif"
        assert main(base + ["-o", str(out), *extra]) == 0
        dec, meta = read_image(out)
        assert dec.shape == (144, 144) and meta.pixel_size_nm == pytest.approx(65.0 / 3)
        return dec, capsys.readouterr().out

    capsys.readouterr()
    bare, said = run("bare", "--psf", str(folder / "psf_bare.tif"))
    assert "--psf-pixel-size:" in said and "records no pixel size; taken as the image's 65 nm" in said
    assert "resampled to the 21.67 nm" in said
    flagged, said = run("flag", "--psf", str(folder / "psf_bare.tif"), "--psf-pixel-size", "65")
    assert "records no pixel size" not in said
    recorded, said = run("meta", "--psf", str(folder / "psf_65.tif"))
    assert "records no pixel size" not in said
    np.testing.assert_array_equal(bare, flagged)
    np.testing.assert_array_equal(bare, recorded)
    # the old fallback (the PSF at the fine pixel) gives another result
    fine, _ = run("fine", "--psf", str(folder / "psf_bare.tif"), "--psf-pixel-size", repr(65.0 / 3))
    assert not np.allclose(bare, fine, rtol=1e-2, atol=1e-2 * bare.max())


def test_clid_keeps_the_time_axis(beads, capsys):
    """A time-lapse (T, Y, X) comes out of jaxsr clid as TYX (it was written as ZYX), its frames apart."""
    folder, img, _ = beads
    frames = np.stack([img, 2 * img]).astype(np.float32)
    write_image(folder / "movie.tif", frames, pixel_size_nm=65.0, axes="TYX")
    out = folder / "movie_clid.tif"
    assert main(["clid", str(folder / "movie.tif"), "-o", str(out), "--iterations", "5", "--upsample", "2",
                 "--background", "0"]) == 0
    sr, meta = read_image(out)
    assert sr.shape == (2, 96, 96) and meta.axes == "TYX" and meta.pixel_size_nm == pytest.approx(32.5)
    np.testing.assert_allclose(sr[1], 2 * sr[0], rtol=2e-3, atol=1e-3 * sr.max())
    # a single frame stays YX; a plain multi-page TIFF (axes QYX) becomes TYX
    import tifffile

    tifffile.imwrite(folder / "pages.tif", frames)
    assert main(["clid", str(folder / "pages.tif"), "-o", str(folder / "pages_clid.tif"), "--iterations", "2",
                 "--upsample", "2", "--pixel-size", "65"]) == 0
    assert read_image(folder / "pages_clid.tif")[1].axes == "TYX"
    assert main(["clid", str(folder / "img.tif"), "-o", str(folder / "one.tif"), "--iterations", "2"]) == 0
    assert read_image(folder / "one.tif")[1].axes == "YX"


def test_clid_is_2d_only(beads, capsys, one_line_error):
    """CLID refuses a 3D PSF up front (--psf pupil, a 3D PSF TIFF), naming --psf, before reading INPUT, and does
    not offer the z and refractive-index flags of the 3D pupil PSF (they were accepted and ignored)."""
    folder, img, _ = beads
    out = folder / "x.tif"
    missing = str(folder / "no_such_input.tif")                 # never read: the PSF is checked first
    assert main(["clid", missing, "-o", str(out), "--psf", "pupil"]) == 2
    one_line_error("--psf: CLID needs a 2D PSF")
    write_image(folder / "psf3d.tif", np.ones((3, 5, 5), np.float32), pixel_size_nm=65.0, z_step_nm=200.0)
    assert main(["clid", missing, "-o", str(out), "--psf", str(folder / "psf3d.tif")]) == 2
    one_line_error("--psf: CLID needs a 2D PSF")
    for flag, value in (("--z-step", "200"), ("--psf-z-step", "200"), ("--refractive-index", "1.33")):
        with pytest.raises(SystemExit) as exc:
            main(["clid", str(folder / "img.tif"), "-o", str(out), flag, value])
        assert exc.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["clid", "--help"])
    helptext = capsys.readouterr().out
    assert "--z-step" not in helptext and "--refractive-index" not in helptext and "pupil" not in helptext
    assert not out.exists()
    # deconvolve keeps them (3D stacks)
    with pytest.raises(SystemExit):
        main(["deconvolve", "--help"])
    assert "--z-step" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_deconvolve_never_overwrites_its_input_through_a_link(beads, capsys, one_line_error, kind):
    """`ln -s img.tif link.tif; jaxsr deconvolve link.tif -o img.tif --overwrite` (and the hard-link case)
    is refused: the input is the output's file (the guard compared absolute paths, not real ones)."""
    import os

    folder, _, _ = beads
    src, link = folder / "img.tif", folder / "link.tif"
    try:
        (os.symlink if kind == "symlink" else os.link)(src, link)
    except OSError as err:                                     # no hard links on this file system
        pytest.skip(f"cannot make a {kind}: {err}")
    before = src.read_bytes()
    for inp, out in ((link, src), (src, link)):
        assert main(["deconvolve", str(inp), "-o", str(out), "--overwrite", "--iterations", "2"]) == 2
        one_line_error("is an input file")
    assert src.read_bytes() == before and link.read_bytes() == before
    assert os.path.islink(link) == (kind == "symlink")
