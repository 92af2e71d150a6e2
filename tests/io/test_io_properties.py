"""Property tests of the readers of untrusted files: whatever the bytes, a load either succeeds or raises
a RankwiseError with a one-line message, and a failed load leaves the model untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankwise.adapters import adapted_layers
from rankwise.errors import RankwiseError
from rankwise.io import load_adapter, save_adapter
from rankwise.io.adapter_file import settings_digest
from rankwise.io.peft_config import rankwise_config_from_peft
from rankwise.io.readers import sha256_file

from .io_helpers import adapted_llama, make_tiny_llama

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("adapter") / "a"
    save_adapter(adapted_llama("lora", targets=["q_proj", "v_proj"]), directory)
    return directory


def _copy(saved: Path, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("case") / "a"
    shutil.copytree(saved, target)
    return target


def _load_or_fail_cleanly(directory: Path) -> None:
    model = make_tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        load_adapter(model, directory)
    except RankwiseError as err:
        assert "\n" not in str(err), str(err)
        assert not adapted_layers(model)
        after = model.state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@SETTINGS
@given(data=st.binary(max_size=400))
def test_random_bytes_as_adapter_json(saved, tmp_path_factory, data):
    directory = _copy(saved, tmp_path_factory)
    (directory / "adapter.json").write_bytes(data)
    _load_or_fail_cleanly(directory)


@SETTINGS
@given(cut=st.integers(0, 10_000),
       flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
       resign=st.booleans())
def test_truncated_or_edited_safetensors(saved, tmp_path_factory, cut, flips, resign):
    directory = _copy(saved, tmp_path_factory)
    weights = directory / "adapter.safetensors"
    data = bytearray(weights.read_bytes())
    for position, value in flips:  # header edits: the first bytes are the length and the JSON header
        if position < len(data):
            data[position] = value
    weights.write_bytes(bytes(data[: len(data) - cut % len(data)] if cut else data))
    if resign:  # as if the file had been saved so: the checksum then passes and the parser is reached
        meta = json.loads((directory / "adapter.json").read_text())
        meta["weights_sha256"] = sha256_file(weights)
        (directory / "adapter.json").write_text(json.dumps(meta))
    _load_or_fail_cleanly(directory)


EDITED_KEYS = ["config", "plan", "base_model", "rank", "alpha", "targets", "format_version", "method",
               "family", "name", "weights", "structure", "0"]


@SETTINGS
@given(path=st.lists(st.sampled_from(EDITED_KEYS), min_size=1, max_size=3),
       value=JSON, resign=st.booleans())
def test_json_edits_of_adapter_json(saved, tmp_path_factory, path, value, resign):
    directory = _copy(saved, tmp_path_factory)
    meta = json.loads((directory / "adapter.json").read_text())
    node = meta
    for key in path[:-1]:
        child = node.get(key) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            break
        node = child
    if isinstance(node, dict):
        node[path[-1]] = value
    if resign and isinstance(meta, dict):
        meta["settings_sha256"] = settings_digest(meta)
    (directory / "adapter.json").write_text(json.dumps(meta))
    _load_or_fail_cleanly(directory)


PEFT_KEYS = ["peft_type", "r", "lora_alpha", "lora_dropout", "use_rslora", "use_dora", "bias",
             "init_lora_weights", "rank_pattern", "alpha_pattern", "target_modules", "fan_in_fan_out",
             "modules_to_save", "unknown_knob"]


@SETTINGS
@given(values=st.dictionaries(st.sampled_from(PEFT_KEYS), JSON, max_size=8), lora=st.booleans())
def test_peft_config_reader(tmp_path_factory, values, lora):
    if lora:
        values = {"peft_type": "LORA", **values}
    source = tmp_path_factory.mktemp("peft") / "adapter_config.json"
    try:
        method, config = rankwise_config_from_peft(values, source)
    except RankwiseError as err:
        assert "\n" not in str(err), str(err)
    else:
        assert method in ("lora", "rslora", "dora") and config.rank >= 1
