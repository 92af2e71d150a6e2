"""What the training loop trains, keeps in its checkpoints and restores: an adapter or the whole model.

The loop (rankwise.train.loop.train) is the same for fine-tuning and pre-training; only these differ:
    AdapterTrainee   the active adapter of a frozen model (finetune): the methods' parameter groups and
                     hooks; checkpoints hold adapter/adapter.safetensors, loadable on its own
    ModelTrainee     every parameter with requires_grad (pretrain): rankwise.optim.trainer_optimizer's
                     groups (2-D block weights, projected by a projected optimizer; then embeddings, head
                     and norms, always plain), after-step schedules (a reparameterization's
                     refactorization, restarts or rounds), an optional learning-rate multiplier;
                     checkpoints hold model.safetensors: every parameter and persistent buffer once, so a
                     frozen tensor a schedule rewrites (ReLoRA's merged base) resumes exactly too
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..adapters import StepContext, hooks, load_state
from ..errors import AdapterFileError
from ..io import check_state, save_adapter, save_tensors
from ..io.model_folder import base_state
from ..optim import build_optimizer, trainer_optimizer
from .schedule import build_scheduler

ADAPTER_FILE, MODEL_FILE = "adapter/adapter.safetensors", "model.safetensors"


class AdapterTrainee:
    """The active adapter `name` of `model`; `init_batches` micro-batches go to data-driven inits."""

    weights_file = ADAPTER_FILE

    def __init__(self, model: nn.Module, name: str = "default", init_batches: int = 0):
        self.model, self.name, self.init_batches = model, name, init_batches

    def init_from_data(self, micro_batch: Callable[[int], dict], batch: int) -> None:
        hooks.init_from_data(self.model, [micro_batch(m * batch) for m in range(self.init_batches)])

    def optimizer(self, config) -> torch.optim.Optimizer:
        """config.optimizer over the adapter methods' own groups (which carry per-group rates)."""
        return build_optimizer(config.optimizer, hooks.param_groups(self.model, config.learning_rate),
                               lr=config.learning_rate, weight_decay=config.weight_decay,
                               **config.optimizer_config)

    def scheduler(self, optimizer, warmup: int, total: int):
        return build_scheduler(optimizer, warmup, total)

    def after_step(self, context: StepContext) -> None:
        hooks.after_step(self.model, context)

    def save(self, folder: Path) -> None:
        save_adapter(self.model, folder / "adapter", self.name)

    def load(self, tensors: dict[str, torch.Tensor], source: Path) -> None:
        load_state(self.model, self.name, tensors, source)


class ModelTrainee:
    """Every trainable parameter of `model`. Each of `schedules` has after_step(StepContext) (the
    reparam schedules do); `lr_multiplier(warmup, total)` returns a LambdaLR multiplier replacing warmup
    + cosine (ReLoRA's jagged cosine)."""

    weights_file = MODEL_FILE

    def __init__(self, model: nn.Module, schedules: Iterable[Any] = (),
                 lr_multiplier: Callable[[int, int], Callable[[int], float]] | None = None):
        self.model, self.schedules, self.lr_multiplier = model, list(schedules), lr_multiplier

    def init_from_data(self, micro_batch: Callable[[int], dict], batch: int) -> None:
        pass  # a model trained whole has no data-driven init

    def optimizer(self, config) -> torch.optim.Optimizer:
        return trainer_optimizer(self.model, config.optimizer, config.learning_rate, config.weight_decay,
                                 **config.optimizer_config)

    def scheduler(self, optimizer, warmup: int, total: int):
        if self.lr_multiplier is None:
            return build_scheduler(optimizer, warmup, total)
        return LambdaLR(optimizer, self.lr_multiplier(warmup, total))

    def after_step(self, context: StepContext) -> None:
        for schedule in self.schedules:
            schedule.after_step(context)

    def save(self, folder: Path) -> None:
        save_tensors(folder / MODEL_FILE, base_state(self.model, []), {"format": "pt"})

    def load(self, tensors: dict[str, torch.Tensor], source: Path) -> None:
        """Copy a checkpoint's tensors in, after checking every name and shape (nothing changes if one
        is off)."""
        state = base_state(self.model, [])
        check_state({k: tuple(v.shape) for k, v in state.items()}, tensors, source)
        with torch.no_grad():
            for key, value in state.items():
                value.copy_(tensors[key])


def checkpoint_weights(state: dict, trainee, path: Path) -> dict[str, torch.Tensor]:
    """The tensors `trainee` restores from a read checkpoint; a checkpoint of the other kind is refused."""
    if trainee.weights_file not in state["weights"]:
        held = ", ".join(state["weights"]) or "no weights"
        kind = "an adapter (from rankwise finetune)" if ADAPTER_FILE in state["weights"] else \
            "a whole model (from rankwise pretrain)"
        raise AdapterFileError(f"{path} holds {held}, {kind}; this run needs {trainee.weights_file}. "
                               "Resume it with the command that wrote it, or start fresh.")
    return state["weights"][trainee.weights_file]
