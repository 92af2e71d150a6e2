"""The bundled corpus' two splits never share text; user text files fail with their file and line."""

import pytest

from rankwise.data.text import corpus_text, read_text_file, token_blocks
from rankwise.errors import DataError


class WordTokenizer:
    def __call__(self, text, **_):
        return {"input_ids": [len(word) for word in text.split()]}


def test_the_splits_are_disjoint_and_both_substantial():
    calibration, evaluation = corpus_text("calibration"), corpus_text("evaluation")
    assert len(calibration) > 200_000 and len(evaluation) > 150_000
    from pydoc_data.topics import topics

    for text in (text for text in topics.values() if len(text) > 2000):  # each topic lands in one split
        assert (text in calibration) != (text in evaluation)
    with pytest.raises(DataError, match="unknown corpus split"):
        corpus_text("train")


def test_blocks_are_consecutive_and_spread_evenly():
    text = " ".join("x" * (i % 7 + 1) for i in range(100))
    blocks = token_blocks(WordTokenizer(), text, length=10)
    assert blocks.shape == (10, 10) and blocks.flatten().tolist() == [i % 7 + 1 for i in range(100)]
    picked = token_blocks(WordTokenizer(), text, length=10, count=3)
    assert picked.tolist() == blocks[[0, 4, 9]].tolist() or picked.tolist() == blocks[[0, 5, 9]].tolist()
    with pytest.raises(DataError, match="fewer than one block of 500"):
        token_blocks(WordTokenizer(), text, length=500, source="calib.txt")


@pytest.mark.parametrize("name, content, match", [
    ("empty.txt", "  \n", "empty.txt: holds no text"),
    ("bad.jsonl", '{"text": "a"}\n{oops\n', r"bad.jsonl:2:2: bad JSON"),
    ("field.jsonl", '{"body": "a"}\n', r"field.jsonl:1: no field 'text'"),
])
def test_bad_text_files_name_the_file_and_line(tmp_path, name, content, match):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=match):
        read_text_file(tmp_path / name)


def test_reads_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("hello world", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n', encoding="utf-8")
    assert read_text_file(tmp_path / "a.txt") == "hello world"
    assert read_text_file(tmp_path / "b.jsonl") == "one\n\ntwo"
    (tmp_path / "c.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(DataError, match="not UTF-8"):
        read_text_file(tmp_path / "c.txt")
