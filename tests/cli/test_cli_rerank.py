"""`rankwise rerank` end to end on tiny-llama and a small source tree; bad input fails in one line."""

from __future__ import annotations

import json

import pytest

from rankwise.cli.main import main

from .test_cli_retrieve import write_tree


def test_rerank_runs_and_reports_both_rankings(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    root = write_tree(tmp_path / "src")
    code = main(["rerank", "--model", "tiny-llama", "--root", str(root), "--queries", "2", "--candidates",
                 "4", "--set-size", "3", "--k", "2", "--max-new-tokens", "4", "--out", str(tmp_path / "out")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 test queries, BM25 top 4 reranked in sets of 3 by tiny-llama" in printed
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert 0 <= results["first_stage"]["ndcg@10"] <= 1 and 0 <= results["reranked"]["ndcg@10"] <= 1


def test_rerank_trains_with_grpo_and_reports_each_stage(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    root = write_tree(tmp_path / "src")
    out = tmp_path / "out"
    small = ["rerank", "--model", "tiny-llama", "--root", str(root), "--set-size", "2",
             "--max-new-tokens", "4", "--candidates", "3", "--k", "2"]
    code = main([*small, "--queries", "2", "--train", "4", "--cold-start", "1", "--grpo-steps", "1",
                 "--generations", "2", "--completion-tokens", "4", "--out", str(out)])
    assert code == 0
    assert "GRPO mean reward: first 1 steps" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert {"first_stage", "reranked", "after_cold_start", "after_grpo"} <= results.keys()
    assert [r["step"] for r in results["reward_curve"]] == [1]
    assert results["reward_means"]["steps"] == 1
    assert (out / "adapter" / "adapter.safetensors").is_file() and (out / "reward.png").is_file()
    assert main([*small, "--queries", "1", "--adapter", str(out / "adapter")]) == 0  # the saved adapter loads


@pytest.mark.parametrize(("argv", "words"), [
    (["--train", "3"], "give --out DIR"),
    (["--train", "3", "--out", "x", "--adapter", "y"], "drop --adapter"),
    (["--generations", "1"], "--generations at least 2"),
    (["--set-size", "30"], "more than the 20 documents one prompt holds"),
    (["--set-size", "1"], "--set-size at least 2"),
    (["--model", "minilm-l6"], "is an encoder"),
])
def test_bad_input_fails_in_one_line(argv, words, capsys):
    assert main(["rerank", *argv]) == 2
    error = capsys.readouterr().err
    assert words in error and error.count("\n") == 1
