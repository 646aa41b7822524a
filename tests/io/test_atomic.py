"""Tests for jaxsr.io.atomic: atomic, no-clobber writes and strict JSON."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.io import atomic_path, write_json


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------------------
# atomic_path


def test_writes_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert not tmp.exists(), "the writer creates the temporary file itself"
        assert not target.exists(), "the target appears only at the end"
        tmp.write_bytes(b"\x00\x01payload")
        assert not target.exists()
    assert target.read_bytes() == b"\x00\x01payload"
    assert _listing(tmp_path) == ["out.bin"]


@pytest.mark.parametrize(
    "name,suffix", [("a.tif", ".tif"), ("b.ome.tif", ".ome.tif"), ("c.OME.TIFF", ".OME.TIFF"),
                    ("scan.v2.tif", ".tif"), ("noext", "")],
)
def test_temporary_name_hidden_with_suffix(tmp_path, name, suffix):
    with atomic_path(tmp_path / name) as tmp:
        assert tmp.name.startswith(f".{name}.tmp-")
        assert tmp.name.endswith(suffix) and tmp.name != f".{name}.tmp-{suffix}"
        tmp.write_text("x")


def test_exception_keeps_old_file_byte_identical(tmp_path):
    target = tmp_path / "data.tif"
    original = bytes(range(256)) * 4
    target.write_bytes(original)
    seen = []
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_bytes(b"half-written")
            seen.append(tmp)
            raise RuntimeError("writer failed")
    assert target.read_bytes() == original
    assert not seen[0].exists()
    assert _listing(tmp_path) == ["data.tif"]


def test_exception_without_existing_target_leaves_nothing(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with atomic_path(tmp_path / "new.json") as tmp:
            tmp.write_text("{")
            _ = 1 / 0
    assert _listing(tmp_path) == []


def test_keyboard_interrupt_cleans_up(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert _listing(tmp_path) == ["t.txt"]


def test_existing_file_refused(tmp_path):
    target = tmp_path / "result.tif"
    target.write_bytes(b"keep me")
    entered = []
    with pytest.raises(FileExistsError, match="overwrite") as info:
        with atomic_path(target) as tmp:
            entered.append(tmp)  # refused on entry: the writer never runs
            tmp.write_bytes(b"replacement")
    assert entered == []
    message = str(info.value)
    assert str(target) in message and "--overwrite" in message
    assert target.read_bytes() == b"keep me"
    assert _listing(tmp_path) == ["result.tif"]


def test_overwrite_true_replaces(tmp_path):
    target = tmp_path / "result.tif"
    target.write_bytes(b"old content that is longer")
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert _listing(tmp_path) == ["result.tif"]


def test_file_appearing_during_write_is_not_clobbered(tmp_path):
    """The no-clobber check is repeated atomically at the final move."""
    target = tmp_path / "race.txt"
    with pytest.raises(FileExistsError, match="overwrite"):
        with atomic_path(target) as tmp:
            tmp.write_text("ours")
            target.write_text("someone else's")
    assert target.read_text() == "someone else's"
    assert _listing(tmp_path) == ["race.txt"]


def test_missing_parent_directory_not_created(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        with atomic_path(missing / "x.tif"):
            pass  # pragma: no cover
    assert str(missing) in str(info.value)
    assert not (tmp_path / "no").exists()


def test_nothing_written_is_an_error(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(target, overwrite=True):
            pass
    assert target.read_text() == "old"


def test_target_is_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="directory"):
        with atomic_path(tmp_path / "d", overwrite=True):
            pass  # pragma: no cover


def test_permissions_follow_umask(tmp_path):
    """The final file has the permissions an ordinary open() would give it."""
    reference = tmp_path / "reference.txt"
    reference.write_text("r")
    with atomic_path(tmp_path / "atomic.txt") as tmp:
        tmp.write_text("a")
    assert (tmp_path / "atomic.txt").stat().st_mode == reference.stat().st_mode


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="path"):
        with atomic_path(123):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="path"):
        with atomic_path(""):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="overwrite"):
        with atomic_path(tmp_path / "a", overwrite="yes"):
            pass  # pragma: no cover


# ---------------------------------------------------------------------------
# write_json


@dataclasses.dataclass(frozen=True)
class _Config:
    name: str
    sigma_nm: float


def test_write_json_round_trip_with_numpy_jax_and_dataclasses(tmp_path):
    target = tmp_path / "metrics.json"
    obj = {
        "psnr": np.float32(31.25),
        "count": np.int64(7),
        "flag": np.bool_(True),
        "curve": np.array([0.5, 0.25]),
        "jax": jnp.arange(3),
        "path": Path("a/b.tif"),
        "config": _Config("x", 1.5),
        "unit": "µm",
        "none": None,
    }
    write_json(target, obj)
    loaded = json.loads(target.read_text(encoding="utf-8"))
    assert loaded == {
        "psnr": 31.25, "count": 7, "flag": True, "curve": [0.5, 0.25], "jax": [0, 1, 2],
        "path": os.fspath(Path("a/b.tif")), "config": {"name": "x", "sigma_nm": 1.5},
        "unit": "µm", "none": None,
    }
    assert target.read_text(encoding="utf-8").endswith("}\n")
    assert _listing(tmp_path) == ["metrics.json"]


def test_write_json_existing_refused_and_overwrite(tmp_path):
    target = tmp_path / "gt.json"
    write_json(target, {"a": 1})
    with pytest.raises(FileExistsError, match="overwrite"):
        write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    write_json(target, {"a": 2}, overwrite=True)
    assert json.loads(target.read_text()) == {"a": 2}


@pytest.mark.parametrize("bad", [float("nan"), np.float32("inf"), np.array([1.0, np.nan])])
def test_write_json_refuses_non_finite(tmp_path, bad):
    target = tmp_path / "m.json"
    target.write_text('{"old": true}\n')
    with pytest.raises(ValueError, match="obj"):
        write_json(target, {"value": bad}, overwrite=True)
    assert target.read_text() == '{"old": true}\n'
    assert _listing(tmp_path) == ["m.json"]


def test_write_json_refuses_unserialisable(tmp_path):
    with pytest.raises(TypeError, match="obj"):
        write_json(tmp_path / "m.json", {"value": object()})
    with pytest.raises(TypeError, match="obj"):
        write_json(tmp_path / "m.json", {"value": np.array(["a", "b"])})
    assert _listing(tmp_path) == []


def test_write_json_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="indent"):
        write_json(tmp_path / "m.json", {}, indent=-1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_json(tmp_path / "missing" / "m.json", {})


def test_write_json_nonfinite_null(tmp_path):
    import json

    import numpy as np

    from jaxsr.io import write_json

    target = tmp_path / "r.json"
    with pytest.raises(ValueError, match="obj"):
        write_json(target, {"a": float("inf")})
    assert not target.exists()
    write_json(target, {"a": float("inf"), "b": [1.0, np.nan], "c": np.float32(2.5), "d": {"e": -np.inf}},
               nonfinite="null")
    assert json.loads(target.read_text()) == {"a": None, "b": [1.0, None], "c": 2.5, "d": {"e": None}}
    with pytest.raises(ValueError, match="nonfinite"):
        write_json(tmp_path / "x.json", {}, nonfinite="drop")
