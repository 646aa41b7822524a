"""The ``jaxsr`` command: one module per subcommand, each thin over the library.

Every error a user can cause (bad flag values, missing or unreadable files, an
output that exists) is reported as one line on stderr with exit code 2, never
a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jaxsr._version import __version__
from jaxsr.cli import (
    clid,
    deconvolve,
    demo,
    denoise,
    fit_psf,
    fuse,
    localize,
    render,
    resolution,
    simulate,
    simulate_particles,
    simulate_smlm,
    train_denoiser,
    undrift,
)

SUBCOMMANDS = {
    "demo": demo,
    "simulate": simulate,
    "resolution": resolution,
    "fit-psf": fit_psf,
    "deconvolve": deconvolve,
    "clid": clid,
    "denoise": denoise,
    "train-denoiser": train_denoiser,
    "simulate-smlm": simulate_smlm,
    "localize": localize,
    "render": render,
    "undrift": undrift,
    "simulate-particles": simulate_particles,
    "fuse": fuse,
}

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxsr",
        description="Differentiable super-resolution fluorescence microscopy in JAX.",
    )
    parser.add_argument("--version", action="version", version=f"jaxsr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxsr`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"jaxsr {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jaxsr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
