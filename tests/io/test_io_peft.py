"""PEFT format: files rankwise exports give the same outputs in PEFT, and PEFT's files in rankwise."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

peft = pytest.importorskip("peft")

import rankwise  # noqa: E402
import rankwise.io.peft_format as peft_format  # noqa: E402
from rankwise.adapters import adapted_layers, get_config  # noqa: E402
from rankwise.errors import AdapterFileError, BaseModelMismatch, ConfigError  # noqa: E402
from rankwise.io import load_adapter, save_adapter  # noqa: E402

from .io_helpers import adapted_llama, file_bytes, logits, make_tiny_llama  # noqa: E402

TOLERANCE = 1e-5
PEFT_FLAGS = {"lora": {}, "rslora": {"use_rslora": True}, "dora": {"use_dora": True}}


def _peft_model(flags: dict, targets=("q_proj", "v_proj", "down_proj")):
    config = peft.LoraConfig(r=4, lora_alpha=12, target_modules=list(targets), **flags)
    model = peft.get_peft_model(make_tiny_llama(), config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:  # B starts at zero, the magnitude at ‖W‖: move both
                param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


EXPORTED = [m for m in peft_format.EXPORTABLE if m in rankwise.ADAPTERS]


@pytest.mark.parametrize("method", EXPORTED)
def test_export_loads_in_peft_with_same_outputs(method, tmp_path, tiny_ids):
    model = adapted_llama(method, alpha=8.0)
    expected = logits(model, tiny_ids)
    save_adapter(model, tmp_path / "a", format="peft")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # PEFT warns on missing or unexpected adapter keys
        in_peft = peft.PeftModel.from_pretrained(make_tiny_llama(), str(tmp_path / "a")).eval()
    got = logits(in_peft, tiny_ids)
    assert (got - expected).abs().max() <= TOLERANCE
    assert (got - logits(make_tiny_llama(), tiny_ids)).abs().max() > 1e-3  # the adapter really loaded


def test_exported_config_and_keys_match_peft(tmp_path):
    save_adapter(adapted_llama("dora", targets=["q_proj"], alpha=8.0), tmp_path / "a", format="peft")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert config["use_dora"] is True and config["use_rslora"] is False
    assert config["target_modules"] == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "a" / "adapter_model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    prefix = "base_model.model.model.layers.0.self_attn.q_proj."
    assert {prefix + "lora_A.weight", prefix + "lora_B.weight", prefix + "lora_magnitude_vector"} <= keys


def test_pissa_exports_as_rank_2r_lora_on_the_original_base(tmp_path):
    save_adapter(adapted_llama("pissa", alpha=4.0), tmp_path / "a", format="peft")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["use_dora"]) == (8, 8, False)
    imported = load_adapter(make_tiny_llama(), tmp_path / "a")
    assert next(iter(adapted_layers(imported).values())).adapters["default"].name == "lora"
    assert get_config(imported).rank == 8


@pytest.mark.parametrize("method", ["lora", "rslora", "dora"])
def test_peft_files_load_into_rankwise_with_same_outputs(method, tmp_path, tiny_ids):
    in_peft = _peft_model(PEFT_FLAGS[method])
    expected = logits(in_peft, tiny_ids)
    in_peft.save_pretrained(str(tmp_path / "p"))
    model = load_adapter(make_tiny_llama(), tmp_path / "p")
    assert (logits(model, tiny_ids) - expected).abs().max() <= TOLERANCE
    layers = adapted_layers(model)
    assert len(layers) == 6 and next(iter(layers.values())).adapters["default"].name == method
    assert get_config(model).alpha == 12.0 and get_config(model).rank == 4


@pytest.mark.parametrize("method", EXPORTED)
def test_peft_save_load_save_is_byte_identical(method, tmp_path):
    save_adapter(adapted_llama(method), tmp_path / "first", format="peft")
    reloaded = load_adapter(make_tiny_llama(), tmp_path / "first")
    save_adapter(reloaded, tmp_path / "second", format="peft")
    assert file_bytes(tmp_path / "first") == file_bytes(tmp_path / "second")


def test_peft_round_trip_through_rankwise_format(tmp_path, tiny_ids):
    in_peft = _peft_model({"use_dora": True})
    in_peft.save_pretrained(str(tmp_path / "p"))
    save_adapter(load_adapter(make_tiny_llama(), tmp_path / "p"), tmp_path / "r")
    reloaded = load_adapter(make_tiny_llama(), tmp_path / "r")
    assert (logits(reloaded, tiny_ids) - logits(in_peft, tiny_ids)).abs().max() <= TOLERANCE


@pytest.mark.parametrize("field, value", [
    ("peft_type", "LOHA"), ("bias", "all"), ("rank_pattern", ["q_proj"]),
    ("alpha_pattern", {"q_proj[": 2}), ("modules_to_save", ["lm_head"]), ("init_lora_weights", "pissa"),
    ("lora_bias", True), ("use_rslora", True),  # use_rslora on top of use_dora
])
def test_unsupported_peft_configs_name_the_field(field, value, tmp_path, tiny_ids):
    save_adapter(adapted_llama("dora"), tmp_path / "a", format="peft")
    path = tmp_path / "a" / "adapter_config.json"
    config = json.loads(path.read_text())
    config[field] = value
    path.write_text(json.dumps(config))
    model = make_tiny_llama()
    with pytest.raises(ConfigError, match=field):
        load_adapter(model, tmp_path / "a")
    assert not adapted_layers(model)


def test_unknown_peft_fields_warn_only_when_set(tmp_path):
    save_adapter(adapted_llama("lora"), tmp_path / "a", format="peft")
    path = tmp_path / "a" / "adapter_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "future_variant_config": None}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_adapter(make_tiny_llama(), tmp_path / "a")
    path.write_text(json.dumps({**config, "future_variant_config": {"k": 1}}))
    with pytest.warns(UserWarning, match="future_variant_config"):
        load_adapter(make_tiny_llama(), tmp_path / "a")


def test_pickle_only_peft_directory_is_refused(tmp_path):
    save_adapter(adapted_llama("lora"), tmp_path / "a", format="peft")
    (tmp_path / "a" / "adapter_model.safetensors").rename(tmp_path / "a" / "adapter_model.bin")
    with pytest.raises(AdapterFileError, match="adapter_model.bin, a pickle file rankwise never loads"):
        load_adapter(make_tiny_llama(), tmp_path / "a")


def test_unimportable_peft_tensors_are_listed(tmp_path):
    in_peft = _peft_model({}, targets=("q_proj",))
    in_peft.save_pretrained(str(tmp_path / "p"))
    from rankwise.io import load_tensors, save_tensors

    tensors, metadata = load_tensors(tmp_path / "p" / "adapter_model.safetensors")
    tensors["base_model.model.lm_head.weight"] = torch.zeros(64, 32)
    save_tensors(tmp_path / "p" / "adapter_model.safetensors", tensors, metadata)
    with pytest.raises(AdapterFileError, match="base_model.model.lm_head.weight"):
        load_adapter(make_tiny_llama(), tmp_path / "p")


def test_rankwise_peft_export_still_checks_the_base(tmp_path):
    save_adapter(adapted_llama("lora", seed=0), tmp_path / "a", format="peft")
    with pytest.raises(BaseModelMismatch, match="adapter_model.safetensors"):
        load_adapter(make_tiny_llama(seed=1), tmp_path / "a")


def test_methods_without_a_peft_equivalent_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(peft_format, "EXPORTABLE", ("lora",))
    with pytest.raises(ConfigError, match="format='rankwise'"):
        save_adapter(adapted_llama("dora"), tmp_path / "a", format="peft")
    assert not (tmp_path / "a").exists()



def _per_layer_peft_model():
    config = peft.LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "v_proj", "down_proj"],
                             rank_pattern={"q_proj": 2}, alpha_pattern={"layers.1.mlp.down_proj": 3})
    model = peft.get_peft_model(make_tiny_llama(), config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


def test_per_layer_ranks_and_alphas_import_from_peft(tmp_path, tiny_ids):
    in_peft = _per_layer_peft_model()
    in_peft.save_pretrained(str(tmp_path / "p"))
    model = load_adapter(make_tiny_llama(), tmp_path / "p")
    assert (logits(model, tiny_ids) - logits(in_peft, tiny_ids)).abs().max() <= TOLERANCE
    layers = {path: layer.adapters["default"] for path, layer in adapted_layers(model).items()}
    assert layers["model.layers.0.self_attn.q_proj"].config.rank == 2
    assert layers["model.layers.0.self_attn.v_proj"].config.rank == 4
    assert layers["model.layers.1.mlp.down_proj"].config.alpha == 3.0
    assert layers["model.layers.0.mlp.down_proj"].config.alpha == 12.0


def test_per_layer_configs_round_trip_in_both_formats(tmp_path, tiny_ids):
    in_peft = _per_layer_peft_model()
    expected = logits(in_peft, tiny_ids)
    in_peft.save_pretrained(str(tmp_path / "p"))
    model = load_adapter(make_tiny_llama(), tmp_path / "p")

    save_adapter(model, tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "adapter.json").read_text())
    assert meta["config"]["rank"] == 4
    assert sum(bool(changes) for changes in meta["plan"].values()) == 3  # two q_proj, one down_proj
    reloaded = load_adapter(make_tiny_llama(), tmp_path / "r")
    assert torch.equal(logits(reloaded, tiny_ids), logits(model, tiny_ids))
    save_adapter(reloaded, tmp_path / "r2")
    assert file_bytes(tmp_path / "r") == file_bytes(tmp_path / "r2")

    save_adapter(reloaded, tmp_path / "e", format="peft")
    exported = json.loads((tmp_path / "e" / "adapter_config.json").read_text())
    q_proj = r"model\.layers\.{}\.self_attn\.q_proj"
    assert exported["rank_pattern"] == {q_proj.format(0): 2, q_proj.format(1): 2}
    assert exported["alpha_pattern"] == {r"model\.layers\.1\.mlp\.down_proj": 3}
    back_in_peft = peft.PeftModel.from_pretrained(make_tiny_llama(), str(tmp_path / "e")).eval()
    assert (logits(back_in_peft, tiny_ids) - expected).abs().max() <= TOLERANCE


def test_peft_export_refuses_layers_differing_beyond_rank_and_alpha(tmp_path):
    import dataclasses

    model = adapted_llama("lora")
    layer = next(iter(adapted_layers(model).values())).adapters["default"]
    layer.config = dataclasses.replace(layer.config, dropout=0.1)
    with pytest.raises(ConfigError, match="more than rank and alpha"):
        save_adapter(model, tmp_path / "a", format="peft")
    save_adapter(model, tmp_path / "r")  # the rankwise format keeps any per-layer config
    assert "dropout" in json.dumps(json.loads((tmp_path / "r" / "adapter.json").read_text())["plan"])


@pytest.mark.parametrize("changes", [{"alpha_pattern": {"v_proj": None}}, {"alpha_pattern": {"v_proj": "x"}},
                                     {"lora_alpha": 10**400}])
def test_bad_pattern_values_and_huge_numbers_are_config_errors(tmp_path, changes):
    from rankwise.io.peft_config import layer_configs_from_peft, rankwise_config_from_peft

    cfg = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, **changes}
    with pytest.raises(ConfigError, match="adapter_config.json"):
        method, config = rankwise_config_from_peft(cfg, tmp_path / "adapter_config.json")
        layer_configs_from_peft(cfg, config, ["model.layers.0.self_attn.v_proj"],
                                tmp_path / "adapter_config.json")
