"""DoRA: the paper's magnitude/direction formula, norm detached in backward."""

import torch
from torch import nn

import rankwise


def _dora():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10))
    rankwise.adapt(model, "dora", rank=3, alpha=6)
    layer = model[0]
    adapter = layer.adapters["default"]
    with torch.no_grad():
        adapter.lora_B.normal_()
        adapter.magnitude.mul_(1.3)
    return model, layer, adapter


def test_magnitude_starts_at_row_norms():
    torch.manual_seed(0)
    model = rankwise.adapt(nn.Sequential(nn.Linear(12, 10)), "dora", rank=3)
    layer = model[0]
    torch.testing.assert_close(layer.adapters["default"].magnitude, layer.weight.norm(dim=1))


def test_forward_is_the_papers_formula():
    model, layer, dora = _dora()
    x = torch.randn(4, 12)
    direction = layer.weight + dora.scale * dora.lora_B @ dora.lora_A
    adapted = dora.magnitude[:, None] * direction / direction.norm(dim=1, keepdim=True)
    torch.testing.assert_close(model(x), x @ adapted.T + layer.bias)


def test_norm_is_a_constant_in_backward():
    model, layer, dora = _dora()
    x = torch.randn(4, 12)
    model(x).sum().backward()
    grad = dora.lora_B.grad.clone()
    # Same loss with the norm computed outside autograd: identical gradient means it was detached.
    dora.lora_B.grad = None
    with torch.no_grad():
        norm = (layer.weight + dora.scale * dora.lora_B @ dora.lora_A).norm(dim=1)
    direction = layer.weight + dora.scale * dora.lora_B @ dora.lora_A
    (x @ ((dora.magnitude / norm)[:, None] * direction).T).sum().backward()
    torch.testing.assert_close(dora.lora_B.grad, grad)
