"""The jaxsr command: help, version, outputs on disk, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxsr
from jaxsr.cli.main import SUBCOMMANDS, main
from jaxsr.io import read_image, write_image
from jaxsr.optics import gaussian_psf_2d


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert jaxsr.__version__ in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "simulate" in capsys.readouterr().out



def test_simulated_camera_offset_is_the_default(tmp_path, capsys, one_line_error):
    """jaxsr simulate records its camera (sCMOS: offset 100 ADU); deconvolve, clid and denoise take that offset
    as their default background / offset (saying so), exactly as if it were given, and a flag overrides it."""
    img = tmp_path / "sim.tif"
    assert main(["simulate", str(img), "--size", "40", "--structure", "filaments", "--seed", "4"]) == 0
    assert read_image(img)[1].extra["annotations"] == {"jaxsr_camera": "scmos"}
    capsys.readouterr()

    def run(name, *args):
        out = tmp_path / f"{name}.tif"
        assert main([*args, "-o", str(out)]) == 0
        return read_image(out)[0], capsys.readouterr().out

    for cmd, flag, extra in (("deconvolve", "--background", ["--iterations", "5"]),
                             ("clid", "--background", ["--iterations", "5", "--upsample", "2"]),
                             ("denoise", "--offset", [])):
        default, said = run(f"{cmd}_default", cmd, str(img), *extra)
        assert f"{flag} 100: the offset of the scmos camera recorded" in said
        given, said = run(f"{cmd}_100", cmd, str(img), *extra, flag, "100")
        assert "recorded" not in said
        zero, _ = run(f"{cmd}_0", cmd, str(img), *extra, flag, "0")
        np.testing.assert_array_equal(default, given)
        assert not np.allclose(default, zero)
    odd = tmp_path / "odd.tif"
    write_image(odd, read_image(img)[0], pixel_size_nm=65.0, annotations={"jaxsr_camera": "ccd"})
    assert main(["deconvolve", str(odd), "-o", str(tmp_path / "odd_out.tif")]) == 2
    one_line_error("INPUT")
    assert not (tmp_path / "odd_out.tif").exists()


def test_background_auto(tmp_path, capsys, one_line_error):
    """--background auto: the median over frames of estimate_background, said on stdout and used by RL (the
    same output as that value given by hand); refused with clid's --denoiser and for a non-number."""
    from jaxsr.deconv import estimate_background

    img = tmp_path / "sim.tif"
    assert main(["simulate", str(img), "--size", "40", "--structure", "filaments", "--seed", "4"]) == 0
    frames = np.stack([read_image(img)[0], 1.1 * read_image(img)[0], 0.9 * read_image(img)[0]])
    stack = tmp_path / "stack.tif"
    write_image(stack, frames, pixel_size_nm=65.0, axes="TYX")
    want = float(np.median(np.asarray(estimate_background(frames))))
    capsys.readouterr()
    for cmd in ("deconvolve", "clid"):
        out = tmp_path / f"{cmd}_auto.tif"
        assert main([cmd, str(stack), "-o", str(out), "--iterations", "5", "--background", "auto"]) == 0
        said = capsys.readouterr().out
        value = float(said.split("--background auto: ")[1].split()[0])
        assert value == pytest.approx(want, rel=1e-5) and "median over its frames" in said
        ref = tmp_path / f"{cmd}_ref.tif"
        assert main([cmd, str(stack), "-o", str(ref), "--iterations", "5", "--background", repr(want)]) == 0
        np.testing.assert_allclose(read_image(out)[0], read_image(ref)[0], rtol=1e-3, atol=1e-3)
    assert main(["clid", str(img), "-o", str(tmp_path / "x.tif"), "--background", "auto", "--denoiser", "3snet"]) == 2
    one_line_error("--background")
    with pytest.raises(SystemExit):
        main(["deconvolve", str(img), "-o", str(tmp_path / "y.tif"), "--background", "floor"])
    assert "non-negative number or 'auto'" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists() and not (tmp_path / "y.tif").exists()


def test_simulate_writes_and_refuses_overwrite(tmp_path, capsys, one_line_error):
    out = tmp_path / "sim.tif"
    args = ["simulate", str(out), "--size", "32", "--structure", "beads", "--camera", "ideal",
            "--seed", "4"]
    # 9 bead pairs need a wider field: the one-line error names the flag-backed argument.
    assert main(args) == 2
    one_line_error("shape")
    assert not out.exists()

    args = ["simulate", str(out), "--size", "40", "--structure", "filaments", "--camera", "ideal", "--seed", "4"]
    assert main(args) == 0
    capsys.readouterr()
    img, meta = read_image(out)
    gt, gmeta = read_image(tmp_path / "sim_gt.tif")
    psf, _ = read_image(tmp_path / "sim_psf.tif")
    truth = json.loads((tmp_path / "sim_truth.json").read_text())
    assert img.shape == (40, 40) and gt.shape == (120, 120)
    assert meta.pixel_size_nm == pytest.approx(65.0) and gmeta.pixel_size_nm == pytest.approx(65.0 / 3)
    assert psf.sum() == pytest.approx(1.0, rel=1e-4)
    assert truth["structure"] == "filaments" and truth["parameters"]["seed"] == 4
    # Ideal camera: ADU = photons, integer counts whose mean exceeds the background (signal on top).
    assert img.min() >= 0 and np.array_equal(img, np.round(img))
    assert img.mean() > truth["background_photons"]

    before = out.read_bytes()
    assert main(args) == 2
    one_line_error("--overwrite")
    assert out.read_bytes() == before  # nothing lost

    assert main(args[:2] + ["--seed", "5", "--overwrite", "--size", "40", "--camera", "ideal"]) == 0
    assert out.read_bytes() != before


def test_simulate_bad_suffix(tmp_path, capsys, one_line_error):
    assert main(["simulate", str(tmp_path / "x.png")]) == 2
    one_line_error(".tif")


def test_resolution(tmp_path, capsys):
    from jaxsr.simulate import simulate_widefield

    sim = simulate_widefield(jax.random.key(0), shape=(96, 96), camera="ideal")
    path = tmp_path / "wf.tif"
    write_image(path, sim.image, pixel_size_nm=65.0)
    assert main(["resolution", str(path), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    # Widefield at NA 1.4, 520 nm: a resolution of the order of the diffraction limit (186-227 nm).
    assert 120 < res["decorrelation_nm"] < 350
    # Pixel size from the flag overrides metadata and scales the answer.
    assert main(["resolution", str(path), "--json", "--pixel-size", "130"]) == 0
    res2 = json.loads(capsys.readouterr().out)
    assert res2["decorrelation_nm"] == pytest.approx(2 * res["decorrelation_nm"], rel=1e-6)

    # Two-image FRC.
    second = tmp_path / "wf2.tif"
    rng = np.random.default_rng(0)
    write_image(second, rng.poisson(sim.expected).astype(np.float32), pixel_size_nm=65.0)
    assert main(["resolution", str(path), str(second), "--json"]) == 0
    assert 120 < json.loads(capsys.readouterr().out)["frc_nm"] < 350


def _table(path, sigma_nm, n_frames=40, seed=0):
    """Localizations of 300 fixed sites in a 3 um field, each seen in every frame with Gaussian error."""
    rng = np.random.default_rng(seed)
    sites = rng.uniform(200.0, 2800.0, size=(300, 2))
    rows = ["frame,x [nm],y [nm],uncertainty [nm]"]
    for f in range(n_frames):
        xy = sites + rng.normal(scale=sigma_nm, size=sites.shape)
        rows += [f"{f + 1},{x:.3f},{y:.3f},{sigma_nm}" for x, y in xy]      # ThunderSTORM counts frames from 1
    path.write_text("\n".join(rows) + "\n")
    return path


def test_resolution_of_a_localization_table(tmp_path, capsys, one_line_error):
    from jaxsr.smlm import frc_localizations, read_localizations

    sharp, blurred = _table(tmp_path / "sharp.csv", 4.0), _table(tmp_path / "blurred.csv", 20.0)
    got = {}
    for path in (sharp, blurred):
        assert main(["resolution", str(path), "--json", "--block-frames", "5", "--pixel-size", "5"]) == 0
        got[path.stem] = json.loads(capsys.readouterr().out)
        assert got[path.stem]["pixel_size_nm"] == 5.0 and got[path.stem]["block_frames"] == 5
        ref = frc_localizations(read_localizations(path), pixel_size_nm=5.0, block_frames=5)
        assert got[path.stem]["frc_nm"] == pytest.approx(float(ref.resolution_nm), rel=1e-9)
    # the FRC of fixed sites scales with the localization error (about 3 sigma here): 5x the error, 5x the value
    assert 8.0 < got["sharp"]["frc_nm"] < 20.0
    assert got["blurred"]["frc_nm"] / got["sharp"]["frc_nm"] == pytest.approx(5.0, rel=0.15)
    # at the default 10 nm pixel the sharp table is pixel-limited: the curve never falls to 1/7
    assert main(["resolution", str(sharp), "--json", "--block-frames", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["frc_nm"] is None
    assert main(["resolution", str(sharp), "--block-frames", "100"]) == 2          # 40 frames: one half only
    one_line_error("--block-frames")
    assert main(["resolution", str(sharp), str(blurred)]) == 2
    one_line_error("SECOND")
    (tmp_path / "noframe.csv").write_text("x [nm],y [nm]\n1,2\n3,4\n")
    assert main(["resolution", str(tmp_path / "noframe.csv")]) == 2
    one_line_error("IMAGE")


def test_resolution_errors(tmp_path, capsys, one_line_error):
    assert main(["resolution", str(tmp_path / "missing.tif")]) == 2
    one_line_error("missing.tif")
    nometa = tmp_path / "nometa.tif"
    import tifffile

    tifffile.imwrite(nometa, np.ones((32, 32), np.float32))
    assert main(["resolution", str(nometa)]) == 2
    one_line_error("--pixel-size")
    bad = tmp_path / "bad.tif"
    bad.write_text("not a tiff")
    assert main(["resolution", str(bad), "--pixel-size", "50"]) == 2
    one_line_error("bad.tif")
    with pytest.raises(SystemExit) as exc:
        main(["resolution", str(nometa), "--pixel-size", "-3"])
    assert exc.value.code == 2


def test_fit_psf(tmp_path, capsys, one_line_error):
    rng = np.random.default_rng(1)
    bead = 2e4 * np.asarray(gaussian_psf_2d((21, 21), sigma_nm=120.0, pixel_size_nm=100.0)) + 5.0
    path = tmp_path / "bead.tif"
    write_image(path, rng.poisson(bead).astype(np.float32), pixel_size_nm=100.0)
    out_json = tmp_path / "fit.json"
    psf_out = tmp_path / "psf.tif"
    assert main(["fit-psf", str(path), "--model", "gaussian2d", "--steps", "60", "--json", str(out_json),
                 "--psf-out", str(psf_out)]) == 0
    fitted = json.loads(out_json.read_text())
    assert fitted["sigma_x_nm"] == pytest.approx(120.0, rel=0.02)
    assert read_image(psf_out)[0].shape == (21, 21)
    capsys.readouterr()
    # Existing outputs are refused before any work.
    assert main(["fit-psf", str(path), "--model", "gaussian2d", "--json", str(out_json)]) == 2
    one_line_error("--overwrite")
    # A 3D model on a 2D image.
    assert main(["fit-psf", str(path), "--model", "pupil3d"]) == 2
    one_line_error("3D")


def test_demo(tmp_path, capsys, one_line_error):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "64", "--iterations", "30"]) == 0
    text = capsys.readouterr().out
    assert "3S clear" in text and "line pairs" in text and str(out) in text
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {r["input"]: r for r in metrics["table"]}
    # The paper's protocol: one raw frame is ~8 dB against the blurred truth, 3S clear ~47 dB.
    assert rows["Raw"]["psnr_db"] < 12 and rows["3S clear"]["psnr_db"] > 40
    # CLID super-resolves: decorrelation resolution well below the widefield's.
    res = metrics["decorrelation_resolution_nm"]
    assert res["3S-CLID"] < 0.6 * res["3S clear (widefield)"]
    for name in ("raw_frame.tif", "clear_3s.tif", "clid.tif", "ground_truth.tif", "demo.png"):
        assert (out / name).stat().st_size > 0
    assert read_image(out / "clid.tif")[0].shape == (192, 192)
    # A second run refuses to overwrite, and leaves the first run's files as they were.
    before = (out / "metrics.json").read_bytes()
    assert main(["demo", "--out", str(out), "--size", "64", "--iterations", "30"]) == 2
    one_line_error("--overwrite")
    assert (out / "metrics.json").read_bytes() == before
    assert main(["demo", "--out", str(out), "--size", "16"]) == 2
    one_line_error("--size")


def test_console_entry_point_exit_code(tmp_path):
    # The real process: a user error gives exit code 2 and one line on stderr, no traceback.
    proc = subprocess.run([sys.executable, "-m", "jaxsr.cli", "resolution", str(tmp_path / "nope.tif")],
                          capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "nope.tif" in proc.stderr


def test_fit_psf_checks_every_output_first(tmp_path, capsys, one_line_error, monkeypatch):
    """fit-psf refuses, before fitting and naming the flag, an output that is the input (even with --overwrite,
    or through a symbolic link), a --psf-out that is not a TIFF, a missing folder, and --json and --psf-out
    naming the same file; the input is left as it was."""
    import jaxsr.optics

    bead = 2e4 * np.asarray(gaussian_psf_2d((21, 21), sigma_nm=120.0, pixel_size_nm=100.0)) + 5.0
    path = tmp_path / "bead.tif"
    write_image(path, bead.astype(np.float32), pixel_size_nm=100.0)
    before = path.read_bytes()
    calls = []
    monkeypatch.setattr(jaxsr.optics, "fit_psf", lambda *a, **k: calls.append(1) or 1 / 0)
    os.symlink(path, tmp_path / "link.tif")
    base = ["fit-psf", str(path), "--model", "gaussian2d", "--overwrite"]
    cases = [(["--psf-out", str(path)], "--psf-out: "), (["--json", str(path)], "--json: "),
             (["--psf-out", str(tmp_path / "link.tif")], "input"),
             (["--psf-out", str(tmp_path / "psf.png")], "--psf-out: expected a .tif"),
             (["--psf-out", str(tmp_path / "nosuch" / "psf.tif")], "--psf-out: folder does not exist"),
             (["--json", str(tmp_path / "nosuch" / "fit.json")], "--json: folder does not exist"),
             (["--json", str(tmp_path / "same.tif"), "--psf-out", str(tmp_path / "same.tif")], "--psf-out: "),
             (["--json", str(tmp_path)], "--json: is a folder")]
    for extra, word in cases:
        assert main(base + extra) == 2, extra
        one_line_error(word)
    assert not calls and path.read_bytes() == before
    assert not (tmp_path / "psf.png").exists() and not (tmp_path / "same.tif").exists()
    assert os.path.islink(tmp_path / "link.tif")


def test_outputs_never_replace_an_input_through_a_link(tmp_path):
    """check_output / check_outputs / check_flag_outputs compare real paths and inodes: an output that is a
    symbolic or a hard link to an input (or an input that links to the output) is refused."""
    import argparse

    from jaxsr.cli._common import check_flag_outputs, check_output, check_outputs, same_file

    src = tmp_path / "in.tif"
    src.write_bytes(b"x")
    os.symlink(src, tmp_path / "soft.tif")
    links = [tmp_path / "soft.tif"]
    try:
        os.link(src, tmp_path / "hard.tif")
        links.append(tmp_path / "hard.tif")
    except OSError:
        pass
    for link in links:
        assert same_file(str(link), str(src)) and same_file(str(src), str(link))
        for inp, out in ((str(src), str(link)), (str(link), str(src))):
            with pytest.raises(ValueError, match="input"):
                check_output(argparse.Namespace(output=out, overwrite=True), [inp])
            with pytest.raises(ValueError, match="input"):
                check_outputs({"image": out}, overwrite=True, inputs=(inp,))
            with pytest.raises(ValueError, match="--psf-out: .*input"):
                check_flag_outputs({"--psf-out": out}, overwrite=True, inputs=(inp,))
    # a path through a linked folder is resolved too; a new file or another file is not the input
    os.symlink(tmp_path, tmp_path / "dirlink")
    assert same_file(str(tmp_path / "dirlink" / "in.tif"), str(src))
    assert not same_file(str(tmp_path / "new.tif"), str(src))
    (tmp_path / "other.tif").write_bytes(b"x")
    assert not same_file(str(tmp_path / "other.tif"), str(src))
    check_output(argparse.Namespace(output=str(tmp_path / "other.tif"), overwrite=True), [str(src)])
