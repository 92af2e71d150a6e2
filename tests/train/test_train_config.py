import json

import pytest

from rankwise.errors import ConfigError
from rankwise.train import TrainConfig
from rankwise.train.config import read_config_file

BASE = {"model": "tiny-llama", "task": "iso-dates"}


def test_aliases_and_dashes_resolve_to_fields():
    c = TrainConfig.from_dict({**BASE, "lora_r": 4, "lora-alpha": 8, "target_modules": ["q_proj"],
                               "save_steps": 5, "resume_from_checkpoint": "latest", "lr": 1e-3})
    got = (c.rank, c.alpha, c.targets, c.save_every, c.resume, c.learning_rate)
    assert got == (4, 8.0, ["q_proj"], 5, "latest", 1e-3)


def test_method_config_reaches_the_method_config():
    c = TrainConfig(**BASE, method="pissa", rank=4, method_config={"svd_iters": 2})
    built = c.adapter_config()
    assert type(built).__name__ == "PissaConfig" and built.svd_iters == 2 and built.rank == 4


@pytest.mark.parametrize("values, message", [
    ({"max_stpes": 3}, "did you mean max_steps"),
    ({"method": "pissa", "svd_iters": 2}, "put it under method_config"),
    ({"method": "no-such-method"}, "unknown adapter method"),
    ({"method_config": {"svd_iters": 2}}, "lora does not take"),
    ({"method_config": {"rank": 2}}, "at the top level"),
    ({"rank": "8"}, "rank must be int"),
    ({"rank": 0}, "positive integer"),
    ({"learning_rate": -1}, "learning_rate must be positive"),
    ({"warmup_steps": 2, "warmup_ratio": 0.1}, "not both"),
    ({"task": "nope"}, "bundled tasks: iso-dates"),
    ({"task": None}, "exactly one of task"),
    ({"data": "missing.jsonl", "task": None}, "no file at"),
    ({"model": "gpt-17"}, "unknown model 'gpt-17'"),
    ({"rank": 4, "r": 8}, "already set"),
    ({"progress": "yes"}, "progress must be bool"),
    ({"save_total_limit": 0}, "save_total_limit"),
])
def test_bad_configs_say_what_to_fix(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict({**BASE, **values})


def test_round_trips_through_json(tmp_path):
    c = TrainConfig(**BASE, rank=2, targets=["q_proj", "v_proj"], eval_size=3)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(c.to_dict()))
    assert TrainConfig.from_file(path) == c


def test_config_file_errors_point_at_the_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"rank": 4,\n "alpha": }')
    with pytest.raises(ConfigError, match=r"bad.json:2:\d+: not valid JSON"):
        read_config_file(bad)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="one mapping"):
        read_config_file(listed)
    with pytest.raises(ConfigError, match="no config file"):
        read_config_file(tmp_path / "absent.json")


def test_yaml_config_when_pyyaml_is_installed(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "c.yaml"
    path.write_text("model: tiny-llama\ntask: iso-dates\nlora_r: 4\ntarget_modules: [q_proj]\n")
    c = TrainConfig.from_file(path)
    assert (c.rank, c.targets) == (4, ["q_proj"])


# Found by fuzzing (fuzz/): PyYAML's plain exceptions and the OS refusing a long name were raw errors.
@pytest.mark.parametrize("text", ["!!int x", "!!float ", "!!timestamp ", "? "])
def test_bad_yaml_values_are_config_errors(tmp_path, text):
    from rankwise.train.config import read_config_file

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"model": "tiny-llama", "task": "iso-dates", **read_config_file(path)})


@pytest.mark.parametrize("key", ["model", "data", "output_dir"])
def test_a_name_too_long_for_the_os_is_a_config_error(key):
    values = {"model": "tiny-llama", "task": "iso-dates", key: "a" * 300}
    if key == "data":
        values.pop("task")
    with pytest.raises(ConfigError):
        TrainConfig.from_dict(values)
