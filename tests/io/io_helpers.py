"""Shared helpers for the tests of rankwise.io: tiny adapted models with non-trivial adapter tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import rankwise
from rankwise.adapters import layers_of

from ..conftest import TINY_VOCAB, make_tiny_llama

__all__ = [
    "TINY_VOCAB", "make_tiny_llama", "adapted_llama", "perturb", "logits", "adapter_state", "file_bytes",
]


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 123, scale: float = 0.1) -> nn.Module:
    """Add noise to every trainable tensor, so zero-initialised B does not make tests trivially pass."""
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        if param.requires_grad:
            param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * scale)
    return model


def adapted_llama(method: str = "lora", seed: int = 0, name: str = "default", **fields) -> nn.Module:
    if "rank" in rankwise.ADAPTERS.get(method).config_class.field_names():
        fields.setdefault("rank", 4)
    model = make_tiny_llama(seed)
    rankwise.adapt(model, method, name=name, **fields)
    return perturb(model)


@torch.no_grad()
def logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(ids).logits


def adapter_state(model: nn.Module, name: str = "default") -> dict[str, torch.Tensor]:
    return {f"{path}.{key}": value for path, layer in layers_of(model, name).items()
            for key, value in layer.state_dict().items()}


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir())}
