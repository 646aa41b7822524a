"""Particle fusion: Gaussian-mixture point clouds, registration over SO(3)/SO(2), dynamic-template fusion.

Used qualified (``jaxsr.fusion.fuse``), like :mod:`jaxsr.smlm`.

- :mod:`jaxsr.fusion.particles`: padded particles ``(P, N, d)`` with per-localization
  uncertainties and masks; grouping a table by id, clustering, picking.
- :mod:`jaxsr.fusion.rotations`: exponential map, quaternions, uniform SO(3) grids, symmetry groups.
- :mod:`jaxsr.fusion.gmm`: closed-form Gaussian-mixture overlaps, template reduction.
- :mod:`jaxsr.fusion.register`: multi-start + coarse-to-fine registration, ``jit`` and mapped over particles.
- :mod:`jaxsr.fusion.fuse`: the dynamic-template fusion with symmetry priors and outlier rejection.
- :mod:`jaxsr.fusion.measure`: pose errors, ring radius / separation / corners, FRC/FSC of two halves.
- :mod:`jaxsr.fusion.simulate`: nuclear pores and DNA-origami grids as sparse, noisy point clouds.
- :mod:`jaxsr.fusion.learned`: a PointNet-style pose network (learned initialisation, ``fuse(init="learned")``).
"""

from jaxsr.fusion.fuse import (
    INITS,
    FusionResult,
    GoldStandardFRC,
    apply_poses,
    build_template,
    fuse,
    gold_standard_frc,
    symmetry_frame,
    synchronise_poses,
)
from jaxsr.fusion.gmm import GMM, gmm_correlation, gmm_log_overlap, particle_gmm, reduce_gmm, transform_gmm
from jaxsr.fusion.io import (
    read_particles,
    read_poses_csv,
    render_fusion_png,
    write_fusion_csv,
    write_fused_table,
    write_particles_csv,
    write_poses_csv,
    write_truth_csv,
)
from jaxsr.fusion.learned import (
    POSE_NETS,
    PoseNetConfig,
    PoseNetModel,
    PosePrediction,
    PoseSimulation,
    adapt_pose_net,
    load_pose_net,
    pose_loss,
    pose_net_batch,
    pose_net_init,
    predict_poses,
    pretrained_pose_net,
    save_pose_net,
    train_pose_net,
)
from jaxsr.fusion.measure import RingMeasurement, fusion_frc, pose_errors, render_points_nd, ring_measurements
from jaxsr.fusion.particles import (
    Particles,
    centre_particles,
    cluster_particles,
    make_particles,
    particles_from_table,
    pick_particles,
)
from jaxsr.fusion.register import COSTS, Registration, pad_gmm, register_particles, rotation_grid, shift_grid
from jaxsr.fusion.rotations import (
    matrix_to_quaternion,
    quaternion_to_matrix,
    rotation_2d,
    rotation_angle,
    rotation_matrix,
    so2_grid,
    so3_exp,
    so3_grid,
    sphere_grid,
    symmetry_group,
)
from jaxsr.fusion.simulate import ParticleSimulation, npc_sites, origami_sites, simulate_particles

__all__ = [
    "Particles", "make_particles", "particles_from_table", "cluster_particles", "pick_particles", "centre_particles",
    "rotation_2d", "so3_exp", "rotation_matrix", "quaternion_to_matrix", "matrix_to_quaternion", "rotation_angle",
    "so3_grid", "so2_grid", "sphere_grid", "symmetry_group",
    "GMM", "particle_gmm", "transform_gmm", "gmm_log_overlap", "gmm_correlation", "reduce_gmm",
    "COSTS", "Registration", "register_particles", "rotation_grid", "pad_gmm", "shift_grid",
    "FusionResult", "fuse", "build_template", "symmetry_frame", "apply_poses", "synchronise_poses", "INITS",
    "pose_errors", "RingMeasurement", "ring_measurements", "fusion_frc", "render_points_nd", "GoldStandardFRC",
    "gold_standard_frc",
    "ParticleSimulation", "npc_sites", "origami_sites", "simulate_particles",
    "read_particles", "write_particles_csv", "write_fusion_csv", "write_fused_table", "write_poses_csv",
    "write_truth_csv",
    "read_poses_csv", "render_fusion_png",
    "PoseNetConfig", "PoseSimulation", "PoseNetModel", "PosePrediction", "POSE_NETS", "pose_net_init",
    "pose_net_batch", "pose_loss", "predict_poses", "train_pose_net", "adapt_pose_net", "save_pose_net",
    "load_pose_net", "pretrained_pose_net",
]
