"""Activation-aware truncated SVD, two ways: `svd-llm` (full whitening) and `asvd` (diagonal scaling).

`svd-llm` — SVD-LLM: Truncation-aware Data Whitening for Large Language Model Compression
(Wang, Zheng, Wan, Zhang, 2024, arXiv 2403.07378). With the calibration inputs' second moment
C = (1/N) Σ x xᵀ = S Sᵀ (Cholesky, S lower triangular):
    W S ≈ U_r Σ_r V_rᵀ,   B = U_r Σ_r^{1/2},   A = Σ_r^{1/2} V_rᵀ S⁻¹        y = B (A x) + b
Truncation-aware: ‖(W − B A) X‖²_F = N ‖(W S − U_r Σ_r V_rᵀ)‖²_F = N Σ_{i>r} σ_i²(W S), so each dropped
singular value costs exactly its own share of the output error on the calibration data, and this is the
best rank-r output error there is. S⁻¹ is applied by a triangular solve, never formed.

`asvd` — ASVD: Activation-aware Singular Value Decomposition for Compressing Large Language Models
(Yuan, Shang, Song, Wu, Yan, Sun, 2023, arXiv 2312.05821). S is diagonal, s_j = (mean |x_j|)^α with
α = 0.5 (the paper's default); then the same split: SVD of W S, B = U_r Σ_r^{1/2}, A = Σ_r^{1/2} V_rᵀ S⁻¹.

Nothing trains; the factors are stored as a LowRankLinear. Rank: `rank`, `ratio` (share of each layer's
parameters kept) or `rank_pattern`, as in `svd`; `svd_iters` > 0 switches to a randomized SVD.
Where we differ from the papers and their code:
- C is measured on the original model in one pass (compress.calibration); SVD-LLM's code also profiles
  the original model (block by block, to save memory).
- When C is not positive definite (fewer tokens than input channels, dead channels), we add
  1e-6 · mean(diag C) · I (10× more per retry) before the Cholesky; SVD-LLM's code shifts by the most
  negative eigenvalue plus 1e-6 instead. Both only perturb a singular C; a definite C is used as is.
- Not here: SVD-LLM's parameter update after truncation (its code's least-squares refit of U on the
  outputs of the already-compressed blocks, and LoRA fine-tuning of the factors) and ASVD's search of
  per-layer ranks by perplexity sensitivity. Per-layer ranks come from rank_pattern; the factors are
  plain parameters that can be fine-tuned afterwards.
- ASVD scales by mean |x| from LayerStats.input_abs_mean, as the paper; channels that never fired get a
  tiny positive scale (1e-6 of the largest; the code adds 1e-6 to every channel) so S stays invertible.
- The SVD of W S is exact and in float64 (S can be ill-conditioned), unless svd_iters > 0; ASVD's code
  uses torch.svd_lowrank, SVD-LLM's an exact float32 SVD and an explicit S⁻¹. Factors take W's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..linalg import top_svd
from .base import LowRankLinear, register
from .calibration import LayerStats
from .svd import Svd, SvdConfig

_DAMPING_TRIES = 8


def cholesky_whitening(input_moment: torch.Tensor) -> torch.Tensor:
    """Lower-triangular S (float64) with S Sᵀ = C, damped only if C is not positive definite."""
    C = input_moment.double()
    scale = C.diagonal().mean().item()
    scale = scale if scale > 0 else 1.0
    identity = torch.eye(C.shape[0], dtype=C.dtype, device=C.device)
    for damping in [0.0] + [1e-6 * scale * 10.0 ** i for i in range(_DAMPING_TRIES)]:
        S, info = torch.linalg.cholesky_ex(C + damping * identity if damping else C)
        if info.item() == 0:
            return S
    raise ConfigError(f"the calibration inputs' second moment is not positive definite even with damping "
                      f"{damping:.3g}; check the calibration data for NaN or infinite activations.")


def whitened_factors(weight: torch.Tensor, scaling: torch.Tensor, rank: int, svd_iters: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B (out, r), A (r, in)) from the truncated SVD of W S, with A = Σ_r^{1/2} V_rᵀ S⁻¹.

    `scaling` is S: a lower-triangular (in, in) matrix (SVD-LLM) or the diagonal of one, (in,) (ASVD).
    """
    W = weight.detach().double()
    S = scaling.to(W)
    scaled = W * S if S.dim() == 1 else W @ S
    if svd_iters:
        svd = top_svd(scaled, rank, svd_iters)
        U, sigma, Vh = svd.U.double(), svd.S.double(), svd.Vh.double()
    else:
        U, sigma, Vh = torch.linalg.svd(scaled, full_matrices=False)
        U, sigma, Vh = U[:, :rank], sigma[:rank], Vh[:rank]
    root = sigma.sqrt()
    B, A_scaled = U * root, root[:, None] * Vh
    if S.dim() == 1:
        A = A_scaled / S
    else:  # A S = A_scaled, solved against the triangular S instead of inverting it
        A = torch.linalg.solve_triangular(S, A_scaled, upper=False, left=False)
    return B.to(weight.dtype), A.to(weight.dtype)


def activation_scale(input_abs_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """ASVD's diagonal S: (mean |x_j|)^α per input channel, kept strictly positive."""
    scale = input_abs_mean.double().clamp_min(0) ** alpha
    top = scale.max().item()
    return scale.clamp_min(1e-6 * top) if top > 0 else torch.ones_like(scale)


@dataclass
class AsvdConfig(SvdConfig):
    alpha: float = 0.5  # the exponent of the activation scale (the paper's default)

    invalid: ClassVar[tuple[dict, ...]] = ({"rank": 4, "alpha": -1.0},)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or self.alpha <= 0:
            raise ConfigError(f"alpha must be a positive number (ASVD uses 0.5), got {self.alpha!r}.")


class _ActivationAware(Svd):
    """`svd`'s shape and rank rules, with the SVD taken of W S for a scaling S read from the inputs."""

    calibration = "inputs"

    @classmethod
    def scaling(cls, config: SvdConfig, stats: LayerStats) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def build(cls, layer: nn.Linear, config: SvdConfig, stats: LayerStats | None = None) -> LowRankLinear:
        if stats is None or stats.input_moment is None:
            raise ConfigError(f"{cls.name} needs the layer's calibration inputs; pass calibration=.")
        module = cls.shape(layer, config)
        return module.set_factors(*whitened_factors(layer.weight, cls.scaling(config, stats), module.rank,
                                                    config.svd_iters))


@register("svd-llm")
class SvdLlm(_ActivationAware):
    config_class = SvdConfig
    paper = "SVD-LLM: Truncation-aware Data Whitening for Large Language Model Compression"
    url = "https://arxiv.org/abs/2403.07378"

    @classmethod
    def scaling(cls, config: SvdConfig, stats: LayerStats) -> torch.Tensor:
        return cholesky_whitening(stats.input_moment)


@register("asvd")
class Asvd(_ActivationAware):
    config_class = AsvdConfig
    paper = "ASVD: Activation-aware Singular Value Decomposition for Compressing Large Language Models"
    url = "https://arxiv.org/abs/2312.05821"

    @classmethod
    def scaling(cls, config: AsvdConfig, stats: LayerStats) -> torch.Tensor:
        return activation_scale(stats.input_abs_mean, config.alpha)
