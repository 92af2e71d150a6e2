"""A Llama model's weights as one GGUF file (f32 or f16), written with the gguf package, for llama.cpp and
for transformers' GGUF reader (AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)).

Metadata: general.architecture "llama" and llama.cpp's llama keys (context_length, embedding_length,
block_count, feed_forward_length, rope.dimension_count = head_dim, rope.freq_base, attention.head_count,
attention.head_count_kv, attention.layer_norm_rms_epsilon, vocab_size), general.file_type, and the
tokenizer as tokenizer.ggml.*: model "gpt2" (byte-level BPE), pre (the pre-tokenizer's name), the tokens
by id, their types (special added tokens CONTROL, other added tokens USER_DEFINED, the rest NORMAL, rows
past the tokenizer padded as UNUSED "[PAD<id>]"), and, through gguf.SpecialVocab, the merges, the special
token ids, add_bos/add_eos and the chat template.
Tensors: llama.cpp's names (token_embd, blk.N.attn_q ... ffn_down, output_norm, output) from gguf's own
name map. `output` is left out when the head is tied to the embeddings; that absence is how readers
know they are tied. The q and k rows are permuted within each head: transformers' rotary embedding pairs
coordinate i with i + d/2 (rotate_half), llama.cpp's pairs 2i with 2i + 1, so a head's rows
[a_0 .. a_{d/2-1}, b_0 .. b_{d/2-1}] are stored as [a_0, b_0, a_1, b_1, ...]; readers undo it.
f16 stores the 2-D weights in float16 and the 1-D norm weights in float32, as llama.cpp's MOSTLY_F16 does.
Limits: a Llama (model_type "llama", silu MLP) without attention or MLP biases and with default RoPE
(transformers' reader ignores rope scaling), and a byte-level BPE tokenizer; anything else is refused.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError

FILE_TYPES = {"f32": 0, "f16": 1}  # gguf.LlamaFileType.ALL_F32, MOSTLY_F16
CONTROL, USER_DEFINED, NORMAL, UNUSED = 3, 4, 1, 5  # gguf.TokenType values


def gguf_file_name(dtype: str) -> str:
    return f"model-{dtype}.gguf"


def to_rotate_pairs(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of q or k reordered per head from rotate-half order to llama.cpp's adjacent pairs."""
    out, rest = weight.shape[0], weight.shape[1:]
    half = out // heads // 2
    return weight.reshape(heads, 2, half, *rest).transpose(1, 2).reshape(out, *rest)


def check_llama(config) -> None:
    """Refuse, with the reason, a model this writer cannot express exactly."""
    problems = []
    if getattr(config, "model_type", None) != "llama":
        problems.append(f"model_type is {getattr(config, 'model_type', None)!r}, not 'llama'")
    if getattr(config, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act is {config.hidden_act!r}, not 'silu'")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("it has attention or MLP biases")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        problems.append(f"it uses {rope.get('rope_type', rope.get('type'))!r} rope scaling")
    if problems:
        raise ConfigError(f"GGUF export writes Llama-architecture models only, and this one cannot be "
                          f"written exactly: {'; '.join(problems)}. Export it with --to merged instead.")


def rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def pre_tokenizer_name(pre: dict | None) -> str:
    """llama.cpp's name for a byte-level pre-tokenizer (tokenizer.json's "pre_tokenizer")."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    steps = (pre or {}).get("pretokenizers", [pre]) if pre and pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") if step else None for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = steps[0].get("pattern", {}).get("Regex")
        name = next((name for name, split in GGUF_PRE_TOKENIZER_SPLITS.items() if split == regex), None)
        if name is not None:
            return name
    raise ConfigError(f"GGUF export does not know this tokenizer's pre-tokenizer ({kinds}); it knows GPT-2's "
                      "byte-level one, SmolLM's and the split rules transformers' GGUF reader knows.")


def tokenizer_fields(tokenizer, vocab_size: int) -> tuple[str, list[str], list[int]]:
    """(pre-tokenizer name, tokens by id, token types), padded to the model's `vocab_size` rows."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    model = spec.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback") or (spec.get("decoder") or {}).get(
            "type") != "ByteLevel":
        raise ConfigError("GGUF export writes byte-level BPE tokenizers (GPT-2 style, as SmolLM2's and "
                          "Llama 3's); this tokenizer is not one. Export it with --to merged instead.")
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if sorted(by_id) != list(range(len(by_id))) or len(by_id) > vocab_size:
        raise ConfigError(f"the tokenizer's {len(by_id)} ids are not 0..n-1 within the model's {vocab_size} "
                          "embedding rows; the GGUF's token list would not line up with the weights.")
    added = tokenizer.added_tokens_decoder
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    types = [UNUSED if i not in by_id else NORMAL if i not in added else
             CONTROL if added[i].special else USER_DEFINED for i in range(vocab_size)]
    return pre_tokenizer_name(spec.get("pre_tokenizer")), tokens, types


def add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    import gguf

    pre, tokens, types = tokenizer_fields(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as folder:  # SpecialVocab reads the saved tokenizer files
        tokenizer.save_pretrained(folder)
        special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    special.add_to_gguf(writer, quiet=True)


def gguf_tensors(state: dict[str, torch.Tensor], config, dtype: str) -> dict[str, np.ndarray]:
    """{llama.cpp name: array} for a Llama state dict with transformers' names."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    out, unknown = {}, []
    for name, tensor in state.items():
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            unknown.append(name)
            continue
        tensor = tensor.detach().to("cpu", torch.float32)
        if target.endswith("attn_q.weight"):
            tensor = to_rotate_pairs(tensor, heads)
        elif target.endswith("attn_k.weight"):
            tensor = to_rotate_pairs(tensor, kv_heads)
        half = dtype == "f16" and tensor.dim() > 1
        out[target] = tensor.to(torch.float16 if half else torch.float32).contiguous().numpy()
    if unknown:
        raise ConfigError(f"GGUF export has no llama.cpp name for {unknown[:5]}; only a plain Llama's "
                          "tensors can be written.")
    return out


def write_gguf(path: Path, state: dict[str, torch.Tensor], config, tokenizer, dtype: str = "f32") -> Path:
    """Write the Llama `state` (transformers' names, merged weights) and `tokenizer` as one GGUF at `path`.

    Write to a temporary path (io.atomic.atomic_path): the gguf writer streams into the file it is given.
    """
    import gguf

    if dtype not in FILE_TYPES:
        raise ConfigError(f"GGUF export writes f32 or f16, not {dtype!r}.")
    check_llama(config)
    if tokenizer is None:
        raise ConfigError("GGUF export needs the model's tokenizer: a GGUF carries its own vocabulary.")
    tensors = gguf_tensors(state, config, dtype)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(str(getattr(config, "name_or_path", "") or "rankwise export"))
    writer.add_file_type(FILE_TYPES[dtype])
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if head_dim * config.num_attention_heads != config.hidden_size:  # llama.cpp reads these when they differ
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    add_tokenizer(writer, tokenizer, config.vocab_size)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
