import math

import pytest
import torch

from rankwise.train.schedule import build_scheduler, warmup_cosine, warmup_steps_for


def test_warmup_rises_linearly_then_cosine_decays_to_floor():
    values = [warmup_cosine(s, warmup=4, total=20, floor=0.1) for s in range(21)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[4] == pytest.approx(1.0)
    assert values[12] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert values[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values[4:], values[5:]))


def test_no_warmup_starts_at_full_rate():
    assert warmup_cosine(0, warmup=0, total=10) == 1.0
    assert warmup_cosine(10, warmup=0, total=10) == pytest.approx(0.0)


def test_warmup_ratio_rounds_up_and_steps_win():
    assert warmup_steps_for(100, warmup_ratio=0.05) == 5
    assert warmup_steps_for(10, warmup_ratio=0.01) == 1
    assert warmup_steps_for(100, warmup_steps=7) == 7


def test_scheduler_scales_each_group_by_its_own_rate():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}], lr=1.0)
    sched = build_scheduler(opt, warmup=2, total=6)
    seen = []
    for _ in range(6):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx([0.5, 0.05])
    assert seen[1] == pytest.approx([1.0, 0.1])
    assert seen[4][0] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))  # (4 - 2) / (6 - 2): half way
    assert all(lr_b == pytest.approx(lr_a / 10) for lr_a, lr_b in seen)
