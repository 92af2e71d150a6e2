"""Mixed-adapter batches: each row gets exactly what its adapter alone gives it, in inference and training."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import rankwise
from rankwise.adapters import adapted_layers, layers_of, mixed_batch, set_active
from rankwise.errors import ConfigError

from ..conftest import TINY_VOCAB, make_tiny_llama

METHODS = rankwise.ADAPTERS.names()
NAMES = ["a", "b", "__base__", "a", None, "b"]  # unsorted on purpose: rows are gathered and put back


def _small(method: str) -> dict:
    fields = rankwise.ADAPTERS.get(method).config_class.field_names()
    return {"rank": 4} if "rank" in fields else {}


def _perturb(model, name: str, seed: int) -> None:
    """Move adapter `name` off its init, so zero-init methods are really tested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in layers_of(model, name).values():
            for param in adapter.parameters():
                param.add_(0.05 * torch.randn(param.shape, generator=gen))


def _two_adapters(methods: tuple[str, str], **fields):
    model = make_tiny_llama()
    for seed, (name, method) in enumerate(zip("ab", methods), 1):
        rankwise.adapt(model, method, name=name, **_small(method), **fields)
        _perturb(model, name, seed)
    return model


def _alone(model, ids: torch.Tensor, names: list) -> torch.Tensor:
    """Each row through the model with only its own adapter active (or none)."""
    rows = []
    with torch.no_grad():
        for row, name in zip(ids, names):
            if name in (None, "__base__"):
                with rankwise.disabled(model):
                    rows.append(model(row[None]).logits)
            else:
                set_active(model, name)
                rows.append(model(row[None]).logits)
    return torch.cat(rows)


def _ids(rows: int = len(NAMES), seed: int = 0) -> torch.Tensor:
    return torch.randint(0, TINY_VOCAB, (rows, 8), generator=torch.Generator().manual_seed(seed))


def _routings(model) -> list:
    return [layer.routing for layer in adapted_layers(model).values()]


@pytest.mark.parametrize("method", METHODS)
def test_each_row_gets_what_its_adapter_alone_gives(method, one_thread):
    model, ids = _two_adapters((method, method)), _ids()
    with torch.no_grad(), mixed_batch(model, NAMES):
        mixed = model(ids).logits
    torch.testing.assert_close(mixed, _alone(model, ids, NAMES), atol=1e-5, rtol=0)
    assert not torch.allclose(mixed[0], _alone(model, ids[:1], ["b"])[0], atol=1e-3)  # adapters differ


@pytest.mark.parametrize("methods", [("lora", "dora"), ("adaptertune", "lora"), ("lorra", "tlora")])
def test_adapters_of_different_methods_mix(methods, one_thread):
    """Linear-level and block-level adapters in one model: the block's routing reaches its inner layers."""
    model, ids = _two_adapters(methods), _ids()
    with torch.no_grad(), mixed_batch(model, NAMES):
        mixed = model(ids).logits
    torch.testing.assert_close(mixed, _alone(model, ids, NAMES), atol=1e-5, rtol=0)


def test_grouped_rows_and_modules_to_save_copies(one_thread):
    model = _two_adapters(("lora", "lora"), modules_to_save=["embed_tokens"])
    names, ids = ["a", "a", "a", "b", "b"], _ids(5)  # grouped: the slicing path
    with torch.no_grad():
        mixed = model(ids, adapter_names=names).logits
    torch.testing.assert_close(mixed, _alone(model, ids, names), atol=1e-5, rtol=0)


def test_base_rows_equal_the_base_model(one_thread):
    model, ids = _two_adapters(("lora", "dora")), _ids(3)
    with torch.no_grad():
        base = make_tiny_llama()(ids).logits
        mixed = model(ids, adapter_names=["__base__", None, "__base__"]).logits
    torch.testing.assert_close(mixed, base, atol=1e-6, rtol=0)


def test_adapter_names_keyword_routes_one_call_and_leaves_nothing_behind(one_thread):
    model, ids = _two_adapters(("lora", "lora")), _ids()
    set_active(model, "b")
    with torch.no_grad():
        mixed = model(ids, adapter_names=NAMES).logits
        assert _routings(model) == [None] * len(_routings(model))
        torch.testing.assert_close(mixed, _alone(model, ids, NAMES), atol=1e-5, rtol=0)
        set_active(model, "b")
        torch.testing.assert_close(model(ids).logits, _alone(model, ids, ["b"] * len(NAMES)), atol=1e-5,
                                   rtol=0)
        # A call inside a mixed_batch block routes itself, then the block's routing is back.
        with mixed_batch(model, ["a"] * 6):
            outer = _routings(model)
            model(ids, adapter_names=NAMES)
            assert _routings(model) == outer
        bad = ids.clone()
        bad[0, 0] = TINY_VOCAB + 5  # the embedding raises inside forward, after the routing was set
        with pytest.raises(IndexError):
            model(bad, adapter_names=NAMES)
        assert set(_routings(model)) == {None}


def test_generate_inside_a_mixed_batch_equals_generating_alone(one_thread):
    model, ids = _two_adapters(("lora", "dora")), _ids(3)
    names = ["b", "__base__", "a"]
    mask = torch.ones_like(ids)
    with mixed_batch(model, names):
        mixed = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    for row, name in enumerate(names):
        if name == "__base__":
            rankwise.disable(model)
        else:
            rankwise.enable(model)
            set_active(model, name)
        alone = model.generate(ids[row:row + 1], attention_mask=mask[row:row + 1], max_new_tokens=4,
                               do_sample=False, pad_token_id=0)
        assert torch.equal(mixed[row:row + 1], alone)


def test_misuse_is_refused_with_what_to_do():
    model, ids = _two_adapters(("lora", "lora")), _ids(4)
    with pytest.raises(ConfigError, match="6 names, the batch 4 rows"):
        model(ids, adapter_names=NAMES)
    with pytest.raises(ConfigError, match="names 6 rows, but a Linear got 4"), mixed_batch(model, NAMES):
        model(ids)
    with pytest.raises(ConfigError, match=r"unknown adapter\(s\) \['c'\].*\['a', 'b'\]"):
        mixed_batch(model, ["a", "c", "a", "b"]).__enter__()
    with pytest.raises(ConfigError, match="one adapter name"):
        model(ids, adapter_names="a")
    set_active(model, "a")
    rankwise.merge(model)
    with pytest.raises(ConfigError, match=r"\['a'\] are merged.*unmerge first"):
        model(ids, adapter_names=["a", "b", "a", "b"])
    assert set(_routings(model)) == {None}


def test_gradient_checkpointing_needs_backward_inside_the_block(one_thread):
    """The recomputing backward runs after model(..., adapter_names=...) returns: refused, the block works."""
    model, ids = _two_adapters(("lora", "lora")), _ids(2)
    set_active(model, ["a", "b"])
    model.train()
    plain = copy.deepcopy(model)
    model.activation_checkpointing_enable({"use_reentrant": False})
    with pytest.raises(ConfigError, match="gradient checkpointing"):
        model(ids, labels=ids, adapter_names=["a", "b"])
    for net in (model, plain):
        with mixed_batch(net, ["b", "a"]):
            net(ids, labels=ids).loss.backward()
    for (name, param), twin in zip(model.named_parameters(), plain.parameters()):
        if param.requires_grad:
            torch.testing.assert_close(param.grad, twin.grad, atol=1e-6, rtol=0, msg=name)


def test_a_batch_shaped_saliency_mask_is_refused():
    from rankwise.adapters.vglora import saliency

    model, ids = _two_adapters(("vglora", "vglora")), _ids(2)
    with saliency(model, torch.ones(2, 8)), pytest.raises(ConfigError, match="saliency mask"):
        model(ids, adapter_names=["a", "b"])


def _row_losses(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Next-token loss of each row (mean over its tokens)."""
    per_token = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    return per_token.mean(1)


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_training_two_adapters_together_equals_training_each_alone(method, one_thread):
    """One mixed batch, loss = Σ row losses / rows: each adapter gets the gradient of its own rows only, so
    plain SGD ends at the same weights as training each adapter alone on its rows with the same weighting."""
    names, ids, steps = ["a", "b", "b", "a", "b", "a"], _ids(6, seed=3), 3
    together = _two_adapters((method, method))
    apart = copy.deepcopy(together)

    set_active(together, ["a", "b"])  # both train; the routing keeps them from stacking
    optimizer = torch.optim.SGD([p for p in together.parameters() if p.requires_grad], lr=0.5)
    for _ in range(steps):
        with mixed_batch(together, names):
            loss = _row_losses(together(ids).logits, ids).sum() / len(names)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for name in "ab":
        rows = torch.tensor([i for i, n in enumerate(names) if n == name])
        set_active(apart, name)
        optimizer = torch.optim.SGD([p for p in apart.parameters() if p.requires_grad], lr=0.5)
        for _ in range(steps):
            loss = _row_losses(apart(ids[rows]).logits, ids[rows]).sum() / len(names)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    for name in "ab":
        joint, alone = layers_of(together, name), layers_of(apart, name)
        for path in joint:
            for (key, trained), expected in zip(joint[path].state_dict().items(),
                                                alone[path].state_dict().values()):
                torch.testing.assert_close(trained, expected, atol=1e-5, rtol=0, msg=f"{path}.{key}")
    start = layers_of(_two_adapters((method, method)), "a")
    assert any(not torch.allclose(a.lora_B, b.lora_B) for a, b in zip(start.values(),
                                                                       layers_of(together, "a").values()))
