"""Rank suggestions: the greedy allocation against direct computations, planted spectra on a tiny Llama,
the batch gradient spectrum, and the snippet through TrainConfig, make_plan and adapt."""

from __future__ import annotations

import copy

import pytest
import torch

import rankwise
from rankwise.analyze import analyze_weights, batch_gradient_spectra, suggest_ranks
from rankwise.analyze.suggest import allocate, captured_energy, residual_shares, uniform_budget
from rankwise.errors import ConfigError
from rankwise.surgery import find_targets, get_module, make_plan
from rankwise.train.config import TrainConfig

from ..conftest import TINY_VOCAB, make_tiny_llama


def _plant(model, path: str, s: list[float], seed: int = 0) -> None:
    """Give the layer at `path` exactly the singular values `s` (random orthonormal U, V)."""
    W = get_module(model, path).weight
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(W.shape[0], len(s), generator=g))
    V, _ = torch.linalg.qr(torch.randn(W.shape[1], len(s), generator=g))
    with torch.no_grad():
        W.copy_((U * torch.tensor(s)) @ V.T)


def _suggest(model, **kwargs) -> dict:
    layers = analyze_weights(model, progress=False)["layers"]
    return suggest_ranks(layers, all_linear=find_targets(model, "all-linear"), model="tiny-llama", **kwargs)


def _cost(model, path: str) -> int:
    W = get_module(model, path).weight
    return W.shape[0] + W.shape[1]


def test_equal_costs_pick_the_largest_gains_overall():
    gains = {"a": [9.0, 5.0, 1.0], "b": [8.0, 7.0, 6.0, 0.5], "c": [2.0]}
    ranks = allocate(gains, {"a": 10, "b": 10, "c": 10}, budget=45)
    top4 = sorted((g for gs in gains.values() for g in gs), reverse=True)[:4]  # 9, 8, 7, 6
    assert ranks == {"a": 1, "b": 3, "c": 0}
    assert sum(gains[n][k] for n in ranks for k in range(ranks[n])) == sum(top4)


def test_allocation_respects_caps_floor_and_skips_units_that_no_longer_fit():
    gains = {"big": [100.0, 90.0, 80.0], "small": [1.0, 1.0, 1.0]}
    ranks = allocate(gains, {"big": 100, "small": 10}, budget=230, min_rank=1, max_rank=3)
    # floor: 110; big's 2nd unit (0.9/param) fits (210); its 3rd does not, small's two do (230)
    assert ranks == {"big": 2, "small": 3}
    with pytest.raises(ConfigError, match="below the floor"):
        allocate(gains, {"big": 100, "small": 10}, budget=50, min_rank=1)

def test_priorities_are_captured_energy_and_eckart_young_residual_shares():
    s = [1.0, 3.0, 2.0]
    W = torch.diag(torch.tensor(s, dtype=torch.float64))
    assert captured_energy(s) == pytest.approx([9.0, 4.0, 1.0])
    for r, share in enumerate(residual_shares(s)):  # ‖W − best rank-r W‖_F² / ‖W‖_F²
        U, S, Vh = torch.linalg.svd(W)
        best = (U[:, :r] * S[:r]) @ Vh[:r]
        assert share == pytest.approx(float(((W - best) ** 2).sum() / (W ** 2).sum()))
    assert residual_shares([0.0, 0.0]) == []


@pytest.mark.parametrize("budget", [None, 5000, 20001])
def test_budget_is_spent_to_within_one_rank_unit(budget):
    model = make_tiny_llama()
    s = _suggest(model, budget=budget)
    costs = {n: _cost(model, n) for n in s["ranks"]}
    used = sum(r * costs[n] for n, r in s["ranks"].items())
    expected = uniform_budget({n: get_module(model, n).weight.shape for n in s["ranks"]}, 8)
    assert s["budget"] == (expected if budget is None else budget) and used == s["used"]
    assert 0 <= s["budget"] - used < max(costs.values())


def test_a_flatter_planted_spectrum_gets_more_rank_and_the_result_is_deterministic():
    model = make_tiny_llama()
    flat, steep = "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"  # same shape
    _plant(model, flat, [1.0 - 0.01 * k for k in range(32)])
    _plant(model, steep, [0.5 ** k for k in range(32)])
    s = _suggest(model)
    assert s["ranks"][flat] > s["ranks"][steep] >= 1
    again = _suggest(copy.deepcopy(model))
    assert again == s


def test_batch_gradient_spectrum_is_that_of_the_mean_gradient():
    model = make_tiny_llama()
    g = torch.Generator().manual_seed(0)
    examples = [{"input_ids": torch.randint(0, TINY_VOCAB, (8,), generator=g).tolist()} for _ in range(3)]
    for e in examples:
        e["labels"] = [-100] * 4 + e["input_ids"][4:]
    spectra = batch_gradient_spectra(model, None, examples, targets=["v_proj"])
    W = model.model.layers[1].self_attn.v_proj.weight
    W.requires_grad_(True)
    direct = sum(torch.autograd.grad(model(input_ids=torch.tensor([e["input_ids"]]),
                                           labels=torch.tensor([e["labels"]])).loss, W)[0]
                 for e in examples) / 3
    assert spectra["model.layers.1.self_attn.v_proj"] == pytest.approx(
        torch.linalg.svdvals(direct).tolist(), rel=1e-4, abs=1e-7)
    assert list(spectra) == ["model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.v_proj"]


def _round_trip(model, snippet: dict) -> dict:
    config = TrainConfig.from_dict({**snippet, "task": "iso-dates"})
    return make_plan(model, config.adapter_config())


def test_snippet_round_trips_through_train_config_and_make_plan():
    model = make_tiny_llama()
    s = _suggest(model)
    assert s["snippet"]["targets"] == "all-linear"  # every layer got a rank
    plan = _round_trip(model, s["snippet"])
    assert {n: c.rank for n, c in plan.items()} == s["ranks"]
    assert all(c.alpha == pytest.approx(2.0 * c.rank) for c in plan.values())  # the scale stays 2
    adapted = rankwise.adapt(copy.deepcopy(model), "lora", plan=plan)
    assert rankwise.trainable_parameters(adapted)["trainable"] == s["used"] <= s["budget"]


def test_layers_without_gradient_energy_drop_out_of_the_targets():
    model = make_tiny_llama()
    layers = analyze_weights(model, progress=False)["layers"]
    gradients = {n: [1.0 / (k + 1) for k in range(16)] for n in layers}
    dead = [n for n in layers if n.endswith(("k_proj", "up_proj"))]
    for n in dead:
        gradients[n] = [0.0] * 16
    s = suggest_ranks(layers, gradients=gradients, all_linear=list(layers), budget=3000)
    assert all(s["ranks"][n] == 0 for n in dead) and s["source"] == "gradients"
    assert sorted(s["snippet"]["targets"]) == sorted(n for n in layers if n not in dead)
    plan = _round_trip(model, s["snippet"])
    assert {n: c.rank for n, c in plan.items()} == {n: r for n, r in s["ranks"].items() if r}
