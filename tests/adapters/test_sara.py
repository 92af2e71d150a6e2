"""SaRA: only the smallest-magnitude weights ever change, and the update is held and saved sparse."""

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import adapted_layers, hooks


def _model(**fields):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 16), nn.Tanh(), nn.Linear(16, 8))
    originals = {
        name: m.weight.detach().clone() for name, m in model.named_modules() if isinstance(m, nn.Linear)
    }
    fields = {"fraction": 0.2, "nuclear_min_side": 0, **fields}
    rankwise.adapt(model, "sara", **fields)
    return model, originals


def _train(model, steps, lr=1e-2, first=1):
    optimizer = torch.optim.AdamW(hooks.param_groups(model, lr), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 24, generator=gen), torch.randn(32, 8, generator=gen)
    for step in range(first, first + steps):
        loss = nn.functional.mse_loss(model(x), y)
        penalty = hooks.regularizer(model)
        (loss if penalty is None else loss + penalty).backward()
        optimizer.step()
        optimizer.zero_grad()
        hooks.after_step(model, step)


def test_only_the_smallest_weights_change_and_the_state_is_sparse():
    model, originals = _model(progressive_step=0)
    hooks.init_from_data(model, [])
    _train(model, steps=5)
    for name, layer in adapted_layers(model).items():
        W0 = originals[name]
        count = round(0.2 * W0.numel())
        mask = torch.zeros(W0.numel(), dtype=torch.bool)
        mask[W0.abs().flatten().argsort()[:count]] = True  # the 20 % smallest |W0|, computed independently
        delta = layer.adapters["default"].delta_weight().detach().flatten()
        assert torch.count_nonzero(delta[~mask]) == 0, name
        assert torch.count_nonzero(delta[mask]) > 0.9 * count, name
        # The adapter's state is the mask's size, not (out, in): flat indices, values, flags,
        # frozen values, τ, and the step counter that draws the nuclear-norm layer.
        state = layer.adapters["default"].state_dict()
        assert {k: v.numel() for k, v in state.items()} == {
            "values": count, "indices": count, "live": count, "frozen": count, "threshold": 1, "step": 1}
        assert torch.equal(state["indices"].sort().values, torch.nonzero(mask).flatten())
        # τ separates the mask from the rest: M = 1[|W0| < τ].
        assert W0.abs().flatten()[mask].max() < state["threshold"] <= W0.abs().flatten()[~mask].min()


def test_progressive_reselection_freezes_weights_that_grew_past_tau():
    model, originals = _model(progressive_step=3, nuclear_weight=0.0)
    sara = model[0].adapters["default"]
    _train(model, steps=2)
    with torch.no_grad():  # push a few trained weights past τ
        sara.values[:5] = 2 * sara.threshold + originals["0"].abs().max()
    current = originals["0"].flatten()[sara.indices] + sara.values.detach()
    hooks.after_step(model, 3)  # the re-selection step
    assert torch.equal(sara.live, current.abs() < sara.threshold)  # M_t = M ⊙ 1[|W0 + Δ| < τ]
    assert not sara.live[:5].any() and sara.live.any()
    frozen_before = sara.delta_weight().detach().flatten()[sara.indices[~sara.live]].clone()
    live_before = sara.values.detach()[sara.live].clone()
    _train(model, steps=3, first=4)  # later steps train the live entries only
    after = sara.delta_weight().detach().flatten()
    torch.testing.assert_close(after[sara.indices[~sara.live]], frozen_before, atol=0, rtol=0)
    assert not torch.equal(sara.values.detach()[sara.live], live_before)


def test_nuclear_norm_is_of_the_masked_weights_and_one_layer_is_drawn_per_step():
    model, originals = _model(nuclear_weight=0.1, progressive_step=0)
    with torch.no_grad():
        for adapter in (model[0].adapters["default"], model[2].adapters["default"]):
            adapter.values.normal_()
    sara = model[0].adapters["default"]
    masked = torch.zeros(16 * 24)
    masked[sara.indices] = originals["0"].flatten()[sara.indices] + sara.values.detach()
    expected = 0.1 * torch.linalg.svdvals(masked.view(16, 24)).sum()
    torch.testing.assert_close(sara.regularizer(), expected)  # before init_from_data: every layer

    hooks.init_from_data(model, [])
    for step in range(6):
        hooks.after_step(model, step)
        drawn = [
            a.regularizer() is not None
            for a in (model[0].adapters["default"], model[2].adapters["default"])
        ]
        assert sum(drawn) == 1


@pytest.mark.parametrize("bad", [{"fraction": 0.0}, {"fraction": 1.5}, {"nuclear_on": "both"}])
def test_bad_sara_fields_are_rejected(bad):
    with pytest.raises(rankwise.errors.ConfigError):
        rankwise.ADAPTERS.get("sara").config_class(**bad)
