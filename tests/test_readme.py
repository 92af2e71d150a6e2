"""The README's printed figures come from a run: each `print(...)  # <output>` line of the Python tour is
executed after the tour's lines above it, and its output must be the commented one."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def tour_checks() -> list[tuple[str, str]]:
    """(the tour's code up to and including a print line, the output its comment shows), in order."""
    text = README.read_text(encoding="utf-8")
    tour = text.split("## Python tour", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    lines, checks = tour.splitlines(), []
    for i, line in enumerate(lines):
        printed = re.match(r"\s*(print\(.*\))\s+#\s*(.+)$", line)
        if printed:
            code = "\n".join(lines[:i] + [printed.group(1)])
            checks.append((code, printed.group(2).strip()))
    return checks


def test_the_tour_shows_printed_output():
    assert tour_checks(), "the Python tour no longer prints anything; drop this test or restore a check"


@pytest.mark.slow
@pytest.mark.parametrize(("code", "shown"), tour_checks())
def test_each_printed_figure_is_what_the_code_prints(code, shown):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    assert out.getvalue().strip() == shown
