"""DoRA: the paper's magnitude/direction formula, norm detached in backward."""

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters.dora import direction_row_norms


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


def _dense_norms(weight, A, B, scale):
    return (weight.double() + scale * B.double() @ A.double()).norm(dim=1)


@pytest.mark.parametrize("shape", [(10, 12), (192, 576), (576, 1536), (1536, 576)])
@pytest.mark.parametrize("b_std", [0.0, 1e-3, 0.05, 1.0])  # B from init to grown past ‖W‖ (‖sBA‖ ≈ 3‖W‖)
def test_expanded_norms_equal_the_dense_norms(shape, b_std):
    torch.manual_seed(0)
    out, inp = shape
    weight = torch.randn(out, inp) * 0.02 * (1 + 3 * torch.rand(out, 1))  # rows of different scales
    A = nn.init.kaiming_uniform_(torch.empty(8, inp), a=5**0.5)
    B = torch.randn(out, 8) * b_std
    fast = direction_row_norms(weight, A, B, 2.0)
    torch.testing.assert_close(fast.double(), _dense_norms(weight, A, B, 2.0), rtol=1e-6, atol=0)


@pytest.mark.parametrize("remaining", [0.5, 0.1, 0.01, 0.0])
def test_rows_where_w_and_the_update_cancel_are_still_accurate(remaining):
    """W_j ≈ -s B_j A, leaving `remaining` of ‖W_j‖: the expansion alone would lose digits here."""
    torch.manual_seed(0)
    A = nn.init.kaiming_uniform_(torch.empty(8, 64), a=5**0.5)
    B = torch.randn(32, 8) * 0.01
    update = 2.0 * B @ A
    noise = torch.randn(32, 64)
    weight = -update + remaining * update.norm(dim=1, keepdim=True) * noise / noise.norm(dim=1, keepdim=True)
    weight[:16] = torch.randn(16, 64) * 0.02  # half the rows ordinary, half cancelling
    norms = direction_row_norms(weight, A, B, 2.0)
    assert torch.isfinite(norms).all() and (norms > 0).all()
    if remaining:
        torch.testing.assert_close(norms.double(), _dense_norms(weight, A, B, 2.0), rtol=2e-6, atol=0)


@pytest.mark.parametrize("bias", [False, True])
def test_every_gradient_equals_the_papers_formula_with_a_detached_norm(bias):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10, bias=bias))
    rankwise.adapt(model, "dora", rank=3, alpha=6)
    layer, dora = model[0], model[0].adapters["default"]
    with torch.no_grad():
        dora.lora_B.normal_()
        dora.magnitude.mul_(1.3)
    params = [dora.magnitude, dora.lora_A, dora.lora_B]
    x = torch.randn(2, 5, 12, requires_grad=True)
    target = torch.randn(2, 5, 10)
    ((model(x) - target) ** 2).sum().backward()
    ours = [p.grad.clone() for p in (*params, x)]
    for p in (*params, x):
        p.grad = None
    direction = layer.weight + dora.scale * dora.lora_B @ dora.lora_A
    adapted = (dora.magnitude / direction.norm(dim=1).detach())[:, None] * direction
    reference = nn.functional.linear(x, adapted, layer.bias)
    ((reference - target) ** 2).sum().backward()
    for got, want in zip(ours, [p.grad for p in (*params, x)], strict=True):
        torch.testing.assert_close(got, want)


def _reference(x, weight, bias, dora):
    direction = weight + dora.scale * dora.lora_B @ dora.lora_A
    adapted = dora.magnitude[:, None] * direction / direction.norm(dim=1, keepdim=True)
    return x @ adapted.T + bias


def test_the_norm_follows_the_weight_below_when_it_changes():
    """Stacked on a LoRA (unmerged: the wrapper hands W + ΔW_lora), then with the LoRA merged into the
    base, then re-merged after the LoRA changed, then with the base edited in place: each forward
    normalises the weight it currently sits on. A norm cached on a stale weight fails here."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10))
    rankwise.adapt(model, "lora", name="below", rank=2)
    rankwise.adapt(model, "dora", name="above", rank=3, alpha=6)
    rankwise.set_active(model, ["below", "above"])
    layer = model[0]
    lora, dora = layer.adapters["below"], layer.adapters["above"]
    with torch.no_grad():
        lora.lora_B.normal_()
        dora.lora_B.normal_()
    x = torch.randn(4, 12)
    base = layer.weight.detach().clone()
    torch.testing.assert_close(model(x), _reference(x, base + lora.delta_weight(), layer.bias, dora))
    layer.merge(["below"])
    torch.testing.assert_close(model(x), _reference(x, base + lora.delta_weight(), layer.bias, dora))
    layer.unmerge()
    torch.testing.assert_close(model(x), _reference(x, base + lora.delta_weight(), layer.bias, dora))
    with torch.no_grad():
        lora.lora_B.mul_(-2.0)
    layer.merge(["below"])
    torch.testing.assert_close(model(x), _reference(x, base + lora.delta_weight(), layer.bias, dora))
    layer.unmerge()
    rankwise.set_active(model, ["above"])
    base = layer.weight.detach().clone()
    torch.testing.assert_close(model(x), _reference(x, base, layer.bias, dora))
    with torch.no_grad():
        layer.weight.data.mul_(0.5)  # through .data: no version bump for a cache to notice
    torch.testing.assert_close(model(x), _reference(x, 0.5 * base, layer.bias, dora))
