"""Low-rank merges of plain LoRA inputs (ΔW_i = B_i A_i exactly), saved as a LoRA adapter:

    cat   B = [B_1 | … | B_n], A = [w_1 A_1; …; w_n A_n]: B A = Σ w_i B_i A_i exactly, rank Σ r_i
          (PEFT's add_weighted_adapter "cat")
    svd   Σ w_i ΔW_i truncated to its best rank-r approximation (Eckart–Young; PEFT's "svd"), for any
          mergeable inputs; rank defaults to the largest input rank when the inputs are low-rank
"""

from __future__ import annotations

from ..errors import ConfigError
from ..linalg import merging
from .base import MergeConfig, deltas_at, register, union_paths


def concatenated(updates, weights: list[float]) -> dict:
    """{path: (B, A)} of Σ w_i B_i A_i by concatenation; a layer an input leaves alone contributes nothing."""
    result = {}
    for path in union_paths(updates):
        present = [(u.factors[path], w) for u, w in zip(updates, weights) if path in u.factors]
        result[path] = merging.concatenate_factors([f for f, _ in present], [w for _, w in present])
    return result


@register("cat", "exact concatenation of LoRA factors (PEFT's add_weighted_adapter cat)", needs_low_rank=True)
def cat(base, updates, config: MergeConfig):
    return concatenated(updates, config.weights_for(len(updates)))


@register("svd", "combine, then truncate to rank r (PEFT's add_weighted_adapter svd)")
def svd(base, updates, config: MergeConfig):
    rank = config.rank
    if rank is None:
        ranks = [f[1].shape[0] for u in updates for f in u.factors.values()]
        if not ranks:
            raise ConfigError("svd needs rank=R when the inputs are not LoRA adapters (e.g. model folders).")
        rank = max(ranks)
    weights = config.weights_for(len(updates))
    return {path: merging.truncate(merging.task_arithmetic(deltas_at(path, updates, base[path]), weights),
                                   min(rank, *base[path].shape))
            for path in union_paths(updates)}
