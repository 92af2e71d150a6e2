"""rankwise: low-rank methods across a model's life, behind one small interface."""

from .adapters import (
    ADAPTERS,
    adapt,
    disable,
    disabled,
    enable,
    merge,
    set_active,
    trainable_parameters,
    unload,
    unmerge,
)
from .errors import RankwiseError
from .io import load_adapter, save_adapter
from .train import TrainConfig, finetune

__version__ = "0.1.0"

__all__ = [
    "ADAPTERS", "RankwiseError", "TrainConfig", "adapt", "disable", "disabled", "enable", "finetune",
    "load_adapter", "merge", "save_adapter", "set_active", "trainable_parameters", "unload", "unmerge", "__version__",
]
