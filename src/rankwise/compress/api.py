"""compress(model, method, ...): replace the planned layers by their compressed form, and the family
entry through which rankwise.io saves and loads compressed models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._registry import FAMILIES, Family
from ..errors import AdapterFileError, ConfigError, TargetError
from ..io.readers import check_state
from ..surgery import make_plan, replace_module
from .base import COMPRESSORS, CompressConfig

_RECORD = "_rankwise_compress"  # {name: (method, config, [paths])} on the model, for saving


def compress(model: nn.Module, method: str = "svd", *, name: str = "default",
             config: CompressConfig | None = None, **fields: Any) -> nn.Module:
    """Compress the layers `method`'s config selects, in place; returns the model.

    `fields` are the method's config fields (e.g. rank=64 or ratio=0.5, targets, rank_pattern). Every
    layer is built before any is replaced, so a bad setting leaves the model as it was.
    """
    cls = COMPRESSORS.get(method)
    if config is None:
        config = cls.config_class.create(method, **fields)
    if name in installed(model):
        raise ConfigError(f"the model already has a compression named {name!r}; pick another name.")
    plan = make_plan(model, config)
    built = {}
    for path, layer_config in plan.items():
        layer = model.get_submodule(path)
        if type(layer) is not nn.Linear:
            raise TargetError(f"{path} is a {type(layer).__name__}; {method} compresses nn.Linear layers.")
        try:
            built[path] = cls.build(layer, layer_config)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    _install(model, name, method, config, plan, built)
    return model


def _install(model, name, method, config, plan, built) -> None:
    for path, module in built.items():
        replace_module(model, path, module)
    records = getattr(model, _RECORD, {})
    records[name] = (method, config, dict(plan))
    setattr(model, _RECORD, records)


def installed(model: nn.Module) -> list[str]:
    return list(getattr(model, _RECORD, {}))


def layout(model: nn.Module, name: str) -> tuple:
    method, config, plan = getattr(model, _RECORD)[name]
    state = {f"{path}.{key}": value for path in plan
             for key, value in model.get_submodule(path).state_dict().items()}
    return method, config, plan, state


def _apply_saved(model: nn.Module, method: str, name: str, config: CompressConfig,
                 plan: Mapping[str, CompressConfig], state: Mapping[str, torch.Tensor], source: Any) -> None:
    """Rebuild the compressed layers' structure from the plan, check the saved tensors, then install."""
    cls = COMPRESSORS.get(method)
    modules = dict(model.named_modules())
    built = {}
    for path, layer_config in plan.items():
        layer = modules.get(path)
        if type(layer) is not nn.Linear:
            raise AdapterFileError(f"{source}: {path} is not an nn.Linear of this model; the file was saved "
                                   "for another architecture.")
        built[path] = cls.shape(layer, layer_config)
    expected = {f"{path}.{key}": tuple(value.shape) for path, module in built.items()
                for key, value in module.state_dict().items()}
    check_state(expected, state, source)
    for path, module in built.items():
        prefix = path + "."
        module.load_state_dict({key[len(prefix):]: value for key, value in state.items()
                                if key.startswith(prefix)})
    _install(model, name, method, config, plan, built)


FAMILIES.register("compress")(
    Family("compress", COMPRESSORS, apply=_apply_saved, layout=layout, installed=installed))
