"""The JSON round trip shared by the configuration dataclasses of :mod:`jaxsr.nn`."""

from __future__ import annotations

import dataclasses
from typing import Any


class JsonConfig:
    """Mixin for frozen dataclasses stored as plain JSON next to checkpoints and weights.

    Subclasses set ``_WHAT`` (e.g. ``"U-Net settings"``) for the error message.
    """

    _WHAT = "settings"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the configuration."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - names)
        if extra:
            raise ValueError(f"argument 'config': unknown {cls._WHAT} {extra}")
        return cls(**d)
