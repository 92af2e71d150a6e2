"""Attention Residuals: Full and Block AttnRes (Kimi team, Moonshot AI, "Attention Residuals", arXiv
2603.15031, 2026).

A pre-norm stack sums every sublayer output with weight one, h_l = v_0 + Σ_{i<l} v_i, so the stream's
norm grows with depth and each layer's share of it shrinks. AttnRes makes each sublayer's input a
softmax mix of the earlier outputs instead:

    h_l = Σ_{i<l} α_{i→l} v_i,    α_{i→l} = softmax_i( w_lᵀ RMSNorm(v_i) ),

with v_0 the token embedding and v_i the output of sublayer i (attention and MLP each count). w_l ∈ R^d
is a learned pseudo-query, one per sublayer, initialised to zero so every mix starts as the plain mean;
the keys' RMSNorm has its own gain. No 1/√d scale (the official pseudocode has none).
Block AttnRes groups the layers into N blocks of S = L/N layers: inside a block the outputs add up as a
running `partial` sum, and the mix runs over the completed blocks b_0 = v_0, b_1, ... plus that partial,
following the official pseudocode (the boundary falls at every S-th layer, before its attention).

Trains: the pseudo-queries w and the key-norm gains (2d per sublayer), with the whole model (this is an
architecture for pre-training, not an adapter).

Where we differ, and why: the paper gives each sublayer a query for its own input. Here a block computes
the input of the *next* block's attention at its end (its `exit_query`) and returns it as its hidden
state, so Hugging Face's layer loop, hidden-state outputs and `analyze --residual` see the stream as the
next layer reads it. It is the same function with the same parameters, moved one block earlier; the
last block's exit mix is the model's output (before the final norm), a query the pseudocode leaves out.
The first attention reads v_0 alone, so it needs no query.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .base import ARCHS, ArchConfig, StreamBlock


def attend(sources: list[torch.Tensor], query: torch.Tensor, key_norm: nn.Module) -> torch.Tensor:
    """Σ_i softmax_i(queryᵀ key_norm(v_i)) v_i over `sources` (each (..., d)); the depth-wise attention."""
    values = torch.stack(sources)
    logits = key_norm(values) @ query
    return (logits.softmax(dim=0).unsqueeze(-1) * values).sum(dim=0)


class _AttnResBlock(StreamBlock):
    paper = "Kimi team, Attention Residuals (2026)"
    url = "https://arxiv.org/abs/2603.15031"

    def __init__(self, *args):
        super().__init__(*args)
        d = self.width
        # zero queries: uniform weights at init, the mean of the sources (the paper's initialisation)
        self.mlp_query = nn.Parameter(torch.zeros(d))
        self.exit_query = nn.Parameter(torch.zeros(d))
        self.mlp_key_norm = nn.RMSNorm(d, eps=1e-6)
        self.exit_key_norm = nn.RMSNorm(d, eps=1e-6)

    def mix(self, sources: list[torch.Tensor], which: str) -> torch.Tensor:
        return attend(sources, getattr(self, f"{which}_query"), getattr(self, f"{which}_key_norm"))

    def exit(self, sources: list[torch.Tensor]) -> torch.Tensor:
        """The next block's attention input; after the last block, the stream lets go of its tensors (they
        would otherwise stay alive, with their graph, until the next forward)."""
        mixed = self.mix(sources, "exit")
        if self.index == self.depth - 1:
            self.stream.sources, self.stream.partial = [], None
        return mixed


@ARCHS.register_class("attnres-full")
class FullAttnRes(_AttnResBlock):
    """Full AttnRes: every sublayer mixes all earlier sublayer outputs and the embedding."""

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        stream = self.stream
        if self.index == 0:
            stream.sources = [hidden_states]  # v_0: the embedding
        stream.sources.append(self.attention(hidden_states, kwargs))
        stream.sources.append(self.feed_forward(self.mix(stream.sources, "mlp")))
        return self.exit(stream.sources)


@dataclass
class BlockAttnResConfig(ArchConfig):
    """blocks: N, the number of groups of consecutive layers (it must divide the depth)."""

    blocks: int = 4

    invalid = ({"blocks": 0},)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.blocks, int) or isinstance(self.blocks, bool) or self.blocks < 1:
            raise ConfigError(f"blocks must be a positive integer, got {self.blocks!r}.")

    def check_depth(self, depth: int) -> None:
        if depth % self.blocks:
            divisors = [n for n in range(1, depth + 1) if depth % n == 0]
            raise ConfigError(f"blocks={self.blocks} does not divide the model's {depth} layers; use one of "
                              f"{divisors}.")


@ARCHS.register_class("attnres-block")
class BlockAttnRes(_AttnResBlock):
    """Block AttnRes: mixes the completed blocks and the current block's running sum."""

    config_class = BlockAttnResConfig

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        stream, per_block = self.stream, self.depth // self.config.blocks
        if self.index == 0:
            stream.sources, stream.partial = [hidden_states], None
        if self.index % per_block == 0 and stream.partial is not None:  # a block boundary
            stream.sources.append(stream.partial)
            stream.partial = None
        attended = self.attention(hidden_states, kwargs)
        stream.partial = attended if stream.partial is None else stream.partial + attended
        mlp_input = self.mix([*stream.sources, stream.partial], "mlp")
        stream.partial = stream.partial + self.feed_forward(mlp_input)
        return self.exit([*stream.sources, stream.partial])
