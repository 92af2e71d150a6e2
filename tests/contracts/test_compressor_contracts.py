"""One suite over every registered compression method: documented, its settings checked, and a model
it compressed saves and loads back to the same outputs, adapters (compensations) included."""

import importlib

import pytest
import torch

import rankwise
from rankwise.compress import COMPRESSORS, installed
from rankwise.errors import ConfigError
from rankwise.io import save_model
from rankwise.models import load

from ..conftest import TINY_VOCAB, make_tiny_llama

# Small, valid settings for the tiny Llama (32/16-wide projections, 64-wide MLP); a new method adds one.
EXAMPLES = {
    "svd": {"rank": 4}, "svd-llm": {"ratio": 0.5}, "asvd": {"rank": 4}, "welore": {"reduction": 0.3},
    "rtn": {"bits": 3, "group_size": 16}, "prune": {"pattern": "2:4"},
    "eora": {"bits": 2, "group_size": 16, "rank": 2}, "svd-comp": {"sparsity": 0.5, "rank": 2},
    "bipft": {"rank": 1}, "afm": {"rank": 4}, "pela": {"steps": 2}, "trp": {"energy": 0.9},
    "lora-squeeze": None,  # an adapter folder, not a model: tests/compress/test_lora_squeeze.py
}
MODEL_METHODS = [name for name in COMPRESSORS.names() if EXAMPLES.get(name) is not None]


def test_every_method_has_an_example():
    assert set(EXAMPLES) == set(COMPRESSORS.names())


@pytest.mark.parametrize("method", COMPRESSORS.names())
def test_documented_with_paper_and_formula(method):
    cls = COMPRESSORS.get(method)
    assert cls.paper and cls.url and cls.name == method
    assert cls.__module__.startswith("rankwise.compress.")
    doc = importlib.import_module(cls.__module__).__doc__ or ""
    assert len(doc) > 300 and ("=" in doc or "≈" in doc), f"{cls.__module__} states no rule"


@pytest.mark.parametrize("method", COMPRESSORS.names())
def test_bad_configs_are_rejected_and_configs_round_trip(method):
    config_class = COMPRESSORS.get(method).config_class
    for bad in config_class.bad_configs():
        with pytest.raises(ConfigError):
            config_class(**bad)
    with pytest.raises(ConfigError, match="does not use lora_alpha"):
        config_class.create(method, lora_alpha=1)
    if EXAMPLES[method] is not None:
        config = config_class.create(method, **EXAMPLES[method])
        assert config_class.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("method", MODEL_METHODS)
def test_a_compressed_model_saves_and_loads_to_the_same_outputs(method, tmp_path, tiny_ids):
    ids = torch.randint(0, TINY_VOCAB, (4, 16), generator=torch.Generator().manual_seed(0))
    model = rankwise.compress(make_tiny_llama(), method, calibration=[{"input_ids": ids}], progress=False,
                              **EXAMPLES[method])
    assert installed(model) == ["default"]
    with torch.no_grad():
        expected = model(tiny_ids).logits
    assert torch.isfinite(expected).all()
    save_model(model, tmp_path / "m")
    loaded, _ = load(str(tmp_path / "m"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(tiny_ids).logits, expected, atol=0, rtol=0)
