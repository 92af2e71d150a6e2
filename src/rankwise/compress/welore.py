"""WeLore: From GaLore to WeLore: How Low-Rank Weights Non-uniformly Emerge from Low-Rank Gradients
(Jaiswal, Yin, Zhang, Liu, Zhao, Tian, Wang, 2024, arXiv 2407.11239; VITA-Group/welore).

Data-free, one shot, with non-uniform ranks from one global threshold. For every targeted W (out × in)
with singular values σ, min–max normalised σ̂ = (σ − min σ) / (max σ − min σ):
    k_prune = #{i : σ̂_i < τ},   k = rank − k_prune                      (one τ for the whole model)
    LRC   (k_prune / rank > min_ratio):  W ≈ B A,  B = U_k Σ_k^{1/2},  A = Σ_k^{1/2} V_kᵀ,  y = B (A x) + b
    N-LRC (otherwise):                   W stays a dense nn.Linear, untouched
τ is given (`tau`), or bisected so that Σ k_prune / Σ rank reaches `reduction` (welore_tau), or
bisected so that the factorized model keeps a share `ratio` of the targeted weights' parameters
(budget_ranks). The labels and kept ranks are welore_label's, the same function analyze reports with
(both in rankwise.linalg.rank_selection).
WeLore-PEFT trains only the LRC factors A and B, as modules_to_save copies of an adapter with no other
targets (lrc_paths); N-LRCs and everything else stay frozen.

The whole-model step is Compressor.plan_ranks: it writes each LRC's rank into its layer config (N-LRCs
leave the plan), so a saved model folder holds every layer's rank and loading needs no SVD.
Where we differ from the paper's code:
- The repo hard-codes τ per reduction for LLaMA-2; for any model we bisect τ on the total reduction
  (welore_tau). With min_ratio > 0 the N-LRCs keep their full rank, so the reduction reached is the
  LRCs' share only (τ is still chosen over all matrices, as the code's table is).
- Rank reduction is not parameter reduction: factorizing saves parameters only if k < out·in/(out + in).
  In `reduction` / `tau` modes we follow the code and factorize every LRC, even one that grows; in the
  `ratio` (parameter budget) mode, a layer whose kept rank would not save parameters stays dense.
- min_ratio defaults to the code's 0.0; note that at τ > 0 it makes every matrix an LRC (its minimum σ
  normalises to 0 < τ). analyze_weights labels with min_ratio = reduction instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..linalg.rank_selection import welore_label, welore_tau
from .api import LAYERS, installed
from .base import CompressConfig, SvdCompressor, register


@dataclass
class WeloreConfig(CompressConfig):
    reduction: float | None = None  # share of all ranks removed, in (0, 1); τ is bisected to reach it
    tau: float | None = None  # or the global threshold itself, in [0, 1]
    ratio: float | None = None  # or the share of the targeted weights' parameters kept, in (0, 1)
    min_ratio: float = 0.0  # a layer with k_prune / rank <= min_ratio stays dense (N-LRC)
    rank: int | None = None  # each LRC's kept rank, written into its layer config by plan_ranks

    invalid: ClassVar[tuple[dict, ...]] = (
        {}, {"reduction": 0.5, "tau": 0.1}, {"reduction": 1.0}, {"tau": 1.5}, {"ratio": 0.0},
        {"reduction": 0.5, "min_ratio": 1.0}, {"reduction": 0.5, "rank": 0})

    def __post_init__(self) -> None:
        super().__post_init__()
        modes = {"reduction": self.reduction, "tau": self.tau, "ratio": self.ratio}
        if sum(value is not None for value in modes.values()) != 1:
            raise ConfigError("welore takes exactly one of reduction=P (share of ranks removed), tau=T "
                              "(the global threshold) or ratio=P (share of parameters kept).")
        for name, value in modes.items():
            closed = name == "tau"  # τ = 0 keeps every layer, τ = 1 keeps rank 1: both are settings
            inside = isinstance(value, (int, float)) and not isinstance(value, bool) and (
                0 <= value <= 1 if closed else 0 < value < 1)
            if value is not None and not inside:
                raise ConfigError(f"{name} must be in {'[0, 1]' if closed else '(0, 1)'}, got {value!r}.")
        if not (isinstance(self.min_ratio, (int, float)) and 0 <= self.min_ratio < 1):
            raise ConfigError(f"min_ratio must be in [0, 1), got {self.min_ratio!r}.")
        if self.rank is not None and (type(self.rank) is not int or self.rank < 1):
            raise ConfigError(f"rank must be a positive integer, got {self.rank!r}.")

    def rank_for(self, layer: nn.Linear) -> int:
        if self.rank is None:
            raise ConfigError("this welore layer config has no rank; the plan was not made by welore.")
        return self.rank


def kept_ranks(spectra: Mapping[str, Sequence[float]], tau: float, min_ratio: float) -> dict[str, int | None]:
    """{path: kept rank k of an LRC, or None for an N-LRC} at the global threshold τ (welore_label)."""
    labels = {path: welore_label(s, tau, min_ratio) for path, s in spectra.items()}
    return {path: label["rank_kept"] if label["label"] == "LRC" else None for path, label in labels.items()}


def factorized_parameters(ranks: Mapping[str, int | None], shapes: Mapping[str, tuple[int, int]]) -> int:
    """Weight parameters of the layers at `ranks`: k (out + in) when factorized, out · in when dense."""
    return sum(out * inp if ranks[path] is None else ranks[path] * (out + inp)
               for path, (out, inp) in shapes.items())


def budget_ranks(spectra: Mapping[str, Sequence[float]], shapes: Mapping[str, tuple[int, int]],
                 kept_parameters: float, min_ratio: float = 0.0, iters: int = 60
                 ) -> tuple[float, dict[str, int | None]]:
    """(τ, ranks) of the smallest τ whose factorized weights fit in `kept_parameters`.

    Rank reduction is not parameter reduction: factorizing saves parameters only if k < out·in/(out + in),
    so an LRC whose kept rank would not save any stays dense (None). The count only falls as τ grows,
    one rank of one layer at a time, so the result lands within one layer's out + in of the budget.
    """
    def ranks_at(tau: float) -> dict[str, int | None]:
        ranks = kept_ranks(spectra, tau, min_ratio)
        return {path: k if k is not None and k * sum(shapes[path]) < shapes[path][0] * shapes[path][1]
                else None for path, k in ranks.items()}

    smallest = factorized_parameters(ranks_at(1.0), shapes)
    if smallest > kept_parameters:
        total = factorized_parameters(dict.fromkeys(shapes), shapes)
        raise ConfigError(f"welore cannot keep only {kept_parameters / total:.3f} of the parameters: "
                          f"rank 1 everywhere keeps {smallest / total:.3f}; raise ratio.")
    low, high = 0.0, 1.0
    for _ in range(iters):
        middle = (low + high) / 2
        if factorized_parameters(ranks_at(middle), shapes) > kept_parameters:
            low = middle
        else:
            high = middle
    return high, ranks_at(high)


@register("welore")
class Welore(SvdCompressor):
    config_class = WeloreConfig
    paper = "From GaLore to WeLore: How Low-Rank Weights Non-uniformly Emerge from Low-Rank Gradients"
    url = "https://arxiv.org/abs/2407.11239"

    @classmethod
    def plan_ranks(cls, model: nn.Module, config: WeloreConfig, plan: dict) -> dict[str, WeloreConfig]:
        if config.rank is not None:
            raise ConfigError("welore picks each layer's rank from its spectrum; drop rank= and set "
                              "reduction, tau or ratio.")
        layers = {path: model.get_submodule(path) for path in plan}
        spectra = {path: torch.linalg.svdvals(layer.weight.detach().float()).double().tolist()
                   for path, layer in layers.items()}
        if config.ratio is not None:
            shapes = {path: (layer.out_features, layer.in_features) for path, layer in layers.items()}
            total = factorized_parameters(dict.fromkeys(shapes), shapes)
            _, ranks = budget_ranks(spectra, shapes, config.ratio * total, config.min_ratio)
        else:
            tau = config.tau
            if tau is None:
                tau = welore_tau(list(spectra.values()), config.reduction)
            ranks = kept_ranks(spectra, tau, config.min_ratio)
        return {path: dataclasses.replace(layer_config, rank=ranks[path])
                for path, layer_config in plan.items() if ranks[path] is not None}


def lrc_paths(model: nn.Module, name: str = "default") -> list[str]:
    """The paths of the LRCs that the welore compression `name` factorized. WeLore-PEFT trains only their
    factors, through the adapter loop, as modules_to_save copies of an adapter with no other targets:
        rankwise.adapt(model, "lora", targets=[], modules_to_save=lrc_paths(model))
        rankwise finetune model=DIR targets=[] modules_to_save='["model.layers.0.mlp.up_proj", ...]'
    """
    if name not in installed(model):
        raise ConfigError(f"the model has no compression named {name!r}; compress it with welore first.")
    method, _, plan, _ = LAYERS.layout(model, name)
    if method != "welore":
        raise ConfigError(f"compression {name!r} is {method}, not welore; pass the welore one's name.")
    return list(plan)
