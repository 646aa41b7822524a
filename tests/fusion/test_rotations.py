"""Rotations: references from scipy.spatial.transform, group laws, grid uniformity, gradients at the identity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.spatial.transform import Rotation

from jaxsr.fusion import (
    matrix_to_quaternion,
    quaternion_to_matrix,
    rotation_2d,
    rotation_angle,
    so2_grid,
    so3_exp,
    so3_grid,
    sphere_grid,
    symmetry_group,
)


def test_so3_exp_matches_scipy_including_tiny_angles(rng):
    v = rng.normal(size=(50, 3)) * np.array([[1.0]] * 40 + [[1e-5]] * 10)
    got = np.asarray(so3_exp(v.astype(np.float32)))
    want = Rotation.from_rotvec(v).as_matrix()
    np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_allclose(got @ np.swapaxes(got, 1, 2), np.broadcast_to(np.eye(3), got.shape), atol=2e-6)


def test_so3_exp_same_under_jit_and_vmap(rng):
    v = jnp.asarray(rng.normal(size=(7, 3)), jnp.float32)
    a = so3_exp(v)
    b = jax.jit(so3_exp)(v)
    c = jax.vmap(so3_exp)(v)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_so3_exp_gradients_finite_and_correct_at_identity(x64):
    check_grads(so3_exp, (jnp.zeros(3),), order=1, modes=["rev", "fwd"], atol=1e-6)
    check_grads(so3_exp, (jnp.array([0.3, -1.2, 0.7]),), order=1, modes=["rev"])
    g = jax.jacrev(so3_exp)(jnp.zeros(3))
    # d exp(w)/dw at 0 is the generator basis: dR/dw_k = hat(e_k)
    hat = np.array([[[0, 0, 0], [0, 0, -1], [0, 1, 0]], [[0, 0, 1], [0, 0, 0], [-1, 0, 0]],
                    [[0, -1, 0], [1, 0, 0], [0, 0, 0]]], float)
    np.testing.assert_allclose(np.moveaxis(np.asarray(g), -1, 0), hat, atol=1e-12)


def test_quaternions_match_scipy_and_round_trip(rng):
    q = rng.normal(size=(30, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    want = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()   # scipy is scalar-last
    got = np.asarray(quaternion_to_matrix(q.astype(np.float32)))
    np.testing.assert_allclose(got, want, atol=2e-6)
    back = matrix_to_quaternion(want)
    q_pos = q * np.sign(q[:, :1])
    np.testing.assert_allclose(back, q_pos, atol=1e-9)
    # rotations by pi (w = 0) survive the round trip too
    pi_rot = Rotation.from_rotvec(np.pi * np.eye(3)).as_matrix()
    np.testing.assert_allclose(np.asarray(quaternion_to_matrix(matrix_to_quaternion(pi_rot))), pi_rot, atol=1e-6)


def test_rotation_angle_matches_scipy_magnitude(rng):
    v = rng.normal(size=(40, 3))
    v *= (rng.uniform(0, np.pi, 40) / np.linalg.norm(v, axis=1))[:, None]
    v[:5] *= 1e-7
    r = Rotation.from_rotvec(v)
    np.testing.assert_allclose(rotation_angle(r.as_matrix()), r.magnitude(), atol=1e-9, rtol=1e-7)
    ang = rng.uniform(-np.pi, np.pi, 10)
    np.testing.assert_allclose(rotation_angle(np.asarray(rotation_2d(ang), np.float64)), np.abs(ang), atol=1e-6)


def test_so3_grid_is_uniform(rng):
    grid = so3_grid(2000)
    np.testing.assert_allclose(np.linalg.det(grid), 1.0, atol=1e-9)
    # second moment of a uniform rotation: E[R_ij R_kl] = delta_ik delta_jl / 3 -> mean of R (x) R
    m = np.einsum("nij,nkl->ijkl", grid, grid) / len(grid)
    want = np.einsum("ik,jl->ijkl", np.eye(3), np.eye(3)) / 3.0
    assert np.abs(m - want).max() < 0.01
    # covering: random rotations are within the documented gaps (median 2.2, worst 3.9 n^(-1/3)) of the grid
    probes = Rotation.random(500, random_state=np.random.default_rng(1)).as_matrix()
    gaps = np.array([rotation_angle(grid @ p.T).min() for p in probes])
    assert gaps.max() < 3.9 * 2000 ** (-1 / 3)
    assert np.median(gaps) < 2.3 * 2000 ** (-1 / 3)


def test_sphere_and_so2_grids():
    u = sphere_grid(400)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-12)
    assert np.abs(u.mean(0)).max() < 0.01
    assert np.all(sphere_grid(100, hemisphere=True)[:, 2] >= 0)
    g = so2_grid(8)
    np.testing.assert_allclose(rotation_angle(g @ g[1].T)[1], 0.0, atol=1e-12)


@pytest.mark.parametrize("n_fold,flip,dim", [(8, True, 3), (8, False, 3), (2, False, 2), (5, False, 2)])
def test_symmetry_group_is_closed(n_fold, flip, dim):
    g = symmetry_group(n_fold, flip=flip, dim=dim)
    assert len(g) == n_fold * (2 if flip else 1)
    for a in g:
        for b in g:
            assert rotation_angle(g @ (a @ b).T).min() < 1e-9


def test_bad_input():
    with pytest.raises(ValueError, match="rotvec"):
        so3_exp(np.zeros(4))
    with pytest.raises(ValueError, match="flip"):
        symmetry_group(4, flip=True, dim=2)
    with pytest.raises(TypeError, match="n"):
        so3_grid(10.0)
    with pytest.raises(ValueError, match="rotation"):
        rotation_angle(np.zeros((4, 4)))
