"""TLoRA: Transformed Low-rank Adaptation via Tensor Decomposition and Its Applications to Text-to-image
Models (Tao, Takida, Murata, Zhao, Mitsufuji, 2025, arXiv 2501.08727).

Update rule: a full-rank, dense transform of the frozen weight plus a residual, both tensor-decomposed,
    W' = T W + s · ΔW          (side="output": T is (out, out), acting on W's output rows)
    W' = W T + s · ΔW          (side="input":  T is (in, in))
    s = alpha / rank,  T₀ = I,  ΔW₀ = 0,
so the model equals the base at init. DoRA is the special case T = diag(m / ‖W‖_c), ΔW = low rank.
Trains the tensor cores of T and of ΔW; W is frozen.

Tensor decomposition (our choice; no code is published and the paper's exact layout could not be
retrieved): both are tensor-train matrices (rankwise.linalg.structured), each dimension split into
`tensor_order` near-equal factors, out = ∏ oₖ, in = ∏ iₖ:
  - T: cores (rₖ₋₁, oₖ, oₖ, rₖ) with TT rank `transform_rank`. Rank 1 makes T = K₁ ⊗ ⋯ ⊗ K_d, a
    Kronecker product of small square matrices: dense, and full rank whenever every Kₖ is. Init: each
    core's rank-(0, 0) slice is the identity; slices leading to ranks ≥ 1 start random, slices leading
    back to rank 0 start at zero, so T₀ = I exactly while every core gets a gradient.
  - ΔW: cores (rₖ₋₁, oₖ, iₖ, rₖ) with TT rank `rank`; the last core starts at zero (like LoRA's B),
    the others random.
Trainable numbers per layer: Σₖ rₖ₋₁ rₖ oₖ² (T) + Σₖ rₖ₋₁ rₖ oₖ iₖ (ΔW), with r₀ = r_d = 1.
T acts on activations through its cores, never formed: y = base_out + (T - I)(W x) + s · ΔW dropout(x) on
the output side (no extra pass through W), or + W (T - I) x on the input side (one more pass through W,
which the transform needs). ΔW goes through its cores for a few rows (generation), but is formed densely
from them for a batch of DENSE_RESIDUAL_ROWS rows or more: the core-by-core product keeps intermediates
`rank` times the activations' size, and was 7x slower than forming ΔW (out · in · rank, whatever the
batch) on a 4 x 128-token batch of SmolLM2 on CPU. Same function, same gradients, either way.
delta_weight() is the residual s · ΔW only; merged_weight(W) includes T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..linalg.structured import balanced_factors, tt_matvec, tt_to_dense, tt_transpose
from .base import Adapter, LowRankConfig, make_dropout, register

DENSE_RESIDUAL_ROWS = 32  # measured crossover on CPU for SmolLM2's shapes: about 25 rows


@dataclass
class TloraConfig(LowRankConfig):
    tensor_order: int = 3  # cores per tensor-train matrix (each dimension split into this many factors)
    transform_rank: int = 1  # TT rank of the transform T (1: a Kronecker product of small matrices)
    side: str = "output"  # "output": W' = T W + s ΔW (DoRA's side); "input": W' = W T + s ΔW

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tensor_order < 2 or self.transform_rank < 1:
            raise ConfigError(f"tensor_order must be >= 2 and transform_rank >= 1, got "
                              f"{self.tensor_order!r} and {self.transform_rank!r}.")
        if self.side not in ("output", "input"):
            raise ConfigError(f"side must be 'output' or 'input', got {self.side!r}.")


def _ranks(order: int, rank: int) -> list[tuple[int, int]]:
    return [(1 if k == 0 else rank, 1 if k == order - 1 else rank) for k in range(order)]


def identity_tt_cores(dims: list[int], rank: int, **factory) -> list[torch.Tensor]:
    """TT cores of the identity of size ∏ dims whose higher-rank slices can still learn (see module doc)."""
    cores = []
    for n, (r_in, r_out) in zip(dims, _ranks(len(dims), rank)):
        core = torch.randn(r_in, n, n, r_out, **factory) / math.sqrt(n)
        core[1:, :, :, 0] = 0  # paths may leave rank 0 but never come back to it: they add nothing to T₀
        core[0, :, :, 0] = torch.eye(n, **factory)
        cores.append(core)
    return cores


def zero_tt_cores(out_dims: list[int], in_dims: list[int], rank: int, **factory) -> list[torch.Tensor]:
    """TT cores of a zero (∏ out_dims, ∏ in_dims) matrix: random cores, then a zero last core."""
    cores = [torch.randn(r_in, o, i, r_out, **factory) / math.sqrt(i * r_in)
             for o, i, (r_in, r_out) in zip(out_dims, in_dims, _ranks(len(out_dims), rank))]
    cores[-1].zero_()
    return cores


@register("tlora")
class Tlora(Adapter):
    config_class = TloraConfig
    paper = ("Transformed Low-rank Adaptation via Tensor Decomposition and Its Applications to "
             "Text-to-image Models")
    url = "https://arxiv.org/abs/2501.08727"
    trains = "tensor-train cores of a full-rank transform T and of a residual ΔW"
    reads_weight = True  # T acts on the weight it sits on: W' when stacked on other adapters

    def __init__(self, base: nn.Linear, config: TloraConfig):
        super().__init__(base, config)
        order = config.tensor_order
        out_dims = balanced_factors(self.out_features, order)
        in_dims = balanced_factors(self.in_features, order)
        side_dims = out_dims if config.side == "output" else in_dims
        self.transform = nn.ParameterList(identity_tt_cores(side_dims, config.transform_rank, **self.factory))
        self.residual = nn.ParameterList(zero_tt_cores(out_dims, in_dims, config.rank, **self.factory))
        self.dropout = make_dropout(config)
        self.scale = config.alpha / config.rank

    def transform_matrix(self) -> torch.Tensor:
        """T as a dense matrix; for inspection and tests only."""
        return tt_to_dense(list(self.transform))

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        x = x.to(self.residual[0].dtype)
        transform = list(self.transform)
        if self.config.side == "output":
            w_x = (base_out if layer.bias is None else base_out - layer.bias).to(x.dtype)
            turned = tt_matvec(transform, w_x) - w_x  # (T - I) W x
        else:
            turned = F.linear(tt_matvec(transform, x) - x, layer.weight.to(x.dtype))  # W (T - I) x
        x, residual = self.dropout(x), list(self.residual)
        rows = x.numel() // x.shape[-1]
        residual = (F.linear(x, tt_to_dense(residual)) if rows >= DENSE_RESIDUAL_ROWS
                    else tt_matvec(residual, x)) * self.scale
        return base_out + (turned + residual).to(base_out.dtype)

    def merged_weight(self, weight: torch.Tensor) -> torch.Tensor:
        W, transform = weight.to(self.residual[0].dtype), list(self.transform)
        if self.config.side == "output":
            turned = tt_matvec(transform, W.T).T  # T W, column by column
        else:
            turned = tt_matvec(tt_transpose(transform), W)  # W T, row by row: (Tᵀ wᵀ)ᵀ
        return (turned + self.delta_weight()).to(weight.dtype)

    def delta_weight(self) -> torch.Tensor:
        # The residual s · ΔW only; the full merged update is merged_weight(W) - W.
        return tt_to_dense(list(self.residual)) * self.scale
