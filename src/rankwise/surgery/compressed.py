"""The common face of every compressed linear layer (factorized, quantized, pruned, binarized), so that
target search and the adapter family treat them as linear layers without importing the family that
made them: LoRA trains on a quantized or factorized base (QLoRA-style) through this interface."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NotMergeable


class CompressedLinear(nn.Module):
    """y = Ŵ x + b for a Ŵ stored in some compact form; subclasses define dense_weight() and forward.

    `weight` is the dense reconstruction Ŵ, a plain tensor rebuilt on each access (never a
    Parameter): code that reads a linear layer's weight (an adapter's SVD init, DoRA's norm, the
    analyzers) sees Ŵ, while nothing can write into it by mistake. Merging an adapter goes through
    store(W'): a kind that can re-fit its compact form to a dense W' (quantized layers: Ŵ' = Q(W'))
    overrides it; the others keep refusing.
    """

    in_features: int
    out_features: int
    bias: nn.Parameter | None
    requantization_error: dict | None = None  # set by a merge into it (rankwise.adapters._requantize)

    def dense_weight(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def weight(self) -> torch.Tensor:
        with torch.no_grad():
            return self.dense_weight()

    def store(self, weight: torch.Tensor) -> None:
        """Re-fit the stored form to the dense `weight` (an adapter merged in), so that dense_weight()
        becomes its compressed approximation. Only kinds whose form can hold any weight override it."""
        raise NotMergeable(f"an adapter cannot be merged into a compressed {type(self).__name__}: its "
                           "compact form cannot re-store an arbitrary weight. Keep the adapter unmerged, or "
                           "decompress the layer first.")

    def stored_state(self):
        """A copy of what store() overwrites, for restore() to put back bit for bit (unmerge)."""
        return {key: value.detach().clone() for key, value in self.state_dict().items()}

    def restore(self, state) -> None:
        self.load_state_dict(state)

    def settings(self) -> str:
        """What, besides its kind, decides how this layer approximates a weight (e.g. "bits=4,
        group_size=64"), shared by every layer compressed alike; a base-model fingerprint records it."""
        return ""

    def stored_bytes(self) -> int:
        """Bytes of what this layer stores (its parameters and buffers), for size reports."""
        return sum(t.numel() * t.element_size() for t in (*self.parameters(), *self.buffers()))

    def stored_values(self) -> int:
        """How many numbers this layer stores, a packed code or kept weight counting as one."""
        return sum(t.numel() for t in self.parameters())


class LowRankLinear(CompressedLinear):
    """y = s · B (A x) + b: a linear layer stored as its two factors, A (rank, in) and B (out, rank), with
    s = `scale` (1 for compression's factorized layers; α / r for reparam's trainable ones). The dense
    B A is never formed in the forward."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: torch.Tensor | None,
                 dtype: torch.dtype, device: torch.device | str = "cpu", scale: float = 1.0):
        super().__init__()
        self.in_features, self.out_features, self.rank, self.scale = in_features, out_features, rank, scale
        self.A = nn.Parameter(torch.empty(rank, in_features, dtype=dtype, device=device))
        self.B = nn.Parameter(torch.empty(out_features, rank, dtype=dtype, device=device))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @classmethod
    def like(cls, layer: nn.Linear, rank: int, scale: float = 1.0, **extra) -> LowRankLinear:
        """An uninitialised rank-`rank` stand-in for `layer`: its sizes, dtype, device and bias (copied)."""
        weight = layer.weight
        return cls(layer.in_features, layer.out_features, rank, layer.bias, weight.dtype, weight.device,
                   scale, **extra)

    @torch.no_grad()
    def set_factors(self, B: torch.Tensor, A: torch.Tensor) -> LowRankLinear:
        self.B.copy_(B)
        self.A.copy_(A)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.linear(x, self.A)
        return F.linear(hidden * self.scale if self.scale != 1 else hidden, self.B, self.bias)

    def dense_weight(self) -> torch.Tensor:
        product = self.B @ self.A
        return product * self.scale if self.scale != 1 else product

    def extra_repr(self) -> str:
        scale = f", scale={self.scale:g}" if self.scale != 1 else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}{scale}"


def is_linear(module: nn.Module) -> bool:
    """An nn.Linear itself, or a compressed stand-in for one."""
    return type(module) is nn.Linear or isinstance(module, CompressedLinear)
