"""OrthoMerge — orthogonal–residual decoupling (Yang, Shi, Liu, 2026; code: Sphere-AI-Lab/OrthoMerge).

Each expert W_i of a layer (out, in) is split into a rotation of the base and a residual:
    R_i = argmin_{R ∈ O(in)} ‖W_0 R − T_i‖_F = U Vᵀ  where  U S Vᵀ = svd(W_0ᵀ T_i)   (Procrustes),
    A_i = (R_i + I)⁻¹(R_i − I), skew-symmetrized      (inverse Cayley; R = (I − A)⁻¹(I + A) forward),
    Δ_i = W_i − W_0 Cayley(A_i)                       (the residual, against the rotation actually kept).
The rotations merge in the Lie algebra with a magnitude correction, θ_i = ‖A_i‖_F:
    A* = θ* · (Σ_i A_i) / ‖Σ_i A_i‖_F,  θ* = mean_i θ_i (or median, max),  R* = Cayley(A*),
so ‖A*‖ = mean ‖A_i‖ where a plain average would shrink it. The result is
    W = W_0 R* + λ · merge(Δ_1, …, Δ_n)
with merge = Task Arithmetic (a plain sum, λ = 0.2) or TIES (disjoint mean, λ = 1.0), the scales of the
reference scripts `OrthoMerge_{G,C}_{TA,TIES}.py`. Variant G uses T_i = W_i. Variant C ("conflict") uses
T_i = W_0 + Δ⁰_i ⊙ 1[⟨Δ⁰_i row, mean_j Δ⁰_j row⟩ < 0] with Δ⁰_i = W_i − W_0, so only the rows that
conflict with the consensus drive the rotation (the reference tests cosine < 0, which has the same sign).

Where rankwise differs from the reference code, and why:
- Procrustes on a wide layer (out < in, e.g. GQA k/v projections): W_0ᵀT_i has rank ≤ out, so U Vᵀ is
  fixed only on its range; LAPACK fills the rest with noise singular vectors, R_i then has eigenvalues
  near −1 and the inverse Cayley explodes (even for T_i = W_0). Among all minimizers we return the one
  nearest the identity (on the null space, the polar factor of the two null bases' overlap). It is the
  same U Vᵀ whenever W_0ᵀT_i has full rank.
- TIES trims each layer's residual (mergekit's rule, `merging.ties`); the reference trims the whole
  model's flattened residual at one threshold.
- The median of an even count of θ_i is the lower middle value, as torch (and the reference) computes it.
Rotations that are reflections (det −1) have no Cayley preimage; fine-tunes stay near the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError
from .merging import task_arithmetic, ties

MAGNITUDES = ("mean", "median", "max")


def _work(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.promote_types(t.dtype, torch.float32))


def _eye_like(M: torch.Tensor) -> torch.Tensor:
    return torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)


def skew(A: torch.Tensor) -> torch.Tensor:
    """(A − Aᵀ)/2 over the last two dims: the nearest skew-symmetric matrix."""
    return 0.5 * (A - A.transpose(-1, -2))


def cayley(A: torch.Tensor) -> torch.Tensor:
    """R = (I − A)⁻¹(I + A): orthogonal, without eigenvalue −1, for skew-symmetric A (batched)."""
    A = _work(A)
    I = _eye_like(A)
    return torch.linalg.solve(I - A, I + A)


def inverse_cayley(R: torch.Tensor) -> torch.Tensor:
    """A = (R + I)⁻¹(R − I), skew-symmetrized against round-off: the inverse of `cayley`."""
    R = _work(R)
    I = _eye_like(R)
    return skew(torch.linalg.solve(R + I, R - I))


def procrustes_rotation(W0: torch.Tensor, Wi: torch.Tensor) -> torch.Tensor:
    """R (in, in) orthogonal minimizing ‖W0 R − Wi‖_F: U Vᵀ from svd(W0ᵀ Wi), completed on the
    rank-deficient part by the minimizer nearest the identity (module docstring)."""
    W0, Wi = _work(W0), _work(Wi)
    U, S, Vh = torch.linalg.svd(W0.T @ Wi)
    tol = S[0] * S.numel() * torch.finfo(S.dtype).eps
    rank = int((S > tol).sum())
    R = U[:, :rank] @ Vh[:rank]
    if rank < S.numel():
        U_null, V_null = U[:, rank:], Vh[rank:].T
        # max tr(U_null Q V_nullᵀ) over orthogonal Q: Q is the polar factor of U_nullᵀ V_null
        P, _, Qh = torch.linalg.svd(U_null.T @ V_null)
        R = R + U_null @ (P @ Qh) @ V_null.T
    return R


def merge_rotations(As: Sequence[torch.Tensor], how: str = "mean") -> torch.Tensor:
    """A* = θ* · normalize(Σ_i A_i), θ* the mean/median/max of ‖A_i‖_F over all entries of each A_i (a stack
    of OFT blocks counts as one). A zero direction gives A* = 0 (R* = I), as the reference does."""
    if how not in MAGNITUDES:
        raise ConfigError(f"how={how!r} is not one of {list(MAGNITUDES)}")
    if len(As) == 0:
        raise ConfigError("no rotations to merge; give at least one skew-symmetric matrix")
    for i, A in enumerate(As):
        if A.shape != As[0].shape:
            raise ConfigError(f"input {i} has shape {tuple(A.shape)} but input 0 has {tuple(As[0].shape)}")
    stacked = torch.stack([_work(A) for A in As])
    theta = torch.linalg.vector_norm(stacked.flatten(1), dim=1)
    direction = stacked.sum(0)
    length = torch.linalg.vector_norm(direction)
    if length < 1e-8:
        return torch.zeros_like(direction)
    magnitude = {"mean": theta.mean, "median": theta.median, "max": theta.max}[how]()
    return skew(direction * (magnitude / length))


def conflict_targets(W0: torch.Tensor, experts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Variant C's Procrustes targets: W_0 plus only the rows of Δ⁰_i that point against the mean delta."""
    W0 = _work(W0)
    deltas = [_work(W) - W0 for W in experts]
    mean = torch.stack(deltas).mean(0)
    return [W0 + d * ((d * mean).sum(1, keepdim=True) < 0) for d in deltas]


def orthomerge(W0: torch.Tensor, experts: Sequence[torch.Tensor], residual: str = "ta", variant: str = "G",
               scale: float | None = None, density: float = 0.2, how: str = "mean") -> torch.Tensor:
    """The merged weight W_0 R* + λ · merge(Δ_i) of one 2-D layer (module docstring). λ defaults to the
    reference's 0.2 for "ta" and 1.0 for "ties"; `density` is TIES's kept fraction (reference: 0.2)."""
    if residual not in ("ta", "ties"):
        raise ConfigError(f"residual={residual!r} is not one of ['ta', 'ties']")
    if variant not in ("G", "C"):
        raise ConfigError(f"variant={variant!r} is not one of ['G', 'C']")
    if W0.dim() != 2:
        raise ConfigError(f"orthomerge works on 2-D weights; the base has shape {tuple(W0.shape)}")
    if len(experts) == 0:
        raise ConfigError("no experts to merge; give at least one")
    for i, W in enumerate(experts):
        if W.shape != W0.shape:
            raise ConfigError(f"expert {i} has shape {tuple(W.shape)} but the base has {tuple(W0.shape)}; "
                              "experts must be fine-tunes of this base layer")
    base = _work(W0)
    targets = conflict_targets(base, experts) if variant == "C" else [_work(W) for W in experts]
    As = [inverse_cayley(procrustes_rotation(base, T)) for T in targets]
    rotated = base @ cayley(merge_rotations(As, how))
    residuals = [_work(W) - base @ cayley(A) for W, A in zip(experts, As)]
    ones = [1.0] * len(experts)
    if residual == "ta":
        merged, scale = task_arithmetic(residuals, ones), 0.2 if scale is None else scale
    else:
        merged, scale = ties(residuals, ones, density), 1.0 if scale is None else scale
    return rotated + scale * merged
