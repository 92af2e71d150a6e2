"""SVD of a low-rank product s · B A without forming the dense (out, in) matrix.

B is (out, k) and A is (k, in) with k small (a LoRA pair). Both functions touch the product only
through thin matmuls with B and A, so time and memory are O((out + in) · k²) rather than O(out · in).
Computed in float32, as every SVD in rankwise.
"""

from __future__ import annotations

import torch

from .svd import LowRankFactors


def _thin(B: torch.Tensor, A: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    if B.shape[1] != A.shape[0]:
        raise ValueError(f"B {tuple(B.shape)} and A {tuple(A.shape)} do not share an inner dimension.")
    return B.detach().float() * scale, A.detach().float()


def product_svd(
    B: torch.Tensor, A: torch.Tensor, rank: int | None = None, scale: float = 1.0
) -> LowRankFactors:
    """Exact SVD of scale · B A, cut to its top `rank` triplets (all k when rank is None).

    With thin QRs B = Q_B R_B and Aᵀ = Q_A R_A,  s B A = Q_B (s R_B R_Aᵀ) Q_Aᵀ;  the SVD Ũ Σ Ṽᵀ of the
    small core gives U = Q_B Ũ and Vᵀ = Ṽᵀ Q_Aᵀ, because Q_B and Q_A have orthonormal columns.
    """
    B, A = _thin(B, A, scale)
    Q_B, R_B = torch.linalg.qr(B)  # (out, k'), (k', k)
    Q_A, R_A = torch.linalg.qr(A.T)  # (in, k''), (k'', k)
    U_core, S, Vh_core = torch.linalg.svd(R_B @ R_A.T, full_matrices=False)
    keep = S.numel() if rank is None else min(rank, S.numel())
    return LowRankFactors((Q_B @ U_core)[:, :keep], S[:keep], (Vh_core @ Q_A.T)[:keep])


def randomized_product_svd(
    B: torch.Tensor, A: torch.Tensor, rank: int, scale: float = 1.0, oversample: int = 8,
    power_iters: int = 2, seed: int = 0,
) -> LowRankFactors:
    """Randomized (Halko-Martinsson-Tropp) SVD of scale · B A, the RSVD that LoRA-Squeeze names.

    The range finder multiplies by the product as B (A Ω) and its transpose as Aᵀ (Bᵀ Y); the only
    product formed is the (rank + oversample, in) sketch Qᵀ B A. A fixed seed makes it reproducible.
    """
    B, A = _thin(B, A, scale)
    width = min(rank + oversample, B.shape[0], A.shape[1])
    gen = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn(A.shape[1], width, generator=gen).to(A.device)
    Q, _ = torch.linalg.qr(B @ (A @ omega))
    for _ in range(power_iters):  # re-orthonormalised each time, so small singular values survive
        Q, _ = torch.linalg.qr(A.T @ (B.T @ Q))
        Q, _ = torch.linalg.qr(B @ (A @ Q))
    U_small, S, Vh = torch.linalg.svd((Q.T @ B) @ A, full_matrices=False)
    return LowRankFactors((Q @ U_small)[:, :rank], S[:rank], Vh[:rank])
