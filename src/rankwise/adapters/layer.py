"""The wrappers every adapter method lives in.

AdaptedModule owns a frozen base module and a dict of named adapters. Its forward is
    y = base(x, ...), then y = adapter(x, y, layer) for each active, unmerged adapter, in order.
AdaptedLinear is the nn.Linear case (almost every method): it keeps nn.Linear's attributes. Any wrapped
module with a weight can merge: merging writes merged_weight(W) into the base and keeps the exact
pre-merge weight, so unmerge restores it bit for bit rather than subtracting ΔW back in floating point.

Stacking is exact: adapter k's update is merged_weight_k(W_{k-1}) - W_{k-1}, where W_{k-1} is the weight
with adapters 1..k-1 folded in. Additive methods do not care what W is; a method that reads the weight
(DoRA normalises W + ΔW) is handed a view whose .weight is W_{k-1}, so the unmerged forward equals the
forward after merging them all in order.

While a mixed batch runs (rankwise.adapters.mixed), `routing` replaces the active list: each row of the
batch goes through its own adapter (or none), on top of one base output for the whole batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..surgery import CompressedLinear, Wrapper
from ._requantize import merge_compressed, restore_compressed
from .base import Adapter


class LinearView(NamedTuple):
    """The .weight and .bias an adapter stacked on others sits on (earlier adapters folded in)."""

    weight: torch.Tensor
    bias: torch.Tensor | None


class AdaptedModule(Wrapper):
    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.adapters = nn.ModuleDict()
        self.active: list[str] = []
        self.merged: list[str] = []
        self.disabled = False
        self._unmerged_weight: torch.Tensor | None = None
        self._unmerged_state: dict | None = None  # a compressed base's stored tensors before a merge
        self.routing = None  # a rankwise.adapters.mixed.Routing while a mixed batch runs: one adapter per row

    def base_is_modified(self) -> bool:
        return bool(self.merged)

    def pending(self) -> list[Adapter]:
        """The adapters the forward applies: active and not merged, in order."""
        return [] if self.disabled else [self.adapters[n] for n in self.active if n not in self.merged]

    def forward(self, *args, **kwargs):
        out = self.base(*args, **kwargs)
        # The block's main input: transformers calls some modules with keywords only (hidden_states=).
        x = args[0] if args else next(iter(kwargs.values()))
        if self.routing is not None:
            return self.routing.apply(self, x, out)
        return self.apply_pending(x, out)

    def apply_pending(self, x: torch.Tensor, out):
        """out after each pending adapter in order; one that reads the weight sees W with those before it
        folded in (a LinearView), formed only when it is needed."""
        pending = self.pending()
        weight = None
        for index, adapter in enumerate(pending):
            stacked = adapter.reads_weight and weight is not None
            below = LinearView(weight, getattr(self.base, "bias", None)) if stacked else self.base
            out = adapter(x, out, below)
            if any(later.reads_weight for later in pending[index + 1:]):
                weight = adapter.merged_weight(self.base.weight if weight is None else weight)
        return out

    def remove(self, name: str) -> Adapter:
        self.unmerge()
        self.active = [n for n in self.active if n != name]
        return self.adapters.pop(name)

    @torch.no_grad()
    def merge(self, names: list[str]) -> None:
        """Write merged_weight(W) of each adapter, in order, into the base's weight (a compressed base
        re-stores it, e.g. requantizes: rankwise.adapters._requantize)."""
        if isinstance(self.base, CompressedLinear):
            return merge_compressed(self, names)
        for name in names:
            if name in self.merged:
                continue
            if not isinstance(getattr(self.base, "weight", None), nn.Parameter):
                self.adapters[name].delta_weight()  # raises NotMergeable: a block has no weight to fold into
            merged = self.adapters[name].merged_weight(self.base.weight.data)
            if self._unmerged_weight is None:
                self._unmerged_weight = self.base.weight.detach().clone()
            self.base.weight.data = merged
            self.merged.append(name)

    @torch.no_grad()
    def unmerge(self) -> None:
        if isinstance(self.base, CompressedLinear):
            restore_compressed(self)
        elif self._unmerged_weight is not None:
            self.base.weight.data = self._unmerged_weight
        self._unmerged_weight = None
        self.merged = []

    def original_weight(self) -> torch.Tensor | None:
        if self._unmerged_weight is not None:
            return self._unmerged_weight
        return getattr(self.base, "weight", None)

    def keep_merged(self) -> None:
        """Make the merged weight the base for good: unmerge no longer restores the old one."""
        self._unmerged_weight, self._unmerged_state, self.merged = None, None, []

    def extra_repr(self) -> str:
        return f"active={self.active}, merged={self.merged}, disabled={self.disabled}"


class AdaptedLinear(AdaptedModule):
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
        if self.routing is not None:
            return self.routing.apply(self, x, out)
        return self.apply_pending(x, out)
