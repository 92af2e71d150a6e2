"""The public verbs: adapt, merge, unmerge, unload, enable, disable, set_active, trainable_parameters."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from ..errors import AdapterFileError, ConfigError, TargetError
from ..surgery import find_targets, get_module, replace_module
from .base import ADAPTERS, Adapter, AdapterConfig
from .layer import AdaptedLinear, AdaptedModule


def adapted_layers(model: nn.Module) -> dict[str, AdaptedModule]:
    return {name: m for name, m in model.named_modules() if isinstance(m, AdaptedModule)}


def adapter_names(model: nn.Module) -> list[str]:
    names: dict[str, None] = {}
    for layer in adapted_layers(model).values():
        names.update(dict.fromkeys(layer.adapters))
    return list(names)


def layers_of(model: nn.Module, name: str) -> dict[str, Adapter]:
    """{module path: adapter} for one adapter name."""
    found = {path: layer.adapters[name] for path, layer in adapted_layers(model).items() if name in layer.adapters}
    if not found:
        raise ConfigError(f"no adapter named {name!r} in this model; it has {adapter_names(model) or 'none'}.")
    return found


def get_config(model: nn.Module, name: str = "default") -> AdapterConfig:
    return next(iter(layers_of(model, name).values())).config


def adapt(
    model: nn.Module,
    method: str = "lora",
    *,
    name: str = "default",
    config: AdapterConfig | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
    **fields: Any,
) -> nn.Module:
    """Attach a new adapter of `method` to the modules its config targets, and make it the active one.

    `fields` are the method's config fields (rank=8, alpha=16, targets="all-linear", ...). Only the
    new adapter's tensors train afterwards. `state` ({"<module path>.<tensor>": tensor}, as
    save_adapter writes it) loads saved tensors instead of initialising them.
    """
    cls = ADAPTERS.get(method)
    if config is None:
        config = cls.config_class(**fields)
    elif fields:
        raise ConfigError("pass either config= or keyword fields, not both.")
    if not isinstance(config, cls.config_class):
        raise ConfigError(f"{method} needs a {cls.config_class.__name__}, got {type(config).__name__}.")
    if name in adapter_names(model):
        raise ConfigError(f"the model already has an adapter named {name!r}; pick another name or unload it.")
    built: dict[str, Adapter] = {}
    for path in _target_paths(model, config):
        module = get_module(model, path)
        base = module.base if isinstance(module, AdaptedModule) else module
        if not cls.can_wrap(base):
            raise TargetError(f"{path} is a {type(base).__name__}; {method} adapts {cls.wraps_what} only.")
        try:
            adapter = cls(base, config)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
        if state is None:
            weight = getattr(base, "weight", None)  # block-level methods have none
            adapter.init_from_weight(None if weight is None else weight.detach())
        else:
            load_layer_state(adapter, path, state)
        built[path] = adapter
    # Only now, with every layer built and checked, is the model touched: a bad config or file
    # never leaves it half-adapted.
    for param in model.parameters():
        param.requires_grad_(False)
    for path, adapter in built.items():
        module = get_module(model, path)
        if not isinstance(module, AdaptedModule):
            module = AdaptedLinear(module) if type(module) is nn.Linear else AdaptedModule(module)
            module.train(module.base.training)
            replace_module(model, path, module)
        adapter.train(module.training)
        module.adapters[name] = adapter
    set_active(model, name)
    return model


def _target_paths(model: nn.Module, config: AdapterConfig) -> list[str]:
    """find_targets, seen through existing wrappers: a wrapper's base counts as the wrapper itself,
    and the adapters' own submodules are never targets."""
    wrappers = adapted_layers(model)
    paths: dict[str, None] = {}
    for path in find_targets(model, config.targets, config.exclude):
        owner, _, leaf = path.rpartition(".")
        if leaf == "base" and owner in wrappers:
            path = owner
        if not any(path.startswith(w + ".adapters.") for w in wrappers):
            paths[path] = None
    return list(paths)


def load_layer_state(adapter: Adapter, path: str, state: Mapping[str, torch.Tensor]) -> None:
    prefix = path + "."
    own = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    expected = adapter.state_dict()
    missing = sorted(set(expected) - set(own))
    if missing:
        raise AdapterFileError(f"{path}: the adapter file has no {', '.join(missing)} for this layer.")
    for key, value in own.items():
        if key in expected and value.shape != expected[key].shape:
            raise AdapterFileError(
                f"{path}.{key}: saved shape {tuple(value.shape)} does not fit this model's "
                f"{tuple(expected[key].shape)}; the adapter was made for another model or rank."
            )
    adapter.load_state_dict({k: v for k, v in own.items() if k in expected})


def set_active(model: nn.Module, names: str | list[str]) -> None:
    """Make `names` the adapters that run (in that order) and train; the others stay frozen."""
    names = [names] if isinstance(names, str) else list(names)
    known = adapter_names(model)
    missing = [n for n in names if n not in known]
    if missing:
        raise ConfigError(f"unknown adapter(s) {missing}; this model has {known}.")
    for layer in adapted_layers(model).values():
        layer.unmerge()
        layer.active = [n for n in names if n in layer.adapters]
        for adapter_name, adapter in layer.adapters.items():
            adapter.requires_grad_(adapter_name in names)


def active_adapters(model: nn.Module) -> list[str]:
    names: dict[str, None] = {}
    for layer in adapted_layers(model).values():
        names.update(dict.fromkeys(layer.active))
    return list(names)


def merge(model: nn.Module) -> nn.Module:
    """Fold every active adapter into its base weight (undo with unmerge)."""
    for layer in adapted_layers(model).values():
        layer.merge(layer.active)
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Restore the exact pre-merge base weights."""
    for layer in adapted_layers(model).values():
        layer.unmerge()
    return model


def unload(model: nn.Module, names: str | list[str] | None = None, *, merge: bool = False) -> nn.Module:
    """Remove adapters (all by default) and put plain nn.Linear layers back.

    With merge=True the active adapters are first folded in for good (a deployable model);
    otherwise the base weights come back as they were before `adapt`.
    """
    names = adapter_names(model) if names is None else ([names] if isinstance(names, str) else list(names))
    for path, layer in adapted_layers(model).items():
        if merge:
            layer.merge(layer.active)
            layer._unmerged_weight, layer.merged = None, []  # the merged weight is now the base
            layer.adapters.clear()
        for name in names:
            if name in layer.adapters:
                layer.remove(name)
        if not layer.adapters:
            replace_module(model, path, layer.base)
    return model


def enable(model: nn.Module) -> None:
    for layer in adapted_layers(model).values():
        layer.disabled = False


def disable(model: nn.Module) -> None:
    """Run the base model only; merged adapters are unmerged first so the switch is real."""
    for layer in adapted_layers(model).values():
        layer.unmerge()
        layer.disabled = True


@contextlib.contextmanager
def disabled(model: nn.Module) -> Iterator[nn.Module]:
    disable(model)
    try:
        yield model
    finally:
        enable(model)


def trainable_parameters(model: nn.Module) -> dict[str, int]:
    """{"trainable": n, "total": n} counted over unique tensors."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in model.parameters()}
    return {
        "trainable": sum(p.numel() for p in seen.values() if p.requires_grad),
        "total": sum(p.numel() for p in seen.values()),
    }
