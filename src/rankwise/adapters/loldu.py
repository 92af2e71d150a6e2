"""LoLDU: Low-Rank Adaptation via Lower-Diag-Upper Decomposition for Parameter-Efficient Fine-Tuning
(Shi et al., 2024, arXiv 2410.13618).

Update rule: the pivoted LDU decomposition W = P L D U (rankwise.linalg.structured.ldu) keeps its first
r columns of L, entries of D and rows of U, and only a diagonal trains,
    W_res = W - σ₀ P L_r diag(D_r) U_r,   W' = W_res + σ P L_r diag(z) U_r,   z₀ = D_r,  σ₀ = alpha / rank
so the model equals the base at init (exactly: σz - σ₀D_r is 0). Trains z (r) and the scale σ (1): r + 1
numbers per layer. P L_r (out, r), U_r (r, in), D_r and σ₀ are frozen buffers; P is applied as a row
gather when the factors are built, never stored as a dense (out, out) matrix.
As PiSSA in rankwise, W is not overwritten with W_res; the forward is
    y = base_out + P L_r ((σ z - σ₀ D_r) ⊙ U_r x)
on activations (the authors' code forms the dense weight each forward). Merges as
W ← W + P L_r diag(σ z - σ₀ D_r) U_r.

Paper vs code: the paper trains the diagonal and its scale σ ("σ L_r D_r U_r"); the authors' code makes
σ a parameter but hands only z to the optimizer, so σ stays at alpha / rank. rankwise follows the paper;
train_scale=False gives the code's behaviour (r numbers). The default init is the code's "lu" (z = D_r),
the only one that keeps the base model at step 0. It has no dropout, as the code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..linalg.structured import ldu
from .base import Adapter, AlphaField, RankField, register


@dataclass
class LolduConfig(RankField, AlphaField):
    train_scale: bool = True  # paper: σ trains with z (r + 1 numbers); authors' code: only z (r numbers)


@register("loldu")
class Loldu(Adapter):
    config_class = LolduConfig
    paper = ("LoLDU: Low-Rank Adaptation via Lower-Diag-Upper Decomposition for Parameter-Efficient "
             "Fine-Tuning")
    url = "https://arxiv.org/abs/2410.13618"
    trains = "the diagonal z (rank) of W's pivoted LDU factors and its scale σ (1)"

    def __init__(self, base: nn.Linear, config: LolduConfig):
        super().__init__(base, config)
        rank = config.rank
        self.register_buffer("lower", torch.zeros(self.out_features, rank, **self.factory))  # P L_r
        self.register_buffer("upper", torch.zeros(rank, self.in_features, **self.factory))  # U_r (unit)
        self.register_buffer("init_diagonal", torch.zeros(rank, **self.factory))  # D_r
        self.register_buffer("init_scale", torch.tensor(config.alpha / rank, **self.factory))  # σ₀
        self.diagonal = nn.Parameter(torch.zeros(rank, **self.factory))  # z
        scale = torch.tensor(config.alpha / rank, **self.factory)
        if config.train_scale:
            self.scale = nn.Parameter(scale)
        else:  # a buffer, so set_active's requires_grad_(True) cannot make it train
            self.register_buffer("scale", scale)

    def init_from_weight(self, weight: torch.Tensor) -> None:
        factors, rank = ldu(weight), self.config.rank
        self.lower.copy_(factors.permuted_lower()[:, :rank])
        self.upper.copy_(factors.U[:rank])
        self.init_diagonal.copy_(factors.D[:rank])
        self.diagonal.data.copy_(factors.D[:rank])

    def _gains(self) -> torch.Tensor:
        return self.scale * self.diagonal - self.init_scale * self.init_diagonal

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        x = x.to(self.diagonal.dtype)
        return base_out + F.linear(F.linear(x, self.upper) * self._gains(), self.lower).to(base_out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return (self.lower * self._gains()) @ self.upper
