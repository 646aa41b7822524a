"""Fixtures for the CLI tests."""

from __future__ import annotations

import jax
import pytest

from jaxsr.nn import DenoiserModel, UNetConfig, save_model, unet_init


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny untrained 3Snet-shaped model on disk (depth 2, 4/8 channels, weights from a fixed key)."""
    config = UNetConfig(depth=2, features=4, decoder_features=8)
    path = tmp_path_factory.mktemp("models") / "tiny"
    save_model(path, DenoiserModel("3snet", config, unet_init(jax.random.key(3), config=config)))
    return path


@pytest.fixture
def one_line_error(capsys):
    """Check that the command's stderr is exactly one line containing ``word``, with no traceback."""

    def check(word: str) -> None:
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert "Traceback" not in err and len(lines) == 1 and word in lines[0], err

    return check
