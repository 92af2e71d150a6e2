"""PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large Language Models
(Meng, Wang, Zhang, 2024, arXiv 2404.02948).

Update rule: LoRA's form, but the adapter starts on W's principal subspace and the base keeps the rest,
    W = U S Vᵀ,  A₀ = √(S_r / s) V_rᵀ,  B₀ = U_r √(S_r / s),   W_res = W - s B₀ A₀
    y = W_res x + b + s · B A x,   (A, B) initialised to (A₀, B₀)
so the model equals the base at init (up to float rounding). Trains A and B; W_res is frozen.
s = alpha / rank; the paper uses alpha = rank (s = 1), dividing S by s keeps any alpha exact (as PEFT).
A₀ and B₀ are kept as buffers: they rebuild W_res when the adapter is loaded onto the original
model and restore W exactly enough (≤ 1e-5) on unload. Follows the paper's exact SVD; set
`svd_iters` > 0 for PEFT's fast randomized variant (pissa_niter_k).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..linalg import randomized_svd, truncated_svd
from .base import register
from .lora import Lora, LoraConfig


@dataclass
class PissaConfig(LoraConfig):
    svd_iters: int = 0  # 0: exact SVD; k > 0: randomized SVD with k power iterations


@register("pissa")
class Pissa(Lora):
    config_class = PissaConfig
    paper = "PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large Language Models"
    url = "https://arxiv.org/abs/2404.02948"
    trains = "A (rank×in), B (out×rank) on W's principal subspace; residual W frozen"

    def __init__(self, base: nn.Linear, config: PissaConfig):
        super().__init__(base, config)
        self.register_buffer("init_A", torch.zeros_like(self.lora_A))
        self.register_buffer("init_B", torch.zeros_like(self.lora_B))

    def init_from_weight(self, weight: torch.Tensor) -> None:
        rank = self.config.rank
        svd = randomized_svd(weight, rank, power_iters=self.config.svd_iters) if self.config.svd_iters \
            else truncated_svd(weight, rank)
        root = (svd.S / self.scale).sqrt()
        self.init_A.copy_(root[:, None] * svd.Vh)
        self.init_B.copy_(svd.U * root)
        self.lora_A.data.copy_(self.init_A)
        self.lora_B.data.copy_(self.init_B)

    def base_offset(self) -> torch.Tensor:
        return (self.init_B @ self.init_A) * self.scale
