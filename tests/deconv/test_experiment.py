"""The Fig. 1 recipe: scoring helper against closed forms, and bad input."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxsr.deconv.experiment import _affine_fit, clid_experiment


def test_affine_fit_is_least_squares(rng):
    ref = rng.random((16, 16))
    # An exact affine image of the reference is mapped back onto it.
    np.testing.assert_allclose(_affine_fit(3.0 * ref - 7.0, ref), ref, atol=1e-12)
    # Otherwise the residual is orthogonal to [x, 1] (normal equations), compared with numpy.polyfit.
    x = rng.random((16, 16))
    a, b = np.polyfit(x.ravel(), ref.ravel(), 1)
    np.testing.assert_allclose(_affine_fit(x, ref), a * x + b, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs,word",
    [(dict(shape=(16, 16)), "shape"), (dict(psf_model="gauss"), "psf_model"), (dict(n_cycles=1), "n_cycles"),
     (dict(num_iter=0), "num_iter"), (dict(na=-1.0), "na")],
)
def test_bad_input(kwargs, word):
    with pytest.raises(ValueError, match=word):
        clid_experiment(jax.random.key(0), **kwargs)
