"""PGA: LumaFlux's physically-guided adaptation, a gated low-rank residual driven by cue maps (Saini,
Gedik, Birkbeck, Wang, Adsumilli, Bovik, "LumaFlux", arXiv 2604.02787, 2026).

LumaFlux keeps its diffusion transformer frozen and adds, on the attention projections, a low-rank
update that also reads per-token physical cues c (luminance, gradient and frequency descriptors of the
input image), behind a zero-initialised gate. Update rule:

    y = W x + b + g · s · B A [x ; c],     A (r, in + cue_features), B (out, r), s = alpha / rank

g is one scalar per layer, zero at init, so the frozen model is unchanged until g moves (A and B start
random, as the gradient reaching g is then s·⟨B A [x; c], ∂L/∂y⟩ ≠ 0). Cues are runtime inputs, set per
batch with `set_cues(model, cues)` ((batch, tokens, cue_features)); without cues the cue columns see
zeros and PGA is a gated LoRA. Cues stay set until the next `set_cues` (as a buffer of state, not
an input): call it before every batch, or a batch of the same shape silently reuses the last cues.
Trains: A, B and g. Not mergeable: the cue term changes with every input.
Where the paper is unclear (its body could not be read): the exact form is the notes' reading
ΔQ = g·B A [h; E(c)]; we take E as the identity on the given cue features (any learned cue embedding
can be put in front of `set_cues`) and one gate per layer rather than a timestep-dependent g(t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Adapter, LowRankConfig, make_dropout, register


@dataclass
class PgaConfig(LowRankConfig):
    """cue_features: the number of cue channels each token carries."""

    cue_features: int = 3

    invalid: ClassVar[tuple[dict, ...]] = ({"cue_features": 0},)

    def __post_init__(self) -> None:
        super().__post_init__()
        value = self.cue_features
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"cue_features must be a positive integer, got {self.cue_features!r}.")


@register("pga")
class Pga(Adapter):
    config_class = PgaConfig
    paper = "LumaFlux: physically-guided adaptation (gated low-rank residual on cue maps)"
    url = "https://arxiv.org/abs/2604.02787"
    trains = "A (r, in + cue_features) and B (out, r) of the gated update g·s·B A [x; cues], and the gate g"
    mergeable = False

    def __init__(self, base: nn.Module, config: PgaConfig):
        super().__init__(base, config)
        inputs = self.in_features + config.cue_features
        self.lora_A = nn.Parameter(torch.empty(config.rank, inputs, **self.factory))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, config.rank, **self.factory))
        for factor in (self.lora_A, self.lora_B):  # both random: the zero gate alone makes it the identity
            nn.init.kaiming_uniform_(factor, a=math.sqrt(5))
        self.gate = nn.Parameter(torch.zeros((), **self.factory))
        self.scale = config.alpha / config.rank
        self.dropout = make_dropout(config)
        self.cues: torch.Tensor | None = None  # a runtime input, never saved

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        features = self.config.cue_features
        if self.cues is None:
            cues = x.new_zeros(*x.shape[:-1], features)
        elif self.cues.shape[:-1] != x.shape[:-1] or self.cues.shape[-1] != features:
            raise ConfigError(f"the cues are shaped {tuple(self.cues.shape)}, but this layer's input needs "
                              f"{(*x.shape[:-1], features)}; set_cues(model, cues) for this batch.")
        else:
            cues = self.cues.to(x.dtype)
        joined = self.dropout(torch.cat([x.to(self.lora_A.dtype), cues.to(self.lora_A.dtype)], dim=-1))
        update = F.linear(F.linear(joined, self.lora_A), self.lora_B) * (self.gate * self.scale)
        return base_out + update.to(base_out.dtype)


def set_cues(model: nn.Module, cues: torch.Tensor | None, name: str = "default") -> None:
    """Give every PGA layer of adapter `name` the cue maps of the next batch (None: no cues)."""
    from .api import layers_of

    layers = [layer for layer in layers_of(model, name).values() if isinstance(layer, Pga)]
    if not layers:
        raise ConfigError(f"adapter {name!r} has no PGA layers; adapt(model, 'pga', ...) first.")
    for layer in layers:
        layer.cues = cues
