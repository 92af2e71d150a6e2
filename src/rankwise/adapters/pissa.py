"""PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large Language Models
(Meng, Wang, Zhang, 2024, arXiv 2404.02948).

Update rule: LoRA's form, but the adapter starts on W's principal subspace and the base keeps the rest,
    W = U S Vᵀ,   A₀ = √(S_r / s) V_rᵀ,   B₀ = U_r √(S_r / s),   W_res = W - s B₀ A₀
    y = W_res x + b + s · B A x,   with (A, B) initialised to (A₀, B₀)
so the model equals the base at init (up to float rounding). Trains A and B; W_res is frozen.
s = alpha / rank; the paper uses alpha = rank (s = 1); dividing S by s keeps any alpha exact (as PEFT).

Where rankwise differs from the paper's code: the code overwrites W with W_res. rankwise keeps W and
computes W_res x as W x - s B₀ A₀ x, with A₀, B₀ as saved buffers (without dropout, in the same
product as the update: s [B, -B₀][A; A₀] x, rank 2r, whose backward keeps only what LoRA's does). The
function is the same, but the base model is never modified, so several adapters can share it, unload
is exact and the saved adapter applies to the original model. Follows the paper's exact SVD;
`svd_iters` > 0 selects PEFT's fast randomized variant (pissa_niter_k).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..linalg import top_svd
from .base import SvdField, register
from .lora import Lora, LoraConfig, lora_delta


class PrincipalSwap(torch.autograd.Function):
    """s [B, -B₀] [A; A₀] x, the update minus the principal part W_res leaves out, as one rank-2r product.

    Autograd would keep the concatenated factors of every layer for the backward pass: as many numbers
    again as the adapter, which put PiSSA's training peak above PEFT's (PEFT overwrites W instead). This
    keeps only what LoRA keeps (x, A, B and the rank-r hidden A x) and rebuilds the rest in backward.
    """

    @staticmethod
    def forward(ctx, x, A, B, A0, B0, scale: float):
        rank = A.shape[0]
        hidden = F.linear(x, torch.cat([A, A0]))
        ctx.save_for_backward(x, A, B, A0, B0, hidden[..., :rank].contiguous())
        ctx.scale = scale
        return F.linear(hidden, torch.cat([B, -B0], dim=1)) * scale

    @staticmethod
    def backward(ctx, grad):
        x, A, B, A0, B0, hidden = ctx.saved_tensors
        # In the factors' dtype: under autocast the forward ran in bf16, and A, B take fp32 gradients.
        grad = (grad.to(A.dtype) * ctx.scale).flatten(0, -2)
        grad_hidden = grad @ torch.cat([B, -B0], dim=1)  # (rows, 2r)
        need_x, need_A, need_B = ctx.needs_input_grad[:3]
        grad_x = (grad_hidden @ torch.cat([A, A0])).view(x.shape).to(x.dtype) if need_x else None
        grad_A = grad_hidden[:, :A.shape[0]].T @ x.flatten(0, -2).to(A.dtype) if need_A else None
        grad_B = grad.T @ hidden.flatten(0, -2).to(A.dtype) if need_B else None
        return grad_x, grad_A, grad_B, None, None, None


@dataclass
class PissaConfig(LoraConfig, SvdField):
    pass


@register("pissa")
class Pissa(Lora):
    config_class = PissaConfig
    paper = "PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large Language Models"
    url = "https://arxiv.org/abs/2404.02948"
    trains = "A (rank×in), B (out×rank), started on W's principal subspace; residual W frozen"

    def __init__(self, base: nn.Linear, config: PissaConfig):
        super().__init__(base, config)
        self.register_buffer("init_A", torch.zeros_like(self.lora_A))
        self.register_buffer("init_B", torch.zeros_like(self.lora_B))

    def init_from_weight(self, weight: torch.Tensor) -> None:
        svd = top_svd(weight, self.config.rank, self.config.svd_iters)
        root = (svd.S / self.scale).sqrt()
        self.init_A.copy_(root[:, None] * svd.Vh)
        self.init_B.copy_(svd.U * root)
        self.lora_A.data.copy_(self.init_A)
        self.lora_B.data.copy_(self.init_B)

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        x = x.to(self.lora_A.dtype)
        if isinstance(self.dropout, nn.Identity):
            # Both paths see the same x: one rank-2r product, half the kernels of two.
            update = PrincipalSwap.apply(x, self.lora_A, self.lora_B, self.init_A, self.init_B, self.scale)
            return base_out + update.to(base_out.dtype)
        principal = lora_delta(x, self.init_A, self.init_B, self.scale)  # the part W_res leaves out
        update = lora_delta(self.dropout(x), self.lora_A, self.lora_B, self.scale)
        return base_out + (update - principal).to(base_out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A - self.init_B @ self.init_A) * self.scale
