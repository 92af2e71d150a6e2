"""TLoRA: W' = T W + s ΔW with a tensor-train transform T (identity at init, full rank) and residual ΔW."""

import math

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import layers_of
from rankwise.linalg.structured import balanced_factors

from ..conftest import make_tiny_llama


def _tlora(**fields):
    torch.manual_seed(0)
    model = rankwise.adapt(nn.Sequential(nn.Linear(24, 16)), "tlora", rank=2, **fields)
    return model, model[0], model[0].adapters["default"]


def _perturb(adapter, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("fields", [{}, {"side": "input", "tensor_order": 2}, {"transform_rank": 3}])
def test_identity_at_init_and_the_transform_has_full_rank(fields):
    model, layer, adapter = _tlora(**fields)
    side = layer.out_features if adapter.config.side == "output" else layer.in_features
    assert torch.equal(adapter.transform_matrix(), torch.eye(side))  # T₀ = I exactly
    assert torch.count_nonzero(adapter.delta_weight()) == 0  # ΔW₀ = 0
    x = torch.randn(5, 24)
    assert torch.equal(model(x), layer.base(x))
    _perturb(adapter)
    T = adapter.transform_matrix()
    assert torch.linalg.matrix_rank(T) == side  # a full-rank transform, not a low-rank one...
    assert torch.count_nonzero(T - torch.diag(torch.diagonal(T))) > side * side // 2  # ...and dense
    # The forward on activations is the merged weight T W + s ΔW (or W T + s ΔW).
    W = layer.weight.detach()
    merged = (T @ W if adapter.config.side == "output" else W @ T) + adapter.delta_weight()
    torch.testing.assert_close(model(x), x @ merged.T + layer.bias, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(adapter.merged_weight(W), merged, atol=1e-5, rtol=1e-5)


def test_few_rows_and_many_rows_take_different_routes_to_the_same_outputs_and_gradients(monkeypatch):
    import rankwise.adapters.tlora as tlora

    model, _, adapter = _tlora()
    _perturb(adapter)
    x = torch.randn(40, 24)

    def outputs_and_grads(dense_from):
        monkeypatch.setattr(tlora, "DENSE_RESIDUAL_ROWS", dense_from)
        model.zero_grad()
        y = model(x)
        y.pow(2).sum().backward()
        return y.detach(), [p.grad.clone() for p in adapter.parameters()]

    through_cores, dense = outputs_and_grads(10**9), outputs_and_grads(1)
    torch.testing.assert_close(dense[0], through_cores[0], atol=1e-5, rtol=1e-5)
    for got, want in zip(dense[1], through_cores[1]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_every_core_learns_from_the_start_with_a_higher_transform_rank():
    model, _, adapter = _tlora(transform_rank=2, tensor_order=3)
    model(torch.randn(5, 24)).pow(2).sum().backward()
    no_grad = [n for n, p in adapter.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # At init only the cores ahead of a zero (ΔW's first ones, as LoRA's A) wait for one step.
    assert all(n.startswith("residual.") for n in no_grad) and "residual.2" not in no_grad


def test_trainable_count_is_the_cores_and_smaller_than_loras():
    model = rankwise.adapt(make_tiny_llama(), "tlora", rank=4)
    expected = 0
    for path, adapter in layers_of(model, "default").items():
        out_dims, in_dims = (balanced_factors(n, 3) for n in model.get_submodule(path).weight.shape)
        residual = [(a, o, i, b) for o, i, (a, b) in zip(out_dims, in_dims, [(1, 4), (4, 4), (4, 1)])]
        assert [tuple(c.shape) for c in adapter.transform] == [(1, o, o, 1) for o in out_dims]
        assert [tuple(c.shape) for c in adapter.residual] == residual
        expected += sum(o * o for o in out_dims) + sum(math.prod(shape) for shape in residual)
    assert rankwise.trainable_parameters(model)["trainable"] == expected
    # At a realistic size the tensor-train cores are far fewer numbers than a LoRA of the same rank.
    def trainable(method):
        model = rankwise.adapt(nn.Sequential(nn.Linear(1024, 1024)), method, rank=8)
        return rankwise.trainable_parameters(model)["trainable"]

    assert trainable("tlora") < trainable("lora") / 2
