"""One contract suite over every registered adapter method; a new method must pass it unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import adapted_layers
from rankwise.errors import ConfigError, NotMergeable, TargetError

from ..conftest import make_tiny_llama

METHODS = rankwise.ADAPTERS.names()


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _perturb(model, seed=0):
    """Move every trainable tensor off its init, so that zero-init methods are really tested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=gen))


def _adapted(method, seed=0, **fields):
    model = make_tiny_llama(seed)
    fields.setdefault("rank", 4)
    return rankwise.adapt(model, method, **fields)


@pytest.mark.parametrize("method", METHODS)
def test_identity_at_init(method, tiny_ids):
    cls = rankwise.ADAPTERS.get(method)
    if not cls.identity_at_init:
        pytest.skip(f"{method}'s paper does not start from the base model")
    base = _logits(make_tiny_llama(), tiny_ids)
    torch.testing.assert_close(_logits(_adapted(method), tiny_ids), base, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_merged_equals_unmerged_and_unmerge_is_exact(method, tiny_ids):
    model = _adapted(method)
    _perturb(model)
    unmerged = _logits(model, tiny_ids)
    if not rankwise.ADAPTERS.get(method).mergeable:
        with pytest.raises(NotMergeable):
            rankwise.merge(model)
        return
    before = {name: layer.weight.detach().clone() for name, layer in adapted_layers(model).items()}
    rankwise.merge(model)
    torch.testing.assert_close(_logits(model, tiny_ids), unmerged, atol=1e-5, rtol=0)
    rankwise.unmerge(model)
    for name, layer in adapted_layers(model).items():
        assert torch.equal(layer.weight, before[name]), name
    torch.testing.assert_close(_logits(model, tiny_ids), unmerged, atol=0, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_save_load_round_trip_is_exact(method, tiny_ids, tmp_path):
    from rankwise.io import load_adapter, save_adapter

    model = _adapted(method)
    _perturb(model)
    expected = _logits(model, tiny_ids)
    save_adapter(model, tmp_path / "adapter")
    fresh = load_adapter(make_tiny_llama(), tmp_path / "adapter")
    torch.testing.assert_close(_logits(fresh, tiny_ids), expected, atol=0, rtol=0)
    saved = {k: v for k, v in model.state_dict().items() if ".adapters." in k}
    loaded = {k: v for k, v in fresh.state_dict().items() if ".adapters." in k}
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)


@pytest.mark.parametrize("method", METHODS)
def test_only_adapter_tensors_get_gradients(method, tiny_ids):
    model = _adapted(method)
    _perturb(model)
    model.train()
    model(tiny_ids, labels=tiny_ids).loss.backward()
    for name, param in model.named_parameters():
        if ".adapters." in name and param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, f"{name} gets no gradient"
        else:
            assert param.grad is None, f"{name} is not the adapter's but got a gradient"
    counts = rankwise.trainable_parameters(model)
    assert 0 < counts["trainable"] < counts["total"]


@pytest.mark.parametrize("method", METHODS)
def test_unload_returns_the_original_modules(method, tiny_ids):
    model = make_tiny_llama()
    base = _logits(model, tiny_ids)
    originals = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    weights = {name: m.weight.detach().clone() for name, m in originals.items()}
    rankwise.adapt(model, method, rank=4)
    _perturb(model)
    rankwise.unload(model)
    for name, module in originals.items():
        assert model.get_submodule(name) is module
        torch.testing.assert_close(module.weight, weights[name], atol=1e-5, rtol=0)
    torch.testing.assert_close(_logits(model, tiny_ids), base, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_disable_gives_the_base_model(method, tiny_ids):
    base = _logits(make_tiny_llama(), tiny_ids)
    model = _adapted(method)
    _perturb(model)
    with rankwise.disabled(model):
        torch.testing.assert_close(_logits(model, tiny_ids), base, atol=1e-5, rtol=0)
    assert not torch.allclose(_logits(model, tiny_ids), base, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_bad_configs_are_rejected(method):
    cls = rankwise.ADAPTERS.get(method)
    for bad in ({"rank": 0}, {"rank": -2}, {"alpha": -1.0}, {"alpha": float("nan")}, {"dropout": 1.5}):
        with pytest.raises(ConfigError):
            cls.config_class(**bad)
    with pytest.raises(ConfigError, match=r"layers\.0.*rank 1000"):
        rankwise.adapt(make_tiny_llama(), method, rank=1000)
    with pytest.raises(TargetError, match="q_proj"):
        rankwise.adapt(make_tiny_llama(), method, rank=4, targets=["q_projj"])


@pytest.mark.parametrize("method", METHODS)
def test_two_named_adapters_switch(method, tiny_ids):
    model = _adapted(method, name="first")
    _perturb(model, seed=1)
    first = _logits(model, tiny_ids)
    rankwise.adapt(model, method, name="second", rank=4)
    _perturb(model, seed=2)
    second = _logits(model, tiny_ids)
    assert not torch.allclose(first, second, atol=1e-4)
    rankwise.set_active(model, "first")
    torch.testing.assert_close(_logits(model, tiny_ids), first, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="already has an adapter"):
        rankwise.adapt(model, method, name="first", rank=4)


@pytest.mark.parametrize("method", METHODS)
def test_adapters_follow_the_models_mode_and_share_one_wrapper(method):
    model = make_tiny_llama()  # in eval mode
    rankwise.adapt(model, method, name="first", rank=4)
    rankwise.adapt(model, method, name="second", rank=4)
    for layer in adapted_layers(model).values():
        assert not layer.training and not any(a.training for a in layer.adapters.values())
        assert set(layer.adapters) == {"first", "second"}
        assert not isinstance(layer.base, type(layer))
