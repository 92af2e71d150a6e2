"""LoRA and rsLoRA against the reference semantics of loralib (microsoft/LoRA)."""

import math

import loralib
import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import AdaptedLinear


def _wrapped(method, in_features=24, out_features=16, **fields):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(in_features, out_features))
    rankwise.adapt(model, method, **fields)
    layer = model[0]
    assert isinstance(layer, AdaptedLinear)
    return model, layer, layer.adapters["default"]


def test_lora_matches_loralib_forward_and_merge():
    model, layer, lora = _wrapped("lora", rank=4, alpha=8)
    with torch.no_grad():
        lora.lora_B.normal_()
    reference = loralib.Linear(24, 16, r=4, lora_alpha=8)
    reference.load_state_dict(
        {"weight": layer.weight, "bias": layer.bias, "lora_A": lora.lora_A, "lora_B": lora.lora_B}
    )
    x = torch.randn(5, 24)
    reference.train()
    torch.testing.assert_close(model(x), reference(x))
    reference.eval()  # loralib merges on eval
    rankwise.merge(model)
    torch.testing.assert_close(model(x), reference(x))
    torch.testing.assert_close(layer.weight, reference.weight)


def test_lora_init_is_loralibs():
    _, _, lora = _wrapped("lora", rank=4, alpha=8)
    bound = 1 / math.sqrt(24)  # kaiming-uniform with a=√5, as nn.Linear and loralib
    assert lora.lora_A.abs().max() <= bound and lora.lora_A.abs().max() > bound / 2
    assert torch.count_nonzero(lora.lora_B) == 0
    assert lora.scale == 2.0


def test_rslora_scales_by_root_rank():
    _, _, adapter = _wrapped("rslora", rank=16, alpha=8)
    assert adapter.scale == pytest.approx(8 / 4)


def test_dropout_only_in_training():
    model, _, lora = _wrapped("lora", rank=4, dropout=0.5)
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(64, 24)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


def test_delta_is_computed_on_activations_not_weights():
    """Training never forms the dense (out, in) product; merge is the only place that does."""
    _, layer, lora = _wrapped("lora", rank=4)
    calls = []
    original = torch.Tensor.__matmul__
    torch.Tensor.__matmul__ = lambda a, b: calls.append(1) or original(a, b)
    try:
        layer(torch.randn(3, 24))
    finally:
        torch.Tensor.__matmul__ = original
    assert calls == []
