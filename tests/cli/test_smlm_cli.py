"""jaxsr simulate-smlm, localize and render: files in, files out, one-line errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from jaxsr.cli.main import main
from jaxsr.forward import camera_preset
from jaxsr.io import read_image
from jaxsr.smlm import localize, match_localizations, read_localizations
from jaxsr.smlm.movie import movie_chunks, movie_info


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smlm")
    out = folder / "mov.tif"
    assert main(["simulate-smlm", str(out), "--structure", "uniform", "--emitters", "40", "--frames", "24",
                 "--size", "40", "--p-on", "0.06", "--camera", "emccd", "--seed", "3"]) == 0
    return folder, out


def test_simulate_smlm_writes_movie_and_truth(movie):
    folder, out = movie
    frames, meta = read_image(out)
    assert frames.shape == (24, 40, 40) and meta.pixel_size_nm == 100.0
    assert frames.min() >= 0 and frames.mean() > camera_preset("emccd").offset_adu
    truth = read_localizations(folder / "mov_truth.csv")
    assert truth.n > 20 and truth.frame.min() >= 0 and truth.frame.max() < 24
    assert np.all((truth.x_nm > 0) & (truth.x_nm < 4000))
    assert main(["simulate-smlm", str(out)]) == 2  # exists


def test_localize_streams_chunks_like_the_library_and_finds_the_truth(movie, capsys):
    folder, out = movie
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    csv_path = folder / "locs.csv"
    assert main(["localize", str(out), "-o", str(csv_path), "--camera", "emccd", "--sigma", "130",
                 "--chunk", "7"]) == 0
    assert "localizations in 24 frames" in capsys.readouterr().out
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before
    locs = read_localizations(csv_path)
    frames, _ = read_image(out)
    ref = localize(frames, pixel_size_nm=100.0, sigma_nm=130.0, camera=camera_preset("emccd"),
                   sigma_guess_nm=0.21 * 670.0 / 1.4)
    order = np.lexsort((ref.x_nm, ref.frame))
    got = np.lexsort((locs.x_nm, locs.frame))
    np.testing.assert_array_equal(locs.frame[got], ref.frame[order])  # chunks of 7 frames = the whole movie
    # The same fits: detection and fitting run on fixed-size padded batches, so a chunk's size does
    # not change the rounding (the CSV keeps float32 values, hence 1e-3 nm).
    np.testing.assert_allclose(locs.x_nm[got], ref.x_nm[order], atol=1e-3)
    r = match_localizations(locs, read_localizations(folder / "mov_truth.csv"))
    assert r.jaccard > 70 and r.rmse_lateral_nm < 40
    # Picasso output, fitted sigma
    h5 = folder / "locs.hdf5"
    assert main(["localize", str(out), "-o", str(h5), "--camera", "emccd"]) == 0
    assert (folder / "locs.yaml").exists() and read_localizations(h5).n > 0


def test_localize_takes_the_camera_recorded_by_simulate_smlm(movie, tmp_path, capsys, one_line_error):
    """simulate-smlm records its camera in the movie; localize without --camera uses it (the same table
    as --camera emccd), --camera overrides it, and an unknown recorded camera is a MOVIE error."""
    from jaxsr.io import write_image

    folder, out = movie
    assert movie_info(out).annotations == {"jaxsr_camera": "emccd"}
    paths = {k: tmp_path / f"{k}.csv" for k in ("recorded", "emccd", "ideal")}
    assert main(["localize", str(out), "-o", str(paths["recorded"]), "--sigma", "130"]) == 0
    text = capsys.readouterr().out
    assert "camera emccd (from the movie's metadata" in text and "camera emccd, method mle" in text
    assert main(["localize", str(out), "-o", str(paths["emccd"]), "--sigma", "130", "--camera", "emccd"]) == 0
    assert main(["localize", str(out), "-o", str(paths["ideal"]), "--sigma", "130", "--camera", "ideal"]) == 0
    assert "from the movie's metadata" not in capsys.readouterr().out
    recorded, emccd, ideal = (read_localizations(paths[k]) for k in ("recorded", "emccd", "ideal"))
    assert recorded.n == emccd.n and np.array_equal(recorded.x_nm, emccd.x_nm)
    truth = read_localizations(folder / "mov_truth.csv")
    # ADU read as photons: the ideal camera's photon counts are far off the truth, the recorded one's are not
    match = match_localizations(recorded, truth)
    assert match.jaccard > 70
    assert abs(np.median(recorded.photons) / np.median(truth.photons) - 1) < 0.3
    assert np.median(ideal.photons) > 3 * np.median(truth.photons)
    frames, _ = read_image(out)
    odd = tmp_path / "odd.tif"
    write_image(odd, frames, pixel_size_nm=100.0, axes="TYX", annotations={"jaxsr_camera": "ccd"})
    assert main(["localize", str(odd), "-o", str(tmp_path / "odd.csv")]) == 2
    one_line_error("MOVIE")
    assert not (tmp_path / "odd.csv").exists()


def test_render_and_frc(movie, capsys):
    folder, out = movie
    csv_path = folder / "r.csv"
    assert main(["localize", str(out), "-o", str(csv_path), "--camera", "emccd", "--sigma", "130"]) == 0
    img_path = folder / "sr.tif"
    assert main(["render", str(csv_path), "-o", str(img_path), "--pixel-size", "20", "--frc", "--frc-block", "4"]) == 0
    text = capsys.readouterr().out
    assert "FRC resolution" in text
    img, meta = read_image(img_path)
    assert meta.pixel_size_nm == 20.0 and img.sum() == pytest.approx(read_localizations(csv_path).n, rel=0.02)
    assert main(["render", str(csv_path), "-o", str(folder / "h.tif"), "--pixel-size", "20",
                 "--method", "histogram"]) == 0


def test_movie_chunks_bad_input(tmp_path):
    from jaxsr.io import write_image

    write_image(tmp_path / "v.tif", np.zeros((2, 3, 8, 8), np.float32), pixel_size_nm=100.0, axes="TZYX")
    with pytest.raises(ValueError, match="movie"):
        movie_info(tmp_path / "v.tif")
    with pytest.raises(FileNotFoundError):
        movie_info(tmp_path / "none.tif")
    with pytest.raises(ValueError, match="chunk"):
        next(movie_chunks(tmp_path / "v.tif", chunk=0))


def test_localize_net_streams_chunks_with_their_neighbours(movie, capsys):
    from jaxsr.smlm.net import localize_net

    folder, out = movie
    csv_path = folder / "locs_net.csv"
    assert main(["localize", str(out), "-o", str(csv_path), "--camera", "emccd", "--method", "net",
                 "--chunk", "7"]) == 0
    assert "method net" in capsys.readouterr().out
    locs = read_localizations(csv_path)
    frames, _ = read_image(out)
    ref = localize_net(frames, pixel_size_nm=100.0, camera=camera_preset("emccd"))
    # Chunks of 7 frames see the frames just outside them: the whole-movie table.
    np.testing.assert_array_equal(np.sort(locs.frame), np.sort(ref.frame))
    np.testing.assert_allclose(np.sort(locs.x_nm), np.sort(ref.x_nm), atol=1e-2)
    r = match_localizations(locs, read_localizations(folder / "mov_truth.csv"))
    assert r.jaccard > 70 and r.rmse_lateral_nm < 40


def test_smlm_cli_errors(movie, tmp_path, one_line_error):
    folder, out = movie
    assert main(["localize", str(out), "-o", str(tmp_path / "l.txt")]) == 2
    one_line_error("--output")
    assert main(["localize", str(tmp_path / "none.tif"), "-o", str(tmp_path / "l.csv")]) == 2
    one_line_error("MOVIE")
    assert main(["localize", str(out), "-o", str(tmp_path / "l.csv"), "--roi", "6"]) == 2
    one_line_error("--roi")
    assert main(["localize", str(out), "-o", str(tmp_path / "l.csv"), "--camera", "emccd", "--em-gain", "0.5"]) == 2
    one_line_error("--em-gain")
    from jaxsr.io import write_image

    write_image(tmp_path / "nopix.tif", np.zeros((3, 16, 16), np.float32), axes="TYX")
    assert main(["localize", str(tmp_path / "nopix.tif"), "-o", str(tmp_path / "l.csv")]) == 2
    one_line_error("--pixel-size")
    (tmp_path / "bad.csv").write_text('"frame","x [nm]"\n1,2\n')
    assert main(["render", str(tmp_path / "bad.csv"), "-o", str(tmp_path / "i.tif"), "--pixel-size", "10"]) == 2
    one_line_error("y [nm]")
    assert main(["simulate-smlm", str(tmp_path / "m.tif"), "--p-on", "2"]) == 2
    one_line_error("--p-on")
    assert main(["localize", str(out), "-o", str(tmp_path / "l.csv"), "--method", "net", "--model",
                 str(tmp_path)]) == 2
    one_line_error("--model")
    assert main(["localize", str(out), "-o", str(tmp_path / "l.csv"), "--method", "net", "--astigmatism",
                 "130", "130", "200", "400"]) == 2
    one_line_error("--astigmatism")
    assert not (tmp_path / "l.csv").exists() and not (tmp_path / "i.tif").exists()


def test_localize_empty_movie_writes_an_empty_table(tmp_path, capsys):
    from jaxsr.io import write_image

    write_image(tmp_path / "flat.tif", np.full((4, 24, 24), 10.0, np.float32), pixel_size_nm=100.0, axes="TYX")
    assert main(["localize", str(tmp_path / "flat.tif"), "-o", str(tmp_path / "e.csv")]) == 0
    assert "no molecules detected" in capsys.readouterr().out
    assert read_localizations(tmp_path / "e.csv").n == 0


def test_localize_3d_astigmatic_round_trip(tmp_path, capsys):
    out = tmp_path / "m3.tif"
    assert main(["simulate-smlm", str(out), "--structure", "uniform", "--emitters", "30", "--frames", "20",
                 "--size", "40", "--p-on", "0.06", "--psf", "astigmatic3d", "--z-range", "-300", "300",
                 "--camera", "ideal", "--seed", "5"]) == 0
    truth = read_localizations(tmp_path / "m3_truth.csv")
    assert np.isfinite(truth.z_nm).all() and truth.z_nm.min() < -100 and truth.z_nm.max() > 100
    assert main(["localize", str(out), "-o", str(tmp_path / "l3.csv"), "--astigmatism", "130", "130", "200",
                 "400"]) == 0
    locs = read_localizations(tmp_path / "l3.csv")
    r = match_localizations(locs, truth)  # both tables have z: 3D matching (500 nm axial tolerance)
    assert r.jaccard > 80 and r.rmse_axial_nm < 60 and np.isfinite(r.efficiency_axial)
    assert np.median(locs.crlb_z_nm) < 40
    assert main(["localize", str(out), "-o", str(tmp_path / "x.csv"), "--astigmatism", "130", "130", "200",
                 "400", "--sigma", "130"]) == 2


def test_undrift_recovers_the_drift_and_writes_both_files(tmp_path, capsys, one_line_error):
    """jaxsr undrift on a ThunderSTORM table of a drifting static structure: the written drift equals
    the library's and the truth to ~1 nm; the corrected table differs from the input by it; nothing is
    replaced without --overwrite, and never the input."""
    import csv

    from jaxsr.smlm import write_thunderstorm_csv
    from jaxsr.smlm.drift import estimate_drift

    rng = np.random.default_rng(7)
    sites = rng.uniform(500, 4500, (250, 2))
    frame = np.repeat(np.arange(3000), 10)
    f = np.arange(3000.0)
    true = np.stack([60.0 * np.sin(f / 1000.0), 0.03 * f], 1)
    xy = sites[rng.integers(0, 250, frame.size)] + true[frame] + rng.normal(0, 8, (frame.size, 2))
    table = tmp_path / "locs.csv"
    write_thunderstorm_csv(table, {"frame": frame, "x_nm": xy[:, 0], "y_nm": xy[:, 1],
                                   "crlb_x_nm": np.full(frame.size, 8.0), "crlb_y_nm": np.full(frame.size, 8.0)})
    before = hashlib.sha256(table.read_bytes()).hexdigest()
    out = tmp_path / "fixed.csv"
    assert main(["undrift", str(table), "-o", str(out), "--segment", "300"]) == 0
    text = capsys.readouterr().out
    assert "10 segments of 300 frames" in text and "fixed.drift.csv" in text
    assert hashlib.sha256(table.read_bytes()).hexdigest() == before
    with open(tmp_path / "fixed.drift.csv") as fh:
        rows = list(csv.DictReader(fh))
    drift = np.array([[float(r["drift_x_nm"]), float(r["drift_y_nm"])] for r in rows])
    assert [int(r["frame"]) for r in rows] == list(range(3000))
    lib = estimate_drift(read_localizations(table), segment_frames=300).drift_nm
    np.testing.assert_allclose(drift, lib, atol=2e-3)                 # 3 decimals in the file
    assert np.sqrt(np.mean((drift - true) ** 2)) < 1.5
    src, fixed = read_localizations(table), read_localizations(out)
    assert fixed.n == src.n
    np.testing.assert_allclose(fixed.x_nm, src.x_nm - lib[src.frame, 0], atol=1e-2)
    np.testing.assert_allclose(fixed.y_nm, src.y_nm - lib[src.frame, 1], atol=1e-2)
    np.testing.assert_array_equal(fixed.crlb_x_nm, src.crlb_x_nm)
    assert main(["undrift", str(table), "-o", str(out), "--segment", "300"]) == 2      # exists
    one_line_error("--overwrite")
    assert main(["undrift", str(table), "-o", str(table)]) == 2
    one_line_error("input")
    assert main(["undrift", str(table), "-o", str(tmp_path / "one.csv"), "--segment", "5000"]) == 2
    one_line_error("--segment")
    assert not (tmp_path / "one.csv").exists()
    assert main(["undrift", str(table), "-o", str(tmp_path / "x.hdf5")]) == 2
    one_line_error("--output")


def test_undrift_corrects_z_of_a_3d_table_unless_lateral_only(tmp_path, capsys):
    """A 3D ThunderSTORM table: the drift file gains drift_z_nm, equal to the truth to ~2 nm, and the
    table's z is corrected by it; --lateral-only writes x and y only and leaves z as it was."""
    import csv

    from jaxsr.smlm import write_thunderstorm_csv

    rng = np.random.default_rng(8)
    sites = np.column_stack([rng.uniform(500, 4500, (300, 2)), rng.uniform(-300, 300, 300)])
    frame = np.repeat(np.arange(3000), 12)
    f = np.arange(3000.0)
    true = np.stack([0.02 * f, 30.0 * np.sin(f / 900.0), 40.0 * np.sin(f / 1100.0)], 1)
    xyz = sites[rng.integers(0, 300, frame.size)] + true[frame] + rng.normal(0, 1, (frame.size, 3)) * [8, 8, 20]
    table = tmp_path / "locs3d.csv"
    write_thunderstorm_csv(table, {"frame": frame, "x_nm": xyz[:, 0], "y_nm": xyz[:, 1], "z_nm": xyz[:, 2]})
    out = tmp_path / "fixed.csv"
    assert main(["undrift", str(table), "-o", str(out), "--segment", "300"]) == 0
    assert ", z " in capsys.readouterr().out
    with open(tmp_path / "fixed.drift.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["frame", "drift_x_nm", "drift_y_nm", "drift_z_nm"]
    drift = np.array([[float(r[k]) for k in ("drift_x_nm", "drift_y_nm", "drift_z_nm")] for r in rows])
    assert np.sqrt(np.mean((drift[:, 2] - true[:, 2]) ** 2)) < 2.0
    src, fixed = read_localizations(table), read_localizations(out)
    np.testing.assert_allclose(fixed.z_nm, src.z_nm - drift[src.frame, 2], atol=1e-2)
    lateral = tmp_path / "lateral.csv"
    assert main(["undrift", str(table), "-o", str(lateral), "--segment", "300", "--lateral-only"]) == 0
    assert "z not corrected" in capsys.readouterr().out
    with open(tmp_path / "lateral.drift.csv") as fh:
        assert next(csv.reader(fh)) == ["frame", "drift_x_nm", "drift_y_nm"]
    np.testing.assert_array_equal(read_localizations(lateral).z_nm, src.z_nm)


def test_picasso_yaml_sidecar_is_checked_up_front(movie, tmp_path, monkeypatch, one_line_error):
    """The .yaml written next to a Picasso .hdf5 is an output like the table: an existing one stops the command
    before any work (unless --overwrite), and a Picasso input's .yaml is never replaced, even with --overwrite."""
    import jaxsr.smlm
    import jaxsr.smlm.drift
    from jaxsr.smlm import write_picasso_hdf5

    def no_work(*args, **kwargs):
        raise AssertionError("the command started its work before checking its outputs")

    _, mov = movie
    (tmp_path / "out.yaml").write_text("keep: me\n")
    monkeypatch.setattr(jaxsr.smlm, "localize", no_work)
    assert main(["localize", str(mov), "-o", str(tmp_path / "out.hdf5")]) == 2
    one_line_error("--overwrite")
    assert not (tmp_path / "out.hdf5").exists() and (tmp_path / "out.yaml").read_text() == "keep: me\n"

    n = 40
    write_picasso_hdf5(tmp_path / "a.hdf5", {"frame": np.arange(n), "x_nm": np.full(n, 500.0),
                                             "y_nm": np.full(n, 500.0)}, pixel_size_nm=100.0, width=10, height=10,
                       n_frames=n)
    with open(tmp_path / "a.yaml", "a") as fh:
        fh.write("---\nCamera: Andor iXon\n")   # Picasso's own metadata, to be kept
    before = (tmp_path / "a.yaml").read_text()
    monkeypatch.setattr(jaxsr.smlm.drift, "estimate_drift", no_work)
    assert main(["undrift", str(tmp_path / "a.hdf5"), "-o", str(tmp_path / "a.h5"), "--overwrite"]) == 2
    one_line_error("input")
    assert (tmp_path / "a.yaml").read_text() == before and not (tmp_path / "a.h5").exists()
    (tmp_path / "b.yaml").write_text("keep: me\n")
    assert main(["undrift", str(tmp_path / "a.hdf5"), "-o", str(tmp_path / "b.hdf5")]) == 2
    one_line_error("--overwrite")
    assert not (tmp_path / "b.hdf5").exists() and not (tmp_path / "b.drift.csv").exists()


def test_render_refuses_a_table_with_a_nan_position(tmp_path, one_line_error):
    t = tmp_path / "t.csv"
    t.write_text('"id","frame","x [nm]","y [nm]","uncertainty [nm]"\n1,1,500.0,500.0,10.0\n2,2,NaN,520.0,10.0\n'
                 '3,3,700.0,700.0,10.0\n')
    for method in ("gaussian", "histogram"):
        assert main(["render", str(t), "-o", str(tmp_path / "img.tif"), "--pixel-size", "10", "--method",
                     method]) == 2
        one_line_error("TABLE")
    assert not (tmp_path / "img.tif").exists()  # was written: a NaN image
