"""Input checks shared by every public function.

Every check raises a one-line ``ValueError`` or ``TypeError`` that names the
argument and says what was expected. Checks on *values* (NaN, sign, sum) run
only when the value is concrete: under ``jit``/``grad`` tracing they are
skipped, so the same function stays traceable. Checks on *shapes* always run,
because shapes are static under tracing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_concrete",
    "as_float_array",
    "check_ndim",
    "check_finite",
    "check_nonnegative",
    "check_positive",
    "check_psf",
    "check_shape",
    "check_choice",
    "check_int",
    "real_float",
    "positive_float",
]


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds a value (not a JAX tracer)."""
    leaves = jax.tree_util.tree_leaves(x)
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)


def default_float_dtype():
    """float64 when x64 is enabled, else float32."""
    return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


def as_float_array(x: Any, name: str) -> jax.Array:
    """Convert ``x`` to a floating JAX array (float32 unless already float64).

    Raises:
        TypeError: if ``x`` is not numeric.
    """
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating):
        return x
    try:
        arr = np.asarray(x) if not isinstance(x, jax.Array) else x
    except Exception as err:  # noqa: BLE001 - re-raised with a clear message
        raise TypeError(f"argument '{name}': expected a numeric array, got {type(x).__name__}") from err
    if arr.dtype == object or not (
        jnp.issubdtype(arr.dtype, jnp.number) or jnp.issubdtype(arr.dtype, jnp.bool_)
    ):
        raise TypeError(f"argument '{name}': expected a numeric array, got dtype {arr.dtype}")
    if jnp.issubdtype(arr.dtype, jnp.complexfloating):
        raise TypeError(f"argument '{name}': expected a real array, got dtype {arr.dtype}")
    dtype = arr.dtype if arr.dtype in (np.float64, np.float32) else default_float_dtype()
    if dtype == np.float64 and not jax.config.read("jax_enable_x64"):
        dtype = np.float32
    return jnp.asarray(arr, dtype=dtype)


def check_ndim(x: Any, name: str, ndim: int | Sequence[int], *, min_ndim: int | None = None) -> None:
    """Require ``x.ndim`` to be one of ``ndim`` (or at least ``min_ndim``)."""
    actual = np.ndim(x)
    if min_ndim is not None:
        if actual < min_ndim:
            raise ValueError(f"argument '{name}': expected at least {min_ndim} dimensions, got shape {tuple(np.shape(x))}")
        return
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if actual not in allowed:
        want = " or ".join(str(a) for a in allowed)
        raise ValueError(f"argument '{name}': expected {want} dimensions, got shape {tuple(np.shape(x))}")


def check_shape(shape: Any, name: str, ndim: int | Sequence[int] | None = None) -> tuple[int, ...]:
    """Validate a static shape (tuple of positive ints) and return it as a tuple."""
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        items = tuple(shape)
    except Exception as err:  # noqa: BLE001
        raise TypeError(f"argument '{name}': expected a tuple of ints, got {shape!r}") from err
    for s in items:
        # Sizes are counts: 9.0 is accepted, 9.5, True or "9" are not (no silent truncation).
        if isinstance(s, (bool, np.bool_, str, bytes)) or not isinstance(s, (int, np.integer, float, np.floating)) \
                or float(s) != int(s):
            raise TypeError(f"argument '{name}': expected a tuple of ints, got {shape!r}")
    shape = tuple(int(s) for s in items)
    if any(s < 1 for s in shape):
        raise ValueError(f"argument '{name}': every size must be >= 1, got {shape}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if len(shape) not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"argument '{name}': expected {want} sizes, got {shape}")
    return shape


def _numeric(x: Any, name: str) -> np.ndarray:
    """``np.asarray(x)`` for a real numeric value, else a TypeError naming the argument."""
    try:
        a = np.asarray(x)
    except Exception as err:  # noqa: BLE001 - re-raised with a clear message
        raise TypeError(f"argument '{name}': expected a number or numeric array, got {type(x).__name__}") from err
    if a.dtype.kind not in "biuf":
        raise TypeError(f"argument '{name}': expected a real number or array, got {type(x).__name__} ({a.dtype})")
    return a


def check_finite(x: Any, name: str) -> None:
    """Reject NaN/inf in a concrete array."""
    if is_concrete(x) and not bool(np.all(np.isfinite(_numeric(x, name)))):
        raise ValueError(f"argument '{name}': contains NaN or infinite values")


def check_nonnegative(x: Any, name: str) -> None:
    """Reject negative (or NaN) values in a concrete array or scalar."""
    if is_concrete(x):
        a = _numeric(x, name)
        if not bool(np.all(np.isfinite(a))):
            raise ValueError(f"argument '{name}': contains NaN or infinite values")
        if bool(np.any(a < 0)):
            raise ValueError(f"argument '{name}': must be non-negative, got minimum {float(a.min())!r}")


def check_positive(x: Any, name: str) -> None:
    """Reject non-positive (or NaN) values in a concrete array or scalar."""
    if is_concrete(x):
        a = _numeric(x, name)
        if not bool(np.all(np.isfinite(a))):
            raise ValueError(f"argument '{name}': must be finite and positive, got {a if a.ndim == 0 else 'NaN/inf values'}")
        if bool(np.any(a <= 0)):
            raise ValueError(f"argument '{name}': must be positive, got {float(a.min())!r}")


def check_psf(psf: Any, name: str = "psf", *, ndim: int | Sequence[int] | None = None) -> None:
    """A PSF must be finite, non-negative, with a positive sum."""
    if ndim is not None:
        check_ndim(psf, name, ndim)
    if is_concrete(psf):
        a = np.asarray(psf)
        if not bool(np.all(np.isfinite(a))):
            raise ValueError(f"argument '{name}': contains NaN or infinite values")
        if bool(np.any(a < 0)):
            raise ValueError(f"argument '{name}': must be non-negative, got minimum {float(a.min())!r}")
        if not float(a.sum()) > 0:
            raise ValueError(f"argument '{name}': must have a positive sum, got {float(a.sum())!r}")


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> None:
    """Require ``value`` to be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"argument '{name}': expected one of {list(choices)}, got {value!r}")


def check_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """Require a Python/NumPy integer (not bool), optionally ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"argument '{name}': expected an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"argument '{name}': must be >= {minimum}, got {value}")
    return int(value)


def real_float(value: Any, name: str, what: str = "a number") -> float:
    """``float(value)`` for a real number; strings and bools are refused (``float("1.4")`` would parse)."""
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(f"argument '{name}': expected {what}, got {value!r}")
    try:
        return float(value)
    except Exception as err:  # noqa: BLE001 - re-raised with a clear message
        raise TypeError(f"argument '{name}': expected {what}, got {value!r}") from err


def positive_float(value: Any, name: str) -> float:
    """A finite, positive real number as a Python float, or a TypeError/ValueError naming ``name``."""
    out = real_float(value, name)
    if not (np.isfinite(out) and out > 0):
        raise ValueError(f"argument '{name}': must be finite and positive, got {value!r}")
    return out
