"""Tests for jaxsr.io.tiff: TIFF / OME-TIFF round trips, foreign files, bad input.

Independent references: files written directly with tifffile (ImageJ metadata in
micrometres, OME-XML in various units) must read back in nm; the pixel values
are compared with what tifffile itself reads.
"""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsr.io import ImageMetadata, read_image, write_image

FORMATS = ["tif", "ome.tif"]


def _data(rng, shape, dtype):
    if np.dtype(dtype).kind == "f":
        return rng.normal(100.0, 30.0, size=shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


# ---------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(16, 24), (5, 16, 24)])
@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_round_trip(tmp_path, rng, fmt, shape, dtype):
    data = _data(rng, shape, dtype)
    path = tmp_path / f"image.{fmt}"
    z_step = 310.7 if len(shape) == 3 else None
    write_image(path, data, pixel_size_nm=97.3, z_step_nm=z_step)
    image, meta = read_image(path, dtype=None)
    assert image.dtype == data.dtype
    np.testing.assert_array_equal(image, data)
    assert meta.axes == ("YX" if len(shape) == 2 else "ZYX")
    assert meta.pixel_size_nm == pytest.approx(97.3, rel=1e-6)
    if z_step is None:
        assert meta.z_step_nm is None
    else:
        assert meta.z_step_nm == pytest.approx(z_step, rel=1e-6)
    assert meta.extra == {"format": "ome" if fmt == "ome.tif" else "imagej"}
    # tifffile itself (an independent reader of the same bytes) agrees
    np.testing.assert_array_equal(tifffile.imread(path), data)


@pytest.mark.parametrize("fmt", FORMATS)
def test_default_read_dtype_is_float32(tmp_path, rng, fmt):
    data = _data(rng, (8, 12), np.uint16)
    path = tmp_path / f"u16.{fmt}"
    write_image(path, data)
    image, meta = read_image(path)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, data.astype(np.float32))
    assert meta.pixel_size_nm is None and meta.z_step_nm is None


@settings(max_examples=15)
@given(pixel=st.floats(0.05, 2e5), z_step=st.floats(0.05, 2e5), fmt=st.sampled_from(FORMATS))
def test_pixel_size_round_trip_property(tmp_path_factory, pixel, z_step, fmt):
    path = tmp_path_factory.mktemp("prop") / f"p.{fmt}"
    write_image(path, np.zeros((2, 4, 4), np.float32), pixel_size_nm=pixel, z_step_nm=z_step)
    _, meta = read_image(path)
    assert meta.pixel_size_nm == pytest.approx(pixel, rel=1e-6)
    assert meta.z_step_nm == pytest.approx(z_step, rel=1e-6)
    assert "pixel_size_y_nm" not in meta.extra


@pytest.mark.parametrize(
    "fmt,axes,shape",
    [
        ("tif", "ZYX", (1, 8, 12)),
        ("ome.tif", "ZYX", (1, 8, 12)),
        ("tif", "TZCYX", (2, 1, 3, 8, 12)),
        ("ome.tif", "TZCYX", (2, 1, 3, 8, 12)),
        ("tif", "TYX", (3, 8, 12)),
        ("tif", "CYX", (1, 8, 12)),
        ("ome.tif", "CZYX", (2, 3, 8, 12)),
        ("ome.tif", "ZTYX", (3, 1, 8, 12)),
        ("ome.tif", "tcyx", (2, 3, 8, 12)),
    ],
)
def test_axes_and_length_one_dimensions_round_trip(tmp_path, rng, fmt, axes, shape):
    data = _data(rng, shape, np.float32)
    path = tmp_path / f"a.{fmt}"
    write_image(path, data, axes=axes, pixel_size_nm=50.0)
    image, meta = read_image(path)
    assert meta.axes == axes.upper()
    assert image.shape == shape
    np.testing.assert_array_equal(image, data)


def test_foreign_ome_file_with_length_one_axis_reads_as_tifffile_series(tmp_path, rng):
    """Without jaxsr's axes record, the shape is tifffile's series (documented)."""
    data = _data(rng, (1, 8, 12), np.uint16)
    path = tmp_path / "foreign.ome.tif"
    tifffile.imwrite(path, data, ome=True, photometric="minisblack", metadata={"axes": "ZYX"})
    image, meta = read_image(path, dtype=None)
    assert meta.axes == "YX" and image.shape == (8, 12)
    np.testing.assert_array_equal(image, data[0])


def test_jax_array_and_nan_are_written(tmp_path):
    data = jnp.linspace(0.0, 1.0, 48, dtype=jnp.float32).reshape(6, 8).at[2, 3].set(jnp.nan)
    for fmt in FORMATS:
        path = tmp_path / f"j.{fmt}"
        write_image(path, data, pixel_size_nm=jnp.float32(80.0))
        image, meta = read_image(path)
        np.testing.assert_array_equal(image, np.asarray(data))  # NaN compares equal here
        assert np.isnan(image[2, 3]) and meta.pixel_size_nm == pytest.approx(80.0, rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.uint32, np.int8, np.bool_])
def test_ome_keeps_wider_dtypes(tmp_path, rng, dtype):
    if dtype is np.bool_:
        data = rng.random((6, 8)) > 0.5
    elif np.dtype(dtype).kind == "f":
        data = rng.normal(size=(6, 8)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, size=(6, 8), endpoint=True).astype(dtype)
    path = tmp_path / "w.ome.tif"
    write_image(path, data)
    image, _ = read_image(path, dtype=None)
    assert image.dtype == data.dtype
    np.testing.assert_array_equal(image, data)


def test_ome_flag_with_plain_suffix(tmp_path, rng):
    data = _data(rng, (6, 8), np.float32)
    write_image(tmp_path / "x.tif", data, ome=True, pixel_size_nm=20.0)
    _, meta = read_image(tmp_path / "x.tif")
    assert meta.extra["format"] == "ome" and meta.pixel_size_nm == pytest.approx(20.0)


def test_big_endian_input(tmp_path, rng):
    data = _data(rng, (6, 8), np.float32)
    write_image(tmp_path / "be.tif", data.astype(">f4"))
    image, _ = read_image(tmp_path / "be.tif", dtype=None)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, data)


# ---------------------------------------------------------------------------
# files written by other software (through tifffile directly)


@pytest.mark.parametrize(
    "unit,nm_per_unit",
    [("um", 1e3), ("micron", 1e3), ("\\u00B5m", 1e3), ("nm", 1.0), ("mm", 1e6), ("m", 1e9)],
)
def test_imagej_file_units_converted_to_nm(tmp_path, rng, unit, nm_per_unit):
    data = _data(rng, (4, 8, 12), np.uint16)
    pixel_in_unit, spacing_in_unit = 65.0 / nm_per_unit, 200.0 / nm_per_unit
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path, data, imagej=True, resolution=(1 / pixel_in_unit, 1 / pixel_in_unit),
        metadata={"axes": "ZYX", "unit": unit, "spacing": spacing_in_unit},
    )
    image, meta = read_image(path, dtype=None)
    np.testing.assert_array_equal(image, data)
    assert meta.axes == "ZYX" and meta.extra["format"] == "imagej"
    assert meta.pixel_size_nm == pytest.approx(65.0, rel=1e-6)
    assert meta.z_step_nm == pytest.approx(200.0, rel=1e-6)


def test_imagej_file_written_like_fiji(tmp_path, rng):
    """Fiji stores µm as ``unit=micron``, X/YResolution in pixels per µm."""
    data = _data(rng, (3, 2, 8, 12), np.float32)
    path = tmp_path / "fiji.tif"
    tifffile.imwrite(
        path, data, imagej=True, resolution=(1 / 0.1083, 1 / 0.1083),
        metadata={"axes": "TZYX", "unit": "micron", "spacing": 0.25, "finterval": 0.5},
    )
    image, meta = read_image(path)
    assert meta.axes == "TZYX" and image.shape == data.shape
    assert meta.pixel_size_nm == pytest.approx(108.3, rel=1e-6)
    assert meta.z_step_nm == pytest.approx(250.0, rel=1e-6)


def test_imagej_anisotropic_pixels(tmp_path):
    path = tmp_path / "aniso.tif"
    tifffile.imwrite(path, np.zeros((8, 12), np.uint8), imagej=True, resolution=(10.0, 5.0),
                     metadata={"unit": "um"})
    _, meta = read_image(path)
    assert meta.pixel_size_nm == pytest.approx(100.0, rel=1e-6)
    assert meta.extra["pixel_size_y_nm"] == pytest.approx(200.0, rel=1e-6)


def test_imagej_without_calibration(tmp_path):
    path = tmp_path / "plain_ij.tif"
    tifffile.imwrite(path, np.zeros((8, 12), np.uint8), imagej=True)
    _, meta = read_image(path)
    assert meta.pixel_size_nm is None and meta.z_step_nm is None


def test_imagej_unknown_unit(tmp_path):
    path = tmp_path / "inch.tif"
    tifffile.imwrite(path, np.zeros((8, 12), np.uint8), imagej=True, resolution=(10.0, 10.0),
                     metadata={"unit": "furlong"})
    _, meta = read_image(path)
    assert meta.pixel_size_nm is None and meta.extra["unrecognised_unit"] == "furlong"


@pytest.mark.parametrize(
    "size,unit,expected_nm",
    [(0.1, "µm", 100.0), (0.1, None, 100.0), (100.0, "nm", 100.0), (1e-4, "mm", 100.0),
     (1e-7, "m", 100.0), (0.1, "um", 100.0)],
)
def test_ome_file_units_converted_to_nm(tmp_path, rng, size, unit, expected_nm):
    data = _data(rng, (3, 8, 12), np.uint16)
    path = tmp_path / "foreign.ome.tif"
    metadata = {"axes": "ZYX", "PhysicalSizeX": size, "PhysicalSizeY": size, "PhysicalSizeZ": 3 * size}
    if unit is not None:  # omitted: the OME schema default, micrometres
        metadata.update(PhysicalSizeXUnit=unit, PhysicalSizeYUnit=unit, PhysicalSizeZUnit=unit)
    tifffile.imwrite(path, data, ome=True, photometric="minisblack", metadata=metadata)
    image, meta = read_image(path, dtype=None)
    np.testing.assert_array_equal(image, data)
    assert meta.axes == "ZYX" and meta.extra == {"format": "ome"}
    assert meta.pixel_size_nm == pytest.approx(expected_nm, rel=1e-6)
    assert meta.z_step_nm == pytest.approx(3 * expected_nm, rel=1e-6)


def test_plain_tiff_has_no_pixel_size(tmp_path, rng):
    data = _data(rng, (3, 8, 12), np.uint16)
    path = tmp_path / "plain.tif"
    # 72 dpi-style resolution tags are not a microscope calibration
    tifffile.imwrite(path, data, photometric="minisblack", resolution=(72.0, 72.0), resolutionunit="INCH")
    image, meta = read_image(path, dtype=None)
    np.testing.assert_array_equal(image, data)
    assert meta.pixel_size_nm is None and meta.extra == {"format": "tiff"}
    assert len(meta.axes) == 3 and meta.axes.endswith("YX")


def test_shared_measured_psf(data_dir):
    path = os.path.join(data_dir, "decon", "pyotf_psf_520nm_na085", "psf.tif")
    if not os.path.exists(path):
        pytest.skip("measured PSF not present")
    image, meta = read_image(path)
    assert image.shape == (25, 256, 256) and image.dtype == np.float32
    assert meta.axes.endswith("YX") and len(meta.axes) == 3
    # its resolution tags are uncalibrated (ResolutionUnit NONE, no ImageJ unit)
    assert meta.pixel_size_nm is None
    raw, _ = read_image(path, dtype=None)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw.astype(np.float32), image)
    assert raw.min() > 100  # camera background is not subtracted (README: ~135)


# ---------------------------------------------------------------------------
# ImageMetadata


def test_image_metadata_is_frozen_with_own_extra():
    a = ImageMetadata(pixel_size_nm=1.0, z_step_nm=None, axes="YX")
    b = ImageMetadata(pixel_size_nm=1.0, z_step_nm=None, axes="YX")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.axes = "ZYX"  # type: ignore[misc]
    a.extra["k"] = 1
    assert b.extra == {}


# ---------------------------------------------------------------------------
# bad input


def test_read_missing_file(tmp_path):
    path = tmp_path / "missing.tif"
    with pytest.raises(FileNotFoundError, match="path") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_read_text_file_named_tif(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("this is not\na TIFF file\n")
    with pytest.raises(ValueError, match="argument 'path': cannot read TIFF") as info:
        read_image(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_read_truncated_tiff(tmp_path, rng):
    good = tmp_path / "good.tif"
    write_image(good, _data(rng, (4, 32, 32), np.uint16))
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="cannot read TIFF"):
        read_image(bad)


def test_read_directory_and_bad_dtype(tmp_path, rng):
    with pytest.raises(ValueError, match="path"):
        read_image(tmp_path)
    path = tmp_path / "f.tif"
    write_image(path, _data(rng, (4, 4), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        read_image(path, dtype=np.uint16)
    with pytest.raises(TypeError, match="dtype"):
        read_image(path, dtype=np.complex64)
    with pytest.raises(TypeError, match="path"):
        read_image(3)


def test_write_refuses_existing_output(tmp_path, rng):
    path = tmp_path / "out.tif"
    write_image(path, _data(rng, (8, 8), np.float32), pixel_size_nm=100.0)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_image(path, _data(rng, (8, 8), np.float32))
    assert path.read_bytes() == before
    replacement = np.full((4, 4), 7, np.uint16)
    write_image(path, replacement, overwrite=True)
    image, meta = read_image(path, dtype=None)
    np.testing.assert_array_equal(image, replacement)
    assert meta.pixel_size_nm is None
    assert sorted(os.listdir(tmp_path)) == ["out.tif"]


@pytest.mark.parametrize(
    "axes,shape,fmt,word",
    [
        ("ZYX", (8, 8), "tif", "axes"),          # wrong length
        ("YX", (2, 8, 8), "ome.tif", "axes"),    # wrong length
        ("ZZX", (2, 8, 8), "tif", "axes"),       # duplicate / not ending in YX
        ("ZXY", (2, 8, 8), "tif", "axes"),       # not ending in YX
        ("QYX", (2, 8, 8), "ome.tif", "axes"),   # unknown letter
        ("CZYX", (2, 2, 8, 8), "tif", "axes"),   # ImageJ needs TZCYX order
        (None, (8,), "tif", "array"),            # 1-D
        (None, (2, 2, 2, 2, 2, 8), "tif", "array"),  # 6-D
    ],
)
def test_write_bad_axes_and_rank(tmp_path, axes, shape, fmt, word):
    with pytest.raises(ValueError, match=word):
        write_image(tmp_path / f"bad.{fmt}", np.zeros(shape, np.float32), axes=axes)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["pixel_size_nm", "z_step_nm"])
@pytest.mark.parametrize("value", [0.0, -65.0, float("nan"), float("inf")])
def test_write_non_positive_lengths(tmp_path, name, value):
    with pytest.raises(ValueError, match=name):
        write_image(tmp_path / "bad.tif", np.zeros((4, 4), np.float32), **{name: value})
    assert os.listdir(tmp_path) == []


def test_write_bad_types_and_formats(tmp_path):
    img = np.zeros((4, 4), np.float32)
    with pytest.raises(TypeError, match="pixel_size_nm"):
        write_image(tmp_path / "a.tif", img, pixel_size_nm="65")
    with pytest.raises(TypeError, match="z_step_nm"):
        write_image(tmp_path / "a.tif", img, z_step_nm=(1.0, 2.0))
    with pytest.raises(TypeError, match="axes"):
        write_image(tmp_path / "a.tif", img, axes=["Y", "X"])
    with pytest.raises(ValueError, match="path"):
        write_image(tmp_path / "a.png", img)
    with pytest.raises(ValueError, match="ome"):
        write_image(tmp_path / "a.ome.tif", img, ome=False)
    with pytest.raises(ValueError, match="array"):
        write_image(tmp_path / "a.tif", img.astype(np.float64))  # ImageJ has no float64
    with pytest.raises(ValueError, match="array"):
        write_image(tmp_path / "a.ome.tif", img.astype(np.float16))
    with pytest.raises(TypeError, match="array"):
        write_image(tmp_path / "a.tif", img.astype(np.complex64))
    with pytest.raises(TypeError, match="array"):
        write_image(tmp_path / "a.tif", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match="array"):
        write_image(tmp_path / "a.tif", np.zeros((0, 4), np.float32))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_image(tmp_path / "missing" / "a.tif", img)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_annotations_round_trip(tmp_path, rng, fmt):
    """jaxsr_* annotations come back as text from read_image and movie_info (ImageJ keys / OME map
    annotations, read here also with tifffile directly), and files without them report none."""
    from jaxsr.smlm.movie import movie_info

    path = tmp_path / f"a.{fmt}"
    notes = {"jaxsr_camera": "emccd", "jaxsr_note_2": "12.5 e-/ADU"}
    write_image(path, _data(rng, (3, 6, 5), np.float32), pixel_size_nm=100.0, axes="TYX", annotations=notes)
    _, meta = read_image(path)
    assert meta.extra["annotations"] == notes and meta.axes == "TYX"
    assert movie_info(path).annotations == notes
    with tifffile.TiffFile(path) as tif:
        if fmt == "tif":
            assert tif.imagej_metadata["jaxsr_camera"] == "emccd"
        else:
            assert '<M K="jaxsr_camera">emccd</M>' in tif.ome_metadata
    plain = tmp_path / f"b.{fmt}"
    write_image(plain, _data(rng, (6, 5), np.float32))
    assert "annotations" not in read_image(plain)[1].extra and movie_info(plain).annotations is None


@pytest.mark.parametrize("notes", [{"camera": "emccd"}, {"jaxsr_Camera": "x"}, {"jaxsr_axes": "YX"},
                                   {"jaxsr_a": ""}, {"jaxsr_a": "two\nlines"}, {"jaxsr_a": 3}])
def test_bad_annotations(tmp_path, notes):
    with pytest.raises(ValueError, match="annotations"):
        write_image(tmp_path / "a.tif", np.zeros((4, 4), np.float32), annotations=notes)
    with pytest.raises(TypeError, match="annotations"):
        write_image(tmp_path / "a.tif", np.zeros((4, 4), np.float32), annotations=[("jaxsr_a", "b")])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_z_step_without_pixel_size_round_trips_alone(tmp_path, fmt):
    """A z step alone is not a lateral calibration: no 1000 nm pixel (tifffile's default resolution) appears."""
    path = tmp_path / f"z.{fmt}"
    write_image(path, np.zeros((3, 8, 8), np.float32), z_step_nm=200.0)
    meta = read_image(path)[1]
    assert meta.pixel_size_nm is None
    assert meta.z_step_nm == pytest.approx(200.0, rel=1e-9)
    if fmt == "tif":  # ImageJ keys: z calibrated in um, x/y not calibrated at all
        with tifffile.TiffFile(path) as tif:
            assert "unit" not in tif.imagej_metadata and tif.imagej_metadata["zunit"] == "um"


def test_read_integer_dtype_too_narrow_is_refused(tmp_path):
    """uint16 40000 does not fit int16: an error naming dtype, never a wrapped -25536."""
    path = tmp_path / "u16.tif"
    data = np.array([[0, 40000], [7, 65535]], np.uint16)
    write_image(path, data)
    with pytest.raises(ValueError, match=r"argument 'dtype'.*\[0, 65535\].*int16"):
        read_image(path, dtype=np.int16)
    with pytest.raises(ValueError, match="argument 'dtype'"):
        read_image(path, dtype=np.uint8)
    got, _ = read_image(path, dtype=np.int32)  # wide enough: exact
    assert got.dtype == np.int32 and np.array_equal(got, data.astype(np.int32))
    small = tmp_path / "small.tif"
    write_image(small, np.array([[0, 300], [1, 2]], np.uint16))
    got, _ = read_image(small, dtype=np.int16)  # every value fits: converted
    assert got.dtype == np.int16 and got.tolist() == [[0, 300], [1, 2]]
