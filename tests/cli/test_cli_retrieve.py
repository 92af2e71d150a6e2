"""`rankwise retrieve` end to end on a small source tree, in seconds; bad input fails in one line."""

from __future__ import annotations

import json

import pytest

import rankwise
from rankwise.cli.main import main
from rankwise.data.code_search import split_of
from rankwise.models import load

VERBS = ["parse", "render", "merge", "count", "sort", "split", "load", "save", "check", "clean"]


def write_tree(root):
    """Packages that land in train and in test, each with documented functions of distinct summaries."""
    names = [f"pkg{i}" for i in range(60)]
    chosen = [n for n in names if split_of(n) == "train"][:6]
    chosen += [n for n in names if split_of(n) == "test"][:3]
    for package in chosen:
        lines = []
        for verb in VERBS:
            lines += [f"def {verb}_{package}(items, limit=3):",
                      f'    """{verb.capitalize()} every item of the {package} collection up to a limit."""',
                      "    kept = [item for item in items][:limit]", f"    return sorted(kept)  # {verb}", ""]
        (root / f"{package}.py").write_text("\n".join(lines))
    return root


def test_retrieve_compares_every_method_on_a_small_tree(tmp_path, capsys):
    try:
        load("minilm-l6")
    except rankwise.RankwiseError as err:
        pytest.skip(str(err))
    (tmp_path / "src").mkdir()
    root = write_tree(tmp_path / "src")
    code = main(["retrieve", "--root", str(root), "--lora-steps", "2", "--train-pairs", "0",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "30 test queries against 30 documents; 60 training pairs" in printed
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert set(results) == {"bm25", "dense", "adr", "adr-both", "lora"}
    assert all(0 <= r["recall@1"] <= r["recall@10"] <= 1 for r in results.values())
    assert results["adr"]["trained"] == results["adr-both"]["trained"] == results["lora"]["trained"] == 18432


@pytest.mark.parametrize(("argv", "words"), [
    (["--root", "/no/such/folder"], "is not a folder of Python sources"),
    (["--methods", "bm25", "--train-pairs", "-1"], "must be 0 or more"),
])
def test_bad_input_fails_in_one_line(argv, words, capsys):
    assert main(["retrieve", *argv]) == 2
    error = capsys.readouterr().err
    assert words in error and error.count("\n") == 1
