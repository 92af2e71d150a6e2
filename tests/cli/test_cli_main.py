"""The `rankwise` command through main(): methods, dry runs, errors, and a real tiny run end to end."""

import io
import json

import pytest

from rankwise import ADAPTERS
from rankwise.adapters import adapter_names
from rankwise.cli.main import main
from rankwise.train import evaluate

TINY = ["model=tiny-llama", "task=iso-dates", "max_length=96", "eval_size=2", "max_new_tokens=4",
        "per_device_train_batch_size=2", "eval_batch_size=2", "progress=false"]


def test_methods_lists_every_registered_method(capsys):
    assert main(["methods"]) == 0
    table = capsys.readouterr().out
    for name in ADAPTERS.names():
        cls = ADAPTERS.get(name)
        assert name in table and cls.paper in table and cls.url in table
    assert main(["methods", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ADAPTERS.names()
    assert {"paper", "url", "trains", "mergeable"} <= set(rows[0])


def test_methods_lists_the_residual_variants_with_their_own_fields(capsys):
    from rankwise.arch import ARCHS

    assert main(["methods", "--json", "--arch"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == ARCHS.names()
    assert rows["attnres-block"]["fields"] == {"blocks": 4} and rows["ladder"]["fields"] == {"upper": None}
    assert all(r["paper"] for r in rows.values())


def test_help_of_every_command_exits_cleanly(capsys):
    for command in ("finetune", "eval", "generate", "methods"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
    assert "per_device_train_batch_size" in capsys.readouterr().out  # finetune's help lists the keys


def test_dry_run_prints_the_resolved_config(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "tiny-llama", "task": "iso-dates", "lora_r": 16}))
    assert main(["finetune", "--config", str(path), "r=4", "--learning-rate", "5e-4", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert (resolved["rank"], resolved["learning_rate"], resolved["model"]) == (4, 5e-4, "tiny-llama")
    assert resolved["adapter_config"]["alpha"] == 16.0  # the method's default fills what was not given
    assert main(["finetune", str(path), "--dry-run"]) == 0  # the file may also come first, unflagged
    assert json.loads(capsys.readouterr().out)["rank"] == 16


@pytest.mark.parametrize("argv, message", [
    (["finetune", "model=tiny-llama", "task=iso-dates", "max_stepz=3"], "did you mean max_steps"),
    (["finetune", "model=tiny-llama", "task=iso-dates", "--rank", "two"], "rank must be int"),
    (["finetune", "--config", "absent.json"], "no config file"),
    (["eval", "--model", "tiny-llama", "--task", "nope"], "unknown task 'nope'"),
    (["eval", "--model", "tiny-llama", "--task", "iso-dates", "--adapter", "absent"], "no such folder"),
    (["generate", "--model", "tiny-llama", "--adapter", "absent", "hi"], "no such folder"),
])
def test_rankwise_errors_are_one_line_with_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_flags_of_other_commands_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["methods", "--bogus"])
    assert exit_info.value.code == 2


def test_finetune_eval_generate_end_to_end_on_tiny_llama(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["finetune", *TINY, "max_steps=2", "save_every=1", f"output_dir={out}"]) == 0
    printed = capsys.readouterr().out
    for line in ("base exact match:", "tuned exact match:", f"adapter:    {out / 'adapter'}",
                 f"loss curve: {out / 'loss.png'}"):
        assert line in printed
    assert (out / "adapter" / "adapter.safetensors").is_file()
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all({"loss", "lr"} <= set(r) for r in log)
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 2 and results["eval_examples"] == 2

    assert main(["eval", "--model", "tiny-llama", "--adapter", str(out / "adapter"), "--task", "iso-dates",
                 "--limit", "2", "--max-new-tokens", "4", "--no-progress", "--json",
                 "--predictions", str(tmp_path / "p.jsonl")]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["examples"] == 2 and 0.0 <= scored["exact_match"] <= 1.0
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 2



def test_generate_wires_model_adapter_and_prompt(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["finetune", *TINY, "max_steps=1", f"output_dir={out}", "eval_size=0"]) == 0
    capsys.readouterr()
    seen = {}

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size, progress):
        seen.update(adapters=adapter_names(model), prompts=prompts, max_new_tokens=max_new_tokens)
        return ["  2021-03-05\n"]

    monkeypatch.setattr(evaluate, "generate_answers", fake_generate)
    monkeypatch.setattr("sys.stdin", io.StringIO("Convert 5 March 2021 to ISO."))
    argv = ["generate", "--model", "tiny-llama", "--adapter", str(out / "adapter"), "--max-new-tokens", "3"]
    assert main(argv) == 0
    assert capsys.readouterr().out == "2021-03-05\n"
    assert seen == {"adapters": ["default"], "prompts": ["Convert 5 March 2021 to ISO."], "max_new_tokens": 3}


def test_resume_latest_through_the_cli_continues_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["finetune", *TINY, "max_steps=1", "save_every=1", f"output_dir={out}", "eval_size=0"]) == 0
    assert main(["finetune", *TINY, "max_steps=2", "save_every=1", f"output_dir={out}", "eval_size=0",
                 "resume=latest"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["resumed_from"].endswith("step-000001") and results["steps"] == 2
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_python_dash_m_rankwise_runs_the_command():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "rankwise", "--version"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.startswith("rankwise "), done.stderr
