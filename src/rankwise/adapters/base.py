"""The adapter interface: a config dataclass, a per-layer module, optional training hooks.

A method subclasses `AdapterConfig` (its hyper-parameters) and `Adapter` (its tensors for one wrapped
nn.Linear), and registers the Adapter class under its name with `@ADAPTERS.register("name")`.

Per layer, an Adapter implements
    forward(x, base_out, base)   -> the layer's output with this adapter applied, computed on
                                    activations (never a dense W + ΔW while training)
    delta_weight()               -> ΔW (out, in), so merging is exact and explicit
and may override
    merged_weight(weight)        for methods that transform W rather than add to it (DoRA)
    init_from_weight(weight)     for data-free inits that read W (PiSSA's SVD)
    regularizer(), after_step(step), end_task(), finalize()    per-layer training hooks

Model-level hooks, called once per adapter name with all of its layers:
    init_from_data(model, layers, batches)    gradient- or activation-based inits
    param_groups(layers, lr)                  per-parameter learning rates
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from .._registry import Registry
from ..errors import ConfigError, NotMergeable


@dataclass
class AdapterConfig:
    """Fields every low-rank method shares. `targets` follows rankwise.surgery.find_targets."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: Any = "all-linear"
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ConfigError(f"rank must be a positive integer, got {self.rank!r}.")
        if not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ConfigError(f"alpha must be a positive number, got {self.alpha!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}.")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if not isinstance(self.targets, (str, list, tuple)):
            out["targets"] = None  # module types are not JSON; the saved target list is exact anyway
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AdapterConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            warnings.warn(f"ignoring unknown {cls.__name__} keys {unknown} (written by a newer rankwise?)")
        return cls(**{k: v for k, v in values.items() if k in known})


class Adapter(nn.Module):
    """One method's state for one wrapped nn.Linear. See the module docstring for the contract."""

    name: ClassVar[str] = ""  # set by the registry
    config_class: ClassVar[type[AdapterConfig]] = AdapterConfig
    paper: ClassVar[str] = ""
    url: ClassVar[str] = ""
    trains: ClassVar[str] = ""  # which tensors train, in words, for `rankwise methods` and the README
    mergeable: ClassVar[bool] = True
    identity_at_init: ClassVar[bool] = True
    wraps_what: ClassVar[str] = "nn.Linear layers"

    @classmethod
    def can_wrap(cls, module: nn.Module) -> bool:
        """Which modules the method adapts; block-level methods (AdapterTune, LoRRA) override this."""
        return type(module) is nn.Linear

    @classmethod
    def features(cls, base: nn.Module) -> tuple[int, int]:
        """(in, out) sizes of what the adapter sees; block-level methods override this."""
        return base.in_features, base.out_features

    def __init__(self, base: nn.Module, config: AdapterConfig):
        super().__init__()
        self.config = config
        self.in_features, self.out_features = self.features(base)
        weight = next(base.parameters())
        if config.rank > min(self.in_features, self.out_features):
            raise ConfigError(
                f"rank {config.rank} exceeds min(out, in) = {min(self.in_features, self.out_features)} "
                f"of a ({self.out_features}, {self.in_features}) layer; lower the rank or exclude the layer."
            )
        # Adapters of a half-precision base still train in float32 (as PEFT's autocast does).
        self.factory = {"device": weight.device, "dtype": torch.promote_types(weight.dtype, torch.float32)}

    # per layer -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, base_out: torch.Tensor, base: nn.Linear) -> torch.Tensor:
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        raise NotMergeable(f"{self.name} cannot fold its update into the base weight.")

    def merged_weight(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.delta_weight().to(weight.dtype)

    def init_from_weight(self, weight: torch.Tensor) -> None:
        """Data-free init from the frozen weight; called for fresh adapters, not when loading."""

    def regularizer(self) -> torch.Tensor | None:
        return None

    def after_step(self, step: int) -> None:
        pass

    def end_task(self) -> None:
        """Called between the tasks of a continual-learning sequence (CoDyRA: prune, freeze, reset)."""

    def finalize(self) -> "Adapter | None":
        """Called once after training; may return a replacement (SoRA returns a smaller plain LoRA)."""
        return None

    # per model ---------------------------------------------------------------------------------
    @classmethod
    def init_from_data(cls, model: nn.Module, layers: dict[str, "Adapter"], batches: Iterable[dict]) -> None:
        pass

    @classmethod
    def param_groups(cls, layers: dict[str, "Adapter"], lr: float) -> list[dict]:
        params = [p for layer in layers.values() for p in layer.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr}]


ADAPTERS: Registry[type[Adapter]] = Registry("adapter method")


def register(name: str):
    """Register an Adapter subclass under `name` (== its file name == its config's method)."""

    def add(cls: type[Adapter]) -> type[Adapter]:
        cls.name = name
        return ADAPTERS.register(name)(cls)

    return add
