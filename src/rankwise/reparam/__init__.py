"""Trainable low-rank and low-rank-plus-sparse parameterizations for training from scratch or continued
training: each targeted nn.Linear becomes W = s · B A (+ S), trained as factors, through the same plan,
files and model folders as every family. Importing this registers every method (one module per method).

    rankwise.reparametrize(model, "sltrain", rank=128, density=0.03)
    rankwise.io.save_model(model, "out/run"); rankwise.models.load("out/run")
"""

import importlib
import pkgutil

from .api import installed, reparametrize
from .base import REPARAMS, FactorizedLinear, ReparamConfig, Reparametrizer, register
from .refactor import RefactorSchedule, refactorize, reset_momentum
from .relora import ReloraSchedule
from .sst import SstSchedule

_INFRASTRUCTURE = {"api", "base", "refactor", "relora", "sst"}  # relora and sst are imported above
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REPARAMS", "FactorizedLinear", "RefactorSchedule", "ReloraSchedule", "ReparamConfig",
           "Reparametrizer", "SstSchedule", "installed", "refactorize", "register", "reparametrize",
           "reset_momentum"]
