"""modules_to_save: chosen modules train in full beside an adapter, and everything else still holds."""

import pytest
import torch

import rankwise
from rankwise.adapters import hooks, layers_of
from rankwise.errors import ConfigError, TargetError
from rankwise.io import load_adapter, save_adapter

from ..conftest import make_tiny_llama


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _trained(method="lora", **fields):
    model = rankwise.adapt(make_tiny_llama(), method, rank=4, modules_to_save=["lm_head", "embed_tokens"],
                           **fields)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=gen))
    return model


@pytest.mark.parametrize("method", ["lora", "dora", "sora"])
def test_the_copies_train_save_load_merge_and_unload_exactly(method, tiny_ids, tmp_path):
    base = _logits(make_tiny_llama(), tiny_ids)
    model = _trained(method)
    head = model.lm_head
    assert head.adapters["default"].weight.requires_grad and not head.base.weight.requires_grad
    groups = hooks.param_groups(model, 1e-3)
    assert any(p is head.adapters["default"].weight for g in groups for p in g["params"])
    expected = _logits(model, tiny_ids)
    with rankwise.disabled(model):
        torch.testing.assert_close(_logits(model, tiny_ids), base, atol=1e-6, rtol=0)
    save_adapter(model, tmp_path / "a")
    loaded = load_adapter(make_tiny_llama(), tmp_path / "a")
    assert torch.equal(_logits(loaded, tiny_ids), expected)
    rankwise.merge(model)  # the copies are written into the base weights, the adapter's update too
    torch.testing.assert_close(_logits(model, tiny_ids), expected, atol=1e-5, rtol=0)
    rankwise.unload(model)
    torch.testing.assert_close(_logits(model, tiny_ids), base, atol=1e-6, rtol=0)


def test_training_moves_the_copy_and_only_the_copy(tiny_ids):
    model = rankwise.adapt(make_tiny_llama(), "lora", rank=4, modules_to_save=["lm_head"])
    original = model.lm_head.base.weight.detach().clone()
    optimizer = torch.optim.AdamW(hooks.param_groups(model, 1e-2), lr=1e-2)
    model.train()
    model(tiny_ids, labels=tiny_ids).loss.backward()
    optimizer.step()
    assert not torch.equal(model.lm_head.adapters["default"].weight, original)
    assert torch.equal(model.lm_head.base.weight, original)


def test_misuse_is_named():
    with pytest.raises(ConfigError, match="both adapted and in modules_to_save"):
        rankwise.adapt(make_tiny_llama(), "lora", rank=4, targets=["q_proj"], modules_to_save=["q_proj"])
    with pytest.raises(TargetError, match="matched no module"):
        rankwise.adapt(make_tiny_llama(), "lora", rank=4, modules_to_save=["lm_haed"])
    with pytest.raises(TargetError, match="needs modules with a weight"):
        rankwise.adapt(make_tiny_llama(), "lora", rank=4, modules_to_save=["model.layers.0"])
    with pytest.raises(ConfigError, match="modules_to_save must be a list"):
        rankwise.adapt(make_tiny_llama(), "lora", rank=4, modules_to_save="lm_head")


def test_peft_export_refuses_and_hooks_see_only_the_method(tmp_path):
    model = _trained("sora")
    with pytest.raises(ConfigError, match="modules_to_save"):
        save_adapter(model, tmp_path / "p", format="peft")
    hooks.after_step(model, 1)  # SoRA's proximal step runs on its own layers only
    hooks.finalize(model)
    kinds = {type(a).__name__ for a in layers_of(model, "default").values()}
    assert kinds == {"Lora", "ModuleCopy"}
