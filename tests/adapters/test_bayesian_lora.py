"""Bayesian-LoRA: nested quantization, gates, and expected bit-operations that fall as the penalty rises."""

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import hooks, layers_of
from rankwise.adapters._gates import BIT_LEVELS, chained, hard_concrete_p_open, nested_quantization
from rankwise.adapters.bayesian_lora import quantize, report


def test_nested_quantization_lands_on_each_grid_and_is_exact_when_all_open():
    x = torch.randn(7, 5)
    terms = nested_quantization(x)
    torch.testing.assert_close(sum(terms), x, atol=1e-6, rtol=0)
    step = 2 * x.abs().max() / 3
    for level, bits in enumerate(BIT_LEVELS[:-1]):
        closed_after = torch.tensor([1.0] * level + [0.0] * (len(BIT_LEVELS) - 1 - level))
        q = quantize(terms, chained(closed_after))  # gates above `bits` closed
        assert torch.allclose(q / step, torch.round(q / step), atol=1e-4)  # on the b-bit grid
        assert (q - x).abs().max() <= step / 2 + 1e-6  # nearest point of that grid
        assert torch.unique(q).numel() <= 2**bits
        step = step / (2**bits + 1)


def test_quantization_passes_gradients_straight_through():
    x = torch.randn(4, 3, requires_grad=True)
    sum(nested_quantization(x)[:2]).sum().backward()  # the 4-bit value
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def _tiny_regression(bop_weight, steps=40):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 24), nn.Tanh(), nn.Linear(24, 6))
    x = torch.randn(64, 12)
    with torch.no_grad():
        y = model(x) + 0.5 * torch.randn(64, 6)
    rankwise.adapt(model, "bayesian-lora", rank=4, bop_weight=bop_weight)
    hooks.init_from_data(model, [])  # as the training loop does: sets the penalty's normaliser
    model.train()
    optimizer = torch.optim.Adam([p for g in hooks.param_groups(model, 0.05) for p in g["params"]], lr=0.05)
    for _step in range(steps):
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        penalty = hooks.regularizer(model)
        (loss if penalty is None else loss + penalty).backward()
        optimizer.step()
    layers = layers_of(model, "default").values()
    with torch.no_grad():
        return model, sum(float(layer.expected_bops()) for layer in layers)


def test_expected_bit_operations_fall_as_the_penalty_rises(one_thread):
    bops = [_tiny_regression(weight)[1] for weight in (0.0, 0.01, 0.1)]
    # measured ≈ 222k, 107k, 72k of a 270k maximum
    assert bops[1] < 0.8 * bops[0] and bops[2] < 0.8 * bops[1], bops


def test_report_gives_each_layers_rank_and_bits(one_thread):
    model, _ = _tiny_regression(1.0)
    chosen = report(model)
    assert set(chosen) == {"0", "2"}
    for path, choice in chosen.items():
        layer = model.get_submodule(path).adapters["default"]
        assert 0 <= choice["rank"] <= 4 and choice["bits_A"] in BIT_LEVELS and choice["bits_B"] in BIT_LEVELS
        assert choice["rank"] == int((layer.rank_logits > 0).sum())
    assert any(c["rank"] < 4 or c["bits_A"] < 32 or c["bits_B"] < 32 for c in chosen.values())


def test_eval_forward_uses_the_chosen_gates_and_matches_delta_weight():
    torch.manual_seed(0)
    model = rankwise.adapt(nn.Sequential(nn.Linear(10, 8)), "bayesian-lora", rank=3)
    layer = model[0].adapters["default"]
    with torch.no_grad():
        layer.lora_E.normal_()
        layer.rank_logits[1] = -3.0  # rank component 1 off
        layer.bit_logits_A[1] = -3.0  # A stops at 4 bits
    model.eval()
    assert layer.chosen_rank_and_bits() == {"rank": 2, "bits_A": 4, "bits_B": 32,
                                            "bops": 32 * 2 * (10 * 4 + 8 * 32)}
    x = torch.randn(5, 10)
    torch.testing.assert_close(model(x), model[0].base(x) + x @ layer.delta_weight().T, atol=1e-5, rtol=0)
    assert torch.unique(layer.deterministic_factors()[0]).numel() <= 16
    model.train()
    assert not torch.equal(model(x), model(x))  # training samples the gates


def test_expected_bits_follow_the_gate_probabilities():
    model = rankwise.adapt(nn.Sequential(nn.Linear(10, 8)), "bayesian-lora", rank=3, gate_init=30.0)
    layer = model[0].adapters["default"]
    assert layer.expected_bops().item() == pytest.approx(layer.full_bops(), rel=1e-4)
    assert float(hard_concrete_p_open(torch.tensor(-30.0))) < 1e-6


def _stack(depth):
    model = nn.Sequential(*[nn.Linear(12, 12) for _ in range(depth)])
    rankwise.adapt(model, "bayesian-lora", rank=4, bop_weight=0.1, gate_init=0.5)
    hooks.init_from_data(model, [])
    return model, list(layers_of(model, "default").values())


def test_the_penalty_is_the_whole_adapters_relative_bops_whatever_its_depth():
    # Summing per-layer ratios made the penalty grow with the number of layers (≈ 16 on SmolLM2's 210),
    # so Adam closed every gate in lockstep before the task could move them.
    for depth in (2, 6):
        model, layers = _stack(depth)
        with torch.no_grad():
            layers[0].rank_logits.fill_(-2.0)  # one layer cheaper than the others
            expected = sum(float(layer.expected_bops()) for layer in layers)
            full = sum(layer.full_bops() for layer in layers)
            assert float(hooks.regularizer(model)) == pytest.approx(0.1 * expected / full, rel=1e-5)
    (shallow, layers), (deep, _) = _stack(2), _stack(6)  # all layers alike: depth does not matter
    with torch.no_grad():
        one_layer = 0.1 * float(layers[0].expected_bops()) / layers[0].full_bops()
        assert float(hooks.regularizer(shallow)) == pytest.approx(one_layer, rel=1e-5)
        assert float(hooks.regularizer(deep)) == pytest.approx(one_layer, rel=1e-5)
