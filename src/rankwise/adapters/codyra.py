"""CoDyRA: Adaptive Rank, Reduced Forgetting: Knowledge Retention in Continual Learning Vision-Language
Models with Dynamic Rank-Selective LoRA (Lu et al., arXiv 2412.01004).

Update rule, per task t, for a frozen W (out, in), with importance weights (a gate) g (rank,):
    y = W x + b + Σ_{tasks τ < t} B_τ diag(g_τ) A_τ x + B (g ⊙ A dropout(x))      (no alpha/rank scaling)
    after optimizer step i of the task:  g ← sign(g) · max(|g| − κ_i, 0)
    κ_i = 0 during a dense warm-up (dense_fraction · task_steps steps), then κ steps through
          linspace(0, max_threshold, threshold_values), one value every (T − warm-up)/threshold_values steps
At the end of each task, end_task() drops the components whose gate is 0, freezes the rest as past
factors, and re-initialises A (Kaiming-uniform), B (zeros) and g ~ N(0, 1) for the next task. Trains
A, B, g of the current task; past tasks are frozen buffers. Merges as W ← W + ΔW_past + B diag(g) A.

Where rankwise differs from the authors' code (loralib/codyra.py, models/codyra.py): the code adds each
finished task into the frozen base weight. rankwise never edits the base weight: past tasks live in
persistent buffers past_A (capacity, in) and past_B (out, capacity), with the gates folded into B, and
are applied on activations, so unload is exact and the saved adapter carries the whole history.
capacity = min(max_tasks · rank, min(out, in)); when a task would overflow it, the past factors are
re-compressed by SVD (exact while their rank fits; a warning says what was lost otherwise).
The threshold schedule follows the code, including its one-step offsets; weight decay is the loop's
(the code: 0). Defaults follow runner_codyra.sh (max_kappa 0.005, lambda_num 50). T is `task_steps`,
or when that is unset the loop's steps per task (StepContext.total_steps). It has no alpha (no scaling).

Continual training loop, per task:  build a fresh optimizer (A, B, g are re-initialised, so Adam's
moments must not carry over) from hooks.param_groups(model, lr); train task_steps steps calling
hooks.after_step(model, step) after each optimizer step; then call `hooks.end_task(model)`, after every task
including the last; call hooks.finalize(model) once at the very end (it returns a plain `lora` adapter
holding every task's kept components).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..linalg import truncated_svd
from ._gates import soft_threshold
from .base import AdapterConfig, DropoutField, RankField, StepContext, register
from .lora import Lora
from .sora import Sora, gated_lora


@dataclass
class CodyraConfig(RankField, DropoutField):
    task_steps: int | None = None  # optimizer steps per task (T); None: the training loop's steps per task
    dense_fraction: float = 0.5  # dense warm-up, as a fraction of T (the code's dense_iters)
    max_threshold: float = 0.005  # κ_max (the code's max_kappa)
    threshold_values: int = 50  # the code's lambda_num
    max_tasks: int = 8  # room for past-task components: max_tasks · rank per layer

    invalid = ({"task_steps": 0}, {"dense_fraction": 1.5})

    def __post_init__(self) -> None:
        super().__post_init__()
        steps_ok = self.task_steps is None or self.task_steps >= 1
        if not steps_ok or min(self.threshold_values, self.max_tasks) < 1:
            raise ConfigError("task_steps, threshold_values and max_tasks must be >= 1.")
        if not 0.0 <= self.dense_fraction <= 1.0 or self.max_threshold < 0:
            raise ConfigError("dense_fraction must be in [0, 1] and max_threshold >= 0.")


@register("codyra")
class Codyra(Sora):
    config_class = CodyraConfig
    paper = ("Adaptive Rank, Reduced Forgetting: Knowledge Retention in Continual Learning "
             "Vision-Language Models with Dynamic Rank-Selective LoRA")
    url = "https://arxiv.org/abs/2412.01004"
    trains = "A (rank×in), B (out×rank), gate g (rank) of the current task; past tasks frozen as buffers"

    def __init__(self, base: nn.Linear, config: CodyraConfig):
        super().__init__(base, config)
        capacity = min(config.max_tasks * config.rank, self.in_features, self.out_features)
        self.register_buffer("past_A", torch.zeros(capacity, self.in_features, **self.factory))
        self.register_buffer("past_B", torch.zeros(self.out_features, capacity, **self.factory))
        self.register_buffer("past_rank", torch.zeros((), dtype=torch.long))
        self.register_buffer("task_step", torch.zeros((), dtype=torch.long))
        self._past_rank = 0  # python mirror of past_rank, so forward never syncs with the device
        self.register_load_state_dict_post_hook(lambda module, _: module._sync_past_rank())

    def _sync_past_rank(self) -> None:
        self._past_rank = int(self.past_rank)

    @staticmethod
    def scaling(config: AdapterConfig) -> float:
        return 1.0

    def _past(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.past_A[: self._past_rank], self.past_B[:, : self._past_rank]

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        x = x.to(self.lora_A.dtype)
        out = gated_lora(self.dropout(x), self.lora_A, self.lora_B, self.gate, self.scale)
        if self._past_rank:
            past_A, past_B = self._past()
            out = out + F.linear(F.linear(x, past_A), past_B)
        return base_out + out.to(base_out.dtype)

    def delta_weight(self) -> torch.Tensor:
        past_A, past_B = self._past()
        return super().delta_weight() + past_B @ past_A

    def regularizer(self) -> None:
        return None

    def threshold_at(self, step: int, task_steps: int | None = None) -> float:
        """κ after this task's step `step` (0-based), as the code: 0 up to the warm-up's end, then ramped."""
        cfg = self.config
        total = cfg.task_steps or task_steps
        if total is None:
            raise ConfigError("codyra needs the steps per task: set task_steps, or train with a loop that "
                              "passes total_steps in the StepContext (rankwise's loop and callback do).")
        dense = int(cfg.dense_fraction * total)
        if step <= dense or cfg.threshold_values < 2:
            return 0.0
        every = max(1, (total - dense) // cfg.threshold_values)
        index = min(cfg.threshold_values - 1, 1 + (step - dense) // every)
        return cfg.max_threshold * index / (cfg.threshold_values - 1)

    @torch.no_grad()
    def after_step(self, context: StepContext) -> None:
        # The schedule counts this task's steps (a buffer, so a resumed run continues it), not the loop's.
        kappa = self.threshold_at(int(self.task_step), context.total_steps)
        if kappa > 0:
            self.gate.copy_(soft_threshold(self.gate, kappa))
        self.task_step += 1

    @torch.no_grad()
    def _kept(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B·g) of the current task's components that add something: non-zero gate and B column."""
        keep = (self.gate != 0) & (self.lora_B != 0).any(dim=0)
        return self.lora_A[keep], self.lora_B[:, keep] * self.gate[keep]

    @torch.no_grad()
    def end_task(self) -> None:
        """Freeze the current task's pruned update as past factors, then start a fresh A, B, g."""
        new_A, new_B = self._kept()
        past_A, past_B = self._past()
        A, B = torch.cat([past_A, new_A]), torch.cat([past_B, new_B], dim=1)
        capacity = self.past_A.shape[0]
        if A.shape[0] > capacity:
            A, B = _recompress(A, B, capacity)
        self.past_A.zero_()
        self.past_B.zero_()
        self.past_A[: A.shape[0]] = A
        self.past_B[:, : A.shape[0]] = B
        self.past_rank.fill_(A.shape[0])
        self._sync_past_rank()
        self.reset_factors()
        self.task_step.zero_()

    @torch.no_grad()
    def finalize(self) -> Lora:
        new_A, new_B = self._kept()
        past_A, past_B = self._past()
        A, B = torch.cat([past_A, new_A]), torch.cat([past_B, new_B], dim=1)
        return Lora.from_factors(A, B, 1.0, self.config)


def _recompress(A: torch.Tensor, B: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of the best rank-`rank` approximation of B A (exact when rank(B A) <= rank)."""
    svd = truncated_svd(B @ A, A.shape[0])
    dropped = svd.S[rank:].norm() / svd.S.norm().clamp_min(1e-30)
    if dropped > 1e-4:
        warnings.warn(f"codyra: past tasks exceed the layer's capacity of {rank} components; "
                      f"{dropped:.1%} of their update (Frobenius) is dropped. Raise max_tasks.", stacklevel=3)
    root = svd.S[:rank].sqrt()
    return (root[:, None] * svd.Vh[:rank]).to(A.dtype), (svd.U[:, :rank] * root).to(B.dtype)

