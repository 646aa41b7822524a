"""Many items over devices (:mod:`jaxsr.parallel.batch`) and its users: sharded == unsharded.

One subprocess with 8 fake CPU devices (module-scoped fixture) runs every sharded
computation next to its one-device reference and returns the differences; the
test functions assert on them. The in-process tests (one CPU device) check that
``mesh=None`` and a one-device mesh give the same bits, and the bad input.

Tolerances: each item goes through the same computation on a device as in the
one-device batch, but XLA vectorises it over a different number of items (1-2
per device instead of all), which may change the order of floating-point
operations; the checks allow float32 round-off, scaled by how many operations
amplify it (a few for ``sharded_vmap``, iterations of RL, Fisher scoring and Adam
for the users). Measured differences are 0 or below 1e-6 relative.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.parallel.batch import batch_mesh, sharded_vmap

# make test distributes whole files (--dist loadfile): every test of this module runs on one worker,
# so the 8-device subprocess of the module-scoped fixture runs once

CHECKS = r"""
import json, re
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_num_cpu_devices", 8)   # 8 devices whatever XLA_FLAGS holds
from jax.sharding import AxisType
from jaxsr.parallel.batch import batch_mesh, sharded_vmap

out = {"n_devices": len(jax.devices())}
mesh = batch_mesh()
auto = jax.make_mesh((8,), ("batch",), (AxisType.Auto,))


def mad(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0.0))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def error(call):
    try:
        call()
    except ValueError as e:
        return str(e)
    return "no error"


# --- sharded_vmap itself: an FFT filter per item, pytrees, unmapped arguments ---------------------------
def spectral(x, otf):
    return jnp.fft.irfft2(jnp.fft.rfft2(x) * otf, s=x.shape)

otf = jnp.exp(-0.1 * jnp.arange(9.0))[None, :] * jnp.ones((16, 1)) + 0j
x13 = jax.random.normal(jax.random.key(3), (13, 16, 16))
ref13 = jax.vmap(spectral, in_axes=(0, None))(x13, otf)
compiled = {}
for n in (1, 5, 8, 13):   # the first n items of the same batch: the reference is ref13[:n]
    compiled[n] = sharded_vmap(spectral, in_axes=(0, None), mesh=mesh).lower(x13[:n], otf).compile()
    out[f"vmap_{n}"] = mad(compiled[n](x13[:n], otf), ref13[:n])
out["vmap_auto_mesh"] = mad(sharded_vmap(spectral, in_axes=(0, None), mesh=auto)(x13, otf), ref13)
out["vmap_batch_size"] = mad(sharded_vmap(spectral, in_axes=(0, None), mesh=mesh, batch_size=1)(x13, otf), ref13)
out["vmap_under_jit"] = mad(jax.jit(lambda x: 2.0 * sharded_vmap(spectral, in_axes=(0, None), mesh=mesh)(x, otf))(x13),
                            2.0 * ref13)


def tree_fn(d, scale):
    return {"a": d["x"] * scale + jnp.sum(d["y"]), "b": (jnp.sum(d["x"] ** 2), d["y"][::-1])}

d = {"x": jax.random.normal(jax.random.key(1), (5, 3)), "y": jax.random.normal(jax.random.key(2), (4, 5))}
axes, oaxes = ({"x": 0, "y": 1}, None), {"a": 1, "b": 0}
ref = jax.vmap(tree_fn, in_axes=axes, out_axes=oaxes)(d, 2.0)
got = sharded_vmap(tree_fn, in_axes=axes, out_axes=oaxes, mesh=mesh)(d, 2.0)
out["pytree"] = mad(got, ref)
out["pytree_shapes"] = (jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(ref)
                        and [a.shape for a in jax.tree_util.tree_leaves(got)]
                        == [a.shape for a in jax.tree_util.tree_leaves(ref)])
# padding repeats the last item: 1 / x never sees a zero
out["pad_finite"] = bool(jnp.all(jnp.isfinite(sharded_vmap(lambda v: 1.0 / v, mesh=mesh)(jnp.arange(1.0, 6.0)))))

# compiled HLO: an even split has no collective at all; a padded one computes the FFTs on the per-device
# slice (2 items of 16) and gathers only its output
collectives = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")
hlo8, hlo13 = compiled[8].as_text(), compiled[13].as_text()
out["hlo8_collectives"] = sorted(c for c in collectives if f" {c}(" in hlo8)
out["hlo13_collectives"] = {c: len(re.findall(rf" {c}\(", hlo13)) for c in collectives}
out["hlo13_fft_shapes"] = sorted(set(re.findall(r"= (\w+\[[\d,]+\])\S* fft\(", hlo13)))
out["vmap_errors"] = {
    "mesh": error(lambda: sharded_vmap(spectral, mesh=jax.make_mesh((8,), ("x",)))),
    "sizes": error(lambda: sharded_vmap(spectral, mesh=mesh)(jnp.ones((3, 4, 4)), jnp.ones((4, 4, 3)))),
}

# --- CLID over 5 frames ----------------------------------------------------------------------------------
from jaxsr.deconv import clid, clid_psf
psf = clid_psf("airy", na=1.4, wavelength_nm=520.0, pixel_size_nm=130.0, upsample=2, shape=(9, 9))
frames = jax.random.uniform(jax.random.key(5), (5, 12, 12)) * 20.0 + 1.0
ref = clid(frames, psf, upsample=2, num_iter=5)
got = clid(frames, psf, upsample=2, num_iter=5, mesh=mesh)
out["clid_rel"] = mad(got, ref) / float(jnp.max(ref))
out["clid_shape"] = list(got.shape)

# --- MLE fits of 37 ROIs -----------------------------------------------------------------------------------
from jaxsr.smlm.fit import fit_spots, gaussian_spot
k1, k2 = jax.random.split(jax.random.key(6))
n = 37
theta = jnp.stack([4.5 + jax.random.uniform(k1, (n,)), 4.5 + jax.random.uniform(k2, (n,)),
                   jnp.full((n,), 800.0), jnp.full((n,), 5.0)], 1)
rois = jax.random.poisson(jax.random.key(7), gaussian_spot(theta, shape=(9, 9), sigma_px=1.3)).astype(jnp.float32)
ref = fit_spots(rois, sigma_px=1.3, iterations=6)
got = fit_spots(rois, sigma_px=1.3, iterations=6, mesh=mesh)
out["fit_pos_px"] = mad(got.params[:, :2], ref.params[:, :2])
out["fit_rel"] = float(jnp.max(jnp.abs(got.params - ref.params) / jnp.abs(ref.params)))
out["fit_crlb_rel"] = float(jnp.max(jnp.abs(got.crlb - ref.crlb) / ref.crlb))
out["fit_converged_same"] = bool(jnp.all(got.converged == ref.converged))
out["fit_shapes"] = [list(a.shape) for a in got] == [list(a.shape) for a in ref]

# --- registration of 5 particles of an asymmetric structure (no symmetric ties between starts) ---------------
from jaxsr import fusion as F
sites = np.random.default_rng(1).normal(size=(10, 2)) * np.array([25.0, 12.0])
sites -= sites.mean(0)
sim = F.simulate_particles(jax.random.key(8), sites, n_particles=5, labelling=0.9, locs_per_site=3.0,
                           precision_nm=3.0)
centred, _ = F.centre_particles(sim.particles)
tmpl = F.GMM(sites.astype(np.float32), np.broadcast_to(4 * np.eye(2, dtype=np.float32), (10, 2, 2)).copy(),
             np.full(10, 0.1, np.float32))
kw = dict(grid=F.rotation_grid(24, dim=2), n_starts=2, blur_nm=(8.0, 0.0), steps=8)
ref = F.register_particles(centred, tmpl, **kw)
got = F.register_particles(centred, tmpl, mesh=mesh, **kw)
out["reg_rot"] = mad(got.rotations, ref.rotations)
out["reg_t_nm"] = mad(got.translations, ref.translations)
out["reg_corr"] = mad(got.correlation, ref.correlation)
# with a translation search and given start translations (the per-particle and the shared extra arguments)
kws = dict(kw, blur_nm=(3.0, 0.0), shifts=F.shift_grid(6.0, 3.0, dim=2), starts=np.asarray(ref.rotations)[:, None],
           start_translations=np.asarray(ref.translations)[:, None])
ref_s = F.register_particles(centred, tmpl, **kws)
got_s = F.register_particles(centred, tmpl, mesh=mesh, **kws)
out["reg_shift_rot"] = mad(got_s.rotations, ref_s.rotations)
out["reg_shift_t_nm"] = mad(got_s.translations, ref_s.translations)

# --- data-parallel training: a linear model, a loss with key-dependent noise of the batch's shape ------------
from jaxsr.nn.train import TrainConfig, _jit_step, _optimizer_settings, fit, make_optimizer
from jaxsr.parallel.batch import auto_axes

def loss(p, b, k):
    x, y = b
    noise = 0.1 * jax.random.normal(k, y.shape)
    return jnp.mean((x @ p["w"] + p["b"] + noise - y) ** 2)

def sample(k):
    x = jax.random.normal(k, (16, 3))
    return x, x @ jnp.array([1.0, -2.0, 0.5]) + 0.3

p0 = {"w": jnp.zeros(3), "b": jnp.zeros(())}
cfg = TrainConfig(steps=5, learning_rate=0.05, eval_every=5, checkpoint_every=5)
r1 = fit(loss, p0, sample, config=cfg)
r8 = fit(loss, p0, sample, config=cfg, mesh=mesh)
out["train_params"] = mad(r8.params, r1.params)
out["train_loss"] = abs(r8.history[-1]["loss"] - r1.history[-1]["loss"])
out["train_moved"] = mad(r1.params, p0)
# the data=/hyper= convention (arrays and a loss weight as arguments of the cached compiled step)
pool = jax.random.normal(jax.random.key(9), (40, 3))

def loss_h(p, b, k, h):
    return h * loss(p, b, k)

def sample_d(k, data):
    x = data[jax.random.randint(k, (16,), 0, data.shape[0])]
    return x, x @ jnp.array([1.0, -2.0, 0.5]) + 0.3

d1 = fit(loss_h, p0, sample_d, config=cfg, data=pool, hyper=0.5)
d8 = fit(loss_h, p0, sample_d, config=cfg, data=pool, hyper=0.5, mesh=mesh)
out["train_data_params"] = mad(d8.params, d1.params)
step = _jit_step(loss, sample, _optimizer_settings(cfg), (), auto_axes(mesh))
hlo = step.lower(p0, make_optimizer(cfg).init(p0), jnp.int32(0), jax.random.key(0), None, None).compile().as_text()
out["train_all_reduce"] = " all-reduce(" in hlo
out["train_local_batch"] = "f32[2,3]" in hlo          # each device holds 2 of the 16 items
out["train_error"] = error(lambda: fit(loss, p0, lambda k: (jax.random.normal(k, (12, 3)), jnp.zeros(12)),
                                       config=cfg, mesh=mesh))
print(json.dumps(out))
"""


@pytest.fixture(scope="module", autouse=True)
def _device_run(on_devices):
    """Start the 8-device subprocess when the module starts; the in-process tests run meanwhile."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(on_devices, CHECKS)
    yield future
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def sharded(_device_run):
    return _device_run.result()


# --- one device, in process ---------------------------------------------------------------------------------
def test_one_device_sharded_vmap_is_vmap():
    mesh = batch_mesh(n_devices=1)
    x = jnp.arange(12.0).reshape(4, 3)
    f = lambda v, w: jnp.fft.irfft(jnp.fft.rfft(v) * w, n=3)  # noqa: E731
    w = jnp.array([1.0, 0.5])
    np.testing.assert_array_equal(sharded_vmap(f, in_axes=(0, None), mesh=mesh)(x, w),
                                  jax.vmap(f, in_axes=(0, None))(x, w))
    np.testing.assert_array_equal(sharded_vmap(f, in_axes=(1, None), out_axes=1, mesh=mesh)(x.T, w),
                                  jax.vmap(f, in_axes=(1, None), out_axes=1)(x.T, w))
    empty = sharded_vmap(f, in_axes=(0, None), mesh=mesh)(jnp.zeros((0, 3)), w)
    assert empty.shape == (0, 3)
    assert sharded_vmap(f, in_axes=(0, None))(x, w).shape == (4, 3)   # default mesh: every device


def test_one_device_clid_mesh_is_identical():
    from jaxsr.deconv import clid

    psf = jnp.ones((3, 3)) / 9.0
    frames = jax.random.uniform(jax.random.key(0), (2, 3, 8, 8)) * 10.0
    ref = clid(frames, psf, upsample=2, num_iter=3)
    got = clid(frames, psf, upsample=2, num_iter=3, mesh=batch_mesh(n_devices=1))
    assert got.shape == (2, 3, 16, 16)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * float(ref.max()))


def test_one_device_training_mesh_is_identical():
    from jaxsr.nn.train import TrainConfig, fit

    loss = lambda p, b, k: jnp.mean((p["w"] * b[0] - b[1]) ** 2)  # noqa: E731
    batch = lambda k: (x := jax.random.normal(k, (8,)), 3.0 * x)  # noqa: E731
    cfg = TrainConfig(steps=4, learning_rate=0.1)
    ref = fit(loss, {"w": jnp.zeros(())}, batch, config=cfg)
    got = fit(loss, {"w": jnp.zeros(())}, batch, config=cfg, mesh=batch_mesh(n_devices=1))
    np.testing.assert_allclose(got.params["w"], ref.params["w"], rtol=1e-6)
    assert [h["loss"] for h in got.history] == pytest.approx([h["loss"] for h in ref.history], rel=1e-6)


def test_bad_mesh_is_named():
    from jaxsr.deconv import clid
    from jaxsr.fusion import GMM, make_particles, register_particles
    from jaxsr.nn.train import TrainConfig, fit
    from jaxsr.smlm.fit import fit_spots

    wrong = jax.make_mesh((1,), ("x",))
    calls = [
        lambda m: sharded_vmap(jnp.sum, mesh=m),
        lambda m: clid(jnp.ones((8, 8)), jnp.ones((3, 3)), mesh=m),
        lambda m: fit_spots(jnp.ones((7, 7)), sigma_px=1.3, mesh=m),
        lambda m: register_particles(make_particles([np.zeros((3, 2))], 2.0),
                                     GMM(np.zeros((1, 2)), np.eye(2)[None], np.ones(1)), mesh=m),
        lambda m: fit(lambda p, b, k: jnp.sum(p), jnp.zeros(()), lambda k: jnp.ones(2),
                      config=TrainConfig(steps=1), mesh=m),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="'mesh'.*batch"):
            call(wrong)
        with pytest.raises(TypeError, match="'mesh'"):
            call("cpu")
    with pytest.raises(ValueError, match="n_devices"):
        batch_mesh(n_devices=len(jax.devices()) + 1)


def test_mismatched_leading_sizes_are_named():
    f = sharded_vmap(lambda image, weights: image * weights, mesh=batch_mesh(n_devices=1))
    with pytest.raises(ValueError, match="'weights'.*leading"):
        f(jnp.ones((3, 4)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="'image'.*scalar"):
        f(jnp.ones(()), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="in_axes"):
        sharded_vmap(jnp.sum, in_axes=None, mesh=batch_mesh(n_devices=1))(jnp.ones(3))


# --- 8 fake devices -----------------------------------------------------------------------------------------
def test_subprocess_has_eight_devices(sharded):
    assert sharded["n_devices"] == 8


@pytest.mark.parametrize("n", [1, 5, 8, 13])
def test_sharded_vmap_equals_vmap_for_any_batch_size(sharded, n):
    # the same per-item FFT filter; values O(1): round-off of a 16 x 16 FFT pair
    assert sharded[f"vmap_{n}"] <= 1e-5


def test_sharded_vmap_variants(sharded):
    assert sharded["vmap_auto_mesh"] <= 1e-5       # a mesh with an automatic axis
    assert sharded["vmap_batch_size"] <= 1e-5      # lax.map over each device's items
    assert sharded["vmap_under_jit"] <= 1e-5
    assert sharded["pytree"] <= 1e-5 and sharded["pytree_shapes"]   # dict/tuple in and out, in_axes None, out_axes
    assert sharded["pad_finite"]


def test_fft_stays_local_in_the_compiled_hlo(sharded):
    assert sharded["hlo8_collectives"] == []                      # an even split: no communication at all
    c13 = sharded["hlo13_collectives"]
    assert c13["all-gather"] == 1 and sum(c13.values()) == 1      # padded: only the output is gathered
    assert sharded["hlo13_fft_shapes"] == ["c64[2,16,9]", "f32[2,16,16]"]   # FFTs on 2 of 16 items per device


def test_sharded_vmap_bad_input(sharded):
    assert "'mesh'" in sharded["vmap_errors"]["mesh"] and "batch" in sharded["vmap_errors"]["mesh"]
    assert "'otf'" in sharded["vmap_errors"]["sizes"] and "leading" in sharded["vmap_errors"]["sizes"]


def test_clid_over_frames(sharded):
    # 5 RL iterations per frame; relative to the brightest fine pixel
    assert sharded["clid_rel"] <= 1e-5
    assert sharded["clid_shape"] == [5, 24, 24]


def test_fit_spots_over_rois(sharded):
    # 6 Fisher-scoring iterations per ROI: same fits to round-off, same convergence flags
    assert sharded["fit_pos_px"] <= 1e-4
    assert sharded["fit_rel"] <= 1e-4 and sharded["fit_crlb_rel"] <= 1e-4
    assert sharded["fit_converged_same"] and sharded["fit_shapes"]


def test_register_particles_over_particles(sharded):
    # 16 Adam steps from 3 starts per particle; the winning start is the same
    assert sharded["reg_rot"] <= 1e-4
    assert sharded["reg_t_nm"] <= 1e-3
    assert sharded["reg_corr"] <= 1e-5
    assert sharded["reg_shift_rot"] <= 1e-4
    assert sharded["reg_shift_t_nm"] <= 1e-3


def test_data_parallel_training(sharded):
    assert sharded["train_moved"] > 0.05                    # the parameters did change
    assert sharded["train_params"] <= 1e-6                  # 5 Adam steps, gradients reduced across devices
    assert sharded["train_data_params"] <= 1e-6             # data= and hyper= (the cached step)
    assert sharded["train_loss"] <= 1e-5
    assert sharded["train_all_reduce"] and sharded["train_local_batch"]
    assert "batch_size" in sharded["train_error"] and "multiple of 8" in sharded["train_error"]
