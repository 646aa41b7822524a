"""jaxsr.io.write_png_panel: panels, titles and the scale bar (its length measured in the written PNG)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from jaxsr.io.png import _scale_bar, write_png_panel


def _longest_white_run(row: np.ndarray) -> int:
    best = run = 0
    for v in row:
        run = run + 1 if v == 255 else 0
        best = max(best, run)
    return best


@pytest.mark.parametrize("pixel_nm,bar_nm,size,shape", [(1.0, 20.0, 200, (100, 100)), (2.5, 50.0, 160, (80, 120)),
                                                         (0.5, None, 300, (150, 150))])
def test_scale_bar_has_the_length_it_says(tmp_path, pixel_nm, bar_nm, size, shape):
    """On a black image the bar is the only white run of its rows: its length in panel pixels is
    bar / pixel * (panel height / image height), to one pixel."""
    path = tmp_path / "p.png"
    write_png_panel(path, [np.zeros(shape)], size=size, pixel_size_nm=pixel_nm, scale_bar_nm=bar_nm)
    with Image.open(path) as im:
        a = np.asarray(im.convert("L"))
    width = round(size * shape[1] / shape[0])
    a = a[6:6 + size, 6:6 + width]          # the panel itself (no titles: 6 px white margins around it)
    assert a.shape == (size, width)
    bar = bar_nm if bar_nm is not None else _scale_bar([np.zeros(shape)], pixel_nm, None)
    expected = bar / pixel_nm * size / shape[0]
    runs = [_longest_white_run(r) for r in a]
    assert abs(max(runs) - expected) <= 1
    # the bar sits in the lower part of the panel, under its label
    rows = np.flatnonzero(np.array(runs) == max(runs))
    assert rows.min() > a.shape[0] * 0.7


def test_default_bar_is_a_round_fifth_of_the_field():
    for width_nm, want in [(100.0, 20.0), (160.0, 50.0), (1000.0, 200.0), (3.0, 0.5), (450.0, 100.0)]:
        assert _scale_bar([np.zeros((10, 100))], width_nm / 100, None) == want
    assert _scale_bar([np.zeros((10, 10))], None, None) is None


def test_no_bar_without_pixel_size(tmp_path):
    path = tmp_path / "p.png"
    write_png_panel(path, [np.zeros((50, 50))], size=100)
    with Image.open(path) as im:
        a = np.asarray(im.convert("L"))
    assert not np.any(a[6:106, 6:106] == 255)      # the black panel, nothing drawn on it


@pytest.mark.parametrize("kw,word", [({"pixel_size_nm": 0.0}, "pixel_size_nm"),
                                     ({"pixel_size_nm": float("nan")}, "pixel_size_nm"),
                                     ({"pixel_size_nm": 1.0, "scale_bar_nm": -5.0}, "scale_bar_nm"),
                                     ({"scale_bar_nm": 10.0}, "scale_bar_nm")])
def test_bad_scale_bar(tmp_path, kw, word):
    with pytest.raises(ValueError, match=word):
        write_png_panel(tmp_path / "p.png", [np.zeros((8, 8))], **kw)
    assert os.listdir(tmp_path) == []
