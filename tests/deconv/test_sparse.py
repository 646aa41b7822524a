"""Tests for jaxsr.deconv.sparse (Sparse-SIM baseline: sparse Hessian reconstruction + RL)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.ndimage import gaussian_filter
from scipy.sparse.linalg import cg

from jaxsr.deconv import sparse as S
from jaxsr.deconv.sparse import sparse_deconvolution, sparse_hessian_reconstruction
from jaxsr.metrics import psnr


# --------------------------------------------------------------------------- #
# Independent NumPy reference: the objective, written out term by term
# --------------------------------------------------------------------------- #
def _d2(g, axis):
    return np.roll(g, -1, axis) + np.roll(g, 1, axis) - 2.0 * g


def _dmix(g, a, b):
    fa = np.roll(g, -1, a) - g
    return np.roll(fa, -1, b) - fa


def _hessian_terms(g):
    """(weight factor kind, component) pairs; kinds: 1, 'z', 'sqrtz'."""
    y, x = g.ndim - 2, g.ndim - 1
    terms = [(1.0, _d2(g, x)), (1.0, _d2(g, y)), (2.0, _dmix(g, y, x))]
    if g.ndim == 3:
        terms += [("z", _d2(g, 0)), ("2sqrtz", _dmix(g, 0, x)), ("2sqrtz", _dmix(g, 0, y))]
    return terms


def _weight(w, hz):
    if w == "z":
        return hz
    if w == "2sqrtz":
        return 2.0 * math.sqrt(hz)
    return w


def objective(g, f, fidelity, sparsity, hessian=1.0, hessian_z=1.0):
    """fidelity/2 ||f-g||^2 + hessian * R_Hessian(g) + sparsity ||g||_1 (periodic differences)."""
    g = np.asarray(g, np.float64)
    f = np.asarray(f, np.float64)
    reg = sum(_weight(w, hessian_z) * np.abs(c).sum() for w, c in _hessian_terms(g))
    return 0.5 * fidelity * np.sum((f - g) ** 2) + hessian * reg + sparsity * np.abs(g).sum()


def _mix_t(v, a, b):  # adjoint of _dmix(., a, b)
    vb = np.roll(v, 1, b) - v
    return np.roll(vb, 1, a) - vb


def _pdhg_minimum(f, fidelity, sparsity, hessian_z, num_iter=2000):
    """Minimise the objective with accelerated primal-dual (Chambolle & Pock 2011, alg. 2).

    An algorithm independent of the ADMM under test: dual variables clipped to
    the term weights, the prox of the data + L1 term in closed form, step sizes
    adapted to the strong convexity ``fidelity``.
    """
    f = np.asarray(f, np.float64)
    y, x = f.ndim - 2, f.ndim - 1
    ops = [(1.0, lambda g: _d2(g, x), lambda u: _d2(u, x)),
           (1.0, lambda g: _d2(g, y), lambda u: _d2(u, y)),
           (2.0, lambda g: _dmix(g, y, x), lambda u: _mix_t(u, y, x))]
    if f.ndim == 3:
        r = math.sqrt(hessian_z)
        ops += [(hessian_z, lambda g: _d2(g, 0), lambda u: _d2(u, 0)),
                (2 * r, lambda g: _dmix(g, 0, x), lambda u: _mix_t(u, 0, x)),
                (2 * r, lambda g: _dmix(g, 0, y), lambda u: _mix_t(u, 0, y))]
    lip = math.sqrt(16.0 * len(ops))  # ||D_k|| <= 4 for every component
    tau = sigma = 1.0 / lip
    g = f.copy()
    g_bar = g.copy()
    duals = [np.zeros_like(f) for _ in ops]
    for _ in range(num_iter):
        duals = [np.clip(p + sigma * op(g_bar), -w, w) for p, (w, op, _) in zip(duals, ops)]
        v = g - tau * sum(adj(p) for p, (_, _, adj) in zip(duals, ops))
        a = (v + tau * fidelity * f) / (1 + tau * fidelity)
        g_new = np.sign(a) * np.maximum(np.abs(a) - tau * sparsity / (1 + tau * fidelity), 0.0)
        theta = 1.0 / math.sqrt(1.0 + 2.0 * fidelity * tau)
        tau, sigma = tau * theta, sigma / theta
        g_bar = g_new + theta * (g_new - g)
        g = g_new
    return g


_admm_traced = jax.jit(lambda f, hz, n: S._admm(f, 150.0, 10.0, 1.0, hz, 1.0, n))


def _test_image(rng, shape=(24, 24), noise=0.1):
    """Piecewise-smooth + sparse synthetic image (clean, noisy), values ~[0, 1]."""
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    clean = 0.6 * np.exp(-((xx - shape[-1] / 3) ** 2 + (yy - shape[-2] / 2.5) ** 2) / 40.0)
    clean = clean + 1.0 * (np.abs(xx - yy - 4) < 1.0)
    clean = clean + 0.8 * (((xx - 2 * shape[-1] / 3) ** 2 + (yy - 2 * shape[-2] / 3) ** 2) < 20)
    clean = clean.astype(np.float32)
    noisy = (clean + noise * rng.standard_normal(clean.shape)).astype(np.float32)
    return clean, noisy


# --------------------------------------------------------------------------- #
# (a) fidelity-only optimum is the input
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("shape", [(20, 24), (3, 12, 16)])
@pytest.mark.parametrize("boundary", ["reflect", "periodic"])
def test_fidelity_only_returns_input(rng, shape, boundary):
    f = rng.uniform(0.1, 3.0, size=shape).astype(np.float32)
    out = sparse_hessian_reconstruction(f, sparsity=0.0, hessian=0.0, num_iter=20, boundary=boundary)
    np.testing.assert_allclose(np.asarray(out), f, rtol=2e-6, atol=2e-6)
    # Vanishing (not zero) regularisation: the minimiser tends to the input.
    out = sparse_hessian_reconstruction(f, sparsity=1e-5, hessian=1e-5, num_iter=20, boundary=boundary)
    np.testing.assert_allclose(np.asarray(out), f, atol=3e-4 * f.max())


def test_regularisation_changes_the_result(rng):
    f = rng.uniform(0.1, 3.0, size=(20, 24)).astype(np.float32)
    out = sparse_hessian_reconstruction(f, num_iter=3)
    assert float(np.abs(np.asarray(out) - f).max()) > 0.05


# --------------------------------------------------------------------------- #
# (b) denoising a piecewise-smooth / sparse image
# --------------------------------------------------------------------------- #
def test_improves_psnr_on_noisy_piecewise_image(rng):
    clean, noisy = _test_image(rng, (48, 48), noise=0.15)
    before = float(psnr(noisy, clean, data_range=1.0))
    out = sparse_hessian_reconstruction(noisy)  # published defaults
    after = float(psnr(out, clean, data_range=1.0))
    assert after > before + 3.0, (before, after)


def test_time_continuity_helps_a_static_stack(rng):
    clean, _ = _test_image(rng, (16, 16))
    stack_clean = np.repeat(clean[None], 5, axis=0)
    noisy = (stack_clean + 0.2 * rng.standard_normal(stack_clean.shape)).astype(np.float32)
    fn = jnp.asarray(noisy / np.abs(noisy).max())
    off = np.asarray(_admm_traced(fn, 0.0, 60))
    on = np.asarray(_admm_traced(fn, 1.0, 60))
    target = stack_clean / np.abs(noisy).max()
    flat = lambda a: np.asarray(a).reshape(-1, a.shape[-1])  # noqa: E731  (one PSNR over the stack)
    p_off = float(psnr(flat(off), flat(target), data_range=1.0))
    p_on = float(psnr(flat(on), flat(target), data_range=1.0))
    assert p_on > p_off + 0.5, (p_off, p_on)
    # hessian_z = 0 decouples the frames: the ADMM on the stack equals the ADMM on each frame.
    frame = np.asarray(_admm_traced(fn[2], 0.0, 60))
    np.testing.assert_allclose(off[2], frame, atol=2e-6)


# --------------------------------------------------------------------------- #
# (c) the objective decreases and reaches the minimum of an independent solver
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "shape,hessian_z", [((16, 16), 1.0), ((4, 10, 12), 0.5)], ids=["2d", "3d"]
)
def test_objective_decreases_to_independent_minimum(rng, shape, hessian_z):
    _, noisy = _test_image(rng, shape[-2:], noise=0.1)
    f = np.broadcast_to(noisy, shape) + 0.05 * rng.standard_normal(shape)
    f = (f / np.abs(f).max()).astype(np.float32)
    fid, spars = 150.0, 10.0
    values = []
    for n in (1, 3, 10, 30, 100, 400):
        g = _admm_traced(jnp.asarray(f), hessian_z, n)  # n traced: one compilation
        values.append(objective(g, f, fid, spars, 1.0, hessian_z))
    e0 = objective(f, f, fid, spars, 1.0, hessian_z)
    assert values[0] < e0
    assert all(b <= a * (1 + 1e-6) for a, b in zip(values, values[1:])), values
    ref = objective(_pdhg_minimum(f, fid, spars, hessian_z), f, fid, spars, 1.0, hessian_z)
    assert values[-1] <= ref * (1 + 1e-4), (values[-1], ref)
    assert values[-1] >= ref * (1 - 1e-3), (values[-1], ref)  # cannot beat the true minimum by much
    assert values[0] > ref * (1 + 1e-2)  # the test can fail: early iterates are far from it


# --------------------------------------------------------------------------- #
# (d) FFT-diagonalised solve == sparse-matrix solve of the same periodic operator
# --------------------------------------------------------------------------- #
def _circ_fwd(n):
    return sp.csr_matrix((sp.eye(n, k=1) + sp.eye(n, k=1 - n) - sp.eye(n)))


def _circ_second(n):
    return sp.csr_matrix(sp.eye(n, k=1) + sp.eye(n, k=1 - n) + sp.eye(n, k=-1) + sp.eye(n, k=n - 1) - 2 * sp.eye(n))


def _axis_op(op, axis, shape):
    """Kronecker product applying a 1D operator along ``axis`` of a C-ordered array."""
    mats = [op if a == axis else sp.identity(n) for a, n in enumerate(shape)]
    out = mats[0]
    for m in mats[1:]:
        out = sp.kron(out, m)
    return sp.csr_matrix(out)


def _operator(shape, fidelity, rho_l1, rho):
    """fidelity + rho_l1 + sum_k rho_k D_k^T D_k, built from circulant matrices."""
    nd = len(shape)
    y, x = nd - 2, nd - 1
    d2 = lambda a: _axis_op(_circ_second(shape[a]), a, shape)  # noqa: E731
    fw = lambda a: _axis_op(_circ_fwd(shape[a]), a, shape)  # noqa: E731
    comps = [d2(x), d2(y), fw(x) @ fw(y)]
    if nd == 3:
        comps += [d2(0), fw(0) @ fw(x), fw(0) @ fw(y)]
    size = int(np.prod(shape))
    a = (fidelity + rho_l1) * sp.identity(size)
    for r, d in zip(rho, comps):
        a = a + r * (d.T @ d)
    return sp.csr_matrix(a), comps


@pytest.mark.parametrize("shape", [(16, 16), (4, 6, 8)])
def test_fft_solve_matches_scipy_cg(x64, rng, shape):
    fid, rho_l1 = 150.0, 10.0
    rho = [1.0, 1.0, 2.0, 0.7, 1.3, 1.3][: 3 if len(shape) == 2 else 6]
    a, _ = _operator(shape, fid, rho_l1, rho)
    rhs = rng.standard_normal(shape)
    ref, info = cg(a, rhs.ravel(), rtol=1e-13, atol=0.0, maxiter=5000)
    assert info == 0
    denom = S._denominator(shape, fid, rho_l1, [jnp.asarray(r) for r in rho], jnp.float64)
    got = np.asarray(S._fft_solve(jnp.asarray(rhs), denom))
    # Stated tolerance: 1e-10 relative (float64; cg converged to 1e-13).
    np.testing.assert_allclose(got.ravel(), ref, rtol=0, atol=1e-10 * np.abs(ref).max())
    # And the residual of the FFT solution under the explicit matrix is tiny.
    assert np.abs(a @ got.ravel() - rhs.ravel()).max() < 1e-9


def test_fft_solve_float32(rng):
    shape = (16, 16)
    a, _ = _operator(shape, 150.0, 10.0, [1.0, 1.0, 2.0])
    rhs = rng.standard_normal(shape).astype(np.float32)
    denom = S._denominator(shape, 150.0, 10.0, [1.0, 1.0, 2.0], jnp.float32)
    got = np.asarray(S._fft_solve(jnp.asarray(rhs), denom))
    assert got.dtype == np.float32
    ref, _ = cg(a, rhs.ravel().astype(np.float64), rtol=1e-12, atol=0.0)
    np.testing.assert_allclose(got.ravel(), ref, atol=1e-6 * np.abs(ref).max())


@pytest.mark.parametrize("shape", [(6, 8), (3, 5, 7)])
def test_difference_operators_match_matrices(rng, shape):
    g = rng.standard_normal(shape).astype(np.float32)
    v = rng.standard_normal(shape).astype(np.float32)
    _, mats = _operator(shape, 1.0, 0.0, [1.0] * 6)
    for (kind, axes), m in zip(S._components(len(shape)), mats):
        fwd = np.asarray(S._apply(kind, axes, jnp.asarray(g))).ravel()
        adj = np.asarray(S._apply_t(kind, axes, jnp.asarray(v))).ravel()
        np.testing.assert_allclose(fwd, m @ g.ravel().astype(np.float64), atol=1e-5)
        np.testing.assert_allclose(adj, m.T @ v.ravel().astype(np.float64), atol=1e-5)


# --------------------------------------------------------------------------- #
# Background estimation
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("levels", [2, 3])
def test_lowpass_matches_scipy_gaussian_reflect(rng, levels):
    x = rng.random((32, 40)).astype(np.float32)
    sigma = math.sqrt(math.log(2.0) / 2.0) / (math.pi * 2.0 ** -(levels + 1))
    ref = gaussian_filter(x.astype(np.float64), sigma, mode="reflect", truncate=10.0)
    got = np.asarray(jax.jit(S._lowpass, static_argnums=1)(jnp.asarray(x), levels))
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_background_estimate_rejects_sparse_signal(rng):
    c = 0.3
    img = np.full((64, 64), c, np.float32)
    img[rng.random(img.shape) < 0.03] += 5.0
    bg = np.asarray(jax.jit(S._estimate_background)(jnp.asarray(img)))
    plain = float(img.mean()) - c  # what a plain low-pass would leave
    assert plain > 0.1
    assert np.abs(bg - c).max() < 0.2 * plain


# --------------------------------------------------------------------------- #
# (e) full pipeline on a simulated widefield filament image
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def filament_sim():
    """Seeded curved filaments (jaxsr.simulate.render_polyline), Gaussian blur, Poisson noise."""
    from jaxsr.forward import convolve
    from jaxsr.optics import gaussian_psf_2d
    from jaxsr.simulate import render_polyline

    rng = np.random.default_rng(7)
    n, pix = 48, 65.0
    s = np.linspace(0.0, 1.0, 120)[:, None]
    lines = []
    for _ in range(5):
        start = rng.uniform(0.1, 0.9, 2) * n * pix
        angle = rng.uniform(0, np.pi) + rng.uniform(-2.0, 2.0) * s[:, 0]
        steps = 30.0 * np.stack([np.sin(angle), np.cos(angle)], -1)
        lines.append(start + np.cumsum(steps, axis=0))
    obj = np.asarray(render_polyline(np.stack(lines), shape=(n, n), pixel_size_nm=pix, photons_per_nm=1.0))
    obj = obj * (300.0 / obj.max())
    psf = np.asarray(gaussian_psf_2d((15, 15), sigma_nm=0.21 * 520.0 / 1.4, pixel_size_nm=pix))
    background = 20.0
    expected = np.maximum(np.asarray(convolve(obj, psf, boundary="reflect")), 0.0) + background
    image = rng.poisson(expected).astype(np.float32)
    return {"image": image, "object": obj.astype(np.float32), "psf": psf, "background": background}


def _norm(a):
    a = np.asarray(a, np.float64)
    return (a - a.min()) / (a.max() - a.min())


def test_pipeline_improves_on_raw_filaments(filament_sim):
    sim = filament_sim
    truth = gaussian_filter(sim["object"].astype(np.float64), 0.5)  # ground truth at the pixel scale
    out = sparse_deconvolution(sim["image"], sim["psf"], background=sim["background"], rl_iter=10)
    assert out.shape == sim["image"].shape and bool(jnp.all(jnp.isfinite(out)))
    raw = float(psnr(_norm(sim["image"]), _norm(truth), data_range=1.0))
    got = float(psnr(_norm(out), _norm(truth), data_range=1.0))
    assert got > raw + 4.0, (raw, got)
    # The RL step adds to the sparse step alone.
    sparse_only = sparse_deconvolution(sim["image"], sim["psf"], background=sim["background"], rl_iter=0)
    assert got > float(psnr(_norm(sparse_only), _norm(truth), data_range=1.0)) + 1.0


# Small configuration shared by the pipeline tests below, so jit compilations are reused.
_SMALL = {"num_iter": 10, "rl_iter": 3}


def _small_psf():
    yy, xx = np.mgrid[-5:6, -5:6]
    psf = np.exp(-(xx**2 + yy**2) / (2 * 1.5**2)).astype(np.float32)
    return psf / psf.sum()


def test_pipeline_stack_with_upsampling(filament_sim):
    # A (t, y, x) stack with a 2D PSF: t-continuity in the sparse step, RL frame by frame.
    img = filament_sim["image"]
    stack = np.stack([img[:12, :12], img[1:13, :12], img[2:14, :12]])
    out = sparse_deconvolution(stack, _small_psf(), upsample=2, **_SMALL)
    assert out.shape == (3, 24, 24)
    assert bool(jnp.all(out >= 0)) and bool(jnp.all(jnp.isfinite(out)))
    assert float(out.max()) > 0


def test_background_modes(filament_sim):
    img = jnp.asarray(filament_sim["image"][:24, :24])
    x = img / img.max()
    all_modes = jax.jit(lambda v: {m: S._background(v, m) for m in S.BACKGROUNDS})  # one compilation
    bgs = {m: np.asarray(b) for m, b in all_modes(x).items()}
    for m, bg in bgs.items():
        assert np.all(np.isfinite(bg)) and 0 < bg.mean() < float(x.mean()), m
    # "strong" estimates on image / 2 instead of / 2.5; the "_low" modes on the clipped image.
    assert bgs["strong"].mean() > bgs["weak"].mean()
    assert bgs["strong_low"].mean() > bgs["weak_low"].mean()
    assert bgs["weak_low"].max() <= float(x.mean()) / 2.5 + 1e-6
    out = sparse_deconvolution(img, _small_psf(), background="weak", **_SMALL)
    plain = sparse_deconvolution(img, _small_psf(), **_SMALL)
    assert bool(jnp.all(jnp.isfinite(out))) and float(out.sum()) < float(plain.sum())


# --------------------------------------------------------------------------- #
# Transform invariance
# --------------------------------------------------------------------------- #
def test_jit_and_vmap_invariance(rng):
    _, noisy = _test_image(rng, (24, 24))
    batch = np.stack([noisy, noisy[::-1], noisy.T + 0.2]).astype(np.float32)
    f = lambda im: sparse_hessian_reconstruction(im, num_iter=20)  # noqa: E731
    eager = np.stack([np.asarray(f(b)) for b in batch])
    np.testing.assert_allclose(np.asarray(jax.jit(f)(batch[0])), eager[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.vmap(f)(batch)), eager, rtol=1e-5, atol=1e-6)

    p = lambda im: sparse_deconvolution(im, _small_psf(), **_SMALL)  # noqa: E731
    eager = np.stack([np.asarray(p(b)) for b in batch[:2]])
    np.testing.assert_allclose(np.asarray(jax.vmap(p)(batch[:2])), eager, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(p)(batch[0])), eager[0], rtol=1e-4, atol=1e-5)


def test_traced_weights_and_scale_equivariance(rng):
    _, noisy = _test_image(rng, (16, 16))
    noisy = np.abs(noisy)
    g = jax.jit(lambda im, s: sparse_hessian_reconstruction(im, sparsity=s, num_iter=15))
    a = np.asarray(g(noisy, 5.0))
    np.testing.assert_allclose(np.asarray(sparse_hessian_reconstruction(noisy, sparsity=5.0, num_iter=15)), a,
                               rtol=1e-5, atol=1e-6)
    # Weights act on the max-normalised image: the result scales with the input.
    np.testing.assert_allclose(np.asarray(g(7.0 * noisy, 5.0)), 7.0 * a, rtol=1e-4, atol=1e-5)


def test_float64(x64, rng):
    _, noisy = _test_image(rng, (16, 16))
    out = sparse_hessian_reconstruction(noisy.astype(np.float64), num_iter=10)
    assert out.dtype == jnp.float64


def test_gradients_float64(x64, rng):
    # Piecewise smooth (soft-thresholding): differentiable away from the kinks.
    from jax.test_util import check_grads

    f = jnp.asarray(rng.uniform(0.2, 1.0, (8, 8)))
    fun = lambda im, s: sparse_hessian_reconstruction(im, sparsity=s, num_iter=3, boundary="periodic")  # noqa: E731
    check_grads(fun, (f, 2.0), order=1, modes=["rev"])
    g = jax.grad(lambda im: jnp.sum(fun(im, 2.0)))(jnp.zeros((8, 8)))
    assert bool(jnp.all(jnp.isfinite(g)))


# --------------------------------------------------------------------------- #
# Edge cases and bad input
# --------------------------------------------------------------------------- #
def test_zero_image_gives_zeros_not_nan():
    z = np.zeros((24, 24), np.float32)
    out = sparse_hessian_reconstruction(z, num_iter=20)
    assert np.all(np.asarray(out) == 0)
    for bg in (None, "weak"):  # same configurations as above: no new compilation
        o = sparse_deconvolution(z, _small_psf(), background=bg, **_SMALL)
        assert bool(jnp.all(jnp.isfinite(o))) and float(jnp.abs(o).max()) == 0.0
    o = sparse_hessian_reconstruction(np.zeros((3, 8, 8), np.int32), num_iter=2)
    assert o.dtype == jnp.float32 and bool(jnp.all(o == 0))


@pytest.mark.parametrize(
    "kwargs,exc,word",
    [
        ({"fidelity": 0.0}, ValueError, "fidelity"),
        ({"fidelity": -1.0}, ValueError, "fidelity"),
        ({"mu": 0.0}, ValueError, "mu"),
        ({"sparsity": -1.0}, ValueError, "sparsity"),
        ({"hessian": -0.5}, ValueError, "hessian"),
        ({"hessian_z": -0.5}, ValueError, "hessian_z"),
        ({"sparsity": float("nan")}, ValueError, "sparsity"),
        ({"num_iter": 0}, ValueError, "num_iter"),
        ({"num_iter": 2.5}, TypeError, "num_iter"),
        ({"boundary": "zero"}, ValueError, "boundary"),
        ({"fidelity": np.ones(2)}, ValueError, "fidelity"),
    ],
)
def test_solver_bad_parameters(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        sparse_hessian_reconstruction(np.ones((8, 8)), **kwargs)


def test_bad_images():
    with pytest.raises(ValueError, match="image"):
        sparse_hessian_reconstruction(np.ones(8))
    with pytest.raises(ValueError, match="image"):
        sparse_hessian_reconstruction(np.ones((2, 2, 8, 8)))
    with pytest.raises(ValueError, match="image"):
        sparse_hessian_reconstruction(np.full((8, 8), np.nan))
    with pytest.raises(TypeError, match="image"):
        sparse_hessian_reconstruction("abc")
    psf = np.ones((3, 3)) / 9
    with pytest.raises(ValueError, match="image"):
        sparse_deconvolution(np.ones((2, 2, 8, 8)), psf)
    with pytest.raises(ValueError, match="image"):
        sparse_deconvolution(np.array([[1.0, np.inf], [0, 0]]), psf)


@pytest.mark.parametrize(
    "psf,kwargs,exc,word",
    [
        (np.full((3, 3), np.nan), {}, ValueError, "psf"),
        (np.zeros((3, 3)), {}, ValueError, "psf"),
        (np.ones(3), {}, ValueError, "psf"),
        (np.ones((3, 3, 3)), {}, ValueError, "psf"),  # 3D psf with a 2D image
        (np.ones((3, 3)), {"rl_iter": -1}, ValueError, "rl_iter"),
        (np.ones((3, 3)), {"upsample": 0}, ValueError, "upsample"),
        (np.ones((3, 3)), {"upsample": 1.5}, TypeError, "upsample"),
        (np.ones((3, 3)), {"background": "bogus"}, ValueError, "background"),
        (np.ones((3, 3)), {"background": -1.0}, ValueError, "background"),
        (np.ones((3, 3)), {"accelerate": "yes"}, TypeError, "accelerate"),
        (np.ones((3, 3)), {"fidelity": 0.0}, ValueError, "fidelity"),
        (np.ones((3, 3)), {"num_iter": -3}, ValueError, "num_iter"),
    ],
)
def test_pipeline_bad_input(psf, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        sparse_deconvolution(np.ones((8, 8)), psf, **kwargs)
