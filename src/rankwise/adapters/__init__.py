"""Fine-tuning methods behind one interface; importing this registers every method."""

from . import dora, lora, pissa, rslora  # noqa: F401  (registration)
from .api import (
    adapt,
    adapted_layers,
    adapter_names,
    active_adapters,
    disable,
    disabled,
    enable,
    get_config,
    layers_of,
    merge,
    set_active,
    trainable_parameters,
    unload,
    unmerge,
)
from .base import ADAPTERS, Adapter, AdapterConfig, register
from .layer import AdaptedLinear

__all__ = [
    "ADAPTERS", "Adapter", "AdapterConfig", "AdaptedLinear", "register",
    "adapt", "adapted_layers", "adapter_names", "active_adapters", "disable", "disabled", "enable",
    "get_config", "layers_of", "merge", "set_active", "trainable_parameters", "unload", "unmerge",
]
