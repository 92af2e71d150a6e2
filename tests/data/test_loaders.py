"""load_examples: good files load, every bad row names file:line and what is wrong."""

from __future__ import annotations

import csv
import json

import pytest

from rankwise.data import load_examples
from rankwise.errors import DataError


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_jsonl_loads_in_order(tmp_path):
    rows = [{"prompt": "a", "answer": "1", "extra": True}, {"prompt": "b", "answer": "2"}]
    path = _write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert load_examples(path) == [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}]


def test_jsonl_bom_crlf_blank_lines_and_numbers(tmp_path):
    text = '\ufeff{"q": "x", "a": 3}\r\n\r\n{"q": "y", "a": 2.5}\r\n'
    path = _write(tmp_path / "d.jsonl", text)
    assert load_examples(path, prompt_field="q", answer_field="a") == [
        {"prompt": "x", "answer": "3"}, {"prompt": "y", "answer": "2.5"}]


@pytest.mark.parametrize("line3, message", [
    ('{"prompt": "c", "answer": ', ":3:"),                     # truncated final line
    ('{"prompt": "c"}', "no field 'answer'"),
    ('["c", "3"]', "JSON object"),
    ('{"prompt": "c", "answer": null}', "NoneType"),
    ('{"prompt": "c", "answer": "  "}', "empty"),
    ('{"prompt": "c", "answer": true}', "bool"),
])
def test_jsonl_bad_row_names_file_and_line(tmp_path, line3, message):
    good = '{"prompt": "a", "answer": "1"}\n'
    path = _write(tmp_path / "bad.jsonl", good + good + line3 + "\n")
    with pytest.raises(DataError) as err:
        load_examples(path)
    assert "bad.jsonl:3" in str(err.value) and message in str(err.value)


def test_bad_json_reports_column(tmp_path):
    path = _write(tmp_path / "bad.jsonl", '{"prompt": "a", "answer": "1"}\n{"prompt": "b" "answer": "2"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2:\d+: bad JSON"):
        load_examples(path)


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    text = '{"prompt": "a", "answer": "1"}\n{"prompt": "caf\u00e9", "answer": "2"}\n'
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.jsonl:2: not UTF-8"):
        load_examples(path)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(tmp_path, text):
    with pytest.raises(DataError, match="no examples"):
        load_examples(_write(tmp_path / "empty.jsonl", text))


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_examples(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match="unsupported file type .parquet"):
        load_examples(_write(tmp_path / "d.parquet", "x"))


def test_csv_loads_with_quotes_and_custom_columns(tmp_path):
    path = _write(tmp_path / "d.csv", 'instruction,output\r\n"say ""hi"", twice",hi hi\r\nb,2\r\n')
    assert load_examples(path, "instruction", "output") == [
        {"prompt": 'say "hi", twice', "answer": "hi hi"}, {"prompt": "b", "answer": "2"}]


def test_csv_missing_column_names_line_and_columns(tmp_path):
    path = _write(tmp_path / "d.csv", "prompt,output\na,1\n")
    with pytest.raises(DataError, match=r"d\.csv:2: no field 'answer' \(fields: prompt, output\)"):
        load_examples(path)


@pytest.mark.parametrize("row, message", [
    ("c,3,surplus", "3 cells but the header has 2"),
    ("c", "fewer cells"),
])
def test_csv_ragged_row_names_line(tmp_path, row, message):
    path = _write(tmp_path / "d.csv", f"prompt,answer\na,1\nb,2\n{row}\n")
    with pytest.raises(DataError, match=rf"d\.csv:4: {message}"):
        load_examples(path)


def test_csv_header_only_is_empty(tmp_path):
    with pytest.raises(DataError, match="no examples"):
        load_examples(_write(tmp_path / "d.csv", "prompt,answer\n"))


# --- JSON numbers: kept as written, never NaN or infinite ------------------------------------------


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_jsonl_non_finite_number_names_line_and_field(tmp_path, number):
    good = '{"prompt": "a", "answer": "1"}\n'
    path = _write(tmp_path / "bad.jsonl", good + good + f'{{"prompt": "c", "answer": {number}}}\n')
    with pytest.raises(DataError, match=rf"bad\.jsonl:3: field 'answer' is {number}, not a finite number"):
        load_examples(path)


def test_jsonl_non_finite_number_in_an_unused_field_is_ignored(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"prompt": "a", "answer": "1", "score": NaN}\n')
    assert load_examples(path) == [{"prompt": "a", "answer": "1"}]


def test_jsonl_numbers_kept_as_written(tmp_path):
    huge = "9" * 5000  # over Python's 4300-digit int/str conversion limit
    numbers = ["3", "2.5", "1e5", "1E+5", "-0", "1e-999", "0.30000000000000001", huge]
    path = _write(tmp_path / "d.jsonl", "".join(f'{{"prompt": "p", "answer": {n}}}\n' for n in numbers))
    assert [row["answer"] for row in load_examples(path)] == numbers


# --- repeated keys and columns ---------------------------------------------------------------------


@pytest.mark.parametrize("line2, key", [
    ('{"prompt": "b", "answer": "2", "answer": "3"}', "answer"),
    ('{"prompt": "b", "answer": "2", "meta": {"id": 1, "id": 2}}', "id"),
])
def test_jsonl_duplicate_key_names_line_and_key(tmp_path, line2, key):
    path = _write(tmp_path / "dup.jsonl", '{"prompt": "a", "answer": "1"}\n' + line2 + "\n")
    with pytest.raises(DataError, match=rf"dup\.jsonl:2: the key '{key}' appears twice"):
        load_examples(path)


def test_csv_duplicate_header_column_names_line_1_and_column(tmp_path):
    path = _write(tmp_path / "d.csv", "prompt,answer,answer\na,1,2\n")
    with pytest.raises(DataError, match=r"d\.csv:1: the header names the column 'answer' twice"):
        load_examples(path)


# --- long CSV fields and CSV line numbers ----------------------------------------------------------


def test_csv_long_field_loads_and_limit_is_restored(tmp_path):
    before = csv.field_size_limit()
    long = "x" * 200_000  # over csv's default field_size_limit of 131,072
    path = _write(tmp_path / "d.csv", f"prompt,answer\na,1\nb,{long}\nc,3\n")
    assert load_examples(path) == [
        {"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": long}, {"prompt": "c", "answer": "3"}]
    assert csv.field_size_limit() == before


def test_csv_bad_row_after_long_field_names_its_line(tmp_path):
    path = _write(tmp_path / "d.csv", f"prompt,answer\na,1\nb,{'x' * 200_000}\nc,3,surplus\n")
    with pytest.raises(DataError, match=r"d\.csv:4: 3 cells but the header has 2"):
        load_examples(path)


def test_csv_error_names_the_first_line_of_a_multiline_record(tmp_path):
    path = _write(tmp_path / "d.csv", 'prompt,answer\na,1\n"b\nstill b",2,surplus\n')
    with pytest.raises(DataError, match=r"d\.csv:3: 3 cells"):
        load_examples(path)


@pytest.mark.parametrize("text, message", [
    ('prompt,answer\na,1\nb,"2\nc,3\n', "unexpected end of data"),  # would swallow line 4 into b's answer
    ('prompt,answer\na,1\n"b"x,2\n', "',' expected after"),          # would read "bx"
])
def test_csv_malformed_quotes_name_the_line(tmp_path, text, message):
    with pytest.raises(DataError, match=rf"d\.csv:3: bad CSV \({message}"):
        load_examples(_write(tmp_path / "d.csv", text))


def test_csv_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("prompt,answer\na,1\nb,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv:3: not UTF-8"):
        load_examples(path)


# --- other JSONL inputs that raised a raw exception or loaded text that is not text -----------------


def test_jsonl_deep_nesting_is_a_data_error(tmp_path):
    path = _write(tmp_path / "deep.jsonl", '{"prompt": "a", "answer": ' + "[" * 100_000 + "\n")
    with pytest.raises(DataError, match=r"deep\.jsonl:1: JSON nested too deeply"):
        load_examples(path)


def test_jsonl_lone_surrogate_is_refused(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"prompt": "a", "answer": "x\\ud800"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:1: field 'answer' holds a lone surrogate \\ud800"):
        load_examples(path)


def test_bad_json_column_counts_leading_whitespace(tmp_path):
    path = _write(tmp_path / "bad.jsonl", '    {"prompt": "b" "answer": "2"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1:20: bad JSON"):
        load_examples(path)


@pytest.mark.parametrize("name, text", [
    ("d.jsonl", '{"prompt": "a", "ans\\nwer": "1"}\n'),
    ("d.csv", 'prompt,"ans\nwer"\na,1\n'),
    ("d.csv", 'prompt,"a\u2028b","a\u2028b"\na,1,2\n'),
])
def test_messages_quoting_user_names_stay_one_line(tmp_path, name, text):
    with pytest.raises(DataError) as err:
        load_examples(_write(tmp_path / name, text))
    assert len(str(err.value).splitlines()) == 1
