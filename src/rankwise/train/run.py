"""finetune(config): load a model, attach an adapter, train it, evaluate base vs tuned, save everything.

Outputs in config.output_dir:
    adapter/         the trained adapter (adapter.safetensors + adapter.json), loadable with load_adapter
    log.jsonl        one record per optimizer step: step, loss, lr (+ exact_match where evaluated)
    loss.png         the loss curve
    results.json     base and tuned exact match, paths, step and parameter counts
    config.json      the resolved config
    checkpoints/     step-* folders when save_every > 0 (see rankwise.train.checkpoint)
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from ..adapters import adapt, disabled, hooks, trainable_parameters
from ..errors import DataError
from .config import TrainConfig
from .loop import start_run, train


def split_examples(config: TrainConfig) -> tuple[list[dict], list[dict]]:
    """(train, held-out) examples of the config's task or data file; held-out capped at eval_size."""
    from ..data import bundled_task, load_examples

    if config.task is not None:
        train_rows, held_out = bundled_task(config.task)
    elif config.eval_data is not None:
        train_rows = load_examples(config.data, config.prompt_field, config.answer_field)
        held_out = load_examples(config.eval_data, config.prompt_field, config.answer_field)
    else:
        rows = load_examples(config.data, config.prompt_field, config.answer_field)
        # A seeded shuffle, not the file's tail: files are often sorted by source or difficulty.
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(config.seed)).tolist()
        n_eval = round(len(rows) * config.eval_split)
        held_out = [rows[i] for i in order[:n_eval]]
        train_rows = [rows[i] for i in order[n_eval:]]
    if config.eval_size is not None:
        held_out = held_out[: config.eval_size]
    return list(train_rows), list(held_out)


def _encoded(tokenizer, row: dict, max_length: int) -> dict:
    from ..data import encode_example

    try:
        return encode_example(tokenizer, row, max_length)
    except DataError as err:  # name the file:line the row came from, when it came from a file
        where = getattr(row, "where", None)
        raise DataError(f"{where}: {err}" if where else str(err)) from None


def _label(phase: TrainConfig, phases: list[TrainConfig]) -> str:
    return f" on {phase.task or phase.data}" if len(phases) > 1 else ""


def quantize(model, config: TrainConfig) -> dict | None:
    """Quantize the base as config.quantize_* say (rankwise.train.quantize), before any adapter; returns
    {"bits", "group_size", "backend", "layers"} for results.json, or None for a full-precision run."""
    if config.quantize_bits is None:
        return None
    from ..io.fingerprint import compressed_layers
    from .quantize import quantize_base

    quantize_base(model, config.quantize_bits, config.quantize_group_size, config.quantize_backend)
    return {"bits": config.quantize_bits, "group_size": config.quantize_group_size,
            "backend": config.quantize_backend, "layers": compressed_layers(model)}


def _verify(config: TrainConfig, adapter: Path) -> dict[str, Any]:
    """rankwise verify on the saved adapter: {row: max |logit difference|}, the rows skipped and why, the
    rows over tolerance; or {"skipped": reason} where it cannot run. A verify that fails to run is
    reported here, not raised: the training it would discard is already saved."""
    from ..errors import ConfigError, RankwiseError
    from ..models import require_causal_lm
    from .verify import verify_adapter

    if config.quantize_bits:
        return {"skipped": "the base was quantized here; verify loads the full-precision base"}
    try:
        require_causal_lm(config.model, "verify")
    except ConfigError:
        return {"skipped": f"{config.model} is not a causal LM; verify compares next-token logits"}
    try:
        checked = verify_adapter(config.model, adapter)
    except RankwiseError as err:
        return {"error": str(err)}
    return {k: checked[k] for k in ("max_abs_diff", "skipped", "failed", "max_abs_logit", "tolerance")}


def finetune(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """Run one fine-tuning job; returns what results.json holds.

    Under torchrun / accelerate launch every process trains its share of each batch; the main process
    alone evaluates and writes the outputs, so only its dict has tuned_exact_match and the paths.
    """
    from accelerate.utils import set_seed

    from ..io import read_json, save_adapter, write_json
    from ..io.adapter_file import refuse_foreign_files
    from ..models import load
    from .evaluate import exact_match
    from .plot import plot_loss  # matplotlib loads in about a second: only when a run draws

    config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    accelerator, say, out, resume_from = start_run(config, lambda out: refuse_foreign_files(out / "adapter"))
    main = accelerator.is_main_process
    # A resumed run reuses the base model's score from its checkpoint instead of generating again.
    base_saved = None
    if resume_from is not None:
        base_saved = read_json(resume_from / "trainer_state.json").get("base_eval")

    set_seed(config.seed)  # the adapter init is then identical on every process and every run
    model, tokenizer = load(config.model)
    quantized = quantize(model, config)
    phases = config.sequence()  # one config per task; several for a continual-learning sequence
    splits = [split_examples(phase) for phase in phases]
    for phase, (train_rows, held_out) in zip(phases, splits):
        if not train_rows:
            raise DataError(f"{phase.task or phase.data}: no training rows left ({len(held_out)} held out); "
                            "add rows or lower eval_split.")
    adapt(model, config.method, name=config.adapter_name, config=config.adapter_config())
    counts = trainable_parameters(model)
    if quantized:  # the base exact match below is then the quantized base's
        layers = ", ".join(f"{count} × {kind}" for kind, count in quantized["layers"].items())
        say(f"rankwise: base quantized: {layers}")
    say(f"rankwise: {config.method} on {config.model}: {counts['trainable']:,} trainable of "
        f"{counts['total']:,} parameters; {sum(len(t) for t, _ in splits)} training examples, "
        f"{sum(len(h) for _, h in splits)} held out, {len(phases)} task(s)")

    def evaluate(held_out: list[dict]) -> dict | None:
        if not held_out:
            return None
        model.to(accelerator.device)
        result = exact_match(model, tokenizer, held_out, max_new_tokens=config.max_new_tokens,
                             batch_size=config.eval_batch_size, progress=config.progress)
        return {"exact_match": result["exact_match"]}

    def evaluate_all(upto: int) -> list[float | None]:
        return [(r := evaluate(held)) and r["exact_match"] for _, held in splits[:upto]]

    bases = [base_saved] if base_saved is not None else None
    if bases is None and main and config.eval_base:
        with disabled(model):
            bases = [evaluate(held) for _, held in splits]
    accelerator.wait_for_everyone()
    for phase, base in zip(phases, bases or []):
        if base is not None:
            say(f"base exact match (adapter disabled){_label(phase, phases)}: {base['exact_match']:.3f}")
    if resume_from is not None:
        say(f"resuming from {resume_from}")

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    log, after_each_task = [], []
    for index, (phase, (train_rows, held_out)) in enumerate(zip(phases, splits)):
        if len(phases) > 1:
            phase = dataclasses.replace(phase, output_dir=str(out / f"task-{index + 1}"))
            say(f"task {index + 1}/{len(phases)}{_label(phase, phases)}")
        features = [_encoded(tokenizer, row, config.max_length) for row in train_rows]
        last = index == len(phases) - 1
        trained = train(model, features, phase, pad_token_id=pad_id, accelerator=accelerator,
                        resume_from=resume_from, extra_state={"base_eval": bases and bases[0]},
                        evaluate=lambda step, held=held_out: evaluate(held) or {}, finalize=last)
        log += [dict(record, step=record["step"] + index * config.max_steps) for record in trained["log"]]
        if not last:
            hooks.end_task(model)
            if main:
                after_each_task.append(evaluate_all(index + 1))
    base = bases and bases[-1]
    result: dict[str, Any] = {
        "output_dir": str(out), "method": config.method, "model": config.model,
        "steps": trained["step"] * len(phases),
        "final_loss": trained["loss"] if math.isfinite(trained["loss"]) else None,
        "trainable_parameters": counts["trainable"], "total_parameters": counts["total"],
        "train_examples": sum(len(t) for t, _ in splits), "eval_examples": sum(len(h) for _, h in splits),
        "base_exact_match": base and base["exact_match"], "resumed_from": resume_from and str(resume_from),
        **({"quantized_base": quantized} if quantized else {}),
    }
    if main:
        final = evaluate_all(len(phases))
        result["tuned_exact_match"] = final[-1]
        if len(phases) > 1:
            # Row i: exact match on tasks 1..i+1 right after learning task i+1 (the forgetting matrix).
            result["tasks"] = [p.task or p.data for p in phases]
            result["base_exact_match_per_task"] = [b and b["exact_match"]
                                                   for b in bases or [None] * len(phases)]
            result["exact_match_after_each_task"] = after_each_task + [final]
        save_adapter(model, out / "adapter", config.adapter_name)
        result["adapter_path"] = str(out / "adapter")
        if config.verify:
            result["verify"] = _verify(config, out / "adapter")
        result["log_path"] = str(out / ("task-1" if len(phases) > 1 else "") / "log.jsonl")
        title = f"{config.method} on {config.model}"
        result["plot_path"] = str(plot_loss(log, out / "loss.png", title))
        write_json(out / "results.json", result)
    accelerator.wait_for_everyone()
    return result
