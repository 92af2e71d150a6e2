"""SLTrain: a sparse plus low-rank parameterization for pretraining (Han et al., "SLTrain: a sparse plus
low-rank approach for parameter and memory efficient pretraining", NeurIPS 2024; arXiv:2406.02214).

Parameterization, for a (out, in) layer:
    W = (α / r) · B A + S,      B (out, r), A (r, in), S with nnz = ⌊δ · out · in⌋ entries
    y = (α / r) · B (A x) + S x + b
S lives on a FIXED random support: nnz flat positions row · in + col, drawn once without replacement
(a random permutation, cut and sorted) and stored as an int64 buffer `indices`; only its `values`
(a Parameter) train, so the support never changes. Trains A, B, S's values and the bias:
r (out + in) + nnz (+ out) numbers per layer, plus nnz int64 indices (8 bytes each) held, not trained.
Initialisation (the code's): B = 0, A ~ kaiming_uniform(a=√5) = U(±1/√in), S's values ~ U(±1/√in); so
W₀ = S at the start and the replaced layer's weight is discarded: this is a pretraining method.
Defaults (the repo's scripts): δ = 0.03 (`sp_ratio`), α = 32 (60M; 16 at 130M/350M, 8 at 1B) with r = 128
(60M), 256 (130M/350M), 512 (1B); lr 3e-3, AdamW, weight decay 0. rank is required here.

Paper vs code (andyjm3/SLTrain, splora/splora_linear.py with a C++ extension): the code forms
W = (α/r) B A + scatter(S) inside a custom autograd function in both passes and never saves it. Here the
low-rank part runs on activations, B (A x), and S is scattered into a dense (out, in) matrix on each
forward (linalg.sparse_masks.scatter_flat), which autograd keeps for the input gradient: one dense
temporary per layer, acceptable on CPU and for the small models rankwise trains; the gradients are the
code's (dS = the dense gradient Gᵀ X gathered at the support). The code redraws the bias U(±1/√out);
we keep the replaced layer's (Llama has none). The code's trainable tanh scale (off by default) and
dropout are not offered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..linalg.sparse_masks import scatter_flat
from .base import (
    FactorizedLinear,
    ReparamConfig,
    Reparametrizer,
    check_alpha,
    check_density,
    kaiming_uniform,
    register,
)


@dataclass
class SltrainConfig(ReparamConfig):
    alpha: float = 32.0  # W = (alpha / rank) · B A + S
    density: float = 0.03  # δ: the share of each weight's entries S holds

    invalid = ({"rank": 4, "density": 0}, {"rank": 4, "density": 1.0}, {"rank": 4, "alpha": -1})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_density(self.density)
        check_alpha(self.alpha)

    def nonzeros_for(self, layer: nn.Linear) -> int:
        count = int(self.density * layer.out_features * layer.in_features)
        if count < 1:
            raise ConfigError(f"density {self.density} leaves no sparse entry in this ({layer.out_features}, "
                              f"{layer.in_features}) layer; raise it or exclude the layer.")
        return count


class RandomSparseLinear(FactorizedLinear):
    """scale · B (A x) + S x + b, S = `values` at the fixed flat positions `indices` of the (out, in) W."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: torch.Tensor | None,
                 dtype: torch.dtype, device: torch.device | str = "cpu", scale: float = 1.0, *,
                 nonzeros: int):
        super().__init__(in_features, out_features, rank, bias, dtype, device, scale)
        self.register_buffer("indices", torch.zeros(nonzeros, dtype=torch.long, device=device))
        self.values = nn.Parameter(torch.empty(nonzeros, dtype=dtype, device=device))

    def sparse_weight(self) -> torch.Tensor:
        return scatter_flat(self.indices, self.values, (self.out_features, self.in_features))

    def add_sparse(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return out + F.linear(x, self.sparse_weight())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonzeros={self.values.numel()}"


def random_support(rows: int, cols: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` distinct flat positions of a (rows, cols) matrix, uniformly at random, sorted."""
    return torch.randperm(rows * cols, generator=generator)[:count].sort().values


@register("sltrain")
class Sltrain(Reparametrizer):
    config_class = SltrainConfig
    paper = ("Han et al., SLTrain: a sparse plus low-rank approach for parameter and memory efficient "
             "pretraining (NeurIPS 2024)")
    url = "https://arxiv.org/abs/2406.02214"

    @classmethod
    def shape(cls, layer: nn.Linear, config: SltrainConfig) -> RandomSparseLinear:
        rank = config.rank_for(layer)
        return RandomSparseLinear.like(layer, rank, config.alpha / rank, nonzeros=config.nonzeros_for(layer))

    @classmethod
    def build(cls, layer: nn.Linear, config: SltrainConfig, generator: torch.Generator) -> RandomSparseLinear:
        module = cls.shape(layer, config)
        A = kaiming_uniform((module.rank, module.in_features), generator)
        B = torch.zeros(module.out_features, module.rank)
        indices = random_support(module.out_features, module.in_features, module.values.numel(), generator)
        bound = module.in_features ** -0.5
        values = torch.empty(module.values.shape).uniform_(-bound, bound, generator=generator)
        with torch.no_grad():
            module.indices.copy_(indices)
            module.values.copy_(values)
        return module.set_factors(B, A)  # the bias: the layer's, copied by like()
