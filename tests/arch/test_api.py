"""rankwise.arch.apply: every variant installs, saves and loads like any other family, and bad models or
settings are refused before anything changes."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, BertConfig, BertModel

import rankwise
from rankwise import arch
from rankwise.errors import AdapterFileError, ConfigError
from rankwise.io import save_model
from rankwise.models import load

from .conftest import make_deep_llama, randomize_own

VARIANTS = [("attnres-full", {}), ("attnres-block", {"blocks": 2}), ("ladder", {}), ("ladder", {"upper": 3}),
            ("residual-scale", {"scale": "1/sqrt(n)", "normalize": False})]


@pytest.mark.parametrize(("variant", "fields"), VARIANTS)
def test_save_and_load_round_trip(tmp_path, ids, variant, fields):
    model = arch.apply(make_deep_llama(), variant, **fields)
    randomize_own(model)
    expected = model(input_ids=ids).logits
    save_model(model, tmp_path / "model")
    loaded, _ = load(str(tmp_path / "model"))
    assert arch.installed(loaded) == ["default"]
    assert type(loaded.model.layers[0]) is type(model.model.layers[0])
    torch.testing.assert_close(loaded(input_ids=ids).logits, expected)
    record = json.loads((tmp_path / "model" / "rankwise.json").read_text())["records"][0]
    assert (record["family"], record["method"]) == ("arch", variant)
    assert all(record["config"][k] == v for k, v in fields.items())


def test_the_saved_folder_is_still_a_plain_hugging_face_model(tmp_path):
    model = make_deep_llama()
    plain_state = {k: v.clone() for k, v in model.state_dict().items()}
    save_model(arch.apply(model, "attnres-full"), tmp_path / "model")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model", local_files_only=True)
    for key, value in reloaded.state_dict().items():
        torch.testing.assert_close(value, plain_state[key])


def test_an_adapter_on_a_converted_model_round_trips(tmp_path, ids):
    model = arch.apply(make_deep_llama(), "ladder", upper=2)
    rankwise.adapt(model, "lora", rank=4)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    expected = model(input_ids=ids).logits
    save_model(model, tmp_path / "model")
    loaded, _ = load(str(tmp_path / "model"))
    torch.testing.assert_close(loaded(input_ids=ids).logits, expected)


def test_a_second_variant_or_one_after_adapters_is_refused(deep_llama):
    arch.apply(deep_llama, "ladder")
    with pytest.raises(ConfigError, match="already has the ladder architecture"):
        arch.apply(deep_llama, "attnres-full")
    adapted = rankwise.adapt(make_deep_llama(), "lora", rank=2)
    with pytest.raises(ConfigError, match="already carries adapter layers; apply the architecture first"):
        arch.apply(adapted, "ladder")
    reparametrized = rankwise.reparametrize(make_deep_llama(), "lowrank", rank=2)
    with pytest.raises(ConfigError, match="already carries reparam layers"):
        arch.apply(reparametrized, "ladder")


def test_a_block_that_is_not_pre_norm_is_named():
    encoder = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, vocab_size=50))
    with pytest.raises(ConfigError, match=r"encoder\.layer\.0 is a BertLayer, which rankwise\.arch cannot"):
        arch.apply(encoder, "ladder")
    assert not arch.installed(encoder)


def test_unknown_variant_field_and_layer_selection_are_refused(deep_llama):
    with pytest.raises(ConfigError, match="unknown architecture variant 'laddr'. Did you mean ladder"):
        arch.apply(deep_llama, "laddr")
    with pytest.raises(ConfigError, match="ladder does not use blocks"):
        arch.apply(deep_llama, "ladder", blocks=2)
    with pytest.raises(ConfigError, match="layers_to_transform does not apply"):
        arch.apply(deep_llama, "ladder", layers_to_transform=[0])
    assert not arch.installed(deep_llama)


def test_a_saved_variant_does_not_load_onto_another_depth(tmp_path):
    save_model(arch.apply(make_deep_llama(), "attnres-full"), tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "rankwise.json").read_text())
    record = meta["records"][0]
    from rankwise.arch.api import _apply_saved
    from rankwise.io.adapter_file import parse_plan

    config, plan = parse_plan({"format_version": meta["format_version"], **record}, tmp_path, "arch")
    with pytest.raises(AdapterFileError, match="covers 4 blocks, this model has 2"):
        _apply_saved(make_deep_llama(layers=2), "attnres-full", "default", config, plan, {}, tmp_path)


def test_generation_matches_without_cache_for_every_variant(ids):
    for variant, fields in VARIANTS:
        model = arch.apply(make_deep_llama(), variant, **fields)
        randomize_own(model)
        prompt = ids[:1, :4]
        cached = model.generate(prompt, max_new_tokens=4, do_sample=False)
        assert torch.equal(cached, model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=False))


def test_a_converted_model_folder_recovers_with_a_rankwise_fine_tune(tmp_path):
    """The paper's convert-then-recover path: `finetune` on the saved ladder model with any adapter."""
    from rankwise.io import load_adapter
    from rankwise.train import finetune

    model, tokenizer = load("tiny-llama")
    folder = save_model(arch.apply(model, "ladder", upper=1), tmp_path / "ladder", tokenizer)
    result = finetune({"model": str(folder), "method": "lora", "task": "iso-dates", "max_steps": 2,
                       "per_device_train_batch_size": 2, "eval_size": 2, "max_new_tokens": 4,
                       "learning_rate": 1e-2, "output_dir": str(tmp_path / "run"), "progress": False})
    reloaded, _ = load(str(folder))
    load_adapter(reloaded, result["adapter_path"])
    assert arch.installed(reloaded) == ["default"]
    ids = tokenizer("2024-01-05", return_tensors="pt").input_ids
    with torch.no_grad(), rankwise.disabled(reloaded):
        converted_only = reloaded(input_ids=ids).logits
    with torch.no_grad():
        assert (reloaded(input_ids=ids).logits - converted_only).abs().max() > 0  # the trained LoRA is on
