"""The one thing every family's wrapper modules share, so that generic code (fingerprints, target
search, plans) can see through them without importing the family that made them."""

from __future__ import annotations

from torch import nn


class Wrapper(nn.Module):
    """A module that keeps the module it replaced as `self.base` and adds something around it.

    Generic code treats `<path>.base.<name>` as `<path>.<name>` and never looks at the wrapper's
    other submodules (they are the family's own tensors).
    """

    base: nn.Module

    def base_is_modified(self) -> bool:
        """Whether the base's parameters currently differ from the original (e.g. merged adapters)."""
        return False

    def original_weight(self):
        """The base's weight as it was before anything was merged into it (None if it has none)."""
        return getattr(self.base, "weight", None)


def wrappers(model: nn.Module) -> dict[str, Wrapper]:
    return {path: module for path, module in model.named_modules() if isinstance(module, Wrapper)}
