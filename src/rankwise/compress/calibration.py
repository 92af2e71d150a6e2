"""Calibration statistics: what activation-aware methods (EoRA, ASVD/SVD-LLM, AFM, BiPFT's estimator) know
about the data, gathered in one pass of the calibration batches through the unchanged model.

For a linear layer y = W x + b seen on N tokens:
    input_moment  = (1/N) Σ x xᵀ   (in, in)     EoRA's C, SVD-LLM's whitening matrix
    input_abs_mean = (1/N) Σ |x|   (in,)        ASVD's per-channel activation scale
    output_mean   = (1/N) Σ y      (out,)       AFM's μ
    output_moment = (1/N) Σ y yᵀ   (out, out)   AFM's covariance is output_moment − μ μᵀ
Sums are taken per batch in float32 and accumulated in float64 (as EoRA's code does), so many batches
lose no precision. All layers are measured on the original model's activations in one pass; EoRA's
code instead re-runs each block after compensating the one before it (see compress.eora).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError


@dataclass
class LayerStats:
    count: int = 0  # tokens seen
    input_moment: torch.Tensor | None = None
    output_mean: torch.Tensor | None = None
    output_moment: torch.Tensor | None = None
    input_abs_mean: torch.Tensor | None = None

    def add(self, terms: dict[str, torch.Tensor], count: int) -> None:
        for key, value in terms.items():
            setattr(self, key, _accumulate(getattr(self, key), value))
        self.count += count

    def finish(self) -> LayerStats:
        scale = 1.0 / self.count
        return LayerStats(self.count, *(None if t is None else t * scale
                                        for t in (self.input_moment, self.output_mean, self.output_moment,
                                                  self.input_abs_mean)))


def _accumulate(total: torch.Tensor | None, batch: torch.Tensor) -> torch.Tensor:
    return batch.double() if total is None else total + batch.double()


class _Measured(Exception):
    """Raised by a hook to end a calibration forward early."""


def run_batches(model: nn.Module, batches: Iterable, description: str = "calibrating",
                progress: bool = True) -> int:
    """Forward every batch (a dict of model inputs, or a tensor) without gradients; returns the count.
    A hook may raise _Measured to end a batch's forward once it has what it needs."""
    count = 0
    with torch.no_grad():
        for batch in tqdm(batches, desc=description, leave=False, disable=not progress):
            with contextlib.suppress(_Measured):
                model(**batch) if isinstance(batch, dict) else model(batch)
            count += 1
    return count


def batch_terms(x: torch.Tensor, y: torch.Tensor, inputs: bool, outputs: bool) -> dict[str, torch.Tensor]:
    """One batch's sums of the statistics LayerStats keeps (divided by the token count in finish())."""
    x = x.detach().reshape(-1, x.shape[-1]).float()
    y = y.detach().reshape(-1, y.shape[-1]).float()
    terms = {}
    if inputs:
        terms.update(input_moment=x.T @ x, input_abs_mean=x.abs().sum(0))
    if outputs:
        terms.update(output_mean=y.sum(0), output_moment=y.T @ y)
    return terms


def collect_stats(model: nn.Module, paths: Iterable[str], batches: Iterable, *, inputs: bool = True,
                  outputs: bool = False, progress: bool = True) -> dict[str, LayerStats]:
    """{path: LayerStats} of the layers at `paths` over `batches` (dicts of model inputs, or tensors)."""
    stats = {path: LayerStats() for path in paths}
    # q, k and v (gate and up) are called one after another on the same input tensor: its input terms
    # are computed once. Holding the tensor keeps its identity from being reused by another one.
    last: dict = {"input": None, "terms": {}}
    seen: set[str] = set()

    def record(path: str, x: torch.Tensor, y: torch.Tensor) -> None:
        if outputs or x is not last["input"]:
            last.update(input=x, terms=batch_terms(x, y, inputs, outputs))
        stats[path].add(last["terms"], x.numel() // x.shape[-1])
        seen.add(path)
        if len(seen) == len(stats):  # every layer has seen this batch: the rest of the forward is waste
            seen.clear()
            raise _Measured

    hooks = [model.get_submodule(path).register_forward_hook(
        lambda module, args, output, path=path: record(path, args[0], output)) for path in stats]
    try:
        if not run_batches(model, batches, progress=progress):
            raise ConfigError("the calibration data holds no batch; give at least one sequence.")
    finally:
        for hook in hooks:
            hook.remove()
    return {path: s.finish() for path, s in stats.items()}
