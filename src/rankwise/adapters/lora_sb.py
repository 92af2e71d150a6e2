"""LoRA-SB: Initialization using Update Approximation is a Silver Bullet for Extremely Efficient
Low-Rank Fine-Tuning (Ponkshe, Singhal et al., 2024, arXiv 2411.19557).

Update rule: LoRA-XS's form, W' = W + s · B R A with B (out, r) and A (r, in) frozen and R (r, r) trained,
but B, A, R come from an estimate of full fine-tuning's first update. Over the init batches,
    G   = Σ_batches ∂loss/∂W                      (the frozen W's gradient)
    ΔW₁ = -init_lr · sign(G)                      (Adam's first step; first_step="sign")
    ΔW₁ ≈ U_r Σ_r V_rᵀ  (truncated SVD),   B = U_r,  A = V_rᵀ,  R = Σ_r / s
so the model starts at W + trunc_r(ΔW₁): it has already taken the best rank-r approximation of full
fine-tuning's first step, and later R updates stay in that update's top subspaces. Trains R only (r²
numbers per layer). W is never modified. Merges as W ← W + s B R A.

Paper vs code: the paper argues the scale s does not matter; the authors' code forces alpha = rank, so
s = 1, and rankwise does the same (`alpha` is unused). init_lr stands for the code's first warm-up
learning rate, lr / warm-up steps (1e-4 / 333 ≈ 3e-7 in their math runs). The code's sign step is the
default; first_step="gradient" uses -init_lr · mean G (SGD's first step, as LoRAFactory's port).
The paper starts from W + trunc_r(ΔW₁) (identity_at_init is False); start_from_base=True instead
subtracts the init on the fly (LoRAFactory's reset-weight option), so training starts from W exactly.

Before init_from_data runs, the adapter is LoRA-XS with R = 0 (bases from W's SVD): an exact identity
that trains, but not LoRA-SB; the training loop always calls init_from_data first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..linalg import top_svd
from .base import Adapter, AdapterConfig, register
from .lora_xs import LoraXs, XsFields


@dataclass
class LoraSbConfig(XsFields):
    init_lr: float = 3e-7  # η₁ of the first-step estimate ΔW₁
    first_step: str = "sign"  # "sign": -η₁ sign(ΣG) (Adam, authors' code); "gradient": -η₁ mean G (SGD)
    start_from_base: bool = False  # subtract the init on the fly, so training starts exactly at W

    invalid = ({"first_step": "adam"}, {"init_lr": 0.0})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.first_step not in ("sign", "gradient"):
            raise ConfigError(f"first_step must be 'sign' or 'gradient', got {self.first_step!r}.")
        if not self.init_lr > 0:
            raise ConfigError(f"init_lr must be positive, got {self.init_lr!r}.")


def summed_weight_gradients(
    model: nn.Module, weights: list[torch.Tensor], batches: list[dict]
) -> list[torch.Tensor]:
    """Σ over batches of ∂loss/∂W for frozen weights, in float32. Every requires_grad flag, every .grad
    and every module's train/eval mode are as before afterwards (the gradients come from autograd.grad,
    so no .grad is written)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    sums = [torch.zeros(w.shape, dtype=torch.float32, device=w.device) for w in weights]
    try:
        for param, _ in flags:
            param.requires_grad_(False)
        for weight in weights:
            weight.requires_grad_(True)
        model.train()  # as the authors: the gradient of the training-mode loss
        for batch in batches:
            grads = torch.autograd.grad(model(**batch).loss, weights, allow_unused=True)
            for total, grad in zip(sums, grads):
                if grad is not None:  # a layer the loss does not reach keeps a zero gradient
                    total += grad.float()
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        for module, mode in modes:
            module.training = mode
    return sums


def first_update(grad_sum: torch.Tensor, batches: int, lr: float, kind: str) -> torch.Tensor:
    """Full fine-tuning's first step from the summed gradient: Adam's -lr·sign(G) or SGD's -lr·mean G."""
    return -lr * (torch.sign(grad_sum) if kind == "sign" else grad_sum / batches)


@register("lora-sb")
class LoraSb(LoraXs):
    config_class = LoraSbConfig
    paper = ("Initialization using Update Approximation is a Silver Bullet for Extremely Efficient "
             "Low-Rank Fine-Tuning")
    url = "https://arxiv.org/abs/2411.19557"
    trains = "R (rank×rank) between frozen bases of the approximate first full fine-tuning update"
    identity_at_init = False  # the paper starts from W + trunc_r(ΔW₁), once init_from_data has run

    def __init__(self, base: nn.Linear, config: LoraSbConfig):
        super().__init__(base, config)
        self.register_buffer("init_R", torch.zeros_like(self.lora_R))  # subtracted when start_from_base

    def init_from_update(self, update: torch.Tensor) -> None:
        """Set B, A, R from a first-update estimate ΔW₁ (out, in): s B R A = trunc_r(ΔW₁)."""
        svd = top_svd(update, self.config.rank, self.config.svd_iters)
        self.lora_B.copy_(svd.U)
        self.lora_A.copy_(svd.Vh)
        with torch.no_grad():
            self.lora_R.copy_(torch.diag(svd.S) / self.scale)
        if self.config.start_from_base:
            self.init_R.copy_(self.lora_R)

    @staticmethod
    def scaling(config: AdapterConfig) -> float:
        return 1.0  # alpha = rank, as the authors' code forces

    def _core(self) -> torch.Tensor:
        return self.lora_R - self.init_R if self.config.start_from_base else self.lora_R

    @classmethod
    def init_from_data(cls, model: nn.Module, layers: dict[str, Adapter], batches: Iterable[dict]) -> None:
        batches = list(batches)
        if not batches:
            raise ConfigError(
                "lora-sb initialises from the gradient of a few training batches; pass at least one "
                "batch to init_from_data (TrainConfig.init_batches > 0)."
            )
        weights = [model.get_submodule(path).base.weight for path in layers]
        grads = summed_weight_gradients(model, weights, batches)
        for adapter, grad in zip(layers.values(), grads):
            cfg = adapter.config
            adapter.init_from_update(first_update(grad, len(batches), cfg.init_lr, cfg.first_step))
