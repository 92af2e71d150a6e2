"""pretrain(config): train a Llama-architecture model from scratch with a memory-efficient method.

The method is an optimizer (adamw, or a projected one: galore, dct, random, gradnorm-lorp), which trains
the plain model, or a parameterization (lowrank, sltrain, lost, sst, relora; rankwise.reparam), which
replaces every linear layer of the blocks first and is trained by `optimizer` (adamw by default) with
its schedule: SST's rounds, ReLoRA's restarts and jagged cosine, or, for lowrank/sltrain/lost, the
benchmark paper's refactorization and momentum reset when refactor_every/reset_every are set. The
embeddings, head and norms always train in full. The same loop as finetune (rankwise.train.loop) runs
it, so progress, checkpoints, bitwise resume and data parallelism behave the same.

Outputs in config.output_dir:
    model/          the trained model (rankwise.io.save_model + the byte tokenizer), loadable with
                    rankwise.models.load
    log.jsonl       one record per step: step, loss, lr (+ val_perplexity where evaluated)
    loss.png        the loss curve
    results.json    validation perplexity, memory (measured beside expected), time, sizes, data source
    config.json     the resolved config
    checkpoints/    step-* folders when save_every > 0
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from .pretrain_config import PretrainConfig

BUNDLED_CORPUS = "CPython's pydoc_data.topics (the text of help(); PSF License v2)"


def corpus_blocks(config: PretrainConfig, tokenizer) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(training blocks, validation blocks, where the text came from), each block max_length tokens.

    The bundled corpus comes split (rankwise.data.text: held-out topics never train). A file's blocks are
    shuffled with the seed and its eval_split share is held out (at least one block)."""
    from ..data.text import corpus_text, read_text_file, token_blocks

    length = config.max_length
    if config.corpus is None:
        train = token_blocks(tokenizer, corpus_text("calibration"), length, source="the bundled corpus")
        held = token_blocks(tokenizer, corpus_text("evaluation"), length, config.eval_blocks,
                            source="the bundled corpus")
        return train, held, BUNDLED_CORPUS
    blocks = token_blocks(tokenizer, read_text_file(config.corpus), length, source=config.corpus)
    if len(blocks) < 2:
        raise DataError(f"{config.corpus}: one block of {length} tokens only; pretraining needs one to train "
                        "on and one to validate on. Give more text or a shorter max_length.")
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(config.seed))
    held_out = max(1, round(config.eval_split * len(blocks)))
    return blocks[order[held_out:]], blocks[order[:held_out][: config.eval_blocks]], config.corpus


def prepare_method(model, config: PretrainConfig):
    """Apply the config's parameterization (if any) to `model`; the ModelTrainee with its schedules."""
    from ..reparam import RefactorSchedule, ReloraSchedule, SstSchedule, reparametrize
    from ..reparam.relora import DEFAULT_RESTART_WARMUP
    from .trainee import ModelTrainee

    if not config.is_reparam:
        return ModelTrainee(model)
    rank = config.rank_for(model.config.hidden_size)
    reparametrize(model, config.method, rank=rank, seed=config.seed, **config.method_config)
    if config.method == "sst":
        return ModelTrainee(model, [SstSchedule(model)])
    if config.method == "relora":
        schedule = ReloraSchedule(model)
        # The paper warms up each restart for 50-100 steps of 2000-5000-step cycles; short runs scale it.
        restart_warmup = min(DEFAULT_RESTART_WARMUP, max(1, schedule.reset_every // 20))
        return ModelTrainee(model, [schedule], lambda warmup, total: schedule.lr_lambda(
            total, warmup, restart_warmup_steps=restart_warmup))
    if config.refactor_every or config.reset_every:
        return ModelTrainee(model, [RefactorSchedule(model, config.refactor_every, config.reset_every)])
    return ModelTrainee(model)


def measured_memory(model, optimizer, batch: torch.Tensor) -> dict:
    """memory_report with the gradients one backward pass holds (the loop leaves none behind)."""
    from ..optim import memory_report

    model.train()
    model(input_ids=batch, labels=batch).loss.backward()
    report = memory_report(model, optimizer)
    model.zero_grad(set_to_none=True)
    model.eval()
    return report


def pretrain(config: PretrainConfig | dict[str, Any]) -> dict[str, Any]:
    """Run one pre-training job; returns what results.json holds (see the module docstring). Under
    torchrun every process trains its share; only the main process evaluates and writes."""
    from ..io import read_json, save_model, write_json
    from ..io.model_folder import is_model_folder
    from ..models.scratch import byte_tokenizer, scratch_llama
    from .evaluate import perplexity
    from .loop import start_run, train
    from .plot import plot_loss

    def check_outputs(out: Path) -> None:
        folder = out / "model"
        if folder.is_dir() and any(folder.iterdir()) and not is_model_folder(folder):
            raise DataError(f"{folder} holds other files; pick another output_dir.")

    config = config if isinstance(config, PretrainConfig) else PretrainConfig.from_dict(config)
    accelerator, say, out, resume_from = start_run(config, check_outputs)
    main = accelerator.is_main_process

    tokenizer = byte_tokenizer()
    train_blocks, held_out, source = corpus_blocks(config, tokenizer)
    model = scratch_llama(config.size, tokenizer, config.max_length, config.seed)
    if config.arch is not None:  # before the method: a parameterization replaces layers inside the blocks
        from ..arch import apply

        apply(model, config.arch, **config.arch_config)
    trainee = prepare_method(model, config)
    params = sum(p.numel() for p in model.parameters())
    shape = f"{config.size} Llama" + (f" with {config.arch} residuals" if config.arch else "")
    say(f"rankwise pretrain: {config.method} on the {shape} ({params:,} parameters), "
        f"{len(train_blocks)} training and {len(held_out)} validation sequences of {config.max_length} "
        f"bytes from {source}")

    def evaluate(step: int) -> dict:
        return {"val_perplexity": perplexity(model, held_out, batch_size=16, progress=False)}

    features = [{"input_ids": row, "labels": row} for row in train_blocks.tolist()]
    started = time.perf_counter()
    trained = train(model, features, config, pad_token_id=tokenizer.pad_token_id, accelerator=accelerator,
                    resume_from=resume_from, evaluate=evaluate, trainee=trainee)
    seconds = time.perf_counter() - started
    optimizer = trained["optimizer"]
    first_step = 0 if resume_from is None else read_json(resume_from / "trainer_state.json")["step"]
    result: dict[str, Any] = {
        "output_dir": str(out), "method": config.method, "size": config.size, "arch": config.arch,
        "optimizer": config.optimizer,
        "rank": config.rank_for(model.config.hidden_size) if config.is_reparam
        else config.optimizer_config.get("rank"),  # None: a full-rank optimizer
        "steps": trained["step"], "final_loss": trained["loss"], "parameters": params,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "tokens_seen": trained["step"] * config.gradient_accumulation_steps
        * config.per_device_train_batch_size * accelerator.num_processes * config.max_length,
        "train_seconds": seconds, "seconds_per_step": seconds / max(1, trained["step"] - first_step),
        "corpus": source, "resumed_from": resume_from and str(resume_from),
        "projection_seconds": getattr(optimizer, "projection_seconds", None),
    }
    if main:
        result["val_perplexity"] = evaluate(trained["step"])["val_perplexity"]
        batch = train_blocks[: config.per_device_train_batch_size]
        result["memory"] = measured_memory(model, optimizer, batch)
        save_model(model, out / "model", tokenizer)
        result["model_path"] = str(out / "model")
        log = trained["log"]
        title = f"pretrain {config.method} ({config.size})"
        result["plot_path"] = str(plot_loss(log, out / "loss.png", title, metric="val_perplexity"))
        result["log_path"] = str(out / "log.jsonl")
        write_json(out / "results.json", result)
    accelerator.wait_for_everyone()
    return result
