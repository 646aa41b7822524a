"""TIFF and OME-TIFF images with their pixel size, via ``tifffile``.

Two on-disk flavours are written:

- **ImageJ TIFF** (``.tif``/``.tiff``): ImageJ hyperstack metadata, opened with
  the right calibration by ImageJ/Fiji, napari and tifffile. ImageJ keeps the
  lateral calibration as X/YResolution tags in *pixels per unit* with the unit
  named in the ImageDescription, and the z step as ``spacing`` in that unit.
  jaxsr writes ``unit=um`` (ImageJ shows it as µm), the resolution in pixels per
  micrometre and ``spacing`` in micrometres: micrometres are the unit ImageJ
  itself uses for microscopy, so every ImageJ-based reader agrees on it; the
  values are written with full float precision (resolutions as 32-bit rationals,
  ~1e-9 relative), so nanometre values survive the round trip. ImageJ only
  supports uint8, uint16, int16 and float32 data and axes in ``TZCYX`` order.
- **OME-TIFF** (``.ome.tif``/``.ome.tiff`` or ``ome=True``): OME-XML with
  ``PhysicalSizeX/Y/Z`` in nanometres (``PhysicalSize*Unit="nm"``), read by
  Bio-Formats (Fiji), napari, QuPath and tifffile. Any order of the T, Z, C axes
  and more data types (bool, (u)int8/16/32, float32, float64) are allowed.

Arrays are ``(..., y, x)``: axes are strings of the letters T (time), Z (depth),
C (channel), Y, X, upper case, ending in ``"YX"``. Lengths are in nm.

Reading accepts any TIFF that tifffile understands (the first series is read)
and takes the pixel size from the OME metadata first, then from ImageJ
metadata, otherwise reports ``None``: plain TIFF resolution tags (often 72 dpi
from screen software) are not taken as a microscope calibration.

Length-1 dimensions: tifffile presents OME and ImageJ files through their 5-D
/ 6-D models and drops length-1 dimensions (an OME file with ``SizeZ=1`` reads
as ``"YX"``). jaxsr itself never squeezes: files written by :func:`write_image`
record their axes (a ``jaxsr_axes`` key in the ImageJ description, an OME
``MapAnnotation``) and read back with exactly the written shape, length-1
dimensions included; for other files the shape and axes are those of the
tifffile series, which may therefore lack length-1 dimensions.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from typing import Any

import numpy as np
import tifffile

from jaxsr._validate import check_positive
from jaxsr.io.atomic import as_path, atomic_path

__all__ = ["ImageMetadata", "read_image", "write_image"]

_AXES_RECORD_KEY = "jaxsr_axes"
_AXIS_LETTERS = "TZCYX"
_DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TZCYX"}
_IMAGEJ_DTYPES = tuple(np.dtype(d) for d in ("uint8", "uint16", "int16", "float32"))
_OME_DTYPES = tuple(
    np.dtype(d) for d in ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64")
)

# Length units (as written by OME, ImageJ and other software) -> nanometres.
_NM_PER_UNIT = {
    "pm": 1e-3,
    "å": 0.1, "angstrom": 0.1,
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "nanometers": 1.0, "nanometres": 1.0,
    "µm": 1e3, "um": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "micrometre": 1e3,
    "micrometers": 1e3, "micrometres": 1e3,
    "mm": 1e6, "millimeter": 1e6, "millimetre": 1e6,
    "cm": 1e7, "centimeter": 1e7, "centimetre": 1e7,
    "m": 1e9, "meter": 1e9, "metre": 1e9,
}


@dataclasses.dataclass(frozen=True)
class ImageMetadata:
    """What :func:`read_image` knows about an image besides its pixels.

    Attributes:
        pixel_size_nm: lateral pixel size (x) in nm, or ``None`` when the file
            carries no calibration.
        z_step_nm: axial step (z spacing) in nm, or ``None``.
        axes: one upper-case letter per array dimension, e.g. ``"YX"``,
            ``"ZYX"``, ``"TYX"``, ``"CZYX"``. Files from other software may use
            tifffile's other codes, e.g. ``"I"`` for the pages of a plain
            multi-page TIFF (``"IYX"``), ``"S"`` for RGB samples, ``"Q"``
            for unknown.
        extra: other facts, e.g. ``"format"`` (``"ome"``, ``"imagej"`` or
            ``"tiff"``), ``"pixel_size_y_nm"`` (only when y differs from x), or
            ``"unrecognised_unit"`` (a length unit that could not be converted).

    >>> ImageMetadata(pixel_size_nm=65.0, z_step_nm=None, axes="YX")
    ImageMetadata(pixel_size_nm=65.0, z_step_nm=None, axes='YX', extra={})
    """

    pixel_size_nm: float | None
    z_step_nm: float | None
    axes: str
    extra: dict = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------
# helpers


def _unit_to_nm(unit: Any) -> float | None:
    if unit is None:
        return None
    text = str(unit).strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ").replace("\u03bc", "µ")
    return _NM_PER_UNIT.get(text.lower())


def _as_length_nm(value: Any, name: str) -> float | None:
    """``None`` or a finite positive real scalar, returned as float."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"argument '{name}': expected a positive number in nm or None, got {value!r}")
    try:
        arr = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - re-raised with a clear message
        raise TypeError(f"argument '{name}': expected a positive number in nm or None, got {type(value).__name__}") from err
    if arr.ndim != 0 or arr.dtype.kind not in "iuf":
        raise TypeError(f"argument '{name}': expected a positive number in nm or None, got {value!r}")
    length = float(arr)
    check_positive(length, name)
    return length


def _check_axes(axes: Any, shape: tuple[int, ...], *, imagej: bool) -> str:
    ndim = len(shape)
    if not 2 <= ndim <= len(_AXIS_LETTERS):
        raise ValueError(
            f"argument 'array': expected 2 to {len(_AXIS_LETTERS)} dimensions (..., y, x), got shape {shape}"
        )
    if axes is None:
        return _DEFAULT_AXES[ndim]
    if not isinstance(axes, str):
        raise TypeError(f"argument 'axes': expected a str such as 'ZYX', got {type(axes).__name__}")
    letters = axes.upper()
    if len(letters) != ndim:
        raise ValueError(
            f"argument 'axes': {axes!r} has {len(letters)} letters but 'array' has {ndim} dimensions {shape}"
        )
    if any(a not in _AXIS_LETTERS for a in letters) or len(set(letters)) != ndim:
        raise ValueError(f"argument 'axes': expected distinct letters from {_AXIS_LETTERS!r}, got {axes!r}")
    if not letters.endswith("YX"):
        raise ValueError(f"argument 'axes': must end with 'YX' (arrays are (..., y, x)), got {axes!r}")
    if imagej and [_AXIS_LETTERS.index(a) for a in letters] != sorted(_AXIS_LETTERS.index(a) for a in letters):
        raise ValueError(
            f"argument 'axes': ImageJ TIFF needs the axes in TZCYX order, got {axes!r}; "
            "reorder the array (np.moveaxis) or write OME-TIFF (.ome.tif or ome=True)"
        )
    return letters


def _restore_axes(data: np.ndarray, series: Any, recorded: Any) -> tuple[np.ndarray, str] | None:
    """Re-insert length-1 dimensions that tifffile dropped, using recorded axes.

    Returns ``None`` (use the series as it is) unless ``recorded`` is exactly the
    series' full axes with only length-1 dimensions removed, in the same order.
    """
    if not isinstance(recorded, str) or not recorded:
        return None
    recorded = recorded.upper()
    try:
        full_axes = series.get_axes(False).upper()
        full_shape = tuple(series.get_shape(False))
    except Exception:  # noqa: BLE001 - unusual series: keep tifffile's view
        return None
    if len(set(recorded)) != len(recorded) or any(a not in full_axes for a in recorded):
        return None
    positions = [full_axes.index(a) for a in recorded]
    if positions != sorted(positions):
        return None
    if any(size != 1 for i, size in enumerate(full_shape) if i not in positions):
        return None
    shape = tuple(full_shape[i] for i in positions)
    if math.prod(shape) != data.size:
        return None
    return data.reshape(shape), recorded


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


_ANNOTATION_KEY = re.compile(r"jaxsr_[a-z0-9_]+")


def _check_annotations(annotations: Any) -> dict[str, str]:
    """``annotations`` of :func:`write_image` as a dict, with one-line errors."""
    if annotations is None:
        return {}
    if not isinstance(annotations, Mapping):
        raise TypeError(f"argument 'annotations': expected a mapping of str to str, got {type(annotations).__name__}")
    out = {}
    for key, value in annotations.items():
        if not isinstance(key, str) or not _ANNOTATION_KEY.fullmatch(key) or key == _AXES_RECORD_KEY:
            raise ValueError(f"argument 'annotations': keys are 'jaxsr_' and lower-case letters, digits or '_' "
                             f"(not {_AXES_RECORD_KEY!r}), got {key!r}")
        if not isinstance(value, str) or not value or value != value.strip() or "\n" in value or "\r" in value:
            raise ValueError(f"argument 'annotations': the value of {key!r} must be a non-empty one-line string "
                             f"without surrounding spaces, got {value!r}")
        out[key] = value
    return out


@functools.lru_cache(maxsize=2)
def _parse_ome(xml: str) -> ElementTree.Element | None:
    """The parsed OME-XML (``None`` if it does not parse); cached, so a reader that wants both the
    pixel size and the annotations of one file parses it once. The tree is only read, never changed."""
    try:
        return ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None


def _annotations(tif: tifffile.TiffFile) -> dict[str, str]:
    """The ``jaxsr_*`` annotations :func:`write_image` stored (ImageJ description keys or OME map
    annotations), as text; the recorded axes are not among them."""
    found: dict[str, Any] = {}
    if tif.is_ome and tif.ome_metadata:
        root = _parse_ome(tif.ome_metadata)
        if root is None:
            return {}
        found = {el.get("K"): el.text for el in root.iter() if _local(el.tag) == "M"}
    elif tif.is_imagej:
        found = dict(tif.imagej_metadata or {})
    return {k: str(v) for k, v in found.items()
            if isinstance(k, str) and _ANNOTATION_KEY.fullmatch(k) and k != _AXES_RECORD_KEY and v is not None}


def _ome_metadata(xml: str, extra: dict) -> tuple[float | None, float | None, float | None, str | None]:
    """Pixel size x, y, z step (nm) and recorded axes from the first OME Image."""
    root = _parse_ome(xml)
    if root is None:
        return None, None, None, None
    pixels = next((el for el in root.iter() if _local(el.tag) == "Pixels"), None)
    recorded = next(
        (el.text for el in root.iter() if _local(el.tag) == "M" and el.get("K") == _AXES_RECORD_KEY), None
    )
    if pixels is None:
        return None, None, None, recorded

    def length(axis: str) -> float | None:
        value = pixels.get(f"PhysicalSize{axis}")
        if value is None:
            return None
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")  # the OME schema default
        factor = _unit_to_nm(unit)
        if factor is None:
            extra["unrecognised_unit"] = unit
            return None
        try:
            size = float(value) * factor
        except ValueError:
            return None
        return size if math.isfinite(size) and size > 0 else None

    return length("X"), length("Y"), length("Z"), recorded


def _imagej_metadata(tif: tifffile.TiffFile, page: Any, extra: dict) -> tuple[float | None, float | None, float | None]:
    """Pixel size x, y and z step (nm) from ImageJ metadata and resolution tags."""
    meta = tif.imagej_metadata or {}
    unit = meta.get("unit")
    factor = _unit_to_nm(unit)
    if unit is not None and factor is None and str(unit).strip().lower() not in ("pixel", "pixels", ""):
        extra["unrecognised_unit"] = unit

    def from_resolution(tag_name: str, unit_factor: float | None) -> float | None:
        tag = page.tags.get(tag_name)
        if unit_factor is None or tag is None:
            return None
        try:
            num, den = tag.value
            size = float(den) / float(num) * unit_factor
        except (TypeError, ValueError, ZeroDivisionError):
            return None
        return size if math.isfinite(size) and size > 0 else None

    yfactor = _unit_to_nm(meta["yunit"]) if "yunit" in meta else factor
    zfactor = _unit_to_nm(meta["zunit"]) if "zunit" in meta else factor
    z_step = None
    if zfactor is not None and "spacing" in meta:
        try:
            z_step = float(meta["spacing"]) * zfactor
        except (TypeError, ValueError):
            z_step = None
        if z_step is not None and not (math.isfinite(z_step) and z_step > 0):
            z_step = None
    return from_resolution("XResolution", factor), from_resolution("YResolution", yfactor), z_step


# ---------------------------------------------------------------------------
# public API


def _imagej_calibration(pixel_size_nm: float | None, z_step_nm: float | None) -> dict[str, Any]:
    """The ImageJ description keys of a calibration (the pixel size itself goes in the resolution tags).

    ``unit=um`` calibrates x and y (with the resolution tags) and z; a z step without a pixel size gets
    ``zunit=um`` alone, so x and y stay uncalibrated (``unit`` would turn tifffile's default resolution
    of 1 pixel per unit into a 1000 nm pixel size).

    >>> _imagej_calibration(None, 200.0)
    {'zunit': 'um', 'spacing': 0.2}
    """
    keys: dict[str, Any] = {}
    if pixel_size_nm is not None:
        keys["unit"] = "um"
    elif z_step_nm is not None:
        keys["zunit"] = "um"
    if z_step_nm is not None:
        keys["spacing"] = z_step_nm / 1e3
    return keys


def read_image(path: str | os.PathLike, *, dtype: Any = np.float32) -> tuple[np.ndarray, ImageMetadata]:
    """Read a TIFF / OME-TIFF image and its pixel size.

    The first series of the file is read whole into memory. The pixel size
    comes from the OME-XML (``PhysicalSizeX``/``PhysicalSizeZ`` with their
    units; nm, µm/um, mm, m and a few more are converted to nm), else from
    ImageJ metadata (X/YResolution in pixels per ``unit``, ``spacing`` for z;
    units ``nm``, ``um``/``micron``/``µm``, ``mm``, ...), else it is ``None``.
    Axes come from the tifffile series and are upper case; no dimension is
    squeezed by jaxsr (see the module notes on length-1 dimensions: files
    written by :func:`write_image` read back with exactly the written shape).

    Args:
        path: the file (``str`` or ``os.PathLike``).
        dtype: the returned dtype, ``float32`` by default; ``None`` keeps the
            stored dtype. A conversion that would lose the kind of the data
            (float to int, signed to unsigned) is refused, and so is an integer
            dtype whose range does not hold every stored value.

    Returns:
        ``(image, metadata)``: a NumPy array shaped as ``metadata.axes`` (e.g.
        ``(z, y, x)`` for ``"ZYX"``) and an :class:`ImageMetadata`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a TIFF tifffile can read ("argument 'path':
            cannot read TIFF ..."), or ``dtype`` cannot hold the stored data.
        TypeError: ``path`` or ``dtype`` has the wrong type.

    >>> import os, shutil, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> name = os.path.join(folder, "stack.tif")
    >>> write_image(name, np.ones((3, 4, 5), np.uint16), pixel_size_nm=65.0, z_step_nm=200.0)
    >>> image, meta = read_image(name)
    >>> image.shape, image.dtype, meta.axes, meta.pixel_size_nm, meta.z_step_nm
    ((3, 4, 5), dtype('float32'), 'ZYX', 65.0, 200.0)
    >>> shutil.rmtree(folder)
    """
    file = as_path(path, "path")
    out_dtype = None
    if dtype is not None:
        try:
            out_dtype = np.dtype(dtype)
        except TypeError as err:
            raise TypeError(f"argument 'dtype': expected a NumPy dtype or None, got {dtype!r}") from err
        if out_dtype.kind not in "biuf":
            raise TypeError(f"argument 'dtype': expected a real numeric dtype, got {out_dtype}")
    if not os.path.lexists(file) or not file.exists():
        raise FileNotFoundError(f"argument 'path': no such file '{file}'")
    if file.is_dir():
        raise ValueError(f"argument 'path': cannot read TIFF '{file}': it is a directory")

    extra: dict[str, Any] = {}
    try:
        with tifffile.TiffFile(file) as tif:
            if not tif.series:
                raise ValueError("the file holds no image")
            series = tif.series[0]
            data = np.asarray(series.asarray())
            axes = str(series.axes).upper()
            pixel_x = pixel_y = z_step = None
            recorded = None
            if tif.is_ome and tif.ome_metadata:
                extra["format"] = "ome"
                pixel_x, pixel_y, z_step, recorded = _ome_metadata(tif.ome_metadata, extra)
            elif tif.is_imagej:
                extra["format"] = "imagej"
                pixel_x, pixel_y, z_step = _imagej_metadata(tif, tif.pages.first, extra)
                recorded = (tif.imagej_metadata or {}).get(_AXES_RECORD_KEY)
            else:
                extra["format"] = "tiff"
            notes = _annotations(tif)
            if notes:
                extra["annotations"] = notes
            restored = _restore_axes(data, series, recorded)
            if restored is not None:
                data, axes = restored
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - any parse failure becomes one clear error
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"argument 'path': cannot read TIFF '{file}': {reason}") from err

    if pixel_x is not None and pixel_y is not None and not math.isclose(pixel_x, pixel_y, rel_tol=1e-6):
        extra["pixel_size_y_nm"] = pixel_y
    if out_dtype is not None and data.dtype != out_dtype:
        if not np.can_cast(data.dtype, out_dtype, casting="same_kind"):
            raise ValueError(
                f"argument 'dtype': cannot convert the stored {data.dtype} data of '{file}' to {out_dtype} "
                "without changing its kind; pass dtype=None to keep the stored dtype"
            )
        if out_dtype.kind in "iu" and data.size:  # astype would wrap values out of range around
            info = np.iinfo(out_dtype)
            lo, hi = int(data.min()), int(data.max())
            if lo < info.min or hi > info.max:
                raise ValueError(
                    f"argument 'dtype': the stored {data.dtype} data of '{file}' span [{lo}, {hi}], outside the "
                    f"range of {out_dtype} [{info.min}, {info.max}]; pass a wider dtype or dtype=None"
                )
        data = data.astype(out_dtype)
    metadata = ImageMetadata(pixel_size_nm=pixel_x, z_step_nm=z_step, axes=axes, extra=extra)
    return data, metadata


def write_image(
    path: str | os.PathLike,
    array: Any,
    *,
    pixel_size_nm: float | None = None,
    z_step_nm: float | None = None,
    axes: str | None = None,
    overwrite: bool = False,
    ome: bool | None = None,
    annotations: Mapping[str, str] | None = None,
) -> None:
    """Write an image as ImageJ TIFF or OME-TIFF, atomically, with its pixel size.

    The file is written to a temporary name and renamed onto ``path`` only when
    complete (:func:`jaxsr.io.atomic_path`); an existing file is never replaced
    unless ``overwrite=True``. Data are written as they are: float32 stays
    float32, integer dtypes are kept, NaN and infinities are stored unchanged
    (this is I/O, not validation). JAX arrays are accepted (copied to host
    with ``np.asarray``).

    ImageJ TIFF stores the calibration as ImageJ does (pixels per micrometre,
    ``unit=um``, ``spacing`` in micrometres) and needs TZCYX axis order and
    uint8/uint16/int16/float32 data. OME-TIFF stores ``PhysicalSizeX/Y/Z`` in nm
    and also takes bool, int8, (u)int32 and float64 data and any T/Z/C order.

    Args:
        path: output file, ending in ``.tif``/``.tiff`` (ImageJ) or
            ``.ome.tif``/``.ome.tiff`` (OME); its directory must exist.
        array: image ``(..., y, x)`` with 2 to 5 dimensions.
        pixel_size_nm: lateral pixel size in nm (x and y), or ``None``.
        z_step_nm: axial step in nm, or ``None``.
        axes: letters from ``"TZCYX"``, one per dimension, ending in ``"YX"``;
            default by rank: ``"YX"``, ``"ZYX"``, ``"TZYX"``, ``"TZCYX"``.
        overwrite: replace an existing file. Default ``False``.
        ome: write OME-TIFF; default (``None``) from the suffix. ``False`` with
            an ``.ome.tif`` name is refused (the name would lie).
        annotations: facts about the data for jaxsr to read back, e.g.
            ``{"jaxsr_camera": "emccd"}`` (``jaxsr simulate-smlm`` records its camera so that
            ``jaxsr localize`` can use it): keys ``jaxsr_`` plus lower-case letters, digits or
            ``_``; values one-line strings. Stored as ImageJ description keys or OME map
            annotations; :func:`read_image` returns them as text in ``extra["annotations"]``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is ``False``.
        FileNotFoundError: the directory of ``path`` does not exist.
        ValueError: bad suffix, axes, rank, dtype for the format, or a
            non-positive / non-finite length; the message names the argument.
        TypeError: non-numeric or complex ``array``, or arguments of the wrong type.

    >>> import os, shutil, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> name = os.path.join(folder, "image.ome.tif")
    >>> write_image(name, np.zeros((8, 8), np.float32), pixel_size_nm=97.5)
    >>> read_image(name)[1]
    ImageMetadata(pixel_size_nm=97.5, z_step_nm=None, axes='YX', extra={'format': 'ome'})
    >>> shutil.rmtree(folder)
    """
    target = as_path(path, "path")
    lower = target.name.lower()
    if not lower.endswith((".tif", ".tiff")):
        raise ValueError(f"argument 'path': expected a .tif, .tiff, .ome.tif or .ome.tiff file name, got '{target.name}'")
    ome_name = lower.endswith((".ome.tif", ".ome.tiff"))
    if ome is not None and not isinstance(ome, (bool, np.bool_)):
        raise TypeError(f"argument 'ome': expected a bool or None, got {type(ome).__name__}")
    if ome is None:
        ome = ome_name
    elif not ome and ome_name:
        raise ValueError(f"argument 'ome': ome=False but '{target.name}' ends in .ome.tif(f); rename the file or drop ome")
    ome = bool(ome)
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"argument 'overwrite': expected a bool, got {type(overwrite).__name__}")

    try:
        data = np.asarray(array)
    except Exception as err:  # noqa: BLE001 - re-raised with a clear message
        raise TypeError(f"argument 'array': expected a numeric array, got {type(array).__name__}") from err
    if data.dtype.kind == "c":
        raise TypeError(f"argument 'array': expected a real array, got dtype {data.dtype}")
    if data.dtype.kind not in "biuf":
        raise TypeError(f"argument 'array': expected a numeric array, got dtype {data.dtype}")
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    supported = _OME_DTYPES if ome else _IMAGEJ_DTYPES
    if data.dtype not in supported:
        names = ", ".join(str(d) for d in supported)
        hint = "" if ome else " (or write OME-TIFF: .ome.tif or ome=True)"
        raise ValueError(
            f"argument 'array': dtype {data.dtype} cannot be stored in {'OME-TIFF' if ome else 'ImageJ TIFF'}; "
            f"convert it to one of {names}{hint}"
        )
    letters = _check_axes(axes, data.shape, imagej=not ome)
    if data.size == 0:
        raise ValueError(f"argument 'array': cannot write an empty image, got shape {data.shape}")
    pixel = _as_length_nm(pixel_size_nm, "pixel_size_nm")
    z_step = _as_length_nm(z_step_nm, "z_step_nm")
    notes = _check_annotations(annotations)

    options: dict[str, Any] = {"photometric": "minisblack"}
    if ome:
        metadata: dict[str, Any] = {"axes": letters, "MapAnnotation": {_AXES_RECORD_KEY: letters, **notes}}
        if pixel is not None:
            for ax in "XY":
                metadata[f"PhysicalSize{ax}"] = pixel
                metadata[f"PhysicalSize{ax}Unit"] = "nm"
        if z_step is not None:
            metadata["PhysicalSizeZ"] = z_step
            metadata["PhysicalSizeZUnit"] = "nm"
        options.update(ome=True, metadata=metadata)
    else:
        metadata = {"axes": letters, _AXES_RECORD_KEY: letters, **notes}
        metadata.update(_imagej_calibration(pixel, z_step))
        if pixel is not None:
            per_um = 1e3 / pixel
            options["resolution"] = (per_um, per_um)
        options.update(imagej=True, metadata=metadata)

    with atomic_path(target, overwrite=bool(overwrite)) as tmp:
        tifffile.imwrite(tmp, data, **options)
