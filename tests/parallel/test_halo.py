"""richardson_lucy_sharded: slabs with a ppermute halo equal single-device Richardson-Lucy.

One module-scoped subprocess with 8 fake CPU devices runs every multi-device check
(started in a thread when the module starts, so it runs beside the in-process tests)
and returns numbers (relative differences to :func:`jaxsr.deconv.richardson_lucy`,
gradients, the collectives in the compiled HLO, error messages); the test functions
below assert on them. In-process tests use this process's single CPU device (a mesh
of one device: the same code path, halos wrapping onto itself or zero).

Tolerances: float32 results within 2e-5 of single-device RL (measured ~1e-6: the
slabs sum in a different order and the local FFTs have other lengths); float64
results and gradients within 1e-10 (measured ~1e-15), which shows the decomposition
is exact, not approximate.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.deconv import richardson_lucy
from jaxsr.optics import gaussian_psf_2d
from jaxsr.parallel.halo import _geometry, default_slab_mesh, richardson_lucy_sharded

# make test distributes whole files (--dist loadfile): every test of this module runs on one worker,
# so the 8-device subprocess of the module-scoped fixture runs once

F32_TOL = 2e-5
F64_TOL = 1e-10

DEVICE_CODE = r"""
import jax
# The device count through the config, not only XLA_FLAGS: a malformed token earlier in an
# inherited XLA_FLAGS makes XLA ignore the flags after it.
jax.config.update("jax_num_cpu_devices", 8)
import json, re, time
import numpy as np
import jax.numpy as jnp
from jaxsr.deconv import richardson_lucy
from jaxsr.optics import gaussian_psf_2d, gaussian_psf_3d
from jaxsr.parallel.halo import richardson_lucy_sharded

T0 = time.perf_counter()
rng = np.random.default_rng(20261121)
out = {"n_devices": jax.device_count()}


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def scene(shape):
    return rng.poisson(40.0 * rng.random(shape) + 5.0).astype(np.float32)


def collectives(hlo):
    # collective ops of the whole compiled program, and those inside while-loop bodies
    ops = r"(all-gather|collective-permute|all-reduce|all-to-all|reduce-scatter)(?:-start)?[(]"
    comps, name, lines = {}, None, []
    for line in hlo.splitlines():
        m = re.match(r"^(?:ENTRY )?%(\S+) ", line)
        if m and line.rstrip().endswith("{"):
            name, lines = m.group(1), []
        elif line.startswith("}") and name:
            comps[name] = "\n".join(lines)
            name = None
        elif name:
            lines.append(line)
    bodies = set(re.findall(r"body=%([\w.\-]+)", hlo))
    loop = [op for b in bodies for op in re.findall(ops, comps.get(b, ""))]
    return {"all": sorted(re.findall(ops, hlo)), "loop": sorted(loop), "n_loops": len(bodies)}


def compiled_run(fn, *args):
    c = jax.jit(fn).lower(*args).compile()
    return c(*args), collectives(c.as_text())


psf2 = np.asarray(gaussian_psf_2d((9, 9), sigma_nm=150.0, pixel_size_nm=100.0))

# 3D pad, z split: 16 planes over 8 devices (the result stays sharded)
vol = scene((16, 20, 18))
psf3 = np.asarray(gaussian_psf_3d((5, 7, 7), sigma_nm=(250.0, 130.0, 130.0), pixel_size_nm=100.0,
                                  z_step_nm=200.0))
est, coll = compiled_run(lambda v, p: richardson_lucy_sharded(v, p, num_iter=8), vol, psf3)
ref = richardson_lucy(vol, psf3, num_iter=8)
out["pad3d"] = {"rel": rel(est, ref), "coll": coll, "spec": str(est.sharding.spec), "shape": list(est.shape)}
# the same under a context mesh with Explicit axes (jax.set_mesh)
mesh = jax.make_mesh((8,), ("slab",))
with jax.set_mesh(mesh):
    est = richardson_lucy_sharded(vol, psf3, num_iter=8, mesh=mesh)
out["set_mesh"] = {"rel": rel(est, ref), "spec": str(est.sharding.spec)}

# 2D periodic split along x: 61 columns (uneven slabs of 7 and 8), a PSF of even size (8) along
# the split axis, a background array
img = scene((48, 61))
psf_e = np.asarray(gaussian_psf_2d((7, 8), sigma_nm=140.0, pixel_size_nm=100.0))
bg = (2.0 + rng.random((48, 61))).astype(np.float32)
est, coll = compiled_run(lambda im, p, b: richardson_lucy_sharded(
    im, p, num_iter=10, boundary="periodic", background=b, split_axis=-1), img, psf_e, bg)
ref = richardson_lucy(img, psf_e, num_iter=10, boundary="periodic", background=bg)
out["periodic_uneven"] = {"rel": rel(est, ref), "coll": coll, "shape": list(est.shape)}

# 2D pad, 61 rows (not a multiple of 8), scalar background
img = scene((61, 48))
est = richardson_lucy_sharded(img, psf2, num_iter=10, background=3.0)
out["pad_uneven"] = {"rel": rel(est, richardson_lucy(img, psf2, num_iter=10, background=3.0)),
                     "shape": list(est.shape)}

with jax.enable_x64(True):
    # float64: the same uneven pad case with Biggs-Andrews (psum of the two inner products)
    img64, psf64 = img.astype(np.float64), psf2.astype(np.float64)
    est = richardson_lucy_sharded(img64, psf64, num_iter=10, background=3.0, accelerate=True)
    ref = richardson_lucy(img64, psf64, num_iter=10, background=3.0, accelerate=True)
    out["accelerated64"] = {"rel": rel(est, ref), "dtype": str(est.dtype)}

    # gradient with respect to the width of a PSF built inside the loss: float64 (sharded and
    # single device) and float32 (sharded, against the float64 single-device value)
    small = scene((40, 32))

    def grad(fn, dtype):
        img = jnp.asarray(small, dtype)

        def loss(sigma):
            psf = gaussian_psf_2d((9, 9), sigma_nm=sigma, pixel_size_nm=100.0)
            return jnp.mean(fn(img, psf, num_iter=6) ** 2)

        g = jax.jit(jax.grad(loss))(jnp.asarray(150.0, dtype))
        return float(g), str(g.dtype)

    g64, dt64 = grad(richardson_lucy_sharded, jnp.float64)
    g0, _ = grad(richardson_lucy, jnp.float64)
out["grad64"] = {"sharded": g64, "single": g0, "dtype": dt64}
g32, dt32 = grad(richardson_lucy_sharded, jnp.float32)
out["grad32"] = {"sharded": g32, "single64": g0, "dtype": dt32}

# slabs thinner than the halo: 20 rows over 8 devices, 9-row PSF (halo 4)
try:
    richardson_lucy_sharded(scene((20, 16)), psf2, num_iter=2, boundary="periodic")
    out["thin_error"] = None
except ValueError as err:
    out["thin_error"] = str(err)
out["wall_s"] = time.perf_counter() - T0
print(json.dumps(out))
"""


@pytest.fixture(scope="module", autouse=True)
def _device_run(on_devices):
    """Start the 8-device subprocess when the module starts; the in-process tests run meanwhile."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(on_devices, DEVICE_CODE)
    yield future
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def sharded(_device_run):
    return _device_run.result()


# --------------------------------------------------------------------------- #
# This process: one device (same code path)
# --------------------------------------------------------------------------- #
def _scene(rng, shape):
    return rng.poisson(40.0 * rng.random(shape) + 5.0).astype(np.float32)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("boundary,split_axis", [("pad", 0), ("periodic", 1)])
def test_one_device_equals_richardson_lucy(rng, boundary, split_axis):
    # periodic: also under jax.jit and split along x (the split axis is a layout choice)
    img = _scene(rng, (30, 22))
    psf = np.asarray(gaussian_psf_2d((7, 6), sigma_nm=130.0, pixel_size_nm=100.0))
    mesh = default_slab_mesh(num_devices=1)

    def run(im):
        return richardson_lucy_sharded(im, psf, num_iter=8, boundary=boundary, mesh=mesh, split_axis=split_axis)

    est = run(img) if boundary == "pad" else jax.jit(run)(img)
    ref = richardson_lucy(img, psf, num_iter=8, boundary=boundary)
    assert est.shape == img.shape and est.dtype == jnp.float32
    assert _rel(est, ref) < F32_TOL


def test_one_device_3d_psf_one_plane_thick_no_halo(rng):
    # a PSF of size 1 along the split axis: halo 0, no exchange at all
    vol = _scene(rng, (4, 12, 10))
    psf = np.ones((1, 3, 3), np.float32)
    est = richardson_lucy_sharded(vol, psf, num_iter=5, boundary="periodic")
    assert _rel(est, richardson_lucy(vol, psf, num_iter=5, boundary="periodic")) < F32_TOL


def test_geometry_uneven_split_and_thin_slab_error():
    geo = _geometry((61, 48), (8, 7), "periodic", False, 3, 8, "slab", True, 0)
    assert geo.valid == (8, 8, 8, 8, 8, 7, 7, 7) and geo.start[-1] == 54 and geo.halo == 4
    geo = _geometry((61, 48), (9, 9), "pad", False, 3, 8, "slab", True, 0)
    assert geo.slab * 8 >= 61 + 8 and geo.block >= geo.slab + 2 * geo.halo
    with pytest.raises(ValueError, match="argument 'mesh'.*at least 15 rows.*at most 4 devices"):
        _geometry((61, 48), (31, 7), "periodic", False, 3, 8, "slab", True, 0)


@pytest.mark.parametrize("args,kwargs,error,word", [
    ((np.ones((2, 8, 8)), np.ones((3, 3))), {}, ValueError, "argument 'image'"),
    ((np.ones((8, 8)), np.ones((3, 3))), {"boundary": "reflect"}, ValueError, "argument 'boundary'"),
    ((np.ones((8, 8)), np.ones((3, 3))), {"num_iter": 0}, ValueError, "argument 'num_iter'"),
    ((np.ones((8, 8)), np.ones((3, 3))), {"split_axis": 2}, ValueError, "argument 'split_axis'"),
    ((np.ones((8, 8)), np.ones((3, 3))), {"background": -1.0}, ValueError, "argument 'background'"),
    ((np.ones((8, 8)), np.ones((3, 3))), {"background": np.ones(3)}, ValueError, "argument 'background'"),
    ((np.full((8, 8), np.nan), np.ones((3, 3))), {}, ValueError, "argument 'image'"),
    ((np.ones((8, 8)), -np.ones((3, 3))), {}, ValueError, "argument 'psf'"),
    ((np.ones((8, 8)), np.ones((3, 3))), {"mesh": "all"}, TypeError, "argument 'mesh'"),
    ((np.ones((8, 8)), np.ones((3, 3))), {"axis_name": "x"}, ValueError, "argument 'axis_name'"),
    ((np.ones((8, 8)), np.ones((3, 3))), {"accelerate": 1}, TypeError, "argument 'accelerate'"),
])
def test_bad_input_is_a_one_line_error(args, kwargs, error, word):
    with pytest.raises(error) as info:
        richardson_lucy_sharded(*args, **kwargs)
    assert word in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- #
# 8 fake CPU devices (one subprocess, started with the module, run beside the tests above)
# --------------------------------------------------------------------------- #
def test_runs_on_eight_devices(sharded):
    assert sharded["n_devices"] == 8


def test_3d_pad_equals_single_device(sharded):
    res = sharded["pad3d"]
    assert res["shape"] == [16, 20, 18]
    assert res["rel"] < F32_TOL, res


def test_3d_result_stays_sharded_without_gather(sharded):
    res = sharded["pad3d"]
    assert res["spec"] == "P('slab',)"
    ops = res["coll"]["all"]
    assert "all-gather" not in ops and "all-to-all" not in ops
    assert "collective-permute" in ops


def test_under_explicit_context_mesh(sharded):
    res = sharded["set_mesh"]
    assert res["rel"] < F32_TOL and res["spec"].startswith("P('slab'"), res


def test_2d_periodic_uneven_split_with_background_array(sharded):
    res = sharded["periodic_uneven"]
    assert res["shape"] == [48, 61]
    assert res["rel"] < F32_TOL, res


def test_loop_body_is_collective_permutes_only(sharded):
    # inside the iteration: two halo exchanges per iteration, each a pair of collective-permutes;
    # the gather of the uneven result happens once, outside the loop
    loop = sharded["periodic_uneven"]["coll"]["loop"]
    assert loop and set(loop) == {"collective-permute"}, loop
    assert len(loop) == 4


def test_2d_pad_rows_not_divisible_by_devices(sharded):
    res = sharded["pad_uneven"]
    assert res["shape"] == [61, 48]
    assert res["rel"] < F32_TOL, res


def test_accelerated_is_exact_in_float64(sharded):
    res = sharded["accelerated64"]
    assert res["dtype"] == "float64"
    assert res["rel"] < F64_TOL, res


def test_gradient_wrt_psf_width_matches_single_device(sharded):
    g = sharded["grad64"]
    assert g["dtype"] == "float64"
    assert np.isfinite(g["sharded"]) and g["single"] != 0
    assert abs(g["sharded"] - g["single"]) <= F64_TOL * abs(g["single"]), g


def test_gradient_float32_close_to_float64(sharded):
    g = sharded["grad32"]
    assert g["dtype"] == "float32"
    assert abs(g["sharded"] - g["single64"]) <= 1e-3 * abs(g["single64"]), g


def test_slabs_thinner_than_halo_name_mesh(sharded):
    msg = sharded["thin_error"]
    assert msg is not None and "argument 'mesh'" in msg
    assert "at least 4 rows" in msg and "at most 5 devices" in msg
    assert "\n" not in msg
