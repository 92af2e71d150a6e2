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

__version__ = "0.1.0"

__all__ = [
    "ADAPTERS", "RankwiseError", "adapt", "disable", "disabled", "enable", "merge", "set_active",
    "trainable_parameters", "unload", "unmerge", "__version__",
]
