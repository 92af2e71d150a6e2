"""`rankwise verify` end to end: LoRA and DoRA adapters saved by rankwise give the same logits unmerged,
merged, in PEFT and merged in plain transformers; the differences are printed, match a direct
computation and are recorded in adapter.json, which still loads; careless input fails in one line."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import rankwise
from rankwise.cli import main as cli_main
from rankwise.models import load
from rankwise.train.verify import PROMPTS, verify_adapter


def _saved(folder, method: str, model_name: str = "tiny-llama", rank: int = 4, scale: float = 0.2) -> str:
    model, _ = load(model_name)
    rankwise.adapt(model, method, rank=rank, targets="all-linear")
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):  # B starts at zero: give the adapter a real update
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    rankwise.save_adapter(model, folder)
    return str(folder)


@torch.no_grad()
def _merge_difference(adapter: str) -> float:
    """max |merged - unmerged| over the prompts, computed directly with rankwise.merge."""
    model, tokenizer = load("tiny-llama")
    rankwise.load_adapter(model, adapter)
    ids = [tokenizer(p, return_tensors="pt").input_ids for p in PROMPTS]
    unmerged = [model(i).logits for i in ids]
    rankwise.merge(model)
    return max((model(i).logits - u).abs().max().item() for i, u in zip(ids, unmerged))


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_every_row_matches_and_is_recorded(tmp_path, capsys, cache, method):
    pytest.importorskip("peft")
    adapter = _saved(tmp_path / method, method)
    assert cli_main.main(["verify", adapter, "--model", "tiny-llama", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == method and result["prompts"] == len(PROMPTS) and not result["skipped"]
    diffs = result["max_abs_diff"]
    assert set(diffs) == {"merged", "peft", "transformers"} and not result["failed"]
    assert diffs["merged"] == pytest.approx(_merge_difference(adapter), abs=1e-7)
    assert diffs["transformers"] <= 1e-5 and diffs["peft"] <= 1e-5
    meta = json.loads((tmp_path / method / "adapter.json").read_text())
    assert meta["verify"]["max_abs_diff"] == diffs and meta["verify"]["model"] == "tiny-llama"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "unknown keys" warning for the new entry
        rankwise.load_adapter(load("tiny-llama")[0], adapter)


def test_text_report_skips_what_cannot_run_and_fails_over_tolerance(tmp_path, capsys, cache):
    adapter = _saved(tmp_path / "vglora", "vglora")
    assert cli_main.main(["verify", adapter, "--model", "tiny-llama", "--no-record"]) == 0
    out = capsys.readouterr().out
    assert "merged        skipped: not mergeable" in out and "peft          skipped: PEFT has no" in out
    assert "verify" not in json.loads((tmp_path / "vglora" / "adapter.json").read_text())
    lora = _saved(tmp_path / "lora", "lora")
    assert cli_main.main(["verify", lora, "--model", "tiny-llama", "--tolerance", "0", "--no-record"]) == 1
    assert "merged        max |diff|" in (out := capsys.readouterr().out) and "FAILS" in out


def test_careless_input_fails_in_one_line(tmp_path, capsys, cache):
    for argv, words in (([str(tmp_path / "missing")], "is not a directory"),
                        ([str(tmp_path), "--tolerance", "-1"], "--tolerance must be >= 0")):
        assert cli_main.main(["verify", *argv, "--model", "tiny-llama"]) == 2
        error = capsys.readouterr().err
        assert words in error and error.count("\n") == 1, error


@pytest.mark.slow
def test_smollm2_lora_matches_in_every_row(tmp_path):  # the user's cache: SmolLM2 converted once
    pytest.importorskip("peft")
    adapter = _saved(tmp_path / "lora", "lora", "smollm2-135m", rank=8, scale=0.02)
    result = verify_adapter("smollm2-135m", adapter)
    assert set(result["max_abs_diff"]) == {"merged", "peft", "transformers"} and not result["failed"]
    assert max(result["max_abs_diff"].values()) <= 1e-4 * result["max_abs_logit"]  # float32 rounding only


def test_finetune_verifies_its_adapter_at_the_end(tmp_path, capsys):
    code = cli_main.main(["finetune", "model=tiny-llama", "task=iso-dates", "max_steps=2", "eval_size=2",
                          f"output_dir={tmp_path}", "progress=false"])
    assert code == 0
    assert "verify:     max |logit diff| vs unmerged: merged" in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    recorded = json.loads((tmp_path / "adapter" / "adapter.json").read_text())["verify"]
    assert results["verify"]["max_abs_diff"] == recorded["max_abs_diff"]
    assert set(recorded["max_abs_diff"]) == {"merged", "peft", "transformers"} and not recorded["failed"]
    assert cli_main.main(["finetune", "model=tiny-llama", "task=iso-dates", "max_steps=1", "eval_size=1",
                          f"output_dir={tmp_path / 'off'}", "progress=false", "verify=false"]) == 0
    assert "verify" not in json.loads((tmp_path / "off" / "results.json").read_text())
