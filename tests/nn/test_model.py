"""Model files and denoise(): round trip, bad files, normalisation laws, tiling/TTA, the shipped model."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.nn import DenoiserModel, UNetConfig, denoise, load_model, pretrained_path, save_model, unet_init

TINY = UNetConfig(depth=2, features=4, decoder_features=4)


@pytest.fixture(scope="module")
def tiny_model():
    return DenoiserModel("3snet", TINY, unet_init(jax.random.key(0), config=TINY), info={"lambda": "inf"})


def test_round_trip(tmp_path, tiny_model):
    d = save_model(tmp_path / "m", tiny_model)
    back = load_model(d)
    assert back.unet == TINY and back.kind == "3snet" and back.info == {"lambda": "inf"}
    for a, b in zip(jax.tree_util.tree_leaves(back.params), jax.tree_util.tree_leaves(tiny_model.params)):
        np.testing.assert_array_equal(a, b)
    assert load_model(d / "model.json").unet == TINY
    with pytest.raises(FileExistsError, match="overwrite"):
        save_model(d, tiny_model)
    save_model(d, tiny_model, overwrite=True)
    assert sorted(p.name for p in d.iterdir()) == ["model.json", "params.msgpack"]  # no temporaries left


def test_bad_model_files(tmp_path, tiny_model):
    with pytest.raises(FileNotFoundError, match="model"):
        load_model(tmp_path / "nothing")
    d = save_model(tmp_path / "m", tiny_model)
    meta = json.loads((d / "model.json").read_text())

    (d / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt model.json"):
        load_model(d)
    (d / "model.json").write_text(json.dumps({**meta, "input_ndim": 3}))
    with pytest.raises(ValueError, match="3-D input"):
        load_model(d)
    (d / "model.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(ValueError, match="format"):
        load_model(d)
    (d / "model.json").write_text(json.dumps({**meta, "unet": {**meta["unet"], "features": 8}}))
    with pytest.raises(ValueError, match="params.msgpack"):
        load_model(d)
    (d / "model.json").write_text(json.dumps(meta))
    (d / "params.msgpack").write_bytes(b"\x93garbage")
    with pytest.raises(ValueError, match="corrupt params"):
        load_model(d)
    (d / "params.msgpack").unlink()
    with pytest.raises(ValueError, match="no params"):
        load_model(d)


def test_denoise_normalisation_laws(tiny_model, rng):
    x = jnp.asarray(rng.uniform(10, 200, size=(3, 40, 36)), jnp.float32)
    out = np.asarray(denoise(x, model=tiny_model))
    # percentile normalisation with offset 0 makes the denoiser exactly scale-equivariant
    np.testing.assert_allclose(denoise(2.5 * x, model=tiny_model), 2.5 * out, rtol=2e-5, atol=1e-4)
    # frames are independent: the batch equals frame-by-frame
    np.testing.assert_allclose(denoise(x[1], model=tiny_model), out[1], rtol=1e-5, atol=1e-4)
    # an offset is subtracted before normalising: denoise(x + c, offset=c) == denoise(x)
    np.testing.assert_allclose(denoise(x + 100.0, model=tiny_model, offset=100.0), out, rtol=1e-4, atol=2e-3)
    # meanstd models: shift-equivariant
    ms = DenoiserModel("n2v", TINY, tiny_model.params, normalization="meanstd")
    a = np.asarray(denoise(x, model=ms))
    np.testing.assert_allclose(denoise(x + 50.0, model=ms), a + 50.0, rtol=1e-5, atol=2e-3)


def test_tiled_and_tta_paths(tiny_model, rng):
    x = jnp.asarray(rng.uniform(10, 200, size=(72, 64)), jnp.float32)
    whole = np.asarray(denoise(x, model=tiny_model))
    tiled = np.asarray(denoise(x, model=tiny_model, tile=40, overlap=32))
    scale = np.ptp(whole)
    assert np.max(np.abs(tiled - whole)) < 0.01 * scale   # blended tiles ~ the whole-frame result
    tta = np.asarray(denoise(x, model=tiny_model, tta=True))
    # TTA = mean over the 8 symmetries, computed here independently with numpy transforms
    ref = np.zeros_like(whole)
    xn = np.asarray(x)
    for flip in (False, True):
        for k in range(4):
            v = np.rot90(xn[:, ::-1] if flip else xn, k)
            y = np.rot90(np.asarray(denoise(jnp.asarray(v.copy()), model=tiny_model)), -k)
            ref += y[:, ::-1] if flip else y
    np.testing.assert_allclose(tta, ref / 8, rtol=1e-4, atol=1e-3 * scale)
    tiled_tta = np.asarray(denoise(x, model=tiny_model, tta=True, tile=40, overlap=32))
    assert np.max(np.abs(tiled_tta - tta)) < 0.01 * scale


def test_denoise_bad_input(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="minimum"):
        denoise(jnp.ones((3, 40)), model=tiny_model)
    with pytest.raises(ValueError, match="image"):
        denoise(jnp.ones((8, 8)).at[2, 2].set(jnp.nan), model=tiny_model)
    with pytest.raises(ValueError, match="image"):
        denoise(jnp.ones(8), model=tiny_model)
    with pytest.raises(FileNotFoundError, match="model"):
        denoise(jnp.ones((8, 8)), model=tmp_path / "missing")
    with pytest.raises(ValueError, match="kind"):
        DenoiserModel("unet", TINY, tiny_model.params)


@pytest.mark.parametrize("structure", [
    pytest.param("network", marks=pytest.mark.xfail(strict=True, reason=(
        "issue 4 target not yet met on networks: the shipped 3Snet (three runs, 5000 + 1500 + 2400 steps) "
        "leaves about +0.35 grey levels of background (0.4-0.5 % of its level) on these held-out fields, "
        "+0.57..+1.44 % of their mean"))),
    "rings",
])
def test_shipped_model_preserves_the_mean_intensity(structure):
    """Issue 4: on held-out simulated images the 3Snet output's mean is within 1 % of the clean mean.

    Held out: fields the shipped model never saw in training (tubular ER-like
    networks and hollow rings, families it was trained on, with other draws),
    seeds the training and ``benchmarks/eval_denoise.py`` do not use, single ON frames at
    the 3Snet-CLID Fig. 1 noise level. The clean image is the noise-free blurred
    signal without background, the expectation of AVG(ON) - AVG(OFF).

    The 1 % criterion is only testable where the clean mean stands well above
    the noise floor of a frame's mean: the additive noise (standard deviation
    sqrt(5 + 5^2) = 5.5 grey levels per pixel) moves the mean of one 128 x 128
    frame by about 0.043 grey levels, 0.15 % of the clean means here (30-40);
    for a sparse field with a clean mean of 5 it would be 0.9 %, which no
    estimator could hold to 1 % frame after frame.
    """
    from jaxsr.deconv.experiment import widefield_psf
    from jaxsr.simulate import hollow_rings, render_polyline, tubular_network
    from jaxsr.simulate.rsfp import simulate_rsfp_series

    model = load_model(pretrained_path())
    assert model.kind == "3snet"
    size, up, pixel = 128, 3, 65.0
    field = (size * pixel,) * 2
    psf = widefield_psf(psf="airy", na=1.49, wavelength_nm=488.0, pixel_size_nm=pixel / up)
    errors = []
    for seed in (101, 202):
        k1, k2 = jax.random.split(jax.random.key(seed))
        if structure == "network":
            lines = tubular_network(k1, field_nm=field, mean_spacing_nm=900.0, prune_fraction=0.15, bend_nm=120.0,
                                    points_per_edge=9)
        else:
            lines = hollow_rings(k1, n=43, field_nm=field, diameter_nm=(200.0, 800.0), min_gap_nm=150.0)
        truth = render_polyline(lines, shape=(size * up,) * 2, pixel_size_nm=pixel / up, photons_per_nm=1.0)
        on, _, clean = simulate_rsfp_series(k2, truth, psf, n_cycles=2, binning=up)
        assert float(clean.mean()) > 20.0  # the criterion is testable here (see the docstring)
        out = np.asarray(denoise(on, model=model))
        errors.extend(out.mean(axis=(-2, -1)) / float(clean.mean()) - 1.0)
    assert np.max(np.abs(errors)) < 0.01, errors


def test_params_with_undeclared_layers_or_nan_are_refused(tmp_path, tiny_model):
    """Flax's from_bytes ignores extra entries: the file's key set must be the network's, and weights finite."""
    import flax.serialization

    d = save_model(tmp_path / "m", tiny_model)
    state = flax.serialization.to_state_dict(jax.device_get(tiny_model.params))
    extra = {**state, "params": {**state["params"], "Conv_99": {"kernel": np.ones((3, 3, 4, 4), np.float32)}}}
    (d / "params.msgpack").write_bytes(flax.serialization.msgpack_serialize(extra))
    with pytest.raises(ValueError, match=r"argument 'model'.*does not match its model.json.*Conv_99/kernel"):
        load_model(d)
    # a deeper network's weights under a shallower model.json: refused, not silently truncated
    deeper = UNetConfig(depth=3, features=4, decoder_features=4)
    (d / "params.msgpack").write_bytes(flax.serialization.to_bytes(unet_init(jax.random.key(0), config=deeper)))
    with pytest.raises(ValueError, match="argument 'model'.*does not match"):
        load_model(d)
    nan = jax.tree_util.tree_map(lambda a: np.array(a), jax.device_get(tiny_model.params))
    jax.tree_util.tree_leaves(nan)[0][...] = np.nan
    (d / "params.msgpack").write_bytes(flax.serialization.to_bytes(nan))
    with pytest.raises(ValueError, match="argument 'model'.*NaN or infinite"):
        load_model(d)
    save_model(d, tiny_model, overwrite=True)
    assert load_model(d).unet == TINY  # the honest file still loads


def test_denoise_offset_is_validated(tiny_model, rng):
    x = jnp.asarray(rng.uniform(10, 200, size=(3, 40, 36)), jnp.float32)
    with pytest.raises(ValueError, match="argument 'offset'"):
        denoise(x, model=tiny_model, offset=float("nan"))
    with pytest.raises(ValueError, match=r"argument 'offset'.*\(3,\).*\(2,\)"):
        denoise(x, model=tiny_model, offset=jnp.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="argument 'offset'"):
        denoise(x, model=tiny_model, offset="dark")
    # one offset per frame: the same as each frame with its own scalar offset
    per_frame = np.asarray(denoise(x, model=tiny_model, offset=jnp.array([0.0, 5.0, 9.0])))
    for i, c in enumerate((0.0, 5.0, 9.0)):
        np.testing.assert_allclose(per_frame[i], denoise(x[i], model=tiny_model, offset=c), rtol=1e-5, atol=1e-4)


def test_loading_another_kind_of_model_says_so():
    from jaxsr.smlm.net import pretrained_locnet_path

    with pytest.raises(ValueError, match=r"argument 'model'.*not a denoiser \(kind 'locnet'\)"):
        load_model(pretrained_locnet_path())


def test_shipped_minimum_size_is_not_misdocumented():
    """The docstring must not hard-code a minimum the shipped model does not have (it is 2**depth = 16)."""
    import re

    shipped = load_model(pretrained_path())
    assert shipped.min_size == 2 ** shipped.unet.depth == 16
    stated = re.findall(r"(\d+) px for the shipped", " ".join(denoise.__doc__.split()))
    assert all(int(n) == shipped.min_size for n in stated) and "model.min_size" in denoise.__doc__
    with pytest.raises(ValueError, match=r"minimum of 16 x 16"):
        denoise(jnp.ones((15, 40)))
    assert denoise(jnp.full((16, 16), 50.0)).shape == (16, 16)
