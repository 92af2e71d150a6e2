"""Before launch: peak memory and time per step of a finetune or pretrain run, from configs alone.

    print(estimate_finetune(TrainConfig(model="smollm2-135m", task="iso-dates")).table())
    print(estimate_pretrain(PretrainConfig(size="small", method="galore")).table())

No weights are read. The model is built on the meta device from its config (rankwise.models.meta),
the method is applied to it there (adapt, reparametrize and the arch variants work on meta tensors)
and the run's optimizer is built over it, so counts and optimizer state are exact. Per process, in the
model's dtype:

    weights      every parameter and buffer (frozen base, adapter, an adapter's frozen bases)
    gradients    every trainable parameter once
    optimizer    rankwise.optim.memory.expected_state of the configured optimizer (AdamW: 2 moments)
    activations  what the step keeps for backward, and the loss's peak (rankwise.train.activations)

The total is the peak of a step after the first: weights and optimizer state (it exists before the
forward starts), plus the larger of activations and gradients. The gradients are set to None after every
step and appear during backward as the activations are freed, so the two do not add up (measured on the
small pre-training Llama: the step's peak is within 2 % of the larger one, also when they are equal;
the rest is the optimizer step's temporaries); with gradient accumulation they persist across micro-
batches and do add up. Fine-tuning micro-batches are taken as max_length long and padded (task rows
differ in length: the worst case); pre-training blocks are unpadded.

Time per step, rough: forward F = 2 · T · N_matmul + 2 · T · s · q · L for T = batch · length tokens
(causal attention: half of s², q = heads · head dim, L blocks), N_matmul = parameters − the embedding
lookup + the head (counted even when tied). Backward ≈ F (gradients of the activations) + the attention's
share again + 2 · T · trainable (weight gradients). Those FLOPs at the fp32 matmul rate measured here
(about 0.2 s at the model's widths on this process's threads), plus T · V logits at the measured rate of
cross-entropy's forward and backward (exp and log over the whole vocabulary: on a CPU as slow as all the
matmuls of a tiny model). Other elementwise work, the optimizer update and a method's own extra work
(DoRA's column norms, TLoRA's transforms: on a shared 2-core machine SmolLM2's DoRA step took 3.7x the
estimate, LoRA's 1.5x) are not counted, and a machine shared with other jobs runs slower than it measured.

Left out: the process itself (Python and libraries: a few hundred MiB of resident memory), allocator
overhead, evaluation and generation, data-driven inits, clipping's and the optimizer's temporaries, and
what rankwise.train.activations does not model.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from typing import TextIO

import torch
from torch import nn

from ..models.meta import EstimateUnavailable, meta_causal_lm, read_config, unless_values_needed
from .activations import activation_bytes

__all__ = ["Estimate", "EstimateUnavailable", "dry_run_estimate", "estimate_finetune", "estimate_model",
           "estimate_pretrain"]


@dataclasses.dataclass
class Estimate:
    """Bytes of each part of a step's peak memory, and what the rough time per step is made of."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    parameters: int
    trainable: int
    batch: int
    length: int
    flops: float
    flops_per_second: float
    loss_elements: int
    loss_elements_per_second: float
    accumulates: bool = False  # gradients kept across micro-batches: they add to the activations
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def total(self) -> int:
        grads, kept = self.gradients, self.activations
        return self.weights + self.optimizer + (grads + kept if self.accumulates else max(grads, kept))

    @property
    def seconds_per_step(self) -> float:
        return self.flops / self.flops_per_second + self.loss_elements / self.loss_elements_per_second

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "total": self.total, "seconds_per_step": self.seconds_per_step}

    def table(self) -> str:
        parts = [("weights", self.weights), ("gradients", self.gradients),
                 ("optimizer state", self.optimizer), ("activations", self.activations),
                 ("total (peak)", self.total)]
        lines = [f"estimate before launch (from configs, no weights read): {self.parameters:,} parameters, "
                 f"{self.trainable:,} trainable; micro-batch {self.batch} x {self.length} tokens"]
        lines += [f"  {label:<16}{nbytes / 2**20:>12,.1f} MiB" for label, nbytes in parts]
        lines[-1] += "    weights + optimizer + " + (
            "gradients + activations (accumulated)" if self.accumulates
            else "the larger of gradients and activations")
        lines.append(f"  {'time per step':<16}{self.seconds_per_step:>12,.2f} s    rough: "
                     f"{self.flops / 1e9:,.1f} GFLOP at {self.flops_per_second / 1e9:,.1f} GFLOP/s, and "
                     f"{self.loss_elements / 1e6:,.1f} M logits through the loss, rates measured here on "
                     f"{torch.get_num_threads()} thread(s)")
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])


def step_flops(model: nn.Module, batch: int, length: int) -> float:
    """Rough FLOPs of one forward and backward (see the module docstring)."""
    c = model.config
    tokens = batch * length
    params = {id(p): p for p in model.parameters()}.values()
    lookup, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    matmul = sum(p.numel() for p in params) - lookup.numel() + (head.numel() if head is lookup else 0)
    heads = c.num_attention_heads
    width = heads * (getattr(c, "head_dim", None) or c.hidden_size // heads)
    attention = 2 * tokens * length * width * c.num_hidden_layers
    forward = 2 * tokens * matmul + attention
    return 2 * forward + attention + 2 * tokens * sum(p.numel() for p in params if p.requires_grad)


def _timed(fn, seconds: float, at_least: int) -> tuple[int, float]:
    """(runs, elapsed seconds) of calling fn for about `seconds`, after one untimed warm-up call."""
    fn()
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or runs < at_least:
        fn()
        runs += 1
    return runs, elapsed


def matmul_flops_per_second(m: int, k: int, n: int, seconds: float = 0.2) -> float:
    """fp32 FLOP/s of an (m, k) @ (k, n) product on this process's threads."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    runs, elapsed = _timed(lambda: a @ b, seconds, 3)
    return 2 * m * k * n * runs / elapsed


def loss_elements_per_second(vocab: int, rows: int = 64, seconds: float = 0.1) -> float:
    """Logits per second through cross-entropy's forward and backward over a `vocab`-wide row."""
    logits = torch.randn(rows, vocab, requires_grad=True)
    targets = torch.randint(0, vocab, (rows,))
    runs, elapsed = _timed(lambda: torch.nn.functional.cross_entropy(logits, targets).backward(), seconds, 2)
    return rows * vocab * runs / elapsed


def estimate_model(model: nn.Module, optimizer: torch.optim.Optimizer | None, batch: int, length: int, *,
                   padded: bool, accumulates: bool = False, flops_per_second: float | None = None,
                   loss_per_second: float | None = None) -> Estimate:
    """The Estimate of a model with its method applied (on the meta device, or any) and its optimizer;
    `accumulates`: gradient accumulation over micro-batches. The two rates are measured when not given."""
    from ..optim.memory import expected_state

    params = list({id(p): p for p in model.parameters()}.values())
    buffers = list({id(b): b for b in model.buffers()}.values())
    trainable = [p for p in params if p.requires_grad]
    state, notes = expected_state(optimizer) if optimizer is not None else None, []
    if state is None:
        notes.append("no formula for this optimizer's state: counted as AdamW's two moments")
        optimizer_bytes = 2 * sum(p.numel() * p.element_size() for p in trainable)
    else:
        optimizer_bytes = sum(size["bytes"] for size in state.values())
    c = model.config
    if flops_per_second is None:
        flops_per_second = matmul_flops_per_second(min(batch * length, 2048), c.hidden_size,
                                                   c.intermediate_size)
    if loss_per_second is None:
        loss_per_second = loss_elements_per_second(c.vocab_size)
    return Estimate(
        weights=sum(t.numel() * t.element_size() for t in params + buffers),
        gradients=sum(p.numel() * p.element_size() for p in trainable), optimizer=optimizer_bytes,
        activations=activation_bytes(model, batch, length, padded), parameters=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in trainable), batch=batch, length=length,
        flops=step_flops(model, batch, length), flops_per_second=flops_per_second,
        loss_elements=batch * length * c.vocab_size, loss_elements_per_second=loss_per_second,
        accumulates=accumulates, notes=notes)


def estimate_finetune(config, **rates: float | None) -> Estimate:
    """The Estimate of a TrainConfig's run, per process: its method on its model, its optimizer, a
    micro-batch of per_device_train_batch_size padded rows of max_length tokens. `rates`:
    flops_per_second, loss_per_second (estimate_model's)."""
    from ..adapters import adapt
    from .trainee import AdapterTrainee

    model_config, notes = read_config(config.model)
    model = meta_causal_lm(model_config)
    with unless_values_needed(f"the {config.method} adapter's plan"):
        adapt(model, config.method, name=config.adapter_name, config=config.adapter_config())
        optimizer = AdapterTrainee(model, config.adapter_name).optimizer(config)
        result = estimate_model(model, optimizer, config.per_device_train_batch_size, config.max_length,
                                padded=True, accumulates=config.gradient_accumulation_steps > 1, **rates)
    result.notes[:0] = notes + ["rows taken as max_length tokens, padded (the worst case)"]
    return result


def estimate_pretrain(config, **rates: float | None) -> Estimate:
    """The Estimate of a PretrainConfig's run: the scratch Llama of its size, arch variant and method.
    A method that needs values to set up (SST's SVD) is applied to a real random model instead: a scratch
    model has no weights to read, and the sizes offered build in about a second."""
    try:
        result = _estimate_scratch(config, "meta", rates)
    except EstimateUnavailable:
        result = _estimate_scratch(config, "cpu", rates)
    if config.method == "sst":
        result.notes.append("SST's spectral layers keep more than a factorization's input and rank (the tiny "
                            "model's step measured 25 % above this estimate)")
    if config.arch is not None and config.arch.startswith("attnres"):
        result.notes.append(f"{config.arch}'s blocks are counted as Llama blocks; they keep more (the tiny "
                            "model's attnres-block step measured 36 % above this estimate)")
    return result


def _estimate_scratch(config, device: str, rates: dict) -> Estimate:
    from ..models.scratch import byte_tokenizer, scratch_llama
    from .pretrain import prepare_method

    with torch.device(device):
        model = scratch_llama(config.size, byte_tokenizer(), config.max_length, config.seed)
    with unless_values_needed(f"the {config.method} method on the {config.size} model"):
        if config.arch is not None:
            from ..arch import apply

            apply(model, config.arch, **config.arch_config)
        optimizer = prepare_method(model, config).optimizer(config)
        return estimate_model(model, optimizer, config.per_device_train_batch_size, config.max_length,
                              padded=False, accumulates=config.gradient_accumulation_steps > 1, **rates)


def dry_run_estimate(make: Callable[[], Estimate], stream: TextIO | None = None) -> dict | None:
    """For a CLI's --dry-run: make() the Estimate, write its table to `stream` (stderr: stdout stays the
    resolved config as JSON) and return it as a dict; None, with the reason written, when it cannot be
    made without the weights."""
    stream = stream or sys.stderr
    try:
        estimate = make()
    except EstimateUnavailable as err:
        print(f"estimate: not available: {err}", file=stream)
        return None
    print(estimate.table(), file=stream)
    return estimate.to_dict()
