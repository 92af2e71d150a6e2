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
from .base import Adapter, AdapterConfig, register


def block_width(block: nn.Module) -> int:
    """The hidden size a transformer block reads and writes."""
    for attr in ("hidden_size", "embed_dim", "d_model"):
        value = getattr(block, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"cannot tell the hidden size of a {type(block).__name__}: it has no nn.Linear.")
    return linears[-1].out_features  # a block's last projection writes back to the residual stream


def is_block(module: nn.Module) -> bool:
    return not isinstance(module, nn.Linear) and any(isinstance(m, nn.Linear) for m in module.modules())


def hidden_of(out: Any) -> torch.Tensor:
    """The hidden states of a block's output: the tensor itself, or the first element of a tuple."""
    return out[0] if isinstance(out, tuple) else out


def with_hidden(out: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *out[1:]) if isinstance(out, tuple) else hidden


@dataclass
class AdapterTuneConfig(AdapterConfig):
    rank: int = 16
    alpha: float = 1.0  # plain multiplier of the adapter output
    targets: Any = "all-blocks"
    init: str = "zero"  # "zero" (the method) or "small" (the authors' ablation)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in ("zero", "small"):
            raise ConfigError(f"init must be 'zero' or 'small', got {self.init!r}.")


@register("adaptertune")
class AdapterTune(Adapter):
    config_class = AdapterTuneConfig
    paper = "AdapterTune: Zero-Initialized Low-Rank Adapters for Frozen Vision Transformers"
    url = "https://arxiv.org/abs/2603.14706"
    trains = "W_down (rank×d) + b_down, W_up (d×rank) + b_up after each block: 2·d·rank + rank + d"
    mergeable = False
    wraps_what = "whole transformer blocks (targets=\"all-blocks\" picks them)"

    @classmethod
    def can_wrap(cls, module: nn.Module) -> bool:
        return is_block(module)

    @classmethod
    def features(cls, base: nn.Module) -> tuple[int, int]:
        width = block_width(base)
        return width, width

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
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.alpha = config.alpha

    def forward(self, x: torch.Tensor, base_out: Any, base: nn.Module) -> Any:
        hidden = hidden_of(base_out)
        h = self.dropout(hidden.to(self.down.weight.dtype))
        update = self.alpha * self.up(F.gelu(self.down(h)))
        return with_hidden(base_out, hidden + update.to(hidden.dtype))
