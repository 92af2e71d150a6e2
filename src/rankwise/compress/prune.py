"""Magnitude pruning, unstructured or n:m (2:4): the other base compression EoRA compensates.

Rule: keep the largest |w|, either the top (1 − sparsity) share over the whole matrix (unstructured),
or the n largest of every m consecutive inputs in a row (n:m, the pattern sparse tensor cores run).
    Ŵ = W ⊙ M
Stored as a packed 1-bit keep-mask and the kept values, so 50% sparsity costs 1/2 + 1/32 of float32
storage. Nothing trains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..errors import ConfigError
from ..linalg import magnitude_mask
from .base import CompressConfig, Compressor, register
from .compact import PrunedLinear


@dataclass
class SparsityField(CompressConfig):
    sparsity: float | None = None  # unstructured: the share of weights removed, in (0, 1)
    pattern: str | None = None  # "n:m", e.g. "2:4": keep n of every m consecutive inputs

    invalid: ClassVar[tuple[dict, ...]] = ({"sparsity": 1.0}, {"pattern": "4:2"}, {"pattern": "half"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sparsity is not None and not (type(self.sparsity) in (int, float) and 0 < self.sparsity < 1):
            raise ConfigError(f"sparsity must be in (0, 1), got {self.sparsity!r}.")
        if self.pattern is not None:
            n, m = self.n_m()
            if not 0 < n < m:
                raise ConfigError(f"pattern {self.pattern!r} must be n:m with 0 < n < m, such as 2:4.")
        if self.sparsity is not None and self.pattern is not None:
            raise ConfigError("give sparsity (unstructured) or pattern (n:m), not both.")

    @property
    def prunes(self) -> bool:
        return self.sparsity is not None or self.pattern is not None

    def n_m(self) -> tuple[int, int]:
        match = re.fullmatch(r"(\d+):(\d+)", self.pattern) if isinstance(self.pattern, str) else None
        if match is None:
            raise ConfigError(f"pattern must look like 2:4 (n:m), got {self.pattern!r}.")
        return int(match[1]), int(match[2])

    def keep_mask(self, layer: nn.Linear):
        if self.pattern is None:
            return magnitude_mask(layer.weight, self.sparsity)
        n, m = self.n_m()
        if layer.in_features % m:
            raise ConfigError(f"the {self.pattern} pattern needs in_features divisible by {m}, this layer "
                              f"has {layer.in_features}; exclude it.")
        return magnitude_mask(layer.weight, n=n, m=m)

    def kept(self, layer: nn.Linear) -> int:
        total = layer.in_features * layer.out_features
        if self.pattern is None:
            return total - int(round(self.sparsity * total))
        n, m = self.n_m()
        return total // m * n


def prune_layer(layer: nn.Linear, config: SparsityField, build: bool) -> PrunedLinear:
    module = PrunedLinear(layer, config.kept(layer))
    return module.prune(layer.weight, config.keep_mask(layer)) if build else module


@dataclass
class PruneConfig(SparsityField):
    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.prunes:
            raise ConfigError("prune needs sparsity=P (unstructured) or pattern='2:4'.")


@register("prune")
class Prune(Compressor):
    config_class = PruneConfig
    paper = "Magnitude pruning (Han et al., Learning both Weights and Connections), unstructured or n:m"
    url = "https://arxiv.org/abs/1506.02626"

    @classmethod
    def shape(cls, layer: nn.Linear, config: PruneConfig) -> PrunedLinear:
        return prune_layer(layer, config, build=False)

    @classmethod
    def build(cls, layer: nn.Linear, config: PruneConfig, stats=None) -> PrunedLinear:
        return prune_layer(layer, config, build=True)
