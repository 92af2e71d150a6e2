"""SplitFlux RCA: layers matched by the patterns get the pattern's rank and scale, the others the default."""

import pytest
import torch

import rankwise
from rankwise.adapters import adapted_layers
from rankwise.errors import ConfigError
from rankwise.surgery import pattern_value

from ..conftest import make_tiny_llama

PATTERNS = {"rank_pattern": {r"layers\.1\..*": 2}, "alpha_pattern": {r"layers\.1\..*": 64.0}}


def _rca(**fields):
    model = make_tiny_llama()
    rankwise.adapt(model, "splitflux-rca", rank=8, alpha=16, **fields)
    return model


def test_pattern_layers_get_the_pattern_rank_and_scale(tiny_ids):
    model = _rca(**PATTERNS)  # the plan gives each layer its own config before anything is built
    gen = torch.Generator().manual_seed(0)
    for path, layer in adapted_layers(model).items():
        rca = layer.adapters["default"]
        with torch.no_grad():
            rca.lora_B.copy_(0.1 * torch.randn(rca.lora_B.shape, generator=gen))  # a trained-looking size
        rank, scale = (2, 64.0 / 2) if path.startswith("model.layers.1.") else (8, 16.0 / 8)
        assert rca.lora_A.shape[0] == rca.lora_B.shape[1] == rank, path
        assert rca.scale == scale and rca.config.rank == rank, path
        delta = rca.delta_weight().detach()
        assert torch.linalg.matrix_rank(delta) == rank, path
        expected = scale * rca.lora_B @ rca.lora_A
        torch.testing.assert_close(delta, expected)
    with torch.no_grad():
        unmerged = model(tiny_ids).logits
        rankwise.merge(model)
        torch.testing.assert_close(model(tiny_ids).logits, unmerged, atol=1e-5, rtol=0)


def test_it_trains_at_once_and_loading_keeps_the_per_layer_ranks(tiny_ids, tmp_path):
    from rankwise.io import load_adapter, save_adapter

    model = _rca(**PATTERNS)
    model.train()
    model(tiny_ids).logits.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if ".adapters." in n)
    save_adapter(model, tmp_path / "rca")
    fresh = load_adapter(make_tiny_llama(), tmp_path / "rca")
    loaded = fresh.get_submodule("model.layers.1.mlp.up_proj").adapters["default"]
    assert loaded.lora_A.shape == (2, 32) and loaded.scale == 32.0
    assert fresh.get_submodule("model.layers.0.mlp.up_proj").adapters["default"].lora_A.shape == (8, 32)


def test_a_pattern_rank_too_large_names_the_layer():
    model = make_tiny_llama()
    with pytest.raises(ConfigError, match=r"layers\.0\.self_attn\.k_proj: rank 20"):  # k_proj is (16, 32)
        rankwise.adapt(model, "splitflux-rca", rank=8, rank_pattern={"k_proj": 20})
    assert not adapted_layers(model)


def test_first_matching_pattern_wins_and_keys_match_dotted_suffixes():
    pattern = {r"layers\.1\..*": 2, "q_proj": 3}
    assert pattern_value(pattern, "model.layers.1.self_attn.q_proj", 8) == 2
    assert pattern_value(pattern, "model.layers.0.self_attn.q_proj", 8) == 3
    assert pattern_value(pattern, "model.layers.0.mlp.up_proj", 8) == 8
    assert pattern_value(pattern, "model.layers.0.self_attn.xq_proj", 8) == 8  # a suffix at a dot only
    with pytest.raises(ConfigError):
        rankwise.ADAPTERS.get("splitflux-rca").config_class(rank_pattern={"x": 0})
    with pytest.raises(ConfigError, match="regular expression"):
        rankwise.ADAPTERS.get("splitflux-rca").config_class(rank_pattern={"*q_proj": 2})
