"""Fuse SMLM particles (point clouds) into one super-particle and measure it.

Reads INPUT (a .mat file in the smlm_datafusion / joint-registration layout, or
a CSV table with a particle column (--particle-column), x [nm], y [nm], optional
z [nm] and uncertainty [nm] / uncertainty_z [nm], ThunderSTORM's crlb_x [nm]
..., or sigma_xy [nm] / sigma [nm] and sigma_z [nm]; a sigma [nm] of a PSF width,
median above 50 nm, needs --sigma and is then ignored), drops particles with
fewer than 3 localizations (with a count), registers every particle to a
dynamic template (jaxsr.fusion.fuse: multi-start grid search over rotations,
then refinement; --symmetry/--flip impose a known symmetry, --inplane restricts
3D rotations to the plane) and writes FUSED.csv (every kept localization in the
fused frame with an inlier flag: for a CSV, its rows in input order with all
their columns; for a .mat, grouped by particle), and next to it FUSED.poses.csv
(one pose per particle), FUSED.png (the fused inliers: xy, or in 3D xy, xz and
the two z-halves) and FUSED.summary.json (options, history, ring measurements,
FRC of two halves). Nothing is written until the fusion has finished, each file
atomically, and nothing if one of them exists, unless --overwrite.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import time

import numpy as np

from jaxsr.cli._common import check_output, check_outputs, positive_float, positive_int, require_input

HELP = "fuse SMLM particles (.mat or CSV) into one super-particle"

SUFFIXES = {"fused": ".csv", "poses": ".poses.csv", "png": ".png", "summary": ".summary.json"}
MIN_POINTS = 3          # particles with fewer localizations are dropped (with a count)
FRC_PIXEL_NM = 2.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="particles: .mat (points/sigma per particle) or .csv (particle, x [nm], y [nm], ...)")
    p.add_argument("-o", "--output", required=True, metavar="FUSED.csv",
                   help="fused localizations (.csv); FUSED.poses.csv, FUSED.png and FUSED.summary.json are "
                        "written next to it")
    p.add_argument("--particle-column", default="particle", metavar="NAME",
                   help="CSV column holding the particle id (default particle)")
    p.add_argument("--dim", type=int, choices=[2, 3], default=None,
                   help="the particles' dimension; a table of the other one is refused (default: from the "
                        "input, 3D when it has a z column)")
    p.add_argument("--symmetry", type=positive_int, default=1, metavar="N",
                   help="known n-fold rotational symmetry used as a prior (default 1 = none; 8 for nuclear pores)")
    p.add_argument("--flip", action="store_true", help="3D: the structure also has the up/down flip (pores)")
    p.add_argument("--inplane", action="store_true", help="3D: particles lie in the plane (rotations about z)")
    p.add_argument("--iterations", type=positive_int, default=5, metavar="N", help="template iterations (default 5)")
    p.add_argument("--init", choices=["grid", "learned", "all_to_all"], default="grid",   # jaxsr.fusion.INITS
                   help="initial poses: multi-start grid search over rotations (default grid), 'learned': a "
                        "pose network proposes them (fast; particles it fits poorly fall back to the grid), or "
                        "'all_to_all': every pair of particles registered and the poses synchronised (the "
                        "classical baseline; its time grows with the square of the particle count)")
    p.add_argument("--pose-model", default=None, metavar="DIR",
                   help="pose network for --init learned (default: the shipped one for the data: 3D with "
                        "--symmetry 8 --flip -> npc3d, 2D with --symmetry 2 -> origami2d)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed, picks the seed particles (default 0)")
    p.add_argument("--restarts", type=positive_int, default=1, metavar="N",
                   help="independent seeds, each fused for 2 iterations; the best-fitting one goes on (default 1; "
                        "try 4 for sparse periodic particles such as DNA-origami grids; only with --init grid)")
    p.add_argument("--sigma", type=positive_float, default=None, metavar="NM",
                   help="localization uncertainty, nm, for files without uncertainty columns")
    p.add_argument("--pixel-size", type=positive_float, default=1.0, metavar="NM",
                   help="pixel of fused.png, nm (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace files of an earlier run")


class _Collect(logging.Handler):
    """Keep the reader's warnings (printed by the CLI with its own flag names)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _flag_names(message: str) -> str:
    """The library's argument names in a reader message as the CLI spells them."""
    return (message.replace("argument 'path': ", "").replace("pass default_sigma_nm", "pass --sigma NM")
            .replace("default_sigma_nm", "--sigma"))


def _read(args: argparse.Namespace):
    from jaxsr.fusion import read_particles

    logger = logging.getLogger("jaxsr.fusion.particles")
    collect = _Collect()
    logger.addHandler(collect)
    try:
        particles = read_particles(args.input, default_sigma_nm=args.sigma, id_column=args.particle_column)
    except ValueError as err:
        message = _flag_names(str(err))
        name = "--particle-column" if f"column(s) {args.particle_column}" in message else "INPUT"
        raise ValueError(f"{name}: {message}") from None
    finally:
        logger.removeHandler(collect)
    from jaxsr.fusion.io import _header_names

    for message in collect.messages:     # e.g. a PSF-width sigma [nm] column ignored for --sigma
        print(f"warning: {_flag_names(_header_names(message))}")
    return particles


def output_paths(output: str) -> dict[str, str]:
    """The four files of one run: ``FUSED.csv`` and, next to it, ``FUSED.poses.csv``, ``FUSED.png`` and
    ``FUSED.summary.json``."""
    stem = output[:-len(".csv")] if output.lower().endswith(".csv") else output
    paths = {key: stem + suffix for key, suffix in SUFFIXES.items()}
    paths["fused"] = output                 # the user's own name, suffix case included (Run.CSV)
    return paths


def _check_render_size(particles, pixel_size_nm: float) -> None:
    """Refuse a --pixel-size that would make fused.png huge, before the fusion runs (the fused particle
    is about as large as the centred input particles)."""
    from jaxsr.fusion import centre_particles
    from jaxsr.fusion.io import MAX_RENDER_PIXELS

    centred, _ = centre_particles(particles)
    pts = np.asarray(centred.points)[np.asarray(centred.mask, bool)]
    extent = float(np.percentile(np.linalg.norm(pts, axis=1), 99.5)) + 10.0
    n_bins = int(np.ceil(2 * extent / pixel_size_nm))
    if n_bins > MAX_RENDER_PIXELS:
        raise ValueError(f"--pixel-size: {pixel_size_nm:g} nm gives about {n_bins} pixels across the fused "
                         f"particle (at most {MAX_RENDER_PIXELS}); use a larger pixel")


@contextlib.contextmanager
def _progress():
    """Show the fusion's per-iteration log lines on stderr when it is a terminal."""
    logger = logging.getLogger("jaxsr.fusion.fuse")
    if not sys.stderr.isatty():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _pose_model(args: argparse.Namespace, dim: int):
    """The pose network of ``--init learned``: ``--pose-model DIR`` or the shipped one matching the data."""
    from jaxsr.fusion import load_pose_net, pretrained_pose_net

    if args.pose_model is not None:
        require_input(args.pose_model, "--pose-model")
        try:
            model = load_pose_net(args.pose_model)
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f"--pose-model: {str(err).replace('argument ' + repr('model') + ': ', '')}") from None
        if model.config.dim != dim:
            raise ValueError(f"--pose-model: {args.pose_model} is a network for {model.config.dim}D particles, "
                             f"{args.input} holds {dim}D particles")
        return model
    if dim == 3 and args.symmetry == 8 and args.flip:
        name = "npc3d"
    elif dim == 2 and args.symmetry == 2:
        name = "origami2d"
    else:
        sym = f"--symmetry {args.symmetry}" + (" --flip" if args.flip else "")
        raise ValueError(f"--init learned: no shipped pose network for {dim}D particles with {sym} (shipped: 3D "
                         "nuclear pores with --symmetry 8 --flip, 2D origami grids with --symmetry 2); train one "
                         "with benchmarks/train_pose_net.py (or jaxsr.fusion.adapt_pose_net) and pass --pose-model DIR")
    try:
        return pretrained_pose_net(name)
    except FileNotFoundError:
        raise ValueError(f"--init learned: the shipped pose network {name!r} is missing from this installation; "
                         "pass --pose-model DIR") from None


def _num(x: float | None, fmt: str = ".1f", unit: str = " nm") -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:{fmt}}{unit}"


def run(args: argparse.Namespace) -> int:
    import jax

    from jaxsr.fusion import (
        fuse,
        fusion_frc,
        render_fusion_png,
        ring_measurements,
        write_fused_table,
        write_fusion_csv,
        write_poses_csv,
    )
    from jaxsr.io import write_json

    require_input(args.input, "INPUT")
    check_output(args, [args.input], suffixes=(".csv",))
    paths = output_paths(args.output)
    check_outputs(paths, overwrite=args.overwrite, inputs=(args.input,))
    if args.restarts > 1 and args.init != "grid":
        raise ValueError(f"--restarts: only with --init grid (--init {args.init} draws no seed)")
    if args.particle_column != "particle" and not args.input.lower().endswith(".csv"):
        raise ValueError("--particle-column: only for CSV input (a .mat file holds one particle per entry)")
    particles = _read(args)
    if args.dim is not None and particles.dim != args.dim:
        raise ValueError(f"--dim: {args.dim}D particles asked for, {args.input} holds {particles.dim}D particles "
                         f"({'a' if particles.dim == 3 else 'no'} z coordinate)")
    if particles.dim == 2 and (args.flip or args.inplane):
        flag = "--flip" if args.flip else "--inplane"
        raise ValueError(f"{flag}: only for 3D particles; {args.input} holds 2D particles")
    few = np.asarray(particles.counts) < MIN_POINTS
    if few.any():
        print(f"warning: dropped {int(few.sum())} of {particles.n_particles} particles with fewer than "
              f"{MIN_POINTS} localizations ({int(np.asarray(particles.counts)[few].sum())} localizations)")
        particles = particles.subset(np.flatnonzero(~few))
    if particles.n_particles < 2:
        raise ValueError(f"INPUT: fusion needs at least 2 particles with {MIN_POINTS} or more localizations, "
                         f"{args.input} holds {particles.n_particles}")
    counts = particles.counts
    print(f"read {particles.n_particles} {particles.dim}D particles from {args.input}: {int(counts.sum())} "
          f"localizations ({int(counts.min())}-{int(counts.max())} per particle)")
    _check_render_size(particles, args.pixel_size)
    pose_model = _pose_model(args, particles.dim) if args.init == "learned" else None

    t0 = time.perf_counter()
    with _progress():
        result = fuse(jax.random.key(args.seed), particles, symmetry=args.symmetry, flip=args.flip,
                      inplane=args.inplane, n_iter=args.iterations, init=args.init, pose_model=pose_model,
                      restarts=args.restarts)
    seconds = time.perf_counter() - t0
    n_fallback = sum(int(h.get("n_fallback", 0)) for h in result.history)
    if args.init == "learned" and result.history and result.history[0].get("learned_fallback"):
        print("--init learned: the pose network does not fit these particles; fused with the grid instead")
    elif n_fallback:
        print(f"--init learned: {n_fallback} particles with a poor fit were re-registered with the grid")

    inl = np.asarray(result.inliers, bool)
    mask = np.asarray(particles.mask, bool)
    fused_inliers = np.asarray(result.points)[mask & inl[:, None]]
    ring = None
    if args.symmetry > 1:
        try:
            ring = ring_measurements(fused_inliers)._asdict()
        except ValueError:
            ring = None
    try:
        frc = fusion_frc(np.asarray(result.points)[inl], mask[inl], pixel_size_nm=FRC_PIXEL_NM)
        frc_nm = float(frc.resolution_nm) if frc.crossed else None
        frc_text = _num(frc_nm) if frc.crossed else "not reached (curve stays above 1/7)"
    except (ValueError, FloatingPointError, MemoryError) as err:
        frc_nm, frc_text = None, f"n/a ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    mean_corr = float(np.mean(np.asarray(result.correlation)[inl]))

    render_fusion_png(paths["png"], result, particles, pixel_size_nm=args.pixel_size, overwrite=args.overwrite)
    if args.input.lower().endswith(".csv"):   # the input's rows and columns, in its order
        write_fused_table(paths["fused"], args.input, result, particles, id_column=args.particle_column,
                          overwrite=args.overwrite)
    else:
        write_fusion_csv(paths["fused"], result, particles, overwrite=args.overwrite)
    write_poses_csv(paths["poses"], result, particles, overwrite=args.overwrite)
    summary = {
        "input": os.path.abspath(args.input),
        "options": {"symmetry": args.symmetry, "flip": args.flip, "inplane": args.inplane,
                    "iterations": args.iterations, "init": args.init, "seed": args.seed,
                    "restarts": args.restarts, "sigma_nm": args.sigma,
                    "pixel_size_nm": args.pixel_size, "pose_model": args.pose_model,
                    "particle_column": args.particle_column},
        "dim": particles.dim,
        "n_particles": particles.n_particles,
        "n_dropped_fewer_than_3": int(few.sum()),
        "n_localizations": int(counts.sum()),
        "n_inliers": int(inl.sum()),
        "mean_correlation": mean_corr,
        "history": result.history,
        "n_fallback": n_fallback if args.init == "learned" else None,
        "ring": ring,
        "frc_resolution_nm": frc_nm,
        "frc_pixel_size_nm": FRC_PIXEL_NM,
        "seconds": seconds,
    }
    write_json(paths["summary"], summary, overwrite=args.overwrite, nonfinite="null")

    print(f"fused {particles.n_particles} particles in {seconds:.1f} s ({len(result.history)} iterations): "
          f"{int(inl.sum())} inliers, mean correlation {mean_corr:.3f}")
    if ring is not None:
        print(f"ring: radius {_num(ring['radius_nm'])}, separation {_num(ring['ring_separation_nm'])}, "
              f"{ring['n_corners']} corners (contrast {ring['symmetry_contrast']:.2f})")
    print(f"FRC resolution (two halves of the inliers, 1/7): {frc_text}")
    print(f"wrote {', '.join(paths.values())}")
    return 0
