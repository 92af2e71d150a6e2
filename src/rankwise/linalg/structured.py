"""Structured matrix forms used by adapters: pivoted LDU factors and tensor-train (TT) matrices.

LDU: W = P L D U with P a row permutation, L unit lower-triangular, D diagonal, U unit upper-triangular
(LU with partial pivoting, U's diagonal split off). P is kept as an index vector, never a dense matrix.

TT matrix (also called matrix product operator): a (∏ oₖ, ∏ iₖ) matrix given by d cores Gₖ of shape
(rₖ₋₁, oₖ, iₖ, rₖ), r₀ = r_d = 1, with
    M[(o₁…o_d), (i₁…i_d)] = G₁[:, o₁, i₁, :] G₂[:, o₂, i₂, :] ⋯ G_d[:, o_d, i_d, :]
(row-major multi-indices). `tt_matvec` applies it core by core without forming M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class LDUFactors:
    """W = (L diag(D) U)[rows], the pivoting as a row gather; rows (out,), L (out, k), D (k,), U (k, in)."""

    rows: torch.Tensor
    L: torch.Tensor
    D: torch.Tensor
    U: torch.Tensor

    def to_dense(self) -> torch.Tensor:
        return ((self.L * self.D) @ self.U)[self.rows]

    def permuted_lower(self) -> torch.Tensor:
        """P L as an (out, k) matrix: the rows of L in W's row order."""
        return self.L[self.rows]


def ldu(weight: torch.Tensor) -> LDUFactors:
    """Pivoted LDU decomposition of an (out, in) matrix, in float32; k = min(out, in).

    An exactly zero pivot (a rank-deficient W) keeps that row of U undivided, so to_dense is then exact
    only up to that row; adapters built on these factors stay exact at init either way.
    """
    P, L, U = torch.linalg.lu(weight.detach().float())
    D = torch.diagonal(U).clone()
    U = U / torch.where(D == 0, torch.ones_like(D), D)[:, None]
    rows = P.argmax(dim=1)  # (P M)[i] = M[rows[i]]
    return LDUFactors(rows, L, D, U)


def balanced_factors(n: int, parts: int) -> list[int]:
    """Split n into `parts` integer factors (product n) as equal as n's divisors allow, largest first."""
    factors, rest = [], n
    for left in range(parts, 1, -1):
        goal = rest ** (1 / left)
        divisors = [d for d in range(1, rest + 1) if rest % d == 0]
        pick = min(divisors, key=lambda d: (abs(math.log(d) - math.log(goal)), -d))
        factors.append(pick)
        rest //= pick
    factors.append(rest)
    return sorted(factors, reverse=True)


def tt_matvec(cores: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """M x for the TT matrix M of `cores`, on the last dimension of x (∏ iₖ) → (…, ∏ oₖ)."""
    lead = x.shape[:-1]
    t = x.reshape(-1, 1, x.shape[-1])  # (n, r₀ = 1, i₁ ⋯ i_d)
    for core in cores:
        r_in, _, i, r_out = core.shape
        t = t.reshape(t.shape[0], r_in, i, -1)  # (n, rₖ₋₁, iₖ, [iₖ₊₁ ⋯ i_d, o₁ ⋯ oₖ₋₁])
        t = torch.einsum("nrim,roij->njmo", t, core).reshape(t.shape[0], r_out, -1)
    return t.reshape(*lead, -1)  # what is left is (o₁ ⋯ o_d), row-major


def tt_transpose(cores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Cores of Mᵀ."""
    return [core.transpose(1, 2) for core in cores]


def tt_to_dense(cores: list[torch.Tensor]) -> torch.Tensor:
    """The full (∏ oₖ, ∏ iₖ) matrix, contracting the cores' rank indices one core at a time.

    Costs about ∏ oₖ · ∏ iₖ · r multiply-adds and no batch rows: cheaper than `tt_matvec` on a batch of
    more than a few dozen rows, whose intermediates are r times the activations' size.
    """
    full = cores[0][0]  # (o₁, i₁, r₁): r₀ = 1
    for core in cores[1:]:
        rows, cols, _ = full.shape
        _, o, i, r_out = core.shape
        full = torch.einsum("abr,rcdj->acbdj", full, core).reshape(rows * o, cols * i, r_out)
    return full[..., 0]  # r_d = 1
