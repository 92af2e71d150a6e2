"""Full fine-tuning of the targeted layers, as a dense delta: the baseline every low-rank paper compares to.

Update rule, for a frozen W (out, in):
    y = W x + b + ΔW x,   ΔW (out, in) initialised to zeros
Trains ΔW, every entry of it. Merges as W ← W + ΔW.

Why a delta and not W itself: the run then goes through the same loop, schedule, checkpoints, files
and hooks as every adapter, so "LoRA vs full fine-tuning" comparisons (e.g. the intruder-dimension
experiment of "LoRA vs Full Fine-tuning: An Illusion of Equivalence", bench/intruders_demo.py) differ
in the parameterisation only. Gradients w.r.t. ΔW equal those w.r.t. W, and Adam moves ΔW exactly as it
would move W, so with weight_decay = 0 (rankwise's default) this *is* full fine-tuning of those layers.
With weight decay > 0 the decay pulls W + ΔW towards W rather than towards 0 (L2-SP style).

Learning rate (lr_scale = 0.1): every weight moves at every step, so full fine-tuning trains at about a
tenth of an adapter's rate, as PEFT's own method comparison does (full at 1e-5 against 1e-4 for the
adapters, MetaMathQA on Llama-3.2-3B). rankwise bench's first sweep on SmolLM2 at LoRA's grid agreed:
the loss kept falling toward its lowest rate, 3e-4.

It has no rank, alpha or dropout (ΔW has full rank); the forward pays one extra dense matmul per layer,
and ΔW costs as much memory as the layer's weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Adapter, AdapterConfig, register


@dataclass
class FullConfig(AdapterConfig):
    pass


@register("full")
class Full(Adapter):
    config_class = FullConfig
    paper = ("Full fine-tuning baseline (as compared against in LoRA vs Full Fine-tuning: "
             "An Illusion of Equivalence)")
    url = "https://arxiv.org/abs/2410.21228"
    trains = "ΔW (out×in), every entry"
    lr_scale = 0.1  # see the module docstring

    def __init__(self, base: nn.Linear, config: FullConfig):
        super().__init__(base, config)
        self.delta = nn.Parameter(torch.zeros(self.out_features, self.in_features, **self.factory))

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        return base_out + F.linear(x.to(self.delta.dtype), self.delta).to(base_out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return self.delta
