"""jaxsr simulate-particles and fuse: tables in, fused tables / poses / PNG / summary out, one-line errors.

One small 2D fusion (5 origami particles, 1 iteration: no recompilation after the seed) keeps this file fast;
3D fusion is covered by the library tests.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from jaxsr.cli.main import main
from jaxsr.fusion import pose_errors, read_particles, read_poses_csv, symmetry_group

N_PARTICLES = 5


def _rows(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fusion")
    table = folder / "origami.csv"
    assert main(["simulate-particles", str(table), "--structure", "origami", "--particles", str(N_PARTICLES),
                 "--labelling", "0.8", "--seed", "1"]) == 0
    out = folder / "fused.csv"
    assert main(["fuse", str(table), "-o", str(out), "--symmetry", "2", "--iterations", "1",
                 "--pixel-size", "2", "--restarts", "2"]) == 0
    return folder, table, out


def test_simulate_particles_writes_table_and_truth(fused, tmp_path, capsys):
    folder, table, _ = fused
    p = read_particles(table)
    assert p.n_particles == N_PARTICLES and p.dim == 2
    truth = read_poses_csv(folder / "origami_truth.csv")
    assert truth["rotations"].shape == (N_PARTICLES, 2, 2) and truth["translations"].shape == (N_PARTICLES, 2)
    np.testing.assert_array_equal(truth["particle"], p.ids)
    # 3D pores: qw..qz and tz columns, lateral and axial uncertainty
    npc = tmp_path / "npc.csv"
    assert main(["simulate-particles", str(npc), "--particles", "3", "--precision", "2", "6",
                 "--rotations", "inplane"]) == 0
    assert "3 npc particles (3D" in capsys.readouterr().out
    header, _ = _rows(npc)
    assert header == ["particle", "x [nm]", "y [nm]", "z [nm]", "uncertainty [nm]", "uncertainty_z [nm]"]
    header, rows = _rows(tmp_path / "npc_truth.csv")
    assert header == ["particle", "qw", "qx", "qy", "qz", "tx [nm]", "ty [nm]", "tz [nm]"] and len(rows) == 3
    q = read_particles(npc)
    assert q.dim == 3 and set(np.round(q.sigma[q.mask][:, 2] / q.sigma[q.mask][:, 0], 3)) == {3.0}


def test_fuse_writes_outputs(fused, capsys):
    folder, table, out = fused
    p = read_particles(table)
    header, rows = _rows(out)
    assert header == ["particle", "x [nm]", "y [nm]", "uncertainty [nm]", "inlier"]
    assert len(rows) == int(p.counts.sum())
    header, rows = _rows(folder / "fused.poses.csv")
    assert header == ["particle", "angle [deg]", "tx [nm]", "ty [nm]", "correlation", "inlier"]
    assert len(rows) == N_PARTICLES
    assert (folder / "fused.png").stat().st_size > 0
    summary = json.loads((folder / "fused.summary.json").read_text())
    for k in ("input", "options", "n_particles", "n_inliers", "history", "ring", "frc_resolution_nm", "seconds"):
        assert k in summary, k
    assert summary["n_particles"] == N_PARTICLES and summary["options"]["symmetry"] == 2
    assert summary["options"]["init"] == "grid" and len(summary["history"]) == 1
    # two seeds screened for the one iteration; the better-fitting one is the result
    scores = summary["history"][0]["restart_correlations"]
    assert summary["options"]["restarts"] == 2 and len(scores) == 2
    assert summary["history"][0]["mean_correlation"] == max(scores)
    assert set(summary["ring"]) == {"radius_nm", "ring_separation_nm", "n_corners", "symmetry_contrast"}
    # the poses are right up to the origami's two-fold symmetry and one global frame
    poses = read_poses_csv(folder / "fused.poses.csv")
    truth = read_poses_csv(table.parent / "origami_truth.csv")
    err, _ = pose_errors(poses["rotations"], truth["rotations"], group=symmetry_group(2, dim=2))
    assert np.median(err) < 5.0, err


def test_fuse_errors(fused, tmp_path, one_line_error):
    folder, table, out = fused
    assert main(["fuse", str(tmp_path / "none.csv"), "-o", str(tmp_path / "o.csv")]) == 2
    one_line_error("INPUT")
    # an existing output (any of the four files): refused before any work, nothing else is written
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "run.summary.json").write_text("{}")
    assert main(["fuse", str(table), "-o", str(partial / "run.csv")]) == 2
    one_line_error("--overwrite")
    assert sorted(p.name for p in partial.iterdir()) == ["run.summary.json"]
    assert main(["fuse", str(table), "-o", str(out)]) == 2
    one_line_error("exists")
    f = str(tmp_path / "f.csv")
    for argv, word in ((["--flip"], "--flip"), (["--pixel-size", "0.01"], "--pixel-size"),
                       (["--dim", "3"], "--dim"), (["--particle-column", "cluster"], "--particle-column"),
                       (["--restarts", "2", "--init", "learned"], "--restarts"),
                       (["--restarts", "2", "--init", "all_to_all"], "--restarts")):
        assert main(["fuse", str(table), "-o", f, *argv]) == 2
        one_line_error(word)
    assert main(["fuse", str(table), "-o", str(tmp_path / "f.txt")]) == 2           # not a .csv name
    one_line_error("--output")
    assert main(["fuse", str(table), "-o", str(tmp_path / "no" / "f.csv")]) == 2   # no such folder
    one_line_error("--output")
    assert main(["fuse", str(table), "-o", str(table)]) == 2                        # never over the input
    one_line_error("input")
    assert not any(p.name.startswith("f.") for p in tmp_path.iterdir())
    nosig = tmp_path / "nosig.csv"
    nosig.write_text("particle,x [nm],y [nm]\n0,1,2\n1,3,4\n")
    assert main(["fuse", str(nosig), "-o", str(tmp_path / "g.csv")]) == 2
    one_line_error("--sigma")
    (tmp_path / "p.txt").write_text("x")
    assert main(["fuse", str(tmp_path / "p.txt"), "-o", str(tmp_path / "g.csv")]) == 2
    one_line_error("INPUT")
    # a NaN coordinate or a non-positive uncertainty is named with its row, not silently dropped
    header, rows = _rows(table)
    for col, value, word in ((1, "nan", "x [nm] must be finite, got nan in data row 5"),
                             (3, "-2", "lateral uncertainty must be positive, got -2.0 in data row 5")):
        bad = [r[:] for r in rows]
        bad[4][col] = value
        path = tmp_path / f"bad{col}.csv"
        path.write_text("\n".join(",".join(r) for r in [header, *bad]) + "\n")
        assert main(["fuse", str(path), "-o", str(tmp_path / "g.csv")]) == 2
        one_line_error(word)
    assert not (tmp_path / "g.csv").exists()


def test_fuse_particle_column_dim_and_tiny_particles(fused, tmp_path, capsys):
    """--particle-column names the id column; particles with fewer than 3 localizations are dropped with
    a count (2 here: one of 2 localizations, one of 1), and --dim 2 accepts this 2D table."""
    folder, table, _ = fused
    header, rows = _rows(table)
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]   # interleaved particles
    rows = rows + [["900", "1", "2", "3"], ["900", "2", "2", "3"], ["901", "5", "5", "3"]]
    path = tmp_path / "renamed.csv"
    path.write_text("\n".join(",".join(r) for r in [["cluster", *header[1:]], *rows]) + "\n")
    out = tmp_path / "r.csv"
    assert main(["fuse", str(path), "-o", str(out), "--particle-column", "cluster", "--dim", "2",
                 "--symmetry", "2", "--iterations", "1", "--pixel-size", "2"]) == 0
    text = capsys.readouterr().out
    assert f"dropped 2 of {N_PARTICLES + 2} particles with fewer than 3 localizations (3 localizations)" in text
    _, fused_rows = _rows(out)
    assert [r[0] for r in fused_rows] == [r[0] for r in rows[:-3]]                 # the input's order
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    assert summary["n_dropped_fewer_than_3"] == 2 and summary["options"]["particle_column"] == "cluster"
    assert summary["n_particles"] == N_PARTICLES


def test_simulate_particles_errors(fused, tmp_path, one_line_error):
    folder, table, _ = fused
    assert main(["simulate-particles", str(table)]) == 2
    one_line_error("--overwrite")
    assert main(["simulate-particles", str(tmp_path / "a.txt")]) == 2
    one_line_error("OUTPUT")
    assert main(["simulate-particles", str(tmp_path / "no" / "a.csv")]) == 2
    one_line_error("OUTPUT")
    a = str(tmp_path / "a.csv")
    for argv, word in ((["--structure", "origami", "--rotations", "inplane"], "--rotations"),
                       (["--structure", "origami", "--precision", "3", "9"], "--precision"),
                       (["--precision", "3", "9", "9"], "--precision"),
                       (["--labelling", "1.5"], "--labelling"),
                       (["--locs-per-site", "0.5"], "--locs-per-site")):
        assert main(["simulate-particles", a, *argv]) == 2
        one_line_error(word)
    assert not (tmp_path / "a.csv").exists()
    # the truth file alone also blocks, and --overwrite replaces both
    (tmp_path / "b_truth.csv").write_text("old")
    assert main(["simulate-particles", str(tmp_path / "b.csv"), "--particles", "2"]) == 2
    one_line_error("b_truth.csv")
    assert not (tmp_path / "b.csv").exists()
    assert main(["simulate-particles", str(tmp_path / "b.csv"), "--particles", "2", "--overwrite"]) == 0
    assert (tmp_path / "b_truth.csv").read_text() != "old"


def test_fuse_offers_every_initialisation_of_the_library(capsys):
    """--init lists exactly jaxsr.fusion.INITS (the CLI spells them out to keep its start-up free of JAX)."""
    from jaxsr.fusion import INITS

    with pytest.raises(SystemExit):
        main(["fuse", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--init {" + ",".join(INITS) + "}" in text


def test_fuse_thunderstorm_psf_sigma_with_sigma_flag_and_output_name_kept(fused, tmp_path, capsys, one_line_error):
    """A table whose only sigma [nm] is the PSF width (130 nm) is refused naming --sigma, and fused with
    --sigma 5 (the column ignored with a warning); -o Run.CSV writes exactly Run.CSV."""
    folder, table, _ = fused
    header, rows = _rows(table)
    k = header.index("uncertainty [nm]")
    header[k] = "sigma [nm]"
    for r in rows:
        r[k] = "130"
    path = tmp_path / "ts.csv"
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    capsys.readouterr()
    assert main(["fuse", str(path), "-o", str(tmp_path / "a.csv")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "PSF width, not a localization uncertainty; give uncertainty [nm]" in err and "pass --sigma NM" in err
    assert "default_sigma" not in err, err
    out = tmp_path / "Run.CSV"
    assert main(["fuse", str(path), "-o", str(out), "--sigma", "5", "--symmetry", "2", "--iterations", "1",
                 "--pixel-size", "2"]) == 0
    text = capsys.readouterr().out
    assert "warning: ignored the column sigma [nm] (median 130 nm" in text and "--sigma = 5 nm" in text
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("Run"))
    assert names == ["Run.CSV", "Run.png", "Run.poses.csv", "Run.summary.json"], names
    _, fused_rows = _rows(out)
    assert len(fused_rows) == len(rows)
    # and the existence check looks at that same name
    assert main(["fuse", str(path), "-o", str(out), "--sigma", "5"]) == 2
    one_line_error("exists")
