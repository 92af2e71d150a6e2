"""Bad adapter files fail loudly, name the file and leave the model untouched."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from rankwise.adapters import adapted_layers
from rankwise.errors import AdapterFileError, ConfigError
from rankwise.io import load_adapter, load_tensors, read_json, save_adapter, save_tensors, write_json
from rankwise.io.adapter_file import settings_digest
from rankwise.io.readers import sha256_file

from .io_helpers import adapted_llama, logits, make_tiny_llama


@pytest.fixture
def saved(tmp_path) -> Path:
    directory = tmp_path / "adapter"
    save_adapter(adapted_llama("lora"), directory)
    return directory


def _edit_json(directory: Path, edit, sign: bool = True) -> None:
    """Edit adapter.json; sign=True re-computes its settings checksum, as a writer with other settings
    (a newer or buggy rankwise) would, so that the checks behind the checksum are what is tested."""
    meta = json.loads((directory / "adapter.json").read_text())
    edit(meta)
    if sign and "settings_sha256" in meta:
        meta["settings_sha256"] = settings_digest(meta)
    write_json(directory / "adapter.json", meta)


def _rewrite_tensors(directory: Path, edit) -> None:
    tensors, metadata = load_tensors(directory / "adapter.safetensors")
    edit(tensors)
    save_tensors(directory / "adapter.safetensors", tensors, metadata)
    digest = sha256_file(directory / "adapter.safetensors")
    _edit_json(directory, lambda meta: meta.update(weights_sha256=digest))


def _fails_cleanly(directory: Path, error, match: str, tiny_ids) -> pytest.ExceptionInfo:
    model = make_tiny_llama()
    before = logits(model, tiny_ids)
    with pytest.raises(error, match=match) as info:
        load_adapter(model, directory)
    assert not adapted_layers(model), "a failed load must not leave the model half-adapted"
    assert torch.equal(logits(model, tiny_ids), before)
    return info


def test_missing_directory_and_files(tmp_path, saved):
    with pytest.raises(AdapterFileError, match="is not a directory"):
        load_adapter(make_tiny_llama(), tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterFileError, match="neither adapter.json .* nor adapter_config.json"):
        load_adapter(make_tiny_llama(), tmp_path / "empty")
    (saved / "adapter.safetensors").unlink()
    with pytest.raises(AdapterFileError, match="adapter.safetensors is missing"):
        load_adapter(make_tiny_llama(), saved)


@pytest.mark.parametrize("keep", [0, 5, 8, 100, -1])
def test_truncated_safetensors(saved, keep, tiny_ids):
    path = saved / "adapter.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    info = _fails_cleanly(saved, AdapterFileError, "truncated", tiny_ids)
    assert "adapter.safetensors" in str(info.value)


def test_bit_flip_in_data_is_caught_by_checksum(saved, tiny_ids):
    path = saved / "adapter.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # inside the last tensor's bytes: still a well-formed safetensors file
    path.write_bytes(bytes(data))
    _fails_cleanly(saved, AdapterFileError, "does not match the checksum", tiny_ids)


@pytest.mark.parametrize("text, match", [
    ('{"method": "lora", "config": {', "not valid JSON"),
    ("[1, 2]", "expected an object"),
    ('{"method": "lora", "method": "dora", "config": {}, "targets": []}', "duplicate key"),
])
def test_corrupted_json(saved, text, match, tiny_ids):
    (saved / "adapter.json").write_text(text)
    info = _fails_cleanly(saved, AdapterFileError, match, tiny_ids)
    assert "adapter.json" in str(info.value)


def test_non_utf8_json(saved):
    (saved / "adapter.json").write_bytes(b'{"method": "\xff"}')
    with pytest.raises(AdapterFileError, match="not UTF-8"):
        read_json(saved / "adapter.json")


def test_missing_required_keys(saved, tiny_ids):
    _edit_json(saved, lambda meta: meta.pop("plan"))
    _fails_cleanly(saved, AdapterFileError, r"lacks \['plan'\]", tiny_ids)


def test_unknown_method(saved, tiny_ids):
    _edit_json(saved, lambda meta: meta.update(method="lora_xl"))
    info = _fails_cleanly(saved, AdapterFileError, "'lora_xl' adapter", tiny_ids)
    assert "Upgrade rankwise" in str(info.value)


def test_newer_format_version(saved, tiny_ids):
    _edit_json(saved, lambda meta: meta.update(format_version=99, rankwise_version="9.0"))
    _fails_cleanly(saved, AdapterFileError, "rankwise 9.0 in format 99.*Upgrade rankwise", tiny_ids)


def test_unknown_config_keys_warn_once_and_load(saved, tiny_ids):
    _edit_json(saved, lambda meta: meta["config"].update(future_knob=3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_adapter(make_tiny_llama(), saved)
    assert len([w for w in caught if "future_knob" in str(w.message)]) == 1
    assert adapted_layers(model)


def test_unknown_top_level_keys_warn(saved):
    _edit_json(saved, lambda meta: meta.update(signature="abc"))
    with pytest.warns(UserWarning, match="unknown keys \\['signature'\\]"):
        load_adapter(make_tiny_llama(), saved)


def test_invalid_config_value(saved, tiny_ids):
    _edit_json(saved, lambda meta: meta["config"].update(rank="8"))
    _fails_cleanly(saved, ConfigError, "adapter.json.*rank must be a positive integer", tiny_ids)


def _drop_lora_B(tensors: dict) -> None:
    for key in [key for key in tensors if key.endswith("lora_B")]:
        del tensors[key]


def _move_under_encoder(tensors: dict) -> None:
    for key in list(tensors):
        tensors["encoder." + key] = tensors.pop(key)


def test_missing_tensors_are_listed(saved, tiny_ids):
    _rewrite_tensors(saved, _drop_lora_B)
    info = _fails_cleanly(saved, AdapterFileError, "14 missing: model.layers.0", tiny_ids)
    assert "lora_B" in str(info.value) and ", ..." in str(info.value)


def test_extra_tensors_are_listed(saved, tiny_ids):
    _rewrite_tensors(saved, lambda t: t.update({"model.layers.7.mlp.up_proj.lora_A": torch.zeros(4, 32),
                                                "model.layers.0.mlp.up_proj.lora_C": torch.zeros(2)}))
    info = _fails_cleanly(saved, AdapterFileError, "2 unexpected", tiny_ids)
    assert "model.layers.7.mlp.up_proj.lora_A" in str(info.value)


def test_file_matching_nothing_reports_zero_matches(saved, tiny_ids):
    _rewrite_tensors(saved, _move_under_encoder)
    _fails_cleanly(saved, AdapterFileError, r"\(0/28 tensors match an adapted layer\)", tiny_ids)


def test_shape_mismatch_names_both_shapes(saved, tiny_ids):
    _edit_json(saved, lambda meta: meta["config"].update(rank=2))
    info = _fails_cleanly(saved, AdapterFileError, "28 with the wrong shape", tiny_ids)
    assert "(4, 32) in the file vs (2, 32) in this model" in str(info.value)


def test_targets_the_model_lacks(saved, tiny_ids):
    _edit_json(saved, lambda meta: meta["plan"].update({"model.layers.9.mlp.up_proj": {}}))
    _fails_cleanly(saved, AdapterFileError, "lacks, e.g. \\['model.layers.9.mlp.up_proj'\\]", tiny_ids)


def test_pickle_files_are_never_opened(tmp_path):
    directory = tmp_path / "legacy"
    directory.mkdir()
    (directory / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(AdapterFileError, match="neither"):
        load_adapter(make_tiny_llama(), directory)


def test_nan_in_json_is_refused(saved, tiny_ids):
    text = (saved / "adapter.json").read_text().replace('"alpha": 16.0', '"alpha": NaN')
    (saved / "adapter.json").write_text(text)
    _fails_cleanly(saved, AdapterFileError, "non-finite number NaN", tiny_ids)


@pytest.mark.parametrize("bad_name", ["", "a.b", 3])
def test_bad_adapter_names_are_refused(saved, bad_name, tiny_ids):
    _edit_json(saved, lambda meta: meta.update(name=bad_name))
    _fails_cleanly(saved, AdapterFileError, "adapter name", tiny_ids)


def test_newer_fingerprint_version_warns_and_loads(saved):
    _edit_json(saved, lambda meta: meta["base_model"].update(fingerprint_version=2, structure="other"))
    with pytest.warns(UserWarning, match="fingerprint version 2 is newer"):
        model = load_adapter(make_tiny_llama(), saved)
    assert adapted_layers(model)


def _as_format_1(meta: dict) -> None:
    """Rewrite a format-2 adapter.json the way rankwise 0.1 wrote it: targets and layer_configs, no plan."""
    plan = meta.pop("plan")
    meta.pop("family")
    meta.pop("settings_sha256")
    meta.update(format_version=1, targets=list(plan),
                layer_configs={path: {**meta["config"], **changes}
                               for path, changes in plan.items() if changes})


def test_format_1_files_still_load(tmp_path, tiny_ids):
    model = adapted_llama("lora", rank_pattern={"q_proj": 2})
    save_adapter(model, tmp_path / "a")
    _edit_json(tmp_path / "a", _as_format_1)
    meta = json.loads((tmp_path / "a" / "adapter.json").read_text())
    assert meta["format_version"] == 1 and len(meta["layer_configs"]) == 2  # the two q_proj layers
    loaded = load_adapter(make_tiny_llama(), tmp_path / "a")
    assert torch.equal(logits(loaded, tiny_ids), logits(model, tiny_ids))
    assert loaded.get_submodule("model.layers.1.self_attn.q_proj").adapters["default"].config.rank == 2


def test_format_1_full_adapters_drop_the_fields_they_no_longer_have(tmp_path, tiny_ids):
    model = adapted_llama("full")
    save_adapter(model, tmp_path / "a")
    _edit_json(tmp_path / "a", _as_format_1)
    _edit_json(tmp_path / "a", lambda meta: meta["config"].update(rank=8, alpha=16.0, dropout=0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rankwise 0.1 wrote rank, alpha and dropout for every method
        loaded = load_adapter(make_tiny_llama(), tmp_path / "a")
    assert torch.equal(logits(loaded, tiny_ids), logits(model, tiny_ids))


def test_layer_configs_for_unknown_modules(saved, tiny_ids):
    _edit_json(saved, _as_format_1)
    _edit_json(saved, lambda meta: meta.update(layer_configs={"model.nope": meta["config"]}))
    _fails_cleanly(saved, AdapterFileError, "layer_configs names modules not in targets", tiny_ids)


def test_an_edited_setting_is_caught_by_the_settings_checksum(saved, tiny_ids):
    _edit_json(saved, lambda meta: meta["config"].update(alpha=64.0), sign=False)
    _fails_cleanly(saved, AdapterFileError, "settings_sha256", tiny_ids)
    _edit_json(saved, lambda meta: meta.update(method="rslora"), sign=False)
    _fails_cleanly(saved, AdapterFileError, "settings_sha256", tiny_ids)


@pytest.mark.parametrize("key", ["weights_sha256", "settings_sha256"])
def test_removing_a_checksum_does_not_turn_the_check_off(saved, key, tiny_ids):
    _edit_json(saved, lambda meta: meta.pop(key), sign=False)
    _fails_cleanly(saved, AdapterFileError, key, tiny_ids)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_tensors_of_another_kind_are_refused_not_cast(saved, dtype, tiny_ids):
    key = "model.layers.0.self_attn.q_proj.lora_A"
    _rewrite_tensors(saved, lambda t: t.update({key: t[key].to(dtype)}))
    _fails_cleanly(saved, AdapterFileError, f"{key} is {dtype}", tiny_ids)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_tensors_are_refused(saved, value, tiny_ids):
    key = "model.layers.1.mlp.down_proj.lora_B"
    _rewrite_tensors(saved, lambda t: t[key].view(-1).__setitem__(3, value))
    _fails_cleanly(saved, AdapterFileError, f"{key} holds NaN or infinite", tiny_ids)


def test_an_alpha_beyond_float32_is_refused_at_load(saved, tiny_ids):
    _edit_json(saved, lambda meta: meta["config"].update(alpha=1e300))  # re-signed: the value check itself
    _fails_cleanly(saved, ConfigError, "alpha must be a positive number within float32's range", tiny_ids)


# Found by fuzzing (fuzz/): each was a raw exception or a multi-line message.
@pytest.mark.parametrize("pattern", [None, [1], "q_proj"])
def test_a_pattern_field_that_is_not_a_mapping_is_a_config_error(saved, pattern, tiny_ids):
    _edit_json(saved, lambda meta: meta["config"].update(alpha_pattern=pattern))
    _fails_cleanly(saved, ConfigError, "alpha_pattern must be a mapping", tiny_ids)


def test_text_from_the_file_never_breaks_the_message_over_lines(saved, tiny_ids):
    _edit_json(saved, lambda meta: meta.update(format_version=3, rankwise_version="9\nforged line"))
    info = _fails_cleanly(saved, AdapterFileError, r"rankwise 9\\nforged line", tiny_ids)
    assert "\n" not in str(info.value)
