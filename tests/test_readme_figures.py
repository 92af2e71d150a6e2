"""The README's measured figures come from runs: every decimal number in its prose and tables appears, to
the precision printed, in a results file a bench script wrote under bench/results/ (JSON or markdown).
Code (fenced or inline) holds settings, not measurements, and arXiv ids are not figures; both are
skipped. "25.6 M" is read as 25,600,000 ± 50,000. A figure no file holds fails here with its line, so
a README edit or a rerun that changed a result cannot leave the other one behind.

The check is one-sided: it proves each figure was measured somewhere, not that it sits beside the run it
describes (a common value such as 0.5 may match an unrelated record)."""

from __future__ import annotations

import bisect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURE = re.compile(r"(?<![\w.\-/])(\d+\.\d+(?:e-?\d+)?)(\s?M\b)?(?![\w.]*\d)")
ARXIV_ID = re.compile(r"^\d{4}\.\d{5}$")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def prose_lines() -> list[tuple[int, str]]:
    """(line number, text) of the README outside fenced code, with inline code blanked out."""
    lines, fenced = [], False
    for number, line in enumerate((ROOT / "README.md").read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((number, re.sub(r"`[^`]*`", "``", line)))
    return lines


def recorded_values() -> list[float]:
    values = []
    for path in (ROOT / "bench" / "results").rglob("*"):
        if path.suffix in (".json", ".md"):
            values += [float(x) for x in NUMBER.findall(path.read_text(encoding="utf-8"))]
    return sorted(values)


def recorded(value: float, tolerance: float, values: list[float]) -> bool:
    i = bisect.bisect_left(values, value - tolerance)
    return i < len(values) and values[i] <= value + tolerance


def half_unit(text: str) -> float:
    """Half a unit of the last printed digit: 0.447 → 0.0005, 1.2e-4 → 0.05e-4."""
    mantissa, _, exponent = text.partition("e")
    return 0.5 * 10 ** (-len(mantissa.split(".")[1]) + int(exponent or 0))


def unrecorded_figures() -> list[str]:
    values, missing = recorded_values(), []
    for number, line in prose_lines():
        for match in FIGURE.finditer(line):
            text, millions = match.group(1), match.group(2)
            if ARXIV_ID.match(text):
                continue
            scale = 1e6 if millions else 1.0
            if not recorded(float(text) * scale, half_unit(text) * scale, values):
                missing.append(f"README.md:{number}: {text}{millions or ''}")
    return missing


def test_the_check_sees_the_readmes_figures():
    figures = sum(len(FIGURE.findall(line)) for _, line in prose_lines())
    assert figures > 100, "the README's figures were not found; has the pattern or the README changed?"


def test_every_figure_in_the_readme_is_in_a_results_file():
    missing = unrecorded_figures()
    assert not missing, ("figures no results file under bench/results holds (rerun the bench script that "
                         "measures them, or correct the README):\n" + "\n".join(missing))


def test_half_unit_follows_the_printed_precision():
    assert half_unit("0.447") == 0.0005
    assert abs(half_unit("1.2e-4") - 0.5e-5) < 1e-18
    assert recorded(0.447, half_unit("0.447"), [0.4466])
    assert not recorded(0.447, half_unit("0.447"), [0.4464])
