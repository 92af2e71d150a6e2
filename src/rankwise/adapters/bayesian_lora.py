"""Bayesian-LoRA: LoRA based Parameter Efficient Fine-Tuning using Optimal Quantization levels and Rank
Values trough Differentiable Bayesian Gates (Meo, Sycheva, Goyal, Dauwels, arXiv 2406.13046).

Update rule, for a frozen W (out, in): an SVD-style LoRA whose rank components and whose factors'
bit-widths are chosen by hard-concrete gates,
    y = W x + b + s · Q(B) diag(λ ⊙ z) Q(A) dropout(x),   s = alpha / rank
    Q(M) = M₂ + z₄(ε₄ + z₈(ε₈ + z₁₆(ε₁₆ + z₃₂ ε₃₂)))   (Bayesian-Bits nested quantizer, one chain per factor)
z (rank,) are rank gates, z₄ … z₃₂ bit gates of A and of B; every gate is a hard-concrete variable with
a learned log-odds. The loss adds the expected bit-operations of the whole adapter (all its layers),
    regularizer = bop_weight · Σ_layers E[BOPs] / Σ_layers BOPs(all gates open),
    E[BOPs] = 32 · E[rank] · (in · E[bits(A)] + out · E[bits(B)])   (activations kept at 32 bits)
with E[rank] = Σ P(z_i ≠ 0) and E[bits] = 2 + Σ_k (b_k − b_{k−1}) Π_{j≤k} P(z_j ≠ 0).
Trains A (rank, in), λ (rank), B (out, rank) and the gate logits. Init as AdaLoRA (A, B ~ N(0, 0.02²),
λ = 0, so the model equals the base); gates start open (log-odds `gate_init`). Training samples the
gates; evaluation (and merging) uses deterministic gates (open iff log α > 0). Merges as
W ← W + s Q(B) diag(λ ⊙ z) Q(A). `chosen_rank_and_bits()` per layer and `report(model)` give the choice.

Assumptions (the paper's text beyond its abstract and its code were not available): the SVD-style
factorisation (the method is evaluated against AdaLoRA on its DeBERTaV3/GLUE setup), Bayesian Bits'
quantizer (symmetric range ±max|M|, 2-bit base, doubling widths, last level exact) with one bit-chain
per factor matrix, the penalty normalised by the whole adapter's BOPs (the paper reports the total
BOPs), activations not quantized, and gates sampled per
token (local reparameterisation: lower-variance gradients; in training the adapter path costs five
rank-sized matmuls per factor instead of one, by stacking the nested terms). The base 2-bit level has no
gate (pruning is the rank gates' job), and the prior's KL is taken to be the expected-cost penalty.

Why the normaliser is the whole adapter's (init_from_data sets it; a loop that skips that hook gets
each layer's own, a penalty up to n_layers · bop_weight): while λ ≈ 0 the task gives the gate logits
no gradient, so Adam moves every logit by ≈ lr per step on the penalty alone, and a penalty summed over
per-layer ratios (≈ 0.1 × 210 ≈ 16 on SmolLM2, against a task loss below 1) keeps the task from ever
taking over: the gates close in lockstep (after ≈ gate_init / lr steps at full rate) and evaluation,
with hard gates, falls back towards the base.
Tiny Llama (14 layers), lr 3e-2, 200 steps: loss drop 0.47 and 71/112 rank gates closed with the
per-layer sum, 0.60 with the whole-adapter ratio (0.61 without a penalty) at 73% fewer expected BOPs.
Learning rate: the AdaLoRA init makes ΔW = s·B diag(λ) A grow from a product of (0.02, 0, 0.02), far
slower than LoRA's (this, not the gates, left the 20-step SmolLM2 demo at 1e-3 at the base score); on
the tiny model it needs ~10× LoRA's rate (1e-2 here ≈ LoRA at 1e-3). The paper's rate is not known, so
lr_scale stays 1; AdaLoRA's own runs use 8e-4..1.2e-3 at s = alpha / r = 8..16 (r = 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ._gates import (
    BIT_LEVELS,
    chained,
    expected_bits,
    hard_concrete_open,
    hard_concrete_p_open,
    hard_concrete_sample,
    nested_quantization,
)
from .api import layers_of
from .base import Adapter, LowRankConfig, make_dropout, register

ACTIVATION_BITS = 32
LEVELS = len(BIT_LEVELS)


@dataclass
class BayesianLoraConfig(LowRankConfig):
    bop_weight: float = 0.1  # weight of the normalised expected bit-operations in the loss
    gate_init: float = 1.0  # initial log-odds of every gate (P(open) ≈ 0.93; all open at eval)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bop_weight < 0:
            raise ConfigError(f"bop_weight must be >= 0, got {self.bop_weight!r}.")


def quantize(terms: list[torch.Tensor], coefficients: torch.Tensor) -> torch.Tensor:
    """Σ_k c_k · term_k: the factor at the bit-width the (deterministic) gate chain selects."""
    return sum(c * term for c, term in zip(coefficients, terms))


def bits_of(open_gates: torch.Tensor) -> int:
    """Bit-width selected by deterministic nested gates: the level before the first closed gate."""
    return BIT_LEVELS[int(torch.cumprod(open_gates, 0).sum())]


@register("bayesian-lora")
class BayesianLora(Adapter):
    config_class = BayesianLoraConfig
    paper = ("Bayesian-LoRA: LoRA based Parameter Efficient Fine-Tuning using Optimal Quantization levels "
             "and Rank Values trough Differentiable Bayesian Gates")
    url = "https://arxiv.org/abs/2406.13046"
    trains = "A (rank×in), λ (rank), B (out×rank), rank-gate logits (rank), bit-gate logits (4 per factor)"

    def __init__(self, base: nn.Linear, config: BayesianLoraConfig):
        super().__init__(base, config)
        rank, gate = config.rank, config.gate_init
        self.lora_A = nn.Parameter(torch.randn(rank, self.in_features, **self.factory) * 0.02)
        self.lora_E = nn.Parameter(torch.zeros(rank, **self.factory))
        self.lora_B = nn.Parameter(torch.randn(self.out_features, rank, **self.factory) * 0.02)
        self.rank_logits = nn.Parameter(torch.full((rank,), gate, **self.factory))
        self.bit_logits_A = nn.Parameter(torch.full((LEVELS - 1,), gate, **self.factory))
        self.bit_logits_B = nn.Parameter(torch.full((LEVELS - 1,), gate, **self.factory))
        self.dropout = make_dropout(config)
        self.scale = config.alpha / rank
        self.adapter_full_bops: float | None = None  # Σ full_bops() of the adapter's layers (init_from_data)

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        x = self.dropout(x.to(self.lora_A.dtype))
        # Gates are sampled only in a training pass: adapt() adds adapters (training=True) to models
        # that may be in eval mode, so the base's flag and grad mode are consulted too.
        if not (self.training and layer.training and torch.is_grad_enabled()):
            A, B, gains = self.deterministic_factors()
            return base_out + (F.linear(F.linear(x, A) * gains, B) * self.scale).to(base_out.dtype)
        # Gates drawn per token; the nested terms are stacked so each factor stays one matmul.
        lead, rank = x.shape[:-1], self.config.rank
        coef_A = chained(hard_concrete_sample(self.bit_logits_A, (*lead, LEVELS - 1)))
        coef_B = chained(hard_concrete_sample(self.bit_logits_B, (*lead, LEVELS - 1)))
        z = hard_concrete_sample(self.rank_logits, (*lead, rank))
        h = F.linear(x, torch.cat(nested_quantization(self.lora_A))).unflatten(-1, (LEVELS, rank))
        h = (h * coef_A[..., None]).sum(-2) * (self.lora_E * z) * self.scale
        stacked = (h[..., None, :] * coef_B[..., None]).flatten(-2)  # (..., LEVELS·rank)
        out = F.linear(stacked, torch.cat(nested_quantization(self.lora_B), dim=1))
        return base_out + out.to(base_out.dtype)

    def deterministic_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Q(A), Q(B), λ ⊙ z) with every gate set to its test-time value."""
        A = quantize(nested_quantization(self.lora_A), chained(hard_concrete_open(self.bit_logits_A)))
        B = quantize(nested_quantization(self.lora_B), chained(hard_concrete_open(self.bit_logits_B)))
        return A, B, self.lora_E * hard_concrete_open(self.rank_logits)

    def delta_weight(self) -> torch.Tensor:
        A, B, gains = self.deterministic_factors()
        return (B * gains) @ A * self.scale

    def expected_bops(self) -> torch.Tensor:
        rank = hard_concrete_p_open(self.rank_logits).sum()
        bits_A = expected_bits(hard_concrete_p_open(self.bit_logits_A))
        bits_B = expected_bits(hard_concrete_p_open(self.bit_logits_B))
        return ACTIVATION_BITS * rank * (self.in_features * bits_A + self.out_features * bits_B)

    def full_bops(self) -> float:
        return ACTIVATION_BITS * self.config.rank * (self.in_features + self.out_features) * BIT_LEVELS[-1]

    def regularizer(self) -> torch.Tensor | None:
        if self.config.bop_weight == 0:
            return None
        normaliser = self.adapter_full_bops or self.full_bops()
        return self.config.bop_weight * self.expected_bops() / normaliser

    @classmethod
    def init_from_data(cls, model: nn.Module, layers: dict[str, Adapter], batches) -> None:
        """Reads no data: sets the penalty's normaliser, the full-precision BOPs of all the layers."""
        total = sum(layer.full_bops() for layer in layers.values())
        for layer in layers.values():
            layer.adapter_full_bops = total

    @torch.no_grad()
    def chosen_rank_and_bits(self) -> dict[str, int]:
        """The test-time choice: rank, bit-widths of A and B, and bit-operations per token."""
        rank = int(hard_concrete_open(self.rank_logits).sum())
        bits_A = bits_of(hard_concrete_open(self.bit_logits_A))
        bits_B = bits_of(hard_concrete_open(self.bit_logits_B))
        bops = ACTIVATION_BITS * rank * (self.in_features * bits_A + self.out_features * bits_B)
        return {"rank": rank, "bits_A": bits_A, "bits_B": bits_B, "bops": bops}


def report(model: nn.Module, name: str = "default") -> dict[str, dict[str, int]]:
    """{module path: chosen rank, bits of A and B, bit-operations per token} for adapter `name`."""
    layers = layers_of(model, name)
    if not all(isinstance(layer, BayesianLora) for layer in layers.values()):
        raise ConfigError(f"adapter {name!r} is not a bayesian-lora adapter.")
    return {path: layer.chosen_rank_and_bits() for path, layer in layers.items()}
