"""The optimizer registry and the two optimizers every loop needs: AdamW (the default) and SGD."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from .._registry import Registry
from ..errors import ConfigError

OptimizerFactory = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict], lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
          eps: float = 1e-8) -> torch.optim.Optimizer:
    """torch.optim.AdamW (decoupled weight decay, Loshchilov & Hutter 2019)."""
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)


@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict], lr: float, weight_decay: float = 0.0, momentum: float = 0.0,
        nesterov: bool = False) -> torch.optim.Optimizer:
    """torch.optim.SGD, with optional (Nesterov) momentum."""
    return torch.optim.SGD(groups, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov)


def optimizer_options(name: str) -> set[str]:
    """The options optimizer `name` takes besides its parameter groups, lr and weight decay."""
    parameters = inspect.signature(OPTIMIZERS.get(name)).parameters
    return set(parameters) - {"groups", "lr", "weight_decay"}


def build_optimizer(name: str, groups: list[dict], lr: float, weight_decay: float = 0.0,
                    **options: Any) -> torch.optim.Optimizer:
    """The optimizer registered as `name` over `groups`; an option it does not take is a ConfigError."""
    unknown = sorted(set(options) - optimizer_options(name))
    if unknown:
        raise ConfigError(f"optimizer {name!r} does not take {', '.join(unknown)}; it takes "
                          f"{', '.join(sorted(optimizer_options(name))) or 'no options'}.")
    try:
        return OPTIMIZERS.get(name)(groups, lr=lr, weight_decay=weight_decay, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"optimizer {name!r}: {err}") from None
