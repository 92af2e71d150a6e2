"""The layers LoRA and DoRA adapt besides nn.Linear, each seen as one linear map W (out, in).

    kind                 module                           W (out, in) from the module's weight
    linear               nn.Linear (or a compressed one)  weight
    transposed-linear    transformers' Conv1D (GPT-2)     weightᵀ            (stored (in, out))
    embedding            nn.Embedding                     weightᵀ            (dim, vocabulary): one-hot ids
    conv                 nn.Conv1d / 2d / 3d              weight.flatten(1)  (out, in · kernel)

The factors are the same for every kind, A (rank, in) and B (out, rank), and the update of an input is
B A x on that view, computed on activations:
    linear, transposed:  F.linear(F.linear(x, A), B)
    embedding:           the rows of Aᵀ the ids pick (a lookup, not a one-hot product), then B
    conv:                A as `rank` kernels of the base's size, with the base's stride, padding, dilation and
                         padding mode; then B as a 1×1 convolution
Every kind is linear in W, so base(x; W + s B A) = base(x; W) + s B A x, and merging folds
ΔW = s B A, reshaped to the module's own layout, into the weight exactly. DoRA normalises the rows of
W + s B A: per output feature (linear kinds), per embedding dimension over the vocabulary (embeddings), per
output channel over its whole kernel (convs), as PEFT does. The output's channel axis is the last one,
except for convs (axis 1).

Embeddings take no dropout (the input is ids) and start from A = 0, B ~ N(0, 1), as loralib and PEFT do:
each id picks one column of A, so a Kaiming A over a vocabulary-sized fan-in would start near zero.
Refused, with the reason: convs with groups > 1 (a low-rank update mixes the groups, so it cannot merge
into a grouped kernel) and embeddings with max_norm (the lookup renormalises rows: not linear in W).
Subclasses of these modules are not covered (they may change the forward, e.g. scaled embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..surgery import layer_kind

LINEAR, TRANSPOSED, EMBEDDING, CONV = "linear", "transposed-linear", "embedding", "conv"
MATMUL_KINDS = (LINEAR, TRANSPOSED)  # the update is two thin matmuls on the last axis
OTHER_KINDS = (TRANSPOSED, EMBEDDING, CONV)  # what lora, rslora and dora adapt besides nn.Linear
KIND_WORDS = {TRANSPOSED: "transformers' Conv1D", EMBEDDING: "nn.Embedding", CONV: "nn.Conv1d/2d/3d"}
_CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass(frozen=True)
class LayerShape:
    """A layer's kind, its (in, out) sizes as a linear map, its weight's own shape, and what its forward
    needs besides the weight (a conv's geometry, an embedding's padding index)."""

    kind: str
    in_features: int
    out_features: int
    weight_shape: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


def describe(module: nn.Module) -> LayerShape:
    """The LayerShape of a module LoRA can sit on; a ConfigError says why a conv or embedding cannot."""
    kind = layer_kind(module)
    if kind == LINEAR:
        sizes = module.in_features, module.out_features
        return LayerShape(kind, *sizes, sizes[::-1])
    weight_shape = tuple(module.weight.shape)
    if kind == TRANSPOSED:
        return LayerShape(kind, weight_shape[0], weight_shape[1], weight_shape)
    if kind == EMBEDDING:
        if module.max_norm is not None:
            raise ConfigError(f"an nn.Embedding with max_norm={module.max_norm} renormalises the rows it "
                              "looks up, so it is not linear in its weight and a low-rank update would not "
                              "merge.")
        options = {"padding_idx": module.padding_idx, "scale_grad_by_freq": module.scale_grad_by_freq}
        return LayerShape(kind, weight_shape[0], weight_shape[1], weight_shape, options)
    if kind == CONV:
        if module.groups != 1:
            raise ConfigError(f"a {type(module).__name__} with groups={module.groups}: a low-rank update "
                              "mixes the groups, so it cannot merge into a grouped kernel; exclude it.")
        zeros = module.padding_mode == "zeros"  # otherwise the input is padded first, as nn.ConvNd does
        options = {"stride": module.stride, "dilation": module.dilation, "padding_mode": module.padding_mode,
                   "padding": module.padding if zeros else 0,
                   "pad": None if zeros else tuple(module._reversed_padding_repeated_twice)}
        in_features = weight_shape[1] * int(torch.Size(weight_shape[2:]).numel())
        return LayerShape(kind, in_features, weight_shape[0], weight_shape, options)
    raise ConfigError(f"a {type(module).__name__} is none of the layer kinds LoRA adapts.")


def as_matrix(shape: LayerShape, weight: torch.Tensor) -> torch.Tensor:
    """The layer's weight as the (out, in) matrix it applies (a view, no copy)."""
    if shape.kind in (TRANSPOSED, EMBEDDING):
        return weight.t()
    if shape.kind == CONV:
        return weight.flatten(1)
    return weight


def from_matrix(shape: LayerShape, matrix: torch.Tensor) -> torch.Tensor:
    """An (out, in) matrix in the layer's own weight layout, contiguous as a module's weight is."""
    if shape.kind in (TRANSPOSED, EMBEDDING):
        return matrix.t().contiguous()
    if shape.kind == CONV:
        return matrix.reshape(shape.weight_shape)
    return matrix


def low_rank_update(shape: LayerShape, x: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """B A x for the layer's kind (unscaled), shaped as the layer's output; never the dense B A."""
    if shape.kind == EMBEDDING:
        options = shape.options
        hidden = F.embedding(x, A.t(), padding_idx=options["padding_idx"],
                             scale_grad_by_freq=options["scale_grad_by_freq"])
        return F.linear(hidden, B)
    if shape.kind == CONV:
        options, dims = shape.options, len(shape.weight_shape) - 2
        conv = _CONVS[dims]
        if options["pad"] is not None:
            x = F.pad(x, options["pad"], mode=options["padding_mode"])
        kernels = A.reshape(A.shape[0], *shape.weight_shape[1:])
        hidden = conv(x, kernels, None, options["stride"], options["padding"], options["dilation"])
        return conv(hidden, B.reshape(*B.shape, *(1,) * dims))
    return F.linear(F.linear(x, A), B)


def per_channel(shape: LayerShape, vector: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-output-feature vector (out,) laid out to broadcast against the layer's ndim-dim output."""
    return vector.view(-1, *(1,) * (ndim - 2)) if shape.kind == CONV else vector
