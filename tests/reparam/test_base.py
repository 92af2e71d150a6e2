"""Every parameterized layer computes the linear map of its dense reconstruction W = s·B A + S, its
parameters are exactly the analytic count, and its settings are checked and round-trip."""

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rankwise
from rankwise.errors import ConfigError
from rankwise.reparam import REPARAMS, FactorizedLinear

from ..conftest import make_tiny_llama

SETTINGS = [
    ("lowrank", {"rank": 3}), ("lowrank", {"rank": 3, "init": "svd", "alpha": 5.0}),
    ("sltrain", {"rank": 3, "density": 0.2}), ("lost", {"rank": 3, "density": 0.25}),
    ("lost", {"rank": 3, "density": 0.25, "channel_dim": "out"}),
]


def _trained(method, fields, steps=2):
    """A (20, 24) layer with a bias, reparametrized, then moved off its init by a few AdamW steps."""
    model = nn.Sequential(nn.Linear(24, 20, bias=True))
    rankwise.reparametrize(model, method, **fields)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    x = torch.randn(6, 24, generator=torch.Generator().manual_seed(3))
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    return model[0]


@pytest.mark.parametrize("method, fields", SETTINGS)
def test_the_output_is_the_linear_map_of_the_dense_reconstruction(method, fields):
    layer = _trained(method, fields)
    assert isinstance(layer, FactorizedLinear) and layer.bias is not None
    x = torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-6, rtol=1e-5)
    assert torch.equal(layer.weight, layer.dense_weight().detach())


@pytest.mark.parametrize("method, fields", SETTINGS)
def test_parameter_counts_equal_the_formula(method, fields):
    model = make_tiny_llama()
    before = sum(p.numel() for p in model.parameters())
    shapes = [(m.out_features, m.in_features) for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and name != "lm_head"]
    rankwise.reparametrize(model, method, **fields)
    r, density = fields["rank"], fields.get("density")

    def formula(out, inp):
        low_rank = r * (out + inp)
        if method == "sltrain":
            return low_rank + int(density * out * inp)
        if method == "lost":
            channels = inp if fields.get("channel_dim", "in") == "in" else out
            return low_rank + max(1, round(density * channels)) * (out + inp - channels)
        return low_rank

    expected = before - sum(out * inp for out, inp in shapes) + sum(formula(*shape) for shape in shapes)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("method", REPARAMS.names())
def test_documented_and_bad_configs_rejected_and_configs_round_trip(method):
    cls = REPARAMS.get(method)
    assert cls.paper and cls.url.startswith("https://arxiv.org/") and cls.name == method
    doc = importlib.import_module(cls.__module__).__doc__
    assert len(doc) > 300 and "W =" in doc and "Paper vs code" in doc
    for bad in cls.config_class.bad_configs():
        with pytest.raises(ConfigError):
            cls.config_class(**bad)
    config = cls.config_class.create(method, rank=4, rank_pattern={"q_proj": 2})
    assert cls.config_class.from_dict(config.to_dict()) == config
    assert config.for_layer("model.layers.0.self_attn.q_proj").rank == 2
