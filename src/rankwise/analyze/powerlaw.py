"""Heavy-tailed self-regularisation (Martin & Mahoney; the WeightWatcher tool): the power-law exponent α.

ESD: the eigenvalues of X = WᵀW, λ_i = σ_i². WeightWatcher 0.7.7 does *not* divide by N by default
(its `normalize` option, off by default, scales W by 1/√N first, i.e. λ = σ²/N); rankwise follows the
default so α, xmin and D match `weightwatcher` out of the box. α itself is scale-invariant anyway:
scaling every λ by c scales xmin by c and leaves α and D unchanged.

Fit (Clauset, Shalizi & Newman 2009, as WeightWatcher's WWFit implements it): for every candidate
xmin among the sorted λ (all but the largest),
    α(xmin) = 1 + n / Σ_{λ_i ≥ xmin} ln(λ_i / xmin)                         (continuous MLE, n tail points)
    D(xmin) = max_i |(1 − (λ_i/xmin)^{1−α}) − i/n|,  i = 0 … n−1 over the sorted tail   (KS distance)
and keep the xmin with the smallest D. Standard error σ_α = (α − 1)/√n.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["esd", "powerlaw_alpha"]


def esd(s: Sequence[float], normalize_by: int | None = None) -> list[float]:
    """Eigenvalues of WᵀW from the singular values: λ = σ² (or σ²/N with normalize_by=N)."""
    lam = np.asarray(s, dtype=np.float64) ** 2
    return (lam / normalize_by if normalize_by else lam).tolist()


def powerlaw_alpha(eigenvalues: Sequence[float], min_evals: int = 10, thresh: float = 0.0) -> dict:
    """Fit a continuous power law to the tail of `eigenvalues`; xmin minimises the KS distance.

    Returns {"alpha", "xmin", "D", "sigma", "n_tail", "n"}; alpha is NaN-free: with fewer than
    `min_evals` eigenvalues (WeightWatcher's default skip size) every field but "n" is None.
    `thresh` drops eigenvalues ≤ thresh first (0 keeps all positive ones; log of 0 is undefined).
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    lam = lam[lam > thresh]
    N = len(lam)
    if N < max(min_evals, 2):
        return {"alpha": None, "xmin": None, "D": None, "sigma": None, "n_tail": None, "n": N}
    log_lam = np.log(lam)
    # Suffix sums give Σ_{j ≥ i} ln λ_j for every candidate i in one pass: O(N) for all α.
    suffix = np.cumsum(log_lam[::-1])[::-1][:-1]
    n = (N - np.arange(N - 1)).astype(np.float64)
    alphas = 1.0 + n / (suffix - n * log_lam[:-1])
    Ds = np.ones(N - 1)
    for i in range(N - 1):  # KS per candidate: O(N²) in total, fine for N ≤ a few thousand
        if alphas[i] > 1:  # α ≤ 1 is not a normalisable power law; WWFit leaves D = 1 there too
            tail = lam[i:]
            Ds[i] = np.abs(1 - (tail / lam[i]) ** (1 - alphas[i]) - np.arange(n[i]) / n[i]).max()
    best = int(np.argmin(Ds))
    alpha = float(alphas[best])
    return {"alpha": alpha, "xmin": float(lam[best]), "D": float(Ds[best]),
            "sigma": (alpha - 1) / float(np.sqrt(n[best])), "n_tail": int(n[best]), "n": N}
