"""A plan: which module gets which config. Every family (adapt, compress, reparametrize, arch.apply)
builds one here and hands each entry to its factory, so per-layer settings work the same everywhere.

    plan = make_plan(model, config)          # {module path: that layer's config}

The plan starts from `config.targets` minus `config.exclude` (rankwise.surgery.find_targets), keeps
only the blocks in `config.layers_to_transform` when set, and gives each layer `config.for_layer(path)`,
which applies the config's `<field>_pattern` entries (PEFT's rank_pattern / alpha_pattern rule: a regex
matched against a dotted suffix of the path; the first matching key wins).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from ..errors import ConfigError, TargetError
from .targets import find_targets
from .wrapper import wrappers

_BLOCK_INDEX = re.compile(r"\.(\d+)(?:\.|$)")


def pattern_value(patterns: Mapping[str, Any], path: str, default: Any) -> Any:
    """The value of the first key matching a dotted suffix of `path` (PEFT's get_pattern_key), or default."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default


def block_index(path: str) -> int | None:
    """The index of the repeated block a module sits in ("model.layers.3.mlp" -> 3), or None."""
    match = _BLOCK_INDEX.search(path)
    return int(match.group(1)) if match else None


def target_paths(model: nn.Module, targets: Any, exclude: Any = ()) -> list[str]:
    """find_targets seen through wrappers: a wrapper's base counts as the wrapper, and a wrapper's own
    submodules (another family's tensors) are never targets."""
    found = wrappers(model)
    paths: dict[str, None] = {}
    for path in find_targets(model, targets, exclude):
        owner, _, leaf = path.rpartition(".")
        if leaf == "base" and owner in found:
            path = owner
        if not any(path.startswith(w + ".") and not path.startswith(w + ".base.") for w in found):
            paths[path] = None
    return list(paths)


@dataclass
class PlanConfig:
    """What every family's config shares: which modules the plan selects (targets follows find_targets,
    minus exclude, within layers_to_transform), per-layer `<field>_pattern`s, and its own checks."""

    targets: Any = "all-linear"
    exclude: list[str] = field(default_factory=list)
    layers_to_transform: list[int] | None = None  # keep only modules of these block indices (PEFT's field)

    # Configs that must be rejected, per class; `bad_configs()` collects them along the class hierarchy.
    invalid: ClassVar[tuple[dict, ...]] = (
        {"layers_to_transform": [-1]}, {"targets": 123}, {"targets": "q_proj["}, {"exclude": "q_proj"})

    def __post_init__(self) -> None:
        targets = self.targets
        # None: a config read back from a file whose targets were module types; its plan is exact.
        kinds = targets is None or isinstance(targets, (str, type)) or (
            isinstance(targets, (list, tuple)) and all(isinstance(t, (str, type)) for t in targets))
        if not kinds:
            raise ConfigError(f"targets must be a regex, a list of names or globs, or module types; "
                              f"got {targets!r}.")
        if isinstance(targets, str) and targets not in ("all-linear", "all-blocks"):
            try:
                re.compile(targets)
            except re.error as err:
                raise ConfigError(f"targets={targets!r} is not a valid regular expression ({err}); "
                                  "for a list of names write [\"q_proj\", \"v_proj\"].") from None
        if not isinstance(self.exclude, (list, tuple)) or not all(isinstance(e, str) for e in self.exclude):
            raise ConfigError(f"exclude must be a list of names or globs, got {self.exclude!r}.")
        layers = self.layers_to_transform
        if layers is not None and not (isinstance(layers, list) and all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers)):
            raise ConfigError(f"layers_to_transform must be a list of block indices >= 0, got {layers!r}.")

    @classmethod
    def bad_configs(cls) -> list[dict]:
        seen = []
        for klass in cls.__mro__:
            for bad in vars(klass).get("invalid", ()):
                if bad not in seen:
                    seen.append(bad)
        return seen

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def create(cls, method: str, **values: Any) -> PlanConfig:
        """cls(**values), but a field the method does not have is a ConfigError that names it."""
        unknown = sorted(set(values) - cls.field_names())
        if unknown:
            raise ConfigError(f"{method} does not use {', '.join(unknown)}; its fields are "
                              f"{', '.join(sorted(cls.field_names()))}.")
        return cls(**values)

    def pattern_fields(self) -> dict[str, dict]:
        """{field: {regex: value}} of this config's per-layer patterns (rank_pattern -> rank, ...)."""
        return {f.name.removesuffix("_pattern"): getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name.endswith("_pattern") and getattr(self, f.name)}

    def for_layer(self, path: str) -> PlanConfig:
        """This layer's config: each `<field>_pattern` whose regex matches `path` sets `<field>`."""
        values = {name: pattern_value(patterns, path, getattr(self, name))
                  for name, patterns in self.pattern_fields().items()}
        changed = {name: value for name, value in values.items() if value != getattr(self, name)}
        return dataclasses.replace(self, **changed) if changed else self

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if not isinstance(self.targets, (str, list, tuple)):
            out["targets"] = None  # module types are not JSON; the saved plan is exact anyway
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, dropped: Iterable[str] = ()) -> PlanConfig:
        """Build from saved values; `dropped`: fields older files wrote that this method no longer has."""
        known = cls.field_names()
        unknown = sorted(set(values) - known - set(dropped))
        if unknown:
            warnings.warn(f"ignoring unknown {cls.__name__} keys {unknown} (written by a newer rankwise?)",
                          stacklevel=3)
        return cls(**{k: v for k, v in values.items() if k in known})


def make_plan(model: nn.Module, config: Any) -> dict[str, Any]:
    """{module path: config.for_layer(path)} for every module `config` selects."""
    paths = target_paths(model, config.targets, config.exclude)
    layers = getattr(config, "layers_to_transform", None)
    if layers is not None:
        paths = [path for path in paths if block_index(path) in set(layers)]
        if not paths:
            raise TargetError(f"layers_to_transform={layers} keeps none of the targeted modules; "
                              "block indices start at 0.")
    return {path: config.for_layer(path) for path in paths}
