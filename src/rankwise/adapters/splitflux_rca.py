"""SplitFlux's Rank-Constrained Adaptation (RCA) — "SplitFlux: Learning to Decouple Content and Style
from a Single Image" (Yang et al., CVPR 2026, arXiv 2511.15258).

Update rule: LoRA with a per-layer rank and scale,
    y = W x + b + s_l · B_l A_l dropout(x),   s_l = alpha_l / r_l,
    A_l (r_l, in) Kaiming-uniform,  B_l (out, r_l) zeros
    (r_l, alpha_l) = the first `rank_pattern` / `alpha_pattern` entry whose regex matches a dotted suffix
    of the layer's path (PEFT's rule, e.g. "layers\\.30\\..*"), else (rank, alpha).
Trains A_l and B_l: Σ_l r_l · (in + out). Identity at init; merges as W ← W + s_l B_l A_l.

SplitFlux puts LoRA on FLUX's single-stream blocks and, at the content/style boundary (blocks 30-31 of
57, single_transformer_blocks.10-11 in diffusers), compresses the rank and amplifies the update, e.g.
rank_pattern={"single_transformer_blocks\\.1[01]\\..*": 4}, alpha_pattern={...: 64}.
The paper's exact values were not available to us (its code was not released when this was written),
so the defaults are plain LoRA. The patterns are rankwise's ordinary per-layer settings (every method
with a rank or alpha has them): rankwise.surgery.make_plan gives each layer its own config before the
adapters are built, so each layer is created at its own rank and saved with its own config.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import register
from .lora import Lora, LoraConfig


@dataclass
class SplitfluxRcaConfig(LoraConfig):
    pass


@register("splitflux-rca")
class SplitfluxRca(Lora):
    config_class = SplitfluxRcaConfig
    paper = "SplitFlux: Learning to Decouple Content and Style from a Single Image"
    url = "https://arxiv.org/abs/2511.15258"
    trains = "A (r_l×in), B (out×r_l) per layer, rank r_l and scale alpha_l/r_l from the patterns"
