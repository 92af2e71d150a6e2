"""`rankwise bench` end to end: --quick covers every method with every field (CI checks completeness, not
speed), options reach the sweep, and bad input fails in one line before anything runs."""

import json

import pytest

import rankwise
from rankwise.cli.main import main

FIELDS = {"method", "task", "lr", "seed", "accuracy", "accuracy_spread", "trainable_params", "adapter_bytes",
          "step_time_s", "peak_mem_mb", "merged_max_abs_diff", "sweep"}


@pytest.mark.slow
def test_quick_covers_every_method_with_every_field(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")]) == 0
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert sorted(r["method"] for r in records) == sorted(rankwise.ADAPTERS.names())
    for record in records:
        assert FIELDS <= record.keys(), record["method"]
        assert len(record["sweep"]) >= 2 and len(record["seed"]) == 2
        if record["method"] in ("lora", "rslora", "dora", "pissa"):
            assert record["peft_one_step_max_abs_diff"] <= 1e-5
            assert record["peft_step_ratio"] > 0 and record["peft_mem_ratio"] > 0
    written = {p.name for p in tmp_path.iterdir()}
    assert {"results.md", "accuracy_vs_params.png", "accuracy_vs_lr.png"} <= written
    assert "rankwise bench:" in capsys.readouterr().out


def test_options_reach_the_sweep(tmp_path, capsys):
    assert main(["bench", "--quick", "--methods", "lora", "--no-probe", "--lrs", "1e-3", "3e-3",
                 "--seeds", "3", "--steps", "1", "--extend", "0", "--out", str(tmp_path),
                 "--runs", str(tmp_path / "runs")]) == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    [record] = saved["records"]
    assert record["seed"] == [3] and set(record["sweep"]) == {"0.001", "0.003"}  # no rate past the edge
    assert saved["config"]["extend"] == 0
    assert "peak_mem_mb" not in record
    assert "best: lora" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--methods", "nope"], "unknown method"),
    (["--tasks", "nope"], "unknown or no task"),
    (["--lrs", "-1"], "positive"),
])
def test_bad_input_fails_in_one_line(tmp_path, capsys, argv, message):
    folders = ["--out", str(tmp_path / "o"), "--runs", str(tmp_path / "r")]
    assert main(["bench", "--quick", *argv, *folders]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
