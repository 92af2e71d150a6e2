"""Fine-tuning methods behind one interface; importing this registers every method.

Each method is one module of this package (its file name == its registry key with "-" as "_");
importing them all here is what registers them.
"""

import importlib
import pkgutil

from ._requantize import requantization_errors
from .api import (
    active_adapters,
    adapt,
    adapted_layers,
    adapter_names,
    disable,
    disabled,
    enable,
    get_config,
    layers_of,
    layout,
    load_state,
    merge,
    method_layers,
    needs_whole_sequence,
    set_active,
    trainable_parameters,
    unload,
    unmerge,
)
from .base import ADAPTERS, Adapter, AdapterConfig, StepContext, register
from .layer import AdaptedLinear, AdaptedModule
from .mixed import mixed_batch

_INFRASTRUCTURE = {"api", "base", "convert", "hooks", "layer", "layer_kinds", "mixed", "module_copy"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ADAPTERS", "Adapter", "AdapterConfig", "AdaptedLinear", "AdaptedModule", "StepContext", "register",
    "adapt", "adapted_layers", "adapter_names", "active_adapters", "disable", "disabled", "enable",
    "get_config", "layers_of", "layout", "method_layers", "load_state", "needs_whole_sequence", "merge",
    "mixed_batch", "set_active",
    "requantization_errors", "trainable_parameters", "unload", "unmerge",
]
