"""`rankwise compress`: a report and a model folder that loads back, and bad inputs that fail in one line
without leaving output behind."""

import json
import re

import pytest
import torch

from rankwise.cli.main import main
from rankwise.compress.compact import QuantizedLinear
from rankwise.models import load

SMALL = ["--calib-samples", "2", "--seq-len", "16", "--eval-samples", "2", "--eval-limit", "2",
         "--no-progress"]


def test_compress_reports_and_round_trips(tmp_path, capsys, cache):
    out = tmp_path / "eora"
    code = main(["compress", "tiny-llama", "--method", "eora", "--bits", "3", "--group-size", "16",
                 "--rank", "4", "--targets", "q_proj,v_proj", "--out", str(out), "--json", *SMALL])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bytes"]["after"] < report["bytes"]["before"]
    assert set(report["perplexity"]) == set(report["exact_match"]) == {"before", "after"}
    assert report["calibration"] == {"source": "the bundled corpus' calibration split", "sequences": 2,
                                     "length": 16}
    assert json.loads((out / "compress_report.json").read_text())["method"] == "eora"
    model, tokenizer = load(str(out))
    assert isinstance(model.model.layers[0].self_attn.q_proj.base, QuantizedLinear)
    assert tokenizer is not None


def test_a_calibration_file_and_an_encoder(tmp_path, capsys, cache):
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps({"text": "the quick brown fox jumps over the lazy dog " * 8}) + "\n"
                             for _ in range(4)))
    code = main(["compress", "minilm-l6", "--method", "svd-llm", "--ratio", "0.5", "--calib", str(calib),
                 "--targets", "output.dense", "--json", *SMALL])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 < report["output_cosine"]["after"] <= 1 and report["parameters"]["ratio"] < 1
    assert report["calibration"]["source"] == str(calib)


@pytest.mark.parametrize("argv, message", [
    (["--method", "svd", "--rank", "999"], r"q_proj: rank 999 exceeds min\(out, in\)"),
    (["--method", "eora", "--bits", "3", "--rank", "4", "--group-size", "7"], "group_size 7 does not divide"),
    (["--method", "eora", "--bits", "3", "--rank", "4", "--group-size", "16", "--calib", "EMPTY"],
     "holds no text"),
    (["--method", "eora", "--bits", "3", "--rank", "4", "--group-size", "16", "--calib", "BAD"],
     r"bad.jsonl:1:2: bad JSON"),
])
def test_bad_inputs_leave_no_output(tmp_path, capsys, cache, argv, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "bad.jsonl").write_text("{nope\n")
    files = {"EMPTY": str(tmp_path / "empty.txt"), "BAD": str(tmp_path / "bad.jsonl")}
    argv = [files.get(a, a) for a in argv]
    out = tmp_path / "out"
    assert main(["compress", "tiny-llama", *argv, "--out", str(out), *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not out.exists()


def test_an_output_folder_holding_a_model_needs_overwrite(tmp_path, capsys, cache):
    out = tmp_path / "m"
    argv = ["compress", "tiny-llama", "--method", "rtn", "--bits", "4", "--group-size", "16",
            "--out", str(out), "--no-eval", *SMALL]
    assert main(argv) == 0
    before = (out / "rankwise.safetensors").read_bytes()
    assert main([*argv[:5], "8", *argv[6:]]) == 2  # --bits 8 into the same folder
    assert "already holds files" in capsys.readouterr().err
    assert (out / "rankwise.safetensors").read_bytes() == before  # untouched
    assert main([*argv[:5], "8", *argv[6:], "--overwrite"]) == 0
    assert (out / "rankwise.safetensors").read_bytes() != before
    model, _ = load(str(out))
    assert model.model.layers[0].mlp.up_proj.bits == 8
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))


def test_an_adapter_trains_on_a_compressed_model_folder(tmp_path, capsys, cache):
    """QLoRA-style: LoRA on a quantized base with its compensation, saved and evaluated against the folder."""
    model_dir, run = tmp_path / "model", tmp_path / "run"
    assert main(["compress", "tiny-llama", "--method", "svd-comp", "--bits", "3", "--group-size", "16",
                 "--rank", "2", "--out", str(model_dir), "--no-eval", "--no-progress"]) == 0
    assert main(["finetune", f"model={model_dir}", "task=iso-dates", "max_steps=2", "rank=2", "eval_size=2",
                 f"output_dir={run}", "progress=false"]) == 0
    assert main(["eval", "--model", str(model_dir), "--adapter", str(run / "adapter"), "--task", "iso-dates",
                 "--limit", "2", "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["examples"] == 2
    model, _ = load(str(model_dir))
    assert isinstance(model.model.layers[0].mlp.up_proj.base, QuantizedLinear)


def test_welore_peft_trains_only_the_lrc_factors_through_finetune(tmp_path, cache):
    """WeLore-PEFT: an adapter of modules_to_save copies of the LRCs, with no other targets."""
    from rankwise.compress.welore import lrc_paths
    from rankwise.io import load_adapter

    model_dir, run = tmp_path / "model", tmp_path / "run"
    assert main(["compress", "tiny-llama", "--method", "welore", "--set", "reduction=0.3", "--out",
                 str(model_dir), "--no-eval", "--no-progress"]) == 0
    compressed, _ = load(str(model_dir))
    paths = lrc_paths(compressed)
    assert main(["finetune", f"model={model_dir}", "task=iso-dates", "max_steps=3", "targets=[]",
                 f"modules_to_save={json.dumps(paths)}", "learning_rate=0.01", "eval_size=2",
                 f"output_dir={run}", "progress=false"]) == 0
    load_adapter(compressed, run / "adapter")
    layer = compressed.get_submodule(paths[0])
    copy = layer.adapters["default"]
    assert copy.names == ["A", "B"] and not torch.equal(copy.A, layer.base.A)  # the copies trained
