"""Choosing a rank from a spectrum: by the share of energy kept, or by a singular-value floor.

For singular values σ_1 ≥ σ_2 ≥ … ≥ σ_n:
    energy_rank(σ, e)     = the smallest k with Σ_{i≤k} σ_i² / Σ_i σ_i² ≥ e    (TRP's EnergyThreshold)
    threshold_rank(σ, t)  = #{i : σ_i ≥ t}                                   (TRP's ValueThreshold)
Both return at least 1, so a layer is never factorized to nothing.
"""

from __future__ import annotations

import torch


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest k whose top-k singular values hold at least `energy` (in (0, 1]) of Σ σ²."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    squares = singular_values.detach().double().square()
    total = squares.sum()
    if total <= 0:
        return 1
    kept = squares.cumsum(0) / total
    # Rounding can leave the last share a hair under 1; the full rank always meets any e <= 1.
    k = int(torch.searchsorted(kept, torch.tensor([energy], dtype=kept.dtype)).item()) + 1
    return min(k, singular_values.numel())


def threshold_rank(singular_values: torch.Tensor, threshold: float) -> int:
    """How many singular values are at least `threshold` (at least 1)."""
    return max(1, int((singular_values.detach() >= threshold).sum()))
