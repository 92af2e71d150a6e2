"""Truncated and randomized SVD, always computed in float32 (half-precision SVDs are unreliable)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
