"""Shared test fixtures.

- Float32 everywhere by default; the ``x64`` fixture turns on float64 for the
  duration of one test (gradient checks), then restores float32.
- No global RNG: tests take ``rng`` (a seeded ``numpy.random.Generator``) or
  ``key`` (a ``jax.random`` key) from here.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

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
