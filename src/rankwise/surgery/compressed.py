"""The common face of every compressed linear layer (factorized, quantized, pruned, binarized), so that
target search and the adapter family treat them as linear layers without importing the family that
made them: LoRA trains on a quantized or factorized base (QLoRA-style) through this interface."""

from __future__ import annotations

import torch
from torch import nn


class CompressedLinear(nn.Module):
    """y = Ŵ x + b for a Ŵ stored in some compact form; subclasses define dense_weight() and forward.

    `weight` is the dense reconstruction Ŵ, a plain tensor rebuilt on each access (never a
    Parameter): code that reads a linear layer's weight (an adapter's SVD init, DoRA's norm, the
    analyzers) sees Ŵ, while nothing can write into it by mistake. Merging an adapter into a compressed
    base is refused for the same reason.
    """

    in_features: int
    out_features: int
    bias: nn.Parameter | None

    def dense_weight(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def weight(self) -> torch.Tensor:
        with torch.no_grad():
            return self.dense_weight()

    def stored_bytes(self) -> int:
        """Bytes of what this layer stores (its parameters and buffers), for size reports."""
        return sum(t.numel() * t.element_size() for t in (*self.parameters(), *self.buffers()))

    def stored_values(self) -> int:
        """How many numbers this layer stores, a packed code or kept weight counting as one."""
        return sum(t.numel() for t in self.parameters())


def is_linear(module: nn.Module) -> bool:
    """An nn.Linear itself, or a compressed stand-in for one."""
    return type(module) is nn.Linear or isinstance(module, CompressedLinear)
