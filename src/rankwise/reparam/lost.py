"""LOST: low-rank plus channel-sparse pretraining (Li, Yin, Shen, Xu, Xu, Huang, Wang, Liu, Wang, "LOST:
Low-rank and Sparse Pre-training for Large Language Models", 2025; arXiv:2508.02668).

Parameterization, for a (out, in) layer and k kept channels:
    W = B A + S,      y = B (A x) + S x + b
S is channel-wise sparse: only k whole channels are non-zero, stored as a dense block on an integer
buffer `channels` that never changes (channel_dim "in": k columns, block (out, k), S x = block · x[channels];
"out": k rows, block (k, in), added to the outputs at `channels`). No irregular sparse kernel is needed.
Initialisation, from the layer's (standard-initialised) weight W₀ = U Σ Vᵀ:
    B = U_r Σ_r^½,   A = Σ_r^½ V_rᵀ                           (the dominant r components)
    W_res = Σ_{i>r} σ_i u_i v_iᵀ                               (the remaining singular components)
    channels = the k channels of W_res of largest L2 norm,   block = W_res on those channels
so the sparse part starts complementary to the low-rank subspace, and W equals W₀ exactly on the kept
channels. k = max(1, round(density · channels)). Trains B, A, the block and the bias:
r (out + in) + k · out (in) or k · in (out) (+ out) numbers per layer; the support is fixed.

Paper vs code: the official code (JiaxiLi1/LOST-Low-rank-and-Sparse-Training-for-Large-Language-Models)
could not be read here, nor the paper body; this follows the rule in the project's research notes
(training_compression.md §10), taken from the abstract ("SVD ... preserving the dominant low-rank
components, while allocating the remaining singular values to construct channel-wise sparse
components"). Unverified, so exposed as settings: which dimension is sparsified (channel_dim, default
"in"), the channel score (L2 norm of W_res), any scaling of either part (none here), and density's
default (0.03, SLTrain's share, so the two compare at equal sparse budgets).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import FactorizedLinear, ReparamConfig, Reparametrizer, check_density, register

CHANNEL_DIMS = ("in", "out")


@dataclass
class LostConfig(ReparamConfig):
    density: float = 0.03  # the share of channels the sparse part keeps
    channel_dim: str = "in"  # "in": S keeps whole input channels (columns); "out": output channels (rows)

    invalid = ({"rank": 4, "density": 0}, {"rank": 4, "density": 2}, {"rank": 4, "channel_dim": "rows"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_density(self.density)
        if self.channel_dim not in CHANNEL_DIMS:
            raise ConfigError(f"channel_dim must be one of {', '.join(CHANNEL_DIMS)}, "
                              f"got {self.channel_dim!r}.")

    def channels_for(self, layer: nn.Linear) -> int:
        total = layer.in_features if self.channel_dim == "in" else layer.out_features
        return max(1, round(self.density * total))


def lost_split(weight: torch.Tensor, rank: int, count: int, channel_dim: str = "in"):
    """(B, A, channels, block): B A = the top-`rank` SVD part of `weight`, and `block` = the rest
    W_res on its `count` channels of largest L2 norm (columns for "in", rows for "out"), sorted."""
    U, S, Vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
    root = S[:rank].sqrt()
    B, A = U[:, :rank] * root, root[:, None] * Vh[:rank]
    residual = (U[:, rank:] * S[rank:]) @ Vh[rank:]
    along_in = channel_dim == "in"
    scores = residual.norm(dim=0 if along_in else 1)
    channels = torch.topk(scores, count).indices.sort().values
    block = residual[:, channels] if along_in else residual[channels]
    return B, A, channels, block


class ChannelSparseLinear(FactorizedLinear):
    """B (A x) + S x + b, S non-zero only on the fixed `channels` (of the inputs or of the outputs)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: torch.Tensor | None,
                 dtype: torch.dtype, device: torch.device | str = "cpu", scale: float = 1.0, *, count: int,
                 channel_dim: str):
        super().__init__(in_features, out_features, rank, bias, dtype, device, scale)
        self.channel_dim = channel_dim
        shape = (out_features, count) if channel_dim == "in" else (count, in_features)
        self.register_buffer("channels", torch.zeros(count, dtype=torch.long, device=device))
        self.block = nn.Parameter(torch.empty(shape, dtype=dtype, device=device))

    def add_sparse(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.channel_dim == "in":
            return out + F.linear(x.index_select(-1, self.channels), self.block)
        return out.index_add(-1, self.channels, F.linear(x, self.block))

    def sparse_weight(self) -> torch.Tensor:
        dense = self.block.new_zeros(self.out_features, self.in_features)
        return dense.index_copy(1 if self.channel_dim == "in" else 0, self.channels, self.block)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, channels={self.channels.numel()} ({self.channel_dim})"


@register("lost")
class Lost(Reparametrizer):
    config_class = LostConfig
    paper = "Li et al., LOST: Low-rank and Sparse Pre-training for Large Language Models (2025)"
    url = "https://arxiv.org/abs/2508.02668"

    @classmethod
    def shape(cls, layer: nn.Linear, config: LostConfig) -> ChannelSparseLinear:
        return ChannelSparseLinear.like(layer, config.rank_for(layer), 1.0, count=config.channels_for(layer),
                                        channel_dim=config.channel_dim)

    @classmethod
    def build(cls, layer: nn.Linear, config: LostConfig, generator: torch.Generator) -> ChannelSparseLinear:
        module = cls.shape(layer, config)  # deterministic: nothing is drawn
        count = module.channels.numel()
        B, A, channels, block = lost_split(layer.weight, module.rank, count, config.channel_dim)
        with torch.no_grad():
            module.channels.copy_(channels)
            module.block.copy_(block)
        return module.set_factors(B, A)  # the bias: the layer's, copied by like()
