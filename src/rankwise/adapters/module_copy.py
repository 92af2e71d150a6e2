"""modules_to_save (PEFT's name): whole modules trained in full beside an adapter, such as the output head
or the embeddings of a task with new tokens.

Each listed module gets a ModuleCopy inside the adapter: a trainable copy W' of its weight (initialised
to W), used instead of W while the adapter is active,
    y = f(x; W', other parameters of the module)
Trains W' (every entry). The base keeps W, so disabling, switching or unloading the adapter gives the
original module back, and the adapter file holds W' next to the method's own tensors. Merges as
W ← W'. Only the weight is copied: biases and other parameters stay the base's (frozen).
A factorized layer (compress.LowRankLinear, whose weight is B A) has its factors copied instead, A' and
B': this is WeLore-PEFT, training only the low-rank components of a compressed model. Such a copy does
not merge (the base stores factors), so keep it as an adapter.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.func import functional_call

from ..errors import TargetError
from ..surgery import CompressedLinear
from .base import Adapter, AdapterConfig


class ModuleCopy(Adapter):
    name: ClassVar[str] = "module-copy"
    trains = "a full copy of the module's weight"

    @staticmethod
    def copied_names(module: nn.Module) -> list[str]:
        """What a copy replaces: the module's weight, or (a factorized layer) its own non-bias parameters."""
        if isinstance(getattr(module, "weight", None), nn.Parameter):
            return ["weight"]
        if isinstance(module, CompressedLinear):
            return [name for name, _ in module.named_parameters(recurse=False) if name != "bias"]
        return []

    @classmethod
    def can_wrap(cls, module: nn.Module) -> bool:
        return bool(cls.copied_names(module))

    def __init__(self, base: nn.Module, config: AdapterConfig):
        nn.Module.__init__(self)  # no rank or in/out sizes: any module with a weight
        if not self.can_wrap(base):
            raise TargetError(f"modules_to_save needs modules with a weight or low-rank factors; a "
                              f"{type(base).__name__} has none.")
        self.config = config
        self.names = self.copied_names(base)
        for name in self.names:
            source = getattr(base, name)
            dtype = torch.promote_types(source.dtype, torch.float32)
            self.register_parameter(name, nn.Parameter(source.detach().to(dtype).clone()))

    def init_from_weight(self, weight: torch.Tensor) -> None:
        """Nothing to do: the copies were taken from the module itself when the adapter was built."""

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        # The module's own forward with the copies in place of its tensors; base_out is not used.
        copies = {name: getattr(self, name).to(getattr(layer, name).dtype) for name in self.names}
        return functional_call(layer, copies, (x,)).to(base_out.dtype)

    def merged_weight(self, weight: torch.Tensor) -> torch.Tensor:
        return self.weight.detach().to(weight.dtype).clone()

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError("a module copy replaces the weight; use merged_weight")
