"""SplitFlux's Visual-Gated LoRA (VGRA) — "SplitFlux: Learning to Decouple Content and Style from a
Single Image" (Yang et al., CVPR 2026, arXiv 2511.15258).

Update rule: two LoRA branches of different ranks, mixed per token by a gate M in [0, 1],
    y = W x + b + M ⊙ s_h B_h A_h x' + (1 - M) ⊙ s_l B_l A_l x',   x' = dropout(x),  s = alpha / rank
    M = σ(g·x + c)  (learned, per token)   or   M = a given saliency mask (see `saliency`)
A_h (rank, in), A_l (low_rank, in): Kaiming-uniform; B_h, B_l: zeros (identity at init); g = 0, c = 0
(M = 1/2 at the start). Trains A_h, B_h, A_l, B_l, g, c: (rank + low_rank)·(in + out) + in + 1.
The high-rank branch carries the salient subject, the low-rank one the residual details.

In the paper M is an image-saliency (foreground) mask over the image tokens, computed outside the
model. A Linear layer never sees that mask, so by default rankwise learns the gate from the token
itself; pass a real mask with `with saliency(model, mask): ...` to use the paper's gate. Either way
the gate depends on the input, so the update is no single weight: not mergeable (NotMergeable).
`complement_weight` > 0 adds λ‖Â_h Â_lᵀ‖_F² (Â: unit-norm rows of A) to the loss, our reading of the
paper's complementary loss (the branches should encode different information); its exact form was not
available to us, so it is off by default. low_rank defaults to max(1, rank // 4) (value not published).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Adapter, LowRankConfig, register
from .lora import init_lora_factors, lora_delta


@dataclass
class VgloraConfig(LowRankConfig):
    low_rank: int | None = None  # rank of the low-rank branch; None: max(1, rank // 4)
    complement_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low_rank is not None and (not isinstance(self.low_rank, int) or not 1 <= self.low_rank):
            raise ConfigError(f"low_rank must be a positive integer or None, got {self.low_rank!r}.")
        if self.complement_weight < 0:
            raise ConfigError(f"complement_weight must be >= 0, got {self.complement_weight!r}.")


def _factors(rank: int, in_features: int, out_features: int,
             factory: dict) -> tuple[nn.Parameter, nn.Parameter]:
    A = nn.Parameter(torch.empty(rank, in_features, **factory))
    B = nn.Parameter(torch.empty(out_features, rank, **factory))
    init_lora_factors(A, B)
    return A, B


@register("vglora")
class Vglora(Adapter):
    config_class = VgloraConfig
    paper = "SplitFlux: Learning to Decouple Content and Style from a Single Image"
    url = "https://arxiv.org/abs/2511.15258"
    trains = "A_h, B_h (rank), A_l, B_l (low_rank), gate g (in) + c"
    mergeable = False

    def __init__(self, base: nn.Linear, config: VgloraConfig):
        super().__init__(base, config)
        low_rank = config.low_rank or max(1, config.rank // 4)
        if low_rank > config.rank:
            raise ConfigError(f"low_rank {low_rank} exceeds rank {config.rank}; "
                              "the high-rank branch is the wider one.")
        self.high_A, self.high_B = _factors(config.rank, self.in_features, self.out_features, self.factory)
        self.low_A, self.low_B = _factors(low_rank, self.in_features, self.out_features, self.factory)
        self.gate_weight = nn.Parameter(torch.zeros(self.in_features, **self.factory))
        self.gate_bias = nn.Parameter(torch.zeros((), **self.factory))
        self.high_scale, self.low_scale = config.alpha / config.rank, config.alpha / low_rank
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.saliency_mask: torch.Tensor | None = None  # set by `saliency`; (..., tokens) in [0, 1]

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """M, shaped (..., tokens, 1) to broadcast over features."""
        if self.saliency_mask is not None:
            return self.saliency_mask.to(x.dtype).unsqueeze(-1)
        return torch.sigmoid(x @ self.gate_weight + self.gate_bias).unsqueeze(-1)

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        x = x.to(self.high_A.dtype)
        dropped = self.dropout(x)
        high = lora_delta(dropped, self.high_A, self.high_B, self.high_scale)
        low = lora_delta(dropped, self.low_A, self.low_B, self.low_scale)
        mask = self.gate(x)
        return base_out + (mask * high + (1 - mask) * low).to(base_out.dtype)

    def regularizer(self) -> torch.Tensor | None:
        if not self.config.complement_weight:
            return None
        overlap = F.normalize(self.high_A, dim=1) @ F.normalize(self.low_A, dim=1).T
        return self.config.complement_weight * overlap.pow(2).sum()


@contextlib.contextmanager
def saliency(model: nn.Module, mask: torch.Tensor) -> Iterator[nn.Module]:
    """Gate every VGLoRA layer of `model` with `mask` ((batch, tokens) in [0, 1]), not its learned gate."""
    layers = [module for module in model.modules() if isinstance(module, Vglora)]
    for layer in layers:
        layer.saliency_mask = mask
    try:
        yield model
    finally:
        for layer in layers:
            layer.saliency_mask = None
