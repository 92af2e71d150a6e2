"""merge_adapters(model, inputs, method): combine fine-tunes of one base model into one update, and install
it on `model`. (rankwise.merge is another operation: it folds a model's own adapters into its weights.)

    result = rankwise.merge_adapters(model, ["runs/a/adapter", "runs/b/adapter"], "ties", density=0.5)
    rankwise.save_adapter(model, "out/merged", "merged") if result["kind"] == "adapter" else \\
        rankwise.save_model(model, "out/merged")
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters import adapt, layers_of
from ..adapters.lora import LoraConfig
from ..errors import ConfigError
from .base import MERGERS, MergeConfig
from .updates import read_update


def install_factors(model: nn.Module, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], name: str):
    """A LoRA `name` whose layer at each path computes exactly B A (scale 1: alpha = rank per layer)."""
    pattern = {f"^{re.escape(path)}$": max(1, A.shape[0]) for path, (B, A) in factors.items()}
    config = LoraConfig(targets=list(factors), rank=1, alpha=1, dropout=0.0, rank_pattern=pattern,
                        alpha_pattern=dict(pattern))
    adapt(model, "lora", name=name, config=config)
    with torch.no_grad():
        for path, adapter in layers_of(model, name).items():
            B, A = factors[path]
            adapter.lora_A.zero_()
            adapter.lora_B.zero_()
            if A.shape[0]:
                adapter.lora_A.copy_(A)
                adapter.lora_B.copy_(B)


def merge_adapters(model: nn.Module, inputs: Sequence[str | Path], method: str, *, name: str = "merged",
                   **fields: Any) -> dict[str, Any]:
    """Merge `inputs` (rankwise or PEFT adapter folders, or model folders, of `model`'s base) with
    `method`; returns {"kind": "adapter" | "model" | "basis", "method", "inputs", "layers", "rank"}.

    A low-rank result is installed as the LoRA adapter `name`; a dense one is added to the base weights
    in place; RMM's basis is returned under "basis" (save it with rankwise.merging.rmm.save_basis).
    `fields` are MergeConfig's (weights, density, rank, seed, consensus, variant, residual,
    scale). Every input is read and checked, and the merge computed, before the model changes."""
    spec = MERGERS.get(method)
    known = {f.name for f in dataclasses.fields(MergeConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"merge does not take {unknown}; it takes {sorted(known)}.")
    config = MergeConfig(**fields)
    config.check()
    if not inputs:
        raise ConfigError("no inputs to merge; give at least one adapter or model folder.")
    config.weights_for(len(inputs))  # a wrong count fails before anything is read
    updates = [read_update(model, source, index) for index, source in enumerate(inputs)]
    if spec.needs_low_rank:
        for index, update in enumerate(updates):
            if not update.low_rank:
                raise ConfigError(f"input {index + 1} ({update.source}) is not a plain LoRA (its update is "
                                  f"not exactly B·A), which {method} needs; use svd, linear or ties.")
    paths = {path for update in updates for path in update.paths}
    modules = dict(model.named_modules())
    base = {path: _base_weight(modules[path]).detach() for path in paths}
    result = spec.run(base, updates, config)
    summary = {"method": method, "inputs": [str(s) for s in inputs], "layers": len(result)}
    if spec.result == "basis":  # nothing to install: each task is reverted from the basis (merging.rmm)
        k = next(iter(result.values()))["B_basis"].shape[0]
        return {**summary, "kind": "basis", "rank": k, "basis": result}
    if all(isinstance(value, tuple) for value in result.values()):
        install_factors(model, result, name)
        rank = max(A.shape[0] for _, A in result.values())
        kind = "adapter"
    else:
        with torch.no_grad():
            for path, delta in result.items():
                weight = _base_weight(modules[path])
                weight.add_(delta.to(weight.dtype))
        rank, kind = None, "model"
    return {**summary, "kind": kind, "rank": rank}


def _base_weight(module: nn.Module) -> torch.Tensor:
    return module.base.weight if hasattr(module, "base") else module.weight
