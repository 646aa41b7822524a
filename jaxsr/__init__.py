"""jaxsr: differentiable super-resolution fluorescence microscopy in JAX."""

from jaxsr._version import __version__

__all__ = ["__version__"]
