"""The wrappers every adapter method lives in.

AdaptedModule owns a frozen base module and a dict of named adapters. Its forward is
    y = base(x, ...), then y = adapter(x, y, base) for each active, unmerged adapter.
AdaptedLinear is the nn.Linear case (almost every method): it keeps nn.Linear's attributes and can
merge. Merging writes merged_weight(W) into the base and keeps the exact pre-merge weight, so unmerge
restores it bit for bit rather than subtracting ΔW back in floating point.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Adapter


class AdaptedModule(nn.Module):
    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.adapters = nn.ModuleDict()
        self.active: list[str] = []
        self.merged: list[str] = []
        self.disabled = False

    def forward(self, *args, **kwargs):
        out = self.base(*args, **kwargs)
        if self.disabled:
            return out
        # The block's main input: transformers calls some modules with keywords only (hidden_states=).
        x = args[0] if args else next(iter(kwargs.values()))
        for name in self.active:
            if name not in self.merged:
                out = self.adapters[name](x, out, self.base)
        return out

    def remove(self, name: str) -> Adapter:
        self.unmerge()
        self.active = [n for n in self.active if n != name]
        return self.adapters.pop(name)

    def merge(self, names: list[str]) -> None:
        for name in names:
            self.adapters[name].delta_weight()  # raises NotMergeable: only linear layers merge

    def unmerge(self) -> None:
        self.merged = []

    def extra_repr(self) -> str:
        return f"active={self.active}, merged={self.merged}, disabled={self.disabled}"


class AdaptedLinear(AdaptedModule):
    def __init__(self, base: nn.Linear):
        super().__init__(base)
        self._unmerged_weight: torch.Tensor | None = None

    # nn.Linear's public attributes, so code that inspects layers keeps working
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.disabled:
            return out
        for name in self.active:
            if name not in self.merged:
                out = self.adapters[name](x, out, self.base)
        return out

    @torch.no_grad()
    def merge(self, names: list[str]) -> None:
        for name in names:
            if name in self.merged:
                continue
            merged = self.adapters[name].merged_weight(self.base.weight.data)
            if self._unmerged_weight is None:
                self._unmerged_weight = self.base.weight.detach().clone()
            self.base.weight.data = merged
            self.merged.append(name)

    @torch.no_grad()
    def unmerge(self) -> None:
        if self._unmerged_weight is not None:
            self.base.weight.data = self._unmerged_weight
        self._unmerged_weight = None
        self.merged = []
