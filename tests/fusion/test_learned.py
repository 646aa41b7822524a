"""Learned pose initialisation: the point-cloud encoder's invariances, the symmetry-aware loss, the simulator's
ground truth, a tiny network trained here that recovers known poses, fusion with init="learned" and its
fallback to the grid, storage, and bad input.

One tiny 2D network (an asymmetric 7-site structure, 300 steps of 16 particles) is trained once per module.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
import pytest

from jaxsr import fusion as F
from jaxsr.fusion import learned as L
from jaxsr.nn import TrainConfig


# an asymmetric L-like 2D structure (no rotation maps it onto itself)
SITES = np.array([[-30.0, -10.0], [-10.0, -10.0], [10.0, -10.0], [30.0, -10.0], [30.0, 10.0], [30.0, 30.0],
                  [-30.0, 10.0]])
SITES = SITES - SITES.mean(0)
TINY = F.PoseNetConfig(dim=2, n_hypotheses=2, scale_nm=40.0, point_features=(32, 32), global_features=(32,),
                       head_features=(32,))
TINY_SIM = F.PoseSimulation(labelling=(0.8, 1.0), locs_per_site=(2.0, 3.0), max_locs=3, precision_nm=(1.5, 3.0),
                            clutter=(0.0, 0.0), clutter_slots=1)


def _angles(r):
    return np.degrees(F.rotation_angle(r))


@pytest.fixture(scope="module")
def tiny_model():
    return F.train_pose_net(jax.random.key(0), structure="L", sites=SITES, config=TINY, sim=TINY_SIM,
                            train=TrainConfig(steps=300, batch_size=16, learning_rate=5e-3, eval_every=100))


@pytest.fixture(scope="module")
def tiny_sim():
    return F.simulate_particles(jax.random.key(5), SITES, n_particles=24, labelling=0.9, locs_per_site=2.5,
                                precision_nm=2.0)


# ------------------------------------------------------------------------------------------ encoder invariances
@pytest.mark.parametrize("dim", [2, 3])
def test_encoder_is_permutation_and_padding_invariant(dim, rng):
    cfg = F.PoseNetConfig(dim=dim, n_hypotheses=3, point_features=(16,), global_features=(16,), head_features=(16,))
    m = F.pose_net_init(jax.random.key(1), config=cfg)

    def net(p, s, k):   # one compiled shape for every variant below
        return [np.asarray(o) for o in L._apply(m.params, p, s, k, config=cfg)]

    n = 27
    pts = rng.normal(scale=30.0, size=(2, n, dim)).astype(np.float32)
    sig = rng.uniform(2.0, 8.0, size=(2, n, dim)).astype(np.float32)
    mask = np.ones((2, n), bool)
    mask[0, 20:] = False
    mask[1, 15:] = False
    pts[~mask], sig[~mask] = 0.0, 1.0
    out = net(pts, sig, mask)
    # permutation of the localizations (padding rows anywhere among them)
    perm = rng.permutation(n)
    for a, b in zip(out, net(pts[:, perm], sig[:, perm], mask[:, perm])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # padding rows with arbitrary content change nothing
    pts2, sig2 = pts.copy(), sig.copy()
    pts2[~mask] = 1e3 * rng.normal(size=(int((~mask).sum()), dim))
    sig2[~mask] = 50.0
    for a, b in zip(out, net(pts2, sig2, mask)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # ... but dropping a real localization does change it (the test can fail)
    mask4 = mask.copy()
    mask4[1, 14] = False
    assert not np.allclose(out[2][1], net(pts, sig, mask4)[2][1])
    # outputs are rotations
    r = out[0].astype(np.float64)
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(dim), r.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)


def test_6d_representation_is_gram_schmidt(rng):
    p = rng.normal(size=(10, 6))
    r = np.asarray(L._rot_from_params(p.astype(np.float32), 3), np.float64)
    # reference: QR of the two columns (signs fixed to positive diagonal), third column = cross product
    for pi, ri in zip(p, r):
        q, rr = np.linalg.qr(np.stack([pi[:3], pi[3:]], 1))
        q = q * np.sign(np.diag(rr))
        np.testing.assert_allclose(ri[:, :2], q, atol=1e-5)
        np.testing.assert_allclose(ri[:, 2], np.cross(q[:, 0], q[:, 1]), atol=1e-5)


# --------------------------------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("dim,n_fold,flip", [(3, 8, True), (2, 2, False)])
def test_pose_loss_is_zero_at_truth_and_equal_for_symmetric_poses(dim, n_fold, flip, rng):
    g = F.symmetry_group(n_fold, flip=flip, dim=dim)
    q = F.so3_grid(30)[rng.integers(0, 30, 5)] if dim == 3 else F.so2_grid(36)[rng.integers(0, 36, 5)]
    t = rng.normal(scale=5.0, size=(5, dim))
    # zero at the truth and at every symmetric copy S R, S t
    for s in g:
        loss = np.asarray(F.pose_loss((s @ q)[:, None], (t @ s.T)[:, None], q, t, group=g))
        np.testing.assert_allclose(loss, 0.0, atol=1e-5)
    # a wrong pose: equal loss whichever symmetric copy of the truth is given
    off = F.so3_exp(np.array([0.0, 0.3, 0.1])) if dim == 3 else F.rotation_2d(0.3)
    pred_r = (np.asarray(off) @ q)[:, None]
    pred_t = (t + 2.0)[:, None]
    base = np.asarray(F.pose_loss(pred_r, pred_t, q, t, group=g))
    assert np.all(base > 0.01)
    for s in g[1::3]:
        np.testing.assert_allclose(np.asarray(F.pose_loss(pred_r, pred_t, s @ q, t @ s.T, group=g)), base,
                                   rtol=1e-5)
    # closed form: the chordal distance of a rotation by a is 4 (1 - cos a) in 2D and 3D, plus |dt|^2 / 50^2
    angle = 0.3 if dim == 2 else np.linalg.norm([0.0, 0.3, 0.1])
    expected = 4.0 * (1 - np.cos(angle)) + dim * 2.0**2 / 50.0**2
    np.testing.assert_allclose(base, expected, rtol=1e-4)


def test_pose_loss_takes_the_best_hypothesis():
    q = np.eye(2)[None]
    hyps = np.stack([np.asarray(F.rotation_2d(a)) for a in (1.0, 0.1, 2.0)])[None]
    loss = np.asarray(F.pose_loss(hyps, np.zeros((1, 3, 2)), q, np.zeros((1, 2))))
    np.testing.assert_allclose(loss, 4 * (1 - np.cos(0.1)), rtol=1e-5)


# ----------------------------------------------------------------------------------------- the simulator
def test_training_batch_truth_maps_particles_onto_sites():
    sites = F.npc_sites()   # (2D batches are exercised by the tiny network's training)
    sim = F.PoseSimulation(clutter=(0.0, 0.0), precision_nm=(0.5, 0.5), axial_factor=(1.0, 1.0),
                           precision_spread=0.0)
    b = F.pose_net_batch(jax.random.key(2), sites, batch_size=8, sim=sim)
    r, t = np.asarray(b.rotations, np.float64), np.asarray(b.translations, np.float64)
    np.testing.assert_allclose(r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(sites.shape[1]), r.shape), atol=1e-5)
    y = np.einsum("bij,bnj->bni", r, np.asarray(b.points, np.float64)) + t[:, None]
    dist = np.min(np.linalg.norm(y[:, :, None] - sites[None, None], axis=-1), -1)[np.asarray(b.mask)]
    # 0.5 nm per axis: the distance to the nearest site is chi-distributed, well below 3 nm
    assert dist.max() < 3.0 and 0.2 < np.median(dist) < 1.5
    # padding rows are zero with sigma 1; particles are centred
    m = np.asarray(b.mask)
    assert np.all(np.asarray(b.points)[~m] == 0) and np.all(np.asarray(b.sigma)[~m] == 1)
    np.testing.assert_allclose(np.asarray(b.points).sum(1), 0.0, atol=1e-3)


# -------------------------------------------------------------------------------- a tiny trained network
def test_tiny_network_recovers_known_poses(tiny_model, tiny_sim):
    hist = tiny_model.info["history"]
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    pred = F.predict_poses(tiny_model, tiny_sim.particles, top_k=1)
    # predicted R maps the particle onto the sites: R Q = identity for the truth Q (no symmetry)
    err = _angles(pred.rotations[:, 0] @ tiny_sim.rotations)
    assert np.median(err) < 15.0 and np.mean(err < 30.0) > 0.7, err
    # translations: the poses apply to the input coordinates (particles are not centred)
    pts = np.asarray(tiny_sim.particles.points, np.float64)
    moved = np.einsum("pij,pnj->pni", pred.rotations[:, 0], pts) + pred.translations[:, 0, None]
    good = err < 10.0
    centroid_true = np.array([SITES[i[i >= 0]].mean(0) for i in tiny_sim.site_index])
    m = np.asarray(tiny_sim.particles.mask)
    centroid_moved = np.array([moved[p][m[p]].mean(0) for p in range(len(m))])
    assert np.median(np.linalg.norm(centroid_moved - centroid_true, axis=1)[good]) < 5.0


def test_fuse_learned_matches_the_truth_and_falls_back_for_a_stranger(tiny_model, tiny_sim, caplog):
    # one particle of another class (a ring) among the others
    ring = 25.0 * np.stack([np.cos(np.arange(12) * np.pi / 6), np.sin(np.arange(12) * np.pi / 6)], 1)
    stranger = F.simulate_particles(jax.random.key(9), ring, n_particles=1, labelling=1.0, locs_per_site=2.0,
                                    precision_nm=2.0)
    p, s = tiny_sim.particles, stranger.particles
    n = max(p.points.shape[1], s.points.shape[1])
    pts = [np.asarray(a.points)[i][np.asarray(a.mask)[i]] for a in (p, s) for i in range(a.n_particles)]
    sig = [np.asarray(a.sigma)[i][np.asarray(a.mask)[i]] for a in (p, s) for i in range(a.n_particles)]
    parts = F.make_particles(pts, sig)
    assert parts.points.shape[1] == n
    with caplog.at_level(logging.INFO, logger="jaxsr.fusion.fuse"):
        res = F.fuse(jax.random.key(0), parts, n_iter=2, init="learned", pose_model=tiny_model, pose_top_k=1,
                     n_probe=4)
    n_real = tiny_sim.particles.n_particles
    err, _ = F.pose_errors(res.rotations[:n_real], tiny_sim.rotations)
    assert np.mean(err < 5.0) >= 0.9, err
    assert sum(h["n_fallback"] for h in res.history) >= 1
    assert any("re-registered with the grid" in r.getMessage() for r in caplog.records)
    assert not res.inliers[-1]          # still a poor fit after the grid: rejected, not fused silently


# --------------------------------------------------------------------------------------- adaptation, storage
def test_adapt_pose_net_lowers_the_overlap_loss(tiny_sim):
    cfg = F.PoseNetConfig(dim=2, n_hypotheses=2, scale_nm=40.0, point_features=(16,), global_features=(16,),
                          head_features=(16,))
    m0 = F.pose_net_init(jax.random.key(3), config=cfg)
    tmpl = F.GMM(SITES.astype(np.float32), np.broadcast_to(4.0 * np.eye(2, dtype=np.float32), (7, 2, 2)).copy(),
                 np.full(7, 1 / 7, np.float32))
    m1 = F.adapt_pose_net(jax.random.key(1), m0, tiny_sim.particles, tmpl, steps=40, batch_size=8,
                          learning_rate=3e-3)
    hist = m1.info["adapted"]["history"]
    assert np.isfinite(hist[-1]["loss"]) and hist[-1]["loss"] < hist[0]["loss"]
    with pytest.raises(ValueError, match="template"):
        F.adapt_pose_net(jax.random.key(1), m0, tiny_sim.particles,
                         F.GMM(np.zeros((1, 3)), np.eye(3)[None], np.ones(1)), steps=1)


def test_save_load_round_trip_and_shipped_models(tiny_model, tiny_sim, tmp_path):
    d = F.save_pose_net(tmp_path / "pose", tiny_model)
    m = F.load_pose_net(d)
    assert m.config == tiny_model.config
    a = F.predict_poses(tiny_model, tiny_sim.particles)
    b = F.predict_poses(m, tiny_sim.particles)
    np.testing.assert_array_equal(a.rotations, b.rotations)
    np.testing.assert_allclose(a.scores.sum(1), 1.0, rtol=1e-6)
    assert np.all(np.diff(a.scores, axis=1) <= 0)              # most confident first
    with pytest.raises(FileExistsError):
        F.save_pose_net(d, tiny_model)
    for name, dim in (("npc3d", 3), ("origami2d", 2)):
        if (L._pretrained_dir(name) / "model.json").is_file():
            shipped = F.pretrained_pose_net(name)
            assert shipped.config.dim == dim and shipped.config.n_fold == (8 if dim == 3 else 2)


# ------------------------------------------------------------------------------------------------- bad input
def test_bad_input(tiny_model, tiny_sim, tmp_path):
    npc = F.simulate_particles(jax.random.key(0), F.npc_sites(), n_particles=2)
    with pytest.raises(ValueError, match="particles"):                 # model/particle dimension mismatch
        F.predict_poses(tiny_model, npc.particles)
    with pytest.raises(ValueError, match="pose_model"):                # missing pose model
        F.fuse(jax.random.key(0), tiny_sim.particles, init="learned")
    with pytest.raises(ValueError, match="pose_model"):                # a 2D network for 3D particles
        F.fuse(jax.random.key(0), npc.particles, init="learned", pose_model=tiny_model)
    with pytest.raises(ValueError, match="init"):
        F.fuse(jax.random.key(0), tiny_sim.particles, init="random")
    with pytest.raises(ValueError, match="top_k"):
        F.predict_poses(tiny_model, tiny_sim.particles, top_k=3)
    with pytest.raises(TypeError, match="particles"):
        F.predict_poses(tiny_model, np.zeros((2, 5, 2)))
    with pytest.raises(ValueError, match="dim"):                       # wrong dimension
        F.PoseNetConfig(dim=4)
    with pytest.raises(ValueError, match="flip"):
        F.PoseNetConfig(dim=2, flip=True)
    with pytest.raises(ValueError, match="labelling"):
        F.PoseSimulation(labelling=(0.0, 0.5))
    with pytest.raises(ValueError, match="sites"):
        F.pose_net_batch(jax.random.key(0), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="structure"):
        F.train_pose_net(jax.random.key(0), structure="banana")
    with pytest.raises(ValueError, match="config"):
        F.train_pose_net(jax.random.key(0), structure="npc", config=TINY)
    with pytest.raises(ValueError, match="rotations"):
        F.pose_loss(np.eye(3)[None], np.zeros((1, 3)), np.eye(3)[None], np.zeros((1, 3)))
    with pytest.raises(ValueError, match="group"):
        F.pose_loss(np.eye(2)[None, None], np.zeros((1, 1, 2)), np.eye(2)[None], np.zeros((1, 2)),
                    group=np.eye(3)[None])
    with pytest.raises(FileNotFoundError, match="model"):
        F.load_pose_net(tmp_path / "nothing")
    with pytest.raises(ValueError, match="name"):
        F.pretrained_pose_net("banana")
    other = tmp_path / "other"                                         # a model directory of another kind
    other.mkdir()
    (other / "model.json").write_text('{"format": 1, "kind": "3snet"}')
    with pytest.raises(ValueError, match="model"):
        F.load_pose_net(other)


def test_cli_learned_without_a_fitting_shipped_model(tmp_path, capsys):
    from jaxsr.cli.main import main

    table = tmp_path / "ori.csv"
    assert main(["simulate-particles", str(table), "--structure", "origami", "--particles", "3", "--seed", "1"]) == 0
    assert main(["fuse", str(table), "-o", str(tmp_path / "o.csv"), "--init", "learned", "--symmetry", "3"]) != 0
    assert "no shipped pose network" in capsys.readouterr().err
    assert main(["fuse", str(table), "-o", str(tmp_path / "o.csv"), "--init", "learned", "--pose-model",
                 str(tmp_path / "missing")]) != 0
    assert "--pose-model" in capsys.readouterr().err
