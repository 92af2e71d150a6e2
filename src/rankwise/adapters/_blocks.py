"""Shared pieces of block-level adapters (AdapterTune, LoRRA): they wrap a whole transformer block
rather than one nn.Linear, and their non-linear branches cannot be merged."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from .base import Adapter


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


# What pre-norm blocks call the norm their attention reads through: Llama / Mistral / Qwen2, GPT-2,
# transformers' ViT, timm's ViT.
INPUT_NORM_NAMES = ("input_layernorm", "ln_1", "layernorm_before", "norm1")


def input_norm(block: nn.Module) -> nn.Module | None:
    """The norm a pre-norm block applies to its input before attention; None for a post-norm block
    (BERT's), whose input is already the previous block's normalized output."""
    found = (getattr(block, name, None) for name in INPUT_NORM_NAMES)
    return next((norm for norm in found if isinstance(norm, nn.Module)), None)


def is_block(module: nn.Module) -> bool:
    return not isinstance(module, nn.Linear) and any(isinstance(m, nn.Linear) for m in module.modules())


def hidden_of(out: Any) -> torch.Tensor:
    """The hidden states of a block's output: the tensor itself, or the first element of a tuple."""
    return out[0] if isinstance(out, tuple) else out


def with_hidden(out: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *out[1:]) if isinstance(out, tuple) else hidden



class BlockAdapter(Adapter):
    """An Adapter that wraps a transformer block; in_features == out_features == the block's width."""

    mergeable: ClassVar[bool] = False
    wraps_what: ClassVar[str] = "whole transformer blocks (targets=\"all-blocks\" picks them)"

    @classmethod
    def can_wrap(cls, module: nn.Module) -> bool:
        return is_block(module)

    @classmethod
    def features(cls, base: nn.Module) -> tuple[int, int]:
        width = block_width(base)
        return width, width
