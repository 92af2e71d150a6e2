import json

import pytest

from rankwise.cli.overrides import parse_overrides, parse_value, resolve_settings
from rankwise.errors import ConfigError


def test_every_spelling_of_an_override():
    tokens = ["rank=4", "--lora-alpha", "8", "--max_steps=20", "--no-progress", "learning-rate=1e-3",
              "--eval-size", "null", "targets=q_proj", "--target-modules", '["q_proj","v_proj"]', "seed=-1"]
    assert parse_overrides(tokens) == [
        ("rank", 4), ("lora-alpha", 8), ("max_steps", 20), ("progress", False), ("learning-rate", 1e-3),
        ("eval-size", None), ("targets", "q_proj"), ("target-modules", ["q_proj", "v_proj"]), ("seed", -1)]


def test_text_keys_keep_their_text_and_flags_work_bare():
    assert parse_value("model", "123") == "123"
    assert parse_value("output_dir", "runs/7") == "runs/7"
    assert parse_value("resume", "latest") == "latest"
    assert parse_overrides(["--progress"]) == [("progress", True)]
    assert parse_overrides(["--progress", "false", "rank=2"]) == [("progress", False), ("rank", 2)]


@pytest.mark.parametrize("tokens, message", [
    (["rank"], "write settings as key=value"),
    (["--rank"], "--rank needs a value"),
    (["=4"], "no key"),
    (["--progress=maybe"], "true or false"),
    (["rank.x=1"], "only dict settings"),
])
def test_unreadable_overrides_are_rejected(tokens, message):
    with pytest.raises(ConfigError, match=message):
        resolve_settings(None, tokens)


def test_overrides_replace_any_spelling_in_the_file_and_merge_dicts(tmp_path):
    path = tmp_path / "c.json"
    saved = {"lora_r": 16, "method": "pissa", "method_config": {"svd_iters": 2, "exclude": []}}
    path.write_text(json.dumps(saved))
    values = resolve_settings(str(path), ["rank=4", "method_config.svd-iters=5"])
    assert values == {"method": "pissa", "rank": 4, "method_config": {"svd_iters": 5, "exclude": []}}
