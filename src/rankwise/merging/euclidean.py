"""The Euclidean merges of task updates ΔW_i = W_i − W_0, per layer (rankwise.linalg.merging has the math
and where it follows mergekit):

    linear            W_0 + Σ w_i ΔW_i / Σ w_i                       (mergekit's linear, on the updates)
    task-arithmetic   W_0 + Σ w_i ΔW_i                               (Ilharco et al., arXiv 2212.04089)
    ties              trim each ΔW_i to its top-density share by magnitude, elect each entry's sign by the
                      weighted sum, disjoint weighted mean of the agreeing entries (Yadav et al., 2306.01708)
    dare-linear       drop each entry with probability 1 − density, rescale by 1/density, then sum
    dare-ties         the same drop and rescale, then TIES's sign election (Yu et al., arXiv 2311.03099)

linear and task-arithmetic of plain LoRA inputs stay exact and low-rank: their result is the factor
concatenation (cat) with the weights folded into A, saved as an adapter. DARE draws its masks from one
torch.Generator seeded with `seed`, inputs in order, layers in the first input's order.
"""

from __future__ import annotations

import torch

from ..linalg import merging
from .base import MergeConfig, deltas_at, register, union_paths
from .cat import concatenated


def _linear(base, updates, config: MergeConfig, normalize: bool):
    weights = config.weights_for(len(updates))
    if all(u.low_rank for u in updates):
        total = sum(weights) if normalize else 1.0
        return concatenated(updates, [w / total for w in weights])
    return {path: merging.task_arithmetic(deltas_at(path, updates, base[path]), weights, normalize=normalize)
            for path in union_paths(updates)}


@register("linear", "weighted average of the fine-tunes (mergekit's linear)")
def linear(base, updates, config: MergeConfig):
    return _linear(base, updates, config, normalize=True)


@register("task-arithmetic", "Editing Models with Task Arithmetic", "https://arxiv.org/abs/2212.04089")
def task_arithmetic(base, updates, config: MergeConfig):
    return _linear(base, updates, config, normalize=False)


@register("ties", "TIES-Merging: Resolving Interference When Merging Models", "https://arxiv.org/abs/2306.01708")
def ties(base, updates, config: MergeConfig):
    weights = config.weights_for(len(updates))
    return {path: merging.ties(deltas_at(path, updates, base[path]), weights, config.density,
                               consensus=config.consensus) for path in union_paths(updates)}


def _dare(base, updates, config: MergeConfig, sign_election: bool):
    weights = config.weights_for(len(updates))
    generator = torch.Generator().manual_seed(config.seed)
    return {path: merging.dare(deltas_at(path, updates, base[path]), weights, config.density, generator,
                               sign_election=sign_election, consensus=config.consensus)
            for path in union_paths(updates)}


@register("dare-linear", "Language Models are Super Mario (DARE)", "https://arxiv.org/abs/2311.03099")
def dare_linear(base, updates, config: MergeConfig):
    return _dare(base, updates, config, sign_election=False)


@register("dare-ties", "Language Models are Super Mario (DARE) with TIES's sign election",
          "https://arxiv.org/abs/2311.03099")
def dare_ties(base, updates, config: MergeConfig):
    return _dare(base, updates, config, sign_election=True)
