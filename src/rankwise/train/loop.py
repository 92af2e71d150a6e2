"""The training loop: the configured optimizer (AdamW by default) over what the trainee trains,
warmup + cosine, accelerate for scale. Hooks get a StepContext with the optimizer and scheduler. What
trains is a trainee (rankwise.train.trainee): the active adapter (finetune) or the whole model (pretrain).

`train` runs the optimizer steps on an already-adapted model and pre-encoded examples; `finetune`
(rankwise.train.run) wraps it with loading, evaluation and saving. Everything that decides the
result is a function of the config, the step and saved state, so the same code runs on one CPU,
under `torchrun`, or under `accelerate launch`, and a resumed run is bitwise equal to an
uninterrupted one on CPU.

Data order: the examples form one endless stream, epoch e being a permutation drawn from seed + e.
Micro-batch m of process r holds stream positions [(m·W + r)·B, (m·W + r + 1)·B) for W processes of
batch B, so the data position is just the micro-batch counter, and every batch is full.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters import StepContext, hooks
from ..errors import ConfigError, DataError, TrainingDiverged
from .checkpoint import (
    capture_rng,
    read_checkpoint,
    resolve_resume,
    restore_rng,
    rotate_checkpoints,
    write_checkpoint,
)
from .config import PRECISIONS, TrainConfig, trackers
from .schedule import warmup_steps_for
from .sharding import shard, unshard_for_inference
from .trainee import AdapterTrainee, checkpoint_weights

# TrainConfig's defaults: a setting newer than a checkpoint was, in effect, at its default there.
_DEFAULTS = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
             for f in dataclasses.fields(TrainConfig)}
# Settings a checkpoint may be resumed under with other values; any other change is an error.
RESUMABLE_CHANGES = {"max_steps", "output_dir", "eval_every", "save_every", "save_total_limit", "resume",
                     "max_new_tokens", "eval_batch_size", "eval_size", "progress", "eval_blocks"}


def make_accelerator(config: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != PRECISIONS[config.precision]:
        # accelerate fixes one precision per process at its first Accelerator; a later run in the same
        # process (a sweep, a notebook) may ask for another. The process group (PartialState) is kept.
        AcceleratorState._reset_state()
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=PRECISIONS[config.precision],
                       gradient_accumulation_steps=config.gradient_accumulation_steps,
                       log_with=trackers(config) or None, project_dir=config.output_dir)


def start_run(config, check_outputs: Callable[[Path], None]) -> tuple[Any, Callable, Path, Path | None]:
    """(accelerator, say, output folder, checkpoint to resume from or None) for a finetune or pretrain
    run. On the main process everything the run will write is checked first, not after the training it
    would lose: the folder is writable, `check_outputs(folder)` passes; then config.json is written.
    `say` prints on the main process when progress is on."""
    from ..io import write_json
    from ..io.atomic import check_writable

    accelerator = make_accelerator(config)
    main = accelerator.is_main_process
    say = print if (main and config.progress) else (lambda *a, **k: None)
    out = Path(config.output_dir)
    if main:
        check_writable(out)
        check_outputs(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", config.to_dict())
    return accelerator, say, out, resolve_resume(config.resume, out) if config.resume else None


def stream_indices(n_examples: int, start: int, count: int, seed: int) -> list[int]:
    """Example indices at stream positions [start, start + count); see the module docstring."""
    out, perms = [], {}
    for position in range(start, start + count):
        epoch, offset = divmod(position, n_examples)
        if epoch not in perms:
            perms[epoch] = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed + epoch))
        out.append(int(perms[epoch][offset]))
    return out


def run_fingerprint(config: TrainConfig, features: list[dict], world_size: int) -> dict:
    """What a checkpoint must agree with to be resumed: the settings that shape the run, and the data."""
    data = hashlib.sha256(json.dumps([[f["input_ids"], f["labels"]] for f in features]).encode()).hexdigest()
    settings = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
    return {"settings": settings, "world_size": world_size, "examples": len(features), "data_sha256": data}


def _check_fingerprint(saved: dict, current: dict, path: Path) -> None:
    old = {k: saved["settings"].get(k, _DEFAULTS.get(k)) for k in current["settings"]}
    diffs = [f"{k}: checkpoint {old[k]!r}, now {v!r}" for k, v in current["settings"].items() if old[k] != v]
    diffs += [f"{k}: checkpoint {saved[k]!r}, now {current[k]!r}"
              for k in ("world_size", "examples", "data_sha256") if saved[k] != current[k]]
    if diffs:
        raise ConfigError(f"cannot resume from {path}: the run differs ({'; '.join(diffs)}). Resume with the "
                          "settings it was saved with, or start fresh in another output_dir.")


def train(model: nn.Module, features: list[dict], config: TrainConfig, *, pad_token_id: int,
          accelerator=None, resume_from: Path | None = None, extra_state: dict | None = None,
          evaluate: Callable[[int], dict] | None = None, finalize: bool = True, trainee=None) -> dict:
    """Train the active adapter of `model` (or what `trainee` names) on encoded `features`
    ({"input_ids", "labels"}).

    Writes <output_dir>/log.jsonl (one record per step) and, every save_every steps, a checkpoint.
    `resume_from` is a checkpoint folder (see rankwise.train.checkpoint.resolve_resume). `extra_state`
    (JSON) is stored in every checkpoint. `evaluate(step)`, if given, runs on the main process every
    eval_every steps and its dict is logged. `finalize=False` leaves hooks.finalize to the caller (a
    sequence of tasks finalizes after the last one). `trainee` defaults to
    AdapterTrainee(model, config.adapter_name, config.init_batches). Returns {"step", "loss", "log",
    "optimizer"} (the optimizer with its final state, for memory reports).
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from ..data import collate

    if not features:
        raise DataError("there are no training examples to train on; check the task or data file.")
    accelerator = accelerator or make_accelerator(config)
    trainee = trainee or AdapterTrainee(model, config.adapter_name, config.init_batches)
    world, rank = accelerator.num_processes, accelerator.process_index
    batch, accum = config.per_device_train_batch_size, config.gradient_accumulation_steps
    fingerprint = run_fingerprint(config, features, world)
    device = accelerator.device
    model.to(device)  # data-driven inits below see batches on the training device

    def micro_batch(start: int) -> dict:
        rows = [features[i] for i in stream_indices(len(features), start, batch, config.seed)]
        return {k: v.to(device) for k, v in collate(rows, pad_token_id).items()}

    saved = read_checkpoint(resume_from) if resume_from is not None else None
    if saved is not None:
        _check_fingerprint(saved["fingerprint"], fingerprint, resume_from)
    # Data-driven inits run on resume too: the checkpoint then overwrites the adapter tensors, while any
    # change an init made outside them is reproduced exactly (same data, same seed).
    trainee.init_from_data(micro_batch, batch)
    if saved is not None:
        trainee.load(checkpoint_weights(saved, trainee, resume_from), resume_from)
    fsdp = getattr(config, "fsdp", False)  # a finetune option; pretrain has none
    sharded = fsdp and world > 1
    if fsdp and world == 1:
        warnings.warn("fsdp=true in a single process: nothing to shard, training as usual; launch with "
                      "torchrun --nproc_per_node N to shard", stacklevel=2)
    if sharded:
        shard(model)  # before the optimizer: FSDP2 swaps each parameter for its shard
    optimizer = trainee.optimizer(config)
    warmup = warmup_steps_for(config.max_steps, config.warmup_steps, config.warmup_ratio)
    scheduler = trainee.scheduler(optimizer, warmup, config.max_steps)
    step = 0
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        step = saved["step"]
        restore_rng(rank, saved["rng_tensors"], saved["rng"][rank])
    else:
        torch.manual_seed(config.seed + 1000 * rank)  # dropout differs across processes, as in DDP
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if sharded:  # FSDP2 already syncs gradients; accelerate would wrap the model in DDP as well
        wrapped, optimizer = model, accelerator.prepare(optimizer)
    else:
        wrapped, optimizer = accelerator.prepare(model, optimizer)  # and, for bf16/fp16, autocast
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    if trackers(config):
        accelerator.init_trackers(Path(config.output_dir).name or "rankwise", config=_tracker_config(config))

    log_path = Path(config.output_dir) / "log.jsonl"
    log = _restart_log(log_path, step) if accelerator.is_main_process else []
    bar = tqdm(total=config.max_steps, initial=step, desc="train", unit="step",
               disable=not (config.progress and accelerator.is_main_process))
    wrapped.train()
    loss_value = float("nan")
    while step < config.max_steps:
        started = time.perf_counter()
        group_lrs = [group["lr"] for group in optimizer.param_groups]
        lr = group_lrs[0]
        losses = []
        for micro in range(accum):
            start = ((step * accum + micro) * world + rank) * batch
            with accelerator.accumulate(wrapped):
                with accelerator.autocast() if sharded else contextlib.nullcontext():
                    loss = wrapped(**micro_batch(start)).loss
                penalty = hooks.regularizer(model)
                accelerator.backward(loss if penalty is None else loss + penalty)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        scheduler.step()
        step += 1
        trainee.after_step(StepContext(step, optimizer, scheduler, config.max_steps, group_lrs))
        loss_value = accelerator.reduce(torch.stack(losses).mean(), "mean").item()
        if not math.isfinite(loss_value):  # one scalar already on the host: checked every step
            _diverged(step, f"the loss is {loss_value}", config)
        record = {"step": step, "loss": loss_value, "lr": lr, "seconds": time.perf_counter() - started}
        if penalty is not None:
            record["regularizer"] = float(penalty.detach())
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
        if evaluate is not None and config.eval_every and step % config.eval_every == 0:
            if accelerator.is_main_process:
                record.update(evaluate(step))
            wrapped.train()
            accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            log.append(record)
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        if trackers(config):
            accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
        if config.save_every and step % config.save_every == 0:
            _check_finite(trainable, step, config)  # the tensors only when they are about to be saved
            rng = gather_object([capture_rng(rank)])  # every process's generators, in rank order
            if accelerator.is_main_process:
                state = {"scheduler": scheduler.state_dict(), "micro_batches": step * accum,
                         "fingerprint": fingerprint, **(extra_state or {})}
                write_checkpoint(trainee.save, config.output_dir, step, optimizer.state_dict(), rng, state)
                rotate_checkpoints(config.output_dir, config.save_total_limit)
            accelerator.wait_for_everyone()
    bar.close()
    if sharded:
        unshard_for_inference(model)
    if trackers(config):
        accelerator.end_training()
    if config.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    _check_finite(trainable, step, config)
    if finalize:
        hooks.finalize(model)
    wrapped.eval()
    unwrapped = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the real one
    return {"step": step, "loss": loss_value, "log": log, "optimizer": unwrapped}


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Hugging Face's per-block checkpointing, non-reentrant: it needs no input that requires grad, so a
    frozen base with an adapter works, and dropout's random state is replayed in the recomputation."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"{type(model).__name__} does not support gradient checkpointing; set "
                          "gradient_checkpointing=false.")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _tracker_config(config) -> dict:
    """The config as the trackers take hyperparameters: numbers, strings and booleans (others as JSON)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
            for k, v in config.to_dict().items()}


def _diverged(step: int, what: str, config: TrainConfig):
    raise TrainingDiverged(
        f"training diverged at step {step}: {what} (learning_rate {config.learning_rate:g}). Lower "
        "learning_rate (or set max_grad_norm); the last checkpoint and any saved adapter are untouched.")


def _check_finite(trainable: list[torch.Tensor], step: int, config: TrainConfig) -> None:
    if not all(torch.isfinite(p).all() for p in trainable):
        _diverged(step, "a trained tensor is NaN or infinite", config)


def _read_log(path: Path) -> list[dict]:
    """The records of a log.jsonl; a torn last line (a kill mid-append) is dropped, a bad line elsewhere
    is an error naming it."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a step record")
        except ValueError as err:
            if number == len(lines):
                warnings.warn(f"{path}:{number}: dropping a torn last line (the run was killed while "
                              "writing it)", stacklevel=3)
                break
            raise ConfigError(f"{path}:{number}: not a log record ({err}); the log was edited. Remove the "
                              "line or start in another output_dir.") from None
        records.append(record)
    return records


def _restart_log(path: Path, step: int) -> list[dict]:
    """The log records up to `step` (those after it belong to the interrupted tail); the file is rewritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    if step > 0 and path.is_file():
        records = [r for r in _read_log(path) if r["step"] <= step]
        if len(records) < step:
            warnings.warn(f"{path} has {len(records)} records for {step} resumed steps; the curve has gaps",
                          stacklevel=3)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return records
