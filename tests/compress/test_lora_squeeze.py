"""LoRA-Squeeze (post-hoc): exact at or above the old rank, the Eckart–Young error below it, adapter folders
squeezed from their tensors alone that load back with the in-memory result, and clean refusals."""

import json

import pytest
import torch

import rankwise
from rankwise.adapters import get_config, layers_of, method_layers
from rankwise.adapters.lora import Lora
from rankwise.compress import COMPRESSORS
from rankwise.compress.lora_squeeze import LoraSqueezeConfig, squeeze_adapter, squeeze_adapter_folder
from rankwise.errors import AdapterFileError, ConfigError
from rankwise.io import load_adapter, load_tensors, save_adapter

from ..conftest import make_tiny_llama


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _trained(method="lora", rank=6, **fields):
    """A tiny llama with a LoRA whose B is not zero (as after training), so every layer's update is real."""
    model = rankwise.adapt(make_tiny_llama(), method, rank=rank, alpha=12.0, **fields)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for adapter in method_layers(model, "default").values():
            adapter.lora_B.copy_(torch.randn(adapter.lora_B.shape, generator=generator) * 0.2)
    return model


def _deltas(model, name="default"):
    return {path: adapter.delta_weight().double() for path, adapter in method_layers(model, name).items()}


@pytest.mark.parametrize("method", ["lora", "rslora"])
@pytest.mark.parametrize("rank", [6, 16])
def test_squeezing_to_the_old_rank_or_more_reproduces_the_adapter(method, rank, tiny_ids):
    model = _trained(method, rank=6, rank_pattern={"v_proj": 2})
    before = _logits(model, tiny_ids)
    layers = method_layers(model, "default")
    old = {path: (a.lora_A.clone(), a.lora_B.clone(), a.scale) for path, a in layers.items()}
    squeeze_adapter(model, "default", rank=rank)
    assert torch.equal(_logits(model, tiny_ids), before)
    for path, adapter in method_layers(model, "default").items():
        A, B, scale = old[path]
        assert type(adapter) is Lora and adapter.scale == scale  # a plain LoRA with the same factors
        assert torch.equal(adapter.lora_A, A) and torch.equal(adapter.lora_B, B)
        assert Lora.scaling(adapter.config) == pytest.approx(scale, rel=1e-12)  # what a reload computes


@pytest.mark.parametrize("svd_iters", [0, 2])
@pytest.mark.parametrize("method", ["lora", "rslora"])
def test_below_the_old_rank_the_error_is_the_eckart_young_bound(method, svd_iters):
    model = _trained(method, rank=6, rank_pattern={"v_proj": 2})
    old = _deltas(model)
    squeeze_adapter(model, "default", rank=3, svd_iters=svd_iters)
    new = _deltas(model)
    for path, adapter in method_layers(model, "default").items():
        singular = torch.linalg.svdvals(old[path])
        kept = adapter.lora_A.shape[0]
        assert kept == (2 if "v_proj" in path else 3)
        error = torch.linalg.matrix_norm(new[path] - old[path])
        torch.testing.assert_close(error, singular[kept:].square().sum().sqrt(), rtol=1e-3, atol=1e-5)
        if "v_proj" not in path:
            assert adapter.lora_A.shape[0] == 3 and adapter.scale == 12.0 / 3  # s' = alpha / r, alpha kept
    assert get_config(model).rank == 3 and get_config(model).alpha == 12.0


def test_a_squeezed_folder_loads_back_as_the_in_memory_squeeze(tmp_path, tiny_ids):
    model = _trained("rslora", rank=6, rank_pattern={"v_proj": 2}, modules_to_save=["lm_head"])
    with torch.no_grad():
        layers_of(model, "default")["lm_head"].weight.add_(0.1)  # the trained copy must travel too
    save_adapter(model, tmp_path / "r32")
    squeeze_adapter(model, "default", rank=3)
    expected = _logits(model, tiny_ids)
    save_adapter(model, tmp_path / "in_memory")

    assert squeeze_adapter_folder(tmp_path / "r32", tmp_path / "r8", rank=3) == tmp_path / "r8"
    loaded = load_adapter(make_tiny_llama(), tmp_path / "r8")  # the base fingerprint still fits
    torch.testing.assert_close(_logits(loaded, tiny_ids), expected, atol=1e-6, rtol=1e-6)
    meta, same = (json.loads((tmp_path / d / "adapter.json").read_text()) for d in ("r8", "in_memory"))
    assert meta["method"] == "lora" and meta["config"]["rank"] == 3
    assert {k: meta[k] for k in ("config", "plan", "base_model")} == {k: same[k] for k in ("config", "plan",
                                                                                            "base_model")}
    tensors, in_memory = (load_tensors(tmp_path / d / "adapter.safetensors")[0] for d in ("r8", "in_memory"))
    assert tensors.keys() == in_memory.keys()
    for key in tensors:
        torch.testing.assert_close(tensors[key], in_memory[key], atol=1e-6, rtol=1e-5)


def test_a_peft_folder_squeezes_like_its_rankwise_twin(tmp_path, tiny_ids):
    model = _trained("lora", rank=6, targets=["q_proj", "v_proj"])
    save_adapter(model, tmp_path / "peft", format="peft")
    save_adapter(model, tmp_path / "rankwise")
    squeeze_adapter_folder(tmp_path / "peft", tmp_path / "from_peft", rank=2)
    squeeze_adapter_folder(tmp_path / "rankwise", tmp_path / "from_rankwise", LoraSqueezeConfig(rank=2))
    got, want = (_logits(load_adapter(make_tiny_llama(), tmp_path / d), tiny_ids)
                 for d in ("from_peft", "from_rankwise"))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    save_adapter(load_adapter(make_tiny_llama(), tmp_path / "from_peft"), tmp_path / "back", format="peft")


@pytest.fixture
def folders(tmp_path):
    save_adapter(_trained("lora", rank=4, targets=["q_proj"]), tmp_path / "lora")
    save_adapter(rankwise.adapt(make_tiny_llama(), "dora", rank=4, targets=["q_proj"]), tmp_path / "dora")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an adapter")
    return tmp_path


@pytest.mark.parametrize("source, rank, error, match", [
    ("lora", 0, ConfigError, "rank must be a positive integer, got 0"),
    ("lora", "8", ConfigError, "rank must be a positive integer"),
    ("notes", 2, AdapterFileError, "has neither adapter.json .* nor adapter_config.json"),
    ("missing", 2, AdapterFileError, "is not a directory"),
    ("dora", 2, ConfigError, "is a 'dora' adapter; lora-squeeze squeezes plain LoRA"),
    ("out", 2, ConfigError, "is the source adapter folder"),
])
def test_bad_input_is_one_line_and_writes_nothing(folders, source, rank, error, match):
    out = folders / "out"
    with pytest.raises(error, match=match) as caught:
        squeeze_adapter_folder(folders / source, out, rank=rank)
    assert "\n" not in str(caught.value)
    assert not out.exists()


def test_in_memory_refusals_leave_the_model_unchanged(tiny_ids):
    model = rankwise.adapt(make_tiny_llama(), "dora", rank=4, targets=["q_proj"])
    before = _logits(model, tiny_ids)
    with pytest.raises(ConfigError, match="adapter 'default' is a 'dora' adapter"):
        squeeze_adapter(model, "default", rank=2)
    with pytest.raises(ConfigError, match="no adapter named 'other'"):
        squeeze_adapter(model, "other", rank=2)
    assert torch.equal(_logits(model, tiny_ids), before)


def test_listed_as_a_compressor_that_takes_an_adapter():
    cls = COMPRESSORS.get("lora-squeeze")
    assert cls.takes_adapter and cls.config_class().rank == 8
    with pytest.raises(ConfigError, match="compresses a trained LoRA adapter, not a model's layers"):
        rankwise.compress(make_tiny_llama(), "lora-squeeze", rank=4, targets=["q_proj"])
