"""The adapter interface: a config dataclass, a per-layer module, optional training hooks.

A method subclasses `AdapterConfig` (its hyper-parameters) and `Adapter` (its tensors for one wrapped
nn.Linear), and registers the Adapter class under its name with `@register("name")`.

Configs own their fields. `AdapterConfig` has only what every method needs (targets, exclude,
layers_to_transform, modules_to_save); a method inherits `RankField` (rank, rank_pattern),
`AlphaField` (alpha, alpha_pattern) and `DropoutField` (dropout) only if it uses them, so setting a
field a method does not use is an error that names the field. `<field>_pattern` maps PEFT-style regex
keys to per-layer values; rankwise.surgery.make_plan resolves them into one config per layer before
anything is built.

Per layer, an Adapter implements
    forward(x, base_out, layer)  -> the layer's output with this adapter applied, computed on
                                    activations (never a dense W + ΔW while training); `layer` has the
                                    .weight and .bias the adapter sits on (with earlier stacked adapters
                                    folded in, for methods that read the weight)
    delta_weight()               -> ΔW in the wrapped weight's own layout ((out, in) for nn.Linear), so
                                    merging is exact and explicit
and may override
    merged_weight(weight)        for methods that transform W rather than add to it (DoRA); the update
                                 of a stacked adapter is merged_weight(W) - W with W the weight below it
    init_from_weight(weight)     for data-free inits that read W (PiSSA's SVD)
    regularizer(), after_step(context), end_task(), finalize()    per-layer training hooks

Model-level hooks, called once per adapter name with all of its layers:
    init_from_data(model, layers, batches)    gradient- or activation-based inits
    param_groups(layers, lr)                  per-parameter learning rates

Step convention: `StepContext.step` counts the optimizer steps already taken, so the hook that runs
right after the first optimizer step sees step == 1. A hook keeps any counter it needs in a buffer
(saved with the adapter, so a resumed run continues it), never in a plain attribute.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .._registry import Registry
from ..errors import ConfigError, NotMergeable
from ..surgery import PlanConfig, is_linear, layer_kind
from .layer_kinds import KIND_WORDS


@dataclass
class AdapterConfig(PlanConfig):
    """Fields every adapter method shares: the plan's (targets, exclude, layers_to_transform) and
    modules_to_save."""

    modules_to_save: list[str] = field(default_factory=list)  # trained in full beside the adapter (PEFT's)

    invalid: ClassVar[tuple[dict, ...]] = ({"modules_to_save": "lm_head"},)

    def __post_init__(self) -> None:
        super().__post_init__()
        value = self.modules_to_save
        if not isinstance(value, (list, tuple)) or not all(isinstance(e, str) for e in value):
            raise ConfigError(f"modules_to_save must be a list of names or globs, got {value!r}.")


def _check_patterns(config: AdapterConfig, name: str, check) -> None:
    patterns = getattr(config, name)
    if not isinstance(patterns, dict):
        raise ConfigError(f"{name} must be a mapping of regex -> value, got {patterns!r}.")
    for key, value in patterns.items():
        try:
            re.compile(key)
        except (re.error, TypeError) as err:
            raise ConfigError(f"{name} key {key!r} is not a valid regular expression ({err}).") from None
        check(value, f"{name}[{key!r}]")


def _positive_int(value: Any, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}.")


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _positive_number(value: Any, what: str) -> None:
    # Scales multiply float32 tensors: one beyond float32's range would overflow in the first forward.
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not 0 < value <= _FLOAT32_MAX:
        raise ConfigError(f"{what} must be a positive number within float32's range, got {value!r}.")


@dataclass
class RankField(AdapterConfig):
    """For methods with a rank: `rank`, and PEFT's `rank_pattern` ({regex on the module path: rank})."""

    rank: int = 8
    rank_pattern: dict[str, int] = field(default_factory=dict)

    invalid: ClassVar[tuple[dict, ...]] = ({"rank": 0}, {"rank": -2}, {"rank_pattern": {"q_proj": 0}})

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(self.rank, "rank")
        _check_patterns(self, "rank_pattern", _positive_int)


@dataclass
class AlphaField(AdapterConfig):
    """For methods with a scale numerator: `alpha`, and PEFT's `alpha_pattern`."""

    alpha: float = 16.0
    alpha_pattern: dict[str, float] = field(default_factory=dict)

    invalid: ClassVar[tuple[dict, ...]] = ({"alpha": -1.0}, {"alpha": float("nan")}, {"alpha": 1e300})

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_number(self.alpha, "alpha")
        _check_patterns(self, "alpha_pattern", _positive_number)


@dataclass
class DropoutField(AdapterConfig):
    """For methods with dropout on the adapter's input."""

    dropout: float = 0.0

    invalid: ClassVar[tuple[dict, ...]] = ({"dropout": 1.5},)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}.")


@dataclass
class LowRankConfig(RankField, AlphaField, DropoutField):
    """rank, alpha and dropout: the fields of LoRA and most of its variants."""


@dataclass
class SvdField(AdapterConfig):
    """For methods initialised from an SVD: 0 is exact, k > 0 a randomized SVD with k power iterations."""

    svd_iters: int = 0

    invalid: ClassVar[tuple[dict, ...]] = ({"svd_iters": -1},)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.svd_iters, int) or isinstance(self.svd_iters, bool) or self.svd_iters < 0:
            raise ConfigError(f"svd_iters must be an integer >= 0, got {self.svd_iters!r}.")


def make_dropout(config: AdapterConfig) -> nn.Module:
    rate = getattr(config, "dropout", 0.0)
    return nn.Dropout(rate) if rate > 0 else nn.Identity()


@dataclass
class StepContext:
    """What a training loop hands to after_step hooks, once per optimizer step.

    step:         optimizer steps taken so far (1 right after the first one)
    optimizer:    the optimizer (None when a loop has none to give), so hooks can reset moments
    scheduler:    the learning-rate scheduler, or None
    total_steps:  the run's (or the current task's) number of optimizer steps, or None
    group_lrs:    each parameter group's learning rate for the step just taken (scheduled), or None
    """

    step: int
    optimizer: Any = None
    scheduler: Any = None
    total_steps: int | None = None
    group_lrs: list[float] | None = None

    def _optimizer(self):
        return getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate wraps it

    def lr_of(self, param: torch.Tensor) -> float | None:
        """The learning rate `param` was just updated with, or None if no optimizer holds it."""
        optimizer = self._optimizer()
        if optimizer is None:
            return None
        for index, group in enumerate(optimizer.param_groups):
            if any(p is param for p in group["params"]):
                return self.group_lrs[index] if self.group_lrs is not None else group["lr"]
        return None

    @torch.no_grad()
    def reset_state(self, param: torch.Tensor, where: torch.Tensor | None = None) -> None:
        """Zero the optimizer's per-entry state (Adam's moments) of `param`, or of its entries `where`.

        For hooks that re-use a slot for another weight (LIFT's mask refresh) or re-factorise a
        tensor (LoRA-Squeeze): the old moments belong to what the slot held before. Scalar state
        (Adam's step count) is shared by the whole tensor and kept.
        """
        optimizer = self._optimizer()
        state = optimizer.state.get(param) if optimizer is not None else None
        for value in (state or {}).values():
            if torch.is_tensor(value) and value.shape == param.shape:
                if where is None:
                    value.zero_()
                else:
                    value[where] = 0


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
    reads_weight: ClassVar[bool] = False  # forward reads layer.weight (DoRA's norm): stacking passes W'
    # forward attends over the sequence itself (LoRRA's learners). It sees neither a KV cache nor the
    # attention mask, so such a model generates each prompt alone, without a cache.
    needs_whole_sequence: ClassVar[bool] = False
    # The factor by which this method's paper rate exceeds LoRA's; rankwise bench sweeps around
    # lr × lr_scale. 1 unless the paper (or its reference code) trains at a different rate.
    lr_scale: ClassVar[float] = 1.0
    # Config changes that make every hook fire within a few steps (the contract suite's resume test).
    fast_hooks: ClassVar[dict[str, Any]] = {}

    # Layer kinds besides nn.Linear (rankwise.adapters.layer_kinds) this class adapts when targeted. Read
    # from the class's own body, never inherited: a subclass that changes the math (PiSSA's SVD, SoRA's
    # gate) stays on nn.Linear until it declares the kinds it was checked on.
    other_kinds: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def can_wrap(cls, module: nn.Module) -> bool:
        """Which modules the method adapts; block-level methods (AdapterTune, LoRRA) override this."""
        return is_linear(module) or layer_kind(module) in vars(cls).get("other_kinds", ())

    @classmethod
    def adapts(cls) -> str:
        """What the method adapts, in words, for messages: wraps_what and its other layer kinds."""
        kinds = [KIND_WORDS[kind] for kind in vars(cls).get("other_kinds", ())]
        return cls.wraps_what + "".join(f", {words}" for words in kinds)

    @classmethod
    def features(cls, base: nn.Module) -> tuple[int, int]:
        """(in, out) sizes of what the adapter sees; block-level methods override this."""
        return base.in_features, base.out_features

    def __init__(self, base: nn.Module, config: AdapterConfig):
        super().__init__()
        self.config = config
        self.in_features, self.out_features = self.features(base)
        weight = next(t for t in (*base.parameters(), *base.buffers()) if t.is_floating_point())
        rank = getattr(config, "rank", None)
        if rank is not None and rank > min(self.in_features, self.out_features):
            raise ConfigError(
                f"rank {rank} exceeds min(out, in) = {min(self.in_features, self.out_features)} "
                f"of a ({self.out_features}, {self.in_features}) layer; lower the rank or exclude the layer."
            )
        # Adapters of a half-precision base still train in float32 (as PEFT's autocast does).
        self.factory = {"device": weight.device, "dtype": torch.promote_types(weight.dtype, torch.float32)}

    # per layer -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        raise NotMergeable(f"{self.name} cannot fold its update into the base weight.")

    def merged_weight(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.delta_weight().to(weight.dtype)

    def init_from_weight(self, weight: torch.Tensor) -> None:
        """Data-free init from the frozen weight; called for fresh adapters, not when loading."""

    def regularizer(self) -> torch.Tensor | None:
        return None

    def after_step(self, context: StepContext) -> None:
        pass

    def end_task(self) -> None:
        """Called between the tasks of a continual-learning sequence (CoDyRA: prune, freeze, reset)."""

    def finalize(self) -> Adapter | None:
        """Called once after training; may return a replacement (SoRA returns a smaller plain LoRA)."""
        return None

    # per model ---------------------------------------------------------------------------------
    @classmethod
    def init_from_data(cls, model: nn.Module, layers: dict[str, Adapter], batches: Iterable[dict]) -> None:
        pass

    @classmethod
    def param_groups(cls, layers: dict[str, Adapter], lr: float) -> list[dict]:
        params = [p for layer in layers.values() for p in layer.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr}]


ADAPTERS: Registry[type[Adapter]] = Registry("adapter method")


register = ADAPTERS.register_class  # @register("name"): name == file name == cls.name
