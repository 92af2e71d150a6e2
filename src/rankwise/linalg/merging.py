"""Euclidean merges of task deltas Δ_i = W_i − W_0 of one layer, and exact/truncated low-rank combinations.

- Task arithmetic (Ilharco et al. 2023, arXiv 2212.04089):  Δ = Σ_i w_i Δ_i  (÷ Σ_i w_i when `normalize`).
- TIES-Merging (Yadav et al. 2023, "Resolving Interference When Merging Models", arXiv 2306.01708):
  trim each Δ_i to its top-density entries by magnitude (Δ̂_i), elect a sign per entry
  γ = sgn(Σ_i w_i Δ̂_i) (0 counts as +), keep the entries agreeing with it, m_i = [sgn(w_i Δ̂_i) = γ]:
      Δ = Σ_i m_i w_i Δ̂_i / Σ_i m_i w_i      (a divisor of 0 becomes 1).
- DARE (Yu et al. 2023, "Language Models are Super Mario", arXiv 2311.03099): drop each entry with
  probability 1 − density and rescale the kept ones, then combine linearly (dare-linear) or with TIES's
  sign election (dare-ties).

Semantics are mergekit's (arcee-ai/mergekit 0.1.x, `merge_methods/generalized_task_arithmetic.py`,
`sparsify.py`) with mergekit's defaults, so that merged weights agree with mergekit to float rounding:
- the trim keeps exactly k = int(density · numel) entries of each tensor (Python float product, floored);
  density 1 skips the trim; k = 0 is an error. Ties at the k-th magnitude go to the lower flat index
  (mergekit leaves them to torch's unstable argsort). The TIES paper trims the whole model's flattened
  task vector at once; mergekit, and we, trim each tensor;
- weights multiply the deltas BEFORE the sign election; election "sum" (the paper's, mergekit's default)
  or "count" (majority of signs); the divisor is Σ w_i over the agreeing entries;
- defaults: ties normalize=True; task_arithmetic, dare-linear and dare-ties normalize=False (so dare-ties
  is a disjoint weighted SUM, as in mergekit); mergekit's global `lambda` is a plain factor callers apply;
- DARE's masks are torch.bernoulli(full(density)) drawn from `generator`: the same draws mergekit makes
  from the global RNG in the same state. Deliberate difference: mergekit ≥ 0.0.6 (PR #245) rescales the kept
  entries to the dropped tensor's original L1 norm (`rescale="l1"` here gives that, bit for bit);
  rankwise's default is the paper's 1/density, which makes dare-linear exactly unbiased.

Everything is computed in float32 (float64 inputs stay float64).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError
from .svd import svd_factors

CONSENSUS = ("sum", "count")
RESCALE = ("density", "l1", None)


def _work_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.promote_types(tensor.dtype, torch.float32)


def _stack(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, *shape) deltas and (n, 1, ..., 1) weights, after checking counts and shapes."""
    if len(deltas) == 0:
        raise ConfigError("no inputs to merge; give at least one delta")
    if len(weights) != len(deltas):
        raise ConfigError(f"got {len(weights)} weights for {len(deltas)} inputs; give one weight per input")
    for i, delta in enumerate(deltas):
        if delta.shape != deltas[0].shape:
            raise ConfigError(f"input {i} has shape {tuple(delta.shape)} but input 0 has "
                              f"{tuple(deltas[0].shape)}; merge deltas of the same layer")
    dtype = _work_dtype(deltas[0])
    stacked = torch.stack([delta.detach().to(dtype) for delta in deltas])
    w = torch.tensor([float(x) for x in weights], dtype=dtype, device=stacked.device)
    return stacked, w.view(-1, *([1] * deltas[0].dim()))


def _densities(density: float | Sequence[float], count: int, numel: int) -> list[float]:
    """One density per input (a scalar is shared), each in (0, 1] and keeping at least one entry."""
    values = [density] * count if isinstance(density, (int, float)) else list(density)
    if len(values) != count:
        raise ConfigError(f"got {len(values)} densities for {count} inputs; give one, or one per input")
    for i, d in enumerate(values):
        if not 0 < d <= 1:  # also rejects NaN
            raise ConfigError(f"density {d} of input {i} is outside (0, 1]; give the kept fraction")
        if d < 1 and int(d * numel) == 0:
            raise ConfigError(f"density {d} keeps no entry of input {i} ({numel} entries); raise the density")
    return [float(d) for d in values]


def magnitude_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Δ with all but its k = int(density · numel) largest-magnitude entries set to zero (TIES's trim)."""
    if density >= 1:
        return delta
    keep = int(density * delta.numel())
    order = torch.argsort(delta.abs().flatten(), descending=True, stable=True)
    mask = torch.zeros(delta.numel(), dtype=torch.bool, device=delta.device)
    mask[order[:keep]] = True
    return delta * mask.view_as(delta)


def random_drop(delta: torch.Tensor, density: float, generator: torch.Generator | None,
                rescale: str | None = "density") -> torch.Tensor:
    """DARE's drop: keep each entry with probability `density`, then rescale the kept ones by 1/density
    ("density", the paper), to the original L1 norm ("l1", mergekit), or not at all (None)."""
    if density >= 1:  # like mergekit, no random draw at all
        return delta
    kept = delta * torch.bernoulli(torch.full_like(delta, density), generator=generator)
    if rescale == "density":
        return kept / density
    if rescale == "l1":
        before, after = delta.abs().sum(), kept.abs().sum()
        return kept if before < 1e-7 or after < 1e-7 else kept * (before / after)
    return kept


def sign_agreement(weighted: torch.Tensor, consensus: str = "sum") -> torch.Tensor:
    """Boolean (n, ...) mask of the entries whose sign equals the elected one (zeros never agree)."""
    signs = weighted.sign()
    total = weighted.sum(0) if consensus == "sum" else signs.sum(0)
    return signs == torch.where(total >= 0, 1.0, -1.0).to(signs.dtype)


def _combine(stacked: torch.Tensor, w: torch.Tensor, consensus: str | None, normalize: bool) -> torch.Tensor:
    weighted = stacked * w
    if consensus is None:
        merged, divisor = weighted.sum(0), w.sum(0)
        divisor[divisor.abs() < 1e-8] = 1
    else:
        mask = sign_agreement(weighted, consensus)
        merged, divisor = (weighted * mask).sum(0), (w * mask).sum(0)
        divisor[divisor == 0] = 1
    return merged / divisor if normalize else merged


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {list(allowed)}")


def task_arithmetic(deltas: Sequence[torch.Tensor], weights: Sequence[float], normalize: bool = False
                    ) -> torch.Tensor:
    """Σ_i w_i Δ_i; with `normalize`, divided by Σ_i w_i (mergekit's `linear` on the full weights)."""
    stacked, w = _stack(deltas, weights)
    return _combine(stacked, w, None, normalize)


def ties(deltas: Sequence[torch.Tensor], weights: Sequence[float], density: float | Sequence[float],
         consensus: str = "sum", normalize: bool = True) -> torch.Tensor:
    """TIES-Merging: trim, elect sign, disjoint weighted mean (module docstring)."""
    _check_choice("consensus", consensus, CONSENSUS)
    stacked, w = _stack(deltas, weights)
    densities = _densities(density, len(deltas), stacked[0].numel())
    trimmed = torch.stack([magnitude_trim(d, p) for d, p in zip(stacked, densities)])
    return _combine(trimmed, w, consensus, normalize)


def dare(deltas: Sequence[torch.Tensor], weights: Sequence[float], density: float | Sequence[float],
         generator: torch.Generator | None, sign_election: bool = False, rescale: str | None = "density",
         normalize: bool = False, consensus: str = "sum") -> torch.Tensor:
    """DARE: random drop + rescale of each Δ_i, in input order from `generator`, then a linear combination
    (dare-linear) or TIES's sign election and disjoint combination (dare-ties, `sign_election=True`)."""
    _check_choice("rescale", rescale, RESCALE)
    _check_choice("consensus", consensus, CONSENSUS)
    stacked, w = _stack(deltas, weights)
    densities = _densities(density, len(deltas), stacked[0].numel())
    dropped = torch.stack([random_drop(d, p, generator, rescale) for d, p in zip(stacked, densities)])
    return _combine(dropped, w, consensus if sign_election else None, normalize)


def truncate(delta: torch.Tensor, rank: int, power_iters: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B (out, rank), A (rank, in)) with B A the best rank-`rank` approximation of `delta` (Eckart–Young):
    PEFT's "svd" combination is truncate(task_arithmetic(...), rank). √S goes to both factors."""
    if delta.dim() != 2:
        raise ConfigError(f"truncate needs a 2-D delta, got shape {tuple(delta.shape)}")
    if not 1 <= rank <= min(delta.shape):
        raise ConfigError(f"rank {rank} is outside [1, {min(delta.shape)}] for a delta of shape "
                          f"{tuple(delta.shape)}; pick a rank at most min(out, in)")
    return svd_factors(delta, rank, power_iters)


def concatenate_factors(factors: Sequence[tuple[torch.Tensor, torch.Tensor]], weights: Sequence[float]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """PEFT's "cat": B = [B_1 | … | B_n], A = [w_1 A_1; …; w_n A_n], so that B A = Σ_i w_i B_i A_i exactly,
    at rank Σ_i r_i. As PEFT, the weight goes on A (any sign works). Scale B_i A_i (e.g. α/r) beforehand."""
    if len(factors) == 0:
        raise ConfigError("no inputs to concatenate; give at least one (B, A) pair")
    if len(weights) != len(factors):
        raise ConfigError(f"got {len(weights)} weights for {len(factors)} inputs; give one weight per input")
    out, inp = factors[0][0].shape[0], factors[0][1].shape[-1]
    for i, (B, A) in enumerate(factors):
        if B.dim() != 2 or A.dim() != 2 or B.shape[1] != A.shape[0] or (B.shape[0], A.shape[1]) != (out, inp):
            raise ConfigError(f"input {i} has B {tuple(B.shape)} and A {tuple(A.shape)}; every input needs "
                              f"B (out={out}, r_i) and A (r_i, in={inp})")
    dtype = _work_dtype(factors[0][0])
    B = torch.cat([B.detach().to(dtype) for B, _ in factors], dim=1)
    A = torch.cat([float(w) * A.detach().to(dtype) for (_, A), w in zip(factors, weights)], dim=0)
    return B, A
