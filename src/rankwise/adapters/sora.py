"""SoRA: Sparse Low-Rank Adaptation of Pre-trained Language Models (Ding et al., EMNLP 2023,
arXiv 2311.11696).

Update rule, for a frozen W (out, in), with a gate vector g (rank,) between the factors:
    y = W x + b + s · B (g ⊙ A dropout(x)),   s = alpha / rank   (rank is the paper's r_max)
    after every optimizer step:   g ← sign(g) · max(|g| − ξ, 0)   (proximal step for ξ‖g‖₁)
A (rank, in): Kaiming-uniform (a = √5); B (out, rank): zeros; g ~ N(0, 1), as the authors' code (B = 0
already makes the model equal the base). Trains A, B and g; g gets no weight decay (the code trains it
with its own AdamW, weight decay 0). Merges as W ← W + s B diag(g) A. finalize() drops the ranks whose
gate is 0 and folds g into B, returning a plain `lora` adapter of rank nnz(g) with the same outputs.

Paper vs code, and what rankwise follows:
- Threshold. The paper's proximal step is T_{η·ξ} (step size times ξ); the released run_glue.py uses
  sparse_optimizer.py, whose threshold is the absolute ξ (the lr-scaled sparse_optimizer_multiply_lr.py
  is used by no script), and the published ξ values (3e-4; a ramp to 7e-4) were tuned for it. rankwise
  follows the code: absolute ξ. `threshold_times_lr=True` gives the paper's η·ξ, with η the scheduled
  learning rate the gate was just updated with (StepContext.lr_of).
- ℓ1 in the loss. The code also adds sparse_lambda · mean|g| (over all gates of the model) to the loss,
  on top of the proximal step that already realises the ℓ1 term. rankwise follows the paper (prox only);
  `l1_weight` > 0 adds l1_weight · ‖g‖₁ per layer (the code's sparse_lambda / total number of gates).
- Sparsifying scheduler (Alg. 1, the code's "linear" schedule): with `max_threshold` set, ξ steps
  through linspace(threshold, max_threshold, threshold_values), one value every steps_per_threshold steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ._gates import soft_threshold, stepped_ramp
from .base import Adapter, AdapterConfig, LowRankConfig, StepContext, make_dropout, register
from .lora import Lora, init_lora_factors


@dataclass
class SoraConfig(LowRankConfig):
    threshold: float = 3e-4  # ξ (the code's sparse_lambda_2; run_glue_sora_no_schedule.sh)
    threshold_times_lr: bool = False  # True: the paper's η·ξ instead of the code's absolute ξ
    l1_weight: float = 0.0  # extra l1_weight·‖g‖₁ in the loss (the code's loss term); 0 = paper
    max_threshold: float | None = None  # sparsifying scheduler: ramp ξ up to this value
    threshold_values: int = 1
    steps_per_threshold: int = 0

    invalid = ({"threshold": -1e-3}, {"l1_weight": -1.0})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.threshold < 0 or self.l1_weight < 0 or (self.max_threshold or 0) < 0:
            raise ConfigError("threshold, max_threshold and l1_weight must be >= 0.")


def gated_lora(
    x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, gate: torch.Tensor, scale: float
) -> torch.Tensor:
    """s · B (g ⊙ A x) on activations."""
    return F.linear(F.linear(x, A) * gate, B) * scale


@register("sora")
class Sora(Adapter):
    config_class = SoraConfig
    paper = "Sparse Low-rank Adaptation of Pre-trained Language Models"
    url = "https://arxiv.org/abs/2311.11696"
    trains = "A (rank×in), B (out×rank), gate g (rank), sparsified by a proximal step; pruned to a plain LoRA"

    def __init__(self, base: nn.Linear, config: AdapterConfig):
        super().__init__(base, config)
        self.lora_A = nn.Parameter(torch.empty(config.rank, self.in_features, **self.factory))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, config.rank, **self.factory))
        self.gate = nn.Parameter(torch.empty(config.rank, **self.factory))
        self.reset_factors()
        self.dropout = make_dropout(config)
        self.scale = self.scaling(config)

    @torch.no_grad()
    def reset_factors(self) -> None:
        init_lora_factors(self.lora_A, self.lora_B)
        self.gate.normal_()

    @staticmethod
    def scaling(config: AdapterConfig) -> float:
        return config.alpha / config.rank

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        x = self.dropout(x.to(self.lora_A.dtype))
        return base_out + gated_lora(x, self.lora_A, self.lora_B, self.gate, self.scale).to(base_out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B * self.gate) @ self.lora_A * self.scale

    def regularizer(self) -> torch.Tensor | None:
        return self.config.l1_weight * self.gate.abs().sum() if self.config.l1_weight > 0 else None

    def threshold_at(self, step: int, lr: float | None = None) -> float:
        """ξ after optimizer step `step`; times `lr` (the scheduled rate) with threshold_times_lr."""
        cfg = self.config
        xi = cfg.threshold
        if cfg.max_threshold is not None:
            xi = stepped_ramp(step, cfg.threshold, cfg.max_threshold,
                              cfg.threshold_values, cfg.steps_per_threshold)
        if cfg.threshold_times_lr:
            if lr is None:
                raise ConfigError("sora with threshold_times_lr needs the learning rate the gate was updated "
                                  "with: pass the optimizer in the StepContext given to after_step.")
            xi *= lr
        return xi

    @torch.no_grad()
    def after_step(self, context: StepContext) -> None:
        tau = self.threshold_at(context.step, context.lr_of(self.gate))
        if tau > 0:
            self.gate.copy_(soft_threshold(self.gate, tau))

    @torch.no_grad()
    def finalize(self) -> Lora:
        keep = self.gate != 0
        B = self.lora_B[:, keep] * self.gate[keep]
        return Lora.from_factors(self.lora_A[keep], B, self.scale, self.config)

    @classmethod
    def param_groups(cls, layers: dict[str, Adapter], lr: float) -> list[dict]:
        gates = [layer.gate for layer in layers.values() if layer.gate.requires_grad]
        others = [p for layer in layers.values() for n, p in layer.named_parameters()
                  if p.requires_grad and n != "gate"]
        return [{"params": others, "lr": lr}, {"params": gates, "lr": lr, "weight_decay": 0.0}]
