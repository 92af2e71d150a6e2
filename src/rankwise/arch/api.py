"""apply(model, variant, ...): rewire a model's residual stream, and the family entry through which
rankwise.io saves and loads re-architected models (their variant's tensors beside the base's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._registry import FAMILIES, Family
from ..errors import AdapterFileError, ConfigError
from ..io.readers import check_state
from ..surgery import make_plan, replace_module
from .base import ARCHS, ArchConfig, Stream, StreamBlock, check_pre_norm

_RECORD = "_rankwise_arch"  # {name: (variant, config, {path: config})} on the model


def apply(model: nn.Module, variant: str, *, name: str = "default", config: ArchConfig | None = None,
          **fields: Any) -> nn.Module:
    """Wrap every transformer block of `model` in `variant`'s residual stream, in place; returns the model.

    `fields` are the variant's config fields (blocks=4 for attnres-block, upper=k for ladder, scale and
    normalize for residual-scale). The variant's own tensors start as its paper initialises them; the
    blocks' weights are untouched, so on a pretrained model this is the "convert" step and a short
    fine-tune (any rankwise adapter) the "recover" step. Apply it before adapters, compression or a
    parameterization: their saved plans name the blocks' layers as they sit inside the wrappers.
    """
    cls = ARCHS.get(variant)
    config = config if config is not None else cls.config_class.create(variant, **fields)
    for existing, *_ in getattr(model, _RECORD, {}).values():
        raise ConfigError(f"the model already has the {existing} architecture; start again from the plain "
                          "model to apply another.")
    others = [family for family in FAMILIES.names()
              if family != "arch" and FAMILIES.get(family).installed(model)]
    if others:
        raise ConfigError(f"the model already carries {' and '.join(others)} layers; apply the architecture "
                          "first, then add those (their saved plans name the layers inside its blocks).")
    built = _build(model, cls, config, make_plan(model, config))
    _install(model, name, variant, config, built)
    return model


def _build(model: nn.Module, cls: type[StreamBlock], config: ArchConfig,
           plan: Mapping[str, Any]) -> dict[str, StreamBlock]:
    if config.layers_to_transform is not None:
        raise ConfigError("architecture variants rewire every block, so layers_to_transform does not apply; "
                          "the ladder converts the upper k blocks with upper=k.")
    paths = list(plan)
    for path in paths:
        check_pre_norm(path, model.get_submodule(path))
    config.check_depth(len(paths))
    stream = Stream()
    return {path: cls(model.get_submodule(path), index, len(paths), config, stream)
            for index, path in enumerate(paths)}


def _install(model: nn.Module, name: str, variant: str, config: ArchConfig,
             built: Mapping[str, StreamBlock]) -> None:
    for path, block in built.items():
        replace_module(model, path, block)
    setattr(model, _RECORD, {name: (variant, config, dict.fromkeys(built, config))})


def installed(model: nn.Module) -> list[str]:
    return list(getattr(model, _RECORD, {}))


def _layout(model: nn.Module, name: str) -> tuple:
    variant, config, plan = getattr(model, _RECORD)[name]
    state = {f"{path}.{key}": value for path in plan
             for key, value in model.get_submodule(path).own_state().items()}
    return variant, config, plan, state


def _apply_saved(model: nn.Module, variant: str, name: str, config: ArchConfig, plan: Mapping[str, Any],
                 state: Mapping[str, torch.Tensor], source: Any) -> None:
    """Rebuild the variant on the saved blocks, check the saved tensors, then install."""
    blocks = set(make_plan(model, config))
    if set(plan) != blocks:
        raise AdapterFileError(f"{source}: the saved {variant} covers {len(plan)} blocks, this model has "
                               f"{len(blocks)}; the file was saved for another architecture.")
    built = _build(model, ARCHS.get(variant), config, plan)
    expected = {f"{path}.{key}": tuple(value.shape) for path, block in built.items()
                for key, value in block.own_state().items()}
    check_state(expected, state, source)
    for path, block in built.items():
        own = {key[len(path) + 1:]: value for key, value in state.items() if key.startswith(path + ".")}
        block.load_state_dict(own, strict=False)  # its base's tensors are the model's, already loaded
    _install(model, name, variant, config, built)


# Before every other family: the others' saved plans name layers inside the blocks' wrappers.
FAMILIES.register("arch")(Family("arch", ARCHS, apply=_apply_saved, layout=_layout, installed=installed,
                                 order=-1))
