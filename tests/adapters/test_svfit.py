"""SVFit: only the top-r singular values of W train; the singular vectors stay frozen."""

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import layers_of
from rankwise.adapters.base import Adapter
from rankwise.adapters.svfit import Svfit

from ..conftest import make_tiny_llama


def test_r_numbers_train_and_the_model_starts_as_the_base(tiny_ids):
    rank = 4
    base = make_tiny_llama()
    model = rankwise.adapt(make_tiny_llama(), "svfit", rank=rank)
    layers = layers_of(model, "default")
    assert rankwise.trainable_parameters(model)["trainable"] == rank * len(layers)
    for adapter in layers.values():
        assert [n for n, p in adapter.named_parameters() if p.requires_grad] == ["singular_values"]
        assert torch.count_nonzero(adapter.delta_weight()) == 0  # exactly the base at init
    with torch.no_grad():
        torch.testing.assert_close(model(tiny_ids).logits, base(tiny_ids).logits, atol=0, rtol=0)


def test_training_sigma_sets_the_top_singular_values_of_the_merged_weight():
    torch.manual_seed(0)
    model = rankwise.adapt(nn.Sequential(nn.Linear(24, 16)), "svfit", rank=3)
    layer, adapter = model[0], model[0].adapters["default"]
    W = layer.weight.detach().clone()
    S = torch.linalg.svdvals(W)
    torch.testing.assert_close(adapter.singular_values.detach(), S[:3], atol=1e-5, rtol=0)
    new_values = S[:3] * torch.tensor([1.5, 1.2, 1.1])
    with torch.no_grad():
        adapter.singular_values.copy_(new_values)
    x = torch.randn(5, 24)
    out = model(x)
    rankwise.merge(model)
    torch.testing.assert_close(model(x), out, atol=1e-5, rtol=0)
    # The residual keeps W's tail; the top-r values are now σ.
    merged_values = torch.linalg.svdvals(layer.weight.detach())
    torch.testing.assert_close(merged_values, torch.cat([new_values, S[3:]]), atol=1e-5, rtol=0)
    rankwise.unmerge(model)
    assert torch.equal(layer.weight, W)


def test_one_adam_step_moves_w_by_lr_sqrt_rank_whatever_the_width():
    # Why SVFit has lr_scale > 1: U_r and V_r are orthonormal, so ‖ΔW‖_F = ‖δσ‖, and Adam's first step
    # moves every σ_i by the rate: at LoRA's rate the update stays lr·√r on any width, while LoRA's grows.
    rank, lr = 4, 1e-3
    for width in (16, 256):
        torch.manual_seed(0)
        model = rankwise.adapt(nn.Sequential(nn.Linear(width, width)), "svfit", rank=rank)
        adapter = model[0].adapters["default"]
        optimizer = torch.optim.Adam([adapter.singular_values], lr=lr)
        model(torch.randn(8, width)).pow(2).sum().backward()
        optimizer.step()
        with torch.no_grad():
            assert float(adapter.delta_weight().norm()) == pytest.approx(lr * rank**0.5, rel=1e-3)
    assert Svfit.lr_scale == 50.0 and Adapter.lr_scale == 1.0
