"""jaxsr.smlm.io (ThunderSTORM CSV, Picasso HDF5) and jaxsr.smlm.render (histogram, Gaussian, FRC)."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest
import yaml
from scipy import ndimage

from jaxsr.smlm.io import (
    read_localizations,
    read_picasso_hdf5,
    read_thunderstorm_csv,
    write_localizations,
    write_picasso_hdf5,
    write_thunderstorm_csv,
)
from jaxsr.smlm.localize import LOCALIZATION_COLUMNS, Localizations
from jaxsr.smlm.render import frc_localizations, render_gaussian, render_histogram


def _table(n=50, seed=0):
    rng = np.random.default_rng(seed)
    cols = {c: rng.uniform(1, 100, n).astype(np.float32) for c in LOCALIZATION_COLUMNS}
    cols["frame"] = rng.integers(0, 20, n).astype(np.int64)
    cols["x_nm"] = rng.uniform(0, 6400, n).astype(np.float32)
    cols["y_nm"] = rng.uniform(0, 6400, n).astype(np.float32)
    return Localizations(**cols)


# ----------------------------------------------------------------------------- formats
def test_thunderstorm_round_trip_and_header(tmp_path):
    locs = _table()
    path = write_thunderstorm_csv(tmp_path / "locs.csv", locs)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:4] == ["id", "frame", "x [nm]", "y [nm]"] and "uncertainty [nm]" in rows[0]
    assert int(float(rows[1][1])) == locs.frame[0] + 1  # ThunderSTORM counts frames from 1
    back = read_thunderstorm_csv(path)
    for c in LOCALIZATION_COLUMNS:
        np.testing.assert_allclose(getattr(back, c), getattr(locs, c), rtol=1e-6, err_msg=c)
    with pytest.raises(FileExistsError):
        write_thunderstorm_csv(path, locs)


def test_thunderstorm_reads_a_minimal_foreign_file_and_names_missing_columns(tmp_path):
    p = tmp_path / "ts.csv"
    p.write_text('"id","frame","x [nm]","y [nm]","uncertainty [nm]"\n1,1,100.5,200.0,7.5\n2,3,50,60,9\n')
    locs = read_localizations(p)
    assert locs.frame.tolist() == [0, 2] and locs.x_nm.tolist() == [100.5, 50.0]
    assert locs.crlb_x_nm.tolist() == [7.5, 9.0] and np.isnan(locs.photons).all()
    bad = tmp_path / "bad.csv"
    bad.write_text('"id","frame","x [nm]"\n1,1,2\n')
    with pytest.raises(ValueError, match="y \\[nm\\]"):
        read_thunderstorm_csv(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_thunderstorm_csv(empty)
    with pytest.raises(FileNotFoundError):
        read_thunderstorm_csv(tmp_path / "none.csv")
    with pytest.raises(ValueError, match="format"):
        read_localizations(tmp_path / "locs.txt")
    # a table counted from 0 is read unshifted, with a warning (not as frame -1); bad frame numbers refused
    zero = tmp_path / "zero.csv"
    zero.write_text('"frame","x [nm]","y [nm]"\n0,1,2\n4,3,4\n')
    with pytest.warns(UserWarning, match="start at 0"):
        assert read_thunderstorm_csv(zero).frame.tolist() == [0, 4]
    for value in ("-1", "2.5", "nan"):
        zero.write_text(f'"frame","x [nm]","y [nm]"\n{value},1,2\n')
        with pytest.raises(ValueError, match="frame column"):
            read_thunderstorm_csv(zero)


def test_thunderstorm_writes_nan_and_infinity_as_java_reads_them(tmp_path):
    """ThunderSTORM's importer parses with Java's Double.parseDouble: 'NaN' and 'Infinity', not 'nan'/'inf'."""
    locs = _table(3)._replace(photons=np.array([np.nan, np.inf, 5.0], np.float32),
                              background=np.array([1.0, -np.inf, np.nan], np.float32))
    path = write_thunderstorm_csv(tmp_path / "nan.csv", locs)
    text = path.read_text()
    assert "NaN" in text and "Infinity" in text and "-Infinity" in text
    body = text.splitlines()[1:]
    assert not any(tok in ("nan", "inf", "-inf", '"NaN"') for line in body for tok in line.split(","))
    back = read_thunderstorm_csv(path)
    np.testing.assert_array_equal(back.photons, locs.photons)
    np.testing.assert_array_equal(back.background, locs.background)
    np.testing.assert_allclose(back.x_nm, locs.x_nm, rtol=1e-6)


def test_thunderstorm_reads_its_own_uncertainty_columns(tmp_path):
    p = tmp_path / "ts3d.csv"
    p.write_text('"id","frame","x [nm]","y [nm]","z [nm]","sigma1 [nm]","sigma2 [nm]","uncertainty_xy [nm]",'
                 '"uncertainty_z [nm]"\n1,1,500.0,500.0,-120.0,150.0,110.0,9.5,31.0\n'
                 '2,4,700.0,520.0,80.0,120.0,140.0,10.2,NaN\n')
    locs = read_thunderstorm_csv(p)
    assert locs.crlb_x_nm.tolist() == pytest.approx([9.5, 10.2])
    assert locs.crlb_y_nm.tolist() == pytest.approx([9.5, 10.2])
    assert locs.crlb_z_nm[0] == pytest.approx(31.0) and np.isnan(locs.crlb_z_nm[1])
    assert locs.z_nm.tolist() == [-120.0, 80.0] and np.isnan(locs.sigma_nm).all()  # sigma1/2: no table column
    # jaxsr's own CRLB columns take precedence over ThunderSTORM's uncertainty
    q = tmp_path / "both.csv"
    q.write_text('"frame","x [nm]","y [nm]","crlb_x [nm]","crlb_y [nm]","uncertainty_xy [nm]"\n1,1,2,3,4,9\n')
    both = read_thunderstorm_csv(q)
    assert both.crlb_x_nm.tolist() == [3.0] and both.crlb_y_nm.tolist() == [4.0]


@pytest.mark.parametrize("fmt", [".csv", ".hdf5"])
def test_writers_require_positions_one_length_and_valid_frames(tmp_path, fmt):
    def write(name, locs):
        return write_localizations(tmp_path / (name + fmt), locs, pixel_size_nm=100.0, shape=(64, 64), n_frames=5)

    ok = {"frame": np.array([0, 1]), "x_nm": np.array([5.0, 6.0]), "y_nm": np.array([7.0, 8.0])}
    back = read_localizations(write("ok", ok), pixel_size_nm=100.0)
    assert back.frame.tolist() == [0, 1] and np.isnan(back.photons).all()
    with pytest.raises(ValueError, match="locs.*x_nm, y_nm"):
        write("noxy", {"frame": np.array([0])})
    with pytest.raises(ValueError, match="locs.*length"):
        write("len", {**ok, "y_nm": np.array([7.0])})
    with pytest.raises(ValueError, match="locs.*length"):
        write("len2", _table(4)._replace(photons=np.ones(3, np.float32)))
    with pytest.raises(ValueError, match="locs.*frame.*>= 0"):
        write("neg", {**ok, "frame": np.array([-1, 0])})  # Picasso wrote 4294967295
    with pytest.raises(ValueError, match="locs.*frame"):
        write("nan", {**ok, "frame": np.array([np.nan, 0.0])})
    with pytest.raises(ValueError, match="locs.*frame"):
        write("frac", {**ok, "frame": np.array([0.5, 1.0])})
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(["ok" + fmt] + (["ok.yaml"] if fmt == ".hdf5" else []))


def test_picasso_writer_refuses_frames_beyond_uint32(tmp_path):
    with pytest.raises(ValueError, match="locs.*uint32"):
        write_picasso_hdf5(tmp_path / "big.hdf5", {"frame": np.array([2**32]), "x_nm": [1.0], "y_nm": [1.0]},
                           pixel_size_nm=100.0, width=4, height=4, n_frames=1)


def test_picasso_round_trip_in_pixels_with_yaml(tmp_path):
    locs = _table()
    path = write_picasso_hdf5(tmp_path / "locs.hdf5", locs, pixel_size_nm=100.0, width=64, height=64, n_frames=20)
    with h5py.File(path) as fh:
        arr = fh["locs"][...]
    assert arr.dtype.names[:3] == ("frame", "x", "y") and arr["frame"].dtype == np.uint32
    np.testing.assert_allclose(arr["x"], locs.x_nm / 100.0 - 0.5, rtol=1e-6)  # pixel centres at integers
    meta = list(yaml.safe_load_all((tmp_path / "locs.yaml").read_text()))
    assert meta[0]["Pixelsize"] == 100.0 and meta[0]["Width"] == 64
    back, meta = read_picasso_hdf5(path)
    for c in ("frame", "x_nm", "y_nm", "photons", "background", "sigma_nm", "crlb_x_nm", "crlb_y_nm", "score"):
        np.testing.assert_allclose(getattr(back, c), getattr(locs, c), rtol=1e-5, err_msg=c)
    with pytest.raises(FileExistsError):
        write_localizations(path, locs, pixel_size_nm=100.0, shape=(64, 64), n_frames=20)
    (tmp_path / "locs.yaml").unlink()
    with pytest.raises(ValueError, match="pixel_size_nm"):
        read_picasso_hdf5(path)
    with h5py.File(tmp_path / "other.hdf5", "w") as fh:
        fh.create_dataset("data", data=np.zeros(3))
    with pytest.raises(ValueError, match="locs"):
        read_picasso_hdf5(tmp_path / "other.hdf5", pixel_size_nm=100.0)


# ----------------------------------------------------------------------------- rendering
def test_histogram_matches_numpy_and_conserves_counts():
    locs = _table(500)
    img = render_histogram(locs, pixel_size_nm=200.0, shape=(32, 32))
    ref, _, _ = np.histogram2d(locs.y_nm, locs.x_nm, bins=32, range=((0, 6400), (0, 6400)))
    np.testing.assert_array_equal(img, ref)
    assert img.sum() == 500


def test_gaussian_render_mass_centroid_and_width():
    locs = {"x_nm": np.array([1005.0]), "y_nm": np.array([2012.0])}
    img = render_gaussian(locs, pixel_size_nm=5.0, shape=(800, 400), sigma_nm=20.0)
    assert img.sum() == pytest.approx(1.0, rel=1e-5)
    cy, cx = ndimage.center_of_mass(img)
    assert ((cy + 0.5) * 5.0, (cx + 0.5) * 5.0) == (pytest.approx(2012.0, abs=0.2), pytest.approx(1005.0, abs=0.2))
    yy = (np.arange(800) + 0.5) * 5.0
    var = (img.sum(axis=1) * (yy - 2012.0) ** 2).sum()
    assert np.sqrt(var - 5.0**2 / 12) == pytest.approx(20.0, rel=0.03)  # truncated at 3 sigma
    # Per-localization precision: a less precise localization is wider.
    two = {"x_nm": np.array([500.0, 1500.0]), "y_nm": np.array([500.0, 500.0]),
           "crlb_x_nm": np.array([5.0, 20.0]), "crlb_y_nm": np.array([5.0, 20.0])}
    im2 = render_gaussian(two, pixel_size_nm=5.0, shape=(200, 400))
    assert im2[:, :200].max() > 4 * im2[:, 200:].max()
    with pytest.raises(ValueError, match="sigma_nm"):
        render_gaussian(locs, pixel_size_nm=5.0)


def test_frc_of_localizations_tracks_the_precision():
    """Localizations with precision s of a dense random structure: FRC resolution grows with s."""
    rng = np.random.default_rng(3)
    # Emitters on random line segments, each localized in 40 frames spread over the movie.
    n = 400
    sites = rng.uniform(200, 4800, (n, 2))
    frames = np.repeat(np.arange(40) * 25, n)
    res = []
    for s in (10.0, 30.0):
        pos = np.tile(sites, (40, 1)) + rng.normal(0, s, (40 * n, 2))
        locs = {"frame": frames, "x_nm": pos[:, 0], "y_nm": pos[:, 1]}
        res.append(frc_localizations(locs, pixel_size_nm=5.0, shape=(1000, 1000), block_frames=25,
                                     sigma_nm=None).resolution_nm)
    assert np.isfinite(res).all() and res[1] > 1.5 * res[0]
    with pytest.raises(ValueError, match="block_frames"):
        frc_localizations({"frame": np.zeros(5), "x_nm": np.ones(5), "y_nm": np.ones(5)}, block_frames=10)


def _gaussian_reference(x_nm, y_nm, s_nm, pixel, shape):
    """Per localization (NumPy, scipy's erf): pixel-integrated Gaussian over the (2h+1)^2 pixels around its
    pixel, h = ceil(3 s) + 1 (s in pixels), renormalised; summed in float64."""
    from scipy.special import erf

    img = np.zeros(shape)
    for x, y, s in zip(np.asarray(x_nm) / pixel, np.asarray(y_nm) / pixel, np.asarray(s_nm) / pixel):
        h = int(np.ceil(3 * s)) + 1
        iy, ix = np.floor(y).astype(int) + np.arange(-h, h + 1), np.floor(x).astype(int) + np.arange(-h, h + 1)
        py = 0.5 * (erf((iy + 1 - y) / (np.sqrt(2) * s)) - erf((iy - y) / (np.sqrt(2) * s)))
        px = 0.5 * (erf((ix + 1 - x) / (np.sqrt(2) * s)) - erf((ix - x) / (np.sqrt(2) * s)))
        w = np.outer(py, px) / np.outer(py, px).sum()
        ok_y, ok_x = (iy >= 0) & (iy < shape[0]), (ix >= 0) & (ix < shape[1])
        img[np.ix_(iy[ok_y], ix[ok_x])] += w[np.ix_(ok_y, ok_x)]
    return img


def test_gaussian_render_of_mixed_widths_matches_the_per_localization_reference(monkeypatch):
    """Widths from 0.3 to 15 render pixels (one 150 nm CRLB among 10 nm ones): each localization as the
    reference draws it alone, to float32 rounding; and the splat windows follow each one's own width (the
    widest no longer sets the memory of all: it tripled it)."""
    import jaxsr.smlm.render as render

    rng = np.random.default_rng(4)
    n = 300
    crlb = np.where(rng.uniform(size=n) < 0.3, rng.uniform(3.0, 60.0, n), 10.0)
    crlb[0] = 150.0
    locs = {"x_nm": rng.uniform(-50, 2050, n), "y_nm": rng.uniform(-50, 1550, n), "crlb_x_nm": crlb,
            "crlb_y_nm": crlb}
    calls = []
    splat = render._splat_gaussians

    def spy(y, x, s, h, shape, half):
        calls.append((len(y), half))
        return splat(y, x, s, h, shape, half)

    monkeypatch.setattr(render, "_splat_gaussians", spy)
    img = render_gaussian(locs, pixel_size_nm=10.0, shape=(150, 200), min_sigma_nm=3.0)
    ref = _gaussian_reference(locs["x_nm"], locs["y_nm"], np.maximum(crlb, 3.0), 10.0, (150, 200))
    np.testing.assert_allclose(img, ref, rtol=1e-4, atol=1e-6 * ref.max())
    # window pixels allotted: at most 4 x the sum of the localizations' own windows (powers-of-two groups,
    # padding to a power of two of rows); one window of the widest for all was 10 x that here
    own = ((np.ceil(3 * np.maximum(crlb, 3.0) / 10.0) + 1) * 2 + 1) ** 2
    allotted = sum(rows * (2 * half + 1) ** 2 for rows, half in calls)
    assert allotted <= 4 * own.sum() and max(half for _, half in calls) == 64
    # each localization drawn independently of the others: the sum of two halves' renders
    parts = [render_gaussian({k: v[m] for k, v in locs.items()}, pixel_size_nm=10.0, shape=(150, 200),
                             min_sigma_nm=3.0) for m in (crlb > 20, crlb <= 20)]
    np.testing.assert_allclose(parts[0] + parts[1], img, rtol=1e-5, atol=1e-6)


def test_render_refuses_non_finite_positions_and_widths():
    nan_x = {"x_nm": np.array([5.0, np.nan]), "y_nm": np.array([5.0, 5.0]), "frame": np.array([0, 300])}
    for f in (lambda t, **k: render_histogram(t, pixel_size_nm=10.0, **k),
              lambda t, **k: render_gaussian(t, pixel_size_nm=10.0, sigma_nm=5.0, **k)):
        for kw in ({}, {"shape": (2, 2)}):
            with pytest.raises(ValueError, match="argument 'locs'.*non-finite"):
                f(nan_x, **kw)
    with pytest.raises(ValueError, match="argument 'locs'.*non-finite"):
        frc_localizations({**nan_x, "y_nm": np.array([np.inf, 5.0])}, block_frames=100)
    with pytest.raises(ValueError, match="argument 'locs'.*length"):
        render_histogram({"x_nm": [5.0, 6.0], "y_nm": [5.0]}, pixel_size_nm=10.0)
    one = {"x_nm": [5.0], "y_nm": [5.0], "crlb_x_nm": [np.inf], "crlb_y_nm": [1.0]}
    with pytest.raises(ValueError, match="argument 'locs'.*infinite"):
        render_gaussian(one, pixel_size_nm=10.0, shape=(2, 2))
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="min_sigma_nm"):
            render_gaussian({**one, "crlb_x_nm": [1.0]}, pixel_size_nm=10.0, shape=(2, 2), min_sigma_nm=bad)
    with pytest.raises(ValueError, match="sigma_nm"):
        render_gaussian(one, pixel_size_nm=10.0, shape=(2, 2), sigma_nm=float("inf"))
    with pytest.raises(ValueError, match="argument 'locs'.*negative"):
        render_histogram({"x_nm": [-50.0], "y_nm": [-50.0]}, pixel_size_nm=10.0)
    # a NaN CRLB still takes the minimum width
    img = render_gaussian({"x_nm": [100.0], "y_nm": [100.0], "crlb_x_nm": [np.nan], "crlb_y_nm": [np.nan]},
                          pixel_size_nm=10.0, shape=(20, 20), min_sigma_nm=5.0)
    assert img.sum() == pytest.approx(1.0, rel=1e-5) and img[9, 9] > 0.1
