"""The public verbs refuse misuse with a ConfigError that says what to do, and leave the model as it was."""

import pytest
import torch

import rankwise
from rankwise.adapters import adapted_layers
from rankwise.errors import ConfigError

from ..conftest import make_tiny_llama


def _untouched(model) -> bool:
    return not adapted_layers(model) and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", ["a.b", "", 3, None])
def test_a_bad_adapter_name_is_refused_before_anything_changes(name):
    model = make_tiny_llama()
    with pytest.raises(ConfigError, match="adapter name"):
        rankwise.adapt(model, "lora", name=name, rank=4)
    assert _untouched(model)


@pytest.mark.parametrize("fields, match", [
    ({"targets": 123}, "targets must be"),
    ({"targets": "q_proj["}, "not a valid regular expression"),
    ({"exclude": "q_proj"}, "exclude must be a list"),
    ({"dropout": "x"}, "dropout must be"),
    ({"rank": "8"}, "rank must be a positive integer"),
    ({"rnak": 8}, "lora does not use rnak"),
])
def test_bad_fields_are_config_errors_not_raw_type_errors(fields, match):
    model = make_tiny_llama()
    with pytest.raises(ConfigError, match=match):
        rankwise.adapt(model, "lora", **fields)
    assert _untouched(model)


def test_verbs_on_missing_adapters_say_so():
    model = rankwise.adapt(make_tiny_llama(), "lora", rank=4)
    for bad in (None, 3, [None]):
        with pytest.raises(ConfigError, match="adapter name or a list"):
            rankwise.set_active(model, bad)
    with pytest.raises(ConfigError, match=r"unknown adapter\(s\) \['nope'\]"):
        rankwise.unload(model, "nope")
    rankwise.unload(model)
    with pytest.raises(ConfigError, match="no active adapter to merge"):
        rankwise.merge(model)


def test_unload_with_merge_folds_only_the_named_adapter(tiny_ids):
    model = make_tiny_llama()
    rankwise.adapt(model, "lora", name="kept", rank=4)
    rankwise.adapt(model, "lora", name="folded", rank=4)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05)
    rankwise.set_active(model, ["kept", "folded"])
    with torch.no_grad():
        both = model(tiny_ids).logits
    rankwise.unload(model, "folded", merge=True)
    assert rankwise.adapters.adapter_names(model) == ["kept"]
    with torch.no_grad():
        torch.testing.assert_close(model(tiny_ids).logits, both, atol=1e-5, rtol=0)
