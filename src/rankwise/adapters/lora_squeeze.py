"""LoRA-Squeeze: Simple and Effective Post-Tuning and In-Tuning Compression of LoRA Modules
(Vulić, Grycner, de Laroussilhe, Pfeiffer, 2026, arXiv 2602.10993).

Update rule: a plain LoRA trained at a higher source rank r_src, whose rank is annealed during training
(In-Squeeze) down to the target rank r = `rank`:
    y = W x + b + s · B (m ⊙ A dropout(x)),   s = alpha / r_src,   m ∈ {0,1}^r_src keeps the first k ranks
At each squeeze to k ranks, s B A (its kept ranks) is factorised without forming the dense (out, in)
product (rankwise.linalg.lowrank_product: thin QRs of B and Aᵀ, SVD of the small core; `svd_iters` > 0
uses the paper's randomized SVD) and written back as
    s B A ≈ U_k Σ_k V_kᵀ,   B' = U_k √(Σ_k / s),   A' = √(Σ_k / s) V_kᵀ   (ranks ≥ k zeroed and masked)
finalize() squeezes to r (Post-Squeeze, if annealing has not finished) and returns a plain `lora` adapter
of rank r with the same outputs. Trains A and B. Merges as W ← W + s B (m ⊙ A).

Schedule: k(step) falls linearly from r_src at `squeeze_start` to r at `squeeze_start + squeeze_steps`,
re-factorised at most every `squeeze_every` steps (the paper gives no schedule values). source_rank
defaults to 2 · rank and is capped per layer at min(out, in).
Shapes never change during training: the dropped ranks stay in A and B, zeroed and masked out of the
forward, so an optimizer keeps holding the right tensors. Their optimizer moments, and those of the kept
ranks (now in a rotated basis), are stale after a squeeze; as the paper, the squeeze resets A's and B's
moments (StepContext.reset_state).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..linalg.lowrank_product import product_svd, randomized_product_svd
from .base import Adapter, LowRankConfig, StepContext, SvdField, make_dropout, register
from .lora import Lora, init_lora_factors


@dataclass
class LoraSqueezeConfig(LowRankConfig, SvdField):
    source_rank: int | None = None  # training rank r_src; None: 2 × rank; capped at each layer's min(out, in)
    squeeze_start: int = 0  # step where annealing begins
    squeeze_steps: int = 1000  # steps to anneal from r_src down to rank
    squeeze_every: int = 100  # re-factorise at most this often

    invalid = ({"rank": 4, "source_rank": 2}, {"squeeze_every": 0})

    def __post_init__(self) -> None:
        super().__post_init__()
        source = self.source_rank
        if source is not None and (not isinstance(source, int) or source < self.rank):
            raise ConfigError(f"source_rank must be an integer >= rank ({self.rank}), got {source!r}.")
        if self.squeeze_start < 0 or self.squeeze_steps < 0 or self.squeeze_every < 1:
            raise ConfigError("squeeze_start and squeeze_steps must be >= 0, squeeze_every >= 1.")


def squeezed_factors(B, A, rank: int, scale: float, new_scale: float, svd_iters: int = 0):
    """(B', A') of rank `rank` with new_scale · B' A' the best rank-`rank` approximation of scale · B A."""
    if svd_iters:
        svd = randomized_product_svd(B, A, rank, scale=scale, power_iters=svd_iters)
    else:
        svd = product_svd(B, A, rank, scale=scale)
    root = (svd.S / new_scale).sqrt()
    return svd.U * root, root[:, None] * svd.Vh


@register("lora-squeeze")
class LoraSqueeze(Adapter):
    config_class = LoraSqueezeConfig
    paper = "LoRA-Squeeze: Simple and Effective Post-Tuning and In-Tuning Compression of LoRA Modules"
    url = "https://arxiv.org/abs/2602.10993"
    trains = "A (source_rank×in), B (out×source_rank), annealed to rank; finalize gives a plain LoRA"
    fast_hooks = {"squeeze_every": 1, "squeeze_steps": 2}

    def __init__(self, base: nn.Linear, config: LoraSqueezeConfig):
        super().__init__(base, config)  # checks the target rank against the layer
        source = min(config.source_rank or 2 * config.rank, self.in_features, self.out_features)
        self.lora_A = nn.Parameter(torch.empty(source, self.in_features, **self.factory))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, source, **self.factory))
        init_lora_factors(self.lora_A, self.lora_B)  # LoRA's init, at the source rank
        self.register_buffer("rank_mask", torch.ones(source, **self.factory))
        self.dropout = make_dropout(config)
        self.scale = config.alpha / source

    @property
    def active_rank(self) -> int:
        return int(self.rank_mask.sum())

    def rank_at(self, step: int) -> int:
        cfg, source = self.config, self.rank_mask.numel()
        if step < cfg.squeeze_start:
            return source
        progress = min(1.0, (step - cfg.squeeze_start) / cfg.squeeze_steps) if cfg.squeeze_steps else 1.0
        return max(cfg.rank, round(source - progress * (source - cfg.rank)))

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        hidden = F.linear(self.dropout(x.to(self.lora_A.dtype)), self.lora_A) * self.rank_mask
        return base_out + (F.linear(hidden, self.lora_B) * self.scale).to(base_out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B * self.rank_mask) @ self.lora_A * self.scale

    @torch.no_grad()
    def squeeze_to(self, rank: int) -> None:
        """Re-factorise the kept ranks' s B A at `rank`, in place (shapes unchanged, the rest masked)."""
        kept = self.active_rank  # the kept ranks are always the leading ones
        if not 1 <= rank <= kept:
            raise ValueError(f"can only squeeze to a rank in [1, {kept}], got {rank}.")
        B, A = squeezed_factors(self.lora_B[:, :kept], self.lora_A[:kept], rank, self.scale, self.scale,
                                self.config.svd_iters)
        self.lora_B.zero_()
        self.lora_A.zero_()
        self.lora_B[:, :rank] = B
        self.lora_A[:rank] = A
        self.rank_mask.zero_()
        self.rank_mask[:rank] = 1

    def after_step(self, context: StepContext) -> None:
        cfg, step = self.config, context.step
        since = step - cfg.squeeze_start
        due = since >= 0 and (since % cfg.squeeze_every == 0 or since >= cfg.squeeze_steps)
        if due and (rank := self.rank_at(step)) < self.active_rank:
            self.squeeze_to(rank)
            context.reset_state(self.lora_A)
            context.reset_state(self.lora_B)

    @torch.no_grad()
    def finalize(self) -> Lora:
        """Post-Squeeze to the target rank: a plain LoRA of rank `rank` giving the same outputs."""
        cfg, kept = self.config, self.active_rank
        scale = cfg.alpha / cfg.rank  # a plain LoRA of rank r with this config's alpha
        B, A = squeezed_factors(self.lora_B[:, :kept], self.lora_A[:kept], cfg.rank, self.scale, scale,
                                cfg.svd_iters)
        return Lora.from_factors(A, B, scale, cfg).train(self.training)
