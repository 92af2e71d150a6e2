"""A 4-block tiny Llama (blocks of 1, 2 and 4 layers all fit), built in milliseconds."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def make_deep_llama(seed: int = 0, layers: int = 4) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def deep_llama() -> LlamaForCausalLM:
    return make_deep_llama()


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))


def randomize_own(model: torch.nn.Module, seed: int = 3) -> None:
    """Give every variant tensor (queries, key-norm gains) a random value, so tests see more than init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "_query" in name or "_key_norm" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
