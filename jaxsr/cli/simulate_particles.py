"""Simulate particles for fusion (nuclear pores or DNA-origami grids) and write them with their true poses.

Writes OUTPUT (a particle table: particle, x [nm], y [nm][, z [nm]],
uncertainty [nm][, uncertainty_z [nm]], one row per localization; the input of
`jaxsr fuse`) and OUTPUT_STEM_truth.csv (one row per particle: particle,
qw, qx, qy, qz (3D) or angle [deg] (2D), tx [nm], ty [nm][, tz [nm]]; the pose
that moves the structure into the particle). --structure npc is a 3D
Nup96/Nup107-like pore (two 8-fold rings, radius 53.5 nm, 50 nm apart, two
sites per corner); origami a 2D 3 x 4 grid of 20 nm pitch. Each site is
labelled with probability --labelling and gives on average --locs-per-site
localizations with --precision (lateral [axial]) nm error. Nothing is written
if a file exists, unless --overwrite.
"""

from __future__ import annotations

import argparse
import os

from jaxsr.cli._common import positive_float, positive_int

HELP = "simulate particles (nuclear pores, DNA origami) for fusion, with true poses (CSV)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", help="output particle table, .csv")
    p.add_argument("--structure", choices=["npc", "origami"], default="npc",
                   help="npc (3D nuclear pore) or origami (2D grid) (default npc)")
    p.add_argument("--particles", type=positive_int, default=50, metavar="N", help="number of particles (default 50)")
    p.add_argument("--labelling", type=positive_float, default=0.5, metavar="F",
                   help="degree of labelling, probability that a site is labelled (default 0.5)")
    p.add_argument("--locs-per-site", type=positive_float, default=2.0, metavar="F",
                   help="mean localizations per labelled site, >= 1 (default 2)")
    p.add_argument("--precision", type=positive_float, nargs="+", default=None, metavar="NM",
                   help="localization precision, nm: LATERAL [AXIAL] (default 3 9 for npc, 3 for origami)")
    p.add_argument("--rotations", choices=["random", "inplane", "none"], default="random",
                   help="random (uniform), inplane (3D: about z with a random flip) or none (default random)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run(args: argparse.Namespace) -> int:
    import jax

    from jaxsr.fusion import npc_sites, origami_sites, simulate_particles, write_particles_csv, write_truth_csv

    base = os.path.basename(args.output)
    if not base.lower().endswith(".csv"):
        raise ValueError(f"OUTPUT: expected a .csv name, got {args.output!r}")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"OUTPUT: folder does not exist: {folder}")
    truth_path = os.path.join(os.path.dirname(args.output), f"{base[:-4]}_truth.csv")
    for path in (args.output, truth_path):
        if os.path.isdir(path):
            raise IsADirectoryError(f"OUTPUT: is a folder, expected a file: {path}")
        if os.path.exists(path) and not args.overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    dim = 3 if args.structure == "npc" else 2
    if args.labelling > 1:
        raise ValueError(f"--labelling: expected a degree of labelling in (0, 1], got {args.labelling:g}")
    if args.locs_per_site < 1:
        raise ValueError(f"--locs-per-site: expected at least 1, got {args.locs_per_site:g}")
    if args.rotations == "inplane" and dim == 2:
        raise ValueError("--rotations: inplane is for 3D structures (npc); origami is 2D")
    precision = args.precision if args.precision is not None else ([3.0, 9.0] if dim == 3 else [3.0])
    if len(precision) > (2 if dim == 3 else 1):
        expect = "LATERAL [AXIAL]" if dim == 3 else "one value (2D)"
        raise ValueError(f"--precision: expected {expect} for {args.structure}, got {len(precision)} values")
    sites = npc_sites() if args.structure == "npc" else origami_sites()
    sim = simulate_particles(jax.random.key(args.seed), sites, n_particles=args.particles, labelling=args.labelling,
                             locs_per_site=args.locs_per_site, precision_nm=tuple(precision),
                             rotations=args.rotations)
    write_particles_csv(args.output, sim.particles, overwrite=args.overwrite)
    write_truth_csv(truth_path, sim, overwrite=args.overwrite)
    counts = sim.particles.counts
    print(f"wrote {args.output}: {args.particles} {args.structure} particles ({dim}D, {args.rotations} rotations), "
          f"{int(counts.sum())} localizations ({int(counts.min())}-{int(counts.max())} per particle); "
          f"truth {truth_path}")
    return 0
