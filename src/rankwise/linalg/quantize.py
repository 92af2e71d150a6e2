"""Round-to-nearest quantization, sign binarization, magnitude pruning masks, and bit packing:
the base compressions that the low-rank compensations (EoRA, SVD) repair. Pure tensor math.

Group-wise asymmetric RTN, for each row split into groups of `group_size` input columns:
    scale = (max g − min g) / (2^bits − 1),   zero = round(−min g / scale)
    q = clamp(round(w / scale) + zero, 0, 2^bits − 1),   ŵ = (q − zero) · scale
Binarization (BWN / XNOR-Net): ŵ = α_row · sign(w), α_row = mean |w_row| (the L2-optimal scale).
"""

from __future__ import annotations

import torch

SUPPORTED_BITS = (2, 3, 4, 8)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned integer codes < 2^bits, flattened, packed densely into uint8 (bits per code, any bits)."""
    flat = codes.reshape(-1).to(torch.int64)
    if 8 % bits == 0:  # whole codes per byte, the first in the high bits: as unpack_bits reads them
        flat = torch.cat([flat, flat.new_zeros(-flat.numel() % (8 // bits))]).reshape(-1, 8 // bits)
        shifts = torch.arange(8 - bits, -1, -bits, device=flat.device)
        return (flat << shifts).sum(1).to(torch.uint8)
    shifts = torch.arange(bits - 1, -1, -1, device=flat.device)
    planes = (flat[:, None] >> shifts) & 1  # (n, bits), most significant first
    stream = planes.reshape(-1)
    stream = torch.cat([stream, stream.new_zeros(-stream.numel() % 8)])
    weights = 1 << torch.arange(7, -1, -1, device=flat.device)
    return (stream.reshape(-1, 8) * weights).sum(1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The first `count` codes of pack_bits' output, as int64."""
    if 8 % bits == 0:  # whole codes per byte (1, 2, 4, 8 bits): shift bytes, not bit planes (~25x faster)
        shifts = torch.arange(8 - bits, -1, -bits, dtype=torch.uint8, device=packed.device)
        return ((packed[:, None] >> shifts) & (2**bits - 1)).reshape(-1)[:count].to(torch.int64)
    stream = (packed.to(torch.int64)[:, None] >> torch.arange(7, -1, -1, device=packed.device)) & 1
    planes = stream.reshape(-1)[: count * bits].reshape(count, bits)
    return (planes << torch.arange(bits - 1, -1, -1, device=packed.device)).sum(1)


def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int):
    """(codes (out, in) int64, scales (out, groups), zeros (out, groups)) of group-wise asymmetric RTN."""
    out, inp = weight.shape
    groups = weight.detach().float().reshape(out, inp // group_size, group_size)
    low, high = groups.amin(-1), groups.amax(-1)
    levels = 2**bits - 1
    scales = ((high - low) / levels).clamp_min(1e-12)  # a constant group gets a tiny, finite scale
    zeros = torch.round(-low / scales).clamp(0, levels)
    codes = (torch.round(groups / scales[..., None]) + zeros[..., None]).clamp(0, levels)
    return codes.reshape(out, inp).to(torch.int64), scales, zeros


def rtn_dequantize(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    out, inp = codes.shape
    groups = codes.reshape(out, scales.shape[1], -1).to(scales.dtype)
    return ((groups - zeros[..., None]) * scales[..., None]).reshape(out, inp)


def binarize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(signs (out, in) bool, True for w ≥ 0; alpha (out,) = mean |w| per row)."""
    w = weight.detach().float()
    return w >= 0, w.abs().mean(1)


def magnitude_mask(weight: torch.Tensor, sparsity: float = 0.5, n: int = 0, m: int = 0) -> torch.Tensor:
    """Bool mask of the weights kept. n:m (n=2, m=4): the n largest |w| of every m consecutive inputs of a
    row. Otherwise unstructured: the largest (1 − sparsity) share of |w| over the whole matrix."""
    magnitude = weight.detach().abs().float()
    if m:
        out, inp = magnitude.shape
        blocks = magnitude.reshape(out, inp // m, m)
        keep = torch.zeros_like(blocks, dtype=torch.bool)
        keep.scatter_(-1, blocks.topk(n, dim=-1).indices, True)
        return keep.reshape(out, inp)
    kept = magnitude.numel() - int(round(sparsity * magnitude.numel()))
    mask = torch.zeros(magnitude.numel(), dtype=torch.bool, device=magnitude.device)
    mask[magnitude.reshape(-1).topk(kept).indices] = True
    return mask.reshape(magnitude.shape)
