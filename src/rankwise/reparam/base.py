"""The parameterization family's interface: a config, a trainable factorized layer, and a factory per method.

A parameterization replaces a layer's dense weight W by trainable factors, for training from scratch
(the layer's current weight is only a standard initialisation) or for continued training:
    plan   = rankwise.surgery.make_plan(model, config)            # {path: that layer's config}
    module = Reparametrizer.build(layer, layer_config, generator)  # the factory (may read layer.weight)
    empty  = Reparametrizer.shape(layer, layer_config)             # the same structure, for loading
The low-rank(+sparse) methods (lowrank, sltrain, lost) build a FactorizedLinear,
    y = s · B (A x) + S x + b,      A (r, in), B (out, r), s = the method's scale, S its sparse part,
computed on activations: the low-rank product B A is never formed in a forward. A, B, b and S's values
are nn.Parameters (they train); where a sparse part's support is fixed (SLTrain's random positions,
LOST's channels) the support is an integer buffer, saved with the model and never updated.
`weight` (rankwise.surgery.CompressedLinear) is the dense W = s · B A + S, for analyzers and adapters'
inits; it is rebuilt on each access and never trained.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from .._registry import Registry
from ..errors import ConfigError
from ..surgery import LowRankLinear, PlanConfig


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass
class ReparamConfig(PlanConfig):
    """Which layers (targets, exclude, layers_to_transform: rankwise.surgery.PlanConfig), the rank r of
    every layer's B A (per layer through rank_pattern, PEFT's rule), and the seed of every random draw."""

    rank: int | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    seed: int = 0  # random factors and supports are drawn from this seed, in plan order

    invalid = ({"rank": 0}, {"rank": 4, "rank_pattern": {"q_proj": 0}}, {"rank": 4, "seed": -1})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _is_positive_int(self.rank):
            raise ConfigError(f"rank must be a positive integer (the rank of B A in every layer), "
                              f"got {self.rank!r}.")
        ranks = self.rank_pattern.values() if isinstance(self.rank_pattern, dict) else [None]
        if not all(_is_positive_int(r) for r in ranks):
            raise ConfigError(f"rank_pattern must map regexes to positive integers, "
                              f"got {self.rank_pattern!r}.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}.")

    def rank_for(self, layer: nn.Linear) -> int:
        out, inp = layer.out_features, layer.in_features
        if self.rank > min(out, inp):
            raise ConfigError(f"rank {self.rank} exceeds min(out, in) = {min(out, inp)} of this "
                              f"({out}, {inp}) layer; lower the rank or exclude the layer.")
        return self.rank


def check_alpha(alpha) -> None:
    """The α of a scale α / r must be a positive number."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ConfigError(f"alpha must be a positive number (B A is scaled by alpha / rank), got {alpha!r}.")


def check_density(density) -> None:
    """A sparse part's share of entries (or channels) must be a number strictly between 0 and 1."""
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density < 1:
        raise ConfigError(f"density must be in (0, 1) (the share of the weight the sparse part holds), "
                          f"got {density!r}.")


class FactorizedLinear(LowRankLinear):
    """y = scale · B (A x) + S x + b: a trainable LowRankLinear with an optional sparse part.

    Subclasses with a sparse part override add_sparse (adds S x to the low-rank output, on activations)
    and sparse_weight (S as a dense matrix, for dense_weight only)."""

    def add_sparse(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return out

    def sparse_weight(self) -> torch.Tensor | None:
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_sparse(super().forward(x), x)

    def dense_weight(self) -> torch.Tensor:
        sparse = self.sparse_weight()
        return super().dense_weight() if sparse is None else super().dense_weight() + sparse


def round_generator(seed: int, round_number: int, path: str) -> torch.Generator:
    """A CPU generator that is a pure function of (seed, round, the layer's path in the model), for the
    draws a schedule makes during training (SST's resampling, ReLoRA's restarts): resumed and
    data-parallel runs draw the same, whatever the global RNG holds."""
    digest = hashlib.blake2b(f"{seed}/{round_number}/{path}".encode(), digest_size=8).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest, "little"))


def kaiming_uniform(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """nn.Linear's default init, kaiming_uniform(a=√5) = U(−1/√fan_in, 1/√fan_in), fan_in = shape[1]."""
    bound = shape[1] ** -0.5
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


class Reparametrizer:
    """One parameterization: its config class and its factory; registered with @register."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[ReparamConfig]] = ReparamConfig
    paper: ClassVar[str] = ""
    url: ClassVar[str] = ""

    @classmethod
    def shape(cls, layer: nn.Linear, config: ReparamConfig) -> FactorizedLinear:
        raise NotImplementedError

    @classmethod
    def build(cls, layer: nn.Linear, config: ReparamConfig, generator: torch.Generator) -> FactorizedLinear:
        """The initialised module; `generator` (CPU, seeded with config.seed) draws every random tensor."""
        raise NotImplementedError


REPARAMS: Registry[type[Reparametrizer]] = Registry("parameterization")


register = REPARAMS.register_class  # @register("name"): name == file name == cls.name
