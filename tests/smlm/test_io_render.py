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
