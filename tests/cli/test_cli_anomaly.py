"""`rankwise anomaly` end to end on a tiny configuration; bad input fails in one line."""

from __future__ import annotations

import json

import pytest

from rankwise.cli.main import main


def test_anomaly_runs_and_writes_its_table(tmp_path, capsys):
    code = main(["anomaly", "--shots", "2", "4", "--known", "0", "1", "--unseen", "7", "--epochs", "1",
                 "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "image AUROC on unseen digits [7]" in printed and "residual" in printed
    result = json.loads((tmp_path / "results.json").read_text())
    assert set(result["auroc"]) == {"raw", "residual", "residual_no_constraintor"}
    assert all(0 <= cell["mean"] <= 1 for by_shot in result["auroc"].values() for cell in by_shot.values())


@pytest.mark.parametrize(("argv", "words"), [
    (["--known", "1", "--unseen", "1"], "must be disjoint digits 0-9"),
    (["--shots", "50"], "50"),
])
def test_bad_input_fails_in_one_line(argv, words, capsys):
    assert main(["anomaly", *argv, "--epochs", "1"]) == 2
    error = capsys.readouterr().err
    assert words in error and error.count("\n") == 1
