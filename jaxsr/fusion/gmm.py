"""Gaussian mixtures of localizations and their closed-form overlap.

A localization at ``mu`` with covariance ``S`` is the Gaussian ``N(x; mu, S)``;
a particle is the mixture of its localizations (equal weights) and a fused
template is a mixture with any weights. The L2 inner product of two mixtures is
closed form:

    <f, g> = sum_ij a_i b_j N(mu_i - nu_j; 0, S_i + T_j),

and under a rigid motion of one mixture (means ``R mu + t``, covariances
``R S R^T``) the self-products ``<f, f>``, ``<g, g>`` do not change, so
minimising the L2 distance ``||f - g||^2`` is maximising ``<f, g>``
(Jian & Vemuri 2011); each localization keeps its own anisotropic covariance,
rotated with it. ``log <f, g>`` is evaluated with a log-sum-exp, finite for
mixtures far apart. A ``blur_nm`` adds ``blur^2 I`` to every component of both
mixtures (a coarse scale that widens the basin of attraction of registration).

All lengths in nm; the last axis of means is ``(x, y[, z])``.

References:
    B. Jian and B. C. Vemuri, "Robust point set registration using Gaussian mixture
    models", IEEE TPAMI 33, 1633-1645 (2011);
    H. Heydarian et al., "Template-free 2D particle fusion in localization
    microscopy", Nat. Methods 15, 781-784 (2018).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.spatial

from jaxsr._validate import as_float_array, positive_float

__all__ = ["GMM", "particle_gmm", "gmm_log_overlap", "gmm_correlation", "reduce_gmm", "transform_gmm"]


class GMM(NamedTuple):
    """A Gaussian mixture: ``means (M, d)`` nm, ``covs (M, d, d)`` nm^2, ``weights (M,)`` (>= 0)."""

    means: Any
    covs: Any
    weights: Any


def _as_gmm(g: Any, name: str) -> GMM:
    means, covs, weights = (as_float_array(v, name) for v in g)
    if means.ndim != 2 or means.shape[-1] not in (2, 3):
        raise ValueError(f"argument '{name}': means must be (M, 2) or (M, 3), got shape {tuple(means.shape)}")
    m, d = means.shape
    if covs.shape != (m, d, d) or weights.shape != (m,):
        raise ValueError(f"argument '{name}': expected covs ({m}, {d}, {d}) and weights ({m},), "
                         f"got {tuple(covs.shape)} and {tuple(weights.shape)}")
    return GMM(means, covs, weights)


def particle_gmm(points: Any, sigma: Any, mask: Any) -> GMM:
    """One particle as a mixture: equal weights over its real localizations, diagonal covariances.

    Args:
        points: ``(N, d)`` nm. sigma: ``(N, d)`` nm (1 s.d. per axis). mask: ``(N,)`` bool.
    """
    points = jnp.asarray(points)
    sigma = jnp.asarray(sigma)
    m = jnp.asarray(mask, points.dtype)
    w = m / jnp.maximum(jnp.sum(m), 1.0)
    covs = jax.vmap(jnp.diag)(sigma * sigma)
    return GMM(points, covs, w)


def transform_gmm(gmm: GMM, rotation: Any, translation: Any) -> GMM:
    """Rigid motion of a mixture: means ``R mu + t``, covariances ``R S R^T``."""
    r = jnp.asarray(rotation)
    return GMM(gmm.means @ r.T + translation, r @ gmm.covs @ r.T, gmm.weights)


def _log_normal(diff: jax.Array, cov: jax.Array) -> jax.Array:
    """``log N(diff; 0, cov)`` for symmetric positive-definite 2x2/3x3 ``cov`` (closed-form inverse)."""
    d = diff.shape[-1]
    if d == 2:
        a, b, c = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
        det = a * c - b * b
        x, y = diff[..., 0], diff[..., 1]
        quad = (c * x * x - 2.0 * b * x * y + a * y * y) / det
    else:
        a, b, c = cov[..., 0, 0], cov[..., 0, 1], cov[..., 0, 2]
        e, f, i = cov[..., 1, 1], cov[..., 1, 2], cov[..., 2, 2]
        ca, cb, cc = e * i - f * f, c * f - b * i, b * f - c * e
        ce, cf, ci = a * i - c * c, b * c - a * f, a * e - b * b
        det = a * ca + b * cb + c * cc
        x, y, z = diff[..., 0], diff[..., 1], diff[..., 2]
        quad = (ca * x * x + ce * y * y + ci * z * z + 2.0 * (cb * x * y + cc * x * z + cf * y * z)) / det
    return -0.5 * (quad + jnp.log(det) + d * jnp.log(2.0 * jnp.pi))


def _log_weights(w: jax.Array) -> jax.Array:
    return jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)


def gmm_log_overlap(a: GMM, b: GMM, *, blur_nm: Any = 0.0) -> jax.Array:
    """``log <f, g>``: the log L2 inner product of two mixtures (closed form, log-sum-exp).

    Args:
        a, b: mixtures with ``d`` = 2 or 3 (components of weight 0 are ignored).
        blur_nm: extra isotropic s.d. added to every component of both (traced; >= 0).

    Returns:
        Scalar; differentiable in every mean and covariance (and in a rigid
        transform applied to either mixture).

    Example:
        >>> import numpy as np
        >>> g = GMM(np.zeros((1, 2)), np.eye(2)[None] * 4.0, np.ones(1))
        >>> float(np.exp(gmm_log_overlap(g, g)))   # 1 / (4 pi sigma^2) for sigma = 2
        0.019894...
    """
    a, b = _as_gmm(a, "a"), _as_gmm(b, "b")
    if a.means.shape[-1] != b.means.shape[-1]:
        raise ValueError(f"argument 'b': {b.means.shape[-1]}-D mixture against a {a.means.shape[-1]}-D one")
    diff = a.means[:, None, :] - b.means[None, :, :]
    eye = jnp.eye(a.means.shape[-1], dtype=diff.dtype)
    cov = a.covs[:, None] + b.covs[None, :] + 2.0 * jnp.square(blur_nm) * eye
    logw = _log_weights(a.weights)[:, None] + _log_weights(b.weights)[None, :]
    return jax.nn.logsumexp(logw + _log_normal(diff, cov))


def gmm_correlation(a: GMM, b: GMM, *, blur_nm: Any = 0.0) -> jax.Array:
    """Normalised cross-correlation ``<f, g> / sqrt(<f, f> <g, g>)`` in ``[0, 1]`` (1 = identical shapes)."""
    ab = gmm_log_overlap(a, b, blur_nm=blur_nm)
    aa = gmm_log_overlap(a, a, blur_nm=blur_nm)
    bb = gmm_log_overlap(b, b, blur_nm=blur_nm)
    return jnp.exp(ab - 0.5 * (aa + bb))


def _pose_loss_and_grad(pts, sig2, logw, tmpl: GMM, rot, t, blur, cost: str = "likelihood"):
    """``-log <T_(R,t) f, g>`` of one particle and its gradient, written out by hand.

    The particle (``pts (N, d)``, per-axis variances ``sig2 (N, d)``, log weights
    ``logw (N,)``) is moved by ``(rot, t)``; the template mixture is ``tmpl``.
    With ``a_ij = log w_i v_j N(D_ij; 0, C_ij)``, ``D = R x_i + t - m_j``,
    ``C = R S_i R^T + T_j + 2 blur^2 I``, ``u = C^-1 D`` and ``p = softmax(a)``:
    ``dL/dmu_i = sum_j p_ij u_ij`` and ``dL/dC_i = -1/2 sum_j p_ij (u u^T - C^-1)``,
    chained to ``dL/dR`` and ``dL/dt``. Every pairwise quantity is kept as its own
    ``(N, M)`` array (no trailing axis of length 3), which XLA fuses into a few
    loops: about 14x faster than reverse-mode autodiff of :func:`gmm_log_overlap`
    on CPU, and equal to it to float64 round-off (tested).

    Returns:
        ``(loss, dL/dR (d, d), dL/dt (d,))``.
    """
    d = pts.shape[-1]
    mu = pts @ rot.T + t
    cov = jnp.einsum("ij,nj,kj->nik", rot, sig2, rot)
    b2 = 2.0 * blur * blur
    diff = [mu[:, k][:, None] - tmpl.means[:, k][None, :] for k in range(d)]
    c = {(k, l): cov[:, k, l][:, None] + tmpl.covs[:, k, l][None, :] + (b2 if k == l else 0.0)
         for k in range(d) for l in range(k, d)}
    if d == 3:
        a, b, cc, e, f, i = c[0, 0], c[0, 1], c[0, 2], c[1, 1], c[1, 2], c[2, 2]
        adj = {(0, 0): e * i - f * f, (0, 1): cc * f - b * i, (0, 2): b * f - cc * e,
               (1, 1): a * i - cc * cc, (1, 2): b * cc - a * f, (2, 2): a * e - b * b}
        det = a * adj[0, 0] + b * adj[0, 1] + cc * adj[0, 2]
    else:
        a, b, cc = c[0, 0], c[0, 1], c[1, 1]
        adj = {(0, 0): cc, (0, 1): -b, (1, 1): a}
        det = a * cc - b * b
    inv_det = 1.0 / det
    cinv = {k: v * inv_det for k, v in adj.items()}

    def ci(k, l):
        return cinv[(k, l)] if k <= l else cinv[(l, k)]

    u = [sum(ci(k, l) * diff[l] for l in range(d)) for k in range(d)]
    quad = sum(u[k] * diff[k] for k in range(d))
    logits = (logw[:, None] + _log_weights(tmpl.weights)[None, :]
              - 0.5 * (quad + jnp.log(det) + d * np.log(2.0 * np.pi)))
    if cost == "l2":
        top = jax.lax.stop_gradient(jnp.max(logits))
        e_ = jnp.exp(logits - top)
        total = jnp.sum(e_)
        loss = -(jnp.log(total) + top)
        p = e_ / total
    else:
        lw = jnp.where(jnp.isfinite(logw), logw, 0.0)[:, None]
        rl = jnp.where(jnp.isfinite(logw)[:, None], logits - lw, 0.0)
        top = jax.lax.stop_gradient(jnp.max(rl, 1, keepdims=True))
        e_ = jnp.exp(rl - top)
        total = jnp.sum(e_, 1, keepdims=True)
        wi = jnp.exp(logw)[:, None]
        loss = -jnp.sum(jnp.where(wi > 0, wi * (jnp.log(total) + top), 0.0))
        p = wi * e_ / total
    g_mu = jnp.stack([jnp.sum(p * u[k], 1) for k in range(d)], 1)
    g_cov = jnp.stack([jnp.stack([-0.5 * jnp.sum(p * (u[k] * u[l] - ci(k, l)), 1) for l in range(d)], 1)
                       for k in range(d)], 1)
    g_rot = g_mu.T @ pts + 2.0 * jnp.einsum("nkl,lm,nm->km", g_cov, rot, sig2)
    return loss, g_rot, jnp.sum(g_mu, 0)


def reduce_gmm(means: Any, covs: Any, weights: Any, *, voxel_nm: float, max_components: int | None = None) -> GMM:
    """Merge components that fall in the same voxel by moment matching (NumPy, outside ``jit``).

    Each merged component has the total weight, the weighted mean and the
    weighted covariance ``sum w_k (S_k + (mu_k - mu)(mu_k - mu)^T) / sum w_k`` of
    the components it replaces, so the mixture's mass, mean and second moments are
    kept while the component count drops to about the number of occupied voxels.

    With ``max_components``, the voxel components are then clustered by weighted
    k-means (Lloyd, initialised at the heaviest voxels) into at most that many
    and moment-matched again: components end up where the mass is, which keeps
    more detail per component than coarser voxels would (merging is associative,
    so the result is the moment match of the original components per cluster).

    Args:
        means: ``(K, d)`` nm. covs: ``(K, d, d)`` nm^2. weights: ``(K,)`` >= 0.
        voxel_nm: voxel edge (nm); about the finest detail to keep.
        max_components: cap on the number of components (registration time grows with it).

    Returns:
        :class:`GMM` (NumPy float32) with weights normalised to sum 1.
    """
    mu = np.asarray(means, np.float64)
    cv = np.asarray(covs, np.float64)
    w = np.asarray(weights, np.float64)
    voxel = positive_float(voxel_nm, "voxel_nm")
    keep = w > 0
    mu, cv, w = mu[keep], cv[keep], w[keep]
    if w.size == 0:
        raise ValueError("argument 'weights': no component with a positive weight")
    cells = np.floor(mu / voxel).astype(np.int64)
    _, inv = np.unique(cells, axis=0, return_inverse=True)
    out = _moment_match(mu, cv, w, inv.ravel())
    if max_components is not None and out.weights.shape[0] > int(max_components):
        k = int(max_components)
        if k < 1:
            raise ValueError(f"argument 'max_components': expected >= 1, got {max_components}")
        mu2, w2 = out.means.astype(np.float64), out.weights.astype(np.float64)
        centres = mu2[np.argsort(-w2, kind="stable")[:k]]
        for _ in range(25):
            _, lab = scipy.spatial.cKDTree(centres).query(mu2)
            mass = np.bincount(lab, weights=w2, minlength=k)
            moved = np.stack([np.bincount(lab, weights=w2 * mu2[:, j], minlength=k) for j in range(mu2.shape[1])], 1)
            new = np.where(mass[:, None] > 0, moved / np.maximum(mass, 1e-300)[:, None], centres)
            if np.allclose(new, centres, atol=1e-3 * voxel):
                break
            centres = new
        _, lab = scipy.spatial.cKDTree(centres).query(mu2)
        _, lab = np.unique(lab, return_inverse=True)
        out = _moment_match(mu2, out.covs.astype(np.float64), w2, lab.ravel())
    return out


def _moment_match(mu: np.ndarray, cv: np.ndarray, w: np.ndarray, inv: np.ndarray) -> GMM:
    """Merge components with equal label ``inv`` (0..k-1) keeping mass, mean and covariance."""
    k = inv.max() + 1
    d = mu.shape[1]
    wsum = np.bincount(inv, weights=w, minlength=k)
    mean = np.stack([np.bincount(inv, weights=w * mu[:, j], minlength=k) for j in range(d)], 1) / wsum[:, None]
    dev = mu - mean[inv]
    second = cv + dev[:, :, None] * dev[:, None, :]
    cov = np.zeros((k, d, d))
    np.add.at(cov, inv, w[:, None, None] * second)
    cov /= wsum[:, None, None]
    return GMM(mean.astype(np.float32), cov.astype(np.float32), (wsum / wsum.sum()).astype(np.float32))
