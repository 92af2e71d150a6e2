"""Get and replace submodules by their dotted name."""

from __future__ import annotations

from torch import nn


def get_module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name) if name else model


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put `new` where `name` is and return what was there."""
    parent_name, _, child = name.rpartition(".")
    parent = get_module(model, parent_name)
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old
