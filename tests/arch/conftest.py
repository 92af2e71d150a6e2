"""A 4-block tiny Llama (blocks of 1, 2 and 4 layers all fit), built in milliseconds."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from ..conftest import make_tiny_llama


def make_deep_llama(seed: int = 0, layers: int = 4) -> LlamaForCausalLM:
    return make_tiny_llama(seed, layers)


@pytest.fixture
def deep_llama() -> LlamaForCausalLM:
    return make_deep_llama()


@pytest.fixture
def ids(tiny_ids) -> torch.Tensor:
    return tiny_ids


def randomize_own(model: torch.nn.Module, seed: int = 3) -> None:
    """Give every variant tensor (queries, key-norm gains) a random value, so tests see more than init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "_query" in name or "_key_norm" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
