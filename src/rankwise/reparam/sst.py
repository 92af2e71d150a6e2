"""SST: Sparse Spectral Training (Jialin Zhao, Yingtao Zhang, Xinghang Li, Huaping Liu, Carlo Vittorio
Cannistraci, "Sparse Spectral Training and Inference on Euclidean and Hyperbolic Neural Networks", 2024;
arXiv:2405.15481).

Parameterization, for a (out, in) layer, in its full spectral form, k = min(out, in):
    W = U diag(σ) Vh,      U (out, k), σ (k,), Vh (k, in)
    y = U (σ ⊙ (Vh x)) + b                       (on activations; the dense W is never formed)
initialised from the layer's own SVD, so the model is unchanged at the start. In each round r of the k
pairs (u_i, v_i) are selected by multinomial sampling without replacement, p_i = σ_i / Σ_j σ_j (large σ
are exploited, small ones still explored). Gradients, with G = ∂L/∂W = Σ_tokens g xᵀ:
    ∂L/∂u_i ← G v_i,   ∂L/∂v_i ← Gᵀ u_i    i selected: the paper's "enhanced gradient" (the chain rule
                                            gives σ_i G v_i; dropping σ_i lets small-σ directions learn)
    u_i, v_i frozen                        i not selected
    ∂L/∂σ_i = u_iᵀ G v_i                    every i (all singular values train)
Stored as the paper's memory-efficient split: Parameters U_selected (out, r), Vh_selected (r, in), S (k,)
and the bias train, r (out + in) + k (+ out) numbers, so the optimizer holds state for those only;
buffers U and Vh keep the frozen pairs (zero in the selected slots), `selected` the r indices (int64).
Rounds (`SstSchedule`, any loop): after every `round_length` (T₁) optimizer steps each layer's W is
re-decomposed by SVD (U, Vh orthonormal again, σ ≥ 0, W unchanged); r pairs are resampled from a
generator seeded by (seed, round, the layer's path) only, never the global RNG or the plan's order, so
resumed, reloaded and data-parallel runs draw the same pairs; the optimizer forgets U_selected's, S's
and Vh_selected's state.
Defaults: round_length = 200 (ours, RefactorSchedule's period; the paper's value is not verified here);
rank is required (the paper's LLaMA-1.3B run used about 6 % of d_model).

Paper vs code vs us (the code sits at an anonymized link and was not read; the round schedule comes from
notes on the paper): (1) the paper's memory-efficient code is described as merging the frozen pairs into
a dense frozen weight; we keep them in spectral form (k (out + in) numbers instead of out · in: more for
a square layer) so that every σ trains, as the update rule says, and a round needs no dense SVD.
(2) A round re-decomposes, resamples and resets at once; the paper may resample more often than it
re-runs the SVD. (3) The reset covers σ too: the SVD reorders and rotates every triplet. (4) σ may turn
negative while training; sampling happens only after an SVD, where σ ≥ 0; a zero σ (probability 0) is
drawn only when fewer than r are positive, then uniformly. (5) The first round's pairs come from
reparametrize's seeded generator (plan order), later rounds from (seed, round, path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..adapters.base import StepContext
from ..errors import ConfigError
from ..linalg import truncated_svd
from ..linalg.lowrank_product import product_svd
from ..surgery import CompressedLinear
from .api import LAYERS
from .base import ReparamConfig, Reparametrizer, _is_positive_int, register, round_generator
from .refactor import RefactorSchedule, reset_momentum

DEFAULT_ROUND_LENGTH = 200  # T₁: optimizer steps per round


@dataclass
class SstConfig(ReparamConfig):
    round_length: int = DEFAULT_ROUND_LENGTH  # T₁: re-SVD, resample and reset after every T₁ steps

    invalid = ({"rank": 4, "round_length": 0}, {"rank": 4, "round_length": 2.5})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _is_positive_int(self.round_length):
            raise ConfigError(f"round_length must be a positive integer (optimizer steps per round), "
                              f"got {self.round_length!r}.")


class _EnhancedPairs(torch.autograd.Function):
    """U_r (σ_r ⊙ (Vh_r x)) for the selected pairs, with SST's enhanced gradients (x: (..., in))."""

    @staticmethod
    def forward(ctx, x, U, S, Vh):
        coords = F.linear(x, Vh)  # (..., r): x in the selected right singular directions
        ctx.save_for_backward(x, U, S, Vh, coords)
        return F.linear(coords * S, U)

    @staticmethod
    def backward(ctx, grad_out):
        x, U, S, Vh, coords = ctx.saved_tensors
        grad_coords = F.linear(grad_out, U.T)  # (..., r): U_rᵀ g
        grad_x = F.linear(grad_coords * S, Vh.T) if ctx.needs_input_grad[0] else None
        flat_grad, flat_x = grad_out.reshape(-1, U.shape[0]), x.reshape(-1, Vh.shape[1])
        flat_coords, flat_grad_coords = coords.reshape(-1, S.numel()), grad_coords.reshape(-1, S.numel())
        grad_U = flat_grad.T @ flat_coords  # column i: G v_i, without σ_i
        grad_S = (flat_grad_coords * flat_coords).sum(0)  # u_iᵀ G v_i
        grad_Vh = flat_grad_coords.T @ flat_x  # row i: u_iᵀ G, without σ_i
        return grad_x, grad_U, grad_S, grad_Vh


class SpectralLinear(CompressedLinear):
    """y = U diag(σ) Vh x + b, the full spectral form of a (out, in) layer, of which the `rank` pairs in
    `selected` train (see the module docstring). Stored as the paper's memory-efficient split: buffers
    `U` (out, k) and `Vh` (k, in) hold the frozen pairs (zero at the selected ones), Parameters
    `U_selected` (out, r) and `Vh_selected` (r, in) the selected pairs, and `S` (k,) every σ."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: torch.Tensor | None,
                 dtype: torch.dtype, device: torch.device | str = "cpu"):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        k = min(in_features, out_features)
        self.register_buffer("U", torch.zeros(out_features, k, dtype=dtype, device=device))
        self.register_buffer("Vh", torch.zeros(k, in_features, dtype=dtype, device=device))
        self.register_buffer("selected", torch.arange(rank, device=device))
        self.S = nn.Parameter(torch.zeros(k, dtype=dtype, device=device))
        self.U_selected = nn.Parameter(torch.zeros(out_features, rank, dtype=dtype, device=device))
        self.Vh_selected = nn.Parameter(torch.zeros(rank, in_features, dtype=dtype, device=device))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @property
    def spectral_rank(self) -> int:
        return self.S.numel()

    def spectrum(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The full (U, σ, Vh), W = U diag(σ) Vh: the frozen pairs with the selected ones put back."""
        U = self.U.index_copy(1, self.selected, self.U_selected)
        return U, self.S, self.Vh.index_copy(0, self.selected, self.Vh_selected)

    @torch.no_grad()
    def set_spectrum(self, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor,
                     selected: torch.Tensor) -> SpectralLinear:
        """Store W = U diag(S) Vh with the pairs `selected` trainable, the others frozen."""
        selected = selected.to(self.selected.device).sort().values
        self.selected.copy_(selected)
        self.S.copy_(S)
        self.U_selected.copy_(U[:, selected])
        self.Vh_selected.copy_(Vh[selected])
        self.U.copy_(U.index_fill(1, selected, 0))
        self.Vh.copy_(Vh.index_fill(0, selected, 0))
        return self

    @torch.no_grad()
    def select(self, indices: torch.Tensor) -> SpectralLinear:
        return self.set_spectrum(*self.spectrum(), indices)

    @torch.no_grad()
    def redecompose(self) -> SpectralLinear:
        """(U, σ, Vh) ← the SVD of the current U diag(σ) Vh, from thin QRs (no dense W); the same indices
        stay selected (the schedule resamples next)."""
        U, S, Vh = self.spectrum()
        factors = product_svd(U * S, Vh)
        return self.set_spectrum(factors.U, factors.S, factors.Vh, self.selected)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frozen = F.linear(F.linear(x, self.Vh) * self.S, self.U)  # σ's gradient: plain autograd
        pairs = _EnhancedPairs.apply(x, self.U_selected, self.S[self.selected], self.Vh_selected)
        out = frozen + pairs
        return out if self.bias is None else out + self.bias

    def dense_weight(self) -> torch.Tensor:
        U, S, Vh = self.spectrum()
        return (U * S) @ Vh

    def stored_values(self) -> int:
        return super().stored_values() + self.U.numel() + self.Vh.numel()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank} "
                f"of {self.spectral_rank}")


def selection_probabilities(sigma: torch.Tensor) -> torch.Tensor:
    """p_i = σ_i / Σ_j σ_j (negative σ count as 0), in float64."""
    weights = sigma.detach().double().cpu().clamp_min(0)
    return weights / weights.sum()


def sample_pairs(sigma: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` distinct indices drawn without replacement with p_i ∝ σ_i; sorted, int64, on CPU."""
    probabilities = selection_probabilities(sigma)
    positive = probabilities.nonzero().flatten()
    if positive.numel() > count:
        return torch.multinomial(probabilities, count, replacement=False, generator=generator).sort().values
    rest = (probabilities == 0).nonzero().flatten()  # too few positive σ: all of them, then uniformly
    filler = rest[torch.randperm(rest.numel(), generator=generator)[: count - positive.numel()]]
    return torch.cat([positive, filler]).sort().values


@register("sst")
class Sst(Reparametrizer):
    config_class = SstConfig
    paper = ("Zhao et al., Sparse Spectral Training and Inference on Euclidean and Hyperbolic Neural "
             "Networks (2024)")
    url = "https://arxiv.org/abs/2405.15481"

    @classmethod
    def shape(cls, layer: nn.Linear, config: SstConfig) -> SpectralLinear:
        weight = layer.weight
        return SpectralLinear(layer.in_features, layer.out_features, config.rank_for(layer), layer.bias,
                              weight.dtype, weight.device)

    @classmethod
    def build(cls, layer: nn.Linear, config: SstConfig, generator: torch.Generator) -> SpectralLinear:
        """The layer's exact SVD; the first round's pairs come from reparametrize's seeded generator."""
        module = cls.shape(layer, config)
        factors = truncated_svd(layer.weight, module.spectral_rank)
        selected = sample_pairs(factors.S, module.rank, generator)
        return module.set_spectrum(factors.U, factors.S, factors.Vh, selected)


class SstSchedule(RefactorSchedule):
    """SST's rounds for the parameterization `name` (made by reparametrize(model, "sst", ...)): call
    `after_step(step, optimizer)` after each optimizer step (step = steps taken so far; an int or a
    StepContext). After every round_length steps: re-SVD, resample, and reset the state of U_selected,
    S and Vh_selected. Stateless (a function of the step and the model), so resumed and data-parallel
    runs stay in step."""

    def __init__(self, model: nn.Module, name: str = "default"):
        method, config, _ = getattr(model, LAYERS.attribute, {}).get(name, ("sst", None, None))
        if method != "sst":
            raise ConfigError(f"the parameterization {name!r} is {method}, not sst; SstSchedule runs SST's "
                              "rounds (use RefactorSchedule for factorized layers).")
        length = DEFAULT_ROUND_LENGTH if config is None else config.round_length  # None: refused below
        super().__init__(model, refactor_every=length, reset_every=length, name=name)
        self.seed = config.seed

    def after_step(self, step: StepContext | int, optimizer=None) -> tuple[str, ...]:
        """Run a round's end when it is due; returns () or ("redecompose", "resample", "reset")."""
        number, optimizer = self.step_and_optimizer(step, optimizer)
        if number % self.refactor_every != 0:
            return ()
        self.require_optimizer(optimizer, "an SST round's end", number)
        layers = self.layers()
        for path, module in layers.items():
            module.redecompose()
            generator = round_generator(self.seed, number // self.refactor_every, path)
            module.select(sample_pairs(module.S, module.rank, generator))
        trained = ("U_selected", "S", "Vh_selected")  # the same Parameters, now holding new vectors
        reset_momentum(optimizer, (getattr(module, p) for module in layers.values() for p in trained))
        return ("redecompose", "resample", "reset")
