"""RMM — "Towards Reversible Model Merging for Low-rank Weights" (Alipour, Mohammadi Amiri, 2025,
arXiv 2510.14163). No reference code was found; this follows the paper's abstract and its method summary.

n tasks adapt one layer with rank-r factors, ΔW_i = B_i A_i, B_i (m, r), A_i (r, d) (the paper writes
them A_i (m×r) B_i (r×d)). Instead of collapsing them into one model, RMM keeps a basis of k "models"
and per-task coefficients from which every task is rebuilt ("reverted") by a linear combination.
Per layer and per task-vector position p (a row of B, or a column of A), the n tasks' r-vectors form
X_p ∈ R^{r×n}, and
    min_{P_p, C_p} ‖X_p − P_p C_p‖_F,   P_p ∈ R^{r×k},  C_p ∈ R^{k×n}
is solved in closed form by the truncated SVD (Eckart–Young): P_p = U_k, C_p = P_pᵀ X_p = S_k V_kᵀ.
Basis model t is (B⁽ᵗ⁾, A⁽ᵗ⁾), whose row p of B (or column p of A) is column t of P_p; task i at position p
is P_p C_p[:, i].

Choices (the summary leaves them open), and why:
- Target: the factors (B_i, A_i), not the products B_i A_i. A reverted task is again a rank-r adapter,
  and the basis costs k adapters, not k dense m×d matrices. The error is optimal for the factors; the
  product error follows (ΔW_i − ΔŴ_i = (B_i − B̂_i)A_i + B̂_i(A_i − Â_i)), but is not itself minimized.
- Coefficients per position (default), as the method summary states the problem per position: the
  lowest error for a k-model basis, at the cost of k·n numbers per position. `shared=True` instead
  solves one problem for the whole layer (all positions stacked, X ∈ R^{(m+d)r×n}): the basis is the
  same size and the coefficients shrink to k·n per layer, at a higher error.
- No centering: the problem above has no offset term, a mean would be a (k+1)-th stored model, and
  without it k counts exactly the stored models. k = n (or k ≥ r per position) is exact.
SVDs run in float32 (float64 inputs stay float64).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError

Basis = tuple[torch.Tensor, torch.Tensor]          # B_basis (k, m, r), A_basis (k, r, d)
Coefficients = tuple[torch.Tensor, torch.Tensor]   # C_B (m or 1, k, n), C_A (d or 1, k, n)


def _check(factors: Sequence[tuple[torch.Tensor, torch.Tensor]], k: int) -> None:
    if len(factors) == 0:
        raise ConfigError("no tasks given; RMM needs the (B, A) factors of at least one task")
    B0, A0 = factors[0]
    for i, (B, A) in enumerate(factors):
        if B.dim() != 2 or A.dim() != 2 or B.shape[1] != A.shape[0]:
            raise ConfigError(f"task {i} has B {tuple(B.shape)} and A {tuple(A.shape)}; "
                              "give B (out, r) and A (r, in)")
        if B.shape != B0.shape or A.shape != A0.shape:
            raise ConfigError(f"task {i} has B {tuple(B.shape)}, A {tuple(A.shape)} but task 0 has "
                              f"B {tuple(B0.shape)}, A {tuple(A0.shape)}; RMM needs the same layer and rank")
    if not 1 <= k <= len(factors):
        raise ConfigError(f"k={k} basis models for {len(factors)} tasks; pick 1 ≤ k ≤ {len(factors)}")


def _principal(X: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Eckart–Young: X (G, D, n) ≈ P (G, D, k) @ C (G, k, n), P orthonormal, C = Pᵀ X.
    When D < k the missing directions are zero columns (reconstruction is already exact)."""
    U = torch.linalg.svd(X, full_matrices=False).U[..., :k]
    P = torch.nn.functional.pad(U, (0, k - U.shape[-1]))
    return P, P.transpose(-1, -2) @ X


def rmm_basis(factors: Sequence[tuple[torch.Tensor, torch.Tensor]], k: int, shared: bool = False
              ) -> tuple[Basis, Coefficients]:
    """The k-model basis and the coefficients of n tasks' (B_i, A_i) factors of one layer (module docs)."""
    _check(factors, k)
    dtype = torch.promote_types(factors[0][0].dtype, torch.float32)
    # (positions, r, n): rows of every B_i, then columns of every A_i
    X_B = torch.stack([B.detach().to(dtype) for B, _ in factors], dim=-1)
    X_A = torch.stack([A.detach().to(dtype).T for _, A in factors], dim=-1)
    m, r, n = X_B.shape
    if shared:
        P, C = _principal(torch.cat([X_B, X_A]).reshape(1, -1, n), k)
        P = P.reshape(-1, r, k)
        P_B, P_A, C_B, C_A = P[:m], P[m:], C, C
    else:
        (P_B, C_B), (P_A, C_A) = _principal(X_B, k), _principal(X_A, k)
    return (P_B.permute(2, 0, 1), P_A.permute(2, 1, 0)), (C_B, C_A)


def rmm_revert(basis: Basis, coefficients: Coefficients, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Task i's factors (B_i (m, r), A_i (r, d)) rebuilt from the basis and its coefficients."""
    (B_basis, A_basis), (C_B, C_A) = basis, coefficients
    n = C_B.shape[-1]
    if not -n <= i < n:
        raise ConfigError(f"task index {i} is out of range for {n} merged tasks")
    weights_B = C_B[:, :, i].T[:, :, None]   # (k, m or 1, 1)
    weights_A = C_A[:, :, i].T[:, None, :]   # (k, 1, d or 1)
    return (B_basis * weights_B).sum(0), (A_basis * weights_A).sum(0)
