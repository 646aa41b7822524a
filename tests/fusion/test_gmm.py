"""Gaussian-mixture overlaps: numerical integration, rigid invariance, hand-written gradients vs autodiff, reduction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.stats import multivariate_normal

from jaxsr.fusion import GMM, gmm_correlation, gmm_log_overlap, reduce_gmm, so3_exp, transform_gmm
from jaxsr.fusion.gmm import _log_weights, _pose_loss_and_grad


def _random_gmm(rng, m, d, scale=10.0):
    a = rng.normal(size=(m, d, d))
    covs = a @ np.swapaxes(a, 1, 2) * 4.0 + np.eye(d) * 2.0
    return GMM(rng.normal(size=(m, d)) * scale, covs, rng.uniform(0.2, 1.0, m))


def test_overlap_matches_numerical_integration_2d(rng):
    a, b = _random_gmm(rng, 3, 2), _random_gmm(rng, 4, 2)
    x = np.linspace(-60, 60, 601)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    grid = np.stack([xx, yy], -1)

    def density(g):
        return sum(w * multivariate_normal(m, c).pdf(grid) for m, c, w in zip(*g))

    integral = np.sum(density(a) * density(b)) * (x[1] - x[0]) ** 2
    got = float(np.exp(gmm_log_overlap(GMM(*(jnp.asarray(v, jnp.float32) for v in a)),
                                       GMM(*(jnp.asarray(v, jnp.float32) for v in b)))))
    np.testing.assert_allclose(got, integral, rtol=1e-4)


def test_overlap_is_invariant_to_a_common_rigid_motion_and_blur_widens(rng):
    a, b = _random_gmm(rng, 5, 3), _random_gmm(rng, 6, 3)
    r, t = so3_exp(jnp.array([0.4, -0.3, 1.1])), jnp.array([5.0, -2.0, 7.0])
    v0 = gmm_log_overlap(a, b)
    v1 = gmm_log_overlap(transform_gmm(a, r, t), transform_gmm(b, r, t))
    np.testing.assert_allclose(v0, v1, rtol=1e-5)
    c = gmm_correlation(a, a)
    np.testing.assert_allclose(c, 1.0, rtol=1e-5)
    assert 0.0 < float(gmm_correlation(a, b)) < 1.0
    # far apart: finite log (log-sum-exp), no underflow to -inf
    far = transform_gmm(a, jnp.eye(3), jnp.array([1e4, 0.0, 0.0]))
    assert np.isfinite(float(gmm_log_overlap(far, b)))


def test_overlap_jit_vmap_and_gradient(rng, x64):
    a, b = _random_gmm(rng, 4, 3), _random_gmm(rng, 3, 3)
    a = GMM(*(jnp.asarray(v) for v in a))
    b = GMM(*(jnp.asarray(v) for v in b))
    f = lambda t: gmm_log_overlap(transform_gmm(a, jnp.eye(3), t), b, blur_nm=2.0)  # noqa: E731
    ts = jnp.asarray(rng.normal(size=(5, 3)) * 5)
    np.testing.assert_allclose(jax.vmap(f)(ts), jnp.stack([f(t) for t in ts]), rtol=1e-10)
    np.testing.assert_allclose(jax.jit(f)(ts[0]), f(ts[0]), rtol=1e-10)
    check_grads(f, (ts[0],), order=1, modes=["rev"])


def _reference_loss(pts, sig2, logw, tmpl, rot, t, blur, cost):
    """Straightforward autodiff-able cost: pairwise Gaussians from scipy-like formulas with jnp.linalg."""
    mu = pts @ rot.T + t
    covs = jnp.einsum("ij,nj,kj->nik", rot, sig2, rot)
    d = pts.shape[-1]
    cov = covs[:, None] + tmpl.covs[None] + 2 * blur**2 * jnp.eye(d)
    diff = mu[:, None] - tmpl.means[None]
    quad = jnp.einsum("nmi,nmij,nmj->nm", diff, jnp.linalg.inv(cov), diff)
    logn = -0.5 * (quad + jnp.linalg.slogdet(cov)[1] + d * jnp.log(2 * jnp.pi))
    lt = jnp.log(tmpl.weights)[None]
    if cost == "l2":
        return -jax.nn.logsumexp(logw[:, None] + lt + logn)
    return -jnp.sum(jnp.exp(logw) * jax.nn.logsumexp(lt + logn, axis=1))


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("cost", ["likelihood", "l2"])
def test_hand_written_gradient_equals_autodiff(rng, x64, d, cost):
    n, m = 9, 7
    pts = jnp.asarray(rng.normal(size=(n, d)) * 20)
    sig2 = jnp.asarray(rng.uniform(2, 60, size=(n, d)))
    logw = jnp.full(n, -np.log(n))
    tmpl = GMM(*(jnp.asarray(v) for v in _random_gmm(rng, m, d, 20.0)))
    tmpl = tmpl._replace(weights=tmpl.weights / tmpl.weights.sum())
    rot = so3_exp(jnp.array([0.3, -0.5, 0.9])) if d == 3 else jnp.array([[0.6, -0.8], [0.8, 0.6]])
    t = jnp.asarray(rng.normal(size=d) * 3)
    loss, g_rot, g_t = _pose_loss_and_grad(pts, sig2, logw, tmpl, rot, t, 2.0, cost)
    ref = _reference_loss(pts, sig2, logw, tmpl, rot, t, 2.0, cost)
    ref_r, ref_t = jax.grad(_reference_loss, argnums=(4, 5))(pts, sig2, logw, tmpl, rot, t, 2.0, cost)
    np.testing.assert_allclose(loss, ref, rtol=1e-10)
    np.testing.assert_allclose(g_rot, ref_r, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(g_t, ref_t, rtol=1e-8, atol=1e-12)


def test_padded_points_do_not_change_the_cost_or_make_nan(rng):
    pts = jnp.asarray(rng.normal(size=(6, 3)) * 20, jnp.float32)
    sig2 = jnp.full((6, 3), 9.0)
    tmpl = GMM(*(jnp.asarray(v, jnp.float32) for v in _random_gmm(rng, 5, 3, 20.0)))
    w = jnp.asarray([1 / 4] * 4 + [0.0] * 2)
    for cost in ("likelihood", "l2"):
        full = _pose_loss_and_grad(pts, sig2, _log_weights(w), tmpl, jnp.eye(3), jnp.zeros(3), 1.0, cost)
        cut = _pose_loss_and_grad(pts[:4], sig2[:4], jnp.full(4, -np.log(4.0)), tmpl, jnp.eye(3), jnp.zeros(3), 1.0,
                                  cost)
        for x, y in zip(full, cut):
            assert np.all(np.isfinite(x))
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("max_components", [None, 5])
def test_reduce_keeps_mass_mean_and_covariance(rng, max_components):
    g = _random_gmm(rng, 200, 3, scale=15.0)
    out = reduce_gmm(*g, voxel_nm=6.0, max_components=max_components)
    w = g.weights / g.weights.sum()
    mean = w @ g.means
    cov = np.einsum("n,nij->ij", w, g.covs + np.einsum("ni,nj->nij", g.means - mean, g.means - mean))
    w2 = out.weights.astype(np.float64)
    mean2 = w2 @ out.means
    dev = out.means - mean2
    cov2 = np.einsum("n,nij->ij", w2, out.covs + np.einsum("ni,nj->nij", dev, dev))
    np.testing.assert_allclose(w2.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mean2, mean, atol=1e-3)
    np.testing.assert_allclose(cov2, cov, rtol=1e-4)
    assert out.weights.shape[0] < 200
    if max_components:
        assert out.weights.shape[0] <= max_components


def test_reduce_bad_input():
    with pytest.raises(ValueError, match="weights"):
        reduce_gmm(np.zeros((2, 2)), np.broadcast_to(np.eye(2), (2, 2, 2)), np.zeros(2), voxel_nm=1.0)
    with pytest.raises(ValueError, match="voxel_nm"):
        reduce_gmm(np.zeros((2, 2)), np.broadcast_to(np.eye(2), (2, 2, 2)), np.ones(2), voxel_nm=-1.0)
