"""Speed, memory and exactness of one adapter method, measured in one process on fixed random batches.

    probe("smollm2-135m", "lora", {"rank": 8, "alpha": 16, "targets": "all-linear"})

Variants, all on the same (batch × seq) token batch, timed round-robin (one of each per round, so machine
noise hits all alike; medians over `rounds`):
    frozen step     forward + backward through the activations of the model with no adapter: the floor
    method step     forward + backward + AdamW step of the adapter, with its regularizer and hooks
    PEFT step       the same for PEFT's implementation (lora, rslora, dora, pissa, randlora), from identical
                    weights (randlora: PEFT's bases copied into rankwise's adapter, rankwise's λ, γ and
                    scaling into PEFT's; see rankwise.train.peft_randlora for how the two lay them out)
    base forward    no adapter, no grad;  unmerged / merged forward: the adapter applied / folded in
Peak memory is what a training step allocates above the loaded model (activations, gradients, optimizer
state, temporaries), read from torch.profiler's allocator events of the first step: the same count for
rankwise and PEFT, independent of the process's resident size. Exactness: max |logits| difference of
merged against unmerged, and of PEFT against rankwise at init and after that first step.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

PEFT_TWINS = ("lora", "rslora", "dora", "pissa", "randlora")


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2: the profiler's C++ side (kineto) prints a line at every start and stop.
    Python errors still propagate as exceptions and are reported after the descriptor is restored."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_allocated_mb(fn: Callable[[], Any]) -> float:
    """The most memory (MiB) that tensors allocated inside `fn` held at once, from the profiler's
    allocator events."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = [e["args"] for e in sorted(events, key=lambda e: e.get("ts", 0)) if e.get("name") == "[memory]"]
    if not memory:
        return 0.0
    # The running total counts from the first profiled allocation of the process, so what earlier
    # profiling left alive is in it: measure from the total just before this block's first event.
    before = memory[0]["Total Allocated"] - memory[0]["Bytes"]
    return max(0, max(m["Total Allocated"] for m in memory) - before) / 2**20


def _trainer(model: nn.Module, ids: torch.Tensor, lr: float, rankwise_hooks: bool,
             total_steps: int) -> Callable[[], None]:
    """One optimizer step on `ids` (a fresh AdamW over what trains; rankwise's groups and hooks, told the
    run is `total_steps` long, as schedules such as CoDyRA's threshold ramp need)."""
    from ..adapters import StepContext, hooks

    groups = hooks.param_groups(model, lr) if rankwise_hooks else \
        [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    steps = 0

    def step() -> None:
        nonlocal steps
        loss = model(input_ids=ids, labels=ids).loss
        penalty = hooks.regularizer(model) if rankwise_hooks else None
        (loss if penalty is None else loss + penalty).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
        if rankwise_hooks:
            hooks.after_step(model, StepContext(steps, optimizer, total_steps=total_steps))

    return step


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids).logits
    model.train(was_training)
    return out


def _peft_twin(base: nn.Module, ours: nn.Module, method: str, fields: dict, folder: Path):
    """PEFT's model of the same method with rankwise's weights (pissa: PEFT's own pissa init, which is
    deterministic given W; randlora: PEFT's random bases, given to `ours` too), or None where PEFT has
    no such method."""
    if method not in PEFT_TWINS:
        return None
    from peft import LoraConfig, PeftModel, get_peft_model

    from ..io import save_adapter
    from .peft_randlora import peft_randlora_twin

    if method == "randlora":
        return peft_randlora_twin(base, ours)

    if method == "pissa":
        config = LoraConfig(r=fields.get("rank", 8), lora_alpha=fields.get("alpha", 16),
                            target_modules="all-linear", init_lora_weights="pissa")
        return get_peft_model(copy.deepcopy(base), config)
    save_adapter(ours, folder, format="peft")
    return PeftModel.from_pretrained(copy.deepcopy(base), str(folder), is_trainable=True)


def probe(model_name: str, method: str, fields: dict[str, Any], folder: Path | None = None, *,
          batch: int = 4, seq: int = 128, rounds: int = 5, lr: float = 1e-3, seed: int = 0,
          total_steps: int = 100) -> dict[str, Any]:
    """The measurements above for `method` with adapter `fields`; a cached result in `folder`/<method>.json
    is returned as is (a sweep resumes without re-measuring)."""
    from ..adapters import adapt, merge
    from ..errors import NotMergeable
    from ..io import write_json
    from ..models import load

    cached = folder / f"{method}.json" if folder is not None else None
    if cached is not None and cached.is_file():
        return json.loads(cached.read_text())
    torch.manual_seed(seed)
    base, _ = load(model_name, tokenizer=False)
    base.config.use_cache = False
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, base.config.vocab_size, (batch, seq), generator=generator)
    ours = adapt(copy.deepcopy(base), method, **fields)
    frozen = copy.deepcopy(base).requires_grad_(False)
    frozen.enable_input_require_grads()  # backward then runs through every activation, as with an adapter
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        theirs = _peft_twin(base, ours, method, fields, Path(tmp) / "peft")
    for model in (ours, frozen, theirs):  # every step in training mode, as a training run takes it
        if model is not None:
            model.train()
    steps = {"method": _trainer(ours, ids, lr, True, total_steps)}
    if theirs is not None:
        steps["peft"] = _trainer(theirs, ids, lr, False, total_steps)
        result["peft_init_max_abs_diff"] = (_logits(ours, ids) - _logits(theirs, ids)).abs().max().item()
    for name, step in steps.items():  # the first step: peak memory (optimizer state is allocated here)
        result[f"{name}_peak_mem_mb"] = peak_allocated_mb(step)
    def frozen_step() -> None:
        frozen(input_ids=ids, labels=ids).loss.backward()

    result["frozen_peak_mem_mb"] = peak_allocated_mb(frozen_step)
    if theirs is not None:
        result["peft_one_step_max_abs_diff"] = (_logits(ours, ids) - _logits(theirs, ids)).abs().max().item()
    merged = None
    try:
        merged = merge(copy.deepcopy(ours)).eval()
        result["merged_max_abs_diff"] = (_logits(merged, ids) - _logits(ours, ids)).abs().max().item()
    except NotMergeable:
        result["merged_max_abs_diff"] = None
    ours_eval = copy.deepcopy(ours).eval()
    timed = {**steps, "frozen": frozen_step,
             "base_forward": lambda: _logits(base, ids), "unmerged_forward": lambda: _logits(ours_eval, ids)}
    if merged is not None:
        timed["merged_forward"] = lambda: _logits(merged, ids)
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(rounds):
        for name, fn in timed.items():
            started = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    result.update({
        "step_time_s": median["method"], "peak_mem_mb": result.pop("method_peak_mem_mb"),
        "frozen_step_time_s": median["frozen"], "step_vs_frozen": median["method"] / median["frozen"],
        "unmerged_forward_vs_base": median["unmerged_forward"] / median["base_forward"],
        "merged_forward_vs_base": median["merged_forward"] / median["base_forward"] if merged else None,
        "probe": {"model": model_name, "batch": batch, "seq": seq, "rounds": rounds,
                  "threads": torch.get_num_threads(), "median_seconds": median}})
    if theirs is not None:
        result["peft_step_ratio"] = median["method"] / median["peft"]
        result["peft_mem_ratio"] = result["peak_mem_mb"] / result["peft_peak_mem_mb"]
    if cached is not None:
        write_json(cached, result)
    return result
