"""LIFT: Low-rank Informed Sparse Fine-Tuning of "Principal Weights" — "LIFT the Veil for the Truth:
Principal Weights Emerge after Rank Reduction for Reasoning-Focused Supervised Fine-Tuning"
(Liu et al., ICML 2025, arXiv 2506.00772).

Update rule, for W = W0 + ΔW (out, in) with W0 frozen:
    W_r = best rank-`filter_rank` approximation of W (SVD, float32)
    M   = the K entries of largest |W_r|,   K = min((out + in) · rank, out · in)   (LoRA-rank-sized budget)
    y   = W0 x + b + ΔW dropout(x),   only ΔW's entries on M train;   ΔW = 0 at init (identity)
    every `refresh_every` optimizer steps M is recomputed from the current W (dynamic mask).
Trains K values ((out + in) · rank, LoRA's parameter count). Entries that leave the mask keep their
trained value (the authors write them into W) in a "settled" sparse store; the adapter saves only
flat indices and values: K live ones, plus the settled ones.

rankwise keeps W0 untouched, so the settled store must have a fixed size for save/load:
`support_budget` · K entries in all (live + settled). If a refresh would touch more, the weakest new
positions are swapped for the best already-trained ones, with a warning; up to that bound the masks are
exactly LIFT's. Forward is dense (ΔW scattered into a transient (out, in) matrix, one GEMM), as a 5 %
mask gains nothing from sparse kernels; the authors' sparse Adam also works on the dense gradient.

Paper vs code: the paper selects the largest |W_r|; in the released code the recommended
`mask_type="lift_sparse"` makes `largest` False, which selects the smallest. rankwise follows the paper
(`largest=False` gives the code's). The code refreshes when (steps + 1) % interval == 0; rankwise after
every `refresh_every` steps. The code keeps Adam moments of entries present in both masks and zeroes new
ones; so does rankwise: an entry that stays keeps its slot and moments, and a slot handed to a new entry
has its moments reset (StepContext.reset_state).
The refresh reads W0 from the wrapped layer (a reference, not a copy), so run it unmerged, as training
does. `svd_iters` > 0 uses a randomized SVD (the code's "rand" mask types). It has no alpha.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..linalg.sparse_masks import low_rank_magnitudes, scatter_flat, top_k_within_capacity
from .base import Adapter, DropoutField, RankField, StepContext, SvdField, make_dropout, register


@dataclass
class LiftConfig(RankField, DropoutField, SvdField):
    filter_rank: int | None = None  # rank of the approximation that ranks the weights; None = rank
    refresh_every: int = 400  # update_interval of the paper's scripts; 0 keeps the first mask
    largest: bool = True  # the paper's principal weights; False reproduces the released code
    support_budget: float = 2.0  # live + settled entries kept, in units of K

    invalid = ({"filter_rank": 0}, {"refresh_every": -1}, {"support_budget": 0.5})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.filter_rank is not None and (not isinstance(self.filter_rank, int) or self.filter_rank < 1):
            raise ConfigError(f"filter_rank must be a positive integer or None, got {self.filter_rank!r}.")
        if self.refresh_every < 0:
            raise ConfigError(f"refresh_every must be >= 0, got {self.refresh_every!r}.")
        if not self.support_budget >= 1.0:
            raise ConfigError(f"support_budget must be >= 1 (the live mask itself), "
                              f"got {self.support_budget!r}.")


@register("lift")
class Lift(Adapter):
    config_class = LiftConfig
    paper = ("LIFT the Veil for the Truth: Principal Weights Emerge after Rank Reduction for "
             "Reasoning-Focused Supervised Fine-Tuning")
    url = "https://arxiv.org/abs/2506.00772"
    trains = "ΔW on the top-K entries of |rank-r approx of W|, K = (out+in)·rank, stored sparse"
    fast_hooks = {"refresh_every": 1}

    def __init__(self, base: nn.Linear, config: LiftConfig):
        super().__init__(base, config)
        self.filter_rank = config.filter_rank or config.rank
        if self.filter_rank > min(self.in_features, self.out_features):
            raise ConfigError(f"filter_rank {self.filter_rank} exceeds min(out, in) of this layer.")
        numel = self.out_features * self.in_features
        count = min((self.out_features + self.in_features) * config.rank, numel)
        settled = min(numel, math.ceil(config.support_budget * count)) - count
        device = self.factory["device"]
        self._base = (base,)  # a plain reference, not a submodule: the mask is computed from W0 + ΔW
        self.values = nn.Parameter(torch.zeros(count, **self.factory))
        self.register_buffer("indices", torch.zeros(count, dtype=torch.long, device=device))
        # Settled entries: values that left the mask; unused slots hold 0 at index 0 and add nothing.
        self.register_buffer("settled_indices", torch.zeros(settled, dtype=torch.long, device=device))
        self.register_buffer("settled_values", torch.zeros(settled, **self.factory))
        self.dropout = make_dropout(config)

    def _scores(self, weight: torch.Tensor) -> torch.Tensor:
        scores = low_rank_magnitudes(weight, self.filter_rank, self.config.svd_iters).flatten()
        return scores if self.config.largest else -scores

    def init_from_weight(self, weight: torch.Tensor) -> None:
        self.indices.copy_(torch.topk(self._scores(weight), self.values.numel()).indices)

    def _dense(self) -> torch.Tensor:
        shape = (self.out_features, self.in_features)
        return scatter_flat(self.settled_indices, self.settled_values, shape) + scatter_flat(
            self.indices, self.values, shape
        )

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        delta = self._dense()
        return base_out + F.linear(self.dropout(x.to(delta.dtype)), delta).to(base_out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return self._dense()

    @torch.no_grad()
    def after_step(self, context: StepContext) -> None:
        if self.config.refresh_every and context.step % self.config.refresh_every == 0:
            moved = self.refresh()
            context.reset_state(self.values, moved)  # a slot's moments belong to the entry it held

    @torch.no_grad()
    def refresh(self) -> torch.Tensor:
        """Recompute the principal weights of W0 + ΔW and move training to them; ΔW itself is unchanged.

        Returns which slots now hold another entry than before."""
        delta = self._dense().flatten()
        weight = self._base[0].weight.detach().float() + delta.view(self.out_features, self.in_features)
        support = delta != 0  # an entry trained to exactly 0 holds nothing worth keeping
        capacity = self.values.numel() + self.settled_values.numel()
        chosen, bounded = top_k_within_capacity(self._scores(weight), self.values.numel(), support, capacity)
        if bounded:
            warnings.warn(f"LIFT: the mask refresh hit support_budget={self.config.support_budget}; "
                          "some new principal weights were left out. Raise support_budget to keep them.",
                          stacklevel=3)
        # Entries that stay keep their slot (and so their optimizer moments); new ones take freed slots.
        slots = self.indices.clone()
        staying = torch.isin(slots, chosen)
        slots[~staying] = chosen[~torch.isin(chosen, slots)]
        self.indices.copy_(slots)
        self.values.copy_(delta[slots])
        support[slots] = False
        rest = torch.nonzero(support).flatten()
        self.settled_indices.zero_()
        self.settled_values.zero_()
        self.settled_indices[: rest.numel()] = rest
        self.settled_values[: rest.numel()] = delta[rest]
        return ~staying
