"""A plan: which module gets which config. Every family (adapt, compress, reparametrize, arch.apply)
builds one here and hands each entry to its factory, so per-layer settings work the same everywhere.

    plan = make_plan(model, config)          # {module path: that layer's config}

The plan starts from `config.targets` minus `config.exclude` (rankwise.surgery.find_targets), keeps
only the blocks in `config.layers_to_transform` when set, and gives each layer `config.for_layer(path)`,
which applies the config's `<field>_pattern` entries (PEFT's rank_pattern / alpha_pattern rule: a regex
matched against a dotted suffix of the path; the first matching key wins).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..errors import TargetError
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
