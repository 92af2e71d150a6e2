"""Export: a merged folder plain transformers loads, a GGUF transformers' GGUF reader loads, a PEFT folder
PEFT loads, each giving the adapter's own logits; the model exported is left exactly as it was."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

import rankwise
from rankwise.errors import AdapterFileError, ConfigError, NotMergeable
from rankwise.io.export import export_model
from rankwise.io.gguf_export import check_llama, to_rotate_pairs

from .io_helpers import adapted_llama, logits, perturb

TEXTS = ["Convert 5 March 2021 to ISO format: 2021-03-05", "<|im_start|>user\nhi there<|im_end|>\n",
         "  two spaces, tabs\tand ü é 123456"]


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def test_merged_folder_loads_in_plain_transformers_with_the_adapters_logits(tmp_path, tiny_ids):
    model = adapted_llama("lora", targets=["q_proj", "down_proj"], alpha=8.0).eval()
    expected, before = logits(model, tiny_ids), _weights(model)
    export_model(model, tmp_path / "merged", "merged")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # left as it was
    saved = load_file(tmp_path / "merged" / "model.safetensors")
    layer = model.model.layers[0].self_attn.q_proj
    A, B = layer.adapters["default"].lora_A, layer.adapters["default"].lora_B
    direct = layer.base.weight + (8.0 / 4) * B @ A  # W + (alpha / r) B A
    assert torch.allclose(saved["model.layers.0.self_attn.q_proj.weight"], direct, atol=1e-6)
    assert not any(".base." in key or "adapters" in key for key in saved)
    plain, info = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32,
                                                       output_loading_info=True)
    assert type(plain) is LlamaForCausalLM and not info["missing_keys"] and not info["unexpected_keys"]
    assert (logits(plain.eval(), tiny_ids) - expected).abs().max() <= 1e-5


def test_merged_f16_holds_the_f32_merge_rounded(tmp_path):
    model = adapted_llama("dora", targets=["v_proj"]).eval()
    export_model(model, tmp_path / "f32", "merged")
    export_model(model, tmp_path / "f16", "merged", dtype="f16")
    full, half = (load_file(tmp_path / kind / "model.safetensors") for kind in ("f32", "f16"))
    assert all(half[k].dtype == torch.float16 and torch.equal(half[k], full[k].half()) for k in full)


def _tiny_bpe_llama(seed: int = 0):
    """A byte-level BPE tokenizer of ~300 tokens and a random Llama sized to it: GGUF reads in a blink."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(TEXTS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>",
                                        eos_token="<|im_end|>", unk_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval(), tokenizer


@pytest.mark.parametrize("dtype, tolerance", [("f32", 1e-5), ("f16", 2e-3)])
def test_gguf_round_trip_through_transformers_gives_the_adapters_logits(tmp_path, dtype, tolerance):
    model, tokenizer = _tiny_bpe_llama()
    rankwise.adapt(model, "dora", rank=4, targets="all-linear")
    perturb(model, scale=0.3)
    ids = tokenizer(TEXTS[0], return_tensors="pt").input_ids
    expected = logits(model, ids)
    export_model(model, tmp_path, "gguf", tokenizer, dtype)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=f"model-{dtype}.gguf",
                                                  dtype=torch.float32).eval()
    assert loaded.config.tie_word_embeddings is False  # this model has its own head: output.weight written
    assert (logits(loaded, ids) - expected).abs().max() <= tolerance * max(1.0, expected.abs().max().item())
    read_back = AutoTokenizer.from_pretrained(tmp_path, gguf_file=f"model-{dtype}.gguf")
    assert all(read_back(text).input_ids == tokenizer(text).input_ids for text in TEXTS)


def test_q_and_k_rows_are_stored_in_the_order_transformers_reverses():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    weight = torch.randn(4 * 8, 5)
    stored = to_rotate_pairs(weight, heads=4)
    assert torch.equal(stored[:2], weight[[0, 4]])  # head 0: its rows 0 and d/2 become neighbours
    undone = LlamaTensorProcessor()._reverse_permute_weights(stored.numpy(), 4, 4)
    assert torch.equal(torch.from_numpy(undone), weight)


@pytest.mark.slow
def test_gguf_keeps_smollm2s_tokenizer_and_tied_head(tmp_path, cache):
    from rankwise.models import load

    model, tokenizer = load("tiny-llama")  # SmolLM2's 49152-token tokenizer, tied embeddings
    rankwise.adapt(model, "lora", rank=4, targets=["q_proj", "k_proj"])
    perturb(model)
    export_model(model, tmp_path, "gguf", tokenizer, "f16")
    read_back = AutoTokenizer.from_pretrained(tmp_path, gguf_file="model-f16.gguf")
    assert all(read_back(text).input_ids == tokenizer(text).input_ids for text in TEXTS)
    assert read_back.chat_template == tokenizer.chat_template and read_back.eos_token == tokenizer.eos_token
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model-f16.gguf", dtype=torch.float32)
    assert loaded.config.tie_word_embeddings is True


def test_peft_export_loads_in_peft_with_the_same_logits(tmp_path, tiny_ids):
    peft = pytest.importorskip("peft")
    from ..conftest import make_tiny_llama

    model = adapted_llama("dora", targets=["q_proj", "up_proj"]).eval()
    export_model(model, tmp_path / "peft", "peft")
    in_peft = peft.PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "peft").eval()
    assert (logits(in_peft, tiny_ids) - logits(model, tiny_ids)).abs().max() <= 1e-5


def test_refusals_write_nothing_and_leave_the_model_as_it_was(tmp_path):
    model = adapted_llama("vglora", targets=["q_proj"]).eval()
    before = _weights(model)
    with pytest.raises(NotMergeable, match="vglora cannot be merged"):
        export_model(model, tmp_path / "m", "merged")
    with pytest.raises(ConfigError, match="PEFT export supports"):
        export_model(model, tmp_path / "p", "peft")
    with pytest.raises(ConfigError, match="unknown export format 'onnx'"):
        export_model(model, tmp_path / "o", "onnx")
    assert not any(tmp_path.iterdir())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("mine")
    with pytest.raises(AdapterFileError, match="holds other files"):
        export_model(adapted_llama("lora", targets=["q_proj"]), tmp_path / "work", "merged")
    with pytest.raises(ConfigError, match="attention or MLP biases"):
        check_llama(LlamaConfig(attention_bias=True))


def test_a_merged_export_refuses_a_weight_tied_to_another_module(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16))
    rankwise.adapt(model, "lora", rank=2, targets=["wte"])
    with pytest.raises(NotMergeable, match="tied to lm_head"):
        export_model(model, tmp_path / "merged", "merged")
    assert not (tmp_path / "merged").exists()
