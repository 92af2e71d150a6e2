"""A tiny random Llama with SmolLM2's tokenizer: the whole CLI runs on it in seconds."""

from __future__ import annotations

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase


def tiny_llama_config(vocab_size: int, **token_ids: int | None) -> LlamaConfig:
    """The tiny Llama's shape for a vocabulary of `vocab_size` (also what rankwise.train.estimate reads)."""
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        **token_ids)


def tiny_llama(tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> LlamaForCausalLM:
    """A seeded 2-layer Llama (hidden 64) whose vocabulary and special tokens match `tokenizer`.

    The global RNG is left untouched (fork_rng), so loading it never changes a caller's random stream.
    """
    config = tiny_llama_config(len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model.eval()
