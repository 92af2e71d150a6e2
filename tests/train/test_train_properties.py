"""Property tests of the training readers: config files, overrides and checkpoints. Whatever the input,
the result is a valid TrainConfig (or checkpoint) or a RankwiseError with a one-line message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankwise.cli.overrides import parse_overrides, resolve_settings
from rankwise.errors import RankwiseError
from rankwise.train import TrainConfig, read_checkpoint, train
from rankwise.train.config import ALIASES, FIELDS, read_config_file

from .train_helpers import adapted_tiny_llama, synthetic_features, tiny_config

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
KEYS = st.sampled_from(FIELDS + list(ALIASES) + ["method_config", "svd_iters", "lora-r", "bogus"]) \
    | st.text(max_size=8)


def _one_line(err: Exception) -> None:
    assert "\n" not in str(err), str(err)


@SETTINGS
@given(values=st.dictionaries(KEYS, VALUES, max_size=6))
def test_from_dict_gives_a_config_or_a_config_error(values):
    values = {"model": "tiny-llama", "task": "iso-dates", **values}
    try:
        TrainConfig.from_dict(values).adapter_config()
    except RankwiseError as err:
        _one_line(err)


@SETTINGS
@given(tokens=st.lists(st.one_of(
    st.builds(lambda k, v: f"{k}={v}", KEYS, st.text(max_size=10)),
    st.builds(lambda k: f"--{k}", KEYS), st.text(max_size=10)), max_size=6))
def test_command_line_overrides_give_a_config_or_a_config_error(tokens):
    try:
        parse_overrides(tokens)
        settings_ = resolve_settings(None, ["model=tiny-llama", "task=iso-dates", *tokens])
        TrainConfig.from_dict(settings_).adapter_config()
    except RankwiseError as err:
        _one_line(err)


@SETTINGS
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".json", ".yaml"]))
def test_random_config_files(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("cfg") / f"c{suffix}"
    path.write_bytes(data)
    try:
        TrainConfig.from_dict({"model": "tiny-llama", "task": "iso-dates", **read_config_file(path)})
    except RankwiseError as err:
        _one_line(err)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    config = tiny_config(out, max_steps=1, save_every=1)
    train(adapted_tiny_llama(config), synthetic_features(n=6), config, pad_token_id=0)
    return out / "checkpoints" / "step-000001"


CHECKPOINT_FILES = ["trainer_state.json", "manifest.json", "optimizer.safetensors", "rng.safetensors"]


@SETTINGS
@given(name=st.sampled_from(CHECKPOINT_FILES), data=st.binary(max_size=300), reseal=st.booleans())
def test_damaged_checkpoints_are_named(checkpoint, tmp_path_factory, name, data, reseal):
    copy = tmp_path_factory.mktemp("ck") / "step-000001"
    shutil.copytree(checkpoint, copy)
    (copy / name).write_bytes(data)
    if reseal and name != "manifest.json":  # as if it had been saved so: the reader itself is reached
        from rankwise.io.readers import sha256_file

        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["files"][name] = {"bytes": len(data), "sha256": sha256_file(copy / name)}
        (copy / "manifest.json").write_text(json.dumps(manifest))
    try:
        read_checkpoint(copy)
    except RankwiseError as err:
        _one_line(err)
