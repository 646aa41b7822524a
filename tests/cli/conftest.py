"""Fixtures for the CLI tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_line_error(capsys):
    """Check that the command's stderr is exactly one line containing ``word``, with no traceback."""

    def check(word: str) -> None:
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert "Traceback" not in err and len(lines) == 1 and word in lines[0], err

    return check
