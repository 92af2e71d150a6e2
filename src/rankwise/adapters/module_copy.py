"""modules_to_save (PEFT's name): whole modules trained in full beside an adapter, such as the output head
or the embeddings of a task with new tokens.

Each listed module gets a ModuleCopy inside the adapter: a trainable copy W' of its weight (initialised
to W), used instead of W while the adapter is active,
    y = f(x; W', other parameters of the module)
Trains W' (every entry). The base keeps W, so disabling, switching or unloading the adapter gives the
original module back, and the adapter file holds W' next to the method's own tensors. Merges as
W ← W'. Only the weight is copied: biases and other parameters stay the base's (frozen).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.func import functional_call

from ..errors import TargetError
from .base import Adapter, AdapterConfig


class ModuleCopy(Adapter):
    name: ClassVar[str] = "module-copy"
    trains = "a full copy of the module's weight"

    @classmethod
    def can_wrap(cls, module: nn.Module) -> bool:
        return isinstance(getattr(module, "weight", None), nn.Parameter)

    def __init__(self, base: nn.Module, config: AdapterConfig):
        nn.Module.__init__(self)  # no rank or in/out sizes: any module with a weight
        if not self.can_wrap(base):
            raise TargetError(f"modules_to_save needs modules with a weight; a {type(base).__name__} "
                              "has none.")
        self.config = config
        self.weight = nn.Parameter(torch.empty_like(base.weight, dtype=torch.promote_types(
            base.weight.dtype, torch.float32)))

    def init_from_weight(self, weight: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(weight)

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        # The module's own forward with the copy in place of its weight; base_out is not used.
        out = functional_call(layer, {"weight": self.weight.to(layer.weight.dtype)}, (x,))
        return out.to(base_out.dtype)

    def merged_weight(self, weight: torch.Tensor) -> torch.Tensor:
        return self.weight.detach().to(weight.dtype).clone()

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError("a module copy replaces the weight; use merged_weight")
