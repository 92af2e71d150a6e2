"""Merging adapters into a quantized base: the merged layers hold Q(W + ΔW), the recorded error is
‖Q(W + ΔW) − (W + ΔW)‖_F, unmerge restores the stored codes bit for bit, and compressed kinds that
cannot re-store a weight keep refusing."""

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import adapted_layers, requantization_errors
from rankwise.compress.compact import QuantizedLinear
from rankwise.errors import NotMergeable
from rankwise.models import load
from rankwise.surgery import replace_module

from ..conftest import make_tiny_llama


def _quantized_lora(method: str = "lora") -> nn.Module:
    model = rankwise.compress(make_tiny_llama(), "rtn", bits=4, group_size=16, progress=False)
    rankwise.adapt(model, method, rank=4)
    torch.manual_seed(1)
    for param in model.parameters():  # a trained-looking update, not the zero one a LoRA starts with
        if param.requires_grad:
            param.data.normal_(0, 0.05)
    return model


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _targets(model: nn.Module) -> dict[str, torch.Tensor]:
    """{path: W + ΔW} of each adapted layer, formed directly from the unmerged model."""
    return {path: layer.adapters["default"].merged_weight(layer.base.weight)
            for path, layer in adapted_layers(model).items()}


def test_merge_then_unmerge_restores_every_tensor_and_output(tiny_ids):
    model = _quantized_lora()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    unmerged = _logits(model, tiny_ids)
    rankwise.merge(model)
    assert not torch.equal(_logits(model, tiny_ids), unmerged)  # the requantized base differs a little
    rankwise.unmerge(model)
    after = model.state_dict()
    assert all(torch.equal(after[key], value) for key, value in before.items())
    assert torch.equal(_logits(model, tiny_ids), unmerged)
    assert requantization_errors(model) == {}


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_merged_model_equals_one_built_from_the_requantized_merged_weights(method, tiny_ids):
    model = _quantized_lora(method)
    targets = _targets(model)
    rankwise.merge(model)
    reference = rankwise.compress(make_tiny_llama(), "rtn", bits=4, group_size=16, progress=False)
    for path, target in targets.items():
        dense = nn.Linear(target.shape[1], target.shape[0], bias=False)
        replace_module(reference, path, QuantizedLinear(dense, 4, 16).quantize(target))
    torch.testing.assert_close(_logits(model, tiny_ids), _logits(reference, tiny_ids), atol=1e-6, rtol=0)


def test_recorded_error_is_the_requantization_error_computed_directly():
    model = _quantized_lora()
    targets = _targets(model)
    originals = {path: layer.base.weight for path, layer in adapted_layers(model).items()}
    rankwise.merge(model)
    errors = requantization_errors(model)
    assert set(errors) == set(targets)
    for path, target in targets.items():
        stored = adapted_layers(model)[path].base.weight
        error = torch.linalg.matrix_norm(stored - target).item()
        assert errors[path]["error"] == pytest.approx(error, rel=1e-5)
        delta = torch.linalg.matrix_norm(target - originals[path]).item()
        assert errors[path]["relative_to_delta"] == pytest.approx(error / delta, rel=1e-5)
        weight = torch.linalg.matrix_norm(target).item()
        assert errors[path]["relative_to_weight"] == pytest.approx(error / weight, rel=1e-5)
        assert 0 < errors[path]["relative_to_weight"] < 0.2  # 4 bits: a small share of the weight


def test_unload_with_merge_keeps_the_requantized_layers_and_saves_as_a_4_bit_model(tiny_ids, tmp_path):
    model = _quantized_lora()
    rankwise.merge(model)
    merged = _logits(model, tiny_ids)
    errors = requantization_errors(model)
    rankwise.unload(model, merge=True)
    assert isinstance(model.model.layers[0].self_attn.q_proj, QuantizedLinear)
    assert torch.equal(_logits(model, tiny_ids), merged)
    assert requantization_errors(model) == errors
    rankwise.save_model(model, tmp_path / "merged")
    loaded, _ = load(tmp_path / "merged", tokenizer=False)
    assert torch.equal(_logits(loaded, tiny_ids), merged)


def test_a_compressed_kind_that_cannot_re_store_refuses_and_stays_unchanged(tiny_ids):
    model = rankwise.compress(make_tiny_llama(), "svd", rank=4, progress=False)  # LowRankLinear layers
    rankwise.adapt(model, "lora", rank=2)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(NotMergeable, match="compressed LowRankLinear: its compact form cannot re-store"):
        rankwise.merge(model)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in before.items())
    assert not any(layer.merged for layer in adapted_layers(model).values())
