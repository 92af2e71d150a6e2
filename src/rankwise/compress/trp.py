"""TRP: Trained Rank Pruning for Efficient Deep Neural Networks (Yuhui Xu et al., IJCAI 2020,
arXiv 2004.14566), for linear layers.

During training (TrainedRankPruning, any PyTorch loop), every `period` optimizer steps, for each
targeted weight W (out, in) with SVD U Σ Vᵀ and k = the smallest rank with Σ_{i≤k} σ_i² / Σ σ_i² ≥ e:
    W ← U_k Σ_k V_kᵀ                          (the projection, "trained rank pruning"; projection=True)
    ∇W ← ∇W + λ U_k V_kᵀ                      (nuclear-norm regulariser: a subgradient of λ‖W‖_*)
Then the trained weights are nearly low-rank, and the registered compressor `trp` factorizes them with no
retraining: the SVD cut where σ_i < `threshold` (the code's value threshold, 5e-2), or at the energy
rank for `energy`, or at a fixed `rank`, as y = B (A x) + b, B = U_k √Σ_k, A = √Σ_k V_kᵀ.
What trains: every entry of the targeted W (with the model's other parameters), by the user's loop.

Defaults follow the released code (yuhuixu1993/Trained-Rank-Pruning): e = 0.9, λ = 3e-4. `period`
defaults to 5, the value of the released training script (train_TPR.sh, `-dp 5`; the argparse default
is 1): an SVD of every targeted layer is the method's whole overhead, and 5 cuts it fivefold.
Paper vs code: the subgradient of ‖W‖_* is U Vᵀ over all nonzero singular values; the code, which we
follow, adds the truncated U_k V_kᵀ from the same SVD as the projection (with the projection on, the two
agree at the projected W), and only on the period's step (so the average regularisation is λ / period).
The code projects before each period step's forward pass, including the random initial weights at step
0; here the projection runs after the optimizer step that completes a period (the same weights reach the
next forward), and step 0 only gets the subgradient. The code's final decomposition is of convolutions
(channel, spatial or network-decoupling schemes); linear layers need only the one matrix SVD.
TrainedRankPruning is not a hook of rankwise's training loop: that loop's hooks visit adapters and
its checkpoints hold adapter tensors only, while TRP rewrites the base weights themselves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, TargetError
from ..linalg import LowRankFactors, truncated_svd
from ..linalg.rank_selection import energy_rank, threshold_rank
from ..surgery import make_plan, pattern_value
from .base import CompressConfig, SvdCompressor, register

PAPER_VALUE_THRESHOLD = 5e-2  # the code's ValueThreshold for the channel and spatial schemes


def energy_factors(weight: torch.Tensor, energy: float) -> LowRankFactors:
    """U_k, Σ_k, V_kᵀ of `weight` (float32 SVD), cut at the energy rank k for `energy`."""
    full = truncated_svd(weight, min(weight.shape))
    rank = energy_rank(full.S, energy)
    return LowRankFactors(full.U[:, :rank], full.S[:rank], full.Vh[:rank])


def nuclear_subgradient(factors: LowRankFactors) -> torch.Tensor:
    """U_k V_kᵀ: a subgradient of ‖·‖_* at U_k Σ_k V_kᵀ (the truncated one TRP's code adds to ∇W)."""
    return factors.U @ factors.Vh


def project(factors: LowRankFactors) -> torch.Tensor:
    """U_k Σ_k V_kᵀ: the best rank-k approximation the factors stand for (Eckart–Young)."""
    return factors.to_dense()


class TrainedRankPruning:
    """TRP's two training-time steps, for any PyTorch loop (step = optimizer steps taken so far):

        trp = TrainedRankPruning(model, targets=["fc1", "fc2"])
        for step, batch in enumerate(loader):
            loss_fn(model(batch)).backward()
            trp.after_backward(step)          # every period steps: ∇W += λ U_k V_kᵀ
            optimizer.step(); optimizer.zero_grad()
            trp.after_step(step + 1)          # every period steps: W ← U_k Σ_k V_kᵀ
        rankwise.compress(model, "trp")       # the final factorization, no retraining

    `step` may also be a rankwise StepContext. It keeps no state but the factors of the last projection
    (reused by the next after_backward, so each period costs one SVD per layer); resuming a run needs
    nothing from it.
    """

    def __init__(self, model: nn.Module, targets: Any = "all-linear", exclude: list[str] | None = None,
                 energy: float = 0.9, nuclear_weight: float = 3e-4, period: int = 5, projection: bool = True):
        if not (isinstance(energy, (int, float)) and 0 < energy <= 1):
            raise ConfigError(f"energy must be in (0, 1], got {energy!r}.")
        if not (isinstance(nuclear_weight, (int, float)) and nuclear_weight >= 0):
            raise ConfigError(f"nuclear_weight must be >= 0, got {nuclear_weight!r}.")
        if type(period) is not int or period < 1:
            raise ConfigError(f"period must be a positive integer, got {period!r}.")
        self.energy, self.nuclear_weight, self.period = energy, nuclear_weight, period
        self.projection = projection
        paths = make_plan(model, CompressConfig(targets=targets, exclude=list(exclude or [])))
        self.layers: dict[str, nn.Linear] = {}
        for path in paths:
            layer = model.get_submodule(path)
            if not isinstance(layer, nn.Linear):
                raise TargetError(f"{path} is a {type(layer).__name__}; TRP trains nn.Linear weights.")
            self.layers[path] = layer
        self._factors: dict[str, LowRankFactors] = {}  # from the last projection, for the next subgradient

    def _due(self, step: Any) -> bool:
        return int(getattr(step, "step", step)) % self.period == 0

    @torch.no_grad()
    def after_backward(self, step: Any) -> None:
        """Add λ U_k V_kᵀ to each targeted W.grad when `step` is a multiple of the period."""
        if not self._due(step) or self.nuclear_weight == 0:
            return
        for path, layer in self.layers.items():
            factors = self._factors.pop(path, None)
            if factors is None:  # no projection just before (step 0, or a loop that skips after_step)
                factors = energy_factors(layer.weight, self.energy)
            push = (self.nuclear_weight * nuclear_subgradient(factors)).to(layer.weight.dtype)
            if layer.weight.grad is None:
                layer.weight.grad = push
            else:
                layer.weight.grad.add_(push)

    @torch.no_grad()
    def after_step(self, step: Any) -> None:
        """Project each targeted W onto its energy rank when `step` is a multiple of the period."""
        if not self._due(step):
            return
        for path, layer in self.layers.items():
            factors = energy_factors(layer.weight, self.energy)
            if self.projection:
                layer.weight.copy_(project(factors))
            if self.nuclear_weight:
                self._factors[path] = factors

    def ranks(self) -> dict[str, int]:
        """Each targeted layer's current energy rank."""
        return {path: energy_rank(torch.linalg.svdvals(layer.weight.detach().float()), self.energy)
                for path, layer in self.layers.items()}


@dataclass
class TrpConfig(CompressConfig):
    """One rule for the final rank: threshold (default 5e-2, the code's), energy, or rank."""

    threshold: float | None = None  # keep the singular values >= threshold
    energy: float | None = None  # keep the smallest rank holding this share of Σ σ²
    rank: int | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)

    invalid = ({"energy": 0.9, "rank": 4}, {"energy": 1.5}, {"threshold": -1.0}, {"rank": 0})

    def __post_init__(self) -> None:
        super().__post_init__()
        rules = [name for name in ("threshold", "energy", "rank") if getattr(self, name) is not None]
        if len(rules) > 1:
            raise ConfigError(f"trp takes one of threshold=, energy= or rank=, got {' and '.join(rules)}.")
        if not rules:
            self.threshold = PAPER_VALUE_THRESHOLD
        if self.threshold is not None and not (isinstance(self.threshold, (int, float))
                                               and self.threshold > 0):
            raise ConfigError(f"threshold must be a singular value > 0, got {self.threshold!r}.")
        if self.energy is not None and not (isinstance(self.energy, (int, float)) and 0 < self.energy <= 1):
            raise ConfigError(f"energy must be in (0, 1], got {self.energy!r}.")
        ranks = [self.rank] if self.rank is not None else []
        ranks += list(self.rank_pattern.values()) if isinstance(self.rank_pattern, dict) else [None]
        if not all(type(r) is int and r >= 1 for r in ranks):
            raise ConfigError(f"rank and rank_pattern's values must be positive integers, got "
                              f"{self.rank!r} and {self.rank_pattern!r}.")

    def for_layer(self, path: str) -> TrpConfig:
        rank = pattern_value(self.rank_pattern, path, None)
        return self if rank is None else dataclasses.replace(self, rank=rank, energy=None, threshold=None)

    def rank_for(self, layer: nn.Linear) -> int:
        """The rule's rank for this layer's current weight."""
        if self.rank is not None:
            if self.rank > min(layer.in_features, layer.out_features):
                raise ConfigError(f"rank {self.rank} exceeds min(out, in) = "
                                  f"{min(layer.in_features, layer.out_features)}; lower the rank.")
            return self.rank
        singular_values = torch.linalg.svdvals(layer.weight.detach().float())
        if self.energy is not None:
            return energy_rank(singular_values, self.energy)
        return threshold_rank(singular_values, self.threshold)


@register("trp")
class Trp(SvdCompressor):
    config_class = TrpConfig
    paper = "TRP: Trained Rank Pruning for Efficient Deep Neural Networks (IJCAI 2020)"
    url = "https://arxiv.org/abs/2004.14566"

    @classmethod
    def plan_ranks(cls, model: nn.Module, config: TrpConfig, plan: dict) -> dict:
        """Each layer's rank, chosen from its weight now, goes into its saved config (loading needs it)."""
        resolved = {}
        for path, layer_config in plan.items():
            try:
                rank = layer_config.rank_for(model.get_submodule(path))
            except ConfigError as err:
                raise ConfigError(f"{path}: {err}") from None
            resolved[path] = dataclasses.replace(layer_config, rank=rank, energy=None, threshold=None)
        return resolved
