"""ALLoRA: Adaptive Learning Rate Mitigates LoRA Fatal Flaws (Huang & Balestriero, arXiv 2410.09692).

Update rule: LoRA without dropout and without scaling, trained with a per-row learning rate that
shrinks as the row grows,
    y = W x + b + B A x                          (s = 1; A Kaiming-uniform, B = 0 as LoRA)
    θ ← θ + c(θ) · Δθ,   c(θ) = 1 / sqrt(‖θ‖₂² + 1/η²)   for every row θ of A (rank, in) and of B (out, rank)
where Δθ is the optimizer's own update and θ, ‖θ‖ are taken before the step. So a row near zero
(B at init) moves with rate η·lr (fast escape from 0) and a large row with rate lr/‖θ‖. Trains A and B.
Merges as W ← W + B A. It has no alpha and no dropout (the method removes both).

How it is applied, and why: the rule is a learning rate, and must stay one under Adam. Scaling the
gradient (a hook) would be undone by Adam's per-coordinate normalisation, and param_groups carry one
fixed rate per tensor, not per row and not per step. So every training forward keeps a copy of A and B
(adapter-sized), and after_step rescales the step just taken: θ ← θ_old + c(θ_old)·(θ_new − θ_old).
For SGD, momentum SGD, Adam and AdamW (updates linear in lr, states independent of lr) this is exactly
a per-row learning rate lr·c(θ_old), decoupled weight decay included. Without after_step calls the
layer trains as plain LoRA with s = 1.

The paper is read from its abstract ("scaling the per sample and per parameter gradients with a
coefficient inversely proportional to parameters' ℓ2 norm"); the exact form above, the row grouping
and η are assumptions (no public code). `norm_over="tensor"` uses one norm per matrix instead of per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .base import AdapterConfig, RankField, StepContext, register
from .lora import Lora


@dataclass
class AlloraConfig(RankField):
    eta: float = 1.0  # rate multiplier at θ = 0 (c(0) = η); c ≈ 1/‖θ‖ once ‖θ‖ ≫ 1/η
    norm_over: str = "row"  # "row": one norm per row of A and B; "tensor": one per matrix

    invalid = ({"eta": 0.0}, {"norm_over": "column"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta <= 0:
            raise ConfigError(f"eta must be positive, got {self.eta!r}.")
        if self.norm_over not in ("row", "tensor"):
            raise ConfigError(f"norm_over must be 'row' or 'tensor', got {self.norm_over!r}.")


def norm_rate(theta: torch.Tensor, eta: float, per_row: bool = True) -> torch.Tensor:
    """c(θ) = 1 / sqrt(‖θ‖² + 1/η²), per row (shape (rows, 1)) or for the whole tensor."""
    squared = theta.pow(2).sum(dim=1, keepdim=True) if per_row else theta.pow(2).sum()
    return torch.rsqrt(squared + 1.0 / eta**2)


@register("allora")
class Allora(Lora):
    config_class = AlloraConfig
    paper = "ALLoRA: Adaptive Learning Rate Mitigates LoRA Fatal Flaws"
    url = "https://arxiv.org/abs/2410.09692"
    trains = "A (rank×in), B (out×rank), each row with learning rate ∝ 1/sqrt(‖row‖² + 1/η²)"

    def __init__(self, base: nn.Linear, config: AlloraConfig):
        super().__init__(base, config)
        self._before: list[torch.Tensor] | None = None  # A and B when the step's gradient was taken

    @staticmethod
    def scaling(config: AdapterConfig) -> float:
        return 1.0

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        if torch.is_grad_enabled() and self.lora_A.requires_grad:
            self._before = [self.lora_A.detach().clone(), self.lora_B.detach().clone()]
        return super().forward(x, base_out, layer)

    @torch.no_grad()
    def after_step(self, context: StepContext) -> None:
        if self._before is None:
            return
        per_row = self.config.norm_over == "row"
        for param, old in zip((self.lora_A, self.lora_B), self._before):
            param.copy_(old + norm_rate(old, self.config.eta, per_row) * (param - old))
        self._before = None
