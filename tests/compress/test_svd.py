"""Truncated-SVD compression: exact at full rank, the Eckart–Young error below it, real savings,
and a model folder that loads back factorized."""

import json

import pytest
import torch
from torch import nn

import rankwise
from rankwise.compress import LowRankLinear
from rankwise.errors import ConfigError, TargetError
from rankwise.io import save_model
from rankwise.models import load

from ..conftest import make_tiny_llama


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_full_rank_reproduces_every_layer(tiny_ids):
    base = _logits(make_tiny_llama(), tiny_ids)
    model = rankwise.compress(make_tiny_llama(), "svd", rank=16, targets=["k_proj", "v_proj"])  # (16, 32)
    assert isinstance(model.model.layers[0].self_attn.k_proj, LowRankLinear)
    torch.testing.assert_close(_logits(model, tiny_ids), base, atol=1e-5, rtol=1e-5)


def test_the_factors_are_the_best_rank_r_approximation_and_save_parameters():
    layer = nn.Linear(48, 40, bias=True)
    model = nn.Sequential(layer)
    W = layer.weight.detach().clone()
    before = sum(p.numel() for p in model.parameters())
    rankwise.compress(model, "svd", rank=5)
    low = model[0]
    S = torch.linalg.svdvals(W.double())
    error = torch.linalg.matrix_norm((low.B @ low.A - W).double())
    torch.testing.assert_close(error, S[5:].square().sum().sqrt(), rtol=1e-4, atol=1e-6)  # Eckart–Young
    assert sum(p.numel() for p in model.parameters()) == 5 * (48 + 40) + 40 < before


def test_ratio_and_per_layer_ranks():
    model = rankwise.compress(make_tiny_llama(), "svd", ratio=0.25, rank_pattern={"q_proj": 2})
    q, k, up = (model.model.layers[0].self_attn.q_proj, model.model.layers[0].self_attn.k_proj,
                model.model.layers[0].mlp.up_proj)
    assert q.rank == 2  # the pattern wins over the ratio
    assert k.rank == int(0.25 * 16 * 32 / (16 + 32)) and up.rank == int(0.25 * 64 * 32 / 96)


@pytest.mark.parametrize("fields, error, match", [
    ({"rank": 17, "targets": ["k_proj"]}, ConfigError, r"k_proj: rank 17 exceeds min\(out, in\) = 16"),
    ({"ratio": 1.5}, ConfigError, r"ratio must be in \(0, 1\)"),
    ({"rank": 4, "ratio": 0.5}, ConfigError, "exactly one of"),
    ({"rank": 4, "bits": 3}, ConfigError, "svd does not use bits"),
    ({"rank": 4, "targets": ["model.norm"]}, TargetError, "compresses nn.Linear"),
    ({"rank": 4, "targets": 123}, ConfigError, "targets must be"),  # the plan's own checks, shared
])
def test_bad_settings_name_the_layer_and_leave_the_model_unchanged(fields, error, match, tiny_ids):
    model = make_tiny_llama()
    before = _logits(model, tiny_ids)
    with pytest.raises(error, match=match):
        rankwise.compress(model, "svd", **fields)
    assert not any(isinstance(m, LowRankLinear) for m in model.modules())
    assert torch.equal(_logits(model, tiny_ids), before)


def test_a_compressed_model_folder_loads_back_factorized(tmp_path, tiny_ids, cache):
    model = rankwise.compress(make_tiny_llama(), "svd", rank=4, rank_pattern={"down_proj": 8},
                              targets=["q_proj", "k_proj", "down_proj"])
    rankwise.adapt(model, "lora", rank=2, targets=["o_proj"])  # an adapter beside the compressed layers
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05)
    expected = _logits(model, tiny_ids)
    save_model(model, tmp_path / "m")
    records = json.loads((tmp_path / "m" / "rankwise.json").read_text())["records"]
    assert sorted(r["family"] for r in records) == ["adapter", "compress"]
    loaded, _ = load(str(tmp_path / "m"))
    down = loaded.model.layers[1].mlp.down_proj
    assert isinstance(down, LowRankLinear) and down.rank == 8
    assert torch.equal(_logits(loaded, tiny_ids), expected)
