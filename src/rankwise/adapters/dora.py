"""DoRA: Weight-Decomposed Low-Rank Adaptation (Liu et al., 2024, arXiv 2402.09353).

Update rule: split W into a magnitude and a direction and adapt the direction with LoRA,
    W' = m ⊙ (W + s B A) / ‖W + s B A‖_c          (‖·‖_c: norm of each output row, shape (out,))
    y  = W' x + b
m (out,) starts at ‖W‖_c, so the model equals the base at init. Trains m, A and B.
As the paper does (Sec. 4.3) to save memory, the norm is treated as a constant in backward
(detached); PEFT does the same. With dropout, the base path sees x and the LoRA path dropout(x),
as in PEFT:  y = base_out + (g - 1)(W x) + g · s B A dropout(x),  g = m / ‖W + s B A‖_c.
Merges exactly as W ← g ⊙ (W + s B A). Stacked on other adapters, W is the weight with them folded in
(the wrapper passes it), so the stack's output equals merging each adapter in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import register
from .lora import Lora, LoraConfig, lora_delta


@dataclass
class DoraConfig(LoraConfig):
    pass


@register("dora")
class Dora(Lora):
    config_class = DoraConfig
    paper = "DoRA: Weight-Decomposed Low-Rank Adaptation"
    url = "https://arxiv.org/abs/2402.09353"
    trains = "magnitude m (out), A (rank×in), B (out×rank)"
    reads_weight = True  # the norm is of the weight it sits on: W' when stacked on other adapters

    def __init__(self, base: nn.Linear, config: DoraConfig):
        super().__init__(base, config)
        self.magnitude = nn.Parameter(torch.empty(self.out_features, **self.factory))

    def init_from_weight(self, weight: torch.Tensor) -> None:
        self.magnitude.data.copy_(torch.linalg.vector_norm(weight.float(), dim=1))

    def _gain(self, weight: torch.Tensor) -> torch.Tensor:
        direction = weight.to(self.lora_A.dtype) + self.delta_weight()
        return self.magnitude / torch.linalg.vector_norm(direction, dim=1).detach()

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        x = x.to(self.lora_A.dtype)
        gain = self._gain(layer.weight)
        w_x = base_out if layer.bias is None else base_out - layer.bias  # W' x, W' the weight below
        lora = lora_delta(self.dropout(x), self.lora_A, self.lora_B, self.scale)
        return base_out + ((gain - 1) * w_x + gain * lora).to(base_out.dtype)

    def merged_weight(self, weight: torch.Tensor) -> torch.Tensor:
        direction = weight.to(self.lora_A.dtype) + self.delta_weight()
        return (self._gain(weight)[:, None] * direction).to(weight.dtype)

    def delta_weight(self) -> torch.Tensor:
        # ΔW of the LoRA direction only; the full merged update is merged_weight(W) - W.
        return super().delta_weight()
