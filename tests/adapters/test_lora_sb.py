"""LoRA-SB: init from the approximate first full fine-tuning update, then train only R."""

import copy

import pytest
import torch

import rankwise
from rankwise.adapters import hooks, layers_of
from rankwise.errors import ConfigError
from rankwise.linalg import truncated_svd

from ..conftest import TINY_VOCAB, make_tiny_llama

LR, RANK = 1e-3, 4


def _batches(count=4, seed=3):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(0, TINY_VOCAB, (4, 16), generator=gen)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    return out


def _adam_step(model, params, batches):
    optimizer = torch.optim.Adam(params, lr=LR)
    model.train()
    (sum(model(**b).loss for b in batches) / len(batches)).backward()
    optimizer.step()


def _targets(model):
    return [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and n != "lm_head"]


def _cosine(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_first_step_is_closer_to_full_finetuning_than_loras():
    batches, base = _batches(), make_tiny_llama()
    names = _targets(base)

    full = copy.deepcopy(base)  # full fine-tuning of the same weights, one Adam step
    weights = [full.get_submodule(n).weight for n in names]
    before = [w.detach().clone() for w in weights]
    for w in weights:
        w.requires_grad_(True)
    _adam_step(full, weights, batches)
    full_step = {n: w.detach() - b for n, w, b in zip(names, weights, before)}

    lora = rankwise.adapt(copy.deepcopy(base), "lora", rank=RANK)
    _adam_step(lora, [p for p in lora.parameters() if p.requires_grad], batches)
    lora_step = {n: a.delta_weight().detach() for n, a in layers_of(lora, "default").items()}

    sb = rankwise.adapt(copy.deepcopy(base), "lora-sb", rank=RANK, init_lr=LR)
    hooks.init_from_data(sb, batches)
    start = {n: a.delta_weight().detach().clone() for n, a in layers_of(sb, "default").items()}
    _adam_step(sb, [p for p in sb.parameters() if p.requires_grad], batches)
    sb_step = {n: a.delta_weight().detach() - start[n] for n, a in layers_of(sb, "default").items()}

    def mean(values):
        return sum(values) / len(values)

    cos_sb = [_cosine(sb_step[n], full_step[n]) for n in names]
    cos_lora = [_cosine(lora_step[n], full_step[n]) for n in names]
    assert mean(cos_sb) > mean(cos_lora)
    assert sum(s > l for s, l in zip(cos_sb, cos_lora)) >= 0.75 * len(names)
    def distance(steps):
        return mean([float((steps[n] - full_step[n]).norm() / full_step[n].norm()) for n in names])

    assert distance(sb_step) < distance(lora_step)
    # The init itself is the best rank-r approximation of that first step.
    for n in names:
        best = truncated_svd(full_step[n], RANK).to_dense()
        assert _cosine(start[n], full_step[n]) == pytest.approx(_cosine(best, full_step[n]), abs=1e-3)


def test_init_is_the_truncated_svd_of_minus_lr_sign_gradient():
    batches, model = _batches(2), make_tiny_llama()
    names = _targets(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for n in names:
        model.get_submodule(n).weight.requires_grad_(True)
    sum(model(**b).loss for b in batches).backward()
    expected = {n: -LR * torch.sign(model.get_submodule(n).weight.grad) for n in names}

    sb = rankwise.adapt(make_tiny_llama(), "lora-sb", rank=RANK, init_lr=LR)
    hooks.init_from_data(sb, batches)
    for n, adapter in layers_of(sb, "default").items():
        torch.testing.assert_close(adapter.delta_weight(), truncated_svd(expected[n], RANK).to_dense(),
                                   atol=1e-6, rtol=1e-4)
        assert adapter.lora_R.numel() == RANK**2 and adapter.lora_R.requires_grad
        assert not adapter.lora_A.requires_grad and not adapter.lora_B.requires_grad


def test_before_init_it_is_an_identity_and_init_leaves_the_model_as_it_was(tiny_ids):
    base = make_tiny_llama()
    model = rankwise.adapt(make_tiny_llama(), "lora-sb", rank=RANK)
    with torch.no_grad():
        torch.testing.assert_close(model(tiny_ids).logits, base(tiny_ids).logits, atol=1e-6, rtol=0)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.eval()
    hooks.init_from_data(model, _batches(2))
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    weights = {n: model.get_submodule(n).weight for n in _targets(base)}
    assert all(torch.equal(w, base.get_submodule(n).weight) for n, w in weights.items())


def test_start_from_base_subtracts_the_init(tiny_ids):
    base = make_tiny_llama()
    model = rankwise.adapt(make_tiny_llama(), "lora-sb", rank=RANK, init_lr=LR, start_from_base=True)
    hooks.init_from_data(model, _batches(2))
    adapter = next(iter(layers_of(model, "default").values()))
    assert adapter.lora_R.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(model(tiny_ids).logits, base(tiny_ids).logits, atol=1e-6, rtol=0)


def test_no_batches_is_a_clear_error():
    model = rankwise.adapt(make_tiny_llama(), "lora-sb", rank=RANK)
    with pytest.raises(ConfigError, match="init_batches"):
        hooks.init_from_data(model, [])
    with pytest.raises(ConfigError, match="first_step"):
        rankwise.adapt(make_tiny_llama(), "lora-sb", rank=RANK, first_step="adam")
