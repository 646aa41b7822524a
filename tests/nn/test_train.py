"""Patch sampling, D4 augmentation and the resumable training loop."""

import dataclasses
import json
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.nn.data import augment_d4, random_patches
from jaxsr.nn.train import CHECKPOINT_FILE, TrainConfig, TrainingDiverged, fit, load_train_state


# --- data ------------------------------------------------------------------------------------------------

def test_patches_are_aligned_crops_of_the_same_frame():
    a = jnp.arange(3 * 10 * 12.0).reshape(3, 10, 12)
    img = jnp.arange(10 * 12.0).reshape(10, 12) * 1000.0
    x, y, g = random_patches(jax.random.key(0), a, -a, img, patch_size=4, batch_size=50)
    np.testing.assert_array_equal(y, -x)
    an = np.asarray(a)
    for b in range(50):
        v = float(x[b, 0, 0])
        f, r, c = np.unravel_index(int(v), an.shape)
        np.testing.assert_array_equal(x[b], an[f, r:r + 4, c:c + 4])
        np.testing.assert_array_equal(g[b], np.asarray(img)[r:r + 4, c:c + 4])


def test_patch_positions_cover_the_image_uniformly():
    a = jnp.arange(20 * 20.0).reshape(20, 20)
    (x,) = random_patches(jax.random.key(1), a, patch_size=5, batch_size=4000)
    rows = np.asarray(x[:, 0, 0]) // 20
    counts = np.bincount(rows.astype(int), minlength=16)[:16]
    # 16 equally likely top rows: chi-square with 15 dof, 99.9 % quantile 37.7
    expected = 4000 / 16
    assert np.sum((counts - expected) ** 2 / expected) < 37.7


def test_d4_is_the_eight_symmetries_and_shared_between_arrays():
    p = jnp.tile(jnp.arange(9.0).reshape(1, 3, 3), (400, 1, 1))
    q, r = augment_d4(jax.random.key(2), p, 10 * p)
    np.testing.assert_array_equal(r, 10 * q)
    base = np.arange(9.0).reshape(3, 3)
    group = {tuple(np.rot90(m, k).ravel()) for m in (base, base[:, ::-1]) for k in range(4)}
    seen = {tuple(np.asarray(v).ravel()) for v in q}
    assert seen == group  # all eight, nothing else


def test_data_bad_input():
    with pytest.raises(ValueError, match="patch_size"):
        random_patches(jax.random.key(0), jnp.ones((8, 8)), patch_size=9, batch_size=1)
    with pytest.raises(ValueError, match="arrays"):
        random_patches(jax.random.key(0), jnp.ones((8, 8)), jnp.ones((8, 9)), patch_size=4, batch_size=1)
    with pytest.raises(ValueError, match="frames"):
        random_patches(jax.random.key(0), jnp.ones((2, 8, 8)), jnp.ones((3, 8, 8)), patch_size=4, batch_size=1)
    with pytest.raises(ValueError, match="patches"):
        augment_d4(jax.random.key(0), jnp.ones((2, 3, 4)))


# --- training loop -------------------------------------------------------------------------------------

def _problem():
    """Linear regression y = X w_true: the loss minimum is known in closed form."""
    w_true = jnp.array([1.5, -2.0, 0.5])

    def sample(key):
        x = jax.random.normal(key, (32, 3))
        return x, x @ w_true

    def loss(params, batch, key):
        x, y = batch
        noise = 0.0 * jax.random.normal(key, ())  # the key is threaded through
        return jnp.mean((x @ params["w"] - y) ** 2) + noise

    return w_true, sample, loss


def test_fit_converges_to_the_closed_form_minimum():
    w_true, sample, loss = _problem()
    cfg = TrainConfig(steps=300, learning_rate=0.05, schedule="constant", eval_every=100)
    seen = []
    r = fit(loss, {"w": jnp.zeros(3)}, sample, config=cfg, evaluate=lambda p: {"err": float(jnp.abs(p["w"] - w_true).max())},
            callback=seen.append)
    np.testing.assert_allclose(r.params["w"], w_true, atol=1e-3)
    assert [h["step"] for h in r.history] == [100, 200, 300]
    assert r.history[-1]["err"] < 1e-3 and r.history[0]["loss"] > r.history[-1]["loss"]
    assert len(seen) == 300 and seen[-1]["step"] == 300 and "err" in seen[-1]


def test_resume_from_checkpoint_is_exact(tmp_path):
    _, sample, loss = _problem()
    cfg = TrainConfig(steps=40, learning_rate=0.01, checkpoint_every=10, eval_every=10)
    full = fit(loss, {"w": jnp.zeros(3)}, sample, config=cfg)

    def interrupt_at_25(info):
        if info["step"] == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(loss, {"w": jnp.zeros(3)}, sample, config=cfg, checkpoint_dir=tmp_path, callback=interrupt_at_25)
    stored = load_train_state(tmp_path, params={"w": jnp.zeros(3)}, config=cfg)
    assert stored[2] == 25  # the interrupt wrote the last finished step
    resumed = fit(loss, {"w": jnp.zeros(3)}, sample, config=cfg, checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 25 and resumed.step == 40
    np.testing.assert_array_equal(resumed.params["w"], full.params["w"])
    assert json.loads((tmp_path / "train_config.json").read_text())["train"]["steps"] == 40


def test_resume_refuses_another_run_and_a_corrupt_checkpoint(tmp_path):
    _, sample, loss = _problem()
    fit(loss, {"w": jnp.zeros(3)}, sample, config=TrainConfig(steps=5, checkpoint_every=5), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="another run"):
        fit(loss, {"w": jnp.zeros(3)}, sample, config=TrainConfig(steps=6), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="another network"):
        fit(loss, {"w": jnp.zeros(4)}, sample, config=TrainConfig(steps=5, checkpoint_every=5), checkpoint_dir=tmp_path)
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="checkpoint"):
        fit(loss, {"w": jnp.zeros(3)}, sample, config=TrainConfig(steps=5), checkpoint_dir=tmp_path)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    def sample(key):
        return jax.random.normal(key, (4,))

    def loss(params, batch, key):
        # finite until w passes 3, then NaN (log of a negative number)
        return jnp.log(3.0 - params["w"]) * 0.0 - params["w"] + jnp.sum(batch) * 0.0

    cfg = TrainConfig(steps=100, learning_rate=0.5, schedule="constant", checkpoint_every=2, grad_clip=0.0)
    with pytest.raises(TrainingDiverged, match="step"):
        fit(loss, {"w": jnp.zeros(())}, sample, config=cfg, checkpoint_dir=tmp_path)
    params, _, step, _, _ = load_train_state(tmp_path, params={"w": jnp.zeros(())}, config=cfg)
    assert 0 < step < 100 and math.isfinite(float(params["w"])) and float(params["w"]) < 3.0


def _sample_around(key, w_true):
    """The data= convention: the data (here the true weights) is an argument, the function module-level."""
    x = jax.random.normal(key, (32, 3))
    return x, x @ w_true


def _weighted_loss(params, batch, key, weight):
    x, y = batch
    return weight * jnp.mean((x @ params["w"] - y) ** 2)


def test_data_and_hyper_are_arguments_of_one_compiled_step(caplog):
    cfg = TrainConfig(steps=100, learning_rate=0.05, schedule="constant", eval_every=25)
    runs = [(jnp.array([1.5, -2.0, 0.5]), 1.0, 0), (jnp.array([0.5, 1.0, -1.0]), 3.0, 1),
            (jnp.array([-1.0, 0.0, 2.0]), 0.5, 2)]
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        shared = [fit(_weighted_loss, {"w": jnp.zeros(3)}, _sample_around, config=dataclasses.replace(cfg, seed=seed),
                      data=w, hyper=weight) for w, weight, seed in runs]
    # other data values, loss weights and seeds: the step is compiled for the first run only
    assert sum("Compiling jit(step_fn)" in r.getMessage() for r in caplog.records) == 1
    for (w, weight, seed), r in zip(runs, shared):  # ... and trains as the same values closed over do
        closed = fit(lambda p, b, k, weight=weight: _weighted_loss(p, b, k, weight), {"w": jnp.zeros(3)},
                     lambda k, w=w: _sample_around(k, w), config=dataclasses.replace(cfg, seed=seed))
        np.testing.assert_allclose(r.params["w"], closed.params["w"], rtol=1e-6)
        np.testing.assert_allclose([h["loss"] for h in r.history], [h["loss"] for h in closed.history], rtol=1e-6)
        assert r.history[-1]["loss"] < 0.1 * r.history[0]["loss"]


def test_train_config_validation():
    assert TrainConfig.from_dict(TrainConfig(steps=7).to_dict()) == TrainConfig(steps=7)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig(learning_rate=0.0)
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(TypeError, match="loss_fn"):
        fit(None, {}, lambda k: k, config=TrainConfig())


def _history(result):
    return [(h["step"], h["loss"], h.get("err")) for h in result.history]


@pytest.mark.parametrize("stop_at", [5, 6])  # between two records, and at a step both recorded and checkpointed
def test_resumed_history_equals_the_uninterrupted_one(tmp_path, stop_at):
    """The losses of the steps since the last record are checkpointed: the resumed history is the same."""
    _, sample, loss = _problem()
    cfg = TrainConfig(steps=10, learning_rate=0.05, checkpoint_every=3, eval_every=2)
    evaluate = lambda p: {"err": float(p["w"][0])}  # noqa: E731
    full = fit(loss, {"w": jnp.zeros(3)}, sample, config=cfg, evaluate=evaluate)

    def interrupt(info):
        if info["step"] == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(loss, {"w": jnp.zeros(3)}, sample, config=cfg, checkpoint_dir=tmp_path, evaluate=evaluate,
            callback=interrupt)
    resumed = fit(loss, {"w": jnp.zeros(3)}, sample, config=cfg, checkpoint_dir=tmp_path, evaluate=evaluate)
    assert resumed.resumed_from == stop_at
    assert _history(resumed) == _history(full)
    np.testing.assert_array_equal(resumed.params["w"], full.params["w"])


def test_a_failing_evaluation_loses_no_training(tmp_path):
    """The checkpoint is written before the evaluation of its step; a resume makes that evaluation."""
    _, sample, loss = _problem()
    cfg = TrainConfig(steps=8, learning_rate=0.05, checkpoint_every=4, eval_every=4)
    evaluate = lambda p: {"err": float(p["w"][0])}  # noqa: E731
    full = fit(loss, {"w": jnp.zeros(3)}, sample, config=cfg, evaluate=evaluate)

    def broken(params):
        raise ValueError("argument 'image': too small")

    with pytest.raises(ValueError, match="too small"):
        fit(loss, {"w": jnp.zeros(3)}, sample, config=cfg, checkpoint_dir=tmp_path, evaluate=broken)
    assert load_train_state(tmp_path, params={"w": jnp.zeros(3)}, config=cfg)[2] == 4  # the 4 steps are kept
    resumed = fit(loss, {"w": jnp.zeros(3)}, sample, config=cfg, checkpoint_dir=tmp_path, evaluate=evaluate)
    assert resumed.resumed_from == 4 and _history(resumed) == _history(full)
    np.testing.assert_array_equal(resumed.params["w"], full.params["w"])
    # the final checkpoint holds the final record too
    assert load_train_state(tmp_path, params={"w": jnp.zeros(3)}, config=cfg)[3] == resumed.history


def test_a_checkpoint_of_other_data_is_refused_naming_it(tmp_path):
    """data_fingerprint in meta: a run on other data never resumes another's checkpoint."""
    from jaxsr.nn.train import data_fingerprint

    _, sample, loss = _problem()
    cfg = TrainConfig(steps=3, checkpoint_every=3)
    a, b = np.zeros((2, 4), np.float32), np.ones((2, 4), np.float32)
    assert data_fingerprint(a) != data_fingerprint(b) and data_fingerprint(a) == data_fingerprint(a.copy())
    assert data_fingerprint(a) != data_fingerprint(a.astype(np.float64))
    assert data_fingerprint(a) != data_fingerprint(a.reshape(4, 2))
    fit(loss, {"w": jnp.zeros(3)}, sample, config=cfg, checkpoint_dir=tmp_path, meta={"data": data_fingerprint(a)})
    with pytest.raises(ValueError, match=r"checkpoint_dir.*another run \(different training data\)"):
        fit(loss, {"w": jnp.zeros(3)}, sample, config=cfg, checkpoint_dir=tmp_path,
            meta={"data": data_fingerprint(b)})
