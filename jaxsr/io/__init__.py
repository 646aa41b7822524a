"""Image and result files: TIFF/OME-TIFF with pixel size, atomic writes, JSON."""

from jaxsr.io.atomic import atomic_path, write_json
from jaxsr.io.png import write_png_panel
from jaxsr.io.tiff import ImageMetadata, read_image, write_image

__all__ = [
    "read_image",
    "write_image",
    "ImageMetadata",
    "atomic_path",
    "write_json",
    "write_png_panel",
]
