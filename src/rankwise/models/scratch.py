"""Llama-architecture models to pre-train from scratch, with a byte-level tokenizer.

Sizes (Llama's shape: SwiGLU MLP of width ≈ 8/3·hidden, RMSNorm, rotary positions, untied head):
    tiny    hidden 128, 4 layers, 4 heads, MLP 352     ≈ 0.87 M parameters; minutes on 2 CPU cores
    small   hidden 512, 8 layers, 8 heads, MLP 1376    ≈ 25.6 M parameters (GaLore's 60M recipe, halved)

Why bytes, not SmolLM2's 49k-token BPE: at these widths a 49k-row embedding and head would hold most of
the parameters and most of the compute (6.3 M of the tiny model's, before one block), so the linear
layers the low-rank methods change would barely show in either. Bytes keep the comparison on the blocks,
need no vocabulary file and no download (transformers' ByT5Tokenizer, 256 bytes + pad, eos, unk), and
the bundled corpus (about 270 k training bytes) gives several hundred steps of fresh-enough data.
Perplexities are therefore per byte, not per word piece.
"""

from __future__ import annotations

import torch
from transformers import ByT5Tokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from ..errors import ConfigError

SIZES = {
    "tiny": {"hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 4, "num_attention_heads": 4},
    "small": {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8,
              "num_attention_heads": 8},
}


def byte_tokenizer() -> ByT5Tokenizer:
    """UTF-8 bytes as tokens 3..258, with pad 0, eos 1, unk 2 (ByT5's layout, no extra ids)."""
    return ByT5Tokenizer(extra_ids=0)


def scratch_llama(size: str, tokenizer, max_length: int = 256, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised Llama of `size` (see SIZES) for `tokenizer`, seeded without touching the
    caller's random stream."""
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r}; use one of {', '.join(SIZES)}.")
    shape = SIZES[size]
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=max_length, tie_word_embeddings=False,
        num_key_value_heads=shape["num_attention_heads"], bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    return model
