"""LoRA-XS: Low-Rank Adaptation with Extremely Small Number of Parameters
(Bałazy, Banaei, Aberer, Tabor, 2024, arXiv 2405.17604).

Update rule: frozen bases from the truncated SVD of W = U S Vᵀ, a trainable r×r matrix between them,
    B = U_r (out, r),  A = S_r V_rᵀ (r, in)        (frozen buffers)
    y = W x + b + s · B R A dropout(x),  s = alpha / rank
    R (r, r) = 0   (init_std = 0; the paper's code draws R ~ N(0, 1e-5²))
Trains R only: r² numbers per layer, whatever the layer's size. ΔW = s B R A lies in W's top-r left and
right singular subspaces. Merges as W ← W + s B R A.
Paper and code agree on the bases: the paper's A = U_r S_r, B = V_rᵀ are in the x·W convention of
(in, out) weights, which in torch's (out, in) convention is the B = U_r, A = S_r V_rᵀ above (the
authors' code, `retain_part: top`). Where rankwise differs: R starts at exactly 0 rather than at the
code's N(0, 1e-5²) draw, so the model is the base model at init (the draw moves the tiny test model's
logits by ~1.5e-5); it loses nothing, because R's gradient s Bᵀ G Aᵀ is non-zero at 0 (B and A are
frozen and non-zero). init_std=1e-5 restores the code's draw. `svd_iters` > 0 selects a randomized SVD
(the authors' config lists n_iter = 10) instead of the exact one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..linalg import top_svd
from .base import (
    Adapter,
    AdapterConfig,
    DropoutField,
    LowRankConfig,
    RankField,
    SvdField,
    make_dropout,
    register,
)


@dataclass
class XsFields(RankField, DropoutField, SvdField):
    """LoRA-XS's own fields, shared with LoRA-SB (which has no alpha)."""

    init_std: float = 0.0  # R ~ N(0, init_std²); 0 (default) starts from exactly the base model; code: 1e-5

    invalid = ({"init_std": -1.0},)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_std < 0:
            raise ConfigError(f"init_std must be >= 0, got {self.init_std!r}.")


@dataclass
class LoraXsConfig(XsFields, LowRankConfig):
    pass


def weight_bases(weight: torch.Tensor, rank: int, svd_iters: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA-XS's frozen pair from W's top-r SVD: B = U_r (out, r), A = S_r V_rᵀ (r, in)."""
    svd = top_svd(weight, rank, svd_iters)
    return svd.U, svd.S[:, None] * svd.Vh


@register("lora-xs")
class LoraXs(Adapter):
    config_class = LoraXsConfig
    paper = "LoRA-XS: Low-Rank Adaptation with Extremely Small Number of Parameters"
    url = "https://arxiv.org/abs/2405.17604"
    trains = "R (rank×rank) between frozen SVD bases of W"

    def __init__(self, base: nn.Linear, config: LoraXsConfig):
        super().__init__(base, config)
        rank = config.rank
        self.register_buffer("lora_A", torch.zeros(rank, self.in_features, **self.factory))
        self.register_buffer("lora_B", torch.zeros(self.out_features, rank, **self.factory))
        self.lora_R = nn.Parameter(torch.zeros(rank, rank, **self.factory))
        self.dropout = make_dropout(config)
        self.scale = self.scaling(config)

    @staticmethod
    def scaling(config: AdapterConfig) -> float:
        return config.alpha / config.rank

    def init_from_weight(self, weight: torch.Tensor) -> None:
        B, A = weight_bases(weight, self.config.rank, self.config.svd_iters)
        self.lora_B.copy_(B)
        self.lora_A.copy_(A)
        with torch.no_grad():
            self.lora_R.zero_()
            if self.config.init_std > 0:
                self.lora_R.normal_(0.0, self.config.init_std)

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        x = self.dropout(x.to(self.lora_R.dtype))
        update = F.linear(F.linear(F.linear(x, self.lora_A), self._core()), self.lora_B)  # B (R (A x))
        return base_out + (update * self.scale).to(base_out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self._core() @ self.lora_A) * self.scale

    def _core(self) -> torch.Tensor:
        """The r×r matrix between B and A (LoRA-SB subtracts its init here when asked to)."""
        return self.lora_R
