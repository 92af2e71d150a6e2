"""CoDyRA: less forgetting than LoRA across two conflicting tasks; end_task keeps the function exact."""

import warnings

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import StepContext, hooks
from rankwise.adapters.lora import Lora

STEPS = 150




def _two_tasks(seed=0):
    """A tiny MLP and two regression tasks on disjoint input halves with unrelated target shifts:
    one set of low-rank factors must serve both, so training the second overwrites the first."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 16))
    X1, X2 = torch.randn(128, 16), torch.randn(128, 16)
    X1[:, 8:], X2[:, :8] = 0, 0
    with torch.no_grad():
        Y1 = model(X1) + X1 @ (torch.randn(16, 2) @ torch.randn(2, 16) / 4).T
        Y2 = model(X2) + X2 @ (torch.randn(16, 2) @ torch.randn(2, 16) / 4).T
    return model, [(X1, Y1), (X2, Y2)]


def _train_in_sequence(method, **fields):
    model, tasks = _two_tasks()
    rankwise.adapt(model, method, rank=4, **fields)

    def loss(X, Y):
        return ((model(X) - Y) ** 2).mean()

    second_start = second_end = None
    for index, (X, Y) in enumerate(tasks):
        # A fresh optimizer per task, as the continual loop must do (A, B, g are re-initialised).
        params = [p for group in hooks.param_groups(model, 1e-2) for p in group["params"]]
        optimizer = torch.optim.Adam(params, lr=1e-2)
        if index == 1:
            second_start = loss(X, Y).item()
        for step in range(STEPS):
            optimizer.zero_grad()
            loss(X, Y).backward()
            optimizer.step()
            hooks.after_step(model, StepContext(step + 1, optimizer, total_steps=STEPS))  # 1-based
        if method == "codyra":
            hooks.end_task(model)
    with torch.no_grad():
        second_end = loss(*tasks[1]).item()
        return loss(*tasks[0]).item(), second_start, second_end


def test_codyra_forgets_the_first_task_less_than_lora(one_thread):
    codyra_first, start, end = _train_in_sequence("codyra", task_steps=STEPS)
    lora_first, _, lora_end = _train_in_sequence("lora", alpha=4.0)  # same rank, s = 1 as CoDyRA
    assert end < 0.05 * start and lora_end < 0.05 * start  # both really learn the second task
    assert codyra_first < 0.5 * lora_first  # measured ≈ 0.35 vs 2.3: a wide margin


def test_end_task_freezes_the_update_exactly_and_resets():
    torch.manual_seed(0)
    model = rankwise.adapt(nn.Sequential(nn.Linear(12, 10)), "codyra", rank=4)
    layer = model[0].adapters["default"]
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.gate[1] = 0.0  # a pruned component: dropped, not stored
    x = torch.randn(5, 12)
    before = model(x).detach()
    old_A = layer.lora_A.detach().clone()
    layer.task_step.fill_(7)
    hooks.end_task(model)
    assert int(layer.past_rank) == 3 and layer._past_rank == 3
    assert torch.count_nonzero(layer.lora_B) == 0 and not torch.equal(layer.lora_A, old_A)
    assert int(layer.task_step) == 0
    torch.testing.assert_close(model(x), before, atol=1e-6, rtol=0)
    assert all(not b.requires_grad for b in (layer.past_A, layer.past_B))


def test_past_tasks_survive_save_and_load_and_finalize():
    torch.manual_seed(0)
    model = rankwise.adapt(nn.Sequential(nn.Linear(12, 10)), "codyra", rank=3)
    layer = model[0].adapters["default"]
    for _ in range(2):
        with torch.no_grad():
            layer.lora_B.normal_()
        hooks.end_task(model)
    with torch.no_grad():
        layer.lora_B.normal_()  # the current task, not yet ended
    x = torch.randn(4, 12)
    expected = model(x).detach()
    state = {f"0.{k}": v for k, v in layer.state_dict().items()}
    torch.manual_seed(1)
    fresh = nn.Sequential(nn.Linear(12, 10))
    fresh[0].load_state_dict(model[0].base.state_dict())
    rankwise.adapt(fresh, "codyra", config=layer.config, state=state)
    torch.testing.assert_close(fresh(x), expected, atol=1e-6, rtol=0)
    assert torch.allclose(fresh[0].adapters["default"].delta_weight(), layer.delta_weight(), atol=1e-6)
    hooks.finalize(model)
    assert type(model[0].adapters["default"]) is Lora and model[0].adapters["default"].config.rank == 9
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)


def test_full_capacity_is_recompressed_exactly():
    torch.manual_seed(0)
    model = rankwise.adapt(nn.Sequential(nn.Linear(4, 3)), "codyra", rank=2)  # capacity min(16, 3) = 3
    layer = model[0].adapters["default"]
    x = torch.randn(6, 4)
    for _ in range(3):
        with torch.no_grad():
            layer.lora_B.normal_()
        expected = model(x).detach()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # lossless: no warning
            hooks.end_task(model)
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)
    assert int(layer.past_rank) == 3


def test_threshold_schedule_follows_the_code():
    layer = rankwise.adapt(nn.Sequential(nn.Linear(8, 8)), "codyra", rank=2, task_steps=100,
                           dense_fraction=0.5, max_threshold=0.01, threshold_values=5)[0].adapters["default"]
    # dense for 50 steps; then κ = linspace(0, .01, 5)[1 + (t - 50) // 10]
    values = [layer.threshold_at(t) for t in (0, 50, 51, 60, 75, 99)]
    assert values == pytest.approx([0, 0, 0.0025, 0.005, 0.0075, 0.01])
    # Without task_steps, T is the loop's steps per task, which the StepContext carries.
    unset = rankwise.adapt(nn.Sequential(nn.Linear(8, 8)), "codyra", rank=2, dense_fraction=0.5,
                           max_threshold=0.01, threshold_values=5)[0].adapters["default"]
    assert [unset.threshold_at(t, 100) for t in (0, 50, 51, 60, 75, 99)] == pytest.approx(values)
    with pytest.raises(rankwise.errors.ConfigError, match="steps per task"):
        unset.threshold_at(51)
