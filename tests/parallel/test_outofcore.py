"""The out-of-core driver (jaxsr.parallel.outofcore) against whole-image Richardson-Lucy.

Reference: :func:`jaxsr.deconv.richardson_lucy` (``boundary="pad"``) on the whole
image in memory. With ``depth="exact"`` the chunked result must equal it to
float32 round-off everywhere (seams, chunk interiors and the image's true edges);
with the default halo it must stay within the seam error documented in the
module (1.5e-4 of the maximum; these small cases, a few iterations, are far
below it). Files: Zarr -> Zarr, TIFF -> Zarr and TIFF -> TIFF, the input left
byte-identical, atomic and no-clobber output, and bad arguments named in the
error. Small on purpose (2 CPU cores): one compiled kernel per block shape.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")
tifffile = pytest.importorskip("tifffile")

from scipy import ndimage  # noqa: E402

from jaxsr.deconv import richardson_lucy  # noqa: E402
from jaxsr.forward import convolve  # noqa: E402
from jaxsr.io import read_image, write_image  # noqa: E402
from jaxsr.parallel import outofcore  # noqa: E402
from jaxsr.parallel.outofcore import (  # noqa: E402
    chunk_depth,
    deconvolve_chunked,
    map_chunks,
    richardson_lucy_dask,
)

ROUND_OFF = 5e-6  # max |chunked - whole| / max(whole), float32, exact halo
SEAM_ERROR = 1.5e-4  # the documented bound for depth="auto"
BACKGROUND = 2.0


def _gauss(shape, sigma):
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    p = np.exp(-sum(g**2 / (2.0 * s**2) for g, s in zip(grids, sigma)))
    return (p / p.sum()).astype(np.float32)


def _scene(seed, shape, psf, n_points):
    rng = np.random.default_rng(seed)
    obj = np.ones(shape, np.float32)
    idx = tuple(rng.integers(0, n, n_points) for n in shape)
    obj[idx] += rng.uniform(200.0, 2000.0, n_points).astype(np.float32)
    blurred = np.asarray(convolve(obj, psf, boundary="periodic")) + BACKGROUND
    return rng.poisson(np.maximum(blurred, 0.0)).astype(np.float32)


def _rel(a, b):
    return float(np.abs(np.asarray(a) - b).max() / b.max())


def _seams(shape, chunks, radius):
    mask = np.zeros(shape, bool)
    for ax, (n, c, r) in enumerate(zip(shape, chunks, radius)):
        for b in range(c, n, c):
            sl = [slice(None)] * len(shape)
            sl[ax] = slice(max(b - r, 0), b + r)
            mask[tuple(sl)] = True
    return mask


@pytest.fixture(scope="module")
def case2d():
    """96 x 80 image, 4 chunks of 48 x 40, 5 x 5 PSF, 6 iterations (exact halo 24 < chunk)."""
    psf = _gauss((5, 5), (1.0, 1.0))
    image = _scene(1, (96, 80), psf, 60)
    whole = np.asarray(richardson_lucy(image, psf, num_iter=6, background=BACKGROUND))
    return {"image": image, "psf": psf, "whole": whole, "num_iter": 6, "chunks": (48, 40)}


@pytest.fixture(scope="module")
def case3d():
    """24 x 48 x 48 volume, chunks 8 x 24 x 24 (three along z: one with halos on both sides), 4 iterations."""
    psf = _gauss((3, 5, 5), (0.7, 1.0, 1.0))
    image = _scene(2, (24, 48, 48), psf, 200)
    whole = np.asarray(richardson_lucy(image, psf, num_iter=4, background=BACKGROUND))
    return {"image": image, "psf": psf, "whole": whole, "num_iter": 4, "chunks": (8, 24, 24)}


def _lazy(case, depth):
    return richardson_lucy_dask(case["image"], case["psf"], num_iter=case["num_iter"], background=BACKGROUND,
                                depth=depth, chunks=case["chunks"], scheduler="synchronous")


# --------------------------------------------------------------------------- #
# Halo rule
# --------------------------------------------------------------------------- #
def test_chunk_depth_rule():
    psf = _gauss((3, 5, 5), (0.7, 1.0, 1.0))
    assert chunk_depth(psf, num_iter=4, depth="exact") == (8, 16, 16)  # 4 x 2 x radius (1, 2, 2)
    assert chunk_depth(psf, num_iter=50) == (8, 12, 12)  # 5 FWHM, rounded up
    assert chunk_depth(psf, num_iter=1) == (2, 4, 4)  # capped at the exact halo
    assert chunk_depth(psf, depth=3) == (3, 3, 3)
    assert chunk_depth(psf, depth=(1, 2, 3)) == (1, 2, 3)
    # zero borders do not count towards the radius
    padded = np.pad(psf, ((0, 0), (2, 2), (2, 2)))
    assert chunk_depth(padded, num_iter=4, depth="exact") == (8, 16, 16)


# --------------------------------------------------------------------------- #
# Equality with whole-image RL
# --------------------------------------------------------------------------- #
def test_exact_2d_equals_whole(case2d):
    out = _lazy(case2d, "exact")
    assert out.chunks == ((48, 48), (40, 40))
    assert _rel(out.compute(scheduler="synchronous"), case2d["whole"]) < ROUND_OFF


def test_auto_2d_within_seam_error(case2d):
    got = _lazy(case2d, "auto").compute(scheduler="synchronous")
    assert _rel(got, case2d["whole"]) < SEAM_ERROR


def test_small_halo_errors_stay_within_reach(case2d):
    """A one-pixel halo leaves visible seams, and no error farther than num_iter x 2 x r from a chunk border."""
    got = _lazy(case2d, 1).compute(scheduler="synchronous")
    err = np.abs(got - case2d["whole"]) / case2d["whole"].max()
    reach = case2d["num_iter"] * 2 * 2  # radius 2
    near = _seams((96, 80), (48, 40), (reach, reach))
    assert err.max() > 100 * ROUND_OFF
    assert err[~near].max() < ROUND_OFF


def test_exact_3d_equals_whole(case3d):
    out = _lazy(case3d, "exact")
    assert out.chunks == ((8, 8, 8), (24, 24), (24, 24))
    assert _rel(out.compute(scheduler="threads", num_workers=2), case3d["whole"]) < ROUND_OFF


def test_auto_3d_within_seam_error(case3d):
    got = _lazy(case3d, "auto").compute(scheduler="synchronous")
    assert _rel(got, case3d["whole"]) < SEAM_ERROR


def test_map_chunks_halo_and_true_edges():
    """boundary="none": a 3 x 3 filter with halo 1 equals the whole-array filter, its own edge rule included."""
    x = np.random.default_rng(0).random((30, 26))
    fn = lambda b: ndimage.uniform_filter(b, 3, mode="constant")  # noqa: E731
    out = map_chunks(fn, x, depth=1, chunks=(10, 13), dtype=np.float64)
    assert out.chunks == ((10, 10, 10), (13, 13))
    np.testing.assert_allclose(out.compute(scheduler="synchronous"), fn(x), rtol=1e-12, atol=1e-12)


def test_map_chunks_halo_larger_than_chunk():
    """A halo above the chunk size: chunks merged for processing, the requested output chunks kept."""
    x = np.random.default_rng(1).random((30, 26))
    fn = lambda b: ndimage.uniform_filter(b, 9, mode="constant")  # noqa: E731
    out = map_chunks(fn, x, depth=(4, 9), chunks=(3, 13), dtype=np.float64)
    assert out.chunks == ((3,) * 10, (13, 13))
    np.testing.assert_allclose(out.compute(scheduler="synchronous"), fn(x), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- #
# Files
# --------------------------------------------------------------------------- #
def _snapshot(path):
    """Every file under ``path`` with its bytes (to check that the input is untouched)."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = f.read()
    return out


def test_zarr_to_zarr(case2d, tmp_path):
    src = tmp_path / "in.zarr"
    arr = zarr.create_array(str(src), shape=(96, 80), chunks=(48, 40), dtype="float32")
    arr[:] = case2d["image"]
    before = _snapshot(src)
    res = deconvolve_chunked(str(src), tmp_path / "out.zarr", case2d["psf"], num_iter=case2d["num_iter"],
                             background=BACKGROUND, depth="exact", scheduler="synchronous")
    assert res.chunks == (48, 40) and res.depth == (24, 24) and res.num_chunks == 4
    assert res.block_shapes == [(72, 64)]
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    assert out.shape == (96, 80) and out.chunks == (48, 40) and out.dtype == np.float32
    assert _rel(out[:], case2d["whole"]) < ROUND_OFF
    assert out.attrs["jaxsr"]["num_iter"] == case2d["num_iter"]
    assert _snapshot(src) == before
    assert sorted(os.listdir(tmp_path)) == ["in.zarr", "out.zarr"]  # no temporary left


def test_tiff_to_zarr_and_tiff(case3d, tmp_path):
    """ImageJ TIFF in (read page-wise), Zarr and TIFF out; the calibration is carried over."""
    src = tmp_path / "in.tif"
    write_image(src, case3d["image"], pixel_size_nm=97.5, z_step_nm=250.0)
    before = src.read_bytes()
    for name in ("out.zarr", "out.tif"):
        res = deconvolve_chunked(src, tmp_path / name, case3d["psf"], num_iter=case3d["num_iter"],
                                 background=BACKGROUND, depth="exact", chunks=case3d["chunks"])
        assert res.shape == (24, 48, 48) and res.num_chunks == 12
        if name.endswith(".zarr"):
            out = zarr.open_array(str(tmp_path / name), mode="r")
            got = out[:]
            assert (out.attrs["jaxsr"]["pixel_size_nm"], out.attrs["jaxsr"]["z_step_nm"]) == (97.5, 250.0)
        else:
            got, meta = read_image(tmp_path / name)
            assert (meta.pixel_size_nm, meta.z_step_nm, meta.axes) == (97.5, 250.0, "ZYX")
        assert got.shape == (24, 48, 48) and got.dtype == np.float32
        assert _rel(got, case3d["whole"]) < ROUND_OFF
    assert src.read_bytes() == before


def test_overwrite_refused_then_allowed(case2d, tmp_path):
    dst = tmp_path / "out.zarr"
    dst.mkdir()
    (dst / "keep.txt").write_text("old")
    kwargs = dict(num_iter=case2d["num_iter"], background=BACKGROUND, depth="exact", chunks=case2d["chunks"],
                  scheduler="synchronous")
    with pytest.raises(FileExistsError, match="destination"):
        deconvolve_chunked(case2d["image"], dst, case2d["psf"], **kwargs)
    assert (dst / "keep.txt").read_text() == "old"
    deconvolve_chunked(case2d["image"], dst, case2d["psf"], overwrite=True, **kwargs)
    assert not (dst / "keep.txt").exists()
    assert _rel(zarr.open_array(str(dst), mode="r")[:], case2d["whole"]) < ROUND_OFF
    assert sorted(os.listdir(tmp_path)) == ["out.zarr"]


def test_destination_is_source_refused(case2d, tmp_path):
    src = tmp_path / "data" / "in.zarr"
    src.parent.mkdir()
    zarr.create_array(str(src), shape=(96, 80), chunks=(48, 40), dtype="float32")[:] = case2d["image"]
    before = _snapshot(src)
    for dst in (src, src.parent, src / "inside.zarr"):
        with pytest.raises(ValueError, match="destination"):
            deconvolve_chunked(src, dst, case2d["psf"], num_iter=2, overwrite=True)
    with pytest.raises(ValueError, match="destination"):  # the same store opened as a Zarr array
        deconvolve_chunked(zarr.open_array(str(src), mode="r"), src, case2d["psf"], num_iter=2, overwrite=True)
    tif = tmp_path / "in.tif"
    tifffile.imwrite(tif, case2d["image"])
    with pytest.raises(ValueError, match="destination"):
        deconvolve_chunked(tif, str(tif), case2d["psf"], num_iter=2, overwrite=True)
    assert _snapshot(src) == before


def test_failure_leaves_nothing(case2d, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        def fn(block):
            raise RuntimeError("chunk failed")
        return fn

    monkeypatch.setattr(outofcore, "_make_block_fn", broken)
    for name in ("out.zarr", "out.tif"):
        with pytest.raises(RuntimeError, match="chunk failed"):
            deconvolve_chunked(case2d["image"], tmp_path / name, case2d["psf"], num_iter=2,
                               chunks=case2d["chunks"], scheduler="synchronous")
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "kwargs,error,word",
    [
        ({"depth": "deep"}, ValueError, "depth"),
        ({"depth": -1}, ValueError, "depth"),
        ({"depth": (1, 2, 3)}, ValueError, "depth"),
        ({"depth": 1.5}, TypeError, "depth"),
        ({"chunks": 0}, ValueError, "chunks"),
        ({"chunks": (10, 10, 10)}, ValueError, "chunks"),
        ({"chunks": "big"}, TypeError, "chunks"),
        ({"psf": np.ones((3, 3, 3))}, ValueError, "psf"),
        ({"psf": -np.ones((3, 3))}, ValueError, "psf"),
        ({"psf": np.zeros((3, 3))}, ValueError, "psf"),
        ({"psf": np.ones(5)}, ValueError, "psf"),
        ({"num_iter": 0}, ValueError, "num_iter"),
        ({"background": -1.0}, ValueError, "background"),
        ({"background": np.ones((4, 4))}, ValueError, "background"),
        ({"scheduler": "processes"}, ValueError, "scheduler"),
        ({"pixel_size_nm": -65.0}, ValueError, "pixel_size_nm"),
    ],
)
def test_bad_arguments_named(kwargs, error, word, tmp_path):
    args = {"psf": np.ones((3, 3)), "num_iter": 2}
    args.update(kwargs)
    psf = args.pop("psf")
    image = np.ones((20, 20), np.float32)
    with pytest.raises(error, match=word):
        deconvolve_chunked(image, tmp_path / "out.zarr", psf, **args)
    assert os.listdir(tmp_path) == []


def test_bad_source(tmp_path):
    psf = np.ones((3, 3))
    with pytest.raises(FileNotFoundError, match="source"):
        deconvolve_chunked(tmp_path / "missing.zarr", tmp_path / "out.zarr", psf)
    (tmp_path / "notzarr").mkdir()
    with pytest.raises(ValueError, match="source"):
        deconvolve_chunked(tmp_path / "notzarr", tmp_path / "out.zarr", psf)
    image = np.ones((20, 20), np.float32)
    image[3, 4] = np.nan
    with pytest.raises(ValueError, match="source"):
        deconvolve_chunked(image, tmp_path / "out.zarr", psf, num_iter=2)
    for bad in (np.ones((0, 20)), np.ones(20), np.ones((2, 3, 4, 5))):
        with pytest.raises(ValueError, match="source"):
            deconvolve_chunked(bad, tmp_path / "out.zarr", psf, num_iter=2)
    with pytest.raises(FileNotFoundError, match="destination"):
        deconvolve_chunked(np.ones((20, 20)), tmp_path / "no" / "out.zarr", psf, num_iter=2)
    assert sorted(os.listdir(tmp_path)) == ["notzarr"]


def test_missing_dask_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.raises(ImportError, match=r"pip install jaxsr\[dask\]"):
        map_chunks(lambda b: b, np.ones((4, 4)), depth=1)


@pytest.mark.parametrize("big", [False, True], ids=["imagej", "bigtiff"])
def test_tiff_output_calibration_z_only_and_bigtiff(big, tmp_path, monkeypatch):
    """A z step alone stays a z step (no 1000 nm pixel); the BigTIFF branch (forced on a small file by lowering
    its threshold) keeps the pixel size and z step too, as OME-XML."""
    if big:
        monkeypatch.setattr(outofcore, "IMAGEJ_MAX_BYTES", 0)
    psf = _gauss((3, 3, 3), (0.7, 0.7, 0.7))
    image = np.full((4, 16, 16), 10.0, np.float32)
    for name, px, z in (("both.tif", 97.5, 250.0), ("zonly.tif", None, 250.0), ("pxonly.tif", 97.5, None)):
        deconvolve_chunked(image, tmp_path / name, psf, num_iter=1, chunks=(4, 16, 16), pixel_size_nm=px,
                           z_step_nm=z)
        got, meta = read_image(tmp_path / name)
        assert (meta.pixel_size_nm, meta.z_step_nm, meta.axes) == (px, z, "ZYX"), name
        assert meta.extra["format"] == ("ome" if big else "imagej")
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert tif.is_bigtiff == big
        assert got.shape == image.shape
