"""`rankwise export` end to end on tiny-llama: LoRA and DoRA adapters saved by rankwise come out as a merged
folder plain transformers loads, a PEFT folder PEFT loads and a GGUF file, with the adapter's logits;
careless input fails in one line before the model loads and writes nothing."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import rankwise
from rankwise.cli import main as cli_main
from rankwise.models import load

IDS = torch.tensor([[1, 504, 3157, 28, 216, 34, 32, 34, 33]])


pytestmark = pytest.mark.usefixtures("cache")


def _saved(tmp_path, method: str):
    model, _ = load("tiny-llama")
    rankwise.adapt(model, method, rank=4, targets=["q_proj", "v_proj", "down_proj"])
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for param in model.parameters():
            if param.requires_grad:  # B starts at zero: move every adapter tensor
                param.add_(torch.randn(param.shape, generator=generator) * 0.2)
    rankwise.save_adapter(model, tmp_path / method)
    with torch.no_grad():
        return str(tmp_path / method), model.eval()(IDS).logits


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_merged_and_peft_exports_give_the_adapters_logits(tmp_path, capsys, method):
    adapter, expected = _saved(tmp_path, method)
    out = tmp_path / "merged"
    assert cli_main.main(["export", adapter, "--model", "tiny-llama", "--to", "merged", "--out",
                          str(out)]) == 0
    assert f"exported the {method} adapter" in capsys.readouterr().out
    plain = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        assert (plain(IDS).logits - expected).abs().max() <= 1e-5
    peft = pytest.importorskip("peft")
    assert cli_main.main(["export", adapter, "--model", "tiny-llama", "--to", "peft", "--out",
                          str(tmp_path / "peft")]) == 0
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["use_dora"] == (method == "dora")
    in_peft = peft.PeftModel.from_pretrained(load("tiny-llama")[0], tmp_path / "peft").eval()
    with torch.no_grad():
        assert (in_peft(IDS).logits - expected).abs().max() <= 1e-5


def test_gguf_export_writes_one_gguf_file(tmp_path, capsys):
    adapter, _ = _saved(tmp_path, "lora")
    out = tmp_path / "gguf"
    assert cli_main.main(["export", adapter, "--model", "tiny-llama", "--to", "gguf", "--dtype", "f16",
                          "--out", str(out)]) == 0
    assert str(out / "model-f16.gguf") in capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == ["model-f16.gguf"]
    with open(out / "model-f16.gguf", "rb") as handle:  # the GGUF magic, then format version 3
        assert handle.read(4) == b"GGUF" and int.from_bytes(handle.read(4), "little") == 3


def test_careless_input_fails_in_one_line_and_writes_nothing(tmp_path, capsys):
    lora, _ = _saved(tmp_path, "lora")
    model, _ = load("tiny-llama")
    rankwise.adapt(model, "vglora", rank=4, targets=["q_proj"])
    rankwise.save_adapter(model, tmp_path / "vglora")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    out = str(tmp_path / "out")
    cases = [
        ([str(tmp_path / "missing"), "--to", "merged", "--out", out], "is not a directory"),
        ([lora, "--to", "onnx", "--out", out], "invalid choice: 'onnx'"),
        ([str(tmp_path / "vglora"), "--to", "merged", "--out", out], "vglora cannot be merged"),
        ([str(tmp_path / "vglora"), "--to", "peft", "--out", out], "PEFT has no exact equivalent of vglora"),
        ([lora, "--to", "peft", "--dtype", "f16", "--out", out], "--dtype applies to --to merged and gguf"),
        ([lora, "--to", "merged", "--out", str(taken)], "holds other files"),
    ]
    for argv, words in cases:
        try:
            code = cli_main.main(["export", *argv[:1], "--model", "tiny-llama", *argv[1:]])
        except SystemExit as exit_:  # argparse's own exit, for an unknown choice
            code = exit_.code
        error = capsys.readouterr().err
        assert code == 2, words
        assert words in error and error.count("\n") == 1, error
    assert not (tmp_path / "out").exists() and [p.name for p in taken.iterdir()] == ["notes.txt"]
