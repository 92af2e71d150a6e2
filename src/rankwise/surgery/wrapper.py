"""The one thing every family's wrapper modules share, so that generic code (fingerprints, target
search, plans) can see through them without importing the family that made them."""

from __future__ import annotations

from torch import nn

from ..errors import NotMergeable


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


def check_untied(model: nn.Module, paths: list[str]) -> None:
    """Refuse to merge into a weight another module shares (embeddings tied to the output head): merging
    would change both, where the unmerged adapter changes one, so it could not be exact."""
    holders: dict[int, list[str]] = {}
    for path, module in model.named_modules():
        for param in module.parameters(recurse=False):
            holders.setdefault(id(param), []).append(path)
    for path in paths:
        weight = getattr(model.get_submodule(path).base, "weight", None)
        others = [holder for holder in holders.get(id(weight), []) if holder != f"{path}.base"]
        if others:
            raise NotMergeable(f"{path}'s weight is tied to {others[0]}'s, so merging would change both; "
                               "keep the adapter unmerged, or untie the weights first.")
