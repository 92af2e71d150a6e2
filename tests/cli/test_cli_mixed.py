"""`rankwise generate` and `rankwise eval` with --named-adapter: several adapters answer in mixed batches."""

from __future__ import annotations

import json

import pytest
import torch

import rankwise
from rankwise.adapters import layers_of, set_active
from rankwise.cli.main import main
from rankwise.models import load
from rankwise.train.evaluate import generate_answers

PROMPTS = ["Convert 5 March 2021 to ISO.", "Convert 1 May 1999 to ISO.", "What is 2 + 2?"]


@pytest.fixture
def folders(cache, tmp_path):
    """Two LoRA adapters for tiny-llama, moved well off zero so that they answer differently."""
    model, _ = load("tiny-llama")
    out = {}
    for seed, name in enumerate("ab", 1):
        rankwise.adapt(model, "lora", name=name, rank=4)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for adapter in layers_of(model, name).values():
                adapter.lora_B.normal_(std=0.5, generator=gen)
        out[name] = tmp_path / name
        rankwise.save_adapter(model, out[name], name)
    return out


def _alone(folders, prompts, name):
    """Answers of `name` alone (or the base model), over the same batch of prompts."""
    model, tokenizer = load("tiny-llama")
    for adapter, folder in folders.items():
        rankwise.load_adapter(model, folder, adapter)
    if name == "__base__":
        rankwise.disable(model)
    else:
        set_active(model, name)
    return [a.strip() for a in generate_answers(model, tokenizer, prompts, max_new_tokens=5, progress=False)]


def test_generate_routes_each_prompt_to_its_adapter(folders, capsys, one_thread):
    routes = ["b", "__base__", "a"]
    argv = ["generate", "--model", "tiny-llama", "--named-adapter", f"a={folders['a']}", "--named-adapter",
            f"b={folders['b']}", "--route", ",".join(routes), "--max-new-tokens", "5", *PROMPTS]
    assert main(argv) == 0
    answers = capsys.readouterr().out.rstrip("\n").split("\n\n")
    alone = {name: _alone(folders, PROMPTS, name) for name in ("a", "b", "__base__")}
    assert answers == [alone[name][row] for row, name in enumerate(routes)]
    assert alone["a"] != alone["b"]  # the routing is visible in the answers


def test_eval_scores_every_adapter_in_one_mixed_pass(folders, capsys, tmp_path, one_thread):
    data = tmp_path / "d.jsonl"
    rows = [{"prompt": p, "answer": "x", "who": who} for p, who in zip(PROMPTS, ["a", "b", "a"])]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["eval", "--model", "tiny-llama", "--data", str(data), "--max-new-tokens", "5", "--no-progress",
              "--json", "--named-adapter", f"a={folders['a']}", "--named-adapter", f"b={folders['b']}"]

    assert main([*common, "--predictions", str(tmp_path / "all.jsonl")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {n: s["examples"] for n, s in report["by_adapter"].items()} == {"a": 3, "b": 3}
    written = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    for name in "ab":
        assert [r["prediction"].strip() for r in written if r["adapter"] == name] == _alone(folders, PROMPTS,
                                                                                           name)

    assert main([*common, "--route-field", "who", "--predictions", str(tmp_path / "routed.jsonl")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 3 and report["by_adapter"]["a"]["examples"] == 2
    written = [json.loads(line) for line in (tmp_path / "routed.jsonl").read_text().splitlines()]
    assert [r["adapter"] for r in written] == ["a", "b", "a"]


@pytest.mark.parametrize("extra, message", [
    (["--adapter", "{a}", "--named-adapter", "b={b}", "--route", "b"], "not both"),
    (["--named-adapter", "{a}", "--route", "a"], "write NAME=DIR"),
    (["--named-adapter", "a={a}", "--named-adapter", "a={b}", "--route", "a"], "write NAME=DIR"),
    (["--named-adapter", "a=absent", "--route", "a"], "no such folder"),
    (["--named-adapter", "a={a}"], "go together"),
    (["--named-adapter", "a={a}", "--route", "a,a"], "2 adapters for 1 prompts"),
    (["--named-adapter", "a={a}", "--route", "c"], "names ['c'], not among the named adapters ['a']"),
])
def test_generate_misuse_is_one_line(folders, capsys, extra, message):
    extra = [e.format(**folders) for e in extra]
    assert main(["generate", "--model", "tiny-llama", *extra, "hi"]) == 2
    assert message in capsys.readouterr().err


def test_eval_route_field_needs_adapters_and_data(folders, capsys):
    base = ["eval", "--model", "tiny-llama", "--task", "iso-dates", "--route-field", "who"]
    assert main(base) == 2
    assert "load them with --named-adapter" in capsys.readouterr().err
    assert main([*base, "--named-adapter", f"a={folders['a']}"]) == 2
    assert "is a column of --data" in capsys.readouterr().err
