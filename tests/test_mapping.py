"""jaxsr._mapping: the same results as jax.vmap / jax.lax.map, without reductions over a length-1 axis."""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr._mapping import map_items, vmap_items


def _f(x):
    """A per-item function with a reduction, as in the registration loop."""
    return jnp.sum(x * x, axis=-1), jnp.max(x)


def _reduce_shapes(jaxpr):
    """Operand shapes of every reduction in a (closed) jaxpr, nested jaxprs included."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name.startswith("reduce_"):
            out.append(tuple(eqn.invars[0].aval.shape))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            out.extend(_reduce_shapes(sub))
    return out


@pytest.mark.parametrize("n", [1, 2, 5])
def test_vmap_items_equals_vmap(n):
    x = jax.random.normal(jax.random.key(n), (n, 3, 7))
    got, want = vmap_items(_f)(x), jax.vmap(_f)(x)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6)


@pytest.mark.parametrize("n,batch_size", [(1, 8), (5, 1), (5, None), (8, 4), (9, 4), (9, 8), (17, 8), (3, 8)])
def test_map_items_equals_lax_map(n, batch_size):
    x = jax.random.normal(jax.random.key(n), (n, 3, 7))
    y = jnp.arange(n, dtype=jnp.float32)
    f = lambda a: (_f(a[0])[0] + a[1], _f(a[0])[1])  # noqa: E731  (a pytree of mapped arguments)
    got, want = map_items(f, (x, y), batch_size=batch_size), jax.lax.map(f, (x, y), batch_size=batch_size)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6)


@pytest.mark.parametrize("n,batch_size", [(1, 8), (9, 8), (5, 1)])
def test_no_reduction_over_a_length_one_axis(n, batch_size):
    """The plain transforms reduce a (1, 3, 7) array here (the slow case on XLA:CPU); these do not."""
    x = jnp.ones((n, 3, 7))
    plain = _reduce_shapes(jax.make_jaxpr(lambda v: jax.lax.map(_f, v, batch_size=batch_size))(x).jaxpr)
    if n == 1 or n % batch_size == 1:
        assert any(1 in s for s in plain)            # the case the helpers exist for
    mapped = _reduce_shapes(jax.make_jaxpr(lambda v: map_items(_f, v, batch_size=batch_size))(x).jaxpr)
    assert mapped and not any(1 in s for s in mapped)
    single = _reduce_shapes(jax.make_jaxpr(vmap_items(_f))(jnp.ones((1, 3, 7))).jaxpr)
    assert single and not any(1 in s for s in single)


def test_mismatched_leading_sizes():
    with pytest.raises(ValueError, match="one leading size"):
        vmap_items(lambda a, b: a + b)(jnp.ones((2, 3)), jnp.ones((3, 3)))
