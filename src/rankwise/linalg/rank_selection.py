"""Choosing a rank from a spectrum (by the share of energy kept, or by a singular-value floor), and the
error of cutting a matrix to a rank.

For singular values σ_1 ≥ σ_2 ≥ … ≥ σ_n:
    energy_rank(σ, e)     = the smallest k with Σ_{i≤k} σ_i² / Σ_i σ_i² ≥ e    (TRP's EnergyThreshold)
    threshold_rank(σ, t)  = #{i : σ_i ≥ t}                                   (TRP's ValueThreshold)
    truncation_error(σ, k) = √(Σ_{i>k} σ_i² / Σ_i σ_i²) = ‖M − M_k‖_F / ‖M‖_F  (Eckart–Young, M_k the SVD cut)
The two rank rules return at least 1, so a layer is never factorized to nothing. WeLore's labels
(welore_label, and the global threshold welore_tau) live here too: analyze reports them and
compress.welore acts on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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


def truncation_error(singular_values: torch.Tensor, rank: int) -> float:
    """‖M − M_k‖_F / ‖M‖_F of the best rank-k approximation M_k, from M's singular values (0 for M = 0)."""
    squares = singular_values.detach().double().square()
    total = squares.sum()
    if total <= 0:
        return 0.0
    # Summing the tail (not 1 − kept share) keeps tiny errors exact rather than lost to cancellation.
    return float((squares[rank:].sum() / total).sqrt())


def threshold_rank(singular_values: torch.Tensor, threshold: float) -> int:
    """How many singular values are at least `threshold` (at least 1)."""
    return max(1, int((singular_values.detach() >= threshold).sum()))


def _prune_count(s: np.ndarray, tau: float) -> int:
    """k_prune = #{i : σ̂_i < τ} with σ̂ = (σ − min σ)/(max σ − min σ) (WeLore's min–max normalisation)."""
    span = s.max() - s.min()
    if span <= 0:
        return 0  # a flat spectrum has no "small" singular values to drop
    return int(((s - s.min()) / span < tau).sum())


def welore_label(s: Sequence[float], tau: float, min_ratio: float = 0.0) -> dict:
    """WeLore (Jaiswal et al.): is this matrix a low-rank component (LRC) at the global threshold τ?

    k_prune = #{i : σ̂_i < τ}, kept rank k = rank − k_prune; the matrix is an "LRC" (factorised and
    trained) when k_prune / rank > min_ratio, otherwise an "N-LRC" (kept dense and frozen).
    min_ratio = 0.0 is the repo's default; note the minimum σ always normalises to 0 < τ, so at
    τ > 0 that default labels every matrix an LRC, which is why analyze_weights passes a larger one.
    """
    s = np.asarray(s, dtype=np.float64)
    k_prune = _prune_count(s, tau)
    ratio = k_prune / len(s) if len(s) else 0.0
    return {"label": "LRC" if ratio > min_ratio else "N-LRC", "k_prune": k_prune,
            "rank_kept": len(s) - k_prune, "prune_ratio": ratio}


def welore_tau(spectra: Sequence[Sequence[float]], reduction: float, iters: int = 60) -> float:
    """The global τ whose total rank reduction Σ k_prune / Σ rank is closest to `reduction` from above.

    The total reduction is monotone in τ, so bisection on [0, 1] finds it (the WeLore repo hard-codes τ
    for LLaMA-2; for any other model the notes suggest this search).
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in spectra]
    total = sum(len(s) for s in arrays)
    lo, hi = 0.0, 1.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        pruned = sum(_prune_count(s, mid) for s in arrays)
        if pruned / total < reduction:
            lo = mid
        else:
            hi = mid
    return hi
