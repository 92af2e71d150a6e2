"""Post-training compression: layers replaced by low-rank factors, through the same plan, files and
model folders as every family. Importing this registers every method (one module per method).

    rankwise.compress(model, "svd", ratio=0.5)        # keep half of each linear layer's parameters
    rankwise.io.save_model(model, "out/small", tokenizer); rankwise.models.load("out/small")
"""

import importlib
import pkgutil

from .api import compress, installed
from .base import COMPRESSORS, CompressConfig, Compressor, LowRankLinear, register

_INFRASTRUCTURE = {"api", "base", "calibration", "compact", "report"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["COMPRESSORS", "CompressConfig", "Compressor", "LowRankLinear", "compress", "installed",
           "register"]
