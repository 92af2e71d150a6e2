"""rsLoRA: A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA (Kalajdzievski, 2023,
arXiv 2312.03732).

Update rule: LoRA with the scaling changed so learning does not collapse as the rank grows,
    y = W x + b + s · B A dropout(x),   s = alpha / √rank
Trains A and B (same init as LoRA). Merges as W ← W + s B A. Saved to PEFT as use_rslora=True.
Only the scale differs from LoRA, so it adapts the same layer kinds (rankwise.adapters.layer_kinds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .base import AdapterConfig, register
from .layer_kinds import OTHER_KINDS
from .lora import Lora, LoraConfig


@dataclass
class RsLoraConfig(LoraConfig):
    pass


@register("rslora")
class RsLora(Lora):
    config_class = RsLoraConfig
    paper = "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA"
    url = "https://arxiv.org/abs/2312.03732"
    other_kinds = OTHER_KINDS

    @staticmethod
    def scaling(config: AdapterConfig) -> float:
        return config.alpha / math.sqrt(config.rank)
