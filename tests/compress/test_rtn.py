"""RTN quantization and magnitude pruning as compression methods on a whole model."""

import pytest
import torch

import rankwise
from rankwise.compress.compact import PrunedLinear, QuantizedLinear
from rankwise.compress.report import model_size
from rankwise.errors import ConfigError
from rankwise.io import save_model
from rankwise.models import load

from ..conftest import make_tiny_llama


@pytest.mark.parametrize("method, fields, kind", [
    ("rtn", {"bits": 8, "group_size": 16}, QuantizedLinear),
    ("rtn", {"bits": 2, "group_size": 32}, QuantizedLinear),
    ("prune", {"pattern": "2:4"}, PrunedLinear),
    ("prune", {"sparsity": 0.3}, PrunedLinear),
])
def test_base_compressions_shrink_the_model_and_load_back(method, fields, kind, tmp_path, tiny_ids):
    model = make_tiny_llama()
    before = model_size(model)["bytes"]
    with torch.no_grad():
        original = model(tiny_ids).logits
    rankwise.compress(model, method, **fields)
    assert isinstance(model.model.layers[0].mlp.up_proj, kind)
    assert model_size(model)["bytes"] < before
    with torch.no_grad():
        compressed = model(tiny_ids).logits
    if fields.get("bits") == 8:  # 8-bit RTN is nearly lossless
        torch.testing.assert_close(compressed, original, atol=5e-3, rtol=0)
    save_model(model, tmp_path / "m")
    loaded, _ = load(str(tmp_path / "m"))
    with torch.no_grad():
        assert torch.equal(loaded(tiny_ids).logits, compressed)


@pytest.mark.parametrize("method, fields, match", [
    ("rtn", {}, "rtn needs bits"),
    ("rtn", {"bits": 1}, "bits must be one of"),
    ("prune", {}, "prune needs sparsity"),
    ("prune", {"sparsity": 0.5, "pattern": "2:4"}, "not both"),
    ("prune", {"pattern": "2-4"}, "must look like 2:4"),
    ("prune", {"sparsity": 0.5, "bits": 4}, "prune does not use bits"),
])
def test_bad_settings(method, fields, match):
    with pytest.raises(ConfigError, match=match):
        rankwise.compress(make_tiny_llama(), method, **fields)
