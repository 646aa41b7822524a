"""XLA options jaxsr uses on the CPU, and the measurements behind them.

jaxsr sets no process-wide ``XLA_FLAGS``: none was a net gain (measurements:
``benchmarks/bench_denoise.py``, results in ``benchmarks/results/bench_denoise.json``; 2-core AMD
EPYC, jaxlib 0.10.2). jaxlib 0.10.2 lowers every convolution to a YNNPACK fusion; for the U-Net
training step (batch 16 of 64 x 64) such a fusion runs on one thread, for a whole 1024 x 1024 frame
it uses all cores. Measured:

* ``--xla_cpu_experimental_ynn_fusion_type=`` (convolutions through XLA's multi-threaded Eigen
  kernels): training step 1.45x faster on 2 idle cores (0.74 -> 0.51 s); but whole-frame inference
  8-17 % slower and accelerated Richardson-Lucy about 6 % slower. Hence not global:
  :func:`cpu_training_compiler_options` gives it to the training step alone (``jaxsr.nn.fit``), as a
  per-computation compiler option;
* the same plus ``--xla_cpu_use_onednn=true``: no better (this jaxlib has no oneDNN convolution
  rewrite);
* ``--xla_cpu_experimental_ynn_fusion_type=+eltwise``: 5-17 % slower;
* ``--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY``,
  ``--xla_cpu_enable_concurrency_optimized_scheduler=true``, ``--xla_cpu_multi_thread_eigen=false``,
  ``--xla_cpu_max_isa=AVX2``: no measurable change;
* fast-math flags are excluded whatever they gain: they break NaN/inf semantics;
* ``--xla_cpu_use_fusion_emitters=false`` (XLA's legacy elemental emitters): compiles about 30 %
  faster (``jaxsr demo`` 15.4 -> 11.3 s; an eager single-op program 36 -> 23 ms) but runs 5-10 %
  slower (accelerated Richardson-Lucy on 512 x 512: 0.270 -> 0.288 s; 100 3D particles' registration
  2.17 -> 2.32 s; whole-frame 1024 x 1024 denoising 1.15 -> 1.26 s). The compile-bound test suite
  uses it (``tests/conftest.py``); the library keeps XLA's default for long jobs.

Every configuration gave the same float32 loss trajectory (relative differences below 2e-6).
``JAXSR_NO_XLA_FLAGS=1`` turns the training option off.
"""

from __future__ import annotations

import os
import re
from importlib import metadata

__all__ = ["TRAINING_COMPILER_OPTIONS", "cpu_training_compiler_options"]

#: Per-computation XLA options for CPU training steps, with the jaxlib versions known to accept them
#: (the flag exists in 0.10.1-0.11.2; an unknown option is an error, so they are version-gated).
TRAINING_COMPILER_OPTIONS: tuple[tuple[str, str, tuple[tuple[int, ...], tuple[int, ...]], str], ...] = (
    ("xla_cpu_experimental_ynn_fusion_type", "", ((0, 10), (0, 12)),
     "convolutions through XLA's multi-threaded Eigen kernels instead of YNNPACK fusions, which run a "
     "training-size convolution on one thread: the 3Snet U-Net training step is 1.45x faster on 2 idle "
     "cores, with the same float32 losses"),
)

_OPT_OUT = "JAXSR_NO_XLA_FLAGS"


def _jaxlib_version() -> tuple[int, ...] | None:
    try:
        text = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return None
    parts = re.findall(r"\d+", text.split("+")[0])[:3]
    return tuple(int(p) for p in parts) if parts else None


def _user_flag_names(xla_flags: str) -> set[str]:
    """Names of the flags in an ``XLA_FLAGS`` string (``--name=value``, ``--name``, ``--noname``)."""
    names = set()
    for token in xla_flags.split():
        name = token.lstrip("-").split("=", 1)[0]
        if not name:
            continue
        names.add(name)
        if name.startswith("no"):
            names.add(name[2:])
    return names


def cpu_training_compiler_options(*, platform: str | None = None) -> dict[str, str]:
    """XLA compiler options for a jitted CPU training step (``jax.jit(..., compiler_options=...)``).

    Only that computation is affected (inference and deconvolution keep XLA's defaults, which are
    faster for them). Empty off the CPU, with ``JAXSR_NO_XLA_FLAGS=1``, for a jaxlib outside the
    tested versions, or for an option the user already set in ``XLA_FLAGS``.

    Args:
        platform: the backend the step runs on (``jax.default_backend()`` when None; this
            initialises JAX, so pass it explicitly to stay import-time safe).

    Returns:
        ``{option: value}`` to pass as ``compiler_options``.

    >>> cpu_training_compiler_options(platform="gpu")
    {}
    """
    if platform is None:
        import jax  # noqa: PLC0415 - deliberately lazy: this module must not import JAX at import time

        platform = jax.default_backend()
    if platform != "cpu" or os.environ.get(_OPT_OUT, "").strip().lower() in ("1", "true", "yes", "on"):
        return {}
    version = _jaxlib_version()
    present = _user_flag_names(os.environ.get("XLA_FLAGS", ""))
    return {name: value for name, value, (oldest, untested), _reason in TRAINING_COMPILER_OPTIONS
            if version is not None and oldest <= version < untested and name not in present}
