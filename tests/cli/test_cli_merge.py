"""`rankwise merge` end to end on the tiny Llama: a low-rank merge saves an adapter, a dense one a model
folder, both load back; bad input fails in one line and writes nothing."""

import json

import torch

import rankwise
from rankwise.cli.main import main
from rankwise.models import load


def _inputs(tmp_path, count: int = 2) -> list[str]:
    folders = []
    for index in range(count):
        model, _ = load("tiny-llama")
        torch.manual_seed(index)
        rankwise.adapt(model, "lora", rank=2, targets=["q_proj", "v_proj"])
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(torch.randn_like(param) * 0.1)
        rankwise.save_adapter(model, tmp_path / f"in{index}")
        folders.append(str(tmp_path / f"in{index}"))
    return folders


def test_cat_saves_an_adapter_and_ties_a_model_folder(tmp_path, capsys):
    inputs = _inputs(tmp_path)
    assert main(["merge", "tiny-llama", "--inputs", *inputs, "--method", "cat", "--out",
                 str(tmp_path / "cat"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "adapter" and result["rank"] == 4
    base, _ = load("tiny-llama")
    rankwise.load_adapter(base, tmp_path / "cat")
    assert main(["merge", "tiny-llama", "--inputs", *inputs, "--method", "ties", "--density", "0.5",
                 "--out", str(tmp_path / "ties")]) == 0
    assert "a model folder" in capsys.readouterr().out
    merged, _ = load(str(tmp_path / "ties"))
    original, _ = load("tiny-llama")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[q], original.state_dict()[q])


def test_bad_input_fails_in_one_line_and_writes_nothing(tmp_path, capsys):
    inputs = _inputs(tmp_path, 1)
    for argv, words in ((["--method", "ties", "--density", "0"], "density must be in (0, 1]"),
                        (["--method", "cat", "--weights", "1", "2"], "2 weights for 1 inputs"),
                        (["--method", "mean"], "unknown merge method 'mean'")):
        assert main(["merge", "tiny-llama", "--inputs", *inputs, *argv, "--out", str(tmp_path / "out")]) == 2
        error = capsys.readouterr().err
        assert words in error and error.count("\n") == 1
        assert not (tmp_path / "out").exists()


def test_rmm_saves_a_basis_and_reverts_each_input_exactly_at_k_equal_n(tmp_path, capsys):
    inputs = _inputs(tmp_path, 3)
    basis = tmp_path / "basis"
    assert main(["merge", "tiny-llama", "--inputs", *inputs, "--method", "rmm", "--rank", "3",
                 "--out", str(basis)]) == 0
    assert "an RMM basis of 3 models" in capsys.readouterr().out
    for task in ("2", "in2"):
        out = tmp_path / f"reverted-{task}"
        assert main(["merge", "tiny-llama", "--revert", task, "--basis", str(basis), "--out", str(out)]) == 0
        reverted, original = load("tiny-llama")[0], load("tiny-llama")[0]
        rankwise.load_adapter(reverted, out)
        rankwise.load_adapter(original, inputs[1 if task == "2" else 2])
        ids = torch.randint(0, 64, (2, 5))
        with torch.no_grad():
            assert torch.allclose(reverted(ids).logits, original(ids).logits, atol=1e-5)
    assert main(["merge", "tiny-llama", "--revert", "9", "--basis", str(basis), "--out",
                 str(tmp_path / "x")]) == 2
    assert "no task '9'" in capsys.readouterr().err


def test_eval_reports_each_task_beside_its_expert_and_held_out_perplexity(tmp_path, capsys):
    inputs = _inputs(tmp_path, 2)
    assert main(["merge", "tiny-llama", "--inputs", *inputs, "--method", "task-arithmetic", "--eval",
                 "iso-dates", "reverse-words", "--eval-limit", "2", "--out", str(tmp_path / "ta"),
                 "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out)["evaluation"]
    assert [row["task"] for row in evaluation["tasks"]] == ["iso-dates", "reverse-words"]
    assert all(0 <= row["expert"] <= 1 and 0 <= row["merged"] <= 1 for row in evaluation["tasks"])
    ppl = evaluation["perplexity"]
    assert len(ppl["experts"]) == 2 and len(ppl["merged"]) == 1 and ppl["base"] > 1
    assert main(["merge", "tiny-llama", "--inputs", *inputs, "--method", "ties", "--eval", "iso-dates",
                 "--out", str(tmp_path / "x")]) == 2
    assert "one bundled task per input" in capsys.readouterr().err
