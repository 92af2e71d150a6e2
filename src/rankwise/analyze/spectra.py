"""Spectral summaries of one weight matrix: singular values, effective rank, stable rank, WeLore labels.

All math runs in float32 (the SVD, as everywhere in rankwise) and float64 (the reductions); every
function returns plain Python data so results go straight into JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["singular_values", "effective_rank", "stable_rank", "welore_label", "welore_tau"]


def singular_values(W: torch.Tensor) -> list[float]:
    """σ_1 ≥ σ_2 ≥ … ≥ σ_min(m,n) of W (out × in), computed in float32 on W's device."""
    s = torch.linalg.svdvals(W.detach().to(torch.float32))
    return s.double().cpu().tolist()


def effective_rank(s: Sequence[float]) -> float:
    """Roy & Vetterli (2007): erank = exp(H(p)), p_i = σ_i / Σ_j σ_j, H(p) = −Σ p_i ln p_i.

    1 for a rank-1 matrix, r for r equal singular values; zero σ contribute nothing (0·ln 0 = 0).
    """
    s = np.asarray(s, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(math.exp(-(p * np.log(p)).sum()))


def stable_rank(s: Sequence[float]) -> float:
    """‖W‖_F² / ‖W‖_2² = Σ σ_i² / σ_1²: a smooth lower bound of the rank (1 ≤ srank ≤ rank)."""
    s = np.asarray(s, dtype=np.float64)
    top = s.max(initial=0.0)
    return float((s ** 2).sum() / top ** 2) if top > 0 else 0.0


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
