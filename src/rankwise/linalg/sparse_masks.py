"""Sparse weight masks and sparse updates, as flat indices into a (out, in) weight; no nn.Module here.

A sparse update is a pair (indices, values): `indices` are flat positions row * in + col of a
(out, in) matrix, `values` the entries there. Masks are chosen by magnitude (SaRA's smallest weights)
or by magnitude after a rank-r approximation (LIFT's "principal weights"). SVDs run in float32.
"""

from __future__ import annotations

import torch

from .svd import top_svd


def scatter_flat(indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Dense (out, in) matrix with `values` at flat `indices` (summed where repeated), zero elsewhere.

    Differentiable in `values`: the gradient is the dense gradient gathered at `indices`.
    """
    flat = torch.zeros(shape[0] * shape[1], dtype=values.dtype, device=values.device)
    return flat.index_add(0, indices, values).view(shape)


def smallest_magnitude_indices(weight: torch.Tensor, count: int) -> torch.Tensor:
    """Sorted flat indices of the `count` entries of smallest |weight|."""
    magnitudes = weight.detach().abs().flatten().float()
    return torch.topk(magnitudes, count, largest=False).indices.sort().values


def low_rank_magnitudes(weight: torch.Tensor, rank: int, svd_iters: int = 0) -> torch.Tensor:
    """|W_r|, the entrywise magnitude of W's best rank-`rank` approximation
    (randomized SVD if svd_iters > 0).
    """
    svd = top_svd(weight, rank, svd_iters)
    return svd.to_dense().abs()


def top_k_within_capacity(
    scores: torch.Tensor, count: int, support: torch.Tensor, capacity: int
) -> tuple[torch.Tensor, bool]:
    """The `count` highest `scores` (flat), such that `support` ∪ chosen keeps at most `capacity` entries.

    `support` (bool, flat) marks positions that already hold a value. While the union fits, this is plain
    top-k; otherwise the lowest-scoring new positions are swapped for the best positions already in the
    support. Returns (indices in descending score order where possible, whether the capacity bound bit).
    """
    top = torch.topk(scores, count).indices
    fresh = ~support[top]
    overflow = int(support.sum()) + int(fresh.sum()) - capacity
    if overflow <= 0:
        return top, False
    kept_fresh = top[fresh][: int(fresh.sum()) - overflow]  # topk is sorted: drop the weakest new ones
    outside = support.clone()
    outside[top] = False
    candidates = torch.nonzero(outside).flatten()
    best_old = candidates[torch.topk(scores[candidates], overflow).indices]
    return torch.cat([top[~fresh], kept_fresh, best_old]), True
