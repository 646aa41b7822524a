"""Labelled PNG panels of images (for quick looks from the CLI), written atomically.

Pillow is the only dependency: no plotting library is needed to show a user
what a command produced.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxsr._validate import positive_float
from jaxsr.io.atomic import as_path, atomic_path

__all__ = ["write_png_panel"]


def _to_uint8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    a = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(a, [low, high])
    scaled = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _scale_bar(arrays: list[np.ndarray], pixel_size_nm: Any, scale_bar_nm: Any) -> float | None:
    """The scale bar's length in nm (``None``: no bar), with one-line errors."""
    if pixel_size_nm is None:
        if scale_bar_nm is not None:
            raise ValueError("argument 'scale_bar_nm': needs pixel_size_nm (the images' pixel size in nm)")
        return None
    pixel = positive_float(pixel_size_nm, "pixel_size_nm")
    if scale_bar_nm is not None:
        return positive_float(scale_bar_nm, "scale_bar_nm")
    target = min(a.shape[1] for a in arrays) * pixel / 5.0
    decade = 10.0 ** np.floor(np.log10(target))
    return float(min((m * decade for m in (1, 2, 5, 10)), key=lambda v: abs(np.log(v / target))))


def write_png_panel(
    path: str | os.PathLike,
    images: Sequence[Any],
    *,
    titles: Sequence[str] | None = None,
    size: int = 320,
    percentiles: tuple[float, float] = (0.5, 99.8),
    pixel_size_nm: float | None = None,
    scale_bar_nm: float | None = None,
    overwrite: bool = False,
) -> None:
    """Write 2D images side by side as one grey-scale PNG with a title above each.

    Each image is contrast-stretched between its own ``percentiles`` and resized
    (nearest neighbour, so pixels stay visible) to ``size`` pixels high. With
    ``pixel_size_nm`` (the images' common pixel, nm) every panel gets a scale bar in
    its lower left corner, white with a black rim and labelled in nm (the default font has no micro sign).

    Args:
        path: output ``.png`` file; its folder must exist.
        images: 2D arrays ``(y, x)`` (any real dtype, NumPy or JAX).
        titles: one label per image (optional).
        size: panel height in pixels.
        percentiles: display range ``(low, high)`` in percent of each image.
        pixel_size_nm: pixel size of the images in nm; ``None`` (default): no scale bar.
        scale_bar_nm: the bar's length in nm; default a round length (1, 2 or 5 times a power
            of ten) near a fifth of the narrowest image's width.
        overwrite: replace an existing file.

    Raises:
        ValueError: no images, an image that is not 2D or not finite, a title count mismatch,
            a name not ending in ``.png``, a non-positive ``pixel_size_nm`` or ``scale_bar_nm``,
            ``scale_bar_nm`` without ``pixel_size_nm``.
        FileExistsError: ``path`` exists and ``overwrite`` is False.

    >>> import os, tempfile, numpy as np
    >>> target = os.path.join(tempfile.mkdtemp(), "panel.png")
    >>> write_png_panel(target, [np.eye(8), np.ones((8, 16))], titles=["a", "b"], size=64)
    >>> os.path.getsize(target) > 0
    True
    """
    from PIL import Image, ImageDraw, ImageFont

    target = as_path(path, "path")
    if target.suffix.lower() != ".png":
        raise ValueError(f"argument 'path': expected a .png file name, got {target.name!r}")
    if not images:
        raise ValueError("argument 'images': expected at least one image")
    arrays = [np.asarray(im) for im in images]
    for i, a in enumerate(arrays):
        if a.ndim != 2:
            raise ValueError(f"argument 'images': image {i} has shape {a.shape}, expected (y, x)")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"argument 'images': image {i} contains NaN or infinite values")
    if titles is not None and len(titles) != len(arrays):
        raise ValueError(f"argument 'titles': {len(titles)} titles for {len(arrays)} images")
    if int(size) < 16:
        raise ValueError(f"argument 'size': expected at least 16 pixels, got {size}")
    bar_nm = _scale_bar(arrays, pixel_size_nm, scale_bar_nm)
    font = ImageFont.load_default(size=max(10, size // 20))
    header = max(14, size // 12) if titles else 0
    tiles = []
    for a in arrays:
        width = max(1, round(size * a.shape[1] / a.shape[0]))
        tiles.append(Image.fromarray(_to_uint8(a, *percentiles)).resize((width, size), Image.NEAREST))
    gap = 6
    canvas = Image.new("L", (sum(t.width for t in tiles) + gap * (len(tiles) + 1), size + header + 2 * gap), 255)
    draw = ImageDraw.Draw(canvas)
    x = gap
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (x, header + gap))
        if titles:
            draw.text((x, gap // 2), str(titles[i]), fill=0, font=font)
        if bar_nm is not None:
            zoom = size / arrays[i].shape[0]                     # panel pixels per image pixel
            length = max(1, round(bar_nm / float(pixel_size_nm) * zoom))
            thick = max(2, size // 80)
            x0, y1 = x + max(4, size // 32), header + gap + size - max(4, size // 32)
            draw.rectangle((x0 - 1, y1 - thick - 1, x0 + length, y1), fill=0)          # rim
            draw.rectangle((x0, y1 - thick, x0 + length - 1, y1 - 1), fill=255)
            draw.text((x0, y1 - thick - 2), f"{bar_nm:g} nm", fill=255, font=font, anchor="lb",
                      stroke_width=1, stroke_fill=0)
        x += tile.width + gap
    with atomic_path(target, overwrite=overwrite) as tmp:
        canvas.save(tmp, format="PNG")
