"""Atomic Feature Mimicking (AFM): low-rank compression of a layer's output features, not its weights.

Paper: "Unified Low-rank Compression Framework for Click-through Rate Prediction" (Hao Yu, Minghao Fu,
Jiandong Ding, Yusheng Zhou, Jianxin Wu, KDD 2024 ADS track, arXiv 2405.18146).

Update rule, for a linear layer y = W x + b seen on the calibration data (compress.calibration gives
μ = mean y and the moment mean y yᵀ, so Cov = mean y yᵀ − μ μᵀ):
    Cov = U Λ Uᵀ,  U_k = the top-k eigenvectors;    ŷ = μ + U_k U_kᵀ (y − μ)     (PCA of the outputs)
Expanding y:
    ŷ = U_k (U_kᵀ W) x + U_k U_kᵀ b + (I − U_k U_kᵀ) μ  =  B (A x) + bias,   with
    A = U_kᵀ W (k, in),   B = U_k (out, k),   bias = U_k U_kᵀ b + (I − U_k U_kᵀ) μ.
The paper writes two layers, W1 = U_kᵀ W with b1 = U_kᵀ b, then W2 = U_k with b2 = (I − U_k U_kᵀ) μ; as
nothing sits between them, B b1 + b2 is folded into the one bias of a LowRankLinear (a layer without a
bias gains one). Among all rank-k affine maps of x this minimizes the mean ‖y − ŷ‖² on the calibration
data (reduced-rank regression), and that minimum is the sum of the dropped eigenvalues of Cov; weight SVD
minimizes ‖W − Ŵ‖_F instead, so on that metric it can only do worse. Nothing trains.
k is `rank`, or from `ratio` as in `svd` (same rule, so both keep the same parameters); k ≤ min(out, in),
since the centred outputs W (x − x̄) span at most rank(W) directions. k = out reproduces the layer exactly.

Embedding table E (V, d): the looked-up rows are its outputs, so μ and Cov weigh each row by how often it
is looked up. The table becomes E' = (E − 1 μᵀ) U_k (V, k), followed by a linear with weight U_k and bias
μ: e' U_kᵀ + μ = μ + U_k U_kᵀ (e − μ). `LowRankEmbedding.from_afm` builds it. It is not a registered
compressor: `rankwise.compress` plans, saves and loads nn.Linear layers only.

Paper vs code (yuhao318/Atomic_Feature_Mimicking, demo scripts): the paper allows an activation between
the two factors, and the demo's compressed MLP has a ReLU there, which the paper says helps after
fine-tuning. Without fine-tuning a ReLU would clip the PCA coordinates and break ŷ = μ + U_k U_kᵀ (y − μ),
so we keep the composition linear (the factors can still be fine-tuned). The demo takes an SVD of Cov in
float32; we take its eigendecomposition in float64 (the same vectors for a symmetric PSD matrix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Compressor, LowRankLinear, register
from .calibration import LayerStats
from .svd import SvdConfig


def output_principal_directions(stats: LayerStats, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U_k (out, k), all eigenvalues of Cov, descending), in float64, from a layer's output statistics."""
    mean = stats.output_mean.double()
    covariance = stats.output_moment.double() - torch.outer(mean, mean)
    eigenvalues, vectors = torch.linalg.eigh((covariance + covariance.T) / 2)  # ascending
    return vectors.flip(1)[:, :rank], eigenvalues.flip(0)


def afm_factors(weight: torch.Tensor, bias: torch.Tensor | None, mean: torch.Tensor,
                directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, B, folded bias) of ŷ = μ + U_k U_kᵀ (W x + b − μ), in float64; `directions` is U_k."""
    U, mean = directions.double(), mean.double()
    bias = torch.zeros_like(mean) if bias is None else bias.double()
    folded = U @ (U.T @ bias) + mean - U @ (U.T @ mean)
    return U.T @ weight.double(), U, folded


def afm_embedding_factors(table: torch.Tensor, mean: torch.Tensor, directions: torch.Tensor
                          ) -> torch.Tensor:
    """E' = (E − 1 μᵀ) U_k: the (V, k) table whose rows, times U_kᵀ plus μ, are the PCA reconstruction."""
    return (table.double() - mean.double()) @ directions.double()


def embedding_output_stats(table: torch.Tensor, ids: torch.Tensor) -> LayerStats:
    """The output statistics of an embedding looked up at `ids` (any shape), from how often each row is
    used: μ = Σ p_v E_v and mean e eᵀ = Eᵀ diag(p) E, exactly what collecting the looked-up rows gives."""
    counts = torch.bincount(ids.reshape(-1), minlength=table.shape[0]).double()
    if counts.sum() == 0:
        raise ConfigError("the embedding's calibration ids are empty; give at least one lookup.")
    share = counts / counts.sum()
    rows = table.detach().double()
    return LayerStats(int(counts.sum()), None, share @ rows, rows.T @ (rows * share[:, None]))


@dataclass
class AfmConfig(SvdConfig):
    invalid = ({"svd_iters": 2},)

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except ConfigError as err:  # SvdConfig's messages name svd
            raise ConfigError(str(err).replace("svd takes", "afm takes")) from None
        if self.svd_iters != 0:
            raise ConfigError("afm takes an exact eigendecomposition of the output covariance; "
                              "leave svd_iters at 0.")


@register("afm")
class Afm(Compressor):
    config_class = AfmConfig
    paper = "Unified Low-rank Compression Framework for Click-through Rate Prediction (AFM)"
    url = "https://arxiv.org/abs/2405.18146"
    calibration = "outputs"

    @classmethod
    def shape(cls, layer: nn.Linear, config: AfmConfig) -> LowRankLinear:
        bias = torch.zeros(layer.out_features, dtype=layer.weight.dtype, device=layer.weight.device)
        return LowRankLinear(layer.in_features, layer.out_features, config.rank_for(layer), bias,
                             layer.weight.dtype, layer.weight.device)  # a bias even if W had none: μ

    @classmethod
    def build(cls, layer: nn.Linear, config: AfmConfig, stats: LayerStats | None = None) -> LowRankLinear:
        module = cls.shape(layer, config)
        directions, _ = output_principal_directions(stats, module.rank)
        A, B, bias = afm_factors(layer.weight.detach(), None if layer.bias is None else layer.bias.detach(),
                                 stats.output_mean, directions)
        module.A.data.copy_(A)
        module.B.data.copy_(B)
        module.bias.data.copy_(bias)
        return module


class LowRankEmbedding(nn.Module):
    """e = F.linear(table[ids], weight, bias): a (V, k) table followed by a (d, k) linear map."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.rank = num_embeddings, embedding_dim, rank
        self.table = nn.Parameter(torch.empty(num_embeddings, rank, dtype=dtype, device=device))
        self.weight = nn.Parameter(torch.empty(embedding_dim, rank, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(embedding_dim, dtype=dtype, device=device))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.linear(F.embedding(ids, self.table), self.weight, self.bias)

    def dense_table(self) -> torch.Tensor:
        return self.table @ self.weight.T + self.bias

    @classmethod
    def from_afm(cls, embedding: nn.Embedding, ids: torch.Tensor, rank: int) -> LowRankEmbedding:
        """AFM of `embedding` calibrated on the lookups `ids` (only the table is read: padding_idx and
        max_norm are not carried over)."""
        table = embedding.weight.detach()
        if not 1 <= rank <= table.shape[1]:
            raise ConfigError(f"embedding rank must be in [1, {table.shape[1]}] (its width), got {rank}.")
        stats = embedding_output_stats(table, ids)
        directions, _ = output_principal_directions(stats, rank)
        module = cls(table.shape[0], table.shape[1], rank, table.dtype, table.device)
        with torch.no_grad():
            module.table.copy_(afm_embedding_factors(table, stats.output_mean, directions))
            module.weight.copy_(directions)
            module.bias.copy_(stats.output_mean)
        return module

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}"
