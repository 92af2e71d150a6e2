"""The probe's measurements on tiny-llama: PEFT's twin matches rankwise at init and after one step, merged
matches unmerged, and the profiler-based peak counts what a step allocates."""

import pytest
import torch

from rankwise.train.probe import peak_allocated_mb, probe

FIELDS = {"rank": 4, "alpha": 8, "targets": "all-linear"}


def test_peak_counts_the_largest_simultaneous_allocation():
    def step():
        a = torch.ones(256, 1024)  # 1 MiB
        b = torch.ones(512, 1024)  # 2 MiB, held with a: 3 MiB at once
        del a, b
        torch.ones(256, 1024)  # 1 MiB after both were freed

    assert peak_allocated_mb(step) == pytest.approx(3.0, abs=0.05)
    kept = []
    peak_allocated_mb(lambda: kept.append(torch.ones(1024, 1024)))  # 4 MiB left alive by earlier profiling
    assert peak_allocated_mb(step) == pytest.approx(3.0, abs=0.05)  # not counted in the next block's peak


@pytest.mark.parametrize("method, extra", [
    ("lora", {}), ("dora", {}), ("pissa", {}),
    ("randlora", {"peft_scaling": True}),  # PEFT's own s = alpha / rank
    ("randlora", {}),  # the authors' s = alpha / rank / √n, set into PEFT's layers
])
def test_peft_twin_agrees_at_init_and_after_one_step(method, extra):
    result = probe("tiny-llama", method, {**FIELDS, **extra}, rounds=1, batch=2, seq=16)
    assert result["peft_init_max_abs_diff"] <= 1e-5
    assert result["peft_one_step_max_abs_diff"] <= 1e-5
    assert result["merged_max_abs_diff"] <= 1e-4
    assert result["peak_mem_mb"] > 0 and result["peft_peak_mem_mb"] > 0
    assert result["peft_step_ratio"] > 0 and result["peft_mem_ratio"] > 0


def test_one_step_moves_the_model_so_the_parity_is_not_trivial(monkeypatch):
    import rankwise.train.probe as module

    seen = []
    real = module._logits
    monkeypatch.setattr(module, "_logits", lambda model, ids: seen.append(real(model, ids)) or seen[-1])
    probe("tiny-llama", "lora", FIELDS, rounds=1, batch=2, seq=16)
    at_init, after_step = seen[0], seen[2]  # rankwise's logits before and after the first step
    assert (at_init - after_step).abs().max() > 1e-4


def test_a_method_without_peft_twin_or_merge_reports_none(tmp_path):
    result = probe("tiny-llama", "adaptertune", {}, tmp_path, rounds=1, batch=2, seq=16)
    assert result["merged_max_abs_diff"] is None and "peft_step_ratio" not in result
    assert (tmp_path / "adaptertune.json").is_file()
    assert probe("tiny-llama", "adaptertune", {}, tmp_path) == result  # cached: not measured again
