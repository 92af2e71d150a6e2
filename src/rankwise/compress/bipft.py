"""BiPFT: Binary Pre-trained Foundation Transformer with Low-rank Estimation of Binarization Residual
Polynomials (Xing, Wang, Ren, Chen, Gu, Li, Zhang, AAAI 2024, arXiv 2312.08937).

Weights are binarized as in BWN, Ŵ_b = α ⊙ sign(W) with α_row = mean |W_row| (one bit per weight plus
one scale per row). BiPFT's point is that the binarization residual is data-dependent and well captured
by a low-rank map of the full-precision input H: in attention it writes Q = Q_b + ΔQ (likewise K, V) and
estimates each residual term with rank-1 linear estimators of H, q_p = H w_qp, .... Here each binarized
linear layer gets such an estimator of its own output residual (W − Ŵ_b) x:
    y = Ŵ_b x + B (A x) + b,   B (out, r), A (r, in)
fitted in closed form to the calibration inputs, i.e. the A, B minimizing ‖((W − Ŵ_b) − B A) X‖_F
(rankwise.linalg.eigen_compensation, EoRA's eigenspace rule); r = `rank`, 1 by default as the paper's
estimators. B and A are installed as a LoRA adapter named "bipft", which can be trained further.

Where we differ from the paper: it binarizes activations too and learns the estimators during MLM
pre-training, with rank-1 terms shared by all heads on the attention scores; we binarize weights only, keep
activations in full precision, and fit one estimator per linear layer from calibration data (no
pre-training run), so it applies to any trained model. Nothing trains unless the adapter is fine-tuned.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from ..linalg import eigen_compensation
from .base import CompressConfig, Compressor, register
from .compact import BinaryLinear


@dataclass
class BipftConfig(CompressConfig):
    rank: int = 1  # the residual estimator's rank (the paper's estimators are rank 1)

    invalid = ({"rank": 0},)

    def __post_init__(self) -> None:
        super().__post_init__()
        if type(self.rank) is not int or self.rank < 1:
            raise ConfigError(f"rank must be a positive integer, got {self.rank!r}.")


@register("bipft")
class Bipft(Compressor):
    config_class = BipftConfig
    paper = "BiPFT: Binary Pre-trained Foundation Transformer with Low-rank Estimation of Binarization " \
            "Residual Polynomials"
    url = "https://arxiv.org/abs/2312.08937"
    calibration = "inputs"

    @classmethod
    def shape(cls, layer: nn.Linear, config: BipftConfig) -> BinaryLinear:
        if config.rank > min(layer.in_features, layer.out_features):
            raise ConfigError(f"rank {config.rank} exceeds min(out, in) = "
                              f"{min(layer.in_features, layer.out_features)} of this layer; lower the rank.")
        return BinaryLinear(layer)

    @classmethod
    def build(cls, layer: nn.Linear, config: BipftConfig, stats=None) -> BinaryLinear:
        return cls.shape(layer, config).binarize(layer.weight)

    @classmethod
    def compensation(cls, layer, compressed, config, stats):
        residual = layer.weight.detach().float() - compressed.dense_weight().float()
        return eigen_compensation(residual, stats.input_moment, config.rank)
