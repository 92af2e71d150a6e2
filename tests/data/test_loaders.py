"""load_examples: good files load, every bad row names file:line and what is wrong."""

from __future__ import annotations

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
