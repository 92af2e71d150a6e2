"""One contract suite over every registered adapter method; a new method must pass it unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import adapted_layers
from rankwise.errors import ConfigError, NotMergeable, TargetError

from ..conftest import make_tiny_llama

METHODS = rankwise.ADAPTERS.names()


def _has(method: str, field: str) -> bool:
    return field in rankwise.ADAPTERS.get(method).config_class.field_names()


def _small(method: str, **fields) -> dict:
    """A small rank for methods that have one (the tiny model's layers are 16 to 64 wide)."""
    if _has(method, "rank"):
        fields.setdefault("rank", 4)
    return fields


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
    return rankwise.adapt(make_tiny_llama(seed), method, **_small(method, **fields))


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
    rankwise.adapt(model, method, **_small(method))
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
    config_class = rankwise.ADAPTERS.get(method).config_class
    bad_configs = config_class.bad_configs()  # each class along the hierarchy declares its own
    assert bad_configs, f"{method} declares no bad configs"
    for bad in bad_configs:
        with pytest.raises(ConfigError):
            config_class(**bad)
    if _has(method, "rank"):
        with pytest.raises(ConfigError, match=r"layers\.0.*rank 1000"):
            rankwise.adapt(make_tiny_llama(), method, rank=1000)
    for unused in ("rank", "alpha", "dropout"):  # a field the method does not have is named, not ignored
        if not _has(method, unused):
            with pytest.raises(ConfigError, match=f"does not use {unused}"):
                rankwise.adapt(make_tiny_llama(), method, **{unused: 1})
    with pytest.raises(TargetError, match="q_proj"):
        rankwise.adapt(make_tiny_llama(), method, **_small(method, targets=["q_projj"]))


@pytest.mark.parametrize("method", METHODS)
def test_two_named_adapters_switch(method, tiny_ids):
    model = _adapted(method, name="first")
    _perturb(model, seed=1)
    first = _logits(model, tiny_ids)
    rankwise.adapt(model, method, name="second", **_small(method))
    _perturb(model, seed=2)
    second = _logits(model, tiny_ids)
    assert not torch.allclose(first, second, atol=1e-4)
    rankwise.set_active(model, "first")
    torch.testing.assert_close(_logits(model, tiny_ids), first, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="already has an adapter"):
        rankwise.adapt(model, method, name="first", **_small(method))


@pytest.mark.parametrize("method", METHODS)
def test_adapters_follow_the_models_mode_and_share_one_wrapper(method):
    model = make_tiny_llama()  # in eval mode
    rankwise.adapt(model, method, name="first", **_small(method))
    rankwise.adapt(model, method, name="second", **_small(method))
    for layer in adapted_layers(model).values():
        assert not layer.training and not any(a.training for a in layer.adapters.values())
        assert set(layer.adapters) == {"first", "second"}
        assert not isinstance(layer.base, type(layer))


@pytest.mark.parametrize("method", METHODS)
def test_registry_key_equals_file_name(method):
    cls = rankwise.ADAPTERS.get(method)
    assert cls.__module__ == f"rankwise.adapters.{method.replace('-', '_')}"
    assert cls.config_class.__module__.startswith("rankwise.adapters.")
    assert cls.paper and cls.url and cls.trains and cls.__module__ and cls.name == method
    assert "Update rule" in (__import__(cls.__module__, fromlist=["_"]).__doc__ or ""), (
        "docstring has no formula"
    )


@pytest.mark.parametrize("below", ["lora", "dora", "same"])
@pytest.mark.parametrize("method", METHODS)
def test_two_active_adapters_merge_exactly(method, below, tiny_ids):
    """Stacked adapters: the unmerged output equals merging each one in order (W_k = merged_k(W_{k-1}))."""
    below = method if below == "same" else below
    model = _adapted(below, name="below")
    _perturb(model, seed=1)
    rankwise.adapt(model, method, name="above", **_small(method))
    _perturb(model, seed=2)
    rankwise.set_active(model, ["below", "above"])
    layers = adapted_layers(model)
    if not any(len(layer.active) == 2 for layer in layers.values()):
        pytest.skip(f"{method} and {below} adapt different modules; nothing is stacked")
    stacked = _logits(model, tiny_ids)
    with rankwise.disabled(model):
        base = _logits(model, tiny_ids)
    assert not torch.allclose(stacked, base, atol=1e-4)
    if not (rankwise.ADAPTERS.get(method).mergeable and rankwise.ADAPTERS.get(below).mergeable):
        with pytest.raises(NotMergeable):
            rankwise.merge(model)
        return
    before = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    rankwise.merge(model)
    torch.testing.assert_close(_logits(model, tiny_ids), stacked, atol=1e-5, rtol=0)
    rankwise.unmerge(model)
    assert all(torch.equal(layer.weight, before[name]) for name, layer in layers.items())
    rankwise.unload(model, "below", merge=True)  # folds "below" in for good; "above" stays on top
    torch.testing.assert_close(_logits(model, tiny_ids), stacked, atol=1e-5, rtol=0)
    assert rankwise.adapters.adapter_names(model) == ["above"]


@pytest.mark.parametrize("method", METHODS)
def test_hooks_fire_and_a_resumed_run_is_bitwise_equal(method, tmp_path, one_thread):
    """Four steps with the method's schedules shortened (Adapter.fast_hooks) so that every hook that
    changes state fires before and after the checkpoint at step 2; resuming from it must reproduce
    the uninterrupted run bit for bit, hook state included."""
    from rankwise.train import TrainConfig, resolve_resume, train

    from ..train.train_helpers import adapter_tensors, synthetic_features

    features = synthetic_features(n=8)
    cls = rankwise.ADAPTERS.get(method)

    def run(output_dir, resume=False):
        config = TrainConfig(model="tiny-llama", task="iso-dates", method=method, max_steps=4, save_every=2,
                             per_device_train_batch_size=2, learning_rate=1e-2, init_batches=1,
                             output_dir=str(output_dir), progress=False, method_config=dict(cls.fast_hooks),
                             rank=4 if _has(method, "rank") else None)
        torch.manual_seed(0)
        model = rankwise.adapt(make_tiny_llama(), method, config=config.adapter_config())
        before = adapter_tensors(model)
        train(model, features, config, pad_token_id=0,
              resume_from=resolve_resume("latest", output_dir) if resume else None)
        return before, adapter_tensors(model)

    before, reference = run(tmp_path / "ref")
    step_2 = Path("checkpoints") / "step-000002"
    shutil.copytree(tmp_path / "ref" / step_2, tmp_path / "cut" / step_2)
    _, resumed = run(tmp_path / "cut", resume=True)
    assert reference.keys() == resumed.keys()
    assert [k for k in reference if not torch.equal(reference[k], resumed[k])] == []
    if before.keys() == reference.keys():  # finalize may swap the adapter for another kind (SoRA -> LoRA)
        assert any(not torch.equal(before[k], reference[k]) for k in before)
