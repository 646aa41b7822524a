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
    out = folder / "out"
    assert main(["fuse", str(table), "--out", str(out), "--symmetry", "2", "--iterations", "1",
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
    _, table, out = fused
    p = read_particles(table)
    header, rows = _rows(out / "fused.csv")
    assert header == ["particle", "x [nm]", "y [nm]", "uncertainty [nm]", "inlier"]
    assert len(rows) == int(p.counts.sum())
    header, rows = _rows(out / "poses.csv")
    assert header == ["particle", "angle [deg]", "tx [nm]", "ty [nm]", "correlation", "inlier"]
    assert len(rows) == N_PARTICLES
    assert (out / "fused.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
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
    poses = read_poses_csv(out / "poses.csv")
    truth = read_poses_csv(table.parent / "origami_truth.csv")
    err, _ = pose_errors(poses["rotations"], truth["rotations"], group=symmetry_group(2, dim=2))
    assert np.median(err) < 5.0, err


def test_fuse_errors(fused, tmp_path, one_line_error):
    folder, table, out = fused
    assert main(["fuse", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")]) == 2
    one_line_error("INPUT")
    # an existing output: refused before any work, nothing else is written
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "summary.json").write_text("{}")
    assert main(["fuse", str(table), "--out", str(partial)]) == 2
    one_line_error("--overwrite")
    assert sorted(p.name for p in partial.iterdir()) == ["summary.json"]
    assert main(["fuse", str(table), "--out", str(out)]) == 2
    one_line_error("exists")
    assert main(["fuse", str(table), "--out", str(tmp_path / "f"), "--flip"]) == 2
    one_line_error("--flip")
    assert main(["fuse", str(table), "--out", str(tmp_path / "f"), "--pixel-size", "0.01"]) == 2
    one_line_error("--pixel-size")
    for init in ("learned", "all_to_all"):
        assert main(["fuse", str(table), "--out", str(tmp_path / "f"), "--restarts", "2", "--init", init]) == 2
        one_line_error("--restarts")
    assert not (tmp_path / "f").exists()
    nosig = tmp_path / "nosig.csv"
    nosig.write_text("particle,x [nm],y [nm]\n0,1,2\n1,3,4\n")
    assert main(["fuse", str(nosig), "--out", str(tmp_path / "g")]) == 2
    one_line_error("--sigma")
    (tmp_path / "p.txt").write_text("x")
    assert main(["fuse", str(tmp_path / "p.txt"), "--out", str(tmp_path / "g")]) == 2
    one_line_error("INPUT")
    (tmp_path / "file").write_text("x")
    assert main(["fuse", str(table), "--out", str(tmp_path / "file")]) == 2
    one_line_error("--out")


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
