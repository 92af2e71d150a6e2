"""OrthoMerge (Yang, Shi, Liu, "Orthogonal Model Merging", 2026): each fine-tune W_i of a layer is split
into a rotation of the base and a residual, W_i = W_0 R_i + Δ_i, R_i the orthogonal Procrustes fit; the
rotations are merged on the orthogonal group through the Cayley map (A_i = cayley⁻¹(R_i), A* =
mean‖A_i‖ · normalize(Σ A_i), R* = cayley(A*)) and the residuals by task arithmetic (λ = 0.2) or TIES
(λ = 1, density), giving W = W_0 R* + λ · merge(Δ_i). Variant "C" fits each rotation only to the rows of
Δ_i that conflict with the mean update. The math and its differences from the reference code are in
rankwise.linalg.orthogonal. The result is dense: saved as a model folder. Per-input weights are not
part of the method and are refused.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..linalg.orthogonal import orthomerge as orthomerge_layer
from .base import MergeConfig, deltas_at, register, union_paths


@register("orthomerge", "Orthogonal Model Merging (OrthoMerge)")
def orthomerge(base, updates, config: MergeConfig):
    if config.weights is not None and any(w != 1 for w in config.weights):
        raise ConfigError("orthomerge takes no per-input weights (its rotation merge averages them); use "
                          "scale for the residuals' λ.")
    density = config.density if config.density < 1 else 0.2  # the reference's TIES density
    result = {}
    for path in union_paths(updates):
        W0 = base[path].float()
        experts = [W0 + delta for delta in deltas_at(path, updates, base[path])]
        merged = orthomerge_layer(W0, experts, residual=config.residual, variant=config.variant,
                                  scale=config.scale, density=density)
        result[path] = merged - W0
    return result
