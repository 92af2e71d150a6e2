"""EoRA and its plain-SVD baseline on RTN and pruned bases: the compensation is a LoRA named after the
method, lowers the output error in the order EoRA < SVD < none, trains further, and round-trips."""

import pytest
import torch

import rankwise
from rankwise.adapters import adapter_names
from rankwise.compress.compact import PrunedLinear, QuantizedLinear
from rankwise.errors import ConfigError
from rankwise.io import save_adapter, save_model
from rankwise.models import load

from ..conftest import TINY_VOCAB, make_tiny_llama


@pytest.fixture
def batches():
    ids = torch.randint(0, TINY_VOCAB, (8, 16), generator=torch.Generator().manual_seed(1))
    return [{"input_ids": ids[:4]}, {"input_ids": ids[4:]}]


def _error(model, batches, reference):
    with torch.no_grad():
        return sum((model(**b).logits - r).square().mean().item() for b, r in zip(batches, reference))


@pytest.mark.parametrize("base", [{"bits": 2, "group_size": 16}, {"pattern": "2:4"}, {"sparsity": 0.6}])
def test_eora_beats_svd_beats_no_compensation(base, batches):
    reference = [make_tiny_llama()(**b).logits.detach() for b in batches]
    errors = {}
    for method in ("eora", "svd-comp"):
        model = rankwise.compress(make_tiny_llama(), method, rank=4, calibration=batches, **base)
        errors[method] = _error(model, batches, reference)
        rankwise.disable(model)
        errors["none"] = _error(model, batches, reference)
    assert errors["eora"] < errors["svd-comp"] < errors["none"]


def test_the_compensation_is_a_lora_named_after_the_method(batches, tmp_path):
    model = rankwise.compress(make_tiny_llama(), "eora", bits=3, group_size=16, rank=4, calibration=batches)
    q = model.model.layers[0].self_attn.q_proj
    assert isinstance(q.base, QuantizedLinear) and adapter_names(model) == ["eora"]
    lora = q.adapters["eora"]
    assert lora.scale == 1.0 and lora.lora_A.shape == (4, 32)
    assert all(p.requires_grad for p in lora.parameters())  # it can be fine-tuned further
    save_adapter(model, tmp_path / "peft", "eora", format="peft")  # and shipped as a PEFT LoRA
    assert (tmp_path / "peft" / "adapter_model.safetensors").is_file()


def test_full_rank_compensation_restores_the_model(batches):
    reference = [make_tiny_llama()(**b).logits.detach() for b in batches]
    model = rankwise.compress(make_tiny_llama(), "eora", pattern="2:4", rank=16, calibration=batches,
                              targets=["q_proj", "k_proj", "v_proj"])  # (32|16, 32): rank 16 is full for k, v
    assert isinstance(model.model.layers[0].self_attn.k_proj.base, PrunedLinear)
    k = model.model.layers[0].self_attn.k_proj
    original = make_tiny_llama().model.layers[0].self_attn.k_proj.weight
    torch.testing.assert_close(k.base.weight + k.adapters["eora"].delta_weight(), original,
                               atol=1e-4, rtol=1e-4)
    assert _error(model, batches, reference) < 1e-3


def test_a_compensated_model_folder_loads_back(batches, tmp_path, tiny_ids):
    model = rankwise.compress(make_tiny_llama(), "eora", bits=2, group_size=16, rank=4, calibration=batches)
    with torch.no_grad():
        expected = model(tiny_ids).logits
    save_model(model, tmp_path / "m")
    loaded, _ = load(str(tmp_path / "m"))
    assert isinstance(loaded.model.layers[1].mlp.down_proj.base, QuantizedLinear)
    with torch.no_grad():
        assert torch.equal(loaded(tiny_ids).logits, expected)


@pytest.mark.parametrize("fields, match", [
    ({"rank": 4}, "one base compression"),
    ({"bits": 3, "sparsity": 0.5, "rank": 4}, "one base compression"),
    ({"bits": 5, "rank": 4}, "bits must be one of 2, 3, 4, 8"),
    ({"bits": 3, "rank": 40}, r"q_proj: rank 40 exceeds min\(out, in\)"),
    ({"bits": 3, "group_size": 24, "rank": 4}, "group_size 24 does not divide"),
    ({"pattern": "4:2", "rank": 4}, "0 < n < m"),
])
def test_bad_settings_leave_the_model_unchanged(fields, match, batches, tiny_ids):
    model = make_tiny_llama()
    with torch.no_grad():
        before = model(tiny_ids).logits
    with pytest.raises(ConfigError, match=match):
        rankwise.compress(model, "eora", calibration=batches, **fields)
    assert adapter_names(model) == [] and torch.equal(model(tiny_ids).logits.detach(), before)


def test_eora_needs_calibration():
    with pytest.raises(ConfigError, match="eora reads activations: pass calibration="):
        rankwise.compress(make_tiny_llama(), "eora", bits=3, group_size=16)
