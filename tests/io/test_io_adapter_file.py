"""save_adapter / load_adapter in rankwise's format: exact round trips and stable bytes."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import rankwise
from rankwise.adapters import adapted_layers, adapter_names, get_config, hooks
from rankwise.errors import ConfigError
from rankwise.io import load_adapter, save_adapter

from .io_helpers import adapted_llama, adapter_state, file_bytes, logits, make_tiny_llama, perturb

METHODS = rankwise.ADAPTERS.names()


@pytest.mark.parametrize("method", METHODS)
def test_round_trip_is_exact(method, tmp_path, tiny_ids):
    model = adapted_llama(method)
    expected = logits(model, tiny_ids)
    # the adapter really changes the output, so the comparison below means something
    assert not torch.allclose(expected, logits(make_tiny_llama(), tiny_ids), atol=1e-3)
    save_adapter(model, tmp_path / "a")

    fresh = load_adapter(make_tiny_llama(), tmp_path / "a")
    assert torch.equal(logits(fresh, tiny_ids), expected)
    saved, loaded = adapter_state(model), adapter_state(fresh)
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert get_config(fresh) == get_config(model)
    trainable = rankwise.trainable_parameters
    assert trainable(fresh)["trainable"] == trainable(model)["trainable"]


@pytest.mark.parametrize("method", METHODS)
def test_save_load_save_is_byte_identical(method, tmp_path):
    save_adapter(adapted_llama(method), tmp_path / "first")
    save_adapter(load_adapter(make_tiny_llama(), tmp_path / "first"), tmp_path / "second")
    assert file_bytes(tmp_path / "first") == file_bytes(tmp_path / "second")


def test_adapter_json_contents(tmp_path):
    model = adapted_llama("lora", targets=["q_proj", "v_proj"], alpha=8.0)
    save_adapter(model, tmp_path / "a", name="default")
    meta = json.loads((tmp_path / "a" / "adapter.json").read_text())
    assert meta["format_version"] == 2 and meta["rankwise_version"] == rankwise.__version__
    assert meta["family"] == "adapter" and meta["method"] == "lora" and meta["name"] == "default"
    assert meta["config"] == get_config(model).to_dict()
    paths = [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    assert meta["plan"] == {path: {} for path in paths}  # every layer has the plan's config
    assert set(meta["base_model"]) >= {"structure", "weights", "dtype"}
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["adapter.json", "adapter.safetensors"]


def test_keys_are_module_path_plus_tensor_name(tmp_path):
    from safetensors import safe_open

    save_adapter(adapted_llama("dora", targets=["q_proj"]), tmp_path / "a")
    with safe_open(str(tmp_path / "a" / "adapter.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    assert "model.layers.0.self_attn.q_proj.lora_A" in keys
    assert "model.layers.1.self_attn.q_proj.magnitude" in keys
    assert len(keys) == 6


def test_load_under_another_name_next_to_an_existing_adapter(tmp_path, tiny_ids):
    save_adapter(adapted_llama("lora"), tmp_path / "a")
    model = adapted_llama("lora", targets=["q_proj"])
    with pytest.raises(ConfigError, match="already has an adapter named 'default'"):
        load_adapter(model, tmp_path / "a")
    load_adapter(model, tmp_path / "a", name="second")
    assert adapter_names(model) == ["default", "second"]
    rankwise.set_active(model, "second")
    rankwise.unload(model, "default")
    alone = load_adapter(make_tiny_llama(), tmp_path / "a")
    assert torch.equal(logits(model, tiny_ids), logits(alone, tiny_ids))


def test_saves_only_the_named_adapter(tmp_path):
    model = adapted_llama("lora", targets=["q_proj"])
    rankwise.adapt(model, "dora", name="other", rank=2, targets=["v_proj"])
    save_adapter(model, tmp_path / "other", name="other")
    meta = json.loads((tmp_path / "other" / "adapter.json").read_text())
    assert meta["method"] == "dora" and meta["name"] == "other"
    assert all(path.endswith("v_proj") for path in meta["plan"])
    loaded = load_adapter(make_tiny_llama(), tmp_path / "other")
    assert adapter_names(loaded) == ["other"]


def test_saved_merged_adapter_loads_unmerged_equivalent(tmp_path, tiny_ids):
    model = adapted_llama("lora")
    expected = logits(model, tiny_ids)
    rankwise.merge(model)
    save_adapter(model, tmp_path / "a")  # fingerprint ignores the merged (targeted) weights
    loaded = load_adapter(make_tiny_llama(), tmp_path / "a")
    assert torch.allclose(logits(loaded, tiny_ids), expected, atol=1e-5)


def test_unknown_format_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown adapter file format 'gguf'"):
        save_adapter(adapted_llama("lora"), tmp_path / "a", format="gguf")
    assert not (tmp_path / "a").exists()


def test_top_level_exports():
    assert rankwise.save_adapter is save_adapter and rankwise.load_adapter is load_adapter


def _with_one_layer_replaced(method: str, **changes):
    """A `lora` adapter whose first layer was swapped for `method` with other settings (as SoRA's finalize
    does)."""
    model = adapted_llama("lora")
    path, layer = next(iter(adapted_layers(model).items()))
    config = dataclasses.replace(layer.adapters["default"].config, **changes)
    cls = rankwise.ADAPTERS.get(method)
    layer.adapters["default"] = cls(layer.base, cls.config_class(**config.to_dict()))
    return perturb(model, seed=7), path


def test_layers_with_their_own_config_round_trip(tmp_path, tiny_ids):
    model, odd_path = _with_one_layer_replaced("lora", rank=2, alpha=5.0)
    save_adapter(model, tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "adapter.json").read_text())
    assert meta["config"]["rank"] == 4
    assert {path: changes for path, changes in meta["plan"].items() if changes} == {
        odd_path: {"rank": 2, "alpha": 5.0}}
    loaded = load_adapter(make_tiny_llama(), tmp_path / "a")
    assert torch.equal(logits(loaded, tiny_ids), logits(model, tiny_ids))
    assert adapted_layers(loaded)[odd_path].adapters["default"].config.alpha == 5.0
    assert adapter_names(loaded) == ["default"] and rankwise.adapters.active_adapters(loaded) == ["default"]
    save_adapter(loaded, tmp_path / "b")
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")


def test_an_adapter_mixing_methods_is_refused(tmp_path):
    model, _ = _with_one_layer_replaced("dora")
    with pytest.raises(ConfigError, match=r"mixes methods \['dora', 'lora'\]"):
        save_adapter(model, tmp_path / "a")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("method", METHODS)
def test_finalized_adapters_round_trip(method, tmp_path, tiny_ids):
    # finalize may replace a method's layers with others (SoRA prunes to a plain LoRA per layer).
    model = adapted_llama(method)
    hooks.finalize(model)
    expected = logits(model, tiny_ids)
    save_adapter(model, tmp_path / "a")
    loaded = load_adapter(make_tiny_llama(), tmp_path / "a")
    assert (logits(loaded, tiny_ids) - expected).abs().max() <= 1e-5
