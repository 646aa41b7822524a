"""Shared test fixtures.

- Float32 everywhere by default; the ``x64`` fixture turns on float64 for the
  duration of one test (gradient checks), then restores float32.
- No global RNG: tests take ``rng`` (a seeded ``numpy.random.Generator``) or
  ``key`` (a ``jax.random`` key) from here.
"""

from __future__ import annotations

import os

# Compile-bound suite (about 60 % of its time is XLA backend compilation, 40 % of that for eager
# single-op programs). Two flags make the many small test programs compile faster than the
# slightly slower code they then run costs, measured on 2 cores:
# - LLVM optimisation level 1 instead of XLA's default: tests/smlm fit+localize 62 -> 54 s of CPU,
#   nn dps+3snet+fusion registration 131 -> 94 s;
# - the legacy elemental emitters instead of the MLIR fusion emitters (jaxlib 0.10-0.11; an unknown
#   flag aborts XLA, so it is version-gated): an eager add compiles in 23 instead of 36 ms, and the
#   whole suite under `make test` took 359 instead of 601 s, with every assertion unchanged.
# The library sets no such flag; users get XLA's defaults. Subprocesses and notebook kernels inherit it.
# (importing jaxsr imports JAX but starts no backend, which is when XLA reads XLA_FLAGS)
from jaxsr._xla_flags import _jaxlib_version  # noqa: E402

_FLAGS = "--xla_cpu_multi_thread_eigen=false --xla_backend_optimization_level=1"
if (0, 10) <= (_jaxlib_version() or ()) < (0, 12):
    _FLAGS += " --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("XLA_FLAGS", _FLAGS)

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", False)

# JIT compilation makes the first example of a property test slow; no deadline.
settings.register_profile(
    "jaxsr", deadline=None, max_examples=25, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("jaxsr")

DATA_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture
def rng() -> np.random.Generator:
    """A freshly seeded NumPy generator (same stream in every test)."""
    return np.random.default_rng(20261121)


@pytest.fixture
def key() -> jax.Array:
    """A fixed JAX PRNG key."""
    return jax.random.key(20261121)


@pytest.fixture
def x64():
    """Enable float64 inside one test (for ``check_grads``), then restore float32."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def data_dir() -> str:
    """Path of ``../shared/data``; tests that need it skip when it is absent."""
    path = os.path.abspath(DATA_DIR)
    if not os.path.isdir(path):
        pytest.skip("shared/data is not present")
    return path


# `make test` runs `pytest -n 2 --dist loadfile --no-loadscope-reorder`: whole files go to the two
# workers one at a time, in collection order. The files below take the longest (most of it XLA
# compilation; seconds of CPU measured on 2 cores), so they are collected first: started early they
# run alongside the many short files instead of alone at the end (by default xdist orders files by
# their number of tests, which put the notebooks and the README examples last).
SLOW_FILES_FIRST = (
    "tests/test_notebooks.py",             # ~170 s: five notebooks, each in its own kernel
    "tests/parallel/test_batch.py",        # ~100 s: one 8-device subprocess
    "tests/nn/test_three_snet.py",
    "tests/nn/test_dps.py",
    "tests/cli/test_train_denoiser_cli.py",
    "tests/parallel/test_halo.py",
    "tests/smlm/test_net.py",
    "tests/test_readme.py",
    "tests/nn/test_self_supervised.py",
    "tests/smlm/test_generative.py",
    "tests/fusion/test_gmm.py",
    "tests/cli/test_smlm_cli.py",
    "tests/fusion/test_learned.py",
    "tests/parallel/test_multihost.py",
)


def pytest_collection_modifyitems(config, items):
    """Move the tests of :data:`SLOW_FILES_FIRST` to the front, in that order (a stable sort)."""
    root = config.rootpath
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}

    def key(item):
        try:
            rel = item.path.relative_to(root).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(rel, len(rank))

    items.sort(key=key)
