"""load_examples on generated files: non-empty text or a one-line DataError, never anything else."""

from __future__ import annotations

import csv
import io
import json
import math
import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rankwise.data import load_examples
from rankwise.errors import DataError

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

BOM = "\ufeff"


def _load(tmp_path_factory, name: str, data: bytes, **fields):
    """load_examples' result, or None after checking that it raised a one-line DataError naming the file."""
    path = tmp_path_factory.mktemp("prop") / name
    path.write_bytes(data)
    try:
        rows = load_examples(path, **fields)
    except DataError as err:
        message = str(err)
        assert "\n" not in message and len(message.splitlines()) == 1, message
        assert re.match(rf"{re.escape(str(path))}(:\d+)*: \S", message), message
        return None
    assert isinstance(rows, list) and rows
    for row in rows:
        assert set(row) == {"prompt", "answer"}
        for value in row.values():
            assert type(value) is str and value.strip()
    return rows


# --- random bytes ----------------------------------------------------------------------------------

# Pieces of real files mixed with arbitrary bytes, so that some inputs get past the first check.
_PIECES = [
    b"{", b"}", b"[", b"]", b'"prompt"', b'"answer"', b":", b",", b'"', b'""', b"\n", b"\r\n", b"\r", b" ",
    b'"x"', b"1", b"-0", b"1e999", b"NaN", b"-Infinity", b"null", b"true", b"\\u00e9", b"\\ud800",
    b"\xef\xbb\xbf", b"\xc3\xa9", b"\xe2\x80\xa8", b"\x00", b"\xff", b"prompt,answer\n", b"a,b\n",
]
_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(_PIECES) | st.binary(max_size=3), max_size=60).map(b"".join),
    st.lists(st.sampled_from(_PIECES[:-2]) | st.text(max_size=3).map(str.encode), max_size=60).map(b"".join),
)


@SETTINGS
@given(data=_BYTES)
@example(data=b'{"prompt": "a", "answer": NaN}\n')
@example(data=b'{"prompt": "a", "answer": "1", "answer": "2"}')
def test_random_bytes_jsonl(tmp_path_factory, data):
    _load(tmp_path_factory, "r.jsonl", data)


@SETTINGS
@given(data=_BYTES)
@example(data=b"prompt,answer,answer\na,1,2\n")
@example(data=b'prompt,answer\na,"1\nb,2\n')
def test_random_bytes_csv(tmp_path_factory, data):
    _load(tmp_path_factory, "r.csv", data)


# --- random JSON rows ------------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.text(max_size=20),
    st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf]),
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_EXTRA_FIELDS = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in ("prompt", "answer")), _JSON, max_size=4)
_GOOD_VALUE = st.one_of(
    st.text(max_size=30).filter(str.strip), st.integers(), st.floats(allow_nan=False, allow_infinity=False))
_GOOD_ROW = st.builds(
    lambda extra, fields: {**extra, **fields},
    _EXTRA_FIELDS, st.fixed_dictionaries({"prompt": _GOOD_VALUE, "answer": _GOOD_VALUE}),
)
_ANY_ROW = st.builds(
    lambda extra, fields: {**extra, **fields},
    _EXTRA_FIELDS,
    st.fixed_dictionaries(
        {}, optional={"prompt": st.text(max_size=30) | _JSON, "answer": st.text(max_size=30) | _JSON}),
)


def _expected(value):
    """What a field loads as: its text, or its number as JSON writes it; None if it must be refused."""
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return json.dumps(value)


@SETTINGS
@given(
    rows=st.lists(_GOOD_ROW, max_size=6) | st.lists(_GOOD_ROW | _ANY_ROW, max_size=6),
    ensure_ascii=st.booleans(), crlf=st.booleans(), bom=st.booleans())
def test_random_json_rows(tmp_path_factory, rows, ensure_ascii, crlf, bom):
    end = "\r\n" if crlf else "\n"
    text = (BOM if bom else "") + "".join(json.dumps(row, ensure_ascii=ensure_ascii) + end for row in rows)
    loaded = _load(tmp_path_factory, "j.jsonl", text.encode("utf-8"))
    expected = [
        {"prompt": _expected(row.get("prompt")), "answer": _expected(row.get("answer"))} for row in rows
    ]
    if all(None not in row.values() for row in expected) and expected:
        assert loaded == expected  # numbers included, as written
    else:
        assert loaded is None  # some row is bad: nothing is dropped in silence


# --- random CSV tables -----------------------------------------------------------------------------

_CELL = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", " ", '"', '""', ",", "a,b", "\n", "\r\n", "\r", 'say "hi"', BOM, "x\ny"])


@SETTINGS
@given(
    table=st.lists(st.lists(_CELL, max_size=4), max_size=6),
    bom=st.booleans(), crlf=st.booleans(), quote_all=st.booleans(),
)
def test_random_csv_tables(tmp_path_factory, table, bom, crlf, quote_all):
    out = io.StringIO(newline="")
    quoting = csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL
    csv.writer(out, lineterminator="\r\n" if crlf else "\n", quoting=quoting).writerows(table)
    _load(tmp_path_factory, "t.csv", ((BOM if bom else "") + out.getvalue()).encode("utf-8"))


_FIELD_CELL = _CELL.filter(str.strip) | _CELL
_EXTRA_COLUMN = st.text(min_size=1, max_size=8).filter(
    lambda name: name not in ("prompt", "answer") and not name.startswith(BOM)
)


@SETTINGS
@given(
    extra=st.lists(_EXTRA_COLUMN, unique=True, max_size=3),
    order=st.randoms(use_true_random=False),
    rows=st.lists(st.tuples(_FIELD_CELL, _FIELD_CELL, st.lists(_CELL, min_size=3, max_size=3)), max_size=6),
    bom=st.booleans(), crlf=st.booleans(),
)
def test_random_csv_tables_round_trip(tmp_path_factory, extra, order, rows, bom, crlf):
    header = ["prompt", "answer", *extra]
    order.shuffle(header)
    table = [header]
    for prompt, answer, cells in rows:
        values = {"prompt": prompt, "answer": answer, **dict(zip(extra, cells))}
        table.append([values[name] for name in header])
    out = io.StringIO(newline="")
    # QUOTE_MINIMAL leaves a lone "\r" unquoted unless "\r" ends the line, so quote all with "\n" ends
    quoting = csv.QUOTE_MINIMAL if crlf else csv.QUOTE_ALL
    csv.writer(out, lineterminator="\r\n" if crlf else "\n", quoting=quoting).writerows(table)
    loaded = _load(tmp_path_factory, "t.csv", ((BOM if bom else "") + out.getvalue()).encode("utf-8"))
    if rows and all(prompt.strip() and answer.strip() for prompt, answer, _ in rows):
        assert loaded == [{"prompt": prompt, "answer": answer} for prompt, answer, _ in rows]
    else:
        assert loaded is None
