"""Run code on 8 fake CPU devices in a subprocess (JAX fixes its device count when it starts).

``run_on_devices(code)`` runs ``code`` in a fresh Python with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` set before JAX is imported,
and returns the JSON object the code prints on its last line of stdout. One
subprocess per test module (a module-scoped fixture that runs every check and
returns the numbers) keeps the start-up cost (importing JAX, compiling) to one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

N_FAKE_DEVICES = 8


_RESULTS: dict = {}
"""Results of finished subprocesses by ``(code, n_devices)``: under ``pytest-xdist`` a worker may run
other modules' tests between two tests of one module, and pytest then tears the module's fixtures
down and sets them up again; the repeated set-up reuses the result instead of starting the
subprocess (a minute or more of compiling on 8 fake devices) again."""


def run_on_devices(code: str, *, n_devices: int = N_FAKE_DEVICES, timeout: float = 300.0) -> dict:
    """Run ``code`` in a subprocess with ``n_devices`` fake CPU devices; return its last stdout line as JSON.

    The result of a successful run is kept (:data:`_RESULTS`): the same code on the same device count
    runs once per test process.
    """
    if (code, n_devices) in _RESULTS:
        return _RESULTS[code, n_devices]
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n_devices}"])
    env["JAX_NUM_CPU_DEVICES"] = str(n_devices)  # the same through JAX's own option
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        raise AssertionError(f"subprocess printed nothing; stderr:\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1])
    _RESULTS[code, n_devices] = result
    return result


@pytest.fixture(scope="module")
def on_devices():
    """The :func:`run_on_devices` function, as a fixture."""
    return run_on_devices
