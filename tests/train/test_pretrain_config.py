"""PretrainConfig: defaults, how an optimizer method becomes the loop's optimizer, and bad settings refused
with a message naming the setting, before anything is built."""

import pytest

from rankwise.errors import ConfigError
from rankwise.train.pretrain_config import PretrainConfig


def test_an_optimizer_method_becomes_the_loops_optimizer_with_its_options():
    config = PretrainConfig(method="galore", method_config={"update_interval": 5})
    assert config.optimizer == "galore"
    assert config.optimizer_config == {"update_interval": 5, "rank": 32}  # tiny: hidden 128 / 4
    assert config.method_config == {}
    again = PretrainConfig.from_dict(config.to_dict())  # config.json reads back to the same run
    assert again.to_dict() == config.to_dict()


def test_a_parameterization_keeps_its_fields_and_its_optimizer():
    config = PretrainConfig(method="sltrain", rank=8, method_config={"density": 0.05}, optimizer="galore",
                            optimizer_config={"rank": 4})
    assert (config.method_config, config.optimizer, config.optimizer_config) == (
        {"density": 0.05}, "galore", {"rank": 4})
    assert config.rank_for(128) == 8 and PretrainConfig(method="lowrank").rank_for(128) == 32


@pytest.mark.parametrize("settings, words", [
    ({"method": "nope"}, "unknown pretrain method 'nope'"),
    ({"size": "huge"}, "unknown size 'huge'"),
    ({"rank": 129}, "rank 129 is outside 1..128"),
    ({"method": "lowrank", "rank": 0}, "rank 0 is outside"),
    ({"method": "adamw", "rank": 4}, "adamw trains at full rank"),
    ({"method": "galore", "method_config": {"ranks": 4}}, "galore does not take ['ranks']"),
    ({"method": "galore", "optimizer": "sgd"}, "galore is itself the optimizer"),
    ({"method": "sltrain", "method_config": {"densty": 0.1}}, "sltrain does not take ['densty']"),
    ({"method": "sltrain", "method_config": {"density": 2.0}}, "density"),
    ({"method": "sltrain", "optimizer": "adam"}, "unknown optimizer 'adam'"),
    ({"method": "galore", "reset_every": 10}, "apply to lowrank, sltrain and lost"),
    ({"method": "lowrank", "refactor_every": 0}, "refactor_every must be a positive"),
    ({"corpus": "/no/such/corpus.txt"}, "no such file"),
    ({"max_steps": 0}, "max_steps must be at least 1"),
    ({"eval_split": 0.0}, "eval_split must be in (0, 1)"),
    ({"learning_rate": float("nan")}, "learning_rate must be a finite number"),
    ({"max_length": "long"}, "max_length must be int"),
])
def test_bad_settings_are_refused_by_name(settings, words):
    with pytest.raises(ConfigError) as err:
        PretrainConfig(**settings)
    assert words in str(err.value)


def test_unknown_keys_are_listed():
    with pytest.raises(ConfigError, match=r"unknown pretrain settings \['stpes'\]"):
        PretrainConfig.from_dict({"stpes": 5})


def test_an_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        PretrainConfig(output_dir=str(tmp_path / "file"))
