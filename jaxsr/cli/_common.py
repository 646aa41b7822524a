"""Helpers shared by the subcommands (argument types, output paths)."""

from __future__ import annotations

import argparse
import os


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a finite float >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def background_value(text: str) -> float | str:
    """argparse type: ``auto`` or a finite float >= 0 (a background level)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return nonnegative_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number or 'auto', got {text!r}") from None


def auto_background(frames, spatial: int, flag: str = "--background") -> float:
    """One background for every frame of ``frames (n, *spatial)``: the median over frames of
    :func:`jaxsr.deconv.estimate_background` (said on stdout)."""
    import numpy as np

    from jaxsr.deconv import estimate_background

    per_frame = np.asarray(estimate_background(frames, spatial=spatial), np.float64).ravel()
    value = max(0.0, float(np.median(per_frame)))
    print(f"{flag} auto: {value:.6g} (5th percentile of the input smoothed by a 2-pixel Gaussian"
          f"{', median over its frames' if per_frame.size > 1 else ''})")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def require_input(path: str, flag: str) -> str:
    """An input file that must exist (one-line error naming the flag otherwise)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{flag}: no such file: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{flag}: is a directory, expected a file: {path}")
    return path


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name the same file: the same path once symbolic links are resolved
    (also when the file does not exist yet), or, both existing, the same inode (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:                     # one does not exist (or cannot be examined): not the same file
        return False


def check_output(args: argparse.Namespace, inputs: list[str], *,
                 suffixes: tuple[str, ...] = (".tif", ".tiff")) -> None:
    """Before any work: refuse an output name without one of ``suffixes`` (``.ome.tif`` ends in ``.tif``),
    an existing output (unless --overwrite), a missing folder, and never write over an input."""
    kinds = " or ".join(suffixes)
    what = f"a {kinds} file path"
    if not args.output.lower().endswith(suffixes):
        raise ValueError(f"--output: expected a {kinds} file, got {args.output}")
    out = os.path.abspath(args.output)
    for path in inputs:
        if path and same_file(path, args.output):
            raise ValueError(f"--output: {args.output} is an input file; inputs are never overwritten")
    if os.path.isdir(out):
        raise IsADirectoryError(f"--output: is a folder, expected {what}: {args.output}")
    if os.path.exists(out) and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it")
    folder = os.path.dirname(out)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--output: folder does not exist: {folder}")


def check_outputs(paths: dict[str, str], *, overwrite: bool, inputs: tuple[str, ...] = ()) -> None:
    """Before any work, for a command that writes several files: refuse one that would replace an input,
    one whose folder is missing, and one that exists (unless ``overwrite``)."""
    for path in paths.values():
        if any(p and same_file(p, path) for p in inputs):
            raise ValueError(f"--output: {path} would replace the input; inputs are never overwritten")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"output folder does not exist: {folder}")
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")


def check_flag_outputs(outputs: dict[str, str | None], *, overwrite: bool, inputs: tuple[str | None, ...] = (),
                       suffixes: dict[str, tuple[str, ...]] | None = None) -> None:
    """Before any work, for a command whose output files are optional flags (``{flag: path or None}``): refuse,
    naming the flag, a path without its ``suffixes[flag]``, one that is an input (symbolic and hard links
    included), a folder, one whose folder is missing, one that exists (unless ``overwrite``), and two flags
    naming the same file."""
    given = [(flag, path) for flag, path in outputs.items() if path]
    for i, (flag, path) in enumerate(given):
        want = (suffixes or {}).get(flag)
        if want and not path.lower().endswith(want):
            raise ValueError(f"{flag}: expected a {' or '.join(want)} file, got {path}")
        if any(p and same_file(p, path) for p in inputs):
            raise ValueError(f"{flag}: {path} is an input file; inputs are never overwritten")
        for other, earlier in given[:i]:
            if same_file(earlier, path):
                raise ValueError(f"{flag}: {path} is also the {other} file; give two different files")
        if os.path.isdir(path):
            raise IsADirectoryError(f"{flag}: is a folder, expected a file path: {path}")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{flag}: folder does not exist: {folder}")
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{flag}: {path} exists; pass --overwrite to replace it")


def output_dir(path: str, *, overwrite: bool) -> str:
    """Create the output folder if needed; files inside are still refused unless ``overwrite``."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"--out: exists and is not a folder: {path}")
    os.makedirs(path, exist_ok=True)
    return path


def output_axes(axes: str, ndim: int, spatial: int) -> str | None:
    """TIFF axes for an output of ``ndim`` dimensions whose last ``spatial`` (2 or 3) are space: the input's
    axes when they are valid for jaxsr's writer (letters of ``TZCYX``, one per dimension), else ``T`` for
    each leading axis before ``[Z]YX`` (tifffile names an axis it cannot identify ``Q``; a 3D PSF makes
    it ``Z``, a 2D PSF over frames makes it ``T``); ``None`` (the writer's default) when that is not
    possible either."""
    if len(axes) == ndim and set(axes) <= set("TZCYX") and len(set(axes)) == ndim and axes.endswith("YX"):
        return axes
    guess = "T" * (ndim - spatial) + ("ZYX" if spatial == 3 else "YX")
    return guess if len(guess) == ndim and guess.count("T") <= 1 else None


def pixel_size_from(args_value: float | None, meta_value: float | None, flag: str = "--pixel-size") -> float:
    """The pixel size from the flag, else from the file's metadata, else a clear error."""
    if args_value is not None:
        return float(args_value)
    if meta_value:
        return float(meta_value)
    raise ValueError(f"{flag}: the image has no pixel size in its metadata; pass {flag} NM")


CAMERAS = ("ideal", "emccd", "scmos")   # the presets of jaxsr.forward.camera_preset
CAMERA_KEY = "jaxsr_camera"             # the annotation jaxsr simulate / simulate-smlm write (jaxsr.io.write_image)


def recorded_camera(annotations: dict | None, flag: str) -> str | None:
    """The camera preset a jaxsr simulation recorded in a file's metadata, or ``None``; an unknown one is an
    error naming ``flag`` (the input)."""
    name = (annotations or {}).get(CAMERA_KEY)
    if name is not None and name not in CAMERAS:
        raise ValueError(f"{flag}: its metadata records an unknown camera {name!r} (known: {', '.join(CAMERAS)})")
    return name


def recorded_offset(meta, flag: str) -> float | None:
    """The ADU offset of the camera recorded in an image's metadata (:class:`jaxsr.io.ImageMetadata`), or
    ``None`` when none is recorded."""
    from jaxsr.forward import camera_preset

    name = recorded_camera(meta.extra.get("annotations"), flag)
    return None if name is None else float(camera_preset(name).offset_adu)


def say_recorded_offset(meta, offset: float, label: str, use: str) -> None:
    """Say on stdout that ``offset`` is the recorded camera's, ``label`` first and ``use`` after it."""
    name = meta.extra["annotations"][CAMERA_KEY]
    print(f"{label} {offset:g}: the offset of the {name} camera recorded in the input's metadata{use}")


def offset_or_recorded(value: float | None, meta, flag: str) -> float | None:
    """``value`` (a flag's) when given, else the offset of the camera recorded in the input's metadata by
    ``jaxsr simulate`` (said on stdout, naming ``flag``), else ``None``."""
    if value is not None:
        return float(value)
    offset = recorded_offset(meta, "INPUT")
    if offset is not None:
        say_recorded_offset(meta, offset, flag, f" (pass {flag} to change it)")
    return offset


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal), for RL callbacks."""

    def __init__(self, total: int, label: str):
        import sys

        self.total, self.label = int(total), label
        self.stream = sys.stderr
        self.live = self.stream.isatty()

    def __call__(self, done: int, info=None) -> None:
        if not self.live:
            return
        width = 30
        filled = int(width * min(done, self.total) / max(self.total, 1))
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
