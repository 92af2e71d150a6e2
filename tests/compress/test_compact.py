"""The compact stand-ins: they reproduce their compressed weight, store it compactly, adapters treat them
as linear layers (LoRA on a quantized or pruned base), and the quantized kind re-stores a merged weight."""

import pytest
import torch
from torch import nn

import rankwise
from rankwise.compress.compact import BinaryLinear, PrunedLinear, QuantizedLinear
from rankwise.compress.report import model_size
from rankwise.errors import NotMergeable
from rankwise.linalg import magnitude_mask, rtn_dequantize, rtn_quantize


@pytest.fixture
def layer():
    torch.manual_seed(0)
    return nn.Linear(64, 24)


def test_quantized_layer_stores_packed_codes_and_computes_with_their_weight(layer):
    module = QuantizedLinear(layer, bits=3, group_size=32).quantize(layer.weight)
    codes, scales, zeros = rtn_quantize(layer.weight, 3, 32)
    expected = rtn_dequantize(codes, scales.half().float(), zeros)
    torch.testing.assert_close(module.weight, expected)
    x = torch.randn(5, 64)
    torch.testing.assert_close(module(x), x @ expected.T + layer.bias)
    assert module.codes.numel() == 24 * 64 * 3 // 8  # 3 bits a weight, packed
    assert module.stored_values() == 24 * 64 + 24


def test_pruned_and_binary_layers(layer):
    keep = magnitude_mask(layer.weight, n=2, m=4)
    pruned = PrunedLinear(layer, int(keep.sum())).prune(layer.weight, keep)
    torch.testing.assert_close(pruned.weight, layer.weight.detach() * keep)
    assert pruned.stored_values() == 24 * 32 + 24
    binary = BinaryLinear(layer).binarize(layer.weight)
    sign = torch.where(layer.weight.detach() >= 0, 1.0, -1.0)
    torch.testing.assert_close(binary.weight, layer.weight.detach().abs().mean(1, keepdim=True) * sign)
    assert binary.signs.numel() == 24 * 64 // 8


def test_size_report_counts_real_bytes(layer):
    model = nn.Sequential(layer)
    before = model_size(model)
    assert before == {"parameters": 24 * 64 + 24, "bytes": (24 * 64 + 24) * 4}
    rankwise.compress(model, "rtn", bits=4, group_size=32)
    after = model_size(model)
    assert after["parameters"] == before["parameters"]
    # 4-bit codes, a float16 scale and a uint8 zero per 32 weights, float32 bias
    assert after["bytes"] == 24 * 64 // 2 + 24 * 2 * (2 + 1) + 24 * 4


def test_lora_trains_on_a_quantized_base_but_cannot_merge_into_a_pruned_one(layer):
    model = nn.Sequential(layer)
    rankwise.compress(model, "rtn", bits=4, group_size=32)
    rankwise.adapt(model, "lora", rank=2)
    x, target = torch.randn(16, 64), torch.randn(16, 24)
    params = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in params} == {id(p) for p in model[0].adapters["default"].parameters()}
    optimizer = torch.optim.SGD(params, lr=0.1)
    losses = []
    for _ in range(5):
        loss = (model(x) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    pruned = nn.Sequential(PrunedLinear(layer, 3).prune(layer.weight, magnitude_mask(layer.weight, 0.998)))
    rankwise.adapt(pruned, "lora", rank=2)
    with pytest.raises(NotMergeable, match="compressed PrunedLinear: its compact form cannot re-store"):
        rankwise.merge(pruned)


def test_store_requantizes_a_dense_weight(layer):
    module = QuantizedLinear(layer, bits=4, group_size=16).quantize(layer.weight)
    target = layer.weight.detach() + 0.1 * torch.randn_like(layer.weight)
    module.store(target)
    codes, scales, zeros = rtn_quantize(target, 4, 16)
    torch.testing.assert_close(module.weight, rtn_dequantize(codes, scales.half().float(), zeros))


@pytest.mark.parametrize("kind", ["quantized", "pruned", "binary"])
def test_backward_rebuilds_the_weight_and_gives_autograds_gradients(layer, kind):
    keep = magnitude_mask(layer.weight, 0.5)
    module = {"quantized": lambda: QuantizedLinear(layer, 4, 32).quantize(layer.weight),
              "pruned": lambda: PrunedLinear(layer, int(keep.sum())).prune(layer.weight, keep),
              "binary": lambda: BinaryLinear(layer).binarize(layer.weight)}[kind]()
    x = torch.randn(3, 5, 64, requires_grad=True)
    upstream = torch.randn(3, 5, 24)
    (module(x) * upstream).sum().backward()
    ours = (x.grad.clone(), module.bias.grad.clone())
    x.grad, module.bias.grad = None, None
    (torch.nn.functional.linear(x, module.weight, module.bias) * upstream).sum().backward()
    torch.testing.assert_close(ours, (x.grad, module.bias.grad))
