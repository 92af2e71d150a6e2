"""rsLoRA: A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA (Kalajdzievski, 2023,
arXiv 2312.03732).

Update rule: LoRA with the scaling changed so learning does not collapse as the rank grows,
    y = W x + b + s · B A dropout(x),   s = alpha / √rank
Trains A and B (same init as LoRA). Merges as W ← W + s B A. Saved to PEFT as use_rslora=True.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .base import AdapterConfig, register
from .lora import Lora, LoraConfig


@dataclass
class RsLoraConfig(LoraConfig):
    pass


@register("rslora")
class RsLora(Lora):
    config_class = RsLoraConfig
    paper = "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA"
    url = "https://arxiv.org/abs/2312.03732"

    @staticmethod
    def scaling(config: AdapterConfig) -> float:
        return config.alpha / math.sqrt(config.rank)
