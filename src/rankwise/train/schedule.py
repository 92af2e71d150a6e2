"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

The multiplier is a pure function of the optimizer step, so a resumed run recomputes exactly the
learning rates an uninterrupted run would have used.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_steps_for(max_steps: int, warmup_steps: int = 0, warmup_ratio: float = 0.0) -> int:
    """Warmup length in steps: `warmup_steps` if given, else `warmup_ratio` of the run (rounded up)."""
    return warmup_steps if warmup_steps > 0 else math.ceil(warmup_ratio * max_steps)


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.0) -> float:
    """LR multiplier for optimizer step `step` (0-based: the step about to be taken).

    Rises linearly over `warmup` steps to 1 (step 0 of a warmup already gets 1/warmup, so no step is
    wasted at lr 0), then follows a half cosine from 1 down to `floor` at step `total`.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int,
                    floor: float = 0.0) -> LambdaLR:
    """A LambdaLR that multiplies every parameter group's own lr (so per-group LRs keep their ratios)."""
    return LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total, floor))
