"""RandLoRA: Full-rank parameter-efficient fine-tuning of large models (Albert et al., ICLR 2025,
arXiv 2502.00987).

Update rule, for a frozen W (out, in), with d = min(out, in), D = max(out, in), n = ⌈d / rank⌉:
    ΔW = s · Σ_{i=1..n} B_i Λ_i A Γ_i          (transposed when out < in, so Γ always acts on the d side)
    y  = W x + b + ΔW dropout(x)
A (rank, d) and B_i (D, rank) are frozen random bases, A shared by all i; Λ_i = diag(λ[:, i]) with
λ (rank, n) and Γ_i = diag(γ[i]) with γ (n, d) train: rank·n + n·d ≈ d + d²/rank numbers per layer.
The sum of n rank-`rank` terms reaches rank d: a full-rank update. λ = 0 and γ = 1/d at init, so the
model equals the base (λ gets a gradient at once; γ once λ ≠ 0). Merges as W ← W + ΔW.
γ = 1/d is what the authors' fork and PEFT 0.21.2 end with by default (they write 1/D at construction,
then init_weights=True resets γ to 1/max(γ.shape) = 1/max(n, d) = 1/d); the paper gives no value.

Scaling: s = alpha / rank / √n, as the authors' PEFT fork (PaulAlbert31/RandLoRA) and the paper's
Table 9; the n random terms add up like a random walk, so 1/√n keeps the update's size independent of
n (and so of the layer's size and the rank). Upstream PEFT dropped the 1/√n and raised its default
alpha to 20·rank instead; `peft_scaling=True` gives s = alpha / rank.

Bases: uniform, then normalised to unit standard deviation (PEFT's Kaiming-uniform divided by its std
is the same law); `sparse_bases=True` gives the ternary {−1, 0, 1} bases (P(±1) = 1/6 each, std-normalised).
They are not saved: they are regenerated from `seed` (a config field, saved in adapter.json) and the
layer's shape with a CPU generator, so they are identical on every device and after loading. Layers
of one shape share one set of bases, as PEFT shares one global pair (a process-wide cache keeps one
copy per shape), and are non-persistent buffers so they follow .to().

Against PEFT: the same function given the same numbers (rankwise.train.peft_randlora maps one onto the
other; the probe's PEFT twin shows identical logits at init and after a step). PEFT shares one basis
pair sliced per layer where rankwise has one per shape, so no PEFT-format file holds rankwise's bases.

Forward on activations: the scaled basis (λ ⊗ A ⊙ γ) of size rank·n × d ≈ d × d is formed once per
forward (parameter-sized, not batch-sized; a custom autograd function saves only λ, A, γ for backward,
as PEFT's UniqueBaseGrad does), then y adds B (scaled-basis · x) — dense (out, in) ΔW is never formed.
The per-token cost is that of a full-rank update, which is what the method is.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Adapter, LowRankConfig, make_dropout, register


@dataclass
class RandLoraConfig(LowRankConfig):
    seed: int = 0  # the random bases are regenerated from this and the layer's shape
    peft_scaling: bool = False  # False: alpha/rank/√n (authors); True: alpha/rank (upstream PEFT)
    sparse_bases: bool = False  # ternary {-1, 0, 1} bases instead of dense uniform ones


@functools.lru_cache(maxsize=64)
def random_bases(
    seed: int, rank: int, n: int, small: int, large: int, sparse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (rank, small), B (large, rank·n)) with unit-std entries; column k·n + i of B is column k of B_i."""
    mixed = seed
    for value in (rank, n, small, large, int(sparse)):  # a stable (not hash()-based) seed per shape
        mixed = (mixed * 1_000_003 + value) % 2**61
    gen = torch.Generator(device="cpu").manual_seed(mixed)

    def draw(*shape: int) -> torch.Tensor:
        u = torch.rand(shape, generator=gen)
        basis = ((u > 5 / 6).float() - (u < 1 / 6).float()) if sparse else 2 * u - 1
        return basis / basis.std()

    return draw(rank, small), draw(large, rank * n)


class _ScaledBasis(torch.autograd.Function):
    """S[k, i, :] = λ[k, i] · A[k, :] ⊙ γ[i, :]; backward saves only the three inputs, not S."""

    @staticmethod
    def forward(ctx, A: torch.Tensor, lam: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(A, lam, gamma)
        return lam[:, :, None] * A[:, None, :] * gamma[None]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        A, lam, gamma = ctx.saved_tensors
        grad_lam = torch.einsum("kij,kj,ij->ki", grad, A, gamma)
        grad_gamma = torch.einsum("kij,kj,ki->ij", grad, A, lam)
        return None, grad_lam, grad_gamma


@register("randlora")
class RandLora(Adapter):
    config_class = RandLoraConfig
    paper = "RandLoRA: Full-rank parameter-efficient fine-tuning of large models"
    url = "https://arxiv.org/abs/2502.00987"
    trains = "λ (rank×n) and γ (n×min(out,in)), n = ⌈min(out,in)/rank⌉, scaling fixed random bases"

    def __init__(self, base: nn.Linear, config: RandLoraConfig):
        super().__init__(base, config)
        small, large = sorted((self.in_features, self.out_features))
        self.n_bases = math.ceil(small / config.rank)
        self.small_is_input = self.in_features <= self.out_features
        self.lam = nn.Parameter(torch.zeros(config.rank, self.n_bases, **self.factory))
        self.gamma = nn.Parameter(torch.full((self.n_bases, small), 1.0 / max(self.n_bases, small),
                                              **self.factory))
        A, B = random_bases(config.seed, config.rank, self.n_bases, small, large, config.sparse_bases)
        self.register_buffer("basis_A", A.to(**self.factory), persistent=False)
        self.register_buffer("basis_B", B.to(**self.factory), persistent=False)
        self.dropout = make_dropout(config)
        self.scale = config.alpha / config.rank / (1.0 if config.peft_scaling else math.sqrt(self.n_bases))

    def scaled_basis(self) -> torch.Tensor:
        """(rank·n, small): the trainable diagonals applied to the shared basis A."""
        return _ScaledBasis.apply(self.basis_A, self.lam, self.gamma).flatten(0, 1)

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        x = self.dropout(x.to(self.lam.dtype))
        S = self.scaled_basis()
        if self.small_is_input:  # ΔW = B S
            out = F.linear(F.linear(x, S), self.basis_B)
        else:  # ΔW = (B S)ᵀ = Sᵀ Bᵀ
            out = F.linear(F.linear(x, self.basis_B.T), S.T)
        return base_out + (out * self.scale).to(base_out.dtype)

    def delta_weight(self) -> torch.Tensor:
        delta = self.basis_B @ self.scaled_basis() * self.scale
        return delta if self.small_is_input else delta.T
