"""Model-level entry points to the methods' training hooks, for any training loop.

Each call visits the active adapters of a model and dispatches to their method's hook:
    init_from_data(model, batches)   once before training (gradient- or activation-based inits)
    param_groups(model, lr)          optimizer parameter groups (per-parameter learning rates)
    regularizer(model)               a scalar to add to the loss, or None
    after_step(model, step)          after each optimizer step (proximal updates, mask refresh, pruning);
                                     `step` is a StepContext (step, optimizer, scheduler, total steps),
                                     or just the number of optimizer steps taken (1 after the first)
    end_task(model)                  between the tasks of a continual-learning sequence
    finalize(model)                  once after training
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .api import active_adapters, layers_of, method_layers
from .base import Adapter, StepContext
from .module_copy import ModuleCopy


def _active(model: nn.Module) -> dict[str, dict[str, Adapter]]:
    """{adapter name: its method's layers}; modules_to_save copies have no hooks (see param_groups)."""
    return {name: layers for name in active_adapters(model) if (layers := method_layers(model, name))}


def init_from_data(model: nn.Module, batches: Iterable[dict]) -> None:
    batches = list(batches)  # several methods may each need a pass
    for layers in _active(model).values():
        type(next(iter(layers.values()))).init_from_data(model, layers, batches)


def param_groups(model: nn.Module, lr: float) -> list[dict]:
    groups = []
    for layers in _active(model).values():
        groups += type(next(iter(layers.values()))).param_groups(layers, lr)
    copies = [p for name in active_adapters(model) for adapter in layers_of(model, name).values()
              if isinstance(adapter, ModuleCopy) for p in adapter.parameters() if p.requires_grad]
    groups.append({"params": copies, "lr": lr})  # modules_to_save: plain full training
    return [g for g in groups if g["params"]]


def regularizer(model: nn.Module) -> torch.Tensor | None:
    terms = [t for layers in _active(model).values() for a in layers.values()
             if (t := a.regularizer()) is not None]
    return torch.stack(terms).sum() if terms else None


def after_step(model: nn.Module, step: StepContext | int) -> None:
    """`step`: a StepContext, or just the number of optimizer steps taken (1 after the first)."""
    context = step if isinstance(step, StepContext) else StepContext(step=int(step))
    for layers in _active(model).values():
        for adapter in layers.values():
            adapter.after_step(context)


def end_task(model: nn.Module) -> None:
    for layers in _active(model).values():
        for adapter in layers.values():
            adapter.end_task()


def finalize(model: nn.Module) -> None:
    for name, layers in _active(model).items():
        for path, adapter in layers.items():
            replacement = adapter.finalize()
            if replacement is not None:
                replacement.plan_config = replacement.config
                model.get_submodule(path).adapters[name] = replacement
