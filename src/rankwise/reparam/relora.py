"""ReLoRA: high-rank training through a sequence of low-rank updates (Lialin, Muckatira, Shivagunde,
Rumshisky, "ReLoRA: High-Rank Training Through Low-Rank Updates", ICLR 2024; arXiv:2307.05695).

Parameterization, for a (out, in) layer:
    W = W_base + s · B A,      s = α / r,   B (out, r), A (r, in)
    y = W_base x + s · B (A x) + b                     (B A is never formed in a forward)
W_base, the layer's weight when reparametrize is called, is frozen: a persistent buffer `base_weight`
(saved and loaded with the model folder, moved and cast with the model, never returned by parameters(),
so no optimizer or unfreezing loop can train it by mistake). A, B (and the bias, if any) are Parameters
and train. Init: A ~ kaiming_uniform(a=√5) = U(±1/√in), B = 0, so the model is unchanged at the start.
Reparametrizing a dense model trained for a while is the paper's warm start.
Restarts (`ReloraSchedule`, any loop), after every `reset_every` optimizer steps, for each layer:
    W_base ← W_base + s · B A      (merge: the layer's function is unchanged at that moment)
    A ← U(±1/√in) from a generator seeded by (seed, restart, layer path),   B ← 0
and the optimizer partially forgets A's and B's state: in each moment tensor (exp_avg, exp_avg_sq, ...)
the `prune_ratio` share of entries smallest in magnitude is zeroed (the paper's magnitude pruning,
99 % by default); the step count is kept. prune_ratio=None forgets the state entirely (reset_momentum).
Each restart adds a new rank-r update, so W_base − W_0 = s Σ_k B_k A_k can reach rank min(out, in).
Learning rate, `jagged_cosine` (a LambdaLR multiplier): linear warmup, then cosine decay to
min_lr_ratio; after each restart it drops to 0 and ramps linearly over restart_warmup_steps back up to
the cosine curve, which keeps the first updates of the fresh factors (moments mostly zeroed) small.
Defaults: α = 32 (the code's --lora_alpha), reset_every = 2000 and restart warmup 100 steps (the code's
130M paper script; the paper's Figure 2 says 50-100 warmup steps), prune_ratio = 0.99 (the paper),
min_lr_ratio = 0.1; rank is required (the code's default is 128).

Paper vs code (Guitaricet/relora, peft_pretraining/relora.py, training_utils.py): (1) the code zeroes A
as well as B when it wraps the model, so its LoRA factors get no gradient until the first merge; we
follow the paper (A random, B = 0). (2) Its reset options are random pruning at 0.999
(reset_optimizer_on_relora, its default), random or magnitude pruning (its scripts use 0.8-0.9); we
default to the paper's 99 % magnitude pruning and prune every moment tensor shaped like the parameter.
(3) The code's LoRA has dropout 0.1 and an optional trainable tanh scale; neither is offered. (4) The
code merges one step after each multiple of its period; we merge right after step k · reset_every, where
the jagged multiplier is 0, so the first step of each cycle only refills the moments (the paper's "set
the learning rate to zero"); past total_steps ours stays at min_lr_ratio (the code's cosine rises again).
(5) Restart draws come from (seed, restart, path), not the global RNG, so resumed runs draw the same A.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..adapters.base import StepContext
from ..errors import ConfigError
from ..linalg import magnitude_mask
from .api import LAYERS
from .base import (
    FactorizedLinear,
    ReparamConfig,
    Reparametrizer,
    _is_positive_int,
    check_alpha,
    kaiming_uniform,
    register,
    round_generator,
)
from .refactor import RefactorSchedule, reset_momentum

DEFAULT_RESET_EVERY = 2000  # optimizer steps between merges (the code's 130M paper script)
DEFAULT_RESTART_WARMUP = 100  # LR warmup steps after each restart (the paper: 50-100)
DEFAULT_PRUNE_RATIO = 0.99  # share of each moment tensor zeroed at a restart (the paper)


@dataclass
class ReloraConfig(ReparamConfig):
    alpha: float = 32.0  # y = W_base x + (alpha / rank) · B (A x)
    reset_every: int = DEFAULT_RESET_EVERY  # merge, re-init and prune after every reset_every steps
    prune_ratio: float | None = DEFAULT_PRUNE_RATIO  # None: forget A's and B's optimizer state entirely

    invalid = ({"rank": 4, "reset_every": 0}, {"rank": 4, "prune_ratio": 1.0}, {"rank": 4, "alpha": 0})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_alpha(self.alpha)
        if not _is_positive_int(self.reset_every):
            raise ConfigError(f"reset_every must be a positive integer (optimizer steps between merges), "
                              f"got {self.reset_every!r}.")
        ratio = self.prune_ratio
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                                  or not 0 < ratio < 1):
            raise ConfigError(f"prune_ratio must be in (0, 1) (the share of moments zeroed at a restart) or "
                              f"None (a full reset), got {ratio!r}.")


class ReloraLinear(FactorizedLinear):
    """y = W_base x + scale · B (A x) + b, W_base the frozen buffer `base_weight`; A and B train."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: torch.Tensor | None,
                 dtype: torch.dtype, device: torch.device | str = "cpu", scale: float = 1.0):
        super().__init__(in_features, out_features, rank, bias, dtype, device, scale)
        frozen = torch.zeros(out_features, in_features, dtype=dtype, device=device)
        self.register_buffer("base_weight", frozen)  # saved with the model, never a Parameter

    def add_sparse(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return out + F.linear(x, self.base_weight)

    def sparse_weight(self) -> torch.Tensor:
        return self.base_weight

    @torch.no_grad()
    def merge(self) -> ReloraLinear:
        """W_base ← W_base + scale · B A (summed in float32 or wider), then B ← 0: the map is unchanged."""
        dtype = torch.promote_types(self.base_weight.dtype, torch.float32)
        update = self.B.to(dtype) @ self.A.to(dtype)
        self.base_weight.copy_(self.base_weight.to(dtype) + self.scale * update)
        self.B.zero_()
        return self

    @torch.no_grad()
    def restart(self, generator: torch.Generator) -> ReloraLinear:
        """Merge, then start a new update: A ~ U(±1/√in) from `generator`, B = 0."""
        self.merge()
        self.A.copy_(kaiming_uniform(tuple(self.A.shape), generator))
        return self

    def stored_values(self) -> int:
        return super().stored_values() + self.base_weight.numel()


@torch.no_grad()
def prune_moments(optimizer, params: Iterable[torch.Tensor], ratio: float) -> None:
    """In the optimizer state of each of `params`, zero the `ratio` share of entries smallest in magnitude
    of every tensor shaped like the parameter (AdamW's exp_avg, exp_avg_sq, max_exp_avg_sq; SGD's
    momentum_buffer); scalars such as the step count are kept."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    for param in params:
        for value in optimizer.state.get(param, {}).values():
            if torch.is_tensor(value) and value.is_floating_point() and value.shape == param.shape:
                value.mul_(magnitude_mask(value, sparsity=ratio).to(value.dtype))


def jagged_cosine(step: int, *, total_steps: int, restart_every: int, warmup_steps: int,
                  restart_warmup_steps: int = DEFAULT_RESTART_WARMUP, min_lr_ratio: float = 0.1) -> float:
    """The jagged cosine LR multiplier after `step` optimizer steps (what LambdaLR passes; the value
    scales the next step's learning rate): step / warmup_steps during the warmup, then
    min_lr_ratio + (1 − min_lr_ratio) · ½ (1 + cos(π p)), p = (step − warmup) / (total − warmup) clipped
    to [0, 1]; for the first restart_warmup_steps after each restart (step = k · restart_every, k ≥ 1)
    it is (step − k · restart_every) / restart_warmup_steps times the cosine at the warmup's end."""
    if not (_is_positive_int(total_steps) and _is_positive_int(restart_every)
            and 0 <= warmup_steps <= restart_every and 1 <= restart_warmup_steps < restart_every
            and 0 <= min_lr_ratio <= 1):
        raise ConfigError(f"jagged_cosine needs total_steps, restart_every >= 1, 0 <= warmup_steps <= "
                          f"restart_every, 1 <= restart_warmup_steps < restart_every and min_lr_ratio in "
                          f"[0, 1]; got {total_steps}, {restart_every}, {warmup_steps}, "
                          f"{restart_warmup_steps}, {min_lr_ratio}.")
    if step < warmup_steps:
        return step / warmup_steps

    def cosine(at: int) -> float:
        progress = min(max((at - warmup_steps) / max(1, total_steps - warmup_steps), 0.0), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    since_restart = step % restart_every
    if step >= restart_every and since_restart < restart_warmup_steps:
        return since_restart / restart_warmup_steps * cosine(step - since_restart + restart_warmup_steps)
    return cosine(step)


@register("relora")
class Relora(Reparametrizer):
    config_class = ReloraConfig
    paper = "Lialin et al., ReLoRA: High-Rank Training Through Low-Rank Updates (ICLR 2024)"
    url = "https://arxiv.org/abs/2307.05695"

    @classmethod
    def shape(cls, layer: nn.Linear, config: ReloraConfig) -> ReloraLinear:
        rank = config.rank_for(layer)
        return ReloraLinear.like(layer, rank, config.alpha / rank)

    @classmethod
    def build(cls, layer: nn.Linear, config: ReloraConfig, generator: torch.Generator) -> ReloraLinear:
        module = cls.shape(layer, config)
        with torch.no_grad():
            module.base_weight.copy_(layer.weight)
        A = kaiming_uniform((module.rank, module.in_features), generator)
        return module.set_factors(torch.zeros(module.out_features, module.rank), A)


class ReloraSchedule(RefactorSchedule):
    """ReLoRA's restarts for the parameterization `name` (made by reparametrize(model, "relora", ...)):

        schedule = ReloraSchedule(model)
        scheduler = LambdaLR(optimizer, schedule.lr_lambda(total_steps=20_000, warmup_steps=500))
        for step, batch in enumerate(loader, start=1):
            loss_fn(model(batch)).backward()
            optimizer.step(); optimizer.zero_grad(); scheduler.step()
            schedule.after_step(step, optimizer)

    Stateless (a function of the step and the model), so resumed and data-parallel runs stay in step."""

    def __init__(self, model: nn.Module, name: str = "default"):
        method, config, _ = getattr(model, LAYERS.attribute, {}).get(name, ("relora", None, None))
        if method != "relora":
            raise ConfigError(f"the parameterization {name!r} is {method}, not relora; ReloraSchedule runs "
                              "ReLoRA's restarts (use RefactorSchedule for factorized layers).")
        every = DEFAULT_RESET_EVERY if config is None else config.reset_every  # None: refused below
        super().__init__(model, refactor_every=every, reset_every=every, name=name)
        self.seed, self.prune_ratio = config.seed, config.prune_ratio

    def lr_lambda(self, total_steps: int, warmup_steps: int,
                  restart_warmup_steps: int = DEFAULT_RESTART_WARMUP, min_lr_ratio: float = 0.1):
        """jagged_cosine with this schedule's restart period, for torch.optim.lr_scheduler.LambdaLR."""
        multiplier = partial(jagged_cosine, total_steps=total_steps, restart_every=self.reset_every,
                             warmup_steps=warmup_steps, restart_warmup_steps=restart_warmup_steps,
                             min_lr_ratio=min_lr_ratio)
        multiplier(0)  # a bad setting fails here, not at the first scheduler step
        return multiplier

    def after_step(self, step: StepContext | int, optimizer=None) -> tuple[str, ...]:
        """Restart when due; returns () or ("merge", "reinit", "prune") (("merge", "reinit", "reset") with
        prune_ratio=None)."""
        number, optimizer = self.step_and_optimizer(step, optimizer)
        if number % self.reset_every != 0:
            return ()
        self.require_optimizer(optimizer, "a ReLoRA restart", number)
        layers = self.layers()
        for path, module in layers.items():  # restart k draws from (seed, k, path): sst's generator
            module.restart(round_generator(self.seed, number // self.reset_every, path))
        factors = [p for module in layers.values() for p in (module.A, module.B)]
        if self.prune_ratio is None:
            reset_momentum(optimizer, factors)
            return ("merge", "reinit", "reset")
        prune_moments(optimizer, factors, self.prune_ratio)
        return ("merge", "reinit", "prune")
