"""Prompt/answer examples from a user's .jsonl or .csv file.

Every bad row is an error naming `file:line` and what was wrong with it; no row is ever dropped
silently. Blank lines in a .jsonl are not rows and are skipped. A UTF-8 byte-order mark and CRLF line
ends (as Excel and Windows editors write them) are accepted.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import DataError


def load_examples(path, prompt_field: str = "prompt", answer_field: str = "answer") -> list[dict]:
    """[{"prompt": str, "answer": str}, ...] read from `path` (.jsonl or .csv), in file order.

    `prompt_field` / `answer_field` name the columns holding them (e.g. "instruction", "output").
    Numbers are turned into strings; any other non-string value, an empty value, a missing field or a
    line that is not a JSON object raises DataError.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file.")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = _jsonl_rows(path)
    elif suffix == ".csv":
        rows = _csv_rows(path)
    else:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(none)'}; use .jsonl (a JSON object a line) or .csv."
        )
    fields = {"prompt": prompt_field, "answer": answer_field}
    examples = [
        {key: _field(row, column, f"{path}:{line}") for key, column in fields.items()} for line, row in rows
    ]
    if not examples:
        raise DataError(f"{path}: the file has no examples.")
    return examples


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not UTF-8 text (byte {err.start}); re-save the file as UTF-8.") from None


def _jsonl_rows(path: Path):
    """(line number, dict) for each non-blank line."""
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{number}"
        line = _decode(line_bytes, where).strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}:{err.colno}: bad JSON ({err.msg}).") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object {{...}}, got {type(row).__name__}.")
        yield number, row


def _csv_rows(path: Path):
    """(line number, dict) for each data row; the first row is the header."""
    text = _decode(path.read_bytes().removeprefix(b"\xef\xbb\xbf"), str(path))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames
        if header is None:
            return
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:  # DictReader files surplus cells under the key None
                cells = len(header) + len(row[None])
                raise DataError(f"{where}: {cells} cells but the header has {len(header)}.")
            if any(value is None for value in row.values()):
                raise DataError(f"{where}: fewer cells than the header's {len(header)} columns.")
            yield reader.line_num, row
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: bad CSV ({err}).") from None


def _field(row: dict, column: str, where: str) -> str:
    if column not in row:
        present = ", ".join(str(key) for key in row) or "none"
        raise DataError(
            f"{where}: no field {column!r} (fields: {present}); name the right columns with "
            "prompt_field/answer_field."
        )
    value = row[column]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(f"{where}: field {column!r} is {type(value).__name__}, expected text.")
    if not value.strip():
        raise DataError(f"{where}: field {column!r} is empty.")
    return value
