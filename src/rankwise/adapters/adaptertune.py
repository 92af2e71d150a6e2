"""AdapterTune: Zero-Initialized Low-Rank Adapters for Frozen Vision Transformers
(Khazem, 2026, arXiv 2603.14706).

Update rule: one residual bottleneck after each transformer block, on the block's output h,
    h ← h + α · (W_up GELU(W_down dropout(h) + b_down) + b_up)
    W_down (rank, d): Xavier-uniform, b_down = 0;  W_up (d, rank) = 0, b_up = 0
so the adapted network starts exactly at the pretrained function. Trains W_down, b_down, W_up, b_up:
2·d·rank + rank + d per block. The GELU bottleneck is not linear, so it cannot be merged.

Follows the authors' code (salimkhazem/adaptertune, "ZILA"): α multiplies the whole adapter output
(α = 1, rank = 16 by default, not LoRA's α/r), `init="small"` is their ablation (W_up, b_up ~ N(0, 1e-4²)).
Their `every=k` option (an adapter every k-th block) is a choice of `targets`. They also train a new
classification head; rankwise trains only the adapters (unfreeze a head yourself if the task needs one).
Works on any block whose output is a tensor or a tuple whose first element is the hidden states
(transformers decoder and ViT layers, nn.TransformerEncoderLayer). dropout (0 in the code) is on h.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ._blocks import BlockAdapter, hidden_of, with_hidden
from .base import LowRankConfig, make_dropout, register


@dataclass
class AdapterTuneConfig(LowRankConfig):
    rank: int = 16
    alpha: float = 1.0  # plain multiplier of the adapter output
    targets: Any = "all-blocks"
    init: str = "zero"  # "zero" (the method) or "small" (the authors' ablation)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in ("zero", "small"):
            raise ConfigError(f"init must be 'zero' or 'small', got {self.init!r}.")


@register("adaptertune")
class AdapterTune(BlockAdapter):
    config_class = AdapterTuneConfig
    paper = "AdapterTune: Zero-Initialized Low-Rank Adapters for Frozen Vision Transformers"
    url = "https://arxiv.org/abs/2603.14706"
    trains = "W_down (rank×d) + b_down, W_up (d×rank) + b_up after each block: 2·d·rank + rank + d"

    def __init__(self, base: nn.Module, config: AdapterTuneConfig):
        super().__init__(base, config)
        self.down = nn.Linear(self.in_features, config.rank, **self.factory)
        self.up = nn.Linear(config.rank, self.out_features, **self.factory)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        if config.init == "zero":
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        else:
            nn.init.normal_(self.up.weight, std=1e-4)
            nn.init.normal_(self.up.bias, std=1e-4)
        self.dropout = make_dropout(config)
        self.alpha = config.alpha

    def forward(self, x: torch.Tensor, base_out: Any, layer: nn.Module) -> Any:
        hidden = hidden_of(base_out)
        h = self.dropout(hidden.to(self.down.weight.dtype))
        update = self.alpha * self.up(F.gelu(self.down(h)))
        return with_hidden(base_out, hidden + update.to(hidden.dtype))
