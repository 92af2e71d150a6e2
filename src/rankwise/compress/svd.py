"""Truncated SVD: each weight replaced by its best rank-r approximation, stored as two factors.

Update rule, for W (out, in) with SVD U S Vᵀ:
    W ≈ B A,   B = U_r √S_r (out, r),   A = √S_r V_rᵀ (r, in)       (Eckart–Young: best in Frobenius norm)
    y = B (A x) + b
r is `rank`, or from `ratio`, the share of the layer's parameters kept: r = ⌊ratio · out · in / (out + in)⌋.
Per-layer ranks come from `rank_pattern` (regex → rank, PEFT's rule). Nothing trains; at r = min(out, in)
the layer is reproduced exactly (up to float rounding). The factors stay separate in memory and on disk.
This is the uniform-rank baseline the compression papers compare against (SVD-LLM, WeLore, EoRA).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from torch import nn

from ..errors import ConfigError
from ..surgery import pattern_value
from .base import CompressConfig, SvdCompressor, register


@dataclass
class SvdConfig(CompressConfig):
    rank: int | None = None  # the rank kept in every layer; or set ratio
    ratio: float | None = None  # share of each layer's parameters kept, in (0, 1)
    rank_pattern: dict[str, int] = field(default_factory=dict)
    svd_iters: int = 0  # 0: exact SVD; k > 0: randomized SVD with k power iterations

    invalid = ({"rank": 4, "ratio": 0.5}, {"ratio": 1.5}, {"rank": 0})

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.rank is None) == (self.ratio is None):
            raise ConfigError("svd takes exactly one of rank=R or ratio=P (the share of parameters kept).")
        if self.rank is not None and (not isinstance(self.rank, int) or isinstance(self.rank, bool)
                                      or self.rank < 1):
            raise ConfigError(f"rank must be a positive integer, got {self.rank!r}.")
        if self.ratio is not None and not (isinstance(self.ratio, (int, float)) and 0 < self.ratio < 1):
            raise ConfigError(f"ratio must be in (0, 1), got {self.ratio!r}.")
        ranks = self.rank_pattern.values() if isinstance(self.rank_pattern, dict) else [None]
        if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
            raise ConfigError(f"rank_pattern must map regexes to positive integers, "
                              f"got {self.rank_pattern!r}.")
        if not isinstance(self.svd_iters, int) or self.svd_iters < 0:
            raise ConfigError(f"svd_iters must be an integer >= 0, got {self.svd_iters!r}.")

    def for_layer(self, path: str) -> SvdConfig:
        rank = pattern_value(self.rank_pattern, path, None)
        return self if rank is None else dataclasses.replace(self, rank=rank, ratio=None)

    def rank_for(self, layer: nn.Linear) -> int:
        out, inp = layer.out_features, layer.in_features
        rank = self.rank if self.rank is not None else max(1, int(self.ratio * out * inp / (out + inp)))
        if rank > min(out, inp):
            raise ConfigError(f"rank {rank} exceeds min(out, in) = {min(out, inp)} of this ({out}, {inp}) "
                              "layer; lower the rank or exclude the layer.")
        return rank


@register("svd")
class Svd(SvdCompressor):
    config_class = SvdConfig
    paper = "Truncated SVD (Eckart–Young), the uniform baseline of low-rank compression"
    url = "https://doi.org/10.1007/BF02288367"
