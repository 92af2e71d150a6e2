"""SplitFlux's Rank-Constrained Adaptation (RCA) — "SplitFlux: Learning to Decouple Content and Style
from a Single Image" (Yang et al., CVPR 2026, arXiv 2511.15258).

Update rule: LoRA with a per-layer rank and scale,
    y = W x + b + s_l · B_l A_l dropout(x),   A_l (r_l, in) Kaiming-uniform,  B_l (out, r_l) zeros,  s_l = alpha_l / r_l
    (r_l, alpha_l) = the first `rank_pattern` / `alpha_pattern` entry whose pattern matches the layer's
    path (a glob on the full name or on a name suffix, e.g. "layers.30.*"), else (rank, alpha).
Trains A_l and B_l: Σ_l r_l · (in + out). Identity at init; merges as W ← W + s_l B_l A_l.

SplitFlux puts LoRA on FLUX's single-stream blocks and, at the content/style boundary (blocks 30-31 of
57, single_transformer_blocks.10-11 in diffusers), compresses the rank and amplifies the update, e.g.
rank_pattern={"single_transformer_blocks.1[01].*": 4}, alpha_pattern={"single_transformer_blocks.1[01].*": 64}.
The paper's exact values were not available to us (its code was not released when this was written),
so the defaults are plain LoRA; the patterns follow PEFT's rank_pattern / alpha_pattern.

An adapter is built from (base layer, config) without its path, so each layer starts at the default
rank and gets its own rank when the patterns are resolved: by init_from_data, which both training loops
run before the first optimizer step, or by `apply_patterns(model)`. Resolving resizes the factors in
place (same Parameter objects, so an optimizer built earlier still holds them) and gives each layer a
config of its own, which rankwise's adapter files save per layer, so a loaded adapter is exact.
Training a layer whose patterns were never resolved raises.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from .api import layers_of
from .base import register
from .lora import Lora, LoraConfig


def pattern_value(path: str, pattern: dict, default):
    """The value of the first pattern that matches `path` (glob on the full name or on a suffix), else default."""
    for key, value in pattern.items():
        if path == key or fnmatch.fnmatchcase(path, key) or fnmatch.fnmatchcase(path, "*." + key):
            return value
    return default


@dataclass
class SplitfluxRcaConfig(LoraConfig):
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key, rank in self.rank_pattern.items():
            if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
                raise ConfigError(f"rank_pattern[{key!r}] must be a positive integer, got {rank!r}.")
        for key, alpha in self.alpha_pattern.items():
            if not isinstance(alpha, (int, float)) or alpha <= 0:
                raise ConfigError(f"alpha_pattern[{key!r}] must be a positive number, got {alpha!r}.")

    @property
    def has_patterns(self) -> bool:
        return bool(self.rank_pattern or self.alpha_pattern)

    def for_layer(self, path: str) -> "SplitfluxRcaConfig":
        """This layer's own config: its rank and alpha, no patterns left to resolve."""
        return dataclasses.replace(
            self, rank=pattern_value(path, self.rank_pattern, self.rank),
            alpha=pattern_value(path, self.alpha_pattern, self.alpha), rank_pattern={}, alpha_pattern={},
        )


@register("splitflux-rca")
class SplitfluxRca(Lora):
    config_class = SplitfluxRcaConfig
    paper = "SplitFlux: Learning to Decouple Content and Style from a Single Image"
    url = "https://arxiv.org/abs/2511.15258"
    trains = "A (r_l×in), B (out×r_l) per layer, rank r_l and scale alpha_l/r_l from the patterns"

    @torch.no_grad()
    def resolve(self, config: SplitfluxRcaConfig) -> None:
        """Take `config` (a layer's own, from for_layer) as this layer's rank and scale."""
        if config.rank > min(self.in_features, self.out_features):
            raise ConfigError(f"rank {config.rank} exceeds min(out, in) = {min(self.in_features, self.out_features)} "
                              f"of a ({self.out_features}, {self.in_features}) layer; lower the pattern's rank.")
        if config.rank != self.lora_A.shape[0]:
            A = torch.empty(config.rank, self.in_features, **self.factory)
            nn.init.kaiming_uniform_(A, a=math.sqrt(5))
            self.lora_A.data = A  # same Parameter object, new shape: optimizers built before still hold it
            self.lora_B.data = torch.zeros(self.out_features, config.rank, **self.factory)
        self.config, self.scale = config, self.scaling(config)

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, base: nn.Linear) -> torch.Tensor:
        if self.training and self.config.has_patterns:
            raise ConfigError("splitflux-rca: the rank/alpha patterns were not resolved; call "
                              "rankwise.adapters.splitflux_rca.apply_patterns(model) before training "
                              "(rankwise's training hooks do it in init_from_data).")
        return super().forward(x, base_out, base)

    @classmethod
    def init_from_data(cls, model: nn.Module, layers: dict, batches) -> None:
        for path, layer in layers.items():
            if layer.config.has_patterns:
                try:
                    layer.resolve(layer.config.for_layer(path))
                except ConfigError as err:
                    raise ConfigError(f"{path}: {err}") from None


def apply_patterns(model: nn.Module, name: str = "default") -> nn.Module:
    """Give every layer of adapter `name` its rank and scale from the config's patterns (before training)."""
    SplitfluxRca.init_from_data(model, layers_of(model, name), [])
    return model
