"""Compact stand-ins for nn.Linear that store their weight as integers, bits or kept values, so the
byte savings hold in memory and on disk. Each rebuilds its dense Ŵ per forward (no cached float copy),
and again in the backward pass (as bitsandbytes does for QLoRA) instead of keeping every layer's Ŵ
alive for it: training an adapter on a quantized base then holds one dense Ŵ at a time, not all of them.
QuantizedLinear.store(W') re-fits its codes to a dense W', which is how an adapter merges into it;
BnbLinear does the same in bitsandbytes' formats (imported only when one is built)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..linalg import binarize, pack_bits, rtn_dequantize, rtn_quantize, unpack_bits
from ..surgery import CompressedLinear


class _RebuiltWeightLinear(torch.autograd.Function):
    """y = x Ŵᵀ + b, saving nothing for the backward pass but the layer: dL/dx = dL/dy Ŵ with Ŵ rebuilt.
    Ŵ is a buffer, never trained, so it needs no gradient of its own; the bias may train."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bias: torch.Tensor | None, layer: _Compact) -> torch.Tensor:
        ctx.layer, ctx.x_dtype = layer, x.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        with torch.no_grad():
            weight = layer.dense_weight().to(x.dtype)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ ctx.layer.dense_weight().to(grad.dtype)).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0).to(ctx.bias_dtype)
        return grad_x, grad_bias, None


class _Compact(CompressedLinear):
    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.dtype = layer.weight.dtype  # the original weight's: what dense_weight() returns
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RebuiltWeightLinear.apply(x, self.bias, self)

    def stored_values(self) -> int:  # one per weight (a code or a sign), plus the bias
        return self.out_features * self.in_features + (0 if self.bias is None else self.bias.numel())

    def _bits(self, bits: int, device: torch.device) -> torch.Tensor:
        """An empty buffer for `bits` per weight, packed."""
        size = math.ceil(self.out_features * self.in_features * bits / 8)
        return torch.zeros(size, dtype=torch.uint8, device=device)

    def _unpack(self, packed: torch.Tensor, bits: int) -> torch.Tensor:
        count = self.out_features * self.in_features
        return unpack_bits(packed, bits, count).reshape(self.out_features, self.in_features)


class QuantizedLinear(_Compact):
    """Group-wise RTN: `bits`-bit codes packed densely, a float16 scale and an integer zero per group."""

    def __init__(self, layer: nn.Linear, bits: int, group_size: int):
        super().__init__(layer)
        self.bits, self.group_size = bits, group_size
        groups = (self.out_features, self.in_features // group_size)
        self.register_buffer("codes", self._bits(bits, layer.weight.device))
        self.register_buffer("scales", torch.zeros(groups, dtype=torch.float16, device=layer.weight.device))
        self.register_buffer("zeros", torch.zeros(groups, dtype=torch.uint8, device=layer.weight.device))

    @torch.no_grad()
    def quantize(self, weight: torch.Tensor) -> QuantizedLinear:
        codes, scales, zeros = rtn_quantize(weight, self.bits, self.group_size)
        self.codes.copy_(pack_bits(codes, self.bits))
        # Stored scales are rounded to float16; re-deriving codes would not change, as they are integers.
        self.scales.copy_(scales.half())
        self.zeros.copy_(zeros.to(torch.uint8))
        return self

    def store(self, weight: torch.Tensor) -> None:
        """Ŵ ← Q(weight): new codes, scales and zeros fitted to `weight` by the same RTN rule."""
        self.quantize(weight.to(self.codes.device))

    def dense_weight(self) -> torch.Tensor:
        codes = self._unpack(self.codes, self.bits)
        return rtn_dequantize(codes, self.scales.float(), self.zeros.float()).to(self.dtype)

    def settings(self) -> str:
        return f"bits={self.bits}, group_size={self.group_size}"

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.settings()}"


class BinaryLinear(_Compact):
    """Ŵ = α_row · sign(W): one bit per weight and one float scale per output row (BWN)."""

    def __init__(self, layer: nn.Linear):
        super().__init__(layer)
        self.register_buffer("signs", self._bits(1, layer.weight.device))
        alpha = torch.zeros(self.out_features, dtype=self.dtype, device=layer.weight.device)
        self.register_buffer("alpha", alpha)

    @torch.no_grad()
    def binarize(self, weight: torch.Tensor) -> BinaryLinear:
        signs, alpha = binarize(weight)
        self.signs.copy_(pack_bits(signs, 1))
        self.alpha.copy_(alpha)
        return self

    def dense_weight(self) -> torch.Tensor:
        signs = self._unpack(self.signs, 1).to(self.dtype) * 2 - 1
        return self.alpha[:, None] * signs


class PrunedLinear(_Compact):
    """A pruned weight as a packed keep-mask (1 bit per weight) and the kept values in row-major order."""

    def __init__(self, layer: nn.Linear, kept: int):
        super().__init__(layer)
        self.register_buffer("mask", self._bits(1, layer.weight.device))
        self.register_buffer("values", torch.zeros(kept, dtype=self.dtype, device=layer.weight.device))

    @torch.no_grad()
    def prune(self, weight: torch.Tensor, keep: torch.Tensor) -> PrunedLinear:
        self.mask.copy_(pack_bits(keep, 1))
        self.values.copy_(weight.detach()[keep])
        return self

    def stored_values(self) -> int:  # the kept weights, plus the bias
        return self.values.numel() + (0 if self.bias is None else self.bias.numel())

    def dense_weight(self) -> torch.Tensor:
        keep = self._unpack(self.mask, 1).bool()
        return self.values.new_zeros(keep.shape).masked_scatter(keep.to(self.values.device), self.values)

    def extra_repr(self) -> str:
        density = self.values.numel() / (self.in_features * self.out_features)
        return f"in_features={self.in_features}, out_features={self.out_features}, density={density:.3f}"


class BnbLinear(_Compact):
    """bitsandbytes' formats: 4-bit NF4 (packed codes, a float32 absmax per block of `group_size`) or
    LLM.int8 (int8 codes, an absmax per row; group_size unused), quantized and dequantized by bitsandbytes'
    own kernels. The matmul is torch's on the rebuilt Ŵ, as bitsandbytes itself trains on CPU; its
    Linear4bit/Linear8bitLt modules are not used because on CPU they repack or move their codes on the first
    forward, after which the weight can no longer be read back (merging, DoRA, fingerprints)."""

    def __init__(self, layer: nn.Linear, bits: int, group_size: int):
        super().__init__(layer)
        self.bits, self.group_size = bits, group_size
        self.store(layer.weight)

    @torch.no_grad()
    def store(self, weight: torch.Tensor) -> None:
        import bitsandbytes.functional as bnb

        weight = weight.detach().float()
        if self.bits == 4:
            packed, state = bnb.quantize_4bit(weight, blocksize=self.group_size, quant_type="nf4")
            tensors = {"codes": packed, "absmax": state.absmax}
        else:
            codes, row_absmax, _ = bnb.int8_vectorwise_quant(weight)
            tensors = {"codes": codes, "absmax": row_absmax}
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor)

    def dense_weight(self) -> torch.Tensor:
        import bitsandbytes.functional as bnb

        if self.bits == 8:
            return bnb.int8_vectorwise_dequant(self.codes, self.absmax).to(self.dtype)
        state = bnb.QuantState(absmax=self.absmax, shape=torch.Size((self.out_features, self.in_features)),
                               dtype=torch.float32, blocksize=self.group_size, quant_type="nf4")
        return bnb.dequantize_4bit(self.codes, state).to(self.dtype)

    def settings(self) -> str:
        return f"nf4, group_size={self.group_size}" if self.bits == 4 else "int8"
