"""jaxsr.fusion.io: particle tables and .mat files in, fused localizations / poses / PNG out (no fusion runs here)."""

from __future__ import annotations

import csv
import logging
import os

import numpy as np
import pytest
import scipy.io
from scipy.spatial.transform import Rotation
from PIL import Image

import jaxsr.fusion.io as fio
from jaxsr.fusion import (
    FusionResult,
    make_particles,
    matrix_to_quaternion,
    read_particles,
    read_poses_csv,
    render_fusion_png,
    write_fusion_csv,
    write_particles_csv,
    write_poses_csv,
)


def _particles(rng, dim, *, anisotropic=False, ids=(3, 7, 10)):
    pts, sig = [], []
    for n in (5, 9, 2):
        pts.append(rng.normal(scale=40.0, size=(n, dim)))
        if dim == 3:
            s = rng.uniform(1.0, 5.0, size=(n, 2))
            sig.append(s)
        else:
            sig.append(rng.uniform(1.0, 5.0, size=(n, 2)) if anisotropic else rng.uniform(1.0, 5.0, size=n))
    return make_particles(pts, sig, ids=np.asarray(ids))


def _rows(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _assert_same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _result(particles, rotations, translations):
    from jaxsr.fusion import apply_poses

    p = particles.n_particles
    return FusionResult(rotations=rotations, translations=translations, correlation=np.linspace(0.2, 0.8, p),
                        inliers=np.arange(p) != 1, template=None,
                        points=apply_poses(particles, rotations, translations), history=[])


@pytest.mark.parametrize("dim,anisotropic", [(3, False), (2, False), (2, True)])
def test_particles_csv_round_trip(tmp_path, rng, dim, anisotropic):
    p = _particles(rng, dim, anisotropic=anisotropic)
    path = tmp_path / "p.csv"
    write_particles_csv(path, p)
    header, rows = _rows(path)
    assert header[:3] == ["particle", "x [nm]", "y [nm]"] and len(rows) == int(p.counts.sum())
    assert ("crlb_x [nm]" in header) == anisotropic and ("uncertainty_z [nm]" in header) == (dim == 3)
    q = read_particles(path)
    _assert_same(p, q)
    assert q.ids.dtype == np.int64 and q.points.dtype == np.float32
    assert os.listdir(tmp_path) == ["p.csv"]


def test_read_shared_mat(data_dir):
    path = os.path.join(data_dir, "fusion", "nup107_sim_65dol", "particles.mat")
    if not os.path.exists(path):
        pytest.skip("nup107_sim_65dol/particles.mat is not present")
    p = read_particles(path)
    assert p.points.shape[0] == 200 and p.dim == 3 and p.points.shape[1] == 73
    assert p.counts.min() == 12 and p.counts.max() == 73
    np.testing.assert_array_equal(p.ids, np.arange(200))
    raw = scipy.io.loadmat(path)["particles"][0, 5]
    np.testing.assert_allclose(p.points[5, : p.counts[5]], raw["points"][0, 0], rtol=1e-6)
    sig = np.asarray(p.sigma[5, : p.counts[5]])
    np.testing.assert_allclose(sig, raw["sigma"][0, 0][:, [0, 0, 1]], rtol=1e-6)
    big = read_particles(path, min_points=40)
    assert big.counts.min() >= 40 and 0 < big.n_particles < 200
    np.testing.assert_array_equal(big.ids, np.flatnonzero(p.counts >= 40))   # ids stay the file index


def test_read_mat_layouts(tmp_path, rng):
    pts = [rng.normal(size=(4, 2)), rng.normal(size=(6, 2))]
    # a cell array of structs, 2D, sigma n x 1
    cell = np.empty((1, 2), dtype=object)
    for i, x in enumerate(pts):
        cell[0, i] = {"points": x, "sigma": np.full((len(x), 1), 2.5)}
    scipy.io.savemat(tmp_path / "cell.mat", {"particles": cell})
    p = read_particles(tmp_path / "cell.mat")
    assert p.dim == 2 and p.counts.tolist() == [4, 6] and np.all(p.sigma[p.mask] == 2.5)
    # a struct array without sigma, named subParticles
    struct = np.zeros((1, 2), dtype=[("points", object)])
    for i, x in enumerate(pts):
        struct[0, i]["points"] = x
    scipy.io.savemat(tmp_path / "struct.mat", {"subParticles": struct})
    with pytest.raises(ValueError, match="default_sigma_nm"):
        read_particles(tmp_path / "struct.mat")
    p = read_particles(tmp_path / "struct.mat", default_sigma_nm=4.0)
    np.testing.assert_allclose(p.points[1, :6], pts[1], rtol=1e-6)
    scipy.io.savemat(tmp_path / "other.mat", {"model": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="no variable 'particles'.*model"):
        read_particles(tmp_path / "other.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(ValueError, match="junk.mat"):
        read_particles(tmp_path / "junk.mat")


def test_readers_log_the_particles_min_points_dropped(tmp_path, rng, caplog):
    pts = [rng.normal(size=(4, 2)), rng.normal(size=(6, 2)), rng.normal(size=(2, 2))]
    cell = np.empty((1, 3), dtype=object)
    for i, x in enumerate(pts):
        cell[0, i] = {"points": x, "sigma": np.full((len(x), 1), 2.5)}
    scipy.io.savemat(tmp_path / "cell.mat", {"particles": cell})
    rows = [f"{i},{x:.4f},{y:.4f},2.5" for i, p in enumerate(pts) for x, y in p]
    (tmp_path / "t.csv").write_text("particle,x [nm],y [nm],uncertainty [nm]\n" + "\n".join(rows) + "\n")
    for name in ("cell.mat", "t.csv"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="jaxsr.fusion.particles"):
            p = read_particles(tmp_path / name, min_points=5)
        assert p.ids.tolist() == [1] and p.counts.tolist() == [6]
        assert [r.getMessage() for r in caplog.records] == [
            "dropped 2 of 3 particles with fewer than 5 localizations (6 localizations)"]
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="jaxsr.fusion.particles"):
            read_particles(tmp_path / name, min_points=2)
        assert caplog.records == []                          # nothing dropped, nothing logged


def test_read_thunderstorm_style_table(tmp_path):
    path = tmp_path / "ts.csv"
    path.write_text('"id","frame","x [nm]","y [nm]","z [nm]","crlb_x [nm]","crlb_y [nm]","crlb_z [nm]","cluster"\n'
                    "1,1,10,20,5,2,3,8,4\n2,1,11,21,6,2,3,8,4\n3,2,50,60,7,1,1,4,9\n4,3,0,0,0,1,1,4,-1\n")
    p = read_particles(path, id_column="cluster")
    assert p.dim == 3 and p.ids.tolist() == [4, 9] and p.counts.tolist() == [2, 1]   # id -1 is dropped
    np.testing.assert_allclose(p.sigma[0, 0], [2, 3, 8])
    with pytest.raises(ValueError, match="particle"):
        read_particles(path)                                     # no 'particle' column


def test_read_bad_input(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text('"particle","x [nm]","y [nm]","uncertainty [nm]"\n')
    (tmp_path / "noy.csv").write_text("particle,x [nm],uncertainty [nm]\n0,1,2\n")
    (tmp_path / "text.csv").write_text("particle,x [nm],y [nm]\n0,1,abc\n")
    (tmp_path / "short.csv").write_text("particle,x [nm],y [nm]\n0,1\n")
    (tmp_path / "nosig.csv").write_text("particle,x [nm],y [nm]\n0,1,2\n0,3,4\n")
    cases = [("p.txt", ValueError, "format"), ("none.csv", FileNotFoundError, "no such"),
             ("empty.csv", ValueError, "empty"), ("header.csv", ValueError, "no localizations"),
             ("noy.csv", ValueError, r"y \[nm\]"), ("text.csv", ValueError, "non-numeric"),
             ("short.csv", ValueError, "line 2"), ("nosig.csv", ValueError, "default_sigma_nm")]
    for name, err, word in cases:
        with pytest.raises(err, match=word) as info:
            read_particles(tmp_path / name)
        assert len(str(info.value).splitlines()) == 1
    assert read_particles(tmp_path / "nosig.csv", default_sigma_nm=5.0).sigma[0, 1].tolist() == [5.0, 5.0]
    with pytest.raises(ValueError, match="min_points"):
        read_particles(tmp_path / "nosig.csv", default_sigma_nm=5.0, min_points=0)
    with pytest.raises(ValueError, match="at least 3"):
        read_particles(tmp_path / "nosig.csv", default_sigma_nm=5.0, min_points=3)


@pytest.mark.parametrize("dim", [2, 3])
def test_fusion_and_pose_tables(tmp_path, rng, dim):
    p = _particles(rng, dim)
    if dim == 3:
        rots = Rotation.random(3, random_state=rng).as_matrix()
    else:
        a = np.array([0.3, -2.0, 3.0])
        rots = np.stack([np.stack([np.cos(a), -np.sin(a)], -1), np.stack([np.sin(a), np.cos(a)], -1)], 1)
    trans = rng.normal(scale=10.0, size=(3, dim))
    res = _result(p, rots, trans)
    write_fusion_csv(tmp_path / "fused.csv", res, p)
    header, rows = _rows(tmp_path / "fused.csv")
    assert header[-1] == "inlier" and len(rows) == int(p.counts.sum())
    assert ("z [nm]" in header) == (dim == 3)
    inl = np.array([int(r[-1]) for r in rows])
    np.testing.assert_array_equal(inl, np.repeat([1, 0, 1], p.counts))
    fused = read_particles(tmp_path / "fused.csv")              # the fused table is a particle table too
    np.testing.assert_allclose(fused.points, res.points, atol=1e-4)
    write_poses_csv(tmp_path / "poses.csv", res, p)
    header, rows = _rows(tmp_path / "poses.csv")
    assert len(rows) == 3 and header[-2:] == ["correlation", "inlier"]
    assert header[1:5] == (["qw", "qx", "qy", "qz"] if dim == 3 else ["angle [deg]", "tx [nm]", "ty [nm]",
                                                                       "correlation"])
    poses = read_poses_csv(tmp_path / "poses.csv")
    np.testing.assert_allclose(poses["rotations"], rots, atol=1e-6)
    np.testing.assert_allclose(poses["translations"], trans, rtol=1e-6)
    np.testing.assert_array_equal(poses["particle"], [3, 7, 10])
    np.testing.assert_array_equal(poses["inlier"], [1, 0, 1])
    if dim == 3:
        q = np.array([[float(v) for v in r[1:5]] for r in rows])
        np.testing.assert_allclose(q, matrix_to_quaternion(rots), atol=1e-7)
    else:
        np.testing.assert_allclose([float(r[1]) for r in rows], np.degrees([0.3, -2.0, 3.0]), atol=1e-6)
    with pytest.raises(ValueError, match="result"):
        write_fusion_csv(tmp_path / "x.csv", res, p.subset([0, 1]))


@pytest.mark.parametrize("dim", [2, 3])
def test_render_fusion_png(tmp_path, rng, dim):
    p = _particles(rng, dim)
    eye = np.broadcast_to(np.eye(dim), (3, dim, dim))
    res = _result(p, eye, np.zeros((3, dim)))
    render_fusion_png(tmp_path / "f.png", res, p, pixel_size_nm=2.0)
    with Image.open(tmp_path / "f.png") as im:
        w, h = im.size
    assert (w > 3.5 * h) == (dim == 3)
    with pytest.raises(ValueError, match="pixel_size_nm"):
        render_fusion_png(tmp_path / "g.png", res, p, pixel_size_nm=0.01)
    with pytest.raises(ValueError, match="png"):
        render_fusion_png(tmp_path / "g.jpg", res, p)
    assert sorted(os.listdir(tmp_path)) == ["f.png"]


def test_writes_refuse_to_overwrite_and_are_atomic(tmp_path, rng, monkeypatch):
    p = _particles(rng, 2)
    res = _result(p, np.broadcast_to(np.eye(2), (3, 2, 2)), np.zeros((3, 2)))
    writers = {
        "p.csv": lambda path, **kw: write_particles_csv(path, p, **kw),
        "f.csv": lambda path, **kw: write_fusion_csv(path, res, p, **kw),
        "q.csv": lambda path, **kw: write_poses_csv(path, res, p, **kw),
        "r.png": lambda path, **kw: render_fusion_png(path, res, p, **kw),
    }
    for name, write in writers.items():
        path = tmp_path / name
        path.write_bytes(b"old")
        with pytest.raises(FileExistsError, match="overwrite"):
            write(path)
        assert path.read_bytes() == b"old"
        write(path, overwrite=True)
        assert path.read_bytes() != b"old"
    # an error half-way through a table leaves neither a partial file nor a temporary one
    calls = {"n": 0}
    real_fmt = fio._fmt

    def failing(value):
        calls["n"] += 1
        if calls["n"] > 10:
            raise RuntimeError("disk full")
        return real_fmt(value)

    monkeypatch.setattr(fio, "_fmt", failing)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(RuntimeError):
        write_particles_csv(tmp_path / "new.csv", p)
    calls["n"] = 0
    with pytest.raises(RuntimeError):
        write_fusion_csv(tmp_path / "f.csv", res, p, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == before
    assert read_particles(tmp_path / "f.csv").n_particles == 3         # the old file is intact
    with pytest.raises(FileNotFoundError, match="directory"):
        write_particles_csv(tmp_path / "missing" / "p.csv", p)


def test_table_with_bad_values_is_refused_with_the_row_unless_the_row_is_unassigned():
    from jaxsr.fusion import particles_from_table

    x = np.arange(8, dtype=float)
    table = {"x_nm": x.copy(), "y_nm": x[::-1].copy(), "uncertainty_nm": np.full(8, 3.0),
             "particle": np.array([0, 0, 0, 0, 1, 1, 1, 1])}
    assert particles_from_table(table).counts.tolist() == [4, 4]
    bad = dict(table, y_nm=np.where(x == 5, np.inf, table["y_nm"]))
    with pytest.raises(ValueError, match=r"y_nm must be finite, got inf in data row 6 \(1-based; 1 such rows\)"):
        particles_from_table(bad)
    zero = dict(table, uncertainty_nm=np.where(x == 2, 0.0, 3.0))
    with pytest.raises(ValueError, match="lateral uncertainty must be positive, got 0.0 in data row 3"):
        particles_from_table(zero)
    # a row with a negative id is unassigned (dropped), so its values are not checked
    p = particles_from_table(bad, ids=np.where(x == 5, -1, table["particle"]))
    assert p.counts.tolist() == [4, 3]


@pytest.mark.parametrize("dim", [2, 3])
def test_fused_table_keeps_the_input_rows_order_and_columns(tmp_path, rng, dim):
    """write_fused_table: the source's rows in its order with every column as written, positions moved by
    their particle's pose (R x + t, checked against write_fusion_csv's grouped rows), inlier appended."""
    from scipy.spatial.transform import Rotation as Rot

    axes = ["x", "y", "z"][:dim]
    n = 30
    ids = rng.choice([4, 9, 12], size=n)                       # interleaved, as a table sorted by frame
    ids[:2] = [4, 9]
    pos = rng.normal(scale=50.0, size=(n, dim))
    header = ["frame", "particle"] + [f"{a} [nm]" for a in axes] + ["uncertainty [nm]"]
    header += ["uncertainty_z [nm]"] if dim == 3 else []
    rows = [[str(10 * k + 3), str(ids[k])] + [f"{v:.4f}" for v in pos[k]] + ["2.5"] + (["7.5"] if dim == 3 else [])
            for k in range(n)]
    rows.append(["999", "-1"] + ["1.0"] * dim + ["2.5"] + (["7.5"] if dim == 3 else []))   # unassigned: left out
    src = tmp_path / "src.csv"
    src.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    parts = read_particles(src)
    assert parts.ids.tolist() == [4, 9, 12]
    rots = Rot.random(3, random_state=1).as_matrix() if dim == 3 else np.stack(
        [[[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]] for a in (0.3, 1.2, -2.0)])
    trans = rng.normal(scale=10.0, size=(3, dim))
    res = _result(parts, rots, trans)
    out = tmp_path / "fused.csv"
    fio.write_fused_table(out, src, res, parts)
    got_header, got = _rows(out)
    assert got_header == header + ["inlier"] and len(got) == n
    k_of = {4: 0, 9: 1, 12: 2}
    for k in range(n):
        assert got[k][0] == rows[k][0] and got[k][1] == rows[k][1] and got[k][2 + dim:-1] == rows[k][2 + dim:]
        p = k_of[int(ids[k])]
        expect = rots[p] @ np.array([float(v) for v in rows[k][2:2 + dim]]) + trans[p]
        np.testing.assert_allclose([float(v) for v in got[k][2:2 + dim]], expect, rtol=1e-7, atol=1e-5)
        assert got[k][-1] == str(int(p != 1))
    # the same localizations as the grouped writer, as multisets of (particle, position)
    write_fusion_csv(tmp_path / "grouped.csv", res, parts)
    _, grouped = _rows(tmp_path / "grouped.csv")
    key = lambda r, c: (int(r[c]), *np.round([float(v) for v in r[c + 1:c + 1 + dim]], 3))  # noqa: E731
    assert sorted(key(r, 1) for r in got) == sorted(key(r, 0) for r in grouped)
    # re-fusing a fused table: its inlier column is replaced, not duplicated
    fio.write_fused_table(tmp_path / "again.csv", out, res, read_particles(out))
    again_header, again = _rows(tmp_path / "again.csv")
    assert again_header == got_header and [r[-1] for r in again] == [r[-1] for r in got]
    # another file than the particles came from is refused
    other = tmp_path / "other.csv"
    other.write_text("\n".join(",".join(r) for r in [header, *rows[:-5]]) + "\n")
    with pytest.raises(ValueError, match="source"):
        fio.write_fused_table(tmp_path / "x.csv", other, res, parts)
    assert not (tmp_path / "x.csv").exists()


def test_sigma_columns_are_uncertainties_unless_they_look_like_a_psf_width(tmp_path):
    base = "particle,x [nm],y [nm],z [nm],{}\n" + "".join(f"{i // 4},{i},{2 * i},{3 * i},{{}}\n" for i in range(8))
    path = tmp_path / "t.csv"
    path.write_text(base.format("sigma_xy [nm],sigma_z [nm]", *(["4,12"] * 8)))
    p = read_particles(path)
    np.testing.assert_array_equal(p.sigma[p.mask], np.tile([4.0, 4.0, 12.0], (8, 1)))
    path.write_text(base.format("sigma [nm],sigma_z [nm]", *(["5,15"] * 8)))
    p = read_particles(path)
    np.testing.assert_array_equal(p.sigma[p.mask], np.tile([5.0, 5.0, 15.0], (8, 1)))
    # a ThunderSTORM-like sigma (the PSF width) is refused, not taken for an uncertainty of 130 nm
    path.write_text(base.format("sigma [nm],sigma_z [nm]", *(["130,15"] * 8)))
    with pytest.raises(ValueError, match="PSF width"):
        read_particles(path)
    # and an uncertainty column, when present, wins over it
    path.write_text(base.format("sigma [nm],uncertainty [nm],uncertainty_z [nm]", *(["130,3,9"] * 8)))
    p = read_particles(path)
    np.testing.assert_array_equal(p.sigma[p.mask], np.tile([3.0, 3.0, 9.0], (8, 1)))


def test_psf_width_sigma_is_ignored_for_a_default_and_uncertainty_pairs_are_complete(tmp_path, caplog):
    """A ThunderSTORM table (sigma [nm] the PSF width, no uncertainty) is fused with default_sigma_nm (the
    column ignored with a warning); crlb_x without crlb_y is refused rather than taking y from the PSF width."""
    path = tmp_path / "ts.csv"
    path.write_text("particle,x [nm],y [nm],sigma [nm]\n" + "".join(f"{i // 4},{i},{2 * i},130\n" for i in range(8)))
    with pytest.raises(ValueError, match=r"sigma \[nm\], has a median of 130 nm.*pass default_sigma_nm"):
        read_particles(path)
    with caplog.at_level(logging.WARNING, logger="jaxsr.fusion.particles"):
        p = read_particles(path, default_sigma_nm=5.0)
    np.testing.assert_array_equal(p.sigma[p.mask], np.full((8, 2), 5.0))
    assert any("ignored the column sigma_nm" in r.getMessage() for r in caplog.records)
    # crlb_x [nm] = 3 with a 130 nm PSF sigma and no crlb_y: y would have been 130 nm
    path.write_text("particle,x [nm],y [nm],crlb_x [nm],sigma [nm]\n"
                    + "".join(f"{i // 4},{i},{2 * i},3,130\n" for i in range(8)))
    for default in (None, 5.0):
        with pytest.raises(ValueError, match=r"crlb_x \[nm\] but no crlb_y \[nm\]"):
            read_particles(path, default_sigma_nm=default)
    from jaxsr.fusion import particles_from_table

    table = {"particle": np.zeros(4), "x_nm": np.arange(4.0), "y_nm": np.zeros(4), "crlb_y_nm": np.full(4, 3.0),
             "sigma_xy_nm": np.full(4, 7.0)}
    with pytest.raises(ValueError, match="crlb_y_nm but no crlb_x_nm"):
        particles_from_table(table)
    table["crlb_x_nm"] = np.full(4, 2.0)
    np.testing.assert_array_equal(particles_from_table(table).sigma[0], np.tile([2.0, 3.0], (4, 1)))


def test_csv_with_a_utf8_bom_is_read(tmp_path, rng):
    """Excel's "CSV UTF-8" starts with a byte-order mark: the first column is still 'particle'."""
    parts = make_particles([rng.normal(size=(5, 2)) * 20, rng.normal(size=(4, 2)) * 20], 3.0, ids=[2, 7])
    plain = tmp_path / "plain.csv"
    write_particles_csv(plain, parts)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    got = read_particles(bom)
    assert got.ids.tolist() == [2, 7]
    np.testing.assert_array_equal(got.points, read_particles(plain).points)
    res = _result(got, np.stack([np.eye(2)] * 2), np.array([[1.0, 2.0], [3.0, 4.0]]))
    fio.write_fused_table(tmp_path / "fused.csv", bom, res, got)
    header, rows = _rows(tmp_path / "fused.csv")
    assert header[0] == "particle" and len(rows) == 9


def test_table_with_a_nan_particle_id_is_refused():
    from jaxsr.fusion import particles_from_table

    table = {"x_nm": np.arange(4.0), "y_nm": np.zeros(4), "particle": np.array([0, 0, np.nan, 0]),
             "uncertainty_nm": np.ones(4)}
    with pytest.raises(ValueError, match=r"'table': a particle id must be finite, got nan in data row 3"):
        particles_from_table(table)
    with pytest.raises(ValueError, match=r"'ids': a particle id must be finite, got inf in data row 1"):
        particles_from_table(table, ids=np.array([np.inf, 0, 0, 0]))
    assert particles_from_table(table, ids=np.array([-1, 0, 0, 0.0])).counts.tolist() == [3]
