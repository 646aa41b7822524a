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


@pytest.mark.xfail(strict=True, reason=(
    "issue 4 target not yet met by the shipped 3Snet (600 steps on 8 simulated fields): per-image mean "
    "errors up to 2.4 % here and -8.5 % on a denser held-out field (the background estimate is biased); "
    "needs a longer training run"))
def test_shipped_model_preserves_the_mean_intensity():
    """Issue 4: on held-out simulated images the 3Snet output's mean is within 1 % of the clean mean."""
    from jaxsr.deconv.experiment import widefield_psf
    from jaxsr.simulate import filaments, render_polyline
    from jaxsr.simulate.rsfp import simulate_rsfp_series

    model = load_model(pretrained_path())
    assert model.kind == "3snet"
    size, up = 96, 3
    psf = widefield_psf(psf="airy", na=1.49, wavelength_nm=488.0, pixel_size_nm=65.0 / up)
    errors = []
    for seed in (101, 202):  # seeds the training script never uses (it uses fold_in(key(0), i))
        k1, k2 = jax.random.split(jax.random.key(seed))
        lines = filaments(k1, n_filaments=4, field_nm=(size * 65.0,) * 2, length_nm=1.5 * size * 65.0)
        truth = render_polyline(lines, shape=(size * up,) * 2, pixel_size_nm=65.0 / up, photons_per_nm=1.0)
        on, _, clean = simulate_rsfp_series(k2, truth, psf, n_cycles=4, binning=up)
        out = denoise(on, model=model)
        errors.append(np.abs(np.asarray(out).mean(axis=(-2, -1)) / float(clean.mean()) - 1.0))
    assert np.max(errors) < 0.01, errors
