"""Spectral summaries of one weight matrix: singular values, effective rank, stable rank, WeLore labels.

All math runs in float32 (the SVD, as everywhere in rankwise) and float64 (the reductions); every
function returns plain Python data so results go straight into JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..linalg.rank_selection import welore_label, welore_tau  # shared with compress.welore

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
