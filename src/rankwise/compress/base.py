"""The compression family's interface: a config, a factorized layer, and a compressor per method.

A compressor turns one layer into a smaller module, through the same plan as every family:
    plan = rankwise.surgery.make_plan(model, config)          # {path: that layer's config}
    plan = Compressor.plan_ranks(model, config, plan)         # whole-model choices (WeLore's ranks)
    module = Compressor.build(layer, layer_config, stats)     # the factory (reads the layer's weight)
    empty  = Compressor.shape(layer, layer_config)            # the same structure, uninitialised (loading)
    B, A   = Compressor.compensation(layer, module, layer_config, stats)   # or None
    Compressor.after_install(model, config, originals, calibration)   # whole-model step (PELA's distillation)
`stats` are the layer's calibration statistics (compress.calibration.LayerStats) when the method sets
`calibration` to "inputs" or "outputs", else None. A compensation (EoRA, SVD) is a rank-r correction
Ŵ + B A of the compressed layer; compress() installs it as a LoRA adapter, so it can be fine-tuned
further and exported in PEFT's format.
Compressed layers stay compact in memory and on disk (factors, packed integer codes), so the savings are
real; a model folder (rankwise.io.save_model) stores them as the family's tensors and
rankwise.models.load rebuilds them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .._registry import Registry
from ..linalg import svd_factors
from ..surgery import LowRankLinear, PlanConfig
from .calibration import LayerStats


@dataclass
class CompressConfig(PlanConfig):
    """Which layers to compress (targets, exclude, layers_to_transform: rankwise.surgery.PlanConfig)."""


class Compressor:
    """One compression method: its config class and its factory; registered with @register."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[CompressConfig]] = CompressConfig
    paper: ClassVar[str] = ""
    url: ClassVar[str] = ""
    calibration: ClassVar[str | None] = None  # "inputs" or "outputs": the statistics build() needs
    takes_adapter: ClassVar[bool] = False  # compresses an adapter folder, not a model (lora-squeeze)

    @classmethod
    def plan_ranks(cls, model: nn.Module, config: CompressConfig,
                   plan: dict[str, CompressConfig]) -> dict[str, CompressConfig]:
        """Whole-model decisions taken before any layer is built (WeLore's global threshold): returns the
        plan to build, whose per-layer configs are saved, so loading needs no whole-model step. Layers
        it leaves out stay as they are."""
        return plan

    @classmethod
    def shape(cls, layer: nn.Linear, config: CompressConfig) -> nn.Module:
        raise NotImplementedError

    @classmethod
    def build(cls, layer: nn.Linear, config: CompressConfig, stats: LayerStats | None = None) -> nn.Module:
        raise NotImplementedError

    @classmethod
    def compensation(cls, layer: nn.Linear, compressed: nn.Module, config: CompressConfig,
                     stats: LayerStats | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(B (out, r), A (r, in)) correcting the compressed layer to Ŵ + B A, or None (no correction)."""
        return None

    @classmethod
    def after_install(cls, model: nn.Module, config: CompressConfig, originals: dict[str, nn.Linear],
                      calibration: Iterable | None) -> None:
        """A whole-model step once every planned layer is replaced (PELA distils the compressed model
        against `originals`, the layers it replaced, as teacher). If it raises, compress() puts the
        original layers back. Not run when a saved model loads: what it trains is in the saved tensors."""


class SvdCompressor(Compressor):
    """A layer replaced by the truncated SVD of its weight, B A = U_r √S_r · √S_r V_rᵀ, at the rank its
    config's rank_for(layer) gives (svd, welore, trp, pela differ only in how they choose it)."""

    @classmethod
    def shape(cls, layer: nn.Linear, config: CompressConfig) -> LowRankLinear:
        return LowRankLinear.like(layer, config.rank_for(layer))

    @classmethod
    def build(cls, layer: nn.Linear, config: CompressConfig, stats=None) -> LowRankLinear:
        module = cls.shape(layer, config)
        return module.set_factors(*svd_factors(layer.weight, module.rank, getattr(config, "svd_iters", 0)))


COMPRESSORS: Registry[type[Compressor]] = Registry("compression method")


register = COMPRESSORS.register_class  # @register("name"): name == file name == cls.name
