"""Weight refactorization and momentum reset for trainable factorized layers: the two training tricks of
"Scalable Parameter and Memory Efficient Pretraining for LLM: Recent Algorithmic Advances and
Benchmarking" (Glentis, Li, Shang, Han, Tsaknakis, Wei, Hong, 2025; arXiv:2505.22922). With both on,
the paper calls the pure low-rank method "Low-Rank-restarts" and SLTrain "SLTrain-restarts".

Weight refactorization, `refactorize(module)`, for a FactorizedLinear W = s · B A (+ S):
    B A = U Σ Vᵀ  (its thin SVD, r triplets),      B ← U Σ^½,      A ← Σ^½ Vᵀ
B A is unchanged, hence s · B A, W, the layer and the model's output (up to float rounding), but the
factors become balanced, Bᵀ B = A Aᵀ = Σ. Why this split (the paper's Lemma 4.1): among the
factorizations B = U Σ^a, A = Σ^(1−a) Vᵀ of the same product, a = ½ gives the best-conditioned Hessian,
whereas training lets the two factors drift to very different scales. The SVD comes from QRs of B and Aᵀ
and an SVD of the r × r core (rankwise.linalg.lowrank_product.product_svd), so the dense (out, in)
product is never formed: O((out + in) r²) per layer. Changes A and B only; the scale s, S's values and
support, and the bias are untouched.

Momentum reset, `reset_momentum(optimizer, params)`: the optimizer forgets its state of every A and B, so
its next step treats them as new parameters: AdamW's exp_avg and exp_avg_sq (max_exp_avg_sq with
amsgrad) start again from zero and its step count, hence its bias correction, from 0. No other
parameter's state changes (biases, S's values, norms, embeddings keep their moments).

Schedule, `RefactorSchedule(model, refactor_every=200, reset_every=200, name="default")`, for any loop:
call `after_step(step)` after each optimizer step (step = optimizer steps taken so far, 1 after the first;
an int or a rankwise StepContext). When step is a multiple of refactor_every, every FactorizedLinear of the
parameterization `name` is refactorized; then, when it is a multiple of reset_every, their A's and B's
moments are reset. None turns either off. Defaults: both every 200 updates, the paper's setting (the
period and Lemma 4.1 come from a reading of the paper, not checked against its PDF here). It keeps
no state of its own (the schedule depends on the step only), so a resumed or data-parallel run stays in
step: the factorization is a deterministic function of the factors, identical on every rank.

Paper vs code vs us: the benchmark's code (OptimAI-Lab/Memory_Efficient_Pretraining) names its restart
classes and a `--restart_every` flag (default 11000, one restart at the end of its 60M run) but does not
publish them, so we follow the paper's description. Its one published restart (SLTrain's periodic
merge-and-reinit) rebuilds the AdamW optimizer for every parameter (fresh moments and step count) and
re-warms the learning rate over 10 steps; we reset A and B only and leave the learning rate to the
loop's scheduler. Keeping the step count instead (StepContext.reset_state, made for re-used slots of a tensor
whose other entries keep training) would make the first step after a reset ≈ (1−β1)/√(1−β2) ≈ 3.2 times
a normal one at β = (0.9, 0.999), and would leave a projected optimizer's moments (another shape) or an
8-bit optimizer's codes as they were. A product with a zero singular value keeps it, as the rule says:
both factors become zero in that direction and get no gradient there again; a layer whose product is
exactly zero (SLTrain's B = 0 before training) is left as it is, since balancing it would zero A too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..adapters.base import StepContext
from ..errors import ConfigError
from ..linalg.lowrank_product import product_svd
from .api import LAYERS, installed
from .base import FactorizedLinear

DEFAULT_REFACTOR_EVERY = 200  # the paper's refactorization period (optimizer updates)
DEFAULT_RESET_EVERY = 200  # the paper's momentum-reset period


@torch.no_grad()
def refactorize(module: FactorizedLinear) -> FactorizedLinear:
    """Replace (B, A) by the balanced factors (U Σ^½, Σ^½ Vᵀ) of the same product B A, in place."""
    factors = product_svd(module.B, module.A)
    if factors.S.numel() == 0 or factors.S[0] == 0:
        return module  # B A = 0: nothing to balance, and balancing would zero A as well as B
    root = factors.S.sqrt()
    kept = root.numel()  # r, unless a factor has fewer rows/columns than r: pad with zero directions
    B = torch.zeros(module.B.shape, dtype=root.dtype, device=root.device)
    A = torch.zeros(module.A.shape, dtype=root.dtype, device=root.device)
    B[:, :kept] = factors.U * root
    A[:kept] = root[:, None] * factors.Vh
    return module.set_factors(B, A)


def reset_momentum(optimizer, params: Iterable[torch.Tensor]) -> None:
    """Make `optimizer` forget its state of `params`: its next step starts their moments and step count
    afresh, as for a parameter it has never updated (every torch optimizer creates state lazily)."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    for param in params:
        optimizer.state.pop(param, None)


def _period(value, what: str) -> int | None:
    if value is None or (type(value) is int and value >= 1):
        return value
    raise ConfigError(f"{what} must be a positive integer (a period in optimizer steps) or None (off), "
                      f"got {value!r}.")


class RefactorSchedule:
    """Weight refactorization every `refactor_every` and momentum reset every `reset_every` optimizer steps,
    for the FactorizedLinear layers of the parameterization `name`; see the module docstring.

        model = rankwise.reparametrize(model, "lowrank", rank=128)
        schedule = RefactorSchedule(model)                   # both every 200 steps
        for step, batch in enumerate(loader, start=1):
            loss_fn(model(batch)).backward()
            optimizer.step(); optimizer.zero_grad()
            schedule.after_step(step, optimizer)
    """

    def __init__(self, model: nn.Module, refactor_every: int | None = DEFAULT_REFACTOR_EVERY,
                 reset_every: int | None = DEFAULT_RESET_EVERY, name: str = "default"):
        self.refactor_every = _period(refactor_every, "refactor_every")
        self.reset_every = _period(reset_every, "reset_every")
        if self.refactor_every is None and self.reset_every is None:
            raise ConfigError("refactor_every and reset_every are both None: the schedule would do nothing; "
                              "give at least one period.")
        if name not in installed(model):
            raise ConfigError(f"the model has no parameterization named {name!r} (it has "
                              f"{installed(model) or 'none'}); call rankwise.reparametrize first.")
        self.model, self.name = model, name
        if type(self) is RefactorSchedule and not all(isinstance(m, FactorizedLinear)
                                                      for m in self.layers().values()):
            method = getattr(model, LAYERS.attribute)[name][0]
            raise ConfigError(f"the parameterization {name!r} ({method}) has no B A factors to refactorize; "
                              "RefactorSchedule is for lowrank, sltrain and lost (SST has SstSchedule).")

    def layers(self) -> dict[str, FactorizedLinear]:
        """{path: the parameterization's layer}, looked up now (an adapter may wrap it)."""
        plan = getattr(self.model, LAYERS.attribute)[self.name][2]
        return {path: LAYERS.module(self.model, path) for path in plan}

    @staticmethod
    def step_and_optimizer(step: StepContext | int, optimizer=None) -> tuple[int, Any]:
        """(optimizer steps taken, the optimizer): `optimizer`, else the StepContext's."""
        if optimizer is None and isinstance(step, StepContext):
            optimizer = step.optimizer
        return int(getattr(step, "step", step)), optimizer

    @staticmethod
    def require_optimizer(optimizer, what: str, number: int) -> None:
        """A step that resets optimizer state needs the optimizer; refused before anything changes."""
        if optimizer is None:
            raise ConfigError(f"{what} is due at step {number} but no optimizer was given: call "
                              "after_step(step, optimizer), or pass a StepContext holding the optimizer.")

    def after_step(self, step: StepContext | int, optimizer=None) -> tuple[str, ...]:
        """Run what is due after optimizer step `step`; returns it: () or some of ("refactorize", "reset").

        The optimizer is `optimizer`, else the StepContext's; a reset without one is a ConfigError,
        raised before anything changes."""
        number, optimizer = self.step_and_optimizer(step, optimizer)
        refactor = self.refactor_every is not None and number % self.refactor_every == 0
        reset = self.reset_every is not None and number % self.reset_every == 0
        if reset:
            self.require_optimizer(optimizer, "momentum reset", number)
        layers = self.layers().values()
        if refactor:
            for module in layers:
                refactorize(module)
        if reset:  # after a refactorization: the old moments referred to the old factors
            reset_momentum(optimizer, (p for module in layers for p in (module.A, module.B)))
        return ("refactorize",) * refactor + ("reset",) * reset
