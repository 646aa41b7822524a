"""Labelled PNG panels of images (for quick looks from the CLI), written atomically.

Pillow is the only dependency: no plotting library is needed to show a user
what a command produced.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxsr.io.atomic import as_path, atomic_path

__all__ = ["write_png_panel"]


def _to_uint8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    a = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(a, [low, high])
    scaled = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png_panel(
    path: str | os.PathLike,
    images: Sequence[Any],
    *,
    titles: Sequence[str] | None = None,
    size: int = 320,
    percentiles: tuple[float, float] = (0.5, 99.8),
    overwrite: bool = False,
) -> None:
    """Write 2D images side by side as one grey-scale PNG with a title above each.

    Each image is contrast-stretched between its own ``percentiles`` and resized
    (nearest neighbour, so pixels stay visible) to ``size`` pixels high.

    Args:
        path: output ``.png`` file; its folder must exist.
        images: 2D arrays ``(y, x)`` (any real dtype, NumPy or JAX).
        titles: one label per image (optional).
        size: panel height in pixels.
        percentiles: display range ``(low, high)`` in percent of each image.
        overwrite: replace an existing file.

    Raises:
        ValueError: no images, an image that is not 2D or not finite, a title count mismatch,
            a name not ending in ``.png``.
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
        x += tile.width + gap
    with atomic_path(target, overwrite=overwrite) as tmp:
        canvas.save(tmp, format="PNG")
