"""`rankwise convert` end to end on the tiny Llama: the LoRA folder (rankwise's and PEFT's files, and
convert_report.json) loads back and computes the cut update; careless input fails in one line and writes
nothing."""

from __future__ import annotations

import json

import pytest
import torch

import rankwise
from rankwise.adapters import layers_of
from rankwise.adapters.convert import convert_to_lora
from rankwise.cli import main as main_module
from rankwise.models import load


def _dora(folder, method: str = "dora") -> str:
    model, _ = load("tiny-llama")
    rankwise.adapt(model, method, rank=2, targets=["q_proj", "v_proj", "down_proj"])
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    rankwise.save_adapter(model, folder)
    return str(folder)


def test_converts_saves_and_reports(tmp_path, capsys, cache):
    source, out = _dora(tmp_path / "dora"), tmp_path / "lora"
    assert main_module.main(["convert", source, "--model", "tiny-llama", "--to", "lora", "--rank", "2",
                             "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "convert_report.json").read_text())
    assert len(report["layers"]) == 6 and report["method"] == "dora" and report["rank"] == 2
    for path, row in report["layers"].items():
        assert path in printed and f"{row['relative_error']:.3e}" in printed
    # The same numbers as the Python API on the same adapter.
    model = rankwise.load_adapter(load("tiny-llama")[0], source)
    expected = convert_to_lora(model, rank=2)
    for path, row in expected["layers"].items():
        assert report["layers"][path]["relative_error"] == pytest.approx(row["relative_error"], rel=1e-6)
    loaded = rankwise.load_adapter(load("tiny-llama")[0], out)
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=1e-6, rtol=0)


def test_energy_with_peft_files_that_peft_loads(tmp_path, capsys, cache):
    peft = pytest.importorskip("peft")
    source, out = _dora(tmp_path / "dora"), tmp_path / "lora"
    assert main_module.main(["convert", source, "--model", "tiny-llama", "--to", "lora", "--energy", "0.9",
                             "--format", "peft", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(row["energy_kept"] >= 0.9 for row in report["layers"].values())
    assert {p.name for p in out.iterdir()} == {"adapter.json", "adapter.safetensors", "adapter_config.json",
                                               "adapter_model.safetensors", "convert_report.json"}
    ours = rankwise.load_adapter(load("tiny-llama")[0], out)
    ranks = {path: lora.lora_A.shape[0] for path, lora in layers_of(ours, "default").items()}
    assert ranks == {path: row["rank"] for path, row in report["layers"].items()}
    theirs = peft.PeftModel.from_pretrained(load("tiny-llama")[0], out)
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids).logits, atol=1e-5, rtol=0)
    # Converting again into the same folder replaces it.
    assert main_module.main(["convert", source, "--model", "tiny-llama", "--to", "lora", "--rank", "1",
                             "--out", str(out)]) == 0
    assert not (out / "adapter_config.json").exists()


def test_careless_input_fails_in_one_line_and_writes_nothing(tmp_path, capsys, cache):
    source, vglora = _dora(tmp_path / "dora"), _dora(tmp_path / "vglora", "vglora")
    out = tmp_path / "out"
    cases = ((["--rank", "2", "--energy", "0.9"], "not both"),
             (["--energy", "1.5"], "energy must be a share in (0, 1], got 1.5"),
             (["--rank", "0"], "rank must be a positive integer"),
             ([], "or neither"))
    for argv, words in cases:
        assert main_module.main(["convert", source, "--model", "tiny-llama", "--to", "lora", *argv,
                                 "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert words in error and error.count("\n") == 1
    for adapter, more, words in ((str(tmp_path / "missing"), [], "no such folder"),
                                 (vglora, [], "not a fixed weight delta"),
                                 (source, ["--out", source], "the input adapter's folder")):
        assert main_module.main(["convert", adapter, "--model", "tiny-llama", "--to", "lora", "--rank", "2",
                                 "--out", str(out), *more]) == 2
        error = capsys.readouterr().err
        assert words in error and error.count("\n") == 1
    with pytest.raises(SystemExit) as usage:  # argparse's own errors: one line too (cli.main.Parser)
        main_module.main(["convert", source, "--model", "tiny-llama", "--to", "dora", "--rank", "2",
                          "--out", str(out)])
    error = capsys.readouterr().err
    assert usage.value.code == 2 and "invalid choice: 'dora'" in error and error.count("\n") == 1
    assert not out.exists()
