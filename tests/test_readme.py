"""The README's Python examples run and print what the README says they print."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).parent.parent / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_example():
    assert python_blocks()


def test_readme_examples_run():
    for block in python_blocks():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, str(README), "exec"), {"__name__": "readme"})
        # Lines like `print(...)   # expected output` must print exactly the commented text.
        for expected in re.findall(r"^print\(.*\)\s+#\s*(.+)$", block, flags=re.M):
            assert expected.strip() in out.getvalue(), (expected, out.getvalue())
