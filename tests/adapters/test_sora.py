"""SoRA: the proximal gate step, and pruning to a plain LoRA that gives the same outputs."""

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import StepContext, hooks, layers_of
from rankwise.adapters._gates import soft_threshold
from rankwise.adapters.lora import Lora
from rankwise.errors import ConfigError

from ..conftest import make_tiny_llama


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_soft_threshold_is_the_l1_proximal_operator():
    values = torch.tensor([-2.0, -0.3, 0.0, 0.1, 0.5, 3.0])
    torch.testing.assert_close(soft_threshold(values, 0.4), torch.tensor([-1.6, 0.0, 0.0, 0.0, 0.1, 2.6]))


def test_pruned_lora_gives_the_gated_outputs_with_rank_nnz(tiny_ids):
    model = rankwise.adapt(make_tiny_llama(), "sora", rank=8, threshold=0.6)
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in layers_of(model, "default").values():
            layer.lora_B.normal_(std=0.1)  # a trained-looking update; gates stay N(0, 1)
    hooks.after_step(model, step=1)  # |g| < 0.6 → exactly 0: some ranks die in every layer
    gates = {path: layer.gate.detach().clone() for path, layer in layers_of(model, "default").items()}
    assert 0 < sum(int((g == 0).sum()) for g in gates.values()) < sum(g.numel() for g in gates.values())
    gated = _logits(model, tiny_ids)

    hooks.finalize(model)

    for path, layer in layers_of(model, "default").items():
        assert type(layer) is Lora
        assert layer.config.rank == max(int((gates[path] != 0).sum()), 1)
        assert layer.lora_A.shape[0] == layer.lora_B.shape[1] == layer.config.rank
    torch.testing.assert_close(_logits(model, tiny_ids), gated, atol=1e-5, rtol=0)


def test_all_gates_zero_gives_a_zero_rank_one_lora():
    model = nn.Sequential(nn.Linear(12, 6))
    rankwise.adapt(model, "sora", rank=4, threshold=100.0)
    x = torch.randn(3, 12)
    base = model[0].base(x)
    hooks.after_step(model, step=1)
    hooks.finalize(model)
    lora = model[0].adapters["default"]
    assert lora.config.rank == 1
    torch.testing.assert_close(model(x), base)


def test_threshold_absolute_or_times_lr_and_ramp():
    model = nn.Sequential(nn.Linear(12, 6))
    rankwise.adapt(model, "sora", rank=4, threshold=1e-2, threshold_times_lr=True)
    layer = model[0].adapters["default"]
    with pytest.raises(ConfigError, match="learning rate"):
        hooks.after_step(model, 1)  # no optimizer in the context: no rate to scale by
    groups = hooks.param_groups(model, lr=0.5)
    assert [g.get("weight_decay") for g in groups] == [None, 0.0]  # gates: no weight decay
    assert groups[1]["params"] == [layer.gate]
    # η is the scheduled rate the gate was just updated with, not the base rate.
    optimizer = torch.optim.AdamW(groups, lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.1)
    with torch.no_grad():
        layer.gate.copy_(torch.tensor([0.04, -0.01, 0.2, 0.004]))
    context = StepContext(1, optimizer, scheduler, group_lrs=[g["lr"] for g in optimizer.param_groups])
    assert context.lr_of(layer.gate) == pytest.approx(0.05)
    hooks.after_step(model, context)  # ξ·η = 1e-2 · 0.05 = 5e-4
    torch.testing.assert_close(layer.gate.detach(), torch.tensor([0.0395, -0.0095, 0.1995, 0.0035]))

    ramp = rankwise.adapt(nn.Sequential(nn.Linear(12, 6)), "sora", rank=4, threshold=1e-3,
                          max_threshold=4e-3, threshold_values=4, steps_per_threshold=10)
    layer = ramp[0].adapters["default"]
    values = [layer.threshold_at(s) for s in (0, 9, 10, 25, 1000)]
    assert values == pytest.approx([1e-3, 1e-3, 2e-3, 3e-3, 4e-3])


def test_merge_folds_the_gate():
    model = nn.Sequential(nn.Linear(10, 7))
    rankwise.adapt(model, "sora", rank=3)
    layer = model[0].adapters["default"]
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = model[0].weight + layer.scale * layer.lora_B @ torch.diag(layer.gate) @ layer.lora_A
    torch.testing.assert_close(layer.merged_weight(model[0].weight), expected)
