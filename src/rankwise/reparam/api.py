"""reparametrize(model, method, ...): replace the planned layers by trainable low-rank(+sparse) modules,
and the family entry through which rankwise.io saves and loads reparameterized models."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._registry import FAMILIES
from ..errors import ConfigError
from ..io.replaced_layers import ReplacedLayers
from .base import REPARAMS, ReparamConfig

LAYERS = ReplacedLayers("reparam", REPARAMS, "parameterization", "reparametrizes")  # plans, records, loading


def reparametrize(model: nn.Module, method: str = "lowrank", *, name: str = "default",
                  config: ReparamConfig | None = None, **fields: Any) -> nn.Module:
    """Replace the nn.Linear layers `method`'s config selects by its trainable parameterization, in
    place; returns the model.

    `fields` are the method's config fields (rank=R, rank_pattern, targets, seed, and the method's own,
    e.g. density for sltrain). Random tensors come from one generator seeded with `seed`, drawn in plan
    order, so a call is reproducible whatever the global RNG holds. Every layer is built before any is
    replaced, so a bad setting leaves the model as it was. The new parameters require gradients; the
    rest of the model is left as it is (train it too for pretraining).
    """
    cls, config, plan = LAYERS.plan(model, method, name, config, fields)
    generator = torch.Generator().manual_seed(config.seed)
    built = {}
    for path, layer_config in plan.items():
        try:
            built[path] = cls.build(model.get_submodule(path), layer_config, generator)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    LAYERS.install(model, name, method, config, plan, built)
    return model


def installed(model: nn.Module) -> list[str]:
    return LAYERS.installed(model)


FAMILIES.register("reparam")(LAYERS.family())
