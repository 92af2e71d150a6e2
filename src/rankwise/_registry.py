"""One generic registry, shared by every family of methods (adapters, compressors, ...), and the
registry of families itself, through which io/ reaches a family without importing it."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def register_class(self, name: str) -> Callable[[T], T]:
        """register(name), and set the class's `name` to it (registry key == file name == cls.name)."""

        def add(cls: T) -> T:
            cls.name = name
            return self.register(name)(cls)

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._items))}."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


@dataclass(frozen=True)
class Family:
    """What the file formats need from a family of methods (adapters, compressors, ...).

    methods:  its method registry; each entry has a `config_class` with from_dict / to_dict.
    apply:    apply(model, method, name, plan, state, source) builds the family's modules for `plan`
              ({module path: config}), checks `state` ({"<path>.<tensor>": tensor}) against them,
              and only then installs them; a bad state leaves the model untouched.
    layout:   layout(model, name) -> (method, config, plan, state) of what is installed under `name`,
              where config is the config the plan was made from.
    installed: installed(model) -> the names this family has installed in `model`, in the order to apply them.
    order:    families are applied in this order when a model is rebuilt: lower first (compression
              replaces base layers, which adapters then wrap).
    replaces: its modules replace the base's (so the base's own tensors at those paths are not saved);
              otherwise they wrap the base, which is saved unwrapped.
    """

    name: str
    methods: Registry[Any]
    apply: Callable[..., Any]
    layout: Callable[..., tuple]
    installed: Callable[..., list[str]]
    order: int = 1
    replaces: bool = False


FAMILIES: Registry[Family] = Registry("method family")
