"""The merge methods' interface: one config, one registry, and each method a function of the base weights
and the inputs' updates (rankwise.merging.updates) that returns, per layer, a dense ΔW or exact factors.

A method's result is low-rank when every layer comes back as factors (B, A): the merge is then saved as
a LoRA adapter folder; otherwise the dense updates are added to the base weights and saved as a model
folder. Both load back with rankwise's loaders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .._registry import Registry
from ..errors import ConfigError
from .updates import TaskUpdate

LayerResult = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # a dense ΔW, or (B, A) with B A = ΔW


@dataclass
class MergeConfig:
    """weights: one per input (default 1 each); density: the kept share for ties/dare, in (0, 1];
    rank: the svd merge's rank, or RMM's basis size k; seed: DARE's masks; the rest are method options,
    each documented in its method's module (options: e.g. {"shared": True} for rmm)."""

    weights: list[float] | None = None
    density: float = 1.0
    rank: int | None = None
    seed: int = 0
    consensus: str = "sum"
    variant: str = "G"
    residual: str = "ta"
    scale: float | None = None
    options: dict = field(default_factory=dict)

    def weights_for(self, count: int) -> list[float]:
        weights = [1.0] * count if self.weights is None else list(self.weights)
        if len(weights) != count:
            raise ConfigError(f"{len(weights)} weights for {count} inputs; give one weight per input, in the "
                              "inputs' order.")
        return [float(w) for w in weights]

    def check(self) -> None:
        if isinstance(self.density, bool) or not isinstance(self.density, (int, float)) \
                or not 0 < self.density <= 1:
            raise ConfigError(f"density must be in (0, 1] (the share of each update kept), got "
                              f"{self.density!r}.")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int)
                                      or self.rank < 1):
            raise ConfigError(f"rank must be a positive integer, got {self.rank!r}.")


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge: `run(base_weights, updates, config) -> {path: LayerResult}`."""

    name: str
    paper: str
    url: str
    run: Callable[[dict[str, torch.Tensor], list[TaskUpdate], MergeConfig], dict]
    needs_low_rank: bool = False  # refuses inputs that are not plain low-rank (cat, rmm)
    result: str = "update"  # "update": {path: LayerResult}; "basis": RMM's stored basis, reverted per task


MERGERS: Registry[MergeMethod] = Registry("merge method")


def register(name: str, paper: str, url: str = "", needs_low_rank: bool = False, result: str = "update"):
    """@register("ties", paper, url): a merge function becomes a registered MergeMethod."""

    def add(run):
        MERGERS.register(name)(MergeMethod(name, paper, url, run, needs_low_rank, result))
        return run

    return add


def union_paths(updates: list[TaskUpdate]) -> list[str]:
    """Every layer any input changes, in the first input's order then the others' (a layer an input
    leaves alone counts as a zero update there)."""
    seen: dict[str, None] = {}
    for update in updates:
        seen.update(dict.fromkeys(update.paths))
    return list(seen)


def deltas_at(path: str, updates: list[TaskUpdate], base: torch.Tensor) -> list[torch.Tensor]:
    """Every input's dense ΔW of one layer (zeros where an input leaves it alone)."""
    deltas = [u.delta(path) for u in updates]
    return [torch.zeros_like(base, dtype=torch.float32) if d is None else d for d in deltas]
