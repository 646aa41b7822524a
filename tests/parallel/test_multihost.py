"""Multi-host for real: two processes on localhost, each with 2 CPU devices, one 4-device mesh.

Each process sets 2 fake CPU devices and the Gloo CPU collectives (the default
of ``jax_cpu_collectives_implementation`` in this jaxlib, set explicitly), calls
``jax.distributed.initialize(coordinator_address="127.0.0.1:<port>",
num_processes=2, process_id=i)`` and then runs the same code as a single-process
user, on ``batch_mesh()`` / the default slab mesh over the 4 global devices:
:func:`~jaxsr.parallel.batch.sharded_vmap` of an FFT filter over 6 frames
(padded to 8) and over 8 frames (not padded), :func:`~jaxsr.deconv.clid` with
``mesh=`` over 4 frames, and :func:`~jaxsr.parallel.halo.richardson_lucy_sharded`
of one 32 x 20 image cut into 4 slabs (halo exchanged between the processes by
``ppermute`` over Gloo). Every process passes the same whole NumPy inputs,
reads every result with ``np.asarray`` (the outputs are replicated on a mesh
spanning processes) and compares it with the single-device result it computes
itself; it prints one JSON line. The test starts both processes, collects both
JSON lines and asserts on them.

Tolerances: float32 round-off, as in the single-process tests (test_batch.py,
test_halo.py): the sharded FFT filter is the same per-item computation (measured
difference 0); CLID (5 RL iterations per frame, vectorised over 1 frame per
device instead of 4) and halo RL (10 iterations on slab FFTs of other lengths)
differ by round-off amplified by the iterations (measured 9e-7 and 2.5e-6
relative to the maximum; bounds 1e-5 and 2e-5 as in test_batch.py and
test_halo.py). The two processes must read the very same numbers (the checksums
agree exactly).

Time: about 8 s for the two processes on 2 idle cores (each imports JAX and
jaxsr, ~2 s, and compiles 8 small programs); up to ~16 s measured with the cores
shared with other test runs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest

# one xdist worker for the module (make test: --dist loadfile); the two processes use 2 cores between them

N_PROCESSES = 2
LOCAL_DEVICES = 2
TIMEOUT_S = 120.0

WORKER = r"""
import json, os, sys, time, traceback
T0 = time.perf_counter()
process_id, port = int(sys.argv[1]), int(sys.argv[2])


def die(*exc):  # on an error, exit at once: jax.distributed's exit barrier would hold this process for its peer
    traceback.print_exception(*exc)
    sys.stderr.flush()
    os._exit(1)


sys.excepthook = die
import jax
# before JAX starts its backend: the devices of this process and the cross-process CPU collectives
jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                           initialization_timeout=60)
T_INIT = time.perf_counter() - T0

# ---- from here on: the code of a single-process user ---------------------------------------------
import numpy as np
import jax.numpy as jnp
from jaxsr.deconv import clid, richardson_lucy
from jaxsr.parallel import batch_mesh, richardson_lucy_sharded, sharded_vmap

mesh = batch_mesh()
out = {
    "process_index": jax.process_index(),
    "process_count": jax.process_count(),
    "global_devices": jax.device_count(),
    "local_devices": jax.local_device_count(),
    "mesh_processes": [int(d.process_index) for d in mesh.devices.flat],
}


def rel(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def describe(name, y):
    out[name + "_replicated"] = bool(y.is_fully_replicated)
    out[name + "_sum"] = float(np.asarray(y, np.float64).sum())  # np.asarray: readable on this process


rng = np.random.default_rng(7)  # the same seed on every process: the same inputs everywhere

# many items: an FFT filter per frame, 6 frames (padded to 8 over 4 devices) and 8 frames (not padded)
def spectral(x, otf):
    return jnp.fft.irfft2(jnp.fft.rfft2(x) * otf, s=x.shape)

frames = rng.standard_normal((8, 16, 16)).astype(np.float32)
otf = (np.exp(-0.1 * np.arange(9.0))[None, :] * np.ones((16, 1))).astype(np.complex64)
ref = jax.vmap(spectral, in_axes=(0, None))(frames, otf)
filt = sharded_vmap(spectral, in_axes=(0, None), mesh=mesh)
for n in (6, 8):
    y = filt(frames[:n], otf)
    out[f"vmap{n}_shape"] = list(y.shape)
    out[f"vmap{n}_err"] = rel(y, ref[:n])
    describe(f"vmap{n}", y)

# a user of sharded_vmap: CLID over 4 frames (one per device) with mesh=
psf = np.outer(np.hanning(7) + 0.01, np.hanning(7) + 0.01).astype(np.float32)
stack = (rng.poisson(20.0, (4, 8, 8)) + 1).astype(np.float32)
y = clid(stack, psf, upsample=2, num_iter=5, accelerate=False, mesh=mesh)
out["clid_shape"] = list(y.shape)
out["clid_err"] = rel(y, clid(stack, psf, upsample=2, num_iter=5, accelerate=False))
describe("clid", y)

# one image across the 4 devices: 4 slabs, halo of 2 rows exchanged every iteration
image = (rng.poisson(30.0, (32, 20)) + 1).astype(np.float32)
y = richardson_lucy_sharded(image, psf[1:6, 1:6], num_iter=10)
out["rl_shape"] = list(y.shape)
out["rl_err"] = rel(y, richardson_lucy(image, psf[1:6, 1:6], num_iter=10))
describe("rl", y)

out["t_init"] = T_INIT
out["t_total"] = time.perf_counter() - T0
print(json.dumps(out), flush=True)
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_processes() -> list[dict]:
    """Start the worker as processes 0 and 1 on one coordinator port; return their JSON lines.

    Both are killed when either fails (its peer would wait at a barrier) or after ``TIMEOUT_S``.
    """
    env = dict(os.environ)
    # the device count comes from jax_num_cpu_devices alone (an inherited 8-device XLA flag would disagree)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    env.pop("JAX_NUM_CPU_DEVICES", None)
    env["JAX_PLATFORMS"] = "cpu"
    port = _free_port()
    logs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in range(N_PROCESSES)]
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(i), str(port)], stdout=out, stderr=err, text=True, env=env)
        for i, (out, err) in enumerate(logs)
    ]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            codes = [p.poll() for p in procs]  # every process polled (any() would stop at the first running one)
            if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
                break
            time.sleep(0.05)
    finally:
        killed = [p.poll() is None for p in procs]
        for proc, kill in zip(procs, killed):
            if kill:
                proc.kill()
                proc.wait()
    texts = []
    for out, err in logs:
        out.seek(0)
        err.seek(0)
        texts.append((out.read(), err.read()))
        out.close()
        err.close()
    problems = [
        f"process {i} {'killed' if kill else f'failed (exit {p.returncode})'}:\n{err[-3000:]}"
        for i, (p, kill, (_, err)) in enumerate(zip(procs, killed, texts)) if kill or p.returncode != 0
    ]
    if problems:
        raise AssertionError(f"multi-process run (timeout {TIMEOUT_S:.0f} s) did not succeed:\n"
                             + "\n---\n".join(problems))
    outs = []
    for i, (stdout, stderr) in enumerate(texts):
        lines = [ln for ln in stdout.splitlines() if ln.strip()]
        if not lines:
            raise AssertionError(f"process {i} printed nothing; stderr:\n{stderr[-3000:]}")
        outs.append(json.loads(lines[-1]))
    return outs


_RUNS: list = []


@pytest.fixture(scope="module")
def runs():
    # kept for the process: under pytest-xdist a worker may run other modules' tests between this
    # module's tests, and pytest then sets the module fixture up again (see tests/parallel/conftest.py)
    if not _RUNS:
        _RUNS.append(_run_processes())
    return _RUNS[0]


def test_each_process_sees_the_global_mesh(runs):
    outs = runs
    assert [o["process_index"] for o in outs] == [0, 1]
    for o in outs:
        assert o["process_count"] == N_PROCESSES
        assert o["global_devices"] == N_PROCESSES * LOCAL_DEVICES
        assert o["local_devices"] == LOCAL_DEVICES
        assert o["mesh_processes"] == [0, 0, 1, 1]  # batch_mesh() spans both processes


@pytest.mark.parametrize("name, shape, tol", [
    ("vmap6", [6, 16, 16], 1e-6),
    ("vmap8", [8, 16, 16], 1e-6),
    ("clid", [4, 16, 16], 1e-5),
    ("rl", [32, 20], 2e-5),
])
def test_same_result_as_one_device_on_every_process(runs, name, shape, tol):
    outs = runs
    for o in outs:
        assert o[f"{name}_shape"] == shape
        assert o[f"{name}_err"] <= tol, (o["process_index"], o[f"{name}_err"])
        assert o[f"{name}_replicated"]  # readable on every process (np.asarray worked)
    # both processes read the same gathered array, items computed on the other process's devices included
    assert outs[0][f"{name}_sum"] == outs[1][f"{name}_sum"]
