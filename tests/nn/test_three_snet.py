"""3Snet: the hybrid loss and its limits, the pair data, a tiny end-to-end training, the lambda sweep."""

import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.nn import (
    DenoiserModel,
    TrainConfig,
    UNetConfig,
    lambda_sweep,
    three_snet_data,
    three_snet_loss,
    train_3snet,
)

TINY = UNetConfig(depth=2, features=8, decoder_features=8)


def _mse(a, b):
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def test_loss_limits_and_mixture(rng):
    p, y, g = (jnp.asarray(rng.normal(size=(3, 8, 8)), jnp.float32) for _ in range(3))
    n2n, sup = _mse(p, y), _mse(p, g)
    assert float(three_snet_loss(p, y, g, lam=0.0)) == pytest.approx(n2n, rel=1e-6)        # Noise2Noise only
    assert float(three_snet_loss(p, y, g, lam=math.inf)) == pytest.approx(sup, rel=1e-6)   # supervised only
    for lam in (1.0, 4.0, 16.0):
        assert float(three_snet_loss(p, y, g, lam=lam)) == pytest.approx((n2n + lam * sup) / (1 + lam), rel=1e-6)
    # continuity: large lam approaches the supervised limit
    assert float(three_snet_loss(p, y, g, lam=1e8)) == pytest.approx(sup, rel=1e-5)
    with pytest.raises(ValueError, match="lam"):
        three_snet_loss(p, y, g, lam=-1.0)


def test_loss_minimiser_is_the_weighted_mean_of_targets():
    # d/dp of the loss vanishes at p = (y + lam g) / (1 + lam): the expected output of a trained network.
    y, g = jnp.full((4,), 2.0), jnp.full((4,), 10.0)
    for lam in (0.0, 1.0, 4.0):
        grad = jax.grad(lambda p: three_snet_loss(p, y, g, lam=lam))((y + lam * g) / (1 + lam))
        np.testing.assert_allclose(grad, 0.0, atol=1e-6)


def _series(key, n=8, shape=(48, 40)):
    k1, k2, k3 = jax.random.split(key, 3)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    clean = jnp.asarray(100.0 * np.exp(-((yy - 20.0) ** 2 + (xx - 15.0) ** 2) / 30.0) + 40.0 * (xx % 11 == 0))
    bg = 20.0 + 0.2 * jnp.asarray(yy)
    on = clean + bg + 5.0 * jax.random.normal(k1, (n,) + shape)
    off = bg + 5.0 * jax.random.normal(k2, (n,) + shape)
    return on, off, clean


def test_pairs_are_disjoint_k_averages_and_gt_is_3s():
    on, off, _ = _series(jax.random.key(0))
    d = three_snet_data(jax.random.key(1), on, off, ks=(1, 2, 4, 8), n_combinations=5, test_fraction=0.25)
    # k = 8 is dropped (2k > 8 frames); 3 k values x 5 combinations
    assert d.weights_x.shape == (15, 8)
    wx, wy = np.asarray(d.weights_x), np.asarray(d.weights_y)
    np.testing.assert_allclose(wx.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(wy.sum(1), 1.0, rtol=1e-6)
    assert np.all((wx > 0) & (wy > 0) == False)  # noqa: E712  (disjoint frame sets)
    np.testing.assert_array_equal((wx > 0).sum(1), np.repeat([1, 2, 4], 5))
    gt = np.asarray(on.mean(0) - off.mean(0))
    np.testing.assert_allclose(d.ground_truth[0], gt[:36], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(d.test_ground_truth[0], gt[36:], rtol=1e-5, atol=1e-4)
    # the scale of a pair is the 99.9th percentile of its input over the training frame
    x0 = np.tensordot(wx[3], np.asarray(on)[:, :36], axes=1)
    assert float(d.scale[0, 3]) == pytest.approx(np.percentile(x0, 99.9), rel=1e-5)


def test_data_bad_input():
    on, off, _ = _series(jax.random.key(0))
    with pytest.raises(ValueError, match="off"):
        three_snet_data(jax.random.key(0), on, off[:, :-1])
    with pytest.raises(ValueError, match="on"):
        three_snet_data(jax.random.key(0), on[:1], off[:1])
    with pytest.raises(ValueError, match="on"):
        three_snet_data(jax.random.key(0), on.at[0, 0, 0].set(jnp.nan), off)
    with pytest.raises(ValueError, match="ks"):
        three_snet_data(jax.random.key(0), on[:2], off[:2], ks=(2, 4))
    with pytest.raises(ValueError, match="test_fraction"):
        three_snet_data(jax.random.key(0), on, off, test_fraction=0.9)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    on, off, clean = _series(jax.random.key(3), n=8, shape=(48, 48))
    train = TrainConfig(steps=40, batch_size=4, patch_size=16, learning_rate=3e-3, eval_every=20,
                        checkpoint_every=20)
    model, result = train_3snet(jax.random.key(4), on, off, lam=4.0, config=TINY, train=train,
                                ks=(1, 2), n_combinations=4, test_fraction=0.25,
                                checkpoint_dir=tmp_path_factory.mktemp("ckpt"))
    return model, result, on, clean


def test_tiny_training_reduces_the_loss_and_denoises(tiny_run):
    model, result, on, clean = tiny_run
    assert isinstance(model, DenoiserModel) and model.kind == "3snet" and model.info["lambda"] == 4.0
    h = result.history
    assert [e["step"] for e in h] == [20, 40]
    assert h[-1]["loss"] < h[0]["loss"]
    assert math.isfinite(h[-1]["test_psnr"])


def test_sweep_reports_every_lambda_and_keeps_the_best(caplog):
    on, off, _ = _series(jax.random.key(5), n=4, shape=(40, 32))
    train = TrainConfig(steps=4, batch_size=2, patch_size=16, eval_every=4)
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        best, table = lambda_sweep(jax.random.key(6), on, off, lambdas=(0.0, 1.0, math.inf), config=TINY,
                                   train=train, ks=(1, 2), n_combinations=2, test_fraction=0.3)
    # lam is an argument of the training step: one step for the finite lambdas, one for inf
    assert sum("Compiling jit(step_fn)" in r.getMessage() for r in caplog.records) == 2
    assert [r["lambda"] for r in table] == [0.0, 1.0, "inf"]
    scores = [r["test_psnr"] for r in table]
    assert best.info["lambda"] == table[scores.index(max(scores))]["lambda"]  # the first best one
    with pytest.raises(ValueError, match="test_fraction"):
        lambda_sweep(jax.random.key(6), on, off, test_fraction=0.0, config=TINY, train=train)


def test_a_test_split_smaller_than_the_network_is_refused_before_training(tmp_path):
    """The held-out rows are denoised at every evaluation: fewer than 2**depth is an error up front."""
    on, off, _ = _series(jax.random.key(7), n=4, shape=(48, 40))  # 0.2 x 48 rows: 10 test rows
    deep = UNetConfig(depth=4, features=2, decoder_features=2)  # minimum 16 px
    train = TrainConfig(steps=2, batch_size=2, patch_size=16, eval_every=1)
    with pytest.raises(ValueError, match=r"argument 'test_fraction'.* 10 test rows.*minimum of 16.* 78 rows"):
        train_3snet(jax.random.key(0), on, off, config=deep, train=train, ks=(1,), n_combinations=2,
                    test_fraction=0.2, checkpoint_dir=tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()  # nothing was trained
    with pytest.raises(ValueError, match="argument 'test_fraction'"):
        lambda_sweep(jax.random.key(0), on, off, config=deep, train=train, ks=(1,), n_combinations=2)
    data = three_snet_data(jax.random.key(1), on, off, ks=(1,), n_combinations=2, test_fraction=0.2)
    with pytest.raises(ValueError, match="argument 'test_fraction'"):  # a prebuilt data set too
        train_3snet(jax.random.key(0), None, None, config=deep, train=train, data=data)
    # 16 test rows (1/3 of 48) are enough: the evaluation runs and reports a finite test pSNR
    model, result = train_3snet(jax.random.key(0), on, off, config=deep, train=train, ks=(1,), n_combinations=2,
                                test_fraction=1 / 3)
    assert result.step == 2 and all(math.isfinite(h["test_psnr"]) for h in result.history)


def test_a_checkpoint_of_other_data_is_never_resumed(tmp_path):
    """Same settings, other ON/OFF data, same checkpoint directory: refused (naming the data), not resumed."""
    train = TrainConfig(steps=2, batch_size=2, patch_size=16, checkpoint_every=2, eval_every=2)
    kw = dict(config=TINY, train=train, ks=(1,), n_combinations=2, checkpoint_dir=tmp_path)
    on, off, _ = _series(jax.random.key(8), n=4)
    first, r1 = train_3snet(jax.random.key(0), on, off, **kw)
    again, r2 = train_3snet(jax.random.key(0), on, off, **kw)  # the same run resumes (here: is already done)
    assert r2.resumed_from == 2
    on2, off2, _ = _series(jax.random.key(9), n=4)
    with pytest.raises(ValueError, match=r"checkpoint_dir.*different training data"):
        train_3snet(jax.random.key(0), on2, off2, **kw)
    with pytest.raises(ValueError, match=r"checkpoint_dir.*different training data"):  # a data setting
        train_3snet(jax.random.key(0), on, off, **{**kw, "n_combinations": 3})
