"""SVFit: only the top-r singular values of W train; the singular vectors stay frozen."""

import torch
from torch import nn

import rankwise
from rankwise.adapters import layers_of

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
