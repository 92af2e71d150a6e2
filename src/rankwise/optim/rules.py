"""The update rules, written once: every projector kind (rankwise.optim.projectors) and every plain
parameter of the projected optimizers step through one of these. With a `basis` P the rule's state is
kept for the projected gradient R = project(G, P) and its step is projected back, scaled by α.

AdamW (Loshchilov & Hutter 2019; torch.optim.AdamW's arithmetic), step t:
    M ← β1 M + (1 − β1) R,   V ← β2 V + (1 − β2) R²
    W ← W (1 − lr λ) − lr · α · project_back((M / (1 − β1ᵗ)) / (√(V / (1 − β2ᵗ)) + ε), P)

Adafactor (Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018),
as transformers.optimization.Adafactor runs it in GaLore's scripts (explicit lr: relative_step,
scale_parameter and warmup_init off; ε1 = 1e-30, clip threshold d = 1, decay rate −0.8; no first
moment, β1 = 0), step t, for a 2-D R (a×b):
    β2ₜ = 1 − t^(−0.8),   Q = R² + ε1
    r ← β2ₜ r + (1 − β2ₜ) rowmean(Q)  (a),   c ← β2ₜ c + (1 − β2ₜ) colmean(Q)  (b)
    V̂ = r cᵀ / mean(r),   U = R / √V̂,   U ← U / max(1, RMS(U) / d)
    W ← W (1 − lr λ) − lr · α · project_back(U, P)   (transformers' order: decay from the weight before
                                                      the step, then the step)
A 1-D R keeps one full V (no factoring). Its state is a + b numbers for an a×b matrix instead of AdamW's
2·a·b: the factored second moment is what makes Adafactor's memory sublinear, and it composes with the
projection (a×r or r×b moments become a + r or r + b numbers).
"""

from __future__ import annotations

import torch

from .projectors import project, project_back

ADAFACTOR_EPS = 1e-30  # ε1, added to R² before averaging (transformers' eps[0])
ADAFACTOR_DECAY_RATE = -0.8  # β2ₜ = 1 − t^decay_rate
ADAFACTOR_CLIP = 1.0  # d: the update's RMS is clipped to this


def adamw_update(param: torch.Tensor, grad: torch.Tensor, state: dict, *, lr: float,
                 betas: tuple[float, float], eps: float, weight_decay: float,
                 basis: torch.Tensor | None = None, scale: float = 1.0) -> None:
    """One AdamW step of `param` (torch.optim.AdamW's arithmetic); with a `basis`, the moments are kept
    for project(grad, basis) and the normalized step is projected back with `scale`."""
    low_rank = grad if basis is None else project(grad, basis)
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros_like(low_rank, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(low_rank, memory_format=torch.preserve_format)
    state["step"] = step = state.get("step", 0) + 1
    beta1, beta2 = betas
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    param.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(low_rank, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(low_rank, low_rank, value=1 - beta2)
    step_size = lr / (1 - beta1 ** step)
    denom = (exp_avg_sq.sqrt() / (1 - beta2 ** step) ** 0.5).add_(eps)
    if basis is None:
        param.addcdiv_(exp_avg, denom, value=-step_size)
    else:
        param.add_(project_back(exp_avg / denom, basis, param.shape, scale), alpha=-step_size)


def _rms(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.norm() / tensor.numel() ** 0.5


def adafactor_update(param: torch.Tensor, grad: torch.Tensor, state: dict, *, lr: float, weight_decay: float,
                     basis: torch.Tensor | None = None, scale: float = 1.0) -> None:
    """One Adafactor step of `param` (see the module docstring); with a `basis`, the factored second
    moment is kept for project(grad, basis) and the clipped step is projected back with `scale`."""
    low_rank = grad if basis is None else project(grad, basis)
    factored = low_rank.ndim == 2
    if "step" not in state:
        if factored:
            state["exp_avg_sq_row"] = low_rank.new_zeros(low_rank.shape[0])
            state["exp_avg_sq_col"] = low_rank.new_zeros(low_rank.shape[1])
        else:
            state["exp_avg_sq"] = torch.zeros_like(low_rank)
    state["step"] = step = state["step"] + 1 if "step" in state else 1
    beta2 = 1.0 - step ** ADAFACTOR_DECAY_RATE
    squared = low_rank.square().add_(ADAFACTOR_EPS)
    if factored:
        row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
        row.lerp_(squared.mean(dim=1), 1 - beta2)
        col.lerp_(squared.mean(dim=0), 1 - beta2)
        update = (row / row.mean()).rsqrt()[:, None] * col.rsqrt()[None, :] * low_rank
    else:
        state["exp_avg_sq"].lerp_(squared, 1 - beta2)
        update = state["exp_avg_sq"].rsqrt() * low_rank
    update.div_((_rms(update) / ADAFACTOR_CLIP).clamp_(min=1.0))
    param.mul_(1 - lr * weight_decay)
    if basis is None:
        param.add_(update, alpha=-lr)
    else:
        param.add_(project_back(update, basis, param.shape, scale), alpha=-lr)
