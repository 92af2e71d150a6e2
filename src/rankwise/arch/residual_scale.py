"""Depth-scaled residual branches, from "On residual network depth" (Dherin & Munn, Google, arXiv
2510.03470, 2025).

A stack x_{k+1} = x_k + λ f_k(x_k), k = 1..n, expands into a sum over computation paths (subsets of
active branches): for linear branches f_k = A_k the output is Π_k (I + λ A_k) x, with C(n, j) paths of
j branches. With ‖A_k‖ ≈ c the output norm grows like (1 + λc)^n, the reason deep residual networks
needed normalization; λ = 1/n bounds it by e^c and λ = 1/√n sits between.

On a transformer each attention and each MLP branch is one of the n = 2L branches:

    h ← h + λ Attn(Norm₁(h));   h ← h + λ MLP(Norm₂(h))          (normalize=True)
    h ← h + λ Attn(h);          h ← h + λ MLP(h)                  (normalize=False: the paper's
                                                                    normalization-free setting)

The model's final norm before the head is kept either way: it is not on the residual stream.
Trains: nothing of its own; λ is fixed by the depth. Removing the block norms of a pretrained model
breaks it (its weights expect normalized inputs); normalize=False is for training from scratch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .base import ARCHS, ArchConfig, StreamBlock

SCALES = {"1": lambda n: 1.0, "1/sqrt(n)": lambda n: 1 / math.sqrt(n), "1/n": lambda n: 1 / n}


def branch_scale(scale: str | float, branches: int) -> float:
    """λ for a stack of `branches` residual branches: "1", "1/sqrt(n)", "1/n", or a positive number."""
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ConfigError(f"scale {scale!r} is not one of {', '.join(SCALES)} (or a positive number).")
        return SCALES[scale](branches)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ConfigError(f"scale must be one of {', '.join(SCALES)} or a positive number, got {scale!r}.")
    return float(scale)


def scaled_residual(x: torch.Tensor, branches: Sequence[Callable[[torch.Tensor], torch.Tensor]],
                    scale: float) -> torch.Tensor:
    """x after x ← x + scale · f(x) for each branch f in order."""
    for branch in branches:
        x = x + scale * branch(x)
    return x


@dataclass
class ResidualScaleConfig(ArchConfig):
    """scale: λ, as "1", "1/sqrt(n)", "1/n" (n = 2 × blocks) or a number; normalize: keep the block norms."""

    scale: str | float = "1/n"
    normalize: bool = True

    invalid = ({"scale": "1/m"}, {"scale": 0}, {"normalize": "no"})

    def __post_init__(self) -> None:
        super().__post_init__()
        branch_scale(self.scale, 1)
        if not isinstance(self.normalize, bool):
            raise ConfigError(f"normalize must be true or false, got {self.normalize!r}.")


@ARCHS.register_class("residual-scale")
class ResidualScale(StreamBlock):
    config_class = ResidualScaleConfig
    paper = "Dherin & Munn, On residual network depth (2025)"
    url = "https://arxiv.org/abs/2510.03470"

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        scale, normalize = branch_scale(self.config.scale, 2 * self.depth), self.config.normalize
        return scaled_residual(hidden_states, [lambda h: self.attention(h, kwargs, normalize),
                                               lambda h: self.feed_forward(h, normalize)], scale)
