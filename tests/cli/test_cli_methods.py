"""`rankwise finetune method=NAME` end to end on a tiny random Llama, for every registered method."""

import json

import pytest

from rankwise import ADAPTERS
from rankwise.adapters import layers_of
from rankwise.cli.main import main
from rankwise.io import load_adapter
from rankwise.models import load


@pytest.mark.parametrize("method", ADAPTERS.names())
def test_finetune_runs_every_method_end_to_end(method, tmp_path, capsys):
    out = tmp_path / method
    argv = ["finetune", "model=tiny-llama", "task=iso-dates", f"method={method}", "max_steps=2",
            "max_length=96", "per_device_train_batch_size=2", "eval_size=1", "eval_batch_size=1",
            "max_new_tokens=2", "init_batches=1", "progress=false", f"output_dir={out}"]
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 2 and results["trainable_parameters"] > 0
    assert 0.0 <= results["tuned_exact_match"] <= 1.0
    model, _ = load("tiny-llama")
    load_adapter(model, out / "adapter")  # what finetune saved loads back onto the same base


@pytest.mark.parametrize("pattern", ['rank_pattern={"q_proj": 2}', "--rank-pattern.q_proj=2"])
def test_finetune_takes_a_per_layer_rank_pattern(pattern, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["finetune", "model=tiny-llama", "task=iso-dates", "rank=4", pattern, "layers_to_transform=[1]",
            "max_steps=1", "max_length=96", "per_device_train_batch_size=2", "eval_size=0", "progress=false",
            f"output_dir={out}"]
    assert main(argv) == 0, capsys.readouterr().err
    model, _ = load("tiny-llama")
    load_adapter(model, out / "adapter")
    ranks = {path: adapter.config.rank for path, adapter in layers_of(model, "default").items()}
    assert all(path.startswith("model.layers.1.") for path in ranks)  # layers_to_transform=[1]
    assert {path.rsplit(".", 1)[1]: rank for path, rank in ranks.items()} == {
        "q_proj": 2, "k_proj": 4, "v_proj": 4, "o_proj": 4, "gate_proj": 4, "up_proj": 4, "down_proj": 4}
