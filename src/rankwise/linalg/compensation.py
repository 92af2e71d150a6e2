"""Rank-r corrections B A of a compression error ΔW = W − Ŵ, so that Ŵ + B A stands in for W.

Plain SVD (linalg.svd_factors) minimizes ‖ΔW − B A‖_F. EoRA minimizes the layer-output error on
calibration inputs X instead:
    ‖(ΔW − B A) X‖²_F = N · ‖(ΔW − B A) Q Λ^{1/2}‖²_F,   where C = XᵀX / N = Q Λ Qᵀ,
so the truncated SVD of ΔW' = ΔW Q Λ^{1/2} (Eckart–Young in the whitened space) is optimal:
    ΔW' ≈ U_r Σ_r V_rᵀ,   B = U_r Σ_r^{1/2},   A = Σ_r^{1/2} V_rᵀ Λ^{-1/2} Qᵀ.
"""

from __future__ import annotations

import torch

from .svd import LowRankFactors


def eigen_compensation(error: torch.Tensor, input_moment: torch.Tensor, rank: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) minimizing ‖(error − B A) X‖_F for inputs with second moment `input_moment` (EoRA).

    As EoRA's code: eigendecomposition in float64, negative eigenvalues (round-off, or a rank-deficient
    C) clamped to the smallest positive one so that Λ^{-1/2} exists.
    """
    eigenvalues, Q = torch.linalg.eigh(input_moment.double())
    positive = eigenvalues[eigenvalues > 0]
    floor = positive.min() if positive.numel() else torch.tensor(1.0, dtype=torch.float64)
    eigenvalues = torch.where(eigenvalues > 0, eigenvalues, floor)
    root = eigenvalues.sqrt()
    U, S, Vh = torch.linalg.svd(error.double() @ (Q * root), full_matrices=False)
    B, A_whitened = LowRankFactors(U[:, :rank], S[:rank], Vh[:rank]).split()
    A = (A_whitened / root) @ Q.T
    return B.to(error.dtype), A.to(error.dtype)
