"""The public verbs: adapt, merge, unmerge, unload, enable, disable, set_active, trainable_parameters."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from .._registry import FAMILIES, Family
from ..errors import AdapterFileError, ConfigError, TargetError
from ..io.export import active_adapter_names
from ..io.readers import check_state
from ..surgery import check_untied, get_module, is_linear, make_plan, replace_module, target_paths
from .base import ADAPTERS, Adapter, AdapterConfig
from .layer import AdaptedLinear, AdaptedModule
from .mixed import install_adapter_names
from .module_copy import ModuleCopy


def adapted_layers(model: nn.Module) -> dict[str, AdaptedModule]:
    return {name: m for name, m in model.named_modules() if isinstance(m, AdaptedModule)}


def needs_whole_sequence(model: nn.Module) -> bool:
    """Whether an adapter the forward applies attends over the sequence itself (see
    Adapter.needs_whole_sequence): generate one unpadded prompt at a time, with use_cache=False."""
    return any(adapter.needs_whole_sequence for layer in adapted_layers(model).values()
               for adapter in layer.pending())


def adapter_names(model: nn.Module) -> list[str]:
    names: dict[str, None] = {}
    for layer in adapted_layers(model).values():
        names.update(dict.fromkeys(layer.adapters))
    return list(names)


def layers_of(model: nn.Module, name: str) -> dict[str, Adapter]:
    """{module path: adapter} for one adapter name."""
    found = {path: layer.adapters[name] for path, layer in adapted_layers(model).items()
             if name in layer.adapters}
    if not found:
        known = adapter_names(model) or "none"
        raise ConfigError(f"no adapter named {name!r} in this model; it has {known}.")
    return found


def get_config(model: nn.Module, name: str = "default") -> AdapterConfig:
    """The config adapter `name` was made from (each layer's own is `layers_of(model, name)[path].config`)."""
    return layout_config(next(iter(layers_of(model, name).values())))


def layout_config(adapter: Adapter) -> AdapterConfig:
    return getattr(adapter, "plan_config", adapter.config)


def adapt(
    model: nn.Module,
    method: str = "lora",
    *,
    name: str = "default",
    config: AdapterConfig | None = None,
    plan: Mapping[str, AdapterConfig] | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
    freeze_base: bool = True,
    source: str = "the given state",
    **fields: Any,
) -> nn.Module:
    """Attach a new adapter of `method` to the modules its config targets, and make it the active one.

    `fields` are the method's config fields (rank=8, alpha=16, targets="all-linear",
    rank_pattern={"q_proj": 4}, ...); a field the method does not use is an error. `plan`
    ({module path: config}, rankwise.surgery.make_plan's output) overrides the config's own targets.
    `state` ({"<module path>.<tensor>": tensor}, as save_adapter writes it) loads saved tensors instead
    of initialising them; every tensor is checked before the model changes. freeze_base=False leaves
    the other parameters' requires_grad as they are (full-rank or pre-training runs); by default
    only the new adapter's tensors train.
    """
    if not isinstance(name, str) or not name or "." in name:
        raise ConfigError(f"adapter name {name!r} must be a non-empty string without '.'.")
    cls = ADAPTERS.get(method)
    if config is None:
        config = cls.config_class.create(method, **fields)
    elif fields:
        raise ConfigError("pass either config= or keyword fields, not both.")
    if not isinstance(config, cls.config_class):
        raise ConfigError(f"{method} needs a {cls.config_class.__name__}, got {type(config).__name__}.")
    if name in adapter_names(model):
        raise ConfigError(f"the model already has an adapter named {name!r}; pick another name or unload it.")

    plan = make_plan(model, config) if plan is None else dict(plan)
    built = {**_build(model, cls, config, plan), **_module_copies(model, cls, config, plan)}
    if state is None:
        for path, adapter in built.items():
            weight = getattr(_base_of(model, path), "weight", None)  # block-level methods have none
            adapter.init_from_weight(None if weight is None else weight.detach())
    else:
        _load_state(built, state, source)
    # Only now, with every layer built and checked, is the model touched: a bad config or file
    # never leaves it half-adapted.
    if freeze_base:
        for param in model.parameters():
            param.requires_grad_(False)
    for path, adapter in built.items():
        module = get_module(model, path)
        if not isinstance(module, AdaptedModule):
            module = AdaptedLinear(module) if is_linear(module) else AdaptedModule(module)
            module.train(module.base.training)
            replace_module(model, path, module)
        adapter.train(module.training)
        module.adapters[name] = adapter
    install_adapter_names(model)  # model(..., adapter_names=[one per row]): see rankwise.adapters.mixed
    set_active(model, name)
    return model


def _base_of(model: nn.Module, path: str) -> nn.Module:
    module = get_module(model, path)
    return module.base if isinstance(module, AdaptedModule) else module


def _build(model: nn.Module, cls: type[Adapter], config: AdapterConfig,
           plan: Mapping[str, AdapterConfig]) -> dict[str, Adapter]:
    """One adapter per planned layer (the factory), each error naming its layer."""
    if not plan and not config.modules_to_save:
        raise TargetError(f"the plan for {cls.name} selects no module; give targets (or, for an adapter "
                          "of whole-module copies only, targets=[] with modules_to_save).")
    modules = dict(model.named_modules())
    absent = [path for path in plan if path not in modules]
    if absent:
        raise TargetError(f"the plan names {len(absent)} module(s) this model lacks, e.g. {absent[:5]}; "
                          "it was made for another model architecture.")
    built = {}
    for path, layer_config in plan.items():
        base = _base_of(model, path)
        if not isinstance(layer_config, cls.config_class):
            raise ConfigError(f"{path}: {cls.name} needs a {cls.config_class.__name__}, "
                              f"got {type(layer_config).__name__}.")
        if not cls.can_wrap(base):
            raise TargetError(f"{path} is a {type(base).__name__}; {cls.name} adapts {cls.adapts()} only.")
        try:
            adapter = cls(base, layer_config)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
        adapter.plan_config = config  # the config the plan came from; saved files record it once
        built[path] = adapter
    return built


def _module_copies(model: nn.Module, cls: type[Adapter], config: AdapterConfig,
                   plan: Mapping[str, AdapterConfig]) -> dict:
    """A trainable copy of each module in config.modules_to_save (rankwise.adapters.module_copy)."""
    if not config.modules_to_save:
        return {}
    copies = {}
    for path in target_paths(model, list(config.modules_to_save)):
        if path in plan:
            raise ConfigError(f"{path} is both adapted and in modules_to_save; keep it in one of the two.")
        try:
            copies[path] = ModuleCopy(_base_of(model, path), config)
        except TargetError as err:
            raise TargetError(f"{path}: {err}") from None
        copies[path].plan_config = config
        copies[path].method = cls.name  # the adapter's method, even when it has only copies
    return copies


def method_layers(model: nn.Module, name: str) -> dict[str, Adapter]:
    """layers_of(model, name) without the modules_to_save copies: the method's own layers."""
    return {path: a for path, a in layers_of(model, name).items() if not isinstance(a, ModuleCopy)}


def _load_state(layers: Mapping[str, Adapter], state: Mapping[str, torch.Tensor], source: Any) -> None:
    """Check every tensor of `state` against `layers` (listing all problems at once), then load them."""
    own = {f"{path}.{key}": value
           for path, adapter in layers.items() for key, value in adapter.state_dict().items()}
    check_state({key: tuple(value.shape) for key, value in own.items()}, state, source)
    for key, value in state.items():
        wanted = own[key].dtype
        if value.dtype.is_complex or value.dtype.is_floating_point != wanted.is_floating_point or (
                not wanted.is_floating_point and value.dtype != wanted):
            raise AdapterFileError(f"{source}: {key} is {value.dtype}, where this adapter holds {wanted}; "
                                   "the file was edited or written by another tool.")
        if value.dtype.is_floating_point and not torch.isfinite(value).all():
            raise AdapterFileError(f"{source}: {key} holds NaN or infinite values (a diverged run?); "
                                   "load an earlier checkpoint instead.")
    for path, adapter in layers.items():
        adapter.load_state_dict({key: state[f"{path}.{key}"] for key in adapter.state_dict()})


def load_state(model: nn.Module, name: str, state: Mapping[str, torch.Tensor],
               source: Any = "the state") -> None:
    """Load saved tensors into the existing adapter `name` (a checkpoint's), after checking them all."""
    _load_state(layers_of(model, name), state, source)


def layout(model: nn.Module, name: str) -> tuple[str, AdapterConfig, dict[str, AdapterConfig], dict]:
    """(method, the config the plan was made from, {path: layer config}, {"<path>.<tensor>": tensor})."""
    layers = method_layers(model, name) or layers_of(model, name)  # or an adapter of copies only
    methods = {getattr(adapter, "method", type(adapter).name) for adapter in layers.values()}
    if len(methods) > 1:
        raise ConfigError(
            f"adapter {name!r} mixes methods {sorted(methods)} across its layers; an adapter file holds one "
            "method. Save each method under its own adapter name."
        )
    # The config the plan was made from; a layer swapped in later (by hand, or SoRA's finalize) has none.
    first = next((a for a in layers.values() if hasattr(a, "plan_config")), next(iter(layers.values())))
    plan = {path: adapter.config for path, adapter in method_layers(model, name).items()}
    state = {f"{path}.{key}": value for path, adapter in layers_of(model, name).items()
             for key, value in adapter.state_dict().items()}
    return methods.pop(), layout_config(first), plan, state


def _names(names: Any, what: str) -> list[str]:
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{what} takes an adapter name or a list of names, got {names!r}.")
    return list(names)


def set_active(model: nn.Module, names: str | list[str]) -> None:
    """Make `names` the adapters that run (in that order) and train; the others stay frozen."""
    names = _names(names, "set_active")
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
    """The adapters the model runs, in order (io.export reads them the same way, below the family)."""
    return active_adapter_names(model)


def merge(model: nn.Module) -> nn.Module:
    """Fold every active adapter into its base weight (undo with unmerge)."""
    if not active_adapters(model):
        raise ConfigError("the model has no active adapter to merge; adapt or load_adapter first.")
    check_untied(model, [path for path, layer in adapted_layers(model).items() if layer.active])
    for layer in adapted_layers(model).values():
        layer.merge(layer.active)
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Restore the exact pre-merge base weights."""
    for layer in adapted_layers(model).values():
        layer.unmerge()
    return model


def unload(model: nn.Module, names: str | list[str] | None = None, *, merge: bool = False) -> nn.Module:
    """Remove adapters `names` (all by default); layers left without adapters become plain modules again.

    With merge=True the active ones among them are first folded into the base weights for good, in
    their active order, and the adapters that stay run on top of that weight; otherwise the base
    weights come back as they were before `adapt`.
    """
    names = adapter_names(model) if names is None else _names(names, "unload")
    unknown = [n for n in names if n not in adapter_names(model)]
    if unknown:
        raise ConfigError(f"unknown adapter(s) {unknown}; this model has {adapter_names(model) or 'none'}.")
    if merge:
        check_untied(model, [path for path, layer in adapted_layers(model).items()
                             if any(n in names for n in layer.active)])
    for path, layer in adapted_layers(model).items():
        chosen = [n for n in layer.adapters if n in names]
        folded = [n for n in layer.active if n in names]
        if merge and folded:
            layer.unmerge()
            layer.merge(folded)
            layer.keep_merged()
        for name in chosen:
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


def _apply_saved(model: nn.Module, method: str, name: str, config: AdapterConfig,
                 plan: Mapping[str, AdapterConfig], state: Mapping[str, torch.Tensor], source: Any) -> None:
    if name in adapter_names(model):
        raise ConfigError(f"the model already has an adapter named {name!r}; pass name=... to load {source} "
                          "under another name, or unload the existing one first.")
    try:
        adapt(model, method, name=name, config=config, plan=plan, state=state, source=source)
    except TargetError as err:  # the file's plan does not fit this model
        raise AdapterFileError(f"{source}: {err}") from None


FAMILIES.register("adapter")(
    Family("adapter", ADAPTERS, apply=_apply_saved, layout=layout, installed=adapter_names))
