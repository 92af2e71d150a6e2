"""The base-model fingerprint: same base (with or without adapters) agrees, another base does not."""

from __future__ import annotations

import pytest
import torch

import rankwise
from rankwise.errors import BaseModelMismatch
from rankwise.io import load_adapter, model_fingerprint, save_adapter
from rankwise.io.fingerprint import describe, fingerprint_differences

from .io_helpers import adapted_llama, logits, make_tiny_llama

METHODS = rankwise.ADAPTERS.names()


@pytest.mark.parametrize("method", METHODS)
def test_adapters_do_not_change_the_fingerprint(method):
    plain = model_fingerprint(make_tiny_llama())
    model = adapted_llama(method)
    assert fingerprint_differences(plain, model) == []
    assert fingerprint_differences(model_fingerprint(model), make_tiny_llama()) == []
    assert model_fingerprint(model)["structure"] == plain["structure"]
    if rankwise.ADAPTERS.get(method).mergeable:  # merging rewrites the targeted weights
        rankwise.merge(model)
        assert fingerprint_differences(plain, model) == []


def test_bfloat16_copy_of_the_same_base_agrees():
    saved = model_fingerprint(make_tiny_llama())
    assert fingerprint_differences(saved, make_tiny_llama().to(torch.bfloat16)) == []


def test_another_base_differs():
    differences = fingerprint_differences(model_fingerprint(make_tiny_llama(0)), make_tiny_llama(1))
    assert any("model.embed_tokens.weight has different values" in d for d in differences)


def test_another_architecture_differs():
    other = make_tiny_llama()
    other.model.layers = other.model.layers[:1]
    differences = fingerprint_differences(model_fingerprint(make_tiny_llama()), other)
    assert differences and differences[0].startswith("structure")


def test_linear_weight_changed_outside_any_adapter_is_detected():
    # Same embeddings and norms, one non-adapted Linear changed (e.g. a model with a LoRA merged in for good).
    saved = model_fingerprint(make_tiny_llama())
    changed = make_tiny_llama()
    with torch.no_grad():
        changed.lm_head.weight.add_(0.01)
    assert any("lm_head.weight" in d for d in fingerprint_differences(saved, changed))


def test_loading_onto_another_base_raises_naming_both(tmp_path, tiny_ids):
    model = adapted_llama("lora", seed=0)
    save_adapter(model, tmp_path / "a")
    other = make_tiny_llama(seed=1)
    with pytest.raises(BaseModelMismatch) as info:
        load_adapter(other, tmp_path / "a")
    message = str(info.value)
    assert describe(model_fingerprint(model)) in message
    assert describe(model_fingerprint(other)) in message
    assert "allow_base_mismatch=True" in message and "adapter.json" in message
    assert not rankwise.adapters.adapted_layers(other)


def test_allow_base_mismatch_warns_and_loads(tmp_path, tiny_ids):
    save_adapter(adapted_llama("dora", seed=0), tmp_path / "a")
    other = make_tiny_llama(seed=1)
    base_out = logits(other, tiny_ids)
    with pytest.warns(UserWarning, match="Loading anyway because allow_base_mismatch=True"):
        load_adapter(other, tmp_path / "a", allow_base_mismatch=True)
    assert not torch.allclose(logits(other, tiny_ids), base_out)


def test_loading_onto_a_bfloat16_copy_works(tmp_path, tiny_ids):
    model = adapted_llama("lora")
    save_adapter(model, tmp_path / "a")
    half = load_adapter(make_tiny_llama().to(torch.bfloat16), tmp_path / "a")
    assert torch.allclose(logits(half, tiny_ids).float(), logits(model, tiny_ids), atol=0.1)


def _only_a_targeted_weight_differs():
    """The base, with one weight changed that no general sample covers but the adapter targets."""
    other = make_tiny_llama()
    with torch.no_grad():
        other.model.layers[0].self_attn.v_proj.weight.add_(1e-2)
    return other


def test_an_adapter_never_loads_silently_onto_other_targeted_weights(tmp_path, tiny_ids):
    model = adapted_llama("lora", targets=["v_proj"])
    save_adapter(model, tmp_path / "a")
    general = model_fingerprint(make_tiny_llama())  # the 8 general samples miss this weight
    assert fingerprint_differences(general, _only_a_targeted_weight_differs()) == []
    with pytest.raises(BaseModelMismatch, match="targeted weight.*model.layers.0.self_attn.v_proj"):
        load_adapter(_only_a_targeted_weight_differs(), tmp_path / "a")
    with pytest.warns(UserWarning, match="allow_base_mismatch=True"):
        load_adapter(_only_a_targeted_weight_differs(), tmp_path / "a", allow_base_mismatch=True)
    merged = load_adapter(make_tiny_llama(), tmp_path / "a")
    rankwise.merge(merged)  # merged in place: its pre-merge weights are still the base's
    load_adapter(merged, tmp_path / "a", name="again")


def test_an_adapter_does_not_load_onto_the_model_it_was_merged_into(tmp_path):
    model = adapted_llama("lora")
    save_adapter(model, tmp_path / "a")
    rankwise.unload(model, merge=True)  # the update is now part of the weights: loading would apply it twice
    with pytest.raises(BaseModelMismatch, match="already merged"):
        load_adapter(model, tmp_path / "a")
