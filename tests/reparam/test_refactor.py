"""Weight refactorization keeps every layer's W and the model's output and balances the factors
(Bᵀ B = A Aᵀ = Σ of B A); momentum reset makes AdamW forget exactly the factors' state; the schedule fires
on its periods only; training with it still lowers the loss."""

import pytest
import torch

import rankwise
from rankwise.adapters import StepContext
from rankwise.errors import ConfigError
from rankwise.reparam import FactorizedLinear, RefactorSchedule, refactorize

from ..conftest import TINY_VOCAB, make_tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")


def _lowrank_llama(**fields):
    return rankwise.reparametrize(make_tiny_llama(), "lowrank", rank=4, **fields)


def _factorized(model):
    return {path: m for path, m in model.named_modules() if isinstance(m, FactorizedLinear)}


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _loss(model, ids):
    return model(ids, labels=ids).loss


def test_refactorization_keeps_every_weight_and_the_logits_and_balances_the_factors(tiny_ids):
    model = _lowrank_llama()
    layers = _factorized(model)
    assert len(layers) == 14  # 7 linear layers in each of the 2 blocks
    with torch.no_grad():
        for module in layers.values():  # unbalance them further: B A is unchanged
            module.B.mul_(8.0)
            module.A.div_(8.0)
    dense = {path: m.dense_weight().detach().clone() for path, m in layers.items()}
    logits = _logits(model, tiny_ids)

    assert RefactorSchedule(model, refactor_every=1, reset_every=None).after_step(1) == ("refactorize",)

    torch.testing.assert_close(_logits(model, tiny_ids), logits, atol=1e-5, rtol=1e-5)
    for path, module in layers.items():
        B, A = module.B.detach().double(), module.A.detach().double()
        torch.testing.assert_close(module.dense_weight().detach(), dense[path], atol=1e-5, rtol=1e-5)
        sigma = torch.linalg.svdvals(B @ A)[: module.rank]  # computed densely, in float64
        torch.testing.assert_close(B.T @ B, A @ A.T, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(B.T @ B, torch.diag(sigma), atol=1e-5, rtol=1e-5)


def test_refactorization_leaves_the_sparse_part_and_a_zero_product_alone(tiny_ids):
    model = rankwise.reparametrize(make_tiny_llama(), "sltrain", rank=4)
    layer = model.model.layers[0].mlp.down_proj
    assert torch.count_nonzero(layer.B) == 0  # SLTrain's init: B = 0, so B A = 0
    A = layer.A.detach().clone()
    refactorize(layer)
    assert torch.equal(layer.A, A)  # balancing B A = 0 would zero A too and freeze the low-rank part
    with torch.no_grad():
        layer.B.copy_(torch.randn(layer.B.shape, generator=torch.Generator().manual_seed(3)))
    values, dense = layer.values.detach().clone(), layer.dense_weight().detach().clone()
    refactorize(layer)
    assert torch.equal(layer.values, values)
    torch.testing.assert_close(layer.dense_weight().detach(), dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.B.T @ layer.B, layer.A @ layer.A.T, atol=1e-5, rtol=1e-5)


def _two_adamw_steps(model, ids, optimizer):
    for _ in range(2):
        _loss(model, ids).backward()
        optimizer.step()
        optimizer.zero_grad()


def test_momentum_reset_forgets_exactly_the_factors_state(tiny_ids):
    model = _lowrank_llama()
    lr, decay = 1e-2, 0.1
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
    _two_adamw_steps(model, tiny_ids, optimizer)
    factors = {id(p) for m in _factorized(model).values() for p in (m.A, m.B)}
    before = {p: {k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()}
    weights = {p: p.detach().clone() for p in model.parameters()}

    schedule = RefactorSchedule(model, refactor_every=None, reset_every=3)
    assert schedule.after_step(StepContext(step=3, optimizer=optimizer)) == ("reset",)

    for param in model.parameters():
        assert torch.equal(param, weights[param])  # a reset changes no weight
        if id(param) in factors:
            assert len(optimizer.state[param]) == 0
        else:
            assert optimizer.state[param].keys() == before[param].keys()
            assert all(torch.equal(optimizer.state[param][k], v) for k, v in before[param].items())
    # The next step of a factor is a first AdamW step: step 1, exp_avg = (1 − β1) g,
    # exp_avg_sq = (1 − β2) g², and with bias correction the update is lr · g / (|g| + ε).
    _loss(model, tiny_ids).backward()
    factor = _factorized(model)["model.layers.0.self_attn.q_proj"].A
    grad, old = factor.grad.clone(), factor.detach().clone()
    optimizer.step()
    state = optimizer.state[factor]
    assert state["step"].item() == 1
    torch.testing.assert_close(state["exp_avg"], 0.1 * grad)
    torch.testing.assert_close(state["exp_avg_sq"], 0.001 * grad * grad)
    torch.testing.assert_close(factor.detach(), old * (1 - lr * decay) - lr * grad / (grad.abs() + 1e-8))


def test_the_schedule_fires_on_its_periods_only(tiny_ids):
    model = _lowrank_llama()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    schedule = RefactorSchedule(model, refactor_every=3, reset_every=2)
    layer = _factorized(model)["model.layers.1.mlp.up_proj"]
    fired = {}
    for step in range(1, 8):
        _loss(model, tiny_ids).backward()
        optimizer.step()
        optimizer.zero_grad()
        A, state = layer.A.detach().clone(), dict(optimizer.state[layer.A])
        fired[step] = schedule.after_step(step, optimizer)
        assert torch.equal(layer.A, A) == ("refactorize" not in fired[step])
        assert (len(optimizer.state[layer.A]) == 0) == ("reset" in fired[step])
        if not fired[step]:
            assert all(torch.equal(optimizer.state[layer.A][k], v) for k, v in state.items())
    assert fired == {1: (), 2: ("reset",), 3: ("refactorize",), 4: ("reset",), 5: (),
                     6: ("refactorize", "reset"), 7: ()}


def test_adamw_with_refactorization_and_reset_still_lowers_the_loss():
    ids = torch.randint(0, TINY_VOCAB, (4, 16), generator=torch.Generator().manual_seed(2))
    model = _lowrank_llama().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    schedule = RefactorSchedule(model, refactor_every=3, reset_every=4)
    first = _loss(model, ids).item()
    for step in range(1, 13):
        _loss(model, ids).backward()
        optimizer.step()
        optimizer.zero_grad()
        schedule.after_step(StepContext(step=step, optimizer=optimizer))
    assert _loss(model, ids).item() < 0.8 * first


def test_bad_settings_are_config_errors():
    model = _lowrank_llama()
    for bad in ({"refactor_every": 0}, {"reset_every": 2.5}, {"refactor_every": True},
                {"refactor_every": None, "reset_every": None}, {"name": "other"}):
        with pytest.raises(ConfigError):
            RefactorSchedule(model, **bad)
    with pytest.raises(ConfigError, match="no optimizer"):
        RefactorSchedule(model, refactor_every=None, reset_every=5).after_step(5)
    with pytest.raises(ConfigError, match="rankwise.reparametrize"):
        RefactorSchedule(make_tiny_llama())
