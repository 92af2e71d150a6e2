"""EoRA: Fine-tuning-free Compensation for Compressed LLM with Eigenspace Low-Rank Approximation
(Liu, Chen, Chang, Lin, Molchanov, Yin, Kautz, Wang, Cheng et al., NVIDIA, 2024, arXiv 2410.21271),
and `svd-comp`, the plain-SVD compensation it is compared against.

The base compression (RTN at `bits`, or magnitude pruning at `sparsity` / `pattern`) gives Ŵ and the
error ΔW = W − Ŵ. EoRA then, with C = (1/N) Σ x xᵀ over the calibration inputs of the layer, C = Q Λ Qᵀ:
    ΔW Q Λ^{1/2} ≈ U_r Σ_r V_rᵀ,   B = U_r Σ_r^{1/2},   A = Σ_r^{1/2} V_rᵀ Λ^{-1/2} Qᵀ
    y = Ŵ x + B (A x) + b
which minimizes the output error ‖(ΔW − B A) X‖_F (rankwise.linalg.eigen_compensation); svd-comp takes
the truncated SVD of ΔW itself. Nothing trains in the method; B and A are installed as a LoRA adapter
named after the method (scale 1), which can be fine-tuned further or exported in PEFT's format.

Where we differ from EoRA's code: it measures each block's inputs after compensating the blocks before it
(sequential); we measure every layer on the original model in one pass, as GPTQModel's EoRA mode does
for its unquantized calibration, which is simpler and one forward cheaper per block. The compression is
RTN or magnitude pruning here (the paper uses GPTQ / SparseGPT), the compensation rule is the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..linalg import eigen_compensation, svd_factors
from .base import Compressor, register
from .prune import SparsityField, prune_layer
from .rtn import BitsField, quantize_layer


@dataclass
class CompensationConfig(BitsField, SparsityField):
    """The base compression (bits, or sparsity / pattern) and the compensation's rank."""

    rank: int = 16

    invalid: ClassVar[tuple[dict, ...]] = ({"bits": 3, "rank": 0}, {"bits": 3, "sparsity": 0.5})

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.bits is not None) == self.prunes:
            raise ConfigError("compensation needs one base compression: bits=B (RTN), or sparsity=P / "
                              "pattern='2:4' (magnitude pruning).")
        if type(self.rank) is not int or self.rank < 1:
            raise ConfigError(f"rank must be a positive integer, got {self.rank!r}.")

    def check_rank(self, layer: nn.Linear) -> None:
        if self.rank > min(layer.in_features, layer.out_features):
            raise ConfigError(f"rank {self.rank} exceeds min(out, in) = "
                              f"{min(layer.in_features, layer.out_features)} of this "
                              f"({layer.out_features}, {layer.in_features}) layer; lower the rank.")


def compress_base(layer: nn.Linear, config: CompensationConfig, build: bool) -> nn.Module:
    """The RTN-quantized or pruned layer `config` asks for (uninitialised unless `build`)."""
    config.check_rank(layer)
    if config.bits is not None:
        module = quantize_layer(layer, config)
        return module.quantize(layer.weight) if build else module
    return prune_layer(layer, config, build)


class _Compensated(Compressor):
    config_class = CompensationConfig

    @classmethod
    def shape(cls, layer: nn.Linear, config: CompensationConfig) -> nn.Module:
        return compress_base(layer, config, build=False)

    @classmethod
    def build(cls, layer: nn.Linear, config: CompensationConfig, stats=None) -> nn.Module:
        return compress_base(layer, config, build=True)

    @classmethod
    def error(cls, layer: nn.Linear, compressed: nn.Module) -> torch.Tensor:
        return layer.weight.detach().float() - compressed.dense_weight().float()


@register("eora")
class Eora(_Compensated):
    paper = "EoRA: Fine-tuning-free Compensation for Compressed LLM with Eigenspace Low-Rank Approximation"
    url = "https://arxiv.org/abs/2410.21271"
    calibration = "inputs"

    @classmethod
    def compensation(cls, layer, compressed, config, stats):
        return eigen_compensation(cls.error(layer, compressed), stats.input_moment, config.rank)


@register("svd-comp")
class SvdComp(_Compensated):
    paper = "Plain-SVD compensation of a compression error (the baseline in EoRA's paper)"
    url = "https://arxiv.org/abs/2410.21271"

    @classmethod
    def compensation(cls, layer, compressed, config, stats):
        return svd_factors(cls.error(layer, compressed), config.rank)
