"""SaRA: High-Efficient Diffusion Model Fine-tuning with Progressive Sparse Low-Rank Adaptation
(Hu et al., ICLR 2025, arXiv 2409.06633).

Update rule, for a frozen W0 (out, in): re-use the "temporarily ineffective" smallest weights,
    M = 1[|W0| < τ]                       τ chosen per layer so that a `fraction` of W0 is below it
    y = W0 x + b + (M ⊙ Δ) dropout(x),    Δ = 0 at init (identity)
    loss += λ ‖(W0 + Δ) ⊙ M_t‖_*      nuclear norm of the trained sparse matrix ("low-rank sparse training")
    progressive re-selection after `progressive_step` optimizer steps:  M_t = M ⊙ 1[|W0 + Δ| < τ];
    entries that grew past τ freeze at their current value.
Trains the K = |M| entries of Δ on the mask. The adapter holds and saves only K-long tensors
(flat indices, values, live flags, frozen values) and a scalar τ, never an (out, in) tensor.
The authors use one absolute τ for the whole model (2e-3 for Stable Diffusion); that makes K depend on
the weights' values, while rankwise's adapter files derive every tensor's shape from the layer's shape,
so rankwise fixes the fraction per layer (the abstract's "smallest 10-20 %") and stores each layer's τ.

Forward is computed densely: Δ is scattered into a transient (out, in) matrix and applied with one GEMM.
At SaRA's densities (10-20 % of the entries) a dense GEMM is faster than sparse kernels, and gathering
x per mask entry would need tokens × K memory; the authors' "unstructural backprop" also scatters the
trained vector into a dense weight. Gradients and optimizer states stay K-long.

Follows the authors' dense-gradient optimizer (optim/adamw2.py): the nuclear norm is taken of the masked
weights W ⊙ M_t on one random eligible matrix (both sides > `nuclear_min_side`) per step, and the
progressive mask is intersected with the initial one. (In adamw.py the nuclear-norm gradient reaches a
tensor the optimizer does not update; re-selecting from scratch there gives the same mask, since entries
outside M never change.) `nuclear_on="update"` regularises ‖Δ ⊙ M_t‖_* instead; `nuclear_sampling="all"`
adds every eligible layer every step (so does one-per-step until init_from_data has numbered the layers).
Re-selection and the norm read W0 from the wrapped layer (a reference, not a copy): run them unmerged,
as training does. It has no rank or alpha (the nuclear norm is SaRA's low-rank device); dropout
applies to the input of the sparse branch. The step that draws the layer is a buffer, so a resumed run
draws the same layers as an uninterrupted one. The authors' default learning rate,
1e-3·exp(-350 τ), belongs to the training config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..linalg.sparse_masks import scatter_flat, smallest_magnitude_indices
from .base import Adapter, DropoutField, StepContext, make_dropout, register


@dataclass
class SaraConfig(DropoutField):
    fraction: float = 0.1  # share of each layer's entries trained (its smallest |W0|); the abstract's 10-20 %
    nuclear_weight: float = 5e-4  # λ (lambda_rank)
    nuclear_on: str = "weights"  # "weights": ‖(W0 + Δ) ⊙ M‖_* (code); "update": ‖Δ ⊙ M‖_*
    nuclear_sampling: str = "one-per-step"  # or "all"
    nuclear_min_side: int = 64  # the code skips matrices with a side <= 64
    progressive_step: int = 2500  # progressive_iter; 0 never re-selects

    invalid = ({"fraction": 0.0}, {"nuclear_on": "delta"}, {"nuclear_sampling": "some"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction!r}.")
        if self.nuclear_weight < 0 or self.nuclear_min_side < 0 or self.progressive_step < 0:
            raise ConfigError("nuclear_weight, nuclear_min_side and progressive_step must be >= 0.")
        if self.nuclear_on not in ("weights", "update"):
            raise ConfigError(f"nuclear_on must be 'weights' or 'update', got {self.nuclear_on!r}.")
        if self.nuclear_sampling not in ("one-per-step", "all"):
            raise ConfigError(f"nuclear_sampling must be 'one-per-step' or 'all', "
                              f"got {self.nuclear_sampling!r}.")


@register("sara")
class Sara(Adapter):
    config_class = SaraConfig
    paper = "SaRA: High-Efficient Diffusion Model Fine-tuning with Progressive Sparse Low-Rank Adaptation"
    url = "https://arxiv.org/abs/2409.06633"
    trains = "Δ on the mask of smallest |W0| (K = fraction·out·in values), stored sparse"
    fast_hooks = {"progressive_step": 3, "nuclear_min_side": 0, "fraction": 0.5}

    def __init__(self, base: nn.Linear, config: SaraConfig):
        super().__init__(base, config)
        count = max(1, round(config.fraction * self.out_features * self.in_features))
        self._base = (base,)  # a plain reference, not a submodule: read W0 for re-selection and the norm
        self.values = nn.Parameter(torch.zeros(count, **self.factory))
        self.register_buffer("indices", torch.zeros(count, dtype=torch.long, device=self.factory["device"]))
        self.register_buffer("live", torch.ones(count, dtype=torch.bool, device=self.factory["device"]))
        self.register_buffer("frozen", torch.zeros(count, **self.factory))
        self.register_buffer("threshold", torch.zeros((), **self.factory))  # τ, set from W0
        self.dropout = make_dropout(config)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # optimizer steps taken
        # (this layer, eligible layers), set by init_from_data (which runs on resume too)
        self._nuclear_slot: tuple[int, int] | None = None

    def init_from_weight(self, weight: torch.Tensor) -> None:
        self.indices.copy_(smallest_magnitude_indices(weight, self.values.numel()))
        # τ = the smallest magnitude left out, so that M = 1[|W0| < τ] as in the paper.
        outside = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
        outside[self.indices] = False
        rest = weight.detach().abs().flatten()[outside]
        self.threshold.fill_(float(rest.min()) if rest.numel() else float("inf"))

    def _base_values(self) -> torch.Tensor:
        return self._base[0].weight.detach().flatten()[self.indices].to(self.values.dtype)

    def _current(self) -> torch.Tensor:
        """The values of Δ on M: trained where live, fixed where frozen by the progressive re-selection."""
        return torch.where(self.live, self.values, self.frozen)

    def _dense(self, values: torch.Tensor) -> torch.Tensor:
        return scatter_flat(self.indices, values, (self.out_features, self.in_features))

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        delta = self._dense(self._current())
        return base_out + F.linear(self.dropout(x.to(delta.dtype)), delta).to(base_out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return self._dense(self._current())

    # training hooks ---------------------------------------------------------------------------
    def _eligible(self) -> bool:
        return min(self.out_features, self.in_features) > self.config.nuclear_min_side

    def _drawn(self) -> bool:
        """Whether this layer is the step's randomly drawn matrix; every layer draws the same number."""
        if self.config.nuclear_sampling == "all" or self._nuclear_slot is None:
            return True
        slot, total = self._nuclear_slot
        generator = torch.Generator().manual_seed(int(self.step))
        return int(torch.randint(total, (), generator=generator)) == slot

    def regularizer(self) -> torch.Tensor | None:
        if not self.config.nuclear_weight or not self._eligible() or not self._drawn():
            return None
        values = torch.where(self.live, self.values, torch.zeros_like(self.values))
        if self.config.nuclear_on == "weights":
            values = values + self._base_values() * self.live
        nuclear = torch.linalg.matrix_norm(self._dense(values).float(), ord="nuc")
        return self.config.nuclear_weight * nuclear

    @torch.no_grad()
    def after_step(self, context: StepContext) -> None:
        self.step.fill_(context.step)
        if self.config.progressive_step and context.step == self.config.progressive_step:
            self.reselect()

    @torch.no_grad()
    def reselect(self) -> None:
        """Progressive adjustment: keep training only the entries still below τ; freeze the others."""
        still_small = (self._base_values() + self.values).abs() < self.threshold
        leaving = self.live & ~still_small
        self.frozen.copy_(torch.where(leaving, self.values, self.frozen))
        self.live &= still_small

    @classmethod
    def init_from_data(cls, model: nn.Module, layers: dict[str, Adapter], batches) -> None:
        """Number the eligible layers, so that one of them is drawn per step for the nuclear norm."""
        eligible = [layer for layer in layers.values() if layer._eligible()]
        for slot, layer in enumerate(eligible):
            layer._nuclear_slot = (slot, len(eligible))
