"""Attach saved adapter tensors to a model, after checking that every tensor fits, before changing anything.

Shared by both file formats. adapt(..., state=...) checks one layer at a time while it edits the model,
so a bad file could leave it half-adapted; here the whole file is checked first and the error lists
every missing, unexpected and misshapen tensor (first few of each), then adapt runs on known-good input.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
from typing import Mapping

import torch
from torch import nn

from ..adapters import ADAPTERS, AdaptedModule, AdapterConfig, adapt, adapter_names, layers_of, set_active
from ..errors import AdapterFileError, ConfigError

_SHOWN = 5  # how many names of each problem an error lists


def _expected_shapes(cls, config: AdapterConfig, base: nn.Module) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} an adapter of `cls` has on `base`; for nn.Linear built on the meta device."""
    adapter = None
    if type(base) is nn.Linear:
        twin = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                         device="meta", dtype=base.weight.dtype)
        try:
            adapter = cls(twin, config)
        except ConfigError:
            raise
        except Exception:  # a constructor that needs real tensors: build it for real below
            adapter = None
    if adapter is None:
        adapter = cls(base, config)  # constructors never edit `base`; this costs only the adapter's size
    return {key: tuple(value.shape) for key, value in adapter.state_dict().items()}


def expected_state(model: nn.Module, method: str, config: AdapterConfig, targets: list[str],
                   source: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """{"<module path>.<tensor>": shape} that loading `method` onto `targets` of `model` needs."""
    cls = ADAPTERS.get(method)
    modules = dict(model.named_modules())
    absent = [path for path in targets if path not in modules]
    if absent:
        raise AdapterFileError(
            f"{source} adapts {len(absent)} module(s) this model lacks, e.g. {absent[:_SHOWN]}; "
            "it was saved for another model architecture."
        )
    cache: dict[tuple, dict[str, tuple[int, ...]]] = {}
    expected = {}
    for path in targets:
        module = modules[path]
        base = module.base if isinstance(module, AdaptedModule) else module
        if not cls.can_wrap(base):
            raise AdapterFileError(
                f"{source} adapts {path}, a {type(base).__name__} here; {method} adapts {cls.wraps_what}."
            )
        if type(base) is nn.Linear:  # equal Linear shapes give equal adapters: build one per signature
            signature: tuple = (base.in_features, base.out_features, base.bias is not None, base.weight.dtype)
        else:
            signature = (id(base),)
        if signature not in cache:
            try:
                cache[signature] = _expected_shapes(cls, config, base)
            except ConfigError as err:
                raise ConfigError(f"{source}: {path}: {err}") from None
        expected.update({f"{path}.{key}": shape for key, shape in cache[signature].items()})
    return expected


def check_state(expected: Mapping[str, tuple[int, ...]], tensors: Mapping[str, torch.Tensor],
                source: str | os.PathLike) -> None:
    """Raise AdapterFileError listing missing, unexpected and misshapen tensors (first few of each)."""
    missing = [key for key in expected if key not in tensors]
    unexpected = [key for key in tensors if key not in expected]
    misshapen = [
        f"{key} {tuple(value.shape)} in the file vs {expected[key]} in this model"
        for key, value in tensors.items() if key in expected and tuple(value.shape) != expected[key]
    ]
    if not (missing or unexpected or misshapen):
        return
    parts = [
        f"{len(found)} {what}: {', '.join(found[:_SHOWN])}{', ...' if len(found) > _SHOWN else ''}"
        for what, found in (
            ("missing", missing), ("unexpected", unexpected), ("with the wrong shape", misshapen)
        )
        if found
    ]
    matched = len(tensors) - len(unexpected)
    raise AdapterFileError(
        f"{source} does not fit this model ({matched}/{len(tensors)} tensors match an adapted layer): "
        + "; ".join(parts)
        + ". The file was saved for another model, rank or method, or was edited; load it onto the "
        "model and method it was trained for."
    )


def _exact_pattern(paths: list[str]) -> str:
    # A full-match regex of the exact paths: list targets would also match name suffixes and globs.
    return "(?:" + "|".join(re.escape(path) for path in paths) + ")"


def _config_groups(config: AdapterConfig, targets: list[str],
                   layer_configs: Mapping[str, AdapterConfig]) -> list[tuple[AdapterConfig, list[str]]]:
    """[(config, paths)] with the layers that share a config together, in target order."""
    groups: list[tuple[AdapterConfig, list[str]]] = []
    for path in targets:
        wanted = layer_configs.get(path, config)
        group = next((paths for cfg, paths in groups if cfg == wanted), None)
        if group is None:
            groups.append((wanted, [path]))
        else:
            group.append(path)
    return groups


def attach(model: nn.Module, method: str, name: str, config: AdapterConfig, targets: list[str],
           tensors: Mapping[str, torch.Tensor], source: str | os.PathLike,
           layer_configs: Mapping[str, AdapterConfig] | None = None) -> nn.Module:
    """Check `tensors` against `method` on exactly `targets`, then add them to `model` as adapter `name`.

    `layer_configs` gives the layers whose config differs from `config` (e.g. per-layer ranks left by
    SoRA's pruning, or PEFT's rank_pattern).
    """
    if name in adapter_names(model):
        raise ConfigError(
            f"the model already has an adapter named {name!r}; pass name=... to load {source} under "
            "another name, or unload the existing one first."
        )
    if not targets:
        raise AdapterFileError(f"{source} lists no adapted modules; it is empty or was edited.")
    groups = _config_groups(config, targets, layer_configs or {})
    expected: dict[str, tuple[int, ...]] = {}
    for group_config, paths in groups:
        expected.update(expected_state(model, method, group_config, paths, source))
    check_state(expected, tensors, source)
    # adapt() takes one config per call: attach each group under a temporary name, then rename.
    token = secrets.token_hex(4)
    staging = [name] if len(groups) == 1 else [f"loading_{token}_{i}" for i in range(len(groups))]
    for part, (group_config, paths) in zip(staging, groups, strict=True):
        exact = dataclasses.replace(group_config, targets=_exact_pattern(paths), exclude=[])
        adapt(model, method, name=part, config=exact, state=tensors)
        for path, adapter in layers_of(model, part).items():
            adapter.config = group_config  # keep the user's own targets, so a re-save writes the same config
            if part != name:
                layer = model.get_submodule(path)
                layer.adapters[name] = layer.adapters.pop(part)
    set_active(model, name)
    layers = layers_of(model, name)
    if set(layers) != set(targets):  # cannot happen unless adapt's target matching changes
        odd = sorted(set(layers) ^ set(targets))[:_SHOWN]
        raise AdapterFileError(f"{source}: loaded onto {odd} unexpectedly.")
    return model
