"""3S denoising of reversibly-switchable-protein (RSFP) ON/OFF series, and per-pixel series statistics.

A reversibly switchable fluorescent protein sample is imaged alternately in
its ON state (signal + background) and, after switching off, in its OFF state
(background only). 3S ("signal-preserving") denoising averages each series
per pixel and subtracts: ``AVG(ON) - AVG(OFF)``. The fixed-pattern background
(autofluorescence, camera offset, stray light) is identical in both states and
cancels exactly; random noise falls as ``1 / sqrt(n_frames)``; the signal is
untouched (no spatial filtering).

Axis order: frames first, ``(t, y, x)`` or ``(t, z, y, x)``; the frame axis is
reduced. Use ``jax.vmap`` for a batch of series.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsr._validate import as_float_array, check_finite, check_ndim

__all__ = ["three_s_denoise", "series_average", "series_median"]


def _frames(x, name):
    x = as_float_array(x, name)
    check_ndim(x, name, (3, 4))
    if x.shape[0] < 1:
        raise ValueError(f"argument '{name}': needs at least 1 frame, got shape {tuple(x.shape)}")
    if 0 in x.shape[1:]:
        raise ValueError(f"argument '{name}': frames are empty, got shape {tuple(x.shape)}")
    check_finite(x, name)
    return x


@jax.jit
def _three_s(on, off):
    return jnp.mean(on, axis=0) - jnp.mean(off, axis=0)


def three_s_denoise(on_frames, off_frames):
    """3S "clear" image: per-pixel mean of the ON series minus mean of the OFF series.

    ``clear = AVG(ON) - AVG(OFF)`` over the frame axis. The result is the raw
    difference: where the signal is zero it is zero-mean noise and can be
    negative (:func:`jaxsr.deconv.clid` clips negatives to zero before
    deconvolving; clip yourself with ``jnp.maximum(clear, 0)`` if needed).

    Args:
        on_frames: ``(t, y, x)`` or ``(t, z, y, x)`` ON-state frames (counts or
            any linear intensity); integer input is converted to float32.
        off_frames: OFF-state frames of exactly the same shape (paired cycles).

    Returns:
        ``(y, x)`` (or ``(z, y, x)``) clear image, dtype of the inputs.

    Raises:
        ValueError: rank not 3 or 4, zero frames, empty frames, NaN/inf, or ``off_frames`` of a
            different shape than ``on_frames``.

    References:
        Xue et al., "High-fidelity single-frame computational super-resolution
        using signal-preserving denoising-enabled deconvolution" (3Snet-CLID),
        Nat. Commun. (2026): 3S denoising, ``AVG(ON) - AVG(OFF)``.

    >>> import jax.numpy as jnp
    >>> on = jnp.stack([jnp.full((2, 2), 7.0), jnp.full((2, 2), 9.0)])
    >>> off = jnp.full((2, 2, 2), 3.0)
    >>> three_s_denoise(on, off).tolist()
    [[5.0, 5.0], [5.0, 5.0]]
    """
    on = _frames(on_frames, "on_frames")
    off = _frames(off_frames, "off_frames")
    if off.shape != on.shape:
        raise ValueError(
            f"argument 'off_frames': must have the shape of 'on_frames' {tuple(on.shape)}, got {tuple(off.shape)}"
        )
    dtype = jnp.result_type(on, off)
    return _three_s(on.astype(dtype), off.astype(dtype))


def series_average(frames):
    """Per-pixel mean over the frame axis, ``AVG(frames)`` (the "AVG(ON)" baseline of 3S).

    Args:
        frames: ``(t, y, x)`` or ``(t, z, y, x)``, finite.

    Returns:
        ``(y, x)`` (or ``(z, y, x)``) mean image.

    Raises:
        ValueError: rank not 3 or 4, zero frames, empty frames, NaN/inf.

    References:
        Xue et al., 3Snet-CLID, Nat. Commun. (2026), Fig. 1 (AVG(ON)).

    >>> import jax.numpy as jnp
    >>> series_average(jnp.arange(8.0).reshape(2, 2, 2)).tolist()
    [[2.0, 3.0], [4.0, 5.0]]
    """
    return jnp.mean(_frames(frames, "frames"), axis=0)


def series_median(frames):
    """Per-pixel median over the frame axis, ``MED(frames)``.

    The baselines of the 3S comparison are ``MED(ON) = series_median(on)`` and
    ``MED(ON - OFF) = series_median(on - off)`` (median of the paired
    frame differences). For an even frame count the median is the mean of the
    two middle values (``jnp.median``).

    Args:
        frames: ``(t, y, x)`` or ``(t, z, y, x)``, finite.

    Returns:
        ``(y, x)`` (or ``(z, y, x)``) median image.

    Raises:
        ValueError: rank not 3 or 4, zero frames, empty frames, NaN/inf.

    References:
        Xue et al., 3Snet-CLID, Nat. Commun. (2026), Fig. 1 (MED(ON), MED(ON-OFF)).

    >>> import jax.numpy as jnp
    >>> series_median(jnp.array([[[1.0]], [[5.0]], [[2.0]]])).tolist()
    [[2.0]]
    """
    return jnp.median(_frames(frames, "frames"), axis=0)
