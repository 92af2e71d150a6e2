"""Truncated and randomized SVD, always computed in float32 (half-precision SVDs are unreliable).

cut_svd(M, rank=k | energy=e) is the best approximation M_k = U_k S_k V_kᵀ (Eckart–Young) at a given rank
or at the smallest rank keeping a share e of Σσ², with its relative error ‖M − M_k‖_F / ‖M‖_F.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .rank_selection import energy_rank, truncation_error


@dataclass
class LowRankFactors:
    """W ≈ U diag(S) Vh with U (out, r), S (r,), Vh (r, in)."""

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor

    @property
    def rank(self) -> int:
        return self.S.numel()

    def to_dense(self) -> torch.Tensor:
        return (self.U * self.S) @ self.Vh

    def split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, A) = (U √S, √S Vh), so that B A = U diag(S) Vh with the scale shared evenly."""
        root = self.S.sqrt()
        return self.U * root, root[:, None] * self.Vh


def truncated_svd(matrix: torch.Tensor, rank: int) -> LowRankFactors:
    """Exact SVD of a (out, in) matrix, cut to its top `rank` triplets."""
    U, S, Vh = torch.linalg.svd(matrix.detach().float(), full_matrices=False)
    return LowRankFactors(U[:, :rank], S[:rank], Vh[:rank])


def randomized_svd(
    matrix: torch.Tensor, rank: int, oversample: int = 8, power_iters: int = 2, seed: int = 0
) -> LowRankFactors:
    """Halko-Martinsson-Tropp randomized SVD: a range finder plus a small exact SVD.

    Power iterations (re-orthonormalized each time) sharpen a slowly decaying spectrum; a fixed
    seed makes the result reproducible.
    """
    A = matrix.detach().float()
    k = min(rank + oversample, min(A.shape))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn(A.shape[1], k, generator=gen).to(A.device)
    Q, _ = torch.linalg.qr(A @ omega)
    for _ in range(power_iters):
        Q, _ = torch.linalg.qr(A.T @ Q)
        Q, _ = torch.linalg.qr(A @ Q)
    U_small, S, Vh = torch.linalg.svd(Q.T @ A, full_matrices=False)
    return LowRankFactors((Q @ U_small)[:, :rank], S[:rank], Vh[:rank])


def top_svd(matrix: torch.Tensor, rank: int, power_iters: int = 0) -> LowRankFactors:
    """The top `rank` singular triplets: exact when power_iters == 0, else randomized with that many
    power iterations (the `svd_iters` setting every SVD-initialised method shares)."""
    if power_iters:
        return randomized_svd(matrix, rank, power_iters=power_iters)
    return truncated_svd(matrix, rank)


def svd_factors(matrix: torch.Tensor, rank: int, power_iters: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B (out, r), A (r, in)): the best rank-r approximation B A of `matrix` in Frobenius norm."""
    return top_svd(matrix, rank, power_iters).split()


def cut_svd(matrix: torch.Tensor, rank: int | None = None,
            energy: float | None = None) -> tuple[LowRankFactors, float]:
    """(the top-k triplets of `matrix`, ‖M − M_k‖_F / ‖M‖_F) with k = `rank` (at most M's full rank, where
    the cut is exact) or, given `energy` in (0, 1], the smallest k keeping that share of Σσ²."""
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank and energy")
    full = truncated_svd(matrix, min(matrix.shape))
    k = min(rank, full.rank) if rank is not None else energy_rank(full.S, energy)
    if k < 1:
        raise ValueError(f"rank must be at least 1, got {rank!r}")
    return LowRankFactors(full.U[:, :k], full.S[:k], full.Vh[:k]), truncation_error(full.S, k)
