"""Round-to-nearest group-wise quantization: the base compression that EoRA and SVD compensate.

Update rule, per row and group g of `group_size` consecutive input columns (asymmetric, min–max):
    scale = (max g − min g) / (2^bits − 1),   zero = round(−min g / scale)
    q = clamp(round(w / scale) + zero, 0, 2^bits − 1),   Ŵ = (q − zero) · scale
Stored as the codes packed at `bits` per weight, a float16 scale and a uint8 zero per group (so a 3-bit
layer with groups of 64 costs 3 + 24/64 bits per weight). Nothing trains.
Note: SmolLM2 ships as a 4-bit GGUF, so its weights already lie on a 4-bit grid; test it at 3 or 2 bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..errors import ConfigError
from ..linalg import SUPPORTED_BITS
from .base import CompressConfig, Compressor, register
from .compact import QuantizedLinear


@dataclass
class BitsField(CompressConfig):
    bits: int | None = None  # 2, 3, 4 or 8
    group_size: int = 64  # input columns sharing a scale; must divide every targeted layer's in_features

    invalid: ClassVar[tuple[dict, ...]] = ({"bits": 5}, {"bits": 4, "group_size": 0})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits is not None and (type(self.bits) is not int or self.bits not in SUPPORTED_BITS):
            allowed = ", ".join(map(str, SUPPORTED_BITS))
            raise ConfigError(f"bits must be one of {allowed}, got {self.bits!r}.")
        if type(self.group_size) is not int or self.group_size < 1:
            raise ConfigError(f"group_size must be a positive integer, got {self.group_size!r}.")

    def check_groups(self, layer: nn.Linear) -> None:
        if layer.in_features % self.group_size:
            raise ConfigError(f"group_size {self.group_size} does not divide this layer's in_features "
                              f"{layer.in_features}; pick a divisor of it (e.g. 32) or exclude the layer.")


def quantize_layer(layer: nn.Linear, config: BitsField) -> QuantizedLinear:
    config.check_groups(layer)
    return QuantizedLinear(layer, config.bits, config.group_size)


@dataclass
class RtnConfig(BitsField):
    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits is None:
            raise ConfigError("rtn needs bits (2, 3, 4 or 8).")


@register("rtn")
class Rtn(Compressor):
    config_class = RtnConfig
    paper = "Round-to-nearest group-wise weight quantization (the baseline of GPTQ, AWQ and EoRA)"
    url = "https://arxiv.org/abs/2210.17323"

    @classmethod
    def shape(cls, layer: nn.Linear, config: RtnConfig) -> QuantizedLinear:
        return quantize_layer(layer, config)

    @classmethod
    def build(cls, layer: nn.Linear, config: RtnConfig, stats=None) -> QuantizedLinear:
        return cls.shape(layer, config).quantize(layer.weight)
