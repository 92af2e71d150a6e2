"""Prompt/answer examples from a user's .jsonl or .csv file.

Every bad row is an error naming `file:line` and what was wrong with it; no row is ever dropped or
altered silently. Blank lines are not rows and are skipped. A UTF-8 byte-order mark and CRLF line ends
(as Excel and Windows editors write them) are accepted.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

from ..errors import DataError

# csv's field size limit is a C long; 2**31 - 1 fits one on every platform (Windows' long is 32 bits).
_CSV_FIELD_LIMIT_CAP = 2**31 - 1
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what csv (reading with newline="") counts as a line end
_BOM = b"\xef\xbb\xbf"


class Example(dict):
    """A {"prompt", "answer"} row that remembers its `file:line`, so later errors (a prompt too long
    for max_length) can name it; it compares equal to the plain dict."""

    def __init__(self, values: dict, where: str):
        super().__init__(values)
        self.where = where


def load_examples(path, prompt_field: str = "prompt", answer_field: str = "answer") -> list[dict]:
    """[{"prompt": str, "answer": str}, ...] read from `path` (.jsonl or .csv), in file order.

    `prompt_field` / `answer_field` name the columns holding them (e.g. "instruction", "output").
    A JSON number is kept as the text it is written as (`1e5` stays "1e5"); NaN, Infinity and numbers
    too large to be finite, any other non-string value, an empty value, a missing field, a repeated key
    or CSV column, or a line that is not a JSON object raises DataError.
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
        Example({key: _field(row, column, f"{path}:{line}") for key, column in fields.items()},
                where=f"{path}:{line}")
        for line, row in rows
    ]
    if not examples:
        raise DataError(f"{path}: the file has no examples.")
    return examples


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not UTF-8 text (byte {err.start}); re-save the file as UTF-8.") from None


# --- JSONL -----------------------------------------------------------------------------------------


class _JsonNumber(str):
    """A JSON number kept as the text it was written as, so that no answer is reformatted."""

    def is_finite(self) -> bool:
        return True


class _JsonFloat(_JsonNumber):
    def is_finite(self) -> bool:
        return math.isfinite(float(self))  # 1e999 overflows to inf


class _JsonConstant(_JsonNumber):
    """NaN, Infinity or -Infinity: not JSON, but Python's json module writes and reads them."""

    def is_finite(self) -> bool:
        return False


class _DuplicateKey(Exception):
    pass


def _object(pairs: list) -> dict:
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _jsonl_rows(path: Path):
    """(line number, dict) for each non-blank line."""
    raw = path.read_bytes().removeprefix(_BOM)
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{number}"
        text = _decode(line_bytes, where)
        line = text.strip()
        if not line:
            continue
        try:
            row = json.loads(
                line, object_pairs_hook=_object, parse_int=_JsonNumber, parse_float=_JsonFloat,
                parse_constant=_JsonConstant,
            )
        except json.JSONDecodeError as err:
            column = err.colno + len(text) - len(text.lstrip())  # the column in the line as written
            raise DataError(f"{where}:{column}: bad JSON ({err.msg}).") from None
        except _DuplicateKey as err:
            raise DataError(
                f"{where}: the key {_quote(err.args[0])} appears twice in one object; keep only one of them."
            ) from None
        except RecursionError:
            raise DataError(f"{where}: JSON nested too deeply to read; flatten the row.") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object {{...}}, got {_json_type(row)}.")
        yield number, row


def _json_type(value) -> str:
    return "a number" if isinstance(value, _JsonNumber) else type(value).__name__


# --- CSV -------------------------------------------------------------------------------------------


def _csv_rows(path: Path):
    """(line number, dict) for each data row; the first non-blank row is the header."""
    raw = path.read_bytes()
    body = raw.removeprefix(_BOM)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        line = 1 + len(_LINE_BREAK.findall(body[: err.start].decode("utf-8")))
        byte = err.start + len(raw) - len(body)
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {byte}); re-save the file as UTF-8.") from None
    records, error = _csv_records(text, path)
    if not records:
        if error:
            raise error
        return
    (header_line, header), *data = records
    columns: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if name in columns:
            raise DataError(
                f"{path}:{header_line}: the header names the column {_quote(name)} twice "
                f"(columns {columns[name]} and {position}); rename or delete one of them."
            )
        columns[name] = position
    for line, cells in data:
        where = f"{path}:{line}"
        if len(cells) > len(header):
            raise DataError(
                f"{where}: {len(cells)} cells but the header has {len(header)}; quote cells that hold commas."
            )
        if len(cells) < len(header):
            raise DataError(
                f"{where}: fewer cells than the header's {len(header)} columns; "
                "give each row one cell a column."
            )
        yield line, dict(zip(header, cells))
    if error:
        raise error


def _csv_records(text: str, path: Path) -> tuple[list[tuple[int, list[str]]], DataError | None]:
    """(first line, cells) of each non-blank record, and the error that stopped reading, if any.

    Records are read in one go so that csv's process-wide field size limit is raised only meanwhile: no
    field can be longer than the text, so a long prompt or answer is never refused for its size.
    """
    records = []
    start = 1
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, min(len(text) + 1, _CSV_FIELD_LIMIT_CAP)))
    try:
        # strict: a quote left open, or text after a closing quote, is an error rather than rows run
        # together into one cell
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        for cells in reader:
            if cells:
                records.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as err:
        hint = (
            "a quote opened here is never closed" if "unexpected end of data" in str(err)
            else "quote a cell holding commas, quotes or line breaks, and double the quotes inside it"
        )
        return records, DataError(f"{path}:{start}: bad CSV ({err}); {hint}.")
    finally:
        csv.field_size_limit(old_limit)
    return records, None


# --- fields ----------------------------------------------------------------------------------------


def _quote(name: str, limit: int = 60) -> str:
    """`name` quoted for a one-line message, cut short if long."""
    return repr(name) if len(name) <= limit else f"{name[:limit]!r}..."


def _show(name: str, limit: int = 60) -> str:
    """`name` as it is if it is short and printable, else quoted."""
    return name if len(name) <= limit and name.isprintable() else _quote(name, limit)


def _field(row: dict, column: str, where: str) -> str:
    if column not in row:
        names = [_show(str(key)) for key in row]
        present = ", ".join(names[:20] + (["..."] if len(names) > 20 else [])) or "none"
        raise DataError(
            f"{where}: no field {column!r} (fields: {present}); name the right columns with "
            "prompt_field/answer_field."
        )
    value = row[column]
    if isinstance(value, _JsonNumber):
        if not value.is_finite():
            number = value if len(value) <= 60 else f"{value[:60]}..."  # digits, signs, '.', 'e': one line
            raise DataError(
                f"{where}: field {column!r} is {number}, not a finite number; write a finite number, "
                f'or "{number}" in quotes if the text is meant.'
            )
        value = str(value)
    if not isinstance(value, str):
        raise DataError(f"{where}: field {column!r} is {type(value).__name__}, expected text.")
    if not value.strip():
        raise DataError(f"{where}: field {column!r} is empty.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataError(
            f"{where}: field {column!r} holds a lone surrogate \\u{ord(value[err.start]):04x}, which is not "
            "text; write the character itself, or both halves of its \\u escape pair."
        ) from None
    return value
