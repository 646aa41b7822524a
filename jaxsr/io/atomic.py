"""Atomic, no-clobber file writes.

Every file that jaxsr writes (images, ground truth, metrics) goes through
:func:`atomic_path`: the writer fills a hidden temporary file next to the
target, which is renamed onto the target only when the writer has finished
without error. A reader therefore never sees a half-written file, a crash or an
exception leaves any existing file untouched, and nothing is overwritten unless
``overwrite=True`` is passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_path", "write_json"]

# Second-to-last suffixes kept with the last one on the temporary name, so that
# writers which look at the file name (``.ome.tif`` -> OME-TIFF) still work.
_COMPOUND_SUFFIXES = (".ome", ".tar", ".nii")


def as_path(path: Any, name: str = "path") -> Path:
    """Convert a ``str``/``os.PathLike`` to a :class:`~pathlib.Path` or raise ``TypeError``."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"argument '{name}': expected a str or os.PathLike path, got {type(path).__name__}")
    fspath = os.fspath(path)
    if isinstance(fspath, bytes) or fspath == "":
        raise ValueError(f"argument '{name}': expected a non-empty text path, got {path!r}")
    return Path(fspath)


def _temporary_suffix(target: Path) -> str:
    suffixes = target.suffixes
    if len(suffixes) >= 2 and suffixes[-2].lower() in _COMPOUND_SUFFIXES:
        return "".join(suffixes[-2:])
    return target.suffix


def _exists_message(target: Path) -> str:
    return (
        f"argument 'path': '{target}' already exists; pass overwrite=True "
        "(--overwrite on the command line) to replace it"
    )


def _remove(path: Path) -> None:
    """Delete a temporary file (or directory) if present; never raises."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)


def _fsync_file(path: Path) -> None:
    if path.is_dir():
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Persist a rename on POSIX; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _move_no_clobber(tmp: Path, target: Path) -> None:
    """Move ``tmp`` onto ``target`` unless ``target`` exists (checked atomically).

    A hard link fails when the target exists, closing the window between the
    existence check at entry and the rename; file systems without hard links fall
    back to a check followed by :func:`os.replace`.
    """
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise FileExistsError(_exists_message(target)) from None
    except (OSError, NotImplementedError, AttributeError):
        if os.path.lexists(target):
            raise FileExistsError(_exists_message(target)) from None
        os.replace(tmp, target)
    else:
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Context manager yielding a temporary path that replaces ``path`` on success.

    The temporary file lives in the same directory as ``path`` (so the final
    :func:`os.replace` is an atomic rename on one file system), has a hidden name
    ``.<name>.tmp-<random><suffix>`` and keeps the target's suffix (``.tif``, or
    ``.ome.tif`` for compound suffixes) for writers that choose a format from the
    extension. The yielded path does not exist yet: the caller's writer creates
    it. When the ``with`` block exits normally, the file is fsynced and renamed
    onto ``path``; when it raises (any exception, ``KeyboardInterrupt``
    included), the temporary file is deleted and an existing ``path`` is left
    byte-identical.

    Missing parent directories are *not* created (a typo in a directory name
    should not silently create a new tree): a ``FileNotFoundError`` naming the
    directory is raised instead. With ``overwrite=False`` the no-clobber check is
    made on entry and again, atomically, at the final move, so a file created
    by someone else in the meantime is not replaced either. With
    ``overwrite=True`` a symbolic link at ``path`` is replaced by the new file
    (the file it pointed to is left alone).

    Args:
        path: the final file path (``str`` or ``os.PathLike``).
        overwrite: replace ``path`` if it exists. Default ``False``.

    Yields:
        The temporary :class:`~pathlib.Path` to write to.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is ``False`` (the message
            names the path and says to pass ``overwrite=True`` / ``--overwrite``).
        FileNotFoundError: the parent directory does not exist, or the ``with``
            block wrote nothing to the temporary path.
        IsADirectoryError: ``path`` is an existing directory.
        TypeError: ``path`` is not a str/PathLike, or ``overwrite`` not a bool.

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> target = os.path.join(folder, "out.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> with open(target) as f:
    ...     f.read()
    'hello'
    >>> sorted(os.listdir(folder))  # no temporary file left behind
    ['out.txt']
    >>> import shutil; shutil.rmtree(folder)
    """
    target = as_path(path, "path")
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"argument 'overwrite': expected a bool, got {type(overwrite).__name__}")
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"argument 'path': directory '{parent}' does not exist (it is not created automatically); "
            f"create it first to write '{target.name}'"
        )
    if target.is_dir():
        raise IsADirectoryError(f"argument 'path': '{target}' is a directory, not a file")
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(_exists_message(target))

    tmp = parent / f".{target.name}.tmp-{secrets.token_hex(6)}{_temporary_suffix(target)}"
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    try:
        if not os.path.lexists(tmp):
            raise FileNotFoundError(
                f"argument 'path': nothing was written to the temporary file '{tmp}', "
                f"'{target}' is left unchanged"
            )
        _fsync_file(tmp)
        if overwrite:
            os.replace(tmp, target)
        else:
            _move_no_clobber(tmp, target)
        _fsync_dir(parent)
    except BaseException:
        _remove(tmp)
        raise


def _json_default(obj: Any) -> Any:
    """Encode NumPy/JAX values, paths and dataclasses; anything else is an error."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "__array__") and not isinstance(obj, type):
        arr = np.asarray(obj)
        if arr.dtype.kind in "biuf":
            return arr.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _null_nonfinite(value: Any) -> Any:
    """Replace NaN/inf floats anywhere in a JSON-like tree by ``None``."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, list):
        return [_null_nonfinite(v) for v in value]
    if isinstance(value, dict):
        return {k: _null_nonfinite(v) for k, v in value.items()}
    return value


def write_json(
    path: str | os.PathLike, obj: Any, *, overwrite: bool = False, indent: int = 2, nonfinite: str = "error"
) -> None:
    """Write ``obj`` as strict JSON to ``path``, atomically (see :func:`atomic_path`).

    The object is serialised completely before anything touches the disk, so a
    serialisation error leaves an existing file untouched. Besides the JSON
    types, NumPy scalars and arrays, JAX arrays (as nested lists), paths (as
    strings) and dataclass instances (as dicts, e.g. :class:`ImageMetadata`) are
    accepted. The output is UTF-8, indented, with a trailing newline.

    NaN and infinities are refused by default (strict JSON has no such values
    and many parsers reject the ``NaN`` token); with ``nonfinite="null"`` they
    are written as ``null`` (for result tables where "not measurable" is a
    legitimate value, e.g. the pSNR of an image against itself).

    Args:
        path: output file (``str`` or ``os.PathLike``); its directory must exist.
        obj: the value to write.
        overwrite: replace an existing file. Default ``False``.
        indent: spaces of indentation. Default 2.
        nonfinite: ``"error"`` (default) or ``"null"``: what to do with NaN/inf.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is ``False``.
        FileNotFoundError: the directory of ``path`` does not exist.
        TypeError: ``obj`` holds a value JSON cannot represent.
        ValueError: ``obj`` holds NaN or an infinity and ``nonfinite="error"``;
            an unknown ``nonfinite``.

    >>> import json, os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> target = os.path.join(folder, "metrics.json")
    >>> write_json(target, {"psnr_db": np.float32(31.5), "shape": (16, 16)})
    >>> with open(target) as f:
    ...     json.load(f)
    {'psnr_db': 31.5, 'shape': [16, 16]}
    >>> import shutil; shutil.rmtree(folder)
    """
    target = as_path(path, "path")
    if isinstance(indent, bool) or not isinstance(indent, (int, np.integer)) or indent < 0:
        raise TypeError(f"argument 'indent': expected a non-negative int, got {indent!r}")
    if nonfinite not in ("error", "null"):
        raise ValueError(f"argument 'nonfinite': expected 'error' or 'null', got {nonfinite!r}")
    try:
        if nonfinite == "null":
            obj = _null_nonfinite(json.loads(json.dumps(obj, allow_nan=True, default=_json_default)))
        text = json.dumps(obj, indent=int(indent), allow_nan=False, default=_json_default, ensure_ascii=False)
    except ValueError as err:
        hint = "; replace NaN/infinite values with None" if "Out of range" in str(err) else ""
        raise ValueError(f"argument 'obj': cannot be written as strict JSON: {err}{hint}") from err
    except TypeError as err:
        raise TypeError(f"argument 'obj': {err}") from err
    with atomic_path(target, overwrite=overwrite) as tmp:
        with open(tmp, "x", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.write("\n")
