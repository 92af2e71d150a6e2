"""LIFT: the trained entries are the principal weights (top-K of the rank-r approximation),
refreshed on schedule."""

import warnings

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import StepContext


def _lift(out_features=24, in_features=40, **fields):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(in_features, out_features))
    W0 = model[0].weight.detach().clone()
    rankwise.adapt(model, "lift", **fields)
    return model, W0, model[0].adapters["default"]


def _principal(W, filter_rank, count, largest=True):
    """Top-`count` flat positions of |rank-`filter_rank` SVD approximation of W|, computed independently."""
    U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    approx = (U[:, :filter_rank] * S[:filter_rank]) @ Vh[:filter_rank]
    return set(torch.topk(approx.abs().flatten(), count, largest=largest).indices.tolist())


def test_mask_is_the_top_k_of_the_rank_r_approximation():
    _, W0, lift = _lift(rank=2, filter_rank=3)
    count = (24 + 40) * 2  # LoRA-rank-equivalent budget K = (out + in) · rank
    assert lift.values.numel() == count
    assert set(lift.indices.tolist()) == _principal(W0, 3, count)
    _, W0, smallest = _lift(rank=2, filter_rank=3, largest=False)  # the released code's selection
    assert set(smallest.indices.tolist()) == _principal(W0, 3, count, largest=False)


def test_refresh_moves_the_mask_to_the_new_principal_weights_and_keeps_the_function():
    model, W0, lift = _lift(rank=2, filter_rank=3, refresh_every=5)
    x = torch.randn(6, 40)
    with torch.no_grad():
        lift.values.normal_(std=0.5)
    delta_before = lift.delta_weight().detach().clone()
    out_before = model(x).detach()
    old_support = set(lift.indices.tolist())
    lift.after_step(StepContext(4))  # not a refresh step
    assert set(lift.indices.tolist()) == old_support
    lift.after_step(StepContext(5))
    new_mask = _principal(W0 + delta_before, 3, lift.values.numel())
    assert set(lift.indices.tolist()) == new_mask != old_support
    torch.testing.assert_close(lift.delta_weight(), delta_before, atol=1e-6, rtol=0)
    torch.testing.assert_close(model(x), out_before, atol=1e-5, rtol=0)
    # Entries that left the mask are settled, not lost; nothing outside old ∪ new ever holds a value.
    touched = set(torch.nonzero(lift.delta_weight().flatten()).flatten().tolist())
    assert touched <= old_support | new_mask
    assert set(lift.settled_indices[lift.settled_values != 0].tolist()) == touched - new_mask


def test_only_masked_entries_get_gradients():
    model, _, lift = _lift(rank=2)
    with torch.no_grad():
        lift.values.normal_()
    model(torch.randn(5, 40)).square().sum().backward()
    assert lift.values.grad is not None and lift.values.grad.shape == (lift.values.numel(),)
    assert model[0].weight.grad is None


def test_support_budget_bounds_the_saved_state():
    model, W0, lift = _lift(rank=2, filter_rank=3, support_budget=1.0)
    count = lift.values.numel()
    assert {k: v.numel() for k, v in lift.state_dict().items()} == {
        "values": count, "indices": count, "settled_indices": 0, "settled_values": 0}
    with torch.no_grad():  # a large update moves the principal weights elsewhere
        lift.values.normal_(std=2.0)
    delta = lift.delta_weight().detach().clone()
    with pytest.warns(UserWarning, match="support_budget"):
        lift.refresh()
    # budget 1: the mask cannot move
    torch.testing.assert_close(lift.delta_weight(), delta, atol=1e-6, rtol=0)


def test_no_warning_when_the_budget_holds():
    _, _, lift = _lift(rank=2, filter_rank=3)
    with torch.no_grad():
        lift.values.normal_(std=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lift.refresh()


def test_a_refresh_resets_the_optimizer_moments_of_the_slots_it_reuses():
    model, _, lift = _lift(rank=2, filter_rank=3, refresh_every=1)
    optimizer = torch.optim.AdamW([lift.values], lr=1e-2)
    x, y = torch.randn(16, 40), torch.randn(16, 24)
    ((model(x) - y) ** 2).mean().backward()
    optimizer.step()
    with torch.no_grad():
        lift.values.mul_(50.0)  # a large ΔW moves the principal weights, so some slots change hands
    old = lift.indices.clone()
    moments = {k: v.clone() for k, v in optimizer.state[lift.values].items()}
    lift.after_step(StepContext(1, optimizer))
    moved = lift.indices != old
    assert 0 < int(moved.sum()) < moved.numel()
    state = optimizer.state[lift.values]
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.count_nonzero(state[key][moved]) == 0, key  # a new entry starts without history
        assert torch.equal(state[key][~moved], moments[key][~moved]), key  # staying entries keep theirs
    assert torch.equal(state["step"], moments["step"])
