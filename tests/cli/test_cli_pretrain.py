"""`rankwise pretrain` end to end, for every optimizer and parameterization: it trains, reports, and saves a
model folder that loads back to the same function; bad input fails in one line."""

import json

import pytest
import torch

from rankwise.cli.main import main
from rankwise.models import load
from rankwise.optim import OPTIMIZERS
from rankwise.reparam import REPARAMS

SMALL = ["--seq-len", "32", "--batch-size", "4", "--no-progress"]
RANKED = {"galore", "dct", "random", "gradnorm-lorp"} | set(REPARAMS.names())


@pytest.mark.parametrize("method", sorted(OPTIMIZERS.names()) + sorted(REPARAMS.names()))
def test_every_method_pretrains_the_tiny_model_and_saves_it(tmp_path, capsys, method):
    out = tmp_path / method
    rank = ["--rank", "8"] if method in RANKED else []
    code = main(["pretrain", "--size", "tiny", "--method", method, "--steps", "5", "--out", str(out),
                 *rank, *SMALL])
    assert code == 0
    printed = capsys.readouterr().out
    assert "validation perplexity" in printed and "optimizer state" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == method and results["steps"] == 5
    assert 1 < results["val_perplexity"] < 259  # better than a uniform guess over the 259 byte tokens
    memory = results["memory"]  # measured from the tensors held, equal to the analytic formula
    assert memory["optimizer"]["total"] == memory["expected"]["total"] and (out / "loss.png").is_file()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    model, tokenizer = load(str(out / "model"))
    ids = tokenizer("The assert statement", return_tensors="pt").input_ids
    assert type(tokenizer).__name__ == "ByT5Tokenizer"
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("variant", "options"), [("attnres-block", ["blocks=2"]), ("ladder", ["upper=2"]),
                                                  ("attnres-full", []), ("residual-scale", ["scale=1/n"])])
def test_every_residual_variant_pretrains_with_galore_and_loads_back(tmp_path, capsys, variant, options):
    out = tmp_path / variant
    flags = [flag for option in options for flag in ("--arch-option", option)]
    code = main(["pretrain", "--size", "tiny", "--method", "galore", "--rank", "8", "--arch", variant, *flags,
                 "--steps", "3", "--out", str(out), *SMALL])
    assert code == 0 and "validation perplexity" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["arch"] == variant and 1 < results["val_perplexity"] < 259
    model, tokenizer = load(str(out / "model"))
    assert type(model.model.layers[0]).name == variant
    ids = tokenizer("The assert statement", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_dry_run_prints_the_resolved_settings(capsys):
    code = main(["pretrain", "--method", "dct", "--option", "update_interval=50", "--dry-run"])
    assert code == 0
    settings = json.loads(capsys.readouterr().out)
    assert settings["optimizer"] == "dct"
    assert settings["optimizer_config"] == {"update_interval": 50, "rank": 32}


@pytest.mark.parametrize("argv, words", [
    (["--method", "nope"], "unknown pretrain method 'nope'"),
    (["--method", "galore", "--rank", "500"], "rank 500 is outside 1..128"),
    (["--method", "sltrain", "--option", "density"], "write KEY=VALUE"),
    (["--size", "huge"], "unknown size 'huge'"),
    (["--corpus", "/no/such/file.txt"], "no such file"),
    (["--arch", "attnres-block", "--arch-option", "blocks=3"], "blocks=3 does not divide the model's 4"),
    (["--arch", "ladder", "--arch-option", "upper=9"], "upper=9 is more than the model's 4 blocks"),
    (["--arch", "ladr"], "unknown architecture variant 'ladr'. Did you mean ladder"),
    (["--arch-option", "blocks=2"], "arch_config {'blocks': 2} is set but arch is not"),
])
def test_bad_input_fails_in_one_line(tmp_path, capsys, argv, words):
    code = main(["pretrain", *argv, "--out", str(tmp_path / "out"), *SMALL])
    assert code == 2
    error = capsys.readouterr().err
    assert words in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()
