"""SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using Singular Values
(Sun et al., 2024, arXiv 2409.05926).

Update rule: split W by its SVD into the best rank-r part and the rest, and train only the top-r
singular values,
    W = U S Vᵀ,   W_res = W - U_r diag(S_r) V_rᵀ,   W' = W_res + U_r diag(σ) V_rᵀ,   σ₀ = S_r
so the model equals the base at init. Trains σ: r numbers per layer. U_r, V_r, S_r are frozen buffers.
As PiSSA in rankwise, W is never replaced by W_res: W_res x + U_r(σ ⊙ V_rᵀ x) is computed as
    y = base_out + U_r ((σ - S_r) ⊙ V_rᵀ x)
(one rank-r path, same function), so unload is exact and the base can be shared. Merges as
W ← W + U_r diag(σ - S_r) V_rᵀ.
No public code; this follows the paper. It has no alpha or dropout (the paper has neither);
`svd_iters` > 0 selects a randomized SVD instead of the exact one.

Learning rate (lr_scale = 50): U_r and V_r have orthonormal columns, so a step δσ changes W by exactly
‖δσ‖ in Frobenius norm, whatever the layer's width; Adam moves each σ_i by about lr per step. LoRA's
update grows with the width instead, so at LoRA's rate SVFit barely moves: 20 steps at 1e-3 change each
σ_i by ≤ 0.02 (SmolLM2 demo: still at the base score). The paper's rate was not retrievable; SVFT's
code (Lingam et al. 2024, arXiv 2405.19597), which trains the same diagonal on frozen singular vectors
("plain"), uses 5e-2, 50× the 1e-3 of rankwise's LoRA demo. Tiny random Llama, 60 steps: SVFit's best
rate is ~30× LoRA's, and the gap widens with width (update norm at equal rate: 11× below LoRA's at
width 32, 20× at 128).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..linalg import top_svd
from .base import Adapter, RankField, SvdField, register


@dataclass
class SvfitConfig(RankField, SvdField):
    pass


@register("svfit")
class Svfit(Adapter):
    config_class = SvfitConfig
    paper = "SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using Singular Values"
    url = "https://arxiv.org/abs/2409.05926"
    trains = "the top-rank singular values σ (rank) of W; singular vectors frozen"
    lr_scale = 50.0  # SVFT "plain" trains at 5e-2 (VijayLingam95/SVFT run_math.sh); see the docstring

    def __init__(self, base: nn.Linear, config: SvfitConfig):
        super().__init__(base, config)
        rank = config.rank
        self.register_buffer("left", torch.zeros(self.out_features, rank, **self.factory))  # U_r
        self.register_buffer("right", torch.zeros(rank, self.in_features, **self.factory))  # V_rᵀ
        self.register_buffer("init_values", torch.zeros(rank, **self.factory))  # S_r
        self.singular_values = nn.Parameter(torch.zeros(rank, **self.factory))  # σ

    def init_from_weight(self, weight: torch.Tensor) -> None:
        svd = top_svd(weight, self.config.rank, self.config.svd_iters)
        self.left.copy_(svd.U)
        self.right.copy_(svd.Vh)
        self.init_values.copy_(svd.S)
        self.singular_values.data.copy_(svd.S)

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        x = x.to(self.singular_values.dtype)
        change = self.singular_values - self.init_values
        return base_out + F.linear(F.linear(x, self.right) * change, self.left).to(base_out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return (self.left * (self.singular_values - self.init_values)) @ self.right
