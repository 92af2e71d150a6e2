"""Pure low-rank parameterization: every targeted weight trained as two factors, the "Low-rank" baseline
of "Scalable Parameter and Memory Efficient Pretraining for LLM: Recent Algorithmic Advances and
Benchmarking" (Glentis, Li, Shang, Han, Tsaknakis, Wei, Hong, 2025; arXiv:2505.22922).

Parameterization, for a (out, in) layer:
    W = (α / r) · B A,      B (out, r), A (r, in)
    y = (α / r) · B (A x) + b                    (the product B A is never formed in a forward)
Trains A, B and the bias: r (out + in) (+ out) numbers per layer instead of out · in.
Initialisation, `init`:
- "random" (from scratch, the benchmark's): A and B both kaiming_uniform(a=√5) = U(±1/√fan_in), i.e.
  A ~ U(±1/√in), B ~ U(±1/√r), as nn.Linear initialises its weight;
- "svd" (continued training, or a spectral start): the layer's best rank-r approximation,
  (α/r) B A = U_r Σ_r V_rᵀ with B = U_r √Σ_r / √(α/r) and A = √Σ_r V_rᵀ / √(α/r); at r = min(out, in)
  the layer is reproduced exactly (up to float rounding).
Defaults: α = 32, the repo's llama-60m script (r = 128 there, lr 1.5e-3); rank is required.

Paper vs code (OptimAI-Lab/Memory_Efficient_Pretraining, pt_low_rank/low_rank_model.py): the code also
redraws the bias, U(±1/√out), since it discards the layer; we keep the replaced layer's bias (its own
standard initialisation in a fresh model, its trained value otherwise; Llama has none). The code's
options for a trainable tanh scale and dropout (off in the benchmark) are not offered.
Weight refactorization and momentum reset (the paper's two tricks) act on these factors during training:
rankwise.reparam.refactor (RefactorSchedule), not part of the parameterization itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..linalg import svd_factors
from .base import FactorizedLinear, ReparamConfig, Reparametrizer, check_alpha, kaiming_uniform, register

INITS = ("random", "svd")


@dataclass
class LowrankConfig(ReparamConfig):
    alpha: float = 32.0  # W = (alpha / rank) · B A
    init: str = "random"  # "random": from scratch; "svd": the layer's best rank-r approximation

    invalid = ({"rank": 4, "alpha": 0}, {"rank": 4, "init": "pissa"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_alpha(self.alpha)
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}, got {self.init!r}.")


def scaled_svd_factors(weight: torch.Tensor, rank: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) with scale · B A = the best rank-`rank` approximation of `weight`, √scale taken from each."""
    B, A = svd_factors(weight, rank)
    root = scale ** -0.5
    return B * root, A * root


@register("lowrank")
class Lowrank(Reparametrizer):
    config_class = LowrankConfig
    paper = ("Glentis et al., Scalable Parameter and Memory Efficient Pretraining for LLM (2025): "
             "the pure low-rank baseline")
    url = "https://arxiv.org/abs/2505.22922"

    @classmethod
    def shape(cls, layer: nn.Linear, config: LowrankConfig) -> FactorizedLinear:
        rank = config.rank_for(layer)
        return FactorizedLinear.like(layer, rank, config.alpha / rank)

    @classmethod
    def build(cls, layer: nn.Linear, config: LowrankConfig, generator: torch.Generator) -> FactorizedLinear:
        module = cls.shape(layer, config)
        if config.init == "svd":
            B, A = scaled_svd_factors(layer.weight, module.rank, module.scale)
        else:
            A = kaiming_uniform((module.rank, module.in_features), generator)
            B = kaiming_uniform((module.out_features, module.rank), generator)
        return module.set_factors(B, A)  # the bias: the layer's, copied by like()
