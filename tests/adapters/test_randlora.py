"""RandLoRA: a full-rank update from few trainable numbers, bases regenerated from a seed."""

import math

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters.randlora import random_bases


def _layer(in_features, out_features, rank, **fields):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(in_features, out_features))
    rankwise.adapt(model, "randlora", rank=rank, **fields)
    return model, model[0].adapters["default"]


def _perturb(adapter, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        adapter.lam.add_(torch.randn(adapter.lam.shape, generator=gen))
        adapter.gamma.add_(0.1 * torch.randn(adapter.gamma.shape, generator=gen))


@pytest.mark.parametrize("in_features, out_features, rank", [(64, 128, 8), (128, 64, 8), (20, 30, 6)])
def test_update_has_full_rank_from_few_trainable_numbers(in_features, out_features, rank):
    _, adapter = _layer(in_features, out_features, rank)
    assert torch.count_nonzero(adapter.delta_weight()) == 0  # λ = 0: the base model at init
    _perturb(adapter)
    delta = adapter.delta_weight()
    assert delta.shape == (out_features, in_features)
    assert torch.linalg.matrix_rank(delta.double()) == min(in_features, out_features)
    small = min(in_features, out_features)
    n = math.ceil(small / rank)
    trainable = sum(p.numel() for p in adapter.parameters() if p.requires_grad)
    assert trainable == rank * n + n * small
    assert trainable < in_features * out_features / 5


def test_forward_matches_delta_weight_both_orientations():
    for shape in ((12, 20), (20, 12)):
        model, adapter = _layer(*shape, rank=4)
        _perturb(adapter)
        x = torch.randn(5, shape[0])
        expected = model[0].base(x) + x @ adapter.delta_weight().T
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_custom_backward_matches_autograd():
    _, adapter = _layer(12, 20, rank=4)
    _perturb(adapter)
    grad = torch.randn(4, adapter.n_bases, 12)
    (adapter.scaled_basis().view(4, adapter.n_bases, 12) * grad).sum().backward()
    lam, gamma = adapter.lam.detach().requires_grad_(), adapter.gamma.detach().requires_grad_()
    reference = lam[:, :, None] * adapter.basis_A[:, None, :] * gamma[None]
    (reference * grad).sum().backward()
    torch.testing.assert_close(adapter.lam.grad, lam.grad)
    torch.testing.assert_close(adapter.gamma.grad, gamma.grad)


def test_only_the_seed_is_saved_and_the_bases_come_back_exactly():
    model, adapter = _layer(24, 16, rank=4, seed=7)
    _perturb(adapter)
    state = {f"0.{k}": v for k, v in adapter.state_dict().items()}
    assert set(state) == {"0.lam", "0.gamma"}  # no bases in the file
    assert adapter.config.to_dict()["seed"] == 7
    x = torch.randn(3, 24)
    random_bases.cache_clear()  # regenerate, not reuse
    fresh = nn.Sequential(nn.Linear(24, 16))
    fresh[0].load_state_dict(model[0].base.state_dict())
    rankwise.adapt(fresh, "randlora", config=adapter.config, state=state)
    assert torch.equal(fresh[0].adapters["default"].basis_B, adapter.basis_B)
    torch.testing.assert_close(fresh(x), model(x), atol=0, rtol=0)
    _, other = _layer(24, 16, rank=4, seed=8)
    assert not torch.equal(other.basis_A, adapter.basis_A)


def test_scaling_conventions_and_sparse_bases():
    _, authors = _layer(30, 30, rank=6, alpha=12.0)  # n = 5
    _, peft = _layer(30, 30, rank=6, alpha=12.0, peft_scaling=True)
    assert authors.scale == pytest.approx(2.0 / math.sqrt(5)) and peft.scale == 2.0
    _, sparse = _layer(30, 30, rank=6, sparse_bases=True)
    values = torch.unique(sparse.basis_B)  # ternary, scaled to unit std
    assert values.numel() == 3 and values[1] == 0 and values[0] == -values[2]
    assert 0.6 < (sparse.basis_B == 0).float().mean() < 0.73  # P(0) = 2/3
