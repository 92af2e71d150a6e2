"""Wings' Low-Rank Residual Attention (LoRRA) learners — "Wings: Learning Multimodal LLMs without
Text-only Forgetting" (Zhang et al., NeurIPS 2024, arXiv 2406.03496).

Update rule, per adapted block with input h and output y (d = hidden size, H heads):
    learner_i(h) = U_o D_o · MultiHeadAttention(Q, K, V)
        Q = h + U_q D_q h,   K = f + U_k D_k f,   V = f + U_v D_v f      (identity + low-rank projections)
    w(h) = softmax(SiLU(R h))                                (router, one weight per learner and token)
    y ← y + Σ_i w_i(h) · learner_i(h)
    D_* (rank, d): truncated normal, std 0.02;  U_* (d, rank) = 0, so every learner outputs 0 at init.
Trains the learners' D_* and U_* and the router R: branches · 8·d·rank + (d + 1)·branches per block.
The learners are attention, so the update is not a weight delta and cannot be merged.

Where rankwise differs from Wings, and why:
- Feature streams. In Wings the visual learner attends over image features and the textual learner over
  the prompt's text embeddings. A text-only model has neither, so both streams collapse to the block
  input: f = h, and the learners (`branches` of them, 2 = visual + textual) differ only by their weights.
- Placement. Wings adds the learners after the attention residual, before the MLP. AdaptedModule sees
  a block's input and output only (transformers calls self-attention with keyword arguments, so it
  cannot be wrapped alone), so the learners run parallel to the whole block and add to its output.
- Learner input. The learners (and the router) read the block's input through the block's own input
  norm, as its attention does (`normalize_input`, on by default; post-norm blocks such as BERT's have
  none and read h as it is). Wings' queries are the raw residual stream, but its keys and values are
  feature streams at embedding scale. With f = h raw, SmolLM2's residual stream (whose scale grows
  with depth) made the first Adam steps blow the loss up (2.6 → 7.8 by step 4 at lr 3e-4), and the
  trained model gave one answer to every prompt; read through the norm, the loss fell from 2.6 to 1.5
  in 12 steps at 3e-3 (measured; `normalize_input=false` restores the raw reading).
- Router input. Wings routes on the head-summed probability map of the layer's main attention
  (Linear over key positions). transformers' decoder layers drop that map and fused kernels never form
  it, so the router reads the hidden state; it keeps Wings' SiLU-then-softmax, per token.
- No RoPE and no padding mask: the adapter gets no position ids or masks. Learners are causal in causal
  blocks (detected from `is_causal`, or set `causal`), which keeps them valid in a decoder. With a
  KV-cache a learner would see only the current chunk, and it cannot mask padding, so rankwise's
  generation runs such a model one prompt at a time without a cache (`needs_whole_sequence`).
- The released code adds the weighted learner outputs twice when both learners run; here once.
It has no alpha (Wings has no scaling); dropout is attention dropout in the learners.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ._blocks import BlockAdapter, hidden_of, input_norm, with_hidden
from .base import DropoutField, RankField, register


def attention_heads(block: nn.Module) -> int | None:
    for module in block.modules():
        for attr in ("num_heads", "num_attention_heads"):
            value = getattr(module, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        value = getattr(getattr(module, "config", None), "num_attention_heads", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def is_causal_block(block: nn.Module) -> bool:
    return any(getattr(module, "is_causal", False) is True for module in block.modules())


class LowRankProjection(nn.Module):
    """x + U D x, or U D x alone for the output projection; U starts at zero."""

    def __init__(self, width: int, rank: int, identity: bool, factory: dict):
        super().__init__()
        self.down = nn.Parameter(nn.init.trunc_normal_(torch.empty(rank, width, **factory), std=0.02))
        self.up = nn.Parameter(torch.zeros(width, rank, **factory))
        self.identity = identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low_rank = F.linear(F.linear(x, self.down), self.up)
        return x + low_rank if self.identity else low_rank


class LowRankResidualAttention(nn.Module):
    def __init__(self, width: int, rank: int, heads: int, factory: dict):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (LowRankProjection(width, rank, True, factory) for _ in range(3))
        self.output = LowRankProjection(width, rank, False, factory)

    def forward(self, h: torch.Tensor, features: torch.Tensor, causal: bool, dropout: float) -> torch.Tensor:
        def split(t: torch.Tensor) -> torch.Tensor:  # (..., T, d) -> (..., H, T, d / H)
            return t.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

        q, k, v = split(self.query(h)), split(self.key(features)), split(self.value(features))
        context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
        return self.output(context.transpose(-3, -2).flatten(-2))


@dataclass
class LorraConfig(RankField, DropoutField):
    targets: Any = "all-blocks"
    branches: int = 2  # learners mixed by the router (Wings: visual + textual)
    heads: int | None = None  # None: the block's own attention head count
    causal: bool | None = None  # None: causal when the block's attention is
    normalize_input: bool = True  # read the block's input through its own input norm (see module doc)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.branches, int) or self.branches < 1:
            raise ConfigError(f"branches must be a positive integer, got {self.branches!r}.")
        if self.heads is not None and (not isinstance(self.heads, int) or self.heads < 1):
            raise ConfigError(f"heads must be a positive integer or None, got {self.heads!r}.")
        if self.causal not in (None, True, False) or not isinstance(self.normalize_input, bool):
            raise ConfigError(f"causal must be true, false or null and normalize_input true or false, got "
                              f"{self.causal!r} and {self.normalize_input!r}.")


@register("lorra")
class Lorra(BlockAdapter):
    config_class = LorraConfig
    paper = "Wings: Learning Multimodal LLMs without Text-only Forgetting"
    url = "https://arxiv.org/abs/2406.03496"
    trains = "per block: branches × (D_q,k,v,o (rank×d), U_q,k,v,o (d×rank)) + router (branches×d + branches)"
    needs_whole_sequence = True

    def __init__(self, base: nn.Module, config: LorraConfig):
        super().__init__(base, config)
        width = self.in_features
        self.heads = config.heads or attention_heads(base) or 1
        if width % self.heads:
            raise ConfigError(f"hidden size {width} is not divisible by heads={self.heads}; set heads.")
        self.causal = is_causal_block(base) if config.causal is None else config.causal
        self.learners = nn.ModuleList(
            LowRankResidualAttention(width, config.rank, self.heads, self.factory)
            for _ in range(config.branches)
        )
        self.router = nn.Linear(width, config.branches, **self.factory)

    def route(self, h: torch.Tensor) -> torch.Tensor:
        """Per-token weights of the learners, (..., T, branches), summing to 1."""
        return torch.softmax(F.silu(self.router(h)), dim=-1)

    def forward(self, x: torch.Tensor, base_out: Any, layer: nn.Module) -> Any:
        hidden = hidden_of(base_out)
        norm = input_norm(layer) if self.config.normalize_input else None
        h = (x if norm is None else norm(x)).to(self.router.weight.dtype)
        dropout = self.config.dropout if self.training else 0.0
        outputs = torch.stack([learner(h, h, self.causal, dropout) for learner in self.learners], dim=-1)
        update = (outputs * self.route(h).unsqueeze(-2)).sum(-1)
        return with_hidden(base_out, hidden + update.to(hidden.dtype))
