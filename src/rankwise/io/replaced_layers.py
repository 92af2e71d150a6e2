"""What every family whose modules replace a model's linear layers (compression, reparameterization)
needs in order to be saved and loaded: a record of what it installed, kept on the model, the layout of
its tensors, and the rebuild of its modules from a saved plan. A family makes one ReplacedLayers with its
method registry and registers `.family()` in rankwise._registry.FAMILIES."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._registry import Family, Registry
from ..errors import AdapterFileError, ConfigError, TargetError
from ..surgery import Wrapper, make_plan, replace_module
from .readers import check_state


class ReplacedLayers:
    def __init__(self, family: str, methods: Registry, noun: str, verb: str):
        # noun and verb name it in messages: "compression", "compresses"
        self.name, self.methods, self.noun, self.verb = family, methods, noun, verb
        self.attribute = f"_rankwise_{family}"  # {name: (method, config, {path: layer config})} on the model

    def plan(self, model: nn.Module, method: str, name: str, config: Any, fields: Mapping[str, Any]):
        """(method class, config, plan) for a new install `name`: the config made from `fields` unless
        given, and its plan, every planned module checked to be an nn.Linear; nothing is changed yet."""
        cls = self.methods.get(method)
        if config is None:
            config = cls.config_class.create(method, **fields)
        if name in self.installed(model):
            raise ConfigError(f"the model already has a {self.noun} named {name!r}; pick another name.")
        plan = make_plan(model, config)
        for path in plan:
            layer = model.get_submodule(path)
            if type(layer) is not nn.Linear:
                raise TargetError(f"{path} is a {type(layer).__name__}; {method} {self.verb} nn.Linear "
                                  "layers (exclude it; adapters go on after).")
        return cls, config, plan

    def install(self, model: nn.Module, name: str, method: str, config: Any, plan: Mapping[str, Any],
                built: Mapping[str, nn.Module]) -> None:
        for path, module in built.items():
            replace_module(model, path, module)
        records = getattr(model, self.attribute, {})
        records[name] = (method, config, dict(plan))
        setattr(model, self.attribute, records)

    def uninstall(self, model: nn.Module, name: str, originals: Mapping[str, nn.Module]) -> None:
        for path, layer in originals.items():
            replace_module(model, path, layer)
        getattr(model, self.attribute).pop(name)

    def installed(self, model: nn.Module) -> list[str]:
        return list(getattr(model, self.attribute, {}))

    def module(self, model: nn.Module, path: str) -> nn.Module:
        module = model.get_submodule(path)
        return module.base if isinstance(module, Wrapper) else module  # an adapter may sit on top

    def layout(self, model: nn.Module, name: str) -> tuple:
        method, config, plan = getattr(model, self.attribute)[name]
        state = {f"{path}.{key}": value for path in plan
                 for key, value in self.module(model, path).state_dict().items()}
        return method, config, plan, state

    def apply_saved(self, model: nn.Module, method: str, name: str, config: Any, plan: Mapping[str, Any],
                    state: Mapping[str, torch.Tensor], source: Any) -> None:
        """Rebuild the modules' structure from the plan (the method's shape()), check the saved tensors
        against it, then install; a bad file leaves the model untouched."""
        cls = self.methods.get(method)
        modules = dict(model.named_modules())
        built = {}
        for path, layer_config in plan.items():
            layer = modules.get(path)
            if type(layer) is not nn.Linear:
                raise AdapterFileError(f"{source}: {path} is not an nn.Linear of this model; the file was "
                                       "saved for another architecture.")
            built[path] = cls.shape(layer, layer_config)
        expected = {f"{path}.{key}": tuple(value.shape) for path, module in built.items()
                    for key, value in module.state_dict().items()}
        check_state(expected, state, source)
        for path, module in built.items():
            prefix = path + "."
            module.load_state_dict({key[len(prefix):]: value for key, value in state.items()
                                    if key.startswith(prefix)})
        self.install(model, name, method, config, plan, built)

    def family(self) -> Family:
        """The FAMILIES entry: applied before adapters (which may wrap these layers), and replacing the
        base's tensors at its paths."""
        return Family(self.name, self.methods, apply=self.apply_saved, layout=self.layout,
                      installed=self.installed, order=0, replaces=True)
