"""Raw SMLM movies from multi-page TIFF, read in chunks of frames (movies larger than memory).

Only the first image series is read; it must be ``(t, y, x)`` (a single
``(y, x)`` frame is a movie of one frame). Chunks are read page by page with
tifffile, so memory holds one chunk at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import tifffile

from jaxsr.io.atomic import as_path
from jaxsr.io.tiff import _annotations, _imagej_metadata, _ome_metadata

__all__ = ["MovieInfo", "movie_info", "movie_chunks"]


class MovieInfo(NamedTuple):
    """Shape and pixel size of a movie file.

    Attributes:
        n_frames: number of frames ``t``.
        shape: ``(y, x)`` frame size in pixels.
        pixel_size_nm: pixel size from the OME/ImageJ metadata, or None.
        annotations: the ``jaxsr_*`` facts :func:`jaxsr.io.write_image` stored (e.g. ``jaxsr_camera``,
            the camera preset ``jaxsr simulate-smlm`` simulated), as text; ``None`` when there are none.
    """

    n_frames: int
    shape: tuple[int, int]
    pixel_size_nm: float | None
    annotations: dict | None = None


def _open(path: str | os.PathLike):
    file = as_path(path, "path")
    if not file.is_file():
        raise FileNotFoundError(f"argument 'path': no such movie file: {file}")
    try:
        tif = tifffile.TiffFile(file)
    except Exception as err:  # noqa: BLE001 - any parse failure is one clear error
        raise ValueError(f"argument 'path': cannot read TIFF '{file}': {err}") from None
    if not tif.series:
        tif.close()
        raise ValueError(f"argument 'path': '{file}' holds no image")
    return tif


def movie_info(path: str | os.PathLike) -> MovieInfo:
    """Frames, frame shape and pixel size of a TIFF movie, without reading the pixels.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a TIFF, or a series that is not ``(t, y, x)`` / ``(y, x)``.
    """
    with _open(path) as tif:
        series = tif.series[0]
        shape = tuple(int(s) for s in series.shape)
        squeezed = tuple(s for s in shape[:-2] if s != 1) + shape[-2:]
        if len(squeezed) not in (2, 3):
            raise ValueError(f"argument 'path': expected a movie (t, y, x), got shape {shape} "
                             f"(axes {series.axes})")
        n = squeezed[0] if len(squeezed) == 3 else 1
        pixel = None
        if tif.is_ome and tif.ome_metadata:
            pixel = _ome_metadata(tif.ome_metadata, {})[0]
        elif tif.is_imagej:
            pixel = _imagej_metadata(tif, tif.pages.first, {})[0]
        return MovieInfo(int(n), (squeezed[-2], squeezed[-1]), pixel, _annotations(tif) or None)


def movie_chunks(path: str | os.PathLike, *, chunk: int = 256) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_frame, frames)`` with ``frames`` a ``(<= chunk, y, x)`` float32 array.

    Frames are read page by page when the movie has one page per frame (the usual
    multi-page TIFF), so only one chunk is in memory; otherwise the series is read whole.
    """
    if int(chunk) < 1:
        raise ValueError(f"argument 'chunk': expected >= 1 frames, got {chunk}")
    info = movie_info(path)
    with _open(path) as tif:
        series = tif.series[0]
        pages = len(series.pages) if hasattr(series, "pages") else 0
        if pages == info.n_frames and info.n_frames > 1:
            for start in range(0, info.n_frames, int(chunk)):
                stop = min(start + int(chunk), info.n_frames)
                data = tif.asarray(key=range(start, stop), series=0)
                yield start, np.asarray(data, np.float32).reshape((stop - start,) + info.shape)
        else:
            data = np.asarray(series.asarray(), np.float32).reshape((info.n_frames,) + info.shape)
            for start in range(0, info.n_frames, int(chunk)):
                yield start, data[start:start + int(chunk)]
