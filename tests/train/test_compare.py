"""rankwise bench's sweep on tiny-llama: the best rate is picked, more seeds rerun it, finished runs are
skipped, a user's file is split once, and bad settings are refused before anything runs."""

import json
import os

import pytest

import rankwise.train.compare as compare
from rankwise.errors import ConfigError
from rankwise.train.compare import BenchConfig, bench, method_fields, method_lrs

SMALL = dict(model="tiny-llama", tasks=["iso-dates"], steps=1, lrs=[1e-3, 1e-2], seeds=[0, 1], extend=0,
             batch_size=2, eval_size=2, max_new_tokens=2, probe=False, progress=False)


def test_every_method_gets_rank_alpha_and_all_linear_where_it_has_them():
    config = BenchConfig()
    assert method_fields("lora", config) == {"rank": 8, "alpha": 16.0, "targets": "all-linear"}
    assert "alpha" not in method_fields("sara", config) and "rank" not in method_fields("sara", config)
    assert "targets" not in method_fields("adaptertune", config)  # a block method keeps its own targets
    assert method_lrs("lora", BenchConfig(lrs=[1e-4, 1e-3])) == [1e-4, 1e-3]
    assert method_lrs("full", BenchConfig(lrs=[1e-4, 1e-3])) == pytest.approx([1e-5, 1e-4])  # lr_scale 0.1


def test_the_best_rate_wins_and_ties_go_to_the_lower_loss():
    cells = [{"lr": 1e-3, "accuracy": 0.5, "final_loss": 0.3},
             {"lr": 1e-2, "accuracy": 0.5, "final_loss": 0.2},
             {"lr": 1e-4, "accuracy": 0.1, "final_loss": 0.1}]
    assert compare._best(cells)["lr"] == 1e-2


def test_a_best_rate_on_the_grids_edge_is_followed_one_step_further():
    assert compare.rate_beyond_edge([1e-3, 3e-3, 1e-2], 1e-2) == 0.0333
    assert compare.rate_beyond_edge([1e-3, 3e-3, 1e-2], 1e-3) == 0.000333
    assert compare.rate_beyond_edge([1e-3, 3e-3, 1e-2], 3e-3) is None
    assert compare.rate_beyond_edge([1e-3], 1e-3) is None


def test_the_sweep_extends_past_a_winning_edge_until_the_limit(tmp_path, monkeypatch):
    def fake_cell(config, method, source, lr, seed, out):  # accuracy grows with the rate: always the edge
        return {"lr": lr, "seed": seed, "accuracy": min(lr, 1.0), "final_loss": 1.0, "trainable_params": 1,
                "adapter_bytes": 1, "step_time_s": 1.0}

    monkeypatch.setattr(compare, "run_cell", fake_cell)
    monkeypatch.setattr(compare, "base_cell", lambda config, source, out: 0.0)
    monkeypatch.setattr("rankwise.train.compare_report.write_report", lambda config, records, out: None)
    [record] = bench({**SMALL, "methods": ["lora"], "extend": 2, "out": str(tmp_path), "runs": str(tmp_path)})
    assert list(record["sweep"]) == ["0.001", "0.01", "0.1", "1"] and record["lr"] == 1.0
    assert record["best_lr_at_edge"]


def test_a_sweep_records_each_method_and_resumes_without_rerunning(tmp_path, monkeypatch):
    folders = {"out": str(tmp_path), "runs": str(tmp_path / "runs")}
    records = bench({**SMALL, "methods": ["lora", "sara"], **folders})
    assert [(r["method"], r["task"]) for r in records] == [("lora", "iso-dates"), ("sara", "iso-dates")]
    for record in records:
        assert record["lr"] in (1e-3, 1e-2) and record["seed"] == [0, 1]
        assert set(record["sweep"]) == {"0.001", "0.01"} and len(record["accuracy_per_seed"]) == 2
        assert record["trainable_params"] > 0 and record["adapter_bytes"] > 0
        assert record["train_step_time_s"] > 0
        assert 0.0 <= record["base_accuracy"] <= 1.0  # the adapter-free floor, on the same examples
    base = json.loads((tmp_path / "runs" / "cells" / "base" / "iso-dates" / "results.json").read_text())
    assert base["examples"] == 2 and records[0]["base_accuracy"] == base["base_exact_match"]
    cells = list((tmp_path / "runs" / "cells" / "lora" / "iso-dates").iterdir())
    assert len(cells) == 3  # two rates at seed 0, the best at seed 1
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["records"] == json.loads(json.dumps(records))
    written = {p.name for p in tmp_path.iterdir()}
    assert {"results.md", "accuracy_vs_params.png", "accuracy_vs_lr.png"} <= written
    assert f"{os.cpu_count()} logical CPUs" in (tmp_path / "results.md").read_text()  # the machine it ran on

    def refuse(config):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr("rankwise.train.run.finetune", refuse)
    monkeypatch.setattr("rankwise.train.evaluate.exact_match", refuse)
    assert bench({**SMALL, "methods": ["lora", "sara"], **folders}) == records


def test_a_diverging_rate_is_scored_zero_and_the_sweep_goes_on(tmp_path, monkeypatch):
    import rankwise.train.run as run
    from rankwise.errors import TrainingDiverged

    real_finetune = run.finetune

    def finetune(settings):
        if settings["learning_rate"] == 1e-2:
            raise TrainingDiverged("training diverged at step 2: the loss is nan (learning_rate 0.01).")
        return real_finetune(settings)

    monkeypatch.setattr(run, "finetune", finetune)
    folders = {"out": str(tmp_path), "runs": str(tmp_path / "runs")}
    [record] = bench({**SMALL, "methods": ["lora"], "extend": 0, **folders})
    assert record["lr"] == 1e-3 and record["sweep"]["0.01"] == 0.0
    assert "loss is nan" in record["diverged"]["0.01-seed0"] and record["trainable_params"] > 0
    assert (tmp_path / "runs" / "cells" / "lora" / "iso-dates" / "lr0.01-seed0" / "diverged.json").is_file()

    monkeypatch.setattr(run, "finetune", lambda settings: pytest.fail("a finished cell was trained again"))
    assert bench({**SMALL, "methods": ["lora"], "extend": 0, **folders}) == [record]  # resumes past it too


def test_a_user_file_is_split_once_for_every_run(tmp_path):
    rows = [{"prompt": f"Say {i}.", "answer": str(i)} for i in range(30)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = bench({**SMALL, "methods": ["lora"], "data": str(data), "seeds": [0],
                     "out": str(tmp_path / "o"), "runs": str(tmp_path / "o")})
    assert records[0]["task"] == "data"
    held = (tmp_path / "o" / "data.eval.jsonl").read_text().splitlines()
    train = (tmp_path / "o" / "data.train.jsonl").read_text().splitlines()
    assert len(held) == 3 and len(train) == 27 and not set(held) & set(train)


@pytest.mark.parametrize("change, message", [
    ({"methods": ["nope"]}, "unknown method"),
    ({"tasks": ["nope"]}, "unknown or no task"),
    ({"data": "/no/such.jsonl"}, "no such file"),
    ({"lrs": [0.0]}, "positive"),
    ({"seeds": [1, 1]}, "distinct seeds"),
    ({"steps": 0}, "steps must be at least 1"),
    ({"extend": -1}, "extend must be 0 or more"),
])
def test_bad_settings_are_refused_before_anything_runs(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        bench({**SMALL, **change, "out": str(tmp_path / "out"), "runs": str(tmp_path / "runs")})
    assert not (tmp_path / "runs").exists()
