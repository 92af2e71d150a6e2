"""`suggest_ranks`: a per-layer LoRA rank pattern and target list within a trainable-parameter budget.

Rule: greedy allocation of rank units. One more rank on layer l (W: out × in) costs c_l = in + out LoRA
parameters (a row of A, a column of B). Every layer starts at `min_rank`; the unit with the highest
priority p_l(r_l) is added, again and again, while its cost fits the budget. A layer stops at
`max_rank`, at min(in, out), or when its spectrum has no energy left; layers left at rank 0 drop out of
the targets. Ties go to the earlier layer, so the result is deterministic. What is left unspent is less
than one rank unit of the costliest layer still able to grow.

    with gradients:  p_l(r) = σ_{r+1}(G_l)² / c_l       G_l = ∂L/∂W_l of the mean answer-only loss
    weights only:    p_l(r) = Σ_{i>r} σ_i(W_l)² / Σ_i σ_i(W_l)²      the share a rank-r fit leaves out

With gradients: a step ΔW of fixed Frobenius norm restricted to rank k lowers the loss, to first order,
in proportion to ‖G_k‖_F (G's top-k part), so σ_{r+1}² is the energy one more rank captures, and dividing
by c_l makes the greedy order solve the fractional knapsack "most captured gradient energy within the
budget" exactly (each layer's gains fall with r). Larger gradients count for more, as in AdaLoRA's
sensitivity score (Zhang et al., arXiv 2303.10512), which moves a rank budget between layers during
training; here the score is computed once, from the base model, before training. The layer-wise gradient
spectrum is the quantity of "How Instruction and Reasoning Data shape Post-Training: Data Quality through
the Lens of Layer-wise Gradients" (Li et al.; see gradients.py).
Weights only, a data-free heuristic: the greedy raises the layer whose rank-r truncation leaves the
largest share of its spectrum out, so it ends with one common residual-energy threshold τ across layers
(each layer at the smallest rank whose residual share is ≤ τ; τ as low as the budget allows: the
energy-threshold rule of `convert --energy` and WeLore's global τ). Flatter (heavier-tailed) spectra
get more rank. Cost enters only through the budget: pretrained weight spectra are nearly flat over the
first tens of ranks, so a per-parameter priority would be decided by the layer shapes alone.
Everything beyond the first-order gradient argument is heuristic; bench/suggest_vs_uniform.py reports
whether either rule beats uniform rank.

The snippet keeps LoRA's scale alpha / rank fixed at `scale` on every layer (alpha_pattern = scale × rank;
PEFT's default would let the scale fall as 16 / r), so only the ranks differ from a uniform LoRA.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..surgery import find_targets, get_module
from .gradients import _encoded

__all__ = ["allocate", "batch_gradient_spectra", "captured_energy", "rank_snippet", "residual_shares",
           "suggest_ranks", "uniform_budget"]


def uniform_budget(shapes: Mapping[str, Sequence[int]], rank: int = 8) -> int:
    """Trainable parameters of a uniform rank-`rank` LoRA on these (out, in) layers: Σ rank·(in + out)."""
    return sum(rank * (out + in_) for out, in_ in shapes.values())


def captured_energy(singular_values: Sequence[float]) -> list[float]:
    """σ_r² for r = 1 … n, sorted descending: the energy each successive rank captures."""
    return (np.sort(np.asarray(singular_values, dtype=np.float64))[::-1] ** 2).tolist()


def residual_shares(singular_values: Sequence[float]) -> list[float]:
    """Σ_{i>r} σ_i² / Σ_i σ_i² for r = 0 … n−1: the share of the energy a rank-r truncation leaves out
    (Eckart–Young); empty when every σ is zero."""
    energy = np.asarray(captured_energy(singular_values))
    total = energy.sum()
    if total <= 0:
        return []
    return (energy[::-1].cumsum()[::-1] / total).tolist()


def allocate(priorities: Mapping[str, Sequence[float]], costs: Mapping[str, int], budget: int, *,
             min_rank: int = 0, max_rank: int | Mapping[str, int] = 32) -> dict[str, int]:
    """Greedy ranks: repeatedly add the rank unit with the highest priorities[l][r_l] whose cost fits.

    `priorities[l][r]` ranks layer l's (r+1)-th unit (non-increasing in r; units with priority ≤ 0 are
    never added); `costs[l]`: parameters per unit; `max_rank`: one cap or one per layer. Returns
    {layer: rank} in the order of `priorities`, with Σ rank·cost ≤ budget.
    """
    names = list(priorities)
    caps = {n: max_rank[n] if isinstance(max_rank, Mapping) else max_rank for n in names}
    ranks = {n: min(min_rank, caps[n]) for n in names}
    left = budget - sum(ranks[n] * costs[n] for n in names)
    if left < 0:
        raise ConfigError(f"budget {budget} is below the floor of rank {min_rank} on every layer "
                          f"({budget - left} parameters); raise the budget or lower the floor.")

    def entry(i: int, name: str):
        r = ranks[name]
        if r < caps[name] and r < len(priorities[name]) and priorities[name][r] > 0:
            return (-priorities[name][r], i, name)
        return None

    heap = [e for i, n in enumerate(names) if (e := entry(i, n)) is not None]
    heapq.heapify(heap)
    while heap:
        _, i, name = heapq.heappop(heap)
        if costs[name] > left:
            continue  # this layer's unit never fits again; cheaper layers may still
        ranks[name] += 1
        left -= costs[name]
        if (e := entry(i, name)) is not None:
            heapq.heappush(heap, e)
    return ranks


def batch_gradient_spectra(model: nn.Module, tokenizer, examples: list[dict], *, targets="all-linear",
                           max_examples: int = 32, max_length: int = 256) -> dict[str, list[float]]:
    """{layer: singular values of ∂L/∂W}, L the answer-only loss averaged over the first `max_examples`.

    Unlike gradient_spectra (one spectrum per example, for data quality) this sums the examples'
    gradients first: the direction a first training step takes. One example per forward (no padding);
    requires_grad flags and train/eval mode are restored, and no .grad is left behind.
    """
    examples = examples[:max_examples]
    if not examples:
        raise DataError("suggest: no examples to compute gradients on.")
    names = find_targets(model, targets)
    weights = [get_module(model, n).weight for n in names]
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    device = weights[0].device
    total = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for w in weights:
            w.requires_grad_(True)
        model.eval()  # no dropout: the spectrum of the model as it starts training
        for example in examples:
            enc = _encoded(tokenizer, example, max_length)
            if all(label == -100 for label in enc["labels"]):
                raise DataError("an example has no answer tokens to compute a loss on; check its 'answer'.")
            loss = model(input_ids=torch.tensor([enc["input_ids"]], device=device),
                         labels=torch.tensor([enc["labels"]], device=device)).loss
            for acc, g in zip(total, torch.autograd.grad(loss, weights), strict=True):
                acc.add_(g.float(), alpha=1 / len(examples))
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    return {n: torch.linalg.svdvals(g).double().cpu().tolist() for n, g in zip(names, total, strict=True)}


def rank_snippet(ranks: Mapping[str, int], all_linear: Sequence[str] = (), scale: float = 2.0,
                 model: str | None = None) -> dict:
    """A `rankwise finetune` config: method, targets ("all-linear" when the ranked layers are exactly
    `all_linear`, else their paths), the commonest rank as `rank`, a rank_pattern of escaped full paths
    for the others, and alpha / alpha_pattern holding alpha / rank = `scale`."""
    chosen = {n: r for n, r in ranks.items() if r > 0}
    if not chosen:
        raise ConfigError("the budget left every layer at rank 0; raise --budget.")
    counts = Counter(chosen.values())
    default = min(counts, key=lambda r: (-counts[r], r))
    targets = "all-linear" if sorted(chosen) == sorted(all_linear) else list(chosen)
    pattern = {re.escape(n): r for n, r in chosen.items() if r != default}
    snippet = {"model": model} if model is not None else {}
    return snippet | {"method": "lora", "targets": targets, "rank": default, "alpha": scale * default,
                      "rank_pattern": pattern, "alpha_pattern": {k: scale * r for k, r in pattern.items()}}


def suggest_ranks(weights: Mapping[str, dict], *, budget: int | None = None,
                  gradients: Mapping[str, Sequence[float]] | None = None, all_linear: Sequence[str] = (),
                  reference_rank: int = 8, min_rank: int = 0, max_rank: int = 32, scale: float = 2.0,
                  model: str | None = None) -> dict:
    """The suggestion for the layers of analyze_weights(...)["layers"] (each with "shape" [out, in] and
    "singular_values"), from their gradient spectra when given; `all_linear`: the model's all-linear
    paths (find_targets), so the snippet can say "all-linear". `budget` defaults to a uniform
    rank-`reference_rank` LoRA on the same layers. Returns plain data: "ranks", "budget", "used",
    "uniform_rank_at_budget", "source", and "snippet" (what suggest.json holds)."""
    shapes = {n: layer["shape"] for n, layer in weights.items()}
    budget = uniform_budget(shapes, reference_rank) if budget is None else budget
    if budget < 1:
        raise ConfigError(f"--budget must be a positive number of parameters, got {budget}.")
    if gradients is not None and set(gradients) != set(shapes):
        raise DataError("suggest: the gradient spectra cover other layers than the weight spectra.")
    source = "gradients" if gradients is not None else "weights"
    costs = {n: out + in_ for n, (out, in_) in shapes.items()}
    if gradients is not None:
        priorities = {n: [e / costs[n] for e in captured_energy(gradients[n])] for n in shapes}
    else:
        priorities = {n: residual_shares(w["singular_values"]) for n, w in weights.items()}
    caps = {n: min(max_rank, *shapes[n]) for n in shapes}
    ranks = allocate(priorities, costs, budget, min_rank=min_rank, max_rank=caps)
    used = sum(ranks[n] * costs[n] for n in ranks)
    return {"source": source, "budget": budget, "used": used, "ranks": ranks,
            "uniform_rank_at_budget": budget / sum(costs.values()), "min_rank": min_rank,
            "max_rank": max_rank, "scale": scale,
            "snippet": rank_snippet(ranks, all_linear, scale, model)}
