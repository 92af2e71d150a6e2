"""Optimizers by name, for rankwise's loop, the Hugging Face callback and any other loop.

    optimizer = build_optimizer("adamw", hooks.param_groups(model, lr), lr=lr, weight_decay=0.0)

Each entry is a plain function (param_groups, lr, weight_decay, **options) -> torch.optim.Optimizer,
registered under its name; TrainConfig.optimizer picks one and TrainConfig.optimizer_config holds its
options. Projected optimizers (GaLore-style) register here too.
"""

from . import gradnorm_lorp, projected  # noqa: F401  register gradnorm-lorp; galore, dct and random
from .memory import format_memory, memory_report
from .registry import OPTIMIZERS, build_optimizer, optimizer_options
from .trainer import trainer_optimizer

__all__ = ["OPTIMIZERS", "build_optimizer", "format_memory", "memory_report", "optimizer_options",
           "trainer_optimizer"]
