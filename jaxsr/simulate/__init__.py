"""Synthetic samples in physical units (nm) and their rendering onto pixel grids.

Structures (:mod:`jaxsr.simulate.structures`) return point clouds ``(n, 2)`` or
polylines ``(n_lines, n_points, 2)`` with the last axis ``(y, x)`` in nm;
random ones are deterministic functions of an explicit ``jax.random`` key.
Rendering (:mod:`jaxsr.simulate.render`) turns them into ``(y, x)`` photon
images, conserving photons and differentiable in positions and weights.
"""

from jaxsr.simulate.dataset import STRUCTURES, WidefieldSimulation, simulate_widefield, widefield_psf
from jaxsr.simulate.rsfp import RSFPSeries, rsfp_background, simulate_rsfp_series
from jaxsr.simulate.render import render_points, render_polyline
from jaxsr.simulate.structures import (
    bead_pairs,
    filaments,
    hollow_rings,
    line_pairs,
    random_beads,
    ring,
    tubular_network,
)

__all__ = [
    "filaments",
    "line_pairs",
    "bead_pairs",
    "ring",
    "random_beads",
    "tubular_network",
    "hollow_rings",
    "render_points",
    "render_polyline",
    "simulate_widefield",
    "widefield_psf",
    "WidefieldSimulation",
    "STRUCTURES",
    "simulate_rsfp_series",
    "rsfp_background",
    "RSFPSeries",
]
