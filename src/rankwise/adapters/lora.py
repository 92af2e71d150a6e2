"""LoRA: Low-Rank Adaptation of Large Language Models (Hu et al., 2021, arXiv 2106.09685).

Update rule, for a frozen W (out, in):
    y = W x + b + s · B A dropout(x),   s = alpha / rank
    A (rank, in): Kaiming-uniform (a = √5, as nn.Linear and loralib);  B (out, rank): zeros
so the adapted model equals the base at init. Trains A and B. Merges as W ← W + s B A.
Follows loralib (microsoft/LoRA): same init, scaling and dropout placement.
It also adapts nn.Embedding, nn.Conv1d/2d/3d (targeted by name) and transformers' GPT-2 Conv1D (which
"all-linear" takes, as in PEFT), each seen as the linear map it applies (rankwise.adapters.layer_kinds:
the update of an input per kind, the layout of ΔW, and the embeddings' own init A = 0, B ~ N(0, 1),
without dropout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Adapter, AdapterConfig, LowRankConfig, make_dropout, register
from .layer_kinds import EMBEDDING, MATMUL_KINDS, OTHER_KINDS, describe, from_matrix, low_rank_update


@dataclass
class LoraConfig(LowRankConfig):
    pass


def init_lora_factors(A: torch.Tensor, B: torch.Tensor) -> None:
    """LoRA's init, in place: A Kaiming-uniform (a = √5, as nn.Linear and loralib), B zeros."""
    with torch.no_grad():
        nn.init.kaiming_uniform_(A, a=math.sqrt(5))
        B.zero_()


def lora_delta(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
    """s · B A x on activations: two thin matmuls, never the dense (out, in) product."""
    return F.linear(F.linear(x, A), B) * scale


@register("lora")
class Lora(Adapter):
    config_class = LoraConfig
    paper = "LoRA: Low-Rank Adaptation of Large Language Models"
    url = "https://arxiv.org/abs/2106.09685"
    trains = "A (rank×in), B (out×rank)"
    other_kinds = OTHER_KINDS

    @classmethod
    def features(cls, base: nn.Module) -> tuple[int, int]:
        shape = describe(base)
        return shape.in_features, shape.out_features

    def __init__(self, base: nn.Module, config: LoraConfig):
        super().__init__(base, config)
        self.layer_shape = describe(base)
        self.lora_A = nn.Parameter(torch.empty(config.rank, self.in_features, **self.factory))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, config.rank, **self.factory))
        if self.layer_shape.kind == EMBEDDING:
            with torch.no_grad():
                self.lora_A.zero_()
                self.lora_B.normal_()
        else:
            init_lora_factors(self.lora_A, self.lora_B)
        self.dropout = make_dropout(config)
        self.scale = self.scaling(config)

    @staticmethod
    def scaling(config: AdapterConfig) -> float:
        return config.alpha / config.rank

    @classmethod
    @torch.no_grad()
    def from_factors(cls, A: torch.Tensor, B: torch.Tensor, scale: float, config: AdapterConfig) -> Lora:
        """A plain LoRA whose update s·B A is exactly the given factors' (no ranks at all: a zero update).

        `config` supplies dropout and targets; its rank and alpha are set to the factors' rank and
        scale · rank. Methods that end as a plain LoRA (SoRA, CoDyRA, LoRA-Squeeze) finalize into this.
        """
        rank = max(A.shape[0], 1)
        lora_config = LoraConfig.create("lora", **{k: getattr(config, k) for k in LoraConfig.field_names()
                                                   if hasattr(config, k) and k not in ("rank", "alpha")},
                                        rank=rank, alpha=scale * rank)
        shape = nn.Linear(A.shape[1], B.shape[0], bias=False, device="meta", dtype=A.dtype)
        lora = cls(shape, lora_config).to_empty(device=A.device)
        lora.factory = {"device": A.device, "dtype": A.dtype}
        lora.scale = scale  # exactly the source's scale (alpha / rank may round differently)
        lora.lora_A.zero_()
        lora.lora_B.zero_()
        if A.shape[0]:  # else: B = 0 gives the zero update
            lora.lora_A.copy_(A)
            lora.lora_B.copy_(B)
        return lora

    def kind_update(self, x: torch.Tensor) -> torch.Tensor:
        """s · B A x for any layer kind; an embedding's ids are neither cast nor dropped out."""
        if self.layer_shape.kind != EMBEDDING:
            x = self.dropout(x.to(self.lora_A.dtype))
        return low_rank_update(self.layer_shape, x, self.lora_A, self.lora_B) * self.scale

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        if self.layer_shape.kind not in MATMUL_KINDS:
            return base_out + self.kind_update(x).to(base_out.dtype)
        x = self.dropout(x.to(self.lora_A.dtype))
        if base_out.dtype != self.lora_B.dtype:  # half-precision base, float32 adapter
            return base_out + lora_delta(x, self.lora_A, self.lora_B, self.scale).to(base_out.dtype)
        hidden = F.linear(x, self.lora_A)
        # One fused kernel adds s·(h Bᵀ) to the base output: no separate scale and add passes over
        # the (tokens, out) tensor, which is what a LoRA step spends its extra time on.
        out = torch.addmm(base_out.reshape(-1, self.out_features), hidden.reshape(-1, hidden.shape[-1]),
                          self.lora_B.t(), alpha=self.scale)
        return out.view(base_out.shape)

    def delta_matrix(self) -> torch.Tensor:
        """s B A as the (out, in) matrix the layer applies."""
        return (self.lora_B @ self.lora_A) * self.scale

    def delta_weight(self) -> torch.Tensor:
        return from_matrix(self.layer_shape, self.delta_matrix())
