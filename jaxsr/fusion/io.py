"""Particles and fusion results on disk: MATLAB ``.mat`` and CSV in, CSV and PNG out.

Reading (:func:`read_particles`):

- ``.mat`` in the layout of smlm_datafusion2d/3d and of the joint-registration
  project (wexw): a variable ``particles`` (or ``subParticles``) of shape
  ``(1, P)``, a cell array of structs (or a struct array) with fields ``points``
  (``n x 3`` or ``n x 2``, nm, axes ``x, y[, z]``) and ``sigma`` (``n x 2``
  lateral/axial, ``n x 1`` or ``n``, nm). MATLAB v7.3 (HDF5) files are not read.
- ``.csv`` with a header: a particle-id column (``particle``), ``x [nm]``,
  ``y [nm]``, optional ``z [nm]``, and uncertainties ``uncertainty [nm]``
  (lateral) and ``uncertainty_z [nm]`` (axial), or ThunderSTORM's
  ``crlb_x [nm]``, ``crlb_y [nm]``, ``crlb_z [nm]`` (``uncertainty_xy [nm]`` is
  read as ``uncertainty [nm]``), or ``sigma_xy [nm]`` / ``sigma [nm]`` and
  ``sigma_z [nm]`` (a ``sigma`` with a median above 50 nm is a PSF width: ignored
  when ``default_sigma_nm`` is given, refused otherwise; ``crlb_x`` and ``crlb_y`` come
  as a pair). A leading UTF-8 byte-order mark (Excel's "CSV UTF-8") is skipped.
  Header names map to table columns by replacing
  a trailing unit ``" [nm]"`` with ``"_nm"``; the table goes through
  :func:`jaxsr.fusion.particles_from_table`.

Writing: the particle table (:func:`write_particles_csv`, read back by
:func:`read_particles`), the fused localizations (:func:`write_fusion_csv`), one
pose per particle (:func:`write_poses_csv`, and the ground truth of a simulation
with :func:`write_truth_csv`; both read by :func:`read_poses_csv`) and a PNG panel
of the fused particle (:func:`render_fusion_png`). Positions in nm, axes
``(x, y[, z])``. Every write is atomic (:func:`jaxsr.io.atomic_path`) and refuses
to replace an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from jaxsr._validate import check_int, positive_float
from jaxsr.fusion.particles import Particles, log_dropped, make_particles, particles_from_table
from jaxsr.fusion.rotations import matrix_to_quaternion
from jaxsr.io.atomic import as_path, atomic_path

__all__ = [
    "read_particles",
    "write_particles_csv",
    "write_fusion_csv",
    "write_fused_table",
    "write_poses_csv",
    "write_truth_csv",
    "read_poses_csv",
    "render_fusion_png",
]

_MAT_VARIABLES = ("particles", "subParticles")
_ALIASES = {"uncertainty_xy_nm": "uncertainty_nm"}
MAX_RENDER_PIXELS = 4096   # pixels across one view of render_fusion_png


# ----------------------------------------------------------------------------------------------- reading


def _column_name(header: str) -> str:
    """``"x [nm]"`` -> ``"x_nm"``, ``"uncertainty_z [nm]"`` -> ``"uncertainty_z_nm"``, ``"particle"`` as is."""
    name = re.sub(r"\s*\[\s*([A-Za-z]+)\s*\]\s*$", r"_\1", header.strip())
    return _ALIASES.get(name, name)


def _header_names(message: str) -> str:
    """Column names in a :func:`particles_from_table` message as the CSV header writes them: ``x_nm`` ->
    ``x [nm]``, ``crlb_x_nm`` -> ``crlb_x [nm]`` (``default_sigma_nm``, an argument, is left as is)."""
    return re.sub(r"(?<![\w'])([a-z]+(?:_[a-z]+)?)_nm\b", r"\1 [nm]", message).replace(
        "default_sigma [nm]", "default_sigma_nm")


def _read_csv_columns(path: Path) -> dict[str, np.ndarray]:
    """The numeric columns of a CSV file with a header, keyed by :func:`_column_name` (empty cells -> NaN)."""
    with open(path, newline="", encoding="utf-8-sig") as fh:     # -sig: Excel's "CSV UTF-8" starts with a BOM
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"argument 'path': {path.name} is empty (expected a CSV header)") from None
        except (csv.Error, UnicodeDecodeError) as err:
            raise ValueError(f"argument 'path': {path.name} is not a readable CSV file ({err})") from None
        names = [_column_name(h) for h in header]
        if not any(names):
            raise ValueError(f"argument 'path': {path.name} has an empty header line")
        rows = []
        try:
            for lineno, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(names):
                    raise ValueError(f"argument 'path': {path.name} line {lineno} has {len(row)} values for "
                                     f"{len(names)} columns")
                try:
                    rows.append([float(c) if c.strip() else np.nan for c in row])
                except ValueError:
                    raise ValueError(f"argument 'path': {path.name} line {lineno} has a non-numeric value") from None
        except (csv.Error, UnicodeDecodeError) as err:
            raise ValueError(f"argument 'path': {path.name} is not a readable CSV file ({err})") from None
    if not rows:
        raise ValueError(f"argument 'path': {path.name} holds no localizations (a header but no rows)")
    data = np.asarray(rows, dtype=np.float64)
    return {name: data[:, k] for k, name in enumerate(names) if name}


def _particles_from_csv(path: Path, *, id_column: str, default_sigma_nm: float | None,
                        min_points: int) -> Particles:
    cols = _read_csv_columns(path)
    missing = [h for h, c in (("x [nm]", "x_nm"), ("y [nm]", "y_nm")) if c not in cols]
    if id_column not in cols:
        missing.insert(0, id_column)
    if missing:
        raise ValueError(f"argument 'path': {path.name} lacks the column(s) {', '.join(missing)} "
                         f"(found: {', '.join(cols)})")
    ids = cols[id_column]
    if not np.all(np.isfinite(ids)):
        raise ValueError(f"argument 'path': {path.name} has rows without a particle id in column {id_column!r}")
    try:
        particles = particles_from_table(cols, id_column=id_column, min_points=min_points,
                                         default_sigma_nm=default_sigma_nm)
    except ValueError as err:
        message = _header_names(str(err).replace("argument 'table': ", ""))
        raise ValueError(f"argument 'path': {path.name}: {message}") from None
    pid = np.asarray(particles.ids)
    if np.all(pid == np.round(pid)):
        particles = particles._replace(ids=pid.astype(np.int64))
    return particles


def _mat_fields(entry: Any) -> dict[str, Any] | None:
    """The fields of one MATLAB struct as loaded by :func:`scipy.io.loadmat` (a record or a 1x1 struct array)."""
    if isinstance(entry, np.ndarray) and entry.dtype == object and entry.size == 1:
        entry = entry.ravel()[0]
    if isinstance(entry, np.ndarray) and entry.dtype.names:
        if entry.size != 1:
            return None
        entry = entry.ravel()[0]
    if isinstance(entry, np.void) and entry.dtype.names:
        return {name: entry[name] for name in entry.dtype.names}
    return None


def _particles_from_mat(path: Path, *, default_sigma_nm: float | None, min_points: int) -> Particles:
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise ValueError(f"argument 'path': {path.name} is a MATLAB v7.3 (HDF5) file; save it with "
                         "save(..., '-v7') to read it") from None
    except Exception as err:  # noqa: BLE001 - scipy raises many types for corrupt files
        raise ValueError(f"argument 'path': {path.name} is not a readable MATLAB file "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    names = [k for k in data if not k.startswith("__")]
    var = next((v for v in _MAT_VARIABLES if v in data), None)
    if var is None:
        raise ValueError(f"argument 'path': {path.name} has no variable 'particles' (found: {', '.join(names)})")
    arr = np.asarray(data[var])
    entries = list(arr.ravel())
    if not entries:
        raise ValueError(f"argument 'path': {path.name}: variable {var!r} holds no particles")
    points, sigmas, ids = [], [], []
    dropped = [0, 0]                                   # particles, localizations
    for i, entry in enumerate(entries):
        fields = _mat_fields(entry)
        if fields is None or "points" not in fields:
            raise ValueError(f"argument 'path': {path.name}: {var}{{{i + 1}}} is not a struct with a 'points' "
                             "field")
        pts = np.asarray(fields["points"], dtype=np.float64)
        if pts.size == 0:
            dropped[0] += 1
            continue
        if pts.ndim != 2 or pts.shape[1] not in (2, 3):
            raise ValueError(f"argument 'path': {path.name}: {var}{{{i + 1}}}.points has shape {pts.shape}, "
                             "expected n x 2 or n x 3 (nm)")
        n = pts.shape[0]
        sig = fields.get("sigma")
        sig = None if sig is None or np.size(sig) == 0 else np.asarray(sig, dtype=np.float64)
        if sig is None:
            if default_sigma_nm is None:
                raise ValueError(f"argument 'path': {path.name}: {var}{{{i + 1}}} has no 'sigma' field; "
                                 "pass default_sigma_nm")
            sig = np.full(n, positive_float(default_sigma_nm, "default_sigma_nm"))
        elif sig.ndim == 2 and sig.shape == (n, 1):
            sig = sig[:, 0]
        elif sig.ndim == 2 and sig.shape == (1, n) and n > 1:
            sig = sig[0]
        if n < min_points:
            dropped[0] += 1
            dropped[1] += n
            continue
        points.append(pts)
        sigmas.append(sig)
        ids.append(i)
    if not points:
        raise ValueError(f"argument 'path': {path.name}: no particle has at least {min_points} localizations")
    log_dropped(dropped[0], len(entries), dropped[1], min_points)
    try:
        return make_particles(points, sigmas, ids=np.asarray(ids, np.int64))
    except ValueError as err:
        message = str(err).replace("argument 'points': ", "").replace("argument 'sigma': ", "")
        raise ValueError(f"argument 'path': {path.name}: {message}") from None


def read_particles(
    path: str | os.PathLike, *, id_column: str = "particle", default_sigma_nm: float | None = None,
    min_points: int = 1,
) -> Particles:
    """Read particles from a MATLAB ``.mat`` file or a CSV table (see the module docstring for the layouts).

    Args:
        path: a ``.mat`` or ``.csv`` file.
        id_column: the CSV column holding the particle id (header name as written, e.g. ``particle``).
        default_sigma_nm: the localization uncertainty (nm, 1 s.d.) for files without one.
        min_points: drop particles with fewer localizations.

    Returns:
        :class:`jaxsr.fusion.Particles` (``points``/``sigma`` ``(P, N, d)`` float32 in nm). ``ids``
        are the CSV particle ids (sorted; int64 when integral) or, for ``.mat``, the 0-based
        index of the particle in the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unknown extension, an empty file, missing columns / variables /
            uncertainties, non-numeric values, no particle with ``min_points`` localizations.

    Example:
        >>> import os, tempfile, numpy as np
        >>> from jaxsr.fusion import make_particles
        >>> folder = tempfile.mkdtemp()
        >>> target = os.path.join(folder, "p.csv")
        >>> write_particles_csv(target, make_particles([np.zeros((3, 2)), np.ones((5, 2))], 4.0))
        >>> read_particles(target).counts.tolist()
        [3, 5]
        >>> import shutil; shutil.rmtree(folder)
    """
    target = as_path(path, "path")
    min_points = check_int(min_points, "min_points", minimum=1)
    if default_sigma_nm is not None:
        default_sigma_nm = positive_float(default_sigma_nm, "default_sigma_nm")
    if not isinstance(id_column, str) or not id_column:
        raise TypeError(f"argument 'id_column': expected a column name, got {id_column!r}")
    suffix = target.suffix.lower()
    if suffix not in (".mat", ".csv"):
        raise ValueError(f"argument 'path': unknown particle file format {target.suffix or target.name!r} "
                         "(expected .mat or .csv)")
    if target.is_dir():
        raise IsADirectoryError(f"argument 'path': {target} is a directory, expected a .mat or .csv file")
    if not target.is_file():
        raise FileNotFoundError(f"argument 'path': no such particle file: {target}")
    if target.stat().st_size == 0:
        raise ValueError(f"argument 'path': {target.name} is empty")
    if suffix == ".mat":
        return _particles_from_mat(target, default_sigma_nm=default_sigma_nm, min_points=min_points)
    return _particles_from_csv(target, id_column=_column_name(id_column), default_sigma_nm=default_sigma_nm,
                               min_points=min_points)


# ----------------------------------------------------------------------------------------------- writing


def _fmt(value: float) -> str:
    """A float with 9 significant digits (exact for float32), ``nan`` for NaN."""
    return "nan" if not np.isfinite(value) else f"{value:.9g}"


def _fmt_id(value: Any) -> str:
    v = np.asarray(value)
    if v.dtype.kind in "iub":
        return str(int(v))
    if v.dtype.kind == "f" and np.isfinite(v) and float(v) == round(float(v)):
        return str(int(v))
    return str(v.item()) if v.dtype.kind == "f" else str(value)


def _write_rows(path: Any, header: list[str], rows: Any, *, overwrite: bool, what: str = ".csv") -> None:
    """Atomic CSV write: the header quoted (as ThunderSTORM), the rows as given (strings)."""
    target = as_path(path, "path")
    if target.suffix.lower() != what:
        raise ValueError(f"argument 'path': expected a {what} file name, got {target.name!r}")
    with atomic_path(target, overwrite=overwrite) as tmp:
        with open(tmp, "x", newline="", encoding="utf-8") as fh:
            csv.writer(fh, quoting=csv.QUOTE_ALL).writerow(header)
            w = csv.writer(fh, quoting=csv.QUOTE_MINIMAL)
            for row in rows:
                w.writerow(row)


def _check_particles(particles: Any, name: str = "particles") -> Particles:
    if not isinstance(particles, Particles):
        raise TypeError(f"argument '{name}': expected Particles, got {type(particles).__name__}")
    return particles


def _check_result(result: Any, particles: Particles) -> None:
    for attr in ("rotations", "translations", "correlation", "inliers", "points"):
        if not hasattr(result, attr):
            raise TypeError(f"argument 'result': expected a FusionResult, got {type(result).__name__}")
    p, n, d = np.shape(particles.points)
    if np.shape(result.points) != (p, n, d) or np.shape(result.rotations) != (p, d, d):
        raise ValueError(f"argument 'result': poses/points of shape {np.shape(result.rotations)} / "
                         f"{np.shape(result.points)} do not match {p} particles of {n} x {d}")


def write_particles_csv(path: str | os.PathLike, particles: Particles, *, overwrite: bool = False) -> None:
    """Write particles as a CSV table, one row per real localization (read back by :func:`read_particles`).

    Columns: ``particle, x [nm], y [nm][, z [nm]]``, then the lateral uncertainty as
    ``uncertainty [nm]`` (or ``crlb_x [nm], crlb_y [nm]`` when the x and y
    uncertainties differ anywhere) and, in 3D, ``uncertainty_z [nm]``. Values carry
    9 significant digits (float32 round-trips exactly).

    Args:
        path: output ``.csv`` file; its folder must exist.
        particles: :class:`jaxsr.fusion.Particles`; the particle column holds ``particles.ids``.
        overwrite: replace an existing file.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: a name not ending in ``.csv``.
    """
    particles = _check_particles(particles)
    pts = np.asarray(particles.points, np.float64)
    sig = np.asarray(particles.sigma, np.float64)
    mask = np.asarray(particles.mask, bool)
    ids = np.asarray(particles.ids)
    d = pts.shape[-1]
    same = np.array_equal(np.asarray(particles.sigma)[..., 0][mask], np.asarray(particles.sigma)[..., 1][mask])
    header = ["particle", "x [nm]", "y [nm]"] + (["z [nm]"] if d == 3 else [])
    header += ["uncertainty [nm]"] if same else ["crlb_x [nm]", "crlb_y [nm]"]
    header += ["uncertainty_z [nm]"] if d == 3 else []
    sig_cols = ([0] if same else [0, 1]) + ([2] if d == 3 else [])

    def rows():
        for p, n in zip(*np.nonzero(mask)):
            yield [_fmt_id(ids[p])] + [_fmt(v) for v in pts[p, n]] + [_fmt(sig[p, n, k]) for k in sig_cols]

    _write_rows(path, header, rows(), overwrite=overwrite)


def write_fusion_csv(path: str | os.PathLike, result: Any, particles: Particles, *, overwrite: bool = False) -> None:
    """Write the fused localizations (every particle's, moved into the fused frame) as CSV.

    Columns: ``particle, x [nm], y [nm][, z [nm]], uncertainty [nm][, uncertainty_z [nm]], inlier``
    with positions from ``result.points``, the localization's own uncertainty
    (lateral: the rms of its x and y uncertainty; in the particle's camera frame)
    and ``inlier`` 1 for particles used in the final template, 0 for rejected ones.
    The file is itself a particle table for :func:`read_particles`.

    Args:
        path: output ``.csv`` file.
        result: :class:`jaxsr.fusion.FusionResult` of ``particles``.
        particles: the :class:`jaxsr.fusion.Particles` that were fused.
        overwrite: replace an existing file.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: ``result`` does not match ``particles``; a name not ending in ``.csv``.
    """
    particles = _check_particles(particles)
    _check_result(result, particles)
    pts = np.asarray(result.points, np.float64)
    sig = np.asarray(particles.sigma, np.float64)
    mask = np.asarray(particles.mask, bool)
    ids = np.asarray(particles.ids)
    inl = np.asarray(result.inliers, bool)
    d = pts.shape[-1]
    lateral = np.sqrt(0.5 * (sig[..., 0] ** 2 + sig[..., 1] ** 2))
    header = ["particle", "x [nm]", "y [nm]"] + (["z [nm]"] if d == 3 else []) + ["uncertainty [nm]"]
    header += (["uncertainty_z [nm]"] if d == 3 else []) + ["inlier"]

    def rows():
        for p, n in zip(*np.nonzero(mask)):
            row = [_fmt_id(ids[p])] + [_fmt(v) for v in pts[p, n]] + [_fmt(lateral[p, n])]
            row += ([_fmt(sig[p, n, 2])] if d == 3 else []) + [str(int(inl[p]))]
            yield row

    _write_rows(path, header, rows(), overwrite=overwrite)


def write_fused_table(path: str | os.PathLike, source: str | os.PathLike, result: Any, particles: Particles, *,
                      id_column: str = "particle", overwrite: bool = False) -> None:
    """Write the rows of a source CSV table moved into the fused frame, in the source's order.

    Every row whose particle was fused is kept with all its columns as written (frame, photons, ...);
    ``x [nm]``, ``y [nm]`` (and ``z [nm]`` for 3D particles) become the position in the fused frame,
    ``R_p x + t_p`` with the row's particle ``p``, and an ``inlier`` column (1 for particles used in the
    final template, 0 for rejected ones) is appended, or replaced when the source has one. Rows of
    particles that were not fused (too few localizations, a negative id) and blank rows are left out.
    Uncertainty columns are copied unchanged (they stay in the particle's camera frame).
    :func:`write_fusion_csv` writes the same positions grouped by particle, from ``particles`` alone.

    Args:
        path: output ``.csv`` file.
        source: the CSV that ``particles`` was read from (:func:`read_particles`).
        result: :class:`jaxsr.fusion.FusionResult` of ``particles``.
        particles: the fused :class:`jaxsr.fusion.Particles` (their ``ids`` are the source's ids).
        id_column: the source's particle-id column (header name as written).
        overwrite: replace an existing file.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: ``result`` does not match ``particles``; the source lacks a column, or holds another
            number of rows of the fused particles than were fused (another file).
    """
    particles = _check_particles(particles)
    _check_result(result, particles)
    src = as_path(source, "source")
    rots, trans = np.asarray(result.rotations, np.float64), np.asarray(result.translations, np.float64)
    inl = np.asarray(result.inliers, bool)
    d = particles.dim
    index = {float(i): k for k, i in enumerate(np.asarray(particles.ids, np.float64))}
    want = _column_name(id_column)
    with open(src, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        names = [_column_name(h) for h in header]
        missing = [c for c in [want, "x_nm", "y_nm"] + (["z_nm"] if d == 3 else []) if c not in names]
        if missing:
            raise ValueError(f"argument 'source': {src.name} lacks the column(s) {', '.join(missing)}")
        pid_col = names.index(want)
        xyz = [names.index(c) for c in ("x_nm", "y_nm", "z_nm")[:d]]
        inlier_col = header.index("inlier") if "inlier" in header else None
        out_header = header + ([] if inlier_col is not None else ["inlier"])
        rows = []
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            try:
                k = index.get(float(row[pid_col]))
            except ValueError:
                k = None
            if k is None:
                continue
            x = np.array([float(row[c]) for c in xyz])
            moved = rots[k] @ x + trans[k]
            new = list(row) + ([] if inlier_col is not None else [""])
            for c, v in zip(xyz, moved):
                new[c] = _fmt(v)
            new[inlier_col if inlier_col is not None else -1] = str(int(inl[k]))
            rows.append(new)
    n_fused = int(np.asarray(particles.mask).sum())
    if len(rows) != n_fused:
        raise ValueError(f"argument 'source': {src.name} holds {len(rows)} rows of the fused particles, "
                         f"{n_fused} localizations were fused; is it the table they were read from?")
    _write_rows(path, out_header, rows, overwrite=overwrite)


def _pose_header(d: int) -> list[str]:
    rot = ["qw", "qx", "qy", "qz"] if d == 3 else ["angle [deg]"]
    return rot + ["tx [nm]", "ty [nm]"] + (["tz [nm]"] if d == 3 else [])


def _pose_values(rotations: np.ndarray, translations: np.ndarray) -> np.ndarray:
    """``(P, 4 + 3)`` quaternion + translation (3D) or ``(P, 1 + 2)`` angle (degrees) + translation (2D)."""
    r = np.asarray(rotations, np.float64)
    if r.shape[-1] == 3:
        rot = matrix_to_quaternion(r)
    else:
        rot = np.degrees(np.arctan2(r[:, 1, 0], r[:, 0, 0]))[:, None]
    return np.concatenate([rot, np.asarray(translations, np.float64)], axis=1)


def write_poses_csv(path: str | os.PathLike, result: Any, particles: Particles, *, overwrite: bool = False) -> None:
    """Write every particle's pose into the fused frame as CSV, one row per particle.

    A localization ``x`` of the particle lands at ``R x + t`` in the fused frame.
    Columns: ``particle``, then ``qw, qx, qy, qz`` (unit quaternion of ``R``,
    ``qw >= 0``; 3D) or ``angle [deg]`` (counter-clockwise; 2D), then
    ``tx [nm], ty [nm][, tz [nm]]``, ``correlation`` (with the final template) and
    ``inlier`` (1/0).

    Args:
        path: output ``.csv`` file.
        result: :class:`jaxsr.fusion.FusionResult` of ``particles``.
        particles: the :class:`jaxsr.fusion.Particles` that were fused (for the ids).
        overwrite: replace an existing file.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: ``result`` does not match ``particles``; a name not ending in ``.csv``.
    """
    particles = _check_particles(particles)
    _check_result(result, particles)
    vals = _pose_values(result.rotations, result.translations)
    corr = np.asarray(result.correlation, np.float64)
    inl = np.asarray(result.inliers, bool)
    ids = np.asarray(particles.ids)
    header = ["particle"] + _pose_header(particles.dim) + ["correlation", "inlier"]
    rows = ([_fmt_id(ids[p])] + [_fmt(v) for v in vals[p]] + [_fmt(corr[p]), str(int(inl[p]))]
            for p in range(len(ids)))
    _write_rows(path, header, rows, overwrite=overwrite)


def write_truth_csv(path: str | os.PathLike, simulation: Any, *, overwrite: bool = False) -> None:
    """Write the true poses of a simulation (:func:`jaxsr.fusion.simulate_particles`) as CSV.

    The columns are those of :func:`write_poses_csv` without ``correlation`` and
    ``inlier``, but the pose maps the other way: particle ``p`` is the structure
    moved by ``R``, ``t`` (``particle = sites @ R.T + t``, plus noise).

    Args:
        path: output ``.csv`` file.
        simulation: :class:`jaxsr.fusion.ParticleSimulation`.
        overwrite: replace an existing file.
    """
    for attr in ("particles", "rotations", "translations"):
        if not hasattr(simulation, attr):
            raise TypeError(f"argument 'simulation': expected a ParticleSimulation, got {type(simulation).__name__}")
    particles = _check_particles(simulation.particles, "simulation")
    vals = _pose_values(simulation.rotations, simulation.translations)
    ids = np.asarray(particles.ids)
    header = ["particle"] + _pose_header(particles.dim)
    rows = ([_fmt_id(ids[p])] + [_fmt(v) for v in vals[p]] for p in range(len(ids)))
    _write_rows(path, header, rows, overwrite=overwrite)


def _quaternion_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions ``(P, 4)`` ``(w, x, y, z)`` -> ``(P, 3, 3)`` (NumPy; normalised first)."""
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def read_poses_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a pose table written by :func:`write_poses_csv` or :func:`write_truth_csv`.

    Returns:
        A dict with ``particle (P,)``, ``rotations (P, d, d)``, ``translations (P, d)`` (nm),
        and every other column by its name (``correlation``, ``inlier``, ...).

    Raises:
        FileNotFoundError: no such file.
        ValueError: an empty file, no quaternion / angle or translation columns.
    """
    target = as_path(path, "path")
    if not target.is_file():
        raise FileNotFoundError(f"argument 'path': no such pose file: {target}")
    cols = _read_csv_columns(target)
    if "particle" not in cols:
        raise ValueError(f"argument 'path': {target.name} lacks the column particle")
    if all(c in cols for c in ("qw", "qx", "qy", "qz", "tx_nm", "ty_nm", "tz_nm")):
        q = np.stack([cols[c] for c in ("qw", "qx", "qy", "qz")], 1)
        rot = _quaternion_matrix(q)
        trans = np.stack([cols[c] for c in ("tx_nm", "ty_nm", "tz_nm")], 1)
        used = {"qw", "qx", "qy", "qz", "tx_nm", "ty_nm", "tz_nm"}
    elif all(c in cols for c in ("angle_deg", "tx_nm", "ty_nm")):
        a = np.radians(cols["angle_deg"])
        rot = np.stack([np.stack([np.cos(a), -np.sin(a)], -1), np.stack([np.sin(a), np.cos(a)], -1)], 1)
        trans = np.stack([cols["tx_nm"], cols["ty_nm"]], 1)
        used = {"angle_deg", "tx_nm", "ty_nm"}
    else:
        raise ValueError(f"argument 'path': {target.name} lacks the pose columns (qw, qx, qy, qz, tx [nm], "
                         "ty [nm], tz [nm] or angle [deg], tx [nm], ty [nm])")
    out = {"particle": cols["particle"], "rotations": rot, "translations": trans}
    out.update({k: v for k, v in cols.items() if k not in used and k != "particle"})
    if np.all(out["particle"] == np.round(out["particle"])):
        out["particle"] = out["particle"].astype(np.int64)
    return out


# --------------------------------------------------------------------------------------------- rendering


def _smoothed(points: np.ndarray, pixel_size_nm: float, extent_nm: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    from jaxsr.fusion.measure import render_points_nd

    n = int(np.ceil(2 * extent_nm / pixel_size_nm))
    if len(points) == 0:
        return np.zeros((n, n))
    img = render_points_nd(points, pixel_size_nm=pixel_size_nm, extent_nm=extent_nm)
    return gaussian_filter(img, 1.0)


def render_fusion_png(
    path: str | os.PathLike, result: Any, particles: Particles, *, pixel_size_nm: float = 1.0,
    overwrite: bool = False,
) -> None:
    """Write a PNG panel of the fused inlier localizations.

    2D: the ``(y, x)`` image. 3D: the xy projection, the xz projection (z up) and
    xy images of the two halves ``z > 0`` and ``z < 0`` (the two rings of a nuclear
    pore when the fusion put its symmetry axis on z). Each view is a histogram
    (:func:`jaxsr.fusion.render_points_nd`) smoothed by a Gaussian of 1 pixel, on a
    square field centred at the origin whose half-width is the 99.5th percentile of
    the absolute coordinates plus 10 nm; every view has a scale bar.

    Args:
        path: output ``.png`` file.
        result: :class:`jaxsr.fusion.FusionResult` of ``particles``.
        particles: the :class:`jaxsr.fusion.Particles` that were fused (for the mask).
        pixel_size_nm: histogram bin (nm).
        overwrite: replace an existing file.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: ``result`` does not match ``particles``, no localization to show,
            a pixel so small that a view would exceed 4096 pixels, a name not ending in ``.png``.
    """
    from jaxsr.io.png import write_png_panel

    particles = _check_particles(particles)
    _check_result(result, particles)
    px = positive_float(pixel_size_nm, "pixel_size_nm")
    mask = np.asarray(particles.mask, bool)
    inl = np.asarray(result.inliers, bool)
    pts = np.asarray(result.points, np.float64)[mask & inl[:, None]]
    if len(pts) == 0:
        raise ValueError("argument 'result': no inlier localizations to render")
    extent = float(np.percentile(np.abs(pts), 99.5)) + 10.0
    n_bins = int(np.ceil(2 * extent / px))
    if n_bins > MAX_RENDER_PIXELS:
        raise ValueError(f"argument 'pixel_size_nm': {px:g} nm gives {n_bins} pixels across the "
                         f"{2 * extent:.0f} nm field (at most {MAX_RENDER_PIXELS}); use a larger pixel")
    if pts.shape[1] == 2:
        images = [_smoothed(pts, px, extent)]
        titles = [f"fused xy ({len(pts)} locs, {px:g} nm px)"]
    else:
        top, bottom = pts[pts[:, 2] > 0], pts[pts[:, 2] < 0]
        images = [
            _smoothed(pts[:, :2], px, extent),
            _smoothed(pts[:, [0, 2]], px, extent)[::-1],
            _smoothed(top[:, :2], px, extent),
            _smoothed(bottom[:, :2], px, extent),
        ]
        titles = ["xy", "xz (z up)", f"z > 0 ({len(top)})", f"z < 0 ({len(bottom)})"]
    write_png_panel(path, images, titles=titles, size=max(160, min(512, n_bins)), pixel_size_nm=px,
                    overwrite=overwrite)
