"""Ladder Residual (Zhang, Mishra, Zhou, Brandon, Wang, Kim, Ragan-Kelley, Song, Athiwaratkun, Dao,
"Ladder-residual: parallelism-aware architecture for accelerating large model inference with
communication overlapping", ICML 2025).

Each module's output joins the residual stream one module later:

    r ← r + a_{i−1};   a_i = Attn(Norm₁(r));   r ← r + m_{i−1};   m_i = MLP(Norm₂(r))
    after the last block: r ← r + a_L + m_L

so a_i does not depend on m_{i−1}, nor m_i on a_i. Under tensor parallelism each module's output is a
partial sum that needs an all-reduce; here that all-reduce has a whole module's compute to finish behind
before anything reads it (rankwise.arch.tensor_parallel). No new parameters, no new FLOPs.

Trains: nothing of its own; the model's weights as they are. Converting the upper k blocks of a
pretrained model (upper=k) is the paper's "convert, then recover with a short fine-tune" path; the
blocks below keep the standard residual. The paper's optional output scale (m_residual) is left out:
it is 1 in the released models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .base import ARCHS, ArchConfig, StreamBlock

Module = Callable[[torch.Tensor], torch.Tensor]


def ladder_step(r: torch.Tensor, pending: tuple[torch.Tensor, torch.Tensor] | None, attention: Module,
                feed_forward: Module, delay: bool = True):
    """One block: (the stream r, (a_i, m_i) still to add). delay=False adds each output at once, which is
    the standard pre-norm block (then nothing is pending)."""
    if pending is not None:
        r = r + pending[0]
    attended = attention(r)
    if not delay:
        r = r + attended
    if pending is not None:
        r = r + pending[1]
    fed = feed_forward(r)
    if not delay:
        return r + fed, None
    return r, (attended, fed)


@dataclass
class LadderConfig(ArchConfig):
    """upper: convert only the upper k blocks (None: all of them, for training from scratch)."""

    upper: int | None = None

    invalid = ({"upper": 0},)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.upper is not None and (not isinstance(self.upper, int) or isinstance(self.upper, bool)
                                       or self.upper < 1):
            raise ConfigError(f"upper must be a positive number of blocks (or null for all), got "
                              f"{self.upper!r}.")

    def check_depth(self, depth: int) -> None:
        if self.upper is not None and self.upper > depth:
            raise ConfigError(f"upper={self.upper} is more than the model's {depth} blocks; give at most "
                              f"{depth} (or leave it unset to convert every block).")


@ARCHS.register_class("ladder")
class Ladder(StreamBlock):
    config_class = LadderConfig
    paper = "Zhang et al., Ladder-residual: parallelism-aware architecture (ICML 2025)"

    @property
    def first(self) -> int:
        """The index of the first converted block."""
        return self.depth - (self.config.upper or self.depth)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.index < self.first:
            return self.base(hidden_states, **kwargs)
        pending = self.stream.pending if self.index > self.first else None
        attention = lambda h: self.attention(h, kwargs)  # noqa: E731
        r, outputs = ladder_step(hidden_states, pending, attention, self.feed_forward)
        if self.index == self.depth - 1:
            self.stream.pending = None
            return r + outputs[0] + outputs[1]
        self.stream.pending = outputs
        return r
