"""ALLoRA: each row of A and B moves with learning rate lr / sqrt(‖row‖² + 1/η²), under SGD and Adam."""

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import hooks
from rankwise.adapters.allora import norm_rate

ETA = 2.0


def _pair(norm_over="row"):
    """An ALLoRA layer and a plain s = 1 LoRA twin with the same base and the same A, B."""
    torch.manual_seed(0)
    models = []
    for method, fields in (("allora", {"eta": ETA, "norm_over": norm_over}), ("lora", {"alpha": 3.0})):
        torch.manual_seed(0)
        models.append(rankwise.adapt(nn.Sequential(nn.Linear(10, 6)), method, rank=3, **fields))
    allora, lora = (m[0].adapters["default"] for m in models)
    with torch.no_grad():
        allora.lora_B.normal_()
        allora.lora_A[0].mul_(10)  # rows of very different norms
        allora.lora_B[1].mul_(0.01)
        lora.lora_A.copy_(allora.lora_A)
        lora.lora_B.copy_(allora.lora_B)
    return models, (allora, lora)


def _step(model, optimizer_cls, x, y, **kwargs):
    optimizer = optimizer_cls(model.parameters(), lr=0.1, **kwargs)  # only the adapter trains
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    optimizer.step()
    hooks.after_step(model, 1)


@pytest.mark.parametrize(
    "optimizer_cls, kwargs", [(torch.optim.SGD, {}), (torch.optim.AdamW, {"weight_decay": 0.1})]
)
@pytest.mark.parametrize("norm_over", ["row", "tensor"])
def test_update_is_the_plain_update_times_the_norm_rate(optimizer_cls, kwargs, norm_over):
    (allora_model, lora_model), (allora, lora) = _pair(norm_over)
    before = [allora.lora_A.detach().clone(), allora.lora_B.detach().clone()]
    x, y = torch.randn(8, 10), torch.randn(8, 6)
    for model in (allora_model, lora_model):
        _step(model, optimizer_cls, x, y, **kwargs)
    for new, plain, old in zip((allora.lora_A, allora.lora_B), (lora.lora_A, lora.lora_B), before):
        rate = norm_rate(old, ETA, per_row=norm_over == "row")  # 1 / sqrt(‖θ‖² + 1/η²)
        torch.testing.assert_close(new - old, rate * (plain - old), atol=1e-6, rtol=1e-5)


def test_step_scales_as_one_over_the_row_norm():
    """Under SGD a row's step is lr·‖g‖/sqrt(‖θ‖² + 1/η²): ≈ lr·‖g‖/‖θ‖ for big rows, ≈ η·lr·‖g‖ near 0."""
    (model, _), (allora, _) = _pair()
    old = allora.lora_A.detach().clone()
    x, y = torch.randn(8, 10), torch.randn(8, 6)
    loss = ((model(x) - y) ** 2).mean()
    (grad,) = torch.autograd.grad(loss, allora.lora_A)
    _step(model, torch.optim.SGD, x, y)
    step = (allora.lora_A.detach() - old).norm(dim=1)
    norms = old.norm(dim=1)
    torch.testing.assert_close(step, 0.1 * grad.norm(dim=1) / (norms**2 + 1 / ETA**2).sqrt())
    big = norms.argmax()
    assert (step[big] * norms[big]).item() == pytest.approx(0.1 * grad[big].norm().item(), rel=0.01)


def test_no_scaling_no_dropout_and_b_starts_at_zero():
    for unused in ("alpha", "dropout"):  # the method has neither: setting one is an error naming it
        with pytest.raises(rankwise.errors.ConfigError, match=f"allora does not use {unused}"):
            rankwise.adapt(nn.Sequential(nn.Linear(10, 6)), "allora", rank=3, **{unused: 0.3})
    model = rankwise.adapt(nn.Sequential(nn.Linear(10, 6)), "allora", rank=3)
    layer = model[0].adapters["default"]
    assert layer.scale == 1.0 and isinstance(layer.dropout, nn.Identity)
    assert torch.count_nonzero(layer.lora_B) == 0
    x = torch.randn(4, 10)
    with torch.no_grad():
        layer.lora_B.normal_()
        assert layer._before is None  # no snapshot outside a gradient pass
    hooks.after_step(model, 1)  # nothing to rescale: a no-op
    torch.testing.assert_close(model(x), model[0].base(x) + x @ (layer.lora_B @ layer.lora_A).T)
