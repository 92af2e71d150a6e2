"""reparametrize(): reproducible from its seed, all-or-nothing on bad settings (errors name the layer), and
a trained model saves and loads back bit for bit, adapters on top included."""

import json

import pytest
import torch
from torch import nn

import rankwise
from rankwise.errors import ConfigError, TargetError
from rankwise.io import save_model
from rankwise.models import load
from rankwise.reparam import REPARAMS, FactorizedLinear, installed
from rankwise.surgery import CompressedLinear

from ..conftest import make_tiny_llama

EXAMPLES = {"lowrank": {"rank": 4}, "sltrain": {"rank": 4, "density": 0.1},
            "lost": {"rank": 4, "density": 0.1, "channel_dim": "out"}, "sst": {"rank": 4},
            "relora": {"rank": 4}}


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _train(model, ids, steps=2):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        model(ids, labels=ids).loss.backward()
        optimizer.step()


def test_every_method_has_an_example():
    assert set(EXAMPLES) == set(REPARAMS.names())


@pytest.mark.parametrize("method", sorted(EXAMPLES))
def test_a_trained_model_saves_and_loads_to_the_same_outputs(method, tmp_path, tiny_ids):
    model = rankwise.reparametrize(make_tiny_llama(), method, rank_pattern={"down_proj": 2},
                                   **EXAMPLES[method])
    assert installed(model) == ["default"]
    rankwise.adapt(model, "lora", rank=2, targets=["o_proj"], freeze_base=False)  # a LoRA on top
    _train(model, tiny_ids)
    expected = _logits(model, tiny_ids)
    save_model(model, tmp_path / "m")
    records = json.loads((tmp_path / "m" / "rankwise.json").read_text())["records"]
    assert [(r["family"], r["method"]) for r in records] == [("reparam", method), ("adapter", "lora")]
    loaded, _ = load(str(tmp_path / "m"))
    assert isinstance(loaded.model.layers[1].mlp.down_proj, CompressedLinear)  # sst's is not factorized
    assert loaded.model.layers[1].mlp.down_proj.rank == 2
    torch.testing.assert_close(_logits(loaded, tiny_ids), expected, atol=0, rtol=0)


@pytest.mark.parametrize("method", sorted(EXAMPLES))
def test_the_seed_alone_decides_every_random_draw(method):
    def state(seed):
        torch.manual_seed(seed + 100)  # the global RNG must not matter
        model = rankwise.reparametrize(make_tiny_llama(), method, seed=seed, **EXAMPLES[method])
        return {k: v for k, v in model.state_dict().items() if "layers" in k and "norm" not in k}

    first, again, other = state(0), state(0), state(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    if method != "lost":  # LOST is deterministic: its init is the SVD of the layer's weight
        assert any(not torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("method, fields, error, match", [
    ("lowrank", {"rank": 17, "targets": ["k_proj"]}, ConfigError,
     r"model\.layers\.0\.self_attn\.k_proj: rank 17 exceeds min\(out, in\) = 16"),
    ("sltrain", {"rank": 4, "rank_pattern": {"v_proj": 20}}, ConfigError,
     r"model\.layers\.0\.self_attn\.v_proj: rank 20 exceeds"),
    ("sltrain", {"rank": 4, "density": 0.0}, ConfigError, r"density must be in \(0, 1\)"),
    ("sltrain", {"rank": 4, "density": 1.5}, ConfigError, r"density must be in \(0, 1\)"),
    ("lost", {"rank": 4, "density": 1}, ConfigError, r"density must be in \(0, 1\)"),
    ("sltrain", {"rank": 4, "density": 1e-4}, ConfigError,
     r"model\.layers\.0\.self_attn\.q_proj: density 0\.0001 leaves no sparse entry"),
    ("lowrnk", {"rank": 4}, ConfigError, r"unknown parameterization 'lowrnk'\. Did you mean lowrank"),
    ("lowrank", {}, ConfigError, "rank must be a positive integer"),
    ("sltrain", {"rank": 4, "init": "svd"}, ConfigError, "sltrain does not use init"),
    ("lowrank", {"rank": 4, "targets": ["model.norm"]}, TargetError, r"model\.norm is a LlamaRMSNorm"),
])
def test_bad_settings_are_clear_errors_and_leave_the_model_unchanged(method, fields, error, match, tiny_ids):
    model = make_tiny_llama()
    before = _logits(model, tiny_ids)
    with pytest.raises(error, match=match):
        rankwise.reparametrize(model, method, **fields)
    assert not any(isinstance(m, FactorizedLinear) for m in model.modules()) and not installed(model)
    assert torch.equal(_logits(model, tiny_ids), before)


def test_layers_already_replaced_are_refused_and_names_are_unique():
    model = rankwise.reparametrize(make_tiny_llama(), "lowrank", rank=4, targets=["q_proj"])
    with pytest.raises(ConfigError, match="already has a parameterization named 'default'"):
        rankwise.reparametrize(model, "lowrank", rank=4, targets=["k_proj"])
    with pytest.raises(TargetError, match=r"q_proj is a FactorizedLinear; lowrank reparametrizes nn\.Linear"):
        rankwise.reparametrize(model, "lowrank", name="again", rank=4, targets=["q_proj"])
    rankwise.reparametrize(model, "sltrain", name="mlp", rank=4, targets=["up_proj"])
    assert installed(model) == ["default", "mlp"]
    assert not isinstance(model.model.layers[0].self_attn.k_proj, FactorizedLinear)
    assert isinstance(model.lm_head, nn.Linear)  # "all-linear" leaves the output head dense
