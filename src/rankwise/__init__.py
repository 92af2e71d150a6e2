"""rankwise: low-rank methods across a model's life, behind one small interface."""

from . import arch  # residual-stream variants (rankwise.arch.apply); registers its file-format family
from ._version import __version__
from .adapters import (
    ADAPTERS,
    adapt,
    disable,
    disabled,
    enable,
    hooks,
    merge,
    mixed_batch,
    set_active,
    trainable_parameters,
    unload,
    unmerge,
)
from .compress import compress  # the verb; the package stays importable as rankwise.compress.<module>
from .errors import RankwiseError
from .io import load_adapter, save_adapter, save_model
from .merging import merge_adapters  # combining fine-tunes; rankwise.merge folds a model's own adapters
from .reparam import reparametrize  # the verb; the package stays importable as rankwise.reparam
from .train import PretrainConfig, TrainConfig, finetune, pretrain

__all__ = [
    "ADAPTERS", "PretrainConfig", "RankwiseCallback", "RankwiseError", "TrainConfig", "adapt", "analyze",
    "arch", "compress", "disable", "disabled", "enable", "finetune", "hooks", "load_adapter", "merge",
    "merge_adapters", "mixed_batch", "pretrain", "reparametrize", "save_adapter", "save_model", "set_active",
    "trainable_parameters", "unload", "unmerge", "__version__",
]


def __getattr__(name: str):
    # Imported on first use: the Trainer callback pulls in transformers' Trainer, analyze matplotlib.
    if name == "RankwiseCallback":
        from .train.hf import RankwiseCallback

        return RankwiseCallback
    if name == "analyze":
        import importlib

        return importlib.import_module(".analyze", __name__)
    raise AttributeError(f"module 'rankwise' has no attribute {name!r}")
