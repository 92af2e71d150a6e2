"""DoRA: Weight-Decomposed Low-Rank Adaptation (Liu et al., 2024, arXiv 2402.09353).

Update rule: split W into a magnitude and a direction and adapt the direction with LoRA,
    W' = m ⊙ (W + s B A) / ‖W + s B A‖_c          (‖·‖_c: norm of each output row, shape (out,))
    y  = W' x + b
m (out,) starts at ‖W‖_c, so the model equals the base at init. Trains m, A and B.
As the paper does (Sec. 4.3) to save memory, the norm is treated as a constant in backward
(detached); PEFT does the same. With dropout, the base path sees x and the LoRA path dropout(x),
as in PEFT:  y = base_out + (g - 1)(W x) + g · s B A dropout(x),  g = m / ‖W + s B A‖_c.
Merges exactly as W ← g ⊙ (W + s B A). Stacked on other adapters, W is the weight with them folded in
(the wrapper passes it), so the stack's output equals merging each adapter in order.

How the forward computes it (same values as PEFT's within float rounding, much less work):
- The paper and PEFT form the dense (out, in) direction W + s B A each step only to take its row norms.
  We expand the square instead, with P = W Aᵀ (out, r) and G = A Aᵀ (r, r):
      ‖W_j + s B_j A‖² = ‖W_j‖² + s B_j · (2 P_j + s (B G)_j)
  one thin product with W and no (out, in) temporary, recomputed every forward (not cached: W changes
  under merges, stacking and in-place edits, and its row norms cost only ~1% of the layer's step).
  In float32 the norm's relative error stays near 1e-7 (tests compare it with the dense norm) unless
  W_j and s B_j A nearly cancel; those rows are recomputed densely (CANCELLATION_SHARE), and the square
  is floored at a tiny positive value so rounding never takes a square root of a negative.
- y = g ⊙ (base_out - b) + b + h (s g ⊙ B)ᵀ,  h = A dropout(x), with g folded into B's rows (out, r):
  the (tokens, out) output costs one scale and one in-place matmul-add instead of a chain of passes.
  With a half-precision base the sum is formed in float32 and rounded once, as PEFT does.
On nn.Embedding, nn.Conv1d/2d/3d and transformers' Conv1D (rankwise.adapters.layer_kinds), W is the matrix
the layer applies, so ‖·‖_c is per embedding dimension (over the vocabulary) or per output channel (over
its kernel), as PEFT's; embeddings and convs apply g on their channel axis to base_out and the update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import register
from .layer_kinds import MATMUL_KINDS, OTHER_KINDS, as_matrix, from_matrix, per_channel
from .lora import Lora, LoraConfig

NORM_SQ_FLOOR = 1e-30  # far below any real row norm², above 0: sqrt of a rounding-negative can't happen
# A row whose squared norm is under this share of ‖W_j‖² + ‖s B_j A‖² lost digits to cancellation in the
# expansion (relative error ~1.5e-7 / share); such rows, rare in training, are recomputed densely.
CANCELLATION_SHARE = 0.25


@torch.no_grad()
def direction_row_norms(weight: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
    """‖W_j + s B_j A‖ for each output row j, without forming B A (see the module docstring)."""
    weight = weight.to(A.dtype)
    weight_sq = torch.linalg.vector_norm(weight, dim=1).square()
    proj = weight @ A.t()  # P = W Aᵀ (out, r)
    lora_sq = (B @ (A @ A.t()) * B).sum(dim=1).mul_(scale * scale)  # ‖s B_j A‖² = s² B_j G B_jᵀ
    norm_sq = weight_sq + lora_sq + (B * proj).sum(dim=1).mul_(2 * scale)
    # Rows where W_j and s B_j A nearly cancel (a check that syncs once per layer on a GPU).
    rows = (norm_sq < CANCELLATION_SHARE * (weight_sq + lora_sq)).nonzero().squeeze(1)
    if rows.numel():
        norm_sq[rows] = torch.linalg.vector_norm(weight[rows] + scale * B[rows] @ A, dim=1).square()
    return norm_sq.clamp_min_(NORM_SQ_FLOOR).sqrt_()


@dataclass
class DoraConfig(LoraConfig):
    pass


@register("dora")
class Dora(Lora):
    config_class = DoraConfig
    paper = "DoRA: Weight-Decomposed Low-Rank Adaptation"
    url = "https://arxiv.org/abs/2402.09353"
    trains = "magnitude m (out), A (rank×in), B (out×rank)"
    reads_weight = True  # the norm is of the weight it sits on: W' when stacked on other adapters
    other_kinds = OTHER_KINDS

    def __init__(self, base: nn.Module, config: DoraConfig):
        super().__init__(base, config)
        self.magnitude = nn.Parameter(torch.empty(self.out_features, **self.factory))

    def init_from_weight(self, weight: torch.Tensor) -> None:
        matrix = as_matrix(self.layer_shape, weight).float()
        self.magnitude.data.copy_(torch.linalg.vector_norm(matrix, dim=1))

    def _gain(self, weight: torch.Tensor) -> torch.Tensor:
        matrix = as_matrix(self.layer_shape, weight.detach())
        return self.magnitude / direction_row_norms(matrix, self.lora_A, self.lora_B, self.scale)

    def _forward_on_channels(self, x: torch.Tensor, base_out: torch.Tensor, gain: torch.Tensor,
                             bias: torch.Tensor | None) -> torch.Tensor:
        """g ⊙ (base_out - b) + b + g ⊙ s B A x with g on the output's channel axis (embeddings, convs)."""
        gain = per_channel(self.layer_shape, gain, base_out.dim())
        out = base_out.to(gain.dtype)
        if bias is not None:
            bias = per_channel(self.layer_shape, bias.to(gain.dtype), base_out.dim())
            out = torch.addcmul(bias, out - bias, gain)
        else:
            out = out * gain
        return out.addcmul_(gain, self.kind_update(x)).to(base_out.dtype)

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        gain = self._gain(layer.weight)
        bias = getattr(layer, "bias", None)  # an nn.Embedding has none
        if self.layer_shape.kind not in MATMUL_KINDS:
            return self._forward_on_channels(x, base_out, gain, bias)
        x = self.dropout(x.to(self.lora_A.dtype))
        hidden = torch.nn.functional.linear(x, self.lora_A).reshape(-1, self.lora_A.shape[0])
        up = self.lora_B * (gain * self.scale)[:, None]  # s g ⊙ B: the gain rides on B's (out, r) rows
        w_x = base_out.reshape(-1, self.out_features).to(gain.dtype)
        if bias is None:
            out = w_x * gain
        else:  # g ⊙ W x + b, with W x = base_out - b taken apart first, as the formula reads
            bias = bias.to(gain.dtype)
            out = torch.addcmul(bias, w_x - bias, gain)
        out = out.addmm_(hidden, up.t())  # + s g ⊙ B A x, added in place by the matmul
        return out.view(base_out.shape).to(base_out.dtype)

    def merged_weight(self, weight: torch.Tensor) -> torch.Tensor:
        # Merging is rare: the dense formula, exactly as the paper writes it.
        direction = as_matrix(self.layer_shape, weight).to(self.lora_A.dtype) + self.delta_matrix()
        gain = self.magnitude / torch.linalg.vector_norm(direction, dim=1).detach()
        return from_matrix(self.layer_shape, gain[:, None] * direction).to(weight.dtype)

    def delta_weight(self) -> torch.Tensor:
        # ΔW of the LoRA direction only; the full merged update is merged_weight(W) - W.
        return super().delta_weight()
